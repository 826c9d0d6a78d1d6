//! A bounded load test of the real binary on loopback: for `--secs` seconds (default 120) it
//! mixes predictions, job submissions, cancels, SSE subscribers that come and go, reads and
//! malformed requests, then drains the queue and reports requests served, p50/p99 per kind,
//! 5xx answers beyond the documented overload ones, jobs lost, and the server's memory at the
//! start and the end.
//!
//!   cargo bench --bench load -- [--secs 120] [--predictors 8]
//!
//! **Cluster mode** (`--replicas 3`): the same load against three replicas on one PostgreSQL
//! database (a fresh one made on the server at `MLPD_TEST_DATABASE_URL`, dropped at the end),
//! through nginx (`nginx` on PATH, Debian's package) running `docs/nginx.conf` — the README's
//! load-balancer config, only its four addresses replaced by free ports. Halfway through, the
//! second replica is killed (-9) and started again five seconds later. A 5xx that nginx answers
//! for a request that was in flight on the killed replica when it died is counted apart (the
//! `X-Upstream` header names the replica); every other 5xx is undocumented. Jobs must all end
//! (those the dead replica ran end `interrupted`), and every replica's memory is reported.
//!
//!   MLPD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo bench --bench load -- --replicas 3 --secs 180
//!
//! Exits non-zero if any request got an undocumented 5xx, a job was lost or failed (other than
//! `interrupted`, on the replica the benchmark kills), or a server died (other than that one).

