//! The abuse benchmark (#15): the release binary on loopback, first idle, then under abuse —
//! thousands of connections that send half a request header and stop (reconnecting whenever the
//! server closes them, as a hostile client would), and thousands of event streams on a fast job
//! (4 rows, 1,000,000 epochs, batch size 1) that read their response head and then nothing —
//! while one client predicts, one request after another. Prints the server's peak RSS
//! (`VmHWM`), the client's prediction p50/p99 and error counts idle and under abuse (same run),
//! how many streams were accepted and refused (503 beyond `--max-event-streams`), and whether
//! the server is alive at the end.
//!
//!   cargo bench --bench abuse -- [--streams 5000] [--extra-streams 100] [--slow 3000]
//!                                [--predictions 2000]
//!
//! The server runs with `--max-event-streams` = `--streams` (so that many are really open at
//! once and the extra ones are refused) and a connection cap above everything opened. Goals
//! (the issue's): peak RSS < 500 MB, p99 under abuse ≤ 3× idle, no 5xx but documented 503s,
//! alive at the end. Exits non-zero if the server died or answered an undocumented 5xx.

use reqwest::Client;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().ok().expect("a number"))
}

/// Raises this process's soft open-file limit to its hard limit; returns the limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim);
    }
    lim.rlim_cur
}

/// `VmRSS` and `VmHWM` (peak) of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server(dir: &std::path::Path, port: u16, streams: usize, connections: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mlpd"))
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            dir.to_str().unwrap(),
            "--train-workers",
            "1",
            "--max-event-streams",
            &streams.to_string(),
            "--max-connections",
            &connections.to_string(),
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the mlpd binary starts")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// One client predicting one row at a time: latencies of the 200s, and other answers.
#[derive(Default, Debug)]
struct Predictions {
    ok: Vec<Duration>,
    errors_4xx: u64,
    documented_503: u64,
    undocumented_5xx: u64,
    transport: u64,
}

async fn predict_run(c: &Client, base: &str, n: usize) -> Predictions {
    let mut p = Predictions::default();
    let body = json!({"inputs": [[0.3, 0.7]]});
    for _ in 0..n {
        let t = Instant::now();
        match c
            .post(format!("{base}/v1/models/p/predict"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                let took = t.elapsed();
                if status.is_success() {
                    p.ok.push(took);
                } else if status.as_u16() == 503 && v["error"]["code"] == "overloaded" {
                    p.documented_503 += 1;
                } else if status.is_server_error() {
                    p.undocumented_5xx += 1;
                    eprintln!("undocumented {status}: {v}");
                } else {
                    p.errors_4xx += 1;
                }
            }
            Err(_) => p.transport += 1,
        }
    }
    p.ok.sort();
    p
}

async fn post(c: &Client, url: String, body: Value) -> Value {
    let r = c.post(url).json(&body).send().await.expect("request");
    let s = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(s.is_success(), "{s}: {v}");
    v
}

/// Keeps one half-sent request open; reconnects when the server closes it. Counts closes.
async fn slow_connection(addr: String, stop: Arc<AtomicBool>, closed: Arc<AtomicU64>) {
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let _ = s
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await;
        // The server answers a late header with a close (perhaps after a 408).
        loop {
            tokio::select! {
                r = s.read(&mut buf) => {
                    if matches!(r, Ok(0) | Err(_)) { break; }
                }
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    if stop.load(Ordering::Relaxed) { return; }
                }
            }
        }
        closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Opens an event stream, reads its response head, then never reads again: the status.
async fn idle_stream(addr: &str, job: &str) -> (Option<u16>, Option<TcpStream>) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (None, None);
    };
    let req = format!(
        "GET /v1/jobs/{job}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return (None, None);
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return false,
            }
        }
        true
    };
    match tokio::time::timeout(Duration::from_secs(30), read_head).await {
        Ok(true) => {}
        _ => return (None, None),
    }
    let status = std::str::from_utf8(&head)
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|c| c.parse().ok());
    (status, Some(s))
}

fn print_predictions(label: &str, p: &Predictions) {
    println!(
        "  {label:<13} {:>6} ok   p50 {:>7.2} ms   p99 {:>7.2} ms   4xx {}   503 overloaded {}   other 5xx {}   transport errors {}",
        p.ok.len(),
        percentile(&p.ok, 0.5),
        percentile(&p.ok, 0.99),
        p.errors_4xx,
        p.documented_503,
        p.undocumented_5xx,
        p.transport
    );
}

