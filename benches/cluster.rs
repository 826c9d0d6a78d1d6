//! Cluster figures, each beside its peer in the same run: three replicas of the real binary on
//! one PostgreSQL database, and one embedded-store server.
//!
//! - **epoch → other replica**: for every epoch of a job, when it arrives on the event streams
//!   of the two replicas that do not train it, after its arrival on the stream of the replica
//!   that does (the peer: the same epoch, locally) — p50 / p99 / max;
//! - **hot swap**: when each replica first answers a predict with the new version, after the
//!   training replica's stream announced the job's end (its own predict is the peer);
//! - **submit** (the 202's round trip) and **claim** (`started_at − created_at`) on the cluster
//!   and on the embedded server.
//!
//! ```text
//! MLPD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench --bench cluster -- [--rounds 5] [--epochs 300]
//! ```

use futures_util::StreamExt;
use reqwest::Client;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Server {
    child: Child,
    base: String,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(id: &str, db: Option<&str>) -> Server {
    let dir = std::env::temp_dir().join(format!("mlpd-bench-cluster-{id}-{}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlpd"));
    cmd.args([
        "--bind",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--train-workers",
        "1",
    ])
    .args(["--replica-id", id, "--data-dir"])
    .arg(&dir)
    .env("RUST_LOG", "info")
    .env_remove("MLPD_DATABASE_URL")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(url) = db {
        cmd.env("MLPD_DATABASE_URL", url);
    }
    let mut child = cmd.spawn().expect("the binary starts");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "listening"
            {
                let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("listening");
    Server {
        child,
        base: format!("http://{addr}"),
        dir,
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn summary(name: &str, v: &mut [f64]) {
    let n = v.len();
    println!(
        "{name:<44} n={n:<5} p50 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms",
        pct(v, 0.5),
        pct(v, 0.99),
        pct(v, 1.0)
    );
}

async fn post(c: &Client, url: String, body: &Value) -> Value {
    c.post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn setup(c: &Client, base: &str) -> String {
    post(
        c,
        format!("{base}/v1/models"),
        &json!({"name": "iris", "inputs": 4, "layers": [
            {"units": 16, "activation": "relu"}, {"units": 3, "activation": "softmax"}]}),
    )
    .await;
    let iris = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/iris.csv")).unwrap();
    let ds: Value = c
        .post(format!("{base}/v1/datasets?target=species"))
        .header("content-type", "text/csv")
        .body(iris)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ds["id"].as_str().unwrap().to_string()
}

/// Arrival time of each epoch id on a job's stream, and of its end.
async fn follow(c: Client, url: String) -> (HashMap<u32, Instant>, Option<Instant>) {
    let mut seen = HashMap::new();
    let resp = c.get(url).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(i) = buf.find("\n\n") {
            let block: String = buf.drain(..i + 2).collect();
            if block.contains("event: end") {
                return (seen, Some(now));
            }
            if let Some(id) = block.lines().find_map(|l| l.strip_prefix("id:"))
                && let Ok(e) = id.trim().parse()
            {
                seen.entry(e).or_insert(now);
            }
        }
    }
    (seen, None)
}

async fn job(c: &Client, base: &str, id: &str) -> Value {
    c.get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn ts(v: &Value) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339).ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = arg("--rounds", 5);
    let epochs = arg("--epochs", 300);
    let admin = std::env::var("MLPD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("mlpd_bench_cluster_{}", std::process::id());
    let a = admin.clone();
    let n = name.clone();
    let url = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&a, postgres::NoTls).expect("the database");
        c.batch_execute(&format!("CREATE DATABASE {n}")).unwrap();
        let (base, _) = a.rsplit_once('/').unwrap();
        format!("{base}/{n}")
    })
    .await
    .unwrap();
    let u = url.clone();
    let (replicas, embedded) = tokio::task::spawn_blocking(move || {
        let r: Vec<Server> = ["a", "b", "c"]
            .iter()
            .map(|id| start(id, Some(&u)))
            .collect();
        (r, start("embedded", None))
    })
    .await
    .unwrap();
    let c = Client::new();
    let ds = setup(&c, &replicas[0].base).await;
    let eds = setup(&c, &embedded.base).await;
    let owner = |job: String| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let row = c
                .query_one(&format!("SELECT owner FROM jobs WHERE id = '{job}'"), &[])
                .unwrap();
            row.get::<_, Option<String>>(0).unwrap_or_default()
        })
    };
    let (mut remote, mut local) = (Vec::new(), Vec::new());
    let (mut swap_remote, mut swap_local) = (Vec::new(), Vec::new());
    let (mut submit_c, mut submit_e, mut claim_c, mut claim_e) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let body = json!({"dataset_id": ds, "epochs": epochs, "batch_size": 4});
    for round in 0..rounds {
        // Submitted on a different replica each round; trained wherever it is claimed.
        let at = &replicas[round % 3].base;
        let t = Instant::now();
        let j = post(&c, format!("{at}/v1/models/iris/train"), &body).await;
        submit_c.push(t.elapsed().as_secs_f64() * 1000.0);
        let id = j["id"].as_str().unwrap().to_string();
        let streams: Vec<_> = replicas
            .iter()
            .map(|r| tokio::spawn(follow(c.clone(), format!("{}/v1/jobs/{id}/events", r.base))))
            .collect();
        // Each replica's predicted version, polled from the moment the job is submitted.
        let switched: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; 3]));
        let want = round as u64 + 1;
        let pollers: Vec<_> = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (c, base, switched) = (c.clone(), r.base.clone(), switched.clone());
                tokio::spawn(async move {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_secs(120) {
                        let r = c
                            .post(format!("{base}/v1/models/iris/predict"))
                            .json(&json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}))
                            .send()
                            .await;
                        if let Ok(r) = r
                            && let Ok(v) = r.json::<Value>().await
                            && v["version"].as_u64() >= Some(want)
                        {
                            switched.lock().unwrap()[i] = Some(Instant::now());
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        let mut arrivals = Vec::new();
        for s in streams {
            arrivals.push(s.await.unwrap());
        }
        for p in pollers {
            p.await.unwrap();
        }
        let runner = owner(id.clone()).await.unwrap();
        let ri = ["a", "b", "c"]
            .iter()
            .position(|x| *x == runner)
            .unwrap_or(0);
        let (base_arrivals, base_end) = &arrivals[ri];
        for (i, (seen, _)) in arrivals.iter().enumerate() {
            for (e, t) in seen {
                if let Some(t0) = base_arrivals.get(e) {
                    let d = t.saturating_duration_since(*t0).as_secs_f64() * 1000.0;
                    if i == ri {
                        local.push(d);
                    } else {
                        remote.push(d);
                    }
                }
            }
        }
        let end = base_end.expect("the runner's stream ended");
        for (i, s) in switched.lock().unwrap().iter().enumerate() {
            let d = s
                .expect("every replica switched")
                .saturating_duration_since(end);
            if i == ri {
                swap_local.push(d.as_secs_f64() * 1000.0);
            } else {
                swap_remote.push(d.as_secs_f64() * 1000.0);
            }
        }
        let done = job(&c, at, &id).await;
        if let (Some(c0), Some(s0)) = (ts(&done["created_at"]), ts(&done["started_at"])) {
            claim_c.push((s0 - c0).as_seconds_f64() * 1000.0);
        }
        // The embedded peer: the same job on one process.
        let eb = &embedded.base;
        let t = Instant::now();
        let j = post(
            &c,
            format!("{eb}/v1/models/iris/train"),
            &json!({"dataset_id": eds, "epochs": epochs, "batch_size": 4}),
        )
        .await;
        submit_e.push(t.elapsed().as_secs_f64() * 1000.0);
        let eid = j["id"].as_str().unwrap().to_string();
        let (_, _) = follow(c.clone(), format!("{eb}/v1/jobs/{eid}/events")).await;
        let done = job(&c, eb, &eid).await;
        if let (Some(c0), Some(s0)) = (ts(&done["created_at"]), ts(&done["started_at"])) {
            claim_e.push((s0 - c0).as_seconds_f64() * 1000.0);
        }
        println!(
            "round {round}: trained on {runner}, {} epochs streamed",
            arrivals[ri].0.len()
        );
    }
    println!(
        "load: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    summary("epoch -> its replica's own stream (peer)", &mut local);
    summary("epoch -> another replica's stream", &mut remote);
    summary("hot swap: training replica (peer)", &mut swap_local);
    summary("hot swap: other replicas", &mut swap_remote);
    summary("submit 202: embedded (peer)", &mut submit_e);
    summary("submit 202: cluster", &mut submit_c);
    summary("claim (started - created): embedded (peer)", &mut claim_e);
    summary("claim (started - created): cluster", &mut claim_c);
    drop(replicas);
    drop(embedded);
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    })
    .await
    .unwrap();
}
