//! `Idempotency-Key` on the creating POSTs (create a model, upload a dataset, copy a sample,
//! train, sweep, import): a retry of the same request with the same key gets the first answer
//! again, without the work being done twice — across restarts and replicas, since the keys live
//! in the store.
//!
//! The protocol, per keyed request (middleware on the runtime; store calls on blocking threads):
//! 1. The body is read whole (under the route's own size limit) and fingerprinted: SHA-256 of
//!    the method, the path with its query, `Content-Type`, `Content-Encoding` and the body.
//! 2. The key is **claimed in the store before any work**, in one transaction
//!    ([`crate::store::Store::claim_idempotency_key`]): a new key is reserved for this request;
//!    the key of another request is a 422 `idempotency_key_reused`; the same request still at
//!    work is a 409 `idempotency_key_in_flight` with `Retry-After`; the same request answered
//!    is replayed (`Idempotent-Replayed: true`).
//! 3. The reserved request runs on a task of its own, so that neither the request timeout nor
//!    a client that hangs up can stop it between the work and the record of its answer; while
//!    it runs, its reservation is renewed every third of `--idempotency-lease-secs`. A
//!    reservation not renewed for that long (its process died, or lost the store) is taken over
//!    by the next retry.
//! 4. A 2xx answer is recorded and replayed until the key expires (`--idempotency-ttl-secs`
//!    after its first use). Any other answer changed nothing (a 4xx refuses before any change;
//!    a 5xx, a 429 and a 507 roll back), so the reservation is released: a retry — or the
//!    request corrected, under the same key — is answered afresh.

use crate::error::{ApiError, ErrorCode};
use crate::records::{Claimed, IdempotencyClaim, StoredAnswer};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::time::Duration;
use uuid::Uuid;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set (`true`) on a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";
/// The longest key.
pub const MAX_KEY_LEN: usize = 255;
/// The routes (all `POST`) that take a key; on any other it is ignored.
pub const ROUTES: [&str; 6] = [
    "/v1/models",
    "/v1/models/import",
    "/v1/models/{name}/train",
    "/v1/models/{name}/sweeps",
    "/v1/datasets",
    "/v1/samples/{name}",
];
/// The answer headers recorded and replayed.
const KEPT_HEADERS: [header::HeaderName; 2] = [header::CONTENT_TYPE, header::LOCATION];
/// Bodies hashed on the runtime; larger ones on a blocking thread.
const HASH_INLINE: usize = 64 << 10;

