//! PostgreSQL stopped and started under a running server: predictions keep being answered,
//! writes answer 503 `store_unavailable` with `Retry-After` at once, `/ready` says why it is not
//! ready, a job training meanwhile ends cleanly, and once the database is back the same server
//! (not restarted) accepts writes again, with everything acknowledged before still there.
//!
//! The test machine's PostgreSQL is shared, so it is never stopped: the server reaches it
//! through a TCP proxy in the test, and "stopping the database" is cutting the proxy (every
//! connection dropped, new ones refused), "starting" it listening again on the same port.
//!
//! These tests need `MLPD_TEST_DATABASE_URL` (see `postgres.rs`).

use super::helpers::{TestApp, TestDatabase, expect, expect_error, postgres_server, spawn_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The job lease the server runs with: short, so that the job gives up during the cut.
const LEASE_MS: u64 = 2000;

/// A TCP proxy to the database that can be cut and restored.
struct Proxy {
    port: u16,
    upstream: SocketAddr,
    accept: Option<JoinHandle<()>>,
    /// Every proxied connection, aborted (its sockets closed) by a cut.
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut p = Proxy {
            port: listener.local_addr().unwrap().port(),
            upstream,
            accept: None,
            links: Arc::default(),
        };
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: TcpListener) {
        let (upstream, links) = (self.upstream, self.links.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                links.lock().unwrap().push(link);
            }
        }));
    }

    /// The database "stops": the port refuses connections, and every open one is closed.
    async fn cut(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
            let _ = a.await;
        }
        let links: Vec<_> = std::mem::take(&mut *self.links.lock().unwrap());
        for l in &links {
            l.abort();
        }
        for l in links {
            let _ = l.await;
        }
    }

    /// The database "starts" again on the same port.
    async fn restore(&mut self) {
        let t = Instant::now();
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        t.elapsed() < Duration::from_secs(5),
                        "cannot listen again: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.serve(listener);
    }
}

/// The test server's address, and its URL for database `db` through the proxy on `port`.
async fn through_proxy(url: &str, db: &str) -> (SocketAddr, impl Fn(u16) -> String + use<>) {
    let c: postgres::Config = url.parse().unwrap();
    let host = match c.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        other => panic!("the outage test needs PostgreSQL over TCP, not {other:?}"),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let (user, password, db) = (
        c.get_user().unwrap_or("postgres").to_string(),
        c.get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        db.to_string(),
    );
    let proxied = move |port: u16| {
        let mut s = format!("host=127.0.0.1 port={port} user='{user}' dbname='{db}'");
        if let Some(p) = &password {
            s.push_str(&format!(" password='{p}'"));
        }
        s
    };
    (upstream, proxied)
}

async fn create(app: &TestApp, name: &str) -> reqwest::Response {
    app.post(
        "/v1/models",
        &json!({"name": name, "inputs": 1, "layers": [{"units": 1, "activation": "identity"}]}),
    )
    .await
}

async fn predict(app: &TestApp) -> reqwest::Response {
    app.post(
        "/v1/models/iris/predict",
        &json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
    )
    .await
}

/// The value of an unlabelled sample on `/metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// The job's status as stored.
async fn stored_status(db: &TestDatabase, job: &str) -> String {
    let rows = db
        .sql(&format!("SELECT status FROM jobs WHERE id = '{job}'"))
        .await;
    rows[0].get::<_, String>(0)
}

/// A fresh database, the proxy to it, and a server (lease [`LEASE_MS`]) that uses it through
/// the proxy; `None` without a PostgreSQL server to test against.
async fn behind_a_proxy() -> Option<(TestDatabase, Proxy, TestApp)> {
    let server = postgres_server()?;
    let db = TestDatabase::create().await;
    let (upstream, proxied) = through_proxy(&server, &db.name).await;
    let proxy = Proxy::start(upstream).await;
    let url = proxied(proxy.port);
    let app = spawn_with(move |c| {
        c.database_url = Some(url.parse().unwrap());
        c.job_lease_ms = LEASE_MS;
    })
    .await;
    Some((db, proxy, app))
}

