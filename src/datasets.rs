//! Uploaded datasets, by id: their descriptions always in memory, their contents loaded from
//! the store when a job first needs them and then shared by `Arc`, never copied.

use crate::store::{DatasetRecord, Store, StoreError};
use crate::tabular::Table as Dataset;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use uuid::Uuid;

#[derive(Debug)]
pub struct StoredDataset {
    pub record: DatasetRecord,
    data: OnceLock<Arc<Dataset>>,
}

impl StoredDataset {
    pub fn new(record: DatasetRecord, data: Option<Arc<Dataset>>) -> Self {
        let cell = OnceLock::new();
        if let Some(d) = data {
            let _ = cell.set(d);
        }
        StoredDataset { record, data: cell }
    }

    pub fn id(&self) -> Uuid {
        self.record.id
    }

    /// The contents, loading them from the store the first time. Blocking.
    ///
    /// # Errors
    /// The store fails, or no longer holds the dataset.
    pub fn data(&self, store: &dyn Store) -> Result<Arc<Dataset>, StoreError> {
        if let Some(d) = self.data.get() {
            return Ok(d.clone());
        }
        let loaded = store.load_dataset(self.record.id)?.ok_or_else(|| {
            StoreError::Failed(format!(
                "dataset {} is missing from the store",
                self.record.id
            ))
        })?;
        Ok(self.data.get_or_init(|| Arc::new(loaded)).clone())
    }
}

#[derive(Default)]
pub struct Datasets {
    by_id: RwLock<HashMap<Uuid, Arc<StoredDataset>>>,
}

impl Datasets {
    pub fn restore(&self, records: Vec<DatasetRecord>) {
        let mut m = self.by_id.write().expect("datasets lock");
        for r in records {
            m.insert(r.id, Arc::new(StoredDataset::new(r, None)));
        }
    }

    pub fn insert(&self, d: StoredDataset) -> Arc<StoredDataset> {
        let d = Arc::new(d);
        self.by_id
            .write()
            .expect("datasets lock")
            .insert(d.id(), d.clone());
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
        v.sort_by_key(|d| (d.record.created_at, d.record.id));
        v
    }

    pub fn len(&self) -> usize {
        self.by_id.read().expect("datasets lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn remove(&self, id: Uuid) -> bool {
        self.by_id
            .write()
            .expect("datasets lock")
            .remove(&id)
            .is_some()
    }
}
