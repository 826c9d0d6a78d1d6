//! `/v1/datasets`: upload (JSON, or CSV streamed straight into the parser), list, inspect,
//! delete.

use super::encoding::{BodyEncoding, body_encoding, decoded, gunzip_all, gzip_error};
use super::extract::{Path, content_type, parse_json};
use super::views::DatasetView;
use crate::datasets::StoredDataset;
use crate::domain::csv::{CsvError, CsvOptions, Task};
use crate::domain::dataset::{DatasetJson, check_name};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::state::AppState;
use crate::store::DatasetRecord;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use serde::Serialize;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio_util::io::{StreamReader, SyncIoBridge};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Serialize, ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetView>,
}

/// Upload a dataset as JSON, or as CSV with a header row.
///
/// Columns are numeric, or categorical when any of their non-missing cells is text.
/// CSV: `?target=COLUMN` (repeat for several targets; default: the last column), optional
/// `?name=`, `?task=regression|classification` (default: as the model trained on it says),
/// `?categorical=COL`, `?numeric=COL`, `?ignore=COL` (repeatable), `?missing=TOKEN`
/// (repeatable; replaces the default `NA`, `NaN`, `null`, `?`; the empty cell is always
/// missing), `?delimiter=;` (one character; `tab` for tabs). JSON: `records` (with `target`,
/// `categorical`, `numeric`, `ignore`, `task` in the body), or `inputs` with `targets` or `labels`.
///
/// Either body may be gzip-compressed (`Content-Encoding: gzip`): it is decompressed as a
/// stream, and the size limit applies to the compressed and to the decompressed bytes alike.
#[utoipa::path(post, path = "/v1/datasets", operation_id = "createDataset", tag = "datasets",
    request_body(content(
        (DatasetJson = "application/json"),
        (String = "text/csv", example = "sepal_length,sepal_width,species\n5.1,3.5,setosa\n"),
    )),
    params(
        ("target" = Option<Vec<String>>, Query, description = "CSV: target column (repeatable; default: the last column)", explode = true),
        ("name" = Option<String>, Query, description = "CSV: dataset name"),
        ("task" = Option<Task>, Query, description = "CSV: regression or classification (default: as the model trained on it says)"),
        ("categorical" = Option<Vec<String>>, Query, description = "CSV: a column to treat as categories (repeatable)", explode = true),
        ("numeric" = Option<Vec<String>>, Query, description = "CSV: a column that must be numeric (repeatable)", explode = true),
        ("ignore" = Option<Vec<String>>, Query, description = "CSV: a column to leave out (repeatable)", explode = true),
        ("missing" = Option<Vec<String>>, Query, description = "CSV: a cell text meaning missing (repeatable; replaces NA, NaN, null, ?)", explode = true),
        ("delimiter" = Option<String>, Query, description = "CSV: the field delimiter, one character or `tab` (default `,`)"),
        ("Content-Encoding" = Option<String>, Header, description = "`gzip` for a compressed body (decompressed under the same size limit)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same request (method, path and query, content type and encoding, body) sent again with the same key gets the first 2xx answer again, marked `Idempotent-Replayed: true`, without the work being done twice; keys are kept `--idempotency-ttl-secs` (default 24 h). Only 2xx answers are kept. 1 to 255 visible ASCII characters", min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$"),
    ),
    responses(
        (status = 201, description = "The dataset", body = DatasetView,
            headers(("Location" = String, description = "The dataset's URL"), ("Idempotent-Replayed" = String, description = "`true` on the recorded answer to an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body too large (compressed, or once decompressed)", body = ErrorBody),
        (status = 409, description = "The server holds `--max-datasets` datasets (`limit_reached`), or the first request with this `Idempotency-Key` is still at work (`idempotency_key_in_flight`, with `Retry-After`)", body = ErrorBody),
        (status = 415, description = "Neither JSON nor CSV, or an encoding other than gzip", body = ErrorBody),
        (status = 422, description = "Invalid data, or an `Idempotency-Key` used for another request (`idempotency_key_reused`)", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    req: Request,
) -> Result<impl IntoResponse, ApiError> {
    let limit = state.config.max_dataset_bytes;
    let max_cells = state.config.max_dataset_cells;
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("datasets are limited to {limit} bytes"),
        )
    };
    room_for_dataset(&state)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let encoding = body_encoding(req.headers())?;
    let (name, data) = match content_type(req.headers()).as_deref() {
        Some("application/json") => {
            let body = http_body_util::Limited::new(req.into_body(), limit);
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) if is_length_limit(e.as_ref()) => return Err(too_large()),
                Err(_) => {
                    return Err(ApiError::new(
                        ErrorCode::MalformedJson,
                        "the request body could not be read",
                    ));
                }
            };
            // Parsed once, on a blocking thread, together with the table it becomes.
            tokio::task::spawn_blocking(move || {
                let json: DatasetJson = match encoding {
                    BodyEncoding::Identity => parse_json(&bytes)?,
                    BodyEncoding::Gzip => parse_json(&gunzip_all(&bytes, limit)?)?,
                };
                drop(bytes);
                json.into_table(max_cells)
            })
            .await
            .map_err(ApiError::internal)??
        }
        Some("text/csv") => {
            let opts = csv_options(req.uri().query().unwrap_or(""), max_cells)?;
            let stream = http_body_util::Limited::new(req.into_body(), limit);
            let stream =
                TryStreamExt::map_err(Body::new(stream).into_data_stream(), std::io::Error::other);
            let reader = SyncIoBridge::new(StreamReader::new(stream));
            let (name, opts) = opts;
            let parsed = tokio::task::spawn_blocking(move || {
                crate::domain::csv::parse(decoded(reader, encoding, limit), &opts)
            })
            .await
            .map_err(ApiError::internal)?;
            match parsed {
                Ok(d) => (name, d),
                Err(CsvError::Io(e)) if is_length_limit(&e) => return Err(too_large()),
                Err(CsvError::Io(e)) if gzip_error(&e).is_some() => {
                    return Err(gzip_error(&e).expect("checked"));
                }
                Err(e) => return Err(ApiError::invalid("body", e)),
            }
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the dataset as application/json or text/csv",
            ));
        }
    };
    store(&state, name, data).await
}

