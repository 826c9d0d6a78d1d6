//! Predict request bodies and their decoding into the network's input matrix: a numeric
//! `inputs` matrix (the network's inputs, as before), `records` (`[{"feature": value}]`,
//! MLflow's `dataframe_records`), `columns` (`{"feature": [values]}`), or a `text/csv` body
//! with a header row. Records, columns and CSV go through the version's signature: a missing
//! or `null` cell is imputed as in training; an unknown field, text in a numeric feature, or a
//! row with no known feature is a 422 naming the row and field. Fields naming the model's
//! target columns, or columns ignored at upload (`?ignore=`), are disregarded: a row of the
//! training file may be sent as it is.

use super::extract::{INLINE_PARSE_MAX, body_error, content_type, is_json, parse_json};
use crate::domain::dataset::json_cell;
use crate::domain::json_matrix;
use crate::error::{ApiError, ErrorCode};
use crate::registry::ModelVersion;
use crate::tabular::{Cell, EncodeError, Feature, MissingTokens, Signature};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use ndarray::Array2;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Exactly one of `inputs`, `records` and `columns`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Rows of the network's input width (for a numeric model: its features in signature
    /// order).
    #[schema(min_items = 1, value_type = Option<Vec<Vec<super::openapi::Float32>>>)]
    pub inputs: Option<Box<RawValue>>,
    /// Rows by feature name: numbers, strings (categorical features) or null (missing).
    #[schema(min_items = 1, value_type = Option<Vec<Object>>)]
    pub records: Option<Vec<Map<String, Value>>>,
    /// Columns by feature name, all of one length.
    #[schema(value_type = Option<Object>)]
    pub columns: Option<Map<String, Value>>,
}

/// A decoded predict body.
pub enum PredictInput {
    /// `inputs`, read by [`json_matrix`].
    Matrix(Array2<f32>),
    Records(Vec<Map<String, Value>>),
    Columns(Map<String, Value>),
    Csv(Bytes),
}

impl<S: Send + Sync> FromRequest<S> for PredictInput {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let csv = content_type(req.headers()).as_deref() == Some("text/csv");
        if !csv && !is_json(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json or text/csv",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        if csv {
            return Ok(PredictInput::Csv(bytes));
        }
        if bytes.len() <= INLINE_PARSE_MAX {
            return decode_json(&bytes);
        }
        tokio::task::spawn_blocking(move || decode_json(&bytes))
            .await
            .map_err(ApiError::internal)?
    }
}

/// A JSON predict body: `{"inputs": …}` alone by the short path, anything else by serde_json
/// (whose `inputs` text is then read the same way, so every body reads its numbers alike).
fn decode_json(bytes: &[u8]) -> Result<PredictInput, ApiError> {
    if let Some(x) = json_matrix::inputs_only(bytes) {
        return Ok(PredictInput::Matrix(x));
    }
    let r: PredictRequest = parse_json(bytes)?;
    match (r.inputs, r.records, r.columns) {
        (Some(i), None, None) => Ok(PredictInput::Matrix(json_matrix::parse(i.get(), "inputs")?)),
        (None, Some(r), None) => Ok(PredictInput::Records(r)),
        (None, None, Some(c)) => Ok(PredictInput::Columns(c)),
        _ => Err(ApiError::invalid(
            "body",
            "give exactly one of `inputs`, `records` and `columns`",
        )),
    }
}

impl PredictInput {
    /// Whether decoding is quick enough for the async runtime: an `inputs` matrix (read
    /// already) or a few records; anything else is decoded on a blocking thread.
    pub fn decodes_quickly(&self) -> bool {
        match self {
            PredictInput::Matrix(_) => true,
            PredictInput::Records(r) => r.len() <= 512,
            PredictInput::Columns(_) | PredictInput::Csv(_) => false,
        }
    }

