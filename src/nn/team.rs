//! A training run's threads: the caller and `threads − 1` helpers that live as long as the run
//! and wait for work by spinning, so that handing them a share of each product costs a few
//! hundred nanoseconds instead of a wake-up through the kernel (a rayon pool's sleeping worker
//! costs tens of microseconds per product, as long as a whole product of a small network).
//!
//! Work is a number of parts, each a pure function of its index, so the result never depends on
//! which thread computed what, nor on how many there are. Each thread first claims the parts of
//! its own share (thread t of T takes parts [t·P/T, (t+1)·P/T)), so the same columns of a layer
//! stay with the same core from product to product and its weights stay in that core's cache;
//! then it claims whatever nobody has. The caller never waits for a helper that has not started:
//! it claims every part nobody has claimed, and waits only for parts already running elsewhere.
//!
//! Beside the parts, the caller may post one *side job* for the length of some work of its own
//! ([`overlap`]): the first helper with nothing to do takes it, else the caller runs it when its
//! work is done. Training gathers the next mini-batch that way, from where a step stops sharing
//! its products (from its start when none is shared): the helper gathers while the caller
//! computes the unshared pieces, instead of spinning through them.

use ndarray::{ArrayViewMut2, Axis};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it starts yielding, and before it starts sleeping.
const SPIN: Duration = Duration::from_micros(50);
const YIELD: Duration = Duration::from_millis(2);
const NAP: Duration = Duration::from_micros(200);

type Part<'a> = &'a (dyn Fn(usize) + Sync);
type Side<'a> = &'a (dyn Fn() + Sync);

/// States of the side job ([`overlap`]).
const SIDE_NONE: u8 = 0;
const SIDE_POSTED: u8 = 1;
/// A helper runs it.
const SIDE_HELPING: u8 = 2;
/// A helper has run it.
const SIDE_DONE: u8 = 3;
/// The caller has it (to run it itself, or so that nobody does).
const SIDE_KEPT: u8 = 4;

/// The job board the caller posts to and the helpers watch.
struct Board {
    /// generation (32 bits) | taken parts (32 bits: bit i is set once part i is claimed, and
    /// for every i ≥ parts). One word, so a claim is made against the job it read, never
    /// against the next one.
    word: AtomicU64,
    /// The current job's number of parts: only where a thread looks first (a stale value
    /// misplaces a claim, never makes a wrong one).
    parts: AtomicUsize,
    /// The job's function: written by the caller only while no part is claimed or running.
    job: Mutex<Option<Part<'static>>>,
    finished: AtomicUsize,
    panicked: AtomicBool,
    /// The side job, written by the caller only while its state is `SIDE_NONE`.
    side: Mutex<Option<Side<'static>>>,
    side_state: AtomicU8,
    side_panicked: AtomicBool,
    quit: AtomicBool,
    /// Threads in the team, the caller included.
    size: usize,
}

const PARTS_MAX: usize = 32;

impl Board {
    /// Claims a part of generation `generation` for thread `me`: one of its own share if any is
    /// left, else any left.
    fn claim(&self, generation: u64, me: usize) -> Option<usize> {
        let parts = self.parts.load(Ordering::Relaxed).min(PARTS_MAX);
        let (from, to) = (me * parts / self.size, (me + 1) * parts / self.size);
        let own = (((1u64 << to) - 1) & !((1u64 << from) - 1)) as u32;
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let free = !(word as u32);
            if word >> 32 != generation || free == 0 {
                return None;
            }
            let mine = free & own;
            let i = if mine != 0 { mine } else { free }.trailing_zeros();
            match self.word.compare_exchange_weak(
                word,
                word | (1 << i),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(i as usize),
                Err(now) => word = now,
            }
        }
    }

    /// Runs claimed part `i` of the current job; a panic is recorded for the caller.
    fn run(&self, i: usize) {
        let job = *self.job.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(job) = job
            && catch_unwind(AssertUnwindSafe(|| job(i))).is_err()
        {
            self.panicked.store(true, Ordering::Release);
        }
        self.finished.fetch_add(1, Ordering::AcqRel);
    }

    /// Runs the side job if it is posted and nobody has it yet; whether it did.
    fn take_side(&self) -> bool {
        if self.side_state.load(Ordering::Acquire) != SIDE_POSTED
            || self
                .side_state
                .compare_exchange(
                    SIDE_POSTED,
                    SIDE_HELPING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
        {
            return false;
        }
        let side = *self.side.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(side) = side
            && catch_unwind(AssertUnwindSafe(side)).is_err()
        {
            self.side_panicked.store(true, Ordering::Release);
        }
        self.side_state.store(SIDE_DONE, Ordering::Release);
        true
    }

    fn help(&self, me: usize) {
        let mut seen = self.word.load(Ordering::Acquire) >> 32;
        let mut idle = Instant::now();
        let mut polls = 0u32;
        while !self.quit.load(Ordering::Acquire) {
            let generation = self.word.load(Ordering::Acquire) >> 32;
            if generation != seen {
                seen = generation;
                while let Some(i) = self.claim(generation, me) {
                    self.run(i);
                }
                idle = Instant::now();
                polls = 0;
                continue;
            }
            if self.take_side() {
                idle = Instant::now();
                polls = 0;
                continue;
            }
            polls = polls.wrapping_add(1);
            // Spinning reads no clock (a sibling hyperthread would pay for it): look at the
            // time every 256 polls only.
            if !polls.is_multiple_of(256) {
                std::hint::spin_loop();
                continue;
            }
            let waited = idle.elapsed();
            if waited < SPIN {
                std::hint::spin_loop();
            } else if waited < YIELD {
                std::thread::yield_now();
            } else {
                std::thread::sleep(NAP);
            }
        }
    }
}

