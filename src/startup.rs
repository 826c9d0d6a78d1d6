//! Building and running the application: bind the listener (port 0 works), start the training
//! workers, serve until a shutdown signal, then shut down in order.

use crate::api;
use crate::config::Config;
use crate::datasets::Datasets;
use crate::error::ErrorCode;
use crate::jobs::{Job, JobEnd, JobManager, WorkerSettings};
use crate::registry::Registry;
use crate::state::AppState;
use crate::store::Store;
use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore, watch};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub struct App {
    listener: TcpListener,
    limits: crate::server::Limits,
    router: Router,
    state: AppState,
    shutdown_tx: watch::Sender<bool>,
}

impl App {
    /// Binds the listener and starts the workers.
    ///
    /// # Errors
    /// The address cannot be bound, or worker threads cannot be started.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let c = config.clone();
        let store: Arc<dyn Store> =
            tokio::task::spawn_blocking(move || crate::store::open(&c)).await??;
        match &config.database_url {
            Some(url) => tracing::info!(database = %url, "store: PostgreSQL"),
            None => tracing::info!(dir = %config.data_dir.display(), "store: embedded SQLite"),
        }
        let registry = Arc::new(Registry::new(store.clone(), config.version_cache_bytes()));
        let datasets = Arc::new(Datasets::default());
        // Before any worker starts: with a shared store, the reap of this replica id's earlier
        // run must not catch a job this run's workers have just claimed.
        let restored = restore(store.clone(), &registry, &datasets).await?;
        let jobs = JobManager::start(
            registry.clone(),
            store.clone(),
            WorkerSettings {
                workers: config.workers(),
                threads: config.train_threads,
                priority: config.train_priority(),
                capacity: config.queue_capacity,
                retention: config.retention(),
                lease: config.job_lease(),
            },
            restored,
        )?;
        // The served versions' weights, so first predictions do not wait for the store.
        let (r, t) = (registry.clone(), Instant::now());
        let preloaded = tokio::task::spawn_blocking(move || r.preload()).await?;
        let cache = registry.cache_stats();
        tracing::info!(
            preloaded,
            bytes = cache.bytes,
            budget = cache.budget,
            ms = t.elapsed().as_millis() as u64,
            "served versions loaded"
        );
        let (s, c) = (store.clone(), config.clone());
        let purged = tokio::task::spawn_blocking(move || api::idempotency::purge(&*s, &c))
            .await?
            .context("cannot purge expired idempotency keys")?;
        if purged > 0 {
            tracing::info!(purged, "expired idempotency keys purged");
        }
        let jobs = Arc::new(jobs);
        let cluster = crate::cluster::Cluster::new(
            store.clone(),
            registry.clone(),
            datasets.clone(),
            jobs.clone(),
        );
        if let Some(c) = &cluster {
            c.start().context("cannot start the change feed's thread")?;
            tracing::info!(
                replica = %store.shared().map_or("", |s| s.replica()),
                lease_ms = config.job_lease_ms,
                "cluster mode: jobs queue in the database"
            );
        }
        let listener =
            listen(config.bind).with_context(|| format!("cannot listen on {}", config.bind))?;
        let files = crate::server::raise_open_file_limit();
        let max_connections = match config.max_connections {
            0 => crate::server::auto_max_connections(files),
            n => {
                if n as u64 >= files {
                    tracing::warn!(
                        max_connections = n,
                        open_files = files,
                        "--max-connections is not below the open-file limit; accepting may fail"
                    );
                }
                n
            }
        };
        tracing::info!(open_files = files, max_connections, "connection limits");
        let limits = crate::server::Limits {
            max_connections,
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        };
        let tokens = crate::auth::Tokens::load(
            &config.admin_tokens,
            &config.predict_tokens,
            config.tokens_file.as_deref(),
        )?;
        if tokens.enabled() {
            tracing::info!("bearer-token authentication is on");
        }
        crate::metrics::handle();
        let (shutdown_tx, shutdown) = watch::channel(false);
        let sweeps = crate::sweeps::Sweeps::new(
            store.clone(),
            registry.clone(),
            jobs.clone(),
            cluster.clone(),
        );
        tokio::spawn(sweeps.clone().run(shutdown.clone()));
        let state = AppState::new(crate::state::Services {
            tokens: Arc::new(tokens),
            batcher: crate::batcher::Batcher::start(config.batching())
                .context("cannot start the prediction threads")?,
            event_streams: Arc::new(Semaphore::new(config.max_event_streams)),
            evaluations: Arc::new(Semaphore::new(config.workers().max(1))),
            config: Arc::new(config),
            registry,
            datasets,
            jobs,
            sweeps,
            store,
            cluster,
            admin: Arc::new(Mutex::new(())),
            shutdown,
        });
        let router = api::router(state.clone())
            .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(
                TraceLayer::new(tower_http::classify::SharedClassifier::new(
                    crate::telemetry::Classifier,
                ))
                .make_span_with(|req: &axum::http::Request<_>| {
                    let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_failure(log_failure),
            )
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(cors(&state.config.cors_origins)?);
        Ok(App {
            listener,
            limits,
            router,
            state,
            shutdown_tx,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `signal` completes, then: stop accepting, end event streams, stop training
    /// (jobs end `failed`/`interrupted`), finish in-flight requests, within the grace period.
    ///
    /// # Errors
    /// The server fails.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            limits,
            router,
            state,
            shutdown_tx,
        } = self;
        let grace = Duration::from_secs(state.config.shutdown_grace_secs);
        let jobs = state.jobs.clone();
        let cluster = state.cluster.clone();
        let stop = async move {
            signal.await;
            tracing::info!("shutting down");
            // Jobs first: each stopped job sends its end event to its streams; then any stream
            // still open is told to end.
            let _ = tokio::task::spawn_blocking(move || jobs.shutdown(grace)).await;
            if let Some(c) = cluster {
                c.stop();
            }
            let _ = shutdown_tx.send(true);
        };
        tracing::info!(addr = %listener.local_addr()?, "listening");
        crate::server::serve(listener, router, limits, stop).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The kernel's queue of connections not yet accepted: room for a burst (a few thousand clients
/// at once) while the runtime is busy, and for the clients that wait while the server holds
/// `--max-connections` (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The trace layer's word on a 5xx response: WARN, with the status. The documented 5xx answers
/// (503 overloaded, timed out or store unavailable; 507 storage full) are the server working as
/// designed under load, and a 500's cause (an internal error, a panic) was logged at ERROR where
/// it happened, once. Only an error of the connection or body itself is logged here at ERROR.
fn log_failure(class: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    let ms = latency.as_millis() as u64;
    match class {
        ServerErrorsFailureClass::StatusCode(s) => {
            tracing::warn!(status = s.as_u16(), ms, "server error response");
        }
        ServerErrorsFailureClass::Error(e) => tracing::error!(error = %e, ms, "response failed"),
    }
}

/// CORS for the configured origins: none (no headers added), `*`, or a list.
fn cors(origins: &[String]) -> anyhow::Result<CorsLayer> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| HeaderValue::from_str(o).with_context(|| format!("invalid CORS origin {o:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("last-event-id"),
            REQUEST_ID,
        ])
        .expose_headers([header::LOCATION, header::RETRY_AFTER, REQUEST_ID])
        .max_age(Duration::from_secs(600)))
}

/// Loads what the store holds. Jobs that were queued or running when the process stopped are
/// recorded as `failed`/`interrupted`: nothing re-runs by surprise after a crash. With a shared
/// store other replicas' jobs are left alone: only the running jobs this replica id held before
/// it restarted, and those whose lease expired, are ended; queued jobs stay queued. Returns the
/// jobs, for [`JobManager::start`].
async fn restore(
    store: Arc<dyn Store>,
    registry: &Registry,
    datasets: &Datasets,
) -> anyhow::Result<Vec<Job>> {
    let t = Instant::now();
    let (snap, restored, interrupted) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut interrupted = match store.shared() {
                Some(shared) => shared
                    .reap(true)
                    .context("cannot end the jobs of this replica's previous run")?
                    .len(),
                None => 0,
            };
            let mut snap = store.load().context("cannot read the store")?;
            let mut restored = Vec::new();
            for (record, history) in std::mem::take(&mut snap.jobs) {
                let Some(job) = Job::restore(record, history) else {
                    continue;
                };
                if store.shared().is_none() && !job.status().is_finished() {
                    let end = JobEnd::failed(
                        ErrorCode::Interrupted,
                        "the server stopped while the job was queued or running",
                    );
                    store
                        .save_job(&job.record(Some(&end)))
                        .context("cannot update the store")?;
                    job.finish(end);
                    interrupted += 1;
                }
                restored.push(job);
            }
            Ok((snap, restored, interrupted))
        })
        .await??;
    let (models, versions, n_datasets, n_jobs) = (
        snap.models.len(),
        snap.versions.len(),
        snap.datasets.len(),
        restored.len(),
    );
    registry.restore(snap.models, snap.versions);
    datasets.restore(snap.datasets);
    tracing::info!(
        models,
        versions,
        datasets = n_datasets,
        jobs = n_jobs,
        interrupted,
        ms = t.elapsed().as_millis() as u64,
        "state loaded"
    );
    Ok(restored)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
