//! Optimizers and learning-rate schedules. An optimizer is a config ([`Optimizer`]); its
//! per-parameter state lives in [`OptState`], owned by the [`super::Fitter`].
//!
//! The formulations follow PyTorch's `torch.optim` so results can be compared with it:
//! momentum `v ← μv + g`, `p ← p − lr·v` (Nesterov: `p ← p − lr·(g + μv)`); Adam with bias
//! correction. L2 weight decay adds `λ·W` to weight gradients (not to biases).

use super::{Dense, Scalar};
use ndarray::{Array1, Array2, Zip};
use serde::{Deserialize, Serialize};

fn default_momentum() -> f64 {
    0.9
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_epsilon() -> f64 {
    1e-8
}

/// The update rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Optimizer {
    /// Plain gradient descent: `w ← w − lr·∂J/∂w`.
    Sgd,
    /// Gradient descent with (optionally Nesterov) momentum.
    Momentum {
        /// Momentum coefficient μ, in [0, 1).
        #[serde(default = "default_momentum")]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
    },
    /// Adam (Kingma & Ba), with bias correction.
    Adam {
        #[serde(default = "default_beta1")]
        beta1: f64,
        #[serde(default = "default_beta2")]
        beta2: f64,
        #[serde(default = "default_epsilon")]
        epsilon: f64,
    },
}

impl Optimizer {
    pub fn adam() -> Self {
        Optimizer::Adam {
            beta1: default_beta1(),
            beta2: default_beta2(),
            epsilon: default_epsilon(),
        }
    }

    pub fn momentum(momentum: f64, nesterov: bool) -> Self {
        Optimizer::Momentum { momentum, nesterov }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Momentum { .. } => "momentum",
            Optimizer::Adam { .. } => "adam",
        }
    }

    /// # Errors
    /// A coefficient outside its range, named by field.
    pub fn validate(&self) -> Result<(), super::FieldError> {
        let unit = |name: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(super::FieldError::new(
                    format!("optimizer.{name}"),
                    "must be in [0, 1)",
                ))
            }
        };
        match *self {
            Optimizer::Sgd => Ok(()),
            Optimizer::Momentum { momentum, .. } => unit("momentum", momentum),
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                unit("beta1", beta1)?;
                unit("beta2", beta2)?;
                if epsilon > 0.0 && epsilon.is_finite() {
                    Ok(())
                } else {
                    Err(super::FieldError::new(
                        "optimizer.epsilon",
                        "must be a positive number",
                    ))
                }
            }
        }
    }
}

/// How the learning rate changes from epoch to epoch (epochs counted from 0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    #[default]
    Constant,
    /// `lr·gamma^epoch`.
    Exponential { gamma: f64 },
    /// `lr·gamma^⌊epoch / step_size⌋`.
    Step {
        #[serde(deserialize_with = "crate::nn::integral::integer")]
        step_size: u32,
        gamma: f64,
    },
}

impl LrSchedule {
    pub fn rate(&self, base: f64, epoch: u32) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Exponential { gamma } => base * gamma.powi(epoch as i32),
            LrSchedule::Step { step_size, gamma } => {
                base * gamma.powi((epoch / step_size.max(1)) as i32)
            }
        }
    }

    /// # Errors
    /// `gamma` outside (0, 1] or a zero `step_size`.
    pub fn validate(&self) -> Result<(), super::FieldError> {
        let gamma_ok = |g: f64| g > 0.0 && g <= 1.0;
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Exponential { gamma } | LrSchedule::Step { gamma, .. }
                if !gamma_ok(gamma) =>
            {
                Err(super::FieldError::new(
                    "lr_schedule.gamma",
                    "must be in (0, 1]",
                ))
            }
            LrSchedule::Step { step_size: 0, .. } => Err(super::FieldError::new(
                "lr_schedule.step_size",
                "must be at least 1",
            )),
            _ => Ok(()),
        }
    }
}

