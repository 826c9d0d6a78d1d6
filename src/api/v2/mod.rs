//! The Open Inference Protocol (KServe V2) over REST, beside our own `/v1`: server and model
//! metadata, liveness and readiness, and inference with JSON or binary tensors (the binary
//! tensor data extension that tritonclient uses by default).
//!
//! Inference shares `/v1` predict's engine (`predict::compute`): the same served
//! version, the same forward pass, slots and metrics. Only the wire format differs. Every
//! error on a `/v2` route is the protocol's `{"error": "…"}`: handlers answer [`V2Error`], and
//! [`protocol_errors`] restates the errors that middleware (authentication, timeout) and
//! extractors answer in our `/v1` shape.
//!
//! Tensors: one input `input`, FP32 `[-1, inputs]` (FP64 and the integer types are converted),
//! or one tensor per feature of the version's signature (`[-1, 1]` or `[-1]`; BYTES for a
//! categorical feature; NaN or `""` for a missing value) — what metadata lists for a model with
//! categorical features or missing indicators; outputs `outputs`, FP32 `[-1, units]`
//! (regressions in their target units), and for classifiers `label`, `[-1]`, INT64 or BYTES as
//! the classes were named when trained.

pub mod infer;
mod tensor;

use super::extract::Path;
use super::models::parse_name;
use crate::error::{ApiError, ErrorCode, ErrorMessage};
use crate::nn::LabelSet;
use crate::registry::{Lookup, ModelVersion, Select, VersionMeta};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// The routes a predict-role token may POST to.
pub const INFER_ROUTES: &[&str] = &[
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}/infer",
];

/// Extensions of the protocol this server implements.
const EXTENSIONS: &[&str] = &["binary_tensor_data"];

/// The name of the one input tensor and of the output tensors.
pub const INPUT: &str = "input";
pub const OUTPUTS: &str = "outputs";
pub const LABEL: &str = "label";

/// The protocol's error body.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct InferenceError {
    /// What went wrong, for people.
    pub error: String,
}

