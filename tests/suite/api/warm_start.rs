//! Warm starts: a job that begins from a stored version's weights (`init_from_version`).

use super::helpers::{TestApp, expect, expect_error, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn job(app: &TestApp, id: &str) -> Value {
    let done = app.wait_done(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let history = expect(
        app.get(&format!("/v1/jobs/{id}/history?limit=1000")).await,
        StatusCode::OK,
    )
    .await;
    json!({"job": done, "history": history})
}

fn costs(j: &Value) -> Vec<f64> {
    let h = &j["history"];
    let list = h.get("epochs").or_else(|| h.get("history")).unwrap_or(h);
    list.as_array()
        .unwrap_or_else(|| panic!("history: {h}"))
        .iter()
        .map(|e| e["cost"].as_f64().unwrap())
        .collect()
}

const PARAMS: &str = r#"{"epochs": 8, "learning_rate": 0.01, "batch_size": 16, "seed": 5}"#;

fn params(extra: Value, ds: &str) -> Value {
    let mut p: Value = serde_json::from_str(PARAMS).unwrap();
    p["dataset_id"] = json!(ds);
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

#[tokio::test]
async fn a_warm_start_continues_from_its_parent_and_twice_the_same_gives_the_same_bits() {
    let app = spawn_app().await;
    app.create_model(
        "iris",
        4,
        json!([{"units": 16, "activation": "relu"}, {"units": 3, "activation": "softmax"}]),
    )
    .await;
    let ds = app.upload("iris.csv", "species").await;
    let fresh = app.train("iris", params(json!({}), &ds)).await;
    let fresh = job(&app, &fresh).await;
    let v1 = expect(app.get("/v1/models/iris/versions/1").await, StatusCode::OK).await;
    assert!(v1.get("parent_version").is_none(), "{v1}");

    let warm = app
        .train("iris", params(json!({"init_from_version": 1}), &ds))
        .await;
    let warm = job(&app, &warm).await;
    assert_eq!(warm["job"]["init_from_version"], 1);
    let v2 = expect(app.get("/v1/models/iris/versions/2").await, StatusCode::OK).await;
    assert_eq!(v2["parent_version"], 1, "{v2}");
    let (c1, c2) = (costs(&fresh), costs(&warm));
    // It starts where version 1 ended, not from scratch, and goes lower.
    assert!(c2[0] < c1[0] * 0.8, "fresh {c1:?} warm {c2:?}");
    assert!(
        v2["metrics"]["cost"].as_f64().unwrap() < v1["metrics"]["cost"].as_f64().unwrap(),
        "v1 {v1} v2 {v2}"
    );
    // The version's scaling is reused unless asked otherwise.
    assert_eq!(v2["signature"], v1["signature"]);

    // The same request again: identical weights, bit for bit.
    let again = app
        .train("iris", params(json!({"init_from_version": 1}), &ds))
        .await;
    job(&app, &again).await;
    let e2 = expect(
        app.get("/v1/models/iris/versions/2/export").await,
        StatusCode::OK,
    )
    .await;
    let e3 = expect(
        app.get("/v1/models/iris/versions/3/export").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(e2["model"], e3["model"]);
    assert_ne!(
        e2["model"],
        expect(
            app.get("/v1/models/iris/versions/1/export").await,
            StatusCode::OK
        )
        .await["model"]
    );

    // Refitting the scaling is a choice, and trains too.
    let refit = app
        .train(
            "iris",
            params(json!({"init_from_version": 2, "refit_scaling": true}), &ds),
        )
        .await;
    let refit = job(&app, &refit).await;
    assert_eq!(refit["job"]["init_from_version"], 2);
}

#[tokio::test]
async fn a_warm_start_that_does_not_fit_is_refused_naming_the_field_and_queues_nothing() {
    let app = spawn_app().await;
    let ds = app.trained_iris("iris").await;
    let jobs = |v: &Value| v["total"].as_u64().unwrap();
    let before = jobs(&expect(app.get("/v1/jobs").await, StatusCode::OK).await);
    let e = expect_error(
        app.post(
            "/v1/models/iris/train",
            &params(json!({"init_from_version": 7}), &ds),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(e["field"], "init_from_version", "{e}");
    let e = expect_error(
        app.post(
            "/v1/models/iris/train",
            &params(json!({"refit_scaling": true}), &ds),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(e["field"], "refit_scaling", "{e}");
    // Data with as many classes as version 1 learned, but other ones.
    let two = json!({"target": "species", "records": [
        {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2, "species": "setosa"},
        {"sepal_length_cm": 6.1, "sepal_width_cm": 2.5, "petal_length_cm": 4.4, "petal_width_cm": 1.2, "species": "versicolor"},
        {"sepal_length_cm": 4.9, "sepal_width_cm": 3.0, "petal_length_cm": 1.4, "petal_width_cm": 0.2, "species": "setosa"},
        {"sepal_length_cm": 5.9, "sepal_width_cm": 3.0, "petal_length_cm": 4.2, "petal_width_cm": 1.5, "species": "hybrid"}]});
    let e = expect_error(
        app.post(
            "/v1/models/iris/train",
            &json!({"dataset": two, "init_from_version": 1}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(e["field"], "init_from_version", "{e}");
    assert!(e["message"].as_str().unwrap().contains("virginica"), "{e}");
    // Data without one of the version's features.
    let short = json!({"target": "species", "records": [
        {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "species": "setosa"},
        {"sepal_length_cm": 6.1, "sepal_width_cm": 2.5, "petal_length_cm": 4.4, "species": "versicolor"},
        {"sepal_length_cm": 7.1, "sepal_width_cm": 2.5, "petal_length_cm": 6.4, "species": "virginica"}]});
    let e = expect_error(
        app.post(
            "/v1/models/iris/train",
            &json!({"dataset": short, "init_from_version": 1}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(
        e["message"].as_str().unwrap().contains("petal_width_cm"),
        "{e}"
    );
    let after = jobs(&expect(app.get("/v1/jobs").await, StatusCode::OK).await);
    assert_eq!(before, after, "nothing was queued");
}
