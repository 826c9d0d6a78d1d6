//! Liveness and readiness.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "health", responses((status = 200, description = "Alive", body = Health)))]
pub async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// The service can do its work: store reachable, training workers alive, not shutting down.
#[utoipa::path(get, path = "/ready", operation_id = "ready", tag = "health", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "Not ready", body = Health),
))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    let ok = is_ready(&state).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(Health {
            status: if ok { "ready" } else { "unavailable" }.into(),
        }),
    )
}

/// Store reachable, training workers alive, not shutting down.
pub(crate) async fn is_ready(state: &AppState) -> bool {
    let store = state.store.clone();
    let store_ok = tokio::task::spawn_blocking(move || store.ping().is_ok())
        .await
        .unwrap_or(false);
    store_ok && state.jobs.workers_alive() && !*state.shutdown.borrow()
}
