//! What a run tells its caller: a report per epoch, the observer that sees them (and may cancel),
//! and how the run ended — a model ([`TrainOutcome`]) or why not ([`TrainError`]).

use crate::nn::TrainedModel;
use crate::nn::spec::FieldError;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;

/// What one epoch achieved. Costs are in the targets' own units (the quadratic cost of
/// standardized targets is reported back in the original scale).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: u32,
    /// Mean training cost over the epoch's mini-batches, each evaluated before its update.
    pub cost: f64,
    /// Cost on the validation rows with the end-of-epoch weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_cost: Option<f64>,
    /// Fraction of training rows classified right during the epoch (classifiers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    pub learning_rate: f64,
    /// Time since training started.
    pub elapsed_ms: u64,
}

/// Watches a run: sees every epoch report and may stop the run.
pub trait Observer {
    /// After each epoch. `Break` cancels the run.
    fn on_epoch(&mut self, _report: &EpochReport) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// Checked before every mini-batch; `true` cancels the run.
    fn should_stop(&self) -> bool {
        false
    }
}

/// An observer that watches nothing.
pub struct NoObserver;
impl Observer for NoObserver {}

impl<F: FnMut(&EpochReport) -> ControlFlow<()>> Observer for F {
    fn on_epoch(&mut self, report: &EpochReport) -> ControlFlow<()> {
        self(report)
    }
}

/// Why a successful run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Completed,
    EarlyStopped,
    TimeLimit,
}

/// A successful run.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub model: TrainedModel,
    pub history: Vec<EpochReport>,
    pub stop_reason: StopReason,
    /// The epoch whose weights the model holds.
    pub best_epoch: u32,
}

/// Why a run produced no model.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("training was canceled during epoch {epoch}")]
    Canceled { epoch: u32 },
    #[error(
        "training diverged: the cost became non-finite in epoch {epoch}; try a smaller learning rate or normalized inputs"
    )]
    Diverged { epoch: u32 },
}

/// The alias kept for parameter errors.
pub type ParamError = FieldError;
