//! PostgreSQL-only behaviour: migrations under the advisory lock, refusal of a newer schema,
//! uniqueness and limits decided by the database across replicas, the password kept out of
//! logs, help and errors. The rest of the suite runs on PostgreSQL too
//! (`MLPD_TEST_BACKEND=postgres`).
//!
//! These tests need `MLPD_TEST_DATABASE_URL`; without it they say so and pass, except under
//! `CI=true`, where they fail.

use super::helpers::{TestApp, TestDatabase, postgres_server, spawn_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

fn config_for(url: &str) -> mlpd::Config {
    let mut c = mlpd::Config::for_tests();
    c.database_url = Some(url.parse().unwrap());
    c
}

async fn app_on(url: &str) -> TestApp {
    let url = url.to_string();
    spawn_with(move |c| c.database_url = Some(url.parse().unwrap())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_starting_at_once_migrate_the_schema_once() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    let starts: Vec<_> = (0..4)
        .map(|_| tokio::spawn(mlpd::App::build(config_for(&db.url))))
        .collect();
    for s in starts {
        s.await.unwrap().expect("every replica starts");
    }
    let rows = db
        .sql("SELECT version FROM mlpd_schema ORDER BY version")
        .await;
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        versions,
        (1..=mlpd::store::POSTGRES_SCHEMA_VERSION).collect::<Vec<_>>(),
        "each migration applied once"
    );
    // The schema works: a model created now is there after a restart.
    let app = app_on(&db.url).await;
    app.create_model("m", 1, json!([{"units": 1, "activation": "identity"}]))
        .await;
    app.stop().await;
    let app = app_on(&db.url).await;
    assert_eq!(app.get("/v1/models/m").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn postgres_a_database_with_a_newer_schema_is_refused_at_startup() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    app_on(&db.url).await.stop().await;
    db.sql("INSERT INTO mlpd_schema (version) VALUES (999)")
        .await;
    let err = mlpd::App::build(config_for(&db.url))
        .await
        .err()
        .expect("startup is refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("schema version 999") && msg.contains("newer") && msg.contains(&db.name),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_replicas_racing_one_name_get_one_201_and_one_409() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    let (a, b) = (app_on(&db.url).await, app_on(&db.url).await);
    for i in 0..10 {
        let body = json!({"name": format!("iris{i}"), "inputs": 4,
            "layers": [{"units": 3, "activation": "softmax"}]});
        let (ra, rb) = tokio::join!(a.post("/v1/models", &body), b.post("/v1/models", &body));
        let mut got = [ra.status(), rb.status()];
        got.sort();
        assert_eq!(
            got,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {i}"
        );
        let loser = if ra.status() == StatusCode::CONFLICT {
            ra
        } else {
            rb
        };
        let e: Value = loser.json().await.unwrap();
        assert_eq!(e["error"]["code"], "model_exists", "{e}");
    }
    let rows = db.sql("SELECT count(*) FROM models").await;
    assert_eq!(rows[0].get::<_, i64>(0), 10);
}

#[tokio::test]
async fn postgres_version_numbers_are_allocated_by_the_database() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    let app = app_on(&db.url).await;
    let ds = app.trained_iris("iris").await;
    let job = app
        .train("iris", json!({"dataset_id": ds, "epochs": 2}))
        .await;
    let done = app.wait_done(&job).await;
    assert_eq!(done["model_version"], 2, "{done}");
    let rows = db
        .sql("SELECT version FROM versions WHERE model = 'iris' ORDER BY version")
        .await;
    assert_eq!(rows.iter().map(|r| r.get(0)).collect::<Vec<i64>>(), [1, 2]);
    let rows = db
        .sql("SELECT next_version FROM models WHERE name = 'iris'")
        .await;
    assert_eq!(rows[0].get::<_, i64>(0), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_password_never_reaches_logs_help_or_errors() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    // The password of the test server's URL if it has one; else a made-up one, which trust
    // authentication (as in CI) accepts: the point is where it shows.
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let (user, password, host) = match rest.split_once('@') {
        Some((u, h)) => match u.split_once(':') {
            Some((u, p)) => (u.to_string(), p.to_string(), h.to_string()),
            None => (u.to_string(), "SECRET-PW-7f3a".to_string(), h.to_string()),
        },
        None => ("postgres".into(), "SECRET-PW-7f3a".into(), rest.to_string()),
    };
    let secret = password.as_str();
    let with_password = format!("{scheme}://{user}:{secret}@{host}");

    let log = std::env::temp_dir().join(format!("mlpd-pw-{}.log", uuid::Uuid::new_v4()));
    let out = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mlpd"))
        .args(["--bind", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "trace")
        .env("MLPD_DATABASE_URL", &with_password)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut base = None;
    for _ in 0..400 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        base = text.lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let f = if v["fields"].is_object() {
                &v["fields"]
            } else {
                &v
            };
            (f["message"] == "listening").then(|| f["addr"].as_str().map(str::to_owned))?
        });
        if base.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://{}", base.expect("the server logs its address"));
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/models"))
        .json(
            &json!({"name": "m", "inputs": 1, "layers": [{"units": 1, "activation": "identity"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // SAFETY: the pid is our child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("store: PostgreSQL"),
        "the log was captured:\n{text}"
    );
    assert!(
        !text.contains(secret),
        "the password reached the log:\n{text}"
    );

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_mlpd"))
        .arg("--help")
        .env("MLPD_DATABASE_URL", &with_password)
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("MLPD_DATABASE_URL") && !help.contains(secret),
        "{help}"
    );

    // An unreachable server: a clear startup error naming the host, without the password.
    let mut c = mlpd::Config::for_tests();
    c.database_url = Some(
        format!("postgres://postgres:{secret}@127.0.0.1:1/nowhere")
            .parse()
            .unwrap(),
    );
    let err = mlpd::App::build(c).await.err().expect("startup fails");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("127.0.0.1:1/nowhere") && !msg.contains(secret),
        "{msg}"
    );
}

async fn app_with_limits(url: &str, models: usize, datasets: usize) -> TestApp {
    let url = url.to_string();
    spawn_with(move |c| {
        c.database_url = Some(url.parse().unwrap());
        c.max_models = models;
        c.max_datasets = datasets;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_model_and_dataset_limits_count_what_every_replica_stored() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    let (a, b) = (
        app_with_limits(&db.url, 3, 1).await,
        app_with_limits(&db.url, 3, 1).await,
    );
    let layers = json!([{"units": 1, "activation": "identity"}]);
    a.create_model("a1", 1, layers.clone()).await;
    a.create_model("a2", 1, layers.clone()).await;
    // Each replica's memory holds fewer than 3; the database holds 3 after this one.
    b.create_model("b1", 1, layers.clone()).await;
    for (app, name) in [(&a, "a3"), (&b, "b2")] {
        let r = app
            .post(
                "/v1/models",
                &json!({"name": name, "inputs": 1, "layers": layers}),
            )
            .await;
        super::helpers::expect_error(r, StatusCode::CONFLICT, "limit_reached").await;
    }
    // Racing for the last dataset place: exactly one wins.
    let body = json!({"inputs": [[1.0], [2.0], [3.0]], "targets": [[1.0], [2.0], [3.0]]});
    let (ra, rb) = tokio::join!(a.post("/v1/datasets", &body), b.post("/v1/datasets", &body));
    let mut got = [ra.status(), rb.status()];
    got.sort();
    assert_eq!(got, [StatusCode::CREATED, StatusCode::CONFLICT]);
    let loser = if ra.status() == StatusCode::CONFLICT {
        ra
    } else {
        rb
    };
    let e: Value = loser.json().await.unwrap();
    assert_eq!(e["error"]["code"], "limit_reached", "{e}");
    let rows = db
        .sql("SELECT (SELECT count(*) FROM models), (SELECT count(*) FROM datasets)")
        .await;
    assert_eq!((rows[0].get::<_, i64>(0), rows[0].get::<_, i64>(1)), (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_model_or_dataset_in_use_on_one_replica_cannot_be_deleted_on_another() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    let a = app_on(&db.url).await;
    a.create_model(
        "iris",
        4,
        json!([{"units": 8, "activation": "relu"}, {"units": 3, "activation": "softmax"}]),
    )
    .await;
    let ds = a.upload("iris.csv", "species").await;
    // B starts after: it loads the model and the dataset, but knows nothing of A's jobs.
    let b = app_on(&db.url).await;
    let job = a
        .train("iris", json!({"dataset_id": ds, "epochs": 1_000_000}))
        .await;
    a.wait_job(&job, |j| j["status"] == "running").await;
    super::helpers::expect_error(
        b.delete("/v1/models/iris").await,
        StatusCode::CONFLICT,
        "model_busy",
    )
    .await;
    super::helpers::expect_error(
        b.delete(&format!("/v1/datasets/{ds}")).await,
        StatusCode::CONFLICT,
        "dataset_in_use",
    )
    .await;
    assert_eq!(
        a.post(&format!("/v1/jobs/{job}/cancel"), &json!({}))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    a.wait_done(&job).await;
    assert_eq!(
        b.delete("/v1/models/iris").await.status(),
        StatusCode::NO_CONTENT
    );
    // A still caches the model; the database says it is gone, so nothing is queued for it.
    let r = a
        .post(
            "/v1/models/iris/train",
            &json!({"dataset_id": ds, "epochs": 1}),
        )
        .await;
    super::helpers::expect_error(r, StatusCode::NOT_FOUND, "model_not_found").await;
    let rows = db
        .sql("SELECT count(*) FROM jobs WHERE status = '\"queued\"'")
        .await;
    assert_eq!(rows[0].get::<_, i64>(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_pin_is_the_databases_for_every_replica() {
    if postgres_server().is_none() {
        return;
    }
    let db = TestDatabase::create().await;
    let (a, b) = (app_on(&db.url).await, app_on(&db.url).await);
    let ds = a.trained_iris("iris").await;
    let job = a
        .train("iris", json!({"dataset_id": ds, "epochs": 2}))
        .await;
    assert_eq!(a.wait_done(&job).await["model_version"], 2);
    let row = json!({"inputs": [[5.9, 3.0, 5.1, 1.8]]});
    assert_eq!(served_by(&b, &row, 2).await, 2);
    let r = a
        .put("/v1/models/iris/serving", &json!({"version": 1}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // The running replica follows the pin; a job it runs stores its version unserved, because
    // the publishing transaction reads the pin from the database.
    assert_eq!(
        served_by(&b, &row, 1).await,
        1,
        "the other replica follows the pin"
    );
    let job = b
        .train("iris", json!({"dataset_id": ds, "epochs": 2}))
        .await;
    assert_eq!(b.wait_done(&job).await["model_version"], 3);
    for app in [&a, &b] {
        let p: Value = app
            .post("/v1/models/iris/predict", &row)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(p["version"], 1, "{p}");
    }
    // A replica started now reads the pin from the store.
    let c = app_on(&db.url).await;
    assert_eq!(served_by(&c, &row, 1).await, 1);
    let s: Value = c.get("/v1/models/iris/serving").await.json().await.unwrap();
    assert_eq!(s["history"][0]["cause"], "pin", "{s}");
    assert_eq!(s["pinned_version"], 1, "{s}");
    let rows = db.sql("SELECT count(*) FROM serving_history").await;
    assert_eq!(rows[0].get::<_, i64>(0), 3, "two jobs served, one pin");
    // Deleting the pinned version is refused on any replica.
    assert_eq!(
        b.delete("/v1/models/iris/versions/1").await.status(),
        StatusCode::CONFLICT
    );
    // Unpinning on one replica serves the newest on the others.
    let r = c.delete("/v1/models/iris/serving").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(served_by(&a, &row, 3).await, 3);
    assert_eq!(served_by(&b, &row, 3).await, 3);
}

/// The version a replica serves, once it answers `want` (the change feed brings it; 10 s at
/// most).
async fn served_by(app: &TestApp, row: &Value, want: u64) -> Value {
    let start = std::time::Instant::now();
    loop {
        let r = app.post("/v1/models/iris/predict", row).await;
        let p: Value = r.json().await.unwrap_or(Value::Null);
        if p["version"] == want || start.elapsed() > Duration::from_secs(10) {
            return p["version"].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
