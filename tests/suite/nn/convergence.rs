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
