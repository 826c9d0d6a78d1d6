//! One mini-batch step — forward, back propagation, update — over preallocated buffers.
//!
//! Back propagation, layer by layer from the output: with δ_L = ∂J/∂z_L from the [`Head`],
//! `∂J/∂W_l = δ_lᵀ·a_{l−1} / m`, `∂J/∂b_l = Σ_rows δ_l / m`, and
//! `δ_{l−1} = (δ_l·W_l) ⊙ σ'(a_{l−1})` (computed before `W_l` is updated).
//!
//! Plain SGD never materialises a gradient: the update is fused into the product,
//! `W ← (1 − lr·λ)·W − (lr/m)·δᵀ·a` (one GEMM). Other optimizers write the gradient into a buffer
//! and apply their rule. No step allocates once the buffers exist.

use super::buffer;
use super::matmul::{Threads, gemm, gemm_weights, may_share};
use super::optim::{Gradient, OptState};
use super::spec::FieldError;
use super::team;
use super::{Head, Loss, Network, Optimizer, Scalar};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, s};
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

/// Costs of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchStats<F> {
    /// Σ over the batch's rows of the per-row cost (see [`Head::cost_sum`]).
    pub cost_sum: F,
    pub rows: usize,
}

/// `net` with every layer's weights in an ordinary row-major array again.
fn row_major<F: Scalar>(mut net: Network<F>) -> Network<F> {
    for layer in net.layers_mut() {
        layer.weights = layer.weights.as_standard_layout().to_owned();
    }
    net
}

/// A network being trained, its optimizer state and its workspace.
pub struct Fitter<F: Scalar> {
    net: Network<F>,
    head: Head,
    state: OptState<F>,
    fused_sgd: bool,
    l2: F,
    threads: Threads,
    capacity: usize,
    acts: Vec<Array2<F>>,
    deltas: Vec<Array2<F>>,
    z_out: Array2<F>,
    grads: Vec<Gradient<F>>,
    cost_weights: Option<Array1<F>>,
}

impl<F: Scalar> Fitter<F> {
    /// # Errors
    /// When the output activation and the loss do not form a trainable pair.
    pub fn new(
        net: Network<F>,
        loss: Loss,
        optimizer: &Optimizer,
        l2: f64,
        batch: usize,
        threads: usize,
    ) -> Result<Self, FieldError> {
        let out = net.layers()[net.layers().len() - 1].activation;
        let head = Head::new(out, loss).ok_or_else(|| {
            FieldError::new(
                "loss",
                "cross_entropy needs a softmax or sigmoid output layer",
            )
        })?;
        // The first layer's weights are column-major while training: the forward product reads
        // them (gemm's left operand, units × inputs) down contiguous columns, where row-major
        // ones would be transposed into gemm's packed form, element by element, every step.
        // The layers above stay row-major: the product for the δ below them reads them down
        // contiguous columns as they are. The first layer has no such product.
        // Every buffer the step writes starts on a cache line (see `buffer`).
        let mut net = net;
        for (l, layer) in net.layers_mut().iter_mut().enumerate() {
            layer.weights = buffer::copy(&layer.weights, l == 0);
        }
        let state = OptState::new(optimizer, net.layers());
        let grads = net.layers().iter().map(Gradient::zeros_like).collect();
        let mut f = Fitter {
            fused_sgd: matches!(optimizer, Optimizer::Sgd),
            head,
            state,
            l2: F::from_f64(l2),
            threads: Threads(threads.max(1)),
            capacity: 0,
            acts: Vec::new(),
            deltas: Vec::new(),
            z_out: Array2::zeros((0, net.outputs())),
            grads,
            cost_weights: None,
            net,
        };
        f.reserve(batch.max(1));
        Ok(f)
    }

    /// Weights per output column for the reported quadratic cost (never for gradients).
    pub fn set_cost_weights(&mut self, w: Option<Array1<F>>) {
        self.cost_weights = w;
    }

    pub fn network(&self) -> &Network<F> {
        &self.net
    }

    pub fn network_mut(&mut self) -> &mut Network<F> {
        &mut self.net
    }

    /// The trained network, every layer's weights row-major again (as the rest of the crate
    /// stores and serves them).
    pub fn into_network(self) -> Network<F> {
        row_major(self.net)
    }

    /// A copy of the network as [`Fitter::into_network`] would return it now.
    pub fn snapshot(&self) -> Network<F> {
        row_major(self.net.clone())
    }

    /// Whether a step on `rows` rows shares any of its products among the team's threads: if
    /// not, the step runs on the calling thread alone, and [`Fitter::step_beside`] posts its side
    /// job from the start.
    pub fn shares_steps(&self, rows: usize) -> bool {
        self.shared_layers(rows) > 0
    }

    /// How many layers from the input up, on `rows` rows, end with one whose product is shared
    /// (0 when none is).
    fn shared_layers(&self, rows: usize) -> usize {
        self.net
            .layers()
            .iter()
            .rposition(|l| may_share(rows, l.units(), l.inputs()))
            .map_or(0, |l| l + 1)
    }

