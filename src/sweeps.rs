//! Hyperparameter sweeps: a group of ordinary training jobs (its trials) and the one decision
//! taken when the last of them ends — the sweep's end status, its best trial and, if asked,
//! the pin of that trial's version.
//!
//! The decision is the store's ([`Store::end_sweep`]): one transaction that ends the sweep only
//! if it is still running, so that when trials end on different replicas (or a replica ends it
//! while another restarts) it is taken once. Every replica runs a [`Sweeps::run`] task on the
//! async runtime (store calls on blocking threads): it watches the trials of the running sweeps
//! through the job cache (which the change feed keeps current in cluster mode), and when all of
//! a sweep's trials have ended it asks the store to end the sweep. A trial job that ended
//! `interrupted` at a restart ends its sweep the same way, once the restarted server looks.

use crate::error::ErrorCode;
use crate::jobs::{Job, JobManager, JobStatus};
use crate::records::{SweepMetric, SweepRecord, SweepResult, SweepStatus, TrialResult};
use crate::registry::Registry;
use crate::store::{Store, StoreError};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// How often running sweeps are looked at when nothing woke the task (a sweep created on
/// another replica, a missed notification).
const POLL: Duration = Duration::from_secs(1);

pub struct Sweeps {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    jobs: Arc<JobManager>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    wake: Notify,
    /// Bumped whenever the task saw a sweep end (here or on another replica).
    ended: watch::Sender<u64>,
    /// Sweeps this process is recording: stored, their trials not yet in the job table.
    creating: Mutex<HashSet<Uuid>>,
}

/// A sweep being recorded: until this is dropped its trials are not looked for in the job
/// table (where they are missing until they are queued).
pub struct Creating {
    sweeps: Arc<Sweeps>,
    id: Uuid,
}

impl Drop for Creating {
    fn drop(&mut self) {
        self.sweeps.creating().remove(&self.id);
    }
}

/// A running sweep's trials: how each stands, and the progress signals of those still going.
pub struct TrialsNow {
    pub trials: Vec<TrialResult>,
    pub going: Vec<watch::Receiver<crate::jobs::Progress>>,
}

/// Completes when one of the jobs behind `going` has finished; never when there is none.
pub async fn any_finished(going: Vec<watch::Receiver<crate::jobs::Progress>>) {
    if going.is_empty() {
        return std::future::pending().await;
    }
    let waits = going.into_iter().map(|mut rx| {
        Box::pin(async move {
            let _ = rx.wait_for(|p| p.finished).await;
        })
    });
    futures_util::future::select_all(waits).await;
}

/// A trial as it stands: from its job (`None`: the job is gone, pruned or never stored).
pub fn trial_result(job: Option<&Job>, metric: SweepMetric) -> TrialResult {
    let Some(job) = job else {
        return TrialResult {
            status: JobStatus::Failed,
            error: Some(ErrorCode::JobNotFound),
            model_version: None,
            metric: None,
        };
    };
    let st = job.state();
    TrialResult {
        status: st.status,
        error: st.error.as_ref().map(|e| e.code),
        model_version: st.model_version,
        metric: st.metrics.as_ref().and_then(|m| metric.of(m)),
    }
}

/// The best of the trials that reported the metric (the first of equals).
pub fn best(metric: SweepMetric, trials: &[TrialResult]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, t) in trials.iter().enumerate() {
        if let (Some(m), true) = (t.metric, t.status == JobStatus::Succeeded)
            && best.is_none_or(|(_, b)| metric.better(m, b))
        {
            best = Some((i, m));
        }
    }
    best.map(|(i, _)| i)
}

/// The sweep as it ends after `trials` (all ended), and the version to pin.
pub fn decide(sweep: &SweepRecord, trials: Vec<TrialResult>) -> (SweepRecord, Option<u32>) {
    let best = best(sweep.metric, &trials);
    let interrupted = trials
        .iter()
        .any(|t| t.error == Some(ErrorCode::Interrupted));
    let status = if sweep.cancel_requested {
        SweepStatus::Canceled
    } else if interrupted {
        SweepStatus::Interrupted
    } else if best.is_some() {
        SweepStatus::Succeeded
    } else {
        SweepStatus::Failed
    };
    let pin = match (status, sweep.pin_best, best) {
        (SweepStatus::Succeeded, true, Some(i)) => trials[i].model_version,
        _ => None,
    };
    let mut ended = sweep.clone();
    ended.status = status;
    ended.finished_at = Some(OffsetDateTime::now_utc());
    ended.result = Some(SweepResult {
        trials,
        best,
        pinned_version: pin,
    });
    (ended, pin)
}

