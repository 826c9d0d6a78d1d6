//! Hyperparameter sweeps: `POST /v1/models/{name}/sweeps` (→ 202) queues one ordinary training
//! job per trial, all in one store transaction (a sweep larger than the queue's free places is
//! refused whole); `GET /v1/sweeps`, `GET /v1/sweeps/{id}` show the trials, the best so far and
//! the progress; `GET /v1/sweeps/{id}/events` streams a `trial` event as each trial ends, then
//! `end`; `POST /v1/sweeps/{id}/cancel` cancels every trial. What ends a sweep is
//! [`crate::sweeps`].

use super::events::stream_permit;
use super::extract::{Json, Path, Query};
use super::jobs::{cancel_job, input_of, page_bounds, prepare};
use super::models::parse_name;
use crate::domain::sweep::SweepRequest;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::jobs::{Job, Progress};
use crate::nn::TrainParams;
use crate::records::{
    SweepKind, SweepMetric, SweepRecord, SweepStatus, TrialParams, TrialRecord, TrialResult,
};
use crate::state::AppState;
use crate::sweeps::{any_finished, best};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, watch};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A trial: the values it tries, and how its job stands (or ended).
#[derive(Clone, Serialize, ToSchema)]
pub struct TrialView {
    /// Its position in the sweep (0 first).
    pub index: usize,
    pub job_id: Uuid,
    pub params: TrialParams,
    #[serde(flatten)]
    pub result: TrialResult,
}

/// How far a sweep has come.
#[derive(Serialize, ToSchema)]
pub struct SweepProgress {
    pub trials: usize,
    pub queued: usize,
    pub running: usize,
    /// Trials ended (in any way).
    pub ended: usize,
    /// `ended / trials`.
    pub fraction: f64,
}

/// A sweep, its trials and its best trial so far.
#[derive(Serialize, ToSchema)]
pub struct SweepView {
    pub id: Uuid,
    pub model: String,
    pub dataset_id: Uuid,
    pub status: SweepStatus,
    pub kind: SweepKind,
    /// The seed of a random search's draws.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub metric: SweepMetric,
    pub pin_best: bool,
    /// Cancel was asked.
    pub cancel_requested: bool,
    /// The base parameters every trial changes by its values.
    pub params: TrainParams,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
    pub progress: SweepProgress,
    /// The trial with the best metric among those that succeeded (the first of equals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best: Option<TrialView>,
    /// The version pinned when the sweep ended (`pin_best`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_version: Option<u32>,
    pub trials: Vec<TrialView>,
}

impl SweepView {
    /// The sweep with its trials as they stand (`trials`: one per trial, in order).
    pub fn of(s: &SweepRecord, trials: &[TrialResult]) -> Self {
        let views: Vec<TrialView> = s
            .trials
            .iter()
            .zip(trials)
            .enumerate()
            .map(|(index, (t, r))| TrialView {
                index,
                job_id: t.job_id,
                params: t.params.clone(),
                result: r.clone(),
            })
            .collect();
        let count = |st: crate::jobs::JobStatus| trials.iter().filter(|t| t.status == st).count();
        let ended = trials.iter().filter(|t| t.status.is_finished()).count();
        let n = s.trials.len();
        #[allow(clippy::cast_precision_loss)]
        let fraction = if n == 0 { 1.0 } else { ended as f64 / n as f64 };
        let best_index = match &s.result {
            Some(r) => r.best,
            None => best(s.metric, trials),
        };
        SweepView {
            id: s.id,
            model: s.model.clone(),
            dataset_id: s.dataset_id,
            status: s.status,
            kind: s.kind,
            seed: s.seed,
            metric: s.metric,
            pin_best: s.pin_best,
            cancel_requested: s.cancel_requested,
            params: s.params.clone(),
            created_at: s.created_at,
            finished_at: s.finished_at,
            progress: SweepProgress {
                trials: n,
                queued: count(crate::jobs::JobStatus::Queued),
                running: count(crate::jobs::JobStatus::Running),
                ended,
                fraction,
            },
            best: best_index.and_then(|i| views.get(i).cloned()),
            pinned_version: s.result.as_ref().and_then(|r| r.pinned_version),
            trials: views,
        }
    }
}

