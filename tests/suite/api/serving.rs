//! Serving control: pins (promote, roll back), `latest`, aliases, the serving history,
//! retention and deletes sparing pinned and aliased versions, all across a restart.

use super::helpers::{TestApp, expect, expect_error, spawn_app, spawn_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ROW: &str = r#"{"inputs": [[5.9, 3.0, 5.1, 1.8]]}"#;

/// Defines an iris model and uploads the data; returns the dataset id.
async fn iris(app: &TestApp) -> String {
    app.create_model(
        "iris",
        4,
        json!([{"units": 8, "activation": "relu"}, {"units": 3, "activation": "softmax"}]),
    )
    .await;
    app.upload("iris.csv", "species").await
}

/// Trains one more version (seeded differently each time, so versions answer differently).
async fn train(app: &TestApp, ds: &str, seed: u64) -> Value {
    let job = app
        .train(
            "iris",
            json!({"dataset_id": ds, "epochs": 3, "learning_rate": 0.05, "batch_size": 16, "seed": seed}),
        )
        .await;
    let done = app.wait_done(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    done
}

async fn predict(app: &TestApp, query: &str) -> reqwest::Response {
    app.post(
        &format!("/v1/models/iris/predict{query}"),
        &serde_json::from_str(ROW).unwrap(),
    )
    .await
}

/// (version that answered, its outputs for [`ROW`]).
async fn answer(app: &TestApp, query: &str) -> (u64, Vec<f64>) {
    let p = expect(predict(app, query).await, StatusCode::OK).await;
    (p["version"].as_u64().unwrap(), outputs(&p))
}

fn outputs(p: &Value) -> Vec<f64> {
    p["outputs"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5)
}

async fn serving(app: &TestApp) -> Value {
    expect(app.get("/v1/models/iris/serving").await, StatusCode::OK).await
}

fn causes(s: &Value) -> Vec<(String, Value, Value)> {
    s["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["cause"].as_str().unwrap().to_string(),
                h["from"].clone(),
                h["to"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pin_roll_back_and_return_to_latest_while_a_client_predicts() {
    let app = Arc::new(spawn_app().await);
    let ds = iris(&app).await;
    train(&app, &ds, 1).await;
    train(&app, &ds, 2).await;
    let (_, out1) = answer(&app, "?version=1").await;
    let (_, out2) = answer(&app, "?version=2").await;
    assert!(!close(&out1, &out2), "the versions answer differently");

    // A client predicting in a loop records when each request was sent and who answered.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let (v, out) = answer(&app, "").await;
                seen.push((sent, v, out));
            }
            seen
        })
    };
    let pause = || tokio::time::sleep(Duration::from_millis(150));
    pause().await;
    let pin_sent = Instant::now();
    let pinned = expect(
        app.put("/v1/models/iris/serving", &json!({"version": 1}))
            .await,
        StatusCode::OK,
    )
    .await;
    let pinned_at = Instant::now();
    assert_eq!(pinned["policy"], "pinned", "{pinned}");
    assert_eq!(pinned["version"], 1);
    assert_eq!(pinned["change"]["cause"], "pin");
    assert_eq!(
        (
            pinned["change"]["from"].clone(),
            pinned["change"]["to"].clone()
        ),
        (json!(2), json!(1))
    );
    pause().await;
    let unpin_sent = Instant::now();
    let latest = expect(app.delete("/v1/models/iris/serving").await, StatusCode::OK).await;
    let unpinned_at = Instant::now();
    assert_eq!(latest["policy"], "latest", "{latest}");
    assert_eq!(latest["version"], 2);
    assert!(latest.get("pinned_version").is_none(), "{latest}");
    pause().await;
    stop.store(true, Ordering::Relaxed);
    let seen = client.await.unwrap();

    for (sent, v, out) in &seen {
        // No mixed answer: the outputs are those of the version that says it answered.
        let want = if *v == 1 { &out1 } else { &out2 };
        assert!(
            close(out, want),
            "version {v} answered {out:?}, not its own {want:?}"
        );
        // Requests sent after a change was acknowledged see it; before it was asked, not yet.
        if *sent >= unpinned_at {
            assert_eq!(*v, 2, "sent after the unpin");
        } else if *sent >= pinned_at && *sent < unpin_sent {
            assert_eq!(*v, 1, "sent after the pin");
        } else if *sent < pin_sent {
            assert_eq!(*v, 2, "sent before the pin");
        }
    }
    let mut runs: Vec<u64> = seen.iter().map(|s| s.1).collect();
    runs.dedup();
    assert_eq!(runs, [2, 1, 2], "only the chosen changes, never backwards");
    assert!(
        seen.iter()
            .filter(|s| s.0 >= pinned_at && s.0 < unpin_sent)
            .count()
            >= 3,
        "the client predicted while pinned"
    );

    let s = serving(&app).await;
    assert_eq!(
        causes(&s),
        [
            ("unpin".into(), json!(1), json!(2)),
            ("pin".into(), json!(2), json!(1)),
            ("job".into(), json!(1), json!(2)),
            ("job".into(), Value::Null, json!(1)),
        ],
        "{s}"
    );
    assert!(s["history"][0]["at"].is_string());
}

#[tokio::test]
async fn a_job_finishing_under_a_pin_stores_its_version_without_serving_it() {
    let app = spawn_app().await;
    let ds = iris(&app).await;
    train(&app, &ds, 1).await;
    train(&app, &ds, 2).await;
    expect(
        app.put("/v1/models/iris/serving", &json!({"version": 1}))
            .await,
        StatusCode::OK,
    )
    .await;
    let (_, out1) = answer(&app, "?version=1").await;
    let done = train(&app, &ds, 3).await;
    assert_eq!(done["model_version"], 3);
    let (v, out) = answer(&app, "").await;
    assert_eq!(v, 1, "still the pinned version");
    assert!(close(&out, &out1));
    let m = expect(app.get("/v1/models/iris").await, StatusCode::OK).await;
    assert_eq!(m["serving_policy"], "pinned", "{m}");
    assert_eq!(m["serving_version"], 1);
    assert_eq!(m["latest_version"], 3);
    assert_eq!(m["versions"], json!([1, 2, 3]));
    let vs = expect(app.get("/v1/models/iris/versions").await, StatusCode::OK).await;
    let flags: Vec<(bool, bool)> = vs["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["served"].as_bool().unwrap(),
                v["pinned"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(flags, [(true, true), (false, false), (false, false)]);
    assert_eq!(
        causes(&serving(&app).await)[0].0,
        "pin",
        "the job changed nothing served"
    );
    // V2 serves what /v1 serves.
    let meta = expect(app.get("/v2/models/iris").await, StatusCode::OK).await;
    assert_eq!(meta["versions"], json!(["1", "2", "3"]));

    // Promote the new version, then back to latest (which is it too).
    let p = expect(
        app.put("/v1/models/iris/serving", &json!({"version": 3}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["version"], 3);
    assert_eq!(answer(&app, "").await.0, 3);
    let u = expect(app.delete("/v1/models/iris/serving").await, StatusCode::OK).await;
    assert_eq!(
        (u["change"]["from"].clone(), u["change"]["to"].clone()),
        (json!(3), json!(3))
    );
    // Unpinning twice changes nothing and records nothing.
    let again = expect(app.delete("/v1/models/iris/serving").await, StatusCode::OK).await;
    assert!(again.get("change").is_none(), "{again}");
    let h: Vec<String> = causes(&serving(&app).await)
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(h, ["unpin", "pin", "pin", "job", "job"]);
}

#[tokio::test]
async fn aliases_name_versions_for_predict_and_bad_inputs_change_nothing() {
    let app = spawn_app().await;
    let ds = iris(&app).await;
    train(&app, &ds, 1).await;
    train(&app, &ds, 2).await;
    let set = expect(
        app.put("/v1/models/iris/aliases/canary", &json!({"version": 1}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(set["aliases"], json!({"canary": 1}), "{set}");
    assert_eq!(set["change"]["cause"], "alias_set");
    assert_eq!(set["change"]["alias"], "canary");
    assert_eq!(answer(&app, "?alias=canary").await.0, 1);
    assert_eq!(answer(&app, "").await.0, 2, "an alias is not a pin");
    let m = expect(app.get("/v1/models/iris").await, StatusCode::OK).await;
    assert_eq!(m["aliases"], json!({"canary": 1}));
    assert_eq!(m["serving_policy"], "latest");
    let v1 = expect(app.get("/v1/models/iris/versions/1").await, StatusCode::OK).await;
    assert_eq!(v1["aliases"], json!(["canary"]));
    // Moving it.
    let moved = expect(
        app.put("/v1/models/iris/aliases/canary", &json!({"version": 2}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (
            moved["change"]["from"].clone(),
            moved["change"]["to"].clone()
        ),
        (json!(1), json!(2))
    );
    assert_eq!(answer(&app, "?alias=canary").await.0, 2);
    expect(
        app.put("/v1/models/iris/aliases/stable", &json!({"version": 1}))
            .await,
        StatusCode::OK,
    )
    .await;
    let before = serving(&app).await;

    // Bad inputs: each a clear error, and nothing changes.
    let e = expect_error(
        app.put("/v1/models/iris/serving", &json!({"version": 9}))
            .await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains('9'), "{e}");
    let e = expect_error(
        app.put("/v1/models/iris/aliases/next", &json!({"version": 7}))
            .await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains('7'), "{e}");
    for bad in ["9lives", "a%20b", "x.y", "-x"] {
        expect_error(
            app.put(
                &format!("/v1/models/iris/aliases/{bad}"),
                &json!({"version": 1}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    let long = "a".repeat(65);
    expect_error(
        app.put(
            &format!("/v1/models/iris/aliases/{long}"),
            &json!({"version": 1}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    for body in [
        json!({}),
        json!({"version": "1"}),
        json!({"version": 0}),
        json!({"version": 1, "x": 1}),
    ] {
        let r = app.put("/v1/models/iris/serving", &body).await;
        let status = r.status();
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::NOT_FOUND,
            "{body}: {status}"
        );
        if status == StatusCode::NOT_FOUND {
            expect_error(r, StatusCode::NOT_FOUND, "version_not_found").await;
        }
    }
    let e = expect_error(
        app.delete("/v1/models/iris/aliases/nope").await,
        StatusCode::NOT_FOUND,
        "alias_not_found",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("nope"), "{e}");
    let e = expect_error(
        predict(&app, "?alias=nope").await,
        StatusCode::NOT_FOUND,
        "alias_not_found",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("nope"), "{e}");
    let e = expect_error(
        predict(&app, "?version=9").await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains('9'), "{e}");
    expect_error(
        predict(&app, "?alias=9x").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        predict(&app, "?alias=canary&version=1").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        app.put("/v1/models/nomodel/serving", &json!({"version": 1}))
            .await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
    expect_error(
        app.get("/v1/models/iris/serving?limit=1000").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(serving(&app).await, before, "nothing changed");

    // Removing an alias: predict by it is a 404 naming it; the version stays.
    let gone = expect(
        app.delete("/v1/models/iris/aliases/canary").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(gone["aliases"], json!({"stable": 1}));
    assert_eq!(gone["change"]["cause"], "alias_removed");
    expect_error(
        predict(&app, "?alias=canary").await,
        StatusCode::NOT_FOUND,
        "alias_not_found",
    )
    .await;
    assert_eq!(answer(&app, "?version=2").await.0, 2);
}

#[tokio::test]
async fn retention_and_deletes_spare_pinned_and_aliased_versions() {
    let app = spawn_with(|c| c.max_versions_per_model = 2).await;
    let ds = iris(&app).await;
    train(&app, &ds, 1).await;
    expect(
        app.put("/v1/models/iris/aliases/first", &json!({"version": 1}))
            .await,
        StatusCode::OK,
    )
    .await;
    train(&app, &ds, 2).await;
    expect(
        app.put("/v1/models/iris/serving", &json!({"version": 2}))
            .await,
        StatusCode::OK,
    )
    .await;
    for seed in 3..=5 {
        train(&app, &ds, seed).await;
    }
    // Retention keeps the newest two (4, 5) and never the pinned (2) or aliased (1) ones.
    let m = expect(app.get("/v1/models/iris").await, StatusCode::OK).await;
    assert_eq!(m["versions"], json!([1, 2, 4, 5]), "{m}");
    assert_eq!(answer(&app, "").await.0, 2);
    assert_eq!(answer(&app, "?alias=first").await.0, 1);

    let e = expect_error(
        app.delete("/v1/models/iris/versions/1").await,
        StatusCode::CONFLICT,
        "version_in_use",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("first"), "{e}");
    let e = expect_error(
        app.delete("/v1/models/iris/versions/2").await,
        StatusCode::CONFLICT,
        "version_in_use",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("pinned"), "{e}");
    expect_error(
        app.delete("/v1/models/iris/versions/3").await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;
    let m2 = expect(app.get("/v1/models/iris").await, StatusCode::OK).await;
    assert_eq!(
        m2["versions"], m["versions"],
        "refused deletes changed nothing"
    );
    expect(
        app.delete("/v1/models/iris/versions/4").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect_error(
        app.get("/v1/models/iris/versions/4").await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;

    // Under latest, deleting the served version serves the newest left, recorded.
    expect(app.delete("/v1/models/iris/serving").await, StatusCode::OK).await;
    assert_eq!(answer(&app, "").await.0, 5);
    expect(
        app.delete("/v1/models/iris/versions/5").await,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(answer(&app, "").await.0, 2);
    assert_eq!(
        causes(&serving(&app).await)[0],
        ("delete".into(), json!(5), json!(2))
    );
    // Once no longer aliased, the old version is pruned like any other.
    expect(
        app.delete("/v1/models/iris/aliases/first").await,
        StatusCode::OK,
    )
    .await;
    train(&app, &ds, 6).await;
    let m = expect(app.get("/v1/models/iris").await, StatusCode::OK).await;
    assert_eq!(m["versions"], json!([2, 6]), "{m}");
}

#[tokio::test]
async fn pins_aliases_and_history_survive_a_restart() {
    let dir = super::persistence::temp_dir("serving");
    let d = dir.clone();
    let app = spawn_with(move |c| c.data_dir = d).await;
    let ds = iris(&app).await;
    train(&app, &ds, 1).await;
    train(&app, &ds, 2).await;
    expect(
        app.put("/v1/models/iris/serving", &json!({"version": 1}))
            .await,
        StatusCode::OK,
    )
    .await;
    expect(
        app.put("/v1/models/iris/aliases/canary", &json!({"version": 2}))
            .await,
        StatusCode::OK,
    )
    .await;
    let before = serving(&app).await;
    app.stop().await;

    let d = dir.clone();
    let app = spawn_with(move |c| c.data_dir = d).await;
    assert_eq!(serving(&app).await, before);
    assert_eq!(answer(&app, "").await.0, 1);
    assert_eq!(answer(&app, "?alias=canary").await.0, 2);
    // A job after the restart still respects the pin.
    train(&app, &ds, 3).await;
    assert_eq!(answer(&app, "").await.0, 1);
    app.stop().await;
    super::helpers::remove_store(&dir);
}
