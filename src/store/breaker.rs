//! The circuit breaker of a store that can become unreachable (PostgreSQL).
//!
//! After a connection-level failure (a connection that closed, a connect that failed) the store
//! is marked down. While it is down every store call fails at once with
//! [`StoreError::Unavailable`] (503 `store_unavailable` with `Retry-After`, see
//! [`RETRY_AFTER_SECS`]) instead of waiting for pool and connect timeouts. A probe thread
//! (`mlpd-store-probe`), started by the failure that marked the store down, tries the database
//! at once and then every [`PROBE_EVERY`], and marks the store up when it answers: no restart is
//! needed. Each outage is counted; a pooled connection remembers the count at its birth, so
//! connections opened before an outage (dead, though nobody has noticed yet) are never handed
//! out after it.
//!
//! Lock-free reads (two atomics) on every store call; the probe runs on its own OS thread and
//! ends with the outage (or when the store is dropped).

use super::StoreError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the probe tries the database while it is down.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The `Retry-After` of a 503 answered while the store is down: a few probes.
pub const RETRY_AFTER_SECS: u64 = 2;

/// One round trip to the database on a fresh connection; the error says why it failed.
pub type Probe = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

pub struct Breaker {
    up: AtomicBool,
    /// Outages so far (each one a transition from up to down).
    outages: AtomicU64,
    probe: Probe,
}

/// What the store's availability is now (for `/ready` and `/metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Availability {
    /// Whether store calls are attempted (false: they fail at once).
    pub up: bool,
    /// Outages since the process started.
    pub outages: u64,
}

impl Default for Availability {
    /// A store that cannot be unreachable (the embedded one).
    fn default() -> Self {
        Availability {
            up: true,
            outages: 0,
        }
    }
}

impl Breaker {
    /// Up, with `probe` to find out when a lost database is back.
    pub fn new(probe: Probe) -> Arc<Self> {
        Arc::new(Breaker {
            up: AtomicBool::new(true),
            outages: AtomicU64::new(0),
            probe,
        })
    }

    /// `Ok` while up.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] while down.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.up.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "the database is unreachable; reconnecting".into(),
            ))
        }
    }

    pub fn availability(&self) -> Availability {
        Availability {
            up: self.up.load(Ordering::Acquire),
            outages: self.outages.load(Ordering::Acquire),
        }
    }

    /// Outages so far: a connection born under an older count predates the latest outage.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Acquire)
    }

    /// Marks the store down after a connection-level failure, and starts the probe (unless it
    /// was down already).
    pub fn trip(self: &Arc<Self>, cause: &dyn std::fmt::Display) {
        if self
            .up
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // down already: its probe runs
        }
        // A connection opened before this line counts as older than the outage (at worst
        // one opened just now is discarded unused).
        self.outages.fetch_add(1, Ordering::AcqRel);
        tracing::error!(%cause, "the database is unreachable: writes answer 503 until it is back");
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("mlpd-store-probe".into())
            .spawn(move || probe(&weak));
        if let Err(e) = spawned {
            // Without a probe nothing would mark it up: let calls try the database again.
            tracing::error!(error = %e, "cannot start the database probe");
            self.up.store(true, Ordering::Release);
        }
    }
}

/// The probe's loop: until the database answers (then up) or the store is gone.
fn probe(weak: &Weak<Breaker>) {
    let since = Instant::now();
    let mut last = String::new();
    loop {
        let Some(breaker) = weak.upgrade() else {
            return;
        };
        match (breaker.probe)() {
            Ok(()) => {
                breaker.up.store(true, Ordering::Release);
                tracing::info!(
                    down_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "the database is reachable again"
                );
                return;
            }
            Err(e) if e != last => {
                tracing::warn!(error = %e, "the database is still unreachable");
                last = e;
            }
            Err(_) => {}
        }
        drop(breaker);
        std::thread::sleep(PROBE_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_trip_fails_calls_fast_until_the_probe_succeeds_and_counts_one_outage() {
        let tries = Arc::new(AtomicUsize::new(0));
        let t = tries.clone();
        let b = Breaker::new(Box::new(move || {
            // Down for the first two probes.
            if t.fetch_add(1, Ordering::SeqCst) < 2 {
                Err("refused".into())
            } else {
                Ok(())
            }
        }));
        assert!(b.check().is_ok());
        b.trip(&"connection closed");
        b.trip(&"connection closed again");
        assert!(matches!(b.check(), Err(StoreError::Unavailable(_))));
        assert_eq!(
            b.availability(),
            Availability {
                up: false,
                outages: 1
            }
        );
        let start = Instant::now();
        while b.check().is_err() {
            assert!(start.elapsed() < Duration::from_secs(5), "never up again");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Tried at once, then twice more, PROBE_EVERY apart.
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert!(start.elapsed() >= PROBE_EVERY);
        assert_eq!(b.outages(), 1);
    }
}
