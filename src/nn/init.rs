//! Weight initialisation from a seeded ChaCha stream (stable across crate releases, unlike
//! `StdRng`): Glorot/Xavier uniform for sigmoid, tanh, identity and softmax layers, He normal
//! for rectifiers. Biases start at zero.

use super::{Activation, Scalar};
use ndarray::Array2;
use rand::Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// An `out × in` weight matrix for a layer with the given activation.
pub fn weights<F: Scalar, R: Rng>(
    rng: &mut R,
    fan_in: usize,
    fan_out: usize,
    activation: Activation,
) -> Array2<F> {
    let mut w = Array2::<F>::zeros((fan_out, fan_in));
    if activation.uses_he_init() {
        let std = (2.0 / fan_in as f64).sqrt();
        let normal = Normal::new(0.0, std).expect("std is finite and positive");
        w.mapv_inplace(|_| F::from_f64(normal.sample(rng)));
    } else {
        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
        let uniform = Uniform::new_inclusive(-limit, limit).expect("limit is finite");
        w.mapv_inplace(|_| F::from_f64(uniform.sample(rng)));
    }
    w
}
