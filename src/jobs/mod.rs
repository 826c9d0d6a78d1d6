//! The job system: submit → `queued` → a worker thread trains → `succeeded` (a new model
//! version is published) | `failed` | `canceled`. The queue is bounded: a full one refuses new
//! work instead of growing without limit.
//!
//! With the embedded store the queue is this process's (`queue`). With a shared store
//! (PostgreSQL) it is the database's: any replica enqueues, every replica's workers claim, a
//! running job holds a lease that `lease` renews, and the job table here is a cache of every
//! replica's jobs, kept current from the store's change feed ([`JobManager::apply_remote`]):
//! an entry is replaced by what the store says whenever the feed names its job, except for the
//! jobs this replica runs, whose state this replica writes.

mod job;
mod lease;
mod queue;
mod worker;

pub use job::{HistoryPage, Job, JobEnd, JobError, JobState, JobStatus, Progress};
pub use worker::TrainFn;

use crate::error::ErrorCode;
use crate::nn::EpochReport;
use crate::registry::Registry;
use crate::store::{Retention, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Every job the service remembers, by id (shared with the workers, which prune it).
pub(crate) type JobTable = Arc<RwLock<HashMap<Uuid, Arc<Job>>>>;

/// How training threads give way to predictions for the CPU (they set it on themselves when
/// they start; the threads a run spawns inherit it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Linux `SCHED_IDLE`: a training thread runs on a core only when nothing else wants it.
    Idle,
    /// A niceness, 0–19: training keeps a smaller share of a core that others want.
    Nice(i32),
}

/// How the training workers run.
#[derive(Clone, Copy, Debug)]
pub struct WorkerSettings {
    /// Jobs trained at once, one OS thread each.
    pub workers: usize,
    /// Threads one job's matrix products may use.
    pub threads: usize,
    /// How training threads give way to predictions.
    pub priority: Priority,
    /// Jobs that may wait queued.
    pub capacity: usize,
    pub retention: Retention,
    /// A running job's lease on a shared store.
    pub lease: Duration,
}

/// A counter that idle workers of the shared queue wait on: bumped when a job may be waiting.
#[derive(Default)]
pub(crate) struct Wake {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Wake {
    fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    /// Waits until the generation differs from `seen`, at most `timeout`.
    fn wait(&self, seen: u64, timeout: Duration) {
        let g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(g, timeout, |g| *g == seen)
            .unwrap_or_else(|p| p.into_inner());
    }
}

/// What the workers of a shared store's queue share.
#[derive(Clone)]
pub(crate) struct SharedQueue {
    wake: Arc<Wake>,
    /// The jobs this replica's workers run now.
    running: Arc<Mutex<HashSet<Uuid>>>,
    lease: Duration,
}

pub struct JobManager {
    jobs: JobTable,
    queue: Arc<queue::Queue>,
    shared: Option<SharedQueue>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    shutting_down: Arc<AtomicBool>,
    store: Arc<dyn Store>,
}

/// The queue is full.
#[derive(Debug)]
pub struct QueueFull;

impl JobManager {
    /// Starts the training worker threads, with the jobs loaded from the store (all finished,
    /// unless the store is shared: then other replicas' jobs may be queued or running) already
    /// in the table: a worker's first claim cannot race their loading.
    ///
    /// # Errors
    /// A thread cannot be spawned.
    pub fn start(
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
        settings: WorkerSettings,
        restored: Vec<Job>,
    ) -> std::io::Result<Self> {
        Self::start_with(registry, store, settings, restored, crate::nn::train_from)
    }

    /// [`JobManager::start`] with another training function (tests inject failures with it).
    ///
    /// # Errors
    /// A thread cannot be spawned.
    pub fn start_with(
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
        settings: WorkerSettings,
        restored: Vec<Job>,
        train_fn: TrainFn,
    ) -> std::io::Result<Self> {
        let queue = Arc::new(queue::Queue::new(settings.capacity));
        let shutting_down = Arc::new(AtomicBool::new(false));
        let table: JobTable = Arc::new(RwLock::new(
            restored.into_iter().map(|j| (j.id, Arc::new(j))).collect(),
        ));
        let shared = store.shared().is_some().then(|| SharedQueue {
            wake: Arc::new(Wake::default()),
            running: Arc::new(Mutex::new(HashSet::new())),
            lease: settings.lease,
        });
        let mut handles = Vec::new();
        if let Some(q) = &shared {
            let keeper = lease::Keeper {
                store: store.clone(),
                table: table.clone(),
                queue: q.clone(),
                shutting_down: shutting_down.clone(),
            };
            std::thread::Builder::new()
                .name("mlpd-lease".into())
                .spawn(move || keeper.run())?;
        }
        for i in 0..settings.workers.max(1) {
            let w = worker::Worker {
                queue: queue.clone(),
                shared: shared.clone(),
                train_fn,
                registry: registry.clone(),
                store: store.clone(),
                table: table.clone(),
                retention: settings.retention,
                threads: settings.threads,
                priority: settings.priority,
                shutting_down: shutting_down.clone(),
            };
            handles.push(
                std::thread::Builder::new()
                    .name(format!("mlpd-train-{i}"))
                    .spawn(move || w.run())?,
            );
        }
        Ok(JobManager {
            jobs: table,
            queue,
            shared,
            workers: Mutex::new(handles),
            shutting_down,
            store,
        })
    }

