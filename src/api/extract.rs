//! Extractors whose rejections speak our error format: JSON bodies (with the path of the field
//! at fault), path parameters and query strings.

use crate::error::{ApiError, ErrorCode};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, header, request::Parts};
use serde::de::DeserializeOwned;

/// A JSON body. Wrong content type → 415; unreadable JSON → 400; a value of the wrong shape
/// (a string where a number belongs, an unknown variant) → 422 naming the field; too large → 413.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json(&bytes).map(Json)
    }
}

/// Whether the request declares a JSON body.
pub fn is_json(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|ct| ct == "application/json" || ct.ends_with("+json"))
}

/// The media type of the body, lower-cased, without parameters.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Deserializes JSON, naming the field at fault on error. The plain parser runs first (the
/// common case pays nothing for path tracking); a failure is parsed again to find the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.to_string().starts_with("number out of range") {
            // Valid JSON, but the value does not fit (an f32 beyond ±3.4e38).
            return ApiError::invalid(path, "is out of range for a 32-bit float");
        }
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." {
                    "body".to_string()
                } else {
                    path
                };
                ApiError::invalid(field, strip_position(&inner.to_string()))
            }
            _ => ApiError::new(
                ErrorCode::MalformedJson,
                format!("the body is not valid JSON: {inner}"),
            ),
        }
    })
}

/// serde_json appends " at line 1 column 52" to data errors; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

pub fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the request body is larger than this route accepts",
        )
    } else {
        ApiError::new(
            ErrorCode::MalformedJson,
            "the request body could not be read",
        )
    }
}

/// Path parameters; a value that does not parse (a job id that is not a UUID) is a 404 of the
/// resource, since no such resource can exist.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => {
                let path = parts.uri.path();
                let (code, what) = if path.starts_with("/v1/jobs") {
                    (ErrorCode::JobNotFound, "no such job: job ids are UUIDs")
                } else if path.starts_with("/v1/datasets") {
                    (
                        ErrorCode::DatasetNotFound,
                        "no such dataset: dataset ids are UUIDs",
                    )
                } else {
                    (
                        ErrorCode::VersionNotFound,
                        "no such version: versions are numbered from 1",
                    )
                };
                Err(ApiError::new(code, what))
            }
            Err(e) => Err(ApiError::internal(e.body_text())),
        }
    }
}

/// A query string; a malformed one is a 422 naming the parameter where serde knows it.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::invalid("query", e.body_text()))
            }
            Err(e) => Err(ApiError::invalid("query", e.body_text())),
        }
    }
}
