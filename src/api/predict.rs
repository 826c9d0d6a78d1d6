//! `POST /v1/models/{name}/predict`: the served version's forward pass through the dynamic
//! batcher (`crate::batcher`), which merges concurrent requests for one version; no lock is
//! held while computing.

use super::extract::{Path, Query};
use super::models::{parse_name, select_error};
use super::predict_input::{PredictInput, PredictRequest};
use crate::batcher::PredictError;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::nn::{Activation, Label, LabelSet, Prediction};
use crate::registry::{ModelVersion, Select};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PredictQuery {
    /// Predict with this version instead of the one served.
    #[param(minimum = 1)]
    pub version: Option<u32>,
    /// Predict with the version this alias names (not with `version`).
    #[param(pattern = "^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    pub alias: Option<String>,
}

impl PredictQuery {
    /// The version asked for.
    ///
    /// # Errors
    /// 422 for both `version` and `alias`, or an alias that is not one.
    pub fn select(&self) -> Result<Select<'_>, ApiError> {
        match (self.version, self.alias.as_deref()) {
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "alias",
                "give either version or alias, not both",
            )),
            (Some(v), None) => Ok(Select::Version(v)),
            (None, Some(a)) => {
                super::serving::parse_alias(a, "alias")?;
                Ok(Select::Alias(a))
            }
            (None, None) => Ok(Select::Served),
        }
    }
}

// The answer's schema. The answer itself is written by `Answer`, straight from the forward
// pass's output matrix, without building these vectors and maps per request.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // the schema only
pub struct PredictResponse {
    pub model: String,
    pub version: u32,
    /// The output layer's activations per row (regression targets in their own units).
    pub outputs: Vec<Vec<f32>>,
    /// Classifiers: the predicted class per row, as the dataset named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<Label>>,
    /// Classifiers with a softmax or sigmoid output: each class's probability per row, by label.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<std::collections::HashMap<String, super::openapi::Float32>>>)]
    pub probabilities: Option<Vec<std::collections::BTreeMap<String, f32>>>,
}

