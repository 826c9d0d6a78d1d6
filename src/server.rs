//! The HTTP/1.1 edge in place of `axum::serve`: the accept loop with a cap on open connections,
//! a time limit on each request's headers and on idle kept-alive connections, quiet handling of
//! accept errors, and graceful shutdown. Runs on the async runtime; it only moves bytes.
//!
//! Invariants:
//! - At most `max_connections` connections are open; beyond it the server stops accepting (new
//!   connections wait in the kernel's backlog) until one closes. The cap sits below the
//!   process's open-file limit, so accepting never fails for want of descriptors.
//! - A connection with no request in progress is closed when no byte of a next request came
//!   within `idle_timeout`, or when a request's headers, once begun, are not complete within
//!   `header_timeout` (a new connection gets `header_timeout` from its accept). A request whose
//!   handler runs, or whose response (an event stream) is still being sent, is never cut here.
//! - An accept error is logged at most once per [`ACCEPT_LOG_EVERY`], and the loop pauses
//!   before retrying instead of spinning.

use axum::Router;
use axum::body::{Body, Bytes};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// How often accept errors (and reaching the connection cap) are logged at most.
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);
/// The pause after an accept error (descriptors exhausted, say) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The largest request head (and read buffer) of one connection.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// The limits of the edge.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Raises the process's soft limit of open files to its hard limit (servers need many sockets;
/// the soft default is often 1024). Returns the soft limit in force afterwards.
pub fn raise_open_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write the struct we pass, nothing else.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) != 0 {
                return 1024;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
        {
            lim.rlim_cur as u64
        }
    }
    #[cfg(not(unix))]
    {
        1024
    }
}

/// The connection cap that leaves room below an open-file limit of `files` for everything else
/// the process opens (the store, its journal, event fds, log output): a quarter of the limit, at
/// most 256 descriptors, and never more than 100,000 connections.
pub fn auto_max_connections(files: u64) -> usize {
    let reserve = (files / 4).min(256);
    usize::try_from(files.saturating_sub(reserve).clamp(16, 100_000)).unwrap_or(100_000)
}

/// Serves `router` on `listener` until `signal` completes, then stops accepting, asks every
/// connection to finish its request in progress and close, and returns when all have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        signal.await;
        drop(signal_rx);
    });
    let (close_tx, close_rx) = watch::channel(());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut accept_log = RateLimited::default();
    let mut cap_log = RateLimited::default();
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                cap_log.log(|n| {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        times = n,
                        "connection limit reached; new connections wait until one closes"
                    );
                });
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = signal_tx.closed() => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_log.log(|n| tracing::warn!(error = %e, times = n, "accept failed; retrying"));
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        () = signal_tx.closed() => break,
                    }
                }
            },
            () = signal_tx.closed() => break,
        };
        let (router, signal_tx, close_rx) = (router.clone(), signal_tx.clone(), close_rx.clone());
        tokio::spawn(async move {
            connection(stream, router, limits, signal_tx).await;
            drop(slot);
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}

/// One connection, until it closes, times out, or the server shuts down.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    signal_tx: watch::Sender<()>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |req: axum::http::Request<Incoming>| {
        let guard = InFlight::begin(requests.clone());
        let router = router.clone();
        async move {
            let resp = router.oneshot(req.map(Body::new)).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked {
                inner: body,
                _guard: guard,
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Our timeouts, not hyper's: hyper's header timer also runs while a kept-alive connection
    // waits, which would make the idle limit the header limit.
    builder
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut shutdown = pin!(signal_tx.closed());
    let mut shutting_down = false;
    let period = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            () = &mut shutdown, if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                if activity.expired(Instant::now(), limits) {
                    // No request in progress: dropping the connection closes the socket.
                    break;
                }
            }
        }
    }
}

/// What a connection's watchdog needs to know: requests in progress, bytes read, and since
/// when it has waited for a request.
struct Activity {
    in_flight: AtomicUsize,
    bytes_read: AtomicU64,
    waiting: Mutex<Waiting>,
}

