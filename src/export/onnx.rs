//! A trained model as an ONNX graph that computes what [`TrainedModel::predict`] computes from
//! the same raw rows, laid out the way skl2onnx lays out a `StandardScaler` + `MLPClassifier`
//! pipeline:
//!
//! ```text
//! input [N, F] float                                          (or, with a signature that encodes
//!                                                              raw values, one input per feature:
//!   numeric  [N, 1] float  → ai.onnx.ml Imputer  (+ IsNaN → Cast float: missing indicator)
//!   categorical [N, 1] string → ai.onnx.ml LabelEncoder (level → slot, else one past the last)
//!                          → Equal [0..w) → Cast float         (one-hot; unseen: all zeros)
//!   → Concat axis 1 = encoded [N, F])
//!   → ai.onnx.ml Scaler (offset = shift, scale = scale)       when inputs were scaled
//!   → per layer: Gemm (W stored out×in, transB = 1) → activation (Relu, Tanh, Sigmoid,
//!     LeakyRelu α = 0.01, Softmax axis 1; none for identity)
//!   → Div (scale) → Add (shift)                                 when targets were scaled
//!   = outputs [N, k] float
//! classifiers:
//!   outputs → ArgMax (axis 1)                                   k ≥ 2 (first maximum, as mlpd)
//!   outputs → GreaterOrEqual 0.5 → Cast int64 → Reshape [-1]    one sigmoid unit
//!   → Gather (classes)  = label [N] int64 or string, the classes as trained
//! ```
//!
//! Operator sets: `ai.onnx` 17 and, for the Scaler, `ai.onnx.ml` 3; IR version 8. Probabilities
//! come as a tensor (skl2onnx's `zipmap=False`). The model's name, version, description, input
//! width, feature names, encoded columns and targets are in the model's metadata. Pure and
//! synchronous; call it off the runtime for large models.

use super::proto::*;
use crate::nn::{Activation, LEAKY_SLOPE, LabelSet, Scaler, TrainedModel};
use crate::tabular::{Feature, Signature};
use prost::Message;

/// The `ai.onnx` operator set the graph is written for.
pub const OPSET: i64 = 17;
/// The `ai.onnx.ml` operator set (for `Scaler`).
pub const ML_OPSET: i64 = 3;
/// The IR version that goes with [`OPSET`].
pub const IR_VERSION: i64 = 8;

pub const INPUT: &str = "input";
pub const OUTPUTS: &str = "outputs";
pub const LABEL: &str = "label";
const ML: &str = "ai.onnx.ml";

/// What the graph's metadata says about the model, and its signature (features by name).
pub struct ExportInfo<'a> {
    pub name: &'a str,
    pub version: u32,
    pub description: Option<&'a str>,
    /// The version's features: with categorical features or missing indicators, the graph
    /// takes one input per feature and encodes them itself.
    pub signature: Option<&'a Signature>,
}

/// Why a model cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "feature {0:?} has the name of a value inside the graph; rename the column to export it"
    )]
    NameClash(String),
}

