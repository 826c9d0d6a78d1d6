//! Persistence behind one trait with two backends: the embedded default, SQLite
//! ([`SqliteStore`], a file in the data directory), and PostgreSQL ([`PostgresStore`], selected
//! by `--database-url`). Handlers and jobs see only the trait. What must be unique is decided by
//! the backend in a transaction (model names, version numbers); the retention rules both apply
//! live in [`retention`].
//!
//! The in-memory registry, dataset catalog and job table stay the read path; every change is
//! written through to the store — and committed — before the client hears of it. Store calls
//! are synchronous: call them from worker threads or `spawn_blocking`, never on the runtime.

pub mod breaker;
mod cells;
mod inputs;
mod postgres;
pub mod retention;
pub mod serving;
mod sqlite;
pub mod sweeps;

pub use breaker::Availability;
pub use inputs::JobInput;
pub use postgres::{DatabaseUrl, PostgresStore, SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION};
pub use sqlite::SqliteStore;

pub use crate::records::{
    Claimed, DatasetRecord, EvaluationRecord, IdempotencyClaim, JobRecord, ModelRecord,
    ServingChange, ServingUpdate, StoredAnswer, SweepRecord, VersionMeta, VersionRecord,
};

use crate::error::{ApiError, ErrorCode};
use crate::nn::EpochReport;
use crate::records::JobStatus;
use crate::tabular::Table;
use std::time::Duration;
use uuid::Uuid;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk (or the database's size limit) is full.
    #[error("the data directory is full")]
    Full,
    /// The change contradicts what is stored (a name taken by another writer): the caller's
    /// conflict, answered with this code (a 409) and message.
    #[error("{1}")]
    Conflict(ErrorCode, String),
    /// The record the change belongs to is gone (a model deleted while its job ran).
    #[error("the record is gone")]
    Gone,
    /// The database cannot be reached (its connection failed, or it is known to be down and
    /// nothing was tried): the change may be retried once it is back.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Anything else: unreadable, locked, corrupt, unwritable, a connection pool exhausted.
    #[error("the store failed: {0}")]
    Failed(String),
}

impl StoreError {
    /// The job error code of a job that failed because of this.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Full => ErrorCode::StorageFull,
            StoreError::Conflict(code, _) => *code,
            StoreError::Gone => ErrorCode::ModelDeleted,
            StoreError::Unavailable(_) | StoreError::Failed(_) => ErrorCode::StoreUnavailable,
        }
    }
}

impl StoreError {
    /// The store holds `max` of `what` (`models`, `datasets`) already.
    pub fn limit_reached(what: &str, max: usize) -> Self {
        StoreError::Conflict(
            ErrorCode::LimitReached,
            format!("this server keeps at most {max} {what}; delete one first"),
        )
    }

    pub fn model_busy(name: &str) -> Self {
        StoreError::Conflict(
            ErrorCode::ModelBusy,
            format!("model {name:?} has a queued or running job; cancel it first"),
        )
    }

    pub fn dataset_in_use(id: Uuid) -> Self {
        StoreError::Conflict(
            ErrorCode::DatasetInUse,
            format!("dataset {id} is used by a queued or running job"),
        )
    }

