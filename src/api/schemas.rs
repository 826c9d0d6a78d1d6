//! OpenAPI schemas of the engine's types, declared here so that `nn` stays free of utoipa.
//!
//! Each `nn` type that appears in the API gets a documentation twin below: the same fields, the
//! same serde attributes and the same doc comments (they become the schema's descriptions),
//! plus the bounds the spec states. [`schema_of!`] makes the `nn` type's `ToSchema` the twin's,
//! under the `nn` type's name, so handlers and views keep using the engine's types directly.
//!
//! Drift is caught twice: every twin has a conversion from its `nn` type written as an
//! exhaustive destructuring (a field or variant added to `nn` does not compile here until its
//! schema is declared), and a test serializes sample values of both and requires the same JSON.

#![allow(dead_code)] // the twins are documentation: never built outside the tests

use crate::nn;
use serde::Serialize;
use std::borrow::Cow;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{PartialSchema, ToSchema};

/// `impl ToSchema for $nn` as the schema of `$doc`, named after the `nn` type.
macro_rules! schema_of {
    ($($nn:ty => $doc:ty, $name:literal;)*) => {$(
        impl PartialSchema for $nn {
            fn schema() -> RefOr<Schema> {
                <$doc as PartialSchema>::schema()
            }
        }
        impl ToSchema for $nn {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                <$doc as ToSchema>::schemas(schemas)
            }
        }
    )*};
}
pub(crate) use schema_of;

schema_of! {
    nn::Activation => Activation, "Activation";
    nn::Loss => Loss, "Loss";
    nn::LayerSpec => LayerSpec, "LayerSpec";
    nn::NetworkSpec => NetworkSpec, "NetworkSpec";
    nn::Normalization => Normalization, "Normalization";
    nn::Scaler => Scaler, "Scaler";
    nn::Optimizer => Optimizer, "Optimizer";
    nn::LrSchedule => LrSchedule, "LrSchedule";
    nn::Label => Label, "Label";
    nn::LabelSet => LabelSet, "LabelSet";
    nn::EarlyStopping => EarlyStopping, "EarlyStopping";
    nn::TrainParams => TrainParams, "TrainParams";
    nn::EpochReport => EpochReport, "EpochReport";
    nn::StopReason => StopReason, "StopReason";
}

/// A layer's activation σ in `a = σ(z)`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Identity,
    Sigmoid,
    Tanh,
    Relu,
    LeakyRelu,
    /// Output layer only: each row becomes a probability distribution.
    Softmax,
}

/// The cost a network is trained to minimise.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Quadratic cost J = 1/(2n)·Σ‖y − ŷ‖².
    Mse,
    /// Categorical cross-entropy with a softmax output, or binary (multi-label) cross-entropy
    /// with sigmoid outputs.
    CrossEntropy,
}

/// One dense layer: `units` outputs, each `activation(w·a + b)`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// Output width of the layer.
    #[schema(minimum = 1, maximum = 65536)]
    pub units: usize,
    pub activation: nn::Activation,
}

/// A multi-layer perceptron: input width, the layers in order (the last is the output), cost.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Number of input features.
    #[schema(minimum = 1, maximum = 1048576)]
    pub inputs: usize,
    /// Dense layers in order; the last one is the output layer.
    #[schema(min_items = 1, max_items = 64)]
    pub layers: Vec<nn::LayerSpec>,
    pub loss: nn::Loss,
}

/// How to scale input features.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Use features as given.
    None,
    /// z-score: (x − mean) / std.
    Standard,
    /// (x − min) / (max − min), into [0, 1].
    Minmax,
}

/// A per-column affine transform `x' = (x − shift)·scale`. Constant columns get scale 1, so they
/// become 0 instead of a division by zero.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scaler {
    pub kind: nn::Normalization,
    pub shift: Vec<f32>,
    pub scale: Vec<f32>,
}

/// The update rule.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Optimizer {
    /// Plain gradient descent: `w ← w − lr·∂J/∂w`.
    Sgd,
    /// Gradient descent with (optionally Nesterov) momentum.
    Momentum {
        /// Momentum coefficient μ, in [0, 1).
        #[serde(default)]
        #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
    },
    /// Adam (Kingma & Ba), with bias correction.
    Adam {
        #[serde(default)]
        #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
        beta1: f64,
        #[serde(default)]
        #[schema(minimum = 0.0, exclusive_maximum = 1.0)]
        beta2: f64,
        #[serde(default)]
        #[schema(exclusive_minimum = 0.0)]
        epsilon: f64,
    },
}

/// How the learning rate changes from epoch to epoch (epochs counted from 0).
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    Constant,
    /// `lr·gamma^epoch`.
    Exponential {
        #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
        gamma: f64,
    },
    /// `lr·gamma^⌊epoch / step_size⌋`.
    Step {
        #[schema(minimum = 1)]
        step_size: u32,
        #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
        gamma: f64,
    },
}

/// A class label as the client wrote it: an integer or a string. As in JSON Schema, a number
/// with no fractional part (`3.0`) is an integer.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Label {
    Int(i64),
    Str(String),
}

