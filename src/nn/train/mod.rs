//! The training loop: a seeded validation split, scaling fitted on the training rows, epochs of
//! shuffled mini-batches, a report per epoch, early stopping, a wall-clock limit, cancellation.
//!
//! Runs on the caller's thread; with `threads > 1` its matrix products are shared with
//! `threads − 1` helper threads started for the run ([`super::team`]), and a helper gathers the
//! next mini-batch beside each step while the caller runs what is not shared
//! ([`gather::Batches`]), so the caller bounds the CPU a job takes. Randomness comes from three
//! ChaCha8 streams of the seed (init, split, shuffle), so results do not depend on the thread
//! count.
//!
//! The loop lives here; its parts each have a module: [`params`] (what shapes a run), [`fit`]
//! (whether data fits a spec), [`split`] (the validation split), [`gather`] (mini-batch
//! assembly), [`eval`] (cost over a split) and [`report`] (what a run tells its caller).

mod eval;
mod fit;
mod gather;
mod params;
mod report;
mod split;

pub use fit::check_data;
pub(crate) use gather::argmax;
pub use params::{EarlyStopping, MAX_EPOCHS, TrainParams};
pub use report::{
    EpochReport, NoObserver, Observer, ParamError, StopReason, TrainError, TrainOutcome,
};
pub use split::{holdout, holdout_rows};

use super::spec::FieldError;
use super::team;
use super::{
    Dataset, Fitter, Head, Network, NetworkSpec, Normalization, Scaler, Targets, TrainedModel,
};
use eval::Evaluator;
use fit::{Encoding, check_fit};
use gather::{Batches, Gather};
use ndarray::Array1;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

const STREAM_INIT: u64 = 0;
const STREAM_SPLIT: u64 = 1;
const STREAM_SHUFFLE: u64 = 2;

/// Where a run starts instead of a fresh initialisation: a trained model's weights, and its
/// input and target scaling unless `refit_scaling` (then they are fitted on the training rows
/// as usual). The optimizer state starts fresh.
#[derive(Clone, Copy, Debug)]
pub struct WarmStart<'a> {
    pub model: &'a TrainedModel,
    pub refit_scaling: bool,
}

/// Whether a run on `data` for `spec` can start from `model`: the same architecture, and for
/// a classifier the same classes in the same order.
///
/// # Errors
/// A [`FieldError`] on `init_from_version` saying what differs.
pub fn check_warm_start(
    spec: &NetworkSpec,
    data: &Dataset,
    model: &TrainedModel,
) -> Result<(), FieldError> {
    if model.spec != *spec {
        return Err(FieldError::new(
            "init_from_version",
            format!(
                "that version's network ({} inputs, layers {:?}) is not the one this job trains \
                 ({} inputs, layers {:?}); a warm start keeps the architecture",
                model.spec.inputs,
                model
                    .spec
                    .layers
                    .iter()
                    .map(|l| l.units)
                    .collect::<Vec<_>>(),
                spec.inputs,
                spec.layers.iter().map(|l| l.units).collect::<Vec<_>>(),
            ),
        ));
    }
    if data.labels() != model.labels.as_ref() {
        let show = |l: Option<&super::LabelSet>| {
            l.map_or("none (numbers)".to_string(), |s| {
                s.to_vec()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        return Err(FieldError::new(
            "init_from_version",
            format!(
                "the data's classes ({}) are not that version's ({}); a warm start keeps the outputs' meaning",
                show(data.labels()),
                show(model.labels.as_ref())
            ),
        ));
    }
    Ok(())
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
    train_from(spec, data, params, threads, observer, None)
}

/// [`train`], starting from `start` when given.
///
/// # Errors
/// As [`train`], and a start that does not fit ([`check_warm_start`]).
pub fn train_from(
    spec: &NetworkSpec,
    data: &Dataset,
    params: &TrainParams,
    threads: usize,
    observer: &mut (dyn Observer + Send),
    start: Option<WarmStart<'_>>,
) -> Result<TrainOutcome, TrainError> {
    spec.validate()?;
    params.validate()?;
    let encoding = check_fit(spec, data, params)?;
    if let Some(w) = start {
        check_warm_start(spec, data, w.model)?;
    }
    team::with_team(threads, || {
        run(spec, data, params, encoding, threads, observer, start)
    })
}

fn run(
    spec: &NetworkSpec,
    data: &Dataset,
    params: &TrainParams,
    encoding: Encoding,
    threads: usize,
    observer: &mut (dyn Observer + Send),
    start_from: Option<WarmStart<'_>>,
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
    let kept = start_from.filter(|w| !w.refit_scaling).map(|w| w.model);
    let input = match kept {
        Some(m) => m.input_scaler.clone(),
        None => Scaler::fit(params.normalize, data.features().view(), &train_idx),
    };
    let target = match data.targets() {
        Targets::Values(_) if kept.is_some() => kept.and_then(|m| m.target_scaler.clone()),
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
    let net = match start_from {
        Some(w) => w.model.network.clone(),
        None => Network::<f32>::init(spec, &mut rng),
    };
    let batch = params.batch_size.min(train_idx.len());
    let mut fitter = Fitter::new(net, spec.loss, &params.optimizer, params.l2, batch, threads)?;
    // Report the quadratic cost in the targets' own units: d_orig = d_scaled / scale.
    let weights = gather
        .target
        .as_ref()
        .map(|s| Array1::from_iter(s.scale.iter().map(|&k| 1.0 / (k * k))));
    fitter.set_cost_weights(weights.clone());

    let outputs = spec.outputs();
    let beside = threads > 1;
    let mut batches = Batches::new(batch, spec.inputs, outputs, beside);
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
        let chunks: Vec<&[usize]> = train_idx.chunks(batch).collect();
        for (i, &chunk) in chunks.iter().enumerate() {
            if observer.should_stop() {
                return Err(TrainError::Canceled { epoch });
            }
            let m = chunk.len();
            let stats = batches.step(&gather, &chunks, i, |x, y, side| {
                fitter.step_beside(x, y, lr as f32, side)
            });
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
                    let snapshot = es.restore_best.then(|| fitter.snapshot());
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
