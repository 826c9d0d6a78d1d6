//! A real server on an ephemeral port per test, and a client for it.
//!
//! The backend comes from the environment, so the same tests run against both stores:
//! `MLPD_TEST_BACKEND=postgres` runs every server on PostgreSQL at `MLPD_TEST_DATABASE_URL`
//! (one fresh database per data directory, dropped with it); otherwise the embedded store.

use mlpd::{App, Config};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub data_dir: std::path::PathBuf,
    /// The PostgreSQL database of this data directory, when the tests run on PostgreSQL.
    database: Option<String>,
    /// Whether dropping the app removes its data directory (not when a test reuses it).
    owns_dir: bool,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::for_tests();
    let fresh = config.data_dir.clone();
    tweak(&mut config);
    let owns_dir = config.data_dir == fresh;
    let data_dir = config.data_dir.clone();
    let mut database = None;
    if on_postgres() && config.database_url.is_none() {
        let dir = data_dir.clone();
        let (name, url) = tokio::task::spawn_blocking(move || database_of(&dir))
            .await
            .unwrap();
        database = Some(name);
        config.database_url = Some(url.parse().unwrap());
    }
    let app = App::build(config).await.expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        base,
        client: Client::new(),
        data_dir,
        database,
        owns_dir,
        stop: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn post_csv(&self, path: &str, csv: impl Into<reqwest::Body>) -> Response {
        self.client
            .post(self.url(path))
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .expect("request")
    }

    /// Creates a model; panics unless 201.
    pub async fn create_model(&self, name: &str, inputs: usize, layers: Value) -> Value {
        let r = self
            .post(
                "/v1/models",
                &json!({"name": name, "inputs": inputs, "layers": layers}),
            )
            .await;
        expect(r, StatusCode::CREATED).await
    }

    /// Uploads a repo dataset as CSV; returns its id.
    pub async fn upload(&self, file: &str, target: &str) -> String {
        let body = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("datasets")
                .join(file),
        )
        .unwrap();
        let r = self
            .post_csv(&format!("/v1/datasets?target={target}"), body)
            .await;
        expect(r, StatusCode::CREATED).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Starts training; returns the job id.
    pub async fn train(&self, model: &str, body: Value) -> String {
        let r = self.post(&format!("/v1/models/{model}/train"), &body).await;
        expect(r, StatusCode::ACCEPTED).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Polls a job until `pred` holds (30 s at most).
    pub async fn wait_job(&self, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let job: Value = self
                .get(&format!("/v1/jobs/{id}"))
                .await
                .json()
                .await
                .unwrap();
            if pred(&job) {
                return job;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "job never reached the state: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_done(&self, id: &str) -> Value {
        self.wait_job(id, |j| {
            matches!(
                j["status"].as_str(),
                Some("succeeded" | "failed" | "canceled")
            )
        })
        .await
    }

    /// Iris, 4-16-3, trained to completion: (model name, dataset id).
    pub async fn trained_iris(&self, name: &str) -> String {
        self.create_model(
            name,
            4,
            json!([{"units": 16, "activation": "relu"}, {"units": 3, "activation": "softmax"}]),
        )
        .await;
        let ds = self.upload("iris.csv", "species").await;
        let job = self
            .train(
                name,
                json!({"dataset_id": ds, "epochs": 60, "learning_rate": 0.02, "batch_size": 16}),
            )
            .await;
        let done = self.wait_done(&job).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        ds
    }

    /// Stops the server the way a signal would, and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(15), h)
                .await
                .expect("server stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            if let Some(db) = self.database.take() {
                drop_database(db);
            }
        }
    }
}

/// The variable that selects PostgreSQL for the whole suite (`postgres`).
pub const BACKEND_VAR: &str = "MLPD_TEST_BACKEND";
/// The variable with a PostgreSQL server's URL (a role that may create databases).
pub const DATABASE_VAR: &str = "MLPD_TEST_DATABASE_URL";

/// Whether the servers of this test run use PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(BACKEND_VAR).is_ok_and(|b| b == "postgres")
}

/// The PostgreSQL server to test against, if one is configured. With none: `None` for a
/// developer (with a note naming the variable), a failure under `CI=true` or when the suite
/// was asked to run on PostgreSQL.
pub fn postgres_server() -> Option<String> {
    if let Some(url) = std::env::var(DATABASE_VAR).ok().filter(|u| !u.is_empty()) {
        return Some(url);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci && !on_postgres(),
        "{DATABASE_VAR} is not set: the PostgreSQL tests cannot run (CI must run them)"
    );
    // Once, and straight to stderr: the test harness captures `eprintln!` of passing tests.
    static NOTE: std::sync::Once = std::sync::Once::new();
    NOTE.call_once(|| {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "note: PostgreSQL tests not run: set {DATABASE_VAR}=postgres://USER@HOST:PORT/postgres \
             (and {BACKEND_VAR}=postgres to run the whole HTTP suite on it)"
        );
    });
    None
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (url, query) = url
        .split_once('?')
        .map_or((url, None), |(u, q)| (u, Some(q)));
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let base = match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

