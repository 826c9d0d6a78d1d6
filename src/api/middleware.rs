//! Middleware around the routes: bearer-token authentication, per-route HTTP metrics, the
//! request timeout with our JSON error body, and the answer to a handler that panicked.

use crate::auth::Call;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};

/// Routes open without a token: probes, the API description and the dashboard page (whose API
/// calls carry the token the user enters). `/metrics` is open too unless `--metrics-auth`.
pub const OPEN_ROUTES: &[&str] = &[
    "/health",
    "/ready",
    "/openapi.yaml",
    "/",
    "/dashboard.js",
    "/dashboard.css",
];

fn is_open(route: &str, metrics_open: bool) -> bool {
    OPEN_ROUTES.contains(&route) || (metrics_open && route == "/metrics")
}

/// Authenticates with `Authorization: Bearer TOKEN` when tokens are configured: 401 (with
/// `WWW-Authenticate`) without a valid token, 403 when the token's role does not allow the call.
pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let tokens = &state.tokens;
    if !tokens.enabled() {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    if is_open(route, !state.config.metrics_auth) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(role) = presented.and_then(|t| tokens.role(t)) else {
        let (challenge, message) = if presented.is_some() {
            (
                r#"Bearer realm="mlpd", error="invalid_token""#,
                "the bearer token is not valid",
            )
        } else {
            (
                r#"Bearer realm="mlpd""#,
                "this call needs `Authorization: Bearer <token>`",
            )
        };
        let mut resp = ApiError::new(ErrorCode::Unauthorized, message).into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        return resp;
    };
    let call = Call {
        method: req.method(),
        route,
    };
    if !role.allows(&call) {
        return ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "a {} token may not call {} {route}",
                role.name(),
                req.method()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// Counts each request and times it to its response headers, labelled by the matched route.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = crate::metrics::method_label(req.method());
    let resp = next.run(req).await;
    crate::metrics::http_request(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        method,
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

/// Fails a request that has not produced its response headers within `limit` with a 503 in
/// our error format. A response that streams (events) is not cut once its headers are out.
pub async fn timeout(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!(
                "the request did not complete within {} s",
                limit.as_secs_f64()
            ),
        )
        .retry_after(1)
        .into_response(),
    }
}

/// The answer to a request whose handler panicked (tower-http's `CatchPanicLayer`): our opaque
/// 500, so the client gets a response instead of a reset connection. The panic itself is logged
/// once, by the process's panic hook ([`crate::telemetry::init`]), inside the request's span (so
/// with its request id); here it is only counted.
pub fn panicked(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    crate::metrics::handler_panicked();
    ApiError::new(ErrorCode::Internal, "internal error; see the server log").into_response()
}
