//! The service's configuration: one typed struct, filled from flags and `MLPD_*` environment
//! variables (flags win), every field documented for `--help`.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How training threads give way to predictions (`--train-priority`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TrainPriority {
    /// Linux `SCHED_IDLE`: a training thread runs only on a core that nothing else wants.
    Idle,
    /// The niceness `--train-nice`: training keeps a smaller share of a busy core.
    Nice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// mlpd: train feed-forward neural networks and serve their predictions over HTTP.
#[derive(Clone, Debug, Parser)]
#[command(name = "mlpd", version, about)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "MLPD_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Directory that holds the service's data (the embedded store; unused with
    /// `--database-url`).
    #[arg(long, env = "MLPD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// PostgreSQL instead of the embedded store: `postgres://user:password@host:port/db` (or
    /// `key=value` form). Its password is never logged or shown.
    #[arg(long, env = "MLPD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<crate::store::DatabaseUrl>,
    /// Most connections to PostgreSQL this process opens at once (with `--database-url`).
    #[arg(long, env = "MLPD_DATABASE_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: u32,
    /// This replica's id in a cluster on one database (with `--database-url`): the owner of the
    /// job leases it holds. A replica that restarts under the same id ends the jobs it ran
    /// before at once; others end them when their lease expires. Default: derived from the
    /// host name, the data directory and the bind address, so a restart keeps it (give
    /// replicas on one host different data directories or ports, or ids).
    #[arg(long, env = "MLPD_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// How long a running job's lease lasts, in milliseconds (with `--database-url`). Its
    /// replica renews it every fifth of that; when a replica dies, the others end its jobs
    /// `failed`/`interrupted` within 1.2 leases (12 s by default). A job whose epochs cannot be
    /// saved for this long (the database down) stops, `failed`/`store_unavailable`.
    #[arg(long, env = "MLPD_JOB_LEASE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(500..=600_000))]
    pub job_lease_ms: u64,
    /// Training jobs that run at once, each on its own thread (0: one per core).
    #[arg(long, env = "MLPD_TRAIN_WORKERS", default_value_t = 0)]
    pub train_workers: usize,
    /// Threads one training job's matrix products may use.
    #[arg(long, env = "MLPD_TRAIN_THREADS", default_value_t = 1)]
    pub train_threads: usize,
    /// How training threads give way to predictions: `idle` (Linux SCHED_IDLE: they run only
    /// on a core nothing else wants) or `nice` (the niceness `--train-nice`).
    #[arg(long, env = "MLPD_TRAIN_PRIORITY", value_enum, default_value = "idle")]
    pub train_priority: TrainPriority,
    /// Scheduling niceness of training threads with `--train-priority nice` (0–19; higher
    /// yields more of the CPU to predictions).
    #[arg(long, env = "MLPD_TRAIN_NICE", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub train_nice: i32,
    /// Jobs that may wait for a worker; submissions beyond it get 429.
    #[arg(long, env = "MLPD_QUEUE_CAPACITY", default_value_t = 64)]
    pub queue_capacity: usize,
    /// Largest request body in bytes, except dataset uploads.
    #[arg(long, env = "MLPD_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Largest dataset upload (CSV or JSON) in bytes.
    #[arg(long, env = "MLPD_MAX_DATASET_BYTES", default_value_t = 256 << 20)]
    pub max_dataset_bytes: usize,
    /// Most cells (rows × columns) in one dataset.
    #[arg(long, env = "MLPD_MAX_DATASET_CELLS", default_value_t = 100_000_000)]
    pub max_dataset_cells: usize,
    /// Most trainable parameters in one model.
    #[arg(long, env = "MLPD_MAX_MODEL_PARAMETERS", default_value_t = 50_000_000)]
    pub max_model_parameters: usize,
    /// Longest a training job may run, in seconds (0: no limit); a job that reaches it ends
    /// `succeeded` with the weights reached, as with its own `max_seconds`.
    #[arg(long, env = "MLPD_MAX_TRAIN_SECONDS", default_value_t = 0.0)]
    pub max_train_seconds: f64,
    /// Forward passes computed at once: the dynamic batcher's threads (0: one per core). Each
    /// pass merges the waiting requests for one model version.
    #[arg(long, env = "MLPD_PREDICT_CONCURRENCY", default_value_t = 0)]
    pub predict_concurrency: usize,
    /// How long a prediction may wait to be started before it gets 503, in milliseconds.
    #[arg(long, env = "MLPD_PREDICT_WAIT_MS", default_value_t = 2000)]
    pub predict_wait_ms: u64,
    /// The most rows in one batched forward pass; a request with more is computed in chunks
    /// of this size, taking turns with the requests behind it.
    #[arg(long, env = "MLPD_PREDICT_BATCH_ROWS", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub predict_batch_rows: u64,
    /// How long a forward pass that is not full waits for more requests of the same version,
    /// in microseconds (0: never wait; a batch forms only from requests already waiting).
    #[arg(long, env = "MLPD_PREDICT_BATCH_DELAY_US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub predict_batch_delay_us: u64,
    /// Multiply-adds (rows × parameters) a forward pass on the async runtime's own threads may
    /// take: predictions up to it are batched there, without a thread wake-up per request,
    /// instead of handed to the batcher's threads (0: every pass on the batcher's threads).
    #[arg(long, env = "MLPD_PREDICT_RUNTIME_WORK", default_value_t = crate::batcher::RUNTIME_WORK as u64)]
    pub predict_runtime_work: u64,
    /// Time limit for a request to produce its response headers, in seconds (event streams
    /// are not cut).
    #[arg(long, env = "MLPD_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,
    /// Most connections open at once (0: from the open-file limit, which is raised to its hard
    /// limit at startup: all of it but a quarter, at most 256, kept for files). Beyond it, new
    /// connections wait in the kernel's queue until one closes.
    #[arg(long, env = "MLPD_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers: from the accept on a new connection,
    /// from the request's first byte on a kept-alive one. A connection that is late is closed.
    #[arg(long, env = "MLPD_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait for its next request before it is closed.
    #[arg(long, env = "MLPD_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub idle_timeout_secs: u64,
    /// Seconds to wait for running work on shutdown before exiting anyway.
    #[arg(long, env = "MLPD_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Interval between keep-alive comments on idle event streams, in seconds.
    #[arg(long, env = "MLPD_SSE_KEEPALIVE_SECS", default_value_t = 15)]
    pub sse_keepalive_secs: u64,
    /// Event streams (`GET /v1/jobs/{id}/events`) open at once; more get 503 with `Retry-After`.
    #[arg(long, env = "MLPD_MAX_EVENT_STREAMS", default_value_t = 10_000)]
    pub max_event_streams: usize,
    /// Versions kept per model; older ones are deleted (the served version never is).
    #[arg(long, env = "MLPD_MAX_VERSIONS_PER_MODEL", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_versions_per_model: u64,
    /// Finished jobs kept; older ones are deleted with their history.
    #[arg(long, env = "MLPD_MAX_FINISHED_JOBS", default_value_t = 1000)]
    pub max_finished_jobs: usize,
    /// Memory for trained versions' weights, in MiB (fractions allowed): versions are loaded
    /// from the store on demand and the least recently used are dropped beyond it. A version
    /// larger than the whole budget is still served, loaded for each use. 0: nothing kept.
    #[arg(long, env = "MLPD_VERSION_CACHE_MB", default_value_t = 1024.0)]
    pub version_cache_mb: f64,
    /// Cap on the store's size in MiB (0: none); writes beyond it get 507.
    #[arg(long, env = "MLPD_MAX_STORE_MB", default_value_t = 0)]
    pub max_store_mb: u64,
    /// Origins allowed to call the API from a browser, comma-separated (`*`: any; empty: CORS off).
    #[arg(long, env = "MLPD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Bearer tokens of the admin role (every call), comma-separated. Any configured token turns
    /// authentication on; several allow rotation.
    #[arg(
        long,
        env = "MLPD_ADMIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_tokens: Vec<crate::auth::Token>,
    /// Bearer tokens of the predict role (predictions and read-only GETs), comma-separated.
    #[arg(
        long,
        env = "MLPD_PREDICT_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub predict_tokens: Vec<crate::auth::Token>,
    /// A file of tokens, one per line: `admin TOKEN` or `predict TOKEN` (`#` starts a comment);
    /// read at startup, in addition to the token lists.
    #[arg(long, env = "MLPD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// With authentication on, whether `/metrics` needs an admin token (otherwise it is open).
    #[arg(long, env = "MLPD_METRICS_AUTH", default_value_t = false)]
    pub metrics_auth: bool,
    /// Most models stored at once (0: no limit); creating or importing more gets 409.
    #[arg(long, env = "MLPD_MAX_MODELS", default_value_t = 1000)]
    pub max_models: usize,
    /// Most datasets stored at once (0: no limit); uploading more gets 409.
    #[arg(long, env = "MLPD_MAX_DATASETS", default_value_t = 100)]
    pub max_datasets: usize,
    /// Seconds an `Idempotency-Key` is remembered after it was first used (its answer replayed
    /// to retries of the same request); later, the key is free again. Expired keys are purged.
    #[arg(long, env = "MLPD_IDEMPOTENCY_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub idempotency_ttl_secs: u64,
    /// Seconds a request holding an `Idempotency-Key` may go without renewing its reservation
    /// (it renews every third of this) before a retry takes the key over: how long the work of
    /// a process that died (or lost its store) blocks its retries.
    #[arg(long, env = "MLPD_IDEMPOTENCY_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idempotency_lease_secs: u64,
    /// Log line format.
    #[arg(long, env = "MLPD_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
}

