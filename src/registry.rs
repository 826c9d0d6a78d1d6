//! The models: name → definition and trained versions. The version a model serves is swapped
//! in atomically (one write lock) once the store has committed it; readers clone an `Arc` out
//! and compute without any lock held.

use crate::domain::ModelName;
use crate::nn::NetworkSpec;
use crate::records::ModelRecord;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;

pub use crate::records::VersionMetrics;
/// A trained version is exactly what the store keeps of it.
pub use crate::records::VersionRecord as ModelVersion;

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

    pub fn record(&self) -> ModelRecord {
        ModelRecord {
            name: self.name.to_string(),
            spec: self.spec.clone(),
            description: self.description.clone(),
            created_at: self.created_at,
            next_version: self.next_version,
        }
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
    /// Rebuilds the registry from stored records (versions in any order).
    pub fn restore(&self, models: Vec<ModelRecord>, versions: Vec<ModelVersion>) {
        let mut m = self.models.write().expect("registry lock");
        for r in models {
            let Ok(name) = ModelName::parse(&r.name) else {
                continue;
            };
            m.insert(
                name.clone(),
                ModelEntry {
                    name,
                    spec: r.spec,
                    description: r.description,
                    created_at: r.created_at,
                    versions: Vec::new(),
                    next_version: r.next_version,
                },
            );
        }
        for v in versions {
            if let Some(e) = ModelName::parse(&v.model).ok().and_then(|n| m.get_mut(&n)) {
                e.next_version = e.next_version.max(v.version + 1);
                e.versions.push(Arc::new(v));
            }
        }
        for e in m.values_mut() {
            e.versions.sort_by_key(|v| v.version);
        }
    }

    /// Adds a model; `false` when the name is taken.
    pub fn create(&self, entry: ModelEntry) -> bool {
        let mut m = self.models.write().expect("registry lock");
        if m.contains_key(&entry.name) {
            return false;
        }
        m.insert(entry.name.clone(), entry);
        true
    }

    pub fn contains(&self, name: &ModelName) -> bool {
        self.models
            .read()
            .expect("registry lock")
            .contains_key(name)
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

    /// Models, and versions over all models.
    pub fn counts(&self) -> (usize, usize) {
        let m = self.models.read().expect("registry lock");
        (m.len(), m.values().map(|e| e.versions.len()).sum())
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

    /// Publishes a committed version (it is served from now on) and drops pruned ones.
    pub fn insert_version(&self, name: &ModelName, v: Arc<ModelVersion>, pruned: &[u32]) -> bool {
        let mut m = self.models.write().expect("registry lock");
        let Some(e) = m.get_mut(name) else {
            return false;
        };
        e.next_version = e.next_version.max(v.version + 1);
        e.versions.push(v);
        e.versions.retain(|x| !pruned.contains(&x.version));
        true
    }
}
