//! The records mlpd keeps: models, versions, datasets, jobs, their statuses and error codes.
//!
//! They sit below the store, the registry and the job system, which all point down here (none
//! of them imports another for these types). Plain data: no locks, no I/O.

use crate::error::ErrorCode;
use crate::nn::{
    EpochReport, LabelSet, NetworkSpec, Scaler, StopReason, TrainParams, TrainedModel,
};
use crate::scoring::Scores;
use crate::tabular::{ColumnInfo, Signature, Table, Task, Values};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// A model's definition as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    pub spec: NetworkSpec,
    pub description: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub next_version: u32,
    /// The version served whatever is newer (policy `pinned`); none: the newest is served
    /// (policy `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_version: Option<u32>,
    /// Named versions (`canary` → 3), predicted with by `?alias=`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, u32>,
}

impl ModelRecord {
    /// The version served when the model's versions are `versions`: the pinned one, else the
    /// newest.
    pub fn served(&self, versions: &[u32]) -> Option<u32> {
        self.pinned_version
            .or_else(|| versions.iter().copied().max())
    }

    /// Versions retention must keep: the pinned one and every alias's.
    pub fn protected(&self) -> Vec<u32> {
        self.pinned_version
            .into_iter()
            .chain(self.aliases.values().copied())
            .collect()
    }
}

/// What changed what a model serves (or names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServingCause {
    /// `PUT …/serving`: a version pinned (promoted or rolled back).
    Pin,
    /// `DELETE …/serving`: back to the newest version.
    Unpin,
    /// A job succeeded under policy `latest`: its version is served.
    Job,
    /// The served version was deleted (policy `latest`): the newest left is served.
    Delete,
    /// `PUT …/aliases/{alias}`: an alias set or moved.
    AliasSet,
    /// `DELETE …/aliases/{alias}`.
    AliasRemoved,
}

/// One entry of a model's serving history.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ServingChange {
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// The version served (or, for an alias change, named) before; none when there was none.
    pub from: Option<u32>,
    /// The version served (or named) after; none when there is none.
    pub to: Option<u32>,
    pub cause: ServingCause,
    /// The alias changed (alias causes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The job whose version became served (cause `job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
}

/// A change to what a model serves or names, as asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServingUpdate {
    Pin(u32),
    Unpin,
    SetAlias(String, u32),
    RemoveAlias(String),
}

/// A trained version as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionRecord {
    pub model: String,
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The job that trained it; none for an imported version.
    pub job_id: Option<Uuid>,
    pub dataset_id: Option<Uuid>,
    pub params: TrainParams,
    pub metrics: VersionMetrics,
    pub trained: TrainedModel,
    /// The features and their preprocessing, learned on the training rows (none for versions
    /// trained before signatures existed: their inputs are the network's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// The version whose weights training started from (a warm start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_version: Option<u32>,
}

impl VersionRecord {
    /// About the memory the version takes once parsed: 4 bytes a weight and scaling value, a
    /// little per signature feature, and a fixed overhead. An estimate (allocator slack and the
    /// signature's category names are not counted), used to keep the version cache in budget.
    pub fn resident_bytes(&self) -> u64 {
        let t = &self.trained;
        let target = t.target_scaler.as_ref().map_or(0, |s| s.shift.len() * 2);
        resident_bytes(&t.spec, &t.input_scaler, target, self.signature.as_ref())
    }
}

fn resident_bytes(
    spec: &NetworkSpec,
    input_scaler: &Scaler,
    target_words: usize,
    signature: Option<&Signature>,
) -> u64 {
    let scalers = input_scaler.shift.len() + input_scaler.scale.len() + target_words;
    let features = signature.map_or(0, |s| s.features.len());
    let words = spec.parameter_count().saturating_add(scalers);
    (words as u64)
        .saturating_mul(4)
        .saturating_add(features as u64 * 256)
        .saturating_add(4096)
}

