//! A table becomes training data for one model: the task follows the model (a softmax or
//! sigmoid output learns class labels, any other output numbers), rows whose target is missing
//! are left out (and counted), and the preprocessing is fitted on exactly the rows the trainer
//! will train on — the same seeded validation split it makes.

use super::Table;
use super::column::{Column, Task, Values};
use super::encoder::{FitError, Preprocessing, Signature};
use crate::nn::{
    Activation, Dataset, FieldError, Label, LabelSet, NetworkSpec, Targets, TrainParams,
};
use ndarray::Array2;

/// Training data ready for [`crate::nn::train`], and what produced it.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub data: Dataset,
    pub signature: Signature,
    /// Rows with every target present.
    pub rows_used: usize,
    /// Rows left out because a target was missing.
    pub rows_skipped: usize,
}

/// Whether a model of `spec` learns `table`'s targets as class labels: as the uploader said,
/// else when it has a softmax or sigmoid output and the table one target column.
pub fn classifies(table: &Table, spec: &NetworkSpec) -> bool {
    match table.task() {
        Some(Task::Classification) => true,
        Some(Task::Regression) => false,
        None => {
            table.targets().len() == 1
                && matches!(
                    spec.output_activation(),
                    Activation::Softmax | Activation::Sigmoid
                )
        }
    }
}

/// Builds the training data of `table` for a model of `spec` trained with `params`.
///
/// # Errors
/// A [`FieldError`] on `dataset` (or the preprocessing field at fault): targets the model
/// cannot learn (text for a numeric output, fractions for a classifier), no row with a target,
/// a feature with no value in the training rows, too many levels.
pub fn prepare(
    table: &Table,
    spec: &NetworkSpec,
    params: &TrainParams,
    opts: &Preprocessing,
) -> Result<Prepared, FieldError> {
    prepare_with(table, spec, params, opts, None)
}

/// [`prepare`], with the features encoded by `fixed` (a parent version's signature, found in
/// the table by name) instead of a signature fitted on the training rows, when given.
///
/// # Errors
/// As [`prepare`], and a feature of `fixed` missing from the table or a cell it cannot encode.
pub fn prepare_with(
    table: &Table,
    spec: &NetworkSpec,
    params: &TrainParams,
    opts: &Preprocessing,
    fixed: Option<&Signature>,
) -> Result<Prepared, FieldError> {
    let targets = table.targets();
    let kept: Vec<usize> = (0..table.rows())
        .filter(|&r| targets.iter().all(|t| !t.values.is_missing(r)))
        .collect();
    let rows_skipped = table.rows() - kept.len();
    if kept.is_empty() {
        return Err(FieldError::new(
            "dataset",
            "no row has a value in every target column",
        ));
    }
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let classify = classifies(table, spec);
    let fit = |train: &[usize]| {
        if let Some(sig) = fixed {
            let mut sig = sig.clone();
            sig.targets.clone_from(&names);
            return Ok(sig);
        }
        let train: Vec<usize> = train.iter().map(|&i| kept[i]).collect();
        Signature::fit(table.features(), names.clone(), &train, opts)
            .map(|mut s| {
                s.ignored = table.ignored().to_vec();
                s
            })
            .map_err(|e| match e {
                FitError::TooManyLevels { .. } => {
                    FieldError::new("preprocessing.max_levels", e.to_string())
                }
                FitError::NoValues(_) => FieldError::new("dataset", e.to_string()),
            })
    };
    let encode = |sig: &Signature| match fixed {
        Some(_) => sig.encode_by_name(table.features(), &kept),
        None => Ok(sig.encode_columns(table.features(), &kept)),
    };
    let (signature, data) = if classify {
        let [target] = targets else {
            return Err(FieldError::new(
                "dataset",
                format!(
                    "has {} target columns; a classifier learns one (or name the task with ?task=regression)",
                    targets.len()
                ),
            ));
        };
        let labels = labels(target, &kept, spec)?;
        let (set, indices) =
            LabelSet::encode(&labels).map_err(|e| FieldError::new("dataset", e.to_string()))?;
        let (train, _) = crate::nn::holdout_rows(
            Some((&indices, set.len())),
            kept.len(),
            params.validation_split,
            params.seed,
        );
        let signature = fit(&train)?;
        let x = encode(&signature)?;
        let data = Dataset::classification(x, &labels).map_err(|e| {
            FieldError::new("dataset", format!("target column {:?}: {e}", target.name))
        })?;
        (signature, data)
    } else {
        let mut y = Array2::<f32>::zeros((kept.len(), targets.len()));
        for (j, t) in targets.iter().enumerate() {
            let Values::Numeric(v) = &t.values else {
                return Err(FieldError::new(
                    "dataset",
                    format!(
                        "the target column {:?} holds text, but a model with a {} output predicts numbers: \
                         give it a softmax output with cross_entropy to learn classes",
                        t.name,
                        activation_name(spec.output_activation())
                    ),
                ));
            };
            for (i, &r) in kept.iter().enumerate() {
                y[[i, j]] = v[r];
            }
        }
        let (train, _) =
            crate::nn::holdout_rows(None, kept.len(), params.validation_split, params.seed);
        let signature = fit(&train)?;
        let x = encode(&signature)?;
        let data =
            Dataset::regression(x, y).map_err(|e| FieldError::new("dataset", e.to_string()))?;
        (signature, data)
    };
    Ok(Prepared {
        data,
        signature,
        rows_used: kept.len(),
        rows_skipped,
    })
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Identity => "identity",
        Activation::Sigmoid => "sigmoid",
        Activation::Tanh => "tanh",
        Activation::Relu => "relu",
        Activation::LeakyRelu => "leaky_relu",
        Activation::Softmax => "softmax",
    }
}

