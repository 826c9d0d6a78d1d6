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
        // The change feed may have brought it first.
        if !e.versions.iter().any(|x| x.version == v.version) {
            e.versions.push(v);
            e.versions.sort_by_key(|x| x.version);
        }
        e.versions.retain(|x| !pruned.contains(&x.version));
        true
    }

    /// A model's creation time and cached version numbers.
    pub fn version_numbers(&self, name: &ModelName) -> Option<(OffsetDateTime, Vec<u32>)> {
        let m = self.models.read().expect("registry lock");
        let e = m.get(name)?;
        Some((e.created_at, e.versions.iter().map(|v| v.version).collect()))
    }

    /// Makes the cached model what the store holds: `record` with the versions `numbers`, of
    /// which `fetched` are the ones the cache lacked. A model recreated under the same name
    /// (another creation time) replaces the cached one. Versions only come and go by number,
    /// so the one served never goes back to an older one.
    pub fn reconcile(&self, record: ModelRecord, numbers: &[u32], fetched: Vec<ModelVersion>) {
        let Ok(name) = ModelName::parse(&record.name) else {
            return;
        };
        let mut m = self.models.write().expect("registry lock");
        let fresh = || ModelEntry {
            name: name.clone(),
            spec: record.spec.clone(),
            description: record.description.clone(),
            created_at: record.created_at,
            versions: Vec::new(),
            next_version: record.next_version,
        };
        let e = m.entry(name.clone()).or_insert_with(fresh);
        if e.created_at != record.created_at {
            *e = fresh();
        }
        e.next_version = e.next_version.max(record.next_version);
        // A version newer than any the store listed was published after this read began:
        // kept (dropping it would serve an older version after a newer one).
        let newest = numbers.iter().copied().max().unwrap_or(0);
        e.versions
            .retain(|v| numbers.contains(&v.version) || v.version > newest);
        for v in fetched {
            if numbers.contains(&v.version) && !e.versions.iter().any(|x| x.version == v.version) {
                e.versions.push(Arc::new(v));
            }
        }
        e.versions.sort_by_key(|v| v.version);
        if let Some(v) = e.versions.last() {
            e.next_version = e.next_version.max(v.version + 1);
        }
    }
}
