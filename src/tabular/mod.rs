//! Tables as they come: named columns that are numeric or categorical (text), with missing
//! cells; and the preprocessing learned from them ([`Signature`]: imputation, missing
//! indicators, one-hot levels, the unknown-level policy), fitted on the training rows, stored
//! with the version and applied at prediction.
//!
//! Pure and synchronous like `nn`: std, ndarray, serde and thiserror only, and `nn`'s data
//! types, which [`prepare`] produces (the OpenAPI schemas live in `api::schemas_tabular`). Parsing text formats (CSV, JSON) is the caller's job: it
//! feeds cells to a [`ColumnBuilder`], which infers the column's type.
//!
//! Invariants: a numeric column marks a missing cell with NaN and holds no other non-finite
//! value; a categorical column's codes index its levels or are [`MISSING`].

mod column;
mod encoder;
mod prepare;

pub use column::{
    Cell, CellError, Column, ColumnBuilder, ColumnInfo, ColumnType, LevelCount, MISSING,
    MissingTokens, Table, TableError, Task, Values, number_text,
};
pub use encoder::{
    EncodeError, Feature, FitError, Imputation, MAX_LEVELS, Preprocessing, Signature, Unknown,
};
pub use prepare::{Prepared, classifies, prepare, prepare_with, table_of};
