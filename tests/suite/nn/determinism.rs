//! Same data + spec + parameters + seed ⇒ bit-identical weights and cost history, whatever the
//! thread count — on a network whose products are shared among the threads (a helper gathers
//! the next batch beside the unshared output layer) and on one whose products are all too small
//! to share (a helper gathers beside the whole step); and a trained model round-trips through
//! serde exactly.

use mlpd::nn::{
    Activation, Dataset, Fitter, Label, LayerSpec, Loss, Network, NetworkSpec, NoObserver,
    Optimizer, TrainOutcome, TrainParams, train,
};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A run's shape: the hidden layer's width and the batch size.
#[derive(Clone, Copy, Debug)]
struct Shape {
    hidden: usize,
    batch: usize,
}

/// Big enough that the matrix products really run on several threads.
const SHARED: Shape = Shape {
    hidden: 256,
    batch: 64,
};
/// Small enough that no product is shared: a helper gathers the batches beside whole steps.
const BESIDE: Shape = Shape {
    hidden: 16,
    batch: 10,
};

fn spec(shape: Shape) -> NetworkSpec {
    NetworkSpec {
        inputs: 300,
        layers: vec![
            LayerSpec {
                units: shape.hidden,
                activation: Activation::Relu,
            },
            LayerSpec {
                units: 10,
                activation: Activation::Softmax,
            },
        ],
        loss: Loss::CrossEntropy,
    }
}

fn run(threads: usize, optimizer: Optimizer) -> TrainOutcome {
    run_shape(SHARED, threads, optimizer)
}

fn run_shape(shape: Shape, threads: usize, optimizer: Optimizer) -> TrainOutcome {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = Array2::from_shape_fn((640, 300), |_| rng.random::<f32>());
    let labels: Vec<Label> = (0..640)
        .map(|_| Label::Int(rng.random_range(0..10)))
        .collect();
    let data = Dataset::classification(x, &labels).unwrap();
    let spec = spec(shape);
    let params = TrainParams {
        epochs: 2,
        learning_rate: 0.05,
        batch_size: shape.batch,
        optimizer,
        validation_split: 0.1,
        seed: 9,
        ..Default::default()
    };
    train(&spec, &data, &params, threads, &mut NoObserver).unwrap()
}

fn bits(o: &TrainOutcome) -> (Vec<u32>, Vec<u64>) {
    let w = o
        .model
        .network
        .layers()
        .iter()
        .flat_map(|l| l.weights.iter().chain(l.bias.iter()).map(|v| v.to_bits()))
        .collect();
    let h = o
        .history
        .iter()
        .flat_map(|r| [r.cost.to_bits(), r.val_cost.unwrap().to_bits()])
        .collect();
    (w, h)
}

#[test]
fn two_runs_and_two_thread_counts_give_identical_bits() {
    for shape in [SHARED, BESIDE] {
        let net = Network::<f32>::init(&spec(shape), &mut ChaCha8Rng::seed_from_u64(0));
        let fitter = Fitter::new(
            net,
            Loss::CrossEntropy,
            &Optimizer::Sgd,
            0.0,
            shape.batch,
            2,
        );
        assert_eq!(
            fitter.unwrap().shares_steps(shape.batch),
            shape.hidden == SHARED.hidden,
            "{shape:?} takes the path it is meant to test"
        );
        for opt in [Optimizer::Sgd, Optimizer::adam()] {
            let a = bits(&run_shape(shape, 1, opt.clone()));
            assert_eq!(
                a,
                bits(&run_shape(shape, 1, opt.clone())),
                "{shape:?} {opt:?}: two single-threaded runs differ"
            );
            for threads in [2, 3] {
                assert_eq!(
                    a,
                    bits(&run_shape(shape, threads, opt.clone())),
                    "{shape:?} {opt:?}: 1 and {threads} threads differ"
                );
            }
        }
    }
}

#[test]
fn a_trained_model_round_trips_through_json_exactly() {
    let out = run(1, Optimizer::adam());
    let json = serde_json::to_string(&out.model).unwrap();
    let back: mlpd::nn::TrainedModel = serde_json::from_str(&json).unwrap();
    assert_eq!(back, out.model);
    back.validate().unwrap();
    let x = Array2::from_shape_fn((5, 300), |(i, j)| ((i * 7 + j) % 13) as f32 / 13.0);
    let (p, q) = (
        out.model.predict(x.view()).unwrap(),
        back.predict(x.view()).unwrap(),
    );
    assert_eq!(p.outputs.mapv(f32::to_bits), q.outputs.mapv(f32::to_bits));
    assert_eq!(p.labels, q.labels);
}