/// A gradient (or any per-parameter buffer) with one layer's shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradient<F> {
    pub weights: Array2<F>,
    pub bias: Array1<F>,
}

impl<F: Scalar> Gradient<F> {
    pub fn zeros_like(layer: &Dense<F>) -> Self {
        Gradient {
            // In the layer's own order, so that updates walk both arrays alike.
            weights: super::buffer::zeros(
                layer.weights.nrows(),
                layer.weights.ncols(),
                !layer.weights.is_standard_layout(),
            ),
            bias: Array1::zeros(layer.bias.len()),
        }
    }
}

/// An optimizer's state across steps.
pub(crate) enum OptState<F> {
    Sgd,
    Momentum {
        mu: F,
        nesterov: bool,
        velocity: Vec<Gradient<F>>,
    },
    Adam {
        beta1: F,
        beta2: F,
        epsilon: F,
        t: i32,
        m: Vec<Gradient<F>>,
        v: Vec<Gradient<F>>,
    },
}

impl<F: Scalar> OptState<F> {
    pub fn new(opt: &Optimizer, layers: &[Dense<F>]) -> Self {
        let zeros = || layers.iter().map(Gradient::zeros_like).collect::<Vec<_>>();
        match *opt {
            Optimizer::Sgd => OptState::Sgd,
            Optimizer::Momentum { momentum, nesterov } => OptState::Momentum {
                mu: F::from_f64(momentum),
                nesterov,
                velocity: zeros(),
            },
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            } => OptState::Adam {
                beta1: F::from_f64(beta1),
                beta2: F::from_f64(beta2),
                epsilon: F::from_f64(epsilon),
                t: 0,
                m: zeros(),
                v: zeros(),
            },
        }
    }

    /// Called once per mini-batch, before the layers are updated.
    pub fn begin_step(&mut self) {
        if let OptState::Adam { t, .. } = self {
            *t += 1;
        }
    }

    /// Updates `layer` (index `l`) from its gradient `g`.
    pub fn apply(&mut self, l: usize, layer: &mut Dense<F>, g: &Gradient<F>, lr: F) {
        match self {
            OptState::Sgd => {
                layer.weights.scaled_add(-lr, &g.weights);
                layer.bias.scaled_add(-lr, &g.bias);
            }
            OptState::Momentum {
                mu,
                nesterov,
                velocity,
            } => {
                let (mu, nesterov) = (*mu, *nesterov);
                let v = &mut velocity[l];
                let step = |p: &mut F, v: &mut F, &g: &F| {
                    *v = mu * *v + g;
                    *p -= lr * if nesterov { g + mu * *v } else { *v };
                };
                Zip::from(&mut layer.weights)
                    .and(&mut v.weights)
                    .and(&g.weights)
                    .for_each(step);
                Zip::from(&mut layer.bias)
                    .and(&mut v.bias)
                    .and(&g.bias)
                    .for_each(step);
            }
            OptState::Adam {
                beta1,
                beta2,
                epsilon,
                t,
                m,
                v,
            } => {
                let (b1, b2, eps) = (*beta1, *beta2, *epsilon);
                let one = F::one();
                let bc1 = one - b1.powi(*t);
                let bc2 = one - b2.powi(*t);
                let step = |p: &mut F, m: &mut F, v: &mut F, &g: &F| {
                    *m = b1 * *m + (one - b1) * g;
                    *v = b2 * *v + (one - b2) * g * g;
                    *p -= lr * (*m / bc1) / ((*v / bc2).sqrt() + eps);
                };
                let (ml, vl) = (&mut m[l], &mut v[l]);
                Zip::from(&mut layer.weights)
                    .and(&mut ml.weights)
                    .and(&mut vl.weights)
                    .and(&g.weights)
                    .for_each(step);
                Zip::from(&mut layer.bias)
                    .and(&mut ml.bias)
                    .and(&mut vl.bias)
                    .and(&g.bias)
                    .for_each(step);
            }
        }
    }
}
