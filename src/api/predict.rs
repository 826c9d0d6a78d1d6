//! `POST /v1/models/{name}/predict`: the served version's forward pass through the dynamic
//! batcher (`crate::batcher`), which merges concurrent requests for one version; no lock is
//! held while computing.

use super::extract::{Path, Query};
use super::models::{parse_name, select_error};
use super::predict_input::{PredictInput, PredictRequest};
use crate::batcher::PredictError;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::nn::{Activation, Label, Prediction};
use crate::registry::{ModelVersion, Select};
use crate::state::AppState;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

#[derive(Serialize, ToSchema)]
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
    pub probabilities: Option<Vec<BTreeMap<String, f32>>>,
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
        (status = 503, description = "Too many predictions at once; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn predict(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PredictQuery>,
    input: PredictInput,
) -> Result<axum::Json<PredictResponse>, ApiError> {
    let name = parse_name(&name)?;
    let which = q.select()?;
    let served = state
        .registry
        .select(&name, which)
        .map_err(|e| select_error(&name, which, e))?;
    // Small bodies decode inline; records, columns and CSV of any size on a blocking thread.
    let x = if input.cells_hint() <= INLINE_DECODE {
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

/// Rows (or about 8 record fields each) below which a body is decoded on the runtime.
const INLINE_DECODE: usize = 4096;

fn respond(
    name: &crate::domain::ModelName,
    served: &ModelVersion,
    pred: Prediction,
) -> axum::Json<PredictResponse> {
    axum::Json(PredictResponse {
        model: name.to_string(),
        version: served.version,
        outputs: pred
            .outputs
            .rows()
            .into_iter()
            .map(|r| r.to_vec())
            .collect(),
        probabilities: probabilities(served, &pred),
        labels: pred.labels,
    })
}

/// Each class's probability by label, for classifiers whose outputs are probabilities.
fn probabilities(served: &ModelVersion, pred: &Prediction) -> Option<Vec<BTreeMap<String, f32>>> {
    let set = served.trained.labels.as_ref()?;
    let act = served.trained.spec.output_activation();
    if !matches!(act, Activation::Softmax | Activation::Sigmoid) {
        return None;
    }
    let names: Vec<String> = set.to_vec().iter().map(ToString::to_string).collect();
    Some(
        pred.outputs
            .rows()
            .into_iter()
            .map(|row| {
                if row.len() == 1 && names.len() == 2 {
                    BTreeMap::from([(names[0].clone(), 1.0 - row[0]), (names[1].clone(), row[0])])
                } else {
                    names.iter().cloned().zip(row.iter().copied()).collect()
                }
            })
            .collect(),
    )
}
