//! `POST /v2/models/{name}[/versions/{version}]/infer`: the protocol's inference request, in
//! JSON or with binary tensors after the JSON header (`Inference-Header-Content-Length`), run
//! through `/v1` predict's engine, answered in JSON or binary as each output asks.

use super::tensor::{self, DataType, JsonData};
use super::{INPUT, InferenceError, LABEL, OUTPUTS, V2Error, label_type, lookup};
use crate::api::extract::{Path, body_error};
use crate::nn::{Label, LabelSet, Prediction};
use crate::registry::ModelVersion;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The header that gives the length of the JSON part of a body with binary tensors.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// An inference request. Unknown fields are ignored (clients add `model_name`).
#[derive(Deserialize, ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// `binary_data_output` (boolean): answer every output as binary data unless the output
    /// says otherwise.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// The one input tensor, `input`.
    #[schema(min_items = 1)]
    pub inputs: Vec<RequestInput>,
    /// The outputs to answer with (`outputs`, and `label` for classifiers); all by default.
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// An input tensor: `[rows, inputs]` values, given in `data` (nested or flat, row-major) or as
/// `binary_data_size` bytes of the binary part of the body.
#[derive(Deserialize, ToSchema)]
pub struct RequestInput {
    pub name: String,
    /// `[rows, inputs]`.
    #[schema(value_type = Vec<u64>)]
    #[serde(deserialize_with = "crate::nn::integral::list")]
    pub shape: Vec<u64>,
    #[schema(value_type = InputDatatype)]
    pub datatype: String,
    /// `binary_data_size` (integer): the tensor's bytes in the binary part of the body.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// The values, as numbers in nested or flat arrays.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Value>>)]
    pub data: Option<JsonData>,
}

/// The element types an input may be sent in (converted to 32-bit floats).
#[derive(ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)] // documentation only
pub enum InputDatatype {
    FP32,
    FP64,
    INT8,
    INT16,
    INT32,
    INT64,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
}

/// An output to answer with.
#[derive(Deserialize, ToSchema)]
pub struct RequestOutput {
    /// `outputs` or `label`.
    pub name: String,
    /// `binary_data` (boolean): answer this output as binary data.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
}

/// An inference response.
#[derive(Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    /// The request's `id`, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<ResponseOutput>,
}

/// An output tensor, with its `data` in JSON or its `binary_data_size` bytes after the JSON.
#[derive(Serialize, ToSchema)]
pub struct ResponseOutput {
    pub name: String,
    /// `FP32` (outputs), `INT64` or `BYTES` (labels).
    pub datatype: String,
    pub shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Value>>)]
    pub data: Option<OutputData>,
}

#[derive(Serialize, ToSchema)]
pub struct BinarySize {
    pub binary_data_size: usize,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum OutputData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Str(Vec<String>),
}

