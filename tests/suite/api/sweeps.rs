//! Hyperparameter sweeps: a grid whose best trial (by the trials' own reported metrics) is
//! pinned, reproducible random draws, the event stream, cancel, a restart in the middle, a
//! sweep larger than the queue refused whole, and bad inputs refused with nothing created.

use super::helpers::{Sse, TestApp, expect, expect_error, on_postgres, spawn_app, spawn_with};
use super::persistence::temp_dir;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const IRIS_LAYERS: &str =
    r#"[{"units": 16, "activation": "relu"}, {"units": 3, "activation": "softmax"}]"#;

/// An iris model and dataset: the dataset id.
async fn iris(app: &TestApp, name: &str) -> String {
    app.create_model(name, 4, serde_json::from_str(IRIS_LAYERS).unwrap())
        .await;
    app.upload("iris.csv", "species").await
}

async fn start(app: &TestApp, model: &str, body: Value) -> Value {
    let r = app.post(&format!("/v1/models/{model}/sweeps"), &body).await;
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let sweep = expect(r, StatusCode::ACCEPTED).await;
    assert_eq!(
        location.as_deref(),
        Some(format!("/v1/sweeps/{}", sweep["id"].as_str().unwrap()).as_str())
    );
    assert_eq!(sweep["status"], "running", "{sweep}");
    sweep
}

async fn sweep(app: &TestApp, id: &str) -> Value {
    expect(app.get(&format!("/v1/sweeps/{id}")).await, StatusCode::OK).await
}

