//! The embedded store: one SQLite database (`mlpd.sqlite3`) in the data directory, WAL journal,
//! `synchronous = FULL`, so a commit survives kill -9 and power loss alike. Structured values
//! are JSON text (inspectable with `sqlite3`); dataset contents are blobs of little-endian
//! 4-byte words, column after column (f32 values with NaN for missing, or u32 level codes with
//! `u32::MAX` for missing, as the record's column list says), streamed in and out in chunks so
//! no second full copy is made. Datasets stored before typed columns (an empty column list)
//! hold a row-major f32 feature matrix and f32 targets or u32 class indices; they still load.

use super::cells::{column_words, table_from_words};
use super::{
    Claimed, DatasetRecord, EndedSweep, EvaluationRecord, IdempotencyClaim, JobRecord, ModelRecord,
    Published, ServingChange, ServingChanged, ServingUpdate, Snapshot, Store, StoreError,
    StoredAnswer, SweepRecord, VersionMeta, VersionRecord, retention, serving, sweeps,
};
use crate::error::ErrorCode;
use crate::nn::{Dataset, EpochReport, Label};
use crate::records::{JobStatus, SweepStatus};
use crate::tabular::{Column, Table};
use ndarray::Array2;
use rusqlite::blob::ZeroBlob;
use rusqlite::{Connection, MAIN_DB, OptionalExtension, Transaction, params};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;
use uuid::Uuid;

/// 2: serving history (pins and aliases live in the model records). 3: sweeps.
const SCHEMA_VERSION: i64 = 3;
const CHUNK: usize = 1 << 20;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
  name TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
  model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
  version INTEGER NOT NULL,
  record TEXT NOT NULL,
  PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS datasets (
  id TEXT PRIMARY KEY, record TEXT NOT NULL, features BLOB NOT NULL, targets BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, status TEXT NOT NULL, finished_at TEXT, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
  job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  epoch INTEGER NOT NULL,
  record TEXT NOT NULL,
  PRIMARY KEY (job, epoch));