/// Starts a job on `iris` that trains until stopped; returns its id once two epochs are done.
async fn train_long(app: &TestApp, ds: &str) -> String {
    let job = app
        .train(
            "iris",
            json!({"dataset_id": ds, "epochs": 1_000_000, "batch_size": 1}),
        )
        .await;
    app.wait_job(&job, |j| {
        j["status"] == "running" && j["epoch"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    job
}

/// Polls model creations until one is accepted (5 s at most); the time it took.
async fn until_writes_accepted(app: &TestApp, name: &str) -> Duration {
    let back = Instant::now();
    loop {
        let r = create(app, name).await;
        if r.status() == StatusCode::CREATED {
            return back.elapsed();
        }
        expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").await;
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "no write accepted 5 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_the_database_stopped_and_started_under_a_running_server() {
    let Some((db, mut proxy, app)) = behind_a_proxy().await else {
        return;
    };

    // Acknowledged before the cut: a trained model (its dataset, job and version), more models.
    let ds = app.trained_iris("iris").await;
    let names: Vec<String> = (0..5).map(|i| format!("before{i}")).collect();
    for n in &names {
        expect(create(&app, n).await, StatusCode::CREATED).await;
    }
    expect(predict(&app).await, StatusCode::OK).await;
    // A job training when the database goes.
    let long = train_long(&app, &ds).await;
    assert_eq!(metric(&app, "mlpd_store_up").await, 1.0);

    proxy.cut().await;
    let cut = Instant::now();

    // Writes: 503 `store_unavailable` with Retry-After, at once (the pool would wait 5 s).
    for i in 0..5 {
        let t = Instant::now();
        let r = create(&app, &format!("during{i}")).await;
        let took = t.elapsed();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").await;
        assert_eq!(retry.as_deref(), Some("2"), "write {i}");
        println!("write {i} while the database is cut: 503 after {took:?}");
        assert!(took < Duration::from_secs(1), "write {i}: {took:?}");
    }
    // Not ready, saying why.
    let r = app.get("/ready").await;
    let body = expect(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["reason"], "the database is unavailable", "{body}");
    assert_eq!(metric(&app, "mlpd_store_up").await, 0.0);
    assert!(metric(&app, "mlpd_store_outages_total").await >= 1.0);
    // Predictions of the loaded model still answer, and reads of the caches too.
    for _ in 0..20 {
        let p = expect(predict(&app).await, StatusCode::OK).await;
        assert_eq!(p["version"], 1, "{p}");
    }
    expect(app.get("/v1/models/before0").await, StatusCode::OK).await;
    // Cut for longer than a lease: the running job cannot save its epochs and gives up.
    let down = Duration::from_millis(LEASE_MS * 7 / 4);
    tokio::time::sleep(down.saturating_sub(cut.elapsed())).await;
    let r = create(&app, "late").await;
    expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").await;

    proxy.restore().await;
    let back = Instant::now();

    // The same server accepts writes again within a few seconds, and is ready.
    let recovered = until_writes_accepted(&app, "after").await;
    println!("database back: the first write accepted after {recovered:?}");
    expect(app.get("/ready").await, StatusCode::OK).await;
    assert_eq!(metric(&app, "mlpd_store_up").await, 1.0);

    // The job that trained during the cut has ended, cleanly, here and in the database.
    let t = Instant::now();
    let ended = app.wait_job(&long, |j| j["status"] != "running").await;
    assert_eq!(ended["status"], "failed", "{ended}");
    let code = ended["error"]["code"].as_str().unwrap_or_default();
    println!(
        "the job training during the cut: failed ({code}) {:?} after the database came back",
        back.elapsed()
    );
    assert!(
        ["store_unavailable", "interrupted"].contains(&code),
        "{ended}"
    );
    loop {
        let s = stored_status(&db, &long).await;
        if s == "\"failed\"" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_millis(LEASE_MS * 3),
            "stored as {s}, 3 leases after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Nothing acknowledged is lost: in the database, and as this server answers.
    let stored: Vec<String> = db
        .sql("SELECT name FROM models ORDER BY name")
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut want: Vec<String> = names.clone();
    want.extend(["after".to_string(), "iris".to_string()]);
    want.sort();
    assert_eq!(
        stored, want,
        "no write made during the cut, none acknowledged lost"
    );
    for n in &names {
        expect(app.get(&format!("/v1/models/{n}")).await, StatusCode::OK).await;
    }
    expect(app.get(&format!("/v1/datasets/{ds}")).await, StatusCode::OK).await;
    let versions = db
        .sql("SELECT version FROM versions WHERE model = 'iris'")
        .await;
    assert_eq!(versions.len(), 1);
    // And it trains again.
    let job = app
        .train(
            "iris",
            json!({"dataset_id": ds, "epochs": 20, "batch_size": 16}),
        )
        .await;
    let done: Value = app.wait_done(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["model_version"], 2, "{done}");
    expect(predict(&app).await, StatusCode::OK).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_shorter_than_a_lease_leaves_a_running_job_running_with_every_epoch_saved() {
    let Some((db, mut proxy, app)) = behind_a_proxy().await else {
        return;
    };
    app.create_model(
        "iris",
        4,
        json!([{"units": 8, "activation": "relu"}, {"units": 3, "activation": "softmax"}]),
    )
    .await;
    let ds = app.upload("iris.csv", "species").await;
    let job = train_long(&app, &ds).await;

    proxy.cut().await;
    let cut = Instant::now();
    let r = create(&app, "during").await;
    expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").await;
    let j = app.wait_job(&job, |_| true).await;
    let epoch_in_cut = j["epoch"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(LEASE_MS / 2).saturating_sub(cut.elapsed())).await;
    proxy.restore().await;
    until_writes_accepted(&app, "after").await;

    // A lease and a half later the job still trains, under a renewed lease.
    tokio::time::sleep(Duration::from_millis(LEASE_MS * 3 / 2)).await;
    let j = app.wait_job(&job, |_| true).await;
    assert_eq!(j["status"], "running", "{j}");
    let now = j["epoch"].as_u64().unwrap();
    assert!(now > epoch_in_cut, "trained on: {epoch_in_cut} → {now}");
    let rows = db
        .sql(&format!(
            "SELECT status, lease_until > now() FROM jobs WHERE id = '{job}'"
        ))
        .await;
    assert_eq!(
        (rows[0].get::<_, String>(0), rows[0].get::<_, bool>(1)),
        ("\"running\"".to_string(), true)
    );
    // The epochs trained while the database was away were saved once it was back: none missing.
    let rows = db
        .sql(&format!(
            "SELECT count(*), COALESCE(max(epoch), 0) FROM epochs WHERE job = '{job}'"
        ))
        .await;
    let (count, last) = (rows[0].get::<_, i64>(0), rows[0].get::<_, i64>(1));
    assert_eq!(count, last, "epochs 1..={last} stored without a gap");
    assert!(
        u64::try_from(last).unwrap() > epoch_in_cut,
        "{last} stored, {epoch_in_cut} trained before the database came back"
    );
    expect(
        app.post(&format!("/v1/jobs/{job}/cancel"), &json!({}))
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    let done = app.wait_done(&job).await;
    assert_eq!(done["status"], "canceled", "{done}");
    app.stop().await;
}
