//! The Open Inference Protocol (V2) routes: metadata, readiness, JSON and binary inference
//! equal to `/v1` predict, the protocol's error body everywhere under `/v2`, auth, metrics.
//! (Real third-party clients are exercised by tests/interop/clients.py from .ci/run.)

use super::helpers::{expect, spawn_app, spawn_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Asserts a `/v2` error: status, JSON content type, `{"error": "<non-empty>"}` and nothing else.
async fn expect_v2_error(r: reqwest::Response, status: StatusCode) -> String {
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    let body = expect(r, status).await;
    assert_eq!(ct, "application/json", "{body}");
    let obj = body.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "{body}");
    let msg = body["error"]
        .as_str()
        .expect("error is a string")
        .to_owned();
    assert!(!msg.is_empty());
    msg
}

fn one_row(x: &[f32]) -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, x.len()], "datatype": "FP32", "data": x}]})
}

async fn v1_predict(app: &super::helpers::TestApp, model: &str, rows: Value) -> Value {
    expect(
        app.post(
            &format!("/v1/models/{model}/predict"),
            &json!({"inputs": rows}),
        )
        .await,
        StatusCode::OK,
    )
    .await
}

#[tokio::test]
async fn server_and_model_metadata_and_readiness() {
    let app = spawn_app().await;
    let meta = expect(app.get("/v2").await, StatusCode::OK).await;
    assert_eq!(meta["name"], "mlpd");
    assert_eq!(meta["extensions"], json!(["binary_tensor_data"]));
    assert_eq!(
        expect(app.get("/v2/health/live").await, StatusCode::OK).await,
        json!({"live": true})
    );
    assert_eq!(
        expect(app.get("/v2/health/ready").await, StatusCode::OK).await,
        json!({"ready": true})
    );
    expect_v2_error(app.get("/v2/models/iris").await, StatusCode::NOT_FOUND).await;
    expect_v2_error(
        app.get("/v2/models/iris/ready").await,
        StatusCode::NOT_FOUND,
    )
    .await;

    app.create_model(
        "iris",
        4,
        json!([{"units": 8, "activation": "relu"}, {"units": 3, "activation": "softmax"}]),
    )
    .await;
    // Defined but not trained: known, not ready, tensors from the architecture.
    assert_eq!(
        expect(
            app.get("/v2/models/iris/ready").await,
            StatusCode::SERVICE_UNAVAILABLE
        )
        .await,
        json!({"name": "iris", "ready": false})
    );
    let m = expect(app.get("/v2/models/iris").await, StatusCode::OK).await;
    assert_eq!(m["versions"], json!([]));
    assert_eq!(
        m["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        m["outputs"],
        json!([{"name": "outputs", "datatype": "FP32", "shape": [-1, 3]}])
    );
    expect_v2_error(
        app.post("/v2/models/iris/infer", &one_row(&[1.0, 2.0, 3.0, 4.0]))
            .await,
        StatusCode::CONFLICT,
    )
    .await;

    app.client
        .delete(app.url("/v1/models/iris"))
        .send()
        .await
        .unwrap();
    app.trained_iris("iris").await;
    let m = expect(app.get("/v2/models/iris").await, StatusCode::OK).await;
    assert_eq!(m["versions"], json!(["1"]));
    assert_eq!(m["platform"], "mlpd_mlp");
    assert_eq!(
        m["outputs"],
        json!([
            {"name": "outputs", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ])
    );
    assert_eq!(
        expect(app.get("/v2/models/iris/versions/1").await, StatusCode::OK).await,
        m
    );
    assert_eq!(
        expect(
            app.get("/v2/models/iris/versions/1/ready").await,
            StatusCode::OK
        )
        .await,
        json!({"name": "iris", "ready": true})
    );
    for missing in [
        "/v2/models/iris/versions/2",
        "/v2/models/iris/versions/2/ready",
        "/v2/models/iris/versions/zero",
        "/v2/models/iris/versions/0/ready",
        "/v2/models/no%20such",
        "/v2/no/such/route",
    ] {
        expect_v2_error(app.get(missing).await, StatusCode::NOT_FOUND).await;
    }
    let r = app.client.delete(app.url("/v2")).send().await.unwrap();
    expect_v2_error(r, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn json_inference_equals_v1_predict_in_every_accepted_form() {
    let app = spawn_app().await;
    app.trained_iris("iris").await;
    let rows = json!([
        [5.1, 3.5, 1.4, 0.2],
        [6.0, 2.9, 4.5, 1.5],
        [7.7, 3.0, 6.1, 2.3]
    ]);
    let want = v1_predict(&app, "iris", rows.clone()).await;
    let flat: Vec<f64> = rows
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let flat_outputs: Vec<Value> = want["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().clone())
        .collect();
    for (datatype, data) in [
        ("FP32", rows.clone()),
        ("FP32", json!(flat)),
        ("FP64", rows.clone()),
    ] {
        let body = json!({
            "id": "req-7",
            "model_name": "iris",           // what KServe's client adds: ignored
            "parameters": {"custom": 1},
            "inputs": [{"name": "input", "shape": [3, 4], "datatype": datatype, "data": data}],
        });
        let r = app.post("/v2/models/iris/infer", &body).await;
        assert_eq!(r.headers()["content-type"], "application/json");
        let got = expect(r, StatusCode::OK).await;
        assert_eq!(got["id"], "req-7");
        assert_eq!(got["model_name"], "iris");
        assert_eq!(got["model_version"], "1");
        assert_eq!(
            got["outputs"],
            json!([
                {"name": "outputs", "datatype": "FP32", "shape": [3, 3], "data": flat_outputs},
                {"name": "label", "datatype": "BYTES", "shape": [3], "data": want["labels"]},
            ]),
            "{datatype} {data}"
        );
    }
    // Integer inputs are converted; the versioned route; one chosen output; no id, no id back.
    let ints = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "INT32", "data": [[6, 3, 5, 2]]}],
                      "outputs": [{"name": "label"}]});
    let got = expect(
        app.post("/v2/models/iris/versions/1/infer", &ints).await,
        StatusCode::OK,
    )
    .await;
    let v1 = v1_predict(&app, "iris", json!([[6.0, 3.0, 5.0, 2.0]])).await;
    assert!(got.get("id").is_none());
    assert_eq!(
        got["outputs"],
        json!([{"name": "label", "datatype": "BYTES", "shape": [1], "data": v1["labels"]}])
    );
}

#[tokio::test]
async fn integer_labels_and_regressions_have_their_own_outputs() {
    let app = spawn_app().await;
    app.create_model(
        "reg",
        2,
        json!([{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "identity"}]),
    )
    .await;
    let inputs: Vec<Vec<f32>> = (0..40)
        .map(|i| vec![i as f32 / 40.0, 1.0 - i as f32 / 40.0])
        .collect();
    let targets: Vec<Vec<f32>> = inputs
        .iter()
        .map(|r| vec![100.0 * r[0], -3.0 * r[1]])
        .collect();
    let job = app
        .train(
            "reg",
            json!({"dataset": {"inputs": inputs, "targets": targets}, "epochs": 5, "normalize_targets": true}),
        )
        .await;
    assert_eq!(app.wait_done(&job).await["status"], "succeeded");
    let m = expect(app.get("/v2/models/reg").await, StatusCode::OK).await;
    assert_eq!(
        m["outputs"],
        json!([{"name": "outputs", "datatype": "FP32", "shape": [-1, 2]}])
    );
    let got = expect(
        app.post("/v2/models/reg/infer", &one_row(&[0.5, 0.5]))
            .await,
        StatusCode::OK,
    )
    .await;
    let want = v1_predict(&app, "reg", json!([[0.5, 0.5]])).await;
    assert_eq!(got["outputs"][0]["data"], want["outputs"][0]);
    assert_eq!(got["outputs"].as_array().unwrap().len(), 1);
    let r = app
        .post(
            "/v2/models/reg/infer",
            &json!({"inputs": one_row(&[0.5, 0.5])["inputs"], "outputs": [{"name": "label"}]}),
        )
        .await;
    assert!(
        expect_v2_error(r, StatusCode::BAD_REQUEST)
            .await
            .contains("unknown output")
    );

    app.create_model("ints", 1, json!([{"units": 3, "activation": "softmax"}]))
        .await;
    let job = app
        .train(
            "ints",
            json!({"dataset": {"inputs": [[0.0], [1.0], [2.0], [0.1], [1.1], [2.1]], "labels": [10, 20, 30, 10, 20, 30]}, "epochs": 3}),
        )
        .await;
    assert_eq!(app.wait_done(&job).await["status"], "succeeded");
    let got = expect(
        app.post("/v2/models/ints/infer", &one_row(&[1.0])).await,
        StatusCode::OK,
    )
    .await;
    let want = v1_predict(&app, "ints", json!([[1.0]])).await;
    assert_eq!(got["outputs"][1]["datatype"], "INT64");
    assert_eq!(got["outputs"][1]["data"], want["labels"]);
}

/// Splits a binary-extension body into its JSON header and binary part.
fn split_binary(headers: &reqwest::header::HeaderMap, body: &[u8]) -> (Value, Vec<u8>) {
    let n: usize = headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (
        serde_json::from_slice(&body[..n]).unwrap(),
        body[n..].to_vec(),
    )
}

#[tokio::test]
async fn binary_tensors_in_and_out() {
    let app = spawn_app().await;
    app.trained_iris("iris").await;
    let rows = [[5.1f32, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5]];
    let want = v1_predict(&app, "iris", json!(rows)).await;
    let header = serde_json::to_vec(&json!({
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": 32}}],
        "parameters": {"binary_data_output": true},
    }))
    .unwrap();
    let mut body = header.clone();
    for v in rows.iter().flatten() {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let post = |body: Vec<u8>, header_len: usize| {
        app.client
            .post(app.url("/v2/models/iris/infer"))
            .header("inference-header-content-length", header_len)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    let r = post(body.clone(), header.len()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let headers = r.headers().clone();
    let (json_part, bin) = split_binary(&headers, &r.bytes().await.unwrap());
    let outs = json_part["outputs"].as_array().unwrap();
    assert_eq!(outs[0]["parameters"]["binary_data_size"], 24);
    assert!(outs[0].get("data").is_none());
    let floats: Vec<f32> = bin[..24]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want_floats: Vec<f32> = want["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(floats, want_floats);
    // BYTES: a 4-byte little-endian length before each label.
    let mut labels = Vec::new();
    let mut rest = &bin[24..];
    while !rest.is_empty() {
        let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        labels.push(String::from_utf8(rest[4..4 + n].to_vec()).unwrap());
        rest = &rest[4 + n..];
    }
    assert_eq!(json!(labels), want["labels"]);
    assert_eq!(
        outs[1]["parameters"]["binary_data_size"],
        bin.len() - 24,
        "{json_part}"
    );

    // FP64 binary input, JSON output for one output, binary for the other.
    let header = serde_json::to_vec(&json!({
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "parameters": {"binary_data_size": 32}}],
        "outputs": [{"name": "outputs"}, {"name": "label", "parameters": {"binary_data": true}}],
    }))
    .unwrap();
    let mut body = header.clone();
    for v in rows[0] {
        body.extend_from_slice(&f64::from(v).to_le_bytes());
    }
    let r = post(body, header.len()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let headers = r.headers().clone();
    let (json_part, bin) = split_binary(&headers, &r.bytes().await.unwrap());
    assert_eq!(json_part["outputs"][0]["data"], want["outputs"][0]);
    assert_eq!(
        json_part["outputs"][1]["parameters"]["binary_data_size"],
        bin.len()
    );

    // Sizes that disagree are 400s: declared size vs shape, binary part vs inputs, header length.
    let bad = serde_json::to_vec(&json!({
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 28}}],
    }))
    .unwrap();
    let mut b = bad.clone();
    b.extend_from_slice(&[0u8; 28]);
    expect_v2_error(post(b, bad.len()).await.unwrap(), StatusCode::BAD_REQUEST).await;
    let mut b = header.clone();
    b.extend_from_slice(&[0u8; 8]);
    expect_v2_error(
        post(b.clone(), header.len()).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_v2_error(
        post(b.clone(), b.len() + 1).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn malformed_tensors_are_400s_with_the_protocols_error_body() {
    let app = spawn_app().await;
    app.trained_iris("iris").await;
    let input = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]});
    let cases = [
        input(json!([1, 3]), "FP32", json!([1, 2, 3])),
        input(json!([4]), "FP32", json!([1, 2, 3, 4])),
        input(json!([1, 4]), "FP32", json!([1, 2, 3])),
        input(json!([2, 4]), "FP32", json!([[1, 2, 3], [4, 5, 6, 7, 8]])),
        input(json!([0, 4]), "FP32", json!([])),
        input(json!([1, -4]), "FP32", json!([1, 2, 3, 4])),
        input(json!([1, 4]), "FP32", json!([1, 2, "3", 4])),
        input(json!([1, 4]), "FP32", json!([1, 2, 3e39, 4])),
        input(json!([1, 4]), "INT8", json!([1, 2, 300, 4])),
        input(json!([1, 4]), "INT64", json!([1, 2, 3.5, 4])),
        input(json!([1, 4]), "BOOL", json!([true, false, true, true])),
        input(json!([1, 4]), "FP8", json!([1, 2, 3, 4])),
        input(json!([1, 4]), "FP32", json!(7)),
        json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32"}]}),
        json!({"inputs": []}),
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
               "outputs": [{"name": "outputs"}, {"name": "outputs"}]}),
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
               "parameters": {"binary_data_output": "yes"}}),
        json!({"inputs": "input"}),
        json!({"id": 5, "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
    ];
    for body in cases {
        let r = app.post("/v2/models/iris/infer", &body).await;
        let msg = expect_v2_error(r, StatusCode::BAD_REQUEST).await;
        assert!(!msg.contains("ModelName"), "{msg}");
    }
    let r = app
        .client
        .post(app.url("/v2/models/iris/infer"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_v2_error(r, StatusCode::BAD_REQUEST).await;
    expect_v2_error(
        app.post("/v2/models/nope/infer", &json!({"inputs": []}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // The model still answers after all that.
    expect(
        app.post("/v2/models/iris/infer", &one_row(&[5.1, 3.5, 1.4, 0.2]))
            .await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn auth_limits_and_metrics_apply_as_on_v1() {
    let app = spawn_with(|c| {
        c.admin_tokens = vec!["admin-secret".parse().unwrap()];
        c.predict_tokens = vec!["predict-secret".parse().unwrap()];
        c.max_body_bytes = 4096;
    })
    .await;
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth("admin-secret");
    let r = admin(app.client.post(app.url("/v1/models")))
        .json(&json!({"name": "m", "inputs": 1, "layers": [{"units": 2, "activation": "softmax"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = admin(app.client.post(app.url("/v1/models/m/train")))
        .json(&json!({"dataset": {"inputs": [[0.0], [1.0], [0.1], [0.9]], "labels": ["a", "b", "a", "b"]}, "epochs": 2}))
        .send()
        .await
        .unwrap();
    let job: Value = r.json().await.unwrap();
    loop {
        let j: Value = admin(
            app.client
                .get(app.url(&format!("/v1/jobs/{}", job["id"].as_str().unwrap()))),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        if j["status"] == "succeeded" {
            break;
        }
        assert!(j["status"] == "queued" || j["status"] == "running", "{j}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // No token: 401 in the protocol's shape, with the challenge.
    let r = app.get("/v2/models/m").await;
    assert!(r.headers().contains_key("www-authenticate"));
    expect_v2_error(r, StatusCode::UNAUTHORIZED).await;
    let r = app.post("/v2/models/m/infer", &one_row(&[0.5])).await;
    expect_v2_error(r, StatusCode::UNAUTHORIZED).await;
    // A predict token may call every /v2 route.
    let predict = |r: reqwest::RequestBuilder| r.bearer_auth("predict-secret");
    for path in [
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/m",
        "/v2/models/m/ready",
        "/v2/models/m/versions/1",
        "/v2/models/m/versions/1/ready",
    ] {
        let r = predict(app.client.get(app.url(path))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    for path in ["/v2/models/m/infer", "/v2/models/m/versions/1/infer"] {
        let r = predict(app.client.post(app.url(path)))
            .json(&one_row(&[0.5]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // The body limit, in the protocol's shape.
    let big = vec![0.5f32; 2000];
    let r = predict(app.client.post(app.url("/v2/models/m/infer")))
        .json(&json!({"inputs": [{"name": "input", "shape": [2000, 1], "datatype": "FP32", "data": big}]}))
        .send()
        .await
        .unwrap();
    expect_v2_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    // Metrics count /v2 requests by route template and their rows.
    let text = admin(app.client.get(app.url("/metrics")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"route="/v2/models/{name}/infer""#),
        "{text}"
    );
}

#[tokio::test]
async fn a_hot_swap_is_seen_on_v2_as_on_v1() {
    let app = spawn_app().await;
    let ds = app.trained_iris("iris").await;
    let row = [6.7f32, 3.0, 5.2, 2.3];
    let infer = |path: &'static str| {
        let app = &app;
        async move { expect(app.post(path, &one_row(&row)).await, StatusCode::OK).await }
    };
    let before = infer("/v2/models/iris/infer").await;
    assert_eq!(before["model_version"], "1");
    // A second training run with other settings: version 2 swaps in on both APIs at once.
    let job = app
        .train(
            "iris",
            json!({"dataset_id": ds, "epochs": 5, "learning_rate": 0.5, "seed": 9}),
        )
        .await;
    assert_eq!(app.wait_done(&job).await["status"], "succeeded");
    let after = infer("/v2/models/iris/infer").await;
    assert_eq!(after["model_version"], "2", "the latest version serves /v2");
    let v1 = v1_predict(&app, "iris", json!([row])).await;
    assert_eq!(v1["version"], 2);
    assert_eq!(
        after["outputs"][0]["data"],
        json!(v1["outputs"][0]),
        "/v2 and /v1 answer from the same version"
    );
    assert_ne!(after["outputs"][0]["data"], before["outputs"][0]["data"]);
    // The old version stays reachable by number, unchanged.
    let pinned = infer("/v2/models/iris/versions/1/infer").await;
    assert_eq!(pinned["model_version"], "1");
    assert_eq!(pinned["outputs"][0]["data"], before["outputs"][0]["data"]);
    let m = expect(app.get("/v2/models/iris").await, StatusCode::OK).await;
    assert_eq!(m["versions"], json!(["1", "2"]));
}

#[tokio::test]
async fn each_feature_may_be_its_own_named_tensor_bytes_for_text() {
    let app = spawn_app().await;
    // A table with a text column and empty cells: price from size and district.
    let mut csv = String::from("size,district,price\n");
    for i in 0..60 {
        let district = ["gangnam", "mapo", "jongno"][i % 3];
        let size = if i % 7 == 0 {
            String::new()
        } else {
            (500 + 13 * i).to_string()
        };
        let price = 1000 + 3 * (i % 11) * 10 + [400, 100, 250][i % 3];
        csv.push_str(&format!("{size},{district},{price}\n"));
    }
    let d = expect(
        app.post_csv("/v1/datasets?target=price", csv).await,
        StatusCode::CREATED,
    )
    .await;
    expect(
        app.post(
            "/v1/models",
            &json!({"name": "flats", "layers": [{"units": 8, "activation": "relu"}, {"units": 1, "activation": "identity"}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let job = app
        .train(
            "flats",
            json!({"dataset_id": d["id"], "epochs": 20, "preprocessing": {"missing_indicator": true}}),
        )
        .await;
    assert_eq!(app.wait_done(&job).await["status"], "succeeded");

    // Metadata lists the features, BYTES for the categorical one.
    let m = expect(app.get("/v2/models/flats").await, StatusCode::OK).await;
    assert_eq!(
        m["inputs"],
        json!([
            {"name": "size", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "district", "datatype": "BYTES", "shape": [-1, 1]},
        ])
    );
    // JSON tensors equal /v1 records, missing values included (a missing size tensor row is
    // NaN in binary; an empty string is a missing level).
    let records = json!({"records": [
        {"size": 650, "district": "mapo"},
        {"size": 900, "district": "gangnam"},
        {"size": 700, "district": "nowhere"},
        {"size": 800, "district": null},
    ]});
    let v1 = expect(
        app.post("/v1/models/flats/predict", &records).await,
        StatusCode::OK,
    )
    .await;
    let req = json!({"inputs": [
        {"name": "size", "datatype": "FP32", "shape": [4, 1], "data": [[650], [900], [700], [800]]},
        {"name": "district", "datatype": "BYTES", "shape": [4], "data": ["mapo", "gangnam", "nowhere", ""]},
    ]});
    let r = expect(
        app.post("/v2/models/flats/infer", &req).await,
        StatusCode::OK,
    )
    .await;
    let flat: Vec<Value> = v1["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[0].clone())
        .collect();
    assert_eq!(r["outputs"][0]["data"], json!(flat), "same as /v1 records");
    // Binary: FP32 with NaN for a missing size, BYTES length-prefixed; in the JSON's order.
    let sizes = [f32::NAN, 650.0];
    let districts = ["mapo", "mapo"];
    let mut bin = Vec::new();
    for s in sizes {
        bin.extend_from_slice(&s.to_le_bytes());
    }
    let size_bytes = bin.len();
    for t in districts {
        bin.extend_from_slice(&(t.len() as u32).to_le_bytes());
        bin.extend_from_slice(t.as_bytes());
    }
    let header = json!({"inputs": [
        {"name": "size", "datatype": "FP32", "shape": [2, 1], "parameters": {"binary_data_size": size_bytes}},
        {"name": "district", "datatype": "BYTES", "shape": [2, 1], "parameters": {"binary_data_size": bin.len() - size_bytes}},
    ]})
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&bin);
    let r = app
        .client
        .post(app.url("/v2/models/flats/infer"))
        .header("inference-header-content-length", header.len())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let r = expect(r, StatusCode::OK).await;
    let v1 = expect(
        app.post(
            "/v1/models/flats/predict",
            &json!({"records": [{"size": null, "district": "mapo"}, {"size": 650, "district": "mapo"}]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        r["outputs"][0]["data"],
        json!([v1["outputs"][0][0], v1["outputs"][1][0]]),
        "NaN is a missing size, imputed as /v1 imputes null"
    );
    // The encoded matrix as `input` still works; bad feature tensors are 400s.
    let width = expect(app.get("/v1/models/flats/versions/1").await, StatusCode::OK).await
        ["signature"]["inputs"]
        .as_u64()
        .unwrap() as usize;
    let zeros = vec![0.0f32; width];
    expect(
        app.post("/v2/models/flats/infer", &one_row(&zeros)).await,
        StatusCode::OK,
    )
    .await;
    for (bad, says) in [
        (
            json!({"inputs": [{"name": "rooms", "datatype": "FP32", "shape": [1], "data": [1]}]}),
            "unknown input",
        ),
        (
            json!({"inputs": [{"name": "size", "datatype": "BYTES", "shape": [1], "data": ["big"]}]}),
            "numeric",
        ),
        (
            json!({"inputs": [
                {"name": "size", "datatype": "FP32", "shape": [2], "data": [1, 2]},
                {"name": "district", "datatype": "BYTES", "shape": [1], "data": ["mapo"]}]}),
            "rows",
        ),
        (
            json!({"inputs": [{"name": "district", "datatype": "BYTES", "shape": [2], "data": ["mapo"]}]}),
            "does not match",
        ),
    ] {
        let msg = expect_v2_error(
            app.post("/v2/models/flats/infer", &bad).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(msg.contains(says), "{bad}: {msg}");
    }
}
