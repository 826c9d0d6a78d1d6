//! The architecture of a network: input width, ordered dense layers, cost.

use super::{Activation, Head, Loss};
use serde::{Deserialize, Serialize};

/// The most units a layer may have, and the most layers; guards against absurd requests.
pub const MAX_UNITS: usize = 1 << 16;
pub const MAX_LAYERS: usize = 64;
pub const MAX_INPUTS: usize = 1 << 20;

/// An invalid field of a request, named as the client wrote it (`layers[1].activation`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One dense layer: `units` outputs, each `activation(w·a + b)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// Output width of the layer.
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub units: usize,
    pub activation: Activation,
}

/// A multi-layer perceptron: input width, the layers in order (the last is the output), cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Number of input features.
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub inputs: usize,
    /// Dense layers in order; the last one is the output layer.
    pub layers: Vec<LayerSpec>,
    pub loss: Loss,
}

impl NetworkSpec {
    /// Checks every invariant the engine relies on.
    ///
    /// # Errors
    /// The first offending field: zero or too many units/layers/inputs, softmax on a hidden
    /// layer or on a single unit, cross-entropy on an output that is not softmax or sigmoid.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.inputs == 0 || self.inputs > MAX_INPUTS {
            return Err(FieldError::new(
                "inputs",
                format!("must be between 1 and {MAX_INPUTS}"),
            ));
        }
        if self.layers.is_empty() || self.layers.len() > MAX_LAYERS {
            return Err(FieldError::new(
                "layers",
                format!("must hold between 1 and {MAX_LAYERS} layers"),
            ));
        }
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            if layer.units == 0 || layer.units > MAX_UNITS {
                return Err(FieldError::new(
                    format!("layers[{i}].units"),
                    format!("must be between 1 and {MAX_UNITS}"),
                ));
            }
            if layer.activation == Activation::Softmax && i != last {
                return Err(FieldError::new(
                    format!("layers[{i}].activation"),
                    "softmax is allowed on the output layer only",
                ));
            }
            if layer.activation == Activation::Softmax && layer.units < 2 {
                return Err(FieldError::new(
                    format!("layers[{i}].units"),
                    "a softmax output needs at least 2 units",
                ));
            }
        }
        if Head::new(self.layers[last].activation, self.loss).is_none() {
            return Err(FieldError::new(
                "loss",
                "cross_entropy needs a softmax or sigmoid output layer",
            ));
        }
        Ok(())
    }

    /// The output layer and cost as one trainable head. Call on a validated spec.
    pub fn head(&self) -> Head {
        let out = self
            .layers
            .last()
            .map_or(Activation::Identity, |l| l.activation);
        Head::new(out, self.loss).unwrap_or(Head::Mse(out))
    }

    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.units)
    }

    pub fn output_activation(&self) -> Activation {
        self.layers
            .last()
            .map_or(Activation::Identity, |l| l.activation)
    }

    /// Number of trainable parameters (weights and biases).
    pub fn parameter_count(&self) -> usize {
        let mut fan_in = self.inputs;
        let mut total = 0usize;
        for l in &self.layers {
            total = total.saturating_add(fan_in.saturating_mul(l.units).saturating_add(l.units));
            fan_in = l.units;
        }
        total
    }
}
