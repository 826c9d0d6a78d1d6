//! The datasets bundled in the binary: listed with a network that suits each, copied into an
//! ordinary dataset on request (the same as uploading the repo's CSV), and the suggestion trains.

use super::helpers::{expect, expect_error, spawn_app, spawn_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn samples_are_listed_with_their_shape_and_a_model_that_suits_them() {
    let app = spawn_app().await;
    let list = expect(app.get("/v1/samples").await, StatusCode::OK).await;
    let samples = list["samples"].as_array().unwrap();
    let names: Vec<&str> = samples
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["iris", "digits"]);
    let iris = &samples[0];
    assert_eq!(
        (iris["rows"].as_u64(), iris["columns"].as_u64()),
        (Some(150), Some(5))
    );
    assert_eq!(iris["target"], "species");
    assert_eq!(
        iris["model"]["layers"][1],
        json!({"units": 3, "activation": "softmax"})
    );
    let digits = &samples[1];
    assert_eq!(
        (digits["rows"].as_u64(), digits["columns"].as_u64()),
        (Some(1797), Some(65))
    );
    assert_eq!(digits["model"]["layers"][1]["units"], 10);
    assert!(digits["description"].as_str().unwrap().contains("8×8"));
    // Listing stores nothing.
    let datasets = expect(app.get("/v1/datasets").await, StatusCode::OK).await;
    assert_eq!(datasets["datasets"], json!([]));
}

#[tokio::test]
async fn a_sample_becomes_the_same_dataset_as_its_csv_uploaded() {
    let app = spawn_app().await;
    let r = app.post("/v1/samples/iris", &Value::Null).await;
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let made = expect(r, StatusCode::CREATED).await;
    assert_eq!(
        location,
        format!("/v1/datasets/{}", made["id"].as_str().unwrap())
    );
    assert_eq!(made["name"], "iris");
    assert_eq!(made["rows"], 150);
    assert_eq!(made["targets"], json!(["species"]));
    let uploaded_id = app.upload("iris.csv", "species").await;
    let uploaded = expect(
        app.get(&format!("/v1/datasets/{uploaded_id}")).await,
        StatusCode::OK,
    )
    .await;
    for field in [
        "rows",
        "input_width",
        "classes",
        "columns",
        "targets",
        "task",
    ] {
        assert_eq!(made[field], uploaded[field], "{field}");
    }
    let listed = expect(
        app.get(&format!("/v1/datasets/{}", made["id"].as_str().unwrap()))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed, made);

    // The suggested network and parameters train on it, to a useful accuracy.
    let list = expect(app.get("/v1/samples").await, StatusCode::OK).await;
    let iris = &list["samples"][0];
    let mut model = iris["model"].clone();
    model["name"] = json!("iris");
    expect(app.post("/v1/models", &model).await, StatusCode::CREATED).await;
    let mut train = iris["train"].clone();
    train["dataset_id"] = made["id"].clone();
    let job = app.train("iris", train).await;
    let done = app.wait_done(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let v = expect(app.get("/v1/models/iris/versions/1").await, StatusCode::OK).await;
    assert!(v["metrics"]["accuracy"].as_f64().unwrap() > 0.9, "{v}");
}

#[tokio::test]
async fn digits_is_whole_and_a_retry_with_the_same_key_stores_it_once() {
    let app = spawn_app().await;
    let post = || {
        app.client
            .post(app.url("/v1/samples/digits"))
            .header("idempotency-key", "start-with-digits")
            .send()
    };
    let first = post().await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = expect(first, StatusCode::CREATED).await;
    assert_eq!(
        (first["rows"].as_u64(), first["input_width"].as_u64()),
        (Some(1797), Some(64))
    );
    assert_eq!(first["classes"]["values"].as_array().unwrap().len(), 10);
    let again = post().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(expect(again, StatusCode::CREATED).await, first);
    let datasets = expect(app.get("/v1/datasets").await, StatusCode::OK).await;
    assert_eq!(datasets["datasets"].as_array().unwrap().len(), 1);
    // Without a key, each request is a new dataset.
    expect(
        app.post("/v1/samples/digits", &Value::Null).await,
        StatusCode::CREATED,
    )
    .await;
    let datasets = expect(app.get("/v1/datasets").await, StatusCode::OK).await;
    assert_eq!(datasets["datasets"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_unknown_sample_or_a_full_server_is_refused_and_stores_nothing() {
    let app = spawn_with(|c| c.max_datasets = 1).await;
    let e = expect_error(
        app.post("/v1/samples/mnist", &Value::Null).await,
        StatusCode::NOT_FOUND,
        "dataset_not_found",
    )
    .await;
    assert!(
        e["message"].as_str().unwrap().contains("iris, digits"),
        "{e}"
    );
    expect(
        app.post("/v1/samples/iris", &Value::Null).await,
        StatusCode::CREATED,
    )
    .await;
    expect_error(
        app.post("/v1/samples/digits", &Value::Null).await,
        StatusCode::CONFLICT,
        "limit_reached",
    )
    .await;
    let datasets = expect(app.get("/v1/datasets").await, StatusCode::OK).await;
    assert_eq!(datasets["datasets"].as_array().unwrap().len(), 1);
    // Only admins may store one.
    let app = spawn_with(|c| {
        c.admin_tokens = vec!["a".parse().unwrap()];
        c.predict_tokens = vec!["p".parse().unwrap()];
    })
    .await;
    let as_predict = app
        .client
        .post(app.url("/v1/samples/iris"))
        .bearer_auth("p")
        .send()
        .await
        .unwrap();
    expect_error(as_predict, StatusCode::FORBIDDEN, "forbidden").await;
    let list = app
        .client
        .get(app.url("/v1/samples"))
        .bearer_auth("p")
        .send()
        .await
        .unwrap();
    expect(list, StatusCode::OK).await;
}
