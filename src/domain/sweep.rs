//! Sweep requests: the base training parameters, the search (a grid, or random draws from
//! ranges under a seed) and the metric, checked and expanded into one [`TrialParams`] per
//! trial before anything is queued. Pure: no I/O; the draws depend only on the seed.

use super::train::TrainRequest;
use crate::error::ApiError;
use crate::records::{SweepKind, SweepMetric, TrialParams};
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// The most trials one sweep may have (the queue may hold fewer: then it is refused too).
pub const MAX_TRIALS: usize = 1000;

/// The parameters a sweep may vary, by name.
pub const PARAMETERS: [&str; 4] = ["learning_rate", "batch_size", "l2", "epochs"];

/// `POST /v1/models/{name}/sweeps`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepRequest {
    /// The uploaded dataset every trial trains on.
    pub dataset_id: Uuid,
    /// The base training parameters (those of a train request, without the data), which each
    /// trial changes by its values; `validation_split` is required (the metric is measured on it).
    #[schema(value_type = Object)]
    pub params: Option<Value>,
    /// A grid search: parameter → the values to try; every combination is a trial. Parameters:
    /// `learning_rate`, `batch_size`, `l2`, `epochs`. Give this or `random`.
    #[schema(value_type = Object)]
    pub grid: Option<BTreeMap<String, Vec<Value>>>,
    /// A random search: parameter → a range to draw from. Give this or `grid`.
    pub random: Option<BTreeMap<String, RandomRange>>,
    /// Random search: the number of trials (1–1000).
    #[schema(minimum = 1, maximum = 1000)]
    pub max_trials: Option<usize>,
    /// Random search: the seed of the draws (default 0): the same seed, the same trials.
    #[schema(minimum = 0)]
    pub seed: Option<u64>,
    /// What trials are compared by (default `val_cost`).
    pub metric: Option<SweepMetric>,
    /// Pin the best trial's version when the sweep ends (default false).
    pub pin_best: Option<bool>,
}

/// A range a random search draws a parameter from, bounds included.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomRange {
    pub min: f64,
    pub max: f64,
    /// Draw uniformly on a log scale (both bounds positive); default false.
    #[serde(default)]
    pub log: bool,
}

/// A checked sweep request.
#[derive(Debug)]
pub struct SweepPlan {
    /// The base train request (its data: the sweep's dataset).
    pub base: TrainRequest,
    pub kind: SweepKind,
    pub seed: Option<u64>,
    pub metric: SweepMetric,
    pub pin_best: bool,
    /// One per trial, in trial order.
    pub trials: Vec<TrialParams>,
}

impl SweepRequest {
    /// Checks the request and expands its trials.
    ///
    /// # Errors
    /// A 422 naming the first invalid field.
    pub fn plan(self) -> Result<SweepPlan, ApiError> {
        let params = self
            .params
            .unwrap_or_else(|| Value::Object(Default::default()));
        let mut base: TrainRequest = serde_json::from_value(params)
            .map_err(|e| ApiError::invalid("params", e.to_string()))?;
        if base.dataset_id.is_some() || base.dataset.is_some() {
            return Err(ApiError::invalid(
                "params",
                "the data is the sweep's `dataset_id`, not a parameter",
            ));
        }
        if !base.validation_split.is_some_and(|s| s > 0.0) {
            return Err(ApiError::invalid(
                "params.validation_split",
                "a sweep compares trials on a validation split: give a fraction in (0, 1)",
            ));
        }
        base.dataset_id = Some(self.dataset_id);
        let (kind, seed, trials) = match (self.grid, self.random) {
            (Some(grid), None) => {
                if self.max_trials.is_some() || self.seed.is_some() {
                    let field = if self.max_trials.is_some() {
                        "max_trials"
                    } else {
                        "seed"
                    };
                    return Err(ApiError::invalid(field, "applies to a random search only"));
                }
                (SweepKind::Grid, None, grid_trials(&grid)?)
            }
            (None, Some(ranges)) => {
                let n = self.max_trials.ok_or_else(|| {
                    ApiError::invalid("max_trials", "a random search needs a number of trials")
                })?;
                if !(1..=MAX_TRIALS).contains(&n) {
                    return Err(ApiError::invalid(
                        "max_trials",
                        format!("must be between 1 and {MAX_TRIALS}"),
                    ));
                }
                let seed = self.seed.unwrap_or(0);
                (
                    SweepKind::Random,
                    Some(seed),
                    random_trials(&ranges, n, seed)?,
                )
            }
            _ => {
                return Err(ApiError::invalid(
                    "grid",
                    "give exactly one of `grid` and `random`",
                ));
            }
        };
        Ok(SweepPlan {
            base,
            kind,
            seed,
            metric: self.metric.unwrap_or(SweepMetric::ValCost),
            pin_best: self.pin_best.unwrap_or(false),
            trials,
        })
    }
}