/// Infer with the latest version.
#[utoipa::path(post, path = "/v2/models/{name}/infer", operation_id = "v2ModelInfer", tag = "inference",
    params(("name" = String, Path, description = "Model name")),
    request_body(description = "An inference request: JSON, or JSON followed by binary tensors (its length in `Inference-Header-Content-Length`)",
        content((InferRequest = "application/json"), (Vec<u8> = "application/octet-stream"))),
    responses(
        (status = 200, description = "The outputs; JSON followed by binary tensors when an output asked for binary data (its length in `Inference-Header-Content-Length`)",
            content((InferResponse = "application/json"), (Vec<u8> = "application/octet-stream"))),
        (status = 400, description = "Not a valid inference request for this model", body = InferenceError),
        (status = 404, description = "No such model", body = InferenceError),
        (status = 409, description = "The model has no trained version yet", body = InferenceError),
        (status = 413, description = "Body too large", body = InferenceError),
        (status = 503, description = "Too many predictions at once, or the version's weights, not in memory, cannot be read from storage; retry", body = InferenceError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, V2Error> {
    run(&state, &name, None, &headers, body).await
}

/// Infer with one version.
#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/infer", operation_id = "v2ModelVersionInfer", tag = "inference",
    params(("name" = String, Path, description = "Model name"), ("version" = u32, Path, description = "Version number", minimum = 1)),
    request_body(description = "An inference request: JSON, or JSON followed by binary tensors (its length in `Inference-Header-Content-Length`)",
        content((InferRequest = "application/json"), (Vec<u8> = "application/octet-stream"))),
    responses(
        (status = 200, description = "The outputs; JSON followed by binary tensors when an output asked for binary data (its length in `Inference-Header-Content-Length`)",
            content((InferResponse = "application/json"), (Vec<u8> = "application/octet-stream"))),
        (status = 400, description = "Not a valid inference request for this model", body = InferenceError),
        (status = 404, description = "No such model or version", body = InferenceError),
        (status = 413, description = "Body too large", body = InferenceError),
        (status = 503, description = "Too many predictions at once, or the version's weights, not in memory, cannot be read from storage; retry", body = InferenceError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn infer_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, V2Error> {
    run(&state, &name, Some(version), &headers, body).await
}

async fn run(
    state: &AppState,
    name: &str,
    version: Option<u32>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, V2Error> {
    let body = body.map_err(|e| V2Error::from(body_error(e)))?;
    let served = lookup(state, name, version).await?;
    let (json, binary) = split(headers, &body)?;
    let req: InferRequest = serde_json::from_slice(json)
        .map_err(|e| V2Error::bad_request(format!("not a valid inference request: {e}")))?;
    let x = match served.signature.as_ref() {
        Some(sig) if req.inputs.iter().any(|t| t.name != INPUT) => {
            feature_inputs(&req, binary, sig)?
        }
        _ => input(&req, binary, served.trained.inputs())?,
    };
    let wanted = wanted_outputs(&req, served.trained.labels.is_some())?;
    let id = req.id;
    let pred = crate::api::predict::compute(state, &served, x).await?;
    Ok(respond(&served, id, &wanted, pred))
}

/// The JSON part and the binary part of the body.
fn split<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), V2Error> {
    let Some(v) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let n = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n <= body.len())
        .ok_or_else(|| {
            V2Error::bad_request(format!(
                "Inference-Header-Content-Length must be a byte count within the body's {} bytes",
                body.len()
            ))
        })?;
    Ok(body.split_at(n))
}

/// The request's one input as a `rows × width` matrix.
fn input(req: &InferRequest, binary: &[u8], width: usize) -> Result<ndarray::Array2<f32>, V2Error> {
    let [t] = &req.inputs[..] else {
        return Err(V2Error::bad_request(format!(
            "the model takes one input tensor, {INPUT:?}; the request has {}",
            req.inputs.len()
        )));
    };
    if t.name != INPUT {
        return Err(V2Error::bad_request(format!(
            "unknown input {:?}: the model's input is {INPUT:?}",
            t.name
        )));
    }
    let dt = DataType::parse(&t.datatype).ok_or_else(|| {
        V2Error::bad_request(format!(
            "input {INPUT:?}: {:?} is not a datatype of the protocol",
            t.datatype
        ))
    })?;
    let [rows, cols] = t.shape[..] else {
        return Err(V2Error::bad_request(format!(
            "input {INPUT:?}: the shape must be [rows, {width}], not {:?}",
            t.shape
        )));
    };
    if cols != width as u64 || rows == 0 {
        return Err(V2Error::bad_request(format!(
            "input {INPUT:?}: the shape must be [rows, {width}] with at least one row, not {:?}",
            t.shape
        )));
    }
    let rows = usize::try_from(rows).map_err(|_| V2Error::bad_request("too many rows"))?;
    let count = rows
        .checked_mul(width)
        .ok_or_else(|| V2Error::bad_request("too many rows"))?;
    let binary_size = match t
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"))
    {
        None => None,
        Some(v) => Some(crate::nn::integral::integer::<_, u64>(v).map_err(|_| {
            V2Error::bad_request(format!(
                "input {INPUT:?}: binary_data_size must be a byte count"
            ))
        })?),
    };
    let numeric = DataType::NUMERIC_INPUTS.contains(&tensor::type_name(dt));
    if !numeric {
        return Err(V2Error::bad_request(format!(
            "input {INPUT:?}: datatype {} is not accepted; send one of {}",
            t.datatype,
            DataType::NUMERIC_INPUTS.join(", ")
        )));
    }
    let values = match (binary_size, &t.data) {
        (Some(_), Some(_)) => {
            return Err(V2Error::bad_request(format!(
                "input {INPUT:?} has both data and binary_data_size"
            )));
        }
        (None, None) => {
            return Err(V2Error::bad_request(format!(
                "input {INPUT:?} has neither data nor binary_data_size"
            )));
        }
        (Some(size), None) => {
            let elem = dt.size().expect("numeric types have a size");
            let want = count.saturating_mul(elem);
            if size != want as u64 {
                return Err(V2Error::bad_request(format!(
                    "input {INPUT:?}: binary_data_size is {size} but shape {:?} of {} takes {want} bytes",
                    t.shape, t.datatype
                )));
            }
            if binary.len() != want {
                return Err(V2Error::bad_request(format!(
                    "the binary part of the body holds {} bytes but the inputs take {want}",
                    binary.len()
                )));
            }
            tensor::binary_to_f32(INPUT, dt, binary, false).map_err(V2Error::bad_request)?
        }
        (None, Some(data)) => {
            if !binary.is_empty() {
                return Err(V2Error::bad_request(format!(
                    "the binary part of the body holds {} bytes that no input claims",
                    binary.len()
                )));
            }
            if !data.texts.is_empty() {
                return Err(V2Error::bad_request(format!(
                    "input {INPUT:?}: strings in a {} tensor",
                    t.datatype
                )));
            }
            let flat = data.dims.len() == 1 && data.dims[0] == count;
            let nested = data.dims == [rows, width];
            if !flat && !nested {
                return Err(V2Error::bad_request(format!(
                    "input {INPUT:?}: data of dims {:?} does not match shape {:?}",
                    data.dims, t.shape
                )));
            }
            tensor::json_to_f32(INPUT, dt, &data.values).map_err(V2Error::bad_request)?
        }
    };
    ndarray::Array2::from_shape_vec((rows, width), values).map_err(|_| {
        V2Error::bad_request(format!(
            "input {INPUT:?}: the data does not hold {rows} × {width} values"
        ))
    })
}

/// One feature's column, as its input tensor gave it.
enum Column {
    /// NaN marks a missing value.
    Numbers(Vec<f32>),
    /// The empty string marks a missing value.
    Texts(Vec<String>),
}

/// The request's inputs as one tensor per feature (named as the signature names them; BYTES
/// for text), each `[rows]` or `[rows, 1]`, encoded through the signature as `/v1` records
/// are. A feature without a tensor is missing in every row (imputed); NaN (binary FP32/FP64)
/// and `""` (BYTES) are missing values.
fn feature_inputs(
    req: &InferRequest,
    mut binary: &[u8],
    sig: &crate::tabular::Signature,
) -> Result<ndarray::Array2<f32>, V2Error> {
    use crate::tabular::{Cell, Feature};
    let names = || {
        sig.features
            .iter()
            .map(|f| format!("{:?}", f.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows: Option<usize> = None;
    let mut columns: Vec<Option<Column>> = (0..sig.features.len()).map(|_| None).collect();
    for t in &req.inputs {
        let name = &t.name;
        let Some(f) = sig.position(name) else {
            return Err(V2Error::bad_request(format!(
                "unknown input {name:?}: the model takes {INPUT:?} or one tensor per feature ({})",
                names()
            )));
        };
        if columns[f].is_some() {
            return Err(V2Error::bad_request(format!(
                "input {name:?} is given twice"
            )));
        }
        let n = match t.shape[..] {
            [n] | [n, 1] if n > 0 => {
                usize::try_from(n).map_err(|_| V2Error::bad_request("too many rows"))?
            }
            _ => {
                return Err(V2Error::bad_request(format!(
                    "input {name:?}: the shape must be [rows] or [rows, 1] with at least one row, not {:?}",
                    t.shape
                )));
            }
        };
        if rows.is_some_and(|r| r != n) {
            return Err(V2Error::bad_request(format!(
                "input {name:?} has {n} rows but another input has {}",
                rows.unwrap_or(0)
            )));
        }
        rows = Some(n);
        let dt = DataType::parse(&t.datatype).ok_or_else(|| {
            V2Error::bad_request(format!(
                "input {name:?}: {:?} is not a datatype of the protocol",
                t.datatype
            ))
        })?;
        let text = dt == DataType::Bytes;
        let numeric_ok = DataType::NUMERIC_INPUTS.contains(&tensor::type_name(dt));
        match &sig.features[f] {
            Feature::Numeric { .. } if !numeric_ok => {
                return Err(V2Error::bad_request(format!(
                    "input {name:?}: the feature is numeric; send one of {}",
                    DataType::NUMERIC_INPUTS.join(", ")
                )));
            }
            Feature::Categorical { .. } if !text && !numeric_ok => {
                return Err(V2Error::bad_request(format!(
                    "input {name:?}: the feature is categorical; send BYTES"
                )));
            }
            _ => {}
        }
        let binary_size = match t
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
        {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                V2Error::bad_request(format!(
                    "input {name:?}: binary_data_size must be a byte count"
                ))
            })?),
        };
        let column = match (binary_size, &t.data) {
            (Some(_), Some(_)) => {
                return Err(V2Error::bad_request(format!(
                    "input {name:?} has both data and binary_data_size"
                )));
            }
            (None, None) => {
                return Err(V2Error::bad_request(format!(
                    "input {name:?} has neither data nor binary_data_size"
                )));
            }
            (Some(size), None) => {
                let size = usize::try_from(size)
                    .ok()
                    .filter(|&s| s <= binary.len())
                    .ok_or_else(|| {
                        V2Error::bad_request(format!(
                            "input {name:?}: binary_data_size {size} is more than the {} bytes left in the body",
                            binary.len()
                        ))
                    })?;
                let (bytes, rest) = binary.split_at(size);
                binary = rest;
                if text {
                    Column::Texts(
                        tensor::binary_to_strings(name, bytes, n).map_err(V2Error::bad_request)?,
                    )
                } else {
                    let elem = dt.size().expect("numeric types have a size");
                    if size != n * elem {
                        return Err(V2Error::bad_request(format!(
                            "input {name:?}: binary_data_size is {size} but {n} rows of {} take {} bytes",
                            t.datatype,
                            n * elem
                        )));
                    }
                    Column::Numbers(
                        tensor::binary_to_f32(name, dt, bytes, true)
                            .map_err(V2Error::bad_request)?,
                    )
                }
            }
            (None, Some(data)) => {
                let count = if text {
                    data.texts.len()
                } else {
                    data.values.len()
                };
                let shaped = data.dims == [n] || data.dims == [n, 1];
                if !shaped || count != n {
                    return Err(V2Error::bad_request(format!(
                        "input {name:?}: data of dims {:?} does not match shape {:?} (or is not {})",
                        data.dims,
                        t.shape,
                        if text { "strings" } else { "numbers" }
                    )));
                }
                if text {
                    Column::Texts(data.texts.clone())
                } else {
                    Column::Numbers(
                        tensor::json_to_f32(name, dt, &data.values)
                            .map_err(V2Error::bad_request)?,
                    )
                }
            }
        };
        columns[f] = Some(column);
    }
    if !binary.is_empty() {
        return Err(V2Error::bad_request(format!(
            "the binary part of the body holds {} bytes that no input claims",
            binary.len()
        )));
    }
    let rows = rows.ok_or_else(|| V2Error::bad_request("the request has no input tensor"))?;
    let mut x = ndarray::Array2::<f32>::zeros((rows, sig.width()));
    for (i, mut out) in x.rows_mut().into_iter().enumerate() {
        sig.encode_row(
            |k| match &columns[k] {
                None => Cell::Missing,
                Some(Column::Numbers(v)) if v[i].is_nan() => Cell::Missing,
                Some(Column::Numbers(v)) => Cell::Number(f64::from(v[i])),
                Some(Column::Texts(v)) if v[i].is_empty() => Cell::Missing,
                Some(Column::Texts(v)) => Cell::Text(&v[i]),
            },
            out.as_slice_mut().expect("rows are contiguous"),
        )
        .map_err(|e| {
            V2Error::bad_request(format!(
                "input {:?}, row {i}: {e}",
                sig.features[e.feature()].name()
            ))
        })?;
    }
    Ok(x)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Outputs,
    Label,
}

/// The outputs to answer with, each with whether it goes as binary data.
fn wanted_outputs(req: &InferRequest, classifier: bool) -> Result<Vec<(Output, bool)>, V2Error> {
    let all_binary = bool_param(req.parameters.as_ref(), "binary_data_output")?.unwrap_or(false);
    let Some(list) = &req.outputs else {
        let mut all = vec![(Output::Outputs, all_binary)];
        if classifier {
            all.push((Output::Label, all_binary));
        }
        return Ok(all);
    };
    let mut wanted: Vec<(Output, bool)> = Vec::with_capacity(list.len());
    for o in list {
        let which = match o.name.as_str() {
            OUTPUTS => Output::Outputs,
            LABEL if classifier => Output::Label,
            other => {
                let known = if classifier {
                    format!("{OUTPUTS:?} or {LABEL:?}")
                } else {
                    format!("{OUTPUTS:?}")
                };
                return Err(V2Error::bad_request(format!(
                    "unknown output {other:?}: the model's outputs are {known}"
                )));
            }
        };
        if wanted.iter().any(|(w, _)| *w == which) {
            return Err(V2Error::bad_request(format!(
                "output {:?} is asked for twice",
                o.name
            )));
        }
        if o.parameters
            .as_ref()
            .is_some_and(|p| p.contains_key("classification"))
        {
            return Err(V2Error::bad_request(
                "the classification extension is not implemented; ask for the label output",
            ));
        }
        let binary = bool_param(o.parameters.as_ref(), "binary_data")?.unwrap_or(all_binary);
        wanted.push((which, binary));
    }
    Ok(wanted)
}

fn bool_param(params: Option<&Map<String, Value>>, key: &str) -> Result<Option<bool>, V2Error> {
    match params.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(V2Error::bad_request(format!(
            "parameter {key} must be a boolean"
        ))),
    }
}

fn respond(
    served: &ModelVersion,
    id: Option<String>,
    wanted: &[(Output, bool)],
    pred: Prediction,
) -> Response {
    let rows = pred.outputs.nrows();
    let mut binary: Vec<u8> = Vec::new();
    let mut any_binary = false;
    let mut outputs = Vec::with_capacity(wanted.len());
    for &(which, as_binary) in wanted {
        any_binary |= as_binary;
        let start = binary.len();
        let (name, datatype, shape, data) = match which {
            Output::Outputs => {
                let data = if as_binary {
                    binary.reserve(pred.outputs.len() * 4);
                    for v in &pred.outputs {
                        binary.extend_from_slice(&v.to_le_bytes());
                    }
                    None
                } else {
                    Some(OutputData::F32(pred.outputs.iter().copied().collect()))
                };
                (OUTPUTS, "FP32", vec![rows, pred.outputs.ncols()], data)
            }
            Output::Label => {
                let labels = pred.labels.as_deref().unwrap_or(&[]);
                let set = served
                    .trained
                    .labels
                    .as_ref()
                    .expect("a label output is only offered by classifiers");
                let data = match (set, as_binary) {
                    (LabelSet::Int(_), false) => {
                        Some(OutputData::I64(labels.iter().map(label_int).collect()))
                    }
                    (LabelSet::Str(_), false) => Some(OutputData::Str(
                        labels.iter().map(Label::to_string).collect(),
                    )),
                    (LabelSet::Int(_), true) => {
                        for l in labels {
                            binary.extend_from_slice(&label_int(l).to_le_bytes());
                        }
                        None
                    }
                    (LabelSet::Str(_), true) => {
                        let strings: Vec<String> = labels.iter().map(Label::to_string).collect();
                        tensor::push_bytes_elements(
                            &mut binary,
                            strings.iter().map(String::as_bytes),
                        );
                        None
                    }
                };
                (LABEL, label_type(set), vec![rows], data)
            }
        };
        outputs.push(ResponseOutput {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: as_binary.then(|| BinarySize {
                binary_data_size: binary.len() - start,
            }),
            data,
        });
    }
    let body = InferResponse {
        model_name: served.model.clone(),
        model_version: served.version.to_string(),
        id,
        outputs,
    };
    let mut bytes = serde_json::to_vec(&body).expect("the response serializes");
    if !any_binary {
        return ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    }
    let header_len = bytes.len();
    bytes.extend_from_slice(&binary);
    let mut resp = ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response();
    resp.headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(header_len));
    resp
}

fn label_int(l: &Label) -> i64 {
    match l {
        Label::Int(i) => *i,
        Label::Str(_) => unreachable!("an integer label set holds integers"),
    }
}
