//! The PostgreSQL store, for several replicas on one database: selected by `--database-url`.
//! Same records as the embedded store (JSON text; dataset cells as `BYTEA` in the layout of
//! [`super::cells`]). What must be unique is decided here, in a transaction: model names (the
//! primary key → [`StoreError::Conflict`]), version numbers (allocated under a row lock on the
//! model in [`Store::publish`]).
//!
//! Connections come from a bounded pool (`--database-pool-size`); a caller waits at most
//! [`CHECKOUT_TIMEOUT`] for one, then gets [`StoreError::Failed`] (503 at the edge). The schema
//! is migrated at startup under an advisory lock, so replicas starting together apply each
//! migration once; a database whose schema is newer than this binary knows is refused.
//!
//! Outages: a connection that closes, or a connect that fails, marks the store down
//! ([`super::breaker`]); until a probe reaches the database again every call fails at once with
//! [`StoreError::Unavailable`], and connections opened before the outage are discarded unused.
//! TCP keepalives and a TCP user timeout ([`KEEPALIVE_IDLE`], [`TCP_USER_TIMEOUT`]) make a
//! server that vanished without closing its connections noticed within seconds.
//!
//! Blocking: call from worker threads or `spawn_blocking` (the sync `postgres` client drives
//! its own small runtime), never on the async runtime.

use super::breaker::{Availability, Breaker};
use super::cells::{column_words, table_from_words, words};
use super::{
    Canceled, Change, Changes, Claim, Claimed, DatasetRecord, EndedSweep, EvaluationRecord,
    IdempotencyClaim, JobInput, JobRecord, ModelRecord, Published, ServingChange, ServingChanged,
    ServingUpdate, Shared, Snapshot, Store, StoreError, StoredAnswer, SweepRecord, VersionMeta,
    VersionRecord, retention, serving, sweeps,
};
use crate::error::ErrorCode;
use crate::nn::EpochReport;
use crate::records::{JobError, JobStatus, SweepStatus};
use crate::tabular::{Column, Table};
use r2d2_postgres::PostgresConnectionManager;
use r2d2_postgres::postgres::error::SqlState;
use r2d2_postgres::postgres::{self, NoTls};
use r2d2_postgres::r2d2::ManageConnection;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use uuid::Uuid;

/// The newest schema this binary knows (the last migration's number).
pub const SCHEMA_VERSION: i64 = 6;

/// Versioned migrations, applied in order, each in its own transaction.
const MIGRATIONS: [(i64, &str); 6] = [
    (1, include_str!("migrations/postgres/0001_init.sql")),
    (2, include_str!("migrations/postgres/0002_evaluations.sql")),
    (
        3,
        include_str!("migrations/postgres/0003_idempotency_keys.sql"),
    ),
    (4, include_str!("migrations/postgres/0004_queue.sql")),
    (5, include_str!("migrations/postgres/0005_serving.sql")),
    (6, include_str!("migrations/postgres/0006_sweeps.sql")),
];

/// The channel of the change feed. Payloads are small: a letter and an id (`j <job>`,
/// `e <job>`, `c <job>`, `m <model>`, `d <dataset>`), never records.
const CHANNEL: &str = "mlpd";

/// The advisory lock key held while migrating ("mlpd" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d6c_7064;

/// Longest wait for a pooled connection (and for a new one to open).
pub const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// A caller waiting for a pooled connection looks this often whether the store went down
/// meanwhile (then it stops waiting).
const CHECKOUT_SLICE: Duration = Duration::from_millis(100);

/// An idle connection's first TCP keepalive probe after this long; then one every
/// [`KEEPALIVE_INTERVAL`], and [`KEEPALIVE_RETRIES`] unanswered ones close it.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_RETRIES: u32 = 3;

/// Data sent and not acknowledged for this long closes the connection (a query to a server
/// that vanished fails after it, instead of after the system's retransmission timeout).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a probe of a lost database waits for its connection.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A PostgreSQL connection string (URL or `key=value` form). Shown and logged without its
/// password: `Display` and `Debug` print user, host, port and database only.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    /// Never fails, so that a parse error cannot echo the password: the string is checked when
    /// the store connects.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DatabaseUrl(s.to_string()))
    }
}

impl DatabaseUrl {
    fn config(&self) -> Result<postgres::Config, StoreError> {
        self.0.parse().map_err(|_| {
            StoreError::Failed(
                "the database URL is not a valid PostgreSQL connection string".into(),
            )
        })
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(c) = self.0.parse::<postgres::Config>() else {
            return f.write_str("(an invalid database URL)");
        };
        let host = match c.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        write!(
            f,
            "postgres://{}@{host}:{port}/{}",
            c.get_user().unwrap_or(""),
            c.get_dbname().unwrap_or("")
        )
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

type Pool = r2d2_postgres::r2d2::Pool<Manager>;
type Conn = r2d2_postgres::r2d2::PooledConnection<Manager>;

/// The pool's connections: opened as [`PostgresConnectionManager`] opens them; the failures
/// seen on the way (a connect refused, a connection found closed) mark the store down.
struct Manager {
    inner: PostgresConnectionManager<NoTls>,
    breaker: Arc<Breaker>,
}

/// A pooled connection, and the outage count when it was opened.
struct Pooled {
    client: postgres::Client,
    born: u64,
}

impl std::ops::Deref for Pooled {
    type Target = postgres::Client;

    fn deref(&self) -> &postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        &mut self.client
    }
}

impl ManageConnection for Manager {
    type Connection = Pooled;
    type Error = StoreError;

    fn connect(&self) -> Result<Pooled, StoreError> {
        let born = self.breaker.outages();
        match self.inner.connect() {
            Ok(client) => Ok(Pooled { client, born }),
            // The server answered (too many clients, a wrong password): reachable, so no
            // outage; the caller's checkout times out as before.
            Err(e) if e.as_db_error().is_some() && !connection_lost(&e) => {
                Err(StoreError::Failed(describe(&e)))
            }
            Err(e) => {
                // Not a store call's error (the pool connects in the background): not counted.
                let e = StoreError::Unavailable(describe(&e));
                self.breaker.trip(&e);
                Err(e)
            }
        }
    }

    /// No round trip: a connection is used unless it is known closed or predates an outage
    /// (a closed one that nobody noticed yet fails its first call, which marks the store down).
    fn is_valid(&self, c: &mut Pooled) -> Result<(), StoreError> {
        if self.has_broken(c) {
            return Err(StoreError::Unavailable(
                "a connection from before an outage".into(),
            ));
        }
        Ok(())
    }

