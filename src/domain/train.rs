//! Training requests: every parameter optional but the data, each checked before anything runs.

use super::dataset::DatasetJson;
use crate::error::ApiError;
use crate::nn::{EarlyStopping, LrSchedule, Normalization, Optimizer, TrainParams};
use crate::tabular::Preprocessing;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// An optimizer by name with its defaults, or with its options.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OptimizerInput {
    Name(OptimizerName),
    Full(Optimizer),
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerName {
    Sgd,
    Momentum,
    Adam,
}

impl OptimizerInput {
    fn resolve(self) -> Optimizer {
        match self {
            OptimizerInput::Name(OptimizerName::Sgd) => Optimizer::Sgd,
            OptimizerInput::Name(OptimizerName::Momentum) => Optimizer::momentum(0.9, false),
            OptimizerInput::Name(OptimizerName::Adam) => Optimizer::adam(),
            OptimizerInput::Full(o) => o,
        }
    }
}

/// `POST /v1/models/{name}/train`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// An uploaded dataset. Give this or `dataset`.
    pub dataset_id: Option<Uuid>,
    /// A dataset inline. Give this or `dataset_id`.
    pub dataset: Option<DatasetJson>,
    /// Passes over the training rows (default 20).
    #[schema(minimum = 1, maximum = 1000000)]
    #[serde(default, deserialize_with = "crate::nn::integral::optional")]
    pub epochs: Option<u32>,
    /// Step size (default: 0.1 for sgd, 0.01 for momentum, 0.001 for adam).
    #[schema(exclusive_minimum = 0.0)]
    pub learning_rate: Option<f64>,
    /// Rows per mini-batch (default 32; 1 = per sample; ≥ rows = full batch).
    #[schema(minimum = 1, maximum = 1048576)]
    #[serde(default, deserialize_with = "crate::nn::integral::optional")]
    pub batch_size: Option<usize>,
    /// `"sgd"`, `"momentum"`, `"adam"` (default), or an object with options.
    pub optimizer: Option<OptimizerInput>,
    pub lr_schedule: Option<LrSchedule>,
    /// L2 weight decay (default 0).
    #[schema(minimum = 0.0)]
    pub l2: Option<f64>,
    /// Fraction of rows held out to validate each epoch, in [0, 1) (default 0).
    #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
    pub validation_split: Option<f64>,
    pub early_stopping: Option<EarlyStopping>,
    /// Input scaling fitted on the training rows (default `standard`).
    pub normalize: Option<Normalization>,
    /// Standardize regression targets (default: for linear outputs with the quadratic cost).
    pub normalize_targets: Option<bool>,
    /// Seed for initialisation, split and shuffling (default 0): same seed, same result.
    #[schema(minimum = 0)]
    #[serde(default, deserialize_with = "crate::nn::integral::optional")]
    pub seed: Option<u64>,
    /// Stop after this many seconds; the model keeps the weights reached.
    #[schema(exclusive_minimum = 0.0)]
    pub max_seconds: Option<f64>,
    /// How columns become the network's inputs (imputation, one-hot levels), learned on the
    /// training rows and stored with the version.
    pub preprocessing: Option<Preprocessing>,
    /// Start from this version's weights instead of a fresh initialisation (a warm start): the
    /// same architecture and classes, the version's feature encoding and scaling reused, the
    /// optimizer state fresh. The new version records it as its parent.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "crate::nn::integral::optional")]
    pub init_from_version: Option<u32>,
    /// With `init_from_version`: fit the input (and target) scaling on the new training rows
    /// instead of reusing the version's (default false).
    pub refit_scaling: Option<bool>,
}

/// Where a job's data comes from.
pub enum DataSource {
    Stored(Uuid),
    Inline(Box<DatasetJson>),
}

impl TrainRequest {
    /// The warm start asked for: (version, refit its scaling).
    ///
    /// # Errors
    /// A 422 on `refit_scaling` given without `init_from_version`.
    pub fn warm_start(&self) -> Result<Option<(u32, bool)>, ApiError> {
        match (self.init_from_version, self.refit_scaling) {
            (Some(v), refit) => Ok(Some((v, refit.unwrap_or(false)))),
            (None, Some(_)) => Err(ApiError::invalid(
                "refit_scaling",
                "applies only to a warm start: give `init_from_version` too",
            )),
            (None, None) => Ok(None),
        }
    }

    /// The checked parameters and the data source.
    ///
    /// # Errors
    /// A 422 naming the first invalid field.
    pub fn into_parts(self) -> Result<(TrainParams, DataSource, Preprocessing), ApiError> {
        let prep = self.preprocessing.unwrap_or_default();
        prep.validate()
            .map_err(|(f, m)| ApiError::invalid(format!("preprocessing.{f}"), m))?;
        let source = match (self.dataset_id, self.dataset) {
            (Some(id), None) => DataSource::Stored(id),
            (None, Some(d)) => DataSource::Inline(Box::new(d)),
            _ => {
                return Err(ApiError::invalid(
                    "dataset_id",
                    "give exactly one of `dataset_id` and `dataset`",
                ));
            }
        };
        let optimizer = self
            .optimizer
            .map_or_else(Optimizer::adam, OptimizerInput::resolve);
        let default_lr = match optimizer {
            Optimizer::Sgd => 0.1,
            Optimizer::Momentum { .. } => 0.01,
            Optimizer::Adam { .. } => 0.001,
        };
        let d = TrainParams::default();
        let params = TrainParams {
            epochs: self.epochs.unwrap_or(d.epochs),
            learning_rate: self.learning_rate.unwrap_or(default_lr),
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            optimizer,
            lr_schedule: self.lr_schedule.unwrap_or_default(),
            l2: self.l2.unwrap_or(0.0),
            validation_split: self.validation_split.unwrap_or(0.0),
            early_stopping: self.early_stopping,
            normalize: self.normalize.unwrap_or(Normalization::Standard),
            normalize_targets: self.normalize_targets,
            seed: self.seed.unwrap_or(0),
            max_seconds: self.max_seconds,
        };
        params.validate()?;
        Ok((params, source, prep))
    }
}