/// Middleware: applies the protocol above to a `POST` on one of [`ROUTES`] with the header;
/// passes everything else through untouched.
pub async fn idempotent(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(route) = route.filter(|r| req.method() == Method::POST && ROUTES.contains(&&**r))
    else {
        return next.run(req).await;
    };
    match key_of(req.headers()) {
        Ok(None) => next.run(req).await,
        Ok(Some(key)) => keyed(state, &route, key, req, next)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

/// The key, if one was sent: 1 to [`MAX_KEY_LEN`] visible ASCII characters (`!` to `~`).
///
/// # Errors
/// 422 `validation_failed` (field `Idempotency-Key`) for an empty, long, non-printable or
/// repeated key.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut all = headers.get_all(HEADER).iter();
    let Some(value) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(ApiError::invalid("Idempotency-Key", "send the header once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters (no spaces)"),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// SHA-256 (hex) of what makes two requests the same: method, path and query, content type
/// and encoding, body. Each part is length-prefixed, so no two requests share an input.
pub fn fingerprint(
    method: &str,
    path_and_query: &str,
    content_type: &str,
    content_encoding: &str,
    body: &[u8],
) -> String {
    let mut h = Sha256::new();
    for part in [
        method.as_bytes(),
        path_and_query.as_bytes(),
        content_type.as_bytes(),
        content_encoding.as_bytes(),
        body,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn now_nanos() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

fn secs_nanos(secs: u64) -> i64 {
    i64::try_from(u128::from(secs) * 1_000_000_000).unwrap_or(i64::MAX)
}

/// The claim a request makes now, under the configured expiry and lease.
fn claim(state: &AppState, key: String, fingerprint: String, owner: Uuid) -> IdempotencyClaim {
    let now = now_nanos();
    IdempotencyClaim {
        key,
        fingerprint,
        owner,
        now,
        expired_before: now.saturating_sub(secs_nanos(state.config.idempotency_ttl_secs)),
        stale_before: now.saturating_sub(secs_nanos(state.config.idempotency_lease_secs)),
    }
}

/// Deletes expired keys (also done by every claim); at startup. Blocking.
///
/// # Errors
/// The store fails.
pub fn purge(
    store: &dyn crate::store::Store,
    config: &crate::config::Config,
) -> Result<usize, crate::store::StoreError> {
    let now = now_nanos();
    store.purge_idempotency_keys(
        now.saturating_sub(secs_nanos(config.idempotency_ttl_secs)),
        now.saturating_sub(secs_nanos(config.idempotency_lease_secs)),
    )
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

async fn keyed(
    state: AppState,
    route: &str,
    key: String,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // The body is read here, under the limit its handler applies (it sees the same bytes).
    let limit = if route == "/v1/datasets" {
        state.config.max_dataset_bytes
    } else {
        state.config.max_body_bytes
    };
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body of this route is limited to {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(_) => {
            return Err(ApiError::new(
                ErrorCode::MalformedJson,
                "the request body could not be read",
            ));
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let (ct, ce) = (
        header_str(&parts.headers, header::CONTENT_TYPE),
        header_str(&parts.headers, header::CONTENT_ENCODING),
    );
    let method = parts.method.to_string();
    let hash = {
        let b = bytes.clone();
        move || fingerprint(&method, &path, &ct, &ce, &b)
    };
    let fingerprint = if bytes.len() <= HASH_INLINE {
        hash()
    } else {
        tokio::task::spawn_blocking(hash)
            .await
            .map_err(ApiError::internal)?
    };
    let owner = Uuid::new_v4();
    let c = claim(&state, key.clone(), fingerprint, owner);
    match state.store(move |s| s.claim_idempotency_key(&c)).await? {
        Claimed::Reserved => {}
        Claimed::Answered(answer) => {
            crate::metrics::idempotency_key("replayed");
            tracing::info!(idempotency_key = %key, status = answer.status, "answer replayed");
            return Ok(replay(answer));
        }
        Claimed::Mismatch => {
            crate::metrics::idempotency_key("mismatch");
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used for a different request; use a new key",
            ));
        }
        Claimed::InFlight => {
            crate::metrics::idempotency_key("in_flight");
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyInFlight,
                "the first request with this Idempotency-Key is still being worked on; retry",
            )
            .retry_after(1));
        }
    }
    crate::metrics::idempotency_key("reserved");
    let req = Request::from_parts(parts, Body::from(bytes));
    // On a task of its own: the work and the record of its answer are not torn apart by the
    // request timeout or a client that hangs up (the task runs to its end either way).
    let task = tokio::spawn(run_reserved(state, key, owner, req, next));
    task.await.map_err(ApiError::internal)
}

/// Runs the reserved request, renewing its reservation meanwhile, then records (2xx) or
/// releases (anything else) the key. Returns the handler's answer as it was.
async fn run_reserved(
    state: AppState,
    key: String,
    owner: Uuid,
    req: Request,
    next: Next,
) -> Response {
    let lease = Duration::from_secs(state.config.idempotency_lease_secs);
    let renewals = tokio::spawn(renew(state.clone(), key.clone(), owner, lease / 3));
    let (parts, body) = next.run(req).await.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes());
    renewals.abort();
    let body: Bytes = match body {
        Ok(b) => b,
        Err(e) => {
            // The handler's body failed: nothing to record or replay.
            release(&state, &key, owner).await;
            return ApiError::internal(format!("an answer's body failed: {e}")).into_response();
        }
    };
    if parts.status.is_success() {
        let answer = StoredAnswer {
            status: parts.status.as_u16(),
            headers: KEPT_HEADERS
                .iter()
                .filter_map(|h| {
                    let v = parts.headers.get(h)?.to_str().ok()?;
                    Some((h.as_str().to_owned(), v.to_owned()))
                })
                .collect(),
            body: body.to_vec(),
        };
        record(&state, &key, owner, answer).await;
    } else {
        release(&state, &key, owner).await;
    }
    Response::from_parts(parts, Body::from(body))
}

/// Renews the reservation every `every` until aborted (or until it is no longer ours).
async fn renew(state: AppState, key: String, owner: Uuid, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let k = key.clone();
        match state
            .store(move |s| s.renew_idempotency_key(&k, owner, now_nanos()))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(idempotency_key = %key, "reservation taken over while working");
                return;
            }
            // Retried at the next tick; the lease allows two misses.
            Err(e) => tracing::warn!(idempotency_key = %key, error = %e.message, "renewal failed"),
        }
    }
}

