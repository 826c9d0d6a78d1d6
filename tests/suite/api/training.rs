use super::helpers::{expect, expect_error, spawn_app, spawn_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A job that trains for a long time unless canceled (iris, a million epochs).
async fn long_job(app: &super::helpers::TestApp, model: &str, ds: &str) -> String {
    app.train(
        model,
        json!({"dataset_id": ds, "epochs": 1_000_000, "batch_size": 1}),
    )
    .await
}

#[tokio::test]
async fn a_job_runs_to_success_with_history_and_creates_a_version() {
    let app = spawn_app().await;
    app.create_model(
        "iris",
        4,
        json!([{"units": 16, "activation": "relu"}, {"units": 3, "activation": "softmax"}]),
    )
    .await;
    let ds = app.upload("iris.csv", "species").await;
    let r = app.post("/v1/models/iris/train", &json!({"dataset_id": ds, "epochs": 30, "learning_rate": 0.02, "validation_split": 0.2})).await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let job = expect(r, StatusCode::ACCEPTED).await;
    assert!(matches!(
        job["status"].as_str(),
        Some("queued" | "running" | "succeeded")
    ));
    assert_eq!(loc, format!("/v1/jobs/{}", job["id"].as_str().unwrap()));
    assert_eq!(
        job["params"]["normalize"], "standard",
        "defaults are filled in"
    );
    let done = app.wait_done(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        (done["epoch"].as_u64(), done["progress"].as_f64()),
        (Some(30), Some(1.0))
    );
    assert_eq!(done["model_version"], 1);
    let id = job["id"].as_str().unwrap();
    // The view carries the last epochs; the history has its own paged route.
    let recent = done["recent_epochs"].as_array().unwrap();
    assert_eq!(
        recent
            .iter()
            .map(|h| h["epoch"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        (21..=30).collect::<Vec<_>>()
    );
    assert!(done.get("history").is_none());
    let page = expect(
        app.get(&format!("/v1/jobs/{id}/history?limit=25")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (&page["total"], &page["next_offset"], &page["status"]),
        (&json!(30), &json!(25), &json!("succeeded"))
    );
    let rest = expect(
        app.get(&format!("/v1/jobs/{id}/history?offset=25&limit=25"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(rest.get("next_offset").is_none(), "{rest}");
    let mut history = page["epochs"].as_array().unwrap().clone();
    history.extend(rest["epochs"].as_array().unwrap().iter().cloned());
    assert_eq!(&history[20..], &recent[..]);
    assert_eq!(history.len(), 30);
    for (i, h) in history.iter().enumerate() {
        assert_eq!(h["epoch"], i + 1);
        assert!(
            h["cost"].as_f64().unwrap().is_finite()
                && h["val_cost"].is_f64()
                && h["val_accuracy"].is_f64(),
            "{h}"
        );
    }
    assert!(
        history[29]["cost"].as_f64() < history[0]["cost"].as_f64(),
        "the cost fell"
    );
    for ts in ["created_at", "started_at", "finished_at"] {
        let s = done[ts].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts}: {s}"
        );
    }
    // A second job makes version 2.
    let j2 = app
        .train("iris", json!({"dataset_id": ds, "epochs": 2}))
        .await;
    assert_eq!(app.wait_done(&j2).await["model_version"], 2);
}

#[tokio::test]
async fn inline_datasets_train_too() {
    let app = spawn_app().await;
    app.create_model("lin", 1, json!([{"units": 1, "activation": "identity"}]))
        .await;
    let inputs: Vec<Value> = (0..40).map(|i| json!([i as f64 / 10.0])).collect();
    let targets: Vec<Value> = (0..40)
        .map(|i| json!([3.0 * i as f64 / 10.0 + 100.0]))
        .collect();
    let job = app.train("lin", json!({"dataset": {"inputs": inputs, "targets": targets}, "epochs": 300, "learning_rate": 0.05, "batch_size": 8})).await;
    let done = app.wait_done(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done.get("dataset_id").is_none());
    let p = expect(
        app.post("/v1/models/lin/predict", &json!({"inputs": [[2.0]]}))
            .await,
        StatusCode::OK,
    )
    .await;
    let y = p["outputs"][0][0].as_f64().unwrap();
    assert!((y - 106.0).abs() < 0.5, "y = 3x + 100 at x = 2: {y}");
}

#[tokio::test]
async fn bad_training_requests_are_422_naming_the_field_and_queue_nothing() {
    let app = spawn_app().await;
    app.create_model("m", 4, json!([{"units": 3, "activation": "softmax"}]))
        .await;
    let ds = app.upload("iris.csv", "species").await;
    let wine = app.upload("wine.csv", "cultivar").await;
    let cases = [
        (json!({"dataset_id": ds, "epochs": 0}), "epochs"),
        (
            json!({"dataset_id": ds, "learning_rate": 0}),
            "learning_rate",
        ),
        (
            json!({"dataset_id": ds, "learning_rate": -0.1}),
            "learning_rate",
        ),
        (json!({"dataset_id": ds, "batch_size": 0}), "batch_size"),
        (
            json!({"dataset_id": ds, "validation_split": 1.0}),
            "validation_split",
        ),
        (
            json!({"dataset_id": ds, "validation_split": -0.1}),
            "validation_split",
        ),
        (
            json!({"dataset_id": ds, "optimizer": "rmsprop"}),
            "optimizer",
        ),
        (
            json!({"dataset_id": ds, "optimizer": {"type": "adam", "beta1": 1.5}}),
            "optimizer.beta1",
        ),
        (
            json!({"dataset_id": ds, "optimizer": {"type": "momentum", "momentum": 1.0}}),
            "optimizer.momentum",
        ),
        (
            json!({"dataset_id": ds, "normalize": "zscore"}),
            "normalize",
        ),
        (
            json!({"dataset_id": ds, "early_stopping": {"patience": 0}}),
            "early_stopping.patience",
        ),
        (json!({"dataset_id": ds, "max_seconds": 0}), "max_seconds"),
        (
            json!({"dataset_id": ds, "lr_schedule": {"type": "step", "step_size": 0, "gamma": 0.5}}),
            "lr_schedule.step_size",
        ),
        (json!({"dataset_id": ds, "epochs": "ten"}), "epochs"),
        (json!({"dataset_id": ds, "epochz": 3}), "epochz"),
        (json!({"epochs": 3}), "dataset_id"),
        (json!({"dataset_id": wine}), "dataset"),
        (
            json!({"dataset": {"inputs": [[1.0, 2.0]], "labels": ["a"]}}),
            "labels",
        ),
    ];
    for (body, field) in cases {
        let err = expect_error(
            app.post("/v1/models/m/train", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let got = err["field"].as_str().unwrap_or("body");
        assert!(got.starts_with(field), "{body}: field {got}, want {field}");
    }
    expect_error(
        app.post("/v1/models/nope/train", &json!({"dataset_id": ds}))
            .await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
    let missing = uuid::Uuid::new_v4();
    expect_error(
        app.post("/v1/models/m/train", &json!({"dataset_id": missing}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let jobs = expect(app.get("/v1/jobs").await, StatusCode::OK).await;
    assert_eq!(jobs["total"], 0, "no job was queued");
}

#[tokio::test]
async fn cancel_stops_a_running_job_and_the_old_version_keeps_serving() {
    let app = spawn_app().await;
    let ds = app.trained_iris("iris").await;
    let job = long_job(&app, "iris", &ds).await;
    app.wait_job(&job, |j| j["epoch"].as_u64() >= Some(1)).await;
    // While it trains: the model can't be deleted, nor its dataset.
    expect_error(
        app.delete("/v1/models/iris").await,
        StatusCode::CONFLICT,
        "model_busy",
    )
    .await;
    expect_error(
        app.delete(&format!("/v1/datasets/{ds}")).await,
        StatusCode::CONFLICT,
        "dataset_in_use",
    )
    .await;
    let t = std::time::Instant::now();
    expect(
        app.post(&format!("/v1/jobs/{job}/cancel"), &json!({}))
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    let done = app.wait_done(&job).await;
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "stopped within a mini-batch, not an epoch"
    );
    assert_eq!(done["status"], "canceled");
    assert!(done.get("model_version").is_none());
    let p = expect(
        app.post(
            "/v1/models/iris/predict",
            &json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["version"], 1);
    expect_error(
        app.post(&format!("/v1/jobs/{job}/cancel"), &json!({}))
            .await,
        StatusCode::CONFLICT,
        "job_finished",
    )
    .await;
    expect_error(
        app.post(
            &format!("/v1/jobs/{}/cancel", uuid::Uuid::new_v4()),
            &json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    )
    .await;
    // Now they can go.
    expect(
        app.delete(&format!("/v1/datasets/{ds}")).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect(app.delete("/v1/models/iris").await, StatusCode::NO_CONTENT).await;
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_queued_jobs_cancel_at_once() {
    let app = spawn_with(|c| {
        c.train_workers = 1;
        c.queue_capacity = 1;
    })
    .await;
    app.create_model("m", 4, json!([{"units": 3, "activation": "softmax"}]))
        .await;
    let ds = app.upload("iris.csv", "species").await;
    let running = long_job(&app, "m", &ds).await;
    app.wait_job(&running, |j| j["status"] == "running").await;
    let queued = long_job(&app, "m", &ds).await;
    let r = app
        .post("/v1/models/m/train", &json!({"dataset_id": ds}))
        .await;
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "queue_full").await;
    let c = expect(
        app.post(&format!("/v1/jobs/{queued}/cancel"), &json!({}))
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(c["status"], "canceled", "a queued job is canceled at once");
    expect(
        app.post(&format!("/v1/jobs/{running}/cancel"), &json!({}))
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(app.wait_done(&running).await["status"], "canceled");
}

/// Regression: a job canceled while queued used to keep its queue slot, so a queue emptied by
/// cancels still answered 429 while `mlpd_queue_depth` said 0.
#[tokio::test]
async fn jobs_canceled_while_queued_give_their_queue_slots_back() {
    let app = spawn_with(|c| {
        c.train_workers = 1;
        c.queue_capacity = 2;
    })
    .await;
    app.create_model("m", 4, json!([{"units": 3, "activation": "softmax"}]))
        .await;
    let ds = app.upload("iris.csv", "species").await;
    let running = long_job(&app, "m", &ds).await;
    app.wait_job(&running, |j| j["status"] == "running").await;
    let queued = [
        long_job(&app, "m", &ds).await,
        long_job(&app, "m", &ds).await,
    ];
    let r = app
        .post("/v1/models/m/train", &json!({"dataset_id": ds}))
        .await;
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "queue_full").await;
    for id in &queued {
        let c = expect(
            app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await,
            StatusCode::ACCEPTED,
        )
        .await;
        assert_eq!(c["status"], "canceled");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l == "mlpd_queue_depth 0"),
        "{metrics}"
    );
    // Both slots are free again, while the first job still runs.
    let again = [
        long_job(&app, "m", &ds).await,
        long_job(&app, "m", &ds).await,
    ];
    let r = app
        .post("/v1/models/m/train", &json!({"dataset_id": ds}))
        .await;
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "queue_full").await;
    for id in again.iter().chain([&running]) {
        app.post(&format!("/v1/jobs/{id}/cancel"), &json!({})).await;
        assert_eq!(app.wait_done(id).await["status"], "canceled");
    }
}

#[tokio::test]
async fn jobs_are_listed_newest_first_with_filters_and_pages() {
    let app = spawn_app().await;
    app.create_model("a", 4, json!([{"units": 3, "activation": "softmax"}]))
        .await;
    app.create_model("b", 4, json!([{"units": 3, "activation": "softmax"}]))
        .await;
    let ds = app.upload("iris.csv", "species").await;
    let mut ids = Vec::new();
    for m in ["a", "b", "a"] {
        let id = app.train(m, json!({"dataset_id": ds, "epochs": 2})).await;
        app.wait_done(&id).await;
        ids.push(id);
    }
    let all = expect(app.get("/v1/jobs").await, StatusCode::OK).await;
    assert_eq!(all["total"], 3);
    let listed: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    assert!(
        all["jobs"][0].get("recent_epochs").is_none(),
        "lists omit epochs"
    );
    let a = expect(
        app.get("/v1/jobs?model=a&status=succeeded").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(a["total"], 2);
    let page = expect(app.get("/v1/jobs?limit=2").await, StatusCode::OK).await;
    assert_eq!(
        (
            page["jobs"].as_array().unwrap().len(),
            page["next_offset"].as_u64()
        ),
        (2, Some(2))
    );
    let last = expect(app.get("/v1/jobs?limit=2&offset=2").await, StatusCode::OK).await;
    assert_eq!(last["jobs"][0]["id"], ids[0].as_str());
    assert!(last.get("next_offset").is_none());
    expect_error(
        app.get("/v1/jobs?status=sleeping").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        app.get("/v1/jobs?limit=0").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        app.get(&format!("/v1/jobs/{}", uuid::Uuid::new_v4())).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    )
    .await;
}

#[tokio::test]
async fn a_diverging_job_fails_with_a_clear_error() {
    let app = spawn_app().await;
    app.create_model(
        "r",
        10,
        json!([{"units": 32, "activation": "relu"}, {"units": 1, "activation": "identity"}]),
    )
    .await;
    let ds = app.upload("diabetes.csv", "progression").await;
    let job = app
        .train("r", json!({"dataset_id": ds, "epochs": 50, "optimizer": "sgd", "learning_rate": 1e6, "normalize": "none", "normalize_targets": false}))
        .await;
    let done = app.wait_done(&job).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "diverged");
    assert!(done["error"]["message"].as_str().unwrap().contains("epoch"));
    expect_error(
        app.post("/v1/models/r/predict", &json!({"inputs": [vec![0.0; 10]]}))
            .await,
        StatusCode::CONFLICT,
        "model_not_trained",
    )
    .await;
}

#[tokio::test]
async fn shutdown_interrupts_running_jobs_and_ends_within_the_grace_period() {
    let app = spawn_app().await;
    app.create_model("m", 4, json!([{"units": 3, "activation": "softmax"}]))
        .await;
    let ds = app.upload("iris.csv", "species").await;
    let job = long_job(&app, "m", &ds).await;
    app.wait_job(&job, |j| j["status"] == "running").await;
    let mut sse = super::helpers::Sse::open(&app, &format!("/v1/jobs/{job}/events"), None).await;
    let t = std::time::Instant::now();
    app.stop().await;
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    // The stream ended with its end event carrying the final state.
    let mut last = None;
    while let Some(e) = sse.next().await {
        last = Some(e);
    }
    let end = last.expect("events");
    assert_eq!(end.event, "end");
    assert_eq!(end.data["status"], "failed");
    assert_eq!(end.data["error"]["code"], "interrupted");
}
