//! OpenAPI schemas of `tabular`'s types, declared here so that `tabular` stays free of utoipa
//! (as `schemas` does for `nn`): a documentation twin per type, an exhaustive conversion that
//! stops compiling when a field is added to `tabular` without its schema, and a test that both
//! serialize alike.

#![allow(dead_code)] // the twins are documentation: never built outside the tests

use super::schemas::schema_of;
use crate::tabular;
use serde::Serialize;
use std::borrow::Cow;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{PartialSchema, ToSchema};

schema_of! {
    tabular::Task => Task, "Task";
    tabular::ColumnType => ColumnType, "ColumnType";
    tabular::LevelCount => LevelCount, "LevelCount";
    tabular::ColumnInfo => ColumnInfo, "ColumnInfo";
    tabular::Imputation => Imputation, "Imputation";
    tabular::Unknown => Unknown, "Unknown";
    tabular::Preprocessing => Preprocessing, "Preprocessing";
    tabular::Feature => Feature, "Feature";
    tabular::Signature => Signature, "Signature";
}

/// What a dataset's targets are, when the uploader said so; otherwise the model decides.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Regression,
    Classification,
}

/// A column's type.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Numeric,
    Categorical,
}

/// How many rows hold a level.
#[derive(Serialize, ToSchema)]
pub struct LevelCount {
    pub value: String,
    pub count: usize,
}

/// What a column holds, for people: its type, missing cells, and for categoricals the number of
/// levels and the most frequent ones; for numbers their range and mean.
#[derive(Serialize, ToSchema)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// Missing cells.
    pub missing: usize,
    /// Categorical: distinct values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels: Option<usize>,
    /// Categorical: the most frequent values (up to 5), most frequent first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<LevelCount>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
}

/// How numeric columns fill their missing cells.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Imputation {
    /// The mean of the training rows.
    Mean,
    /// The median of the training rows.
    Median,
    /// This value.
    Constant(f32),
}

/// What a categorical column does with a level it never saw in training.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    /// Encode it as all zeros (no level).
    Ignore,
    /// Refuse the row (422).
    Error,
}

/// How to preprocess a table's columns, learned on the training rows.
#[derive(Serialize, ToSchema)]
pub struct Preprocessing {
    /// Numeric columns' missing cells: `"mean"` (default), `"median"`, or `{"constant": x}`.
    pub impute: Imputation,
    /// Add a 0/1 column beside each numeric column that had missing cells in training.
    pub missing_indicator: bool,
    /// Levels seen in fewer training rows than this share one "other" slot (default 1: none).
    #[schema(minimum = 1)]
    pub min_frequency: usize,
    /// The most one-hot slots one categorical column may take (default 100); more is a 422
    /// naming the column (ignore it at upload, or raise this, or fold rare levels).
    #[schema(minimum = 1, maximum = 100000)]
    pub max_levels: usize,
    /// A level never seen in training: `"ignore"` (all zeros, default) or `"error"` (422).
    pub unknown: Unknown,
}

/// One input feature as the model sees it.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
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
        infrequent: Vec<String>,
        /// Whether training saw missing cells: then a last slot stands for "missing". Without
        /// it a missing cell is all zeros.
        missing_level: bool,
        /// A level in neither list.
        unknown: Unknown,
    },
}

/// A model's signature: its features in order with their preprocessing, and its target
/// columns' names.
#[derive(Serialize, ToSchema)]
pub struct Signature {
    pub features: Vec<Feature>,
    /// The target columns' names.
    pub targets: Vec<String>,
    /// Columns of the training data left out (`?ignore=`): accepted in a prediction and
    /// disregarded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
}

impl From<&tabular::Task> for Task {
    fn from(t: &tabular::Task) -> Self {
        match t {
            tabular::Task::Regression => Task::Regression,
            tabular::Task::Classification => Task::Classification,
        }
    }
}

impl From<&tabular::ColumnType> for ColumnType {
    fn from(t: &tabular::ColumnType) -> Self {
        match t {
            tabular::ColumnType::Numeric => ColumnType::Numeric,
            tabular::ColumnType::Categorical => ColumnType::Categorical,
        }
    }
}

