//! The serving forward pass (`nn::infer`), weights hot: microseconds per row of 784-256-128-10 by
//! batch size, and of a lone 784-30-10 row. A lone row takes the one-row path (AVX2 where there
//! is AVX2); batches of 2 or more take the two-rows-per-register kernel where there is AVX-512.
//!
//! Then the predict body's text: µs to read a one-row body of 784 values into the input matrix
//! (four decimals each, as `bench/predict.sh` sends, and shortest-f64 decimals, as Python's
//! json.dumps writes), beside serde_json reading the same body into nested vectors.
//!
//!   cargo bench --bench infer [-- parse]     # `parse`: the body's text alone
use mlpd::nn::{Network, NetworkSpec};
use rand::SeedableRng;
use std::time::Instant;

fn network(spec: &str) -> Network<f32> {
    let spec: NetworkSpec = serde_json::from_str(spec).expect("a valid spec");
    Network::init(&spec, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1))
}

/// The best of 3 timings of `iters` passes over `rows` rows, in µs per row.
fn per_row(net: &Network<f32>, rows: usize, iters: usize) -> f64 {
    let x = ndarray::Array2::<f32>::from_shape_fn((rows, net.inputs()), |(r, c)| {
        ((r * 7 + c) % 13) as f32 / 13.0
    });
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(net.predict_rows(std::hint::black_box(x.view())));
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / (iters * rows) as f64);
    }
    best
}

fn main() {
    if std::env::args().any(|a| a == "parse") {
        return parse();
    }
    let w = network(
        r#"{"inputs":784,"layers":[{"units":256,"activation":"relu"},{"units":128,"activation":"relu"},
            {"units":10,"activation":"softmax"}],"loss":"cross_entropy"}"#,
    );
    #[cfg(target_arch = "x86_64")]
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    println!("784-256-128-10 forward pass (AVX-512: {avx512})");
    let mut lone = 0.0;
    for rows in [1usize, 2, 3, 4, 8, 9, 16, 17, 32, 64] {
        let best = per_row(&w, rows, 40_000 / rows);
        if rows == 1 {
            lone = best;
        }
        println!(
            "rows {rows:3}: {best:6.2} µs/row  ({:.2}× a lone row's rate)",
            lone / best
        );
    }
    let n = network(
        r#"{"inputs":784,"layers":[{"units":30,"activation":"sigmoid"},{"units":10,"activation":"sigmoid"}],
            "loss":"mse"}"#,
    );
    println!("784-30-10, a lone row: {:.3} µs", per_row(&n, 1, 200_000));
    parse();
}

/// The best of 5 timings of `f` over `iters` calls, in µs per call.
fn best_us(iters: usize, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn parse() {
    use rand::Rng;
    #[derive(serde::Deserialize)]
    struct Body {
        inputs: Vec<Vec<f32>>,
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    // As bench/predict.sh sends, and as Python's json.dumps writes a float (up to 17 digits).
    for (what, digits) in [("4 decimals", Some(4)), ("shortest f64", None)] {
        let row: Vec<String> = (0..784)
            .map(|_| {
                let v = rng.random::<f64>();
                digits.map_or_else(|| format!("{v}"), |d| format!("{v:.d$}"))
            })
            .collect();
        let body = format!("{{\"inputs\": [[{}]]}}", row.join(", "));
        let ours = best_us(20_000, || {
            let x = mlpd::domain::json_matrix::inputs_only(std::hint::black_box(body.as_bytes()));
            std::hint::black_box(x.expect("a valid body"));
        });
        let serde = best_us(20_000, || {
            let b: Body =
                serde_json::from_slice(std::hint::black_box(body.as_bytes())).expect("valid");
            std::hint::black_box(b.inputs);
        });
        println!(
            "a one-row body of 784 values, {what} ({} bytes): {ours:.2} µs ({:.1} ns a value); \
             serde_json into vectors {serde:.2} µs ({:.2}×)",
            body.len(),
            ours * 1e3 / 784.0,
            serde / ours
        );
    }
}
