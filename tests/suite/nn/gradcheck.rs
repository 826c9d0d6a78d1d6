//! Central-difference gradient checks in f64, through the same generic code that trains in f32.
//!
//! For every parameter p: (J(p+ε) − J(p−ε)) / 2ε must agree with back propagation's ∂J/∂p to
//! |numeric − analytic| / max(|numeric|, |analytic|, 1e-3) < 1e-6, with ε = 1e-5. In f64 the
//! truncation error is O(ε²) ≈ 1e-10 and the rounding error of J (≈ 1e-16) over 2ε ≈ 1e-11, so
//! the check has a margin of 10⁴ while any real bug shows up as an error of order 1. Gradients
//! below 1e-3 are compared absolutely (to 1e-9), where a relative error would only measure noise.

use mlpd::nn::{Activation, Fitter, LayerSpec, Loss, Network, NetworkSpec, Optimizer};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const EPS: f64 = 1e-5;
const TOL: f64 = 1e-6;

const HIDDEN: [Activation; 5] = [
    Activation::Identity,
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Relu,
    Activation::LeakyRelu,
];

/// Every output activation with every cost it can be trained with.
const HEADS: [(Activation, Loss); 8] = [
    (Activation::Identity, Loss::Mse),
    (Activation::Sigmoid, Loss::Mse),
    (Activation::Tanh, Loss::Mse),
    (Activation::Relu, Loss::Mse),
    (Activation::LeakyRelu, Loss::Mse),
    (Activation::Softmax, Loss::Mse),
    (Activation::Softmax, Loss::CrossEntropy),
    (Activation::Sigmoid, Loss::CrossEntropy),
];

fn targets(
    rng: &mut ChaCha8Rng,
    rows: usize,
    outputs: usize,
    out: Activation,
    loss: Loss,
) -> Array2<f64> {
    match (out, loss) {
        (Activation::Softmax, _) => {
            let mut y = Array2::zeros((rows, outputs));
            for r in 0..rows {
                y[[r, rng.random_range(0..outputs)]] = 1.0;
            }
            y
        }
        (Activation::Sigmoid, _) => {
            Array2::from_shape_fn((rows, outputs), |_| rng.random_range(0.0..1.0))
        }
        _ => Array2::from_shape_fn((rows, outputs), |_| rng.random_range(-1.0..1.0)),
    }
}

/// Checks every weight and bias of a network built from `layers`; returns the worst relative error.
fn check(layers: &[(usize, Activation)], loss: Loss, l2: f64, seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let spec = NetworkSpec {
        inputs: 4,
        layers: layers
            .iter()
            .map(|&(units, activation)| LayerSpec { units, activation })
            .collect(),
        loss,
    };
    spec.validate().expect("valid spec");
    let net = Network::<f64>::init(&spec, &mut rng);
    let rows = 6;
    let x = Array2::from_shape_fn((rows, 4), |_| rng.random_range(-2.0..2.0));
    let (units, out) = *layers.last().unwrap();
    let y = targets(&mut rng, rows, units, out, loss);
    // Random biases too, so rectifiers see both sides of their kink.
    let mut f = Fitter::new(net, loss, &Optimizer::Sgd, l2, rows, 1).unwrap();
    for layer in f.network_mut().layers_mut() {
        layer.bias.mapv_inplace(|_| rng.random_range(-0.5..0.5));
    }
    let grads = f.gradients(x.view(), y.view());
    let mut worst = 0f64;
    for (l, grad) in grads.iter().enumerate() {
        let (rows_w, cols_w) = f.network().layers()[l].weights.dim();
        let mut params: Vec<(Option<(usize, usize)>, usize)> = Vec::new();
        for i in 0..rows_w {
            for j in 0..cols_w {
                params.push((Some((i, j)), 0));
            }
            params.push((None, i));
        }
        for (w, b) in params {
            let analytic = match w {
                Some(ij) => grad.weights[ij],
                None => grad.bias[b],
            };
            let nudge = |f: &mut Fitter<f64>, d: f64| {
                let layer = &mut f.network_mut().layers_mut()[l];
                match w {
                    Some(ij) => layer.weights[ij] += d,
                    None => layer.bias[b] += d,
                }
            };
            nudge(&mut f, EPS);
            let plus = f.objective(x.view(), y.view());
            nudge(&mut f, -2.0 * EPS);
            let minus = f.objective(x.view(), y.view());
            nudge(&mut f, EPS);
            let numeric = (plus - minus) / (2.0 * EPS);
            let err = (numeric - analytic).abs() / numeric.abs().max(analytic.abs()).max(1e-3);
            worst = worst.max(err);
        }
    }
    worst
}

#[test]
fn every_hidden_activation_with_every_output_and_cost() {
    let mut worst = 0f64;
    for (h, hidden) in HIDDEN.iter().enumerate() {
        for (k, &(out, loss)) in HEADS.iter().enumerate() {
            let units = if out == Activation::Softmax { 3 } else { 2 };
            let err = check(
                &[(5, *hidden), (units, out)],
                loss,
                0.0,
                (h * 10 + k) as u64,
            );
            assert!(
                err < TOL,
                "hidden {hidden:?}, output {out:?}, loss {loss:?}: relative error {err:e}"
            );
            worst = worst.max(err);
        }
    }
    println!("worst relative error over 40 activation × cost pairs: {worst:e}");
}

#[test]
fn three_layer_network_with_l2() {
    for (seed, &(out, loss)) in HEADS.iter().enumerate() {
        let units = if out == Activation::Softmax { 3 } else { 2 };
        let layers = [
            (6, Activation::Tanh),
            (5, Activation::LeakyRelu),
            (units, out),
        ];
        let err = check(&layers, loss, 0.01, 100 + seed as u64);
        assert!(
            err < TOL,
            "3 layers, output {out:?}, loss {loss:?}: relative error {err:e}"
        );
    }
}

#[test]
fn saturated_cross_entropy_stays_finite() {
    use mlpd::nn::{Dense, Head};
    // One layer whose z is ±1000: softmax and sigmoid saturate completely.
    for (out, units) in [(Activation::Softmax, 2), (Activation::Sigmoid, 2)] {
        let w = Array2::from_shape_vec((units, 1), vec![1000.0f32, -1000.0]).unwrap();
        let net = Network::from_layers(vec![Dense {
            weights: w,
            bias: ndarray::Array1::zeros(units),
            activation: out,
        }])
        .unwrap();
        let mut f = Fitter::new(net, Loss::CrossEntropy, &Optimizer::Sgd, 0.0, 1, 1).unwrap();
        assert!(f.head() != Head::Mse(out));
        let x = ndarray::array![[1.0f32]];
        let y = ndarray::array![[0.0f32, 1.0]]; // the wrong class is certain: cost ≈ 2000
        let cost = f.objective(x.view(), y.view());
        assert!(cost.is_finite() && cost > 999.0, "{out:?}: cost {cost}");
        let g = f.gradients(x.view(), y.view());
        assert!(
            g.iter().all(|g| g.weights.iter().all(|v| v.is_finite())),
            "{out:?}: gradient not finite"
        );
    }
}