    fn has_broken(&self, c: &mut Pooled) -> bool {
        if c.client.is_closed() {
            self.breaker.trip(&"a database connection closed");
            return true;
        }
        c.born != self.breaker.outages()
    }
}

pub struct PostgresStore {
    /// Always `Some` until dropped.
    pool: Option<Pool>,
    /// For the change feed's own connection.
    config: postgres::Config,
    /// The owner of the leases this process holds.
    replica: String,
    /// Down after a connection-level failure, until a probe reaches the database.
    breaker: Arc<Breaker>,
}

impl Drop for PostgresStore {
    /// A `postgres` connection closes with a blocking call, which panics on an async runtime's
    /// thread (where the last handle to the store may go): the pool goes on a thread of its own.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::Builder::new()
                .name("mlpd-pg-close".into())
                .spawn(move || drop(pool));
        }
    }
}

fn fail(e: impl fmt::Display) -> StoreError {
    crate::metrics::store_error("failed");
    StoreError::Failed(e.to_string())
}

/// An error with its cause (which `Display` of a `postgres::Error` leaves out).
fn describe(e: &postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A store call that failed because its connection did.
fn unavailable(e: &postgres::Error) -> StoreError {
    crate::metrics::store_error("unavailable");
    StoreError::Unavailable(describe(e))
}

/// Whether the connection (or the server) failed, rather than a statement: the connection
/// closed, an I/O error, or the server's "connection exception" and shutdown states.
fn connection_lost(e: &postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|c| c.is::<std::io::Error>())
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        if e.code() == Some(&SqlState::DISK_FULL) {
            crate::metrics::store_error("full");
            return StoreError::Full;
        }
        if connection_lost(&e) {
            return unavailable(&e);
        }
        fail(e)
    }
}

impl From<r2d2_postgres::r2d2::Error> for StoreError {
    fn from(e: r2d2_postgres::r2d2::Error) -> Self {
        fail(format!("no database connection: {e}"))
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(fail)
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(fail)
}

fn nanos(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// A unique-name violation is the caller's conflict (409), not a storage failure.
fn name_taken(e: postgres::Error, name: &str) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        return StoreError::Conflict(
            ErrorCode::ModelExists,
            format!("a model named {name:?} exists"),
        );
    }
    e.into()
}

impl PostgresStore {
    /// Connects (pool of at most `pool_size` connections) and migrates the schema.
    ///
    /// # Errors
    /// The URL is invalid, the database cannot be reached, a migration fails, or the schema is
    /// newer than this binary knows.
    pub fn connect(url: &DatabaseUrl, pool_size: u32, replica: &str) -> Result<Self, StoreError> {
        let mut config = url.config()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CHECKOUT_TIMEOUT);
        }
        config
            .application_name("mlpd")
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES)
            .tcp_user_timeout(TCP_USER_TIMEOUT);
        let mut probe = config.clone();
        probe.connect_timeout(PROBE_CONNECT_TIMEOUT);
        let breaker = Breaker::new(Box::new(move || {
            let mut c = probe.connect(NoTls).map_err(|e| describe(&e))?;
            c.simple_query("SELECT 1").map_err(|e| describe(&e))?;
            Ok(())
        }));
        let pool = r2d2_postgres::r2d2::Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(1))
            // Only the retry interval of connects that failed (half of it, at most): callers
            // wait up to `CHECKOUT_TIMEOUT` in `conn`. Soon after an outage the pool is full again.
            .connection_timeout(super::breaker::PROBE_EVERY * 2)
            // The breaker logs an outage once; a log line per failed connect would add nothing.
            .error_handler(Box::new(r2d2_postgres::r2d2::NopErrorHandler))
            // `Manager::is_valid` makes no round trip: a connection closed unnoticed is found
            // out when used (and replaced).
            .test_on_check_out(true)
            .build_unchecked(Manager {
                inner: PostgresConnectionManager::new(config.clone(), NoTls),
                breaker: breaker.clone(),
            });
        let store = PostgresStore {
            pool: Some(pool),
            config,
            replica: replica.to_string(),
            breaker,
        };
        store.migrate()?;
        Ok(store)
    }

    /// A pooled connection; at once [`StoreError::Unavailable`] while the store is down.
    fn conn(&self) -> Result<Conn, StoreError> {
        let pool = self
            .pool
            .as_ref()
            .ok_or_else(|| fail("the store is closed"))?;
        let up = || {
            self.breaker
                .check()
                .inspect_err(|_| crate::metrics::store_error("unavailable"))
        };
        up()?;
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        loop {
            match pool.get_timeout(CHECKOUT_SLICE) {
                Ok(c) => return Ok(c),
                Err(e) => {
                    // A connect that failed meanwhile marked the store down: stop waiting.
                    up()?;
                    if Instant::now() >= deadline {
                        return Err(e.into());
                    }
                }
            }
        }
    }

    /// Applies the migrations this database lacks, holding the advisory lock.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let applied = apply_migrations(&mut c);
        let unlocked = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        let from = applied?;
        unlocked?;
        if from < SCHEMA_VERSION {
            tracing::info!(from, to = SCHEMA_VERSION, "database schema migrated");
        }
        Ok(())
    }

    /// The schema version recorded in the database (0 for an empty one).
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let row = self
            .conn()?
            .query_one("SELECT COALESCE(MAX(version), 0) FROM mlpd_schema", &[])?;
        Ok(row.get(0))
    }
}

