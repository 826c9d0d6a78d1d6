//! Training worker threads. Each takes jobs from the queue and trains one at a time on its own
//! OS thread (never on the async runtime), at a lower CPU priority than request handling. The
//! queue is this process's bounded in-memory queue with the embedded store, or the database's
//! shared queue ([`crate::store::Shared`]): then a worker claims the oldest queued job of the
//! whole cluster under a lease (renewed by [`super::lease`]), woken by a new job's
//! notification or, failing that, every [`CLAIM_POLL`].
//!
//! Every state change is committed to the store before it is shown in memory; epoch history is
//! written in batches (at most [`FLUSH_EVERY`] behind, [`SHARED_FLUSH_EVERY`] when other
//! replicas stream it) and completely at the end. A panic inside training is caught and
//! recorded as `failed`; the worker carries on.
//!
//! With a shared store, a database that stays unreachable does not leave a job hanging: when
//! its epochs could not be saved for a whole lease (by then its lease has expired and other
//! replicas may end it), the job stops and fails with the store's error code
//! (`store_unavailable`); its end is retried for up to another lease while the database is
//! unavailable. An end that still cannot be saved is left to the lease-expiry path: the lease
//! keeper no longer renews the job, so once the database is back it is ended `interrupted`.

use super::job::{Job, JobEnd};
use super::{JobTable, Priority, SharedQueue};
use crate::error::ErrorCode;
use crate::nn::{self, EpochReport, Observer, TrainError};
use crate::registry::{ModelVersion, Registry, Select, VersionMetrics};
use crate::store::{Claim, Retention, Store, StoreError, breaker};
use crate::tabular::Signature;
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How far the stored epoch history may lag behind a running job.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The same with a shared store, whose other replicas stream the job live from it.
const SHARED_FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often an idle worker looks for a queued job when no notification woke it.
pub(super) const CLAIM_POLL: Duration = Duration::from_secs(2);

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
    /// The database's queue, when the store is shared (then `queue` is unused).
    pub shared: Option<SharedQueue>,
    pub train_fn: TrainFn,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub table: JobTable,
    pub retention: Retention,
    pub threads: usize,
    pub priority: Priority,
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
    flush_every: Duration,
    /// How long epochs may stay unsaved before the job gives up (a shared store's lease).
    give_up: Option<Duration>,
    /// Since when epochs could not be saved.
    unsaved_since: Option<Instant>,
    /// Why the job gave up: the store's error, after `give_up` of failed saves.
    lost: Option<StoreError>,
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
        if self.flushed_at.elapsed() >= self.flush_every {
            match self.store.append_epochs(self.job.id, &self.pending) {
                Ok(()) => {
                    if self.unsaved_since.take().is_some() {
                        tracing::info!("epoch history saved again");
                    }
                    self.pending.clear();
                }
                Err(e) => {
                    let since = *self.unsaved_since.get_or_insert_with(|| {
                        tracing::warn!(error = %e, "could not save epoch history yet");
                        Instant::now()
                    });
                    if self.give_up.is_some_and(|g| since.elapsed() >= g) {
                        tracing::error!(error = %e, "epoch history unsaved for a lease; the job stops");
                        self.lost = Some(e);
                    }
                }
            }
            self.flushed_at = Instant::now();
        }
        ControlFlow::Continue(())
    }

    fn should_stop(&self) -> bool {
        self.job.cancel_requested()
            || self.job.lease_lost()
            || self.lost.is_some()
            || self.shutting_down.load(Ordering::Relaxed)
    }
}

