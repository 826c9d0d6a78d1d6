//! Keeping a replica's caches current when several replicas share one database.
//!
//! The store is the source of truth; the registry, the dataset catalog and the job table are
//! caches of it. One rule invalidates them: when the store's change feed names a record (a
//! model, a dataset, a job, a job's epochs), that record is read again and the cache entry is
//! replaced by it (or removed, when the store no longer has it). When the feed (re)connects,
//! and every [`RESYNC_EVERY`] in case a notification was lost, everything is compared with
//! the store and what differs is read again (a comparison that failed, the database being down
//! still, is tried again within `FEED_WAIT`). A handler that misses in a cache reads through
//! to the store ([`Cluster::refresh_model`] and friends) before answering 404, so a record
//! another replica just created is found even before its notification arrives.
//!
//! Runs on its own OS thread (`mlpd-sync`), and on blocking threads for read-throughs: every
//! call here is a blocking store call.

use crate::datasets::{Datasets, StoredDataset};
use crate::domain::ModelName;
use crate::jobs::{Job, JobManager};
use crate::registry::Registry;
use crate::store::{Change, Shared, Store, StoreError};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long the feed waits for a notification before checking for shutdown and resync.
const FEED_WAIT: Duration = Duration::from_millis(500);
/// How often everything is compared with the store, notifications or not.
pub const RESYNC_EVERY: Duration = Duration::from_secs(5);

pub struct Cluster {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    datasets: Arc<Datasets>,
    jobs: Arc<JobManager>,
    stop: AtomicBool,
}

