//! The job system: submit → `queued` → a worker thread trains → `succeeded` (a new model
//! version is published) | `failed` | `canceled`. The queue is bounded: a full one refuses new
//! work instead of growing without limit.

mod job;
mod worker;

pub use job::{Job, JobError, JobEvent, JobState, JobStatus};
pub use worker::TrainFn;

use crate::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub struct JobManager {
    jobs: RwLock<HashMap<Uuid, Arc<Job>>>,
    queue: Mutex<Option<SyncSender<Arc<Job>>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    shutting_down: Arc<AtomicBool>,
}

/// How the training workers run.
#[derive(Clone, Copy, Debug)]
pub struct WorkerSettings {
    /// Jobs trained at once, one OS thread each.
    pub workers: usize,
    /// Threads one job's matrix products may use.
    pub threads: usize,
    /// Niceness of training threads.
    pub nice: i32,
    /// Jobs that may wait queued.
    pub capacity: usize,
}

/// The queue is full.
#[derive(Debug)]
pub struct QueueFull;

impl JobManager {
    /// Starts the training worker threads.
    ///
    /// # Errors
    /// A thread cannot be spawned.
    pub fn start(registry: Arc<Registry>, settings: WorkerSettings) -> std::io::Result<Self> {
        Self::start_with(registry, settings, crate::nn::train)
    }

    /// [`JobManager::start`] with another training function (tests inject failures with it).
    ///
    /// # Errors
    /// A thread cannot be spawned.
    pub fn start_with(
        registry: Arc<Registry>,
        settings: WorkerSettings,
        train_fn: TrainFn,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(settings.capacity);
        let rx = Arc::new(Mutex::new(rx));
        let shutting_down = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for i in 0..settings.workers.max(1) {
            let w = worker::Worker {
                queue: rx.clone(),
                train_fn,
                registry: registry.clone(),
                threads: settings.threads,
                nice: settings.nice,
                shutting_down: shutting_down.clone(),
            };
            handles.push(
                std::thread::Builder::new()
                    .name(format!("mlpd-train-{i}"))
                    .spawn(move || w.run())?,
            );
        }
        Ok(JobManager {
            jobs: RwLock::new(HashMap::new()),
            queue: Mutex::new(Some(tx)),
            workers: Mutex::new(handles),
            shutting_down,
        })
    }

    /// Records the job and queues it.
    ///
    /// # Errors
    /// `QueueFull` when no more jobs may wait (nothing is recorded then).
    pub fn submit(&self, job: Job) -> Result<Arc<Job>, QueueFull> {
        let job = Arc::new(job);
        let queue = self.queue.lock().expect("queue lock");
        let Some(tx) = queue.as_ref() else {
            return Err(QueueFull);
        };
        self.jobs
            .write()
            .expect("jobs lock")
            .insert(job.id, job.clone());
        match tx.try_send(job.clone()) {
            Ok(()) => Ok(job),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.jobs.write().expect("jobs lock").remove(&job.id);
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

    /// Jobs not yet finished that match `pred`.
    pub fn active(&self, pred: impl Fn(&Job) -> bool) -> usize {
        self.jobs
            .read()
            .expect("jobs lock")
            .values()
            .filter(|j| !j.status().is_finished() && pred(j))
            .count()
    }

    /// Queued jobs and running jobs.
    pub fn counts(&self) -> (usize, usize) {
        let jobs = self.jobs.read().expect("jobs lock");
        let queued = jobs
            .values()
            .filter(|j| j.status() == JobStatus::Queued)
            .count();
        let running = jobs
            .values()
            .filter(|j| j.status() == JobStatus::Running)
            .count();
        (queued, running)
    }

    pub fn workers_alive(&self) -> bool {
        self.workers
            .lock()
            .expect("workers lock")
            .iter()
            .all(|h| !h.is_finished())
    }

    /// Stops taking jobs, stops running ones (they end `failed`/`interrupted`), and waits up
    /// to `grace` for the workers to finish. Blocking: call off the async runtime.
    pub fn shutdown(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::Relaxed);
        self.queue.lock().expect("queue lock").take();
        for job in self.jobs.read().expect("jobs lock").values() {
            if job.status() == JobStatus::Queued {
                job.fail("interrupted", "the server shut down before the job ran");
            }
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

    /// Panics on the first job it sees with 13 epochs, trains the rest for real.
    fn flaky(
        spec: &NetworkSpec,
        data: &Dataset,
        params: &TrainParams,
        threads: usize,
        obs: &mut (dyn Observer + Send),
    ) -> Result<TrainOutcome, TrainError> {
        assert!(params.epochs != 13, "injected failure");
        crate::nn::train(spec, data, params, threads, obs)
    }

    #[test]
    fn a_panicking_job_fails_and_the_worker_carries_on() {
        let registry = Arc::new(Registry::default());
        let spec = NetworkSpec {
            inputs: 1,
            layers: vec![LayerSpec {
                units: 2,
                activation: Activation::Softmax,
            }],
            loss: Loss::CrossEntropy,
        };
        let name = ModelName::parse("m").unwrap();
        registry.create(ModelEntry {
            name: name.clone(),
            spec: spec.clone(),
            description: None,
            created_at: time::OffsetDateTime::now_utc(),
            versions: vec![],
            next_version: 1,
        });
        let data = Arc::new(
            Dataset::classification(
                ndarray::array![[0.0f32], [1.0]],
                &[Label::Int(0), Label::Int(1)],
            )
            .unwrap(),
        );
        let jobs = JobManager::start_with(
            registry.clone(),
            WorkerSettings {
                workers: 1,
                threads: 1,
                nice: 0,
                capacity: 4,
            },
            flaky,
        )
        .unwrap();
        let bad = jobs
            .submit(Job::new(
                name.clone(),
                None,
                spec.clone(),
                TrainParams {
                    epochs: 13,
                    ..Default::default()
                },
                data.clone(),
            ))
            .unwrap();
        let good = jobs
            .submit(Job::new(
                name.clone(),
                None,
                spec,
                TrainParams {
                    epochs: 2,
                    ..Default::default()
                },
                data,
            ))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !good.status().is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(bad.status(), JobStatus::Failed);
        let err = bad.state().error.clone().unwrap();
        assert_eq!(err.code, "internal");
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
        assert_eq!(registry.serving(&name, None).unwrap().version, 1);
        jobs.shutdown(Duration::from_secs(5));
    }
}