/// Class labels of the rows `rows`: text levels, or integers.
fn labels(target: &Column, rows: &[usize], spec: &NetworkSpec) -> Result<Vec<Label>, FieldError> {
    match &target.values {
        Values::Categorical { levels, codes } => Ok(rows
            .iter()
            .map(|&r| Label::Str(levels[codes[r] as usize].clone()))
            .collect()),
        Values::Numeric(v) => rows
            .iter()
            .map(|&r| {
                let x = f64::from(v[r]);
                if x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15 {
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(Label::Int(x as i64))
                } else {
                    Err(FieldError::new(
                        "dataset",
                        format!(
                            "the target column {:?} holds {x}, not a class label, but a model with a {} output learns classes: \
                             give it an identity output with mse to predict numbers",
                            target.name,
                            activation_name(spec.output_activation())
                        ),
                    ))
                }
            })
            .collect(),
    }
}

/// A numeric matrix dataset as a table: features `x1…`, targets `y1…` (regression) or `label`
/// (classes: integers stay numbers, text becomes a categorical column); its task as given.
pub fn table_of(data: &Dataset) -> Table {
    let x = data.features();
    let features = (0..x.ncols())
        .map(|j| Column {
            name: format!("x{}", j + 1),
            values: Values::Numeric(x.column(j).to_vec()),
        })
        .collect();
    let (targets, task) = match data.targets() {
        Targets::Values(y) => (
            (0..y.ncols())
                .map(|j| Column {
                    name: format!("y{}", j + 1),
                    values: Values::Numeric(y.column(j).to_vec()),
                })
                .collect(),
            Task::Regression,
        ),
        Targets::Classes { labels, indices } => {
            let values = match labels {
                #[allow(clippy::cast_precision_loss)]
                LabelSet::Int(set) => {
                    Values::Numeric(indices.iter().map(|&i| set[i as usize] as f32).collect())
                }
                LabelSet::Str(set) => Values::Categorical {
                    levels: set.clone(),
                    codes: indices.clone(),
                },
            };
            (
                vec![Column {
                    name: "label".into(),
                    values,
                }],
                Task::Classification,
            )
        }
    };
    Table::new(features, targets, Some(task)).expect("a checked dataset is a valid table")
}