use futures_util::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Outcomes per kind of request: latencies, and statuses counted.
#[derive(Default)]
struct Tally {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    statuses: BTreeMap<(&'static str, u16), u64>,
    /// 5xx answers that the API does not document as overload (`overloaded`, `timeout`).
    unexpected: Vec<String>,
    /// 5xx answered by nginx for requests in flight on the replica the benchmark killed.
    cut_by_kill: u64,
    /// Answers per replica (nginx's `X-Upstream`), in cluster mode.
    by_upstream: BTreeMap<String, u64>,
    transport_errors: u64,
}

/// The replica the benchmark killed: its address, and when it died and came back.
#[derive(Default)]
struct Kill {
    addr: String,
    at: Option<Instant>,
    back: Option<Instant>,
}

impl Kill {
    /// Whether an answer that arrived at `now` from `upstream` (nginx's list of the replicas
    /// tried) can be a request cut by the kill: its last replica is the killed one, and it
    /// arrived between the kill and a few seconds after the restart.
    fn explains(&self, upstream: &str, now: Instant) -> bool {
        let (Some(at), last) = (self.at, upstream.rsplit(", ").next().unwrap_or("")) else {
            return false;
        };
        let until = self.back.map_or(now, |b| b + Duration::from_secs(5));
        last == self.addr && now >= at && now <= until
    }
}

#[derive(Clone)]
struct Load {
    client: Client,
    base: String,
    tally: Arc<Mutex<Tally>>,
    jobs: Arc<Mutex<Vec<String>>>,
    /// Accepted jobs seen finished, with their status; and those that vanished unseen.
    ended: Arc<Mutex<BTreeMap<String, String>>>,
    lost: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    kill: Arc<Mutex<Kill>>,
    since: Instant,
}

impl Load {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends, times to the full body, records; returns the status and JSON body.
    async fn send(
        &self,
        kind: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Option<(StatusCode, Value)> {
        let started = Instant::now();
        let result = async {
            let r = req.send().await?;
            let status = r.status();
            let upstream = r
                .headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = r.bytes().await?;
            Ok::<_, reqwest::Error>((status, upstream, body))
        }
        .await;
        let took = started.elapsed();
        let mut t = self.tally.lock().unwrap();
        let Ok((status, upstream, body)) = result else {
            t.transport_errors += 1;
            return None;
        };
        t.latencies.entry(kind).or_default().push(took);
        *t.statuses.entry((kind, status.as_u16())).or_default() += 1;
        if let Some(u) = &upstream {
            let last = u.rsplit(", ").next().unwrap_or(u).to_string();
            *t.by_upstream.entry(last).or_default() += 1;
        }
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_server_error() {
            let code = json["error"]["code"].as_str().unwrap_or("");
            let cut = upstream
                .as_deref()
                .is_some_and(|u| self.kill.lock().unwrap().explains(u, Instant::now()));
            if cut {
                t.cut_by_kill += 1;
            } else if !(code == "overloaded" || code == "timeout") {
                let text = String::from_utf8_lossy(&body);
                t.unexpected.push(format!(
                    "{kind}: {status} from {} after {:.1} s: {}",
                    upstream.as_deref().unwrap_or("the server"),
                    self.since.elapsed().as_secs_f64(),
                    text.split_whitespace().collect::<Vec<_>>().join(" ")
                ));
            }
        }
        Some((status, json))
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One mlpd process of the benchmark: where it listens and what it stores.
struct Replica {
    child: Child,
    port: u16,
    data_dir: std::path::PathBuf,
    /// `--replica-id` and `--database-url` in cluster mode.
    cluster: Option<(String, String)>,
}

impl Replica {
    fn start(data_dir: std::path::PathBuf, port: u16, cluster: Option<(String, String)>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlpd"));
        cmd.args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--max-train-seconds",
            "3",
            "--max-finished-jobs",
            "30",
            "--queue-capacity",
            "8",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "warn")
        .env_remove("MLPD_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        if let Some((id, url)) = &cluster {
            cmd.args(["--replica-id", id, "--database-url", url]);
        }
        let child = cmd.spawn().expect("the mlpd binary starts");
        Replica {
            child,
            port,
            data_dir,
            cluster,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL; `Child::kill` sends it).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the process again on the same port, data directory, id and database.
    fn restart(&mut self) {
        *self = Replica::start(self.data_dir.clone(), self.port, self.cluster.take());
    }
}

async fn wait_healthy(client: &Client, base: &str) {
    for _ in 0..200 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} does not answer /health");
}

/// A fresh database on the server at `admin` (a PostgreSQL URL); returns its URL.
fn create_database(admin: &str, name: &str) -> String {
    let mut c = postgres::Client::connect(admin, postgres::NoTls).expect("PostgreSQL answers");
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}

fn drop_database(admin: &str, name: &str) {
    if let Ok(mut c) = postgres::Client::connect(admin, postgres::NoTls) {
        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}

/// nginx running `docs/nginx.conf` with its upstream and listen addresses replaced.
struct Nginx {
    child: Child,
    prefix: std::path::PathBuf,
}

impl Nginx {
    fn start(listen: u16, upstreams: &[String]) -> Self {
        let conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/nginx.conf"))
            .unwrap();
        let mut conf = conf.replace(
            "listen 127.0.0.1:8080;",
            &format!("listen 127.0.0.1:{listen};"),
        );
        for (i, u) in upstreams.iter().enumerate() {
            let documented = format!("server 127.0.0.1:{} ", 8081 + i);
            assert!(
                conf.contains(&documented),
                "docs/nginx.conf lists {documented}"
            );
            conf = conf.replace(&documented, &format!("server {u} "));
        }
        let prefix = std::env::temp_dir().join(format!("mlpd-load-nginx-{}", std::process::id()));
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
        let child = Command::new(arg("--nginx").unwrap_or_else(|| "nginx".into()))
            .arg("-p")
            .arg(&prefix)
            .args([
                "-c",
                "nginx.conf",
                "-e",
                "logs/error.log",
                "-g",
                "daemon off;",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts (apt-get install nginx)");
        Nginx { child, prefix }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let secs: u64 = arg("--secs").map_or(120, |s| s.parse().expect("--secs N"));
    let predictors: usize = arg("--predictors").map_or(8, |s| s.parse().expect("--predictors N"));
    let replicas_n: usize = arg("--replicas").map_or(1, |s| s.parse().expect("--replicas N"));
    let root_dir = std::env::temp_dir().join(format!("mlpd-load-{}", std::process::id()));
    let admin = std::env::var("MLPD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db_name = format!("mlpd_load_{}", std::process::id());
    // The postgres client blocks on a runtime of its own: keep it off this one.
    let db_url = if replicas_n > 1 {
        let (a, n) = (admin.clone(), db_name.clone());
        Some(
            tokio::task::spawn_blocking(move || create_database(&a, &n))
                .await
                .unwrap(),
        )
    } else {
        None
    };
    let mut replicas: Vec<Replica> = (0..replicas_n)
        .map(|i| {
            let id = ["a", "b", "c", "d", "e", "f", "g", "h"][i % 8].to_string();
            let cluster = db_url.clone().map(|u| (id.clone(), u));
            Replica::start(root_dir.join(&id), free_port(), cluster)
        })
        .collect();
    let client = Client::new();
    for r in &replicas {
        wait_healthy(&client, &format!("http://{}", r.addr())).await;
    }
    let nginx = (replicas_n > 1).then(|| {
        let addrs: Vec<String> = replicas.iter().map(Replica::addr).collect();
        Nginx::start(free_port(), &addrs)
    });
    let base = match &nginx {
        Some(n) => {
            let conf = std::fs::read_to_string(n.prefix.join("nginx.conf")).unwrap();
            let listen = conf
                .lines()
                .find_map(|l| l.trim().strip_prefix("listen "))
                .unwrap()
                .trim_end_matches(';')
                .to_string();
            format!("http://{listen}")
        }
        None => format!("http://{}", replicas[0].addr()),
    };
    let load = Load {
        client,
        base,
        tally: Arc::default(),
        jobs: Arc::default(),
        ended: Arc::default(),
        lost: Arc::default(),
        stop: Arc::default(),
        kill: Arc::default(),
        since: Instant::now(),
    };
    wait_healthy(&load.client, &load.base).await;

    // Seed: digits 64-32-10 trained once (predictions use it, jobs retrain it); iris, untrained,
    // for malformed requests.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets");
    let csv = |f: &str| std::fs::read(root.join(f)).unwrap();
    let c = &load.client;
    let call = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.expect("the server answers");
        r.json::<Value>().await.expect("a JSON answer")
    };
    for (name, inputs, hidden, outputs) in [("digits", 64, 32, 10), ("iris", 4, 16, 3)] {
        let spec = json!({"name": name, "inputs": inputs, "layers": [
            {"units": hidden, "activation": "relu"}, {"units": outputs, "activation": "softmax"}]});
        call(c.post(load.url("/v1/models")).json(&spec)).await;
    }
    let upload = |file: &str, target: &str| {
        c.post(load.url(&format!("/v1/datasets?target={target}")))
            .header("content-type", "text/csv")
            .body(csv(file))
    };
    let digits = call(upload("digits.csv", "digit")).await;
    let body = json!({"dataset_id": digits["id"], "epochs": 10});
    let job = call(c.post(load.url("/v1/models/digits/train")).json(&body)).await;
    let seed_job = job["id"].as_str().unwrap().to_string();
    loop {
        let j = call(c.get(load.url(&format!("/v1/jobs/{seed_job}")))).await;
        if j["status"] == "succeeded" {
            break;
        }
        assert!(j["status"] != "failed", "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows: Vec<Vec<f32>> = String::from_utf8(csv("digits.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .take(64)
        .map(|l| l.split(',').skip(1).map(|v| v.parse().unwrap()).collect())
        .collect();
    let rows = Arc::new(rows);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rss_start: Vec<u64> = replicas.iter().map(|r| rss_kib(r.pid())).collect();
    println!(
        "load: {secs} s against {} ({} replica(s): {}); RSS after seeding {:?} KiB",
        load.base,
        replicas.len(),
        replicas
            .iter()
            .map(Replica::addr)
            .collect::<Vec<_>>()
            .join(", "),
        rss_start
    );

    let mut tasks = Vec::new();
    for p in 0..predictors {
        let (l, rows) = (load.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = p;
            while l.running() {
                let n = 1 + i % 16;
                let batch: Vec<_> = (0..n).map(|k| rows[(i + k) % rows.len()].clone()).collect();
                l.send(
                    "predict",
                    l.client
                        .post(l.url("/v1/models/digits/predict"))
                        .json(&json!({"inputs": batch})),
                )
                .await;
                i += 1;
            }
        }));
    }
    // Job submissions, every 400 ms.
    let l = load.clone();
    let ds = digits["id"].as_str().unwrap().to_string();
    tasks.push(tokio::spawn(async move {
        let mut seed = 0u64;
        while l.running() {
            // Retrains the model being predicted with (each success swaps the served version
            // under load). Per-sample updates make a job take about a second, so jobs queue,
            // the queue fills (429), and cancels meet queued and running jobs.
            let body = json!({"dataset_id": ds, "epochs": 40, "batch_size": 1,
                              "seed": seed, "validation_split": 0.2});
            if let Some((StatusCode::ACCEPTED, j)) = l
                .send(
                    "train",
                    l.client.post(l.url("/v1/models/digits/train")).json(&body),
                )
                .await
            {
                l.jobs
                    .lock()
                    .unwrap()
                    .push(j["id"].as_str().unwrap().to_string());
            }
            seed += 1;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }));
    // Cancels of recent jobs, every 900 ms.
    let l = load.clone();
    tasks.push(tokio::spawn(async move {
        while l.running() {
            let target = l.jobs.lock().unwrap().iter().rev().nth(1).cloned();
            if let Some(id) = target {
                l.send(
                    "cancel",
                    l.client.post(l.url(&format!("/v1/jobs/{id}/cancel"))),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
    }));
    // SSE subscribers that stay between 0.1 and 2 s, then leave.
    for s in 0..3u64 {
        let l = load.clone();
        tasks.push(tokio::spawn(async move {
            let mut k = s;
            while l.running() {
                let target = l.jobs.lock().unwrap().last().cloned();
                let Some(id) = target else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let started = Instant::now();
                let stay = Duration::from_millis(100 + (k * 337) % 1900);
                match l
                    .client
                    .get(l.url(&format!("/v1/jobs/{id}/events")))
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status();
                        {
                            let mut t = l.tally.lock().unwrap();
                            t.latencies
                                .entry("events (headers)")
                                .or_default()
                                .push(started.elapsed());
                            *t.statuses
                                .entry(("events (headers)", status.as_u16()))
                                .or_default() += 1;
                            if status.is_server_error() {
                                t.unexpected.push(format!("events: {status}"));
                            }
                        }
                        let mut body = r.bytes_stream();
                        let _ = tokio::time::timeout(stay, async {
                            while body.next().await.is_some() {}
                        })
                        .await;
                    }
                    Err(_) => l.tally.lock().unwrap().transport_errors += 1,
                }
                k += 1;
            }
        }));
    }
    // Reads.
    let l = load.clone();
    tasks.push(tokio::spawn(async move {
        while l.running() {
            for path in ["/v1/jobs?limit=20", "/v1/models", "/metrics", "/ready"] {
                l.send("reads", l.client.get(l.url(path))).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }));
    // Malformed requests: each must get a 4xx.
    let l = load.clone();
    tasks.push(tokio::spawn(async move {
        let bad: Vec<(&str, &str, &str, &str)> = vec![
            (
                "POST",
                "/v1/models/digits/predict",
                "application/json",
                "{\"inputs\": [[1, 2]",
            ),
            ("POST", "/v1/models/digits/predict", "text/plain", "1,2,3"),
            (
                "POST",
                "/v1/models/digits/predict",
                "application/json",
                "{\"inputs\": [[1e39]]}",
            ),
            (
                "POST",
                "/v1/models/digits/predict",
                "application/json",
                "{\"inputs\": [[1, 2, 3]]}",
            ),
            (
                "POST",
                "/v1/models",
                "application/json",
                "{\"name\": \"x\", \"inputs\": 0, \"layers\": []}",
            ),
            (
                "POST",
                "/v1/models/iris/train",
                "application/json",
                "{\"dataset_id\": \"not-a-uuid\"}",
            ),
            ("GET", "/v1/jobs/not-a-uuid", "", ""),
            ("DELETE", "/v1/models/digits/predict", "", ""),
            ("GET", "/nowhere", "", ""),
            ("POST", "/v1/datasets?target=nope", "text/csv", "a,b\n1,2\n"),
        ];
        let mut i = 0;
        while l.running() {
            let (method, path, ct, body) = bad[i % bad.len()];
            let mut req = l.client.request(method.parse().unwrap(), l.url(path));
            if !ct.is_empty() {
                req = req.header("content-type", ct).body(body.to_string());
            }
            if let Some((status, _)) = l.send("malformed", req).await
                && !status.is_client_error()
            {
                l.tally
                    .lock()
                    .unwrap()
                    .unexpected
                    .push(format!("malformed {method} {path}: {status}"));
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }));

    // Every accepted job is watched until it is seen finished. Finished jobs beyond
    // --max-finished-jobs are pruned by design, long after they are seen; a job that is gone
    // before it was seen finished is lost.
    let watching = Arc::new(AtomicBool::new(true));
    let (l, on) = (load.clone(), watching.clone());
    let watcher = tokio::spawn(async move {
        while on.load(Ordering::Relaxed) {
            let pending: Vec<String> = {
                let (ended, lost) = (l.ended.lock().unwrap(), l.lost.lock().unwrap());
                let jobs = l.jobs.lock().unwrap();
                jobs.iter()
                    .filter(|id| !ended.contains_key(*id) && !lost.contains(id))
                    .cloned()
                    .collect()
            };
            for id in pending {
                match l
                    .send("job status", l.client.get(l.url(&format!("/v1/jobs/{id}"))))
                    .await
                {
                    Some((StatusCode::OK, j))
                        if !matches!(j["status"].as_str(), Some("queued" | "running")) =>
                    {
                        // A failed job is counted with its error code.
                        let status = match (j["status"].as_str(), j["error"]["code"].as_str()) {
                            (Some("failed"), Some(code)) => format!("failed/{code}"),
                            (status, _) => status.unwrap_or("?").to_string(),
                        };
                        l.ended.lock().unwrap().insert(id, status);
                    }
                    Some((StatusCode::NOT_FOUND, _)) => l.lost.lock().unwrap().push(id),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let mut rss_max = rss_start.clone();
    let mut rss_series = Vec::new();
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    // Cluster mode: the second replica is killed halfway and started again 5 s later.
    let victim = (replicas.len() > 1).then_some(1);
    let (mut killed_at, mut restarted_at) = (None::<Instant>, None::<Instant>);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at = started.elapsed().as_secs();
        if let Some(v) = victim {
            if killed_at.is_none() && at >= secs / 2 {
                // Noted before the signal: answers cut by it may arrive before kill() returns.
                let now = Instant::now();
                *load.kill.lock().unwrap() = Kill {
                    addr: replicas[v].addr(),
                    at: Some(now),
                    back: None,
                };
                replicas[v].kill();
                killed_at = Some(now);
                println!("{at} s: replica {} killed (-9)", replicas[v].addr());
            } else if let (Some(k), None) = (killed_at, restarted_at)
                && k.elapsed() >= Duration::from_secs(5)
            {
                replicas[v].restart();
                wait_healthy(&load.client, &format!("http://{}", replicas[v].addr())).await;
                let now = Instant::now();
                restarted_at = Some(now);
                load.kill.lock().unwrap().back = Some(now);
                println!(
                    "{} s: replica {} started again",
                    started.elapsed().as_secs(),
                    replicas[v].addr()
                );
            } else if let Some(r) = restarted_at
                && r.elapsed() >= Duration::from_secs(10)
                && rss_start[v] == 0
            {
                // The restarted process's baseline: 10 s into its new life.
                rss_start[v] = rss_kib(replicas[v].pid());
            }
            if killed_at.is_some() && restarted_at.is_none() {
                rss_start[v] = 0;
                rss_max[v] = 0;
            }
        }
        let rss: Vec<u64> = replicas.iter().map(|r| rss_kib(r.pid())).collect();
        for (m, r) in rss_max.iter_mut().zip(&rss) {
            *m = (*m).max(*r);
        }
        if at.is_multiple_of(10) {
            let mib: Vec<String> = rss.iter().map(|r| (r / 1024).to_string()).collect();
            rss_series.push(format!("{at}s {} MiB", mib.join("/")));
        }
        for (i, r) in replicas.iter_mut().enumerate() {
            let down = Some(i) == victim && killed_at.is_some() && restarted_at.is_none();
            if !down && let Ok(Some(status)) = r.child.try_wait() {
                eprintln!("replica {} exited during the load: {status}", r.addr());
                std::process::exit(1);
            }
        }
    }
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let rss_end_busy: Vec<u64> = replicas.iter().map(|r| rss_kib(r.pid())).collect();

    // Drain: every accepted job must reach an end.
    let submitted = load.jobs.lock().unwrap().len();
    let drained_by = Instant::now() + Duration::from_secs(60);
    while load.ended.lock().unwrap().len() + load.lost.lock().unwrap().len() < submitted
        && Instant::now() < drained_by
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watching.store(false, Ordering::Relaxed);
    let _ = watcher.await;
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    for status in load.ended.lock().unwrap().values() {
        *ended.entry(status.clone()).or_default() += 1;
    }
    // Only the jobs the killed replica was running may fail, and only as `interrupted`.
    let failed_otherwise: u64 = ended
        .iter()
        .filter(|(status, _)| {
            status.starts_with("failed") && (victim.is_none() || *status != "failed/interrupted")
        })
        .map(|(_, n)| n)
        .sum();
    let mut lost = load.lost.lock().unwrap().clone();
    let seen = load.ended.lock().unwrap().len();
    if seen + lost.len() < submitted {
        lost.push(format!("{} never finished", submitted - seen - lost.len()));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_end: Vec<u64> = replicas.iter().map(|r| rss_kib(r.pid())).collect();

    // The report, its lock released before the awaits below.
    let ok = {
        let t = load.tally.lock().unwrap();
        let total: u64 = t.statuses.values().sum();
        println!(
            "\n{total} requests in {secs} s ({:.0}/s), {} transport errors",
            total as f64 / secs as f64,
            t.transport_errors
        );
        println!(
            "{:<18} {:>8} {:>9} {:>9}  statuses",
            "kind", "count", "p50 ms", "p99 ms"
        );
        for (kind, lat) in &t.latencies {
            let mut sorted = lat.clone();
            sorted.sort();
            let statuses: Vec<String> = t
                .statuses
                .iter()
                .filter(|((k, _), _)| k == kind)
                .map(|((_, s), n)| format!("{s}×{n}"))
                .collect();
            println!(
                "{kind:<18} {:>8} {:>9.2} {:>9.2}  {}",
                sorted.len(),
                percentile(&sorted, 0.5),
                percentile(&sorted, 0.99),
                statuses.join(" ")
            );
        }
        println!(
            "jobs: {submitted} accepted, after draining: {ended:?}; lost: {}; failed other than by the kill: {failed_otherwise}",
            lost.len()
        );
        for (i, r) in replicas.iter().enumerate() {
            println!(
                "replica {} RSS: {} KiB at start{}, {} KiB peak, {} KiB at the end of the load, {} KiB after draining ({:+.1}% vs start)",
                r.addr(),
                rss_start[i],
                if Some(i) == victim {
                    " (10 s after its restart)"
                } else {
                    ""
                },
                rss_max[i],
                rss_end_busy[i],
                rss_end[i],
                (rss_end[i] as f64 / rss_start[i].max(1) as f64 - 1.0) * 100.0
            );
        }
        println!(
            "RSS every 10 s (replicas in order): {}",
            rss_series.join(", ")
        );
        if !t.by_upstream.is_empty() {
            println!("answers by replica (nginx X-Upstream): {:?}", t.by_upstream);
            println!(
                "5xx for requests in flight on the killed replica (nginx 502): {}",
                t.cut_by_kill
            );
        }
        println!("undocumented 5xx: {}", t.unexpected.len());
        for u in t.unexpected.iter().take(10) {
            println!("  {u}");
        }
        t.unexpected.is_empty()
            && lost.is_empty()
            && failed_otherwise == 0
            && t.transport_errors == 0
    };
    drop(nginx);
    for r in &mut replicas {
        r.kill();
    }
    let _ = std::fs::remove_dir_all(&root_dir);
    if db_url.is_some() {
        tokio::task::spawn_blocking(move || drop_database(&admin, &db_name))
            .await
            .unwrap();
    }
    if !ok {
        std::process::exit(1);
    }
}