/// The classes of a classifier in their stable order (ascending), all of one type. Output unit
/// `k` of a trained classifier stands for class `k` of this set.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", content = "values", rename_all = "snake_case")]
pub enum LabelSet {
    Int(Vec<i64>),
    Str(Vec<String>),
}

/// Stop when the monitored cost has not improved by `min_delta` for `patience` epochs.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    #[schema(minimum = 1)]
    pub patience: u32,
    /// The least decrease of the cost that counts as an improvement.
    #[serde(default)]
    #[schema(minimum = 0.0)]
    pub min_delta: f64,
    /// Whether the trained model gets the weights of the best epoch (default true).
    #[serde(default)]
    pub restore_best: bool,
}

/// Everything that shapes a training run (but not how many threads compute it).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    pub epochs: u32,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub optimizer: nn::Optimizer,
    pub lr_schedule: nn::LrSchedule,
    /// L2 weight decay λ (weights only).
    pub l2: f64,
    /// Fraction of rows held out for validation (stratified by class for classifiers), in [0, 1).
    pub validation_split: f64,
    pub early_stopping: Option<nn::EarlyStopping>,
    pub normalize: nn::Normalization,
    /// Standardize regression targets (inverted at prediction). `None`: when the output is
    /// linear (identity) with the quadratic cost.
    pub normalize_targets: Option<bool>,
    pub seed: u64,
    /// Stop after this many seconds of training (the model keeps the weights reached).
    pub max_seconds: Option<f64>,
}

/// What one epoch achieved. Costs are in the targets' own units (the quadratic cost of
/// standardized targets is reported back in the original scale).
#[derive(Serialize, ToSchema)]
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

/// Why a successful run ended.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Completed,
    EarlyStopped,
    TimeLimit,
}

// Exhaustive conversions: a field or variant added to an `nn` type breaks the build here.

impl From<&nn::Activation> for Activation {
    fn from(a: &nn::Activation) -> Self {
        match a {
            nn::Activation::Identity => Activation::Identity,
            nn::Activation::Sigmoid => Activation::Sigmoid,
            nn::Activation::Tanh => Activation::Tanh,
            nn::Activation::Relu => Activation::Relu,
            nn::Activation::LeakyRelu => Activation::LeakyRelu,
            nn::Activation::Softmax => Activation::Softmax,
        }
    }
}

impl From<&nn::Loss> for Loss {
    fn from(l: &nn::Loss) -> Self {
        match l {
            nn::Loss::Mse => Loss::Mse,
            nn::Loss::CrossEntropy => Loss::CrossEntropy,
        }
    }
}

impl From<&nn::LayerSpec> for LayerSpec {
    fn from(l: &nn::LayerSpec) -> Self {
        let nn::LayerSpec { units, activation } = l.clone();
        LayerSpec { units, activation }
    }
}

impl From<&nn::NetworkSpec> for NetworkSpec {
    fn from(s: &nn::NetworkSpec) -> Self {
        let nn::NetworkSpec {
            inputs,
            layers,
            loss,
        } = s.clone();
        NetworkSpec {
            inputs,
            layers,
            loss,
        }
    }
}

impl From<&nn::Normalization> for Normalization {
    fn from(n: &nn::Normalization) -> Self {
        match n {
            nn::Normalization::None => Normalization::None,
            nn::Normalization::Standard => Normalization::Standard,
            nn::Normalization::Minmax => Normalization::Minmax,
        }
    }
}

impl From<&nn::Scaler> for Scaler {
    fn from(s: &nn::Scaler) -> Self {
        let nn::Scaler { kind, shift, scale } = s.clone();
        Scaler { kind, shift, scale }
    }
}

impl From<&nn::Optimizer> for Optimizer {
    fn from(o: &nn::Optimizer) -> Self {
        match *o {
            nn::Optimizer::Sgd => Optimizer::Sgd,
            nn::Optimizer::Momentum { momentum, nesterov } => {
                Optimizer::Momentum { momentum, nesterov }
            }
            nn::Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            } => Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            },
        }
    }
}

impl From<&nn::LrSchedule> for LrSchedule {
    fn from(s: &nn::LrSchedule) -> Self {
        match *s {
            nn::LrSchedule::Constant => LrSchedule::Constant,
            nn::LrSchedule::Exponential { gamma } => LrSchedule::Exponential { gamma },
            nn::LrSchedule::Step { step_size, gamma } => LrSchedule::Step { step_size, gamma },
        }
    }
}

impl From<&nn::Label> for Label {
    fn from(l: &nn::Label) -> Self {
        match l.clone() {
            nn::Label::Int(i) => Label::Int(i),
            nn::Label::Str(s) => Label::Str(s),
        }
    }
}

impl From<&nn::LabelSet> for LabelSet {
    fn from(l: &nn::LabelSet) -> Self {
        match l.clone() {
            nn::LabelSet::Int(v) => LabelSet::Int(v),
            nn::LabelSet::Str(v) => LabelSet::Str(v),
        }
    }
}