/// One input per feature (numeric: float `[N, 1]`, NaN for missing; categorical: string
/// `[N, 1]`, `""` for missing), encoded as [`Signature::encode_row`] encodes a record: numeric
/// → `Imputer` (and `IsNaN` → `Cast` for an indicator); categorical → `LabelEncoder` (each
/// level, infrequent level and the missing text to its slot, anything else to one past the
/// last) → `Equal` against the slots → `Cast` (a one-hot row, all zeros for an unseen level);
/// then one `Concat`. Returns the encoded matrix's name.
fn encode_features(g: &mut Graph, sig: &Signature, inputs: &mut Vec<ValueInfoProto>) -> String {
    let mut blocks = Vec::new();
    for (k, f) in sig.features.iter().enumerate() {
        let name = f.name();
        match f {
            Feature::Numeric {
                impute, indicator, ..
            } => {
                inputs.push(value_info(name, data_type::FLOAT, vec![batch(), size(1)]));
                blocks.push(g.node(
                    "Imputer",
                    ML,
                    &[name],
                    &format!("f{k}_imputed"),
                    vec![
                        floats("imputed_value_floats", &[*impute]),
                        float("replaced_value_float", f32::NAN),
                    ],
                ));
                if *indicator {
                    let nan = g.node("IsNaN", "", &[name], &format!("f{k}_isnan"), vec![]);
                    blocks.push(g.node(
                        "Cast",
                        "",
                        &[&nan],
                        &format!("f{k}_missing"),
                        vec![int("to", i64::from(data_type::FLOAT))],
                    ));
                }
            }
            Feature::Categorical {
                levels,
                infrequent,
                missing_level,
                ..
            } => {
                inputs.push(value_info(name, data_type::STRING, vec![batch(), size(1)]));
                let w = f.width();
                let mut keys: Vec<String> = levels.clone();
                let mut values: Vec<i64> = (0..levels.len() as i64).collect();
                for l in infrequent {
                    keys.push(l.clone());
                    values.push(levels.len() as i64);
                }
                if *missing_level {
                    keys.push(String::new());
                    values.push(w as i64 - 1);
                }
                let slot = g.node(
                    "LabelEncoder",
                    ML,
                    &[name],
                    &format!("f{k}_slot"),
                    vec![
                        strings("keys_strings", &keys),
                        ints("values_int64s", &values),
                        int("default_int64", w as i64),
                    ],
                );
                let range = g.int_init(&format!("f{k}_slots"), &[w], (0..w as i64).collect());
                let hot = g.node("Equal", "", &[&slot, &range], &format!("f{k}_hot"), vec![]);
                blocks.push(g.node(
                    "Cast",
                    "",
                    &[&hot],
                    &format!("f{k}_onehot"),
                    vec![int("to", i64::from(data_type::FLOAT))],
                ));
            }
        }
    }
    let refs: Vec<&str> = blocks.iter().map(String::as_str).collect();
    g.node("Concat", "", &refs, "encoded", vec![int("axis", 1)])
}

