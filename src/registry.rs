//! The models: name → definition and trained versions. The version a model serves is swapped
//! in atomically (one write lock) once the store has committed it; readers clone an `Arc` out
//! and compute without any lock held.
//!
//! What is served is the pinned version if there is one, else the newest (policy `latest`); a
//! pin, an unpin or a new version changes it under that one write lock, so a request sees the
//! version before or the version after, never a mix. Changes of serving state are applied in
//! the order the store committed them: writers hold [`Registry::serving_lock`] across the
//! store call and the memory update.
//!
//! Memory holds every version's metadata ([`VersionMeta`]: what listings and views show),
//! never all the weights: a full version ([`ModelVersion`]) comes from the [`VersionCache`],
//! which loads it from the store on a miss (on a blocking thread, no registry lock held) and
//! keeps the most recently used under `--version-cache-mb`. A version just published goes
//! into the cache at once (it is served next), so the served version is a cache hit.

use crate::domain::ModelName;
use crate::nn::NetworkSpec;
use crate::records::ModelRecord;
use crate::store::{Store, StoreError};
use crate::versions::{CacheStats, VersionCache, VersionKey};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use time::OffsetDateTime;

/// A trained version is exactly what the store keeps of it.
pub use crate::records::VersionRecord as ModelVersion;
pub use crate::records::{VersionMeta, VersionMetrics};

/// A model: its definition, its versions' metadata (oldest first) and what it serves.
#[derive(Clone, Debug)]
pub struct ModelEntry {
    pub name: ModelName,
    pub spec: NetworkSpec,
    pub description: Option<String>,
    pub created_at: OffsetDateTime,
    pub versions: Vec<Arc<VersionMeta>>,
    /// The number the next version gets (numbers are never reused).
    pub next_version: u32,
    /// The version served whatever is newer; none: the newest is served.
    pub pinned_version: Option<u32>,
    /// Named versions.
    pub aliases: BTreeMap<String, u32>,
}

/// Which version a request asks for.
#[derive(Clone, Copy, Debug)]
pub enum Select<'a> {
    /// The one served.
    Served,
    Version(u32),
    Alias(&'a str),
}

impl ModelEntry {
    pub fn latest(&self) -> Option<&Arc<VersionMeta>> {
        self.versions.last()
    }

    /// The version predictions use by default: the pinned one, else the newest.
    pub fn served(&self) -> Option<&Arc<VersionMeta>> {
        match self.pinned_version {
            Some(p) => self.versions.iter().find(|v| v.version == p),
            None => self.latest(),
        }
    }

    fn select(&self, which: Select<'_>) -> Result<&Arc<VersionMeta>, Lookup> {
        let find = |n: u32| self.versions.iter().find(|x| x.version == n);
        match which {
            Select::Served => self.served().ok_or(Lookup::NotTrained),
            Select::Version(n) => find(n).ok_or(Lookup::NoVersion),
            Select::Alias(a) => {
                let n = self.aliases.get(a).ok_or(Lookup::NoAlias)?;
                find(*n).ok_or(Lookup::NoVersion)
            }
        }
    }

    /// The cache key of this model's version `version`.
    pub fn key(&self, version: u32) -> VersionKey {
        VersionKey::new(self.name.as_str(), self.created_at, version)
    }