impl From<&nn::EarlyStopping> for EarlyStopping {
    fn from(e: &nn::EarlyStopping) -> Self {
        let nn::EarlyStopping {
            patience,
            min_delta,
            restore_best,
        } = *e;
        EarlyStopping {
            patience,
            min_delta,
            restore_best,
        }
    }
}

impl From<&nn::TrainParams> for TrainParams {
    fn from(p: &nn::TrainParams) -> Self {
        let nn::TrainParams {
            epochs,
            learning_rate,
            batch_size,
            optimizer,
            lr_schedule,
            l2,
            validation_split,
            early_stopping,
            normalize,
            normalize_targets,
            seed,
            max_seconds,
        } = p.clone();
        TrainParams {
            epochs,
            learning_rate,
            batch_size,
            optimizer,
            lr_schedule,
            l2,
            validation_split,
            early_stopping,
            normalize,
            normalize_targets,
            seed,
            max_seconds,
        }
    }
}

impl From<&nn::EpochReport> for EpochReport {
    fn from(r: &nn::EpochReport) -> Self {
        let nn::EpochReport {
            epoch,
            cost,
            val_cost,
            accuracy,
            val_accuracy,
            learning_rate,
            elapsed_ms,
        } = *r;
        EpochReport {
            epoch,
            cost,
            val_cost,
            accuracy,
            val_accuracy,
            learning_rate,
            elapsed_ms,
        }
    }
}

impl From<&nn::StopReason> for StopReason {
    fn from(s: &nn::StopReason) -> Self {
        match s {
            nn::StopReason::Completed => StopReason::Completed,
            nn::StopReason::EarlyStopped => StopReason::EarlyStopped,
            nn::StopReason::TimeLimit => StopReason::TimeLimit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::to_value;

    /// The twin of `v` serializes exactly as `v` does.
    fn same<N: Serialize, D: Serialize + for<'a> From<&'a N>>(v: &N) {
        let twin = D::from(v);
        assert_eq!(to_value(v).unwrap(), to_value(&twin).unwrap());
    }

    #[test]
    fn twins_serialize_like_the_engine_types() {
        use nn::Activation as A;
        for a in [
            A::Identity,
            A::Sigmoid,
            A::Tanh,
            A::Relu,
            A::LeakyRelu,
            A::Softmax,
        ] {
            same::<_, Activation>(&a);
        }
        same::<_, Loss>(&nn::Loss::Mse);
        same::<_, Loss>(&nn::Loss::CrossEntropy);
        let spec = nn::NetworkSpec {
            inputs: 3,
            layers: vec![nn::LayerSpec {
                units: 2,
                activation: A::Softmax,
            }],
            loss: nn::Loss::CrossEntropy,
        };
        same::<_, NetworkSpec>(&spec);
        same::<_, LayerSpec>(&spec.layers[0]);
        for n in [
            nn::Normalization::None,
            nn::Normalization::Standard,
            nn::Normalization::Minmax,
        ] {
            same::<_, Normalization>(&n);
        }
        same::<_, Scaler>(&nn::Scaler::identity(2));
        for o in [
            nn::Optimizer::Sgd,
            nn::Optimizer::momentum(0.5, true),
            nn::Optimizer::adam(),
        ] {
            same::<_, Optimizer>(&o);
        }
        for s in [
            nn::LrSchedule::Constant,
            nn::LrSchedule::Exponential { gamma: 0.5 },
            nn::LrSchedule::Step {
                step_size: 2,
                gamma: 0.5,
            },
        ] {
            same::<_, LrSchedule>(&s);
        }
        same::<_, Label>(&nn::Label::Int(3));
        same::<_, Label>(&nn::Label::Str("cat".into()));
        same::<_, LabelSet>(&nn::LabelSet::Int(vec![1, 2]));
        same::<_, LabelSet>(&nn::LabelSet::Str(vec!["a".into()]));
        let params = nn::TrainParams {
            early_stopping: Some(nn::EarlyStopping {
                patience: 2,
                min_delta: 0.1,
                restore_best: false,
            }),
            normalize_targets: Some(true),
            max_seconds: Some(1.5),
            ..Default::default()
        };
        same::<_, TrainParams>(&params);
        same::<_, TrainParams>(&nn::TrainParams::default());
        for report in [
            nn::EpochReport {
                epoch: 1,
                cost: 0.5,
                val_cost: Some(0.25),
                accuracy: Some(0.75),
                val_accuracy: Some(0.5),
                learning_rate: 0.1,
                elapsed_ms: 7,
            },
            nn::EpochReport {
                epoch: 2,
                cost: 0.5,
                val_cost: None,
                accuracy: None,
                val_accuracy: None,
                learning_rate: 0.1,
                elapsed_ms: 9,
            },
        ] {
            same::<_, EpochReport>(&report);
        }
        for s in [
            nn::StopReason::Completed,
            nn::StopReason::EarlyStopped,
            nn::StopReason::TimeLimit,
        ] {
            same::<_, StopReason>(&s);
        }
    }
}
