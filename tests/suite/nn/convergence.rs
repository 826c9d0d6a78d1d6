//! Convergence on real data (UCI datasets as shipped with scikit-learn, in `datasets/`), each
//! with a fixed seed, judged on a held-out 25% the network never saw.

use super::load;
use mlpd::nn::{
    Activation, Dataset, EarlyStopping, LayerSpec, Loss, NetworkSpec, NoObserver, Normalization,
    Optimizer, Targets, TrainParams, holdout, train,
};

fn spec(inputs: usize, layers: &[(usize, Activation)], loss: Loss) -> NetworkSpec {
    NetworkSpec {
        inputs,
        layers: layers
            .iter()
            .map(|&(units, activation)| LayerSpec { units, activation })
            .collect(),
        loss,
    }
}

/// Trains on 75% of `data` and returns the model's accuracy (classifiers) or R² (regression)
/// on the other 25%.
fn held_out_score(data: &Dataset, spec: &NetworkSpec, params: &TrainParams) -> f64 {
    let (train_rows, test_rows) = holdout(data, 0.25, 12345);
    let (tr, te) = (data.subset(&train_rows), data.subset(&test_rows));
    let out = train(spec, &tr, params, 1, &mut NoObserver).expect("training succeeds");
    let pred = out.model.predict(te.features().view()).unwrap();
    match te.targets() {
        Targets::Classes { labels, indices } => {
            let got = pred.labels.expect("a classifier predicts labels");
            let right = got
                .iter()
                .zip(indices)
                .filter(|&(g, &i)| *g == labels.get(i as usize).unwrap())
                .count();
            right as f64 / indices.len() as f64
        }
        Targets::Values(y) => {
            let mean = y.mean().unwrap() as f64;
            let ss_tot: f64 = y.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
            let ss_res: f64 = y
                .iter()
                .zip(pred.outputs.iter())
                .map(|(&v, &p)| (v as f64 - p as f64).powi(2))
                .sum();
            1.0 - ss_res / ss_tot
        }
    }
}

fn adam(epochs: u32, lr: f64, batch: usize, normalize: Normalization) -> TrainParams {
    TrainParams {
        epochs,
        learning_rate: lr,
        batch_size: batch,
        optimizer: Optimizer::adam(),
        normalize,
        seed: 7,
        ..Default::default()
    }
}

#[test]
fn xor_is_learned() {
    let x = ndarray::array![[0.0f32, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]];
    let data = Dataset::classification(x.clone(), &[0, 1, 1, 0].map(mlpd::nn::Label::Int)).unwrap();
    let s = spec(
        2,
        &[(4, Activation::Tanh), (1, Activation::Sigmoid)],
        Loss::CrossEntropy,
    );
    let params = TrainParams {
        epochs: 2000,
        learning_rate: 0.5,
        batch_size: 4,
        optimizer: Optimizer::Sgd,
        seed: 3,
        ..Default::default()
    };
    let out = train(&s, &data, &params, 1, &mut NoObserver).unwrap();
    let labels = out.model.predict(x.view()).unwrap().labels.unwrap();
    assert_eq!(
        labels,
        [0, 1, 1, 0].map(mlpd::nn::Label::Int),
        "history tail: {:?}",
        out.history.last()
    );
    assert!(out.history.last().unwrap().cost < 0.1);
}

#[test]
fn iris_reaches_95_percent() {
    let data = load("iris", "species");
    let s = spec(
        4,
        &[(16, Activation::Relu), (3, Activation::Softmax)],
        Loss::CrossEntropy,
    );
    let acc = held_out_score(&data, &s, &adam(200, 0.01, 16, Normalization::Standard));
    assert!(acc >= 0.95, "iris held-out accuracy {acc}");
}

#[test]
fn wine_reaches_95_percent_with_standardization() {
    let data = load("wine", "cultivar");
    let s = spec(
        13,
        &[(16, Activation::Tanh), (3, Activation::Softmax)],
        Loss::CrossEntropy,
    );
    let acc = held_out_score(&data, &s, &adam(100, 0.01, 16, Normalization::Standard));
    assert!(acc >= 0.95, "wine held-out accuracy {acc}");
}