    pub fn model_gone(name: &str) -> Self {
        StoreError::Conflict(ErrorCode::ModelNotFound, format!("no model named {name:?}"))
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
            StoreError::Conflict(ErrorCode::QueueFull, message) => {
                ApiError::new(ErrorCode::QueueFull, message).retry_after(5)
            }
            StoreError::Conflict(code, message) => ApiError::new(code, message),
            StoreError::Gone => ApiError::new(
                ErrorCode::ModelDeleted,
                "the record was deleted meanwhile; nothing was changed",
            ),
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "store unavailable");
                ApiError::new(
                    ErrorCode::StoreUnavailable,
                    "the database is unavailable; retry in a few seconds",
                )
                .retry_after(breaker::RETRY_AFTER_SECS)
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
    /// Oldest first within each model; without their weights (the version cache loads those
    /// on demand with [`Store::version`]).
    pub versions: Vec<VersionMeta>,
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

/// What [`Store::publish`] decided.
#[derive(Debug)]
pub struct Published {
    /// The version number allocated.
    pub version: u32,
    /// Version numbers removed by retention.
    pub pruned: Vec<u32>,
    /// The model as the publishing transaction read it: its pin and aliases are what is served.
    pub model: ModelRecord,
}

/// What [`Store::change_serving`] decided.
#[derive(Debug)]
pub struct ServingChanged {
    /// The model's record after the change.
    pub model: ModelRecord,
    /// The history entry; none when nothing changed.
    pub change: Option<ServingChange>,
}

/// What [`Store::end_sweep`] did when its call ended the sweep.
#[derive(Debug)]
pub struct EndedSweep {
    /// The sweep as stored now.
    pub sweep: SweepRecord,
    /// The pin of its best version, when one was asked and made.
    pub serving: Option<ServingChanged>,
}

/// Evaluations kept per version (the oldest beyond it are deleted when one is added).
pub const EVALUATIONS_PER_VERSION: usize = 100;

/// The persistence interface. Every method commits before it returns `Ok`.
pub trait Store: Send + Sync + 'static {
    /// Everything but dataset contents and versions' weights.
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// One version with its weights; `None` when there is no such version.
    fn version(&self, model: &str, version: u32) -> Result<Option<VersionRecord>, StoreError>;
    /// One version without its weights; `None` when there is no such version.
    fn version_meta(&self, model: &str, version: u32) -> Result<Option<VersionMeta>, StoreError>;
    /// Stores a new model unless `max` models (0: no limit) are stored already: the count and
    /// the insert are one transaction, so writers racing for the last place get one success.
    ///
    /// # Errors
    /// [`StoreError::Conflict`]: `model_exists` when the name is taken, `limit_reached` when
    /// `max` models are stored.
    fn insert_model(&self, m: &ModelRecord, max: usize) -> Result<(), StoreError>;
    /// Deletes the model and its versions, unless a queued or running job trains it (checked
    /// in the same transaction).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] (`model_busy`) when a job uses it.
    fn delete_model(&self, name: &str) -> Result<(), StoreError>;
    /// Stores a dataset unless `max` datasets (0: no limit) are stored already (one transaction).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] (`limit_reached`) when `max` datasets are stored.
    fn insert_dataset(
        &self,
        meta: &DatasetRecord,
        data: &Table,
        max: usize,
    ) -> Result<(), StoreError>;
    fn load_dataset(&self, id: Uuid) -> Result<Option<Table>, StoreError>;
    /// Deletes a dataset, unless a queued or running job uses it (same transaction).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] (`dataset_in_use`) when a job uses it.
    fn delete_dataset(&self, id: Uuid) -> Result<(), StoreError>;
    /// Records a newly submitted, `queued` job, unless its model is gone (checked in the same
    /// transaction, serialised with [`Store::delete_model`] and [`Store::delete_dataset`]).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] (`model_not_found`).
    fn submit_job(&self, job: &JobRecord) -> Result<(), StoreError>;
    /// Inserts or updates a job (not its epochs).
    fn save_job(&self, job: &JobRecord) -> Result<(), StoreError>;
    /// Removes a job that was never accepted (its queue was full).
    fn delete_job(&self, id: Uuid) -> Result<(), StoreError>;
    /// A model that arrives with its first version (an import), in one transaction.
    /// Under the same rules as [`Store::insert_model`].
    fn import_model(
        &self,
        m: &ModelRecord,
        v: &VersionRecord,
        max: usize,
    ) -> Result<(), StoreError>;
    fn append_epochs(&self, job: Uuid, epochs: &[EpochReport]) -> Result<(), StoreError>;
    /// In one transaction: allocates the model's next version number (written into `v.version`
    /// and `job.model_version`: the store decides it, never a process's memory), stores the
    /// version, the job's final epochs and its `succeeded` state, and prunes versions beyond
    /// the retention limit.
    ///
    /// # Errors
    /// [`StoreError::Gone`] when the model was deleted meanwhile.
    fn publish(
        &self,
        v: &mut VersionRecord,
        job: &mut JobRecord,
        epochs: &[EpochReport],
        keep: usize,
    ) -> Result<Published, StoreError>;
    /// Deletes finished jobs beyond `keep`, oldest first; returns their ids.
    fn prune_jobs(&self, keep: usize) -> Result<Vec<Uuid>, StoreError>;
    /// Stores an evaluation of its version, keeping that version's newest `keep`; `false` (and
    /// nothing stored) when the version no longer exists. Deleting a version deletes its
    /// evaluations.
    fn insert_evaluation(&self, e: &EvaluationRecord, keep: usize) -> Result<bool, StoreError>;
    /// A version's evaluations, newest first.
    fn evaluations(&self, model: &str, version: u32) -> Result<Vec<EvaluationRecord>, StoreError>;
    /// Claims an idempotency key, in one transaction that first purges expired keys (as
    /// [`Store::purge_idempotency_keys`]): a key nobody holds (or held past expiry) is inserted
    /// as reserved by `claim.owner`; a reservation not renewed since `claim.stale_before` is
    /// taken over; a key of another fingerprint is a mismatch; else the recorded answer, or
    /// "in flight". Concurrent claims of one key (any replica) get one `Reserved`.
    fn claim_idempotency_key(&self, claim: &IdempotencyClaim) -> Result<Claimed, StoreError>;
    /// Renews `owner`'s reservation of `key` (so it is not taken over while the work runs);
    /// `false` when the key is no longer `owner`'s.
    fn renew_idempotency_key(&self, key: &str, owner: Uuid, now: i64) -> Result<bool, StoreError>;
    /// Records the answer under `owner`'s reservation of `key`, ending it; `false` (nothing
    /// written) when the reservation was taken over meanwhile.
    fn record_idempotent_answer(
        &self,
        key: &str,
        owner: Uuid,
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError>;
    /// Deletes `owner`'s reservation of `key` (the work failed or changed nothing): a retry
    /// starts afresh.
    fn release_idempotency_key(&self, key: &str, owner: Uuid) -> Result<(), StoreError>;
    /// Deletes keys claimed before `expired_before`, unless still reserved and renewed since
    /// `stale_before`; returns how many.
    fn purge_idempotency_keys(
        &self,
        expired_before: i64,
        stale_before: i64,
    ) -> Result<usize, StoreError>;
    /// In one transaction (serialised with [`Store::publish`] of the same model): applies a
    /// change of what the model serves or names ([`serving::apply`]), records it in the model's
    /// history (keeping the newest [`serving::HISTORY_PER_MODEL`]).
    ///
    /// # Errors
    /// [`StoreError::Conflict`]: `model_not_found`, `version_not_found`, `alias_not_found`.
    fn change_serving(
        &self,
        model: &str,
        update: &ServingUpdate,
    ) -> Result<ServingChanged, StoreError>;
    /// Deletes one version (and its evaluations) unless it is pinned or aliased, in one
    /// transaction; a history entry when it was the one served.
    ///
    /// # Errors
    /// [`StoreError::Conflict`]: `model_not_found`, `version_not_found`, `version_in_use`.
    fn delete_version(
        &self,
        model: &str,
        version: u32,
    ) -> Result<Option<ServingChange>, StoreError>;
    /// A model's serving history, newest first.
    fn serving_history(&self, model: &str) -> Result<Vec<ServingChange>, StoreError>;
    /// In one transaction (serialised with [`Store::delete_model`]): a new sweep and its trial
    /// jobs, all `queued`, unless its model is gone.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] (`model_not_found`).
    fn submit_sweep(&self, sweep: &SweepRecord, jobs: &[JobRecord]) -> Result<(), StoreError>;
    /// Deletes a sweep that was never accepted (its queue was full) and its trial jobs.
    fn delete_sweep(&self, id: Uuid) -> Result<(), StoreError>;
    fn sweep(&self, id: Uuid) -> Result<Option<SweepRecord>, StoreError>;
    /// Every sweep (with `running_only`, those still running), newest first.
    fn sweeps(&self, running_only: bool) -> Result<Vec<SweepRecord>, StoreError>;
    /// Records that a running sweep is to be canceled; the sweep as stored (`None`: no such
    /// sweep). An ended sweep is left as it is.
    fn cancel_sweep(&self, id: Uuid) -> Result<Option<SweepRecord>, StoreError>;
    /// In one transaction: ends `sweep` (stores it as given: its end status and result) if it
    /// is still running, and then pins version `pin` of its model ([`sweeps::pin_best`]).
    /// Replicas racing to end one sweep get one `Some`; the others `None`.
    fn end_sweep(
        &self,
        sweep: &SweepRecord,
        pin: Option<u32>,
    ) -> Result<Option<EndedSweep>, StoreError>;
    /// Whether the store answers.
    fn ping(&self) -> Result<(), StoreError>;
    /// Whether store calls are attempted now, and how many outages there were: a store that
    /// can become unreachable fails fast while it is down (see [`breaker`]).
    fn availability(&self) -> Availability {
        Availability::default()
    }
    /// The queue, leases and change feed of a store that several replicas share (PostgreSQL);
    /// `None` for the embedded store, whose process keeps its queue in memory.
    fn shared(&self) -> Option<&dyn Shared> {
        None
    }
}

/// What a worker claimed from the shared queue.
#[derive(Debug)]
pub struct Claim {
    /// The job, now `running` under this replica's lease.
    pub job: JobRecord,
    /// Its input; `None` for a job queued before inputs were stored (it cannot run).
    pub input: Option<JobInput>,
}

/// What [`Shared::cancel`] did.
#[derive(Debug)]
pub enum Canceled {
    /// The job was queued: it is `canceled` now (the record as stored).
    Queued(Box<JobRecord>),
    /// The job runs: its cancel flag is set, and the replica that runs it has been told.
    Requested,
    /// The job had already ended so.
    Finished(JobStatus),
    NotFound,
}

/// A change another replica (or this one) committed, as the change feed announces it: ids
/// only; the listener re-reads what changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A job's row changed (queued, claimed, ended, pruned).
    Job(Uuid),
    /// A job recorded epochs.
    Epochs(Uuid),
    /// A running job was asked to stop.
    Cancel(Uuid),
    /// A model, or its versions, changed (created, trained, deleted).
    Model(String),
    Dataset(Uuid),
    /// The feed (re)connected: notifications may have been missed, re-read everything.
    Resync,
}

