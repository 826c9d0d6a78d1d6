//! `GET /v1/jobs/{id}/events`: a job's cost per epoch as Server-Sent Events.
//!
//! Each epoch is `event: epoch`, `id: <epoch>`, `data: <the epoch record>`. A subscriber first
//! gets the history (after `Last-Event-ID`, if sent), then live epochs, then `event: end` with
//! the job's final state, and the stream closes. Idle streams carry keep-alive comments. The
//! stream also ends (with its end event) when the server shuts down.

use super::extract::Path;
use super::jobs::job_not_found;
use super::views::JobView;
use crate::error::{ApiError, ErrorBody};
use crate::jobs::{Job, JobEvent};
use crate::nn::MAX_EPOCHS;
use crate::state::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

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
    ))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = state.jobs.get(id).ok_or_else(|| job_not_found(id))?;
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
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(relay(job, after, tx, state.shutdown.clone()));
    let keep_alive =
        KeepAlive::new().interval(Duration::from_secs(state.config.sse_keepalive_secs.max(1)));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(keep_alive))
}

fn epoch_event(r: &crate::nn::EpochReport) -> Event {
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

/// Sends the job's recorded epochs after `*sent` (advancing it); `false` once the client is gone.
async fn send_history(
    job: &Job,
    sent: &mut u32,
    tx: &mpsc::Sender<Result<Event, Infallible>>,
) -> bool {
    let after = *sent;
    let missed: Vec<_> = job
        .state()
        .history
        .iter()
        .filter(|r| r.epoch > after)
        .cloned()
        .collect();
    for r in missed {
        *sent = r.epoch;
        if tx.send(Ok(epoch_event(&r))).await.is_err() {
            return false;
        }
    }
    true
}

/// Replays, then forwards live events until the job ends, the client leaves, or the server
/// shuts down. Subscribing happens before the replay reads the history, so every epoch is
/// either replayed or received live (duplicates are skipped by epoch number).
async fn relay(
    job: Arc<Job>,
    mut sent: u32,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (finished, mut rx) = job.subscribe();
    if !send_history(&job, &mut sent, &tx).await {
        return;
    }
    if finished {
        let _ = tx.send(Ok(end_event(&job))).await;
        return;
    }
    loop {
        let next = tokio::select! {
            ev = rx.recv() => ev,
            _ = shutdown.wait_for(|s| *s) => Err(broadcast::error::RecvError::Closed),
            () = tx.closed() => return,
        };
        match next {
            Ok(JobEvent::Epoch(r)) if r.epoch > sent => {
                sent = r.epoch;
                if tx.send(Ok(epoch_event(&r))).await.is_err() {
                    return;
                }
            }
            Ok(JobEvent::Epoch(_)) => {}
            Ok(JobEvent::End) | Err(broadcast::error::RecvError::Closed) => break,
            // Fell behind the live buffer: catch up from the history.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if !send_history(&job, &mut sent, &tx).await {
                    return;
                }
            }
        }
    }
    // Epochs recorded between the last live event and the end.
    if send_history(&job, &mut sent, &tx).await {
        let _ = tx.send(Ok(end_event(&job))).await;
    }
}