CREATE TABLE IF NOT EXISTS evaluations (
  id TEXT PRIMARY KEY,
  model TEXT NOT NULL,
  version INTEGER NOT NULL,
  record TEXT NOT NULL,
  FOREIGN KEY (model, version) REFERENCES versions(model, version) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS evaluations_of_version ON evaluations (model, version);
CREATE TABLE IF NOT EXISTS idempotency_keys (
  key TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL,
  owner TEXT,
  claimed_at INTEGER NOT NULL,
  renewed_at INTEGER NOT NULL,
  status INTEGER,
  headers TEXT,
  body BLOB);
CREATE INDEX IF NOT EXISTS idempotency_keys_claimed ON idempotency_keys (claimed_at);
CREATE TABLE IF NOT EXISTS serving_history (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
  record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS serving_history_of_model ON serving_history (model, seq);
CREATE TABLE IF NOT EXISTS sweeps (
  id TEXT PRIMARY KEY, created_at TEXT NOT NULL, status TEXT NOT NULL, record TEXT NOT NULL);
";

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn fail(e: impl std::fmt::Display) -> StoreError {
    crate::metrics::store_error("failed");
    StoreError::Failed(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => {
                crate::metrics::store_error("full");
                StoreError::Full
            }
            _ => fail(e),
        }
    }
}

/// A unique-name violation is the caller's conflict (409), not a storage failure.
fn name_taken(e: rusqlite::Error, name: &str) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(
            ErrorCode::ModelExists,
            format!("a model named {name:?} exists"),
        ),
        _ => e.into(),
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        fail(e)
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    Ok(serde_json::to_string(v)?)
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    Ok(serde_json::from_str(s)?)
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `dir`, optionally capped at `max_bytes`
    /// (writes beyond it fail with [`StoreError::Full`], as on a full disk).
    ///
    /// # Errors
    /// The directory cannot be created or written, or the database cannot be opened or is from
    /// a newer version of mlpd.
    pub fn open(dir: &Path, max_bytes: Option<u64>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            fail(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let conn = Connection::open(dir.join("mlpd.sqlite3")).map_err(|e| {
            fail(format!(
                "cannot open the database in {}: {e}",
                dir.display()
            ))
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Deleted rows give their pages back to the file system (set before the first table,
        // so it takes effect on new databases).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // After a checkpoint the WAL shrinks back to this, instead of keeping the size of the
        // largest transaction (a dataset) forever.
        conn.pragma_update(None, "journal_size_limit", 64i64 << 20)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| fail(format!("cannot write to {}: {e}", dir.display())))?;
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match version.map(|v| v.parse::<i64>().unwrap_or(i64::MAX)) {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(fail(format!(
                    "the database has schema version {v}; this mlpd reads up to {SCHEMA_VERSION}"
                )));
            }
            Some(v) if v < SCHEMA_VERSION => {
                // The tables above were created if missing; older records read as they are.
                conn.execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(_) => {}
        }
        if let Some(max) = max_bytes {
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let pages = i64::try_from(max).unwrap_or(i64::MAX) / page.max(1);
            conn.pragma_update(None, "max_page_count", pages.max(1))?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// After large writes or deletes: return free pages to the file system and fold the WAL into
/// the database, so the files hold one copy of the data. Best effort: the data is safe either way.
fn compact(conn: &Connection) {
    // Here each execution of `incremental_vacuum` frees a single page whatever its argument, so
    // it runs once per free page, all in one transaction (one sync, not one per page).
    let vacuum = || -> rusqlite::Result<()> {
        let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        if free == 0 {
            return Ok(());
        }
        conn.execute_batch("BEGIN")?;
        let mut stmt = conn.prepare_cached("PRAGMA incremental_vacuum(1)")?;
        for _ in 0..free {
            let mut rows = stmt.query([])?;
            while rows.next()?.is_some() {}
        }
        drop(stmt);
        conn.execute_batch("COMMIT")
    };
    if let Err(e) = vacuum() {
        let _ = conn.execute_batch("ROLLBACK");
        tracing::warn!(error = %e, "incremental vacuum failed");
    }
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
}

/// Writes 4-byte little-endian words into a new zero-filled blob of the given row and column,
/// in chunks.
fn write_blob(
    tx: &Transaction,
    column: &str,
    rowid: i64,
    words: impl Iterator<Item = [u8; 4]>,
) -> Result<(), StoreError> {
    let mut blob = tx.blob_open(MAIN_DB, "datasets", column, rowid, false)?;
    let mut buf = Vec::with_capacity(CHUNK);
    for w in words {
        buf.extend_from_slice(&w);
        if buf.len() >= CHUNK {
            blob.write_all(&buf).map_err(fail)?;
            buf.clear();
        }
    }
    blob.write_all(&buf).map_err(fail)?;
    Ok(())
}

/// Reads a blob of 4-byte little-endian words, converting each with `word`.
fn read_blob<T>(
    conn: &Connection,
    column: &str,
    rowid: i64,
    word: impl Fn([u8; 4]) -> T,
) -> Result<Vec<T>, StoreError> {
    let mut blob = conn.blob_open(MAIN_DB, "datasets", column, rowid, true)?;
    let mut out = Vec::with_capacity(blob.len() / 4);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = blob.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        out.extend(
            buf[..n]
                .chunks_exact(4)
                .map(|c| word([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok(out)
}

/// A dataset stored before typed columns: row-major f32 features, f32 targets or u32 class
/// indices into the record's classes.
fn load_legacy(conn: &Connection, rowid: i64, meta: &DatasetRecord) -> Result<Table, StoreError> {
    let features = read_blob(conn, "features", rowid, f32::from_le_bytes)?;
    let x = Array2::from_shape_vec((meta.rows, meta.input_width), features).map_err(fail)?;
    let data = match (&meta.classes, meta.target_width) {
        (Some(set), _) => {
            let indices = read_blob(conn, "targets", rowid, u32::from_le_bytes)?;
            let labels: Vec<Label> = indices
                .iter()
                .map(|&i| {
                    set.get(i as usize)
                        .ok_or_else(|| fail("a stored class index is out of range"))
                })
                .collect::<Result<_, _>>()?;
            Dataset::classification(x, &labels).map_err(fail)?
        }
        (None, Some(w)) => {
            let y = read_blob(conn, "targets", rowid, f32::from_le_bytes)?;
            Dataset::regression(x, Array2::from_shape_vec((meta.rows, w), y).map_err(fail)?)
                .map_err(fail)?
        }
        (None, None) => return Err(fail("a stored dataset has neither classes nor targets")),
    };
    Ok(crate::tabular::table_of(&data))
}

fn upsert_job(tx: &Connection, job: &JobRecord) -> Result<(), StoreError> {
    let status = json(&job.status)?;
    let finished = job
        .finished_at
        .map(|t| t.unix_timestamp_nanos().to_string());
    tx.execute(
        "INSERT INTO jobs (id, status, finished_at, record) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at, record = excluded.record",
        params![job.id.to_string(), status, finished, json(job)?],
    )?;
    Ok(())
}

fn insert_epochs(tx: &Connection, job: Uuid, epochs: &[EpochReport]) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached("INSERT OR REPLACE INTO epochs (job, epoch, record) VALUES (?1, ?2, ?3)")?;
    let id = job.to_string();
    for e in epochs {
        stmt.execute(params![id, e.epoch, json(e)?])?;
    }
    Ok(())
}

/// Queued or running jobs whose record has `value` at the JSON `path`.
fn active_jobs(tx: &Connection, path: &str, value: &str) -> Result<i64, StoreError> {
    Ok(tx.query_row(
        "SELECT COUNT(*) FROM jobs WHERE status IN (?1, ?2) AND json_extract(record, ?3) = ?4",
        params![
            json(&JobStatus::Queued)?,
            json(&JobStatus::Running)?,
            path,
            value
        ],
        |r| r.get(0),
    )?)
}

fn count(tx: &Connection, table: &str) -> Result<usize, StoreError> {
    let n: i64 = tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Inserts a model unless `max` (0: no limit) are stored; call inside a transaction.
fn insert_model(tx: &Connection, m: &ModelRecord, max: usize) -> Result<(), StoreError> {
    if max > 0 && count(tx, "models")? >= max {
        return Err(StoreError::limit_reached("models", max));
    }
    tx.execute(
        "INSERT INTO models (name, record) VALUES (?1, ?2)",
        params![m.name, json(m)?],
    )
    .map_err(|e| name_taken(e, &m.name))?;
    Ok(())
}

fn purge_keys(
    tx: &Connection,
    expired_before: i64,
    stale_before: i64,
) -> Result<usize, StoreError> {
    Ok(tx.execute(
        "DELETE FROM idempotency_keys WHERE claimed_at < ?1 AND (owner IS NULL OR renewed_at < ?2)",
        params![expired_before, stale_before],
    )?)
}

/// A stored key: (fingerprint, owner, renewed_at, status, headers, body).
type KeyRow = (
    String,
    Option<String>,
    i64,
    Option<u16>,
    Option<String>,
    Option<Vec<u8>>,
);

/// The model's record and version numbers, inside the caller's (write) transaction.
fn model_and_versions(
    tx: &Connection,
    model: &str,
) -> Result<Option<(ModelRecord, Vec<u32>)>, StoreError> {
    let record: Option<String> = tx
        .query_row("SELECT record FROM models WHERE name = ?1", [model], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(record) = record else {
        return Ok(None);
    };
    let mut versions = Vec::new();
    let mut stmt = tx.prepare_cached("SELECT version FROM versions WHERE model = ?1")?;
    for r in stmt.query_map([model], |r| r.get::<_, u32>(0))? {
        versions.push(r?);
    }
    Ok(Some((parse(&record)?, versions)))
}

/// Appends a history entry, keeping the model's newest [`serving::HISTORY_PER_MODEL`].
fn insert_history(tx: &Connection, model: &str, c: &ServingChange) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO serving_history (model, record) VALUES (?1, ?2)",
        params![model, json(c)?],
    )?;
    let seqs: Vec<i64> = tx
        .prepare_cached("SELECT seq FROM serving_history WHERE model = ?1")?
        .query_map([model], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for seq in retention::excess_history(seqs, serving::HISTORY_PER_MODEL) {
        tx.execute("DELETE FROM serving_history WHERE seq = ?1", [seq])?;
    }
    Ok(())
}

/// [`Store::change_serving`] inside the caller's transaction.
fn change_serving_in(
    tx: &Connection,
    model: &str,
    update: &ServingUpdate,
) -> Result<ServingChanged, StoreError> {
    let Some((mut record, versions)) = model_and_versions(tx, model)? else {
        return Err(StoreError::model_gone(model));
    };
    let change = serving::apply(&mut record, &versions, update)?;
    if let Some(c) = &change {
        tx.execute(
            "UPDATE models SET record = ?2 WHERE name = ?1",
            params![model, json(&record)?],
        )?;
        insert_history(tx, model, c)?;
    }
    Ok(ServingChanged {
        model: record,
        change,
    })
}

/// Records `queued` jobs of `model` (with `sweep`, if one groups them) unless the model is gone;
/// call inside a transaction.
fn submit_in(
    tx: &Connection,
    sweep: Option<&SweepRecord>,
    model: &str,
    jobs: &[JobRecord],
) -> Result<(), StoreError> {
    let exists: Option<i64> = tx
        .query_row("SELECT 1 FROM models WHERE name = ?1", [model], |r| {
            r.get(0)
        })
        .optional()?;
    if exists.is_none() {
        return Err(StoreError::model_gone(model));
    }
    if let Some(sweep) = sweep {
        upsert_sweep(tx, sweep)?;
    }
    for job in jobs {
        upsert_job(tx, job)?;
    }
    Ok(())
}

fn upsert_sweep(tx: &Connection, sweep: &SweepRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sweeps (id, created_at, status, record) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET status = excluded.status, record = excluded.record",
        params![
            sweep.id.to_string(),
            sweep.created_at.unix_timestamp_nanos().to_string(),
            json(&sweep.status)?,
            json(sweep)?
        ],
    )?;
    Ok(())
}

fn read_sweep(tx: &Connection, id: Uuid) -> Result<Option<SweepRecord>, StoreError> {
    let record: Option<String> = tx
        .query_row(
            "SELECT record FROM sweeps WHERE id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    record.as_deref().map(parse).transpose()
}

impl Store for SqliteStore {
    fn version(&self, model: &str, version: u32) -> Result<Option<VersionRecord>, StoreError> {
        let record: Option<String> = self
            .conn()
            .query_row(
                "SELECT record FROM versions WHERE model = ?1 AND version = ?2",
                params![model, version],
                |r| r.get(0),
            )
            .optional()?;
        record.as_deref().map(parse).transpose()
    }

    fn version_meta(&self, model: &str, version: u32) -> Result<Option<VersionMeta>, StoreError> {
        let record: Option<String> = self
            .conn()
            .query_row(
                "SELECT json_remove(record, '$.trained.network') FROM versions \
                 WHERE model = ?1 AND version = ?2",
                params![model, version],
                |r| r.get(0),
            )
            .optional()?;
        record.as_deref().map(parse).transpose()
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let conn = self.conn();
        let mut snap = Snapshot::default();
        let mut stmt = conn.prepare("SELECT record FROM models ORDER BY name")?;
        for r in stmt.query_map([], |r| r.get::<_, String>(0))? {
            snap.models.push(parse(&r?)?);
        }
        // Without the weights (SQLite drops them from the JSON): they are loaded on demand.
        let mut stmt = conn.prepare(
            "SELECT json_remove(record, '$.trained.network') FROM versions ORDER BY model, version",
        )?;
        for r in stmt.query_map([], |r| r.get::<_, String>(0))? {
            snap.versions.push(parse(&r?)?);
        }
        let mut stmt = conn.prepare("SELECT record FROM datasets")?;
        for r in stmt.query_map([], |r| r.get::<_, String>(0))? {
            snap.datasets.push(parse(&r?)?);
        }
        let mut stmt = conn.prepare("SELECT id, record FROM jobs")?;
        let mut epochs_of =
            conn.prepare("SELECT record FROM epochs WHERE job = ?1 ORDER BY epoch")?;
        for r in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (id, record) = r?;
            let job: JobRecord = parse(&record)?;
            let mut epochs = Vec::new();
            for e in epochs_of.query_map([id], |r| r.get::<_, String>(0))? {
                epochs.push(parse(&e?)?);
            }
            snap.jobs.push((job, epochs));
        }
        Ok(snap)
    }

    fn insert_model(&self, m: &ModelRecord, max: usize) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_model(&tx, m, max)?;
        tx.commit()?;
        Ok(())
    }

    fn delete_model(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if active_jobs(&tx, "$.model", name)? > 0 {
            return Err(StoreError::model_busy(name));
        }
        tx.execute("DELETE FROM models WHERE name = ?1", [name])?;
        tx.commit()?;
        compact(&conn);
        Ok(())
    }

    fn insert_dataset(
        &self,
        meta: &DatasetRecord,
        data: &Table,
        max: usize,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if max > 0 && count(&tx, "datasets")? >= max {
            return Err(StoreError::limit_reached("datasets", max));
        }
        let words = |cols: &[Column]| (cols.len() * data.rows() * 4) as u64;
        tx.execute(
            "INSERT INTO datasets (id, record, features, targets) VALUES (?1, ?2, ?3, ?4)",
            params![
                meta.id.to_string(),
                json(meta)?,
                ZeroBlob(words(data.features())),
                ZeroBlob(words(data.targets()))
            ],
        )?;
        let rowid = tx.last_insert_rowid();
        write_blob(&tx, "features", rowid, column_words(data.features()))?;
        write_blob(&tx, "targets", rowid, column_words(data.targets()))?;
        tx.commit()?;
        compact(&conn);
        Ok(())
    }

    fn load_dataset(&self, id: Uuid) -> Result<Option<Table>, StoreError> {
        let conn = self.conn();
        let row: Option<(i64, String)> = conn
            .query_row(
                "SELECT rowid, record FROM datasets WHERE id = ?1",
                [id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((rowid, record)) = row else {
            return Ok(None);
        };
        let meta: DatasetRecord = parse(&record)?;
        if meta.columns.is_empty() {
            return load_legacy(&conn, rowid, &meta).map(Some);
        }
        let features = read_blob(&conn, "features", rowid, u32::from_le_bytes)?;
        let targets = read_blob(&conn, "targets", rowid, u32::from_le_bytes)?;
        table_from_words(&meta, &features, &targets, |m: &str| fail(m)).map(Some)
    }

    fn delete_dataset(&self, id: Uuid) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if active_jobs(&tx, "$.dataset_id", &id.to_string())? > 0 {
            return Err(StoreError::dataset_in_use(id));
        }
        tx.execute("DELETE FROM datasets WHERE id = ?1", [id.to_string()])?;
        tx.commit()?;
        compact(&conn);
        Ok(())
    }

    fn submit_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        submit_in(&tx, None, &job.model, std::slice::from_ref(job))?;
        tx.commit()?;
        Ok(())
    }

    fn save_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        upsert_job(&self.conn(), job)
    }

    fn delete_job(&self, id: Uuid) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM jobs WHERE id = ?1", [id.to_string()])?;
        Ok(())
    }

    fn import_model(
        &self,
        m: &ModelRecord,
        v: &VersionRecord,
        max: usize,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_model(&tx, m, max)?;
        tx.execute(
            "INSERT INTO versions (model, version, record) VALUES (?1, ?2, ?3)",
            params![v.model, v.version, json(v)?],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn append_epochs(&self, job: Uuid, epochs: &[EpochReport]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_epochs(&tx, job, epochs)?;
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
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let record: Option<String> = tx
            .query_row(
                "SELECT record FROM models WHERE name = ?1",
                [&v.model],
                |r| r.get(0),
            )
            .optional()?;
        let Some(record) = record else {
            return Err(StoreError::Gone);
        };
        let mut model: ModelRecord = parse(&record)?;
        let before: Vec<u32> = tx
            .prepare("SELECT version FROM versions WHERE model = ?1")?
            .query_map([&v.model], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let newest: Option<u32> = tx.query_row(
            "SELECT MAX(version) FROM versions WHERE model = ?1",
            [&v.model],
            |r| r.get(0),
        )?;
        v.version = model.next_version.max(newest.map_or(1, |n| n + 1));
        job.model_version = Some(v.version);
        model.next_version = v.version + 1;
        tx.execute(
            "UPDATE models SET record = ?2 WHERE name = ?1",
            params![v.model, json(&model)?],
        )?;
        tx.execute(
            "INSERT INTO versions (model, version, record) VALUES (?1, ?2, ?3)",
            params![v.model, v.version, json(v)?],
        )?;
        insert_epochs(&tx, job.id, epochs)?;
        upsert_job(&tx, job)?;
        let mut all = Vec::new();
        {
            let mut stmt = tx.prepare("SELECT version FROM versions WHERE model = ?1")?;
            for r in stmt.query_map([&v.model], |r| r.get::<_, u32>(0))? {
                all.push(r?);
            }
        }
        if let Some(c) = serving::published(&model, &before, v.version, job.id) {
            insert_history(&tx, &v.model, &c)?;
        }
        let pruned = retention::excess_versions(all, keep, &model.protected());
        for p in &pruned {
            tx.execute(
                "DELETE FROM versions WHERE model = ?1 AND version = ?2",
                params![v.model, p],
            )?;
        }
        tx.commit()?;
        Ok(Published {
            version: v.version,
            pruned,
            model,
        })
    }

    fn prune_jobs(&self, keep: usize) -> Result<Vec<Uuid>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut finished = Vec::new();
        {
            let mut stmt = tx.prepare(
                "SELECT CAST(finished_at AS INTEGER), id FROM jobs WHERE finished_at IS NOT NULL",
            )?;
            for r in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
                let (at, id) = r?;
                if let Ok(id) = Uuid::parse_str(&id) {
                    finished.push((at, id));
                }
            }
        }
        let ids = retention::excess_jobs(finished, keep);
        for id in &ids {
            tx.execute("DELETE FROM jobs WHERE id = ?1", [id.to_string()])?;
        }
        tx.commit()?;
        if !ids.is_empty() {
            compact(&conn);
        }
        Ok(ids)
    }

    fn insert_evaluation(&self, e: &EvaluationRecord, keep: usize) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM versions WHERE model = ?1 AND version = ?2",
                params![e.model, e.version],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !exists {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO evaluations (id, model, version, record) VALUES (?1, ?2, ?3, ?4)",
            params![e.id.to_string(), e.model, e.version, json(e)?],
        )?;
        // Insertion order is rowid order.
        let listed: Vec<(i64, String)> = tx
            .prepare("SELECT rowid, id FROM evaluations WHERE model = ?1 AND version = ?2")?
            .query_map(params![e.model, e.version], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let listed = listed
            .into_iter()
            .filter_map(|(seq, id)| Uuid::parse_str(&id).ok().map(|id| (seq, id)));
        for id in retention::excess_evaluations(listed.collect(), keep) {
            tx.execute("DELETE FROM evaluations WHERE id = ?1", [id.to_string()])?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn evaluations(&self, model: &str, version: u32) -> Result<Vec<EvaluationRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT record FROM evaluations WHERE model = ?1 AND version = ?2 ORDER BY rowid DESC",
        )?;
        let mut out = Vec::new();
        for r in stmt.query_map(params![model, version], |r| r.get::<_, String>(0))? {
            out.push(parse(&r?)?);
        }
        Ok(out)
    }

    fn claim_idempotency_key(&self, c: &IdempotencyClaim) -> Result<Claimed, StoreError> {
        let mut conn = self.conn();
        // IMMEDIATE: the write lock from the start, so two connections to one file (two
        // processes) cannot both read "absent".
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        purge_keys(&tx, c.expired_before, c.stale_before)?;
        let row: Option<KeyRow> = tx
            .query_row(
                "SELECT fingerprint, owner, renewed_at, status, headers, body
                 FROM idempotency_keys WHERE key = ?1",
                [&c.key],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .optional()?;
        let owner = c.owner.to_string();
        let claimed = match row {
            None => {
                tx.execute(
                    "INSERT INTO idempotency_keys (key, fingerprint, owner, claimed_at, renewed_at)
                     VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![c.key, c.fingerprint, owner, c.now],
                )?;
                Claimed::Reserved
            }
            Some((fingerprint, _, _, _, _, _)) if fingerprint != c.fingerprint => Claimed::Mismatch,
            Some((_, Some(_), renewed, _, _, _)) if renewed < c.stale_before => {
                tx.execute(
                    "UPDATE idempotency_keys SET owner = ?2, claimed_at = ?3, renewed_at = ?3
                     WHERE key = ?1",
                    params![c.key, owner, c.now],
                )?;
                Claimed::Reserved
            }
            Some((_, Some(_), _, _, _, _)) => Claimed::InFlight,
            Some((_, None, _, Some(status), headers, body)) => Claimed::Answered(StoredAnswer {
                status,
                headers: parse(headers.as_deref().unwrap_or("[]"))?,
                body: body.unwrap_or_default(),
            }),
            Some((_, None, _, None, _, _)) => {
                return Err(fail("an idempotency key has neither owner nor answer"));
            }
        };
        tx.commit()?;
        Ok(claimed)
    }

    fn renew_idempotency_key(&self, key: &str, owner: Uuid, now: i64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE idempotency_keys SET renewed_at = ?3 WHERE key = ?1 AND owner = ?2",
            params![key, owner.to_string(), now],
        )?;
        Ok(n == 1)
    }

    fn record_idempotent_answer(
        &self,
        key: &str,
        owner: Uuid,
        answer: &StoredAnswer,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE idempotency_keys SET owner = NULL, status = ?3, headers = ?4, body = ?5
             WHERE key = ?1 AND owner = ?2",
            params![
                key,
                owner.to_string(),
                answer.status,
                json(&answer.headers)?,
                answer.body
            ],
        )?;
        Ok(n == 1)
    }

    fn release_idempotency_key(&self, key: &str, owner: Uuid) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM idempotency_keys WHERE key = ?1 AND owner = ?2",
            params![key, owner.to_string()],
        )?;
        Ok(())
    }

    fn purge_idempotency_keys(
        &self,
        expired_before: i64,
        stale_before: i64,
    ) -> Result<usize, StoreError> {
        purge_keys(&self.conn(), expired_before, stale_before)
    }

    fn change_serving(
        &self,
        model: &str,
        update: &ServingUpdate,
    ) -> Result<ServingChanged, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let done = change_serving_in(&tx, model, update)?;
        tx.commit()?;
        Ok(done)
    }

    fn delete_version(
        &self,
        model: &str,
        version: u32,
    ) -> Result<Option<ServingChange>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some((record, versions)) = model_and_versions(&tx, model)? else {
            return Err(StoreError::model_gone(model));
        };
        serving::check_delete(&record, &versions, version)?;
        let change = serving::deleted(&record, &versions, version);
        tx.execute(
            "DELETE FROM versions WHERE model = ?1 AND version = ?2",
            params![model, version],
        )?;
        if let Some(c) = &change {
            insert_history(&tx, model, c)?;
        }
        tx.commit()?;
        compact(&conn);
        Ok(change)
    }

    fn serving_history(&self, model: &str) -> Result<Vec<ServingChange>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT record FROM serving_history WHERE model = ?1 ORDER BY seq DESC")?;
        let mut out = Vec::new();
        for r in stmt.query_map([model], |r| r.get::<_, String>(0))? {
            out.push(parse(&r?)?);
        }
        Ok(out)
    }

    fn submit_sweep(&self, sweep: &SweepRecord, jobs: &[JobRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        submit_in(&tx, Some(sweep), &sweep.model, jobs)?;
        tx.commit()?;
        Ok(())
    }

    fn delete_sweep(&self, id: Uuid) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some(sweep) = read_sweep(&tx, id)? {
            for t in &sweep.trials {
                tx.execute("DELETE FROM jobs WHERE id = ?1", [t.job_id.to_string()])?;
            }
            tx.execute("DELETE FROM sweeps WHERE id = ?1", [id.to_string()])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn sweep(&self, id: Uuid) -> Result<Option<SweepRecord>, StoreError> {
        read_sweep(&self.conn(), id)
    }

    fn sweeps(&self, running_only: bool) -> Result<Vec<SweepRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT record FROM sweeps WHERE ?1 IS NULL OR status = ?1
             ORDER BY CAST(created_at AS INTEGER) DESC, id DESC",
        )?;
        let running = running_only
            .then(|| json(&SweepStatus::Running))
            .transpose()?;
        let rows: Vec<String> = stmt
            .query_map([running], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        rows.iter().map(|r| parse(r)).collect()
    }

    fn cancel_sweep(&self, id: Uuid) -> Result<Option<SweepRecord>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(mut sweep) = read_sweep(&tx, id)? else {
            return Ok(None);
        };
        if sweep.status == SweepStatus::Running && !sweep.cancel_requested {
            sweep.cancel_requested = true;
            upsert_sweep(&tx, &sweep)?;
        }
        tx.commit()?;
        Ok(Some(sweep))
    }

    fn end_sweep(
        &self,
        sweep: &SweepRecord,
        pin: Option<u32>,
    ) -> Result<Option<EndedSweep>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(stored) = read_sweep(&tx, sweep.id)? else {
            return Ok(None);
        };
        if stored.status != SweepStatus::Running {
            return Ok(None);
        }
        let (sweep, serving) = sweeps::pin_best(sweep, pin, |update| {
            change_serving_in(&tx, &sweep.model, update)
        })?;
        upsert_sweep(&tx, &sweep)?;
        tx.commit()?;
        Ok(Some(EndedSweep { sweep, serving }))
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}
