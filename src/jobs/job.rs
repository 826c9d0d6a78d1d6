//! One training job: a state machine (queued → running → succeeded | failed | canceled), its
//! epoch history, and a broadcast of its progress. History and broadcast change under one lock,
//! so a subscriber that snapshots the history and subscribes in one step misses nothing and
//! sees nothing twice.

use crate::domain::ModelName;
use crate::nn::{Dataset, EpochReport, NetworkSpec, StopReason, TrainParams};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use utoipa::ToSchema;
use uuid::Uuid;

/// Room for live events per job; a subscriber that falls further behind re-reads the history.
const EVENT_BUFFER: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, ToSchema)]
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
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct JobError {
    /// `diverged`, `invalid_data`, `interrupted`, `model_deleted` or `internal`.
    pub code: String,
    pub message: String,
}

/// What subscribers receive.
#[derive(Clone, Debug)]
pub enum JobEvent {
    Epoch(EpochReport),
    End,
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
}

#[derive(Debug)]
pub struct Job {
    pub id: Uuid,
    pub model: ModelName,
    pub dataset_id: Option<Uuid>,
    pub spec: NetworkSpec,
    pub params: TrainParams,
    pub data: Arc<Dataset>,
    pub created_at: OffsetDateTime,
    cancel: AtomicBool,
    state: Mutex<JobState>,
    events: broadcast::Sender<JobEvent>,
}

impl Job {
    pub fn new(
        model: ModelName,
        dataset_id: Option<Uuid>,
        spec: NetworkSpec,
        params: TrainParams,
        data: Arc<Dataset>,
    ) -> Self {
        Job {
            id: Uuid::new_v4(),
            model,
            dataset_id,
            spec,
            params,
            data,
            created_at: OffsetDateTime::now_utc(),
            cancel: AtomicBool::new(false),
            state: Mutex::new(JobState {
                status: JobStatus::Queued,
                history: Vec::new(),
                started_at: None,
                finished_at: None,
                error: None,
                model_version: None,
                stop_reason: None,
            }),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, JobState> {
        // A panic while holding this lock is caught by the worker; the state stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> JobStatus {
        self.state().status
    }

    pub fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Asks the job to stop. A queued job ends `canceled` at once; a running one within one
    /// mini-batch. `false` if it had already finished.
    pub fn request_cancel(&self) -> bool {
        let mut st = self.state();
        if st.status.is_finished() {
            return false;
        }
        self.cancel.store(true, Ordering::Relaxed);
        if st.status == JobStatus::Queued {
            self.finish_locked(&mut st, JobStatus::Canceled, None);
        }
        true
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

    pub fn push_epoch(&self, report: &EpochReport) {
        let mut st = self.state();
        st.history.push(report.clone());
        let _ = self.events.send(JobEvent::Epoch(report.clone()));
    }

    pub fn succeed(&self, version: u32, stop_reason: StopReason) {
        let mut st = self.state();
        st.model_version = Some(version);
        st.stop_reason = Some(stop_reason);
        self.finish_locked(&mut st, JobStatus::Succeeded, None);
    }

    pub fn fail(&self, code: &str, message: impl Into<String>) {
        let mut st = self.state();
        self.finish_locked(
            &mut st,
            JobStatus::Failed,
            Some(JobError {
                code: code.into(),
                message: message.into(),
            }),
        );
    }

    pub fn mark_canceled(&self) {
        let mut st = self.state();
        self.finish_locked(&mut st, JobStatus::Canceled, None);
    }

    fn finish_locked(&self, st: &mut JobState, status: JobStatus, error: Option<JobError>) {
        if st.status.is_finished() {
            return;
        }
        st.status = status;
        st.error = error;
        st.finished_at = Some(OffsetDateTime::now_utc());
        let _ = self.events.send(JobEvent::End);
    }

    /// The history so far, whether the job has finished, and a receiver for what comes next —
    /// taken together, under the state lock.
    pub fn subscribe(&self) -> (Vec<EpochReport>, bool, broadcast::Receiver<JobEvent>) {
        let st = self.state();
        (
            st.history.clone(),
            st.status.is_finished(),
            self.events.subscribe(),
        )
    }
}