/// Returns the version the database had before.
fn apply_migrations(c: &mut postgres::Client) -> Result<i64, StoreError> {
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS mlpd_schema (
           version BIGINT PRIMARY KEY,
           applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )?;
    let current: i64 = c
        .query_one("SELECT COALESCE(MAX(version), 0) FROM mlpd_schema", &[])?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::Failed(format!(
            "the database has schema version {current}, newer than this mlpd knows \
             ({SCHEMA_VERSION}); run a newer mlpd"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let mut tx = c.transaction()?;
        tx.batch_execute(sql)?;
        tx.execute("INSERT INTO mlpd_schema (version) VALUES ($1)", &[version])?;
        tx.commit()?;
    }
    Ok(current)
}

/// Inserts or updates a job, and announces it. A job that has ended is never changed again:
/// a worker whose lease expired (the job was ended `interrupted` by another replica) cannot
/// overwrite that end. An ended job's input is deleted.
fn upsert_job(c: &mut impl postgres::GenericClient, job: &JobRecord) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO jobs (id, model, dataset_id, status, created_at, finished_at, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status,
           finished_at = EXCLUDED.finished_at, record = EXCLUDED.record
         WHERE jobs.status = ANY($8)",
        &[
            &job.id,
            &job.model,
            &job.dataset_id,
            &json(&job.status)?,
            &nanos(job.created_at),
            &job.finished_at.map(nanos),
            &json(job)?,
            &active()?,
        ],
    )?;
    if job.status.is_finished() {
        c.execute("DELETE FROM job_inputs WHERE job = $1", &[&job.id])?;
    }
    notify(c, &format!("j {}", job.id))
}

/// Announces a change on the feed (delivered when the transaction commits).
fn notify(c: &mut impl postgres::GenericClient, payload: &str) -> Result<(), StoreError> {
    c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])?;
    Ok(())
}

/// The stored form of a status.
fn status(s: JobStatus) -> Result<String, StoreError> {
    json(&s)
}

fn insert_epochs(
    c: &mut impl postgres::GenericClient,
    job: Uuid,
    epochs: &[EpochReport],
) -> Result<(), StoreError> {
    if epochs.is_empty() {
        return Ok(());
    }
    let stmt = c.prepare(
        "INSERT INTO epochs (job, epoch, record) VALUES ($1, $2, $3)
         ON CONFLICT (job, epoch) DO UPDATE SET record = EXCLUDED.record",
    )?;
    for e in epochs {
        c.execute(&stmt, &[&job, &i64::from(e.epoch), &json(e)?])?;
    }
    notify(c, &format!("e {job}"))
}

/// Keys of the transaction-scoped advisory locks that serialise "count, then insert" per
/// collection across replicas (a count alone cannot see a racing insert not yet committed).
const MODELS_LOCK: i64 = 0x6d6c_7064_0001;
const DATASETS_LOCK: i64 = 0x6d6c_7064_0002;
/// Serialises job submissions with deletes of models and datasets.
const QUEUE_LOCK: i64 = 0x6d6c_7064_0003;

/// The stored statuses of a job that holds its model and dataset.
fn active() -> Result<Vec<String>, StoreError> {
    Ok(vec![json(&JobStatus::Queued)?, json(&JobStatus::Running)?])
}

/// Takes the collection's lock for the rest of the transaction and counts its rows.
fn locked_count(
    tx: &mut postgres::Transaction<'_>,
    lock: i64,
    table: &str,
) -> Result<usize, StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])?;
    let n: i64 = tx
        .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])?
        .get(0);
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Inserts a model unless `max` (0: no limit) are stored, in the caller's transaction.
fn insert_model(
    tx: &mut postgres::Transaction<'_>,
    m: &ModelRecord,
    max: usize,
) -> Result<(), StoreError> {
    if max > 0 && locked_count(tx, MODELS_LOCK, "models")? >= max {
        return Err(StoreError::limit_reached("models", max));
    }
    tx.execute(
        "INSERT INTO models (name, next_version, record) VALUES ($1, $2, $3)",
        &[&m.name, &i64::from(m.next_version), &json(m)?],
    )
    .map_err(|e| name_taken(e, &m.name))?;
    notify(tx, &format!("m {}", m.name))
}

fn insert_version(
    c: &mut impl postgres::GenericClient,
    v: &VersionRecord,
) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO versions (model, version, record) VALUES ($1, $2, $3)",
        &[&v.model, &i64::from(v.version), &json(v)?],
    )?;
    Ok(())
}

/// Serialises purges of expired idempotency keys: one replica purges, the others skip (two
/// deletes of the same rows in different orders could deadlock).
const PURGE_LOCK: i64 = 0x6d6c_7064_0004;

/// Deletes expired keys in a transaction of its own, unless another purge is running.
fn purge_keys(
    c: &mut postgres::Client,
    expired_before: i64,
    stale_before: i64,
) -> Result<usize, StoreError> {
    let mut tx = c.transaction()?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PURGE_LOCK])?
        .get(0);
    if !locked {
        return Ok(0);
    }
    let n = tx.execute(
        "DELETE FROM idempotency_keys WHERE claimed_at < $1 AND (owner IS NULL OR renewed_at < $2)",
        &[&expired_before, &stale_before],
    )?;
    tx.commit()?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The model's record (its row locked for the rest of the transaction, as [`Store::publish`]
/// locks it) and version numbers.
fn lock_model(
    tx: &mut postgres::Transaction<'_>,
    model: &str,
) -> Result<Option<(ModelRecord, Vec<u32>)>, StoreError> {
    let Some(row) = tx.query_opt(
        "SELECT record FROM models WHERE name = $1 FOR UPDATE",
        &[&model],
    )?
    else {
        return Ok(None);
    };
    let record: ModelRecord = parse(row.get(0))?;
    let versions = tx
        .query("SELECT version FROM versions WHERE model = $1", &[&model])?
        .iter()
        .filter_map(|r| u32::try_from(r.get::<_, i64>(0)).ok())
        .collect();
    Ok(Some((record, versions)))
}

/// Appends a history entry, keeping the model's newest [`serving::HISTORY_PER_MODEL`].
fn insert_history(
    tx: &mut postgres::Transaction<'_>,
    model: &str,
    c: &ServingChange,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO serving_history (model, record) VALUES ($1, $2)",
        &[&model, &json(c)?],
    )?;
    let seqs: Vec<i64> = tx
        .query(
            "SELECT seq FROM serving_history WHERE model = $1",
            &[&model],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let gone = retention::excess_history(seqs, serving::HISTORY_PER_MODEL);
    if !gone.is_empty() {
        tx.execute("DELETE FROM serving_history WHERE seq = ANY($1)", &[&gone])?;
    }
    Ok(())
}

/// [`Store::change_serving`] inside the caller's transaction.
fn change_serving_in(
    tx: &mut postgres::Transaction<'_>,
    model: &str,
    update: &ServingUpdate,
) -> Result<ServingChanged, StoreError> {
    let Some((mut record, versions)) = lock_model(tx, model)? else {
        return Err(StoreError::model_gone(model));
    };
    let change = serving::apply(&mut record, &versions, update)?;
    if let Some(ch) = &change {
        tx.execute(
            "UPDATE models SET record = $2 WHERE name = $1",
            &[&model, &json(&record)?],
        )?;
        insert_history(tx, model, ch)?;
        notify(tx, &format!("m {model}"))?;
    }
    Ok(ServingChanged {
        model: record,
        change,
    })
}

