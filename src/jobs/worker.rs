//! Training worker threads. Each takes jobs from the shared bounded queue and trains one at a
//! time on its own OS thread (never on the async runtime), at a lower CPU priority than request
//! handling. Every state change is committed to the store before it is shown in memory; epoch
//! history is written in batches (at most a second behind) and completely at the end. A panic
//! inside training is caught and recorded as `failed`; the worker carries on.

use super::JobTable;
use super::job::{Job, JobEnd};
use crate::error::ErrorCode;
use crate::nn::{self, EpochReport, Observer, TrainError};
use crate::registry::{ModelVersion, Registry, VersionMetrics};
use crate::store::{Retention, Store, StoreError};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How far the stored epoch history may lag behind a running job.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The training function a worker calls: [`nn::train`], or a stand-in in tests.
pub type TrainFn = fn(
    &nn::NetworkSpec,
    &nn::Dataset,
    &nn::TrainParams,
    usize,
    &mut (dyn Observer + Send),
    Option<nn::WarmStart<'_>>,
) -> Result<nn::TrainOutcome, TrainError>;

pub(super) struct Worker {
    pub queue: Arc<super::queue::Queue>,
    pub train_fn: TrainFn,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub table: JobTable,
    pub retention: Retention,
    pub threads: usize,
    pub nice: i32,
    pub shutting_down: Arc<AtomicBool>,
}

/// Relays a run's progress to its job (and, in batches, to the store), and its cancel flag (or
/// the server's shutdown) to the run.
struct JobObserver<'a> {
    job: &'a Job,
    store: &'a dyn Store,
    shutting_down: &'a AtomicBool,
    pending: Vec<EpochReport>,
    flushed_at: Instant,
    /// Rows trained on per epoch (the validation split held out), for throughput metrics.
    train_rows: usize,
    last_elapsed_ms: u64,
}

impl Observer for JobObserver<'_> {
    fn on_epoch(&mut self, report: &EpochReport) -> ControlFlow<()> {
        let took = report.elapsed_ms.saturating_sub(self.last_elapsed_ms);
        self.last_elapsed_ms = report.elapsed_ms;
        crate::metrics::epoch_trained(self.train_rows, Duration::from_millis(took));
        self.job.push_epoch(report);
        self.pending.push(report.clone());
        if self.flushed_at.elapsed() >= FLUSH_EVERY {
            match self.store.append_epochs(self.job.id, &self.pending) {
                Ok(()) => self.pending.clear(),
                Err(e) => tracing::warn!(error = %e, "could not save epoch history yet"),
            }
            self.flushed_at = Instant::now();
        }
        ControlFlow::Continue(())
    }

    fn should_stop(&self) -> bool {
        self.job.cancel_requested() || self.shutting_down.load(Ordering::Relaxed)
    }
}

