//! The training loop: a seeded validation split, scaling fitted on the training rows, epochs of
//! shuffled mini-batches, a report per epoch, early stopping, a wall-clock limit, cancellation.
//!
//! Runs on the caller's thread; with `threads > 1` its matrix products use a rayon pool of that
//! size built for the run, so the caller bounds the CPU a job takes. Randomness comes from three
//! ChaCha8 streams of the seed (init, split, shuffle), so results do not depend on the thread
//! count.

use super::matmul::Threads;
use super::spec::FieldError;
use super::{
    Dataset, Fitter, Head, LrSchedule, Network, NetworkSpec, Normalization, Optimizer, Scaler,
    Targets, TrainedModel,
};
use ndarray::{Array1, Array2, ArrayView2, s};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

const STREAM_INIT: u64 = 0;
const STREAM_SPLIT: u64 = 1;
const STREAM_SHUFFLE: u64 = 2;
/// Rows per forward pass when evaluating a whole split.
const EVAL_CHUNK: usize = 512;

/// Stop when the monitored cost has not improved by `min_delta` for `patience` epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    #[schema(minimum = 1)]
    pub patience: u32,
    /// The least decrease of the cost that counts as an improvement.
    #[serde(default)]
    #[schema(minimum = 0.0)]
    pub min_delta: f64,
    /// Whether the trained model gets the weights of the best epoch (default true).
    #[serde(default = "yes")]
    pub restore_best: bool,
}

fn yes() -> bool {
    true
}

/// Everything that shapes a training run (but not how many threads compute it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    pub epochs: u32,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub lr_schedule: LrSchedule,
    /// L2 weight decay λ (weights only).
    pub l2: f64,
    /// Fraction of rows held out for validation (stratified by class for classifiers), in [0, 1).
    pub validation_split: f64,
    pub early_stopping: Option<EarlyStopping>,
    pub normalize: Normalization,
    /// Standardize regression targets (inverted at prediction). `None`: when the output is
    /// linear (identity) with the quadratic cost.
    pub normalize_targets: Option<bool>,
    pub seed: u64,
    /// Stop after this many seconds of training (the model keeps the weights reached).
    pub max_seconds: Option<f64>,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            epochs: 20,
            learning_rate: 0.001,
            batch_size: 32,
            optimizer: Optimizer::adam(),
            lr_schedule: LrSchedule::Constant,
            l2: 0.0,
            validation_split: 0.0,
            early_stopping: None,
            normalize: Normalization::None,
            normalize_targets: None,
            seed: 0,
            max_seconds: None,
        }
    }
}

/// Limits on parameters, generous but finite.
pub const MAX_EPOCHS: u32 = 1_000_000;
pub const MAX_BATCH: usize = 1 << 20;

impl TrainParams {
    /// # Errors
    /// The first invalid field, named as in the request.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return Err(FieldError::new(
                "epochs",
                format!("must be between 1 and {MAX_EPOCHS}"),
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(FieldError::new(
                "learning_rate",
                "must be a positive number",
            ));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return Err(FieldError::new(
                "batch_size",
                format!("must be between 1 and {MAX_BATCH}"),
            ));
        }
        if !(self.l2 >= 0.0 && self.l2.is_finite()) {
            return Err(FieldError::new("l2", "must be a non-negative number"));
        }
        if !(0.0..1.0).contains(&self.validation_split) {
            return Err(FieldError::new("validation_split", "must be in [0, 1)"));
        }
        if let Some(es) = &self.early_stopping {
            if es.patience == 0 {
                return Err(FieldError::new(
                    "early_stopping.patience",
                    "must be at least 1",
                ));
            }
            if !(es.min_delta >= 0.0 && es.min_delta.is_finite()) {
                return Err(FieldError::new(
                    "early_stopping.min_delta",
                    "must be a non-negative number",
                ));
            }
        }
        if let Some(s) = self.max_seconds
            && !(s > 0.0 && s.is_finite())
        {
            return Err(FieldError::new("max_seconds", "must be a positive number"));
        }
        self.optimizer.validate()?;
        self.lr_schedule.validate()
    }
}

/// What one epoch achieved. Costs are in the targets' own units (the quadratic cost of
/// standardized targets is reported back in the original scale).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: u32,
    /// Mean training cost over the epoch's mini-batches, each evaluated before its update.
    pub cost: f64,
    /// Cost on the validation rows with the end-of-epoch weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_cost: Option<f64>,
    /// Fraction of training rows classified right during the epoch (classifiers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    pub learning_rate: f64,
    /// Time since training started.
    pub elapsed_ms: u64,
}

/// Watches a run: sees every epoch report and may stop the run.
pub trait Observer {
    /// After each epoch. `Break` cancels the run.
    fn on_epoch(&mut self, _report: &EpochReport) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// Checked before every mini-batch; `true` cancels the run.
    fn should_stop(&self) -> bool {
        false
    }
}

