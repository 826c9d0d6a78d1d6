//! Dynamic batching of predictions: concurrent requests for the same model version are merged
//! into one forward pass (the weights are streamed once for all their rows instead of once per
//! request), then split back to their requests. Triton's dynamic batcher is the model.
//!
//! Any predict front calls [`Batcher::predict`] with the admitted version (an `Arc`) and its
//! rows; it answers what [`TrainedModel::predict`] answers for those rows alone, bit for bit:
//! the serving forward pass computes each row by the same operations whatever the batch
//! (`nn::infer`), and scaling, target inversion and labels are per row.
//!
//! Invariants:
//! - **No added latency when idle.** A batch forms only from requests already waiting when a
//!   worker takes one; a lone request starts at once. `delay` (default 0) lets a worker wait
//!   that long for more requests of the same version when its batch is not full.
//! - **Versions never mix.** A batch holds rows of one `Arc` only (pointer identity), so a hot
//!   swap sends new requests to new batches while admitted ones finish on their version.
//! - **No starvation.** A worker takes at most `max_rows` rows; a request with more rows gives
//!   up that many and goes to the back of the queue, so small requests behind it are served
//!   between its chunks.
//! - **Overload is answered.** A request not started within `wait` is withdrawn and gets
//!   [`PredictError::Overloaded`] (503 + Retry-After at the edge); once started it completes.
//!   A request whose client went away is withdrawn if not started. On the worker threads a
//!   timer answers it; on the runtime the drain task does, when it reaches a request queued
//!   longer than `wait` (drain tasks run while their queue is not empty, so no timer is armed
//!   per request).
//! - Small forward passes (under [`INLINE_WORK`] multiply-adds) are computed on the caller's
//!   thread: the hand-off would cost more than the work.
//!
//! Where passes run:
//! - **Short requests** (up to `runtime_work` multiply-adds, [`RUNTIME_WORK`] by default: a
//!   one-row 784-256-128-10 predict is 235k) are batched on the async runtime itself. A request
//!   joins the runtime queue; if fewer than `workers` drain tasks run, it spawns one. A drain
//!   task yields once (so the runtime first polls the connections that are ready: their
//!   requests join the queue), then computes the oldest request's version with the waiting
//!   requests of it, at most `runtime_work` multiply-adds per pass (≈ 150 µs by default, a
//!   bounded stretch of the runtime's time like parsing a large body), answers them, and
//!   repeats until the queue is empty. No thread is woken through the kernel and no timer
//!   runs: under load a batch is what arrived while the runtime served the previous one; when
//!   idle, a lone request waits one yield.
//! - **Longer requests** go to `workers` named OS threads (`mlpd-predict-N`), woken for each
//!   request, so long forward passes stay off the async runtime; the async side only queues
//!   and waits.
//!
//! A panic in a forward pass fails that batch's requests, not the worker or the drain task.

use crate::nn::{ModelError, Prediction, TrainedModel};
use ndarray::{Array2, ArrayView2, Axis, s};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Multiply-adds below which a prediction runs on the caller's thread (about 20 µs here, less
/// than parsing a 784-value JSON row).
pub const INLINE_WORK: usize = 100_000;

/// Multiply-adds a forward pass on the async runtime may take, and so the largest request
/// batched there: 4M is ≈ 150 µs of one core here, 17 rows of 784-256-128-10.
pub const RUNTIME_WORK: usize = 4_000_000;

/// How the batcher forms batches.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Threads computing forward passes (each runs one batch at a time).
    pub workers: usize,
    /// The most rows in one forward pass.
    pub max_rows: usize,
    /// How long a worker with a batch that is not full waits for more requests of the same
    /// version (0: never; batches form only from requests already waiting).
    pub delay: Duration,
    /// How long a request may wait to be started before it is answered `Overloaded`.
    pub wait: Duration,
    /// Multiply-adds a forward pass on the async runtime may take: requests up to it are
    /// batched there instead of on the worker threads (0: never).
    pub runtime_work: usize,
}

/// What a predict front hands over: anything that holds a trained model. Batches group by the
/// `Arc`'s identity, so pass the `Arc` the version was admitted under.
pub trait Servable: Send + Sync + 'static {
    fn trained(&self) -> &TrainedModel;
}

impl Servable for TrainedModel {
    fn trained(&self) -> &TrainedModel {
        self
    }
}

impl Servable for crate::registry::ModelVersion {
    fn trained(&self) -> &TrainedModel {
        &self.trained
    }
}

/// Why a prediction produced no outputs.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// The rows do not fit the model, or overflow it.
    #[error("{0}")]
    Model(#[from] ModelError),
    /// Not started within the wait: too many predictions at once.
    #[error("too many predictions at once")]
    Overloaded,
    /// The forward pass failed (a bug); the cause is logged.
    #[error("the forward pass failed")]
    Internal,
}

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const WITHDRAWN: u8 = 2;

