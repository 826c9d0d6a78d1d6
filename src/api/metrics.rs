//! `GET /metrics`: Prometheus text format.

use crate::metrics::{Snapshot, render};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

/// Metrics in the Prometheus text exposition format.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus text format (version 0.0.4)", content_type = "text/plain", body = String),
    ))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let (queued, running, _) = state.jobs.counts();
    let (models, versions) = state.registry.counts();
    let now = Snapshot {
        queued,
        running,
        models,
        versions,
        datasets: state.datasets.len(),
        store: state.store.availability(),
        cache: state.registry.cache_stats(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&now),
    )
}