    /// The network's input matrix.
    ///
    /// # Errors
    /// A 422 naming the row and field at fault.
    pub fn into_matrix(self, served: &ModelVersion) -> Result<Array2<f32>, ApiError> {
        let x = match self {
            PredictInput::Matrix(x) => return Ok(x),
            PredictInput::Records(records) => {
                records_matrix(signature(served, "records")?, &records)?
            }
            PredictInput::Columns(columns) => {
                columns_matrix(signature(served, "columns")?, &columns)?
            }
            PredictInput::Csv(body) => csv_matrix(signature(served, "body")?, &body)?,
        };
        Ok(x)
    }
}

fn signature<'a>(served: &'a ModelVersion, field: &str) -> Result<&'a Signature, ApiError> {
    served.signature.as_ref().ok_or_else(|| {
        ApiError::invalid(
            field,
            "this version was trained before models knew their features: send `inputs`",
        )
    })
}

fn feature_list(sig: &Signature) -> String {
    let names: Vec<&str> = sig.features.iter().map(Feature::name).collect();
    names.join(", ")
}

/// The encode error of row `row` as a 422 on `{prefix}.{feature}`.
fn encode_error(sig: &Signature, prefix: &str, e: &EncodeError) -> ApiError {
    let name = sig.features[e.feature()].name();
    ApiError::invalid(format!("{prefix}.{name}"), e)
}

fn unknown_field(sig: &Signature, field: String, name: &str) -> ApiError {
    ApiError::invalid(
        field,
        format!(
            "{name:?} is not a feature of this model (its features: {})",
            feature_list(sig)
        ),
    )
}

fn records_matrix(
    sig: &Signature,
    records: &[Map<String, Value>],
) -> Result<Array2<f32>, ApiError> {
    if records.is_empty() {
        return Err(ApiError::invalid(
            "records",
            "must hold at least one record",
        ));
    }
    let missing = MissingTokens::new(Vec::new());
    let width = sig.width();
    let mut x = Array2::<f32>::zeros((records.len(), width));
    for (i, (r, mut out)) in records.iter().zip(x.rows_mut()).enumerate() {
        let mut known = 0;
        for k in r.keys() {
            if sig.position(k).is_some() {
                known += 1;
            } else if !sig.disregards(k) {
                return Err(unknown_field(sig, format!("records[{i}].{k}"), k));
            }
        }
        if known == 0 {
            return Err(ApiError::invalid(
                format!("records[{i}]"),
                format!("has none of the model's features ({})", feature_list(sig)),
            ));
        }
        let mut bad = None;
        let cells: Vec<Cell> = sig
            .features
            .iter()
            .map(|f| {
                json_cell(r.get(f.name()), &missing).unwrap_or_else(|| {
                    bad.get_or_insert(f.name());
                    Cell::Missing
                })
            })
            .collect();
        if let Some(name) = bad {
            return Err(ApiError::invalid(
                format!("records[{i}].{name}"),
                "must be a number, a string, a boolean or null",
            ));
        }
        sig.encode_row(
            |k| cells[k],
            out.as_slice_mut().expect("rows are contiguous"),
        )
        .map_err(|e| encode_error(sig, &format!("records[{i}]"), &e))?;
    }
    Ok(x)
}

