//! Training worker threads. Each takes jobs from the shared bounded queue and trains one at a
//! time on its own OS thread (never on the async runtime). A panic inside training is caught and
//! recorded as `failed`; the worker carries on.

use super::job::Job;
use crate::nn::{self, EpochReport, Observer, TrainError};
use crate::registry::{ModelVersion, Registry, VersionMetrics};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// The training function a worker calls: [`nn::train`], or a stand-in in tests.
pub type TrainFn = fn(
    &nn::NetworkSpec,
    &nn::Dataset,
    &nn::TrainParams,
    usize,
    &mut (dyn Observer + Send),
) -> Result<nn::TrainOutcome, TrainError>;

pub(super) struct Worker {
    pub queue: Arc<Mutex<Receiver<Arc<Job>>>>,
    pub train_fn: TrainFn,
    pub registry: Arc<Registry>,
    pub threads: usize,
    pub nice: i32,
    pub shutting_down: Arc<AtomicBool>,
}

/// Relays a run's progress to its job and its cancel flag (or the server's shutdown) to the run.
struct JobObserver<'a> {
    job: &'a Job,
    shutting_down: &'a AtomicBool,
}

impl Observer for JobObserver<'_> {
    fn on_epoch(&mut self, report: &EpochReport) -> ControlFlow<()> {
        self.job.push_epoch(report);
        ControlFlow::Continue(())
    }

    fn should_stop(&self) -> bool {
        self.job.cancel_requested() || self.shutting_down.load(Ordering::Relaxed)
    }
}

/// Lowers the calling thread's CPU priority, so that on a busy machine predictions preempt
/// training. Linux applies nice values per thread.
pub(super) fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) != 0 {
            tracing::warn!(nice, "could not lower the training thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

impl Worker {
    pub fn run(self) {
        lower_priority(self.nice);
        loop {
            let next = self.queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
            let Ok(job) = next else { return };
            if self.shutting_down.load(Ordering::Relaxed) {
                job.fail("interrupted", "the server shut down before the job ran");
                continue;
            }
            if !job.start() {
                continue; // canceled while queued
            }
            let span = tracing::info_span!("job", job_id = %job.id, model = %job.model);
            let _enter = span.enter();
            tracing::info!(
                epochs = job.params.epochs,
                rows = job.data.rows(),
                "training started"
            );
            self.train(&job);
            tracing::info!(status = ?job.status(), "training ended");
        }
    }

    fn train(&self, job: &Job) {
        let mut observer = JobObserver {
            job,
            shutting_down: &self.shutting_down,
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            (self.train_fn)(
                &job.spec,
                &job.data,
                &job.params,
                self.threads,
                &mut observer,
            )
        }));
        match result {
            Ok(Ok(outcome)) => {
                let metrics = VersionMetrics::from_history(
                    &outcome.history,
                    outcome.best_epoch,
                    outcome.stop_reason,
                );
                let published = self.registry.publish(&job.model, |version| ModelVersion {
                    version,
                    created_at: OffsetDateTime::now_utc(),
                    job_id: job.id,
                    dataset_id: job.dataset_id,
                    params: job.params.clone(),
                    metrics,
                    model: outcome.model,
                });
                match published {
                    Some(v) => job.succeed(v, outcome.stop_reason),
                    None => job.fail("model_deleted", "the model was deleted while the job ran"),
                }
            }
            Ok(Err(TrainError::Canceled { .. }))
                if self.shutting_down.load(Ordering::Relaxed) && !job.cancel_requested() =>
            {
                job.fail("interrupted", "the server shut down while the job ran")
            }
            Ok(Err(TrainError::Canceled { .. })) => job.mark_canceled(),
            Ok(Err(e @ TrainError::Diverged { .. })) => job.fail("diverged", e.to_string()),
            Ok(Err(e @ TrainError::Invalid(_))) => job.fail("invalid_data", e.to_string()),
            Ok(Err(e @ TrainError::Threads(_))) => {
                tracing::error!(error = %e, "training could not start");
                job.fail("internal", "training could not start; see the server log")
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "training panicked");
                job.fail(
                    "internal",
                    "training failed unexpectedly; see the server log",
                )
            }
        }
    }
}