impl Sweeps {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        jobs: Arc<JobManager>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Arc<Self> {
        Arc::new(Sweeps {
            store,
            registry,
            jobs,
            cluster,
            wake: Notify::new(),
            ended: watch::Sender::new(0),
            creating: Mutex::new(HashSet::new()),
        })
    }

    fn creating(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.creating.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks sweep `id` as being recorded (see [`Creating`]).
    pub fn create(self: &Arc<Self>, id: Uuid) -> Creating {
        self.creating().insert(id);
        Creating {
            sweeps: self.clone(),
            id,
        }
    }

    /// Asks the task to look at the running sweeps now (one was created or canceled).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A signal that changes whenever a sweep may have ended.
    pub fn ended(&self) -> watch::Receiver<u64> {
        self.ended.subscribe()
    }

    /// A trial's job, from the cache or (cluster mode) the store. Blocking.
    ///
    /// # Errors
    /// The store failed.
    pub fn job(&self, id: Uuid) -> Result<Option<Arc<Job>>, StoreError> {
        if let Some(j) = self.jobs.get(id) {
            return Ok(Some(j));
        }
        match &self.cluster {
            Some(c) => c.refresh_job(id),
            None => Ok(None),
        }
    }

    /// The trials' jobs of a sweep, in trial order. Blocking.
    ///
    /// # Errors
    /// The store failed.
    pub fn trial_jobs(&self, sweep: &SweepRecord) -> Result<Vec<Option<Arc<Job>>>, StoreError> {
        sweep.trials.iter().map(|t| self.job(t.job_id)).collect()
    }

    /// A running sweep's trials as they stand, and the progress signals of those still going.
    /// Blocking.
    ///
    /// # Errors
    /// The store failed.
    pub fn trials_now(&self, sweep: &SweepRecord) -> Result<TrialsNow, StoreError> {
        let jobs = self.trial_jobs(sweep)?;
        let trials = jobs
            .iter()
            .map(|j| trial_result(j.as_deref(), sweep.metric))
            .collect();
        let going = jobs
            .iter()
            .flatten()
            .filter(|j| !j.status().is_finished())
            .map(|j| j.progress())
            .collect();
        Ok(TrialsNow { trials, going })
    }

    /// Looks at every running sweep once: ends those whose trials have all ended. Returns the
    /// progress signals of the trials still going. Blocking.
    fn settle(&self) -> Result<Vec<watch::Receiver<crate::jobs::Progress>>, StoreError> {
        let mut going = Vec::new();
        let mut ended = false;
        for sweep in self.store.sweeps(true)? {
            if self.creating().contains(&sweep.id) {
                continue;
            }
            let now = self.trials_now(&sweep)?;
            if !now.going.is_empty() {
                going.extend(now.going);
                continue;
            }
            let trials = now.trials;
            let (end, pin) = decide(&sweep, trials);
            // Held across the commit and the memory update, as every serving change is.
            let serving = self.registry.serving_lock();
            if let Some(done) = self.store.end_sweep(&end, pin)? {
                if let Some(s) = &done.serving {
                    self.registry.apply_serving(&s.model);
                }
                drop(serving);
                tracing::info!(sweep_id = %sweep.id, status = ?done.sweep.status,
                    pinned = ?done.sweep.result.as_ref().and_then(|r| r.pinned_version),
                    "sweep ended");
            }
            ended = true;
        }
        if ended {
            self.ended.send_modify(|g| *g += 1);
        }
        Ok(going)
    }

    /// Ends sweeps as their trials end, until `shutdown` becomes true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            let me = self.clone();
            let going = match tokio::task::spawn_blocking(move || me.settle()).await {
                Ok(Ok(going)) => {
                    failing = false;
                    going
                }
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot look at running sweeps");
                    }
                    failing = true;
                    Vec::new()
                }
                Err(e) => {
                    tracing::error!(error = %e, "looking at running sweeps panicked");
                    Vec::new()
                }
            };
            // Any trial ending, a wake-up, the poll interval, or the end.
            tokio::select! {
                () = any_finished(going) => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
