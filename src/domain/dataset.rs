//! JSON datasets: `{name?, inputs: [[…]], targets: [[…]]}` for regression, or
//! `{name?, inputs, labels: […]}` for classification.

use crate::error::ApiError;
use crate::nn::{Dataset, DatasetError, Label};
use ndarray::Array2;
use serde::Deserialize;
use utoipa::ToSchema;

/// A dataset given inline as JSON. Exactly one of `targets` and `labels`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetJson {
    /// A name for people (up to 128 characters).
    #[schema(max_length = 128)]
    pub name: Option<String>,
    /// Feature rows, all of one width.
    #[schema(min_items = 1, value_type = Vec<Vec<crate::api::openapi::Float32>>)]
    pub inputs: Vec<Vec<f32>>,
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
    pub fn into_dataset(self, max_cells: usize) -> Result<(Option<String>, Dataset), ApiError> {
        check_name(&self.name)?;
        let cells = self
            .inputs
            .len()
            .saturating_mul(self.inputs.first().map_or(0, Vec::len));
        if cells > max_cells {
            return Err(ApiError::invalid(
                "inputs",
                format!("exceeds the limit of {max_cells} cells"),
            ));
        }
        let x = matrix(&self.inputs, "inputs")?;
        let data = match (self.targets, self.labels) {
            (Some(t), None) => {
                let y = matrix(&t, "targets")?;
                Dataset::regression(x, y).map_err(|e| data_error(e, "targets"))?
            }
            (None, Some(l)) => {
                Dataset::classification(x, &l).map_err(|e| data_error(e, "labels"))?
            }
            _ => {
                return Err(ApiError::invalid(
                    "body",
                    "give exactly one of `targets` (regression) and `labels` (classes)",
                ));
            }
        };
        Ok((self.name, data))
    }
}

pub fn data_error(e: DatasetError, field: &str) -> ApiError {
    ApiError::invalid(field, e)
}