/// Stores a parsed table as a new dataset (the end of an upload, and of a sample's copy):
/// 201 with its view and `Location`.
///
/// # Errors
/// 409 `limit_reached` at `--max-datasets`; the store's errors.
pub(super) async fn store(
    state: &AppState,
    name: Option<String>,
    data: crate::tabular::Table,
) -> Result<axum::response::Response, ApiError> {
    let record = DatasetRecord::describe(Uuid::new_v4(), name, OffsetDateTime::now_utc(), &data);
    let data = Arc::new(data);
    let (r, d) = (record.clone(), data.clone());
    let admin = state.admin_lock().await;
    room_for_dataset(state)?;
    let (datasets, max) = (state.datasets.clone(), state.config.max_datasets);
    let stored = state
        .commit(Some(admin), move |s| {
            s.insert_dataset(&r, &d, max)?;
            Ok(datasets.insert(StoredDataset::new(record, Some(data))))
        })
        .await?;
    tracing::info!(dataset_id = %stored.id(), rows = stored.record.rows, "dataset stored");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/datasets/{}", stored.id()))],
        axum::Json(DatasetView::from(&stored.record)),
    )
        .into_response())
}

pub fn dataset_not_found(id: Uuid) -> ApiError {
    ApiError::new(ErrorCode::DatasetNotFound, format!("no dataset {id}"))
}

/// 409 when the server holds `--max-datasets` datasets already.
fn room_for_dataset(state: &AppState) -> Result<(), ApiError> {
    let max = state.config.max_datasets;
    if max > 0 && state.datasets.len() >= max {
        return Err(ApiError::new(
            ErrorCode::LimitReached,
            format!("this server keeps at most {max} datasets; delete one first"),
        ));
    }
    Ok(())
}