impl Config {
    /// Settings for tests: an ephemeral port on loopback, a fresh data directory under the
    /// system's temporary directory, two workers.
    pub fn for_tests() -> Self {
        let mut c = Config::parse_from(["mlpd"]);
        c.bind = "127.0.0.1:0".parse().expect("valid address");
        c.train_workers = 2;
        c.queue_capacity = 8;
        c.sse_keepalive_secs = 1;
        c.data_dir = std::env::temp_dir().join(format!("mlpd-test-{}", uuid::Uuid::new_v4()));
        c
    }

    pub fn retention(&self) -> crate::store::Retention {
        crate::store::Retention {
            versions_per_model: usize::try_from(self.max_versions_per_model).unwrap_or(usize::MAX),
            finished_jobs: self.max_finished_jobs,
        }
    }

    /// The version cache's budget in bytes.
    pub fn version_cache_bytes(&self) -> u64 {
        // Saturating: a negative or NaN value is 0, a huge one u64::MAX.
        (self.version_cache_mb * f64::from(1u32 << 20)) as u64
    }

    pub fn max_store_bytes(&self) -> Option<u64> {
        (self.max_store_mb > 0).then(|| self.max_store_mb.saturating_mul(1 << 20))
    }

    pub fn train_priority(&self) -> crate::jobs::Priority {
        match self.train_priority {
            TrainPriority::Idle => crate::jobs::Priority::Idle,
            TrainPriority::Nice => crate::jobs::Priority::Nice(self.train_nice),
        }
    }