/// One request in the queue.
struct Request {
    model: Arc<dyn Servable>,
    x: Array2<f32>,
    state: AtomicU8,
    /// When it joined the queue: a drain task answers `Overloaded` once it is older than `wait`.
    queued: Instant,
    /// The first row not yet handed to a worker (changed under the queue lock only).
    next: AtomicUsize,
    /// Rows not yet computed; whoever computes the last ones answers.
    pending: AtomicUsize,
    /// Rows computed so far, for a request computed in more than one part.
    outputs: Mutex<Option<Array2<f32>>>,
    reply: Mutex<Option<oneshot::Sender<Result<Prediction, PredictError>>>>,
}

impl Request {
    fn key(&self) -> *const () {
        Arc::as_ptr(&self.model) as *const ()
    }

    fn rows(&self) -> usize {
        self.x.nrows()
    }

    fn answer(&self, result: Result<Prediction, PredictError>) {
        if let Some(tx) = self.reply.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(result);
        }
    }
}

struct Queue {
    items: VecDeque<Arc<Request>>,
    closed: bool,
    /// Drain tasks running (the runtime queue only).
    drains: usize,
}

impl Queue {
    fn new() -> Mutex<Queue> {
        Mutex::new(Queue {
            items: VecDeque::new(),
            closed: false,
            drains: 0,
        })
    }
}

struct Shared {
    /// Longer requests, for the worker threads.
    queue: Mutex<Queue>,
    arrived: Condvar,
    /// Short requests, for the drain tasks on the async runtime.
    runtime: Mutex<Queue>,
    config: BatchConfig,
    passes: AtomicU64,
    parts: AtomicU64,
}

/// Counts since the batcher started: forward passes, and the request parts (a request, or a
/// chunk of a large one) they computed. `parts > passes` means requests shared passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchStats {
    pub passes: u64,
    pub parts: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_runtime(&self) -> MutexGuard<'_, Queue> {
        self.runtime.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a pass and computes it.
    fn run(&self, batch: &[Part]) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.parts.fetch_add(batch.len() as u64, Ordering::Relaxed);
        compute(batch);
    }
}

/// The prediction engine: a queue and the worker threads draining it. Cheap to clone; the
/// workers stop when the last clone is dropped.
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
    _workers: Arc<Workers>,
}

struct Workers(Arc<Shared>);

impl Drop for Workers {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.arrived.notify_all();
    }
}

impl Batcher {
    /// Starts the workers.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn start(config: BatchConfig) -> std::io::Result<Self> {
        let config = BatchConfig {
            workers: config.workers.max(1),
            max_rows: config.max_rows.max(1),
            ..config
        };
        let shared = Arc::new(Shared {
            queue: Queue::new(),
            arrived: Condvar::new(),
            runtime: Queue::new(),
            config,
            passes: AtomicU64::new(0),
            parts: AtomicU64::new(0),
        });
        for i in 0..shared.config.workers {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("mlpd-predict-{i}"))
                .spawn(move || work(&s))?;
        }
        Ok(Batcher {
            _workers: Arc::new(Workers(shared.clone())),
            shared,
        })
    }

    pub fn config(&self) -> &BatchConfig {
        &self.shared.config
    }

    pub fn stats(&self) -> BatchStats {
        BatchStats {
            passes: self.shared.passes.load(Ordering::Relaxed),
            parts: self.shared.parts.load(Ordering::Relaxed),
        }
    }

    /// Predicts the rows of `x` with `model`: the answer of `model.trained().predict(x)`,
    /// computed alone or in a batch with other requests for the same `Arc`.
    ///
    /// # Errors
    /// Rows that do not fit the model or overflow it; `Overloaded` when not started within the
    /// configured wait; `Internal` when the forward pass failed.
    pub async fn predict<M: Servable>(
        &self,
        model: Arc<M>,
        x: Array2<f32>,
    ) -> Result<Prediction, PredictError> {
        let trained = model.trained();
        trained.check_inputs(x.view())?;
        let rows = x.nrows();
        if rows.saturating_mul(trained.spec.parameter_count()) <= INLINE_WORK {
            let started = Instant::now();
            let outputs = trained.forward(x.view());
            crate::metrics::predicted(rows, started.elapsed());
            return Ok(trained.finish(outputs)?);
        }
        let work = rows.saturating_mul(trained.spec.parameter_count());
        let (tx, rx) = oneshot::channel();
        let request = Arc::new(Request {
            model,
            x,
            state: AtomicU8::new(QUEUED),
            queued: Instant::now(),
            next: AtomicUsize::new(0),
            pending: AtomicUsize::new(rows),
            outputs: Mutex::new(None),
            reply: Mutex::new(Some(tx)),
        });
        if work <= self.shared.config.runtime_work
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            {
                let mut q = self.shared.lock_runtime();
                q.items.push_back(request.clone());
                if q.drains < self.shared.config.workers {
                    q.drains += 1;
                    runtime.spawn(drain(Draining {
                        shared: self.shared.clone(),
                        done: false,
                    }));
                }
            }
            // The drain task answers, `Overloaded` too; the guard withdraws the request if
            // this future is dropped first.
            let _guard = Withdraw(&request);
            return rx.await.unwrap_or(Err(PredictError::Internal));
        }
        {
            let mut q = self.shared.lock();
            if q.closed {
                return Err(PredictError::Internal);
            }
            q.items.push_back(request.clone());
        }
        self.shared.arrived.notify_all();
        let guard = Withdraw(&request);
        let mut rx = rx;
        let result = match tokio::time::timeout(self.shared.config.wait, &mut rx).await {
            Ok(r) => r,
            Err(_) if guard.withdraw() => return Err(PredictError::Overloaded),
            Err(_) => rx.await,
        };
        result.unwrap_or(Err(PredictError::Internal))
    }
}