/// Whether the parameter takes whole numbers.
fn integral(name: &str) -> bool {
    matches!(name, "batch_size" | "epochs")
}

fn known(field: &str, name: &str) -> Result<(), ApiError> {
    if PARAMETERS.contains(&name) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            format!("{field}.{name}"),
            format!(
                "a sweep cannot vary {name:?}; it varies {}",
                PARAMETERS.join(", ")
            ),
        ))
    }
}

/// Sets `name` to `v` in `t`; `None` when `v` is not a value of that parameter (checked in
/// full by [`TrialParams::apply`] and the parameters' own validation afterwards).
fn set(t: &mut TrialParams, name: &str, v: f64) -> Option<()> {
    let whole = |max: f64| (v.fract() == 0.0 && (1.0..=max).contains(&v)).then_some(v);
    match name {
        "learning_rate" => t.learning_rate = Some(v),
        "l2" => t.l2 = Some(v),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        "batch_size" => t.batch_size = Some(whole((1u64 << 20) as f64)? as usize),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        "epochs" => t.epochs = Some(whole(f64::from(crate::nn::MAX_EPOCHS))? as u32),
        _ => return None,
    }
    Some(())
}

/// Every combination of the grid's values: the first parameter (by name) varies slowest.
fn grid_trials(grid: &BTreeMap<String, Vec<Value>>) -> Result<Vec<TrialParams>, ApiError> {
    if grid.is_empty() {
        return Err(ApiError::invalid(
            "grid",
            format!("name at least one of {}", PARAMETERS.join(", ")),
        ));
    }
    let mut total = 1usize;
    for (name, values) in grid {
        known("grid", name)?;
        if values.is_empty() {
            return Err(ApiError::invalid(
                format!("grid.{name}"),
                "give at least one value",
            ));
        }
        total = total.saturating_mul(values.len());
    }
    if total > MAX_TRIALS {
        return Err(ApiError::invalid(
            "grid",
            format!("{total} combinations; a sweep has at most {MAX_TRIALS} trials"),
        ));
    }
    let mut trials = vec![TrialParams::default()];
    for (name, values) in grid {
        let field = format!("grid.{name}");
        let mut next = Vec::with_capacity(trials.len() * values.len());
        for t in &trials {
            for v in values {
                let mut t = t.clone();
                v.as_f64()
                    .and_then(|x| set(&mut t, name, x))
                    .ok_or_else(|| value_error(&field, name, v))?;
                next.push(t);
            }
        }
        trials = next;
    }
    Ok(trials)
}

fn value_error(field: &str, name: &str, v: &Value) -> ApiError {
    let kind = if integral(name) {
        "a whole number of at least 1"
    } else {
        "a number"
    };
    ApiError::invalid(field, format!("{v} is not a value of {name}: give {kind}"))
}

