//! `/v1/models`: define models, list and inspect them and their versions, delete them.

use super::extract::{Json, Path};
use super::views::{ModelView, VersionView};
use crate::domain::ModelName;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::nn::{Activation, LayerSpec, Loss, NetworkSpec};
use crate::registry::{Lookup, ModelEntry};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// `POST /v1/models`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    /// `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    pub name: String,
    /// Number of input features.
    #[schema(minimum = 1, maximum = 1048576)]
    pub inputs: usize,
    /// Dense layers in order; the last is the output layer.
    #[schema(min_items = 1, max_items = 64)]
    pub layers: Vec<LayerSpec>,
    /// Default: `cross_entropy` for a softmax output, otherwise `mse`.
    pub loss: Option<Loss>,
    #[schema(max_length = 1024)]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelView>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    pub versions: Vec<VersionView>,
}

/// A model name from a path: an invalid name names no model.
pub fn parse_name(name: &str) -> Result<ModelName, ApiError> {
    ModelName::parse(name).map_err(|_| model_not_found(name))
}

pub fn model_not_found(name: &str) -> ApiError {
    ApiError::new(ErrorCode::ModelNotFound, format!("no model named {name:?}"))
}

pub fn lookup_error(name: &ModelName, e: Lookup) -> ApiError {
    match e {
        Lookup::NoModel => model_not_found(name.as_str()),
        Lookup::NotTrained => ApiError::new(
            ErrorCode::ModelNotTrained,
            format!("model {name:?} has no trained version yet"),
        ),
        Lookup::NoVersion => ApiError::new(
            ErrorCode::VersionNotFound,
            format!("model {name:?} has no such version"),
        ),
    }
}

/// Define a model.
#[utoipa::path(post, path = "/v1/models", tag = "models", request_body = CreateModel,
    responses(
        (status = 201, description = "The model, not yet trained", body = ModelView,
            headers(("Location" = String, description = "The model's URL"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Json(req): Json<CreateModel>,
) -> Result<impl IntoResponse, ApiError> {
    let name = ModelName::parse(&req.name).map_err(|m| ApiError::invalid("name", m))?;
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1024)
    {
        return Err(ApiError::invalid(
            "description",
            "must be at most 1024 characters",
        ));
    }
    let out = req.layers.last().map(|l| l.activation);
    let loss = req.loss.unwrap_or(if out == Some(Activation::Softmax) {
        Loss::CrossEntropy
    } else {
        Loss::Mse
    });
    let spec = NetworkSpec {
        inputs: req.inputs,
        layers: req.layers,
        loss,
    };
    spec.validate()?;
    let max = state.config.max_model_parameters;
    if spec.parameter_count() > max {
        return Err(ApiError::invalid(
            "layers",
            format!(
                "the model would have {} parameters; the limit is {max}",
                spec.parameter_count()
            ),
        ));
    }
    let entry = ModelEntry {
        name: name.clone(),
        spec,
        description: req.description,
        created_at: OffsetDateTime::now_utc(),
        versions: Vec::new(),
        next_version: 1,
    };
    let view = ModelView::from(&entry);
    if !state.registry.create(entry) {
        return Err(ApiError::new(
            ErrorCode::ModelExists,
            format!("a model named {name:?} exists"),
        ));
    }
    tracing::info!(model = %name, "model created");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/models/{name}"))],
        axum::Json(view),
    ))
}

/// List models (by name).
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "All models", body = ModelList)))]
pub async fn list(State(state): State<AppState>) -> axum::Json<ModelList> {
    axum::Json(ModelList {
        models: state.registry.list().iter().map(ModelView::from).collect(),
    })
}

/// A model: architecture, versions, latest metrics.
#[utoipa::path(get, path = "/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "The model", body = ModelView),
        (status = 404, description = "No such model", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<ModelView>, ApiError> {
    let name = parse_name(&name)?;
    let entry = state
        .registry
        .get(&name)
        .ok_or_else(|| model_not_found(name.as_str()))?;
    Ok(axum::Json(ModelView::from(&entry)))
}

/// Delete a model and all its versions.
#[utoipa::path(delete, path = "/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "A job for the model is queued or running", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    let _admin = state.admin_lock();
    if state.jobs.active(|j| j.model == name) > 0 {
        return Err(ApiError::new(
            ErrorCode::ModelBusy,
            format!("model {name:?} has a queued or running job; cancel it first"),
        ));
    }
    if !state.registry.remove(&name) {
        return Err(model_not_found(name.as_str()));
    }
    tracing::info!(model = %name, "model deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A model's trained versions, oldest first.
#[utoipa::path(get, path = "/v1/models/{name}/versions", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "The versions", body = VersionList),
        (status = 404, description = "No such model", body = ErrorBody),
    ))]
pub async fn versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<VersionList>, ApiError> {
    let name = parse_name(&name)?;
    let entry = state
        .registry
        .get(&name)
        .ok_or_else(|| model_not_found(name.as_str()))?;
    Ok(axum::Json(VersionList {
        versions: entry
            .versions
            .iter()
            .map(|v| VersionView::from(v.as_ref()))
            .collect(),
    }))
}

/// One trained version: training parameters, final metrics, labels.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("version" = u32, Path, description = "Version number", minimum = 1)),
    responses(
        (status = 200, description = "The version", body = VersionView),
        (status = 404, description = "No such model or version", body = ErrorBody),
    ))]
pub async fn version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
) -> Result<axum::Json<VersionView>, ApiError> {
    let name = parse_name(&name)?;
    let v = state
        .registry
        .serving(&name, Some(version))
        .map_err(|e| lookup_error(&name, e))?;
    Ok(axum::Json(VersionView::from(v.as_ref())))
}