thread_local! {
    /// The board of the team this thread leads, while it leads one.
    static LEADS: Cell<Option<&'static Board>> = const { Cell::new(None) };
}

/// Runs `f` on this thread with `threads − 1` helpers for [`for_each_part`] (none with 1).
pub fn with_team<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    if threads <= 1 || LEADS.get().is_some() {
        return f();
    }
    let board = Board {
        word: AtomicU64::new(u64::from(u32::MAX)),
        parts: AtomicUsize::new(0),
        job: Mutex::new(None),
        finished: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
        side: Mutex::new(None),
        side_state: AtomicU8::new(SIDE_NONE),
        side_panicked: AtomicBool::new(false),
        quit: AtomicBool::new(false),
        size: threads,
    };
    std::thread::scope(|scope| {
        for i in 1..threads {
            let board = &board;
            let spawned = std::thread::Builder::new()
                .name(format!("mlpd-help-{i}"))
                .spawn_scoped(scope, move || board.help(i));
            if spawned.is_err() {
                // Fewer helpers: the caller claims what nobody else does.
                break;
            }
        }
        // SAFETY (lifetime extension): the reference is removed from LEADS before `board` goes
        // out of scope (below, also on unwinding through the guard), and only this thread reads it.
        let leader: &'static Board = unsafe { &*std::ptr::from_ref(&board) };
        struct Lead<'a>(&'a Board);
        impl Drop for Lead<'_> {
            fn drop(&mut self) {
                LEADS.set(None);
                self.0.quit.store(true, Ordering::Release);
            }
        }
        LEADS.set(Some(leader));
        let _lead = Lead(&board);
        f()
    })
}

/// Elementwise passes over fewer values than this stay on one thread.
const SPLIT_VALUES: usize = 1 << 14;

