//! `Idempotency-Key` on the creating POSTs: a retry gets the first answer and does nothing
//! again, across restarts; another request under the same key is refused and changes nothing;
//! keys expire and are purged; concurrent retries do the work once; a reservation left by a
//! dead process is taken over after its lease; answers other than 2xx are not kept.
//! On either backend (`MLPD_TEST_BACKEND`).

use super::helpers::{TestApp, expect, expect_error, on_postgres, spawn_with, store_env};
use super::persistence::temp_dir;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const LAYERS: &str =
    r#"[{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "softmax"}]"#;

fn model(name: &str) -> Value {
    json!({"name": name, "inputs": 2, "layers": serde_json::from_str::<Value>(LAYERS).unwrap()})
}

fn xor_train(epochs: u32) -> Value {
    json!({
        "dataset": {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "labels": [0, 1, 1, 0]},
        "epochs": epochs, "batch_size": 4
    })
}

async fn post_keyed(app: &TestApp, path: &str, key: &str, body: &Value) -> Response {
    app.client
        .post(app.url(path))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn replayed(r: &Response) -> bool {
    r.headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// Status, whether replayed, `Location`, body.
async fn answer(r: Response) -> (StatusCode, bool, Option<String>, String) {
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status(), replayed(&r), loc, r.text().await.unwrap())
}

async fn job_total(app: &TestApp, model: &str) -> u64 {
    expect(
        app.get(&format!("/v1/jobs?model={model}")).await,
        StatusCode::OK,
    )
    .await["total"]
        .as_u64()
        .unwrap()
}

/// The keys in the store of `dir`, read with SQL beside the server.
async fn stored_keys(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let sql = "SELECT key FROM idempotency_keys ORDER BY key";
        if on_postgres() {
            let url = store_env(&dir).remove(0).1;
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.query(sql, &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        } else {
            let c = rusqlite::Connection::open(dir.join("mlpd.sqlite3")).unwrap();
            let mut stmt = c.prepare(sql).unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }
    })
    .await
    .unwrap()
}