struct Waiting {
    /// When the connection last became free of requests (or was accepted).
    since: Instant,
    /// Accepted and no request yet: the first one's headers are due `header_timeout` after
    /// the accept.
    fresh: bool,
    /// `bytes_read` at that moment: more means a next request has begun.
    bytes_then: u64,
    /// When the watchdog first saw the next request begin.
    head_started: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            bytes_read: AtomicU64::new(0),
            waiting: Mutex::new(Waiting {
                since: Instant::now(),
                fresh: true,
                bytes_then: 0,
                head_started: None,
            }),
        }
    }

    /// Whether a connection without requests in progress has waited too long for one.
    fn expired(&self, now: Instant, limits: Limits) -> bool {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        let read = self.bytes_read.load(Ordering::Acquire);
        let mut w = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        if w.fresh {
            let limit = if read == 0 {
                limits.header_timeout.min(limits.idle_timeout)
            } else {
                limits.header_timeout
            };
            return now.duration_since(w.since) > limit;
        }
        if read == w.bytes_then {
            return now.duration_since(w.since) > limits.idle_timeout;
        }
        let started = *w.head_started.get_or_insert(now);
        now.duration_since(started) > limits.header_timeout
    }
}

/// A request in progress, from its head to the end of its response body.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let mut w = a
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *w = Waiting {
                since: Instant::now(),
                fresh: false,
                bytes_then: a.bytes_read.load(Ordering::Acquire),
                head_started: None,
            };
        }
    }
}

/// A response body that holds its request's [`InFlight`] until sent (or dropped).
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, counting the bytes read.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity
                .bytes_read
                .fetch_add(n as u64, Ordering::AcqRel);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Logs at most once per [`ACCEPT_LOG_EVERY`], saying how often it happened meanwhile.
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    count: u64,
}

impl RateLimited {
    fn log(&mut self, emit: impl FnOnce(u64)) {
        self.count += 1;
        if self.last.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_EVERY) {
            emit(self.count);
            self.count = 0;
            self.last = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_connections: 10,
        header_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
    };

    #[test]
    fn the_connection_cap_leaves_room_below_the_file_limit() {
        assert_eq!(auto_max_connections(256), 192);
        assert_eq!(auto_max_connections(1024), 768);
        assert_eq!(auto_max_connections(1 << 20), 100_000);
        assert_eq!(auto_max_connections(20), 16);
    }

    #[test]
    fn a_waiting_connection_expires_by_its_header_and_idle_limits() {
        let s = Duration::from_secs(1);
        // New, silent: the header limit.
        let a = Activity::new();
        let t0 = a.waiting.lock().unwrap().since;
        assert!(!a.expired(t0 + s, LIMITS));
        assert!(a.expired(t0 + 3 * s, LIMITS));
        // New, half a header: still the header limit, from the accept.
        let a = Activity::new();
        let t0 = a.waiting.lock().unwrap().since;
        a.bytes_read.store(10, Ordering::Release);
        assert!(!a.expired(t0 + s, LIMITS));
        assert!(a.expired(t0 + 3 * s, LIMITS));
        // A request in progress never expires; once answered, the idle limit runs.
        let a = Arc::new(Activity::new());
        let t0 = a.waiting.lock().unwrap().since;
        let g = InFlight::begin(a.clone());
        a.bytes_read.store(100, Ordering::Release);
        assert!(!a.expired(t0 + 60 * s, LIMITS));
        drop(g);
        let t1 = a.waiting.lock().unwrap().since;
        assert!(!a.expired(t1 + 4 * s, LIMITS));
        assert!(a.expired(t1 + 6 * s, LIMITS));
        // Kept alive, then a next request begins: the header limit from its first byte.
        a.bytes_read.store(120, Ordering::Release);
        assert!(!a.expired(t1 + 4 * s, LIMITS)); // first seen here
        assert!(!a.expired(t1 + 5 * s, LIMITS));
        assert!(a.expired(t1 + 7 * s, LIMITS));
    }
}
