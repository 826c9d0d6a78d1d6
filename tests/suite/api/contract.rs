//! Behaviour the OpenAPI document promises at its edges (each found by schemathesis first).

use super::helpers::{expect, expect_error, spawn_app, spawn_with};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn integral_numbers_are_integer_labels_and_fractions_are_refused() {
    let app = spawn_app().await;
    let inputs = json!([[0.0], [1.0], [2.0], [3.0]]);
    let r = app
        .post(
            "/v1/datasets",
            &json!({"inputs": inputs, "labels": [1.0, 2, 1, 2.0]}),
        )
        .await;
    let d = expect(r, StatusCode::CREATED).await;
    assert_eq!(d["classes"], json!({"type": "int", "values": [1, 2]}));

    let r = app
        .post(
            "/v1/datasets",
            &json!({"inputs": inputs, "labels": [1.5, 2, 1, 2]}),
        )
        .await;
    let e = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(e["field"], "labels[0]");
    let all = expect(app.get("/v1/datasets").await, StatusCode::OK).await;
    assert_eq!(
        all["datasets"].as_array().unwrap().len(),
        1,
        "nothing stored"
    );
}

#[tokio::test]
async fn unknown_fields_are_refused_at_every_depth() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/models",
            &json!({"name": "m", "inputs": 2,
                    "layers": [{"units": 2, "activation": "softmax", "dropout": 0.5}]}),
        )
        .await;
    let e = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(e["field"], "layers[0].dropout");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `dropout`"),
        "{e}"
    );
    expect_error(
        app.get("/v1/models/m").await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
}

#[tokio::test]
async fn last_event_id_must_be_an_epoch_number() {
    let app = spawn_app().await;
    app.trained_iris("iris").await;
    let jobs = expect(app.get("/v1/jobs").await, StatusCode::OK).await;
    let id = jobs["jobs"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/jobs/{id}/events");
    for bad in ["abc", "-1", "1000001", "4294967296"] {
        let r = app
            .client
            .get(app.url(&path))
            .header("last-event-id", bad)
            .send()
            .await
            .unwrap();
        let e = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(e["field"], "Last-Event-ID", "{bad}");
    }
    // The largest epoch number is accepted: nothing left to replay but the end.
    let r = app
        .client
        .get(app.url(&path))
        .header("last-event-id", "1000000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(!body.contains("event: epoch"), "{body}");
    assert!(body.contains("event: end"), "{body}");
}

#[tokio::test]
async fn job_listing_offset_is_bounded() {
    let app = spawn_app().await;
    let page = expect(app.get("/v1/jobs?offset=1000000000").await, StatusCode::OK).await;
    assert_eq!(page["jobs"], json!([]));
    let e = expect_error(
        app.get("/v1/jobs?offset=1000000001").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(e["field"], "offset");
}

#[tokio::test]
async fn the_server_caps_training_time() {
    let app = spawn_with(|c| c.max_train_seconds = 0.5).await;
    app.create_model(
        "iris",
        4,
        json!([{"units": 8, "activation": "relu"}, {"units": 3, "activation": "softmax"}]),
    )
    .await;
    let ds = app.upload("iris.csv", "species").await;
    // A million epochs, and a longer time limit of its own: the server's cap wins.
    let started = std::time::Instant::now();
    let job = app
        .train(
            "iris",
            json!({"dataset_id": ds, "epochs": 1_000_000, "batch_size": 1, "max_seconds": 60}),
        )
        .await;
    let done = app.wait_done(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["stop_reason"], "time_limit", "{done}");
    assert!(done["epoch"].as_u64().unwrap() < 1_000_000);
    assert!(started.elapsed().as_secs_f64() < 20.0);
    assert_eq!(done["model_version"], 1, "the weights reached are served");
}

#[tokio::test]
async fn inputs_that_overflow_the_network_are_refused_not_answered_with_nulls() {
    let app = spawn_app().await;
    app.trained_iris("iris").await;
    let huge = 3.3e38_f32;
    let r = app
        .post(
            "/v1/models/iris/predict",
            &json!({"inputs": [[5.1, 3.5, 1.4, 0.2], [huge, 2.5e-24, 0.0, huge]]}),
        )
        .await;
    let e = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        e["message"].as_str().unwrap().contains("row 1 overflows"),
        "{e}"
    );
}