/// Lowers the calling thread's CPU priority, so that on a busy machine predictions preempt
/// training. Linux applies nice values per thread, and threads inherit them.
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
            let Some(job) = self.queue.pop() else { return };
            if self.shutting_down.load(Ordering::Relaxed) {
                self.end(
                    &job,
                    JobEnd::failed(
                        ErrorCode::Interrupted,
                        "the server shut down before the job ran",
                    ),
                    &[],
                );
                continue;
            }
            if !job.start() {
                continue; // canceled while queued
            }
            if let Err(e) = self.store.save_job(&job.record(None)) {
                tracing::warn!(job_id = %job.id, error = %e, "could not save the job's running state");
            }
            let span = tracing::info_span!("job", job_id = %job.id, model = %job.model);
            let _enter = span.enter();
            tracing::info!(epochs = job.params.epochs, "training started");
            self.train(&job);
            tracing::info!(status = ?job.status(), "training ended");
        }
    }

    /// Records the end in the store, then in memory (which tells subscribers).
    fn end(&self, job: &Job, end: JobEnd, pending: &[EpochReport]) {
        let saved = self
            .store
            .append_epochs(job.id, pending)
            .and_then(|()| self.store.save_job(&job.record(Some(&end))));
        if let Err(e) = saved {
            tracing::error!(job_id = %job.id, error = %e, "could not save the job's end");
        }
        self.prune_jobs();
        job.finish(end);
    }

    fn train(&self, job: &Job) {
        let Some(data) = job.take_data() else {
            return self.end(
                job,
                JobEnd::failed(ErrorCode::Internal, "the job has no data"),
                &[],
            );
        };
        let mut observer = JobObserver {
            job,
            store: &*self.store,
            shutting_down: &self.shutting_down,
            pending: Vec::new(),
            flushed_at: Instant::now(),
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            train_rows: data.rows()
                - (data.rows() as f64 * job.params.validation_split).round() as usize,
            last_elapsed_ms: 0,
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            let start = job
                .warm_start
                .as_ref()
                .map(|(parent, refit_scaling)| nn::WarmStart {
                    model: &parent.trained,
                    refit_scaling: *refit_scaling,
                });
            (self.train_fn)(
                &job.spec,
                &data,
                &job.params,
                self.threads,
                &mut observer,
                start,
            )
        }));
        drop(data);
        let pending = std::mem::take(&mut observer.pending);
        let shutting_down = self.shutting_down.load(Ordering::Relaxed);
        let end = match result {
            Ok(Ok(outcome)) => return self.publish(job, outcome, &pending),
            Ok(Err(TrainError::Canceled { .. })) if shutting_down && !job.cancel_requested() => {
                JobEnd::failed(
                    ErrorCode::Interrupted,
                    "the server shut down while the job ran",
                )
            }
            Ok(Err(TrainError::Canceled { .. })) => JobEnd::canceled(),
            Ok(Err(e @ TrainError::Diverged { .. })) => {
                JobEnd::failed(ErrorCode::Diverged, e.to_string())
            }
            Ok(Err(e @ TrainError::Invalid(_))) => {
                JobEnd::failed(ErrorCode::InvalidData, e.to_string())
            }
            Ok(Err(e @ TrainError::Threads(_))) => {
                tracing::error!(error = %e, "training could not start");
                JobEnd::failed(
                    ErrorCode::Internal,
                    "training could not start; see the server log",
                )
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "training panicked");
                JobEnd::failed(
                    ErrorCode::Internal,
                    "training failed unexpectedly; see the server log",
                )
            }
        };
        self.end(job, end, &pending);
    }

    /// Commits the new version together with the job's success, then serves it.
    fn publish(&self, job: &Job, outcome: nn::TrainOutcome, pending: &[EpochReport]) {
        let gone = || {
            JobEnd::failed(
                ErrorCode::ModelDeleted,
                "the model was deleted while the job ran",
            )
        };
        if !self.registry.contains(&job.model) {
            return self.end(job, gone(), pending);
        }
        // Read in place: a long history is never copied.
        let metrics = VersionMetrics::from_history(
            &job.state().history,
            outcome.best_epoch,
            outcome.stop_reason,
        );
        // The version number is the store's to allocate; 0 until it has.
        let mut v = ModelVersion {
            model: job.model.to_string(),
            version: 0,
            created_at: OffsetDateTime::now_utc(),
            job_id: Some(job.id),
            dataset_id: job.dataset_id,
            params: job.params.clone(),
            metrics,
            trained: outcome.model,
            signature: job.signature.clone(),
            parent_version: job.init_from_version,
        };
        let mut end = JobEnd::succeeded(0, outcome.stop_reason);
        let mut record = job.record(Some(&end));
        match self.store.publish(
            &mut v,
            &mut record,
            pending,
            self.retention.versions_per_model,
        ) {
            Ok(published) => {
                self.registry
                    .insert_version(&job.model, Arc::new(v), &published.pruned);
                self.prune_jobs();
                end.model_version = Some(published.version);
                job.finish(end);
            }
            Err(StoreError::Gone) => self.end(job, gone(), pending),
            Err(e) => {
                tracing::error!(error = %e, "could not save the new version");
                let code = e.code();
                self.end(
                    job,
                    JobEnd::failed(
                        code,
                        "the new version could not be saved; the previous version keeps serving",
                    ),
                    pending,
                );
            }
        }
    }

    /// Deletes finished jobs beyond the retention limit: runs after a job's end is committed and
    /// before it is shown, so a client that sees the end also sees the pruned list.
    fn prune_jobs(&self) {
        match self.store.prune_jobs(self.retention.finished_jobs) {
            Ok(ids) if !ids.is_empty() => {
                let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
                for id in ids {
                    t.remove(&id);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not prune finished jobs"),
        }
    }
}
