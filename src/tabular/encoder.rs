//! The preprocessing a model learns from its training rows ([`Signature`]) and applies to every
//! row it later sees: numeric columns are imputed (mean, median or a constant; optionally with a
//! missing-indicator column), categorical columns are one-hot encoded over the levels seen in
//! training (rare levels folded into one "other" slot, a missing slot when training saw missing
//! cells, unseen levels all zeros or refused). Standardization comes after, in the model's own
//! input scaler.
//!
//! The encoded layout, feature by feature in signature order: numeric → `[value]` then
//! `[is_missing]` if it has an indicator; categorical → one slot per level (sorted), then
//! `other` if any level was folded, then `missing` if training saw missing cells.

use super::column::{Cell, Column, MISSING, Values, canonical_number, number_text};
use crate::nn::FieldError;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// How numeric columns fill their missing cells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Imputation {
    /// The mean of the training rows.
    #[default]
    Mean,
    /// The median of the training rows.
    Median,
    /// This value.
    Constant(f32),
}

/// What a categorical column does with a level it never saw in training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    /// Encode it as all zeros (no level).
    #[default]
    Ignore,
    /// Refuse the row (422).
    Error,
}

/// How to preprocess a table's columns, learned on the training rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Preprocessing {
    /// Numeric columns' missing cells: `"mean"` (default), `"median"`, or `{"constant": x}`.
    pub impute: Imputation,
    /// Add a 0/1 column beside each numeric column that had missing cells in training.
    pub missing_indicator: bool,
    /// Levels seen in fewer training rows than this share one "other" slot (default 1: none).
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub min_frequency: usize,
    /// The most one-hot slots one categorical column may take (default 100); more is a 422
    /// naming the column (ignore it at upload, or raise this, or fold rare levels).
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub max_levels: usize,
    /// A level never seen in training: `"ignore"` (all zeros, default) or `"error"` (422).
    pub unknown: Unknown,
}

/// The largest `max_levels` accepted.
pub const MAX_LEVELS: usize = 100_000;

impl Default for Preprocessing {
    fn default() -> Self {
        Preprocessing {
            impute: Imputation::Mean,
            missing_indicator: false,
            min_frequency: 1,
            max_levels: 100,
            unknown: Unknown::Ignore,
        }
    }
}

impl Preprocessing {
    /// # Errors
    /// The field at fault and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.min_frequency == 0 {
            return Err(("min_frequency", "must be at least 1".into()));
        }
        if self.max_levels == 0 || self.max_levels > MAX_LEVELS {
            return Err(("max_levels", format!("must be between 1 and {MAX_LEVELS}")));
        }
        if let Imputation::Constant(v) = self.impute
            && !v.is_finite()
        {
            return Err(("impute.constant", "must be a finite number".into()));
        }
        Ok(())
    }
}

/// One input feature as the model sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Feature {
    Numeric {
        name: String,
        /// How the fill value was learned.
        imputation: Imputation,
        /// The value a missing cell becomes.
        impute: f32,
        /// Whether a 0/1 missing-indicator column follows the value.
        indicator: bool,
    },
    Categorical {
        name: String,
        /// One one-hot slot each, in this (sorted) order.
        levels: Vec<String>,
        /// Levels seen in training but rarer than `min_frequency`: they share one "other" slot
        /// after the levels.
        #[serde(default)]
        infrequent: Vec<String>,
        /// Whether training saw missing cells: then a last slot stands for "missing". Without
        /// it a missing cell is all zeros.
        missing_level: bool,
        /// A level in neither list.
        unknown: Unknown,
    },
}

impl Feature {
    pub fn name(&self) -> &str {
        match self {
            Feature::Numeric { name, .. } | Feature::Categorical { name, .. } => name,
        }
    }