fn columns_matrix(sig: &Signature, columns: &Map<String, Value>) -> Result<Array2<f32>, ApiError> {
    let mut rows = None;
    let mut by_feature: Vec<Option<&Vec<Value>>> = vec![None; sig.features.len()];
    for (k, v) in columns {
        let Value::Array(values) = v else {
            return Err(ApiError::invalid(
                format!("columns.{k}"),
                "must be an array",
            ));
        };
        match sig.position(k) {
            Some(f) => by_feature[f] = Some(values),
            None if sig.disregards(k) => continue,
            None => return Err(unknown_field(sig, format!("columns.{k}"), k)),
        }
        match rows {
            None => rows = Some(values.len()),
            Some(n) if n != values.len() => {
                return Err(ApiError::invalid(
                    format!("columns.{k}"),
                    format!("has {} values but the first column has {n}", values.len()),
                ));
            }
            Some(_) => {}
        }
    }
    let rows = match rows {
        None => {
            return Err(ApiError::invalid(
                "columns",
                format!("has none of the model's features ({})", feature_list(sig)),
            ));
        }
        Some(0) => return Err(ApiError::invalid("columns", "must hold at least one row")),
        Some(n) => n,
    };
    let missing = MissingTokens::new(Vec::new());
    let mut x = Array2::<f32>::zeros((rows, sig.width()));
    let mut cells = vec![Cell::Missing; sig.features.len()];
    for (i, mut out) in x.rows_mut().into_iter().enumerate() {
        for (f, col) in by_feature.iter().enumerate() {
            cells[f] = match col {
                None => Cell::Missing,
                Some(values) => json_cell(values.get(i), &missing).ok_or_else(|| {
                    ApiError::invalid(
                        format!("columns.{}[{i}]", sig.features[f].name()),
                        "must be a number, a string, a boolean or null",
                    )
                })?,
            };
        }
        sig.encode_row(
            |k| cells[k],
            out.as_slice_mut().expect("rows are contiguous"),
        )
        .map_err(|e| {
            let name = sig.features[e.feature()].name();
            ApiError::invalid(format!("columns.{name}[{i}]"), e)
        })?;
    }
    Ok(x)
}

fn csv_matrix(sig: &Signature, body: &[u8]) -> Result<Array2<f32>, ApiError> {
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(::csv::Trim::All)
        .from_reader(body);
    let read_err = |e: ::csv::Error| ApiError::invalid("body", format!("not a readable CSV: {e}"));
    let header = rdr.headers().map_err(read_err)?.clone();
    // For each CSV column: the feature it feeds, if any.
    let mut feeds = Vec::with_capacity(header.len());
    for (i, h) in header.iter().enumerate() {
        let h = if i == 0 {
            h.trim_start_matches('\u{feff}')
        } else {
            h
        };
        match sig.position(h) {
            Some(f) => {
                if feeds.contains(&Some(f)) {
                    return Err(ApiError::invalid("header", format!("names {h:?} twice")));
                }
                feeds.push(Some(f));
            }
            None if sig.disregards(h) => feeds.push(None),
            None => return Err(unknown_field(sig, "header".into(), h)),
        }
    }
    if feeds.iter().all(Option::is_none) {
        return Err(ApiError::invalid(
            "header",
            format!("has none of the model's features ({})", feature_list(sig)),
        ));
    }
    let missing = MissingTokens::default();
    let numeric: Vec<bool> = sig
        .features
        .iter()
        .map(|f| matches!(f, Feature::Numeric { .. }))
        .collect();
    let width = sig.width();
    let mut flat = Vec::new();
    let mut record = ::csv::StringRecord::new();
    let mut rows = 0usize;
    let mut out = vec![0f32; width];
    while rdr.read_record(&mut record).map_err(read_err)? {
        let line = record.position().map_or(0, |p| p.line());
        let mut cells = vec![Cell::Missing; sig.features.len()];
        for (text, feed) in record.iter().zip(&feeds) {
            if let Some(f) = *feed {
                cells[f] = if numeric[f] {
                    missing.read(text)
                } else if missing.contains(text) {
                    Cell::Missing
                } else {
                    Cell::Text(text)
                };
            }
        }
        sig.encode_row(|k| cells[k], &mut out).map_err(|e| {
            let name = sig.features[e.feature()].name();
            ApiError::invalid(format!("line {line}.{name}"), e)
        })?;
        flat.extend_from_slice(&out);
        rows += 1;
    }
    if rows == 0 {
        return Err(ApiError::invalid("body", "holds a header but no rows"));
    }
    Ok(Array2::from_shape_vec((rows, width), flat).expect("rows × width values"))
}
