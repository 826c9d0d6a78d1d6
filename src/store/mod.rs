//! Persistence behind one trait, so a networked backend (PostgreSQL, for several replicas) can
//! be added without touching handlers or jobs. The embedded default is SQLite ([`SqliteStore`]).
//!
//! The in-memory registry, dataset catalog and job table stay the read path; every change is
//! written through to the store — and committed — before the client hears of it. Store calls
//! are synchronous: call them from worker threads or `spawn_blocking`, never on the runtime.

mod sqlite;

pub use sqlite::SqliteStore;

pub use crate::records::{DatasetRecord, JobRecord, ModelRecord, VersionRecord};

use crate::error::{ApiError, ErrorCode};
use crate::nn::EpochReport;
use crate::tabular::Table;
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

impl StoreError {
    /// The job error code of a job that failed because of this.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Full => ErrorCode::StorageFull,
            StoreError::Failed(_) => ErrorCode::StoreUnavailable,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full => {
                tracing::error!("store full");
                ApiError::new(
                    ErrorCode::StorageFull,
                    "the server's storage is full; nothing was changed",
                )
            }
            StoreError::Failed(cause) => {
                tracing::error!(%cause, "store failed");
                ApiError::new(
                    ErrorCode::StoreUnavailable,
                    "the server's storage is unavailable; nothing was changed",
                )
                .retry_after(5)
            }
        }
    }
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
    fn insert_dataset(&self, meta: &DatasetRecord, data: &Table) -> Result<(), StoreError>;
    fn load_dataset(&self, id: Uuid) -> Result<Option<Table>, StoreError>;
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