impl Cluster {
    /// `None` unless the store is shared.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        datasets: Arc<Datasets>,
        jobs: Arc<JobManager>,
    ) -> Option<Arc<Self>> {
        store.shared()?;
        Some(Arc::new(Cluster {
            store,
            registry,
            datasets,
            jobs,
            stop: AtomicBool::new(false),
        }))
    }

    fn shared(&self) -> &dyn Shared {
        self.store.shared().expect("a cluster has a shared store")
    }

    /// Starts following the change feed on a thread of its own.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("mlpd-sync".into())
            .spawn(move || me.follow())?;
        Ok(())
    }

    /// Stops following the feed (within `FEED_WAIT`).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn follow(&self) {
        let mut feed = self.shared().listen();
        let mut synced = Instant::now();
        let mut failing = false;
        // A resync is due (the feed reconnected, or it is time); one that failed (the store
        // still down a moment after the feed came back) is tried again on the next turn.
        let mut due = false;
        let mut resync_failed = false;
        while !self.stop.load(Ordering::Relaxed) {
            match feed.next(FEED_WAIT) {
                Ok(Some(Change::Resync)) => {
                    if failing {
                        tracing::info!("change feed reconnected");
                    }
                    failing = false;
                    due = true;
                }
                Ok(Some(change)) => {
                    if let Err(e) = self.apply(&change) {
                        tracing::warn!(error = %e, ?change, "cannot apply a change");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "change feed lost; reconnecting");
                    }
                    failing = true;
                    std::thread::sleep(FEED_WAIT);
                }
            }
            if synced.elapsed() >= RESYNC_EVERY {
                due = true;
            }
            if due && !failing {
                match self.resync() {
                    Ok(()) => {
                        due = false;
                        resync_failed = false;
                    }
                    Err(e) => {
                        if !resync_failed {
                            tracing::warn!(error = %e, "cannot compare the caches with the store");
                        }
                        resync_failed = true;
                        // Not at once again: a feed flooded with changes would spin on it.
                        std::thread::sleep(FEED_WAIT / 5);
                    }
                }
                synced = Instant::now();
            }
        }
    }

    fn apply(&self, change: &Change) -> Result<(), StoreError> {
        match change {
            Change::Job(id) => self.refresh_job(*id).map(drop),
            Change::Epochs(id) => {
                if self.jobs.runs_here(*id) {
                    return Ok(());
                }
                match self.jobs.get(*id) {
                    Some(job) if !job.status().is_finished() => {
                        let epochs = self.shared().epochs_after(*id, job.last_epoch())?;
                        job.push_new_epochs(&epochs);
                        Ok(())
                    }
                    Some(_) => Ok(()),
                    None => self.refresh_job(*id).map(drop),
                }
            }
            Change::Cancel(id) => {
                if let Some(job) = self.jobs.get(*id)
                    && self.jobs.runs_here(*id)
                {
                    job.flag_cancel();
                }
                Ok(())
            }
            Change::Model(name) => self.refresh_model(name).map(drop),
            Change::Dataset(id) => self.refresh_dataset(*id).map(drop),
            Change::Resync => self.resync(),
        }
    }

    /// Reads a job again; returns the cached copy (`None`: the store has no such job).
    ///
    /// # Errors
    /// The store failed.
    pub fn refresh_job(&self, id: Uuid) -> Result<Option<Arc<Job>>, StoreError> {
        let shared = self.shared();
        let record = shared.job(id)?;
        self.jobs
            .apply_remote(id, record, |after| shared.epochs_after(id, after))
    }

    /// Reads a model and its versions again (the metadata of those the registry lacks, and the
    /// weights of the one to be served if the version cache lacks them: it is in memory before
    /// it is served); `false` when the store has no such model.
    ///
    /// # Errors
    /// The store failed.
    pub fn refresh_model(&self, name: &str) -> Result<bool, StoreError> {
        let Ok(parsed) = ModelName::parse(name) else {
            return Ok(false);
        };
        let shared = self.shared();
        // Ordered with this replica's own serving changes (which hold it across their commit
        // and memory update): a read from before one of them is not applied after it.
        let _serving = self.registry.serving_lock();
        let Some((record, numbers)) = shared.model(name)? else {
            self.registry.remove(&parsed);
            return Ok(false);
        };
        let have = match self.registry.version_numbers(&parsed) {
            Some((created, have)) if created == record.created_at => have,
            _ => Vec::new(),
        };
        let mut fetched = Vec::new();
        for &n in numbers.iter().filter(|n| !have.contains(n)) {
            if let Some(v) = self.store.version_meta(name, n)? {
                fetched.push(v);
            }
        }
        let served = record
            .pinned_version
            .filter(|p| numbers.contains(p))
            .or_else(|| numbers.iter().copied().max());
        if let Some(n) = served
            && !self.registry.is_cached(&parsed, record.created_at, n)
            && let Some(v) = self.store.version(name, n)?
        {
            self.registry
                .cache_version(record.created_at, std::sync::Arc::new(v));
        }
        self.registry.reconcile(record, &numbers, fetched);
        Ok(true)
    }

    /// Reads a dataset's description again; `false` when the store has no such dataset.
    ///
    /// # Errors
    /// The store failed.
    pub fn refresh_dataset(&self, id: Uuid) -> Result<bool, StoreError> {
        match self.shared().dataset(id)? {
            None => {
                self.datasets.remove(id);
                Ok(false)
            }
            Some(record) => {
                if self.datasets.get(id).is_none() {
                    self.datasets.insert(StoredDataset::new(record, None));
                }
                Ok(true)
            }
        }
    }

    /// Compares every cache with the store and reads again what differs.
    ///
    /// # Errors
    /// The store failed.
    pub fn resync(&self) -> Result<(), StoreError> {
        let shared = self.shared();
        // Models.
        let stored = shared.model_versions()?;
        let names: HashSet<&str> = stored.iter().map(|(n, _, _)| n.as_str()).collect();
        for (name, created, numbers) in &stored {
            let cached = ModelName::parse(name)
                .ok()
                .and_then(|n| self.registry.version_numbers(&n));
            if cached.as_ref() != Some(&(*created, numbers.clone())) {
                self.refresh_model(name)?;
            }
        }
        for e in self.registry.list() {
            if !names.contains(e.name.as_str()) {
                self.refresh_model(e.name.as_str())?;
            }
        }
        // Datasets.
        let ids: HashSet<Uuid> = shared.dataset_ids()?.into_iter().collect();
        for id in &ids {
            if self.datasets.get(*id).is_none() {
                self.refresh_dataset(*id)?;
            }
        }
        for d in self.datasets.list() {
            if !ids.contains(&d.id()) {
                self.datasets.remove(d.id());
            }
        }
        // Jobs: new ones, gone ones, and every one not finished here (its epochs may lag).
        let stored: std::collections::HashMap<Uuid, crate::records::JobStatus> =
            shared.job_statuses()?.into_iter().collect();
        let cached: std::collections::HashMap<Uuid, crate::records::JobStatus> =
            self.jobs.statuses().into_iter().collect();
        for (id, status) in &stored {
            match cached.get(id) {
                Some(c) if c.is_finished() && c == status => {}
                _ => {
                    self.refresh_job(*id)?;
                }
            }
        }
        for id in cached.keys().filter(|id| !stored.contains_key(id)) {
            self.refresh_job(*id)?;
        }
        Ok(())
    }
}
