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

impl<T: DeserializeOwned + Send + 'static, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json_async(bytes).await.map(Json)
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

/// Bodies up to this size are parsed on the runtime thread that received them (faster than a
/// hand-over); larger ones on a blocking thread, so that no request waits behind them.
pub const INLINE_PARSE_MAX: usize = 64 << 10;

/// Up to this size a body that fails to parse is parsed a second time to name the field at
/// fault; a larger one is parsed once, and its error gives the line and column instead.
pub const PATH_REPARSE_MAX: usize = 1 << 20;

/// [`parse_json`], off the async runtime when the body is large (datasets reach 256 MiB).
///
/// # Errors
/// As [`parse_json`].
pub async fn parse_json_async<T: DeserializeOwned + Send + 'static>(
    bytes: Bytes,
) -> Result<T, ApiError> {
    if bytes.len() <= INLINE_PARSE_MAX {
        return parse_json(&bytes);
    }
    tokio::task::spawn_blocking(move || parse_json(&bytes))
        .await
        .map_err(ApiError::internal)?
}

/// Deserializes JSON, naming the field at fault on error. The plain parser runs first (the
/// common case pays nothing for path tracking); a failure of a body up to [`PATH_REPARSE_MAX`]
/// is parsed again to find the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match serde_json::from_slice(bytes) {
        Ok(v) => return Ok(v),
        Err(e) if bytes.len() > PATH_REPARSE_MAX => return Err(json_error(e, None)),
        Err(_) => {}
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        json_error(e.into_inner(), Some(path))
    })
}

/// Our error for a body serde_json refused: a 422 naming the field (`path`, where known) for
/// valid JSON of the wrong shape, else a 400.
fn json_error(inner: serde_json::Error, path: Option<String>) -> ApiError {
    let field = match path.as_deref() {
        None | Some(".") => "body".to_string(),
        Some(p) => p.to_string(),
    };
    if inner.to_string().starts_with("number out of range") {
        // Valid JSON, but the value does not fit (an f32 beyond ±3.4e38).
        return ApiError::invalid(field, "is out of range for a 32-bit float");
    }
    match inner.classify() {
        serde_json::error::Category::Data => {
            // Without the path, the position is all that says where.
            let message = if path.is_some() {
                strip_position(&inner.to_string())
            } else {
                inner.to_string()
            };
            ApiError::invalid(field, message)
        }
        _ => ApiError::new(
            ErrorCode::MalformedJson,
            format!("the body is not valid JSON: {inner}"),
        ),
    }
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

#[cfg(test)]
mod integral_numbers {
    use super::parse_json;
    use crate::nn::integral::{integer, list, optional};
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Fields {
        #[serde(deserialize_with = "integer")]
        n: usize,
        #[serde(default, deserialize_with = "optional")]
        o: Option<u32>,
        #[serde(default, deserialize_with = "list")]
        v: Vec<i64>,
    }

    /// The request path: the message of the 422, with the field named.
    fn parse(s: &str) -> Result<Fields, String> {
        parse_json::<Fields>(s.as_bytes()).map_err(|e| {
            assert_eq!(e.code, crate::error::ErrorCode::ValidationFailed, "{e:?}");
            e.message
        })
    }

    #[test]
    fn integral_numbers_are_integers_in_any_spelling() {
        let want = Fields {
            n: 406,
            o: Some(7),
            v: vec![-3, 0, 5],
        };
        assert_eq!(parse(r#"{"n": 406, "o": 7, "v": [-3, 0, 5]}"#), Ok(want));
        let want = Fields {
            n: 406,
            o: Some(7),
            v: vec![-3, 0, 5],
        };
        assert_eq!(
            parse(r#"{"n": 406.0, "o": 7e0, "v": [-3.0, -0.0, 0.5e1]}"#),
            Ok(want)
        );
        assert_eq!(
            parse(r#"{"n": 1, "o": null}"#),
            Ok(Fields {
                n: 1,
                o: None,
                v: vec![]
            })
        );
    }

    #[test]
    fn fractions_and_out_of_range_values_are_refused_clearly() {
        let e = parse(r#"{"n": 406.5}"#).unwrap_err();
        assert!(
            e.starts_with("n: ")
                && e.contains("floating point `406.5`")
                && e.contains("non-negative integer"),
            "{e}"
        );
        let e = parse(r#"{"n": -1}"#).unwrap_err();
        assert!(e.contains("integer `-1`"), "{e}");
        let e = parse(r#"{"n": 1, "o": 4294967296.0}"#).unwrap_err();
        assert!(e.contains("4294967296") && e.contains("u32"), "{e}");
        let e = parse(r#"{"n": 1e300}"#).unwrap_err();
        assert!(e.contains("expected a non-negative integer"), "{e}");
        let e = parse(r#"{"n": "3"}"#).unwrap_err();
        assert!(e.contains("invalid type: string"), "{e}");
        let e = parse(r#"{"n": 1, "v": [1, 2.5]}"#).unwrap_err();
        assert!(e.starts_with("v[1]: ") && e.contains("2.5"), "{e}");
    }
}

#[cfg(test)]
mod off_the_runtime {
    use super::{INLINE_PARSE_MAX, PATH_REPARSE_MAX, parse_json_async};
    use axum::body::Bytes;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A dataset body of `rows` rows of 8 numbers, then `tail`.
    fn body(rows: usize, tail: &str) -> Bytes {
        let row = "[0.125,1.5,2.25,3.0,4.5,5.75,6.0,7.25]";
        let mut s = String::from(r#"{"inputs":["#);
        for i in 0..rows {
            if i > 0 {
                s.push(',');
            }
            s.push_str(row);
        }
        s.push_str(tail);
        Bytes::from(s)
    }

    /// On a runtime of one thread, a task that only counts can run while a large body is
    /// parsed only if the parse is elsewhere: parsed inline, the body would be done before the
    /// counter ever ran (the count would be 0, whatever the machine's speed).
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_body_is_parsed_while_the_runtime_serves_others() {
        let big = body(200_000, r#"],"labels":[]}"#);
        assert!(big.len() > INLINE_PARSE_MAX);
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        let counter = tokio::spawn(async move {
            loop {
                t.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
        let parsed: crate::domain::dataset::DatasetJson = parse_json_async(big).await.unwrap();
        counter.abort();
        assert_eq!(parsed.inputs.map(|v| v.len()), Some(200_000));
        assert!(ticks.load(Ordering::Relaxed) > 0);
    }

    /// A large body that fails is parsed once: its error names the position, not the field
    /// (finding the field would take a second pass over up to 256 MiB).
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_failing_body_names_the_position() {
        let bad = body(40_000, r#",["x"]]}"#);
        assert!(bad.len() > PATH_REPARSE_MAX);
        let e = parse_json_async::<crate::domain::dataset::DatasetJson>(bad)
            .await
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        assert!(e.message.contains("at line 1 column"), "{}", e.message);
        let small = body(10, r#",["x"]]}"#);
        let e = parse_json_async::<crate::domain::dataset::DatasetJson>(small)
            .await
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inputs[10][0]"), "{}", e.message);
    }
}
