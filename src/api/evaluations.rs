//! Evaluations: a trained version scored on a stored or inline dataset
//! (`POST /v1/models/{name}/versions/{version}/evaluate` → 201), kept with the version and
//! listed on it (`GET …/evaluations`, newest first). The scoring runs on a blocking thread, at
//! most as many at once as there are training workers, so it never holds up predictions.

use super::extract::{Json, Path};
use super::models::{lookup_error, parse_name};
use crate::domain::dataset::DatasetJson;
use crate::error::{ApiError, ErrorBody};
use crate::records::EvaluationRecord;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /v1/models/{name}/versions/{version}/evaluate`: exactly one of `dataset_id` and
/// `dataset`. The data holds the version's features by name (extra columns are ignored) and
/// its target column(s).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// An uploaded dataset.
    pub dataset_id: Option<Uuid>,
    /// A dataset inline.
    pub dataset: Option<DatasetJson>,
}

#[derive(Serialize, ToSchema)]
pub struct EvaluationList {
    /// Newest first (the newest 100 per version are kept).
    pub evaluations: Vec<EvaluationRecord>,
}

/// Score a trained version on a dataset.
#[utoipa::path(post, path = "/v1/models/{name}/versions/{version}/evaluate", operation_id = "evaluateVersion", tag = "models",
    request_body = EvaluateRequest,
    params(("name" = String, Path, description = "Model name"), ("version" = u32, Path, description = "Version number", minimum = 1)),
    responses(
        (status = 201, description = "The evaluation, stored with the version", body = EvaluationRecord,
            headers(("Location" = String, description = "The version's evaluations"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "No such `dataset_id`, or data that does not fit the version (the field and column are named)", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn evaluate(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
    Json(req): Json<EvaluateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let name = parse_name(&name)?;
    let served = state
        .registry
        .serving(&name, Some(version))
        .await
        .map_err(|e| lookup_error(&name, e))?;
    let (dataset_id, table) = match (req.dataset_id, req.dataset) {
        (Some(id), None) => {
            let d = state
                .datasets
                .get(id)
                .ok_or_else(|| ApiError::invalid("dataset_id", format!("no dataset {id}")))?;
            (Some(id), state.store(move |s| d.data(s)).await?)
        }
        (None, Some(d)) => {
            let max = state.config.max_dataset_cells;
            let (_, table) = tokio::task::spawn_blocking(move || d.into_table(max))
                .await
                .map_err(ApiError::internal)??;
            (None, Arc::new(table))
        }
        _ => {
            return Err(ApiError::invalid(
                "dataset_id",
                "give exactly one of `dataset_id` and `dataset`",
            ));
        }
    };
    let permit = state
        .evaluations
        .clone()
        .acquire_owned()
        .await
        .map_err(ApiError::internal)?;
    let scored = served.clone();
    let evaluated = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        crate::evaluation::evaluate(&scored, &table)
    })
    .await
    .map_err(ApiError::internal)??;
    let record = EvaluationRecord {
        id: Uuid::new_v4(),
        model: name.to_string(),
        version,
        created_at: OffsetDateTime::now_utc(),
        dataset_id,
        rows: evaluated.rows,
        rows_skipped: evaluated.rows_skipped,
        scores: evaluated.scores,
    };
    let stored = record.clone();
    let kept = state
        .store(move |s| s.insert_evaluation(&stored, crate::store::EVALUATIONS_PER_VERSION))
        .await?;
    if !kept {
        // The version was deleted (or pruned) while it was scored.
        return Err(lookup_error(&name, crate::registry::Lookup::NoVersion));
    }
    tracing::info!(model = %name, version, evaluation = %record.id, rows = record.rows, "version evaluated");
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/v1/models/{name}/versions/{version}/evaluations"),
        )],
        axum::Json(record),
    ))
}

/// A version's evaluations, newest first.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}/evaluations", operation_id = "listEvaluations", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("version" = u32, Path, description = "Version number", minimum = 1)),
    responses(
        (status = 200, description = "The evaluations", body = EvaluationList),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
) -> Result<axum::Json<EvaluationList>, ApiError> {
    let name = parse_name(&name)?;
    state
        .registry
        .meta(&name, crate::registry::Select::Version(version))
        .map_err(|e| lookup_error(&name, e))?;
    let model = name.to_string();
    let evaluations = state.store(move |s| s.evaluations(&model, version)).await?;
    Ok(axum::Json(EvaluationList { evaluations }))
}