/// Calls `f(first_row, rows)` over `a` cut into row blocks, one per thread of the team this
/// thread leads (all of `a` at once outside a team or when `a` is small). For row-local work
/// only: the result must not depend on where the cuts fall.
pub fn rows<F: Send>(
    mut a: ArrayViewMut2<'_, F>,
    f: &(dyn Fn(usize, ArrayViewMut2<'_, F>) + Sync),
) {
    let size = LEADS.get().map_or(1, |b| b.size);
    if size <= 1 || a.len() < SPLIT_VALUES || a.nrows() < size {
        f(0, a);
        return;
    }
    let height = a.nrows().div_ceil(size.min(PARTS_MAX));
    let blocks: Vec<Mutex<ArrayViewMut2<'_, F>>> = a
        .axis_chunks_iter_mut(Axis(0), height)
        .map(Mutex::new)
        .collect();
    for_each_part(blocks.len(), &|i| {
        let mut block = blocks[i].lock().unwrap_or_else(PoisonError::into_inner);
        f(i * height, block.view_mut());
    });
}

/// Whether this thread leads a team (so [`for_each_part`] shares its parts).
pub fn leading() -> bool {
    LEADS.get().is_some()
}

/// Calls `part(i)` for every `i < parts`, on this thread and on the helpers of the team it
/// leads (all on this thread outside a team). Returns when every part has returned.
///
/// # Panics
/// When a part panicked (on whichever thread).
pub fn for_each_part(parts: usize, part: &(dyn Fn(usize) + Sync)) {
    let board = LEADS.get();
    let Some(board) = board.filter(|_| parts > 1 && parts <= PARTS_MAX) else {
        (0..parts).for_each(part);
        return;
    };
    // SAFETY (lifetime extension): helpers call `part` only for a part they claimed of this
    // generation, and this function returns only after every part has finished; the job is
    // cleared before returning, so no reference outlives the call.
    let job: Part<'static> = unsafe { std::mem::transmute::<Part<'_>, Part<'static>>(part) };
    {
        let mut posted = board.job.lock().unwrap_or_else(PoisonError::into_inner);
        if posted.is_some() {
            // Called from inside a part: the board is taken, so this runs here, in order.
            drop(posted);
            (0..parts).for_each(part);
            return;
        }
        *posted = Some(job);
    }
    board.finished.store(0, Ordering::Release);
    board.parts.store(parts, Ordering::Relaxed);
    let generation = ((board.word.load(Ordering::Acquire) >> 32) + 1) & u64::from(u32::MAX);
    let absent = !((1u64 << parts) - 1) & u64::from(u32::MAX);
    board
        .word
        .store((generation << 32) | absent, Ordering::Release);
    while let Some(i) = board.claim(generation, 0) {
        board.run(i);
    }
    // Only parts already running elsewhere are left; a helper the OS has set aside gets the
    // core back through the yields.
    let mut polls = 0u32;
    while board.finished.load(Ordering::Acquire) < parts {
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(1024) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    *board.job.lock().unwrap_or_else(PoisonError::into_inner) = None;
    if board.panicked.swap(false, Ordering::AcqRel) {
        panic!("a part of a parallel product panicked");
    }
}

/// Runs `main` on this thread and `side` on the first helper of the team this thread leads that
/// has nothing else to do; when `main` returns and no helper has taken `side`, runs it here
/// (outside a team: `main`, then `side`). Returns once both have returned. `side` must not touch
/// what `main` does; whichever thread runs it, it may share out parts of its own only when the
/// caller runs it.
///
/// # Panics
/// When `main` or `side` panicked (on whichever thread).
pub fn overlap<R>(side: &(dyn Fn() + Sync), main: impl FnOnce() -> R) -> R {
    let Some(board) = LEADS.get() else {
        let r = main();
        side();
        return r;
    };
    // SAFETY (lifetime extension): the guard below returns only once no helper runs `side` and
    // none can start it, and clears it from the board; it runs on every way out of this call.
    let job: Side<'static> = unsafe { std::mem::transmute::<Side<'_>, Side<'static>>(side) };
    {
        let mut posted = board.side.lock().unwrap_or_else(PoisonError::into_inner);
        if posted.is_some() {
            // Called while a side job is posted (from `main` or `side`): one at a time.
            drop(posted);
            let r = main();
            side();
            return r;
        }
        *posted = Some(job);
    }
    board.side_state.store(SIDE_POSTED, Ordering::Release);
    struct Join<'a>(&'a Board);
    impl Drop for Join<'_> {
        fn drop(&mut self) {
            let state = &self.0.side_state;
            let kept =
                state.compare_exchange(SIDE_POSTED, SIDE_KEPT, Ordering::AcqRel, Ordering::Acquire);
            if kept == Err(SIDE_HELPING) {
                let mut polls = 0u32;
                while state.load(Ordering::Acquire) != SIDE_DONE {
                    polls = polls.wrapping_add(1);
                    if polls.is_multiple_of(1024) {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
            *self.0.side.lock().unwrap_or_else(PoisonError::into_inner) = None;
            if std::thread::panicking() {
                // The caller's own panic is the one reported; a side job's is dropped with it.
                self.0.side_panicked.store(false, Ordering::Release);
            }
            state.store(SIDE_NONE, Ordering::Release);
        }
    }
    let join = Join(board);
    let r = main();
    if board
        .side_state
        .compare_exchange(SIDE_POSTED, SIDE_KEPT, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        side();
    }
    drop(join);
    if board.side_panicked.swap(false, Ordering::AcqRel) {
        panic!("a side job panicked");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_part_runs_once_with_and_without_a_team() {
        for threads in [1, 2, 3] {
            with_team(threads, || {
                for parts in [0, 1, 2, 7, 64] {
                    let counts: Vec<AtomicU32> = (0..parts).map(|_| AtomicU32::new(0)).collect();
                    for_each_part(parts, &|i| {
                        counts[i].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
                }
            });
        }
    }

    #[test]
    fn row_blocks_cover_every_row_once() {
        for threads in [1, 2, 3] {
            with_team(threads, || {
                for rows in [1, 2, 64, 257] {
                    let mut a = ndarray::Array2::<f32>::zeros((rows, 300));
                    super::rows(a.view_mut(), &|first, mut block| {
                        for (r, mut row) in block.rows_mut().into_iter().enumerate() {
                            row.fill((first + r) as f32 + 1.0);
                        }
                    });
                    for (r, row) in a.rows().into_iter().enumerate() {
                        assert!(row.iter().all(|&v| v == r as f32 + 1.0), "{threads} {rows}");
                    }
                }
            });
        }
    }

    #[test]
    fn a_part_may_share_out_work_of_its_own() {
        with_team(2, || {
            let n = AtomicU32::new(0);
            for_each_part(3, &|_| {
                for_each_part(4, &|_| {
                    n.fetch_add(1, Ordering::Relaxed);
                });
            });
            assert_eq!(n.load(Ordering::Relaxed), 12);
        });
    }

    #[test]
    fn a_side_job_runs_once_beside_the_callers_work_with_and_without_a_team() {
        for threads in [1, 2, 3] {
            with_team(threads, || {
                for _ in 0..200 {
                    let (side, main) = (AtomicU32::new(0), AtomicU32::new(0));
                    let r = overlap(
                        &|| {
                            side.fetch_add(1, Ordering::Relaxed);
                        },
                        || {
                            // The caller's work may share out parts meanwhile.
                            for_each_part(4, &|_| {
                                main.fetch_add(1, Ordering::Relaxed);
                            });
                            7
                        },
                    );
                    assert_eq!(r, 7);
                    assert_eq!(side.load(Ordering::Relaxed), 1, "{threads} threads");
                    assert_eq!(main.load(Ordering::Relaxed), 4, "{threads} threads");
                }
            });
        }
    }

    #[test]
    fn an_idle_helper_takes_the_side_job() {
        with_team(2, || {
            let ran_on = Mutex::new(None);
            overlap(
                &|| *ran_on.lock().unwrap() = Some(std::thread::current().id()),
                || {
                    // Busy long enough for the spinning helper to see the job.
                    let t = Instant::now();
                    while ran_on.lock().unwrap().is_none() && t.elapsed() < Duration::from_secs(5) {
                        std::hint::spin_loop();
                    }
                },
            );
            let ran_on = ran_on.lock().unwrap().expect("the side job ran");
            assert_ne!(ran_on, std::thread::current().id(), "a helper ran it");
        });
    }

    #[test]
    fn a_nested_side_job_runs_in_order_and_panics_reach_the_caller() {
        with_team(2, || {
            let n = AtomicU32::new(0);
            overlap(
                &|| {
                    n.fetch_add(1, Ordering::Relaxed);
                },
                || {
                    overlap(
                        &|| {
                            n.fetch_add(10, Ordering::Relaxed);
                        },
                        || (),
                    );
                },
            );
            assert_eq!(n.load(Ordering::Relaxed), 11);
            let r = catch_unwind(|| overlap(&|| panic!("side"), || ()));
            assert!(r.is_err(), "a panicking side job panics the caller");
            let r = catch_unwind(|| overlap(&|| (), || panic!("main")));
            assert!(r.is_err());
            // Both panic (the side job on the helper, which the caller waits for): one panic
            // reaches the caller, and none is left over for the next call.
            let started = AtomicBool::new(false);
            let r = catch_unwind(|| {
                overlap(
                    &|| {
                        started.store(true, Ordering::Release);
                        panic!("side")
                    },
                    || {
                        let t = Instant::now();
                        while !started.load(Ordering::Acquire)
                            && t.elapsed() < Duration::from_secs(5)
                        {
                            std::hint::spin_loop();
                        }
                        panic!("main")
                    },
                )
            });
            assert!(r.is_err());
            // The board is free again.
            let n = AtomicU32::new(0);
            overlap(
                &|| {
                    n.fetch_add(1, Ordering::Relaxed);
                },
                || (),
            );
            assert_eq!(n.load(Ordering::Relaxed), 1);
        });
    }

    #[test]
    fn a_panicking_part_panics_the_caller_and_the_team_carries_on() {
        with_team(2, || {
            let r = catch_unwind(|| for_each_part(4, &|i| assert!(i != 2, "part 2")));
            assert!(r.is_err());
            let n = AtomicU32::new(0);
            for_each_part(4, &|_| {
                n.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(n.load(Ordering::Relaxed), 4);
        });
    }
}