    /// Whether jobs queue in a shared store (else in this process).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Wakes idle workers of the shared queue: a job may be waiting.
    pub fn wake(&self) {
        if let Some(q) = &self.shared {
            q.wake.notify();
        }
    }

    /// Whether this replica's workers run the job.
    pub fn runs_here(&self, id: Uuid) -> bool {
        self.shared.as_ref().is_some_and(|q| {
            q.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&id)
        })
    }

    /// Brings the cached copy of a job to what the store says (`None`: the store no longer has
    /// it), reading with `epochs_after` the epochs the copy lacks. The jobs this replica runs
    /// are left alone: their state is written here. Returns the cached job.
    ///
    /// # Errors
    /// `epochs_after` failed.
    pub fn apply_remote(
        &self,
        id: Uuid,
        record: Option<crate::records::JobRecord>,
        epochs_after: impl FnOnce(u32) -> Result<Vec<EpochReport>, StoreError>,
    ) -> Result<Option<Arc<Job>>, StoreError> {
        if self.runs_here(id) {
            return Ok(self.get(id));
        }
        let Some(record) = record else {
            self.jobs.write().expect("jobs lock").remove(&id);
            return Ok(None);
        };
        let queued = record.status == JobStatus::Queued;
        let job = match self.get(id) {
            Some(job) => {
                if !job.status().is_finished() {
                    let epochs = epochs_after(job.last_epoch())?;
                    job.apply_record(&record, &epochs);
                }
                job
            }
            None => {
                let history = epochs_after(0)?;
                let Some(job) = Job::restore(record, history) else {
                    return Ok(None);
                };
                let job = Arc::new(job);
                // A racing refresh may have inserted it: keep the first copy.
                let mut t = self.jobs.write().expect("jobs lock");
                t.entry(id).or_insert(job).clone()
            }
        };
        if queued {
            self.wake();
        }
        Ok(Some(job))
    }

    /// Every cached job's id and status.
    pub fn statuses(&self) -> Vec<(Uuid, JobStatus)> {
        self.jobs
            .read()
            .expect("jobs lock")
            .values()
            .map(|j| (j.id, j.status()))
            .collect()
    }

    /// Queues a job (already saved as `queued`; with a shared store, already enqueued there).
    ///
    /// # Errors
    /// `QueueFull` when no more jobs may wait (nothing is recorded then).
    pub fn submit(&self, job: Arc<Job>) -> Result<Arc<Job>, QueueFull> {
        let mut jobs = self.submit_all(vec![job])?;
        Ok(jobs.remove(0))
    }