/// Predict with a trained model.
///
/// The body is `{"inputs": [[…]]}` (the network's inputs), `{"records": [{"feature": value}]}`,
/// `{"columns": {"feature": [values]}}`, or CSV with a header row (`text/csv`). A missing or
/// null feature is imputed as in training; a categorical level never seen in training is all
/// zeros (or a 422 if the model was trained with `unknown: "error"`).
#[utoipa::path(post, path = "/v1/models/{name}/predict", operation_id = "predict", tag = "models",
    request_body(content(
        (PredictRequest = "application/json"),
        (String = "text/csv", example = "carat,cut\n0.3,Ideal\n"),
    )),
    params(("name" = String, Path, description = "Model name"), PredictQuery),
    responses(
        (status = 200, description = "Outputs (and labels) per row", body = PredictResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such model, version or alias", body = ErrorBody),
        (status = 409, description = "The model has no trained version yet", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Neither JSON nor CSV", body = ErrorBody),
        (status = 422, description = "Both `version` and `alias`, or not an alias name; rows of the wrong width or not finite; an unknown field, text in a numeric feature, an unseen level refused", body = ErrorBody),
        (status = 503, description = "Too many predictions at once, or the version's weights, not in memory, cannot be read from storage (`store_unavailable`); retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn predict(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PredictQuery>,
    input: PredictInput,
) -> Result<Answer, ApiError> {
    let name = parse_name(&name)?;
    let which = q.select()?;
    let served = state
        .registry
        .select(&name, which)
        .await
        .map_err(|e| select_error(&name, which, e))?;
    // Small bodies decode inline; records, columns and CSV of any size on a blocking thread.
    let x = if input.decodes_quickly() {
        input.into_matrix(&served)?
    } else {
        let model = served.clone();
        tokio::task::spawn_blocking(move || input.into_matrix(&model))
            .await
            .map_err(ApiError::internal)??
    };
    let want = served.trained.inputs();
    if x.ncols() != want {
        return Err(ApiError::invalid(
            "inputs[0]",
            format!("has {} values but the model takes {want} inputs", x.ncols()),
        ));
    }
    let pred = compute(&state, &served, x).await?;
    Ok(respond(&name, &served, pred))
}

/// The forward pass of `served` on the rows of `x` (of the model's width) through the batcher,
/// its errors as this API states them; every prediction route (`/v1` predict, `/v2` infer)
/// computes through here.
///
/// # Errors
/// 503 when overloaded; 422 when a row overflows the network.
pub(crate) async fn compute(
    state: &AppState,
    served: &std::sync::Arc<ModelVersion>,
    x: ndarray::Array2<f32>,
) -> Result<Prediction, ApiError> {
    state
        .batcher
        .predict(served.clone(), x)
        .await
        .map_err(|e| match e {
            PredictError::Model(e) => ApiError::invalid("inputs", e),
            PredictError::Overloaded => {
                ApiError::new(ErrorCode::Overloaded, "too many predictions at once").retry_after(1)
            }
            PredictError::Internal => ApiError::internal("the forward pass failed"),
        })
}

fn respond(
    name: &crate::domain::ModelName,
    served: &Arc<ModelVersion>,
    pred: Prediction,
) -> Answer {
    Answer {
        model: name.to_string(),
        served: served.clone(),
        outputs: pred.outputs,
        labels: pred.labels,
    }
}

/// A predict answer as [`PredictResponse`] describes it, serialized from the output matrix.
pub struct Answer {
    model: String,
    served: Arc<ModelVersion>,
    outputs: Array2<f32>,
    labels: Option<Vec<Label>>,
}

impl Answer {
    /// The classes whose probabilities the outputs are: a classifier's with a softmax or
    /// sigmoid output.
    fn classes(&self) -> Option<&LabelSet> {
        let trained = &self.served.trained;
        let act = trained.spec.output_activation();
        let probabilities = matches!(act, Activation::Softmax | Activation::Sigmoid);
        trained.labels.as_ref().filter(|_| probabilities)
    }
}

/// Written straight into one buffer sized for the whole answer ([`answer_json`]). Through
/// `serde` and `axum::Json` (a 128-byte `BytesMut` grown as it goes, a serializer call per map
/// entry, every probability formatted a second time) a classifier's one-row answer (≈ 320
/// bytes, 20 numbers) took almost as many instructions as its forward pass.
impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let body = answer_json(
            &self.model,
            self.served.version,
            &self.outputs,
            self.labels.as_deref(),
            self.classes(),
        );
        match body {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => ApiError::internal(e).into_response(),
        }
    }
}

/// The JSON [`PredictResponse`] describes: `classes` are those whose probabilities the outputs
/// are, if any. Numbers and strings are written by `serde_json` (so they read as they would
/// through `Serialize`); each output is formatted once, and its text copied under its label
/// for the probabilities.
fn answer_json(
    model: &str,
    version: u32,
    outputs: &Array2<f32>,
    labels: Option<&[Label]>,
    classes: Option<&LabelSet>,
) -> serde_json::Result<Vec<u8>> {
    let (rows, width) = outputs.dim();
    // A number takes at most 16 bytes; a probability as much again, plus its label.
    let mut out = Vec::with_capacity(96 + model.len() + 40 * rows * width);
    out.extend_from_slice(b"{\"model\":");
    serde_json::to_writer(&mut out, model)?;
    out.extend_from_slice(b",\"version\":");
    serde_json::to_writer(&mut out, &version)?;
    out.extend_from_slice(b",\"outputs\":[");
    // Where each output's text lies in `out`, for the probabilities.
    let mut spans = Vec::with_capacity(rows * width);
    for (r, row) in outputs.rows().into_iter().enumerate() {
        out.extend_from_slice(if r == 0 { b"[" } else { b",[" });
        for (k, v) in row.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            let start = out.len();
            serde_json::to_writer(&mut out, v)?;
            spans.push(start..out.len());
        }
        out.push(b']');
    }
    out.push(b']');
    if let Some(labels) = labels {
        out.extend_from_slice(b",\"labels\":");
        serde_json::to_writer(&mut out, labels)?;
    }
    if let Some(classes) = classes {
        out.extend_from_slice(b",\"probabilities\":[");
        let n = classes.len();
        // One sigmoid unit for two classes: `1 − p` and `p`; otherwise output k is class k's
        // probability (a class without an output unit would read 0).
        let binary = width == 1 && n == 2;
        // Where each class's `"label":` lies in `out`, once the first row has written it.
        let mut keys = Vec::with_capacity(n);
        for r in 0..rows {
            out.extend_from_slice(if r == 0 { b"{" } else { b",{" });
            for k in 0..n {
                if k > 0 {
                    out.push(b',');
                }
                if r == 0 {
                    let start = out.len();
                    write_key(&mut out, classes, k)?;
                    keys.push(start..out.len());
                } else {
                    out.extend_from_within(keys[k].clone());
                }
                if binary && k == 0 {
                    serde_json::to_writer(&mut out, &(1.0 - outputs[[r, 0]]))?;
                } else if binary {
                    out.extend_from_within(spans[r].clone());
                } else if k < width {
                    out.extend_from_within(spans[r * width + k].clone());
                } else {
                    serde_json::to_writer(&mut out, &0f32)?;
                }
            }
            out.push(b'}');
        }
        out.push(b']');
    }
    out.push(b'}');
    Ok(out)
}

