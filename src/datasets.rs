//! Uploaded datasets, by id. Shared with training jobs by `Arc`, never copied.

use crate::nn::Dataset;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug)]
pub struct StoredDataset {
    pub id: Uuid,
    pub name: Option<String>,
    pub created_at: OffsetDateTime,
    pub data: Arc<Dataset>,
}

#[derive(Default)]
pub struct Datasets {
    by_id: RwLock<HashMap<Uuid, Arc<StoredDataset>>>,
}

impl Datasets {
    pub fn insert(&self, d: StoredDataset) -> Arc<StoredDataset> {
        let d = Arc::new(d);
        self.by_id
            .write()
            .expect("datasets lock")
            .insert(d.id, d.clone());
        d
    }

    pub fn get(&self, id: Uuid) -> Option<Arc<StoredDataset>> {
        self.by_id.read().expect("datasets lock").get(&id).cloned()
    }

    /// All datasets, oldest first.
    pub fn list(&self) -> Vec<Arc<StoredDataset>> {
        let mut v: Vec<_> = self
            .by_id
            .read()
            .expect("datasets lock")
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|d| (d.created_at, d.id));
        v
    }

    pub fn remove(&self, id: Uuid) -> bool {
        self.by_id
            .write()
            .expect("datasets lock")
            .remove(&id)
            .is_some()
    }
}
