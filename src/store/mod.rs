//! Persistence behind one trait, so a networked backend (PostgreSQL, for several replicas) can
//! be added without touching handlers or jobs. The embedded default is SQLite ([`SqliteStore`]).
//!
//! The in-memory registry, dataset catalog and job table stay the read path; every change is
//! written through to the store — and committed — before the client hears of it. Store calls
//! are synchronous: call them from worker threads or `spawn_blocking`, never on the runtime.

mod sqlite;

pub use sqlite::SqliteStore;

use crate::nn::{
    Dataset, EpochReport, LabelSet, NetworkSpec, StopReason, TrainParams, TrainedModel,
};
use crate::registry::VersionMetrics;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk (or the database's size limit) is full.
    #[error("the data directory is full")]
    Full,
    /// Anything else: unreadable, locked, corrupt, unwritable.
    #[error("the store failed: {0}")]
    Failed(String),
}

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
    pub status: crate::jobs::JobStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub error: Option<crate::jobs::JobError>,
    pub model_version: Option<u32>,
    pub stop_reason: Option<StopReason>,
}

/// Everything loaded at startup.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub models: Vec<ModelRecord>,
    /// Oldest first within each model.
    pub versions: Vec<VersionRecord>,
    pub datasets: Vec<DatasetRecord>,
    pub jobs: Vec<(JobRecord, Vec<EpochReport>)>,
}

/// Retention limits applied when versions are published and jobs finish.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Versions kept per model (the newest, which is served, is always kept).
    pub versions_per_model: usize,
    /// Finished jobs kept (oldest pruned first).
    pub finished_jobs: usize,
}

/// The persistence interface. Every method commits before it returns `Ok`.
pub trait Store: Send + Sync + 'static {
    /// Everything but dataset contents.
    fn load(&self) -> Result<Snapshot, StoreError>;
    fn insert_model(&self, m: &ModelRecord) -> Result<(), StoreError>;
    /// Deletes the model and its versions.
    fn delete_model(&self, name: &str) -> Result<(), StoreError>;
    fn insert_dataset(&self, meta: &DatasetRecord, data: &Dataset) -> Result<(), StoreError>;
    fn load_dataset(&self, id: Uuid) -> Result<Option<Dataset>, StoreError>;
    fn delete_dataset(&self, id: Uuid) -> Result<(), StoreError>;
    /// Inserts or updates a job (not its epochs).
    fn save_job(&self, job: &JobRecord) -> Result<(), StoreError>;
    /// Removes a job that was never accepted (its queue was full).
    fn delete_job(&self, id: Uuid) -> Result<(), StoreError>;
    /// A model that arrives with its first version (an import), in one transaction.
    fn import_model(&self, m: &ModelRecord, v: &VersionRecord) -> Result<(), StoreError>;
    fn append_epochs(&self, job: Uuid, epochs: &[EpochReport]) -> Result<(), StoreError>;
    /// In one transaction: the new version, the model's next version number, the job's final
    /// epochs and its `succeeded` state. Prunes versions beyond the retention limit, returning
    /// the numbers it removed.
    fn publish(
        &self,
        v: &VersionRecord,
        job: &JobRecord,
        epochs: &[EpochReport],
        keep: usize,
    ) -> Result<Vec<u32>, StoreError>;
    /// Deletes finished jobs beyond `keep`, oldest first; returns their ids.
    fn prune_jobs(&self, keep: usize) -> Result<Vec<Uuid>, StoreError>;
    /// Whether the store answers.
    fn ping(&self) -> Result<(), StoreError>;
}