impl From<&tabular::LevelCount> for LevelCount {
    fn from(l: &tabular::LevelCount) -> Self {
        let tabular::LevelCount { value, count } = l;
        LevelCount {
            value: value.clone(),
            count: *count,
        }
    }
}

impl From<&tabular::ColumnInfo> for ColumnInfo {
    fn from(c: &tabular::ColumnInfo) -> Self {
        let tabular::ColumnInfo {
            name,
            kind,
            missing,
            levels,
            top,
            min,
            max,
            mean,
        } = c;
        ColumnInfo {
            name: name.clone(),
            kind: kind.into(),
            missing: *missing,
            levels: *levels,
            top: top.as_ref().map(|t| t.iter().map(Into::into).collect()),
            min: *min,
            max: *max,
            mean: *mean,
        }
    }
}

impl From<&tabular::Imputation> for Imputation {
    fn from(i: &tabular::Imputation) -> Self {
        match i {
            tabular::Imputation::Mean => Imputation::Mean,
            tabular::Imputation::Median => Imputation::Median,
            tabular::Imputation::Constant(v) => Imputation::Constant(*v),
        }
    }
}

impl From<&tabular::Unknown> for Unknown {
    fn from(u: &tabular::Unknown) -> Self {
        match u {
            tabular::Unknown::Ignore => Unknown::Ignore,
            tabular::Unknown::Error => Unknown::Error,
        }
    }
}

impl From<&tabular::Preprocessing> for Preprocessing {
    fn from(p: &tabular::Preprocessing) -> Self {
        let tabular::Preprocessing {
            impute,
            missing_indicator,
            min_frequency,
            max_levels,
            unknown,
        } = p;
        Preprocessing {
            impute: impute.into(),
            missing_indicator: *missing_indicator,
            min_frequency: *min_frequency,
            max_levels: *max_levels,
            unknown: unknown.into(),
        }
    }
}

impl From<&tabular::Feature> for Feature {
    fn from(f: &tabular::Feature) -> Self {
        match f {
            tabular::Feature::Numeric {
                name,
                imputation,
                impute,
                indicator,
            } => Feature::Numeric {
                name: name.clone(),
                imputation: imputation.into(),
                impute: *impute,
                indicator: *indicator,
            },
            tabular::Feature::Categorical {
                name,
                levels,
                infrequent,
                missing_level,
                unknown,
            } => Feature::Categorical {
                name: name.clone(),
                levels: levels.clone(),
                infrequent: infrequent.clone(),
                missing_level: *missing_level,
                unknown: unknown.into(),
            },
        }
    }
}

impl From<&tabular::Signature> for Signature {
    fn from(s: &tabular::Signature) -> Self {
        let tabular::Signature {
            features,
            targets,
            ignored,
        } = s;
        Signature {
            features: features.iter().map(Into::into).collect(),
            targets: targets.clone(),
            ignored: ignored.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::to_value;

    fn same<N: Serialize, D: Serialize + for<'a> From<&'a N>>(v: &N) {
        assert_eq!(to_value(v).unwrap(), to_value(D::from(v)).unwrap());
    }

    #[test]
    fn twins_serialize_like_the_tabular_types() {
        let mut b = tabular::ColumnBuilder::new("c", None);
        let missing = tabular::MissingTokens::default();
        for t in ["a", "b", "", "a"] {
            b.push_text(t, &missing).unwrap();
        }
        let cat = b.finish();
        let mut b = tabular::ColumnBuilder::new("n", None);
        for t in ["1", "", "3", "4"] {
            b.push_text(t, &missing).unwrap();
        }
        let num = b.finish();
        same::<_, ColumnInfo>(&cat.info());
        same::<_, ColumnInfo>(&num.info());
        for t in [tabular::Task::Regression, tabular::Task::Classification] {
            same::<_, Task>(&t);
        }
        let opts = tabular::Preprocessing {
            impute: tabular::Imputation::Constant(2.5),
            missing_indicator: true,
            min_frequency: 2,
            ..tabular::Preprocessing::default()
        };
        same::<_, Preprocessing>(&opts);
        same::<_, Preprocessing>(&tabular::Preprocessing::default());
        let sig =
            tabular::Signature::fit(&[num, cat], vec!["y".into()], &[0, 1, 2, 3], &opts).unwrap();
        same::<_, Signature>(&sig);
    }
}
