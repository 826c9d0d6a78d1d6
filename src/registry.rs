//! The models: name → definition and trained versions. The version a model serves is swapped
//! in atomically (one write lock) when a training job succeeds; readers clone an `Arc` out and
//! compute without any lock held.

use crate::domain::ModelName;
use crate::nn::{EpochReport, NetworkSpec, StopReason, TrainParams, TrainedModel};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// Final figures of a training run.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VersionMetrics {
    /// Epochs run.
    pub epochs: u32,
    /// The epoch whose weights this version holds (early stopping may restore an earlier one).
    pub best_epoch: u32,
    pub stop_reason: StopReason,
    /// The history entry of `best_epoch`.
    pub cost: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_cost: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    pub training_ms: u64,
}

impl VersionMetrics {
    pub fn from_history(history: &[EpochReport], best_epoch: u32, stop_reason: StopReason) -> Self {
        let best = history
            .iter()
            .find(|r| r.epoch == best_epoch)
            .or(history.last());
        VersionMetrics {
            epochs: history.last().map_or(0, |r| r.epoch),
            best_epoch,
            stop_reason,
            cost: best.map_or(f64::NAN, |r| r.cost),
            val_cost: best.and_then(|r| r.val_cost),
            accuracy: best.and_then(|r| r.accuracy),
            val_accuracy: best.and_then(|r| r.val_accuracy),
            training_ms: history.last().map_or(0, |r| r.elapsed_ms),
        }
    }
}

/// One trained version of a model.
#[derive(Debug)]
pub struct ModelVersion {
    pub version: u32,
    pub created_at: OffsetDateTime,
    pub job_id: Uuid,
    pub dataset_id: Option<Uuid>,
    pub params: TrainParams,
    pub metrics: VersionMetrics,
    pub model: TrainedModel,
}

/// A model: its definition and its versions, oldest first (the last one is served).
#[derive(Clone, Debug)]
pub struct ModelEntry {
    pub name: ModelName,
    pub spec: NetworkSpec,
    pub description: Option<String>,
    pub created_at: OffsetDateTime,
    pub versions: Vec<Arc<ModelVersion>>,
    /// The number the next version gets (numbers are never reused).
    pub next_version: u32,
}

impl ModelEntry {
    pub fn latest(&self) -> Option<&Arc<ModelVersion>> {
        self.versions.last()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    NoModel,
    NotTrained,
    NoVersion,
}

#[derive(Default)]
pub struct Registry {
    models: RwLock<BTreeMap<ModelName, ModelEntry>>,
}

impl Registry {
    /// Adds a model; `false` when the name is taken.
    pub fn create(&self, entry: ModelEntry) -> bool {
        let mut m = self.models.write().expect("registry lock");
        if m.contains_key(&entry.name) {
            return false;
        }
        m.insert(entry.name.clone(), entry);
        true
    }

    pub fn get(&self, name: &ModelName) -> Option<ModelEntry> {
        self.models
            .read()
            .expect("registry lock")
            .get(name)
            .cloned()
    }

    pub fn list(&self) -> Vec<ModelEntry> {
        self.models
            .read()
            .expect("registry lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.models.read().expect("registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn remove(&self, name: &ModelName) -> bool {
        self.models
            .write()
            .expect("registry lock")
            .remove(name)
            .is_some()
    }

    /// The version to predict with: `version`, or the latest.
    pub fn serving(
        &self,
        name: &ModelName,
        version: Option<u32>,
    ) -> Result<Arc<ModelVersion>, Lookup> {
        let m = self.models.read().expect("registry lock");
        let entry = m.get(name).ok_or(Lookup::NoModel)?;
        match version {
            None => entry.latest().cloned().ok_or(Lookup::NotTrained),
            Some(v) => entry
                .versions
                .iter()
                .find(|x| x.version == v)
                .cloned()
                .ok_or(Lookup::NoVersion),
        }
    }

    /// Publishes a new version (it becomes the served one at once). `None` if the model is gone.
    pub fn publish(&self, name: &ModelName, make: impl FnOnce(u32) -> ModelVersion) -> Option<u32> {
        let mut m = self.models.write().expect("registry lock");
        let entry = m.get_mut(name)?;
        let v = entry.next_version;
        entry.next_version += 1;
        entry.versions.push(Arc::new(make(v)));
        Some(v)
    }
}
