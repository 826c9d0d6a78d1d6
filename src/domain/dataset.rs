//! JSON datasets: records (`{records: [{"col": value, …}], target?}`, columns named and typed
//! as in a CSV), or matrices: `{name?, inputs: [[…]], targets: [[…]]}` for regression,
//! `{name?, inputs, labels: […]}` for classification.

use crate::error::ApiError;
use crate::nn::{Dataset, DatasetError, Label};
use crate::tabular::{Cell, Column, ColumnBuilder, ColumnType, MissingTokens, Table, Task};
use ndarray::Array2;
use serde::Deserialize;
use utoipa::ToSchema;

/// One column name or several.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Names {
    One(String),
    Many(Vec<String>),
}

/// A dataset given inline as JSON: `records` (with optional `target`, `categorical`,
/// `numeric`, `ignore`, `task`), or `inputs` with exactly one of `targets` and `labels`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetJson {
    /// A name for people (up to 128 characters).
    #[schema(max_length = 128)]
    pub name: Option<String>,
    /// Rows as objects, `{"column": value}`: numbers, strings, or null (missing). A field
    /// absent from a record is missing there.
    #[schema(min_items = 1, value_type = Option<Vec<Object>>)]
    pub records: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// Records: the target column(s) (default: the last field of the first record).
    pub target: Option<Names>,
    /// Records: columns to treat as categories whatever they hold.
    pub categorical: Option<Vec<String>>,
    /// Records: columns that must be numeric.
    pub numeric: Option<Vec<String>>,
    /// Records: columns to leave out.
    pub ignore: Option<Vec<String>>,
    /// Records: what the target is (default: as the model trained on it says).
    pub task: Option<Task>,
    /// Feature rows, all of one width.
    #[schema(min_items = 1, value_type = Option<Vec<Vec<crate::api::openapi::Float32>>>)]
    pub inputs: Option<Vec<Vec<f32>>>,
    /// Regression targets: one row per input row, all of one width.
    #[schema(value_type = Option<Vec<Vec<crate::api::openapi::Float32>>>)]
    pub targets: Option<Vec<Vec<f32>>>,
    /// Class labels, one per input row: all integers or all strings.
    pub labels: Option<Vec<Label>>,
}

/// Up to 128 printable characters.
pub fn check_name(name: &Option<String>) -> Result<(), ApiError> {
    match name {
        Some(n) if n.is_empty() || n.chars().count() > 128 || n.chars().any(char::is_control) => {
            Err(ApiError::invalid(
                "name",
                "must be 1–128 printable characters",
            ))
        }
        _ => Ok(()),
    }
}

/// Rows of equal width as a matrix.
///
/// # Errors
/// A 422 naming `field[row]` for an empty or ragged row, or the field for no rows.
pub fn matrix(rows: &[Vec<f32>], field: &str) -> Result<Array2<f32>, ApiError> {
    let width = rows.first().map_or(0, Vec::len);
    if rows.is_empty() {
        return Err(ApiError::invalid(field, "must hold at least one row"));
    }
    if width == 0 {
        return Err(ApiError::invalid(
            format!("{field}[0]"),
            "must hold at least one value",
        ));
    }
    let mut flat = Vec::with_capacity(rows.len() * width);
    for (i, r) in rows.iter().enumerate() {
        if r.len() != width {
            return Err(ApiError::invalid(
                format!("{field}[{i}]"),
                format!("has {} values but row 0 has {width}", r.len()),
            ));
        }
        if let Some(j) = r.iter().position(|v| !v.is_finite()) {
            return Err(ApiError::invalid(
                format!("{field}[{i}][{j}]"),
                "is not a finite number",
            ));
        }
        flat.extend_from_slice(r);
    }
    Ok(Array2::from_shape_vec((rows.len(), width), flat).expect("rows × width values"))
}

impl DatasetJson {
    /// # Errors
    /// A 422 naming the field at fault.
    pub fn into_table(self, max_cells: usize) -> Result<(Option<String>, Table), ApiError> {
        check_name(&self.name)?;
        if let Some(records) = self.records {
            let matrix_fields =
                self.inputs.is_some() || self.targets.is_some() || self.labels.is_some();
            if matrix_fields {
                return Err(ApiError::invalid(
                    "body",
                    "give `records`, or `inputs` with `targets` or `labels`, not both",
                ));
            }
            let opts = RecordOptions {
                target: match self.target {
                    None => Vec::new(),
                    Some(Names::One(t)) => vec![t],
                    Some(Names::Many(t)) => t,
                },
                categorical: self.categorical.unwrap_or_default(),
                numeric: self.numeric.unwrap_or_default(),
                ignore: self.ignore.unwrap_or_default(),
                task: self.task,
            };
            return Ok((self.name, records_table(&records, &opts, max_cells)?));
        }
        if self.target.is_some()
            || self.categorical.is_some()
            || self.numeric.is_some()
            || self.ignore.is_some()
            || self.task.is_some()
        {
            return Err(ApiError::invalid(
                "body",
                "`target`, `categorical`, `numeric`, `ignore` and `task` go with `records`",
            ));
        }
        let Some(inputs) = self.inputs else {
            return Err(ApiError::invalid(
                "body",
                "give `records`, or `inputs` with `targets` or `labels`",
            ));
        };
        let cells = inputs
            .len()
            .saturating_mul(inputs.first().map_or(0, Vec::len));
        if cells > max_cells {
            return Err(ApiError::invalid(
                "inputs",
                format!("exceeds the limit of {max_cells} cells"),
            ));
        }
        let x = matrix(&inputs, "inputs")?;
        drop(inputs);
        let data = match (self.targets, self.labels) {
            (Some(t), None) => {
                let y = matrix(&t, "targets")?;
                Dataset::regression(x, y).map_err(|e| data_error(e, "targets"))?
            }
            (None, Some(l)) => {
                if let Some(i) = l
                    .iter()
                    .position(|l| matches!(l, Label::Int(v) if v.unsigned_abs() > MAX_EXACT_INT))
                {
                    return Err(ApiError::invalid(
                        format!("labels[{i}]"),
                        format!("integer labels must lie within ±{MAX_EXACT_INT}"),
                    ));
                }
                Dataset::classification(x, &l).map_err(|e| data_error(e, "labels"))?
            }
            _ => {
                return Err(ApiError::invalid(
                    "body",
                    "give exactly one of `targets` (regression) and `labels` (classes)",
                ));
            }
        };
        Ok((self.name, crate::tabular::table_of(&data)))
    }
}