/// A blocking feed of [`Change`]s, on a connection of its own.
pub trait Changes: Send {
    /// The next change, waiting at most `timeout` (`Ok(None)`: none came). After an error the
    /// next call reconnects, and a successful reconnect yields [`Change::Resync`] first.
    ///
    /// # Errors
    /// The connection failed.
    fn next(&mut self, timeout: Duration) -> Result<Option<Change>, StoreError>;
}

/// The part of a store that replicas share: the job queue with leases and cancel flags, reads
/// of single records (to refresh a cache), and the change feed. Leases use the database's
/// clock, so replicas' clocks need not agree.
pub trait Shared: Send + Sync {
    /// This replica's id (the owner of the leases it holds).
    fn replica(&self) -> &str;
    /// Records a `queued` job and its input unless `capacity` jobs are queued cluster-wide
    /// (the count and the insert are one transaction), or its model is gone.
    ///
    /// # Errors
    /// [`StoreError::Conflict`]: `queue_full`, `model_not_found`.
    fn enqueue(&self, job: &JobRecord, input: &JobInput, capacity: usize)
    -> Result<(), StoreError>;
    /// Records a new sweep and its `queued` trial jobs, all with `input`, unless fewer than
    /// their number of places are left in the queue (cluster-wide) or the model is gone: all
    /// in one transaction, so a sweep is queued whole or not at all.
    ///
    /// # Errors
    /// [`StoreError::Conflict`]: `queue_full`, `model_not_found`.
    fn enqueue_sweep(
        &self,
        sweep: &SweepRecord,
        jobs: &[JobRecord],
        input: &JobInput,
        capacity: usize,
    ) -> Result<(), StoreError>;
    /// Claims the oldest queued job (skipping rows other claimers hold): it becomes `running`,
    /// owned by this replica with a lease of `lease`.
    fn claim(&self, lease: Duration) -> Result<Option<Claim>, StoreError>;
    /// Extends the leases of `jobs`, those of this replica's workers train; returns those still
    /// running under this replica's lease, with their cancel flags. A job this replica no
    /// longer trains (its worker gave up on a lost database) is not renewed: its lease expires.
    fn renew(&self, jobs: &[Uuid], lease: Duration) -> Result<Vec<(Uuid, bool)>, StoreError>;
    /// Ends `failed`/`interrupted` the running jobs whose lease expired, and with `mine` those
    /// this replica id held in a previous life; returns their ids.
    fn reap(&self, mine: bool) -> Result<Vec<Uuid>, StoreError>;
    /// Cancels a queued job, or flags a running one.
    fn cancel(&self, id: Uuid) -> Result<Canceled, StoreError>;
    fn job(&self, id: Uuid) -> Result<Option<JobRecord>, StoreError>;
    /// A job's epochs after `after`, oldest first.
    fn epochs_after(&self, id: Uuid, after: u32) -> Result<Vec<EpochReport>, StoreError>;
    /// Every job's id and status.
    fn job_statuses(&self) -> Result<Vec<(Uuid, JobStatus)>, StoreError>;
    /// A model and its version numbers.
    fn model(&self, name: &str) -> Result<Option<(ModelRecord, Vec<u32>)>, StoreError>;
    /// Every model's name, creation time and version numbers.
    fn model_versions(&self) -> Result<Vec<(String, time::OffsetDateTime, Vec<u32>)>, StoreError>;
    fn dataset(&self, id: Uuid) -> Result<Option<DatasetRecord>, StoreError>;
    fn dataset_ids(&self) -> Result<Vec<Uuid>, StoreError>;
    /// Opens the change feed.
    fn listen(&self) -> Box<dyn Changes>;
}

/// Opens the configured backend: PostgreSQL when a database URL is given (migrating its schema),
/// else the embedded store in the data directory. Blocking: call it off the runtime.
///
/// # Errors
/// The store cannot be opened; the message names the data directory or the database (never
/// its password).
pub fn open(config: &crate::config::Config) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    use anyhow::Context;
    Ok(match &config.database_url {
        Some(url) => std::sync::Arc::new(
            PostgresStore::connect(url, config.database_pool_size, &config.replica_id())
                .with_context(|| format!("cannot use the database {url}"))?,
        ),
        None => std::sync::Arc::new(
            SqliteStore::open(&config.data_dir, config.max_store_bytes()).with_context(|| {
                format!("cannot use data directory {}", config.data_dir.display())
            })?,
        ),
    })
}