/// An error on a `/v2` route: a status and the protocol's `{"error": "…"}`.
#[derive(Debug)]
pub struct V2Error {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl V2Error {
    pub fn bad_request(message: impl Into<String>) -> Self {
        V2Error {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        V2Error {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<ApiError> for V2Error {
    /// Same status as on `/v1`, except that an invalid request is the protocol's 400.
    fn from(e: ApiError) -> Self {
        let status = match e.code {
            ErrorCode::ValidationFailed | ErrorCode::MalformedJson => StatusCode::BAD_REQUEST,
            c => c.status(),
        };
        V2Error {
            status,
            message: e.message,
            retry_after: e.retry_after_secs,
        }
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            axum::Json(InferenceError {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// On `/v2` paths, restates an error answered in our `/v1` shape (by authentication, the
/// timeout, an extractor or the fallback) as the protocol's `{"error": "…"}`; status and
/// headers (`WWW-Authenticate`, `Retry-After`) stay.
pub async fn protocol_errors(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let v2 = path == "/v2" || path.starts_with("/v2/");
    let mut resp = next.run(req).await;
    if !v2 {
        return resp;
    }
    let Some(ErrorMessage(message)) = resp.extensions_mut().remove::<ErrorMessage>() else {
        return resp;
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = serde_json::to_vec(&InferenceError { error: message }).expect("a string serializes");
    Response::from_parts(parts, Body::from(body))
}

/// `GET /v2`.
#[derive(Serialize, ToSchema)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    /// The protocol extensions implemented.
    pub extensions: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Liveness {
    pub live: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ModelReadiness {
    pub name: String,
    pub ready: bool,
}

/// A tensor's name, element type and shape (`-1`: any number of rows).
#[derive(Serialize, ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    /// `FP32`, `INT64` or `BYTES`.
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}[/versions/{version}]`.
#[derive(Serialize, ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    /// The versions that may be asked for by number, oldest first.
    pub versions: Vec<String>,
    /// Always `mlpd_mlp`.
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

const PLATFORM: &str = "mlpd_mlp";

/// The server's name, version and protocol extensions.
#[utoipa::path(get, path = "/v2", operation_id = "v2ServerMetadata", tag = "inference",
    responses((status = 200, description = "Server metadata", body = ServerMetadata)))]
pub async fn server_metadata() -> axum::Json<ServerMetadata> {
    axum::Json(ServerMetadata {
        name: "mlpd".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
    })
}

/// The server is live.
#[utoipa::path(get, path = "/v2/health/live", operation_id = "v2ServerLive", tag = "inference",
    responses((status = 200, description = "Live", body = Liveness)))]
pub async fn live() -> axum::Json<Liveness> {
    axum::Json(Liveness { live: true })
}

/// The server is ready (as `/ready`): store reachable, training workers alive, not stopping.
#[utoipa::path(get, path = "/v2/health/ready", operation_id = "v2ServerReady", tag = "inference",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Readiness),
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = super::health::is_ready(&state).await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Extension(crate::telemetry::ExpectedStatus),
        axum::Json(Readiness { ready }),
    )
        .into_response()
}

/// The version `version` of model `name` (or the one served), weights and all (loaded if not
/// in memory), mapped to protocol errors.
pub(crate) async fn lookup(
    state: &AppState,
    name: &str,
    version: Option<u32>,
) -> Result<Arc<ModelVersion>, V2Error> {
    let model = parse_name(name).map_err(|_| unknown_model(name))?;
    state
        .registry
        .serving(&model, version)
        .await
        .map_err(|e| lookup_error(name, version, e))
}

/// [`lookup`] without the weights (never loads).
fn lookup_meta(
    state: &AppState,
    name: &str,
    version: Option<u32>,
) -> Result<Arc<VersionMeta>, V2Error> {
    let model = parse_name(name).map_err(|_| unknown_model(name))?;
    state
        .registry
        .meta(&model, version.map_or(Select::Served, Select::Version))
        .map_err(|e| lookup_error(name, version, e))
}

fn lookup_error(name: &str, version: Option<u32>, e: Lookup) -> V2Error {
    match e {
        Lookup::NoModel => unknown_model(name),
        Lookup::NotTrained => V2Error {
            status: StatusCode::CONFLICT,
            message: format!("model {name:?} has no trained version yet"),
            retry_after: None,
        },
        Lookup::NoVersion | Lookup::NoAlias => V2Error::not_found(format!(
            "model {name:?} has no version {}",
            version.unwrap_or(0)
        )),
        Lookup::Unavailable => V2Error {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the version's weights cannot be loaded from storage; retry in a few seconds"
                .into(),
            retry_after: Some(crate::store::breaker::RETRY_AFTER_SECS),
        },
    }
}

fn unknown_model(name: &str) -> V2Error {
    V2Error::not_found(format!("no model named {name:?}"))
}

/// The model's tensors: from the version when there is one (a classifier's label type is known
/// only once trained), else from the architecture.
fn metadata(state: &AppState, name: &str, version: Option<u32>) -> Result<ModelMetadata, V2Error> {
    let model = parse_name(name).map_err(|_| unknown_model(name))?;
    let entry = state
        .registry
        .get(&model)
        .ok_or_else(|| unknown_model(name))?;
    let served = match version {
        None => entry.served().cloned(),
        Some(_) => Some(lookup_meta(state, name, version)?),
    };
    let spec = served.as_ref().map_or(&entry.spec, |v| &v.trained.spec);
    let rows = -1i64;
    let mut outputs = vec![TensorMetadata {
        name: OUTPUTS.into(),
        datatype: "FP32".into(),
        shape: vec![rows, spec.outputs() as i64],
    }];
    if let Some(labels) = served.as_ref().and_then(|v| v.trained.labels.as_ref()) {
        outputs.push(TensorMetadata {
            name: LABEL.into(),
            datatype: label_type(labels).into(),
            shape: vec![rows],
        });
    }
    Ok(ModelMetadata {
        name: model.to_string(),
        versions: entry
            .versions
            .iter()
            .map(|v| v.version.to_string())
            .collect(),
        platform: PLATFORM.into(),
        inputs: input_tensors(served.as_deref(), spec.inputs),
        outputs,
    })
}

/// A version whose signature encodes raw values (categorical features, missing indicators)
/// takes one tensor per feature: FP32 for a numeric one, BYTES for a categorical one, each
/// `[-1, 1]`. Any other takes the network's input matrix `input` (and accepts per-feature
/// tensors too, which metadata does not list, so that clients reading it send one tensor).
fn input_tensors(served: Option<&VersionMeta>, width: usize) -> Vec<TensorMetadata> {
    match served.and_then(|v| v.signature.as_ref()) {
        Some(sig) if !sig.is_identity() => sig
            .features
            .iter()
            .map(|f| TensorMetadata {
                name: f.name().to_owned(),
                datatype: match f {
                    crate::tabular::Feature::Numeric { .. } => "FP32",
                    crate::tabular::Feature::Categorical { .. } => "BYTES",
                }
                .into(),
                shape: vec![-1, 1],
            })
            .collect(),
        _ => vec![TensorMetadata {
            name: INPUT.into(),
            datatype: "FP32".into(),
            shape: vec![-1, width as i64],
        }],
    }
}

pub(crate) fn label_type(labels: &LabelSet) -> &'static str {
    match labels {
        LabelSet::Int(_) => "INT64",
        LabelSet::Str(_) => "BYTES",
    }
}

/// A model's versions and tensors (those of its latest version).
#[utoipa::path(get, path = "/v2/models/{name}", operation_id = "v2ModelMetadata", tag = "inference",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "Model metadata", body = ModelMetadata),
        (status = 404, description = "No such model", body = InferenceError),
    ))]
pub async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<ModelMetadata>, V2Error> {
    metadata(&state, &name, None).map(axum::Json)
}

/// A model's versions and the tensors of one version.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", operation_id = "v2ModelVersionMetadata", tag = "inference",
    params(("name" = String, Path, description = "Model name"), ("version" = u32, Path, description = "Version number", minimum = 1)),
    responses(
        (status = 200, description = "Model metadata", body = ModelMetadata),
        (status = 404, description = "No such model or version", body = InferenceError),
    ))]
pub async fn model_version_metadata(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
) -> Result<axum::Json<ModelMetadata>, V2Error> {
    metadata(&state, &name, Some(version)).map(axum::Json)
}

fn readiness(state: &AppState, name: &str, version: Option<u32>) -> Result<Response, V2Error> {
    let ready = match lookup_meta(state, name, version) {
        Ok(_) => true,
        Err(e) if e.status == StatusCode::CONFLICT => false,
        Err(e) => return Err(e),
    };
    // Not ready is a 503, as the protocol says (a known model without a trained version
    // cannot serve yet; the body says `"ready": false`).
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        axum::Extension(crate::telemetry::ExpectedStatus),
        axum::Json(ModelReadiness {
            name: name.to_owned(),
            ready,
        }),
    )
        .into_response())
}

/// Whether the model can answer inferences (it has a trained version).
#[utoipa::path(get, path = "/v2/models/{name}/ready", operation_id = "v2ModelReady", tag = "inference",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "Ready", body = ModelReadiness),
        (status = 404, description = "No such model", body = InferenceError),
        (status = 503, description = "Not ready: no trained version yet", body = ModelReadiness),
    ))]
pub async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, V2Error> {
    readiness(&state, &name, None)
}

/// Whether the version can answer inferences.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", operation_id = "v2ModelVersionReady", tag = "inference",
    params(("name" = String, Path, description = "Model name"), ("version" = u32, Path, description = "Version number", minimum = 1)),
    responses(
        (status = 200, description = "Ready", body = ModelReadiness),
        (status = 404, description = "No such model or version", body = InferenceError),
        (status = 503, description = "Not ready: no trained version yet", body = ModelReadiness),
    ))]
pub async fn model_version_ready(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, u32)>,
) -> Result<Response, V2Error> {
    readiness(&state, &name, Some(version))
}