/// The largest integer label a numeric column holds exactly (2^24).
pub const MAX_EXACT_INT: u64 = 1 << 24;

/// How to read records.
#[derive(Debug, Default)]
pub struct RecordOptions {
    pub target: Vec<String>,
    pub categorical: Vec<String>,
    pub numeric: Vec<String>,
    pub ignore: Vec<String>,
    pub task: Option<Task>,
}

/// Records → a table: columns in the order their names first appear.
///
/// # Errors
/// A 422 naming the record and field at fault, or the option naming an unknown column.
pub fn records_table(
    records: &[serde_json::Map<String, serde_json::Value>],
    opts: &RecordOptions,
    max_cells: usize,
) -> Result<Table, ApiError> {
    if records.is_empty() {
        return Err(ApiError::invalid(
            "records",
            "must hold at least one record",
        ));
    }
    let mut names: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in records {
        for k in r.keys() {
            if seen.insert(k.as_str()) {
                names.push(k);
            }
        }
    }
    if records.len().saturating_mul(names.len()) > max_cells {
        return Err(ApiError::invalid(
            "records",
            format!("exceeds the limit of {max_cells} cells"),
        ));
    }
    let check = |field: &str, list: &[String]| -> Result<(), ApiError> {
        match list.iter().find(|n| !names.contains(&n.as_str())) {
            Some(n) => Err(ApiError::invalid(
                field,
                format!("no record has a field {n:?}"),
            )),
            None => Ok(()),
        }
    };
    check("target", &opts.target)?;
    check("categorical", &opts.categorical)?;
    check("numeric", &opts.numeric)?;
    check("ignore", &opts.ignore)?;
    let default_target = [names.last().map(|s| s.to_string()).unwrap_or_default()];
    let targets: &[String] = if opts.target.is_empty() {
        &default_target
    } else {
        &opts.target
    };
    if let Some(t) = targets.iter().find(|t| opts.ignore.contains(t)) {
        return Err(ApiError::invalid("ignore", format!("{t:?} is the target")));
    }
    let missing = MissingTokens::default();
    let mut features = Vec::new();
    let mut target_cols: Vec<Option<Column>> = vec![None; targets.len()];
    for name in names {
        if opts.ignore.iter().any(|n| n == name) {
            continue;
        }
        let is_target = targets.iter().position(|t| t == name);
        let cat = opts.categorical.iter().any(|n| n == name);
        let num = opts.numeric.iter().any(|n| n == name)
            || (is_target.is_some() && opts.task == Some(Task::Regression));
        if cat && num {
            return Err(ApiError::invalid(
                "categorical",
                format!("{name:?} cannot be both categorical and numeric"),
            ));
        }
        let forced = (cat || num).then_some(if cat {
            ColumnType::Categorical
        } else {
            ColumnType::Numeric
        });
        let mut b = ColumnBuilder::new(name, forced);
        for (i, r) in records.iter().enumerate() {
            let cell = json_cell(r.get(name), &missing).ok_or_else(|| {
                ApiError::invalid(
                    format!("records[{i}].{name}"),
                    "must be a number, a string, a boolean or null",
                )
            })?;
            b.push(cell)
                .map_err(|e| ApiError::invalid(format!("records[{i}].{name}"), e))?;
        }
        match is_target {
            Some(t) => target_cols[t] = Some(b.finish()),
            None => features.push(b.finish()),
        }
    }
    Table::new(
        features,
        target_cols.into_iter().flatten().collect(),
        opts.task,
    )
    .map(|t| t.with_ignored(opts.ignore.clone()))
    .map_err(|e| ApiError::invalid("records", e))
}

/// A JSON value as a cell (`None` for arrays and objects).
pub fn json_cell<'a>(
    v: Option<&'a serde_json::Value>,
    missing: &MissingTokens,
) -> Option<Cell<'a>> {
    use serde_json::Value;
    Some(match v {
        None | Some(Value::Null) => Cell::Missing,
        Some(Value::Number(n)) => Cell::Number(n.as_f64()?),
        Some(Value::String(s)) if missing.contains(s) => Cell::Missing,
        Some(Value::String(s)) => Cell::Text(s),
        Some(Value::Bool(b)) => Cell::Text(if *b { "true" } else { "false" }),
        Some(_) => return None,
    })
}

pub fn data_error(e: DatasetError, field: &str) -> ApiError {
    ApiError::invalid(field, e)
}
