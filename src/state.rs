//! The state every handler shares: cheap handles only.

use crate::config::Config;
use crate::datasets::Datasets;
use crate::jobs::JobManager;
use crate::registry::Registry;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, watch};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub datasets: Arc<Datasets>,
    pub jobs: Arc<JobManager>,
    /// Slots for prediction work running at once.
    pub predict_slots: Arc<Semaphore>,
    /// Serialises the few operations that check one collection and change another (delete a
    /// model only if no job uses it; submit a job only if its model and dataset exist). Held
    /// briefly, never across `.await`.
    pub admin: Arc<Mutex<()>>,
    /// Becomes `true` when the server starts shutting down (event streams end).
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    pub fn admin_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.admin.lock().unwrap_or_else(|p| p.into_inner())
    }
}