#[tokio::main]
async fn main() {
    let streams: usize = arg("--streams", 5000);
    let extra: usize = arg("--extra-streams", 100);
    let slow: usize = arg("--slow", 3000);
    let predictions: usize = arg("--predictions", 2000);
    let nofile = raise_nofile();
    let needed = (streams + extra + slow + 64) as u64;
    assert!(
        nofile > needed,
        "the open-file limit ({nofile}) is below the {needed} connections this run opens; raise the hard limit"
    );
    let dir = std::env::temp_dir().join(format!("mlpd-abuse-{}", std::process::id()));
    let port = free_port();
    let connections = streams + extra + slow + 1000;
    let mut server = start_server(&dir, port, streams, connections);
    let pid = server.id();
    let base = format!("http://127.0.0.1:{port}");
    let addr = format!("127.0.0.1:{port}");
    let c = Client::new();
    let t = Instant::now();
    while c.get(format!("{base}/health")).send().await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the server never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The model the client predicts with, trained first.
    let layers = json!([{"units": 8, "activation": "tanh"}, {"units": 2, "activation": "softmax"}]);
    let xor = json!({"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "labels": [0, 1, 1, 0]});
    post(
        &c,
        format!("{base}/v1/models"),
        json!({"name": "p", "inputs": 2, "layers": layers}),
    )
    .await;
    let job = post(
        &c,
        format!("{base}/v1/models/p/train"),
        json!({"dataset": xor, "epochs": 200, "batch_size": 4}),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    loop {
        let j: Value = c
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["status"] == "succeeded" {
            break;
        }
        assert!(j["status"] != "failed", "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "mlpd abuse benchmark: {streams} non-reading streams (+{extra} beyond the cap), {slow} slow connections, {predictions} predictions per phase"
    );
    println!(
        "  open-file limit {nofile}; server --max-event-streams {streams} --max-connections {connections}"
    );

    // Idle: the same client, nothing else going on.
    let _ = predict_run(&c, &base, 200).await; // warm-up
    let (rss_idle, _) = memory_mib(pid);
    let idle = predict_run(&c, &base, predictions).await;

    // The fast job the streams watch.
    post(
        &c,
        format!("{base}/v1/models"),
        json!({"name": "fast", "inputs": 2, "layers": layers}),
    )
    .await;
    let fast = post(
        &c,
        format!("{base}/v1/models/fast/train"),
        json!({"dataset": xor, "epochs": 1_000_000, "batch_size": 1, "optimizer": "sgd"}),
    )
    .await;
    let fast = fast["id"].as_str().unwrap().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicU64::new(0));
    let slow_tasks: Vec<_> = (0..slow)
        .map(|_| tokio::spawn(slow_connection(addr.clone(), stop.clone(), closed.clone())))
        .collect();
    let opened = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..streams + extra {
        let (a, j) = (addr.clone(), fast.clone());
        handles.push(tokio::spawn(async move { idle_stream(&a, &j).await }));
    }
    let mut held = Vec::new();
    let (mut accepted, mut refused, mut other) = (0usize, 0usize, 0usize);
    for h in handles {
        match h.await.unwrap() {
            (Some(200), Some(s)) => {
                accepted += 1;
                held.push(s);
            }
            (Some(503), _) => refused += 1,
            _ => other += 1,
        }
    }
    let open_secs = opened.elapsed().as_secs_f64();
    let under = predict_run(&c, &base, predictions).await;
    let abuse_secs = opened.elapsed().as_secs_f64();
    let (rss_abuse, peak) = memory_mib(pid);
    let j: Value = c
        .get(format!("{base}/v1/jobs/{fast}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null);
    let health = c
        .get(format!("{base}/health"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    stop.store(true, Ordering::Relaxed);
    drop(held);
    for t in slow_tasks {
        t.abort();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alive_after = c
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
        && server.try_wait().ok().flatten().is_none();

    println!(
        "  streams: {accepted} accepted (held open, unread), {refused} refused 503, {other} failed otherwise; opened in {open_secs:.1} s"
    );
    println!(
        "  slow connections: {slow} held (reconnecting), {} closed by the server's header timeout",
        closed.load(Ordering::Relaxed)
    );
    println!(
        "  fast job at epoch {} ({}) after {abuse_secs:.1} s of abuse",
        j["epoch"], j["status"]
    );
    println!("predictions, one client, one row at a time:");
    print_predictions("idle", &idle);
    print_predictions("under abuse", &under);
    let ratio = percentile(&under.ok, 0.99) / percentile(&idle.ok, 0.99);
    println!(
        "memory: RSS idle {rss_idle:.0} MiB, under abuse {rss_abuse:.0} MiB, peak (VmHWM) {peak:.0} MiB"
    );
    println!("health under abuse: {health:?}; alive at the end: {alive_after}");
    let goal = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("goals:");
    println!(
        "  peak RSS < 500 MB with {accepted} streams open: {:.0} MiB = {:.0} MB, {}",
        peak,
        peak * 1.048576,
        goal(peak * 1.048576 < 500.0 && accepted >= streams)
    );
    println!(
        "  p99 under abuse ≤ 3× idle: {ratio:.2}×, {}",
        goal(ratio <= 3.0)
    );
    let bad_5xx = idle.undocumented_5xx + under.undocumented_5xx;
    println!(
        "  no 5xx but documented 503s: {bad_5xx} undocumented, {}",
        goal(bad_5xx == 0)
    );
    println!("  alive at the end: {}", goal(alive_after));
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if bad_5xx > 0 || !alive_after {
        std::process::exit(1);
    }
}