fn upsert_sweep(tx: &mut postgres::Transaction<'_>, sweep: &SweepRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sweeps (id, model, created_at, status, record) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, record = EXCLUDED.record",
        &[
            &sweep.id,
            &sweep.model,
            &nanos(sweep.created_at),
            &json(&sweep.status)?,
            &json(sweep)?,
        ],
    )?;
    Ok(())
}

/// A sweep; with `lock`, its row locked for the rest of the transaction.
fn read_sweep(
    tx: &mut postgres::Transaction<'_>,
    id: Uuid,
    lock: bool,
) -> Result<Option<SweepRecord>, StoreError> {
    let sql = if lock {
        "SELECT record FROM sweeps WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT record FROM sweeps WHERE id = $1"
    };
    tx.query_opt(sql, &[&id])?
        .map(|r| parse(r.get(0)))
        .transpose()
}

/// Records `jobs` as `queued` (with `sweep`, if one groups them), under the queue lock that
/// serialises submissions with deletes, unless the model is gone or — with a queue
/// (the jobs' input and its `capacity`) — fewer than `jobs.len()` places are left in it.
fn enqueue_in(
    tx: &mut postgres::Transaction<'_>,
    sweep: Option<&SweepRecord>,
    model: &str,
    jobs: &[JobRecord],
    queue: Option<(&JobInput, usize)>,
) -> Result<(), StoreError> {
    // One lock for submissions and deletes: a job cannot be queued for a model (or dataset)
    // that a racing delete just checked as unused; it also serialises the queue count.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&QUEUE_LOCK])?;
    if tx
        .query_opt("SELECT 1 FROM models WHERE name = $1", &[&model])?
        .is_none()
    {
        return Err(StoreError::model_gone(model));
    }
    let input = match queue {
        None => None,
        Some((input, capacity)) => {
            let queued: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM jobs WHERE status = $1",
                    &[&status(JobStatus::Queued)?],
                )?
                .get(0);
            let queued = usize::try_from(queued).unwrap_or(usize::MAX);
            if queued.saturating_add(jobs.len()) > capacity {
                let message = if jobs.len() > 1 {
                    format!(
                        "the training queue has {} free places of {capacity}; {} jobs do not fit",
                        capacity.saturating_sub(queued),
                        jobs.len()
                    )
                } else {
                    "the training queue is full; retry later".into()
                };
                return Err(StoreError::Conflict(ErrorCode::QueueFull, message));
            }
            Some(input.encode()?)
        }
    };
    if let Some(sweep) = sweep {
        upsert_sweep(tx, sweep)?;
    }
    for job in jobs {
        upsert_job(tx, job)?;
        if let Some((record, features, targets)) = &input {
            tx.execute(
                "INSERT INTO job_inputs (job, record, features, targets) VALUES ($1, $2, $3, $4)",
                &[&job.id, record, features, targets],
            )?;
        }
    }
    Ok(())
}

/// A version record without its weights, dropped by the database (so they do not cross the
/// network). `jsonb` holds at most 255 MiB: a larger record (a network of tens of millions of
/// weights) comes whole, and its weights are skipped while parsing.
const VERSION_META: &str = "CASE WHEN octet_length(record) < 200000000 \
     THEN (record::jsonb #- '{trained,network}')::text ELSE record END";

impl Store for PostgresStore {
    fn version(&self, model: &str, version: u32) -> Result<Option<VersionRecord>, StoreError> {
        self.conn()?
            .query_opt(
                "SELECT record FROM versions WHERE model = $1 AND version = $2",
                &[&model, &i64::from(version)],
            )?
            .map(|r| parse(r.get(0)))
            .transpose()
    }

    fn version_meta(&self, model: &str, version: u32) -> Result<Option<VersionMeta>, StoreError> {
        self.conn()?
            .query_opt(
                &format!("SELECT {VERSION_META} FROM versions WHERE model = $1 AND version = $2"),
                &[&model, &i64::from(version)],
            )?
            .map(|r| parse(r.get(0)))
            .transpose()
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.build_transaction().read_only(true).start()?;
        let mut snap = Snapshot::default();
        for r in tx.query("SELECT record FROM models ORDER BY name", &[])? {
            snap.models.push(parse(r.get(0))?);
        }
        // Without the weights: they are loaded on demand.
        for r in tx.query(
            &format!("SELECT {VERSION_META} FROM versions ORDER BY model, version"),
            &[],
        )? {
            snap.versions.push(parse(r.get(0))?);
        }
        for r in tx.query("SELECT record FROM datasets ORDER BY id", &[])? {
            snap.datasets.push(parse(r.get(0))?);
        }
        let mut epochs: HashMap<Uuid, Vec<EpochReport>> = HashMap::new();
        for r in tx.query("SELECT job, record FROM epochs ORDER BY job, epoch", &[])? {
            epochs.entry(r.get(0)).or_default().push(parse(r.get(1))?);
        }
        for r in tx.query("SELECT id, record FROM jobs ORDER BY created_at, id", &[])? {
            let id: Uuid = r.get(0);
            let job: JobRecord = parse(r.get(1))?;
            snap.jobs
                .push((job, epochs.remove(&id).unwrap_or_default()));
        }
        tx.commit()?;
        Ok(snap)
    }

