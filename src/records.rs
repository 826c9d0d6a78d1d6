//! The records mlpd keeps: models, versions, datasets, jobs, their statuses and error codes.
//!
//! They sit below the store, the registry and the job system, which all point down here (none
//! of them imports another for these types). Plain data: no locks, no I/O.

use crate::error::ErrorCode;
use crate::nn::{
    Dataset, EpochReport, LabelSet, NetworkSpec, StopReason, TrainParams, TrainedModel,
};
use serde::{Deserialize, Serialize};
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
}

/// A dataset's description (its data is stored beside it and loaded on demand).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub id: Uuid,
    pub name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub rows: usize,
    pub input_width: usize,
    pub target_width: Option<usize>,
    pub classes: Option<LabelSet>,
}

impl DatasetRecord {
    pub fn describe(
        id: Uuid,
        name: Option<String>,
        created_at: OffsetDateTime,
        d: &Dataset,
    ) -> Self {
        DatasetRecord {
            id,
            name,
            created_at,
            rows: d.rows(),
            input_width: d.input_width(),
            target_width: d.target_width(),
            classes: d.labels().cloned(),
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
}

/// Final figures of a training run.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionMetrics {
    /// Epochs run.
    pub epochs: u32,
    /// The epoch whose weights this version holds (early stopping may restore an earlier one).
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
