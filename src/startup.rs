//! Building and running the application: bind the listener (port 0 works), start the training
//! workers, serve until a shutdown signal, then shut down in order.

use crate::api;
use crate::config::Config;
use crate::datasets::Datasets;
use crate::jobs::{JobManager, WorkerSettings};
use crate::registry::Registry;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub struct App {
    listener: TcpListener,
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
        let listener = TcpListener::bind(config.bind).await?;
        let registry = Arc::new(Registry::default());
        let jobs = JobManager::start(
            registry.clone(),
            WorkerSettings {
                workers: config.workers(),
                threads: config.train_threads,
                nice: config.train_nice,
                capacity: config.queue_capacity,
            },
        )?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let state = AppState {
            predict_slots: Arc::new(Semaphore::new(config.predict_slots())),
            config: Arc::new(config),
            registry,
            datasets: Arc::new(Datasets::default()),
            jobs: Arc::new(jobs),
            admin: Arc::new(Mutex::new(())),
            shutdown,
        };
        let router = api::router(state.clone())
            .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(state.config.request_timeout_secs),
            ))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
        Ok(App {
            listener,
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
            router,
            state,
            shutdown_tx,
        } = self;
        let grace = Duration::from_secs(state.config.shutdown_grace_secs);
        let jobs = state.jobs.clone();
        let stop = async move {
            signal.await;
            tracing::info!("shutting down");
            // Jobs first: each stopped job sends its end event to its streams; then any stream
            // still open is told to end.
            let _ = tokio::task::spawn_blocking(move || jobs.shutdown(grace)).await;
            let _ = shutdown_tx.send(true);
        };
        tracing::info!(addr = %listener.local_addr()?, "listening");
        let serve = axum::serve(listener, router).with_graceful_shutdown(stop);
        serve.await?;
        tracing::info!("stopped");
        Ok(())
    }
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
