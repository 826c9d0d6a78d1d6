//! `/v1/models`: define models, list and inspect them and their versions, delete them.

use super::extract::{Json, Path, Query};
use super::views::{ModelView, VersionView};
use crate::domain::ModelName;
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::nn::{Activation, LayerSpec, Loss, ModelError, NetworkSpec, TrainParams, TrainedModel};
use crate::registry::{Lookup, ModelEntry, ModelVersion, Select, VersionMetrics};
use crate::state::AppState;
use crate::tabular::Signature;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// `POST /v1/models`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    /// `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    pub name: String,
    /// The network's input width. Omit it to follow the training data: numeric columns take one
    /// input each, categorical columns one per level (one-hot), so nobody counts them by hand.
    #[schema(minimum = 1, maximum = 1048576)]
    #[serde(default, deserialize_with = "crate::nn::integral::optional")]
    pub inputs: Option<usize>,
    /// Dense layers in order; the last is the output layer.
    #[schema(min_items = 1, max_items = 64)]
    pub layers: Vec<LayerSpec>,
    /// Default: `cross_entropy` for a softmax or sigmoid output, otherwise `mse`.
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

/// The model, or a 404.
fn find(state: &AppState, name: &ModelName) -> Result<ModelEntry, ApiError> {
    state
        .registry
        .get(name)
        .ok_or_else(|| model_not_found(name.as_str()))
}

pub fn model_not_found(name: &str) -> ApiError {
    ApiError::new(ErrorCode::ModelNotFound, format!("no model named {name:?}"))
}

pub fn lookup_error(name: &ModelName, e: Lookup) -> ApiError {
    match e {
        Lookup::NoModel => model_not_found(name.as_str()),
        Lookup::NotTrained => ApiError::new(
            ErrorCode::ModelNotTrained,
            format!("model {:?} has no trained version yet", name.as_str()),
        ),
        Lookup::NoVersion => ApiError::new(
            ErrorCode::VersionNotFound,
            format!("model {:?} has no such version", name.as_str()),
        ),
        Lookup::NoAlias => ApiError::new(
            ErrorCode::AliasNotFound,
            format!("model {:?} has no such alias", name.as_str()),
        ),
        Lookup::Unavailable => ApiError::new(
            ErrorCode::StoreUnavailable,
            "the version's weights cannot be loaded from storage; retry in a few seconds",
        )
        .retry_after(crate::store::breaker::RETRY_AFTER_SECS),
    }
}

/// [`lookup_error`] naming the version or alias asked for.
pub fn select_error(name: &ModelName, which: Select<'_>, e: Lookup) -> ApiError {
    match (e, which) {
        (Lookup::NoVersion, Select::Version(v)) => ApiError::new(
            ErrorCode::VersionNotFound,
            format!("model {:?} has no version {v}", name.as_str()),
        ),
        (Lookup::NoAlias, Select::Alias(a)) => super::serving::alias_not_found(name, a),
        (Lookup::NoVersion, Select::Alias(a)) => ApiError::new(
            ErrorCode::VersionNotFound,
            format!(
                "the version alias {a:?} of model {:?} names is gone",
                name.as_str()
            ),
        ),
        (e, _) => lookup_error(name, e),
    }
}

