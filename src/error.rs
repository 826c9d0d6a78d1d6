//! The one error type at the HTTP edge and the one table that maps each error code to its
//! status. Every error body is `{"error": {"code": "...", "message": "...", "field"?: "..."}}`.
//! Internal causes are logged, never sent to clients.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A stable, machine-readable error code: of an error response, or of a failed job (the last
/// four are only ever a job's, which also end with `storage_full`, `store_unavailable` or
/// `internal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedJson,
    UnsupportedMediaType,
    ValidationFailed,
    PayloadTooLarge,
    RouteNotFound,
    MethodNotAllowed,
    ModelNotFound,
    VersionNotFound,
    DatasetNotFound,
    JobNotFound,
    ModelExists,
    ModelBusy,
    ModelNotTrained,
    DatasetInUse,
    JobFinished,
    QueueFull,
    Overloaded,
    StorageFull,
    StoreUnavailable,
    Unauthorized,
    Forbidden,
    LimitReached,
    Timeout,
    /// An `Idempotency-Key` sent again with a different request.
    IdempotencyKeyReused,
    /// An `Idempotency-Key` whose first request is still being worked on.
    IdempotencyKeyInFlight,
    Internal,
    /// The job stopped because its server shut down or died.
    Interrupted,
    /// Training diverged (the cost became NaN or infinite).
    Diverged,
    /// The data could not train the model.
    InvalidData,
    /// The model was deleted while the job ran.
    ModelDeleted,
    /// No alias of that name on the model.
    AliasNotFound,
    /// The version is pinned or aliased (it cannot be deleted).
    VersionInUse,
    SweepNotFound,
    /// The sweep has already ended.
    SweepFinished,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 34] = {
        use ErrorCode::*;
        [
            MalformedJson,
            UnsupportedMediaType,
            ValidationFailed,
            PayloadTooLarge,
            RouteNotFound,
            MethodNotAllowed,
            ModelNotFound,
            VersionNotFound,
            DatasetNotFound,
            JobNotFound,
            ModelExists,
            ModelBusy,
            ModelNotTrained,
            DatasetInUse,
            JobFinished,
            QueueFull,
            Overloaded,
            StorageFull,
            StoreUnavailable,
            Unauthorized,
            Forbidden,
            LimitReached,
            Timeout,
            IdempotencyKeyReused,
            IdempotencyKeyInFlight,
            Internal,
            Interrupted,
            Diverged,
            InvalidData,
            ModelDeleted,
            AliasNotFound,
            VersionInUse,
            SweepNotFound,
            SweepFinished,
        ]
    };

    /// The table: each code's HTTP status.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            MalformedJson => StatusCode::BAD_REQUEST,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ValidationFailed | Diverged | InvalidData | IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RouteNotFound | ModelNotFound | VersionNotFound | AliasNotFound | DatasetNotFound
            | JobNotFound | SweepNotFound => StatusCode::NOT_FOUND,
            ModelDeleted => StatusCode::GONE,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ModelExists
            | ModelBusy
            | ModelNotTrained
            | DatasetInUse
            | JobFinished
            | LimitReached
            | IdempotencyKeyInFlight
            | VersionInUse
            | SweepFinished => StatusCode::CONFLICT,
            QueueFull => StatusCode::TOO_MANY_REQUESTS,
            Overloaded | StoreUnavailable | Timeout | Interrupted => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_secs: Option<u64>,
}

/// The error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
    /// The request field at fault, where there is one (`layers[1].units`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    /// 422 naming the field at fault.
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        ApiError {
            code: ErrorCode::ValidationFailed,
            message: format!("{field}: {message}"),
            field: Some(field),
            retry_after_secs: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// An opaque 500; the cause goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        ApiError::new(ErrorCode::Internal, "internal error; see the server log")
    }
}

impl From<crate::nn::FieldError> for ApiError {
    fn from(e: crate::nn::FieldError) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

/// Set on every error response built from an [`ApiError`], so that a layer can restate the
/// error in another protocol's shape (the Open Inference Protocol's `{"error": "…"}` on `/v2`).
#[derive(Clone, Debug)]
pub struct ErrorMessage(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let marker = ErrorMessage(self.message.clone());
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        resp.extensions_mut().insert(marker);
        if let Some(s) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_client_or_server_error_status() {
        for c in ErrorCode::ALL {
            assert!(
                c.status().is_client_error() || c.status().is_server_error(),
                "{c:?}"
            );
        }
    }
}
