//! Liveness and readiness.

use crate::state::AppState;
use crate::store::StoreError;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    /// Why the server is not ready (only then): the database is unavailable, the store does
    /// not answer, the training workers stopped, or the server is shutting down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "health", responses((status = 200, description = "Alive", body = Health)))]
pub async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        reason: None,
    })
}

/// The service can do its work: store reachable, training workers alive, not shutting down.
///
/// While the database is unavailable the answer is 503 with its `reason` (predictions of
/// loaded versions are still answered).
#[utoipa::path(get, path = "/ready", operation_id = "ready", tag = "health", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "Not ready, with the reason", body = Health),
))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    match readiness(&state).await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(Health {
                status: "ready".into(),
                reason: None,
            }),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Health {
                status: "unavailable".into(),
                reason: Some(reason.into()),
            }),
        ),
    }
}

/// Store reachable, training workers alive, not shutting down.
pub(crate) async fn is_ready(state: &AppState) -> bool {
    readiness(state).await.is_ok()
}

/// `Ok`, or why the server is not ready. A store that is down answers at once (no ping).
async fn readiness(state: &AppState) -> Result<(), &'static str> {
    if *state.shutdown.borrow() {
        return Err("the server is shutting down");
    }
    let store = state.store.clone();
    let pinged = tokio::task::spawn_blocking(move || store.ping())
        .await
        .map_err(|_| "the store does not answer")?;
    match pinged {
        Ok(()) => {}
        Err(StoreError::Unavailable(_)) => return Err("the database is unavailable"),
        Err(_) => return Err("the store does not answer"),
    }
    if !state.jobs.workers_alive() {
        return Err("the training workers stopped");
    }
    Ok(())
}