/// An observer that watches nothing.
pub struct NoObserver;
impl Observer for NoObserver {}

impl<F: FnMut(&EpochReport) -> ControlFlow<()>> Observer for F {
    fn on_epoch(&mut self, report: &EpochReport) -> ControlFlow<()> {
        self(report)
    }
}

/// Why a successful run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Completed,
    EarlyStopped,
    TimeLimit,
}

/// A successful run.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub model: TrainedModel,
    pub history: Vec<EpochReport>,
    pub stop_reason: StopReason,
    /// The epoch whose weights the model holds.
    pub best_epoch: u32,
}

/// Why a run produced no model.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("training was canceled during epoch {epoch}")]
    Canceled { epoch: u32 },
    #[error(
        "training diverged: the cost became non-finite in epoch {epoch}; try a smaller learning rate or normalized inputs"
    )]
    Diverged { epoch: u32 },
    #[error("could not start training threads: {0}")]
    Threads(String),
}

/// The alias kept for parameter errors.
pub type ParamError = FieldError;

/// How class or value targets become rows of the output layer's target matrix.
#[derive(Clone, Copy)]
enum Encoding {
    Values,
    OneHot,
    /// Two classes, one sigmoid unit: class 1 ↔ output 1.
    Binary,
}

/// Trains a network for `spec` on `data`.
///
/// # Errors
/// Invalid spec or parameters, data that does not fit the spec, cancellation by `observer`,
/// or divergence.
pub fn train(
    spec: &NetworkSpec,
    data: &Dataset,
    params: &TrainParams,
    threads: usize,
    observer: &mut (dyn Observer + Send),
) -> Result<TrainOutcome, TrainError> {
    spec.validate()?;
    params.validate()?;
    let encoding = check_fit(spec, data, params)?;
    if threads > 1 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mlpd-gemm-{i}"))
            .build()
            .map_err(|e| TrainError::Threads(e.to_string()))?;
        pool.install(|| run(spec, data, params, encoding, threads, observer))
    } else {
        run(spec, data, params, encoding, 1, observer)
    }
}

/// Whether `data` can train a network of `spec` with `params`, without training.
///
/// # Errors
/// The mismatch: feature width, target width or class count, targets outside [0, 1] for
/// cross-entropy.
pub fn check_data(
    spec: &NetworkSpec,
    data: &Dataset,
    params: &TrainParams,
) -> Result<(), FieldError> {
    check_fit(spec, data, params).map(|_| ())
}

fn check_fit(
    spec: &NetworkSpec,
    data: &Dataset,
    params: &TrainParams,
) -> Result<Encoding, FieldError> {
    if data.input_width() != spec.inputs {
        return Err(FieldError::new(
            "dataset",
            format!(
                "has {} feature columns but the model takes {} inputs",
                data.input_width(),
                spec.inputs
            ),
        ));
    }
    let outputs = spec.outputs();
    let head = spec.head();
    match data.targets() {
        Targets::Values(y) => {
            if y.ncols() != outputs {
                return Err(FieldError::new(
                    "dataset",
                    format!(
                        "has {} target columns but the model has {} outputs",
                        y.ncols(),
                        outputs
                    ),
                ));
            }
            if head.needs_z() && y.iter().any(|&v| !(0.0..=1.0).contains(&v)) {
                return Err(FieldError::new(
                    "dataset",
                    "cross_entropy needs targets in [0, 1]",
                ));
            }
            if params.normalize_targets == Some(true) && head.needs_z() {
                return Err(FieldError::new(
                    "normalize_targets",
                    "cannot standardize targets of a cross_entropy model",
                ));
            }
            Ok(Encoding::Values)
        }
        Targets::Classes { labels, .. } => {
            let k = labels.len();
            if outputs == k {
                Ok(Encoding::OneHot)
            } else if outputs == 1
                && k == 2
                && spec.output_activation() == super::Activation::Sigmoid
            {
                Ok(Encoding::Binary)
            } else {
                Err(FieldError::new(
                    "dataset",
                    format!(
                        "has {k} classes but the model has {outputs} outputs (use {k} outputs, or 1 sigmoid output for 2 classes)"
                    ),
                ))
            }
        }
    }
}

