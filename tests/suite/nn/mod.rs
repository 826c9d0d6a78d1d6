//! Numerics: gradient checks, reference values from NumPy, seeded convergence on real data,
//! determinism and serialization.

mod convergence;
mod determinism;
mod gradcheck;
mod reference;

use mlpd::domain::csv::{CsvOptions, parse};
use mlpd::nn::{Dataset, Label};
use mlpd::tabular::Values;
use ndarray::Array2;

/// Loads one of the repo's datasets (`datasets/NAME.csv`, numeric features) with the given
/// target column: `progression` (diabetes) is a regression target, the others class labels.
pub fn load(name: &str, target: &str) -> Dataset {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("datasets")
        .join(format!("{name}.csv"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let table = parse(
        file,
        &CsvOptions {
            targets: vec![target.into()],
            ..Default::default()
        },
    )
    .expect("dataset parses");
    let rows = table.rows();
    let mut x = Array2::<f32>::zeros((rows, table.features().len()));
    for (j, c) in table.features().iter().enumerate() {
        let Values::Numeric(v) = &c.values else {
            panic!("{name}: column {} is not numeric", c.name)
        };
        x.column_mut(j)
            .assign(&ndarray::ArrayView1::from(v.as_slice()));
    }
    let t = &table.targets()[0];
    match (&t.values, target == "progression") {
        (Values::Numeric(v), true) => {
            let y = Array2::from_shape_vec((rows, 1), v.clone()).unwrap();
            Dataset::regression(x, y).unwrap()
        }
        (Values::Numeric(v), false) => {
            let labels: Vec<Label> = v.iter().map(|&l| Label::Int(l as i64)).collect();
            Dataset::classification(x, &labels).unwrap()
        }
        (Values::Categorical { levels, codes }, _) => {
            let labels: Vec<Label> = codes
                .iter()
                .map(|&c| Label::Str(levels[c as usize].clone()))
                .collect();
            Dataset::classification(x, &labels).unwrap()
        }
    }
}
