//! A trained model: everything prediction needs, in one serializable value.

use super::spec::FieldError;
use super::train::argmax;
use super::{Activation, Label, LabelSet, Network, NetworkSpec, Scaler};
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

/// The version of the [`TrainedModel`] document; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// Spec, weights, input scaling, target scaling and class labels. Round-trips through serde
/// exactly (f32 values are written in their shortest exact form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainedModel {
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub format_version: u32,
    pub spec: NetworkSpec,
    pub network: Network<f32>,
    pub input_scaler: Scaler,
    /// Present when regression targets were standardized: predictions are mapped back.
    pub target_scaler: Option<Scaler>,
    /// Present for classifiers: output unit k stands for `labels[k]`.
    pub labels: Option<LabelSet>,
}

/// Why a prediction or an imported model was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("row {row} has {got} values but the model takes {want} inputs")]
    Width { row: usize, got: usize, want: usize },
    #[error("row {row}, column {column} is not a finite number")]
    NotFinite { row: usize, column: usize },
    #[error(
        "row {row} overflows the network: its outputs are not finite numbers (values far beyond \
         the range the model was trained on)"
    )]
    Overflow { row: usize },
    #[error("{0}")]
    Invalid(#[from] FieldError),
}

/// Outputs for each row and, for classifiers, each row's predicted label.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub outputs: Array2<f32>,
    pub labels: Option<Vec<Label>>,
}

impl TrainedModel {
    pub fn new(
        spec: NetworkSpec,
        network: Network<f32>,
        input_scaler: Scaler,
        target_scaler: Option<Scaler>,
        labels: Option<LabelSet>,
    ) -> Self {
        TrainedModel {
            format_version: FORMAT_VERSION,
            spec,
            network,
            input_scaler,
            target_scaler,
            labels,
        }
    }

    /// Checks a model that came from outside (an import): format, spec, and that weights,
    /// scalers and labels agree with the spec.
    ///
    /// # Errors
    /// The first inconsistency.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.format_version != FORMAT_VERSION {
            return Err(FieldError::new(
                "format_version",
                format!(
                    "is {} but this server reads version {FORMAT_VERSION}",
                    self.format_version
                ),
            )
            .into());
        }
        self.spec.validate()?;
        let layers = self.network.layers();
        let same = layers.len() == self.spec.layers.len()
            && self.network.inputs() == self.spec.inputs
            && layers
                .iter()
                .zip(&self.spec.layers)
                .all(|(l, s)| l.units() == s.units && l.activation == s.activation);
        if !same {
            return Err(FieldError::new("network", "does not match spec").into());
        }
        let finite = |s: &Scaler| s.shift.iter().chain(&s.scale).all(|v| v.is_finite());
        if self.input_scaler.width() != self.spec.inputs
            || self.input_scaler.scale.len() != self.spec.inputs
            || !finite(&self.input_scaler)
        {
            return Err(FieldError::new(
                "input_scaler",
                "must hold one finite shift and scale per input",
            )
            .into());
        }
        if let Some(t) = &self.target_scaler
            && (t.width() != self.spec.outputs()
                || t.scale.len() != t.width()
                || !finite(t)
                || t.scale.contains(&0.0))
        {
            return Err(FieldError::new(
                "target_scaler",
                "must hold one finite shift and non-zero scale per output",
            )
            .into());
        }
        if let Some(l) = &self.labels {
            let outputs = self.spec.outputs();
            let ok = l.len() == outputs
                || (outputs == 1
                    && l.len() == 2
                    && self.spec.output_activation() == Activation::Sigmoid);
            if !ok || l.len() < 2 {
                return Err(
                    FieldError::new("labels", "must name one class per output unit").into(),
                );
            }
        }
        Ok(())
    }

    pub fn inputs(&self) -> usize {
        self.spec.inputs
    }

    /// Predicts every row of `x`: [`TrainedModel::check_inputs`], [`TrainedModel::forward`],
    /// [`TrainedModel::finish`]. Each row's answer depends on that row alone, bit for bit, so
    /// rows of many requests may be computed in one pass and split back.
    ///
    /// # Errors
    /// A row of the wrong width or with a non-finite value, or outputs that overflow.
    pub fn predict(&self, x: ArrayView2<f32>) -> Result<Prediction, ModelError> {
        self.check_inputs(x)?;
        self.finish(self.forward(x))
    }

    /// Whether every row of `x` can be predicted: the model's width, finite values.
    ///
    /// # Errors
    /// The first offending row (and column).
    pub fn check_inputs(&self, x: ArrayView2<f32>) -> Result<(), ModelError> {
        if x.ncols() != self.inputs() {
            return Err(ModelError::Width {
                row: 0,
                got: x.ncols(),
                want: self.inputs(),
            });
        }
        for (row, r) in x.rows().into_iter().enumerate() {
            if let Some(column) = r.iter().position(|v| !v.is_finite()) {
                return Err(ModelError::NotFinite { row, column });
            }
        }
        Ok(())
    }

    /// The output layer's activations for checked rows (input scaling applied), each row
    /// computed independently of the others (see `nn::infer`).
    pub fn forward(&self, x: ArrayView2<f32>) -> Array2<f32> {
        if self.input_scaler.is_identity() {
            self.network.predict_rows(x)
        } else {
            self.network
                .predict_rows(self.input_scaler.transform(x).view())
        }
    }

    /// Turns [`TrainedModel::forward`]'s outputs into the prediction: regression targets back in
    /// their own units, classifiers' labels.
    ///
    /// # Errors
    /// The first row whose outputs are not finite.
    pub fn finish(&self, mut outputs: Array2<f32>) -> Result<Prediction, ModelError> {
        if let Some(t) = &self.target_scaler {
            t.invert(&mut outputs);
        }
        if let Some(row) = outputs
            .rows()
            .into_iter()
            .position(|r| r.iter().any(|v| !v.is_finite()))
        {
            return Err(ModelError::Overflow { row });
        }
        let labels = self.labels.as_ref().map(|set| {
            outputs
                .rows()
                .into_iter()
                .map(|row| {
                    let k = if row.len() == 1 {
                        usize::from(row[0] >= 0.5)
                    } else {
                        argmax(row)
                    };
                    set.get(k).expect("labels match outputs (validated)")
                })
                .collect()
        });
        Ok(Prediction { outputs, labels })
    }
}