/// Withdraws a request that has not started when its caller stops waiting (timeout or a
/// dropped future), so no worker computes it for nobody.
struct Withdraw<'a>(&'a Request);

impl Withdraw<'_> {
    fn withdraw(&self) -> bool {
        self.0
            .state
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.withdraw();
    }
}

/// A worker: take a batch, compute it, repeat until the batcher is dropped.
fn work(shared: &Shared) {
    while let Some(batch) = next_batch(shared) {
        shared.run(&batch);
    }
}

/// A drain task's place in the runtime queue's `drains` count: whoever ends the task (its own
/// end, or the runtime dropping it) gives it back, so a later request can start a new one.
struct Draining {
    shared: Arc<Shared>,
    /// Cleared by the task itself, under the lock that found the queue empty.
    done: bool,
}

impl Drop for Draining {
    fn drop(&mut self) {
        if !self.done {
            self.shared.lock_runtime().drains -= 1;
        }
    }
}

/// The drain task: yield, so the runtime's ready connections queue their requests first, then
/// compute one pass; until the queue is empty (checked under the lock that requests are queued
/// under, so none is left behind).
async fn drain(mut draining: Draining) {
    let shared = draining.shared.clone();
    loop {
        tokio::task::yield_now().await;
        let batch = {
            let mut q = shared.lock_runtime();
            let rows = |r: &Request| {
                let params = r.model.trained().spec.parameter_count().max(1);
                (shared.config.runtime_work / params).clamp(1, shared.config.max_rows)
            };
            let cutoff = Instant::now().checked_sub(shared.config.wait);
            match start_batch(&mut q, rows, cutoff) {
                Some((_, _, batch)) => batch,
                None => {
                    q.drains -= 1;
                    draining.done = true;
                    return;
                }
            }
        };
        shared.run(&batch);
    }
}

/// Rows of one request in a batch.
struct Part {
    request: Arc<Request>,
    rows: Range<usize>,
}

/// Starts a batch under the queue lock: the oldest live request's rows (at most `max_rows` of
/// its version), leftovers back to the end of the queue, then rows of later requests for the
/// same version, in arrival order, while the batch has room. `None` when no request is live.
/// Requests queued before `cutoff` that have not started are answered `Overloaded` instead.
/// Returns the version's key and the room left.
fn start_batch(
    q: &mut Queue,
    max_rows: impl Fn(&Request) -> usize,
    cutoff: Option<Instant>,
) -> Option<(*const (), usize, Vec<Part>)> {
    let first = loop {
        let r = q.items.pop_front()?;
        if admit(&r, cutoff) {
            break r;
        }
        // Withdrawn before it started, or late and answered `Overloaded`: drop it.
    };
    let key = first.key();
    let mut room = max_rows(&first);
    let mut batch = Vec::new();
    if let Some(part) = take(&first, &mut room) {
        batch.push(part);
    }
    if first.next.load(Ordering::Relaxed) < first.rows() {
        // Rows left over: back of the queue, behind the requests that arrived meanwhile.
        q.items.push_back(first);
    }
    gather_same(q, key, &mut room, &mut batch, cutoff);
    Some((key, room, batch))
}