/// The store of a running app's data directory, opened beside it (as another replica would).
async fn open_store(dir: &std::path::Path) -> std::sync::Arc<dyn mlpd::store::Store> {
    let mut config = mlpd::Config::for_tests();
    config.data_dir = dir.to_path_buf();
    if let Some((_, url)) = store_env(dir).pop() {
        config.database_url = Some(url.parse().unwrap());
    }
    tokio::task::spawn_blocking(move || mlpd::store::open(&config).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retried_create_or_train_answers_the_same_and_does_it_once() {
    let app = spawn_with(|_| {}).await;
    let first = answer(post_keyed(&app, "/v1/models", "create-xor", &model("xor")).await).await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.3);
    assert!(!first.1, "a first answer is not a replay");
    let again = answer(post_keyed(&app, "/v1/models", "create-xor", &model("xor")).await).await;
    assert_eq!(
        (again.0, again.1, &again.2, &again.3),
        (StatusCode::CREATED, true, &first.2, &first.3),
        "the retry gets the first answer, marked as a replay"
    );
    // Without the key, the same body is a second request: the name is taken.
    expect_error(
        app.post("/v1/models", &model("xor")).await,
        StatusCode::CONFLICT,
        "model_exists",
    )
    .await;

    let r = post_keyed(&app, "/v1/models/xor/train", "train-1", &xor_train(50)).await;
    let first = answer(r).await;
    assert_eq!(first.0, StatusCode::ACCEPTED, "{}", first.3);
    let job: Value = serde_json::from_str(&first.3).unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(first.2.as_deref(), Some(&*format!("/v1/jobs/{id}")));
    app.wait_done(&id).await;
    for _ in 0..3 {
        let r = post_keyed(&app, "/v1/models/xor/train", "train-1", &xor_train(50)).await;
        let again = answer(r).await;
        assert_eq!((again.0, again.1), (StatusCode::ACCEPTED, true));
        assert_eq!(
            again.3, first.3,
            "the same body: the same job id, its queued view"
        );
        assert_eq!(again.2, first.2);
    }
    assert_eq!(job_total(&app, "xor").await, 1, "one job for four requests");
    let m = expect(app.get("/v1/models/xor").await, StatusCode::OK).await;
    assert_eq!(m["versions"], json!([1]), "trained once");
    // A new key is new work.
    let r = post_keyed(&app, "/v1/models/xor/train", "train-2", &xor_train(50)).await;
    let other = answer(r).await;
    assert_eq!((other.0, other.1), (StatusCode::ACCEPTED, false));
    assert_ne!(other.3, first.3);
    assert_eq!(job_total(&app, "xor").await, 2);
}

#[tokio::test]
async fn a_retried_upload_or_import_stores_one_dataset_or_model() {
    let app = spawn_with(|_| {}).await;
    let csv = "a,b,y\n0,0,no\n0,1,yes\n1,0,yes\n1,1,no\n";
    let upload = || {
        app.client
            .post(app.url("/v1/datasets?target=y&name=xor"))
            .header("content-type", "text/csv")
            .header("idempotency-key", "upload-xor")
            .body(csv)
            .send()
    };
    let first = answer(upload().await.unwrap()).await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.3);
    let again = answer(upload().await.unwrap()).await;
    assert_eq!(
        (again.0, again.1, again.3),
        (StatusCode::CREATED, true, first.3)
    );
    let list = expect(app.get("/v1/datasets").await, StatusCode::OK).await;
    assert_eq!(list["datasets"].as_array().unwrap().len(), 1);
    // The same bytes with another query are another request.
    let r = app
        .client
        .post(app.url("/v1/datasets?target=y&name=other"))
        .header("content-type", "text/csv")
        .header("idempotency-key", "upload-xor")
        .body(csv)
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;

    app.create_model("xor", 2, serde_json::from_str(LAYERS).unwrap())
        .await;
    let job = app.train("xor", xor_train(20)).await;
    app.wait_done(&job).await;
    let doc = expect(
        app.get("/v1/models/xor/versions/1/export").await,
        StatusCode::OK,
    )
    .await;
    let first =
        answer(post_keyed(&app, "/v1/models/import?name=copy", "import-1", &doc).await).await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.3);
    let again =
        answer(post_keyed(&app, "/v1/models/import?name=copy", "import-1", &doc).await).await;
    assert_eq!(
        (again.0, again.1, again.3),
        (StatusCode::CREATED, true, first.3)
    );
    let models = expect(app.get("/v1/models").await, StatusCode::OK).await;
    assert_eq!(models["models"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused_and_changes_nothing() {
    let app = spawn_with(|_| {}).await;
    let r = post_keyed(&app, "/v1/models", "k", &model("first")).await;
    expect(r, StatusCode::CREATED).await;
    let r = post_keyed(&app, "/v1/models", "k", &model("second")).await;
    let e = expect_error(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("different request"));
    expect_error(
        app.get("/v1/models/second").await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
    // Another route is another request too.
    let r = post_keyed(&app, "/v1/models/first/train", "k", &xor_train(5)).await;
    expect_error(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(job_total(&app, "first").await, 0);
    // The first answer is still there for a true retry.
    let r = post_keyed(&app, "/v1/models", "k", &model("first")).await;
    assert!(replayed(&r));
    expect(r, StatusCode::CREATED).await;
    // Bad keys: a 422 naming the header, nothing created.
    for bad in [
        String::new(),
        "has space".into(),
        "k".repeat(256),
        "tab\tkey".into(),
    ] {
        let r = post_keyed(&app, "/v1/models", &bad, &model("third")).await;
        let e = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(e["field"], "Idempotency-Key", "{bad:?}");
    }
    let r = app
        .client
        .post(app.url("/v1/models"))
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&model("third"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let r = post_keyed(&app, "/v1/models", &"k".repeat(255), &model("third")).await;
    expect(r, StatusCode::CREATED).await;
    expect(app.get("/v1/models/third").await, StatusCode::OK).await;
    // On a route that takes no key, it is ignored.
    let r = post_keyed(
        &app,
        "/v1/models/first/predict",
        "k",
        &json!({"inputs": [[0, 1]]}),
    )
    .await;
    expect_error(r, StatusCode::CONFLICT, "model_not_trained").await;
}

#[tokio::test]
async fn answers_other_than_2xx_are_not_kept() {
    let app = spawn_with(|_| {}).await;
    // A 404 (no such model yet): the key is free again once the model exists.
    let r = post_keyed(&app, "/v1/models/later/train", "t", &xor_train(5)).await;
    expect_error(r, StatusCode::NOT_FOUND, "model_not_found").await;
    // A 422 corrected under the same key.
    let mut bad = model("later");
    bad["layers"][0]["units"] = json!(0);
    let r = post_keyed(&app, "/v1/models", "m", &bad).await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let r = post_keyed(&app, "/v1/models", "m", &model("later")).await;
    assert!(!replayed(&r));
    expect(r, StatusCode::CREATED).await;
    let r = post_keyed(&app, "/v1/models/later/train", "t", &xor_train(5)).await;
    assert!(!replayed(&r));
    expect(r, StatusCode::ACCEPTED).await;
    assert_eq!(job_total(&app, "later").await, 1);
    assert_eq!(stored_keys(&app.data_dir).await, vec!["m", "t"]);
}

#[tokio::test]
async fn keys_expire_after_the_ttl_and_are_purged() {
    let app = spawn_with(|c| c.idempotency_ttl_secs = 1).await;
    let r = post_keyed(&app, "/v1/models", "old", &model("a")).await;
    expect(r, StatusCode::CREATED).await;
    let r = post_keyed(&app, "/v1/models", "old", &model("a")).await;
    assert!(replayed(&r), "within the TTL: replayed");
    assert_eq!(stored_keys(&app.data_dir).await, vec!["old"]);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // Expired: the key is free for a new request (no 422), and it is new work.
    let r = post_keyed(&app, "/v1/models", "old", &model("b")).await;
    assert!(!replayed(&r));
    expect(r, StatusCode::CREATED).await;
    // Any claim purges every expired key.
    let r = post_keyed(&app, "/v1/models", "other", &model("c")).await;
    expect(r, StatusCode::CREATED).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let r = post_keyed(&app, "/v1/models", "new", &model("d")).await;
    expect(r, StatusCode::CREATED).await;
    assert_eq!(stored_keys(&app.data_dir).await, vec!["new"]);
}

#[tokio::test]
async fn a_recorded_answer_survives_a_restart() {
    let dir = temp_dir("idempotency");
    let d = dir.clone();
    let app = spawn_with(move |c| c.data_dir = d).await;
    app.create_model("xor", 2, serde_json::from_str(LAYERS).unwrap())
        .await;
    let r = post_keyed(&app, "/v1/models/xor/train", "nightly", &xor_train(20)).await;
    let first = answer(r).await;
    assert_eq!(first.0, StatusCode::ACCEPTED);
    let id = serde_json::from_str::<Value>(&first.3).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_done(&id).await;
    app.stop().await;

    let d = dir.clone();
    let app = spawn_with(move |c| c.data_dir = d).await;
    let r = post_keyed(&app, "/v1/models/xor/train", "nightly", &xor_train(20)).await;
    let again = answer(r).await;
    assert_eq!(
        (again.0, again.1, &again.3),
        (StatusCode::ACCEPTED, true, &first.3)
    );
    assert_eq!(job_total(&app, "xor").await, 1);
    let r = post_keyed(&app, "/v1/models/xor/train", "nightly", &xor_train(21)).await;
    expect_error(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    app.stop().await;
    super::helpers::remove_store(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_do_the_work_once() {
    let app = spawn_with(|_| {}).await;
    app.create_model("xor", 2, serde_json::from_str(LAYERS).unwrap())
        .await;
    // A large inline dataset keeps the first request at work a while (parsed, checked); the
    // body is serialised once, so that the eight requests leave together.
    let n = 100_000;
    let inputs: Vec<[u8; 2]> = (0..n)
        .map(|i| [(i % 2) as u8, ((i / 2) % 2) as u8])
        .collect();
    let labels: Vec<u8> = inputs.iter().map(|p| p[0] ^ p[1]).collect();
    let body =
        json!({"dataset": {"inputs": inputs, "labels": labels}, "epochs": 1, "batch_size": 256});
    let body = axum::body::Bytes::from(serde_json::to_vec(&body).unwrap());
    let sends = (0..8).map(|_| async {
        let r = app
            .client
            .post(app.url("/v1/models/xor/train"))
            .header("content-type", "application/json")
            .header("idempotency-key", "once")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let retry_after = r.headers().contains_key("retry-after");
        let (status, replayed, _, text) = answer(r).await;
        (status, replayed, retry_after, text)
    });
    let answers = futures_util::future::join_all(sends).await;
    let seen: Vec<_> = answers.iter().map(|a| (a.0.as_u16(), a.1)).collect();
    println!("(status, replayed) of 8 concurrent requests: {seen:?}");
    let mut ids = Vec::new();
    let mut fresh = 0;
    for (status, replayed, retry_after, text) in &answers {
        let v: Value = serde_json::from_str(text).unwrap();
        match *status {
            StatusCode::ACCEPTED => {
                fresh += usize::from(!replayed);
                ids.push(v["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                assert_eq!(v["error"]["code"], "idempotency_key_in_flight", "{v}");
                assert!(retry_after);
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    assert_eq!(fresh, 1, "exactly one request did the work: {answers:?}");
    ids.dedup();
    assert_eq!(ids.len(), 1, "one job id: {ids:?}");
    assert_eq!(job_total(&app, "xor").await, 1);
}

#[tokio::test]
async fn a_reservation_left_by_a_dead_process_is_taken_over_after_its_lease() {
    let app = spawn_with(|c| c.idempotency_lease_secs = 2).await;
    let body = serde_json::to_vec(&model("orphan")).unwrap();
    // Another replica claimed the key for this very request, then died before answering.
    let store = open_store(&app.data_dir).await;
    let now = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap();
    let claim = mlpd::store::IdempotencyClaim {
        key: "orphaned".into(),
        fingerprint: mlpd::api::idempotency::fingerprint(
            "POST",
            "/v1/models",
            "application/json",
            "",
            &body,
        ),
        owner: uuid::Uuid::new_v4(),
        now,
        expired_before: 0,
        stale_before: 0,
    };
    let s = store.clone();
    let got = tokio::task::spawn_blocking(move || s.claim_idempotency_key(&claim).unwrap())
        .await
        .unwrap();
    assert_eq!(got, mlpd::store::Claimed::Reserved);
    let send = || {
        app.client
            .post(app.url("/v1/models"))
            .header("content-type", "application/json")
            .header("idempotency-key", "orphaned")
            .body(body.clone())
            .send()
    };
    // Within its lease the reservation holds: retry later.
    let r = send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    expect_error(r, StatusCode::CONFLICT, "idempotency_key_in_flight").await;
    expect_error(
        app.get("/v1/models/orphan").await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
    // Not renewed for the lease: taken over, and the work is done (once).
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let r = send().await.unwrap();
    assert!(!replayed(&r));
    expect(r, StatusCode::CREATED).await;
    let r = send().await.unwrap();
    assert!(replayed(&r));
    expect(r, StatusCode::CREATED).await;
    drop(store);
}
