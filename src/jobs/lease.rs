//! The lease keeper of a shared store's queue (one thread per replica, `mlpd-lease`): every
//! fifth of a lease it renews the leases of the jobs this replica runs (reading their cancel
//! flags on the way: a cancel whose notification was missed still stops the job within one
//! renewal), tells a job whose lease is gone to stop, and ends `failed`/`interrupted` the
//! running jobs of any replica whose lease expired. A replica that dies therefore has its jobs
//! ended by the survivors within a lease plus one renewal interval.
//!
//! Only the jobs this replica's workers train are renewed: a job whose worker gave up (its end
//! could not be saved while the database was down) keeps its stored `running` state only until
//! its lease expires, and is then ended `interrupted` like a dead replica's. While the database
//! is down nothing is renewed; once it is back, the first renewal extends the leases of the
//! jobs still training here, unless another replica ended them `interrupted` meanwhile (their
//! lease had expired): those are told to stop.

use super::{JobTable, SharedQueue};
use crate::store::Store;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub(super) struct Keeper {
    pub store: Arc<dyn Store>,
    pub table: JobTable,
    pub queue: SharedQueue,
    pub shutting_down: Arc<AtomicBool>,
}

impl Keeper {
    pub fn run(self) {
        let Some(shared) = self.store.shared() else {
            return;
        };
        let every = (self.queue.lease / 5).max(Duration::from_millis(50));
        let mut failing = false;
        loop {
            std::thread::sleep(every);
            let mine: HashSet<_> = self
                .queue
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if self.shutting_down.load(Ordering::Relaxed) && mine.is_empty() {
                return;
            }
            let job = |id| {
                self.table
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .cloned()
            };
            let ids: Vec<_> = mine.iter().copied().collect();
            let renewed = shared.renew(&ids, self.queue.lease).and_then(|renewed| {
                let held: HashSet<_> = renewed.iter().map(|(id, _)| *id).collect();
                for (id, cancel) in renewed {
                    if cancel && let Some(j) = job(id) {
                        j.flag_cancel();
                    }
                }
                // Jobs claimed after `mine` was read are judged next time.
                for id in mine.difference(&held) {
                    if let Some(j) = job(*id) {
                        tracing::warn!(job_id = %id, "the job's lease is gone; stopping it");
                        j.lose_lease();
                    }
                }
                shared.reap(false)
            });
            match renewed {
                Ok(reaped) => {
                    failing = false;
                    for id in reaped {
                        tracing::warn!(job_id = %id, "ended a job whose lease expired");
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot renew job leases");
                    }
                    failing = true;
                }
            }
        }
    }
}
