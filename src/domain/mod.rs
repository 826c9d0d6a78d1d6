//! Parsed, validated input types: what the HTTP edge turns raw requests into before anything
//! else sees them.

pub mod csv;
pub mod name;

pub use name::ModelName;
