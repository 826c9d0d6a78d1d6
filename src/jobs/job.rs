//! One training job: a state machine (queued → running → succeeded | failed | canceled), its
//! epoch history, and a signal of its progress.
//!
//! The history is the one copy of the job's epochs: readers (event streams, the history route)
//! read it by position, a bounded page at a time, so a reader costs O(1) memory however long
//! the history is. The progress signal ([`Progress`] on a `watch` channel) carries no epochs,
//! only "the history grew to epoch N" and "the job ended": a reader that has read everything
//! waits on it, then reads again. Signals coalesce, so a job that records 100,000 epochs a
//! second costs each waiting reader at most one wake-up per poll, never a queue of copies.

use crate::domain::ModelName;
use crate::error::ErrorCode;
use crate::nn::{Dataset, EpochReport, NetworkSpec, StopReason, TrainParams};
pub use crate::records::{JobError, JobRecord, JobStatus};
use crate::records::{RowCounts, VersionMetrics, VersionRecord};
use crate::tabular::Signature;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

/// What a job's progress signal says: how far its history reaches, and whether it has ended.
/// Readers fetch the epochs themselves, from the history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The last recorded epoch (0: none yet).
    pub epoch: u32,
    pub finished: bool,
}

/// A page of a job's history.
#[derive(Debug)]
pub struct HistoryPage {
    pub epochs: Vec<EpochReport>,
    /// Epochs recorded in all.
    pub total: usize,
    /// The job's status when the page was read (once finished, nothing more is recorded).
    pub status: JobStatus,
}

#[derive(Debug)]
pub struct JobState {
    pub status: JobStatus,
    pub history: Vec<EpochReport>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub error: Option<JobError>,
    pub model_version: Option<u32>,
    pub stop_reason: Option<StopReason>,
    /// The figures of the version a succeeded job created.
    pub metrics: Option<VersionMetrics>,
}

/// How a job ends: computed first, written to the store, then applied in memory.
#[derive(Clone, Debug)]
pub struct JobEnd {
    pub status: JobStatus,
    pub error: Option<JobError>,
    pub model_version: Option<u32>,
    pub stop_reason: Option<StopReason>,
    /// Boxed: a job's end travels in `Result`s, kept small.
    pub metrics: Option<Box<VersionMetrics>>,
    pub finished_at: OffsetDateTime,
}

impl JobEnd {
    pub fn succeeded(version: u32, stop_reason: StopReason, metrics: VersionMetrics) -> Self {
        JobEnd {
            status: JobStatus::Succeeded,
            error: None,
            model_version: Some(version),
            stop_reason: Some(stop_reason),
            metrics: Some(Box::new(metrics)),
            finished_at: OffsetDateTime::now_utc(),
        }
    }

    pub fn failed(code: ErrorCode, message: impl Into<String>) -> Self {
        JobEnd {
            status: JobStatus::Failed,
            error: Some(JobError {
                code,
                message: message.into(),
            }),
            model_version: None,
            stop_reason: None,
            metrics: None,
            finished_at: OffsetDateTime::now_utc(),
        }
    }

    pub fn canceled() -> Self {
        JobEnd {
            status: JobStatus::Canceled,
            error: None,
            model_version: None,
            stop_reason: None,
            metrics: None,
            finished_at: OffsetDateTime::now_utc(),
        }
    }
}

#[derive(Debug)]
pub struct Job {
    pub id: Uuid,
    pub model: ModelName,
    pub dataset_id: Option<Uuid>,
    pub spec: NetworkSpec,
    pub params: TrainParams,
    pub created_at: OffsetDateTime,
    /// The preprocessing learned at submission; the new version keeps it.
    pub signature: Option<Signature>,
    /// Rows trained on and rows left out.
    pub rows: Option<RowCounts>,
    /// The version whose weights the job starts from (a warm start).
    pub init_from_version: Option<u32>,
    /// That version's model and whether to refit its scaling, until the job runs (a restored
    /// job holds none).
    pub warm_start: Option<(Arc<VersionRecord>, bool)>,
    /// The training data until a worker takes it (finished jobs hold none).
    data: Mutex<Option<Arc<Dataset>>>,
    cancel: AtomicBool,
    /// This replica's lease on the job expired and another replica ended it: stop, publish
    /// nothing.
    lease_lost: AtomicBool,
    state: Mutex<JobState>,
    /// Changed after every recorded epoch and at the end (after `state`, never under it).
    progress: watch::Sender<Progress>,
}