    pub fn head(&self) -> Head {
        self.head
    }

    /// The output activations of the last forward pass (its first `rows` rows).
    pub fn outputs(&self, rows: usize) -> ArrayView2<'_, F> {
        self.acts[self.acts.len() - 1].slice(s![..rows, ..])
    }

    fn reserve(&mut self, rows: usize) {
        if rows <= self.capacity {
            return;
        }
        let units: Vec<usize> = self.net.layers().iter().map(|l| l.units()).collect();
        self.acts = units
            .iter()
            .map(|&u| buffer::zeros(rows, u, false))
            .collect();
        self.deltas = units
            .iter()
            .map(|&u| buffer::zeros(rows, u, false))
            .collect();
        self.z_out = buffer::zeros(rows, self.net.outputs(), false);
        self.capacity = rows;
    }

    /// One training step on the batch (`x`: rows × inputs, `y`: rows × outputs) at rate `lr`.
    /// Returns the batch's cost, evaluated before the update.
    pub fn step(&mut self, x: ArrayView2<F>, y: ArrayView2<F>, lr: F) -> BatchStats<F> {
        self.step_beside(x, y, lr, &|| ())
    }

    /// [`Fitter::step`], with `side` posted for an idle helper of the team (`team::overlap`)
    /// where the step stops sharing its forward products: after the last layer whose product is
    /// shared (from the start when none is). The output layer's unshared pieces (its product,
    /// the cost, δ, its update) would leave the helpers idle there; the helper that runs `side`
    /// then joins the backward products, and the caller takes the parts it has no time for.
    /// `side` must not touch the step's data. The step's results do not depend on who ran what.
    pub fn step_beside(
        &mut self,
        x: ArrayView2<F>,
        y: ArrayView2<F>,
        lr: F,
        side: &(dyn Fn() + Sync),
    ) -> BatchStats<F> {
        let m = x.nrows();
        self.reserve(m);
        let shared = self.shared_layers(m);
        self.forward_layers(x, 0..shared);
        team::overlap(side, || {
            self.forward_layers(x, shared..self.acts.len());
            let stats = self.cost(y, m);
            self.state.begin_step();
            self.backward(x, y, Some(lr));
            stats
        })
    }

    /// The gradient of [`Fitter::objective`] with respect to every parameter, without updating.
    pub fn gradients(&mut self, x: ArrayView2<F>, y: ArrayView2<F>) -> Vec<Gradient<F>> {
        self.forward(x, y);
        self.backward(x, y, None);
        self.grads.clone()
    }

    /// The regularised objective: mean per-row cost + (λ/2)·Σ‖W‖² (biases not decayed).
    pub fn objective(&mut self, x: ArrayView2<F>, y: ArrayView2<F>) -> F {
        let stats = self.forward(x, y);
        let sq: F = self
            .net
            .layers()
            .iter()
            .map(|l| l.weights.iter().fold(F::zero(), |s, &w| s + w * w))
            .fold(F::zero(), |a, b| a + b);
        stats.cost_sum / F::from_f64(stats.rows as f64) + self.l2 * F::from_f64(0.5) * sq
    }

    fn forward(&mut self, x: ArrayView2<F>, y: ArrayView2<F>) -> BatchStats<F> {
        let m = x.nrows();
        self.reserve(m);
        self.forward_layers(x, 0..self.acts.len());
        self.cost(y, m)
    }

    /// The forward pass through `layers` (the activations below them already computed).
    fn forward_layers(&mut self, x: ArrayView2<F>, layers: Range<usize>) {
        let m = x.nrows();
        let last = self.acts.len() - 1;
        let needs_z = self.head.needs_z();
        let all = self.net.layers().iter().enumerate();
        for (l, layer) in all.take(layers.end).skip(layers.start) {
            let (before, rest) = self.acts.split_at_mut(l);
            let input = if l == 0 {
                x.view()
            } else {
                before[l - 1].slice(s![..m, ..])
            };
            let mut out = rest[0].slice_mut(s![..m, ..]);
            if l == last && needs_z {
                layer.affine(&input, &mut out, self.threads);
                self.z_out.slice_mut(s![..m, ..]).assign(&out);
                let activation = layer.activation;
                team::rows(out, &|_, mut block| activation.forward(&mut block));
            } else {
                layer.forward(&input, &mut out, self.threads);
            }
        }
    }

    /// The batch's cost from the output layer's activations of the forward pass.
    fn cost(&self, y: ArrayView2<F>, m: usize) -> BatchStats<F> {
        let last = self.acts.len() - 1;
        let a = self.acts[last].slice(s![..m, ..]);
        let z = self.z_out.slice(s![..m, ..]);
        let weights: Option<ArrayView1<F>> = self.cost_weights.as_ref().map(|w| w.view());
        BatchStats {
            cost_sum: self.head.cost_sum(&z, &a, &y, weights),
            rows: m,
        }
    }

    /// Back propagation after [`Fitter::forward`]. With `Some(lr)` every layer is updated as soon
    /// as `δ` for the layer below has been computed from its (old) weights; with `None` only the
    /// gradients are stored.
    fn backward(&mut self, x: ArrayView2<F>, y: ArrayView2<F>, lr: Option<F>) {
        let m = x.nrows();
        let inv_m = F::one() / F::from_f64(m as f64);
        let n = self.net.layers().len();
        {
            let a = self.acts[n - 1].slice(s![..m, ..]);
            let mut d = self.deltas[n - 1].slice_mut(s![..m, ..]);
            self.head.delta(&a, &y, &mut d);
        }
        let layers = self.net.layers_mut();
        for l in (0..n).rev() {
            let (dlo, dhi) = self.deltas.split_at_mut(l);
            let delta = dhi[0].slice(s![..m, ..]);
            if l > 0 {
                let mut dprev = dlo[l - 1].slice_mut(s![..m, ..]);
                let aprev = self.acts[l - 1].slice(s![..m, ..]);
                let activation = layers[l - 1].activation;
                // σ' is applied to each panel of δ·W by the thread that computed it (on W, the
                // panels of the layer below's units, whose outputs that thread computed too).
                let then = |r: usize, c: usize, mut piece: ArrayViewMut2<F>| {
                    let (h, w) = piece.dim();
                    activation.backward(&aprev.slice(s![r..r + h, c..c + w]), &mut piece);
                };
                let elementwise = activation.is_elementwise();
                gemm(
                    F::zero(),
                    &mut dprev,
                    F::one(),
                    &delta,
                    &layers[l].weights.view(),
                    self.threads,
                    elementwise.then_some(&then),
                );
                if !elementwise {
                    team::rows(dprev, &|first, mut block| {
                        let a = aprev.slice(s![first..first + block.nrows(), ..]);
                        activation.backward(&a, &mut block);
                    });
                }
            }
            let a_prev = if l == 0 {
                x
            } else {
                self.acts[l - 1].slice(s![..m, ..])
            };
            let layer = &mut layers[l];
            // The bias's share is computed beside the weights' product, by whichever thread is
            // free (it reads only `delta`).
            match lr {
                Some(lr) if self.fused_sgd => {
                    let decay = F::one() - lr * self.l2;
                    let bias = Mutex::new(&mut layer.bias);
                    gemm_weights(
                        decay,
                        &mut layer.weights.view_mut(),
                        -lr * inv_m,
                        &delta.t(),
                        &a_prev,
                        self.threads,
                        &|| {
                            let mut bias = bias.lock().unwrap_or_else(PoisonError::into_inner);
                            for row in delta.rows() {
                                bias.scaled_add(-lr * inv_m, &row);
                            }
                        },
                    );
                }
                _ => {
                    let g = &mut self.grads[l];
                    let bias = Mutex::new(&mut g.bias);
                    gemm_weights(
                        F::zero(),
                        &mut g.weights.view_mut(),
                        inv_m,
                        &delta.t(),
                        &a_prev,
                        self.threads,
                        &|| {
                            let mut bias = bias.lock().unwrap_or_else(PoisonError::into_inner);
                            bias.fill(F::zero());
                            for row in delta.rows() {
                                **bias += &row;
                            }
                            **bias *= inv_m;
                        },
                    );
                    if self.l2 != F::zero() {
                        g.weights.scaled_add(self.l2, &layer.weights);
                    }
                    if let Some(lr) = lr {
                        self.state.apply(l, layer, g, lr);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Activation, LayerSpec, NetworkSpec};
    use rand::SeedableRng;

    #[test]
    fn the_network_comes_back_row_major_with_the_values_it_trained_to() {
        let spec = NetworkSpec {
            inputs: 5,
            layers: vec![
                LayerSpec {
                    units: 4,
                    activation: Activation::Relu,
                },
                LayerSpec {
                    units: 3,
                    activation: Activation::Softmax,
                },
            ],
            loss: Loss::CrossEntropy,
        };
        let net = Network::<f32>::init(&spec, &mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
        let mut f = Fitter::new(net, Loss::CrossEntropy, &Optimizer::Sgd, 0.0, 6, 1).unwrap();
        assert!(!f.network().layers()[0].weights.is_standard_layout());
        let x = Array2::from_shape_fn((6, 5), |(r, c)| (r * 5 + c) as f32 / 30.0);
        let y = Array2::from_shape_fn((6, 3), |(r, c)| f32::from(r % 3 == c));
        f.step(x.view(), y.view(), 0.5);
        let (snapshot, trained) = (f.snapshot(), f.network().clone());
        for net in [snapshot, f.into_network()] {
            assert!(net.layers().iter().all(|l| l.weights.is_standard_layout()));
            assert_eq!(net, trained, "the same values, in row-major order");
        }
    }
}