/// Define a model.
#[utoipa::path(post, path = "/v1/models", operation_id = "createModel", tag = "models", request_body = CreateModel,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same request (method, path and query, content type and encoding, body) sent again with the same key gets the first 2xx answer again, marked `Idempotent-Replayed: true`, without the work being done twice; keys are kept `--idempotency-ttl-secs` (default 24 h). Only 2xx answers are kept. 1 to 255 visible ASCII characters", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")),
    responses(
        (status = 201, description = "The model, not yet trained", body = ModelView,
            headers(("Location" = String, description = "The model's URL"), ("Idempotent-Replayed" = String, description = "`true` on the recorded answer to an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "The name is taken (`model_exists`), the server holds `--max-models` models (`limit_reached`), or the first request with this `Idempotency-Key` is still at work (`idempotency_key_in_flight`, with `Retry-After`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid field, or an `Idempotency-Key` used for another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
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
    // `inputs: 0` stores "follows the data"; the rest of the spec is checked now.
    let spec = NetworkSpec {
        inputs: req.inputs.unwrap_or(0),
        layers: req.layers,
        loss,
    };
    if req.inputs == Some(0) {
        return Err(ApiError::invalid("inputs", "must be between 1 and 1048576"));
    }
    NetworkSpec {
        inputs: spec.inputs.max(1),
        ..spec.clone()
    }
    .validate()?;
    if spec.inputs > 0 {
        check_size(&state, &spec)?;
    }
    let entry = ModelEntry {
        name: name.clone(),
        spec,
        description: req.description,
        created_at: OffsetDateTime::now_utc(),
        versions: Vec::new(),
        next_version: 1,
        pinned_version: None,
        aliases: Default::default(),
    };
    let view = ModelView::from(&entry);
    let admin = state.admin_lock().await;
    room_for_model(&state, &name)?;
    let record = entry.record();
    // Memory's answer is a fast path; the store decides, in the transaction that inserts.
    let max = state.config.max_models;
    let registry = state.registry.clone();
    state
        .commit(Some(admin), move |s| {
            s.insert_model(&record, max)?;
            registry.create(entry);
            Ok(())
        })
        .await?;
    tracing::info!(model = %name, "model created");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/models/{name}"))],
        axum::Json(view),
    ))
}

pub fn check_size(state: &AppState, spec: &NetworkSpec) -> Result<(), ApiError> {
    check_parameters(state.config.max_model_parameters, spec)
}

/// 422 when `spec` has more than `max` parameters.
pub fn check_parameters(max: usize, spec: &NetworkSpec) -> Result<(), ApiError> {
    if spec.parameter_count() > max {
        return Err(ApiError::invalid(
            "layers",
            format!(
                "the model would have {} parameters; the limit is {max}",
                spec.parameter_count()
            ),
        ));
    }
    Ok(())
}

/// List models (by name).
#[utoipa::path(get, path = "/v1/models", operation_id = "listModels", tag = "models",
    responses((status = 200, description = "All models", body = ModelList)))]
pub async fn list(State(state): State<AppState>) -> axum::Json<ModelList> {
    axum::Json(ModelList {
        models: state.registry.list().iter().map(ModelView::from).collect(),
    })
}

/// A model: architecture, versions, latest metrics.
#[utoipa::path(get, path = "/v1/models/{name}", operation_id = "getModel", tag = "models",
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
    state.find_model(&name).await?;
    let entry = find(&state, &name)?;
    Ok(axum::Json(ModelView::from(&entry)))
}

/// Delete a model and all its versions.
#[utoipa::path(delete, path = "/v1/models/{name}", operation_id = "deleteModel", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 409, description = "A job for the model is queued or running", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    state.find_model(&name).await?;
    // Whether a job uses the model is the store's to say (`model_busy`), in the transaction
    // that deletes it: this replica's copies of jobs trail the store (another replica's end
    // arrives by notification; its own worker records an end before it marks the copy).
    let admin = state.admin_lock().await;
    if !state.registry.contains(&name) {
        return Err(model_not_found(name.as_str()));
    }
    let (n, registry) = (name.clone(), state.registry.clone());
    state
        .commit(Some(admin), move |s| {
            s.delete_model(n.as_str())?;
            registry.remove(&n);
            Ok(())
        })
        .await?;
    tracing::info!(model = %name, "model deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A model's trained versions, oldest first.
#[utoipa::path(get, path = "/v1/models/{name}/versions", operation_id = "listVersions", tag = "models",
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
    state.find_model(&name).await?;
    let entry = find(&state, &name)?;
    Ok(axum::Json(VersionList {
        versions: entry
            .versions
            .iter()
            .map(|v| VersionView::of(v.as_ref(), &entry))
            .collect(),
    }))
}

