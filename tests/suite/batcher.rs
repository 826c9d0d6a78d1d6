//! The dynamic batcher: batched answers are bit-identical to unbatched ones, versions never
//! mix, a huge request does not hold up small ones, and overload is answered.

use mlpd::batcher::{BatchConfig, Batcher, PredictError, RUNTIME_WORK};
use mlpd::nn::{
    Activation, LabelSet, LayerSpec, Loss, Network, NetworkSpec, Normalization, Scaler,
    TrainedModel,
};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::time::Duration;

/// A 200-64-3 classifier with scaled inputs (above the inline threshold: it is batched).
fn model(seed: u64) -> Arc<TrainedModel> {
    model_of(seed, 200, 64)
}

/// A classifier with `inputs`, one hidden layer of `hidden` units and 3 outputs.
fn model_of(seed: u64, inputs: usize, hidden: usize) -> Arc<TrainedModel> {
    let spec = NetworkSpec {
        inputs,
        layers: vec![
            LayerSpec {
                units: hidden,
                activation: Activation::Relu,
            },
            LayerSpec {
                units: 3,
                activation: Activation::Softmax,
            },
        ],
        loss: Loss::CrossEntropy,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let network = Network::<f32>::init(&spec, &mut rng);
    let scaler = Scaler {
        kind: Normalization::Standard,
        shift: (0..inputs).map(|_| rng.random_range(-0.5..0.5)).collect(),
        scale: (0..inputs).map(|_| rng.random_range(0.5..2.0)).collect(),
    };
    let labels = LabelSet::Str(vec!["a".into(), "b".into(), "c".into()]);
    let m = TrainedModel::new(spec, network, scaler, None, Some(labels));
    m.validate().unwrap();
    Arc::new(m)
}

fn rows(n: usize, seed: u64) -> Array2<f32> {
    rows_of(n, 200, seed)
}

fn rows_of(n: usize, width: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((n, width), |_| rng.random_range(-3.0..3.0))
}

/// About 8·10⁹ multiply-adds with [`model_of`]`(_, 1000, 1000)`: a second or so here.
const LONG_ROWS: usize = 8_000;

fn batcher(workers: usize, max_rows: usize, wait: Duration, runtime_work: usize) -> Batcher {
    Batcher::start(BatchConfig {
        workers,
        max_rows,
        delay: Duration::ZERO,
        wait,
        runtime_work,
    })
    .unwrap()
}

/// Waits until the batcher has taken its first batch.
async fn started(b: &Batcher) {
    while b.stats().passes == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn bits(a: &Array2<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_are_merged_and_answered_as_if_alone_without_mixing_versions() {
    // Everything to the worker threads (no request is short enough for the runtime).
    merged_as_if_alone(batcher(1, 16, Duration::from_secs(30), 0)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn short_requests_are_merged_on_the_runtime_and_answered_as_if_alone() {
    // Every request (13k multiply-adds a row, at most 40 rows) is short: all are batched by the
    // drain task. On one runtime thread the 64 tasks all queue before it runs.
    let b = batcher(1, 16, Duration::from_secs(30), RUNTIME_WORK);
    let rows = merged_as_if_alone(b.clone()).await;
    // Full passes of 16 rows but at the end of each version's rows.
    let passes = b.stats().passes as usize;
    assert!(passes <= rows / 16 + 2, "{passes} passes for {rows} rows");
}

#[tokio::test(flavor = "current_thread")]
async fn a_pass_on_the_runtime_takes_at_most_runtime_work() {
    // About 1M multiply-adds a row: 3 rows fit 3.1M, so 20 one-row requests that all wait take
    // at least 7 passes, though 16 rows would fit `max_rows`.
    let m = model_of(12, 1000, 1000);
    let b = batcher(1, 16, Duration::from_secs(30), 3_100_000);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (b, m) = (b.clone(), m.clone());
        tasks.push(tokio::spawn(async move {
            let x = rows_of(1, 1000, 200 + i);
            let got = b.predict(m.clone(), x.clone()).await.unwrap();
            assert_eq!(
                bits(&got.outputs),
                bits(&m.predict(x.view()).unwrap().outputs)
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = b.stats();
    assert_eq!(stats.parts, 20);
    assert!(
        (7..20).contains(&stats.passes),
        "passes of at most 3 rows, some shared: {stats:?}"
    );
}

#[test]
fn a_drain_task_dropped_with_its_runtime_does_not_stall_later_requests() {
    let m = model(11);
    let b = batcher(1, 16, Duration::from_secs(30), RUNTIME_WORK);
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _inside = rt.enter();
        // Polled once: the request (10 rows, above the inline threshold) is queued and a drain
        // task spawned, which never runs.
        let mut pending = Box::pin(b.predict(m.clone(), rows(10, 12)));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(pending.as_mut().poll(&mut cx).is_pending());
        drop(pending);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let x = rows(10, 13);
    let got = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(10), b.predict(m.clone(), x.clone())).await
        })
        .expect("a new drain task serves the next request")
        .unwrap();
    assert_eq!(
        bits(&got.outputs),
        bits(&m.predict(x.view()).unwrap().outputs)
    );
    assert_eq!(b.stats().parts, 1, "the withdrawn request was not computed");
}

/// 64 concurrent requests over two versions, 1–40 rows each: every answer is the version's own
/// answer for those rows alone, bit for bit, and some requests shared a pass.
/// Returns the rows asked for.
async fn merged_as_if_alone(b: Batcher) -> usize {
    let (v1, v2) = (model(1), model(2));
    let mut tasks = Vec::new();
    let mut asked = 0;
    for i in 0..64u64 {
        let version = if i % 3 == 0 { v2.clone() } else { v1.clone() };
        let x = rows(1 + (i as usize * 7) % 40, 100 + i);
        asked += x.nrows();
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let got = b.predict(version.clone(), x.clone()).await.unwrap();
            (version, x, got)
        }));
    }
    for t in tasks {
        let (version, x, got) = t.await.unwrap();
        let alone = version.predict(x.view()).unwrap();
        assert_eq!(bits(&got.outputs), bits(&alone.outputs));
        assert_eq!(got.labels, alone.labels);
    }
    let stats = b.stats();
    assert!(
        stats.passes < stats.parts,
        "some requests shared a forward pass: {stats:?}"
    );
    asked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_request_takes_turns_with_small_ones() {
    let m = model_of(3, 1000, 1000);
    // On the worker thread alone, where the small ones queue behind the huge one's chunks.
    let b = batcher(1, 64, Duration::from_secs(60), 0);
    let x = rows_of(LONG_ROWS, 1000, 4);
    let huge = {
        let (b, m) = (b.clone(), m.clone());
        tokio::spawn(async move {
            b.predict(m, x).await.unwrap();
            std::time::Instant::now()
        })
    };
    // Once the huge one has started, ask for one row.
    started(&b).await;
    let one = rows_of(1, 1000, 5);
    let small = b.predict(m.clone(), one.clone()).await.unwrap();
    let small_done = std::time::Instant::now();
    let huge_done = huge.await.unwrap();
    assert!(
        small_done < huge_done,
        "the one-row request finished while the huge one still ran"
    );
    assert_eq!(
        bits(&small.outputs),
        bits(&m.predict(one.view()).unwrap().outputs)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_started_in_time_is_overloaded_and_never_computed() {
    let m = model_of(6, 1000, 1000);
    // One batch holds the only worker thread for a long time (its rows all fit one pass);
    // nothing is batched on the runtime, so the late request waits behind it.
    let b = batcher(1, 1 << 16, Duration::from_millis(300), 0);
    let x = rows_of(LONG_ROWS, 1000, 7);
    let long = {
        let (b, m) = (b.clone(), m.clone());
        tokio::spawn(async move { b.predict(m, x).await })
    };
    started(&b).await;
    let late = b.predict(m.clone(), rows_of(2, 1000, 8)).await;
    assert!(matches!(late, Err(PredictError::Overloaded)), "{late:?}");
    // The long one was started before the wait ran out: it completes.
    assert!(long.await.unwrap().is_ok());
    let stats = b.stats();
    assert_eq!(
        stats.parts, 1,
        "the withdrawn request was not computed: {stats:?}"
    );
}

#[tokio::test]
async fn bad_rows_are_refused_before_queueing() {
    let m = model(9);
    let b = batcher(1, 8, Duration::from_secs(1), RUNTIME_WORK);
    let mut x = rows(3, 10);
    x[(2, 5)] = f32::NAN;
    let err = b.predict(m.clone(), x).await.unwrap_err();
    assert!(matches!(err, PredictError::Model(_)), "{err:?}");
    let narrow = Array2::<f32>::zeros((1, 199));
    assert!(matches!(
        b.predict(m, narrow).await,
        Err(PredictError::Model(_))
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn a_short_request_not_started_in_time_on_the_runtime_is_overloaded() {
    let m = model(13);
    let b = batcher(1, 16, Duration::from_millis(20), RUNTIME_WORK);
    let late = {
        let (b, m) = (b.clone(), m.clone());
        // 10 rows: above the inline threshold, within the runtime's.
        tokio::spawn(async move { b.predict(m, rows(10, 14)).await })
    };
    // The request queues (and its drain task is spawned, to run after this task yields)...
    tokio::task::yield_now().await;
    // ...then the runtime is held past the wait before the drain task reaches it.
    std::thread::sleep(Duration::from_millis(60));
    let late = late.await.unwrap();
    assert!(matches!(late, Err(PredictError::Overloaded)), "{late:?}");
    assert_eq!(b.stats().parts, 0, "the late request was not computed");
    // A request reached in time is computed.
    let x = rows(10, 15);
    let got = b.predict(m.clone(), x.clone()).await.unwrap();
    assert_eq!(
        bits(&got.outputs),
        bits(&m.predict(x.view()).unwrap().outputs)
    );
    assert_eq!(b.stats().parts, 1);
}
