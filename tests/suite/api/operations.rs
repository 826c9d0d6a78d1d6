//! What operators rely on: metrics, bearer-token authentication, count limits, the request
//! timeout's answer.

use super::helpers::{Sse, TestApp, expect, expect_error, spawn_app, spawn_with};
use futures_util::StreamExt;
use mlpd::auth::Token;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The value of the sample `name{labels}` (exact label text) in a Prometheus exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_jobs_training_and_predictions() {
    let app = spawn_app().await;
    app.trained_iris("iris").await;
    for _ in 0..3 {
        let r = app
            .post(
                "/v1/models/iris/predict",
                &json!({"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}),
            )
            .await;
        expect(r, StatusCode::OK).await;
    }
    assert_eq!(app.get("/nowhere").await.status(), StatusCode::NOT_FOUND);
    // Methods a client invents are one "other" series, not one series each.
    for invented in ["BREW", "WHEN"] {
        let method = reqwest::Method::from_bytes(invented.as_bytes()).unwrap();
        let r = app
            .client
            .request(method, format!("{}/v1/models", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    // By route template, never by raw URL (the model name is not in the label).
    let predicted = sample(
        &text,
        r#"mlpd_http_requests_total{route="/v1/models/{name}/predict",method="POST",status="200"}"#,
    )
    .unwrap_or_else(|| panic!("no predict counter in\n{text}"));
    assert!(predicted >= 3.0, "{predicted}");
    assert!(!text.contains("/v1/models/iris/predict"));
    assert!(
        sample(
            &text,
            r#"mlpd_http_requests_total{route="unmatched",method="GET",status="404"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "requests no route matched are counted too"
    );
    assert!(!text.contains("/nowhere"));
    assert!(!text.contains("BREW") && !text.contains("WHEN"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("mlpd_http_requests_total")
                && l.contains(r#"method="other""#)
                && l.contains(r#"status="405""#)),
        "{text}"
    );
    assert!(text.contains(
        r#"mlpd_http_request_duration_seconds_bucket{route="/v1/models/{name}/predict",method="POST",status="200",le="0.001"}"#
    ), "latency histogram by route");
    // The counters are process-wide (other tests' servers add to them): at least ours.
    assert!(sample(&text, "mlpd_prediction_rows_total").unwrap() >= 6.0);
    assert!(text.contains("mlpd_prediction_duration_seconds_bucket"));
    assert!(sample(&text, "mlpd_training_epochs_total").unwrap() >= 60.0);
    assert!(sample(&text, "mlpd_training_samples_total").unwrap() >= 60.0 * 150.0);
    assert!(sample(&text, r#"mlpd_jobs_finished_total{status="succeeded"}"#).unwrap() >= 1.0);
    // Levels are this server's own.
    assert_eq!(sample(&text, "mlpd_models"), Some(1.0));
    assert_eq!(sample(&text, "mlpd_model_versions"), Some(1.0));
    assert_eq!(sample(&text, "mlpd_datasets"), Some(1.0));
    assert_eq!(sample(&text, r#"mlpd_jobs{status="running"}"#), Some(0.0));
    assert_eq!(sample(&text, "mlpd_queue_depth"), Some(0.0));
}

fn tokens(list: &[&str]) -> Vec<Token> {
    list.iter().map(|t| t.parse().unwrap()).collect()
}

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method.parse().unwrap(), app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn bearer_tokens_with_admin_and_predict_roles() {
    let app = spawn_with(|c| {
        c.admin_tokens = tokens(&["admin-old", "admin-new"]);
        c.predict_tokens = tokens(&["reader"]);
    })
    .await;
    // Probes and the API description stay open; so do metrics unless configured otherwise.
    for open in ["/health", "/ready", "/openapi.yaml", "/metrics"] {
        assert_eq!(
            call(&app, "GET", open, None, None).await.status(),
            StatusCode::OK,
            "{open}"
        );
    }
    // No token, a wrong one, another scheme: 401 with a challenge, in our error format.
    for (token, challenge) in [
        (None, r#"Bearer realm="mlpd""#),
        (
            Some("nope"),
            r#"Bearer realm="mlpd", error="invalid_token""#,
        ),
    ] {
        let r = call(&app, "GET", "/v1/models", token, None).await;
        assert_eq!(r.headers()["www-authenticate"], challenge);
        expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let r = app
        .client
        .get(app.url("/v1/models"))
        .header("authorization", "Basic YWRtaW4tb2xkOg==")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Either admin token (rotation) does everything.
    let spec =
        json!({"name": "m", "inputs": 2, "layers": [{"units": 1, "activation": "identity"}]});
    expect(
        call(&app, "POST", "/v1/models", Some("admin-old"), Some(spec)).await,
        StatusCode::CREATED,
    )
    .await;
    let data = json!({"inputs": [[0, 1], [1, 0], [1, 1], [0, 0]], "targets": [[1], [1], [2], [0]]});
    let job = expect(
        call(
            &app,
            "POST",
            "/v1/models/m/train",
            Some("admin-new"),
            Some(json!({"dataset": data, "epochs": 5})),
        )
        .await,
        StatusCode::ACCEPTED,
    )
    .await;
    let id = job["id"].as_str().unwrap().to_string();
    let mut done = Value::Null;
    for _ in 0..300 {
        done = expect(
            call(&app, "GET", &format!("/v1/jobs/{id}"), Some("reader"), None).await,
            StatusCode::OK,
        )
        .await;
        if done["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(done["status"], "succeeded", "{done}");

    // The predict role: predictions and reads, nothing that changes anything.
    let x = json!({"inputs": [[1, 1]]});
    expect(
        call(
            &app,
            "POST",
            "/v1/models/m/predict",
            Some("reader"),
            Some(x),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect(
        call(&app, "GET", "/v1/models/m/versions", Some("reader"), None).await,
        StatusCode::OK,
    )
    .await;
    let r = call(
        &app,
        "GET",
        &format!("/v1/jobs/{id}/events"),
        Some("reader"),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    for (method, path, body) in [
        (
            "POST",
            "/v1/models",
            Some(
                json!({"name": "n", "inputs": 1, "layers": [{"units": 1, "activation": "identity"}]}),
            ),
        ),
        ("POST", "/v1/models/m/train", Some(json!({"dataset": data}))),
        ("POST", &*format!("/v1/jobs/{id}/cancel"), None),
        ("DELETE", "/v1/models/m", None),
        ("POST", "/v1/datasets", Some(data.clone())),
    ] {
        let r = call(&app, method, path, Some("reader"), body).await;
        let e = expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(
            e["message"].as_str().unwrap().contains("predict token"),
            "{e}"
        );
    }
    // Nothing the refused calls asked for happened.
    let models = expect(
        call(&app, "GET", "/v1/models", Some("admin-new"), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(models["models"].as_array().unwrap().len(), 1);
    let sets = expect(
        call(&app, "GET", "/v1/datasets", Some("admin-new"), None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(sets["datasets"], json!([]));
}

#[tokio::test]
async fn metrics_can_be_admin_only() {
    let app = spawn_with(|c| {
        c.admin_tokens = tokens(&["a"]);
        c.predict_tokens = tokens(&["p"]);
        c.metrics_auth = true;
    })
    .await;
    expect_error(
        call(&app, "GET", "/metrics", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_error(
        call(&app, "GET", "/metrics", Some("p"), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(
        call(&app, "GET", "/metrics", Some("a"), None)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "GET", "/health", None, None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn model_and_dataset_counts_are_capped_at_their_edge() {
    let app = spawn_with(|c| {
        c.max_models = 2;
        c.max_datasets = 1;
    })
    .await;
    let layers = json!([{"units": 1, "activation": "identity"}]);
    app.create_model("a", 1, layers.clone()).await;
    app.create_model("b", 1, layers.clone()).await;
    let r = app
        .post(
            "/v1/models",
            &json!({"name": "c", "inputs": 1, "layers": layers}),
        )
        .await;
    let e = expect_error(r, StatusCode::CONFLICT, "limit_reached").await;
    assert!(
        e["message"].as_str().unwrap().contains("at most 2 models"),
        "{e}"
    );
    // Import is a creation too.
    let data = json!({"inputs": [[0], [1], [2]], "targets": [[0], [1], [2]]});
    let job = app.train("a", json!({"dataset": data, "epochs": 2})).await;
    app.wait_done(&job).await;
    let doc = expect(
        app.get("/v1/models/a/versions/1/export").await,
        StatusCode::OK,
    )
    .await;
    expect_error(
        app.post("/v1/models/import?name=c", &doc).await,
        StatusCode::CONFLICT,
        "limit_reached",
    )
    .await;
    assert_eq!(
        app.delete("/v1/models/b").await.status(),
        StatusCode::NO_CONTENT
    );
    expect(
        app.post("/v1/models/import?name=c", &doc).await,
        StatusCode::CREATED,
    )
    .await;

    // Datasets: JSON and CSV alike.
    let first = expect(app.post("/v1/datasets", &data).await, StatusCode::CREATED).await;
    expect_error(
        app.post("/v1/datasets", &data).await,
        StatusCode::CONFLICT,
        "limit_reached",
    )
    .await;
    expect_error(
        app.post_csv("/v1/datasets", "x,y\n1,2\n3,4\n").await,
        StatusCode::CONFLICT,
        "limit_reached",
    )
    .await;
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/datasets/{id}")).await.status(),
        StatusCode::NO_CONTENT
    );
    expect(
        app.post_csv("/v1/datasets", "x,y\n1,2\n3,4\n").await,
        StatusCode::CREATED,
    )
    .await;
}

#[tokio::test]
async fn the_timeout_answers_a_stalled_request_with_json_503_and_spares_event_streams() {
    let app = spawn_with(|c| c.request_timeout_secs = 1).await;
    // A client that sends half a CSV, then stalls for longer than the timeout.
    let chunks = futures_util::stream::iter([0u8, 1]).then(|i| async move {
        if i == 1 {
            tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        }
        Ok::<_, std::io::Error>(if i == 0 { "x,y\n1,2\n" } else { "3,4\n" })
    });
    let started = std::time::Instant::now();
    let r = app
        .client
        .post(app.url("/v1/datasets"))
        .header("content-type", "text/csv")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed().as_secs_f64();
    assert_eq!(
        r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let e = expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "timeout").await;
    assert!(e["message"].as_str().unwrap().contains("within 1 s"), "{e}");
    assert!((1.0..2.5).contains(&waited), "answered after {waited} s");
    let sets = expect(app.get("/v1/datasets").await, StatusCode::OK).await;
    assert_eq!(sets["datasets"], json!([]));

    // An event stream outlives the timeout: only the time to its headers counts.
    app.create_model(
        "m",
        1,
        json!([{"units": 4, "activation": "tanh"}, {"units": 1, "activation": "identity"}]),
    )
    .await;
    let data = json!({"inputs": [[0], [1], [2], [3]], "targets": [[0], [1], [4], [9]]});
    let job = app
        .train(
            "m",
            json!({"dataset": data, "epochs": 1_000_000, "batch_size": 1, "max_seconds": 2.5}),
        )
        .await;
    let started = std::time::Instant::now();
    let events = Sse::open(&app, &format!("/v1/jobs/{job}/events"), None)
        .await
        .collect()
        .await;
    let streamed = started.elapsed().as_secs_f64();
    assert!(streamed > 2.0, "the stream stayed open {streamed} s");
    let end = events.last().expect("events");
    assert_eq!(end.event, "end");
    assert_eq!(end.data["status"], "succeeded", "{}", end.data);
}

#[tokio::test]
async fn the_spec_says_which_routes_need_a_token_and_the_server_agrees() {
    let app = spawn_with(|c| {
        c.admin_tokens = tokens(&["a"]);
        c.metrics_auth = true;
    })
    .await;
    let doc: Value = yaml_serde::from_str(mlpd::api::openapi_yaml()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let url = path
                .replace("{name}", "m")
                .replace("{id}", &uuid::Uuid::nil().to_string())
                .replace("{version}", "1");
            let r = app
                .client
                .request(method.to_uppercase().parse().unwrap(), app.url(&url))
                .send()
                .await
                .unwrap();
            let open = op["security"] == json!([]);
            if open {
                assert_ne!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
                assert!(op["responses"].get("401").is_none(), "{method} {path}");
            } else {
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
                assert!(op["responses"].get("401").is_some(), "{method} {path}");
                assert!(op["responses"].get("403").is_some(), "{method} {path}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "{checked} operations");
}