/// One trained version: training parameters, final metrics, labels.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}", operation_id = "getVersion", tag = "models",
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
    let entry = find(&state, &name)?;
    let v = state
        .registry
        .meta(&name, Select::Version(version))
        .map_err(|e| select_error(&name, Select::Version(version), e))?;
    Ok(axum::Json(VersionView::of(v.as_ref(), &entry)))
}

/// 409 when the name is taken or the server holds `--max-models` models already. Call under
/// the admin lock.
fn room_for_model(state: &AppState, name: &ModelName) -> Result<(), ApiError> {
    if state.registry.contains(name) {
        return Err(ApiError::new(
            ErrorCode::ModelExists,
            format!("a model named {:?} exists", name.as_str()),
        ));
    }
    let max = state.config.max_models;
    if max > 0 && state.registry.counts().0 >= max {
        return Err(ApiError::new(
            ErrorCode::LimitReached,
            format!("this server keeps at most {max} models; delete one first"),
        ));
    }
    Ok(())
}

/// The exported form of one trained version: everything needed to predict with it elsewhere.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelExport {
    /// Always `mlpd.model`.
    pub format: String,
    /// The version of this document's layout (1).
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub format_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub exported_at: OffsetDateTime,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub version: u32,
    pub params: TrainParams,
    pub metrics: VersionMetrics,
    #[schema(value_type = super::openapi::TrainedModel)]
    pub model: TrainedModel,
    /// The features in order with their preprocessing, and the target's name: what a client
    /// needs to send records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

const EXPORT_FORMAT: &str = "mlpd.model";
const EXPORT_VERSION: u32 = 1;

/// The file formats a version exports to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// mlpd's own JSON document (importable with `POST /v1/models/import`).
    #[default]
    Json,
    /// An ONNX model (opset 17, `ai.onnx.ml` 3) computing the same outputs and labels.
    Onnx,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `json` (default) or `onnx`.
    #[param(inline)]
    pub format: Option<ExportFormat>,
}

/// Export a trained version: as one JSON document (default), or as an ONNX model.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}/export", operation_id = "exportVersion", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("version" = u32, Path, description = "Version number", minimum = 1), ExportQuery),
    responses(
        (status = 200, description = "The version: the JSON document, ready to import elsewhere, or (`format=onnx`) an ONNX model with input `input` [N, inputs] (or, for a model with categorical features or missing indicators, one input per feature: float or string [N, 1]) and outputs `outputs` [N, units] and, for classifiers, `label` [N]",
            content((ModelExport = "application/json"), (Vec<u8> = "application/octet-stream"))),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 422, description = "Unknown format, or `format=onnx` for a model with a feature named like a value inside the graph", body = ErrorBody),
        (status = 503, description = "The version's weights, not in memory, cannot be read from storage; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn export(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
    Query(q): Query<ExportQuery>,
) -> Result<axum::response::Response, ApiError> {
    let name = parse_name(&name)?;
    state.find_model(&name).await?;
    let entry = find(&state, &name)?;
    let v = state
        .registry
        .serving(&name, Some(version))
        .await
        .map_err(|e| lookup_error(&name, e))?;
    if q.format.unwrap_or_default() == ExportFormat::Onnx {
        let (model, description) = (name.to_string(), entry.description.clone());
        // Linear in the weights, but a large model is many megabytes: off the runtime.
        let bytes = tokio::task::spawn_blocking(move || {
            let info = crate::export::onnx::ExportInfo {
                name: &model,
                version: v.version,
                description: description.as_deref(),
                signature: v.signature.as_ref(),
            };
            crate::export::onnx::to_onnx(&v.trained, &info)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::invalid("format", e))?;
        let file = format!("attachment; filename=\"{name}-v{version}.onnx\"");
        return Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_DISPOSITION, file),
            ],
            bytes,
        )
            .into_response());
    }
    Ok(axum::Json(ModelExport {
        format: EXPORT_FORMAT.into(),
        format_version: EXPORT_VERSION,
        exported_at: OffsetDateTime::now_utc(),
        name: name.to_string(),
        description: entry.description.clone(),
        version: v.version,
        params: v.params.clone(),
        metrics: v.metrics.clone(),
        model: v.trained.clone(),
        signature: v.signature.clone(),
    })
    .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// The new model's name (default: the name in the document).
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    pub name: Option<String>,
}

