use super::helpers::{Sse, expect_error, spawn_app};
use reqwest::StatusCode;
use serde_json::json;

/// Epoch numbers of a stream's epoch events, and whether each one's `id` equals its epoch.
fn epochs(events: &[super::helpers::SseEvent]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.event == "epoch")
        .map(|e| {
            let n = e.data["epoch"].as_u64().unwrap();
            assert_eq!(
                e.id.as_deref(),
                Some(n.to_string().as_str()),
                "id: is the epoch"
            );
            assert!(e.data["cost"].as_f64().unwrap().is_finite());
            n
        })
        .collect()
}

#[tokio::test]
async fn live_stream_shows_each_epoch_then_the_end() {
    let app = spawn_app().await;
    app.create_model(
        "m",
        64,
        json!([{"units": 32, "activation": "relu"}, {"units": 10, "activation": "softmax"}]),
    )
    .await;
    let ds = app.upload("digits.csv", "digit").await;
    // Slow enough (batch 1) that the subscriber joins while it runs.
    let job = app
        .train("m", json!({"dataset_id": ds, "epochs": 6, "batch_size": 1}))
        .await;
    let mut sse = Sse::open(&app, &format!("/v1/jobs/{job}/events"), None).await;
    let first = sse.next().await.unwrap();
    assert_eq!(
        (first.event.as_str(), first.data["epoch"].as_u64()),
        ("epoch", Some(1))
    );
    let status_mid: serde_json::Value = app
        .get(&format!("/v1/jobs/{job}"))
        .await
        .json()
        .await
        .unwrap();
    let mut rest = vec![first];
    rest.extend(sse.collect().await);
    assert_eq!(epochs(&rest), [1, 2, 3, 4, 5, 6]);
    let end = rest.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.data["status"], "succeeded");
    assert_eq!(end.data["model_version"], 1);
    assert!(status_mid["status"] == "running" || status_mid["status"] == "succeeded");
}

#[tokio::test]
async fn late_subscribers_get_the_history_and_last_event_id_resumes() {
    let app = spawn_app().await;
    app.create_model(
        "m",
        4,
        json!([{"units": 8, "activation": "tanh"}, {"units": 3, "activation": "softmax"}]),
    )
    .await;
    let ds = app.upload("iris.csv", "species").await;
    let job = app
        .train("m", json!({"dataset_id": ds, "epochs": 12}))
        .await;
    app.wait_done(&job).await;
    // A finished job: replay everything, then end, then close.
    let all = Sse::open(&app, &format!("/v1/jobs/{job}/events"), None)
        .await
        .collect()
        .await;
    assert_eq!(epochs(&all), (1..=12).collect::<Vec<_>>());
    assert_eq!(all.last().unwrap().event, "end");
    // Resume after epoch 9.
    let tail = Sse::open(&app, &format!("/v1/jobs/{job}/events"), Some(9))
        .await
        .collect()
        .await;
    assert_eq!(epochs(&tail), [10, 11, 12]);
    assert_eq!(tail.last().unwrap().data["status"], "succeeded");
    expect_error(
        app.get(&format!("/v1/jobs/{}/events", uuid::Uuid::new_v4()))
            .await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    )
    .await;
}

#[tokio::test]
async fn a_subscriber_joining_mid_run_sees_every_epoch_once_and_a_canceled_end() {
    let app = spawn_app().await;
    app.create_model(
        "m",
        64,
        json!([{"units": 32, "activation": "relu"}, {"units": 10, "activation": "softmax"}]),
    )
    .await;
    let ds = app.upload("digits.csv", "digit").await;
    let job = app
        .train(
            "m",
            json!({"dataset_id": ds, "epochs": 100000, "batch_size": 1}),
        )
        .await;
    app.wait_job(&job, |j| j["epoch"].as_u64() >= Some(2)).await;
    let mut sse = Sse::open(&app, &format!("/v1/jobs/{job}/events"), None).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let e = sse.next().await.unwrap();
        seen.push(e);
    }
    app.post(&format!("/v1/jobs/{job}/cancel"), &json!({}))
        .await;
    seen.extend(sse.collect().await);
    let got = epochs(&seen);
    assert_eq!(
        got,
        (1..=got.len() as u64).collect::<Vec<_>>(),
        "history then live, no gap, no repeat"
    );
    assert_eq!(seen.last().unwrap().data["status"], "canceled");
}
