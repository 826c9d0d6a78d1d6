//! Serving control: which version a model serves (`latest`, the newest, or a pinned one), its
//! named aliases, and the history of both. `PUT`/`DELETE /v1/models/{name}/serving` pin and
//! unpin, `PUT`/`DELETE /v1/models/{name}/aliases/{alias}` name versions, `GET …/serving` shows
//! the state and its history, `DELETE /v1/models/{name}/versions/{version}` removes a version
//! unless it is pinned or aliased.
//!
//! Every change is decided by the store in one transaction (the shared truth on PostgreSQL) and
//! then applied to memory in one write (see `crate::registry`), on a blocking thread.

use super::extract::{Json, Path, Query};
use super::models::{model_not_found, parse_name};
use crate::domain::ModelName;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::records::{ServingChange, ServingUpdate};
use crate::registry::ModelEntry;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// How a model chooses the version it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServingPolicy {
    /// The newest version (a successful job's version is served at once).
    Latest,
    /// `pinned_version`, whatever is newer (a job's version is stored, not served).
    Pinned,
}

/// `PUT /v1/models/{name}/serving` and `PUT /v1/models/{name}/aliases/{alias}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionChoice {
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub version: u32,
}

/// What a model serves and names.
#[derive(Serialize, ToSchema)]
pub struct ServingView {
    pub model: String,
    pub policy: ServingPolicy,
    /// The version predictions use without `?version=` or `?alias=`; absent before the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Under policy `pinned`: the pinned version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_version: Option<u32>,
    /// Alias → version.
    pub aliases: BTreeMap<String, u32>,
    /// The change this request made (absent when it changed nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<ServingChange>,
    /// `GET` only: the newest changes first (pins, unpins, jobs served, deleted versions,
    /// alias changes; the newest 200 are kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<ServingChange>>,
}

impl ServingView {
    pub fn of(e: &ModelEntry) -> Self {
        ServingView {
            model: e.name.to_string(),
            policy: policy(e.pinned_version),
            version: e.served().map(|v| v.version),
            pinned_version: e.pinned_version,
            aliases: e.aliases.clone(),
            change: None,
            history: None,
        }
    }
}

pub fn policy(pinned: Option<u32>) -> ServingPolicy {
    if pinned.is_some() {
        ServingPolicy::Pinned
    } else {
        ServingPolicy::Latest
    }
}

/// The longest alias name.
const MAX_ALIAS: usize = 64;

/// An alias: `[A-Za-z][A-Za-z0-9_-]{0,63}` (never a number, so it cannot be read as a version).
///
/// # Errors
/// 422 naming `field`.
pub fn parse_alias(alias: &str, field: &str) -> Result<String, ApiError> {
    let mut chars = alias.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && alias.len() <= MAX_ALIAS;
    if ok {
        Ok(alias.to_owned())
    } else {
        Err(ApiError::invalid(
            field,
            format!(
                "{alias:?} is not an alias: a letter, then up to {} letters, digits, '_' or '-'",
                MAX_ALIAS - 1
            ),
        ))
    }
}

/// Applies `update` in the store and then in memory; the model's state after it.
async fn change(
    state: &AppState,
    name: ModelName,
    update: ServingUpdate,
) -> Result<axum::Json<ServingView>, ApiError> {
    if !state.registry.contains(&name) {
        return Err(model_not_found(name.as_str()));
    }
    let registry = state.registry.clone();
    let (entry, change) = state
        .commit(None, move |s| {
            let _serving = registry.serving_lock();
            let done = s.change_serving(name.as_str(), &update)?;
            registry.apply_serving(&done.model);
            Ok((registry.get(&name), done.change))
        })
        .await?;
    let entry = entry.ok_or_else(|| ApiError::internal("model vanished after a serving change"))?;
    if let Some(c) = &change {
        tracing::info!(model = %entry.name, cause = ?c.cause, from = ?c.from, to = ?c.to,
            alias = ?c.alias, "serving changed");
    }
    let mut view = ServingView::of(&entry);
    view.change = change;
    Ok(axum::Json(view))
}

/// Pin a version: it is served from now on (promote or roll back), whatever is newer; a job
/// that succeeds meanwhile stores its version without serving it.
#[utoipa::path(put, path = "/v1/models/{name}/serving", operation_id = "pinVersion", tag = "models",
    request_body = VersionChoice,
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "What the model serves now, and the change", body = ServingView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such model (`model_not_found`) or version (`version_not_found`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn pin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(req): Json<VersionChoice>,
) -> Result<axum::Json<ServingView>, ApiError> {
    let name = parse_name(&name)?;
    change(&state, name, ServingUpdate::Pin(req.version)).await
}