impl VersionMeta {
    /// [`VersionRecord::resident_bytes`] of the whole version, as far as the metadata tells
    /// (target scaling, a few bytes, aside).
    pub fn resident_bytes(&self) -> u64 {
        resident_bytes(
            &self.trained.spec,
            &self.trained.input_scaler,
            0,
            self.signature.as_ref(),
        )
    }
}

/// What the registry keeps of a trained version while its weights are not needed: everything
/// but the network's weights (and target scaling), which the version cache loads on demand.
/// Deserializes from a stored [`VersionRecord`] (the weights, if present, are skipped).
#[derive(Clone, Debug, Deserialize)]
pub struct VersionMeta {
    pub model: String,
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub job_id: Option<Uuid>,
    pub dataset_id: Option<Uuid>,
    pub params: TrainParams,
    pub metrics: VersionMetrics,
    pub trained: TrainedMeta,
    #[serde(default)]
    pub signature: Option<Signature>,
    #[serde(default)]
    pub parent_version: Option<u32>,
}

/// A trained model without its weights: what describes its inputs and outputs.
#[derive(Clone, Debug, Deserialize)]
pub struct TrainedMeta {
    pub spec: NetworkSpec,
    pub input_scaler: Scaler,
    pub labels: Option<LabelSet>,
}

impl From<&VersionRecord> for VersionMeta {
    fn from(v: &VersionRecord) -> Self {
        VersionMeta {
            model: v.model.clone(),
            version: v.version,
            created_at: v.created_at,
            job_id: v.job_id,
            dataset_id: v.dataset_id,
            params: v.params.clone(),
            metrics: v.metrics.clone(),
            trained: TrainedMeta {
                spec: v.trained.spec.clone(),
                input_scaler: v.trained.input_scaler.clone(),
                labels: v.trained.labels.clone(),
            },
            signature: v.signature.clone(),
            parent_version: v.parent_version,
        }
    }
}

/// A dataset's description (its data is stored beside it and loaded on demand).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub id: Uuid,
    pub name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub rows: usize,
    /// Feature columns.
    pub input_width: usize,
    /// Target columns, when all are numeric (and the task is not classification).
    pub target_width: Option<usize>,
    /// The classes a classifier would learn: a text target, or an integer one with few values.
    pub classes: Option<LabelSet>,
    /// Every column, features then targets, in stored order. Empty for a dataset stored before
    /// typed columns: its features are numeric (`x1…`) and its targets follow `classes`.
    #[serde(default)]
    pub columns: Vec<StoredColumn>,
    /// What the uploader said the targets are.
    #[serde(default)]
    pub task: Option<Task>,
    /// Columns the uploader left out (`?ignore=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
}

/// A stored column: its profile, its role, and for a categorical column its levels in code
/// order (the stored codes index them).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredColumn {
    #[serde(flatten)]
    pub info: ColumnInfo,
    pub target: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_names: Option<Vec<String>>,
}

/// Integer targets with more distinct values than this are not shown as classes.
const MAX_SHOWN_CLASSES: usize = 100;

impl DatasetRecord {
    pub fn describe(id: Uuid, name: Option<String>, created_at: OffsetDateTime, t: &Table) -> Self {
        let stored = |c: &crate::tabular::Column, target: bool| StoredColumn {
            info: c.info(),
            target,
            level_names: match &c.values {
                Values::Categorical { levels, .. } => Some(levels.clone()),
                Values::Numeric(_) => None,
            },
        };
        let columns: Vec<StoredColumn> = t
            .features()
            .iter()
            .map(|c| stored(c, false))
            .chain(t.targets().iter().map(|c| stored(c, true)))
            .collect();
        let all_numeric = t
            .targets()
            .iter()
            .all(|c| matches!(c.values, Values::Numeric(_)));
        let target_width =
            (all_numeric && t.task() != Some(Task::Classification)).then_some(t.targets().len());
        let classes = match (t.targets(), t.task()) {
            (_, Some(Task::Regression)) => None,
            ([c], _) => classes_of(&c.values),
            _ => None,
        };
        DatasetRecord {
            id,
            name,
            created_at,
            rows: t.rows(),
            input_width: t.features().len(),
            target_width,
            classes,
            columns,
            task: t.task(),
            ignored: t.ignored().to_vec(),
        }
    }
}