    /// Encoded columns.
    pub fn width(&self) -> usize {
        match self {
            Feature::Numeric { indicator, .. } => 1 + usize::from(*indicator),
            Feature::Categorical {
                levels,
                infrequent,
                missing_level,
                ..
            } => levels.len() + usize::from(!infrequent.is_empty()) + usize::from(*missing_level),
        }
    }

    /// Names of the encoded columns (`cut=Ideal`, `age:missing`, …).
    pub fn column_names(&self) -> Vec<String> {
        match self {
            Feature::Numeric {
                name, indicator, ..
            } => {
                let mut v = vec![name.clone()];
                if *indicator {
                    v.push(format!("{name}:missing"));
                }
                v
            }
            Feature::Categorical {
                name,
                levels,
                infrequent,
                missing_level,
                ..
            } => {
                let mut v: Vec<String> = levels.iter().map(|l| format!("{name}={l}")).collect();
                if !infrequent.is_empty() {
                    v.push(format!("{name}:other"));
                }
                if *missing_level {
                    v.push(format!("{name}:missing"));
                }
                v
            }
        }
    }
}

/// A model's signature: its features in order with their preprocessing, and its target
/// columns' names. Round-trips through serde exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub features: Vec<Feature>,
    /// The target columns' names.
    pub targets: Vec<String>,
    /// Columns of the training data left out of the features (`?ignore=` at upload): a
    /// prediction may carry them (a row as it came), and they are disregarded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
}

/// Why preprocessing could not be learned.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("column {0:?} has no value in the training rows")]
    NoValues(String),
    #[error(
        "column {column:?} has {levels} levels, more than max_levels ({max}): ignore it at upload \
         (?ignore={column}), fold rare levels (min_frequency) or raise max_levels"
    )]
    TooManyLevels {
        column: String,
        levels: usize,
        max: usize,
    },
}

/// Why a cell cannot be encoded. `feature` indexes the signature's features.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("{value:?} is text but the feature is numeric")]
    TextInNumeric { feature: usize, value: String },
    #[error("{value} is out of range for a 32-bit float")]
    OutOfRange { feature: usize, value: f64 },
    #[error(
        "{value:?} is a level the model never saw in training (it was trained with unknown: \"error\")"
    )]
    UnknownLevel { feature: usize, value: String },
}

impl EncodeError {
    pub fn feature(&self) -> usize {
        match self {
            EncodeError::TextInNumeric { feature, .. }
            | EncodeError::OutOfRange { feature, .. }
            | EncodeError::UnknownLevel { feature, .. } => *feature,
        }
    }
}

impl Signature {
    /// Learns the preprocessing of `columns` from the rows `rows`.
    ///
    /// # Errors
    /// A column with no value in those rows, or with more one-hot slots than allowed.
    pub fn fit(
        columns: &[Column],
        targets: Vec<String>,
        rows: &[usize],
        opts: &Preprocessing,
    ) -> Result<Signature, FitError> {
        let mut features = Vec::with_capacity(columns.len());
        for c in columns {
            features.push(match &c.values {
                Values::Numeric(v) => {
                    let mut seen: Vec<f32> =
                        rows.iter().map(|&r| v[r]).filter(|x| !x.is_nan()).collect();
                    if seen.is_empty() {
                        return Err(FitError::NoValues(c.name.clone()));
                    }
                    let impute = match opts.impute {
                        Imputation::Constant(k) => k,
                        Imputation::Mean => {
                            (seen.iter().map(|&x| f64::from(x)).sum::<f64>() / seen.len() as f64)
                                as f32
                        }
                        Imputation::Median => {
                            seen.sort_by(f32::total_cmp);
                            let n = seen.len();
                            if n % 2 == 1 {
                                seen[n / 2]
                            } else {
                                ((f64::from(seen[n / 2 - 1]) + f64::from(seen[n / 2])) / 2.0) as f32
                            }
                        }
                    };
                    Feature::Numeric {
                        name: c.name.clone(),
                        imputation: opts.impute,
                        impute,
                        indicator: opts.missing_indicator && seen.len() < rows.len(),
                    }
                }
                Values::Categorical { levels, codes } => {
                    let mut counts = vec![0usize; levels.len()];
                    let mut missing = 0usize;
                    for &r in rows {
                        match counts.get_mut(codes[r] as usize) {
                            Some(k) => *k += 1,
                            None => missing += 1,
                        }
                    }
                    let mut kept = Vec::new();
                    let mut infrequent = Vec::new();
                    for (level, &n) in levels.iter().zip(&counts) {
                        if n >= opts.min_frequency {
                            kept.push(level.clone());
                        } else if n > 0 {
                            infrequent.push(level.clone());
                        }
                    }
                    if kept.is_empty() && infrequent.is_empty() {
                        return Err(FitError::NoValues(c.name.clone()));
                    }
                    kept.sort();
                    infrequent.sort();
                    let f = Feature::Categorical {
                        name: c.name.clone(),
                        levels: kept,
                        infrequent,
                        missing_level: missing > 0,
                        unknown: opts.unknown,
                    };
                    if f.width() > opts.max_levels {
                        return Err(FitError::TooManyLevels {
                            column: c.name.clone(),
                            levels: f.width(),
                            max: opts.max_levels,
                        });
                    }
                    f
                }
            });
        }
        Ok(Signature {
            features,
            targets,
            ignored: Vec::new(),
        })
    }

