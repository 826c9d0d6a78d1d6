//! A bounded load test of the real binary on loopback: for `--secs` seconds (default 120) it
//! mixes predictions, job submissions, cancels, SSE subscribers that come and go, reads and
//! malformed requests, then drains the queue and reports requests served, p50/p99 per kind,
//! 5xx answers beyond the documented overload ones, jobs lost, and the server's memory at the
//! start and the end.
//!
//!   cargo bench --bench load -- [--secs 120] [--predictors 8]
//!
//! Exits non-zero if any request got an undocumented 5xx, a job was lost, or the server died.

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
    transport_errors: u64,
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
            let body = r.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let took = started.elapsed();
        let mut t = self.tally.lock().unwrap();
        let Ok((status, body)) = result else {
            t.transport_errors += 1;
            return None;
        };
        t.latencies.entry(kind).or_default().push(took);
        *t.statuses.entry((kind, status.as_u16())).or_default() += 1;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_server_error() {
            let code = json["error"]["code"].as_str().unwrap_or("");
            if !(code == "overloaded" || code == "timeout") {
                t.unexpected.push(format!(
                    "{kind}: {status} {}",
                    String::from_utf8_lossy(&body)
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

fn start_server(data_dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mlpd"))
        .args([
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
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the mlpd binary starts")
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
    let data_dir = std::env::temp_dir().join(format!("mlpd-load-{}", std::process::id()));
    let port = free_port();
    let mut server = start_server(&data_dir, port);
    let pid = server.id();
    let load = Load {
        client: Client::new(),
        base: format!("http://127.0.0.1:{port}"),
        tally: Arc::default(),
        jobs: Arc::default(),
        ended: Arc::default(),
        lost: Arc::default(),
        stop: Arc::default(),
    };
    for _ in 0..100 {
        if load.client.get(load.url("/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
    let rss_start = rss_kib(pid);
    println!("load: {secs} s against pid {pid} on port {port}; RSS after seeding {rss_start} KiB");

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
                        l.ended
                            .lock()
                            .unwrap()
                            .insert(id, j["status"].as_str().unwrap_or("?").to_string());
                    }
                    Some((StatusCode::NOT_FOUND, _)) => l.lost.lock().unwrap().push(id),
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let mut rss_max = rss_start;
    let mut rss_series = Vec::new();
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(pid);
        rss_max = rss_max.max(rss);
        let at = started.elapsed().as_secs();
        if at.is_multiple_of(10) {
            rss_series.push(format!("{at}s {} MiB", rss / 1024));
        }
        if let Ok(Some(status)) = server.try_wait() {
            eprintln!("the server exited during the load: {status}");
            std::process::exit(1);
        }
    }
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let rss_end_busy = rss_kib(pid);

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
    let mut lost = load.lost.lock().unwrap().clone();
    let seen = load.ended.lock().unwrap().len();
    if seen + lost.len() < submitted {
        lost.push(format!("{} never finished", submitted - seen - lost.len()));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_end = rss_kib(pid);

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
        "jobs: {submitted} accepted, after draining: {ended:?}; lost: {}",
        lost.len()
    );
    println!(
        "server RSS: {rss_start} KiB after seeding, {rss_max} KiB peak, {rss_end_busy} KiB at the end of the load, {rss_end} KiB after draining ({:+.1}% vs start)",
        (rss_end as f64 / rss_start as f64 - 1.0) * 100.0
    );
    println!("server RSS every 10 s: {}", rss_series.join(", "));
    println!("undocumented 5xx: {}", t.unexpected.len());
    for u in t.unexpected.iter().take(10) {
        println!("  {u}");
    }
    let ok = t.unexpected.is_empty() && lost.is_empty() && t.transport_errors == 0;
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data_dir);
    if !ok {
        std::process::exit(1);
    }
}
