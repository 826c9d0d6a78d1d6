//! The HTTP API: one router, built with the OpenAPI document from the same handler list.

mod dashboard;
mod datasets;
mod encoding;
mod evaluations;
mod events;
pub mod extract;
mod health;
pub mod idempotency;
mod jobs;
mod metrics;
pub mod middleware;
mod models;
pub mod openapi;
mod predict;
mod predict_input;
mod samples;
mod schemas;
mod schemas_tabular;
pub mod serving;
mod sweeps;
pub mod v2;
mod views;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use axum::Router;
use std::sync::OnceLock;
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    components(schemas(crate::domain::csv::Task, openapi::Float32)),
    info(title = "mlpd", description = "Train feed-forward neural networks and serve their predictions over HTTP."),
    tags(
        (name = "models", description = "Named models, their versions and predictions"),
        (name = "datasets", description = "Uploaded training data"),
        (name = "jobs", description = "Asynchronous training jobs and their live progress"),
        (name = "sweeps", description = "Hyperparameter searches: groups of training jobs and their best trial"),
        (name = "health", description = "Liveness, readiness, metrics and this document"),
        (name = "dashboard", description = "The web page for people"),
        (name = "inference", description = "The Open Inference Protocol (KServe V2) with the binary tensor data extension; errors are `{\"error\": \"…\"}`"),
    )
)]
struct ApiDoc;

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(models::create, models::list))
        .routes(routes!(models::get, models::delete))
        .routes(routes!(models::versions))
        .routes(routes!(models::version, serving::delete_version))
        .routes(routes!(serving::get, serving::pin, serving::unpin))
        .routes(routes!(serving::set_alias, serving::delete_alias))
        .routes(routes!(models::export))
        .routes(routes!(models::import))
        .routes(routes!(evaluations::evaluate))
        .routes(routes!(evaluations::list))
        .routes(routes!(jobs::train))
        .routes(routes!(predict::predict))
        .routes(routes!(datasets::create, datasets::list))
        .routes(routes!(datasets::get, datasets::delete))
        .routes(routes!(samples::list))
        .routes(routes!(samples::create))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::history))
        .routes(routes!(jobs::cancel))
        .routes(routes!(events::events))
        .routes(routes!(sweeps::create))
        .routes(routes!(sweeps::list))
        .routes(routes!(sweeps::get))
        .routes(routes!(sweeps::cancel))
        .routes(routes!(sweeps::events))
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(metrics::metrics))
        .routes(routes!(serve_openapi))
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::script))
        .routes(routes!(dashboard::style))
        .routes(routes!(v2::server_metadata))
        .routes(routes!(v2::live))
        .routes(routes!(v2::ready))
        .routes(routes!(v2::model_metadata))
        .routes(routes!(v2::model_version_metadata))
        .routes(routes!(v2::model_ready))
        .routes(routes!(v2::model_version_ready))
        .routes(routes!(v2::infer::infer))
        .routes(routes!(v2::infer::infer_version))
}

/// The OpenAPI document of [`router`], as YAML.
pub fn openapi_yaml() -> &'static str {
    static YAML: OnceLock<String> = OnceLock::new();
    YAML.get_or_init(|| {
        let (_, api) = routes().split_for_parts();
        openapi::to_yaml(&api)
    })
}

/// Every route with its state.
pub fn router(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    let router = debug_routes(router);
    let limit = Duration::from_secs(state.config.request_timeout_secs);
    // Innermost first: a panic becomes a 500, idempotency keys (whose work the timeout must not
    // cut from the record of its answer), the timeout around the handler, then authentication,
    // then metrics (which so count refused and timed-out requests too, by route).
    router
        .route_layer(tower_http::catch_panic::CatchPanicLayer::custom(
            middleware::panicked,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotent,
        ))
        .route_layer(axum::middleware::from_fn(move |req, next| {
            middleware::timeout(limit, req, next)
        }))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::authenticate,
        ))
        .route_layer(axum::middleware::from_fn(middleware::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(v2::protocol_errors))
        .with_state(state)
}

/// In debug builds only, with `MLPD_DEBUG_PANIC_ROUTE` set: `GET /debug/panic` panics, so that
/// the tests can show what a panicking handler does to the real binary (no real input panics).
/// Release builds never have the route; debug builds have it only with the variable set.
fn debug_routes(router: Router<AppState>) -> Router<AppState> {
    #[cfg(debug_assertions)]
    if std::env::var_os("MLPD_DEBUG_PANIC_ROUTE").is_some() {
        return router.route("/debug/panic", axum::routing::get(deliberate_panic));
    }
    router
}

#[cfg(debug_assertions)]
async fn deliberate_panic() -> &'static str {
    panic!("deliberate panic (MLPD_DEBUG_PANIC_ROUTE)")
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.yaml", operation_id = "getOpenapi", tag = "health",
    responses((status = 200, description = "The OpenAPI document (YAML)", content_type = "application/yaml")))]
async fn serve_openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        openapi_yaml(),
    )
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    crate::metrics::unmatched_request(&method, 404);
    ApiError::new(
        ErrorCode::RouteNotFound,
        format!("no route for {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    crate::metrics::unmatched_request(&method, 405);
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
