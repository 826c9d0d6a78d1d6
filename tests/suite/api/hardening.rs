//! Hostile and careless clients against the real binary: memory stays bounded per event
//! stream, job views stay small however long the history, the caps answer 503, and a handler
//! that panics answers 500 instead of resetting the connection.
//! Every test is bounded in time and talks to loopback only.

use super::persistence::{start_binary_logged, start_binary_with, temp_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Write;
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

/// The server's resident memory now and at its peak, in MiB (from `/proc`).
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A model on four rows and a job of a million one-row batches: ≈ 10⁵ epochs a second.
async fn fast_job(c: &reqwest::Client, base: &str) -> String {
    let r = c
        .post(format!("{base}/v1/models"))
        .json(&json!({"name": "xor", "inputs": 2, "layers": [{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "softmax"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let job: Value = c
        .post(format!("{base}/v1/models/xor/train"))
        .json(&json!({
            "dataset": {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "labels": [0, 1, 1, 0]},
            "epochs": 1_000_000, "batch_size": 1, "optimizer": "sgd"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    job["id"].as_str().expect("a job id").to_string()
}

async fn job(c: &reqwest::Client, base: &str, id: &str) -> (Value, usize) {
    let body = c
        .get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    (serde_json::from_slice(&body).unwrap(), body.len())
}

/// Opens an event stream and never reads it.
fn idle_stream(addr: &str, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /v1/jobs/{id}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    s
}

struct Server {
    child: Child,
    base: String,
    dir: std::path::PathBuf,
}

impl Server {
    fn start(tag: &str, extra: &[&str]) -> Self {
        let dir = temp_dir(tag);
        let (child, base) = start_binary_with(&dir, extra);
        Server { child, base, dir }
    }

    fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        super::helpers::remove_store(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_streams_on_a_fast_job_keep_memory_flat_and_views_small() {
    let server = Server::start("streams", &["--max-event-streams", "300"]);
    let c = reqwest::Client::new();
    let id = fast_job(&c, &server.base).await;
    // Let the history grow first: every stream starts with a long replay.
    let t = Instant::now();
    while job(&c, &server.base, &id).await.0["epoch"].as_u64() < Some(50_000) {
        assert!(t.elapsed() < Duration::from_secs(60), "the job is too slow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (before, _) = rss_mib(server.child.id());
    let streams: Vec<_> = (0..300).map(|_| idle_stream(server.addr(), &id)).collect();
    // The 301st is refused, with a hint when to retry.
    let refused = c
        .get(format!("{}/v1/jobs/{id}/events", server.base))
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    let mut refused = refused;
    // The 300 streams may still be connecting (slowly, when the other tests load both cores):
    // retry until the cap is reached.
    while refused.status() == StatusCode::OK && t.elapsed() < Duration::from_secs(30) {
        drop(refused);
        tokio::time::sleep(Duration::from_millis(100)).await;
        refused = c
            .get(format!("{}/v1/jobs/{id}/events", server.base))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    // Three seconds of ≈ 10⁵ epochs a second with 300 streams that read nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (now, peak) = rss_mib(server.child.id());
    let (view, bytes) = job(&c, &server.base, &id).await;
    let epoch = view["epoch"].as_u64().unwrap();
    println!(
        "rss before {before:.0} MiB, with 300 idle streams {now:.0} MiB (peak {peak:.0}); epoch {epoch}; view {bytes} B"
    );
    assert!(epoch > 50_000);
    // The history itself grows (≈ 80 B an epoch); the streams add little.
    assert!(
        peak - before < 150.0,
        "300 idle streams cost {:.0} MiB",
        peak - before
    );
    assert!(bytes < 8_192, "the job view is {bytes} bytes");
    assert_eq!(view["recent_epochs"].as_array().unwrap().len(), 10);
    // The history pages out every epoch.
    let page: Value = c
        .get(format!(
            "{}/v1/jobs/{id}/history?offset=1000&limit=10000",
            server.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let epochs = page["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 10_000);
    assert_eq!(
        (epochs[0]["epoch"].as_u64(), epochs[9_999]["epoch"].as_u64()),
        (Some(1001), Some(11_000))
    );
    assert_eq!(page["next_offset"], 11_000);
    drop(streams);
    // Closed streams give their slots back.
    let t = Instant::now();
    loop {
        let r = c
            .get(format!("{}/v1/jobs/{id}/events", server.base))
            .header("last-event-id", "999990")
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "slots not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .post(format!("{}/v1/jobs/{id}/cancel", server.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// No input is known to panic a handler, so the debug binary is started with
/// `MLPD_DEBUG_PANIC_ROUTE`, which adds `GET /debug/panic` (debug builds only, never in release):
/// the client gets our JSON 500 with its request id, the connection stays usable, the panic is
/// logged once (with the request id) and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_500_logged_once_with_the_request_id() {
    let dir = temp_dir("panic");
    let (mut child, base, logs) =
        start_binary_logged(&dir, &[], &[("MLPD_DEBUG_PANIC_ROUTE", "1")], None);
    // One connection for everything: a reset would fail the requests after the panic.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for i in 0..3 {
        let id = format!("panic-request-{i}");
        let r = c
            .get(format!("{base}/debug/panic"))
            .header("x-request-id", &id)
            .send()
            .await
            .expect("an answer, not a reset connection");
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.headers()["x-request-id"], id.as_str());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "internal", "{body}");
        assert!(
            !body.to_string().contains("deliberate"),
            "the cause leaked: {body}"
        );
        let r = c.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "mlpd_http_panics_total 3"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mlpd_http_requests_total")
                && l.contains(r#"route="/debug/panic""#)
                && l.contains(r#"status="500""#)
                && l.ends_with(" 3")),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let logs = logs.lock().unwrap().clone();
    for i in 0..3 {
        let id = format!("panic-request-{i}");
        let mentions: Vec<&String> = logs
            .iter()
            .filter(|l| l.contains("deliberate panic"))
            .filter(|l| l.contains(&format!("\"{id}\"")))
            .collect();
        assert_eq!(mentions.len(), 1, "{id}: {logs:#?}");
        let line: Value = serde_json::from_str(mentions[0]).unwrap();
        assert_eq!(line["level"], "ERROR", "{line}");
        let errors = logs
            .iter()
            .filter(|l| l.contains(r#""level":"ERROR""#) && l.contains(&format!("\"{id}\"")))
            .count();
        assert_eq!(errors, 1, "{id}: {logs:#?}");
    }
}

/// A model on four rows, trained for a few epochs: something to predict with.
async fn trained_xor(c: &reqwest::Client, base: &str) {
    let r = c
        .post(format!("{base}/v1/models"))
        .json(&json!({"name": "xor", "inputs": 2, "layers": [{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "softmax"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let job: Value = c
        .post(format!("{base}/v1/models/xor/train"))
        .json(&json!({
            "dataset": {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "labels": [0, 1, 1, 0]},
            "epochs": 20
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().expect("a job id").to_string();
    let t = Instant::now();
    loop {
        let (view, _) = self::job(c, base, &id).await;
        if view["status"] == "succeeded" {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the job did not finish: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn predict_ok(c: &reqwest::Client, base: &str) {
    let r = c
        .post(format!("{base}/v1/models/xor/predict"))
        .json(&json!({"inputs": [[0, 1]]}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("a prediction answers");
    assert_eq!(r.status(), StatusCode::OK);
}

async fn health_ok(c: &reqwest::Client, base: &str) {
    let r = c
        .get(format!("{base}/health"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("/health answers");
    assert_eq!(r.status(), StatusCode::OK);
}

/// Connects and sends half a request header, then nothing.
fn slow_connection(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        .unwrap();
    s
}

/// Whether the server has closed the connection (EOF or reset), without blocking.
fn closed_by_server(s: &mut TcpStream) -> bool {
    use std::io::Read;
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false, // an answer (a 408, say) before the close
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// 3,000 connections that send half a header and stop: `/health` and a prediction still
/// answer while they are open; the server closes every one after `--header-timeout-secs`, and
/// closes a kept-alive connection left idle after `--idle-timeout-secs` (but not before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_starve_nobody() {
    // This process opens the thousands of connections too.
    assert!(
        mlpd::server::raise_open_file_limit() > 7_000,
        "needs 7,000 open files"
    );
    let server = Server::start(
        "slow",
        &["--header-timeout-secs", "8", "--idle-timeout-secs", "3"],
    );
    let c = reqwest::Client::new();
    trained_xor(&c, &server.base).await;
    let pid = server.child.id();
    let files_before = open_files(pid);
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..3_000).map(|_| slow_connection(server.addr())).collect();
    let opening = opened.elapsed();
    // New connections (a new client), not the one kept alive from the training.
    let fresh = reqwest::Client::new();
    health_ok(&fresh, &server.base).await;
    predict_ok(&reqwest::Client::new(), &server.base).await;
    let answered = opened.elapsed();
    let files_during = open_files(pid);
    // The answers came while the slow connections were open (none can have timed out yet).
    let open_now = slow
        .iter_mut()
        .filter_map(|s| (!closed_by_server(s)).then_some(()))
        .count();
    if opened.elapsed() < Duration::from_secs(8) {
        assert_eq!(open_now, 3_000, "closed early");
    }
    println!(
        "3000 slow connections opened in {opening:?}; /health and predict answered after {answered:?} \
         with {open_now} open; server holds {files_during} files (before: {files_before})"
    );
    // All are closed after the header timeout (bounded wait).
    let t = Instant::now();
    loop {
        let open = slow
            .iter_mut()
            .filter_map(|s| (!closed_by_server(s)).then_some(()))
            .count();
        if open == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{open} slow connections still open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(8),
        "closed before the header timeout"
    );
    drop(slow);
    let t = Instant::now();
    while open_files(pid) > files_before + 16 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the server still holds {} files (before: {files_before})",
            open_files(pid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Kept alive: a second request after a short pause is served on the same connection; left
    // idle past the limit, the connection is closed.
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let request = b"GET /health HTTP/1.1\r\nHost: idle\r\n\r\n";
    let read_response = |s: &mut TcpStream| {
        use std::io::Read;
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    s.write_all(request).unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_secs(1));
    s.write_all(request).unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
    let idle = Instant::now();
    loop {
        if closed_by_server(&mut s) {
            break;
        }
        assert!(
            idle.elapsed() < Duration::from_secs(30),
            "an idle connection stays open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        idle.elapsed() >= Duration::from_secs(3),
        "closed before the idle timeout"
    );
}

/// With 256 open files allowed (soft and hard) and 400 slow connections, more than the server
/// may hold: the server caps its connections below the limit, so accepting never fails, the
/// log is not flooded, and `/health` and a prediction answer once the slow ones time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_open_file_limit_the_server_still_answers_and_logs_little() {
    let dir = temp_dir("nofile");
    let (mut child, base, logs) =
        start_binary_logged(&dir, &["--header-timeout-secs", "2"], &[], Some(256));
    let addr = base.trim_start_matches("http://").to_string();
    let c = reqwest::Client::new();
    trained_xor(&c, &base).await;
    let slow: Vec<TcpStream> = (0..400).map(|_| slow_connection(&addr)).collect();
    let t = Instant::now();
    // New connections (new clients), not the one kept alive from the training.
    health_ok(&reqwest::Client::new(), &base).await;
    predict_ok(&reqwest::Client::new(), &base).await;
    println!(
        "256 open files, 400 slow connections: /health and predict answered after {:?}",
        t.elapsed()
    );
    drop(slow);
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(alive, "the server died");
    let logs = logs.lock().unwrap().clone();
    let limits: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("connection limits"))
        .collect();
    assert!(
        limits.len() == 1 && limits[0].contains(r#""max_connections":192"#),
        "{limits:?}"
    );
    let accept_errors = logs.iter().filter(|l| l.contains("accept failed")).count();
    assert_eq!(accept_errors, 0, "{logs:#?}");
    let cap = logs
        .iter()
        .filter(|l| l.contains("connection limit reached"))
        .count();
    assert!((1..=4).contains(&cap), "{cap} lines: {logs:#?}");
}

/// JSON Schema (and so `openapi.yaml`) counts `406.0` as an integer: every integer field takes
/// integral numbers in any spelling, and a fraction is a 422 naming the field.
#[tokio::test]
async fn integer_fields_take_integral_numbers_and_refuse_fractions() {
    use super::helpers::{expect, expect_error, spawn_app};
    let app = spawn_app().await;
    let layers = |units: Value| json!([{"units": units, "activation": "tanh"}, {"units": 2.0, "activation": "softmax"}]);
    let e = expect_error(
        app.post(
            "/v1/models",
            &json!({"name": "f", "inputs": 2.0, "layers": layers(json!(4.5))}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(e["field"], "layers[0].units", "{e}");
    let model = expect(
        app.post(
            "/v1/models",
            &json!({"name": "f", "inputs": 2.0, "layers": layers(json!(4e0))}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(model["inputs"], 2, "{model}");
    let train = |batch: Value| {
        json!({
            "dataset": {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "labels": [0.0, 1, 1, 0]},
            "epochs": 3.0, "batch_size": batch, "seed": 7.0,
            "early_stopping": {"patience": 2.0},
            "lr_schedule": {"type": "step", "step_size": 1.0, "gamma": 0.5},
            "preprocessing": {"max_levels": 10.0, "min_frequency": 1.0}
        })
    };
    let e = expect_error(
        app.post("/v1/models/f/train", &train(json!(406.5))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(e["field"], "batch_size", "{e}");
    assert!(e["message"].as_str().unwrap().contains("406.5"), "{e}");
    let job = expect(
        app.post("/v1/models/f/train", &train(json!(406.0))).await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(job["epochs"], 3, "{job}");
    let done = app.wait_done(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // The Open Inference Protocol's shape too.
    let r = app
        .post(
            "/v2/models/f/infer",
            &json!({"inputs": [{"name": "input", "shape": [1.0, 2.0], "datatype": "FP32", "data": [0, 1]}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
}