/// Class `k`'s `"label":` as a JSON object key (an integer label as a string, as
/// `serde_json` writes integer keys).
fn write_key(out: &mut Vec<u8>, classes: &LabelSet, k: usize) -> serde_json::Result<()> {
    match classes {
        LabelSet::Int(ints) => {
            out.push(b'"');
            serde_json::to_writer(&mut *out, &ints[k])?;
            out.push(b'"');
        }
        LabelSet::Str(names) => serde_json::to_writer(&mut *out, &names[k])?,
    }
    out.push(b':');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn json(outputs: &Array2<f32>, labels: Option<&[Label]>, classes: Option<&LabelSet>) -> String {
        String::from_utf8(answer_json("m", 3, outputs, labels, classes).unwrap()).unwrap()
    }

    #[test]
    fn a_classifiers_answer_has_each_output_once_as_a_number_and_once_under_its_label() {
        let outputs = array![[0.25f32, 0.5, 0.25], [1.0, 0.0, 0.0]];
        let classes = LabelSet::Int(vec![0, 1, 7]);
        let labels = [Label::Int(1), Label::Int(0)];
        assert_eq!(
            json(&outputs, Some(&labels), Some(&classes)),
            r#"{"model":"m","version":3,"outputs":[[0.25,0.5,0.25],[1.0,0.0,0.0]],"labels":[1,0],"probabilities":[{"0":0.25,"1":0.5,"7":0.25},{"0":1.0,"1":0.0,"7":0.0}]}"#
        );
    }

    #[test]
    fn one_sigmoid_unit_gives_two_classes_their_probabilities_and_labels_are_escaped() {
        let outputs = array![[0.75f32], [0.125]];
        let classes = LabelSet::Str(vec!["no".into(), "say \"yes\"".into()]);
        let labels = [Label::Str("say \"yes\"".into()), Label::Str("no".into())];
        assert_eq!(
            json(&outputs, Some(&labels), Some(&classes)),
            r#"{"model":"m","version":3,"outputs":[[0.75],[0.125]],"labels":["say \"yes\"","no"],"probabilities":[{"no":0.25,"say \"yes\"":0.75},{"no":0.875,"say \"yes\"":0.125}]}"#
        );
    }

    #[test]
    fn a_regressions_answer_has_outputs_only_and_a_class_without_a_unit_reads_zero() {
        let outputs = array![[2.5f32, -1.0]];
        assert_eq!(
            json(&outputs, None, None),
            r#"{"model":"m","version":3,"outputs":[[2.5,-1.0]]}"#
        );
        let classes = LabelSet::Int(vec![0, 1, 2]);
        let got = json(&array![[0.5f32, 0.5]], None, Some(&classes));
        assert!(
            got.ends_with(r#""probabilities":[{"0":0.5,"1":0.5,"2":0.0}]}"#),
            "{got}"
        );
        let empty = Array2::<f32>::zeros((0, 3));
        assert_eq!(
            json(&empty, Some(&[]), Some(&classes)),
            r#"{"model":"m","version":3,"outputs":[],"labels":[],"probabilities":[]}"#
        );
    }

    #[test]
    fn every_number_reads_back_as_the_output_it_was() {
        let outputs = array![
            [0.381_112_72f32, 1e-7, 123_456.79],
            [f32::MIN_POSITIVE, 0.1, 3.0]
        ];
        let classes = LabelSet::Int(vec![0, 1, 2]);
        let body = answer_json("m", 3, &outputs, None, Some(&classes)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for (r, row) in outputs.rows().into_iter().enumerate() {
            for (k, &want) in row.iter().enumerate() {
                #[allow(clippy::cast_possible_truncation)]
                let read = |x: &serde_json::Value| x.as_f64().unwrap() as f32;
                assert_eq!(read(&v["outputs"][r][k]).to_bits(), want.to_bits());
                let p = &v["probabilities"][r][k.to_string()];
                assert_eq!(read(p).to_bits(), want.to_bits());
            }
        }
    }
}