/// Lowers the calling thread's CPU priority, so that on a busy machine predictions preempt
/// training. Linux schedules threads, not processes: the policy and the niceness are the
/// calling thread's, and the threads it spawns inherit them.
pub(super) fn lower_priority(priority: Priority) {
    #[cfg(target_os = "linux")]
    match priority {
        Priority::Idle => {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param that the call
            // only reads. Any thread may lower itself to SCHED_IDLE without privileges.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
                tracing::warn!("could not run the training thread under SCHED_IDLE");
            }
        }
        Priority::Nice(nice) => {
            // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
            let set = unsafe {
                let tid = libc::gettid();
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
            };
            if set != 0 {
                tracing::warn!(nice, "could not lower the training thread's priority");
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

/// What a run trains on, beside the job's definition.
pub(super) struct Input {
    pub data: Arc<nn::Dataset>,
    pub signature: Option<Signature>,
    pub warm_start: Option<(Arc<ModelVersion>, bool)>,
}

impl Worker {
    pub fn run(self) {
        lower_priority(self.priority);
        if self.shared.is_some() {
            return self.run_shared();
        }
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
            let Some(data) = job.take_data() else {
                self.end(
                    &job,
                    JobEnd::failed(ErrorCode::Internal, "the job has no data"),
                    &[],
                );
                continue;
            };
            let input = Input {
                data,
                signature: job.signature.clone(),
                warm_start: job.warm_start.clone(),
            };
            self.train(&job, input);
            tracing::info!(status = ?job.status(), "training ended");
        }
    }

    /// The loop of a worker on the shared queue: claim, train, repeat; wait for a wake-up (or
    /// the poll interval) when nothing is queued.
    fn run_shared(self) {
        let Some(q) = self.shared.clone() else { return };
        let Some(shared) = self.store.shared() else {
            return;
        };
        let mut failing = false;
        loop {
            if self.shutting_down.load(Ordering::Relaxed) {
                return;
            }
            let seen = q.wake.generation();
            match shared.claim(q.lease) {
                Ok(Some(claim)) => {
                    failing = false;
                    self.run_claimed(&q, claim);
                }
                Ok(None) => {
                    failing = false;
                    q.wake.wait(seen, CLAIM_POLL);
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot claim queued jobs");
                    }
                    failing = true;
                    q.wake.wait(seen, Duration::from_secs(1));
                }
            }
        }
    }

    /// Runs a job this replica claimed: on the cached copy (which event streams here follow),
    /// with the data the submitting handler prepared if it was this replica's, else the stored
    /// input.
    fn run_claimed(&self, q: &SharedQueue, claim: Claim) {
        let id = claim.job.id;
        let started_at = claim.job.started_at;
        q.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        let cached = self
            .table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        let job = match cached {
            Some(j) => j,
            None => {
                let Some(j) = Job::restore(claim.job.clone(), Vec::new()) else {
                    tracing::error!(job_id = %id, "a claimed job names an invalid model");
                    q.running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                    return;
                };
                let j = Arc::new(j);
                self.table
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, j.clone());
                j
            }
        };
        let span = tracing::info_span!("job", job_id = %job.id, model = %job.model);
        let _enter = span.enter();
        job.claimed(started_at);
        if self.shutting_down.load(Ordering::Relaxed) {
            self.end(
                &job,
                JobEnd::failed(
                    ErrorCode::Interrupted,
                    "the server shut down before the job ran",
                ),
                &[],
            );
        } else {
            match self.input_of(&job, claim) {
                Ok(input) => {
                    tracing::info!(epochs = job.params.epochs, "training started");
                    self.train(&job, input);
                    tracing::info!(status = ?job.status(), "training ended");
                }
                Err(end) => self.end(&job, end, &[]),
            }
        }
        q.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    fn input_of(&self, job: &Job, claim: Claim) -> Result<Input, JobEnd> {
        if let Some(data) = job.take_data() {
            return Ok(Input {
                data,
                signature: job.signature.clone(),
                warm_start: job.warm_start.clone(),
            });
        }
        let Some(input) = claim.input else {
            return Err(JobEnd::failed(
                ErrorCode::Internal,
                "the job's input was not stored; submit it again",
            ));
        };
        let warm_start = match job.init_from_version {
            None => None,
            Some(v) => {
                let parent = match self
                    .registry
                    .select_blocking(&job.model, Select::Version(v))
                {
                    Ok(p) => Some(p),
                    // This replica may not have heard of the version yet.
                    Err(_) => self
                        .store
                        .version(job.model.as_str(), v)
                        .ok()
                        .flatten()
                        .map(Arc::new),
                };
                let Some(parent) = parent else {
                    return Err(JobEnd::failed(
                        ErrorCode::ModelDeleted,
                        format!("version {v}, the job's starting point, no longer exists"),
                    ));
                };
                Some((parent, input.refit_scaling))
            }
        };
        Ok(Input {
            data: input.data,
            signature: input.signature,
            warm_start,
        })
    }

    /// Records the end in the store (retried for up to a lease while a shared store is
    /// unavailable), then in memory (which tells subscribers).
    fn end(&self, job: &Job, end: JobEnd, pending: &[EpochReport]) {
        let record = job.record(Some(&end));
        let saved = self.patiently(|| {
            self.store
                .append_epochs(job.id, pending)
                .and_then(|()| self.store.save_job(&record))
        });
        if let Err(e) = saved {
            tracing::error!(job_id = %job.id, error = %e, "could not save the job's end");
        }
        self.prune_jobs();
        job.finish(end);
    }

    /// Runs an idempotent store write; with a shared store, retries it while the database is
    /// unavailable, for at most a lease (after which the job's lease has expired anyway).
    fn patiently(&self, write: impl Fn() -> Result<(), StoreError>) -> Result<(), StoreError> {
        let deadline = self.shared.as_ref().map(|q| Instant::now() + q.lease);
        loop {
            match write() {
                Err(StoreError::Unavailable(_)) if deadline.is_some_and(|d| Instant::now() < d) => {
                    std::thread::sleep(breaker::PROBE_EVERY);
                }
                done => return done,
            }
        }
    }

    fn train(&self, job: &Job, input: Input) {
        let Input {
            data,
            signature,
            warm_start,
        } = input;
        let mut observer = JobObserver {
            job,
            store: &*self.store,
            shutting_down: &self.shutting_down,
            pending: Vec::new(),
            flushed_at: Instant::now(),
            flush_every: if self.shared.is_some() {
                SHARED_FLUSH_EVERY
            } else {
                FLUSH_EVERY
            },
            give_up: self.shared.as_ref().map(|q| q.lease),
            unsaved_since: None,
            lost: None,
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            train_rows: data.rows()
                - (data.rows() as f64 * job.params.validation_split).round() as usize,
            last_elapsed_ms: 0,
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            let start = warm_start
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
        let lost = observer.lost.take();
        let shutting_down = self.shutting_down.load(Ordering::Relaxed);
        let end = match result {
            _ if job.lease_lost() => JobEnd::failed(
                ErrorCode::Interrupted,
                "the replica that ran the job stopped renewing its lease",
            ),
            _ if lost.is_some() => JobEnd::failed(
                lost.as_ref()
                    .map_or(ErrorCode::StoreUnavailable, StoreError::code),
                "the job's progress could not be saved for a whole lease; it stopped",
            ),
            Ok(Ok(outcome)) => return self.publish(job, outcome, signature, &pending),
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
    fn publish(
        &self,
        job: &Job,
        outcome: nn::TrainOutcome,
        signature: Option<Signature>,
        pending: &[EpochReport],
    ) {
        let gone = || {
            JobEnd::failed(
                ErrorCode::ModelDeleted,
                "the model was deleted while the job ran",
            )
        };
        // With a shared store this replica's registry may not have heard of the model yet: the
        // store's publish decides.
        if self.shared.is_none() && !self.registry.contains(&job.model) {
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
            metrics: metrics.clone(),
            trained: outcome.model,
            signature,
            parent_version: job.init_from_version,
        };
        let mut end = JobEnd::succeeded(0, outcome.stop_reason, metrics);
        let mut record = job.record(Some(&end));
        // The store decides whether the version is served (not under a pin); memory follows
        // it in the store's order.
        let serving = self.registry.serving_lock();
        let published = self.store.publish(
            &mut v,
            &mut record,
            pending,
            self.retention.versions_per_model,
        );
        if let Ok(p) = &published {
            self.registry
                .insert_version(&job.model, Arc::new(v), &p.pruned, Some(&p.model));
        }
        drop(serving);
        match published {
            Ok(published) => {
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's policy and niceness, and those of a thread it spawns.
    fn scheduling() -> [(i32, i32); 2] {
        // SAFETY: plain calls on the calling thread (pid 0, its tid) that touch no memory of ours.
        let here = || unsafe {
            let tid = libc::gettid() as libc::id_t;
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, tid),
            )
        };
        let child = std::thread::spawn(here).join().unwrap();
        [here(), child]
    }

    #[test]
    fn training_threads_lower_themselves_and_the_threads_they_spawn() {
        let idle = std::thread::spawn(|| {
            lower_priority(Priority::Idle);
            scheduling()
        });
        for (policy, _) in idle.join().unwrap() {
            assert_eq!(policy, libc::SCHED_IDLE);
        }
        let nice = std::thread::spawn(|| {
            lower_priority(Priority::Nice(7));
            scheduling()
        });
        for (policy, nice) in nice.join().unwrap() {
            assert_eq!((policy, nice), (libc::SCHED_OTHER, 7));
        }
        // The test's own thread is untouched.
        assert_eq!(scheduling()[0].0, libc::SCHED_OTHER);
    }
}
