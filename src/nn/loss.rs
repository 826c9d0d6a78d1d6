//! Costs and the output layer's error signal.
//!
//! The quadratic cost is exactly J = 1/(2n)·Σ‖y − ŷ‖². Cross-entropy is computed from the output
//! layer's `z` (log-sum-exp, softplus), so saturated outputs give finite costs, and its gradient
//! with a softmax or sigmoid output is the combined, stable `a − y`.

use super::{Activation, Scalar};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, Zip};
use serde::{Deserialize, Serialize};

/// The cost a network is trained to minimise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Quadratic cost J = 1/(2n)·Σ‖y − ŷ‖².
    Mse,
    /// Categorical cross-entropy with a softmax output, or binary (multi-label) cross-entropy
    /// with sigmoid outputs.
    CrossEntropy,
}

/// The output layer's activation and the cost together: the closed set of pairs we can train.
/// Built by [`Head::new`], so an invalid pair (cross-entropy on a tanh output) cannot exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    Mse(Activation),
    SoftmaxCrossEntropy,
    SigmoidCrossEntropy,
}

impl Head {
    /// `None` when the pair is not trainable: cross-entropy needs softmax or sigmoid outputs.
    pub fn new(output: Activation, loss: Loss) -> Option<Head> {
        match (loss, output) {
            (Loss::Mse, a) => Some(Head::Mse(a)),
            (Loss::CrossEntropy, Activation::Softmax) => Some(Head::SoftmaxCrossEntropy),
            (Loss::CrossEntropy, Activation::Sigmoid) => Some(Head::SigmoidCrossEntropy),
            (Loss::CrossEntropy, _) => None,
        }
    }

    /// Whether the head needs the output layer's pre-activation `z` (for a stable cost).
    pub fn needs_z(self) -> bool {
        !matches!(self, Head::Mse(_))
    }

    /// The summed (not averaged) cost of a batch: Σ over rows of the per-row cost. For the
    /// quadratic cost, `weights` scales each output column (to report costs in the units of
    /// standardized targets); gradients never use it.
    pub fn cost_sum<F: Scalar>(
        self,
        z: &ArrayView2<F>,
        a: &ArrayView2<F>,
        y: &ArrayView2<F>,
        weights: Option<ArrayView1<F>>,
    ) -> F {
        let half = F::from_f64(0.5);
        match self {
            Head::Mse(_) => match weights {
                None => {
                    let mut s = F::zero();
                    Zip::from(a)
                        .and(y)
                        .for_each(|&a, &y| s += (a - y) * (a - y));
                    s * half
                }
                Some(w) => {
                    let mut s = F::zero();
                    for (ar, yr) in a.rows().into_iter().zip(y.rows()) {
                        Zip::from(&ar)
                            .and(&yr)
                            .and(&w)
                            .for_each(|&a, &y, &w| s += w * (a - y) * (a - y));
                    }
                    s * half
                }
            },
            Head::SoftmaxCrossEntropy => {
                // −Σ_k y_k·log softmax(z)_k, with log softmax(z)_k = z_k − logsumexp(z).
                let mut s = F::zero();
                for (zr, yr) in z.rows().into_iter().zip(y.rows()) {
                    let max = zr.fold(F::neg_infinity(), |m, &v| m.max(v));
                    let lse = max + zr.fold(F::zero(), |acc, &v| acc + (v - max).exp()).ln();
                    Zip::from(&zr).and(&yr).for_each(|&z, &y| {
                        if y != F::zero() {
                            s += y * (lse - z)
                        }
                    });
                }
                s
            }
            Head::SigmoidCrossEntropy => {
                // −[y·log σ(z) + (1−y)·log(1−σ(z))] = y·softplus(−z) + (1−y)·softplus(z).
                let mut s = F::zero();
                Zip::from(z).and(y).for_each(|&z, &y| {
                    s += y * softplus(-z) + (F::one() - y) * softplus(z);
                });
                s
            }
        }
    }

    /// `delta ← ∂(per-row cost)/∂z` for the output layer (not divided by the batch size).
    pub fn delta<F: Scalar>(
        self,
        a: &ArrayView2<F>,
        y: &ArrayView2<F>,
        delta: &mut ArrayViewMut2<F>,
    ) {
        Zip::from(&mut *delta)
            .and(a)
            .and(y)
            .for_each(|d, &a, &y| *d = a - y);
        if let Head::Mse(act) = self {
            act.backward(a, delta);
        }
    }
}

/// ln(1 + eˣ) without overflow.
fn softplus<F: Scalar>(x: F) -> F {
    x.max(F::zero()) + (-x.abs()).exp().ln_1p()
}