/// Return to policy `latest`: the newest version is served from now on.
#[utoipa::path(delete, path = "/v1/models/{name}/serving", operation_id = "unpinVersion", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "What the model serves now, and the change (none if it was not pinned)", body = ServingView),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn unpin(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<ServingView>, ApiError> {
    let name = parse_name(&name)?;
    change(&state, name, ServingUpdate::Unpin).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// History entries to return, newest first (default 50).
    #[param(minimum = 0, maximum = 200)]
    pub limit: Option<usize>,
}

/// What a model serves, its aliases and the history of both.
#[utoipa::path(get, path = "/v1/models/{name}/serving", operation_id = "getServing", tag = "models",
    params(("name" = String, Path, description = "Model name"), HistoryQuery),
    responses(
        (status = 200, description = "The serving state and history", body = ServingView),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 422, description = "Invalid `limit`", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<axum::Json<ServingView>, ApiError> {
    let name = parse_name(&name)?;
    let limit = q.limit.unwrap_or(50);
    if limit > crate::store::serving::HISTORY_PER_MODEL {
        return Err(ApiError::invalid(
            "limit",
            format!(
                "must be at most {}",
                crate::store::serving::HISTORY_PER_MODEL
            ),
        ));
    }
    let entry = state
        .registry
        .get(&name)
        .ok_or_else(|| model_not_found(name.as_str()))?;
    let n = name.to_string();
    let mut history = state.store(move |s| s.serving_history(&n)).await?;
    history.truncate(limit);
    let mut view = ServingView::of(&entry);
    view.history = Some(history);
    Ok(axum::Json(view))
}

/// Name a version (`canary`, `production`, …): predict with it by `?alias=`. Setting an
/// existing alias moves it.
#[utoipa::path(put, path = "/v1/models/{name}/aliases/{alias}", operation_id = "setAlias", tag = "models",
    request_body = VersionChoice,
    params(("name" = String, Path, description = "Model name"),
        ("alias" = String, Path, description = "Alias: a letter, then letters, digits, `_` or `-`", pattern = "^[A-Za-z][A-Za-z0-9_-]{0,63}$")),
    responses(
        (status = 200, description = "The model's aliases now, and the change", body = ServingView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such model (`model_not_found`) or version (`version_not_found`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Not an alias name, or an invalid field", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn set_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
    Json(req): Json<VersionChoice>,
) -> Result<axum::Json<ServingView>, ApiError> {
    let name = parse_name(&name)?;
    let alias = parse_alias(&alias, "alias")?;
    change(&state, name, ServingUpdate::SetAlias(alias, req.version)).await
}

/// Remove an alias (the version stays).
#[utoipa::path(delete, path = "/v1/models/{name}/aliases/{alias}", operation_id = "deleteAlias", tag = "models",
    params(("name" = String, Path, description = "Model name"),
        ("alias" = String, Path, description = "Alias", pattern = "^[A-Za-z][A-Za-z0-9_-]{0,63}$")),
    responses(
        (status = 200, description = "The model's aliases now, and the change", body = ServingView),
        (status = 404, description = "No such model (`model_not_found`) or alias (`alias_not_found`)", body = ErrorBody),
        (status = 422, description = "Not an alias name", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn delete_alias(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<axum::Json<ServingView>, ApiError> {
    let name = parse_name(&name)?;
    let alias = parse_alias(&alias, "alias")?;
    change(&state, name, ServingUpdate::RemoveAlias(alias)).await
}

/// Delete one version (and its evaluations). A pinned or aliased version cannot be deleted
/// (409); deleting the served version under policy `latest` serves the newest one left.
#[utoipa::path(delete, path = "/v1/models/{name}/versions/{version}", operation_id = "deleteVersion", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("version" = u32, Path, description = "Version number", minimum = 1)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 409, description = "The version is pinned or aliased (`version_in_use`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn delete_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    if !state.registry.contains(&name) {
        return Err(model_not_found(name.as_str()));
    }
    let (registry, n) = (state.registry.clone(), name.clone());
    let change = state
        .commit(None, move |s| {
            let _serving = registry.serving_lock();
            let change = s.delete_version(n.as_str(), version)?;
            registry.remove_version(&n, version);
            Ok(change)
        })
        .await?;
    tracing::info!(model = %name, version, served = ?change.map(|c| c.to), "version deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// 404 naming the alias.
pub fn alias_not_found(name: &ModelName, alias: &str) -> ApiError {
    ApiError::new(
        ErrorCode::AliasNotFound,
        format!("model {:?} has no alias {alias:?}", name.as_str()),
    )
}
