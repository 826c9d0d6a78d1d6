//! `GET /v1/jobs/{id}/events`: a job's cost per epoch as Server-Sent Events.
//!
//! Each epoch is `event: epoch`, `id: <epoch>`, `data: <the epoch record>`. A subscriber first
//! gets the history (after `Last-Event-ID`, if sent), then live epochs, then `event: end` with
//! the job's final state, and the stream closes. Idle streams carry keep-alive comments. The
//! stream also ends (with its end event) when the server shuts down.
//!
//! Memory per stream is O(1): the stream is pulled, not pushed. Each time the connection can
//! take more, it reads the next few epochs from the job's one shared history by position
//! ([`Job::epochs_after`]); a client that reads slowly is served at its own pace from the
//! history and costs only its position, and one that reads nothing is cut by the connection's
//! send timeout (it may resume with `Last-Event-ID`). Open streams are capped
//! (`--max-event-streams`); beyond the cap a subscriber gets 503 with `Retry-After`.

use super::extract::Path;
use super::jobs::job_not_found;
use super::views::JobView;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::jobs::{Job, Progress};
use crate::nn::{EpochReport, MAX_EPOCHS};
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, watch};
use uuid::Uuid;

/// Epochs a stream reads from the history at a time (its whole buffer).
const READ_AHEAD: usize = 64;

/// Follow a job's progress live.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", operation_id = "streamJobEvents", tag = "jobs",
    params(
        ("id" = Uuid, Path, description = "Job id"),
        ("Last-Event-ID" = Option<u32>, Header, description = "Resume after this epoch (0–1000000)"),
    ),
    responses(
        (status = 200, description = "`event: epoch` per epoch (`id` = epoch, `data` = the epoch record), then `event: end` (`data` = the job)",
            content_type = "text/event-stream", body = String),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 422, description = "`Last-Event-ID` is not an epoch number", body = ErrorBody),
        (status = 503, description = "Too many event streams are open (`--max-event-streams`); retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = state.job(id).await?.ok_or_else(|| job_not_found(id))?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|&epoch| epoch <= MAX_EPOCHS)
            .ok_or_else(|| {
                ApiError::invalid(
                    "Last-Event-ID",
                    format!("must be an epoch number from 0 to {MAX_EPOCHS}"),
                )
            })?,
    };
    let permit = stream_permit(&state)?;
    let reader = Reader {
        progress: job.progress(),
        job,
        sent: after,
        buffer: VecDeque::with_capacity(READ_AHEAD),
        closing: false,
        ended: false,
        shutdown: state.shutdown.clone(),
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        let event = r.next().await?;
        Some((Ok(event), r))
    });
    let keep_alive =
        KeepAlive::new().interval(Duration::from_secs(state.config.sse_keepalive_secs.max(1)));
    Ok(Sse::new(stream).keep_alive(keep_alive))
}

/// One subscriber's position in a job's history.
struct Reader {
    job: Arc<Job>,
    progress: watch::Receiver<Progress>,
    /// The last epoch sent.
    sent: u32,
    /// Epochs read from the history and not yet sent (at most [`READ_AHEAD`]).
    buffer: VecDeque<EpochReport>,
    /// The server is shutting down: send what is recorded, then the end.
    closing: bool,
    ended: bool,
    shutdown: watch::Receiver<bool>,
    /// A slot of the stream cap, held as long as the stream lives.
    _permit: OwnedSemaphorePermit,
}

impl Reader {
    /// The next event, read when the connection asks for it; `None` after the end event.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(r) = self.buffer.pop_front() {
                self.sent = r.epoch;
                return Some(epoch_event(&r));
            }
            if self.ended {
                return None;
            }
            // Seen before reading, so anything recorded after this read changes it again.
            self.progress.borrow_and_update();
            let page = self.job.epochs_after(self.sent, READ_AHEAD);
            if !page.epochs.is_empty() {
                self.buffer.extend(page.epochs);
                continue;
            }
            if page.status.is_finished() || self.closing {
                self.ended = true;
                return Some(end_event(&self.job));
            }
            tokio::select! {
                changed = self.progress.changed() => {
                    // The sender lives in the job, which this reader holds: an error cannot
                    // happen, but would mean that nothing more will be recorded.
                    self.closing = changed.is_err();
                }
                _ = self.shutdown.wait_for(|s| *s) => self.closing = true,
            }
        }
    }
}

/// A place among the `--max-event-streams` open streams (job or sweep), held as long as the
/// stream; none free: 503 with `Retry-After`.
pub(super) fn stream_permit(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    state
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Overloaded,
                "too many event streams are open; retry later",
            )
            .retry_after(5)
        })
}

fn epoch_event(r: &EpochReport) -> Event {
    Event::default()
        .event("epoch")
        .id(r.epoch.to_string())
        .json_data(r)
        .unwrap_or_else(|_| Event::default().comment("unserializable epoch"))
}

fn end_event(job: &Job) -> Event {
    Event::default()
        .event("end")
        .json_data(JobView::of(job, false))
        .unwrap_or_else(|_| Event::default().event("end"))
}
