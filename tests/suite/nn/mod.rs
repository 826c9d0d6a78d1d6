//! Numerics: gradient checks, reference values from NumPy, seeded convergence on real data,
//! determinism and serialization.

mod convergence;
mod determinism;
mod gradcheck;
mod reference;

use mlpd::domain::csv::{CsvOptions, parse};
use mlpd::nn::Dataset;

/// Loads one of the repo's datasets (`datasets/NAME.csv`) with the given target column.
pub fn load(name: &str, target: &str) -> Dataset {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("datasets")
        .join(format!("{name}.csv"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(
        file,
        &CsvOptions {
            targets: vec![target.into()],
            ..Default::default()
        },
    )
    .expect("dataset parses")
}