/// Whether an error, or any error behind it, is a body that passed its size limit.
fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.get_ref().is_some_and(|inner| is_length_limit(inner))
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// `?target=a&target=b&name=x&task=regression&categorical=c&ignore=id&missing=-&delimiter=;`.
fn csv_options(query: &str, max_cells: usize) -> Result<(Option<String>, CsvOptions), ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| ApiError::invalid("query", e))?;
    let mut opts = CsvOptions {
        max_cells: Some(max_cells),
        ..Default::default()
    };
    let mut name = None;
    let mut missing: Option<Vec<String>> = None;
    for (k, v) in pairs {
        match k.as_str() {
            "target" => opts.targets.push(v),
            "name" => name = Some(v),
            "categorical" => opts.categorical.push(v),
            "numeric" => opts.numeric.push(v),
            "ignore" => opts.ignore.push(v),
            "missing" => missing.get_or_insert_with(Vec::new).push(v),
            "delimiter" => {
                opts.delimiter = match v.as_str() {
                    "tab" | "\t" => b'\t',
                    d if d.len() == 1 && d != "\"" && d != "\n" && d != "\r" => d.as_bytes()[0],
                    _ => {
                        return Err(ApiError::invalid(
                            "delimiter",
                            "must be one ASCII character (not a quote or line end), or `tab`",
                        ));
                    }
                }
            }
            "task" => {
                opts.task = Some(match v.as_str() {
                    "regression" => Task::Regression,
                    "classification" => Task::Classification,
                    _ => {
                        return Err(ApiError::invalid(
                            "task",
                            "must be regression or classification",
                        ));
                    }
                })
            }
            other => return Err(ApiError::invalid(other, "is not a parameter of this route")),
        }
    }
    if let Some(m) = missing {
        opts.missing = crate::tabular::MissingTokens::new(m);
    }
    check_name(&name)?;
    Ok((name, opts))
}

/// List datasets, oldest first.
#[utoipa::path(get, path = "/v1/datasets", operation_id = "listDatasets", tag = "datasets",
    responses((status = 200, description = "All datasets", body = DatasetList)))]
pub async fn list(State(state): State<AppState>) -> axum::Json<DatasetList> {
    axum::Json(DatasetList {
        datasets: state
            .datasets
            .list()
            .iter()
            .map(|d| DatasetView::from(&d.record))
            .collect(),
    })
}

/// A dataset's shape and classes.
#[utoipa::path(get, path = "/v1/datasets/{id}", operation_id = "getDataset", tag = "datasets",
    params(("id" = Uuid, Path, description = "Dataset id")),
    responses(
        (status = 200, description = "The dataset", body = DatasetView),
        (status = 404, description = "No such dataset", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<DatasetView>, ApiError> {
    state.find_dataset(id).await?;
    let d = state
        .datasets
        .get(id)
        .ok_or_else(|| dataset_not_found(id))?;
    Ok(axum::Json(DatasetView::from(&d.record)))
}

/// Delete a dataset.
#[utoipa::path(delete, path = "/v1/datasets/{id}", operation_id = "deleteDataset", tag = "datasets",
    params(("id" = Uuid, Path, description = "Dataset id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such dataset", body = ErrorBody),
        (status = 409, description = "A queued or running job uses it", body = ErrorBody),
        (status = 503, description = "Storage unavailable; retry", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "Storage full; nothing was changed", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.find_dataset(id).await?;
    // As for models: the store says whether a job uses it (`dataset_in_use`).
    let admin = state.admin_lock().await;
    if state.datasets.get(id).is_none() {
        return Err(dataset_not_found(id));
    }
    let datasets = state.datasets.clone();
    state
        .commit(Some(admin), move |s| {
            s.delete_dataset(id)?;
            datasets.remove(id);
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
