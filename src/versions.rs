//! The version cache: trained versions (their weights) kept in memory under a byte budget,
//! loaded from the store on demand, least recently used dropped first.
//!
//! Versions are immutable once published, so an entry never goes stale: it is keyed by
//! (model name, the model's creation time, version number) — a model deleted and created
//! again under its name has another creation time, so its versions never meet the old ones.
//! The registry keeps every version's metadata ([`crate::records::VersionMeta`]) and decides
//! which version a request gets; this cache only answers "the weights of that key".
//!
//! Threads: [`VersionCache::get`] and [`VersionCache::insert`] take a short lock and may run
//! anywhere (the hit path of a prediction, on the runtime). [`VersionCache::load`] calls the
//! store: blocking threads only. Concurrent loads of one key run once (a per-key gate; the
//! others wait for it and then hit). An entry evicted while requests hold its `Arc` stays
//! alive until they finish: the budget bounds what the cache retains, not what is in flight.

use crate::records::VersionRecord;
use crate::store::StoreError;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use time::OffsetDateTime;

/// A version's identity in the cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionKey {
    pub model: String,
    /// The model's creation time, in nanoseconds since the epoch.
    pub created: i128,
    pub version: u32,
}

impl VersionKey {
    pub fn new(model: &str, created_at: OffsetDateTime, version: u32) -> Self {
        VersionKey {
            model: model.to_owned(),
            created: created_at.unix_timestamp_nanos(),
            version,
        }
    }
}

/// A least-recently-used map under a budget of "bytes" (whatever sizes its callers give).
/// Pure: no locks, no I/O. A use only stamps its entry from a clock (atomics, so that lookups
/// share a read lock and the prediction path never waits for another); making room scans
/// for the oldest stamp, which is rare and over few entries.
#[derive(Debug)]
pub struct Lru<K, V> {
    budget: u64,
    used: u64,
    /// Bumped on every use: the stamp of the entry used.
    clock: AtomicU64,
    map: HashMap<K, Slot<V>>,
    evictions: u64,
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    bytes: u64,
    used: AtomicU64,
}

impl<K: Clone + Eq + Hash, V: Clone> Lru<K, V> {
    pub fn new(budget: u64) -> Self {
        Lru {
            budget,
            used: 0,
            clock: AtomicU64::new(0),
            map: HashMap::new(),
            evictions: 0,
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The value of `k`, now the most recently used.
    pub fn get(&self, k: &K) -> Option<V> {
        let slot = self.map.get(k)?;
        slot.used.store(self.tick(), Ordering::Relaxed);
        Some(slot.value.clone())
    }

    pub fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// The least recently used key.
    fn oldest(&self) -> Option<K> {
        self.map
            .iter()
            .min_by_key(|(_, s)| s.used.load(Ordering::Relaxed))
            .map(|(k, _)| k.clone())
    }

    /// Keeps `v` under `k` (replacing what `k` held), evicting the least recently used until
    /// it fits; returns whether it was kept: a value larger than the whole budget is not (and
    /// evicts nothing).
    pub fn insert(&mut self, k: K, v: V, bytes: u64) -> bool {
        self.remove(&k);
        if bytes > self.budget {
            return false;
        }
        while self.used + bytes > self.budget {
            let Some(oldest) = self.oldest() else {
                break;
            };
            if let Some(s) = self.map.remove(&oldest) {
                self.used -= s.bytes;
                self.evictions += 1;
            }
        }
        let used = AtomicU64::new(self.tick());
        self.map.insert(
            k,
            Slot {
                value: v,
                bytes,
                used,
            },
        );
        self.used += bytes;
        true
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let s = self.map.remove(k)?;
        self.used -= s.bytes;
        Some(s.value)
    }

    /// Drops the entries whose key fails `keep` (not counted as evictions).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        let gone: Vec<K> = self.map.keys().filter(|k| !keep(k)).cloned().collect();
        for k in &gone {
            self.remove(k);
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.used
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Entries dropped to make room, so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Keys from least to most recently used.
    pub fn keys_by_age(&self) -> Vec<K> {
        let mut keys: Vec<(u64, K)> = self
            .map
            .iter()
            .map(|(k, s)| (s.used.load(Ordering::Relaxed), k.clone()))
            .collect();
        keys.sort_by_key(|(used, _)| *used);
        keys.into_iter().map(|(_, k)| k).collect()
    }
}

/// The levels and counters of a [`VersionCache`], for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    pub budget: u64,
    pub bytes: u64,
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

/// Trained versions under a memory budget (see the module doc).
pub struct VersionCache {
    /// Lookups share the read lock; only a change of entries writes.
    lru: RwLock<Lru<VersionKey, Arc<VersionRecord>>>,
    /// One gate per key being loaded.
    loading: Mutex<HashMap<VersionKey, Arc<Mutex<()>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl VersionCache {
    pub fn new(budget: u64) -> Self {
        VersionCache {
            lru: RwLock::new(Lru::new(budget)),
            loading: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lru(&self) -> RwLockReadGuard<'_, Lru<VersionKey, Arc<VersionRecord>>> {
        self.lru.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lru_mut(&self) -> RwLockWriteGuard<'_, Lru<VersionKey, Arc<VersionRecord>>> {
        self.lru.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached version (a hit, counted), or `None` (not counted: the load that follows is).
    pub fn get(&self, k: &VersionKey) -> Option<Arc<VersionRecord>> {
        let v = self.lru().get(k)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(v)
    }

    pub fn contains(&self, k: &VersionKey) -> bool {
        self.lru().contains(k)
    }

    /// Keeps a version (one just published or fetched); `false` when it is larger than the
    /// budget.
    pub fn insert(&self, k: VersionKey, v: Arc<VersionRecord>) -> bool {
        let bytes = v.resident_bytes();
        self.lru_mut().insert(k, v, bytes)
    }

    /// The version of `k`: the cached one, else what `fetch` reads from the store (kept in
    /// the cache when it fits). Concurrent calls for one key fetch once. Blocking.
    ///
    /// # Errors
    /// `fetch` failed.
    pub fn load(
        &self,
        k: &VersionKey,
        fetch: impl FnOnce() -> Result<Option<VersionRecord>, StoreError>,
    ) -> Result<Option<Arc<VersionRecord>>, StoreError> {
        let gate = {
            let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
            loading.entry(k.clone()).or_default().clone()
        };
        let out = {
            let _once = gate.lock().unwrap_or_else(|p| p.into_inner());
            match self.get(k) {
                Some(v) => Ok(Some(v)),
                None => {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    fetch().map(|found| {
                        found.map(|r| {
                            let v = Arc::new(r);
                            self.insert(k.clone(), v.clone());
                            v
                        })
                    })
                }
            }
        };
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        // The map's and ours: nobody else waits (clones are only taken under this lock).
        if Arc::strong_count(&gate) == 2 {
            loading.remove(k);
        }
        out
    }

    pub fn remove(&self, k: &VersionKey) {
        self.lru_mut().remove(k);
    }

    /// Drops every version of the model `name` (any creation time).
    pub fn remove_model(&self, name: &str) {
        self.remove_where(|k| k.model == name);
    }

    /// Drops the versions whose key matches.
    pub fn remove_where(&self, mut gone: impl FnMut(&VersionKey) -> bool) {
        self.lru_mut().retain(|k| !gone(k));
    }

    pub fn stats(&self) -> CacheStats {
        let lru = self.lru();
        CacheStats {
            budget: lru.budget(),
            bytes: lru.bytes(),
            entries: lru.len(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: lru.evictions(),
        }
    }
}
