//! The real binary: SIGTERM stops it cleanly and quickly; CORS answers browsers when configured;
//! tokens never reach its logs.

use super::helpers::{expect, spawn_with};
use super::persistence::{start_binary, temp_dir};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_records_the_job_and_exits_in_time() {
    let dir = temp_dir("sigterm");
    let (mut child, base) = start_binary(&dir);
    let c = reqwest::Client::new();
    let post = |path: &str, body: Value| c.post(format!("{base}{path}")).json(&body).send();
    post(
        "/v1/models",
        json!({"name": "m", "inputs": 4, "layers": [{"units": 3, "activation": "softmax"}]}),
    )
    .await
    .unwrap();
    let iris = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/iris.csv")).unwrap();
    let ds: Value = c
        .post(format!("{base}/v1/datasets"))
        .header("content-type", "text/csv")
        .body(iris)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job: Value = post(
        "/v1/models/m/train",
        json!({"dataset_id": ds["id"], "epochs": 1_000_000, "batch_size": 1}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    loop {
        let j: Value = c
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["epoch"].as_u64() >= Some(1) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut stream = c
        .get(format!("{base}/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap();
    // SAFETY: kill sends a signal to a process id we own; no memory is involved.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(12),
            "still running 12 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "clean exit: {status:?}");
    // The stream ended with its end event.
    let mut text = String::new();
    while let Ok(Some(chunk)) = stream.chunk().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let end = text
        .split("\n\n")
        .filter(|b| b.contains("event: end"))
        .last()
        .expect("an end event");
    assert!(
        end.contains("\"status\":\"failed\"") && end.contains("interrupted"),
        "{end}"
    );
    // The store recorded it.
    let (mut child, base) = start_binary(&dir);
    let j: Value = c
        .get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (j["status"].as_str(), j["error"]["code"].as_str()),
        (Some("failed"), Some("interrupted"))
    );
    child.kill().unwrap();
    child.wait().unwrap();
    super::helpers::remove_store(&dir);
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let app = spawn_with(|c| c.cors_origins = vec!["http://dash.example".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/models"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let ok = preflight("http://dash.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://dash.example"
    );
    let no = preflight("http://evil.example").await.unwrap();
    assert!(no.headers().get("access-control-allow-origin").is_none());
    let r = app
        .client
        .get(app.url("/v1/models"))
        .header("origin", "http://dash.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://dash.example"
    );
    expect(r, StatusCode::OK).await;
    // Off by default: no CORS headers at all.
    let plain = super::helpers::spawn_app().await;
    let r = plain
        .client
        .get(plain.url("/v1/models"))
        .header("origin", "http://dash.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn tokens_never_reach_the_logs_or_help() {
    let dir = temp_dir("tokens");
    let log = dir.with_extension("log");
    let out = std::fs::File::create(&log).unwrap();
    // The most verbose logging there is, every crate included.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mlpd"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(&dir)
        .env("RUST_LOG", "trace")
        .env("MLPD_ADMIN_TOKENS", "SECRET-ADMIN-1,SECRET-ADMIN-2")
        .env("MLPD_PREDICT_TOKENS", "SECRET-PREDICT")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut base = None;
    for _ in 0..200 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "listening" || v["message"] == "listening").then(|| {
                v["fields"]["addr"]
                    .as_str()
                    .or(v["addr"].as_str())
                    .map(str::to_owned)
            })?
        }) {
            base = Some(format!("http://{addr}"));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = base.expect("the server logs its address");
    let c = reqwest::Client::new();
    let body =
        json!({"name": "m", "inputs": 1, "layers": [{"units": 1, "activation": "identity"}]});
    for (token, path) in [
        ("SECRET-ADMIN-2", "/v1/models"),
        ("SECRET-PREDICT", "/v1/models"),
        ("SECRET-WRONG", "/v1/models"),
    ] {
        c.post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
    }
    // SAFETY: the pid is our child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("authentication is on"),
        "the log was captured"
    );
    assert!(text.lines().count() > 10, "trace logging was on");
    assert!(
        !text.contains("SECRET-"),
        "a token reached the log:\n{text}"
    );

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_mlpd"))
        .arg("--help")
        .env("MLPD_ADMIN_TOKENS", "SECRET-ADMIN-1")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("MLPD_ADMIN_TOKENS") && !help.contains("SECRET-"),
        "{help}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log);
}
