//! Everything stored survives restarts and kill -9; export/import round-trips; retention
//! bounds the store; storage faults are clear errors that change nothing.

use super::helpers::{TestApp, expect, expect_error, spawn_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn temp_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mlpd-{tag}-{}", uuid::Uuid::new_v4()))
}

async fn in_dir(dir: &Path) -> TestApp {
    let dir = dir.to_path_buf();
    spawn_with(move |c| c.data_dir = dir).await
}

const ROW: &str =
    r#"{"inputs": [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [7.7, 3.0, 6.1, 2.3]]}"#;

async fn outputs(app: &TestApp, model: &str, version: u64) -> String {
    let r = app
        .client
        .post(app.url(&format!("/v1/models/{model}/predict?version={version}")))
        .header("content-type", "application/json")
        .body(ROW)
        .send()
        .await
        .unwrap();
    let p = expect(r, StatusCode::OK).await;
    p["outputs"].to_string()
}

#[tokio::test]
async fn a_restart_serves_models_versions_datasets_and_jobs_again_with_identical_predictions() {
    let dir = temp_dir("restart");
    let app = in_dir(&dir).await;
    let ds = app.trained_iris("iris").await;
    let job = app
        .train("iris", json!({"dataset_id": ds, "epochs": 5}))
        .await;
    let done = app.wait_done(&job).await;
    let before = outputs(&app, "iris", 2).await;
    let v1 = outputs(&app, "iris", 1).await;
    app.stop().await;

    let t = Instant::now();
    let app = in_dir(&dir).await;
    assert!(t.elapsed() < Duration::from_secs(2));
    let m = expect(app.get("/v1/models/iris").await, StatusCode::OK).await;
    assert_eq!(m["versions"], json!([1, 2]));
    assert_eq!(
        outputs(&app, "iris", 2).await,
        before,
        "bit-identical after restart"
    );
    assert_eq!(outputs(&app, "iris", 1).await, v1);
    let d = expect(app.get(&format!("/v1/datasets/{ds}")).await, StatusCode::OK).await;
    assert_eq!(d["rows"], 150);
    let j = expect(app.get(&format!("/v1/jobs/{job}")).await, StatusCode::OK).await;
    assert_eq!(
        (
            j["status"].clone(),
            j["recent_epochs"].clone(),
            j["model_version"].clone()
        ),
        (
            done["status"].clone(),
            done["recent_epochs"].clone(),
            json!(2)
        )
    );
    let h = expect(
        app.get(&format!("/v1/jobs/{job}/history")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(h["total"], done["epoch"], "the whole history survives");
    // The restored dataset trains again (its contents load from the store on demand).
    let again = app
        .train("iris", json!({"dataset_id": ds, "epochs": 3}))
        .await;
    assert_eq!(app.wait_done(&again).await["model_version"], 3);
    app.stop().await;
    super::helpers::remove_store(&dir);
}

#[tokio::test]
async fn export_then_import_predicts_identically() {
    let app = super::helpers::spawn_app().await;
    app.trained_iris("iris").await;
    let doc = expect(
        app.get("/v1/models/iris/versions/1/export").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (doc["format"].as_str(), doc["format_version"].as_u64()),
        (Some("mlpd.model"), Some(1))
    );
    let r = app.post("/v1/models/import?name=iris-copy", &doc).await;
    let m = expect(r, StatusCode::CREATED).await;
    assert_eq!(m["versions"], json!([1]));
    assert_eq!(
        outputs(&app, "iris-copy", 1).await,
        outputs(&app, "iris", 1).await
    );
    // Same name again: taken. A tampered document: refused, naming the field.
    expect_error(
        app.post("/v1/models/import", &doc).await,
        StatusCode::CONFLICT,
        "model_exists",
    )
    .await;
    let mut bad = doc.clone();
    bad["model"]["spec"]["inputs"] = json!(5);
    let err = expect_error(
        app.post("/v1/models/import?name=x", &bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(
        err["field"].as_str().unwrap().starts_with("model."),
        "{err}"
    );
    let mut bad = doc.clone();
    bad["format_version"] = json!(9);
    expect_error(
        app.post("/v1/models/import?name=x", &bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        app.post("/v1/models/import?name=-x", &doc).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(app.post("/v1/models", &json!({"name": "import", "inputs": 1, "layers": [{"units": 1, "activation": "identity"}]})).await, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    expect_error(
        app.get("/v1/models/iris/versions/9/export").await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;
}

#[tokio::test]
async fn retention_keeps_the_newest_versions_and_finished_jobs() {
    let dir = temp_dir("retention");
    let d = dir.clone();
    let app = spawn_with(move |c| {
        c.data_dir = d;
        c.max_versions_per_model = 2;
        c.max_finished_jobs = 3;
    })
    .await;
    let ds = app.trained_iris("iris").await;
    for _ in 0..3 {
        let j = app
            .train("iris", json!({"dataset_id": ds, "epochs": 2}))
            .await;
        app.wait_done(&j).await;
    }
    let m = expect(app.get("/v1/models/iris").await, StatusCode::OK).await;
    assert_eq!(
        m["versions"],
        json!([3, 4]),
        "the oldest versions went; the served one stayed"
    );
    assert_eq!(m["latest_version"], 4);
    expect_error(
        app.get("/v1/models/iris/versions/1").await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;
    let jobs = expect(app.get("/v1/jobs").await, StatusCode::OK).await;
    assert_eq!(jobs["total"], 3);
    app.stop().await;
    // The store agrees after a restart.
    let app = in_dir(&dir).await;
    assert_eq!(
        expect(app.get("/v1/models/iris").await, StatusCode::OK).await["versions"],
        json!([3, 4])
    );
    assert_eq!(
        expect(app.get("/v1/jobs").await, StatusCode::OK).await["total"],
        3
    );
    app.stop().await;
    super::helpers::remove_store(&dir);
}

#[tokio::test]
async fn a_full_store_answers_507_and_changes_nothing() {
    if super::helpers::embedded_only("--max-store-mb caps the SQLite file") {
        return;
    }
    let app = spawn_with(|c| c.max_store_mb = 1).await;
    let big: Vec<Value> = (0..4000)
        .map(|i| json!(vec![i as f32 / 7.0; 100]))
        .collect();
    let labels: Vec<Value> = (0..4000).map(|i| json!(i % 2)).collect();
    let r = app
        .post("/v1/datasets", &json!({"inputs": big, "labels": labels}))
        .await;
    expect_error(r, StatusCode::INSUFFICIENT_STORAGE, "storage_full").await;
    assert_eq!(
        expect(app.get("/v1/datasets").await, StatusCode::OK).await["datasets"],
        json!([])
    );
    // Small writes still work.
    app.create_model("small", 1, json!([{"units": 1, "activation": "identity"}]))
        .await;
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn deleting_a_dataset_gives_its_space_back() {
    if super::helpers::embedded_only("the SQLite file shrinks after a delete") {
        return;
    }
    let app = super::helpers::spawn_app().await;
    let empty = dir_bytes(&app.data_dir);
    let rows: Vec<Value> = (0..5000)
        .map(|i| json!(vec![i as f32 / 3.0; 100]))
        .collect(); // 2 MB of f32
    let targets: Vec<Value> = (0..5000).map(|i| json!([i as f32])).collect();
    let d = expect(
        app.post("/v1/datasets", &json!({"inputs": rows, "targets": targets}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let full = dir_bytes(&app.data_dir);
    assert!(
        full >= 2_020_000 && full < empty + 3_000_000,
        "the 2 MB are on disk once: {empty} → {full}"
    );
    expect(
        app.delete(&format!("/v1/datasets/{}", d["id"].as_str().unwrap()))
            .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    let after = dir_bytes(&app.data_dir);
    assert!(
        after < empty + 500_000,
        "space given back: {empty} → {full} → {after}"
    );
}

#[tokio::test]
async fn an_unusable_data_directory_is_a_clear_startup_error() {
    let file = temp_dir("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let mut config = mlpd::Config::for_tests();
    config.data_dir = file.join("data");
    let err = mlpd::App::build(config).await.err().expect("startup fails");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("data directory") && msg.contains("not-a-dir"),
        "{msg}"
    );
    let _ = std::fs::remove_file(file);
}

/// The real binary, killed with SIGKILL at arbitrary moments while jobs train and publish and
/// datasets upload, restarted each time: every version reported succeeded and every dataset
/// answered 201 is still there, and predicts bit-identically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_moment_loses_nothing_that_was_confirmed() {
    let dir = temp_dir("kill9");
    let client = reqwest::Client::new();
    let mut versions: BTreeMap<u64, String> = BTreeMap::new();
    let mut datasets: Vec<String> = Vec::new();
    let iris = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/iris.csv")).unwrap();
    for round in 0..5u64 {
        let life_started = time::OffsetDateTime::now_utc();
        let (mut child, base) = start_binary(&dir);
        let app = Remote {
            client: client.clone(),
            base,
        };
        // Everything confirmed so far is there, bit for bit.
        assert_eq!(
            app.get("/ready").await.0,
            200,
            "round {round}: the store opens"
        );
        for (v, want) in &versions {
            let got = app.predict(*v).await;
            assert_eq!(got.as_ref(), Some(want), "round {round}: version {v}");
        }
        for id in &datasets {
            assert_eq!(
                app.get(&format!("/v1/datasets/{id}")).await.0,
                200,
                "round {round}: dataset {id}"
            );
        }
        // Nothing an earlier life ran is left running. (The embedded store ends every unfinished
        // job at startup; on PostgreSQL a job left queued stays queued, and this life may
        // already have claimed it: only a job started before this life began is stale.)
        let (_, jobs) = app.get("/v1/jobs?status=running").await;
        let stale: Vec<&Value> = jobs["jobs"]
            .as_array()
            .expect("a job list")
            .iter()
            .filter(|j| {
                let started = j["started_at"].as_str().unwrap_or_default();
                time::OffsetDateTime::parse(started, &time::format_description::well_known::Rfc3339)
                    .map_or(true, |t| t < life_started)
            })
            .collect();
        assert!(
            stale.is_empty(),
            "round {round}: nothing is left running: {stale:?}"
        );
        if round == 0 {
            let (s, _) = app.post_json("/v1/models", &json!({"name": "k", "inputs": 4, "layers": [{"units": 8, "activation": "tanh"}, {"units": 3, "activation": "softmax"}]})).await;
            assert_eq!(s, 201);
        }
        // Work until the kill: jobs that train and publish, and uploads.
        let work = {
            let (app, iris) = (app.clone(), iris.clone());
            tokio::spawn(async move {
                loop {
                    let Some(ds) = app.upload(&iris).await else {
                        break;
                    };
                    WORK.lock().unwrap().1.push(ds.clone());
                    let (s, job) = app
                        .post_json(
                            "/v1/models/k/train",
                            &json!({"dataset_id": ds, "epochs": 150, "batch_size": 4}),
                        )
                        .await;
                    if s != 202 {
                        break;
                    }
                    let id = job["id"].as_str().unwrap_or_default().to_string();
                    let v = loop {
                        let (s, j) = app.get(&format!("/v1/jobs/{id}")).await;
                        if s != 200 {
                            break None;
                        }
                        if j["status"] == "succeeded" {
                            break j["model_version"].as_u64();
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    };
                    let Some(v) = v else { break };
                    let Some(o) = app.predict(v).await else { break };
                    WORK.lock().unwrap().0.push((v, o));
                }
            })
        };
        // Let each round confirm something (however loaded the machine), then kill at a moment
        // that differs from round to round: mid-training, mid-publish or mid-upload.
        let t = Instant::now();
        while WORK.lock().unwrap().0.is_empty() && t.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(40 + 97 * round)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let _ = work.await;
        let (vs, ds) = std::mem::take(&mut *WORK.lock().unwrap());
        assert!(
            !vs.is_empty(),
            "round {round}: some work was confirmed before the kill"
        );
        versions.extend(vs);
        datasets.extend(ds);
    }
    println!(
        "kill -9 × 5: {} versions and {} datasets confirmed, all intact",
        versions.len(),
        datasets.len()
    );
    assert!(
        versions.len() >= 3,
        "versions confirmed across rounds: {}",
        versions.len()
    );
    super::helpers::remove_store(&dir);
}

/// Versions (with their outputs) and datasets the server confirmed.
type Confirmed = (Vec<(u64, String)>, Vec<String>);

/// What the work loop confirmed, read after the kill.
static WORK: std::sync::Mutex<Confirmed> = std::sync::Mutex::new((Vec::new(), Vec::new()));

#[derive(Clone)]
struct Remote {
    client: reqwest::Client,
    base: String,
}

impl Remote {
    async fn get(&self, path: &str) -> (u16, Value) {
        match self.client.get(format!("{}{path}", self.base)).send().await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        match self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    async fn upload(&self, csv: &[u8]) -> Option<String> {
        let r = self
            .client
            .post(format!("{}/v1/datasets?target=species", self.base))
            .header("content-type", "text/csv")
            .body(csv.to_vec())
            .send()
            .await
            .ok()?;
        if r.status() != 201 {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        Some(v["id"].as_str()?.to_string())
    }

    async fn predict(&self, version: u64) -> Option<String> {
        let r = self
            .client
            .post(format!(
                "{}/v1/models/k/predict?version={version}",
                self.base
            ))
            .header("content-type", "application/json")
            .body(ROW)
            .send()
            .await
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        Some(v["outputs"].to_string())
    }
}

/// Starts the `mlpd` binary on an ephemeral port; returns it and its base URL.
pub fn start_binary(dir: &Path) -> (Child, String) {
    start_binary_with(dir, &[])
}

/// [`start_binary`] with more flags.
pub fn start_binary_with(dir: &Path, extra: &[&str]) -> (Child, String) {
    let (child, base, _) = start_binary_logged(dir, extra, &[], None);
    (child, base)
}

/// [`start_binary_with`] with environment variables and, if given, an open-file limit (soft
/// and hard: the server cannot raise it); also returns the log lines (JSON) as they come.
pub fn start_binary_logged(
    dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    open_files: Option<u64>,
) -> (Child, String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mlpd"));
    if let Some(n) = open_files {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let mut child = command
        .args([
            "--bind",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--train-workers",
            "1",
        ])
        .args([
            "--max-versions-per-model",
            "100000",
            "--max-finished-jobs",
            "100000",
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .envs(super::helpers::store_env(dir))
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = logs.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "listening"
            {
                let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
            }
            kept.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server logs its address");
    (child, format!("http://{addr}"), logs)
}
