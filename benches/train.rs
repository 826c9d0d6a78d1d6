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
//!
//! `-- --probe` prints only how long a cache line takes to go from one core to another and back
//! (with 2 or more threads, each epoch is tagged with it, measured before and after the epoch,
//! and the medians of the epochs with the cores near and far are printed). A virtual machine's two cores may
//! sit next to each other (≈ 50–100 ns here) or far apart (≈ 350–450 ns: another CCD or socket),
//! and the hypervisor moves them every few seconds; every product a team shares moves data
//! between the cores, so the 2-thread figures of any implementation depend on it. compare.sh
//! groups its 2-thread runs by it.

use mlpd::nn::{
    Activation, Dataset, EpochReport, Label, LayerSpec, Loss, NetworkSpec, Optimizer, TrainParams,
    train,
};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::spin_loop;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const ROWS: usize = 60_000;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The round trip of one cache line between two threads, in ns: the median of 9 rounds of
/// 20,000 handoffs. `None` on a single core, where it would measure the scheduler.
fn core_round_trip() -> Option<f64> {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return None;
    }
    const ROUNDS: u64 = 9;
    const TRIPS: u64 = 20_000;
    let line = AtomicU64::new(0);
    // Waits until `line` holds `v`; yields now and then, so that it ends even on one core.
    let wait = |v: u64| {
        let mut polls = 0u32;
        while line.load(Ordering::Acquire) != v {
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(256) {
                std::thread::yield_now();
            } else {
                spin_loop();
            }
        }
    };
    let mut ns: Vec<f64> = std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..ROUNDS * TRIPS {
                wait(2 * i + 1);
                line.store(2 * i + 2, Ordering::Release);
            }
        });
        (0..ROUNDS)
            .map(|r| {
                let t = Instant::now();
                for i in r * TRIPS..(r + 1) * TRIPS {
                    line.store(2 * i + 1, Ordering::Release);
                    wait(2 * i + 2);
                }
                t.elapsed().as_nanos() as f64 / TRIPS as f64
            })
            .collect()
    });
    ns.sort_by(f64::total_cmp);
    Some(ns[ns.len() / 2])
}

/// Round trips under this many ns (`NEAR_NS` in the environment, else 150), before and after a
/// run, put the cores `near` (both over: `far`, else `mixed`).
fn cores(before: f64, after: f64) -> &'static str {
    let near: f64 = std::env::var("NEAR_NS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150.0);
    match (before < near, after < near) {
        (true, true) => "near",
        (false, false) => "far",
        _ => "mixed",
    }
}

fn main() {
    if std::env::args().any(|a| a == "--probe") {
        match core_round_trip() {
            Some(ns) => println!("core-to-core round trip: {ns:.0} ns"),
            None => println!("core-to-core round trip: n/a (one core)"),
        }
        return;
    }
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

    // With a team, each epoch is tagged with the cores' round trip just before and after it
    // (the probe runs between epochs, outside their timing).
    let probe = || (threads > 1).then(core_round_trip).flatten();
    let mut trip = probe();
    let mut last = Instant::now();
    let mut times = Vec::new();
    let mut placed: Vec<(&str, f64)> = Vec::new();
    let mut observer = |r: &EpochReport| {
        let t = last.elapsed().as_secs_f64();
        let (before, after) = (trip, probe());
        let tag = match (before, after) {
            (Some(b), Some(a)) => {
                let place = cores(b, a);
                placed.push((place, t));
                format!("  [cores {b:.0} → {a:.0} ns: {place}]")
            }
            _ => String::new(),
        };
        trip = after;
        println!(
            "epoch {}: {t:.3}s  {:.0} samples/s  (cost {:.4}){tag}",
            r.epoch,
            ROWS as f64 / t,
            r.cost
        );
        times.push(t);
        last = Instant::now();
        ControlFlow::Continue(())
    };
    train(&spec, &data, &params, threads, &mut observer).expect("training succeeds");
    for place in ["near", "far"] {
        let mut t: Vec<f64> = placed
            .iter()
            .filter(|p| p.0 == place)
            .map(|p| p.1)
            .collect();
        if !t.is_empty() {
            t.sort_by(f64::total_cmp);
            println!(
                "epochs with the cores {place}: median {:.0} samples/s ({} of {})",
                ROWS as f64 / t[t.len() / 2],
                t.len(),
                placed.len()
            );
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let weights: usize = spec.parameter_count();
    println!(
        "mlpd config {config} threads {threads}: median {:.0} samples/s ({:.1} GFLOP/s by the 6·weights rule)",
        ROWS as f64 / median,
        6.0 * weights as f64 * ROWS as f64 / median / 1e9
    );
}