/// Whether a queued request goes into a batch: one already started (a large request's later
/// rows) does; one not started is marked started, unless it was withdrawn or, queued before
/// `cutoff`, is withdrawn now and answered `Overloaded`.
fn admit(r: &Request, cutoff: Option<Instant>) -> bool {
    if r.next.load(Ordering::Relaxed) > 0 {
        return true;
    }
    let (to, late) = match cutoff {
        Some(c) if r.queued < c => (WITHDRAWN, true),
        _ => (STARTED, false),
    };
    let won = r
        .state
        .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if won && late {
        r.answer(Err(PredictError::Overloaded));
    }
    won && !late
}

/// Takes the next batch for a worker thread, waiting for one; with a `delay`, waits that long
/// for more requests of the batch's version while it has room.
fn next_batch(shared: &Shared) -> Option<Vec<Part>> {
    let config = &shared.config;
    let mut q = shared.lock();
    let (key, mut room, mut batch) = loop {
        if let Some(started) = start_batch(&mut q, |_| config.max_rows, None) {
            break started;
        }
        if q.closed {
            return None;
        }
        q = shared.arrived.wait(q).unwrap_or_else(|e| e.into_inner());
    };
    let deadline = Instant::now() + config.delay;
    loop {
        let now = Instant::now();
        if room == 0 || now >= deadline || q.closed {
            break;
        }
        q = shared
            .arrived
            .wait_timeout(q, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        gather_same(&mut q, key, &mut room, &mut batch, None);
    }
    Some(batch)
}

/// Moves rows of queued requests for `key` into the batch while there is room (see
/// [`admit`] for `cutoff`).
fn gather_same(
    q: &mut Queue,
    key: *const (),
    room: &mut usize,
    batch: &mut Vec<Part>,
    cutoff: Option<Instant>,
) {
    let mut i = 0;
    while *room > 0 && i < q.items.len() {
        let r = &q.items[i];
        if r.key() != key {
            i += 1;
            continue;
        }
        if !admit(r, cutoff) {
            q.items.remove(i);
            continue;
        }
        let r = r.clone();
        if let Some(part) = take(&r, room) {
            batch.push(part);
        }
        if r.next.load(Ordering::Relaxed) >= r.rows() {
            q.items.remove(i);
        } else {
            i += 1;
        }
    }
}

/// Hands out the request's next rows, at most `room` of them. Called under the queue lock.
fn take(r: &Arc<Request>, room: &mut usize) -> Option<Part> {
    let start = r.next.load(Ordering::Relaxed);
    let n = (r.rows() - start).min(*room);
    if n == 0 {
        return None;
    }
    r.next.store(start + n, Ordering::Relaxed);
    *room -= n;
    Some(Part {
        request: r.clone(),
        rows: start..start + n,
    })
}

/// One forward pass over every row of the batch, then each request's share back to it.
fn compute(batch: &[Part]) {
    let Some(first) = batch.first() else { return };
    let trained = first.request.model.trained();
    let rows: usize = batch.iter().map(|p| p.rows.len()).sum();
    let started = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let [only] = batch
            && only.rows.len() == only.request.rows()
        {
            return trained.forward(only.request.x.view());
        }
        let views: Vec<ArrayView2<f32>> = batch
            .iter()
            .map(|p| p.request.x.slice(s![p.rows.clone(), ..]))
            .collect();
        let x = ndarray::concatenate(Axis(0), &views).expect("rows of one model have one width");
        trained.forward(x.view())
    }));
    crate::metrics::predicted(rows, started.elapsed());
    crate::metrics::predict_batch(rows);
    let mut outputs = match result {
        Ok(o) => o,
        Err(_) => {
            tracing::error!(rows, "a batched forward pass panicked");
            for p in batch {
                p.request.answer(Err(PredictError::Internal));
            }
            return;
        }
    };
    let mut at = 0;
    for p in batch {
        let n = p.rows.len();
        let r = &p.request;
        let share = s![at..at + n, ..];
        at += n;
        if n == r.rows() {
            // All of the request in this pass: answered from the pass's rows.
            let out = if n == outputs.nrows() {
                std::mem::take(&mut outputs)
            } else {
                outputs.slice(share).to_owned()
            };
            r.answer(r.model.trained().finish(out).map_err(PredictError::from));
            continue;
        }
        {
            let mut out = r.outputs.lock().unwrap_or_else(|e| e.into_inner());
            out.get_or_insert_with(|| Array2::zeros((r.rows(), outputs.ncols())))
                .slice_mut(s![p.rows.clone(), ..])
                .assign(&outputs.slice(share));
        }
        if r.pending.fetch_sub(n, Ordering::AcqRel) == n {
            let out = r.outputs.lock().unwrap_or_else(|e| e.into_inner()).take();
            let out = out.expect("a request's parts store their rows before the last answers");
            r.answer(r.model.trained().finish(out).map_err(PredictError::from));
        }
    }
}
