//! `POST /v1/models/{name}/predict`: the served version's forward pass through the dynamic
//! batcher (`crate::batcher`), which merges concurrent requests for one version; no lock is
//! held while computing.

use super::extract::{Json, Path, Query};
use super::models::{lookup_error, parse_name};
use crate::batcher::PredictError;
use crate::domain::dataset::matrix;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::nn::{Label, Prediction};
use crate::registry::ModelVersion;
use crate::state::AppState;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// One or more rows of the model's input width.
    #[schema(min_items = 1, value_type = Vec<Vec<super::openapi::Float32>>)]
    pub inputs: Vec<Vec<f32>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PredictQuery {
    /// Predict with this version instead of the latest.
    #[param(minimum = 1)]
    pub version: Option<u32>,
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
}

/// Predict with a trained model.
#[utoipa::path(post, path = "/v1/models/{name}/predict", operation_id = "predict", tag = "models", request_body = PredictRequest,
    params(("name" = String, Path, description = "Model name"), PredictQuery),
    responses(
        (status = 200, description = "Outputs (and labels) per row", body = PredictResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 409, description = "The model has no trained version yet", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Rows of the wrong width or not finite", body = ErrorBody),
        (status = 503, description = "Too many predictions at once; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn predict(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<PredictQuery>,
    Json(req): Json<PredictRequest>,
) -> Result<axum::Json<PredictResponse>, ApiError> {
    let name = parse_name(&name)?;
    let served = state
        .registry
        .serving(&name, q.version)
        .map_err(|e| lookup_error(&name, e))?;
    let x = matrix(&req.inputs, "inputs")?;
    drop(req);
    let want = served.trained.inputs();
    if x.ncols() != want {
        return Err(ApiError::invalid(
            "inputs[0]",
            format!("has {} values but the model takes {want} inputs", x.ncols()),
        ));
    }
    let pred = state
        .batcher
        .predict(served.clone(), x)
        .await
        .map_err(|e| match e {
            PredictError::Model(e) => ApiError::invalid("inputs", e),
            PredictError::Overloaded => {
                ApiError::new(ErrorCode::Overloaded, "too many predictions at once").retry_after(1)
            }
            PredictError::Internal => ApiError::internal("the forward pass failed"),
        })?;
    Ok(respond(&name, &served, pred))
}

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
        labels: pred.labels,
    })
}