    fn insert_model(&self, m: &ModelRecord, max: usize) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        insert_model(&mut tx, m, max)?;
        tx.commit()?;
        Ok(())
    }

    fn delete_model(&self, name: &str) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&QUEUE_LOCK])?;
        let busy: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM jobs WHERE model = $1 AND status = ANY($2)",
                &[&name, &active()?],
            )?
            .get(0);
        if busy > 0 {
            return Err(StoreError::model_busy(name));
        }
        tx.execute("DELETE FROM models WHERE name = $1", &[&name])?;
        notify(&mut tx, &format!("m {name}"))?;
        tx.commit()?;
        Ok(())
    }

    fn insert_dataset(
        &self,
        meta: &DatasetRecord,
        data: &Table,
        max: usize,
    ) -> Result<(), StoreError> {
        let bytes = |cols: &[Column]| -> Vec<u8> { column_words(cols).flatten().collect() };
        let (features, targets) = (bytes(data.features()), bytes(data.targets()));
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        if max > 0 && locked_count(&mut tx, DATASETS_LOCK, "datasets")? >= max {
            return Err(StoreError::limit_reached("datasets", max));
        }
        tx.execute(
            "INSERT INTO datasets (id, record, features, targets) VALUES ($1, $2, $3, $4)",
            &[&meta.id, &json(meta)?, &features, &targets],
        )?;
        notify(&mut tx, &format!("d {}", meta.id))?;
        tx.commit()?;
        Ok(())
    }

    fn load_dataset(&self, id: Uuid) -> Result<Option<Table>, StoreError> {
        let Some(row) = self.conn()?.query_opt(
            "SELECT record, features, targets FROM datasets WHERE id = $1",
            &[&id],
        )?
        else {
            return Ok(None);
        };
        let meta: DatasetRecord = parse(row.get(0))?;
        let (features, targets) = (words(row.get(1)), words(row.get(2)));
        drop(row);
        table_from_words(&meta, &features, &targets, |m: &str| fail(m)).map(Some)
    }

    fn delete_dataset(&self, id: Uuid) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&QUEUE_LOCK])?;
        let busy: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM jobs WHERE dataset_id = $1 AND status = ANY($2)",
                &[&id, &active()?],
            )?
            .get(0);
        if busy > 0 {
            return Err(StoreError::dataset_in_use(id));
        }
        tx.execute("DELETE FROM datasets WHERE id = $1", &[&id])?;
        notify(&mut tx, &format!("d {id}"))?;
        tx.commit()?;
        Ok(())
    }

    fn submit_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        enqueue_in(&mut tx, None, &job.model, std::slice::from_ref(job), None)?;
        tx.commit()?;
        Ok(())
    }

    fn save_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        upsert_job(&mut tx, job)?;
        tx.commit()?;
        Ok(())
    }

    fn delete_job(&self, id: Uuid) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        tx.execute("DELETE FROM jobs WHERE id = $1", &[&id])?;
        notify(&mut tx, &format!("j {id}"))?;
        tx.commit()?;
        Ok(())
    }

    fn import_model(
        &self,
        m: &ModelRecord,
        v: &VersionRecord,
        max: usize,
    ) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        insert_model(&mut tx, m, max)?;
        insert_version(&mut tx, v)?;
        tx.commit()?;
        Ok(())
    }

    fn append_epochs(&self, job: Uuid, epochs: &[EpochReport]) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        insert_epochs(&mut tx, job, epochs)?;
        tx.commit()?;
        Ok(())
    }

    fn publish(
        &self,
        v: &mut VersionRecord,
        job: &mut JobRecord,
        epochs: &[EpochReport],
        keep: usize,
    ) -> Result<Published, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        // Only the lease holder publishes: a job another replica ended (its lease expired)
        // publishes nothing.
        if let Some(row) = tx.query_opt(
            "SELECT status, owner FROM jobs WHERE id = $1 FOR UPDATE",
            &[&job.id],
        )? {
            let (st, owner): (String, Option<String>) = (row.get(0), row.get(1));
            if st != status(JobStatus::Running)? || owner.is_some_and(|o| o != self.replica) {
                return Err(StoreError::Conflict(
                    ErrorCode::Interrupted,
                    "the job's lease expired and another replica ended it".into(),
                ));
            }
        }
        // The row lock serialises publishers of one model: each sees the number the one before
        // it took.
        let Some(row) = tx.query_opt(
            "SELECT next_version, record FROM models WHERE name = $1 FOR UPDATE",
            &[&v.model],
        )?
        else {
            return Err(StoreError::Gone);
        };
        let next: i64 = row.get(0);
        let mut model: ModelRecord = parse(row.get(1))?;
        let before: Vec<u32> = tx
            .query("SELECT version FROM versions WHERE model = $1", &[&v.model])?
            .iter()
            .filter_map(|r| u32::try_from(r.get::<_, i64>(0)).ok())
            .collect();
        let newest: Option<i64> = tx
            .query_one(
                "SELECT MAX(version) FROM versions WHERE model = $1",
                &[&v.model],
            )?
            .get(0);
        let version = next.max(newest.map_or(1, |n| n + 1));
        v.version = u32::try_from(version).map_err(fail)?;
        job.model_version = Some(v.version);
        model.next_version = v.version + 1;
        tx.execute(
            "UPDATE models SET next_version = $2, record = $3 WHERE name = $1",
            &[&v.model, &(version + 1), &json(&model)?],
        )?;
        insert_version(&mut tx, v)?;
        insert_epochs(&mut tx, job.id, epochs)?;
        upsert_job(&mut tx, job)?;
        let all: Vec<u32> = tx
            .query("SELECT version FROM versions WHERE model = $1", &[&v.model])?
            .iter()
            .filter_map(|r| u32::try_from(r.get::<_, i64>(0)).ok())
            .collect();
        if let Some(c) = serving::published(&model, &before, v.version, job.id) {
            insert_history(&mut tx, &v.model, &c)?;
        }
        let pruned = retention::excess_versions(all, keep, &model.protected());
        let gone: Vec<i64> = pruned.iter().map(|&p| i64::from(p)).collect();
        tx.execute(
            "DELETE FROM versions WHERE model = $1 AND version = ANY($2)",
            &[&v.model, &gone],
        )?;
        notify(&mut tx, &format!("m {}", v.model))?;
        tx.commit()?;
        Ok(Published {
            version: v.version,
            pruned,
            model,
        })
    }

    fn prune_jobs(&self, keep: usize) -> Result<Vec<Uuid>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let finished: Vec<(i64, Uuid)> = tx
            .query(
                "SELECT finished_at, id FROM jobs WHERE finished_at IS NOT NULL",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let ids = retention::excess_jobs(finished, keep);
        if !ids.is_empty() {
            tx.execute("DELETE FROM jobs WHERE id = ANY($1)", &[&ids])?;
            for id in &ids {
                notify(&mut tx, &format!("j {id}"))?;
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    fn insert_evaluation(&self, e: &EvaluationRecord, keep: usize) -> Result<bool, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let version = i64::from(e.version);
        // Locks the version row: a concurrent prune waits, or has already removed it.
        let exists = tx
            .query_opt(
                "SELECT 1 FROM versions WHERE model = $1 AND version = $2 FOR SHARE",
                &[&e.model, &version],
            )?
            .is_some();
        if !exists {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO evaluations (id, model, version, record) VALUES ($1, $2, $3, $4)",
            &[&e.id, &e.model, &version, &json(e)?],
        )?;
        let listed: Vec<(i64, Uuid)> = tx
            .query(
                "SELECT seq, id FROM evaluations WHERE model = $1 AND version = $2",
                &[&e.model, &version],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let gone = retention::excess_evaluations(listed, keep);
        if !gone.is_empty() {
            tx.execute("DELETE FROM evaluations WHERE id = ANY($1)", &[&gone])?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn evaluations(&self, model: &str, version: u32) -> Result<Vec<EvaluationRecord>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT record FROM evaluations WHERE model = $1 AND version = $2 ORDER BY seq DESC",
            &[&model, &i64::from(version)],
        )?;
        rows.iter().map(|r| parse(r.get::<_, &str>(0))).collect()
    }

    fn claim_idempotency_key(&self, c: &IdempotencyClaim) -> Result<Claimed, StoreError> {
        let mut conn = self.conn()?;
        purge_keys(&mut conn, c.expired_before, c.stale_before)?;
        let mut tx = conn.transaction()?;
        // Insert-if-absent: a racing insert of the same key (another replica) makes this wait
        // for its transaction, then do nothing.
        let inserted = tx.execute(
            "INSERT INTO idempotency_keys (key, fingerprint, owner, claimed_at, renewed_at)
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (key) DO NOTHING",
            &[&c.key, &c.fingerprint, &c.owner, &c.now],
        )?;
        let claimed = if inserted == 1 {
            Claimed::Reserved
        } else {
            // The row lock serialises racing takeovers: the second sees the first's renewal.
            let Some(row) = tx.query_opt(
                "SELECT fingerprint, owner, renewed_at, status, headers, body, claimed_at
                 FROM idempotency_keys WHERE key = $1 FOR UPDATE",
                &[&c.key],
            )?
            else {
                // Deleted (released or purged) between the insert and the select: try again.
                drop(tx);
                drop(conn);
                return self.claim_idempotency_key(c);
            };
            let fingerprint: &str = row.get(0);
            let owner: Option<Uuid> = row.get(1);
            let renewed: i64 = row.get(2);
            let status: Option<i32> = row.get(3);
            let claimed_at: i64 = row.get(6);
            let dead = owner.is_some() && renewed < c.stale_before;
            if claimed_at < c.expired_before && (owner.is_none() || dead) {
                // Expired, and not purged yet (another replica's purge is running).
                tx.execute(
                    "UPDATE idempotency_keys SET fingerprint = $2, owner = $3, claimed_at = $4,
                       renewed_at = $4, status = NULL, headers = NULL, body = NULL
                     WHERE key = $1",
                    &[&c.key, &c.fingerprint, &c.owner, &c.now],
                )?;
                Claimed::Reserved
            } else if fingerprint != c.fingerprint {
                Claimed::Mismatch
            } else if dead {
                tx.execute(
                    "UPDATE idempotency_keys SET owner = $2, claimed_at = $3, renewed_at = $3
                     WHERE key = $1",
                    &[&c.key, &c.owner, &c.now],
                )?;
                Claimed::Reserved
            } else if owner.is_some() {
                Claimed::InFlight
            } else {
                let status = status
                    .and_then(|s| u16::try_from(s).ok())
                    .ok_or_else(|| fail("an idempotency key has neither owner nor answer"))?;
                let headers: Option<&str> = row.get(4);
                let body: Option<Vec<u8>> = row.get(5);
                Claimed::Answered(StoredAnswer {
                    status,
                    headers: parse(headers.unwrap_or("[]"))?,
                    body: body.unwrap_or_default(),
                })
            }
        };
        tx.commit()?;
        Ok(claimed)
    }

    fn renew_idempotency_key(&self, key: &str, owner: Uuid, now: i64) -> Result<bool, StoreError> {
        let n = self.conn()?.execute(
            "UPDATE idempotency_keys SET renewed_at = $3 WHERE key = $1 AND owner = $2",
            &[&key, &owner, &now],
        )?;
        Ok(n == 1)
    }

    fn record_idempotent_answer(
        &self,
        key: &str,
        owner: Uuid,
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError> {
        let n = self.conn()?.execute(
            "UPDATE idempotency_keys SET owner = NULL, status = $3, headers = $4, body = $5
             WHERE key = $1 AND owner = $2",
            &[
                &key,
                &owner,
                &i32::from(answer.status),
                &json(&answer.headers)?,
                &answer.body,
            ],
        )?;
        Ok(n == 1)
    }

    fn release_idempotency_key(&self, key: &str, owner: Uuid) -> Result<(), StoreError> {
        self.conn()?.execute(
            "DELETE FROM idempotency_keys WHERE key = $1 AND owner = $2",
            &[&key, &owner],
        )?;
        Ok(())
    }

    fn purge_idempotency_keys(
        &self,
        expired_before: i64,
        stale_before: i64,
    ) -> Result<usize, StoreError> {
        purge_keys(&mut *self.conn()?, expired_before, stale_before)
    }

    fn change_serving(
        &self,
        model: &str,
        update: &ServingUpdate,
    ) -> Result<ServingChanged, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let done = change_serving_in(&mut tx, model, update)?;
        tx.commit()?;
        Ok(done)
    }

    fn submit_sweep(&self, sweep: &SweepRecord, jobs: &[JobRecord]) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        enqueue_in(&mut tx, Some(sweep), &sweep.model, jobs, None)?;
        tx.commit()?;
        Ok(())
    }

    fn delete_sweep(&self, id: Uuid) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        if let Some(sweep) = read_sweep(&mut tx, id, true)? {
            for t in &sweep.trials {
                tx.execute("DELETE FROM jobs WHERE id = $1", &[&t.job_id])?;
                notify(&mut tx, &format!("j {}", t.job_id))?;
            }
            tx.execute("DELETE FROM sweeps WHERE id = $1", &[&id])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn sweep(&self, id: Uuid) -> Result<Option<SweepRecord>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let sweep = read_sweep(&mut tx, id, false)?;
        tx.commit()?;
        Ok(sweep)
    }

    fn sweeps(&self, running_only: bool) -> Result<Vec<SweepRecord>, StoreError> {
        let running = running_only
            .then(|| json(&SweepStatus::Running))
            .transpose()?;
        self.conn()?
            .query(
                "SELECT record FROM sweeps WHERE $1::TEXT IS NULL OR status = $1
                 ORDER BY created_at DESC, id DESC",
                &[&running],
            )?
            .iter()
            .map(|r| parse(r.get(0)))
            .collect()
    }

    fn cancel_sweep(&self, id: Uuid) -> Result<Option<SweepRecord>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let Some(mut sweep) = read_sweep(&mut tx, id, true)? else {
            return Ok(None);
        };
        if sweep.status == SweepStatus::Running && !sweep.cancel_requested {
            sweep.cancel_requested = true;
            upsert_sweep(&mut tx, &sweep)?;
        }
        tx.commit()?;
        Ok(Some(sweep))
    }

    fn end_sweep(
        &self,
        sweep: &SweepRecord,
        pin: Option<u32>,
    ) -> Result<Option<EndedSweep>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        // The row lock orders racing replicas: the second reads the first's end.
        let Some(stored) = read_sweep(&mut tx, sweep.id, true)? else {
            return Ok(None);
        };
        if stored.status != SweepStatus::Running {
            return Ok(None);
        }
        let (sweep, serving) = sweeps::pin_best(sweep, pin, |update| {
            change_serving_in(&mut tx, &sweep.model, update)
        })?;
        upsert_sweep(&mut tx, &sweep)?;
        tx.commit()?;
        Ok(Some(EndedSweep { sweep, serving }))
    }

    fn delete_version(
        &self,
        model: &str,
        version: u32,
    ) -> Result<Option<ServingChange>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let Some((record, versions)) = lock_model(&mut tx, model)? else {
            return Err(StoreError::model_gone(model));
        };
        serving::check_delete(&record, &versions, version)?;
        let change = serving::deleted(&record, &versions, version);
        tx.execute(
            "DELETE FROM versions WHERE model = $1 AND version = $2",
            &[&model, &i64::from(version)],
        )?;
        if let Some(ch) = &change {
            insert_history(&mut tx, model, ch)?;
        }
        notify(&mut tx, &format!("m {model}"))?;
        tx.commit()?;
        Ok(change)
    }

    fn serving_history(&self, model: &str) -> Result<Vec<ServingChange>, StoreError> {
        let rows = self.conn()?.query(
            "SELECT record FROM serving_history WHERE model = $1 ORDER BY seq DESC",
            &[&model],
        )?;
        rows.iter().map(|r| parse(r.get::<_, &str>(0))).collect()
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.simple_query("SELECT 1")?;
        Ok(())
    }

    fn availability(&self) -> Availability {
        self.breaker.availability()
    }

    fn shared(&self) -> Option<&dyn Shared> {
        Some(self)
    }
}

