//! Whether a dataset fits a network: widths, class counts and target ranges, and how its
//! targets become the output layer's target rows ([`Encoding`]).

use crate::nn::spec::FieldError;
use crate::nn::{Activation, Dataset, NetworkSpec, Targets};

use super::TrainParams;

/// How class or value targets become rows of the output layer's target matrix.
#[derive(Clone, Copy)]
pub(super) enum Encoding {
    Values,
    OneHot,
    /// Two classes, one sigmoid unit: class 1 ↔ output 1.
    Binary,
}

/// Whether `data` can train a network of `spec` with `params`, without training.
///
/// # Errors
/// The mismatch: feature width, target width or class count, targets outside [0, 1] for
/// cross-entropy.
pub fn check_data(
    spec: &NetworkSpec,
    data: &Dataset,
    params: &TrainParams,
) -> Result<(), FieldError> {
    check_fit(spec, data, params).map(|_| ())
}

pub(super) fn check_fit(
    spec: &NetworkSpec,
    data: &Dataset,
    params: &TrainParams,
) -> Result<Encoding, FieldError> {
    if data.input_width() != spec.inputs {
        return Err(FieldError::new(
            "dataset",
            format!(
                "has {} feature columns but the model takes {} inputs",
                data.input_width(),
                spec.inputs
            ),
        ));
    }
    let outputs = spec.outputs();
    let head = spec.head();
    match data.targets() {
        Targets::Values(y) => {
            if y.ncols() != outputs {
                return Err(FieldError::new(
                    "dataset",
                    format!(
                        "has {} target columns but the model has {} outputs",
                        y.ncols(),
                        outputs
                    ),
                ));
            }
            if head.needs_z() && y.iter().any(|&v| !(0.0..=1.0).contains(&v)) {
                return Err(FieldError::new(
                    "dataset",
                    "cross_entropy needs targets in [0, 1]",
                ));
            }
            if params.normalize_targets == Some(true) && head.needs_z() {
                return Err(FieldError::new(
                    "normalize_targets",
                    "cannot standardize targets of a cross_entropy model",
                ));
            }
            Ok(Encoding::Values)
        }
        Targets::Classes { labels, .. } => {
            let k = labels.len();
            if outputs == k {
                Ok(Encoding::OneHot)
            } else if outputs == 1 && k == 2 && spec.output_activation() == Activation::Sigmoid {
                Ok(Encoding::Binary)
            } else {
                Err(FieldError::new(
                    "dataset",
                    format!(
                        "has {k} classes but the model has {outputs} outputs (use {k} outputs, or 1 sigmoid output for 2 classes)"
                    ),
                ))
            }
        }
    }
}
