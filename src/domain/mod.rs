//! Parsed, validated input types: what the HTTP edge turns raw requests into before anything
//! else sees them.

pub mod csv;
pub mod dataset;
pub mod json_matrix;
pub mod name;
pub mod sweep;
pub mod train;

pub use name::ModelName;
