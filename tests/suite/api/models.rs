use super::helpers::{expect, expect_error, spawn_app};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn health_answers() {
    let app = spawn_app().await;
    let body = expect(app.get("/health").await, StatusCode::OK).await;
    assert_eq!(body["status"], "ok");
    expect(app.get("/ready").await, StatusCode::OK).await;
}

#[tokio::test]
async fn models_are_created_listed_fetched_and_deleted() {
    let app = spawn_app().await;
    let layers = json!([{"units": 8, "activation": "tanh"}, {"units": 3, "activation": "softmax"}]);
    let r = app
        .post(
            "/v1/models",
            &json!({"name": "m1", "inputs": 4, "layers": layers, "description": "test"}),
        )
        .await;
    assert_eq!(r.headers()["location"], "/v1/models/m1");
    let m = expect(r, StatusCode::CREATED).await;
    assert_eq!(
        m["loss"], "cross_entropy",
        "softmax output defaults to cross-entropy"
    );
    assert_eq!(m["parameters"], 4 * 8 + 8 + 8 * 3 + 3);
    assert_eq!(m["versions"], json!([]));

    expect_error(
        app.post(
            "/v1/models",
            &json!({"name": "m1", "inputs": 4, "layers": layers}),
        )
        .await,
        StatusCode::CONFLICT,
        "model_exists",
    )
    .await;
    let list = expect(app.get("/v1/models").await, StatusCode::OK).await;
    assert_eq!(list["models"].as_array().unwrap().len(), 1);
    let got = expect(app.get("/v1/models/m1").await, StatusCode::OK).await;
    assert_eq!(got["description"], "test");

    expect(app.delete("/v1/models/m1").await, StatusCode::NO_CONTENT).await;
    expect_error(
        app.get("/v1/models/m1").await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
    expect_error(
        app.delete("/v1/models/m1").await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
    // Its serving state went with it (DELETE …/serving only unpins: that state stays).
    expect_error(
        app.get("/v1/models/m1/serving").await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
}

#[tokio::test]
async fn invalid_model_definitions_are_422_naming_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let ok_layers = json!([{"units": 3, "activation": "softmax"}]);
    let cases = [
        (
            json!({"name": "-bad", "inputs": 4, "layers": ok_layers}),
            "name",
        ),
        (
            json!({"name": "a b", "inputs": 4, "layers": ok_layers}),
            "name",
        ),
        (
            json!({"name": "m", "inputs": 0, "layers": ok_layers}),
            "inputs",
        ),
        (json!({"name": "m", "inputs": 4, "layers": []}), "layers"),
        (
            json!({"name": "m", "inputs": 4, "layers": [{"units": 0, "activation": "relu"}]}),
            "layers[0].units",
        ),
        (
            json!({"name": "m", "inputs": 4, "layers": [{"units": 3, "activation": "relux"}]}),
            "layers[0].activation",
        ),
        (
            json!({"name": "m", "inputs": 4, "layers": [{"units": 3, "activation": "softmax"}, {"units": 3, "activation": "relu"}]}),
            "layers[0].activation",
        ),
        (
            json!({"name": "m", "inputs": 4, "layers": [{"units": 2, "activation": "tanh"}], "loss": "cross_entropy"}),
            "loss",
        ),
        (
            json!({"name": "m", "inputs": "four", "layers": ok_layers}),
            "inputs",
        ),
        (
            json!({"name": "m", "inputs": 4, "layers": ok_layers, "colour": "red"}),
            "colour",
        ),
        (
            json!({"name": "m", "inputs": 100000, "layers": [{"units": 60000, "activation": "relu"}]}),
            "layers",
        ),
    ];
    for (body, field) in cases {
        let err = expect_error(
            app.post("/v1/models", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let got = err["field"].as_str().unwrap_or("");
        assert!(
            got.starts_with(field),
            "{body}: field {got}, want {field}: {err}"
        );
    }
    let list = expect(app.get("/v1/models").await, StatusCode::OK).await;
    assert_eq!(list["models"], json!([]), "nothing was created");
}

#[tokio::test]
async fn malformed_bodies_content_types_and_unknown_routes_get_json_errors() {
    let app = spawn_app().await;
    let raw = |ct: Option<&str>, body: &'static str| {
        let mut r = app.client.post(app.url("/v1/models")).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    expect_error(
        raw(Some("application/json"), "{\"name\":").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )
    .await;
    expect_error(
        raw(Some("text/plain"), "{}").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        raw(None, "{}").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        app.get("/v1/nothing").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    )
    .await;
    let r = app.client.put(app.url("/v1/models")).send().await.unwrap();
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    expect_error(
        app.get("/v1/jobs/not-a-uuid").await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    )
    .await;
    expect_error(
        app.get("/v1/models/m/versions/zero").await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = super::helpers::spawn_with(|c| c.max_body_bytes = 1000).await;
    let big = json!({"name": "m", "inputs": 4, "layers": [{"units": 3, "activation": "softmax"}], "description": "x".repeat(2000)});
    expect_error(
        app.post("/v1/models", &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
}

#[tokio::test]
async fn versions_are_listed_and_fetched_after_training() {
    let app = spawn_app().await;
    let ds = app.trained_iris("iris").await;
    let v = expect(app.get("/v1/models/iris/versions").await, StatusCode::OK).await;
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["dataset_id"], ds.as_str());
    assert_eq!(
        versions[0]["labels"]["values"],
        json!(["setosa", "versicolor", "virginica"])
    );
    assert!(versions[0]["metrics"]["accuracy"].as_f64().unwrap() > 0.9);
    let one = expect(app.get("/v1/models/iris/versions/1").await, StatusCode::OK).await;
    assert_eq!(one["params"]["epochs"], 60);
    expect_error(
        app.get("/v1/models/iris/versions/2").await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;
    let m = expect(app.get("/v1/models/iris").await, StatusCode::OK).await;
    assert_eq!(m["latest_version"], 1);
    assert!(m["latest_metrics"]["cost"].as_f64().unwrap() < 0.5);
}
