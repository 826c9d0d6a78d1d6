use super::helpers::{expect, expect_error, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn predictions_return_outputs_and_labels_for_one_or_many_rows() {
    let app = spawn_app().await;
    expect_error(
        app.post(
            "/v1/models/iris/predict",
            &json!({"inputs": [[1.0, 2.0, 3.0, 4.0]]}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
    app.create_model(
        "iris",
        4,
        json!([{"units": 16, "activation": "relu"}, {"units": 3, "activation": "softmax"}]),
    )
    .await;
    expect_error(
        app.post(
            "/v1/models/iris/predict",
            &json!({"inputs": [[1.0, 2.0, 3.0, 4.0]]}),
        )
        .await,
        StatusCode::CONFLICT,
        "model_not_trained",
    )
    .await;
    let ds = app.upload("iris.csv", "species").await;
    let job = app
        .train(
            "iris",
            json!({"dataset_id": ds, "epochs": 80, "learning_rate": 0.02, "batch_size": 16}),
        )
        .await;
    app.wait_done(&job).await;
    let p = expect(
        app.post(
            "/v1/models/iris/predict",
            &json!({"inputs": [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [7.7, 3.0, 6.1, 2.3]]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (p["model"].as_str(), p["version"].as_u64()),
        (Some("iris"), Some(1))
    );
    assert_eq!(p["labels"], json!(["setosa", "versicolor", "virginica"]));
    for row in p["outputs"].as_array().unwrap() {
        let sum: f64 = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-5, "softmax rows sum to 1: {row}");
    }
    let v1 = expect(
        app.post(
            "/v1/models/iris/predict?version=1",
            &json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        v1["outputs"][0], p["outputs"][0],
        "same version, same input, same output"
    );
    expect_error(
        app.post(
            "/v1/models/iris/predict?version=7",
            &json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;
}

#[tokio::test]
async fn bad_prediction_inputs_are_422() {
    let app = spawn_app().await;
    app.trained_iris("iris").await;
    let cases = [
        (json!({"inputs": [[1.0, 2.0, 3.0]]}), "inputs[0]"),
        (
            json!({"inputs": [[1.0, 2.0, 3.0, 4.0], [1.0]]}),
            "inputs[1]",
        ),
        (json!({"inputs": []}), "inputs"),
        (
            json!({"inputs": [[1.0, 2.0, "three", 4.0]]}),
            "inputs[0][2]",
        ),
        (json!({"inputs": [[1.0, 2.0, 3.0, 1e300]]}), "inputs[0][3]"),
        (json!({"rows": [[1.0, 2.0, 3.0, 4.0]]}), "rows"),
    ];
    for (body, field) in cases {
        let err = expect_error(
            app.post("/v1/models/iris/predict", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert!(
            err["field"].as_str().unwrap_or("body").starts_with(field),
            "{body}: {err}"
        );
    }
    expect_error(
        app.post(
            "/v1/models/iris/predict?version=x",
            &json!({"inputs": [[1.0, 2.0, 3.0, 4.0]]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

/// While a new version trains, the old one answers promptly; when the job succeeds, a client
/// predicting in a loop sees version 1, then version 2, never an error or a step back.
#[tokio::test]
async fn predictions_keep_flowing_during_training_and_the_new_version_swaps_in_atomically() {
    let app = spawn_app().await;
    let ds = app.trained_iris("iris").await;
    let job = app
        .train(
            "iris",
            json!({"dataset_id": ds, "epochs": 300, "batch_size": 1}),
        )
        .await;
    app.wait_job(&job, |j| j["status"] == "running").await;
    let row = json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]});
    let mut versions = Vec::new();
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let p: Value = expect(
            app.post("/v1/models/iris/predict", &row).await,
            StatusCode::OK,
        )
        .await;
        slowest = slowest.max(t.elapsed());
        let v = p["version"].as_u64().unwrap();
        if versions.last() != Some(&v) {
            versions.push(v);
        }
        if v == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the new version never arrived"
        );
    }
    assert_eq!(versions, [1, 2], "exactly one swap, never back");
    assert!(
        slowest < Duration::from_secs(1),
        "a prediction stalled for {slowest:?} behind training"
    );
    let done = app.wait_done(&job).await;
    assert_eq!(done["model_version"], 2);
}