impl Job {
    pub fn new(
        model: ModelName,
        dataset_id: Option<Uuid>,
        spec: NetworkSpec,
        params: TrainParams,
        data: Arc<Dataset>,
        prepared: Option<(Signature, RowCounts)>,
    ) -> Self {
        let (signature, rows) = prepared.unzip();
        Self::build(
            Uuid::new_v4(),
            model,
            dataset_id,
            spec,
            params,
            OffsetDateTime::now_utc(),
            (Some(data), signature, rows),
            JobState {
                status: JobStatus::Queued,
                history: Vec::new(),
                started_at: None,
                finished_at: None,
                error: None,
                model_version: None,
                stop_reason: None,
                metrics: None,
            },
        )
    }

    /// A job as the store recorded it.
    pub fn restore(r: JobRecord, history: Vec<EpochReport>) -> Option<Self> {
        let model = ModelName::parse(&r.model).ok()?;
        let state = JobState {
            status: r.status,
            history,
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error,
            model_version: r.model_version,
            stop_reason: r.stop_reason,
            metrics: r.metrics,
        };
        Some(Self::build(
            r.id,
            model,
            r.dataset_id,
            r.spec,
            r.params,
            r.created_at,
            (None, None, r.rows),
            state,
        ))
        .map(|mut j| {
            j.init_from_version = r.init_from_version;
            j
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        id: Uuid,
        model: ModelName,
        dataset_id: Option<Uuid>,
        spec: NetworkSpec,
        params: TrainParams,
        created_at: OffsetDateTime,
        (data, signature, rows): (Option<Arc<Dataset>>, Option<Signature>, Option<RowCounts>),
        state: JobState,
    ) -> Self {
        Job {
            signature,
            rows,
            init_from_version: None,
            warm_start: None,
            id,
            model,
            dataset_id,
            spec,
            params,
            created_at,
            data: Mutex::new(data),
            cancel: AtomicBool::new(false),
            lease_lost: AtomicBool::new(false),
            progress: watch::Sender::new(Progress {
                epoch: state.history.last().map_or(0, |r| r.epoch),
                finished: state.status.is_finished(),
            }),
            state: Mutex::new(state),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, JobState> {
        // A panic while holding this lock is caught by the worker; the state stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> JobStatus {
        self.state().status
    }

    /// The training data, while no worker has taken it.
    pub fn data(&self) -> Option<Arc<Dataset>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Hands the training data to the worker (once).
    pub fn take_data(&self) -> Option<Arc<Dataset>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The job as the store keeps it: now, or as it will be after `end`.
    pub fn record(&self, end: Option<&JobEnd>) -> JobRecord {
        let st = self.state();
        JobRecord {
            id: self.id,
            model: self.model.to_string(),
            dataset_id: self.dataset_id,
            spec: self.spec.clone(),
            params: self.params.clone(),
            created_at: self.created_at,
            status: end.map_or(st.status, |e| e.status),
            started_at: st.started_at,
            finished_at: end.map(|e| e.finished_at).or(st.finished_at),
            error: end.map_or(st.error.clone(), |e| e.error.clone()),
            model_version: end.map_or(st.model_version, |e| e.model_version),
            stop_reason: end.map_or(st.stop_reason, |e| e.stop_reason),
            rows: self.rows,
            init_from_version: self.init_from_version,
            metrics: end.map_or_else(|| st.metrics.clone(), |e| e.metrics.as_deref().cloned()),
        }
    }

    pub fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Tells a running job to stop (a cancel recorded in the shared store).
    pub fn flag_cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Tells a running job that its lease is gone.
    pub fn lose_lease(&self) {
        self.lease_lost.store(true, Ordering::Relaxed);
    }

    pub fn lease_lost(&self) -> bool {
        self.lease_lost.load(Ordering::Relaxed)
    }

    /// The last recorded epoch (0: none).
    pub fn last_epoch(&self) -> u32 {
        self.state().history.last().map_or(0, |r| r.epoch)
    }

    /// Records the epochs after the last one recorded (another replica's, read from the store).
    pub fn push_new_epochs(&self, epochs: &[EpochReport]) {
        let last = self.last_epoch();
        for e in epochs.iter().filter(|e| e.epoch > last) {
            self.push_epoch(e);
        }
    }

    /// Claimed from the shared queue by this replica: running (unless it has ended meanwhile).
    pub fn claimed(&self, started_at: Option<OffsetDateTime>) -> bool {
        let mut st = self.state();
        if st.status.is_finished() {
            return false;
        }
        st.status = JobStatus::Running;
        st.started_at = started_at.or(st.started_at);
        true
    }

    /// Brings a cached copy up to the stored record of a job another replica runs (or ended):
    /// epochs first, then the state, so streams see the epochs before the end.
    pub fn apply_record(&self, r: &JobRecord, epochs: &[EpochReport]) {
        self.push_new_epochs(epochs);
        if r.status.is_finished() {
            self.data.lock().unwrap_or_else(|p| p.into_inner()).take();
            self.finish(JobEnd {
                status: r.status,
                error: r.error.clone(),
                model_version: r.model_version,
                stop_reason: r.stop_reason,
                metrics: r.metrics.clone().map(Box::new),
                finished_at: r.finished_at.unwrap_or_else(OffsetDateTime::now_utc),
            });
        } else if r.status == JobStatus::Running {
            let mut st = self.state();
            if st.status == JobStatus::Queued {
                st.status = JobStatus::Running;
                st.started_at = r.started_at;
                drop(st);
                // Another replica trains it: this copy's data is not needed.
                self.data.lock().unwrap_or_else(|p| p.into_inner()).take();
            }
        }
    }

    /// Asks the job to stop. A queued job ends `canceled` at once (returns `Some(true)`); a
    /// running one within one mini-batch (`Some(false)`). `None` if it had already finished.
    pub fn request_cancel(&self) -> Option<bool> {
        let mut st = self.state();
        if st.status.is_finished() {
            return None;
        }
        self.cancel.store(true, Ordering::Relaxed);
        if st.status == JobStatus::Queued {
            self.finish_locked(&mut st, JobEnd::canceled());
            drop(st);
            self.progress.send_modify(|p| p.finished = true);
            self.data.lock().unwrap_or_else(|p| p.into_inner()).take();
            return Some(true);
        }
        Some(false)
    }

    /// queued → running; `false` (and nothing changes) if the job was canceled while queued.
    pub fn start(&self) -> bool {
        let mut st = self.state();
        if st.status != JobStatus::Queued {
            return false;
        }
        st.status = JobStatus::Running;
        st.started_at = Some(OffsetDateTime::now_utc());
        true
    }

    /// Records an epoch, then signals it.
    pub fn push_epoch(&self, report: &EpochReport) {
        self.state().history.push(report.clone());
        self.progress.send_modify(|p| p.epoch = report.epoch);
    }

    /// Applies the end (once) and signals it.
    pub fn finish(&self, end: JobEnd) {
        let mut st = self.state();
        self.finish_locked(&mut st, end);
        drop(st);
        self.progress.send_modify(|p| p.finished = true);
    }

    fn finish_locked(&self, st: &mut JobState, end: JobEnd) {
        if st.status.is_finished() {
            return;
        }
        st.status = end.status;
        crate::metrics::job_finished(match end.status {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Canceled => "canceled",
            _ => "failed",
        });
        st.error = end.error;
        st.model_version = end.model_version;
        st.stop_reason = end.stop_reason;
        st.metrics = end.metrics.map(|m| *m);
        st.finished_at = Some(end.finished_at);
    }

    /// The job's progress signal. To miss nothing, a reader marks the signal seen
    /// (`borrow_and_update`) *before* it reads the history, and waits for a change only when
    /// the read found nothing new: anything recorded after the read changes the signal again.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Up to `max` recorded epochs after epoch `after`, oldest first.
    pub fn epochs_after(&self, after: u32, max: usize) -> HistoryPage {
        let st = self.state();
        // Epoch numbers increase along the history.
        let start = st.history.partition_point(|r| r.epoch <= after);
        page(&st, start, max)
    }

    /// Up to `limit` recorded epochs from position `offset` (0: the first epoch).
    pub fn history_page(&self, offset: usize, limit: usize) -> HistoryPage {
        page(&self.state(), offset, limit)
    }
}

fn page(st: &JobState, start: usize, max: usize) -> HistoryPage {
    let total = st.history.len();
    let start = start.min(total);
    let end = start.saturating_add(max).min(total);
    HistoryPage {
        epochs: st.history[start..end].to_vec(),
        total,
        status: st.status,
    }
}