/// Row indices for training and validation. Classifiers are split per class, so each class
/// keeps its share on both sides.
pub fn holdout(data: &Dataset, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(STREAM_SPLIT);
    let n = data.rows();
    if fraction <= 0.0 {
        return ((0..n).collect(), Vec::new());
    }
    let groups: Vec<Vec<usize>> = match data.targets() {
        Targets::Classes { labels, indices } => {
            let mut g = vec![Vec::new(); labels.len()];
            for (i, &c) in indices.iter().enumerate() {
                g[c as usize].push(i);
            }
            g
        }
        Targets::Values(_) => vec![(0..n).collect()],
    };
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for mut g in groups {
        g.shuffle(&mut rng);
        let k = ((g.len() as f64) * fraction).round() as usize;
        let k = k.min(g.len().saturating_sub(1));
        val.extend_from_slice(&g[..k]);
        train.extend_from_slice(&g[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Gathers rows of the dataset into batch buffers, scaling and encoding on the way (no scaled
/// copy of the dataset is ever made).
struct Gather<'a> {
    data: &'a Dataset,
    input: Scaler,
    target: Option<Scaler>,
    encoding: Encoding,
}

impl Gather<'_> {
    fn rows(&self, idx: &[usize], x: &mut Array2<f32>, y: &mut Array2<f32>) {
        let feats = self.data.features();
        for (r, &i) in idx.iter().enumerate() {
            self.input.apply_row(feats.row(i), x.row_mut(r));
            let mut yr = y.row_mut(r);
            match (self.data.targets(), self.encoding) {
                (Targets::Values(t), _) => match &self.target {
                    Some(s) => s.apply_row(t.row(i), yr),
                    None => yr.assign(&t.row(i)),
                },
                (Targets::Classes { indices, .. }, Encoding::Binary) => yr[0] = indices[i] as f32,
                (Targets::Classes { indices, .. }, _) => {
                    yr.fill(0.0);
                    yr[indices[i] as usize] = 1.0;
                }
            }
        }
    }

    /// How many of the batch's output rows pick the right class.
    fn correct(&self, idx: &[usize], out: ArrayView2<f32>) -> Option<usize> {
        let Targets::Classes { indices, .. } = self.data.targets() else {
            return None;
        };
        Some(
            idx.iter()
                .zip(out.rows())
                .filter(|&(&i, ref row)| {
                    predicted_class(row.view(), self.encoding) == indices[i] as usize
                })
                .count(),
        )
    }
}

fn predicted_class(row: ndarray::ArrayView1<f32>, encoding: Encoding) -> usize {
    match encoding {
        Encoding::Binary => usize::from(row[0] >= 0.5),
        _ => argmax(row),
    }
}

/// Index of the largest value (the first one on ties).
pub(crate) fn argmax(row: ndarray::ArrayView1<f32>) -> usize {
    let mut best = 0;
    for (k, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = k;
        }
    }
    best
}

fn run(
    spec: &NetworkSpec,
    data: &Dataset,
    params: &TrainParams,
    encoding: Encoding,
    threads: usize,
    observer: &mut (dyn Observer + Send),
) -> Result<TrainOutcome, TrainError> {
    let start = Instant::now();
    let deadline = params
        .max_seconds
        .map(|s| start + Duration::from_secs_f64(s));
    let (mut train_idx, val_idx) = holdout(data, params.validation_split, params.seed);
    if train_idx.is_empty() {
        return Err(FieldError::new("dataset", "has no rows left for training").into());
    }
    let head = spec.head();
    let input = Scaler::fit(params.normalize, data.features().view(), &train_idx);
    let target = match data.targets() {
        Targets::Values(y) => {
            let auto = head == Head::Mse(super::Activation::Identity);
            params
                .normalize_targets
                .unwrap_or(auto)
                .then(|| Scaler::fit(Normalization::Standard, y.view(), &train_idx))
        }
        Targets::Classes { .. } => None,
    };
    let gather = Gather {
        data,
        input,
        target,
        encoding,
    };

    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    rng.set_stream(STREAM_INIT);
    let net = Network::<f32>::init(spec, &mut rng);
    let batch = params.batch_size.min(train_idx.len());
    let mut fitter = Fitter::new(net, spec.loss, &params.optimizer, params.l2, batch, threads)?;
    // Report the quadratic cost in the targets' own units: d_orig = d_scaled / scale.
    let weights = gather
        .target
        .as_ref()
        .map(|s| Array1::from_iter(s.scale.iter().map(|&k| 1.0 / (k * k))));
    fitter.set_cost_weights(weights.clone());

    let outputs = spec.outputs();
    let mut xb = Array2::<f32>::zeros((batch, spec.inputs));
    let mut yb = Array2::<f32>::zeros((batch, outputs));
    let mut eval = Evaluator::new(fitter.network(), head, weights, outputs);
    let mut shuffle = ChaCha8Rng::seed_from_u64(params.seed);
    shuffle.set_stream(STREAM_SHUFFLE);

    let mut history = Vec::new();
    let mut best: Option<(f64, u32, Option<Network<f32>>)> = None;
    let mut waited = 0;
    let mut stop_reason = StopReason::Completed;
    for epoch in 1..=params.epochs {
        let lr = params.lr_schedule.rate(params.learning_rate, epoch - 1);
        train_idx.shuffle(&mut shuffle);
        let (mut cost, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut timed_out = false;
        for chunk in train_idx.chunks(batch) {
            if observer.should_stop() {
                return Err(TrainError::Canceled { epoch });
            }
            let m = chunk.len();
            gather.rows(chunk, &mut xb, &mut yb);
            let stats = fitter.step(xb.slice(s![..m, ..]), yb.slice(s![..m, ..]), lr as f32);
            cost += stats.cost_sum as f64;
            if let Some(c) = gather.correct(chunk, fitter.outputs(m)) {
                correct += c;
            }
            seen += m;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                timed_out = true;
                break;
            }
        }
        let cost = cost / seen as f64;
        let classifier = matches!(data.targets(), Targets::Classes { .. });
        let (val_cost, val_accuracy) = if val_idx.is_empty() {
            (None, None)
        } else {
            let (c, a) = eval.run(fitter.network(), &gather, &val_idx);
            (Some(c), a)
        };
        if !cost.is_finite() || val_cost.is_some_and(|c| !c.is_finite()) {
            return Err(TrainError::Diverged { epoch });
        }
        let report = EpochReport {
            epoch,
            cost,
            val_cost,
            accuracy: classifier.then(|| correct as f64 / seen as f64),
            val_accuracy,
            learning_rate: lr,
            elapsed_ms: start.elapsed().as_millis() as u64,
        };
        let flow = observer.on_epoch(&report);
        history.push(report);
        if flow.is_break() {
            return Err(TrainError::Canceled { epoch });
        }
        if let Some(es) = &params.early_stopping {
            let monitored = val_cost.unwrap_or(cost);
            match &best {
                Some((b, _, _)) if monitored >= b - es.min_delta => waited += 1,
                _ => {
                    let snapshot = es.restore_best.then(|| fitter.network().clone());
                    best = Some((monitored, epoch, snapshot));
                    waited = 0;
                }
            }
            if waited >= es.patience {
                stop_reason = StopReason::EarlyStopped;
                break;
            }
        }
        if timed_out {
            stop_reason = StopReason::TimeLimit;
            break;
        }
    }
    let last_epoch = history.last().map_or(0, |r| r.epoch);
    let (network, best_epoch) = match best {
        Some((_, e, Some(net))) => (net, e),
        _ => (fitter.into_network(), last_epoch),
    };
    let model = TrainedModel::new(
        spec.clone(),
        network,
        gather.input,
        gather.target,
        data.labels().cloned(),
    );
    Ok(TrainOutcome {
        model,
        history,
        stop_reason,
        best_epoch,
    })
}

/// Cost and accuracy of a network over a set of rows, in chunks, with its own buffers.
struct Evaluator {
    head: Head,
    weights: Option<Array1<f32>>,
    bufs: Vec<Array2<f32>>,
    x: Array2<f32>,
    y: Array2<f32>,
    z: Array2<f32>,
}

impl Evaluator {
    fn new(net: &Network<f32>, head: Head, weights: Option<Array1<f32>>, outputs: usize) -> Self {
        Evaluator {
            head,
            weights,
            bufs: net
                .layers()
                .iter()
                .map(|l| Array2::zeros((EVAL_CHUNK, l.units())))
                .collect(),
            x: Array2::zeros((EVAL_CHUNK, net.inputs())),
            y: Array2::zeros((EVAL_CHUNK, outputs)),
            z: Array2::zeros((EVAL_CHUNK, outputs)),
        }
    }

    fn run(&mut self, net: &Network<f32>, gather: &Gather, idx: &[usize]) -> (f64, Option<f64>) {
        let (mut cost, mut correct) = (0f64, None::<usize>);
        for chunk in idx.chunks(EVAL_CHUNK) {
            let m = chunk.len();
            gather.rows(chunk, &mut self.x, &mut self.y);
            let x = self.x.slice(s![..m, ..]);
            net.forward_into(x, &mut self.bufs, Threads(1));
            let last = self.bufs.len() - 1;
            let a = self.bufs[last].slice(s![..m, ..]);
            let y = self.y.slice(s![..m, ..]);
            if self.head.needs_z() {
                // Recover z for the stable cross-entropy: recompute the output layer's affine map.
                let input = if last == 0 {
                    x
                } else {
                    self.bufs[last - 1].slice(s![..m, ..])
                };
                net.layers()[last].affine(&input, &mut self.z.slice_mut(s![..m, ..]), Threads(1));
            }
            let z = self.z.slice(s![..m, ..]);
            cost += self
                .head
                .cost_sum(&z, &a, &y, self.weights.as_ref().map(|w| w.view()))
                as f64;
            if let Some(c) = gather.correct(chunk, a) {
                *correct.get_or_insert(0) += c;
            }
        }
        let n = idx.len() as f64;
        (cost / n, correct.map(|c| c as f64 / n))
    }
}