/// A lease of `d` as SQL milliseconds.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Shared for PostgresStore {
    fn replica(&self) -> &str {
        &self.replica
    }

    fn enqueue(
        &self,
        job: &JobRecord,
        input: &JobInput,
        capacity: usize,
    ) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let one = std::slice::from_ref(job);
        enqueue_in(&mut tx, None, &job.model, one, Some((input, capacity)))?;
        tx.commit()?;
        Ok(())
    }

    fn enqueue_sweep(
        &self,
        sweep: &SweepRecord,
        jobs: &[JobRecord],
        input: &JobInput,
        capacity: usize,
    ) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        enqueue_in(
            &mut tx,
            Some(sweep),
            &sweep.model,
            jobs,
            Some((input, capacity)),
        )?;
        tx.commit()?;
        Ok(())
    }

    fn claim(&self, lease: Duration) -> Result<Option<Claim>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let Some(row) = tx.query_opt(
            "SELECT id, record FROM jobs WHERE status = $1 ORDER BY created_at, id
             LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&status(JobStatus::Queued)?],
        )?
        else {
            return Ok(None);
        };
        let id: Uuid = row.get(0);
        let mut job: JobRecord = parse(row.get(1))?;
        job.status = JobStatus::Running;
        job.started_at = Some(OffsetDateTime::now_utc());
        tx.execute(
            "UPDATE jobs SET status = $2, record = $3, owner = $4,
               lease_until = now() + $5 * interval '1 millisecond', cancel_requested = false
             WHERE id = $1",
            &[
                &id,
                &status(JobStatus::Running)?,
                &json(&job)?,
                &self.replica,
                &millis(lease),
            ],
        )?;
        let input = match tx.query_opt(
            "SELECT record, features, targets FROM job_inputs WHERE job = $1",
            &[&id],
        )? {
            Some(r) => Some(JobInput::decode(r.get(0), r.get(1), r.get(2))?),
            None => None,
        };
        notify(&mut tx, &format!("j {id}"))?;
        tx.commit()?;
        Ok(Some(Claim { job, input }))
    }

    fn renew(&self, jobs: &[Uuid], lease: Duration) -> Result<Vec<(Uuid, bool)>, StoreError> {
        let rows = self.conn()?.query(
            "UPDATE jobs SET lease_until = now() + $3 * interval '1 millisecond'
             WHERE owner = $1 AND status = $2 AND id = ANY($4) RETURNING id, cancel_requested",
            &[
                &self.replica,
                &status(JobStatus::Running)?,
                &millis(lease),
                &jobs,
            ],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn reap(&self, mine: bool) -> Result<Vec<Uuid>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let rows = tx.query(
            "SELECT id, record, owner = $2 FROM jobs WHERE status = $1
               AND (lease_until IS NULL OR lease_until < now() OR ($3 AND owner = $2))
             FOR UPDATE SKIP LOCKED",
            &[&status(JobStatus::Running)?, &self.replica, &mine],
        )?;
        let mut ids = Vec::new();
        for r in &rows {
            let mut job: JobRecord = parse(r.get(1))?;
            let restarted: Option<bool> = r.get(2);
            job.status = JobStatus::Failed;
            job.finished_at = Some(OffsetDateTime::now_utc());
            job.error = Some(JobError {
                code: ErrorCode::Interrupted,
                message: if mine && restarted == Some(true) {
                    "the replica that ran the job restarted".into()
                } else {
                    "the replica that ran the job stopped renewing its lease".into()
                },
            });
            upsert_job(&mut tx, &job)?;
            ids.push(job.id);
        }
        tx.commit()?;
        Ok(ids)
    }

    fn cancel(&self, id: Uuid) -> Result<Canceled, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction()?;
        let Some(row) = tx.query_opt("SELECT record FROM jobs WHERE id = $1 FOR UPDATE", &[&id])?
        else {
            return Ok(Canceled::NotFound);
        };
        let mut job: JobRecord = parse(row.get(0))?;
        let outcome = match job.status {
            JobStatus::Queued => {
                job.status = JobStatus::Canceled;
                job.finished_at = Some(OffsetDateTime::now_utc());
                upsert_job(&mut tx, &job)?;
                Canceled::Queued(Box::new(job))
            }
            JobStatus::Running => {
                tx.execute(
                    "UPDATE jobs SET cancel_requested = true WHERE id = $1",
                    &[&id],
                )?;
                notify(&mut tx, &format!("c {id}"))?;
                Canceled::Requested
            }
            s => Canceled::Finished(s),
        };
        tx.commit()?;
        Ok(outcome)
    }

    fn job(&self, id: Uuid) -> Result<Option<JobRecord>, StoreError> {
        self.conn()?
            .query_opt("SELECT record FROM jobs WHERE id = $1", &[&id])?
            .map(|r| parse(r.get(0)))
            .transpose()
    }

    fn epochs_after(&self, id: Uuid, after: u32) -> Result<Vec<EpochReport>, StoreError> {
        self.conn()?
            .query(
                "SELECT record FROM epochs WHERE job = $1 AND epoch > $2 ORDER BY epoch",
                &[&id, &i64::from(after)],
            )?
            .iter()
            .map(|r| parse(r.get(0)))
            .collect()
    }

    fn job_statuses(&self) -> Result<Vec<(Uuid, JobStatus)>, StoreError> {
        self.conn()?
            .query("SELECT id, status FROM jobs", &[])?
            .iter()
            .map(|r| Ok((r.get(0), parse(r.get(1))?)))
            .collect()
    }

    fn model(&self, name: &str) -> Result<Option<(ModelRecord, Vec<u32>)>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.build_transaction().read_only(true).start()?;
        let Some(row) = tx.query_opt("SELECT record FROM models WHERE name = $1", &[&name])? else {
            return Ok(None);
        };
        let m: ModelRecord = parse(row.get(0))?;
        let numbers = tx
            .query(
                "SELECT version FROM versions WHERE model = $1 ORDER BY version",
                &[&name],
            )?
            .iter()
            .filter_map(|r| u32::try_from(r.get::<_, i64>(0)).ok())
            .collect();
        tx.commit()?;
        Ok(Some((m, numbers)))
    }

    fn model_versions(&self) -> Result<Vec<(String, OffsetDateTime, Vec<u32>)>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.build_transaction().read_only(true).start()?;
        let mut out: Vec<(String, OffsetDateTime, Vec<u32>)> = Vec::new();
        for r in tx.query("SELECT record FROM models ORDER BY name", &[])? {
            let m: ModelRecord = parse(r.get(0))?;
            out.push((m.name, m.created_at, Vec::new()));
        }
        let index: HashMap<String, usize> = out
            .iter()
            .enumerate()
            .map(|(i, (n, _, _))| (n.clone(), i))
            .collect();
        for r in tx.query(
            "SELECT model, version FROM versions ORDER BY model, version",
            &[],
        )? {
            if let (Some(&i), Ok(v)) = (
                index.get(r.get::<_, &str>(0)),
                u32::try_from(r.get::<_, i64>(1)),
            ) {
                out[i].2.push(v);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn dataset(&self, id: Uuid) -> Result<Option<DatasetRecord>, StoreError> {
        self.conn()?
            .query_opt("SELECT record FROM datasets WHERE id = $1", &[&id])?
            .map(|r| parse(r.get(0)))
            .transpose()
    }

    fn dataset_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        Ok(self
            .conn()?
            .query("SELECT id FROM datasets", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn listen(&self) -> Box<dyn Changes> {
        Box::new(Feed {
            config: self.config.clone(),
            client: None,
            breaker: self.breaker.clone(),
        })
    }
}

/// The change feed: `LISTEN` on a connection of its own (not the pool's), reconnected after a
/// failure. Blocking; it lives on the thread that reads it.
struct Feed {
    config: postgres::Config,
    client: Option<postgres::Client>,
    /// Told when the feed's connection fails (so does the database, most likely).
    breaker: Arc<Breaker>,
}

impl Feed {
    fn lost(&mut self, e: &postgres::Error) -> StoreError {
        self.client = None;
        let e = unavailable(e);
        self.breaker.trip(&e);
        e
    }
}

impl Changes for Feed {
    fn next(&mut self, timeout: Duration) -> Result<Option<Change>, StoreError> {
        use postgres::fallible_iterator::FallibleIterator;
        let Some(client) = self.client.as_mut() else {
            let mut client = match self.config.connect(NoTls) {
                Ok(c) => c,
                Err(e) => return Err(self.lost(&e)),
            };
            if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
                return Err(self.lost(&e));
            }
            self.client = Some(client);
            return Ok(Some(Change::Resync));
        };
        let got = client.notifications().timeout_iter(timeout).next();
        match got {
            Ok(Some(n)) => Ok(parse_change(n.payload())),
            Ok(None) => {
                // Quiet, or disconnected: a round trip tells them apart (and notices a peer
                // that vanished without closing the connection).
                if let Err(e) = client.simple_query("SELECT 1") {
                    return Err(self.lost(&e));
                }
                Ok(None)
            }
            Err(e) => Err(self.lost(&e)),
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // As with the pool: never close a connection on an async runtime's thread.
        if let Some(c) = self.client.take() {
            let _ = std::thread::Builder::new()
                .name("mlpd-pg-close".into())
                .spawn(move || drop(c));
        }
    }
}

fn parse_change(payload: &str) -> Option<Change> {
    let (kind, id) = payload.split_once(' ')?;
    let uuid = || id.parse::<Uuid>().ok();
    Some(match kind {
        "j" => Change::Job(uuid()?),
        "e" => Change::Epochs(uuid()?),
        "c" => Change::Cancel(uuid()?),
        "d" => Change::Dataset(uuid()?),
        "m" => Change::Model(id.to_string()),
        _ => return None,
    })
}
