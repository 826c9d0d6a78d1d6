//! What shapes a training run: [`TrainParams`] and [`EarlyStopping`], their defaults and limits,
//! and their validation (every field named as the client wrote it).

use crate::nn::spec::FieldError;
use crate::nn::{LrSchedule, Normalization, Optimizer};
use serde::{Deserialize, Serialize};

/// Stop when the monitored cost has not improved by `min_delta` for `patience` epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub patience: u32,
    /// The least decrease of the cost that counts as an improvement.
    #[serde(default)]
    pub min_delta: f64,
    /// Whether the trained model gets the weights of the best epoch (default true).
    #[serde(default = "yes")]
    pub restore_best: bool,
}

fn yes() -> bool {
    true
}

/// Everything that shapes a training run (but not how many threads compute it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub epochs: u32,
    pub learning_rate: f64,
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub lr_schedule: LrSchedule,
    /// L2 weight decay λ (weights only).
    pub l2: f64,
    /// Fraction of rows held out for validation (stratified by class for classifiers), in [0, 1).
    pub validation_split: f64,
    pub early_stopping: Option<EarlyStopping>,
    pub normalize: Normalization,
    /// Standardize regression targets (inverted at prediction). `None`: when the output is
    /// linear (identity) with the quadratic cost.
    pub normalize_targets: Option<bool>,
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub seed: u64,
    /// Stop after this many seconds of training (the model keeps the weights reached).
    pub max_seconds: Option<f64>,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            epochs: 20,
            learning_rate: 0.001,
            batch_size: 32,
            optimizer: Optimizer::adam(),
            lr_schedule: LrSchedule::Constant,
            l2: 0.0,
            validation_split: 0.0,
            early_stopping: None,
            normalize: Normalization::None,
            normalize_targets: None,
            seed: 0,
            max_seconds: None,
        }
    }
}

/// Limits on parameters, generous but finite.
pub const MAX_EPOCHS: u32 = 1_000_000;
pub const MAX_BATCH: usize = 1 << 20;

impl TrainParams {
    /// # Errors
    /// The first invalid field, named as in the request.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return Err(FieldError::new(
                "epochs",
                format!("must be between 1 and {MAX_EPOCHS}"),
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(FieldError::new(
                "learning_rate",
                "must be a positive number",
            ));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return Err(FieldError::new(
                "batch_size",
                format!("must be between 1 and {MAX_BATCH}"),
            ));
        }
        if !(self.l2 >= 0.0 && self.l2.is_finite()) {
            return Err(FieldError::new("l2", "must be a non-negative number"));
        }
        if !(0.0..1.0).contains(&self.validation_split) {
            return Err(FieldError::new("validation_split", "must be in [0, 1)"));
        }
        if let Some(es) = &self.early_stopping {
            if es.patience == 0 {
                return Err(FieldError::new(
                    "early_stopping.patience",
                    "must be at least 1",
                ));
            }
            if !(es.min_delta >= 0.0 && es.min_delta.is_finite()) {
                return Err(FieldError::new(
                    "early_stopping.min_delta",
                    "must be a non-negative number",
                ));
            }
        }
        if let Some(s) = self.max_seconds
            && !(s > 0.0 && s.is_finite())
        {
            return Err(FieldError::new("max_seconds", "must be a positive number"));
        }
        self.optimizer.validate()?;
        self.lr_schedule.validate()
    }
}
