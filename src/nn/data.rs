//! Training data as the engine receives it: a finite feature matrix and either target values
//! (regression, multi-label) or class labels (one index per row into a sorted label set).

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// A class label as the client wrote it: an integer or a string. As in JSON Schema, a number
/// with no fractional part (`3.0`) is an integer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum Label {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Label;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Label, E> {
                Ok(Label::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Label, E> {
                i64::try_from(v)
                    .map(Label::Int)
                    .map_err(|_| E::custom("an integer label must fit in 64 bits"))
            }
            #[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Label, E> {
                // 2^63 is exactly representable; anything in [-2^63, 2^63) converts exactly.
                let i = v as i64;
                if v.fract() == 0.0 && v >= -(2f64.powi(63)) && v < 2f64.powi(63) && i as f64 == v {
                    Ok(Label::Int(i))
                } else {
                    Err(E::custom("a numeric label must be an integer"))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Label, E> {
                Ok(Label::Str(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Label, E> {
                Ok(Label::Str(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Int(i) => write!(f, "{i}"),
            Label::Str(s) => f.write_str(s),
        }
    }
}

/// The classes of a classifier in their stable order (ascending), all of one type. Output unit
/// `k` of a trained classifier stands for class `k` of this set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "values", rename_all = "snake_case")]
pub enum LabelSet {
    Int(Vec<i64>),
    Str(Vec<String>),
}

impl LabelSet {
    /// The sorted distinct labels and, for each input label, its index in that order.
    ///
    /// # Errors
    /// When integer and string labels are mixed.
    pub fn encode(labels: &[Label]) -> Result<(LabelSet, Vec<u32>), DatasetError> {
        let ints = labels.iter().filter(|l| matches!(l, Label::Int(_))).count();
        if ints != 0 && ints != labels.len() {
            return Err(DatasetError::MixedLabels);
        }
        let distinct: Vec<Label> = labels
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let index = |l: &Label| distinct.binary_search(l).expect("label is in the set") as u32;
        let indices = labels.iter().map(index).collect();
        let set = if ints != 0 {
            LabelSet::Int(
                distinct
                    .iter()
                    .filter_map(|l| {
                        if let Label::Int(i) = l {
                            Some(*i)
                        } else {
                            None
                        }
                    })
                    .collect(),
            )
        } else {
            LabelSet::Str(
                distinct
                    .into_iter()
                    .filter_map(|l| if let Label::Str(s) = l { Some(s) } else { None })
                    .collect(),
            )
        };
        Ok((set, indices))
    }

    pub fn len(&self) -> usize {
        match self {
            LabelSet::Int(v) => v.len(),
            LabelSet::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The label of class `k`.
    pub fn get(&self, k: usize) -> Option<Label> {
        match self {
            LabelSet::Int(v) => v.get(k).map(|&i| Label::Int(i)),
            LabelSet::Str(v) => v.get(k).map(|s| Label::Str(s.clone())),
        }
    }

    pub fn to_vec(&self) -> Vec<Label> {
        (0..self.len()).filter_map(|k| self.get(k)).collect()
    }
}

/// What the network learns to produce.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// One row of target values per sample (regression, or multi-label 0/1 targets).
    Values(Array2<f32>),
    /// One class per sample: `indices[i]` indexes `labels`.
    Classes { labels: LabelSet, indices: Vec<u32> },
}

/// Why data cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DatasetError {
    #[error("the dataset has no rows")]
    Empty,
    #[error("the dataset has no feature columns")]
    NoFeatures,
    #[error("there are {features} feature rows but {targets} target rows")]
    RowCount { features: usize, targets: usize },
    #[error("the dataset has no target columns")]
    NoTargets,
    #[error("row {row}, column {column} is not a finite number")]
    NotFinite { row: usize, column: usize },
    #[error("labels mix integers and strings")]
    MixedLabels,
    #[error("classification needs at least 2 distinct labels")]
    OneClass,
}

/// Features and targets, checked: at least one row and column, equal row counts, every value
/// finite, labels of one type with at least two classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    features: Array2<f32>,
    targets: Targets,
}

impl Dataset {
    /// # Errors
    /// See [`DatasetError`].
    pub fn regression(features: Array2<f32>, targets: Array2<f32>) -> Result<Self, DatasetError> {
        check_features(&features)?;
        if targets.nrows() != features.nrows() {
            return Err(DatasetError::RowCount {
                features: features.nrows(),
                targets: targets.nrows(),
            });
        }
        if targets.ncols() == 0 {
            return Err(DatasetError::NoTargets);
        }
        check_finite(&targets)?;
        Ok(Dataset {
            features,
            targets: Targets::Values(targets),
        })
    }

    /// # Errors
    /// See [`DatasetError`].
    pub fn classification(features: Array2<f32>, labels: &[Label]) -> Result<Self, DatasetError> {
        check_features(&features)?;
        if labels.len() != features.nrows() {
            return Err(DatasetError::RowCount {
                features: features.nrows(),
                targets: labels.len(),
            });
        }
        let (labels, indices) = LabelSet::encode(labels)?;
        if labels.len() < 2 {
            return Err(DatasetError::OneClass);
        }
        Ok(Dataset {
            features,
            targets: Targets::Classes { labels, indices },
        })
    }

    /// A dataset rebuilt from its parts (as [`Dataset::features`] and [`Dataset::targets`] gave
    /// them), under the same checks.
    ///
    /// # Errors
    /// See [`DatasetError`]; a class index outside the label set is [`DatasetError::RowCount`].
    pub fn from_parts(features: Array2<f32>, targets: Targets) -> Result<Self, DatasetError> {
        check_features(&features)?;
        let rows = match &targets {
            Targets::Values(y) => {
                if y.ncols() == 0 {
                    return Err(DatasetError::NoTargets);
                }
                check_finite(y)?;
                y.nrows()
            }
            Targets::Classes { labels, indices } => {
                if labels.len() < 2 {
                    return Err(DatasetError::OneClass);
                }
                if indices.iter().any(|&i| i as usize >= labels.len()) {
                    return Err(DatasetError::RowCount {
                        features: features.nrows(),
                        targets: 0,
                    });
                }
                indices.len()
            }
        };
        if rows != features.nrows() {
            return Err(DatasetError::RowCount {
                features: features.nrows(),
                targets: rows,
            });
        }
        Ok(Dataset { features, targets })
    }

    pub fn features(&self) -> &Array2<f32> {
        &self.features
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    pub fn rows(&self) -> usize {
        self.features.nrows()
    }

    pub fn input_width(&self) -> usize {
        self.features.ncols()
    }

    /// The class set of a classification dataset.
    pub fn labels(&self) -> Option<&LabelSet> {
        match &self.targets {
            Targets::Classes { labels, .. } => Some(labels),
            Targets::Values(_) => None,
        }
    }

    /// Target columns of a regression dataset.
    pub fn target_width(&self) -> Option<usize> {
        match &self.targets {
            Targets::Values(y) => Some(y.ncols()),
            Targets::Classes { .. } => None,
        }
    }
}

fn check_features(x: &Array2<f32>) -> Result<(), DatasetError> {
    if x.nrows() == 0 {
        return Err(DatasetError::Empty);
    }
    if x.ncols() == 0 {
        return Err(DatasetError::NoFeatures);
    }
    check_finite(x)
}

fn check_finite(x: &Array2<f32>) -> Result<(), DatasetError> {
    for (row, r) in x.rows().into_iter().enumerate() {
        if let Some(column) = r.iter().position(|v| !v.is_finite()) {
            return Err(DatasetError::NotFinite { row, column });
        }
    }
    Ok(())
}

impl Dataset {
    /// The rows `rows` (in that order) as a new dataset with the same label set.
    pub fn subset(&self, rows: &[usize]) -> Dataset {
        let features = self.features.select(ndarray::Axis(0), rows);
        let targets = match &self.targets {
            Targets::Values(y) => Targets::Values(y.select(ndarray::Axis(0), rows)),
            Targets::Classes { labels, indices } => Targets::Classes {
                labels: labels.clone(),
                indices: rows.iter().map(|&r| indices[r]).collect(),
            },
        };
        Dataset { features, targets }
    }
}
