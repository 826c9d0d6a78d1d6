//! Scoring a trained version on a table: its features are found by name and encoded with the
//! version's signature (imputation and one-hot exactly as at predict), the forward pass runs in
//! chunks (memory stays bounded by the chunk, not the table), and the answers are scored
//! against the table's target columns ([`crate::scoring`]). Pure and synchronous: callers run
//! it on a blocking thread.

use crate::nn::{Activation, FieldError, Label, ModelError, Prediction};
use crate::records::VersionRecord;
use crate::scoring::{self as metrics, Scores};
use crate::tabular::{Column, Table, Values, number_text};
use ndarray::Array2;

/// Rows encoded and predicted at a time.
const CHUNK_ROWS: usize = 4096;

/// The scores and the rows they cover.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluated {
    /// Rows scored (every target present).
    pub rows: usize,
    /// Rows left out because a target was missing.
    pub rows_skipped: usize,
    pub scores: Scores,
}

/// Scores `version` on every row of `table` whose targets are all present.
///
/// # Errors
/// A [`FieldError`] on `dataset` naming the column (or row) that does not fit the version: a
/// feature column missing from the table, text in a numeric feature, an unseen level the model
/// refuses, a class the model never learned, a target of the wrong kind or count, no usable row.
pub fn evaluate(version: &VersionRecord, table: &Table) -> Result<Evaluated, FieldError> {
    let model = &version.trained;
    let targets = table.targets();
    let kept: Vec<usize> = (0..table.rows())
        .filter(|&r| targets.iter().all(|t| !t.values.is_missing(r)))
        .collect();
    if kept.is_empty() {
        return Err(invalid("no row has a value in every target column"));
    }
    let classifier = model.labels.is_some();
    if classifier && targets.len() != 1 {
        return Err(invalid(format!(
            "has {} target columns; a classifier is scored on one",
            targets.len()
        )));
    }
    if !classifier && targets.len() != model.spec.outputs() {
        return Err(invalid(format!(
            "has {} target columns but the model predicts {}",
            targets.len(),
            model.spec.outputs()
        )));
    }
    let mut outputs = Array2::<f32>::zeros((kept.len(), model.spec.outputs()));
    let mut predicted = Vec::with_capacity(kept.len());
    for (c, rows) in kept.chunks(CHUNK_ROWS).enumerate() {
        let x = encode(version, table, rows)?;
        let Prediction {
            outputs: out,
            labels,
        } = model.predict(x.view()).map_err(|e| match e {
            ModelError::Overflow { row } => invalid(format!(
                "row {}: the model's outputs are not finite numbers for it",
                rows[row] + 1
            )),
            other => invalid(other.to_string()),
        })?;
        outputs
            .slice_mut(ndarray::s![c * CHUNK_ROWS..c * CHUNK_ROWS + rows.len(), ..])
            .assign(&out);
        predicted.extend(labels.unwrap_or_default());
    }
    let scores = if let Some(set) = &model.labels {
        let names: Vec<String> = set.to_vec().iter().map(ToString::to_string).collect();
        let index = |l: &Label| names.iter().position(|n| *n == l.to_string());
        let truth = class_labels(&targets[0], &kept)?
            .iter()
            .map(|l| {
                index(l).ok_or_else(|| {
                    invalid(format!(
                        "the target column {:?} holds the class {l}, which the model never \
                         learned (its classes: {})",
                        targets[0].name,
                        names.join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let predicted: Vec<usize> = predicted
            .iter()
            .map(|l| index(l).expect("the model predicts its own labels"))
            .collect();
        let probabilities = probabilities(version, &outputs);
        Scores::Classification(metrics::classification(
            &names,
            &truth,
            &predicted,
            probabilities.as_deref(),
        ))
    } else {
        let mut scored = Vec::with_capacity(targets.len());
        for (j, t) in targets.iter().enumerate() {
            let Values::Numeric(v) = &t.values else {
                return Err(invalid(format!(
                    "the target column {:?} holds text, but the model predicts numbers",
                    t.name
                )));
            };
            let truth: Vec<f64> = kept.iter().map(|&r| f64::from(v[r])).collect();
            let pred: Vec<f64> = outputs.column(j).iter().map(|&p| f64::from(p)).collect();
            scored.push(metrics::regression(&t.name, &truth, &pred, &kept));
        }
        Scores::Regression { targets: scored }
    };
    Ok(Evaluated {
        rows: kept.len(),
        rows_skipped: table.rows() - kept.len(),
        scores,
    })
}

fn invalid(message: impl Into<String>) -> FieldError {
    FieldError::new("dataset", message)
}

/// The network's input rows for the table rows `rows`: by name through the signature, or, for
/// a version trained before signatures, the table's features in order, all numeric.
fn encode(
    version: &VersionRecord,
    table: &Table,
    rows: &[usize],
) -> Result<Array2<f32>, FieldError> {
    if let Some(sig) = &version.signature {
        return sig.encode_by_name(table.features(), rows);
    }
    let features = table.features();
    let want = version.trained.inputs();
    if features.len() != want {
        return Err(invalid(format!(
            "has {} feature columns but the model takes {want} inputs",
            features.len()
        )));
    }
    let mut x = Array2::<f32>::zeros((rows.len(), want));
    for (j, c) in features.iter().enumerate() {
        let Values::Numeric(v) = &c.values else {
            return Err(invalid(format!(
                "column {:?} holds text, but this version takes numbers",
                c.name
            )));
        };
        for (i, &r) in rows.iter().enumerate() {
            if v[r].is_nan() {
                return Err(invalid(format!(
                    "row {}, column {:?} is missing, and this version (trained before \
                     models knew their features) cannot impute it",
                    r + 1,
                    c.name
                )));
            }
            x[[i, j]] = v[r];
        }
    }
    Ok(x)
}

/// The class label of each of `rows`: a text level, or an integer.
fn class_labels(target: &Column, rows: &[usize]) -> Result<Vec<Label>, FieldError> {
    rows.iter()
        .map(|&r| match &target.values {
            Values::Categorical { levels, codes } => {
                Ok(Label::Str(levels[codes[r] as usize].clone()))
            }
            Values::Numeric(v) => {
                let x = f64::from(v[r]);
                if x.fract() == 0.0 {
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(Label::Int(x as i64))
                } else {
                    Err(invalid(format!(
                        "row {}: the target column {:?} holds {}, not a class label",
                        r + 1,
                        target.name,
                        number_text(x)
                    )))
                }
            }
        })
        .collect()
}

/// Each row's class probabilities, when the outputs are probabilities: a softmax's, or one
/// sigmoid unit's `[1 − p, p]`.
fn probabilities(version: &VersionRecord, outputs: &Array2<f32>) -> Option<Vec<Vec<f64>>> {
    let act = version.trained.spec.output_activation();
    let rows = outputs.rows().into_iter();
    match (act, outputs.ncols()) {
        (Activation::Sigmoid, 1) => Some(
            rows.map(|r| {
                let p = f64::from(r[0]);
                vec![1.0 - p, p]
            })
            .collect(),
        ),
        (Activation::Softmax, _) => Some(
            rows.map(|r| r.iter().map(|&p| f64::from(p)).collect())
                .collect(),
        ),
        _ => None,
    }
}