#[test]
fn digits_reach_95_percent() {
    let data = load("digits", "digit");
    let s = spec(
        64,
        &[(64, Activation::Relu), (10, Activation::Softmax)],
        Loss::CrossEntropy,
    );
    let acc = held_out_score(&data, &s, &adam(40, 0.005, 32, Normalization::Minmax));
    assert!(acc >= 0.95, "digits held-out accuracy {acc}");
}

#[test]
fn digits_reach_95_percent_with_the_classic_sigmoid_mse_sgd_network() {
    let data = load("digits", "digit");
    let s = spec(
        64,
        &[(30, Activation::Sigmoid), (10, Activation::Sigmoid)],
        Loss::Mse,
    );
    let params = TrainParams {
        optimizer: Optimizer::Sgd,
        ..adam(60, 3.0, 10, Normalization::Minmax)
    };
    let acc = held_out_score(&data, &s, &params);
    assert!(
        acc >= 0.95,
        "digits (sigmoid/mse/sgd) held-out accuracy {acc}"
    );
}

#[test]
fn breast_cancer_reaches_95_percent_with_one_sigmoid_output() {
    let data = load("breast_cancer", "diagnosis");
    let s = spec(
        30,
        &[(16, Activation::Relu), (1, Activation::Sigmoid)],
        Loss::CrossEntropy,
    );
    let acc = held_out_score(&data, &s, &adam(60, 0.005, 16, Normalization::Standard));
    assert!(acc >= 0.95, "breast cancer held-out accuracy {acc}");
}

#[test]
fn diabetes_regression_reaches_r2_0_4_on_raw_targets() {
    // Targets 25–346 in raw units: target standardization is automatic for a linear output.
    let data = load("diabetes", "progression");
    let s = spec(
        10,
        &[(16, Activation::Relu), (1, Activation::Identity)],
        Loss::Mse,
    );
    let params = TrainParams {
        validation_split: 0.2,
        early_stopping: Some(EarlyStopping {
            patience: 20,
            min_delta: 0.0,
            restore_best: true,
        }),
        l2: 1e-3,
        ..adam(400, 0.003, 16, Normalization::Standard)
    };
    let r2 = held_out_score(&data, &s, &params);
    assert!(r2 >= 0.4, "diabetes held-out R² {r2}");
}

#[test]
fn reported_mse_is_exactly_half_mean_squared_error_in_target_units() {
    // J = 1/(2n)·Σ‖y − ŷ‖², recomputed here from the model's own predictions on the validation rows.
    let data = load("diabetes", "progression");
    let s = spec(
        10,
        &[(8, Activation::Tanh), (1, Activation::Identity)],
        Loss::Mse,
    );
    let params = TrainParams {
        validation_split: 0.3,
        ..adam(3, 0.01, 32, Normalization::Standard)
    };
    let out = train(&s, &data, &params, 1, &mut NoObserver).unwrap();
    let (_, val) = holdout(&data, 0.3, params.seed);
    let v = data.subset(&val);
    let pred = out.model.predict(v.features().view()).unwrap().outputs;
    let Targets::Values(y) = v.targets() else {
        unreachable!()
    };
    let j: f64 = y
        .iter()
        .zip(pred.iter())
        .map(|(&y, &p)| (y as f64 - p as f64).powi(2))
        .sum::<f64>()
        / (2.0 * y.nrows() as f64);
    let reported = out.history.last().unwrap().val_cost.unwrap();
    assert!(
        (reported - j).abs() <= 1e-4 * j,
        "reported {reported}, recomputed {j}"
    );
    assert!(
        j > 100.0,
        "the cost is in raw target units, not standardized ones: {j}"
    );
}

#[test]
fn a_price_regression_in_raw_units_trains_with_default_settings() {
    // Prices in the hundreds of thousands from features in raw units (m², rooms, year):
    // price = 2,000·area + 15,000·rooms + 500·(year − 1950) + 50,000 (+ noise).
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let n = 600;
    let x = ndarray::Array2::from_shape_fn((n, 3), |(_, j)| match j {
        0 => rng.random_range(40.0f32..250.0),
        1 => rng.random_range(1.0f32..7.0).round(),
        _ => rng.random_range(1950.0f32..2024.0).round(),
    });
    let y = ndarray::Array2::from_shape_fn((n, 1), |(i, _)| {
        2000.0 * x[[i, 0]]
            + 15000.0 * x[[i, 1]]
            + 500.0 * (x[[i, 2]] - 1950.0)
            + 50000.0
            + rng.random_range(-5000.0f32..5000.0)
    });
    let data = Dataset::regression(x, y).unwrap();
    let s = spec(
        3,
        &[(16, Activation::Relu), (1, Activation::Identity)],
        Loss::Mse,
    );
    // The service's defaults: adam, lr 0.001, batch 32, standard input scaling, automatic target scaling.
    let params = TrainParams {
        epochs: 100,
        normalize: Normalization::Standard,
        ..Default::default()
    };
    let r2 = held_out_score(&data, &s, &params);
    assert!(r2 >= 0.95, "price R² {r2}");
}

