//! CSV → [`Dataset`]: a header row, then one sample per record.
//!
//! Streams records into one growing `f32` buffer (no intermediate copy of the table). A target
//! column whose values are all integers, or any of which is not a number, holds class labels;
//! otherwise it is a regression target. `task` overrides the guess.

use crate::nn::{Dataset, DatasetError, Label};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::io::Read;

/// What the targets are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Regression,
    Classification,
}

/// How to read a CSV body.
#[derive(Clone, Debug, Default)]
pub struct CsvOptions {
    /// Target column names (several only for regression); none means the last column.
    pub targets: Vec<String>,
    pub task: Option<Task>,
    /// The most cells (rows × columns) accepted.
    pub max_cells: Option<usize>,
}

/// Why a CSV body was refused.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("the CSV has no header row")]
    NoHeader,
    #[error("target column {0:?} is not in the header")]
    UnknownTarget(String),
    #[error("column {0:?} is named twice as a target")]
    DuplicateTarget(String),
    #[error("no feature columns are left besides the targets")]
    NoFeatures,
    #[error("line {line}: expected {expected} fields, found {found}")]
    FieldCount {
        line: u64,
        expected: usize,
        found: usize,
    },
    #[error("line {line}, column {column:?}: {value:?} is not a finite number")]
    NotANumber {
        line: u64,
        column: String,
        value: String,
    },
    #[error("classification takes exactly one target column")]
    OneLabelColumn,
    #[error("line {line}: the CSV is not valid UTF-8 text")]
    Encoding { line: u64 },
    #[error("the dataset exceeds the limit of {limit} cells")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Data(#[from] DatasetError),
    #[error("could not read the body: {0}")]
    Read(String),
    #[error("could not read the body: {0}")]
    Io(#[source] std::io::Error),
}

/// Parses a CSV document into a dataset.
///
/// # Errors
/// See [`CsvError`]; every error names the line and column at fault.
pub fn parse<R: Read>(input: R, opts: &CsvOptions) -> Result<Dataset, CsvError> {
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(::csv::Trim::All)
        .from_reader(input);
    let header = rdr.headers().map_err(|e| map_err(e, 1))?.clone();
    if header.is_empty() {
        return Err(CsvError::NoHeader);
    }
    let mut target_cols = Vec::new();
    let default_target = [header.iter().next_back().unwrap_or_default().to_string()];
    let targets: &[String] = if opts.targets.is_empty() {
        &default_target
    } else {
        &opts.targets
    };
    for t in targets {
        let col = header
            .iter()
            .position(|h| h == t)
            .ok_or_else(|| CsvError::UnknownTarget(t.clone()))?;
        if target_cols.contains(&col) {
            return Err(CsvError::DuplicateTarget(t.clone()));
        }
        target_cols.push(col);
    }
    let width = header.len() - target_cols.len();
    if width == 0 {
        return Err(CsvError::NoFeatures);
    }
    let is_target: Vec<Option<usize>> = (0..header.len())
        .map(|c| target_cols.iter().position(|&t| t == c))
        .collect();
    let limit = opts.max_cells.unwrap_or(usize::MAX);

    let mut features: Vec<f32> = Vec::new();
    let mut raw_targets: Vec<Vec<String>> = vec![Vec::new(); target_cols.len()];
    let mut record = ::csv::ByteRecord::new();
    let mut rows = 0usize;
    loop {
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(map_err(e, line)),
        }
        let line = record.position().map_or(line, |p| p.line());
        if rows.saturating_add(1).saturating_mul(header.len()) > limit {
            return Err(CsvError::TooLarge { limit });
        }
        for (c, field) in record.iter().enumerate() {
            let text = std::str::from_utf8(field).map_err(|_| CsvError::Encoding { line })?;
            match is_target[c] {
                Some(t) => raw_targets[t].push(text.to_owned()),
                None => {
                    let v = text
                        .parse::<f32>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| CsvError::NotANumber {
                            line,
                            column: header[c].to_owned(),
                            value: text.to_owned(),
                        })?;
                    features.push(v);
                }
            }
        }
        rows += 1;
    }
    let x = Array2::from_shape_vec((rows, width), features)
        .expect("every record has the header's width");
    let classify = match opts.task {
        Some(t) => t == Task::Classification,
        None => {
            let col = &raw_targets[0];
            let all_int = col.iter().all(|v| v.parse::<i64>().is_ok());
            let any_text = col.iter().any(|v| v.parse::<f64>().is_err());
            target_cols.len() == 1 && (all_int || any_text)
        }
    };
    if classify {
        if target_cols.len() != 1 {
            return Err(CsvError::OneLabelColumn);
        }
        let labels: Vec<Label> = raw_targets
            .pop()
            .unwrap_or_default()
            .into_iter()
            .map(|v| match v.parse::<i64>() {
                Ok(i) => Label::Int(i),
                Err(_) => Label::Str(v),
            })
            .collect();
        return Ok(Dataset::classification(x, &labels)?);
    }
    let mut y = Array2::<f32>::zeros((rows, target_cols.len()));
    for (t, values) in raw_targets.iter().enumerate() {
        for (r, v) in values.iter().enumerate() {
            y[[r, t]] = v
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| CsvError::NotANumber {
                    line: r as u64 + 2,
                    column: targets[t].clone(),
                    value: v.clone(),
                })?;
        }
    }
    Ok(Dataset::regression(x, y)?)
}

fn map_err(e: ::csv::Error, line: u64) -> CsvError {
    match e.into_kind() {
        ::csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => CsvError::FieldCount {
            line: pos.as_ref().map_or(line, |p| p.line()),
            expected: expected_len as usize,
            found: len as usize,
        },
        ::csv::ErrorKind::Utf8 { pos, .. } => CsvError::Encoding {
            line: pos.as_ref().map_or(line, |p| p.line()),
        },
        ::csv::ErrorKind::Io(io) => CsvError::Io(io),
        other => CsvError::Read(format!("{other:?}")),
    }
}
