//! Versions' weights load on demand into a cache under `--version-cache-mb`: the least recently
//! used go first, answers do not change when a version is dropped and loaded again, and a
//! restarted server loads what it serves.

use super::helpers::{TestApp, expect, spawn_with};
use super::persistence::temp_dir;
use mlpd::versions::Lru;
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;

#[test]
fn the_lru_drops_the_least_recently_used_and_counts_bytes() {
    let mut lru: Lru<&str, u32> = Lru::new(8);
    assert!(lru.insert("a", 1, 3));
    assert!(lru.insert("b", 2, 3));
    assert_eq!((lru.bytes(), lru.len()), (6, 2));
    // "a" is used again: "b" is now the least recently used, and goes for "c".
    assert_eq!(lru.get(&"a"), Some(1));
    assert!(lru.insert("c", 3, 3));
    assert_eq!(lru.get(&"b"), None);
    assert_eq!(lru.keys_by_age(), vec!["a", "c"]);
    assert_eq!((lru.bytes(), lru.evictions()), (6, 1));
    // Larger than the whole budget: not kept, and nothing evicted for it.
    assert!(!lru.insert("huge", 9, 9));
    assert_eq!((lru.bytes(), lru.len(), lru.evictions()), (6, 2, 1));
    // Exactly the budget: everything else goes.
    assert!(lru.insert("full", 4, 8));
    assert_eq!(lru.keys_by_age(), vec!["full"]);
    assert_eq!((lru.bytes(), lru.evictions()), (8, 3));
    // Replacing a key counts its new size only; removing gives the bytes back.
    assert!(lru.insert("full", 5, 2));
    assert_eq!((lru.bytes(), lru.get(&"full")), (2, Some(5)));
    assert_eq!(lru.remove(&"full"), Some(5));
    assert_eq!((lru.bytes(), lru.len()), (0, 0));
    assert!(lru.is_empty());
    lru.insert("x", 1, 1);
    lru.insert("y", 2, 1);
    lru.retain(|k| *k != "x");
    assert_eq!((lru.keys_by_age(), lru.bytes()), (vec!["y"], 1));
    // A budget of 0 keeps nothing.
    let mut none: Lru<u8, u8> = Lru::new(0);
    assert!(!none.insert(1, 1, 1));
    assert_eq!(none.len(), 0);
}

/// About one iris version (4-16-3) of budget: a second evicts the first.
const ONE_VERSION_MB: f64 = 0.008;

async fn in_dir(dir: &Path, mb: f64) -> TestApp {
    let dir = dir.to_path_buf();
    spawn_with(move |c| {
        c.data_dir = dir;
        c.version_cache_mb = mb;
    })
    .await
}

const ROWS: &str =
    r#"{"inputs": [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [7.7, 3.0, 6.1, 2.3]]}"#;

async fn outputs(app: &TestApp, query: &str) -> String {
    let r = app
        .client
        .post(app.url(&format!("/v1/models/iris/predict{query}")))
        .header("content-type", "application/json")
        .body(ROWS)
        .send()
        .await
        .unwrap();
    let p = expect(r, StatusCode::OK).await;
    p["outputs"].to_string()
}

/// The version cache's metrics: (bytes, budget, entries, hits, misses, evictions).
async fn cache_metrics(app: &TestApp) -> [u64; 6] {
    let text = app.get("/metrics").await.text().await.unwrap();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    [
        value("mlpd_version_cache_bytes"),
        value("mlpd_version_cache_budget_bytes"),
        value("mlpd_version_cache_entries"),
        value("mlpd_version_cache_hits_total"),
        value("mlpd_version_cache_misses_total"),
        value("mlpd_version_cache_evictions_total"),
    ]
}