#[test]
fn early_stopping_stops_and_restores_the_best_epoch() {
    let data = load("iris", "species");
    let s = spec(
        4,
        &[(16, Activation::Relu), (3, Activation::Softmax)],
        Loss::CrossEntropy,
    );
    let params = TrainParams {
        validation_split: 0.3,
        early_stopping: Some(EarlyStopping {
            patience: 5,
            min_delta: 0.0,
            restore_best: true,
        }),
        ..adam(5000, 0.05, 8, Normalization::Standard)
    };
    let out = train(&s, &data, &params, 1, &mut NoObserver).unwrap();
    assert_eq!(out.stop_reason, mlpd::nn::StopReason::EarlyStopped);
    let last = out.history.last().unwrap().epoch;
    assert!(
        last < 5000 && out.best_epoch <= last - 5,
        "stopped at {last}, best {}",
        out.best_epoch
    );
    let best = out
        .history
        .iter()
        .map(|r| r.val_cost.unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(
        out.history[out.best_epoch as usize - 1].val_cost.unwrap(),
        best,
        "the best epoch has the lowest validation cost"
    );
    // The model holds the best epoch's weights: its validation cost is the best one.
    let (_, val) = holdout(&data, 0.3, params.seed);
    let v = data.subset(&val);
    let p = out.model.predict(v.features().view()).unwrap().outputs;
    let Targets::Classes { indices, .. } = v.targets() else {
        unreachable!()
    };
    let ce: f64 = indices
        .iter()
        .enumerate()
        .map(|(i, &c)| -(p[[i, c as usize]] as f64).ln())
        .sum::<f64>()
        / indices.len() as f64;
    assert!(
        (ce - best).abs() < 1e-4,
        "restored weights give {ce}, best was {best}"
    );
}

#[test]
fn a_time_limit_ends_training_with_the_weights_reached() {
    let data = load("digits", "digit");
    let s = spec(
        64,
        &[(32, Activation::Relu), (10, Activation::Softmax)],
        Loss::CrossEntropy,
    );
    let params = TrainParams {
        max_seconds: Some(0.3),
        ..adam(1_000_000, 0.01, 1, Normalization::Minmax)
    };
    let t = std::time::Instant::now();
    let out = train(&s, &data, &params, 1, &mut NoObserver).unwrap();
    assert!(t.elapsed().as_secs_f64() < 1.5, "took {:?}", t.elapsed());
    assert_eq!(out.stop_reason, mlpd::nn::StopReason::TimeLimit);
    assert!(!out.history.is_empty());
}

#[test]
fn an_observer_can_cancel_within_an_epoch_and_after_one() {
    use mlpd::nn::{EpochReport, Observer, TrainError};
    use std::cell::Cell;
    use std::ops::ControlFlow;
    struct StopAfter(Cell<u32>);
    impl Observer for StopAfter {
        fn should_stop(&self) -> bool {
            self.0.set(self.0.get() + 1);
            self.0.get() > 3
        }
    }
    let data = load("iris", "species");
    let s = spec(4, &[(3, Activation::Softmax)], Loss::CrossEntropy);
    let params = adam(10, 0.01, 10, Normalization::Standard);
    // Checked before every mini-batch: the 4th batch of epoch 1 never runs.
    let mut obs = StopAfter(Cell::new(0));
    let err = train(&s, &data, &params, 1, &mut obs).unwrap_err();
    assert_eq!(err, TrainError::Canceled { epoch: 1 });
    assert_eq!(obs.0.get(), 4);
    let mut after_two = |r: &EpochReport| {
        if r.epoch == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    assert_eq!(
        train(&s, &data, &params, 1, &mut after_two).unwrap_err(),
        TrainError::Canceled { epoch: 2 }
    );
}
