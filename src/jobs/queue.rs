//! The bounded queue between job submission and the worker threads.
//!
//! Capacity counts jobs that are still `queued`: a job canceled while it waits gives its slot
//! back at once (it is dropped from the queue on the next push or pop), so a queue whose jobs
//! were all canceled takes new ones even before a worker is free. Workers block on a condition
//! variable; closing the queue wakes them all.

use super::job::Job;
use crate::records::JobStatus;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub(super) struct Queue {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
}

struct Inner {
    jobs: VecDeque<Arc<Job>>,
    closed: bool,
}

impl Inner {
    /// Drops jobs that are no longer queued (canceled while waiting).
    fn purge(&mut self) {
        self.jobs.retain(|j| j.status() == JobStatus::Queued);
    }
}

/// Why a push was refused.
#[derive(Debug)]
pub(super) enum Refused {
    Full,
    Closed,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Queue {
            inner: Mutex::new(Inner {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends jobs, all or none: none unless `capacity` leaves a place for each.
    pub fn push_all(&self, jobs: &[Arc<Job>]) -> Result<(), Refused> {
        let mut q = self.lock();
        if q.closed {
            return Err(Refused::Closed);
        }
        q.purge();
        if q.jobs.len().saturating_add(jobs.len()) > self.capacity {
            return Err(Refused::Full);
        }
        q.jobs.extend(jobs.iter().cloned());
        drop(q);
        self.ready.notify_all();
        Ok(())
    }

    /// The oldest waiting job; blocks until there is one. `None` once the queue is closed and
    /// empty.
    pub fn pop(&self) -> Option<Arc<Job>> {
        let mut q = self.lock();
        loop {
            q.purge();
            if let Some(job) = q.jobs.pop_front() {
                return Some(job);
            }
            if q.closed {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Refuses new jobs and lets workers drain what is left, then stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}