/// Import an exported version as a new model (its version 1).
#[utoipa::path(post, path = "/v1/models/import", operation_id = "importModel", tag = "models", request_body = ModelExport,
    params(ImportQuery, ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same request (method, path and query, content type and encoding, body) sent again with the same key gets the first 2xx answer again, marked `Idempotent-Replayed: true`, without the work being done twice; keys are kept `--idempotency-ttl-secs` (default 24 h). Only 2xx answers are kept. 1 to 255 visible ASCII characters", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")),
    responses(
        (status = 201, description = "The new model", body = ModelView,
            headers(("Location" = String, description = "The model's URL"), ("Idempotent-Replayed" = String, description = "`true` on the recorded answer to an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "The name is taken (`model_exists`), the server holds `--max-models` models (`limit_reached`), or the first request with this `Idempotency-Key` is still at work (`idempotency_key_in_flight`, with `Retry-After`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Not a valid export, or an `Idempotency-Key` used for another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn import(
    State(state): State<AppState>,
    Query(q): Query<ImportQuery>,
    Json(doc): Json<ModelExport>,
) -> Result<impl IntoResponse, ApiError> {
    if doc.format != EXPORT_FORMAT {
        return Err(ApiError::invalid(
            "format",
            format!("must be {EXPORT_FORMAT:?}"),
        ));
    }
    if doc.format_version != EXPORT_VERSION {
        return Err(ApiError::invalid(
            "format_version",
            format!("this server reads version {EXPORT_VERSION}"),
        ));
    }
    let raw_name = q.name.unwrap_or(doc.name);
    let name = ModelName::parse(&raw_name).map_err(|m| ApiError::invalid("name", m))?;
    doc.model.validate().map_err(|e| match e {
        ModelError::Invalid(f) => ApiError::invalid(format!("model.{}", f.field), f.message),
        other => ApiError::invalid("model", other),
    })?;
    check_size(&state, &doc.model.spec)?;
    if let Some(sig) = &doc.signature
        && sig.width() != doc.model.spec.inputs
    {
        return Err(ApiError::invalid(
            "signature",
            format!(
                "encodes {} inputs but the model takes {}",
                sig.width(),
                doc.model.spec.inputs
            ),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let entry = ModelEntry {
        name: name.clone(),
        spec: doc.model.spec.clone(),
        description: doc.description,
        created_at: now,
        versions: Vec::new(),
        next_version: 2,
        pinned_version: None,
        aliases: Default::default(),
    };
    let version = ModelVersion {
        model: name.to_string(),
        version: 1,
        created_at: now,
        job_id: None,
        dataset_id: None,
        params: doc.params,
        metrics: doc.metrics,
        trained: doc.model,
        signature: doc.signature,
        parent_version: None,
    };
    let admin = state.admin_lock().await;
    room_for_model(&state, &name)?;
    let record = entry.record();
    // Memory's answer is a fast path; the store decides, in the transaction that inserts.
    let max = state.config.max_models;
    let version = Arc::new(version);
    let (n, registry) = (name.clone(), state.registry.clone());
    let entry = state
        .commit(Some(admin), move |s| {
            s.import_model(&record, &version, max)?;
            registry.create(entry);
            registry.insert_version(&n, version, &[], None);
            Ok(registry.get(&n))
        })
        .await?
        .ok_or_else(|| ApiError::internal("imported model vanished"))?;
    let view = ModelView::from(&entry);
    tracing::info!(model = %name, "model imported");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/models/{name}"))],
        axum::Json(view),
    ))
}
