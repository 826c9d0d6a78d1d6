//! Exported forms of a trained version besides the JSON document (which `api::models` serves
//! as the default format): an ONNX graph. Pure and synchronous, like `nn`: no service types.

pub mod onnx;
pub mod proto;