/// The model as an ONNX `ModelProto`.
///
/// # Errors
/// A feature named like a value inside the graph.
pub fn model_proto(model: &TrainedModel, info: &ExportInfo<'_>) -> Result<ModelProto, ExportError> {
    let mut g = Graph::default();
    let mut current = INPUT.to_owned();
    let mut uses_ml = false;
    let mut graph_inputs = Vec::new();
    match info.signature {
        Some(sig) if !sig.is_identity() => {
            uses_ml = true;
            current = encode_features(&mut g, sig, &mut graph_inputs);
        }
        _ => graph_inputs.push(value_info(
            INPUT,
            data_type::FLOAT,
            vec![batch(), size(model.spec.inputs)],
        )),
    }
    if !model.input_scaler.is_identity() {
        uses_ml = true;
        current = g.node(
            "Scaler",
            ML,
            &[&current],
            "scaled",
            vec![
                floats("offset", &model.input_scaler.shift),
                floats("scale", &model.input_scaler.scale),
            ],
        );
    }
    for (i, layer) in model.network.layers().iter().enumerate() {
        let w = g.float_init(
            &format!("W{i}"),
            &[layer.units(), layer.inputs()],
            layer.weights.iter().copied().collect(),
        );
        let b = g.float_init(&format!("B{i}"), &[layer.units()], layer.bias.to_vec());
        current = g.node(
            "Gemm",
            "",
            &[&current, &w, &b],
            &format!("z{i}"),
            vec![int("transB", 1)],
        );
        let out = format!("a{i}");
        current = match layer.activation {
            Activation::Identity => current,
            Activation::Relu => g.node("Relu", "", &[&current], &out, vec![]),
            Activation::Tanh => g.node("Tanh", "", &[&current], &out, vec![]),
            Activation::Sigmoid => g.node("Sigmoid", "", &[&current], &out, vec![]),
            Activation::LeakyRelu => g.node(
                "LeakyRelu",
                "",
                &[&current],
                &out,
                vec![float("alpha", LEAKY_SLOPE as f32)],
            ),
            Activation::Softmax => g.node("Softmax", "", &[&current], &out, vec![int("axis", 1)]),
        };
    }
    if let Some(t) = &model.target_scaler {
        current = unscale(&mut g, t, &current);
    }
    g.node("Identity", "", &[&current], OUTPUTS, vec![]);
    let k = model.spec.outputs();
    let mut outputs = vec![value_info(
        OUTPUTS,
        data_type::FLOAT,
        vec![batch(), size(k)],
    )];
    if let Some(labels) = &model.labels {
        let index = if k == 1 {
            let half = g.float_init("threshold", &[1], vec![0.5]);
            let positive = g.node("GreaterOrEqual", "", &[OUTPUTS, &half], "positive", vec![]);
            let as_int = g.node(
                "Cast",
                "",
                &[&positive],
                "positive_int",
                vec![int("to", i64::from(data_type::INT64))],
            );
            let flat = g.int_init("flat", &[1], vec![-1]);
            g.node("Reshape", "", &[&as_int, &flat], "label_index", vec![])
        } else {
            g.node(
                "ArgMax",
                "",
                &[OUTPUTS],
                "label_index",
                vec![int("axis", 1), int("keepdims", 0)],
            )
        };
        let (classes, elem) = match labels {
            LabelSet::Int(v) => (
                g.int_init("classes", &[v.len()], v.clone()),
                data_type::INT64,
            ),
            LabelSet::Str(v) => (g.string_init("classes", v), data_type::STRING),
        };
        g.node(
            "Gather",
            "",
            &[&classes, &index],
            LABEL,
            vec![int("axis", 0)],
        );
        outputs.push(value_info(LABEL, elem, vec![batch()]));
    }
    let mut opset_import = vec![OperatorSetIdProto {
        domain: Some(String::new()),
        version: Some(OPSET),
    }];
    if uses_ml {
        opset_import.push(OperatorSetIdProto {
            domain: Some(ML.into()),
            version: Some(ML_OPSET),
        });
    }
    let mut metadata = vec![
        entry("mlpd.model", info.name),
        entry("mlpd.version", &info.version.to_string()),
        entry("inputs", &model.spec.inputs.to_string()),
    ];
    if let Some(d) = info.description {
        metadata.push(entry("description", d));
    }
    if let Some(sig) = info.signature {
        let names: Vec<&str> = sig.features.iter().map(Feature::name).collect();
        metadata.push(entry(
            "features",
            &serde_json::to_string(&names).expect("strings serialize"),
        ));
        let columns: Vec<String> = sig
            .features
            .iter()
            .flat_map(Feature::column_names)
            .collect();
        metadata.push(entry(
            "encoded_columns",
            &serde_json::to_string(&columns).expect("strings serialize"),
        ));
        if !sig.targets.is_empty() {
            metadata.push(entry(
                "targets",
                &serde_json::to_string(&sig.targets).expect("strings serialize"),
            ));
        }
    }
    if let Some(sig) = info.signature.filter(|s| !s.is_identity()) {
        let mut inside: std::collections::HashSet<&str> = g
            .nodes
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .collect();
        inside.extend(g.initializers.iter().filter_map(|t| t.name.as_deref()));
        inside.extend([OUTPUTS, LABEL]);
        if let Some(f) = sig.features.iter().find(|f| inside.contains(f.name())) {
            return Err(ExportError::NameClash(f.name().to_owned()));
        }
    }
    if let Some(l) = &model.labels {
        let names: Vec<String> = l.to_vec().iter().map(ToString::to_string).collect();
        metadata.push(entry(
            "classes",
            &serde_json::to_string(&names).expect("strings serialize"),
        ));
    }
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import,
        producer_name: Some("mlpd".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: Some("mlpd".into()),
        model_version: Some(i64::from(info.version)),
        doc_string: info.description.map(str::to_owned),
        graph: Some(GraphProto {
            node: g.nodes,
            name: Some(info.name.to_owned()),
            initializer: g.initializers,
            doc_string: info.description.map(str::to_owned),
            input: graph_inputs,
            output: outputs,
        }),
        metadata_props: metadata,
    })
}

/// The model as the bytes of an `.onnx` file.
///
/// # Errors
/// See [`model_proto`].
pub fn to_onnx(model: &TrainedModel, info: &ExportInfo<'_>) -> Result<Vec<u8>, ExportError> {
    Ok(model_proto(model, info)?.encode_to_vec())
}