    pub fn record(&self) -> ModelRecord {
        ModelRecord {
            name: self.name.to_string(),
            spec: self.spec.clone(),
            description: self.description.clone(),
            created_at: self.created_at,
            next_version: self.next_version,
            pinned_version: self.pinned_version,
            aliases: self.aliases.clone(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    NoModel,
    NotTrained,
    NoVersion,
    NoAlias,
    /// The version's weights could not be loaded: the store failed (the cause is logged).
    Unavailable,
}

pub struct Registry {
    models: RwLock<BTreeMap<ModelName, ModelEntry>>,
    /// Held across a store change of serving state and its memory update (see the module doc).
    serving: Mutex<()>,
    /// Full versions, loaded on demand.
    cache: Arc<VersionCache>,
    /// Where the cache loads them from.
    store: Arc<dyn Store>,
}

/// How often a request for the served version follows it to another one that became served
/// while its weights loaded, before it answers with the one it loaded.
const RESELECTS: usize = 3;

impl Registry {
    /// An empty registry whose versions load from `store`, at most `cache_bytes` of them kept.
    pub fn new(store: Arc<dyn Store>, cache_bytes: u64) -> Self {
        Registry {
            models: RwLock::default(),
            serving: Mutex::default(),
            cache: Arc::new(VersionCache::new(cache_bytes)),
            store,
        }
    }

    /// Rebuilds the registry from stored records (versions in any order).
    pub fn restore(&self, models: Vec<ModelRecord>, versions: Vec<VersionMeta>) {
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
                    pinned_version: r.pinned_version,
                    aliases: r.aliases,
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
        let removed = self
            .models
            .write()
            .expect("registry lock")
            .remove(name)
            .is_some();
        self.cache.remove_model(name.as_str());
        removed
    }

    /// The metadata of the version a request selects (no weights: never loads).
    pub fn meta(&self, name: &ModelName, which: Select<'_>) -> Result<Arc<VersionMeta>, Lookup> {
        let m = self.models.read().expect("registry lock");
        m.get(name).ok_or(Lookup::NoModel)?.select(which).cloned()
    }

    /// The cache key of the version a request selects.
    fn locate(&self, name: &ModelName, which: Select<'_>) -> Result<VersionKey, Lookup> {
        let m = self.models.read().expect("registry lock");
        let e = m.get(name).ok_or(Lookup::NoModel)?;
        Ok(e.key(e.select(which)?.version))
    }

    /// The version to predict with: `version`, or the one served.
    pub async fn serving(
        &self,
        name: &ModelName,
        version: Option<u32>,
    ) -> Result<Arc<ModelVersion>, Lookup> {
        self.select(name, version.map_or(Select::Served, Select::Version))
            .await
    }

    /// The version a request selects, weights and all: from the cache, else loaded from the
    /// store on a blocking thread (no lock held meanwhile). When what `which` selects changed
    /// during the load (a newer version published, a pin), the answer follows it: a request
    /// never answers with a version older than one served before it finished.
    pub async fn select(
        &self,
        name: &ModelName,
        which: Select<'_>,
    ) -> Result<Arc<ModelVersion>, Lookup> {
        let mut key = self.locate(name, which)?;
        for attempt in 0..=RESELECTS {
            if let Some(v) = self.cache.get(&key) {
                return Ok(v);
            }
            let (cache, store, k) = (self.cache.clone(), self.store.clone(), key.clone());
            let loaded = tokio::task::spawn_blocking(move || fetch(&cache, &*store, &k))
                .await
                .map_err(|_| Lookup::Unavailable)?;
            match self.settle(name, which, key, loaded, attempt == RESELECTS)? {
                Settled::Done(v) => return Ok(v),
                Settled::Again(k) => key = k,
            }
        }
        Err(Lookup::NoVersion)
    }

    /// [`Registry::select`] on a blocking thread (a training worker).
    pub fn select_blocking(
        &self,
        name: &ModelName,
        which: Select<'_>,
    ) -> Result<Arc<ModelVersion>, Lookup> {
        let mut key = self.locate(name, which)?;
        for attempt in 0..=RESELECTS {
            let loaded = fetch(&self.cache, &*self.store, &key);
            match self.settle(name, which, key, loaded, attempt == RESELECTS)? {
                Settled::Done(v) => return Ok(v),
                Settled::Again(k) => key = k,
            }
        }
        Err(Lookup::NoVersion)
    }

    /// After loading `key`: the answer, or the key to load instead.
    fn settle(
        &self,
        name: &ModelName,
        which: Select<'_>,
        key: VersionKey,
        loaded: Result<Option<Arc<ModelVersion>>, StoreError>,
        last: bool,
    ) -> Result<Settled, Lookup> {
        let loaded = loaded.map_err(|e| {
            tracing::warn!(model = %name, version = key.version, error = %e, "cannot load a version");
            Lookup::Unavailable
        })?;
        let now = self.locate(name, which)?;
        match loaded {
            Some(v) if now == key || last => Ok(Settled::Done(v)),
            // Listed in memory, gone from the store: deleted meanwhile.
            None if now == key || last => Err(Lookup::NoVersion),
            _ => Ok(Settled::Again(now)),
        }
    }

    /// Loads the served version of every model into the cache, as far as the budget goes
    /// (those that do not fit in what is left are skipped). Blocking; store failures are
    /// logged (the version loads on first use instead). Returns how many were loaded.
    pub fn preload(&self) -> usize {
        let wanted: Vec<(VersionKey, u64)> = {
            let m = self.models.read().expect("registry lock");
            m.values()
                .filter_map(|e| e.served().map(|v| (e.key(v.version), v.resident_bytes())))
                .collect()
        };
        let mut loaded = 0;
        for (k, bytes) in wanted {
            let s = self.cache.stats();
            if s.bytes.saturating_add(bytes) > s.budget {
                continue;
            }
            match fetch(&self.cache, &*self.store, &k) {
                Ok(Some(_)) => loaded += 1,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(model = %k.model, version = k.version, error = %e, "cannot preload a version");
                }
            }
        }
        loaded
    }

    /// The version cache's levels and counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Whether the weights of `name`'s version `version` are in the cache (with the model's
    /// current creation time).
    pub fn is_cached(&self, name: &ModelName, created_at: OffsetDateTime, version: u32) -> bool {
        self.cache
            .contains(&VersionKey::new(name.as_str(), created_at, version))
    }

    /// Puts a full version read from the store into the cache (cluster reconcile: the version
    /// about to be served). `created_at` is its model's creation time.
    pub fn cache_version(&self, created_at: OffsetDateTime, v: Arc<ModelVersion>) {
        let key = VersionKey::new(&v.model, created_at, v.version);
        self.cache.insert(key, v);
    }

    /// Hold it across a store change of serving state (a pin, an alias, a version published
    /// or deleted) and the memory update that follows, so that memory applies changes in the
    /// store's order. Never held on the async runtime.
    pub fn serving_lock(&self) -> MutexGuard<'_, ()> {
        self.serving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a committed version and drops pruned ones; the pin and aliases become the
    /// store's (`record`, as the publishing transaction read them): under `latest` the new
    /// version is served from now on, under a pin nothing served changes.
    pub fn insert_version(
        &self,
        name: &ModelName,
        v: Arc<ModelVersion>,
        pruned: &[u32],
        record: Option<&ModelRecord>,
    ) -> bool {
        let mut m = self.models.write().expect("registry lock");
        let Some(e) = m.get_mut(name) else {
            return false;
        };
        e.next_version = e.next_version.max(v.version + 1);
        // In the cache before it is listed: once served, it is a hit.
        self.cache.insert(e.key(v.version), v.clone());
        // The change feed may have brought it first.
        if !e.versions.iter().any(|x| x.version == v.version) {
            e.versions.push(Arc::new(VersionMeta::from(&*v)));
            e.versions.sort_by_key(|x| x.version);
        }
        e.versions.retain(|x| !pruned.contains(&x.version));
        for &p in pruned {
            self.cache.remove(&e.key(p));
        }
        if let Some(r) = record {
            e.pinned_version = r.pinned_version;
            e.aliases = r.aliases.clone();
        }
        true
    }

    /// A model's creation time and cached version numbers.
    pub fn version_numbers(&self, name: &ModelName) -> Option<(OffsetDateTime, Vec<u32>)> {
        let m = self.models.read().expect("registry lock");
        let e = m.get(name)?;
        Some((e.created_at, e.versions.iter().map(|v| v.version).collect()))
    }

    /// Makes the cached model what the store holds: `record` with the versions `numbers`, of
    /// which `fetched` are the ones the cache lacked (their metadata). A model recreated under the same name
    /// (another creation time) replaces the cached one. Versions only come and go by number,
    /// so the one served never goes back to an older one.
    pub fn reconcile(&self, record: ModelRecord, numbers: &[u32], fetched: Vec<VersionMeta>) {
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
            pinned_version: record.pinned_version,
            aliases: record.aliases.clone(),
        };
        let e = m.entry(name.clone()).or_insert_with(fresh);
        if e.created_at != record.created_at {
            *e = fresh();
            let created = record.created_at.unix_timestamp_nanos();
            self.cache
                .remove_where(|k| k.model == name.as_str() && k.created != created);
        }
        e.next_version = e.next_version.max(record.next_version);
        // The pin and aliases are the store's (callers hold `serving_lock` across the read).
        e.pinned_version = record.pinned_version;
        e.aliases = record.aliases.clone();
        // A version newer than any the store listed was published after this read began:
        // kept (dropping it would serve an older version after a newer one).
        let newest = numbers.iter().copied().max().unwrap_or(0);
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut e.versions)
            .into_iter()
            .partition(|v| numbers.contains(&v.version) || v.version > newest);
        e.versions = kept;
        for v in gone {
            self.cache.remove(&e.key(v.version));
        }
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

    /// Takes on the store's pin and aliases of a model (after a committed change): one write,
    /// so a request sees what was served before or what is served after.
    pub fn apply_serving(&self, record: &ModelRecord) {
        let Ok(name) = ModelName::parse(&record.name) else {
            return;
        };
        if let Some(e) = self.models.write().expect("registry lock").get_mut(&name) {
            e.pinned_version = record.pinned_version;
            e.aliases = record.aliases.clone();
        }
    }

    /// Drops a version deleted from the store.
    pub fn remove_version(&self, name: &ModelName, version: u32) {
        if let Some(e) = self.models.write().expect("registry lock").get_mut(name) {
            e.versions.retain(|x| x.version != version);
            self.cache.remove(&e.key(version));
        }
    }
}

enum Settled {
    Done(Arc<ModelVersion>),
    Again(VersionKey),
}

/// The version of `k` from the cache, else the store. Blocking.
fn fetch(
    cache: &VersionCache,
    store: &dyn Store,
    k: &VersionKey,
) -> Result<Option<Arc<ModelVersion>>, StoreError> {
    cache.load(k, || store.version(&k.model, k.version))
}