fn classes_of(v: &Values) -> Option<LabelSet> {
    match v {
        Values::Categorical { levels, codes } => {
            let mut used = vec![false; levels.len()];
            for &c in codes {
                if let Some(u) = used.get_mut(c as usize) {
                    *u = true;
                }
            }
            let mut set: Vec<String> = levels
                .iter()
                .zip(&used)
                .filter(|(_, u)| **u)
                .map(|(l, _)| l.clone())
                .collect();
            set.sort();
            Some(LabelSet::Str(set))
        }
        Values::Numeric(v) => {
            let mut set = std::collections::BTreeSet::new();
            for &x in v.iter().filter(|x| !x.is_nan()) {
                if x.fract() != 0.0 || x.abs() > 16_777_216.0 {
                    return None;
                }
                #[allow(clippy::cast_possible_truncation)]
                set.insert(x as i64);
                if set.len() > MAX_SHOWN_CLASSES {
                    return None;
                }
            }
            (set.len() >= 2).then(|| LabelSet::Int(set.into_iter().collect()))
        }
    }
}

/// A job as stored (its epochs are stored beside it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: Uuid,
    pub model: String,
    pub dataset_id: Option<Uuid>,
    pub spec: NetworkSpec,
    pub params: TrainParams,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub status: JobStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub error: Option<JobError>,
    pub model_version: Option<u32>,
    pub stop_reason: Option<StopReason>,
    /// Rows trained on (all targets present) and rows left out (a target missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<RowCounts>,
    /// The version a warm start began from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from_version: Option<u32>,
    /// The final figures of the version a succeeded job created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<VersionMetrics>,
}

/// How many of a dataset's rows a job could use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RowCounts {
    pub rows_used: usize,
    pub rows_skipped: usize,
}

/// Final figures of a training run.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionMetrics {
    /// Epochs run.
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub epochs: u32,
    /// The epoch whose weights this version holds (early stopping may restore an earlier one).
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub best_epoch: u32,
    pub stop_reason: StopReason,
    /// The history entry of `best_epoch`.
    pub cost: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_cost: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    #[serde(deserialize_with = "crate::nn::integral::integer")]
    pub training_ms: u64,
}

impl VersionMetrics {
    pub fn from_history(history: &[EpochReport], best_epoch: u32, stop_reason: StopReason) -> Self {
        let best = history
            .iter()
            .find(|r| r.epoch == best_epoch)
            .or(history.last());
        VersionMetrics {
            epochs: history.last().map_or(0, |r| r.epoch),
            best_epoch,
            stop_reason,
            cost: best.map_or(f64::NAN, |r| r.cost),
            val_cost: best.and_then(|r| r.val_cost),
            accuracy: best.and_then(|r| r.accuracy),
            val_accuracy: best.and_then(|r| r.val_accuracy),
            training_ms: history.last().map_or(0, |r| r.elapsed_ms),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl JobStatus {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled
        )
    }
}

/// Why a job failed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    /// `diverged`, `invalid_data`, `interrupted`, `model_deleted`, `storage_full`,
    /// `store_unavailable` or `internal` (codes of the one error-code table).
    pub code: ErrorCode,
    pub message: String,
}

/// A version's scores on a dataset, as stored (with the version: deleted with it).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EvaluationRecord {
    pub id: Uuid,
    pub model: String,
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The stored dataset scored on; absent for an inline one.
    pub dataset_id: Option<Uuid>,
    /// Rows scored (every target present).
    pub rows: usize,
    /// Rows left out because a target was missing.
    pub rows_skipped: usize,
    pub scores: Scores,
}