/// A sweep now: its record, its trials' results (the recorded ones once it has ended) and the
/// progress signals of the trials still going.
struct Now {
    sweep: SweepRecord,
    trials: Vec<TrialResult>,
    going: Vec<watch::Receiver<Progress>>,
}

impl Now {
    fn view(&self) -> SweepView {
        SweepView::of(&self.sweep, &self.trials)
    }
}

/// Reads a sweep and its trials' jobs (on a blocking thread); `None`: no such sweep.
async fn now(state: &AppState, id: Uuid) -> Result<Option<Now>, ApiError> {
    let sweeps = state.sweeps.clone();
    state
        .store(move |s| {
            let Some(sweep) = s.sweep(id)? else {
                return Ok(None);
            };
            Ok(Some(now_of(&sweeps, sweep)?))
        })
        .await
}

fn now_of(
    sweeps: &crate::sweeps::Sweeps,
    sweep: SweepRecord,
) -> Result<Now, crate::store::StoreError> {
    if let Some(r) = &sweep.result {
        let trials = r.trials.clone();
        return Ok(Now {
            sweep,
            trials,
            going: Vec::new(),
        });
    }
    let now = sweeps.trials_now(&sweep)?;
    Ok(Now {
        sweep,
        trials: now.trials,
        going: now.going,
    })
}

pub fn sweep_not_found(id: Uuid) -> ApiError {
    ApiError::new(ErrorCode::SweepNotFound, format!("no sweep {id}"))
}

