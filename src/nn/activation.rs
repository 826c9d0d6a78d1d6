//! Activation functions, applied in place to a batch (samples are rows).
//!
//! Every derivative is written in terms of the activation's *output* `a`, so the forward pass
//! need not keep `z`: σ' = a(1−a), tanh' = 1−a², relu' = [a > 0], leaky' = a > 0 ? 1 : slope.

use super::Scalar;
use ndarray::{ArrayView2, ArrayViewMut2, Zip};
use serde::{Deserialize, Serialize};

/// The slope of `leaky_relu` for negative inputs.
pub const LEAKY_SLOPE: f64 = 0.01;

/// A layer's activation σ in `a = σ(z)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl Activation {
    /// The Glorot/Xavier family suits saturating and linear units; He suits rectifiers.
    pub fn uses_he_init(self) -> bool {
        matches!(self, Activation::Relu | Activation::LeakyRelu)
    }

    /// Whether σ acts on each value alone (every activation but softmax, which acts on rows), so
    /// that it may be applied to any piece of a batch.
    pub fn is_elementwise(self) -> bool {
        !matches!(self, Activation::Softmax)
    }

    /// `z ← σ(z)` for every row of the batch.
    pub fn forward<F: Scalar>(self, z: &mut ArrayViewMut2<F>) {
        let one = F::one();
        match self {
            Activation::Identity => {}
            Activation::Sigmoid => z.mapv_inplace(|v| sigmoid(v)),
            Activation::Tanh => z.mapv_inplace(|v| v.tanh()),
            Activation::Relu => z.mapv_inplace(|v| if v > F::zero() { v } else { F::zero() }),
            Activation::LeakyRelu => {
                let slope = F::from_f64(LEAKY_SLOPE);
                z.mapv_inplace(|v| if v > F::zero() { v } else { v * slope })
            }
            Activation::Softmax => {
                for mut row in z.rows_mut() {
                    let max = row.fold(F::neg_infinity(), |m, &v| m.max(v));
                    let mut sum = F::zero();
                    row.mapv_inplace(|v| {
                        let e = (v - max).exp();
                        sum += e;
                        e
                    });
                    let inv = one / sum;
                    row.mapv_inplace(|v| v * inv);
                }
            }
        }
    }

    /// `g ← ∂J/∂z` given `g = ∂J/∂a` and the layer's output `a` (a Jacobian–vector product).
    pub fn backward<F: Scalar>(self, a: &ArrayView2<F>, g: &mut ArrayViewMut2<F>) {
        let one = F::one();
        match self {
            Activation::Identity => {}
            Activation::Sigmoid => Zip::from(g).and(a).for_each(|g, &a| *g *= a * (one - a)),
            Activation::Tanh => Zip::from(g).and(a).for_each(|g, &a| *g *= one - a * a),
            // Selects, not branches: half the units of a layer are off at random, and a
            // mispredicted branch per element cost more than the rest of the pass.
            Activation::Relu => Zip::from(g)
                .and(a)
                .for_each(|g, &a| *g = if a <= F::zero() { F::zero() } else { *g }),
            Activation::LeakyRelu => {
                let slope = F::from_f64(LEAKY_SLOPE);
                Zip::from(g)
                    .and(a)
                    .for_each(|g, &a| *g = if a <= F::zero() { *g * slope } else { *g })
            }
            Activation::Softmax => {
                // dz_i = a_i (g_i − Σ_j a_j g_j)
                for (mut g, a) in g.rows_mut().into_iter().zip(a.rows()) {
                    let dot = g
                        .iter()
                        .zip(a.iter())
                        .fold(F::zero(), |s, (&g, &a)| s + g * a);
                    Zip::from(&mut g)
                        .and(&a)
                        .for_each(|g, &a| *g = a * (*g - dot));
                }
            }
        }
    }
}

/// The logistic function, without overflow warnings for large |z|.
pub fn sigmoid<F: Scalar>(z: F) -> F {
    F::one() / (F::one() + (-z).exp())
}
