//! The state every handler shares: cheap handles only.

use crate::config::Config;
use crate::datasets::Datasets;
use crate::error::ApiError;
use crate::jobs::JobManager;
use crate::registry::Registry;
use crate::store::{Store, StoreError};
use std::sync::Arc;
use tokio::sync::{Mutex, MutexGuard, Semaphore, watch};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub datasets: Arc<Datasets>,
    pub jobs: Arc<JobManager>,
    /// Slots for prediction work running at once.
    pub predict_slots: Arc<Semaphore>,
    pub store: Arc<dyn Store>,
    /// Serialises the few operations that check one collection and change another (delete a
    /// model only if no job uses it; submit a job only if its model and dataset exist), store
    /// write included. An async lock: it is held across the store call.
    pub admin: Arc<Mutex<()>>,
    /// Becomes `true` when the server starts shutting down (event streams end).
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    pub async fn admin_lock(&self) -> MutexGuard<'_, ()> {
        self.admin.lock().await
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
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::from)
    }
}