#[tokio::test]
async fn versions_beyond_the_budget_are_dropped_and_load_again_with_the_same_answers() {
    let dir = temp_dir("version-cache");
    let app = in_dir(&dir, ONE_VERSION_MB).await;
    let ds = app.trained_iris("iris").await;
    // Each version as it answered when just published (in the cache then).
    let mut answers = vec![outputs(&app, "?version=1").await];
    for _ in 0..2 {
        let job = app
            .train(
                "iris",
                json!({"dataset_id": ds, "epochs": 3, "seed": answers.len()}),
            )
            .await;
        assert_eq!(app.wait_done(&job).await["status"], "succeeded");
        answers.push(outputs(&app, &format!("?version={}", answers.len() + 1)).await);
    }
    assert_ne!(answers[0], answers[2], "the versions differ");
    let [_, budget, _, _, misses_before, _] = cache_metrics(&app).await;
    assert_eq!(budget, (ONE_VERSION_MB * f64::from(1u32 << 20)) as u64);
    // Round and round: every other request loads its version again, answers unchanged.
    for _ in 0..2 {
        for (i, want) in answers.iter().enumerate() {
            let got = outputs(&app, &format!("?version={}", i + 1)).await;
            assert_eq!(&got, want, "version {} after reloading", i + 1);
        }
    }
    let [bytes, budget, entries, _, misses, evictions] = cache_metrics(&app).await;
    assert!(bytes <= budget, "{bytes} bytes held, budget {budget}");
    assert_eq!(entries, 1, "one version fits");
    assert!(misses >= misses_before + 6, "every version loaded again");
    assert!(evictions >= 6, "{evictions} evictions");
    // The listing needs no weights.
    let m = expect(app.get("/v1/models/iris").await, StatusCode::OK).await;
    assert_eq!(m["versions"], json!([1, 2, 3]));
    let v = expect(app.get("/v1/models/iris/versions/1").await, StatusCode::OK).await;
    assert_eq!(v["version"], 1);
    assert!(v["signature"].is_object(), "{v}");
    app.stop().await;

    // Restarted: the served version is loaded at startup (the first prediction is a hit), the
    // others on demand.
    let app = in_dir(&dir, ONE_VERSION_MB).await;
    let [_, _, entries, hits, misses, _] = cache_metrics(&app).await;
    assert_eq!(
        (entries, hits, misses),
        (1, 0, 1),
        "the served version preloaded"
    );
    assert_eq!(outputs(&app, "").await, answers[2]);
    let [_, _, _, hits, misses, _] = cache_metrics(&app).await;
    assert_eq!((hits, misses), (1, 1), "served from the cache");
    assert_eq!(outputs(&app, "?version=1").await, answers[0]);
    assert_eq!(outputs(&app, "?version=2").await, answers[1]);
    let [bytes, budget, _, _, misses, _] = cache_metrics(&app).await;
    assert_eq!(misses, 3);
    assert!(bytes <= budget);
    app.stop().await;

    // No budget at all: every version is still served, read for each use, none kept.
    let app = in_dir(&dir, 0.0).await;
    for (i, want) in answers.iter().enumerate() {
        assert_eq!(&outputs(&app, &format!("?version={}", i + 1)).await, want);
    }
    let [bytes, _, entries, _, misses, _] = cache_metrics(&app).await;
    assert_eq!((bytes, entries, misses), (0, 0, 3));
    app.stop().await;
    super::helpers::remove_store(&dir);
}

/// Cluster mode: a replica that hears of a version published elsewhere loads its weights
/// before it serves it, so its first prediction with it is a cache hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_replica_loads_a_version_published_elsewhere_before_serving_it() {
    if super::helpers::postgres_server().is_none() {
        return;
    }
    let db = super::helpers::TestDatabase::create().await;
    let on_db = |url: String| {
        spawn_with(move |c| {
            c.database_url = Some(url.parse().unwrap());
            c.version_cache_mb = ONE_VERSION_MB;
        })
    };
    let a = on_db(db.url.clone()).await;
    let b = on_db(db.url.clone()).await;
    a.trained_iris("iris").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let m = b.get("/v1/models/iris").await;
        if m.status() == StatusCode::OK
            && m.json::<serde_json::Value>().await.unwrap()["serving_version"] == 1
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica b never served v1"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let [_, _, entries, hits, misses, _] = cache_metrics(&b).await;
    assert_eq!((entries, hits, misses), (1, 0, 0), "loaded with the model");
    assert_eq!(outputs(&b, "").await, outputs(&a, "").await);
    let [_, _, _, hits, misses, _] = cache_metrics(&b).await;
    assert_eq!((hits, misses), (1, 0), "b's prediction was a hit");
    a.stop().await;
    b.stop().await;
}
