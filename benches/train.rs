//! Training speed on MNIST-shaped data (60,000 × 784 in [0, 1], 10 classes, synthetic: the
//! values do not change the speed), in the configurations of `bench/baseline.py`:
//!
//!   N  784-30-10, sigmoid everywhere, mse, sgd lr 3.0, batch 10
//!   W  784-256-128-10, relu + softmax/cross_entropy, sgd lr 0.1, batch 64
//!   B  784-1024-1024-10, relu + softmax/cross_entropy, sgd lr 0.05, batch 256 (GEMM-bound)
//!
//! `cargo bench --bench train -- [--config N|W|B] [--threads T] [--epochs E] [--batch B]` prints samples/s per
//! epoch and the median. `bench/compare.sh` runs it beside the NumPy/PyTorch baselines (1 and 2 threads) and
//! prints the ratios.

use mlpd::nn::{
    Activation, Dataset, EpochReport, Label, LayerSpec, Loss, NetworkSpec, Optimizer, TrainParams,
    train,
};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ops::ControlFlow;
use std::time::Instant;

const ROWS: usize = 60_000;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let config = arg("--config").unwrap_or_else(|| "N".into());
    let threads: usize = arg("--threads").map_or(1, |t| t.parse().expect("--threads N"));
    let epochs: u32 = arg("--epochs").map_or(3, |t| t.parse().expect("--epochs N"));
    let (layers, loss, batch, lr) = match config.as_str() {
        "N" => (
            vec![(30, Activation::Sigmoid), (10, Activation::Sigmoid)],
            Loss::Mse,
            10,
            3.0,
        ),
        "W" => (
            vec![
                (256, Activation::Relu),
                (128, Activation::Relu),
                (10, Activation::Softmax),
            ],
            Loss::CrossEntropy,
            64,
            0.1,
        ),
        "B" => (
            vec![
                (1024, Activation::Relu),
                (1024, Activation::Relu),
                (10, Activation::Softmax),
            ],
            Loss::CrossEntropy,
            256,
            0.05,
        ),
        other => panic!("unknown config {other}: use N, W or B"),
    };
    let spec = NetworkSpec {
        inputs: 784,
        layers: layers
            .iter()
            .map(|&(units, activation)| LayerSpec { units, activation })
            .collect(),
        loss,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x = Array2::from_shape_fn((ROWS, 784), |_| rng.random::<f32>());
    let labels: Vec<Label> = (0..ROWS)
        .map(|_| Label::Int(rng.random_range(0..10)))
        .collect();
    let data = Dataset::classification(x, &labels).expect("synthetic data is valid");
    let params = TrainParams {
        epochs,
        learning_rate: lr,
        batch_size: arg("--batch").map_or(batch, |b| b.parse().expect("--batch N")),
        optimizer: Optimizer::Sgd,
        seed: 0,
        ..Default::default()
    };

    let mut last = Instant::now();
    let mut times = Vec::new();
    let mut observer = |r: &EpochReport| {
        let t = last.elapsed().as_secs_f64();
        last = Instant::now();
        println!(
            "epoch {}: {t:.3}s  {:.0} samples/s  (cost {:.4})",
            r.epoch,
            ROWS as f64 / t,
            r.cost
        );
        times.push(t);
        ControlFlow::Continue(())
    };
    train(&spec, &data, &params, threads, &mut observer).expect("training succeeds");
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let weights: usize = spec.parameter_count();
    println!(
        "mlpd config {config} threads {threads}: median {:.0} samples/s ({:.1} GFLOP/s by the 6·weights rule)",
        ROWS as f64 / median,
        6.0 * weights as f64 * ROWS as f64 / median / 1e9
    );
}
