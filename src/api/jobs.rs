//! Training jobs: submit (`POST /v1/models/{name}/train` → 202), inspect, list, cancel.

use super::extract::{Json, Path, Query};
use super::models::{lookup_error, model_not_found, parse_name};
use super::views::JobView;
use crate::domain::train::{DataSource, TrainRequest};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::jobs::{Job, JobStatus};
use crate::nn::{EpochReport, MAX_EPOCHS, NetworkSpec};
use crate::records::RowCounts;
use crate::registry::Lookup;
use crate::state::AppState;
use crate::store::Canceled;
use crate::tabular::Signature;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Start training a model (asynchronously).
#[utoipa::path(post, path = "/v1/models/{name}/train", operation_id = "trainModel", tag = "jobs", request_body = TrainRequest,
    params(("name" = String, Path, description = "Model name"), ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same request (method, path and query, content type and encoding, body) sent again with the same key gets the first 2xx answer again, marked `Idempotent-Replayed: true`, without the work being done twice; keys are kept `--idempotency-ttl-secs` (default 24 h). Only 2xx answers are kept. 1 to 255 visible ASCII characters", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")),
    responses(
        (status = 202, description = "The job, queued", body = JobView,
            headers(("Location" = String, description = "The job's URL"), ("Idempotent-Replayed" = String, description = "`true` on the recorded answer to an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "The first request with this `Idempotency-Key` is still at work (`idempotency_key_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid parameter, no such `dataset_id`, data that does not fit the model, or an `Idempotency-Key` used for another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 429, description = "The job queue is full; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn train(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(req): Json<TrainRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let name = parse_name(&name)?;
    let (job, admin) = prepare(&state, name, req).await?;
    let job = Arc::new(job);
    let record = job.record(None);
    let jobs = state.jobs.clone();
    let capacity = state.config.queue_capacity;
    let submitted = state
        .commit(Some(admin), move |s| {
            if let Some(shared) = s.shared() {
                // The database's queue, counted cluster-wide with the insert; the input is
                // stored so that any replica can run the job.
                shared.enqueue(&record, &input_of(&job)?, capacity)?;
                return Ok(jobs.submit(job).ok());
            }
            s.submit_job(&record)?;
            match jobs.submit(job) {
                Ok(job) => Ok(Some(job)),
                Err(_) => s.delete_job(record.id).map(|()| None),
            }
        })
        .await?;
    let Some(job) = submitted else {
        return Err(ApiError::new(
            ErrorCode::QueueFull,
            "the training queue is full; retry later",
        )
        .retry_after(5));
    };
    tracing::info!(job_id = %job.id, model = %job.model, "job queued");
    let view = JobView::of(&job, true);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/jobs/{}", job.id))],
        axum::Json(view),
    ))
}

/// What a shared store keeps of a new job so that any replica can run it.
///
/// # Errors
/// The job holds no data (it was taken already).
pub fn input_of(job: &Job) -> Result<crate::store::JobInput, crate::store::StoreError> {
    Ok(crate::store::JobInput {
        data: job
            .data()
            .ok_or_else(|| crate::store::StoreError::Failed("a new job has no data".into()))?,
        signature: job.signature.clone(),
        refit_scaling: job.warm_start.as_ref().is_some_and(|(_, r)| *r),
    })
}

/// Checks a train request against its model and data and prepares the data (off the
/// runtime): the job, not yet queued, and the admin lock, under which the model and dataset
/// were seen to exist (hold it until the job is recorded).
///
/// # Errors
/// 404 for an unknown model, 422 for invalid parameters or data that cannot train the model.
pub async fn prepare(
    state: &AppState,
    name: crate::domain::ModelName,
    req: TrainRequest,
) -> Result<(Job, tokio::sync::OwnedMutexGuard<()>), ApiError> {
    state.find_model(&name).await?;
    // An unknown model is a 404, whatever values the (well-formed) body holds.
    if state.registry.get(&name).is_none() {
        return Err(model_not_found(name.as_str()));
    }
    let warm = req.warm_start()?;
    let (mut params, source, prep) = req.into_parts()?;
    // A warm start's parent, held from now on (a prune after this does not take it away).
    let parent = match warm {
        Some((v, refit)) => {
            let p = state
                .registry
                .serving(&name, Some(v))
                .await
                .map_err(|e| match e {
                    Lookup::Unavailable => lookup_error(&name, e),
                    _ => ApiError::invalid(
                        "init_from_version",
                        format!("model {name} has no version {v}"),
                    ),
                })?;
            Some((p, refit))
        }
        None => None,
    };
    let cap = state.config.max_train_seconds;
    if cap > 0.0 {
        params.max_seconds = Some(params.max_seconds.map_or(cap, |s| s.min(cap)));
    }
    // Load (or parse) the data before taking the lock: it may take seconds.
    let (dataset_id, table) = match source {
        DataSource::Stored(id) => {
            state.find_dataset(id).await?;
            let d = state.datasets.get(id).ok_or_else(|| unknown_dataset(id))?;
            (Some(id), state.store(move |s| d.data(s)).await?)
        }
        DataSource::Inline(d) => {
            let max = state.config.max_dataset_cells;
            let (_, table) = tokio::task::spawn_blocking(move || d.into_table(max))
                .await
                .map_err(ApiError::internal)??;
            (None, Arc::new(table))
        }
    };
    // The preprocessing is learned now, on the rows the job will train on (CPU work: off the
    // runtime), so data that cannot train this model is refused now, not after queueing.
    let defined = state
        .registry
        .get(&name)
        .ok_or_else(|| model_not_found(name.as_str()))?
        .spec;
    let (spec0, p) = (defined.clone(), params.clone());
    let max_parameters = state.config.max_model_parameters;
    // A warm start encodes the features as its parent did (found in the data by name).
    let fixed = parent.as_ref().map(|(v, _)| v.clone());
    // The data check walks every row: on the blocking thread too, before the admin lock.
    let (prepared, spec) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let sig = fixed.as_ref().and_then(|v| v.signature.as_ref());
        let prepared = crate::tabular::prepare_with(&table, &spec0, &p, &prep, sig)?;
        let spec = spec_for(&spec0, &prepared.signature)?;
        super::models::check_parameters(max_parameters, &spec)?;
        crate::nn::check_data(&spec, &prepared.data, &p)?;
        if let Some(v) = &fixed {
            crate::nn::check_warm_start(&spec, &prepared.data, &v.trained)?;
        }
        Ok((prepared, spec))
    })
    .await
    .map_err(ApiError::internal)??;
    let admin = state.admin_lock().await;
    let model = state
        .registry
        .get(&name)
        .ok_or_else(|| model_not_found(name.as_str()))?;
    if model.spec != defined {
        return Err(model_not_found(name.as_str()));
    }
    if let Some(id) = dataset_id
        && state.datasets.get(id).is_none()
    {
        return Err(unknown_dataset(id));
    }
    let rows = RowCounts {
        rows_used: prepared.rows_used,
        rows_skipped: prepared.rows_skipped,
    };
    let mut job = Job::new(
        name,
        dataset_id,
        spec,
        params,
        Arc::new(prepared.data),
        Some((prepared.signature, rows)),
    );
    job.init_from_version = parent.as_ref().map(|(v, _)| v.version);
    job.warm_start = parent;
    Ok((job, admin))
}

/// The network a job trains: the model's definition, its input width following the encoded
/// features when the model left it open (`inputs` omitted), or checked against them.
fn spec_for(defined: &NetworkSpec, sig: &Signature) -> Result<NetworkSpec, ApiError> {
    let width = sig.width();
    let mut spec = defined.clone();
    if spec.inputs == 0 {
        spec.inputs = width;
        spec.validate()?;
    } else if spec.inputs != width {
        let names: Vec<String> = sig.features.iter().flat_map(|f| f.column_names()).collect();
        let shown = if names.len() > 12 {
            format!("{}, …", names[..12].join(", "))
        } else {
            names.join(", ")
        };
        return Err(ApiError::invalid(
            "dataset",
            format!(
                "the encoded features are {width} wide ({shown}) but the model takes {} inputs; \
                 define the model without `inputs` to follow the data",
                spec.inputs
            ),
        ));
    }
    Ok(spec)
}

/// A train request naming a dataset that does not exist: the request, not the URL, is at fault.
fn unknown_dataset(id: Uuid) -> ApiError {
    ApiError::invalid("dataset_id", format!("no dataset {id}"))
}

pub fn job_not_found(id: Uuid) -> ApiError {
    ApiError::new(ErrorCode::JobNotFound, format!("no job {id}"))
}

/// The largest `offset` of a job listing (far more jobs than are ever kept).
const MAX_OFFSET: u32 = 1_000_000_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// Only jobs of this model.
    pub model: Option<String>,
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Jobs to skip (newest first).
    #[param(minimum = 0, maximum = 1000000000)]
    pub offset: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    /// Newest first, without histories.
    pub jobs: Vec<JobView>,
    /// Jobs matching the filters, over all pages.
    pub total: usize,
    /// The offset of the next page, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

/// A listing's page size (default 50) and offset, checked.
///
/// # Errors
/// 422 naming `limit` or `offset`.
pub fn page_bounds(limit: Option<usize>, offset: Option<u32>) -> Result<(usize, usize), ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let offset = offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::invalid(
            "offset",
            format!("must be between 0 and {MAX_OFFSET}"),
        ));
    }
    Ok((limit, offset as usize))
}

/// List jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", operation_id = "listJobs", tag = "jobs", params(JobQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 422, description = "Invalid query", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<JobQuery>,
) -> Result<axum::Json<JobList>, ApiError> {
    let (limit, offset) = page_bounds(q.limit, q.offset)?;
    let matching: Vec<_> = state
        .jobs
        .list()
        .into_iter()
        .filter(|j| q.model.as_deref().is_none_or(|m| j.model.as_str() == m))
        .filter(|j| q.status.is_none_or(|s| j.status() == s))
        .collect();
    let total = matching.len();
    let jobs = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|j| JobView::of(j, false))
        .collect();
    let next_offset = (offset.saturating_add(limit) < total).then(|| offset + limit);
    Ok(axum::Json(JobList {
        jobs,
        total,
        next_offset,
    }))
}

/// A job: its state, progress and last epochs (the whole history is paged at
/// `GET /v1/jobs/{id}/history`).
#[utoipa::path(get, path = "/v1/jobs/{id}", operation_id = "getJob", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<JobView>, ApiError> {
    let job = state.job(id).await?.ok_or_else(|| job_not_found(id))?;
    Ok(axum::Json(JobView::of(&job, true)))
}

/// The largest page of a job's history.
const MAX_HISTORY_LIMIT: usize = 10_000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Epochs per page (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
    /// Epochs to skip, from the first (`offset` 0 starts at epoch 1).
    #[param(minimum = 0, maximum = 1000000)]
    pub offset: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryList {
    /// Oldest first.
    pub epochs: Vec<EpochReport>,
    /// Epochs recorded so far.
    pub total: usize,
    /// The offset of the next page, if more epochs are recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
    /// The job's status when the page was read (a job not yet finished records more).
    pub status: JobStatus,
}

/// A page of a job's epoch history, oldest first.
#[utoipa::path(get, path = "/v1/jobs/{id}/history", operation_id = "getJobHistory", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id"), HistoryQuery),
    responses(
        (status = 200, description = "A page of epochs", body = HistoryList),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 422, description = "Invalid query", body = ErrorBody),
    ))]
pub async fn history(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(q): Query<HistoryQuery>,
) -> Result<axum::Json<HistoryList>, ApiError> {
    let limit = q.limit.unwrap_or(1000);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_HISTORY_LIMIT}"),
        ));
    }
    let offset = q.offset.unwrap_or(0);
    if offset > MAX_EPOCHS {
        return Err(ApiError::invalid(
            "offset",
            format!("must be between 0 and {MAX_EPOCHS}"),
        ));
    }
    let job = state.job(id).await?.ok_or_else(|| job_not_found(id))?;
    let offset = offset as usize;
    let page = job.history_page(offset, limit);
    let next_offset = (offset.saturating_add(limit) < page.total).then(|| offset + limit);
    Ok(axum::Json(HistoryList {
        epochs: page.epochs,
        total: page.total,
        next_offset,
        status: page.status,
    }))
}

/// Cancel a job: a queued one at once, a running one within one mini-batch. The model keeps
/// serving its previous version.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", operation_id = "cancelJob", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, description = "Cancellation under way (or done, for a queued job)", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job has already finished", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, axum::Json<JobView>), ApiError> {
    let job = state.job(id).await?.ok_or_else(|| job_not_found(id))?;
    let requested = cancel_job(&state, job.clone()).await?;
    if requested.is_none() {
        return Err(ApiError::new(
            ErrorCode::JobFinished,
            format!("job {id} has already finished ({:?})", job.status()),
        ));
    }
    tracing::info!(job_id = %id, "cancel requested");
    Ok((StatusCode::ACCEPTED, axum::Json(JobView::of(&job, true))))
}

/// Cancels a job: a queued one ends `canceled` at once (`Some(true)`), a running one is told to
/// stop (`Some(false)`); `None` when it had already ended.
///
/// # Errors
/// The store failed.
pub async fn cancel_job(state: &AppState, job: Arc<Job>) -> Result<Option<bool>, ApiError> {
    let (id, jobs) = (job.id, state.jobs.clone());
    state
        .commit(None, move |s| {
            if let Some(shared) = s.shared() {
                // The store decides (the job may run on another replica, which its
                // notification stops); the cached copy follows.
                return Ok(match shared.cancel(id)? {
                    Canceled::Queued(record) => {
                        job.apply_record(&record, &[]);
                        Some(true)
                    }
                    Canceled::Requested => {
                        if jobs.runs_here(id) {
                            job.flag_cancel();
                        }
                        Some(false)
                    }
                    Canceled::Finished(_) | Canceled::NotFound => None,
                });
            }
            let requested = job.request_cancel();
            // A queued job ended here and now: record it. A running one is recorded by its
            // worker.
            if requested == Some(true) {
                s.save_job(&job.record(None))?;
            }
            Ok(requested)
        })
        .await
}