    /// The network's input width.
    pub fn width(&self) -> usize {
        self.features.iter().map(Feature::width).sum()
    }

    /// Whether every feature is numeric without an indicator (raw rows are encoded rows).
    pub fn is_identity(&self) -> bool {
        self.features.iter().all(|f| {
            matches!(
                f,
                Feature::Numeric {
                    indicator: false,
                    ..
                }
            )
        })
    }

    /// Whether a field of this name in a prediction is disregarded: a target or an ignored
    /// column of the training data.
    pub fn disregards(&self, name: &str) -> bool {
        self.targets.iter().any(|t| t == name) || self.ignored.iter().any(|t| t == name)
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.features.iter().position(|f| f.name() == name)
    }

    /// Encodes one row: `cell(k)` gives feature `k`'s cell; `out` has [`Signature::width`]
    /// values.
    ///
    /// # Errors
    /// Text for a numeric feature, a number beyond f32, an unseen level refused by its feature.
    pub fn encode_row<'a>(
        &self,
        mut cell: impl FnMut(usize) -> Cell<'a>,
        out: &mut [f32],
    ) -> Result<(), EncodeError> {
        let mut at = 0;
        for (k, f) in self.features.iter().enumerate() {
            let w = f.width();
            let slots = &mut out[at..at + w];
            at += w;
            match f {
                Feature::Numeric {
                    impute, indicator, ..
                } => {
                    let (v, missing) = match cell(k) {
                        Cell::Missing => (*impute, true),
                        Cell::Number(x) => {
                            #[allow(clippy::cast_possible_truncation)]
                            let y = x as f32;
                            if !y.is_finite() {
                                return Err(EncodeError::OutOfRange {
                                    feature: k,
                                    value: x,
                                });
                            }
                            (y, false)
                        }
                        Cell::Text(t) => {
                            return Err(EncodeError::TextInNumeric {
                                feature: k,
                                value: t.to_owned(),
                            });
                        }
                    };
                    slots[0] = v;
                    if *indicator {
                        slots[1] = f32::from(u8::from(missing));
                    }
                }
                Feature::Categorical {
                    levels,
                    infrequent,
                    missing_level,
                    unknown,
                    ..
                } => {
                    slots.fill(0.0);
                    let owned;
                    let text = match cell(k) {
                        Cell::Missing => {
                            if *missing_level {
                                slots[w - 1] = 1.0;
                            }
                            continue;
                        }
                        Cell::Number(x) => {
                            owned = number_text(x);
                            owned.as_str()
                        }
                        Cell::Text(t) => t,
                    };
                    // A number's spelling may differ from its level's (`1.50` for `1.5`, as a
                    // column that turned categorical by inference stores numbers): the exact
                    // text first, then the number's canonical text.
                    let find = |t: &str| {
                        if let Ok(i) = levels.binary_search_by(|l| l.as_str().cmp(t)) {
                            Some(i)
                        } else if infrequent.binary_search_by(|l| l.as_str().cmp(t)).is_ok() {
                            Some(levels.len())
                        } else {
                            None
                        }
                    };
                    let slot = find(text).or_else(|| canonical_number(text).and_then(|c| find(&c)));
                    if let Some(i) = slot {
                        slots[i] = 1.0;
                    } else if *unknown == Unknown::Error {
                        return Err(EncodeError::UnknownLevel {
                            feature: k,
                            value: text.to_owned(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Encodes the rows `rows` of a table whose feature columns hold this signature's features
    /// by name, in any order, of any inferred type (extra columns are ignored): cell by cell, as
    /// a predict record is.
    ///
    /// # Errors
    /// A [`FieldError`] on `dataset`: a feature column missing, or a cell that cannot be
    /// encoded (naming the row, 1-based, and the column).
    pub fn encode_by_name(
        &self,
        columns: &[Column],
        rows: &[usize],
    ) -> Result<Array2<f32>, FieldError> {
        let found = self
            .features
            .iter()
            .map(|f| {
                columns.iter().find(|c| c.name == f.name()).ok_or_else(|| {
                    let names: Vec<&str> = self.features.iter().map(Feature::name).collect();
                    FieldError::new(
                        "dataset",
                        format!(
                            "has no column {:?}, a feature of the model (its features: {})",
                            f.name(),
                            names.join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<&Column>, _>>()?;
        let mut x = Array2::<f32>::zeros((rows.len(), self.width()));
        for (i, &r) in rows.iter().enumerate() {
            let mut row = x.row_mut(i);
            let out = row
                .as_slice_mut()
                .expect("rows of a fresh matrix are contiguous");
            self.encode_row(|k| cell_of(found[k], r), out)
                .map_err(|e| {
                    FieldError::new(
                        "dataset",
                        format!(
                            "row {}, column {:?}: {e}",
                            r + 1,
                            self.features[e.feature()].name()
                        ),
                    )
                })?;
        }
        Ok(x)
    }

    /// Encodes the rows `rows` of `columns` (the columns the signature was fitted on, in its
    /// order) into the network's input matrix.
    pub fn encode_columns(&self, columns: &[Column], rows: &[usize]) -> Array2<f32> {
        // Per categorical column: each code's slot within the feature (None: all zeros).
        let slot_of: Vec<Option<Vec<Option<usize>>>> = self
            .features
            .iter()
            .zip(columns)
            .map(|(f, c)| match (f, &c.values) {
                (
                    Feature::Categorical {
                        levels: kept,
                        infrequent,
                        ..
                    },
                    Values::Categorical { levels, .. },
                ) => Some(
                    levels
                        .iter()
                        .map(|l| {
                            kept.binary_search(l)
                                .ok()
                                .or_else(|| infrequent.binary_search(l).ok().map(|_| kept.len()))
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        let width = self.width();
        let mut x = Array2::<f32>::zeros((rows.len(), width));
        let mut at = 0;
        for ((f, c), slots) in self.features.iter().zip(columns).zip(&slot_of) {
            let w = f.width();
            match (f, &c.values) {
                (
                    Feature::Numeric {
                        impute, indicator, ..
                    },
                    Values::Numeric(v),
                ) => {
                    for (i, &r) in rows.iter().enumerate() {
                        let value = v[r];
                        if value.is_nan() {
                            x[[i, at]] = *impute;
                            if *indicator {
                                x[[i, at + 1]] = 1.0;
                            }
                        } else {
                            x[[i, at]] = value;
                        }
                    }
                }
                (Feature::Categorical { missing_level, .. }, Values::Categorical { codes, .. }) => {
                    let slots = slots.as_ref().expect("categorical slots");
                    for (i, &r) in rows.iter().enumerate() {
                        let code = codes[r];
                        if code == MISSING {
                            if *missing_level {
                                x[[i, at + w - 1]] = 1.0;
                            }
                        } else if let Some(s) = slots[code as usize] {
                            x[[i, at + s]] = 1.0;
                        }
                    }
                }
                _ => unreachable!("the signature was fitted on these columns"),
            }
            at += w;
        }
        x
    }
}

/// Row `row` of `column` as a cell.
fn cell_of(column: &Column, row: usize) -> Cell<'_> {
    match &column.values {
        Values::Numeric(v) if v[row].is_nan() => Cell::Missing,
        Values::Numeric(v) => Cell::Number(f64::from(v[row])),
        Values::Categorical { codes, .. } if codes[row] == MISSING => Cell::Missing,
        Values::Categorical { levels, codes } => Cell::Text(&levels[codes[row] as usize]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tabular::{ColumnBuilder, MissingTokens};

    fn column(name: &str, cells: &[&str]) -> Column {
        let mut b = ColumnBuilder::new(name, None);
        for c in cells {
            b.push_text(c, &MissingTokens::default()).unwrap();
        }
        b.finish()
    }

    fn table() -> Vec<Column> {
        vec![
            column("sqft", &["850", "", "1200", "1000", "NA"]),
            column("district", &["gangnam", "mapo", "gangnam", "", "jongno"]),
        ]
    }

    #[test]
    fn fits_on_the_given_rows_and_encodes_columns_and_cells_alike() {
        let opts = Preprocessing {
            missing_indicator: true,
            min_frequency: 2,
            ..Preprocessing::default()
        };
        // Row 4 is held out: its level "jongno" and its missing sqft are not seen in training.
        let sig = Signature::fit(&table(), vec!["price".into()], &[0, 1, 2, 3], &opts).unwrap();
        assert_eq!(
            sig.features[0],
            Feature::Numeric {
                name: "sqft".into(),
                imputation: Imputation::Mean,
                impute: (850.0 + 1200.0 + 1000.0) / 3.0,
                indicator: true
            }
        );
        assert_eq!(
            sig.features[1],
            Feature::Categorical {
                name: "district".into(),
                levels: vec!["gangnam".into()],
                infrequent: vec!["mapo".into()],
                missing_level: true,
                unknown: Unknown::Ignore
            }
        );
        assert_eq!(sig.width(), 2 + 3);
        assert_eq!(
            sig.features[1].column_names(),
            ["district=gangnam", "district:other", "district:missing"]
        );
        let x = sig.encode_columns(&table(), &[0, 1, 2, 3, 4]);
        let m = (850.0 + 1200.0 + 1000.0) / 3.0;
        assert_eq!(x.row(0).to_vec(), vec![850.0, 0.0, 1.0, 0.0, 0.0]);
        assert_eq!(x.row(1).to_vec(), vec![m, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(x.row(3).to_vec(), vec![1000.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(
            x.row(4).to_vec(),
            vec![m, 1.0, 0.0, 0.0, 0.0],
            "unseen level: zeros"
        );
        // The same rows, cell by cell.
        let cells: [[Cell; 2]; 5] = [
            [Cell::Number(850.0), Cell::Text("gangnam")],
            [Cell::Missing, Cell::Text("mapo")],
            [Cell::Number(1200.0), Cell::Text("gangnam")],
            [Cell::Number(1000.0), Cell::Missing],
            [Cell::Missing, Cell::Text("jongno")],
        ];
        let mut out = vec![0f32; sig.width()];
        for (r, row) in cells.iter().enumerate() {
            sig.encode_row(|k| row[k], &mut out).unwrap();
            assert_eq!(out, x.row(r).to_vec(), "row {r}");
        }
        assert!(matches!(
            sig.encode_row(|k| [Cell::Text("x"), Cell::Missing][k], &mut out),
            Err(EncodeError::TextInNumeric { feature: 0, .. })
        ));
    }

    #[test]
    fn a_number_finds_its_level_whatever_its_spelling() {
        // "zone" turned categorical at its third cell: 2.50 and 10 became levels "2.5", "10".
        let cols = [column("zone", &["2.50", "10", "north", "2.5"])];
        let opts = Preprocessing {
            unknown: Unknown::Error,
            ..Preprocessing::default()
        };
        let sig = Signature::fit(&cols, vec![], &[0, 1, 2, 3], &opts).unwrap();
        assert_eq!(
            sig.features[0].column_names(),
            ["zone=10", "zone=2.5", "zone=north"]
        );
        let mut out = vec![0f32; 3];
        for cell in [Cell::Text("2.50"), Cell::Text("2.5"), Cell::Number(2.5)] {
            sig.encode_row(|_| cell, &mut out).unwrap();
            assert_eq!(out, [0.0, 1.0, 0.0], "{cell:?}");
        }
        for cell in [Cell::Text("10.0"), Cell::Number(10.0), Cell::Text("1e1")] {
            sig.encode_row(|_| cell, &mut out).unwrap();
            assert_eq!(out, [1.0, 0.0, 0.0], "{cell:?}");
        }
        assert!(sig.encode_row(|_| Cell::Text("2.6"), &mut out).is_err());
    }

    #[test]
    fn unknown_error_refuses_unseen_levels_and_the_cap_names_the_column() {
        let opts = Preprocessing {
            unknown: Unknown::Error,
            impute: Imputation::Median,
            ..Preprocessing::default()
        };
        let sig = Signature::fit(&table(), vec![], &[0, 1, 2, 3], &opts).unwrap();
        let Feature::Numeric { impute, .. } = sig.features[0] else {
            panic!()
        };
        assert_eq!(impute, 1000.0, "median of 850, 1000, 1200");
        let mut out = vec![0f32; sig.width()];
        let err = sig
            .encode_row(|k| [Cell::Number(1.0), Cell::Text("jongno")][k], &mut out)
            .unwrap_err();
        assert_eq!(err.feature(), 1);
        let capped = Preprocessing {
            max_levels: 2,
            ..Preprocessing::default()
        };
        assert_eq!(
            Signature::fit(&table(), vec![], &[0, 1, 2, 3, 4], &capped),
            Err(FitError::TooManyLevels {
                column: "district".into(),
                levels: 4,
                max: 2
            })
        );
        assert_eq!(
            Signature::fit(&table(), vec![], &[1, 4], &Preprocessing::default()),
            Err(FitError::NoValues("sqft".into()))
        );
    }

    #[test]
    fn signatures_round_trip_through_serde_exactly() {
        let opts = Preprocessing {
            missing_indicator: true,
            min_frequency: 2,
            impute: Imputation::Constant(-1.5),
            ..Preprocessing::default()
        };
        let sig = Signature::fit(&table(), vec!["price".into()], &[0, 1, 2, 3, 4], &opts).unwrap();
        let text = serde_json::to_string(&sig).unwrap();
        let back: Signature = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sig);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["features"][0]["type"], "numeric");
        assert_eq!(
            v["features"][0]["imputation"],
            serde_json::json!({"constant": -1.5})
        );
        assert_eq!(v["features"][1]["levels"], serde_json::json!(["gangnam"]));
        let p: Preprocessing =
            serde_json::from_str(r#"{"impute": "median", "unknown": "error"}"#).unwrap();
        assert_eq!(
            (p.impute, p.unknown, p.max_levels),
            (Imputation::Median, Unknown::Error, 100)
        );
    }
}