/// `y / scale + shift`, in that order, as [`Scaler::invert`] computes it.
fn unscale(g: &mut Graph, t: &Scaler, current: &str) -> String {
    let scale = g.float_init("target_scale", &[t.width()], t.scale.clone());
    let shift = g.float_init("target_shift", &[t.width()], t.shift.clone());
    let divided = g.node("Div", "", &[current, &scale], "target_divided", vec![]);
    g.node("Add", "", &[&divided, &shift], "target", vec![])
}

#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Graph {
    /// Adds a node with one output and returns the output's name.
    fn node(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            name: Some(format!("{op}_{}", self.nodes.len())),
            op_type: Some(op.to_owned()),
            domain: Some(domain.to_owned()),
            attribute,
        });
        output.to_owned()
    }

    fn float_init(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type::FLOAT),
            float_data: data,
            name: Some(name.to_owned()),
            ..Default::default()
        });
        name.to_owned()
    }

    fn int_init(&mut self, name: &str, dims: &[usize], data: Vec<i64>) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type::INT64),
            int64_data: data,
            name: Some(name.to_owned()),
            ..Default::default()
        });
        name.to_owned()
    }

    fn string_init(&mut self, name: &str, data: &[String]) -> String {
        self.initializers.push(TensorProto {
            dims: vec![data.len() as i64],
            data_type: Some(data_type::STRING),
            string_data: data.iter().map(|s| s.as_bytes().to_vec()).collect(),
            name: Some(name.to_owned()),
            ..Default::default()
        });
        name.to_owned()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn strings(name: &str, v: &[String]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(AttributeType::Strings as i32),
        strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
}

fn floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(AttributeType::Floats as i32),
        floats: v.to_vec(),
        ..Default::default()
    }
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.to_owned()),
        value: Some(value.to_owned()),
    }
}

fn batch() -> Dimension {
    Dimension {
        value: Some(DimensionValue::DimParam("N".into())),
    }
}

fn size(n: usize) -> Dimension {
    Dimension {
        value: Some(DimensionValue::DimValue(n as i64)),
    }
}

fn value_info(name: &str, elem_type: i32, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
        doc_string: None,
    }
}

#[cfg(test)]
mod tests {
    //! The encoding, checked from the bytes back: decoded with the same message definitions,
    //! every field where ONNX expects it, and the decoded graph — run by a small interpreter
    //! written from the ONNX operator definitions — computes what `predict` computes.
    //! (onnx.checker and ONNX Runtime check the same files in tests/interop/clients.py.)
    use super::*;
    use crate::nn::{Dense, LayerSpec, Loss, Network, NetworkSpec, Normalization};
    use ndarray::{Array1, Array2, Axis, array};
    use std::collections::HashMap;

