//! Hostile and careless clients against the real binary: memory stays bounded per event
//! stream, job views stay small however long the history, and the caps answer 503.
//! Every test is bounded in time and talks to loopback only.

use super::persistence::{start_binary_with, temp_dir};
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
    // The 300 streams may still be connecting: retry until the cap is reached.
    while refused.status() == StatusCode::OK && t.elapsed() < Duration::from_secs(10) {
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