/// `n` trials drawn from `ranges` by a generator seeded with `seed` (ChaCha8: the same draws
/// on every platform); each trial draws its parameters in name order.
fn random_trials(
    ranges: &BTreeMap<String, RandomRange>,
    n: usize,
    seed: u64,
) -> Result<Vec<TrialParams>, ApiError> {
    if ranges.is_empty() {
        return Err(ApiError::invalid(
            "random",
            format!("name at least one of {}", PARAMETERS.join(", ")),
        ));
    }
    for (name, r) in ranges {
        known("random", name)?;
        let field = format!("random.{name}");
        if !(r.min.is_finite() && r.max.is_finite() && r.min <= r.max) {
            return Err(ApiError::invalid(
                field,
                "needs finite bounds with min <= max",
            ));
        }
        if r.log && r.min <= 0.0 {
            return Err(ApiError::invalid(
                field,
                "a log-scale range needs a positive min",
            ));
        }
        if integral(name) && (r.min.fract() != 0.0 || r.max.fract() != 0.0) {
            return Err(ApiError::invalid(field, "takes whole-number bounds"));
        }
        // Both bounds must be values of the parameter; so then is every draw between them.
        for bound in [r.min, r.max] {
            set(&mut TrialParams::default(), name, bound)
                .ok_or_else(|| value_error(&field, name, &Value::from(bound)))?;
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut trials = Vec::with_capacity(n);
    for _ in 0..n {
        let mut t = TrialParams::default();
        for (name, r) in ranges {
            let x = if r.log {
                let (lo, hi) = (r.min.ln(), r.max.ln());
                if lo < hi {
                    rng.random_range(lo..=hi).exp()
                } else {
                    r.min
                }
            } else if r.min < r.max {
                rng.random_range(r.min..=r.max)
            } else {
                r.min
            };
            let x = if integral(name) {
                x.round().clamp(r.min, r.max)
            } else {
                x.clamp(r.min, r.max)
            };
            set(&mut t, name, x).ok_or_else(|| {
                ApiError::invalid(format!("random.{name}"), "cannot draw from this range")
            })?;
        }
        trials.push(t);
    }
    Ok(trials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(v: Value) -> SweepRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_grid_expands_to_every_combination_in_name_order() {
        let plan = request(json!({
            "dataset_id": Uuid::nil(), "params": {"validation_split": 0.2},
            "grid": {"learning_rate": [0.1, 0.01], "batch_size": [16, 64, 8]}
        }))
        .plan()
        .unwrap();
        let got: Vec<_> = plan
            .trials
            .iter()
            .map(|t| (t.batch_size.unwrap(), t.learning_rate.unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (16, 0.1),
                (16, 0.01),
                (64, 0.1),
                (64, 0.01),
                (8, 0.1),
                (8, 0.01)
            ]
        );
    }

    #[test]
    fn random_draws_depend_on_the_seed_only_and_stay_in_range() {
        let draw = |seed| {
            request(json!({
                "dataset_id": Uuid::nil(), "params": {"validation_split": 0.2},
                "random": {"learning_rate": {"min": 1e-4, "max": 1e-1, "log": true},
                           "batch_size": {"min": 8, "max": 64}},
                "max_trials": 20, "seed": seed
            }))
            .plan()
            .unwrap()
            .trials
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        for t in draw(7) {
            let lr = t.learning_rate.unwrap();
            assert!((1e-4..=1e-1).contains(&lr), "{lr}");
            assert!((8..=64).contains(&t.batch_size.unwrap()));
        }
    }

    #[test]
    fn bad_searches_name_their_field() {
        let field = |v: Value| request(v).plan().unwrap_err().field.unwrap();
        let base = |extra: Value| {
            let mut v = json!({"dataset_id": Uuid::nil(), "params": {"validation_split": 0.2}});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        assert_eq!(field(base(json!({"grid": {"l2": []}}))), "grid.l2");
        assert_eq!(
            field(base(json!({"grid": {"momentum": [1]}}))),
            "grid.momentum"
        );
        assert_eq!(
            field(base(json!({"grid": {"batch_size": [1.5]}}))),
            "grid.batch_size"
        );
        assert_eq!(field(base(json!({"grid": {}}))), "grid");
        assert_eq!(field(base(json!({}))), "grid");
        assert_eq!(
            field(base(
                json!({"random": {"l2": {"min": 1, "max": 0}}, "max_trials": 2})
            )),
            "random.l2"
        );
        assert_eq!(
            field(base(json!({"random": {"l2": {"min": 0, "max": 1}}}))),
            "max_trials"
        );
        assert_eq!(
            field(json!({"dataset_id": Uuid::nil(), "grid": {"l2": [0]}})),
            "params.validation_split"
        );
    }
}