    #[test]
    fn known_messages_encode_to_the_bytes_protobuf_specifies() {
        // field 1 (string, wire type 2) = "", field 2 (varint) = 17
        let op = OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        };
        assert_eq!(op.encode_to_vec(), vec![0x0a, 0x00, 0x10, 0x11]);
        // An attribute whose value is 0 is still written (proto2 presence): keepdims = 0.
        let a = int("keepdims", 0);
        let bytes = a.encode_to_vec();
        assert!(
            bytes.ends_with(&[0x18, 0x00, 0xa0, 0x01, 0x02]),
            "{bytes:x?}"
        );
        // dims unpacked (proto2 default): field 1 varint twice; floats packed (field 4).
        let t = TensorProto {
            dims: vec![1, 2],
            data_type: Some(data_type::FLOAT),
            float_data: vec![1.0, 2.0],
            ..Default::default()
        };
        let mut want = vec![0x08, 0x01, 0x08, 0x02, 0x10, 0x01, 0x22, 0x08];
        want.extend_from_slice(&1.0f32.to_le_bytes());
        want.extend_from_slice(&2.0f32.to_le_bytes());
        assert_eq!(t.encode_to_vec(), want);
    }

    fn model(
        layers: &[(usize, Activation)],
        inputs: usize,
        labels: Option<LabelSet>,
        target: bool,
    ) -> TrainedModel {
        let mut fan_in = inputs;
        let mut dense = Vec::new();
        for (l, &(units, activation)) in layers.iter().enumerate() {
            let w = Array2::from_shape_fn((units, fan_in), |(i, j)| {
                ((i * 7 + j * 3 + l) % 11) as f32 / 5.0 - 1.0
            });
            let b = Array1::from_shape_fn(units, |i| (i as f32 - 1.0) / 10.0);
            dense.push(Dense {
                weights: w,
                bias: b,
                activation,
            });
            fan_in = units;
        }
        let spec = NetworkSpec {
            inputs,
            layers: layers
                .iter()
                .map(|&(units, activation)| LayerSpec { units, activation })
                .collect(),
            loss: Loss::Mse,
        };
        let scaler = Scaler {
            kind: Normalization::Standard,
            shift: (0..inputs).map(|i| i as f32 * 0.5).collect(),
            scale: (0..inputs).map(|i| 1.0 / (1.0 + i as f32)).collect(),
        };
        let outputs = spec.outputs();
        let target_scaler = target.then(|| Scaler {
            kind: Normalization::Standard,
            shift: vec![100.0; outputs],
            scale: vec![0.02; outputs],
        });
        TrainedModel::new(
            spec,
            Network::from_layers(dense).unwrap(),
            scaler,
            target_scaler,
            labels,
        )
    }

    #[derive(Clone, Debug)]
    enum V {
        F(Array2<f32>),
        Flat(Vec<f32>),
        I(Vec<i64>),
        S(Vec<String>),
        B(Array2<bool>),
    }

    fn attr<'a>(n: &'a NodeProto, name: &str) -> &'a AttributeProto {
        n.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .unwrap()
    }

    /// Runs the decoded graph on `x`: the operators an export uses, as ONNX defines them.
    fn run(m: &ModelProto, x: &Array2<f32>) -> HashMap<String, V> {
        run_on(m, HashMap::from([(INPUT.to_string(), V::F(x.clone()))]))
    }

    /// Runs the decoded graph on the given inputs.
    fn run_on(m: &ModelProto, inputs: HashMap<String, V>) -> HashMap<String, V> {
        let g = m.graph.as_ref().unwrap();
        let mut env = inputs;
        for t in &g.initializer {
            let v = match t.data_type.unwrap() {
                data_type::FLOAT if t.dims.len() == 2 => V::F(
                    Array2::from_shape_vec(
                        (t.dims[0] as usize, t.dims[1] as usize),
                        t.float_data.clone(),
                    )
                    .unwrap(),
                ),
                data_type::FLOAT => V::Flat(t.float_data.clone()),
                data_type::INT64 => V::I(t.int64_data.clone()),
                data_type::STRING => V::S(
                    t.string_data
                        .iter()
                        .map(|b| String::from_utf8(b.clone()).unwrap())
                        .collect(),
                ),
                other => panic!("initializer type {other}"),
            };
            env.insert(t.name.clone().unwrap(), v);
        }
        let f = |env: &HashMap<String, V>, k: &str| match &env[k] {
            V::F(a) => a.clone(),
            other => panic!("{k} is {other:?}"),
        };
        let flat = |env: &HashMap<String, V>, k: &str| match &env[k] {
            V::Flat(a) => a.clone(),
            other => panic!("{k} is {other:?}"),
        };
        for n in &g.node {
            let i = &n.input;
            let op = n.op_type.as_deref().unwrap();
            let out = match op {
                "Scaler" => {
                    assert_eq!(n.domain.as_deref(), Some(ML));
                    let (off, sc) = (&attr(n, "offset").floats, &attr(n, "scale").floats);
                    let mut a = f(&env, &i[0]);
                    for mut r in a.rows_mut() {
                        for (j, v) in r.iter_mut().enumerate() {
                            *v = (*v - off[j]) * sc[j];
                        }
                    }
                    V::F(a)
                }
                "Gemm" => {
                    assert_eq!(attr(n, "transB").i, Some(1));
                    let (a, w, b) = (f(&env, &i[0]), f(&env, &i[1]), flat(&env, &i[2]));
                    let mut z = a.dot(&w.t());
                    for mut r in z.rows_mut() {
                        for (j, v) in r.iter_mut().enumerate() {
                            *v += b[j];
                        }
                    }
                    V::F(z)
                }
                "Relu" => V::F(f(&env, &i[0]).mapv(|v| v.max(0.0))),
                "Tanh" => V::F(f(&env, &i[0]).mapv(f32::tanh)),
                "Sigmoid" => V::F(f(&env, &i[0]).mapv(|v| 1.0 / (1.0 + (-v).exp()))),
                "LeakyRelu" => {
                    let alpha = attr(n, "alpha").f.unwrap();
                    V::F(f(&env, &i[0]).mapv(|v| if v >= 0.0 { v } else { alpha * v }))
                }
                "Softmax" => {
                    assert_eq!(attr(n, "axis").i, Some(1));
                    let mut a = f(&env, &i[0]);
                    for mut r in a.rows_mut() {
                        let max = r.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        r.mapv_inplace(|v| (v - max).exp());
                        let s = r.sum();
                        r.mapv_inplace(|v| v / s);
                    }
                    V::F(a)
                }
                "Div" | "Add" => {
                    let (mut a, b) = (f(&env, &i[0]), flat(&env, &i[1]));
                    for mut r in a.rows_mut() {
                        for (j, v) in r.iter_mut().enumerate() {
                            *v = if op == "Div" { *v / b[j] } else { *v + b[j] };
                        }
                    }
                    V::F(a)
                }
                "Identity" => env[&i[0]].clone(),
                "ArgMax" => {
                    assert_eq!(
                        (attr(n, "axis").i, attr(n, "keepdims").i),
                        (Some(1), Some(0))
                    );
                    let a = f(&env, &i[0]);
                    V::I(
                        a.axis_iter(Axis(0))
                            .map(|r| {
                                let mut best = 0;
                                for (k, &v) in r.iter().enumerate() {
                                    if v > r[best] {
                                        best = k;
                                    }
                                }
                                best as i64
                            })
                            .collect(),
                    )
                }
                "GreaterOrEqual" => {
                    let (a, t) = (f(&env, &i[0]), flat(&env, &i[1]));
                    V::B(a.mapv(|v| v >= t[0]))
                }
                "Cast" => match (&env[&i[0]], attr(n, "to").i) {
                    (V::B(b), Some(t)) if t == i64::from(data_type::INT64) => {
                        V::I(b.iter().map(|&v| i64::from(v)).collect())
                    }
                    (V::B(b), Some(t)) if t == i64::from(data_type::FLOAT) => {
                        V::F(b.mapv(|v| f32::from(u8::from(v))))
                    }
                    other => panic!("cast of {other:?}"),
                },
                "Imputer" => {
                    assert_eq!(n.domain.as_deref(), Some(ML));
                    let fill = attr(n, "imputed_value_floats").floats[0];
                    assert!(attr(n, "replaced_value_float").f.unwrap().is_nan());
                    V::F(f(&env, &i[0]).mapv(|v| if v.is_nan() { fill } else { v }))
                }
                "IsNaN" => V::B(f(&env, &i[0]).mapv(f32::is_nan)),
                "LabelEncoder" => {
                    assert_eq!(n.domain.as_deref(), Some(ML));
                    let keys: Vec<String> = attr(n, "keys_strings")
                        .strings
                        .iter()
                        .map(|b| String::from_utf8(b.clone()).unwrap())
                        .collect();
                    let values = &attr(n, "values_int64s").ints;
                    let default = attr(n, "default_int64").i.unwrap();
                    let V::S(texts) = &env[&i[0]] else {
                        panic!("LabelEncoder of a non-string")
                    };
                    V::I(
                        texts
                            .iter()
                            .map(|t| {
                                keys.iter()
                                    .position(|k| k == t)
                                    .map_or(default, |p| values[p])
                            })
                            .collect(),
                    )
                }
                "Equal" => {
                    // [N, 1] slots against [w] slot numbers: broadcast to [N, w].
                    let (V::I(a), V::I(b)) = (&env[&i[0]], &env[&i[1]]) else {
                        panic!("Equal of non-integers")
                    };
                    V::B(Array2::from_shape_fn((a.len(), b.len()), |(r, c)| {
                        a[r] == b[c]
                    }))
                }
                "Concat" => {
                    assert_eq!(attr(n, "axis").i, Some(1));
                    let parts: Vec<Array2<f32>> = i.iter().map(|k| f(&env, k)).collect();
                    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
                    V::F(ndarray::concatenate(Axis(1), &views).unwrap())
                }
                "Reshape" => env[&i[0]].clone(),
                "Gather" => {
                    let idx = match &env[&i[1]] {
                        V::I(v) => v.clone(),
                        other => panic!("{other:?}"),
                    };
                    match &env[&i[0]] {
                        V::I(c) => V::I(idx.iter().map(|&k| c[k as usize]).collect()),
                        V::S(c) => V::S(idx.iter().map(|&k| c[k as usize].clone()).collect()),
                        other => panic!("{other:?}"),
                    }
                }
                other => panic!("unexpected operator {other}"),
            };
            env.insert(n.output[0].clone(), out);
        }
        env
    }

    #[test]
    fn the_decoded_graph_computes_what_predict_computes() {
        let x = array![
            [0.3f32, -1.2, 2.5],
            [1.0, 0.0, -0.5],
            [4.0, 2.0, 1.0],
            [-3.0, 0.5, 0.25]
        ];
        let cases = [
            model(
                &[(5, Activation::Relu), (3, Activation::Softmax)],
                3,
                Some(LabelSet::Str(vec!["a".into(), "b".into(), "c".into()])),
                false,
            ),
            model(
                &[
                    (4, Activation::Tanh),
                    (4, Activation::LeakyRelu),
                    (2, Activation::Identity),
                ],
                3,
                None,
                true,
            ),
            model(
                &[(4, Activation::Sigmoid), (1, Activation::Sigmoid)],
                3,
                Some(LabelSet::Int(vec![3, 8])),
                false,
            ),
            model(
                &[(3, Activation::Softmax)],
                3,
                Some(LabelSet::Int(vec![-1, 0, 7])),
                false,
            ),
        ];
        for m in cases {
            let info = ExportInfo {
                name: "m",
                version: 4,
                description: Some("a test model"),
                signature: None,
            };
            let bytes = to_onnx(&m, &info).unwrap();
            let decoded = ModelProto::decode(bytes.as_slice()).unwrap();
            assert_eq!(
                decoded,
                model_proto(&m, &info).unwrap(),
                "decodes to what was encoded"
            );
            assert_eq!(decoded.ir_version, Some(IR_VERSION));
            assert_eq!(decoded.opset_import[0].version, Some(OPSET));
            assert_eq!(decoded.model_version, Some(4));
            let meta: HashMap<_, _> = decoded
                .metadata_props
                .iter()
                .map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap()))
                .collect();
            assert_eq!(meta["description"], "a test model");
            assert_eq!(meta["inputs"], "3");
            let g = decoded.graph.as_ref().unwrap();
            assert_eq!(g.output[0].name.as_deref(), Some(OUTPUTS));
            assert_eq!(g.output.len(), if m.labels.is_some() { 2 } else { 1 });

            let want = m.predict(x.view()).unwrap();
            let env = run(&decoded, &x);
            let V::F(got) = &env[OUTPUTS] else {
                panic!("outputs")
            };
            for (g, w) in got.iter().zip(want.outputs.iter()) {
                assert!((g - w).abs() <= 1e-5 * w.abs().max(1e-2), "{g} vs {w}");
            }
            if let Some(labels) = want.labels {
                let got: Vec<crate::nn::Label> = match &env[LABEL] {
                    V::I(v) => v.iter().map(|&i| crate::nn::Label::Int(i)).collect(),
                    V::S(v) => v.iter().map(|s| crate::nn::Label::Str(s.clone())).collect(),
                    other => panic!("{other:?}"),
                };
                assert_eq!(got, labels);
            }
        }
    }

    #[test]
    fn categorical_and_missing_values_are_encoded_inside_the_graph() {
        use crate::tabular::{Cell, Imputation, Unknown};
        let sig = Signature {
            features: vec![
                Feature::Numeric {
                    name: "area".into(),
                    imputation: Imputation::Mean,
                    impute: 2.0,
                    indicator: true,
                },
                Feature::Categorical {
                    name: "district".into(),
                    levels: vec!["mapo".into(), "yongsan".into()],
                    infrequent: vec!["jongno".into()],
                    missing_level: true,
                    unknown: Unknown::Ignore,
                },
                Feature::Numeric {
                    name: "floor".into(),
                    imputation: Imputation::Median,
                    impute: 7.0,
                    indicator: false,
                },
            ],
            targets: vec!["price".into()],
            ignored: vec![],
        };
        assert_eq!(sig.width(), 2 + 4 + 1);
        let area = [1.5f32, f32::NAN, 0.5, 3.0, 2.5];
        let district = ["mapo", "jongno", "", "gangnam", "yongsan"];
        let floor = [3.0f32, 1.0, f32::NAN, 12.0, 4.0];
        let mut x = Array2::<f32>::zeros((5, sig.width()));
        for (r, mut out) in x.rows_mut().into_iter().enumerate() {
            let cell = |k: usize| match k {
                0 if area[r].is_nan() => Cell::Missing,
                0 => Cell::Number(f64::from(area[r])),
                1 if district[r].is_empty() => Cell::Missing,
                1 => Cell::Text(district[r]),
                _ if floor[r].is_nan() => Cell::Missing,
                _ => Cell::Number(f64::from(floor[r])),
            };
            sig.encode_row(cell, out.as_slice_mut().unwrap()).unwrap();
        }
        for m in [
            model(
                &[(5, Activation::Tanh), (3, Activation::Softmax)],
                7,
                Some(LabelSet::Str(vec![
                    "low".into(),
                    "mid".into(),
                    "high".into(),
                ])),
                false,
            ),
            model(
                &[(4, Activation::Relu), (1, Activation::Identity)],
                7,
                None,
                true,
            ),
        ] {
            let info = ExportInfo {
                name: "flats",
                version: 1,
                description: Some("flat prices"),
                signature: Some(&sig),
            };
            let decoded = ModelProto::decode(to_onnx(&m, &info).unwrap().as_slice()).unwrap();
            let g = decoded.graph.as_ref().unwrap();
            let names: Vec<_> = g.input.iter().map(|i| i.name.clone().unwrap()).collect();
            assert_eq!(names, ["area", "district", "floor"]);
            assert!(
                decoded
                    .opset_import
                    .iter()
                    .any(|o| o.domain.as_deref() == Some(ML))
            );
            let meta: HashMap<_, _> = decoded
                .metadata_props
                .iter()
                .map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap()))
                .collect();
            assert_eq!(meta["features"], r#"["area","district","floor"]"#);
            assert_eq!(meta["description"], "flat prices");
            let column = |v: &[f32]| Array2::from_shape_vec((v.len(), 1), v.to_vec()).unwrap();
            let env = run_on(
                &decoded,
                HashMap::from([
                    ("area".to_string(), V::F(column(&area))),
                    (
                        "district".to_string(),
                        V::S(district.iter().map(|s| s.to_string()).collect()),
                    ),
                    ("floor".to_string(), V::F(column(&floor))),
                ]),
            );
            let V::F(encoded) = &env["encoded"] else {
                panic!("encoded")
            };
            assert_eq!(encoded, &x, "the graph encodes rows as the signature does");
            let want = m.predict(x.view()).unwrap();
            let V::F(got) = &env[OUTPUTS] else {
                panic!("outputs")
            };
            for (g, w) in got.iter().zip(want.outputs.iter()) {
                assert!((g - w).abs() <= 1e-5 * w.abs().max(1e-2), "{g} vs {w}");
            }
            if let Some(labels) = want.labels {
                let V::S(got) = &env[LABEL] else {
                    panic!("labels")
                };
                let want: Vec<String> = labels.iter().map(ToString::to_string).collect();
                assert_eq!(got, &want);
            }
        }
        // A feature named like a value inside the graph cannot be an input.
        let mut clash = sig.clone();
        if let Feature::Numeric { name, .. } = &mut clash.features[2] {
            *name = "encoded".into();
        }
        let m = model(&[(1, Activation::Identity)], 7, None, false);
        let info = ExportInfo {
            name: "m",
            version: 1,
            description: None,
            signature: Some(&clash),
        };
        assert!(matches!(
            to_onnx(&m, &info),
            Err(ExportError::NameClash(n)) if n == "encoded"
        ));
    }
}
