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
use ndarray::Array2;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
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
) -> Result<axum::Json<Answer>, ApiError> {
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
) -> axum::Json<Answer> {
    axum::Json(Answer {
        model: name.to_string(),
        served: served.clone(),
        outputs: pred.outputs,
        labels: pred.labels,
    })
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

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let classes = self.classes();
        let fields = 3 + usize::from(self.labels.is_some()) + usize::from(classes.is_some());
        let mut m = s.serialize_struct("PredictResponse", fields)?;
        m.serialize_field("model", &self.model)?;
        m.serialize_field("version", &self.served.version)?;
        m.serialize_field("outputs", &Rows(&self.outputs))?;
        if let Some(labels) = &self.labels {
            m.serialize_field("labels", labels)?;
        }
        if let Some(classes) = classes {
            let rows = ClassProbabilities {
                classes,
                outputs: &self.outputs,
            };
            m.serialize_field("probabilities", &rows)?;
        }
        m.end()
    }
}

/// A matrix as a list of rows.
struct Rows<'a>(&'a Array2<f32>);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.rows().into_iter().map(Row))
    }
}

struct Row<'a>(ndarray::ArrayView1<'a, f32>);

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// Each row's probability of each class, by label, in the classes' order: the outputs of a
/// softmax (or of several sigmoids), or `1 − p` and `p` for one sigmoid unit of two classes.
struct ClassProbabilities<'a> {
    classes: &'a LabelSet,
    outputs: &'a Array2<f32>,
}

impl Serialize for ClassProbabilities<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let classes = self.classes;
        s.collect_seq(
            self.outputs
                .rows()
                .into_iter()
                .map(|row| ClassRow { classes, row }),
        )
    }
}

struct ClassRow<'a> {
    classes: &'a LabelSet,
    row: ndarray::ArrayView1<'a, f32>,
}

impl Serialize for ClassRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.classes.len();
        let binary = self.row.len() == 1 && n == 2;
        let p = |k: usize| {
            if binary {
                if k == 0 {
                    1.0 - self.row[0]
                } else {
                    self.row[0]
                }
            } else {
                self.row.get(k).copied().unwrap_or(0.0)
            }
        };
        let mut m = s.serialize_map(Some(n))?;
        match self.classes {
            LabelSet::Int(ints) => {
                for (k, label) in ints.iter().enumerate() {
                    // serde_json writes an integer map key as a string ("3").
                    m.serialize_entry(label, &p(k))?;
                }
            }
            LabelSet::Str(names) => {
                for (k, label) in names.iter().enumerate() {
                    m.serialize_entry(label, &p(k))?;
                }
            }
        }
        m.end()
    }
}
