//! The network's parameters and its forward pass.

use super::matmul::{self, Threads};
use super::spec::FieldError;
use super::{Activation, NetworkSpec, Scalar, init, team};
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, s};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// One dense layer's parameters: `weights` is `out × in`, so a row is one unit's weights and a
/// single input row is a matrix–vector product `W·x`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "F: Serialize", deserialize = "F: Deserialize<'de>"))]
#[serde(deny_unknown_fields)]
pub struct Dense<F> {
    pub weights: Array2<F>,
    pub bias: Array1<F>,
    pub activation: Activation,
}

impl<F: Scalar> Dense<F> {
    /// `out ← input·Wᵀ + b` (pre-activation) for every row of `input`.
    pub fn affine(&self, input: &ArrayView2<F>, out: &mut ArrayViewMut2<F>, threads: Threads) {
        self.affine_then(input, out, threads, None);
    }

    /// [`Dense::affine`], then `then` on each piece of `out` (`matmul::Then`).
    fn affine_then(
        &self,
        input: &ArrayView2<F>,
        out: &mut ArrayViewMut2<F>,
        threads: Threads,
        then: Option<matmul::Then<'_, F>>,
    ) {
        let (w, b) = (self.weights.t(), self.bias.view());
        matmul::affine(out, input, &w, b, threads, then);
    }

    /// `out ← σ(input·Wᵀ + b)` for every row of `input`. An elementwise σ is applied to each
    /// panel of the product by the thread that computed it, while the panel is in its cache
    /// (no second pass over `out`, and no value crosses to another core for it).
    pub fn forward(&self, input: &ArrayView2<F>, out: &mut ArrayViewMut2<F>, threads: Threads) {
        let activation = self.activation;
        if activation.is_elementwise() {
            let then = |_, _, mut piece: ArrayViewMut2<F>| activation.forward(&mut piece);
            self.affine_then(input, out, threads, Some(&then));
        } else {
            self.affine(input, out, threads);
            if threads.0 > 1 {
                team::rows(out.view_mut(), &|_, mut block| {
                    activation.forward(&mut block)
                });
            } else {
                activation.forward(out);
            }
        }
    }

    pub fn inputs(&self) -> usize {
        self.weights.ncols()
    }

    pub fn units(&self) -> usize {
        self.weights.nrows()
    }
}

/// A multi-layer perceptron's parameters. Invariant: consecutive layers chain (each layer's
/// input width is the previous layer's unit count) and biases match units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "F: Serialize", deserialize = "F: Deserialize<'de>"))]
#[serde(try_from = "Vec<Dense<F>>", into = "Vec<Dense<F>>")]
pub struct Network<F: Scalar> {
    layers: Vec<Dense<F>>,
}

impl<F: Scalar> TryFrom<Vec<Dense<F>>> for Network<F> {
    type Error = FieldError;
    fn try_from(layers: Vec<Dense<F>>) -> Result<Self, FieldError> {
        Network::from_layers(layers)
    }
}

impl<F: Scalar> From<Network<F>> for Vec<Dense<F>> {
    fn from(n: Network<F>) -> Self {
        n.layers
    }
}

impl<F: Scalar> Network<F> {
    /// Fresh parameters for a validated spec, drawn from `rng`.
    pub fn init<R: Rng>(spec: &NetworkSpec, rng: &mut R) -> Self {
        let mut fan_in = spec.inputs;
        let layers = spec
            .layers
            .iter()
            .map(|l| {
                let d = Dense {
                    weights: init::weights(rng, fan_in, l.units, l.activation),
                    bias: Array1::zeros(l.units),
                    activation: l.activation,
                };
                fan_in = l.units;
                d
            })
            .collect();
        Network { layers }
    }

    /// Builds a network from given parameters.
    ///
    /// # Errors
    /// When there are no layers, a layer is empty, or shapes do not chain.
    pub fn from_layers(layers: Vec<Dense<F>>) -> Result<Self, FieldError> {
        if layers.is_empty() {
            return Err(FieldError::new(
                "layers",
                "a network needs at least one layer",
            ));
        }
        for (i, l) in layers.iter().enumerate() {
            if l.units() == 0 || l.inputs() == 0 {
                return Err(FieldError::new(
                    format!("layers[{i}].weights"),
                    "must not be empty",
                ));
            }
            if l.bias.len() != l.units() {
                return Err(FieldError::new(
                    format!("layers[{i}].bias"),
                    format!("has {} entries for {} units", l.bias.len(), l.units()),
                ));
            }
            if i > 0 && l.inputs() != layers[i - 1].units() {
                return Err(FieldError::new(
                    format!("layers[{i}].weights"),
                    format!(
                        "takes {} inputs but the previous layer has {} units",
                        l.inputs(),
                        layers[i - 1].units()
                    ),
                ));
            }
            if l.weights
                .iter()
                .chain(l.bias.iter())
                .any(|v| !v.is_finite())
            {
                return Err(FieldError::new(
                    format!("layers[{i}]"),
                    "holds a non-finite value",
                ));
            }
        }
        Ok(Network { layers })
    }

    pub fn layers(&self) -> &[Dense<F>] {
        &self.layers
    }

    /// Mutable parameters, for tests that perturb weights (gradient checks).
    pub fn layers_mut(&mut self) -> &mut [Dense<F>] {
        &mut self.layers
    }

    pub fn inputs(&self) -> usize {
        self.layers[0].inputs()
    }

    pub fn outputs(&self) -> usize {
        self.layers[self.layers.len() - 1].units()
    }

    /// Output activations for every row of `x` (`rows × inputs`), allocating one buffer per
    /// layer for the whole batch — never per row.
    pub fn predict(&self, x: ArrayView2<F>) -> Array2<F> {
        let mut bufs: Vec<Array2<F>> = self
            .layers
            .iter()
            .map(|l| Array2::zeros((x.nrows(), l.units())))
            .collect();
        self.forward_into(x, &mut bufs, Threads(1));
        bufs.pop().expect("at least one layer")
    }

    /// Writes each layer's output for the rows of `x` into the first rows of `bufs[l]`.
    pub(crate) fn forward_into(&self, x: ArrayView2<F>, bufs: &mut [Array2<F>], threads: Threads) {
        let m = x.nrows();
        for (l, layer) in self.layers.iter().enumerate() {
            let (before, rest) = bufs.split_at_mut(l);
            let input = if l == 0 {
                x.view()
            } else {
                before[l - 1].slice(s![..m, ..])
            };
            let mut out = rest[0].slice_mut(s![..m, ..]);
            layer.forward(&input, &mut out, threads);
        }
    }

    /// The same network in another precision (f32 ↔ f64), for checks.
    pub fn cast<G: Scalar>(&self) -> Network<G> {
        Network {
            layers: self
                .layers
                .iter()
                .map(|l| Dense {
                    weights: l.weights.mapv(|v| G::from_f64(v.as_f64())),
                    bias: l.bias.mapv(|v| G::from_f64(v.as_f64())),
                    activation: l.activation,
                })
                .collect(),
        }
    }
}