/// Records a 2xx answer, retrying a failing store a few times: unrecorded, the reservation
/// would be taken over after the lease, and the work done again.
async fn record(state: &AppState, key: &str, owner: Uuid, answer: StoredAnswer) {
    let answer = std::sync::Arc::new(answer);
    for attempt in 0..5u32 {
        let (k, a) = (key.to_owned(), answer.clone());
        match state
            .store(move |s| s.record_idempotent_answer(&k, owner, &a))
            .await
        {
            Ok(true) => return,
            Ok(false) => {
                crate::metrics::idempotency_key("taken_over");
                tracing::warn!(idempotency_key = %key, "reservation taken over before the answer was recorded");
                return;
            }
            Err(e) => {
                tracing::warn!(idempotency_key = %key, attempt, error = %e.message, "cannot record the answer");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    tracing::error!(idempotency_key = %key, "the answer was not recorded; a retry after the lease does the work again");
}

async fn release(state: &AppState, key: &str, owner: Uuid) {
    let k = key.to_owned();
    if let Err(e) = state
        .store(move |s| s.release_idempotency_key(&k, owner))
        .await
    {
        // The reservation then lapses after the lease.
        tracing::warn!(idempotency_key = %key, error = %e.message, "cannot release the key");
    }
}

fn replay(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, answer.body).into_response();
    let headers = resp.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    for (name, value) in &answer.headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_visible_ascii_word_of_bounded_length() {
        let of = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_bytes(v).unwrap());
            key_of(&h)
        };
        assert_eq!(of(b"a-1_B.~!").unwrap().as_deref(), Some("a-1_B.~!"));
        assert!(of(&[b'k'; MAX_KEY_LEN]).unwrap().is_some());
        for bad in [
            &b""[..],
            b"two words",
            b"tab\there",
            &[b'k'; MAX_KEY_LEN + 1],
            b"\xc3\xa9",
        ] {
            let e = of(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::ValidationFailed, "{bad:?}");
            assert_eq!(e.field.as_deref(), Some("Idempotency-Key"));
        }
        let mut twice = HeaderMap::new();
        twice.append(HEADER, HeaderValue::from_static("a"));
        twice.append(HEADER, HeaderValue::from_static("a"));
        assert!(key_of(&twice).is_err());
        assert_eq!(key_of(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn fingerprints_tell_every_part_apart() {
        let base = fingerprint("POST", "/v1/models", "application/json", "", b"{}");
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            fingerprint("POST", "/v1/models", "application/json", "", b"{}")
        );
        for other in [
            fingerprint("PUT", "/v1/models", "application/json", "", b"{}"),
            fingerprint("POST", "/v1/models?x", "application/json", "", b"{}"),
            fingerprint("POST", "/v1/models", "text/csv", "", b"{}"),
            fingerprint("POST", "/v1/models", "application/json", "gzip", b"{}"),
            fingerprint("POST", "/v1/models", "application/json", "", b"{ }"),
            // Length prefixes: moving a byte from one part to the next changes the hash.
            fingerprint("POST", "/v1/models", "application/jso", "n", b"{}"),
        ] {
            assert_ne!(base, other);
        }
    }
}