/// Polls a sweep until it has ended (60 s at most).
async fn wait_ended(app: &TestApp, id: &str) -> Value {
    let t = Instant::now();
    loop {
        let s = sweep(app, id).await;
        if s["status"] != "running" {
            return s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "sweep never ended: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls a sweep until one of its trials runs; returns that trial's index.
async fn wait_running(app: &TestApp, id: &str) -> usize {
    let t = Instant::now();
    loop {
        let s = sweep(app, id).await;
        if let Some(i) = s["trials"]
            .as_array()
            .unwrap()
            .iter()
            .position(|t| t["status"] == "running")
        {
            return i;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no trial runs: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn job(app: &TestApp, id: &Value) -> Value {
    let id = id.as_str().unwrap();
    expect(app.get(&format!("/v1/jobs/{id}")).await, StatusCode::OK).await
}

async fn totals(app: &TestApp) -> (Value, Value) {
    let s = expect(app.get("/v1/sweeps").await, StatusCode::OK).await;
    let j = expect(app.get("/v1/jobs").await, StatusCode::OK).await;
    (s["total"].clone(), j["total"].clone())
}

#[tokio::test]
async fn a_grid_sweep_pins_the_trial_with_the_best_validation_cost() {
    let app = spawn_app().await;
    let ds = iris(&app, "iris").await;
    let created = start(
        &app,
        "iris",
        json!({
            "dataset_id": ds,
            "params": {"epochs": 25, "validation_split": 0.3, "seed": 3, "optimizer": "sgd"},
            "grid": {"learning_rate": [0.3, 0.05, 0.005], "batch_size": [8, 64]},
            "metric": "val_cost",
            "pin_best": true
        }),
    )
    .await;
    assert_eq!(created["trials"].as_array().unwrap().len(), 6);
    assert_eq!(created["progress"]["trials"], 6);
    let id = created["id"].as_str().unwrap().to_string();
    let done = wait_ended(&app, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["progress"]["ended"], 6);
    assert_eq!(done["progress"]["fraction"], 1.0);

    // Every trial is an ordinary job with its own parameters and reported metrics.
    let mut best: Option<(usize, f64)> = None;
    for (i, t) in done["trials"].as_array().unwrap().iter().enumerate() {
        assert_eq!(t["index"], i);
        let j = job(&app, &t["job_id"]).await;
        assert_eq!(j["status"], "succeeded", "{j}");
        assert_eq!(j["params"]["learning_rate"], t["params"]["learning_rate"]);
        assert_eq!(j["params"]["batch_size"], t["params"]["batch_size"]);
        assert_eq!(j["params"]["validation_split"], 0.3);
        let cost = j["metrics"]["val_cost"]
            .as_f64()
            .expect("the job reports val_cost");
        assert_eq!(t["metric"].as_f64(), Some(cost), "trial {i}");
        assert_eq!(t["model_version"], j["model_version"]);
        if best.is_none_or(|(_, b)| cost < b) {
            best = Some((i, cost));
        }
    }
    // The grid in name order: batch_size varies slowest.
    let values: Vec<(Value, Value)> = done["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["params"]["batch_size"].clone(),
                t["params"]["learning_rate"].clone(),
            )
        })
        .collect();
    assert_eq!(
        values,
        [
            (json!(8), json!(0.3)),
            (json!(8), json!(0.05)),
            (json!(8), json!(0.005)),
            (json!(64), json!(0.3)),
            (json!(64), json!(0.05)),
            (json!(64), json!(0.005)),
        ]
    );
    let (best_index, best_cost) = best.unwrap();
    assert_eq!(done["best"]["index"], best_index, "{done}");
    assert_eq!(done["best"]["metric"].as_f64(), Some(best_cost));
    let pinned = done["pinned_version"].clone();
    assert_eq!(pinned, done["best"]["model_version"]);
    let m = expect(app.get("/v1/models/iris").await, StatusCode::OK).await;
    assert_eq!(m["serving_policy"], "pinned", "{m}");
    assert_eq!(m["serving_version"], pinned);
    assert_eq!(m["versions"].as_array().unwrap().len(), 6);
    // Listed, and a finished sweep cannot be canceled.
    let list = expect(app.get("/v1/sweeps?model=iris").await, StatusCode::OK).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["sweeps"][0]["id"], id.as_str());
    expect_error(
        app.post(&format!("/v1/sweeps/{id}/cancel"), &json!({}))
            .await,
        StatusCode::CONFLICT,
        "sweep_finished",
    )
    .await;
}

#[tokio::test]
async fn a_random_search_draws_the_same_trials_from_the_same_seed() {
    let app = spawn_app().await;
    let ds = iris(&app, "iris").await;
    let body = |seed: u64| {
        json!({
            "dataset_id": ds,
            "params": {"epochs": 2, "validation_split": 0.2},
            "random": {"learning_rate": {"min": 1e-4, "max": 1e-1, "log": true},
                       "batch_size": {"min": 4, "max": 128},
                       "l2": {"min": 0, "max": 0.01}},
            "max_trials": 3,
            "seed": seed
        })
    };
    let params = |s: &Value| -> Vec<Value> {
        s["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["params"].clone())
            .collect()
    };
    let a = start(&app, "iris", body(42)).await;
    let b = start(&app, "iris", body(42)).await;
    assert_eq!(a["kind"], "random");
    assert_eq!(a["seed"], 42);
    assert_eq!(params(&a).len(), 3);
    assert_eq!(
        params(&a),
        params(&b),
        "the same seed draws the same trials"
    );
    for p in params(&a) {
        let lr = p["learning_rate"].as_f64().unwrap();
        assert!((1e-4..=1e-1).contains(&lr), "{p}");
        let bs = p["batch_size"].as_u64().unwrap();
        assert!((4..=128).contains(&bs), "{p}");
        let l2 = p["l2"].as_f64().unwrap();
        assert!((0.0..=0.01).contains(&l2), "{p}");
    }
    let distinct: std::collections::HashSet<String> =
        params(&a).iter().map(Value::to_string).collect();
    assert_eq!(distinct.len(), 3, "three different draws");
    for s in [&a, &b] {
        let done = wait_ended(&app, s["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        // The jobs trained with the drawn values.
        for t in done["trials"].as_array().unwrap() {
            let j = job(&app, &t["job_id"]).await;
            assert_eq!(j["params"]["learning_rate"], t["params"]["learning_rate"]);
            assert_eq!(j["params"]["batch_size"], t["params"]["batch_size"]);
            assert_eq!(j["params"]["l2"], t["params"]["l2"]);
        }
    }
    let c = start(&app, "iris", body(43)).await;
    assert_ne!(params(&a), params(&c), "another seed, other draws");
    wait_ended(&app, c["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn the_event_stream_sends_one_event_per_trial_then_the_end() {
    let app = spawn_app().await;
    let ds = iris(&app, "iris").await;
    let created = start(
        &app,
        "iris",
        json!({
            "dataset_id": ds,
            "params": {"epochs": 15, "validation_split": 0.25},
            "grid": {"learning_rate": [0.1, 0.03, 0.01], "l2": [0, 0.0001]},
            "metric": "val_accuracy"
        }),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let events = Sse::open(&app, &format!("/v1/sweeps/{id}/events"), None)
        .await
        .collect()
        .await;
    let (trials, rest) = events.split_at(events.len() - 1);
    assert_eq!(trials.len(), 6, "{events:?}");
    let mut seen: Vec<u64> = trials
        .iter()
        .map(|e| {
            assert_eq!(e.event, "trial", "{e:?}");
            assert_eq!(e.data["status"], "succeeded", "{e:?}");
            assert!(e.data["metric"].as_f64().is_some(), "{e:?}");
            assert_eq!(e.id.as_deref(), Some(e.data["index"].to_string().as_str()));
            e.data["index"].as_u64().unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3, 4, 5], "one event per trial");
    assert_eq!(rest[0].event, "end");
    assert_eq!(rest[0].data["status"], "succeeded");
    assert_eq!(rest[0].data["metric"], "val_accuracy");
    // The best by accuracy is the highest (the first of equals).
    let metrics: Vec<f64> = rest[0].data["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["metric"].as_f64().unwrap())
        .collect();
    let top = metrics.iter().copied().fold(f64::MIN, f64::max);
    let first_top = metrics.iter().position(|&m| m == top).unwrap();
    assert_eq!(rest[0].data["best"]["index"], first_top);
    assert!(
        rest[0].data.get("pinned_version").is_none(),
        "not asked to pin"
    );
    // A stream opened after the end replays every trial, then the end.
    let again = Sse::open(&app, &format!("/v1/sweeps/{id}/events"), None)
        .await
        .collect()
        .await;
    assert_eq!(again.len(), 7);
    assert_eq!(again[6].event, "end");
}

/// Trials that train until stopped.
fn long(ds: &str, n: usize) -> Value {
    let rates: Vec<f64> = (1..=n).map(|i| 0.001 * i as f64).collect();
    json!({
        "dataset_id": ds,
        "params": {"epochs": 1_000_000, "validation_split": 0.2, "batch_size": 1},
        "grid": {"learning_rate": rates}
    })
}

#[tokio::test]
async fn cancel_stops_every_trial_and_ends_the_sweep_canceled() {
    let app = spawn_app().await;
    let ds = iris(&app, "iris").await;
    let created = start(&app, "iris", long(&ds, 4)).await;
    let id = created["id"].as_str().unwrap().to_string();
    // Two workers: trials run, others wait.
    wait_running(&app, &id).await;
    let r = app
        .post(&format!("/v1/sweeps/{id}/cancel"), &json!({}))
        .await;
    let answer = expect(r, StatusCode::ACCEPTED).await;
    assert_eq!(answer["cancel_requested"], true);
    let done = wait_ended(&app, &id).await;
    assert_eq!(done["status"], "canceled", "{done}");
    assert!(done.get("pinned_version").is_none());
    for t in done["trials"].as_array().unwrap() {
        assert_eq!(t["status"], "canceled", "{t}");
        assert_eq!(job(&app, &t["job_id"]).await["status"], "canceled");
    }
    expect_error(
        app.post(&format!("/v1/sweeps/{id}/cancel"), &json!({}))
            .await,
        StatusCode::CONFLICT,
        "sweep_finished",
    )
    .await;
    expect_error(
        app.post(
            &format!("/v1/sweeps/{}/cancel", uuid::Uuid::new_v4()),
            &json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "sweep_not_found",
    )
    .await;
}

#[tokio::test]
async fn a_restart_ends_the_unfinished_trials_interrupted_and_then_the_sweep() {
    let dir = temp_dir("sweep-restart");
    let in_dir = |dir: std::path::PathBuf| {
        spawn_with(move |c| {
            c.data_dir = dir;
            c.train_workers = 1;
        })
    };
    let app = in_dir(dir.clone()).await;
    let ds = iris(&app, "iris").await;
    // Each trial stops by itself after 3 s (so that, on PostgreSQL, where queued jobs stay
    // queued over a restart for the next replica, the trials not yet run finish in time).
    let mut body = long(&ds, 3);
    body["params"]["max_seconds"] = json!(3);
    let created = start(&app, "iris", body).await;
    let id = created["id"].as_str().unwrap().to_string();
    let running = wait_running(&app, &id).await;
    app.stop().await;

    let app = in_dir(dir.clone()).await;
    let done = wait_ended(&app, &id).await;
    assert_eq!(done["status"], "interrupted", "{done}");
    let trials = done["trials"].as_array().unwrap();
    // The trial running at the stop was interrupted, on either backend.
    assert_eq!(trials[running]["status"], "failed", "{done}");
    assert_eq!(trials[running]["error"], "interrupted", "{done}");
    for (i, t) in trials.iter().enumerate() {
        if i == running {
            continue;
        }
        let j = job(&app, &t["job_id"]).await;
        assert_eq!(t["status"], j["status"]);
        if on_postgres() {
            // Queued trials stayed queued in the shared queue and ran after the restart.
            assert_eq!(j["status"], "succeeded", "{j}");
        } else {
            // The embedded queue lives in the process: its trials ended with it.
            assert_eq!(j["status"], "failed", "{j}");
            assert_eq!(j["error"]["code"], "interrupted", "{j}");
        }
    }
    assert!(done.get("pinned_version").is_none());
    app.stop().await;
    super::helpers::remove_store(&dir);
}

#[tokio::test]
async fn a_sweep_larger_than_the_queue_is_refused_whole() {
    // One worker, eight queue places.
    let app = spawn_with(|c| {
        c.train_workers = 1;
        c.queue_capacity = 8;
    })
    .await;
    let ds = iris(&app, "iris").await;
    let r = app.post("/v1/models/iris/sweeps", &long(&ds, 9)).await;
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "queue_full").await;
    assert_eq!(totals(&app).await, (json!(0), json!(0)), "nothing queued");

    // Six trials: one runs, five wait, three places are left.
    let a = start(&app, "iris", long(&ds, 6)).await;
    wait_running(&app, a["id"].as_str().unwrap()).await;
    let r = app.post("/v1/models/iris/sweeps", &long(&ds, 4)).await;
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "queue_full").await;
    assert_eq!(
        totals(&app).await,
        (json!(1), json!(6)),
        "nothing more queued"
    );
    let b = start(&app, "iris", long(&ds, 3)).await;
    assert_eq!(totals(&app).await, (json!(2), json!(9)));
    for s in [&a, &b] {
        let id = s["id"].as_str().unwrap();
        let r = app
            .post(&format!("/v1/sweeps/{id}/cancel"), &json!({}))
            .await;
        expect(r, StatusCode::ACCEPTED).await;
        assert_eq!(wait_ended(&app, id).await["status"], "canceled");
    }
}

#[tokio::test]
async fn bad_sweeps_are_clear_errors_that_create_nothing() {
    let app = spawn_app().await;
    let ds = iris(&app, "iris").await;
    app.create_model("line", 1, json!([{"units": 1, "activation": "identity"}]))
        .await;
    let good = json!({
        "dataset_id": ds,
        "params": {"epochs": 2, "validation_split": 0.2},
        "grid": {"learning_rate": [0.1]}
    });
    let with = |patch: Value| {
        let mut b = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    expect_error(
        app.post("/v1/models/nope/sweeps", &good).await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
    let cases = [
        (json!({"grid": {"l2": []}}), "grid.l2"),
        (json!({"grid": {"momentum": [0.9]}}), "grid.momentum"),
        (json!({"grid": {}}), "grid"),
        (json!({"grid": {"batch_size": [0]}}), "grid.batch_size"),
        (
            json!({"grid": {"learning_rate": [-1]}}),
            "grid.learning_rate",
        ),
        (json!({"grid": null}), "grid"),
        (
            json!({"grid": null, "random": {"learning_rate": {"min": 0.1, "max": 0.01}}, "max_trials": 2}),
            "random.learning_rate",
        ),
        (
            json!({"grid": null, "random": {"l2": {"min": 0, "max": 1, "log": true}}, "max_trials": 2}),
            "random.l2",
        ),
        (
            json!({"grid": null, "random": {"l2": {"min": 0, "max": 1}}, "max_trials": 0}),
            "max_trials",
        ),
        (json!({"max_trials": 3}), "max_trials"),
        (json!({"params": {"epochs": 2}}), "params.validation_split"),
        (
            json!({"params": {"validation_split": 0.2, "dataset_id": ds}}),
            "params",
        ),
        (json!({"dataset_id": uuid::Uuid::new_v4()}), "dataset_id"),
    ];
    for (patch, field) in cases {
        let e = expect_error(
            app.post("/v1/models/iris/sweeps", &with(patch.clone()))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(e["field"], field, "{patch}: {e}");
    }
    // No accuracy without classes.
    let e = expect_error(
        app.post(
            "/v1/models/line/sweeps",
            &with(json!({"metric": "val_accuracy"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(e["field"], "metric");
    let r = app
        .post("/v1/models/iris/sweeps", &with(json!({"metric": "cost"})))
        .await;
    assert!(r.status().is_client_error());
    assert_eq!(totals(&app).await, (json!(0), json!(0)), "nothing created");
    expect_error(
        app.get(&format!("/v1/sweeps/{}", uuid::Uuid::new_v4()))
            .await,
        StatusCode::NOT_FOUND,
        "sweep_not_found",
    )
    .await;
    expect_error(
        app.get("/v1/sweeps?limit=0").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_sweep_one_sweep() {
    let app = spawn_app().await;
    let ds = iris(&app, "iris").await;
    let body = json!({
        "dataset_id": ds,
        "params": {"epochs": 2, "validation_split": 0.2},
        "grid": {"batch_size": [16, 32]}
    });
    let send = || {
        app.client
            .post(app.url("/v1/models/iris/sweeps"))
            .header("idempotency-key", "sweep-once")
            .json(&body)
            .send()
    };
    let first = expect(send().await.unwrap(), StatusCode::ACCEPTED).await;
    let r = send().await.unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again = expect(r, StatusCode::ACCEPTED).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(totals(&app).await, (json!(1), json!(2)));
    wait_ended(&app, first["id"].as_str().unwrap()).await;
}
