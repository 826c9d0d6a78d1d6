//! The dashboard: one page with its script and stylesheet, embedded in the binary (nothing is
//! loaded from elsewhere; the page calls the public API like any client).

use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Only this server's own script, style and API: no inline code, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(body: impl IntoResponse, content_type: &'static str) -> Response {
    let h = |v: &'static str| HeaderValue::from_static(v);
    (
        [
            (header::CONTENT_TYPE, h(content_type)),
            (header::CACHE_CONTROL, h("no-cache")),
            (header::CONTENT_SECURITY_POLICY, h(CSP)),
            (header::X_CONTENT_TYPE_OPTIONS, h("nosniff")),
            (HeaderName::from_static("referrer-policy"), h("no-referrer")),
        ],
        body,
    )
        .into_response()
}

/// The dashboard: models, datasets, jobs with live cost curves, training and prediction forms.
#[utoipa::path(get, path = "/", operation_id = "dashboard", tag = "dashboard",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String)))]
pub async fn index(State(state): State<AppState>) -> Response {
    // The page asks for a token before its first call when the server needs one.
    let auth = if state.tokens.enabled() {
        "required"
    } else {
        "off"
    };
    asset(INDEX.replace("{{AUTH}}", auth), "text/html; charset=utf-8")
}

/// The dashboard's script.
#[utoipa::path(get, path = "/dashboard.js", operation_id = "dashboardScript", tag = "dashboard",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// The dashboard's stylesheet.
#[utoipa::path(get, path = "/dashboard.css", operation_id = "dashboardStyle", tag = "dashboard",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String)))]
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}