fn admin_client() -> postgres::Client {
    let url = postgres_server().expect("a PostgreSQL server for the tests");
    postgres::Client::connect(&url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to {DATABASE_VAR}: {e}"))
}

/// A fresh, empty database on the test server, dropped with this value.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let (name, url) = tokio::task::spawn_blocking(|| {
            create_database(&format!("mlpd_test_{}", uuid::Uuid::new_v4().simple()))
        })
        .await
        .unwrap();
        TestDatabase { name, url }
    }

    /// Runs SQL on it.
    pub async fn sql(&self, sql: &str) -> Vec<postgres::Row> {
        let (url, sql) = (self.url.clone(), sql.to_string());
        tokio::task::spawn_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.query(&sql, &[]).unwrap()
        })
        .await
        .unwrap()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        drop_database(std::mem::take(&mut self.name));
    }
}

/// The database that belongs to a data directory (created on first use); its name and URL.
fn database_of(dir: &std::path::Path) -> (String, String) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    create_database(&format!("mlpd_test_{:016x}", h.finish()))
}

fn create_database(name: &str) -> (String, String) {
    let mut c = admin_client();
    if let Err(e) = c.batch_execute(&format!("CREATE DATABASE {name}")) {
        // Another app of the same data directory created it: reuse it.
        assert_eq!(
            e.code(),
            Some(&postgres::error::SqlState::DUPLICATE_DATABASE),
            "cannot create a test database: {e}"
        );
    }
    let url = with_database(&postgres_server().unwrap(), name);
    (name.to_string(), url)
}

/// Drops a test database (connections still open are ended). Safe on the runtime: it runs on
/// its own thread. The server may still be stopping, its pool reconnecting: new connections are
/// refused first, and the drop is retried.
pub fn drop_database(name: String) {
    let _ = std::thread::spawn(move || {
        let mut c = admin_client();
        let _ = c.batch_execute(&format!(
            "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"
        ));
        let mut last = None;
        for _ in 0..20 {
            match c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")) {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(e) = last {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "could not drop test database {name}: {e}"
            );
        }
    })
    .join();
}

/// The environment that points a spawned `mlpd` binary at the store of `dir`: nothing for the
/// embedded store (it uses `--data-dir`), the database's URL on PostgreSQL.
pub fn store_env(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    if !on_postgres() {
        return Vec::new();
    }
    let dir = dir.to_path_buf();
    let (_, url) = std::thread::spawn(move || database_of(&dir))
        .join()
        .unwrap();
    vec![("MLPD_DATABASE_URL", url)]
}

/// Removes a data directory that tests reused across restarts, and its database.
pub fn remove_store(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    if on_postgres() {
        let dir = dir.to_path_buf();
        let (name, _) = std::thread::spawn(move || database_of(&dir))
            .join()
            .unwrap();
        drop_database(name);
    }
}

/// For the few tests of the embedded store's own file (its size cap, its file sizes): true,
/// with a note saying why, when the suite runs on PostgreSQL.
pub fn embedded_only(what: &str) -> bool {
    if on_postgres() {
        eprintln!("not run on PostgreSQL (a property of the embedded store's file): {what}");
    }
    on_postgres()
}

/// Asserts the status and returns the JSON body.
pub async fn expect(r: Response, status: StatusCode) -> Value {
    let got = r.status();
    let text = r.text().await.unwrap_or_default();
    assert_eq!(got, status, "body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// Asserts an error response: status, JSON error shape and code; returns the error object.
pub async fn expect_error(r: Response, status: StatusCode, code: &str) -> Value {
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = expect(r, status).await;
    assert!(
        ct.starts_with("application/json"),
        "content type {ct}: {body}"
    );
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"].clone()
}

/// A Server-Sent Events reader over a streaming response.
pub struct Sse {
    resp: Response,
    buf: String,
}

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

impl Sse {
    pub async fn open(app: &TestApp, path: &str, last_event_id: Option<u32>) -> Sse {
        Self::open_url(&app.client, &app.url(path), last_event_id).await
    }

    /// [`Sse::open`] on any server.
    pub async fn open_url(client: &Client, url: &str, last_event_id: Option<u32>) -> Sse {
        let mut req = client.get(url);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped); `None` when the stream closes.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a comment (keep-alive)
                }
                return Some(SseEvent {
                    event,
                    id,
                    data: serde_json::from_str(&data).expect("event data is JSON"),
                });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.resp.chunk())
                .await
                .expect("event in time")
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Every event until the stream closes.
    pub async fn collect(mut self) -> Vec<SseEvent> {
        let mut v = Vec::new();
        while let Some(e) = self.next().await {
            v.push(e);
        }
        v
    }
}