/// Search a model's hyperparameters: one training job per trial.
#[utoipa::path(post, path = "/v1/models/{name}/sweeps", operation_id = "createSweep", tag = "sweeps", request_body = SweepRequest,
    params(("name" = String, Path, description = "Model name"), ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe, as on `POST /v1/models/{name}/train`", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")),
    responses(
        (status = 202, description = "The sweep, its trials queued", body = SweepView,
            headers(("Location" = String, description = "The sweep's URL"), ("Idempotent-Replayed" = String, description = "`true` on the recorded answer to an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "The first request with this `Idempotency-Key` is still at work (`idempotency_key_in_flight`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid search or parameter (an empty or unknown grid parameter, a bad range, no validation split), no such `dataset_id`, data that does not fit the model, or an `Idempotency-Key` used for another request", body = ErrorBody),
        (status = 429, description = "The queue has fewer free places than the sweep has trials; nothing was queued", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(req): Json<SweepRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let name = parse_name(&name)?;
    state.find_model(&name).await?;
    let model = state
        .registry
        .get(&name)
        .ok_or_else(|| super::models::model_not_found(name.as_str()))?;
    let plan = req.plan()?;
    if plan.metric == SweepMetric::ValAccuracy
        && matches!(model.spec.head(), crate::nn::Head::Mse(_))
    {
        return Err(ApiError::invalid(
            "metric",
            "val_accuracy needs a classifier (a cross-entropy output); use val_cost",
        ));
    }
    let dataset_id = plan.base.dataset_id.unwrap_or_default();
    let (template, admin) = prepare(&state, name, plan.base).await?;
    let data = template
        .data()
        .ok_or_else(|| ApiError::internal("a prepared job has no data"))?;
    let field = match plan.kind {
        SweepKind::Grid => "grid",
        SweepKind::Random => "random",
    };
    let mut jobs = Vec::with_capacity(plan.trials.len());
    for t in &plan.trials {
        let params = t.apply(&template.params);
        params
            .validate()
            .map_err(|e| ApiError::invalid(format!("{field}.{}", e.field), e.message))?;
        let mut job = Job::new(
            template.model.clone(),
            template.dataset_id,
            template.spec.clone(),
            params,
            data.clone(),
            template.signature.clone().zip(template.rows),
        );
        job.init_from_version = template.init_from_version;
        job.warm_start.clone_from(&template.warm_start);
        jobs.push(Arc::new(job));
    }
    let sweep = SweepRecord {
        id: Uuid::new_v4(),
        model: template.model.to_string(),
        dataset_id,
        created_at: OffsetDateTime::now_utc(),
        kind: plan.kind,
        seed: plan.seed,
        metric: plan.metric,
        pin_best: plan.pin_best,
        params: template.params.clone(),
        trials: jobs
            .iter()
            .zip(plan.trials)
            .map(|(j, params)| TrialRecord {
                job_id: j.id,
                params,
            })
            .collect(),
        status: SweepStatus::Running,
        cancel_requested: false,
        finished_at: None,
        result: None,
    };
    let records: Vec<_> = jobs.iter().map(|j| j.record(None)).collect();
    let n = jobs.len();
    let manager = state.jobs.clone();
    let capacity = state.config.queue_capacity;
    let stored = sweep.clone();
    let creating = state.sweeps.create(sweep.id);
    let submitted = state
        .commit(Some(admin), move |s| {
            let _creating = creating;
            if let Some(shared) = s.shared() {
                // Counted against the cluster's queue with the inserts, all in one transaction.
                shared.enqueue_sweep(&stored, &records, &input_of(&template)?, capacity)?;
                return Ok(manager.submit_all(jobs).is_ok());
            }
            s.submit_sweep(&stored, &records)?;
            match manager.submit_all(jobs) {
                Ok(_) => Ok(true),
                Err(_) => s.delete_sweep(stored.id).map(|()| false),
            }
        })
        .await?;
    if !submitted {
        return Err(ApiError::new(
            ErrorCode::QueueFull,
            format!("the training queue has fewer than {n} free places; nothing was queued"),
        )
        .retry_after(5));
    }
    state.sweeps.wake();
    tracing::info!(sweep_id = %sweep.id, model = %sweep.model, trials = n, "sweep queued");
    let now = now(&state, sweep.id)
        .await?
        .ok_or_else(|| ApiError::internal("a new sweep vanished"))?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/sweeps/{}", sweep.id))],
        axum::Json(now.view()),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SweepQuery {
    /// Only sweeps of this model.
    pub model: Option<String>,
    /// Only sweeps in this state.
    pub status: Option<SweepStatus>,
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Sweeps to skip (newest first).
    #[param(minimum = 0, maximum = 1000000000)]
    pub offset: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct SweepList {
    /// Newest first.
    pub sweeps: Vec<SweepView>,
    /// Sweeps matching the filters, over all pages.
    pub total: usize,
    /// The offset of the next page, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

/// List sweeps, newest first.
#[utoipa::path(get, path = "/v1/sweeps", operation_id = "listSweeps", tag = "sweeps", params(SweepQuery),
    responses(
        (status = 200, description = "A page of sweeps", body = SweepList),
        (status = 422, description = "Invalid query", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<SweepQuery>,
) -> Result<axum::Json<SweepList>, ApiError> {
    let (limit, offset) = page_bounds(q.limit, q.offset)?;
    let sweeps = state.sweeps.clone();
    let (total, page) = state
        .store(move |s| {
            let matching: Vec<_> = s
                .sweeps(false)?
                .into_iter()
                .filter(|w| q.model.as_deref().is_none_or(|m| w.model == m))
                .filter(|w| q.status.is_none_or(|st| w.status == st))
                .collect();
            let total = matching.len();
            let page = matching
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|w| now_of(&sweeps, w).map(|n| n.view()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((total, page))
        })
        .await?;
    let next_offset = (offset.saturating_add(limit) < total).then(|| offset + limit);
    Ok(axum::Json(SweepList {
        sweeps: page,
        total,
        next_offset,
    }))
}

/// A sweep: every trial's parameters, status and metric, the best so far, the progress.
#[utoipa::path(get, path = "/v1/sweeps/{id}", operation_id = "getSweep", tag = "sweeps",
    params(("id" = Uuid, Path, description = "Sweep id")),
    responses(
        (status = 200, description = "The sweep", body = SweepView),
        (status = 404, description = "No such sweep", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<SweepView>, ApiError> {
    let now = now(&state, id).await?.ok_or_else(|| sweep_not_found(id))?;
    Ok(axum::Json(now.view()))
}

/// Cancel a sweep: every trial still queued or running is canceled; the sweep ends `canceled`
/// when they have stopped.
#[utoipa::path(post, path = "/v1/sweeps/{id}/cancel", operation_id = "cancelSweep", tag = "sweeps",
    params(("id" = Uuid, Path, description = "Sweep id")),
    responses(
        (status = 202, description = "Cancellation under way", body = SweepView),
        (status = 404, description = "No such sweep", body = ErrorBody),
        (status = 409, description = "The sweep has already ended", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, axum::Json<SweepView>), ApiError> {
    let sweep = state
        .store(move |s| s.cancel_sweep(id))
        .await?
        .ok_or_else(|| sweep_not_found(id))?;
    if sweep.status != SweepStatus::Running {
        return Err(ApiError::new(
            ErrorCode::SweepFinished,
            format!("sweep {id} has already ended ({:?})", sweep.status),
        ));
    }
    for t in &sweep.trials {
        if let Some(job) = state.job(t.job_id).await? {
            cancel_job(&state, job).await?;
        }
    }
    state.sweeps.wake();
    tracing::info!(sweep_id = %id, "sweep cancel requested");
    let now = now(&state, id).await?.ok_or_else(|| sweep_not_found(id))?;
    Ok((StatusCode::ACCEPTED, axum::Json(now.view())))
}

/// Follow a sweep live.
#[utoipa::path(get, path = "/v1/sweeps/{id}/events", operation_id = "streamSweepEvents", tag = "sweeps",
    params(("id" = Uuid, Path, description = "Sweep id")),
    responses(
        (status = 200, description = "`event: trial` as each trial ends (`id` = the trial's index, `data` = the trial), then `event: end` (`data` = the sweep)",
            content_type = "text/event-stream", body = String),
        (status = 404, description = "No such sweep", body = ErrorBody),
        (status = 503, description = "Too many event streams are open (`--max-event-streams`); retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let first = now(&state, id).await?.ok_or_else(|| sweep_not_found(id))?;
    let permit = stream_permit(&state)?;
    let keep_alive =
        KeepAlive::new().interval(Duration::from_secs(state.config.sse_keepalive_secs.max(1)));
    let reader = Reader {
        reported: vec![false; first.sweep.trials.len()],
        now: Some(first),
        ended_rx: state.sweeps.ended(),
        shutdown: state.shutdown.clone(),
        state,
        id,
        buffer: VecDeque::new(),
        ended: false,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        let event = r.next().await?;
        Some((Ok(event), r))
    });
    Ok(Sse::new(stream).keep_alive(keep_alive))
}

/// One subscriber of a sweep's events.
struct Reader {
    state: AppState,
    id: Uuid,
    /// The sweep as last read (taken when used).
    now: Option<Now>,
    /// Which trials' events were sent.
    reported: Vec<bool>,
    buffer: VecDeque<Event>,
    ended: bool,
    ended_rx: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl Reader {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            let now = match self.now.take() {
                Some(n) => n,
                None => {
                    self.ended_rx.borrow_and_update();
                    match now(&self.state, self.id).await {
                        Ok(Some(n)) => n,
                        // Gone or unreadable: nothing more can be told.
                        Ok(None) | Err(_) => return None,
                    }
                }
            };
            let view = now.view();
            for t in &view.trials {
                if t.result.status.is_finished() && !self.reported[t.index] {
                    self.reported[t.index] = true;
                    self.buffer
                        .push_back(event("trial", t).id(t.index.to_string()));
                }
            }
            if now.sweep.status != SweepStatus::Running {
                self.ended = true;
                self.buffer.push_back(event("end", &view));
                continue;
            }
            if !self.buffer.is_empty() {
                continue;
            }
            tokio::select! {
                () = any_finished(now.going) => {}
                _ = self.ended_rx.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.shutdown.wait_for(|s| *s) => {
                    // The server stops: the sweep as it stands ends the stream.
                    self.ended = true;
                    self.buffer.push_back(event("end", &view));
                }
            }
        }
    }
}

fn event(name: &'static str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}