/// A client's claim on an `Idempotency-Key` ([`crate::store::Store::claim_idempotency_key`]).
/// Times are Unix nanoseconds of the claiming process's clock.
#[derive(Clone, Debug)]
pub struct IdempotencyClaim {
    pub key: String,
    /// SHA-256 of the request (method, path and query, content type and encoding, body), hex.
    pub fingerprint: String,
    /// Who holds the reservation if it is granted: renewals and the answer name it.
    pub owner: Uuid,
    pub now: i64,
    /// Keys first claimed before this are expired: absent for the claim, and purged.
    pub expired_before: i64,
    /// A reservation last renewed before this belongs to a process that died or lost the
    /// store: it is taken over.
    pub stale_before: i64,
}

/// The answer recorded under an idempotency key, replayed to a retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    /// The headers worth replaying (`content-type`, `location`), lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the store decided about an [`IdempotencyClaim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// The key is the claimant's (new, expired, or taken over from a dead reservation): do the
    /// work, then record or release it.
    Reserved,
    /// The same request was answered already: replay this.
    Answered(StoredAnswer),
    /// The key was used for a different request.
    Mismatch,
    /// The same request is being worked on (by this or another replica).
    InFlight,
}

/// The training parameters a sweep may vary: none of them changes how the data is prepared
/// (split, encoding, scaling), so every trial of a sweep trains on the same prepared rows.
/// A trial's values; absent ones are the sweep's base parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u32>,
}

impl TrialParams {
    /// `base` with this trial's values.
    pub fn apply(&self, base: &TrainParams) -> TrainParams {
        let mut p = base.clone();
        p.learning_rate = self.learning_rate.unwrap_or(p.learning_rate);
        p.batch_size = self.batch_size.unwrap_or(p.batch_size);
        p.l2 = self.l2.unwrap_or(p.l2);
        p.epochs = self.epochs.unwrap_or(p.epochs);
        p
    }
}

/// What a sweep compares its trials by: a figure of each trial's validation split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SweepMetric {
    /// The validation cost: lower is better.
    ValCost,
    /// The validation accuracy (classifiers): higher is better.
    ValAccuracy,
}

impl SweepMetric {
    /// The figure of a version's metrics.
    pub fn of(self, m: &VersionMetrics) -> Option<f64> {
        match self {
            SweepMetric::ValCost => m.val_cost,
            SweepMetric::ValAccuracy => m.val_accuracy,
        }
        .filter(|v| v.is_finite())
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            SweepMetric::ValCost => a < b,
            SweepMetric::ValAccuracy => a > b,
        }
    }
}

/// How a sweep chose its trials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SweepKind {
    /// Every combination of the grid's values.
    Grid,
    /// Draws from ranges, reproducible from a seed.
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SweepStatus {
    /// Trials are queued or running.
    Running,
    /// Every trial ended, and at least one reported the metric.
    Succeeded,
    /// Every trial ended, and none reported the metric.
    Failed,
    /// Canceled: its trials were stopped.
    Canceled,
    /// A trial was interrupted (its server stopped); the others ended.
    Interrupted,
}

/// A trial: its job and the values it tries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrialRecord {
    pub job_id: Uuid,
    pub params: TrialParams,
}

/// How a trial ended, as the sweep recorded it when it ended (its job may be pruned later).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TrialResult {
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<f64>,
}

/// What a sweep decided when its last trial ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepResult {
    /// One per trial, in trial order.
    pub trials: Vec<TrialResult>,
    /// The index of the best trial (the first of equals).
    pub best: Option<usize>,
    /// The version pinned (`pin_best`).
    pub pinned_version: Option<u32>,
}

/// A hyperparameter sweep as stored: its definition, and once ended its result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRecord {
    pub id: Uuid,
    pub model: String,
    pub dataset_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub kind: SweepKind,
    /// The seed of a random search's draws.
    pub seed: Option<u64>,
    pub metric: SweepMetric,
    pub pin_best: bool,
    /// The base parameters every trial starts from.
    pub params: TrainParams,
    pub trials: Vec<TrialRecord>,
    pub status: SweepStatus,
    /// Cancel was asked (the sweep ends `canceled` when its trials have stopped).
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub result: Option<SweepResult>,
}