    /// Queues jobs, all or none (a sweep's trials), as [`JobManager::submit`] queues one; returns
    /// the cached copies.
    ///
    /// # Errors
    /// `QueueFull` when fewer places are left than there are jobs (none is queued then).
    pub fn submit_all(&self, jobs: Vec<Arc<Job>>) -> Result<Vec<Arc<Job>>, QueueFull> {
        if self.shared.is_some() {
            let mut t = self.jobs.write().expect("jobs lock");
            let jobs = jobs
                .into_iter()
                .map(|job| t.entry(job.id).or_insert(job).clone())
                .collect();
            drop(t);
            self.wake();
            return Ok(jobs);
        }
        // In the table first: a worker may take a job the moment it is queued.
        let mut t = self.jobs.write().expect("jobs lock");
        for job in &jobs {
            t.insert(job.id, job.clone());
        }
        drop(t);
        match self.queue.push_all(&jobs) {
            Ok(()) => Ok(jobs),
            Err(queue::Refused::Full | queue::Refused::Closed) => {
                let mut t = self.jobs.write().expect("jobs lock");
                for job in &jobs {
                    t.remove(&job.id);
                }
                Err(QueueFull)
            }
        }
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<Job>> {
        self.jobs.read().expect("jobs lock").get(&id).cloned()
    }

    /// All jobs, newest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        let mut v: Vec<_> = self
            .jobs
            .read()
            .expect("jobs lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        v
    }

    /// Jobs by status: (queued, running, finished).
    pub fn counts(&self) -> (usize, usize, usize) {
        let jobs = self.jobs.read().expect("jobs lock");
        let mut c = (0, 0, 0);
        for j in jobs.values() {
            match j.status() {
                JobStatus::Queued => c.0 += 1,
                JobStatus::Running => c.1 += 1,
                _ => c.2 += 1,
            }
        }
        c
    }

    pub fn workers_alive(&self) -> bool {
        self.workers
            .lock()
            .expect("workers lock")
            .iter()
            .all(|h| !h.is_finished())
    }

    /// Stops taking jobs, stops running ones (they end `failed`/`interrupted`, recorded), and
    /// waits up to `grace` for the workers to finish. Blocking: call off the async runtime.
    /// With a shared store, queued jobs stay queued for the other replicas.
    pub fn shutdown(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.queue.close();
        self.wake();
        let queued: Vec<_> = self
            .jobs
            .read()
            .expect("jobs lock")
            .values()
            .filter(|j| self.shared.is_none() && j.status() == JobStatus::Queued)
            .cloned()
            .collect();
        for job in queued {
            let end = JobEnd::failed(
                ErrorCode::Interrupted,
                "the server shut down before the job ran",
            );
            if let Err(e) = self.store.save_job(&job.record(Some(&end))) {
                tracing::error!(job_id = %job.id, error = %e, "could not save the job's end");
            }
            job.finish(end);
        }
        let deadline = Instant::now() + grace;
        let handles = std::mem::take(&mut *self.workers.lock().expect("workers lock"));
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModelName;
    use crate::nn::{
        Activation, Dataset, Label, LayerSpec, Loss, NetworkSpec, Observer, TrainError,
        TrainOutcome, TrainParams,
    };
    use crate::registry::ModelEntry;

    /// Panics on a job with 13 epochs, trains the rest for real.
    fn flaky(
        spec: &NetworkSpec,
        data: &Dataset,
        params: &TrainParams,
        threads: usize,
        obs: &mut (dyn Observer + Send),
        start: Option<crate::nn::WarmStart<'_>>,
    ) -> Result<TrainOutcome, TrainError> {
        assert!(params.epochs != 13, "injected failure");
        crate::nn::train_from(spec, data, params, threads, obs, start)
    }

    #[test]
    fn a_panicking_job_fails_and_the_worker_carries_on() {
        let spec = NetworkSpec {
            inputs: 1,
            layers: vec![LayerSpec {
                units: 2,
                activation: Activation::Softmax,
            }],
            loss: Loss::CrossEntropy,
        };
        let name = ModelName::parse("m").unwrap();
        let entry = ModelEntry {
            name: name.clone(),
            spec: spec.clone(),
            description: None,
            created_at: time::OffsetDateTime::now_utc(),
            versions: vec![],
            next_version: 1,
            pinned_version: None,
            aliases: Default::default(),
        };
        let dir = std::env::temp_dir().join(format!("mlpd-unit-{}", Uuid::new_v4()));
        let store: Arc<dyn Store> = Arc::new(crate::store::SqliteStore::open(&dir, None).unwrap());
        let registry = Arc::new(Registry::new(store.clone(), 1 << 20));
        store.insert_model(&entry.record(), 0).unwrap();
        registry.create(entry);
        let data = Arc::new(
            Dataset::classification(
                ndarray::array![[0.0f32], [1.0]],
                &[Label::Int(0), Label::Int(1)],
            )
            .unwrap(),
        );
        let settings = WorkerSettings {
            workers: 1,
            threads: 1,
            priority: Priority::Nice(0),
            capacity: 4,
            retention: Retention {
                versions_per_model: 10,
                finished_jobs: 10,
            },
            lease: Duration::from_secs(10),
        };
        let jobs =
            JobManager::start_with(registry.clone(), store.clone(), settings, Vec::new(), flaky)
                .unwrap();
        let submit = |epochs| {
            let params = TrainParams {
                epochs,
                ..Default::default()
            };
            let job = Arc::new(Job::new(
                name.clone(),
                None,
                spec.clone(),
                params,
                data.clone(),
                None,
            ));
            store.save_job(&job.record(None)).unwrap();
            jobs.submit(job).unwrap()
        };
        let bad = submit(13);
        let good = submit(2);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !good.status().is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(bad.status(), JobStatus::Failed);
        let err = bad.state().error.clone().unwrap();
        assert_eq!(err.code, crate::error::ErrorCode::Internal);
        assert!(
            !err.message.contains("injected"),
            "the panic text stays in the log: {}",
            err.message
        );
        assert_eq!(
            good.status(),
            JobStatus::Succeeded,
            "the same worker ran the next job"
        );
        assert!(jobs.workers_alive());
        let served = registry.select_blocking(&name, crate::registry::Select::Served);
        assert_eq!(served.unwrap().version, 1);
        jobs.shutdown(Duration::from_secs(5));
        // The store agrees: one failed job, one succeeded with its version.
        let snap = store.load().unwrap();
        assert_eq!(snap.versions.len(), 1);
        let mut statuses: Vec<_> = snap
            .jobs
            .iter()
            .map(|(j, _)| format!("{:?}", j.status))
            .collect();
        statuses.sort();
        assert_eq!(statuses, ["Failed", "Succeeded"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