    pub fn workers(&self) -> usize {
        if self.train_workers == 0 {
            cores()
        } else {
            self.train_workers
        }
    }

    pub fn predict_slots(&self) -> usize {
        if self.predict_concurrency == 0 {
            cores()
        } else {
            self.predict_concurrency
        }
    }

    /// The dynamic batcher's settings.
    pub fn batching(&self) -> crate::batcher::BatchConfig {
        crate::batcher::BatchConfig {
            workers: self.predict_slots(),
            max_rows: self.predict_batch_rows as usize,
            delay: Duration::from_micros(self.predict_batch_delay_us),
            wait: self.predict_wait(),
            runtime_work: self.predict_runtime_work as usize,
        }
    }

    /// The replica id: `--replica-id`, or one derived from what stays the same when this
    /// replica restarts (host name, data directory, bind address).
    pub fn replica_id(&self) -> String {
        if let Some(id) = self.replica_id.as_ref().filter(|s| !s.is_empty()) {
            return id.clone();
        }
        use std::hash::{Hash, Hasher};
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_default();
        let host = host.trim().to_string();
        let dir = std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&host, &dir, self.bind).hash(&mut h);
        format!("{host}-{:012x}", h.finish() & 0xffff_ffff_ffff)
    }

    /// A job lease's length.
    pub fn job_lease(&self) -> Duration {
        Duration::from_millis(self.job_lease_ms)
    }

    pub fn predict_wait(&self) -> Duration {
        Duration::from_millis(self.predict_wait_ms)
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
