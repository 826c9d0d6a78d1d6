//! The state every handler shares: one `Arc` around the services, so that the clones axum
//! makes per request (each extractor and middleware that takes the state) cost one atomic
//! increment, not one per service.

use crate::config::Config;
use crate::datasets::Datasets;
use crate::error::ApiError;
use crate::jobs::JobManager;
use crate::registry::Registry;
use crate::store::{Store, StoreError};
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore, watch};

#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Services {
    pub config: Arc<Config>,
    /// Bearer tokens and their roles (empty: authentication off).
    pub tokens: Arc<crate::auth::Tokens>,
    pub registry: Arc<Registry>,
    pub datasets: Arc<Datasets>,
    pub jobs: Arc<JobManager>,
    /// Hyperparameter sweeps: ends them as their trials end.
    pub sweeps: Arc<crate::sweeps::Sweeps>,
    /// The prediction engine (dynamic batching over its own threads).
    pub batcher: crate::batcher::Batcher,
    /// Slots for open event streams.
    pub event_streams: Arc<Semaphore>,
    /// Evaluations scoring at once (one per training worker).
    pub evaluations: Arc<Semaphore>,
    pub store: Arc<dyn Store>,
    /// The caches' link to the other replicas, when the store is shared.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Serialises the few operations that check one collection and change another (delete a
    /// model only if no job uses it; submit a job only if its model and dataset exist), store
    /// write included. An async lock: it is held across the store call.
    pub admin: Arc<Mutex<()>>,
    /// Becomes `true` when the server starts shutting down (event streams end).
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// A job from the cache, or (with a shared store) read through from the store.
    ///
    /// # Errors
    /// 503 when the store cannot be read.
    pub async fn job(&self, id: uuid::Uuid) -> Result<Option<Arc<crate::jobs::Job>>, ApiError> {
        if let Some(j) = self.jobs.get(id) {
            return Ok(Some(j));
        }
        let Some(c) = self.cluster.clone() else {
            return Ok(None);
        };
        self.store(move |_| c.refresh_job(id)).await
    }

    /// With a shared store, reads a model the cache lacks from the store (a model another
    /// replica created); afterwards the registry has it if it exists.
    ///
    /// # Errors
    /// 503 when the store cannot be read.
    pub async fn find_model(&self, name: &crate::domain::ModelName) -> Result<(), ApiError> {
        if self.registry.contains(name) {
            return Ok(());
        }
        let Some(c) = self.cluster.clone() else {
            return Ok(());
        };
        let name = name.to_string();
        self.store(move |_| c.refresh_model(&name)).await.map(drop)
    }

    /// The same for a dataset.
    ///
    /// # Errors
    /// 503 when the store cannot be read.
    pub async fn find_dataset(&self, id: uuid::Uuid) -> Result<(), ApiError> {
        if self.datasets.get(id).is_some() {
            return Ok(());
        }
        let Some(c) = self.cluster.clone() else {
            return Ok(());
        };
        self.store(move |_| c.refresh_dataset(id)).await.map(drop)
    }

    /// The admin lock, owned, so that it can move into [`AppState::commit`].
    pub async fn admin_lock(&self) -> OwnedMutexGuard<()> {
        self.admin.clone().lock_owned().await
    }

    /// Runs a store call on a blocking thread (store calls never run on the runtime).
    ///
    /// # Errors
    /// 507 when the store is full, 503 when it fails otherwise.
    pub async fn store<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.commit(None, f).await
    }

    /// Runs a store write together with the in-memory change that follows it (`f` does both) on
    /// a blocking thread, holding `guard` until both are done. The pair cannot be torn apart:
    /// if the request is dropped meanwhile (client gone, request timeout), the blocking thread
    /// still finishes it, so memory and store never disagree.
    ///
    /// # Errors
    /// 507 when the store is full, 503 when it fails otherwise.
    pub async fn commit<T, F>(
        &self,
        guard: Option<OwnedMutexGuard<()>>,
        f: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            f(&*store)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
    }
}
