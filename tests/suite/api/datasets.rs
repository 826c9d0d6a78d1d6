use super::helpers::{expect, expect_error, spawn_app, spawn_with};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn csv_uploads_guess_classes_and_regression() {
    let app = spawn_app().await;
    let iris =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/iris.csv")).unwrap();
    let r = app
        .post_csv("/v1/datasets?target=species&name=iris", iris)
        .await;
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let d = expect(r, StatusCode::CREATED).await;
    assert_eq!(
        (d["rows"].as_u64(), d["input_width"].as_u64()),
        (Some(150), Some(4))
    );
    assert_eq!(
        d["classes"],
        json!({"type": "str", "values": ["setosa", "versicolor", "virginica"]})
    );
    assert_eq!(d["name"], "iris");
    assert_eq!(loc, format!("/v1/datasets/{}", d["id"].as_str().unwrap()));

    let wine =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/wine.csv")).unwrap();
    let d = expect(
        app.post_csv("/v1/datasets?target=cultivar", wine).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        d["classes"],
        json!({"type": "int", "values": [0, 1, 2]}),
        "integer labels are classes"
    );

    let diabetes = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/datasets/diabetes.csv"
    ))
    .unwrap();
    let d = expect(
        app.post_csv("/v1/datasets?target=progression", diabetes.clone())
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(d["target_width"], 1, "decimal targets are regression");
    assert!(d.get("classes").is_none());
    // Several targets; and `task` overrides the guess.
    let d = expect(
        app.post_csv("/v1/datasets?target=progression&target=bmi", diabetes)
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        (d["target_width"].as_u64(), d["input_width"].as_u64()),
        (Some(2), Some(9))
    );
    let d = expect(
        app.post_csv("/v1/datasets?target=y&task=regression", "a,y\n1,2\n3,4\n")
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(d["target_width"], 1);
    // No target named: the last column.
    let d = expect(
        app.post_csv("/v1/datasets", "a,b,label\n1,2,x\n3,4,y\n")
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        (d["input_width"].as_u64(), d["classes"]["values"].clone()),
        (Some(2), json!(["x", "y"]))
    );

    let list = expect(app.get("/v1/datasets").await, StatusCode::OK).await;
    assert_eq!(list["datasets"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn json_datasets_for_regression_and_labels() {
    let app = spawn_app().await;
    let d = expect(
        app.post(
            "/v1/datasets",
            &json!({"name": "r", "inputs": [[1.0, 2.0], [3.0, 4.0]], "targets": [[1.5], [2.5]]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(d["target_width"], 1);
    let id = d["id"].as_str().unwrap().to_string();
    let d = expect(
        app.post(
            "/v1/datasets",
            &json!({"inputs": [[1.0], [2.0], [3.0]], "labels": [7, 3, 7]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(d["classes"], json!({"type": "int", "values": [3, 7]}));

    let got = expect(app.get(&format!("/v1/datasets/{id}")).await, StatusCode::OK).await;
    assert_eq!(got["rows"], 2);
    expect(
        app.delete(&format!("/v1/datasets/{id}")).await,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect_error(
        app.get(&format!("/v1/datasets/{id}")).await,
        StatusCode::NOT_FOUND,
        "dataset_not_found",
    )
    .await;
    expect_error(
        app.delete(&format!("/v1/datasets/{id}")).await,
        StatusCode::NOT_FOUND,
        "dataset_not_found",
    )
    .await;
}

#[tokio::test]
async fn bad_datasets_are_4xx_and_store_nothing() {
    let app = spawn_app().await;
    let bad_json = [
        (
            json!({"inputs": [[1.0, 2.0], [3.0]], "targets": [[1.0], [2.0]]}),
            "inputs[1]",
        ),
        (json!({"inputs": [], "targets": []}), "inputs"),
        (
            json!({"inputs": [[1.0, "NaN"]], "targets": [[1.0]]}),
            "inputs[0][1]",
        ),
        (
            json!({"inputs": [[1.0, "x"]], "labels": ["a"]}),
            "inputs[0][1]",
        ),
        (json!({"inputs": [[1.0], [2.0]], "labels": ["a"]}), "labels"),
        (
            json!({"inputs": [[1.0], [2.0]], "labels": ["a", 1]}),
            "labels",
        ),
        (
            json!({"inputs": [[1.0], [2.0]], "labels": ["a", "a"]}),
            "labels",
        ),
        (
            json!({"inputs": [[1.0], [2.0]], "targets": [[1.0]]}),
            "targets",
        ),
        (json!({"inputs": [[1.0]]}), "body"),
        (
            json!({"inputs": [[1.0]], "targets": [[1.0]], "labels": [1]}),
            "body",
        ),
        (
            json!({"inputs": [[1e39]], "targets": [[1.0]]}),
            "inputs[0][0]",
        ),
    ];
    for (body, field) in bad_json {
        let err = expect_error(
            app.post("/v1/datasets", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(err["field"], field, "{body}: {err}");
    }
    let bad_csv = [
        (
            "/v1/datasets?target=nope",
            "a,b\n1,2\n",
            "not in the header",
        ),
        ("/v1/datasets?target=b", "a,b\n1,2\n3\n", "line 3"),
        ("/v1/datasets?target=b&numeric=a", "a,b\nx,2\n", "\"x\""),
        (
            "/v1/datasets?target=b",
            "a,b\nNaN,2\n",
            "\"a\" is entirely missing",
        ),
        ("/v1/datasets?target=b", "a,b\n", "no rows"),
        ("/v1/datasets?target=b&task=guess", "a,b\n1,2\n", "task"),
        ("/v1/datasets?target=b", "b\n1\n", "feature"),
    ];
    for (path, body, says) in bad_csv {
        let err = expect_error(
            app.post_csv(path, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains(says), "{path} {body:?}: {msg}");
    }
    let r = app
        .client
        .post(app.url("/v1/datasets"))
        .header("content-type", "application/xml")
        .body("<a/>")
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let r = app
        .client
        .post(app.url("/v1/datasets"))
        .body("a,b\n1,2\n")
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let r = app
        .client
        .post(app.url("/v1/datasets"))
        .header("content-type", "application/json")
        .body("{\"inputs\": [[1")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "malformed_json").await;
    let list = expect(app.get("/v1/datasets").await, StatusCode::OK).await;
    assert_eq!(list["datasets"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn dataset_size_limits_are_enforced_at_their_edge() {
    let app = spawn_with(|c| {
        c.max_dataset_bytes = 64;
        c.max_dataset_cells = 6;
    })
    .await;
    // 6 cells exactly: accepted. 8: refused.
    expect(
        app.post_csv("/v1/datasets?target=b", "a,b\n1,2\n3,4\n5,6\n")
            .await,
        StatusCode::CREATED,
    )
    .await;
    let err = expect_error(
        app.post_csv("/v1/datasets?target=b", "a,b\n1,2\n3,4\n5,6\n7,8\n")
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("limit"));
    // Bytes: 64 accepted, 65 refused, by Content-Length and when streamed without one.
    let exactly = format!("a,b\n{}", "1,2\n".repeat(15)); // 4 + 60 = 64 bytes
    assert_eq!(exactly.len(), 64);
    let err = expect(
        app.post_csv("/v1/datasets?target=b", exactly.clone()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        err["error"]["message"].as_str().unwrap().contains("cells"),
        "64 bytes pass the byte limit: {err}"
    );
    let over = format!("{exactly}9");
    expect_error(
        app.post_csv("/v1/datasets?target=b", over.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(over.into_bytes())]);
    let r = app
        .post_csv("/v1/datasets?target=b", reqwest::Body::wrap_stream(stream))
        .await;
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let big_json = json!({"inputs": [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]], "targets": [[1.0]]});
    expect_error(
        app.post("/v1/datasets", &big_json).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
}
