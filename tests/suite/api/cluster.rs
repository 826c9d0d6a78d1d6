//! Three real mlpd processes on one PostgreSQL database: any replica accepts, claims, streams,
//! cancels and predicts anything; a job runs on exactly one replica; a replica killed with -9
//! has its job ended `interrupted` by the others within the lease bound; a restarting replica
//! leaves the others' jobs alone; the queue's capacity counts the whole cluster.
//!
//! These tests need `MLPD_TEST_DATABASE_URL` (see `postgres.rs`).

use super::helpers::{Sse, TestDatabase, postgres_server};
use super::persistence::{start_binary_logged, temp_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Child;
use std::time::{Duration, Instant};

/// The lease the tests run with: short, so that a kill -9 is noticed quickly.
const LEASE_MS: u64 = 2000;

struct Replica {
    id: String,
    child: Child,
    base: String,
    dir: std::path::PathBuf,
    client: reqwest::Client,
}

impl Replica {
    fn start(url: &str, id: &str, extra: &[&str]) -> Replica {
        let dir = temp_dir(&format!("cluster-{id}"));
        Self::start_in(url, id, extra, dir)
    }

    fn start_in(url: &str, id: &str, extra: &[&str], dir: std::path::PathBuf) -> Replica {
        let lease = LEASE_MS.to_string();
        let mut args = vec!["--replica-id", id, "--job-lease-ms", &lease];
        args.extend_from_slice(extra);
        let (child, base, _) =
            start_binary_logged(&dir, &args, &[("MLPD_DATABASE_URL", url)], None);
        Replica {
            id: id.to_string(),
            child,
            base,
            dir,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn upload_iris(&self) -> String {
        let iris =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/iris.csv")).unwrap();
        let r = self
            .client
            .post(self.url("/v1/datasets?target=species"))
            .header("content-type", "text/csv")
            .body(iris)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    async fn train(&self, body: &Value) -> String {
        let (s, v) = self.post("/v1/models/iris/train", body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn wait_job(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let t = Instant::now();
        loop {
            let (s, j) = self.get(&format!("/v1/jobs/{id}")).await;
            if s == StatusCode::OK && pred(&j) {
                return j;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{}: job never {what}: {j}",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn long_job(ds: &str) -> Value {
    json!({"dataset_id": ds, "epochs": 1_000_000, "batch_size": 1})
}

/// The replica that holds a job's lease, from the database.
async fn owner(db: &TestDatabase, job: &str) -> String {
    let rows = db
        .sql(&format!("SELECT owner FROM jobs WHERE id = '{job}'"))
        .await;
    rows[0].get::<_, Option<String>>(0).unwrap_or_default()
}

async fn three(db: &TestDatabase, extra: &[&str]) -> Vec<Replica> {
    let (url, extra): (String, Vec<String>) = (
        db.url.clone(),
        extra.iter().map(|s| s.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        ["a", "b", "c"]
            .iter()
            .map(|id| Replica::start(&url, id, &extra))
            .collect()
    })
    .await
    .unwrap()
}

async fn create_iris(r: &Replica) {
    let (s, v) = r
        .post(
            "/v1/models",
            &json!({"name": "iris", "inputs": 4, "layers": [
                {"units": 8, "activation": "relu"}, {"units": 3, "activation": "softmax"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_any_replica_accepts_streams_and_cancels_a_job_running_on_any_other() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    let r = three(&db, &[]).await;
    let (a, b, c) = (&r[0], &r[1], &r[2]);
    // Created on A, uploaded on B, trained from C: each is found at once on the others.
    create_iris(a).await;
    let ds = b.upload_iris().await;
    let job = c.train(&long_job(&ds)).await;
    // A streams it live, wherever it trains.
    let mut sse = Sse::open_url(&a.client, &a.url(&format!("/v1/jobs/{job}/events")), None).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = sse.next().await.expect("a live epoch");
        assert_eq!(e.event, "epoch", "{e:?}");
        seen.push(e.id.clone().unwrap().parse::<u32>().unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let runner = owner(&db, &job).await;
    assert!(["a", "b", "c"].contains(&runner.as_str()), "{runner}");
    // B resumes after the second epoch it would have seen (`Last-Event-ID`): the replay starts
    // right after it, with the same ids.
    let mut resumed = Sse::open_url(
        &b.client,
        &b.url(&format!("/v1/jobs/{job}/events")),
        Some(seen[1]),
    )
    .await;
    let first = resumed.next().await.expect("a replayed epoch");
    assert_eq!(
        first.id.as_deref(),
        Some((seen[1] + 1).to_string().as_str())
    );
    assert_eq!(first.data["epoch"], seen[1] + 1, "{:?}", first.data);
    drop(resumed);
    // Running on exactly one replica: each sees the same job running.
    for x in &r {
        let (_, j) = x.get(&format!("/v1/jobs/{job}")).await;
        assert_eq!(j["status"], "running", "{}: {j}", x.id);
    }
    // Cancel from B: the replica that runs it stops it within a second.
    let t = Instant::now();
    let (s, v) = b.post(&format!("/v1/jobs/{job}/cancel"), &json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    loop {
        let rows = db
            .sql(&format!("SELECT status FROM jobs WHERE id = '{job}'"))
            .await;
        if rows[0].get::<_, String>(0) == "\"canceled\"" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "not canceled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = t.elapsed();
    println!("cancel from another replica: the job stopped after {stopped:?} (runner {runner})");
    assert!(stopped < Duration::from_secs(1), "{stopped:?}");
    // A's stream ends with the end event.
    let end = loop {
        let e = sse.next().await.expect("the end event");
        if e.event == "end" {
            break e;
        }
    };
    assert_eq!(end.data["status"], "canceled", "{:?}", end.data);
    // Every replica shows it canceled.
    for x in &r {
        x.wait_job(&job, "canceled", |j| j["status"] == "canceled")
            .await;
    }
    // A job whose queue entry was claimed elsewhere trains and publishes; all three serve it.
    let job = a
        .train(&json!({"dataset_id": ds, "epochs": 30, "batch_size": 16}))
        .await;
    let done = b
        .wait_job(&job, "done", |j| j["status"] == "succeeded")
        .await;
    assert_eq!(done["model_version"], 1, "{done}");
    for x in &r {
        let t = Instant::now();
        loop {
            let (s, p) = x
                .post(
                    "/v1/models/iris/predict",
                    &json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
                )
                .await;
            if s == StatusCode::OK {
                assert_eq!(p["version"], 1, "{p}");
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(1), "{}: {p}", x.id);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_kill_9_of_the_running_replica_ends_its_job_interrupted_within_the_lease() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    let mut r = three(&db, &[]).await;
    create_iris(&r[0]).await;
    let ds = r[1].upload_iris().await;
    let job = r[2].train(&long_job(&ds)).await;
    r[0].wait_job(&job, "running", |j| j["status"] == "running")
        .await;
    let runner = owner(&db, &job).await;
    let i = r
        .iter()
        .position(|x| x.id == runner)
        .expect("a replica runs it");
    r[i].kill();
    let t = Instant::now();
    let killed = r.remove(i);
    let survivor = &r[0];
    let ended = survivor
        .wait_job(&job, "ended", |j| j["status"] != "running")
        .await;
    let took = t.elapsed();
    assert_eq!(
        (ended["status"].as_str(), ended["error"]["code"].as_str()),
        (Some("failed"), Some("interrupted")),
        "{ended}"
    );
    // The documented bound: 1.2 leases (the lease, then one renewal interval), plus the
    // notification's way to the other replica.
    let bound = Duration::from_millis(LEASE_MS * 12 / 10 + 1000);
    println!("kill -9 of the runner ({runner}): job interrupted after {took:?} (bound {bound:?})");
    assert!(took < bound, "{took:?}");
    // The survivors keep serving and training.
    for x in &r {
        x.wait_job(&job, "seen interrupted", |j| j["status"] == "failed")
            .await;
    }
    let next = r[1]
        .train(&json!({"dataset_id": ds, "epochs": 20, "batch_size": 16}))
        .await;
    let done = r[0]
        .wait_job(&next, "done", |j| j["status"] == "succeeded")
        .await;
    assert_eq!(done["status"], "succeeded");
    drop(killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_restarting_replica_leaves_the_others_running_jobs_alone() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    let mut r = three(&db, &[]).await;
    create_iris(&r[0]).await;
    let ds = r[0].upload_iris().await;
    let job = r[0].train(&long_job(&ds)).await;
    r[0].wait_job(&job, "running", |j| j["status"] == "running")
        .await;
    let runner = owner(&db, &job).await;
    // Another replica dies and comes back (same id, same data directory).
    let i = r.iter().position(|x| x.id != runner).unwrap();
    r[i].kill();
    let (url, id, dir) = (db.url.clone(), r[i].id.clone(), r[i].dir.clone());
    let back = tokio::task::spawn_blocking(move || Replica::start_in(&url, &id, &[], dir))
        .await
        .unwrap();
    // The data directory is unused with a database: the old handle may remove it.
    drop(std::mem::replace(&mut r[i], back));
    // Its startup ended nothing of another replica's: the job still runs, on the same replica.
    let (s, j) = r[i].get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j["status"], "running", "{j}");
    tokio::time::sleep(Duration::from_millis(LEASE_MS * 2)).await;
    let (_, j) = r[0].get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(j["status"], "running", "after two leases: {j}");
    assert_eq!(owner(&db, &job).await, runner);
    let (s, _) = r[i]
        .post(&format!("/v1/jobs/{job}/cancel"), &json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    r[i].wait_job(&job, "canceled", |j| j["status"] == "canceled")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_the_queue_capacity_counts_every_replica() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    let r = three(&db, &["--queue-capacity", "2"]).await;
    create_iris(&r[0]).await;
    let ds = r[0].upload_iris().await;
    // One running job per replica (one worker each), each submitted once the one before runs:
    // three submitted at once could find two still queued and the third refused, rightly.
    let running = || async {
        let rows = db
            .sql("SELECT count(*) FROM jobs WHERE status = '\"running\"'")
            .await;
        rows[0].get::<_, i64>(0)
    };
    let mut jobs = Vec::new();
    for (n, x) in r.iter().enumerate() {
        jobs.push(x.train(&long_job(&ds)).await);
        let t = Instant::now();
        while running().await < n as i64 + 1 {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "job {} never ran",
                n + 1
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // …then two queued, on two replicas: the third replica's submission finds the queue full.
    jobs.push(r[0].train(&long_job(&ds)).await);
    jobs.push(r[1].train(&long_job(&ds)).await);
    let (s, e) = r[2].post("/v1/models/iris/train", &long_job(&ds)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{e}");
    assert_eq!(e["error"]["code"], "queue_full");
    // A queued job canceled on one replica frees its place for another replica.
    let (s, v) = r[2]
        .post(&format!("/v1/jobs/{}/cancel", jobs[3]), &json!({}))
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (StatusCode::ACCEPTED, Some("canceled")),
        "{v}"
    );
    jobs.push(r[2].train(&long_job(&ds)).await);
    for j in &jobs {
        r[0].post(&format!("/v1/jobs/{j}/cancel"), &json!({})).await;
    }
    for j in &jobs {
        r[1].wait_job(j, "ended", |v| v["status"] == "canceled")
            .await;
    }
    let rows = db
        .sql("SELECT count(*) FROM jobs WHERE status IN ('\"queued\"', '\"running\"')")
        .await;
    assert_eq!(rows[0].get::<_, i64>(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_every_replica_serves_a_new_version_within_a_second_and_never_an_older_one() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    let r = three(&db, &[]).await;
    create_iris(&r[0]).await;
    let ds = r[1].upload_iris().await;
    let short = json!({"dataset_id": ds, "epochs": 20, "batch_size": 16});
    for round in 1..=3u64 {
        let job = r[(round % 3) as usize].train(&short).await;
        // Every replica's answers, polled from submission until all serve the new version.
        let pollers: Vec<_> = r
            .iter()
            .map(|x| {
                let (c, url) = (x.client.clone(), x.url("/v1/models/iris/predict"));
                tokio::spawn(async move {
                    let mut seen: Vec<(Instant, u64)> = Vec::new();
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_secs(60) {
                        let r = c
                            .post(&url)
                            .json(&json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}))
                            .send()
                            .await
                            .unwrap();
                        if r.status() == StatusCode::OK {
                            let v: Value = r.json().await.unwrap();
                            let v = v["version"].as_u64().unwrap();
                            seen.push((Instant::now(), v));
                            if v >= round {
                                return seen;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    seen
                })
            })
            .collect();
        let done = r[0]
            .wait_job(&job, "succeeded", |j| j["status"] == "succeeded")
            .await;
        let succeeded = Instant::now();
        assert_eq!(done["model_version"], round, "{done}");
        for (x, p) in r.iter().zip(pollers) {
            let seen = p.await.unwrap();
            let versions: Vec<u64> = seen.iter().map(|(_, v)| *v).collect();
            assert!(
                versions.windows(2).all(|w| w[0] <= w[1]),
                "{}: never back: {versions:?}",
                x.id
            );
            let (at, last) = *seen.last().expect("answers");
            assert_eq!(last, round, "{}: {versions:?}", x.id);
            let late = at.saturating_duration_since(succeeded);
            println!(
                "round {round}: {} serves v{round} {late:?} after the job was seen done",
                x.id
            );
            assert!(late < Duration::from_secs(1), "{}: {late:?}", x.id);
        }
    }
}
