//! Prometheus metrics: one recorder per process (many servers may run in one process, as in the
//! tests; they share it), the names in one place, and the text rendering served at `/metrics`.

use axum::http::Method;
use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

/// Latency buckets, in seconds: from 100 µs (an inline prediction) to 60 s (the request timeout).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            // Someone else installed a recorder; ours still renders (empty), nothing panics.
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .expect("a thread can be started");
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "mlpd_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "mlpd_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to the response headers, by route, method and status"
    );
    describe_counter!(
        "mlpd_http_panics_total",
        "Requests whose handler panicked (answered 500 `internal`)"
    );
    describe_counter!(
        "mlpd_jobs_finished_total",
        "Jobs that ended, by status (succeeded, failed, canceled)"
    );
    describe_counter!("mlpd_training_epochs_total", "Epochs trained");
    describe_counter!("mlpd_training_samples_total", "Training rows processed");
    describe_gauge!(
        "mlpd_training_samples_per_second",
        "Training throughput of the latest epoch of any job"
    );
    describe_counter!("mlpd_prediction_rows_total", "Rows predicted");
    describe_histogram!(
        "mlpd_prediction_duration_seconds",
        metrics::Unit::Seconds,
        "Time of one forward pass (one request, or a batch of them), without queueing"
    );
    describe_histogram!(
        "mlpd_prediction_batch_rows",
        "Rows per batched forward pass (requests merged by the dynamic batcher)"
    );
    describe_counter!(
        "mlpd_idempotency_keys_total",
        "Requests with an Idempotency-Key, by outcome (reserved, replayed, in_flight, mismatch; taken_over: an answer not recorded, its lapsed reservation taken over)"
    );
    describe_counter!(
        "mlpd_store_errors_total",
        "Store operations that failed, by kind (full, unavailable: the database unreachable, failed)"
    );
}

/// A request's method as a label: the standard methods by name, any other "other" (a client that
/// invents methods must not mint a series per method).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The handles of one (route, method, status) series.
struct RouteSeries {
    method: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

thread_local! {
    /// Each runtime thread keeps the handles it has registered, by matched route (a finite set:
    /// route templates, not paths), so counting a request builds no labels and takes no lock.
    static ROUTE_SERIES: RefCell<HashMap<Box<str>, Vec<RouteSeries>>> = RefCell::default();
}

/// Counts a request that matched `route` (a route template) and records its duration.
pub fn http_request(route: &str, method: &'static str, status: u16, elapsed: Duration) {
    ROUTE_SERIES.with_borrow_mut(|routes| {
        if !routes.contains_key(route) {
            routes.insert(route.into(), Vec::new());
        }
        let Some(series) = routes.get_mut(route) else {
            return;
        };
        let at = match series
            .iter()
            .position(|s| s.status == status && s.method == method)
        {
            Some(at) => at,
            None => {
                let labels = [
                    ("route", route.to_owned()),
                    ("method", method.to_owned()),
                    ("status", status.to_string()),
                ];
                series.push(RouteSeries {
                    method,
                    status,
                    requests: counter!("mlpd_http_requests_total", &labels),
                    duration: histogram!("mlpd_http_request_duration_seconds", &labels),
                });
                series.len() - 1
            }
        };
        series[at].requests.increment(1);
        series[at].duration.record(elapsed.as_secs_f64());
    });
}

/// A request no route matched (404/405 fallbacks): counted under `route="unmatched"`.
pub fn unmatched_request(method: &Method, status: u16) {
    let labels = [
        ("route", "unmatched".to_owned()),
        ("method", method_label(method).to_owned()),
        ("status", status.to_string()),
    ];
    counter!("mlpd_http_requests_total", &labels).increment(1);
}

/// A handler panicked; the request was answered 500 (and is counted as such by route too).
pub fn handler_panicked() {
    counter!("mlpd_http_panics_total").increment(1);
}

pub fn job_finished(status: &'static str) {
    counter!("mlpd_jobs_finished_total", "status" => status).increment(1);
}

pub fn epoch_trained(samples: usize, elapsed: Duration) {
    counter!("mlpd_training_epochs_total").increment(1);
    counter!("mlpd_training_samples_total").increment(samples as u64);
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        gauge!("mlpd_training_samples_per_second").set(samples as f64 / secs);
    }
}

pub fn predicted(rows: usize, elapsed: Duration) {
    counter!("mlpd_prediction_rows_total").increment(rows as u64);
    histogram!("mlpd_prediction_duration_seconds").record(elapsed.as_secs_f64());
}

/// One forward pass of the dynamic batcher over `rows` rows.
pub fn predict_batch(rows: usize) {
    histogram!("mlpd_prediction_batch_rows").record(rows as f64);
}

/// A request with an `Idempotency-Key`: what became of it.
pub fn idempotency_key(outcome: &'static str) {
    counter!("mlpd_idempotency_keys_total", "outcome" => outcome).increment(1);
}

pub fn store_error(kind: &'static str) {
    counter!("mlpd_store_errors_total", "kind" => kind).increment(1);
}

/// Levels read at scrape time.
pub struct Snapshot {
    pub queued: usize,
    pub running: usize,
    pub models: usize,
    pub versions: usize,
    pub datasets: usize,
    /// Whether the store is up, and its outages so far.
    pub store: crate::store::Availability,
    /// The version cache.
    pub cache: crate::versions::CacheStats,
}

/// The Prometheus text exposition: the process's counters and histograms, then this server's
/// levels (written here, not kept in the shared recorder, since several servers may share it).
pub fn render(now: &Snapshot) -> String {
    use std::fmt::Write;
    let h = handle();
    h.run_upkeep();
    let mut out = h.render();
    let mut level = |name: &str, help: &str, samples: &[(&str, usize)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    level(
        "mlpd_jobs",
        "Jobs not finished, by status",
        &[
            ("{status=\"queued\"}", now.queued),
            ("{status=\"running\"}", now.running),
        ],
    );
    level(
        "mlpd_queue_depth",
        "Jobs waiting for a training worker",
        &[("", now.queued)],
    );
    level("mlpd_models", "Models stored", &[("", now.models)]);
    level(
        "mlpd_model_versions",
        "Trained versions stored, all models",
        &[("", now.versions)],
    );
    level("mlpd_datasets", "Datasets stored", &[("", now.datasets)]);
    level(
        "mlpd_store_up",
        "1 while store calls are attempted; 0 while the database is unavailable (calls fail at once)",
        &[("", usize::from(now.store.up))],
    );
    let _ = writeln!(
        out,
        "# HELP mlpd_store_outages_total Times the database became unavailable\n\
         # TYPE mlpd_store_outages_total counter\nmlpd_store_outages_total {}",
        now.store.outages
    );
    let c = &now.cache;
    let mut level = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    level(
        "mlpd_version_cache_bytes",
        "gauge",
        "Trained versions' weights held in memory, estimated bytes",
        c.bytes,
    );
    level(
        "mlpd_version_cache_budget_bytes",
        "gauge",
        "The version cache's budget (--version-cache-mb), bytes",
        c.budget,
    );
    level(
        "mlpd_version_cache_entries",
        "gauge",
        "Trained versions held in memory",
        c.entries as u64,
    );
    level(
        "mlpd_version_cache_hits_total",
        "counter",
        "Versions found in the cache",
        c.hits,
    );
    level(
        "mlpd_version_cache_misses_total",
        "counter",
        "Versions loaded from the store",
        c.misses,
    );
    level(
        "mlpd_version_cache_evictions_total",
        "counter",
        "Versions dropped from the cache to stay within its budget",
        c.evictions,
    );
    out
}
