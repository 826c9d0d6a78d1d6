//! Evaluations: a version scored on a dataset. Every figure the server reports is recomputed
//! here, independently, from the same rows sent to `/predict` (pairwise counting for ROC AUC,
//! not the server's rank formula).

use super::helpers::{TestApp, expect, expect_error, spawn_app, spawn_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A repo CSV as (feature rows, target texts).
fn rows(file: &str) -> (Vec<Vec<f64>>, Vec<String>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("datasets")
        .join(file);
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for r in rdr.records() {
        let r = r.unwrap();
        let n = r.len();
        x.push(r.iter().take(n - 1).map(|v| v.parse().unwrap()).collect());
        y.push(r[n - 1].to_string());
    }
    (x, y)
}

async fn predict(app: &TestApp, model: &str, x: &[Vec<f64>]) -> Value {
    let r = app
        .post(
            &format!("/v1/models/{model}/predict"),
            &json!({"inputs": x}),
        )
        .await;
    expect(r, StatusCode::OK).await
}

async fn evaluate(app: &TestApp, model: &str, body: Value) -> Value {
    let r = app
        .post(&format!("/v1/models/{model}/versions/1/evaluate"), &body)
        .await;
    expect(r, StatusCode::CREATED).await
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[tokio::test]
async fn a_classifiers_scores_equal_those_recomputed_from_its_predictions() {
    let app = spawn_app().await;
    let ds = app.trained_iris("iris").await;
    let e = evaluate(&app, "iris", json!({"dataset_id": ds})).await;
    assert_eq!(e["model"], "iris");
    assert_eq!(e["version"], 1);
    assert_eq!(e["dataset_id"], ds.as_str());
    assert_eq!(e["rows"], 150);
    let s = &e["scores"];
    assert_eq!(s["task"], "classification");

    let (x, truth) = rows("iris.csv");
    let p = predict(&app, "iris", &x).await;
    let labels: Vec<String> = s["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert_eq!(labels, ["setosa", "versicolor", "virginica"]);
    let at = |l: &str| labels.iter().position(|k| k == l).unwrap();
    let mut confusion = vec![vec![0u64; 3]; 3];
    let mut log_loss = 0.0;
    for (i, t) in truth.iter().enumerate() {
        let predicted = p["labels"][i].as_str().unwrap();
        confusion[at(t)][at(predicted)] += 1;
        let prob = f64::from(p["probabilities"][i][t.as_str()].as_f64().unwrap() as f32);
        log_loss -= prob.clamp(1e-15, 1.0 - 1e-15).ln();
    }
    log_loss /= truth.len() as f64;
    let served: Vec<Vec<u64>> = serde_json::from_value(s["confusion_matrix"].clone()).unwrap();
    assert_eq!(served, confusion);
    let correct: u64 = (0..3).map(|i| confusion[i][i]).sum();
    assert_eq!(s["accuracy"].as_f64().unwrap(), correct as f64 / 150.0);
    assert!(s["accuracy"].as_f64().unwrap() > 0.9, "{s}");
    assert!(
        close(s["log_loss"].as_f64().unwrap(), log_loss, 1e-12),
        "{s} vs {log_loss}"
    );
    for (c, class) in s["per_class"].as_array().unwrap().iter().enumerate() {
        let tp = confusion[c][c] as f64;
        let support: u64 = confusion[c].iter().sum();
        let predicted: u64 = confusion.iter().map(|r| r[c]).sum();
        assert_eq!(class["support"], support);
        assert_eq!(class["recall"].as_f64().unwrap(), tp / support as f64);
        assert_eq!(class["precision"].as_f64().unwrap(), tp / predicted as f64);
    }
    assert!(
        s.get("roc_auc").is_none(),
        "three classes have no single AUC"
    );

    // Stored with the version, listed newest first.
    let again = evaluate(&app, "iris", json!({"dataset_id": ds})).await;
    let list = expect(
        app.get("/v1/models/iris/versions/1/evaluations").await,
        StatusCode::OK,
    )
    .await;
    let ids: Vec<&str> = list["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [again["id"].as_str().unwrap(), e["id"].as_str().unwrap()]
    );
    assert_eq!(list["evaluations"][1]["scores"], e["scores"]);
}

#[tokio::test]
async fn a_binary_classifiers_auc_equals_pairwise_counting() {
    let app = spawn_app().await;
    app.create_model(
        "cancer",
        30,
        json!([{"units": 8, "activation": "relu"}, {"units": 1, "activation": "sigmoid"}]),
    )
    .await;
    let ds = app.upload("breast_cancer.csv", "diagnosis").await;
    let job = app
        .train("cancer", json!({"dataset_id": ds, "epochs": 5, "seed": 3}))
        .await;
    assert_eq!(app.wait_done(&job).await["status"], "succeeded");
    let e = evaluate(&app, "cancer", json!({"dataset_id": ds})).await;
    let s = &e["scores"];
    assert_eq!(s["labels"], json!(["benign", "malignant"]));

    let (x, truth) = rows("breast_cancer.csv");
    let p = predict(&app, "cancer", &x).await;
    let score: Vec<f64> = (0..x.len())
        .map(|i| p["probabilities"][i]["malignant"].as_f64().unwrap())
        .collect();
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (i, ti) in truth.iter().enumerate() {
        for (j, tj) in truth.iter().enumerate() {
            if ti == "malignant" && tj == "benign" {
                pairs += 1.0;
                wins += if score[i] > score[j] {
                    1.0
                } else if score[i] == score[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    let auc = s["roc_auc"].as_f64().unwrap();
    assert!(close(auc, wins / pairs, 1e-12), "{auc} vs {}", wins / pairs);
    assert!(auc > 0.9, "{auc}");
}

#[tokio::test]
async fn a_regressions_scores_equal_those_recomputed_from_its_predictions() {
    let app = spawn_app().await;
    app.create_model(
        "diabetes",
        10,
        json!([{"units": 16, "activation": "relu"}, {"units": 1, "activation": "identity"}]),
    )
    .await;
    let ds = app.upload("diabetes.csv", "progression").await;
    let job = app
        .train(
            "diabetes",
            json!({"dataset_id": ds, "epochs": 40, "seed": 1}),
        )
        .await;
    assert_eq!(app.wait_done(&job).await["status"], "succeeded");
    let e = evaluate(&app, "diabetes", json!({"dataset_id": ds})).await;
    let s = &e["scores"];
    assert_eq!(s["task"], "regression");
    let t = &s["targets"][0];
    assert_eq!(t["target"], "progression");

    let (x, y) = rows("diabetes.csv");
    let p = predict(&app, "diabetes", &x).await;
    let y: Vec<f64> = y.iter().map(|v| v.parse().unwrap()).collect();
    let yhat: Vec<f64> = (0..y.len())
        // JSON carries each f32 output as its shortest decimal: read it back as that f32.
        .map(|i| f64::from(p["outputs"][i][0].as_f64().unwrap() as f32))
        .collect();
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n;
    let ss_res: f64 = y.iter().zip(&yhat).map(|(a, b)| (a - b).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|a| (a - mean).powi(2)).sum();
    let mae = y.iter().zip(&yhat).map(|(a, b)| (a - b).abs()).sum::<f64>() / n;
    assert!(
        close(t["mse"].as_f64().unwrap(), ss_res / n, 1e-12),
        "{t} vs {}",
        ss_res / n
    );
    assert!(
        close(t["mae"].as_f64().unwrap(), mae, 1e-12),
        "{t} vs {mae}"
    );
    assert!(
        close(t["r2"].as_f64().unwrap(), 1.0 - ss_res / ss_tot, 1e-12),
        "{t}"
    );
    assert!(t["r2"].as_f64().unwrap() > 0.3, "{t}");
    let mut res: Vec<f64> = y.iter().zip(&yhat).map(|(a, b)| a - b).collect();
    res.sort_by(f64::total_cmp);
    assert!(
        close(t["residuals"]["min"].as_f64().unwrap(), res[0], 1e-12),
        "{t}"
    );
    assert!(
        close(
            t["residuals"]["max"].as_f64().unwrap(),
            res[res.len() - 1],
            1e-12
        ),
        "{t}"
    );
    let median = (res[220] + res[221]) / 2.0; // 442 rows
    assert!(
        close(t["residuals"]["p50"].as_f64().unwrap(), median, 1e-12),
        "{t}"
    );

    // Predicted versus actual, for a scatter plot: every row of these 442, as /predict said.
    let same_pairs = |pairs: &Value, rows: &[usize]| {
        let pairs = pairs.as_array().unwrap();
        assert_eq!(pairs.len(), rows.len());
        for (pair, &row) in pairs.iter().zip(rows) {
            assert_eq!(pair["row"], row, "{pair}");
            let i = row % y.len();
            assert!(
                close(pair["predicted"].as_f64().unwrap(), yhat[i], 1e-12),
                "{pair} vs {}",
                yhat[i]
            );
            assert!(
                close(pair["actual"].as_f64().unwrap(), y[i], 1e-12),
                "{pair} vs {}",
                y[i]
            );
        }
    };
    same_pairs(&t["pairs"], &(0..442).collect::<Vec<_>>());
    // Kept with the evaluation in the store.
    let listed = expect(
        app.get("/v1/models/diabetes/versions/1/evaluations").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["evaluations"][0]["scores"], e["scores"]);

    // More than 500 rows (the data three times over): 500 of them, evenly spread, the same
    // ones every time.
    let header: Vec<String> = csv::Reader::from_path(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/diabetes.csv"),
    )
    .unwrap()
    .headers()
    .unwrap()
    .iter()
    .map(str::to_owned)
    .collect();
    let records: Vec<Value> = (0..3 * x.len())
        .map(|r| {
            let i = r % x.len();
            let mut m = serde_json::Map::new();
            for (j, name) in header.iter().enumerate() {
                let v = if j < x[i].len() { x[i][j] } else { y[i] };
                m.insert(name.clone(), json!(v));
            }
            Value::Object(m)
        })
        .collect();
    let body = json!({"dataset": {"target": "progression", "records": records}});
    let big = evaluate(&app, "diabetes", body.clone()).await;
    let chosen: Vec<usize> = (0..500).map(|i| i * 1326 / 500).collect();
    same_pairs(&big["scores"]["targets"][0]["pairs"], &chosen);
    let again = evaluate(&app, "diabetes", body).await;
    assert_eq!(
        again["scores"]["targets"][0]["pairs"],
        big["scores"]["targets"][0]["pairs"]
    );
}

#[tokio::test]
async fn data_that_does_not_fit_the_version_is_refused_naming_it_and_nothing_is_stored() {
    let dir = super::persistence::temp_dir("evaluations");
    let d = dir.clone();
    let app = spawn_with(move |c| c.data_dir = d).await;
    let ds = app.trained_iris("iris").await;
    let path = "/v1/models/iris/versions/1/evaluate";
    let e = expect_error(
        app.post(
            path,
            &json!({"dataset_id": "7d1f2a8e-0000-4000-8000-000000000000"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(e["field"], "dataset_id", "{e}");
    expect_error(
        app.post(path, &json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    // A feature column missing from the data.
    let missing = json!({"dataset": {"target": "species", "records": [
        {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "species": "setosa"},
        {"sepal_length_cm": 6.1, "sepal_width_cm": 2.5, "petal_length_cm": 4.4, "species": "versicolor"}]}});
    let e = expect_error(
        app.post(path, &missing).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(e["field"], "dataset", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("petal_width_cm"),
        "{e}"
    );
    // A class the model never learned.
    let unseen = json!({"dataset": {"target": "species", "records": [
        {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2, "species": "setosa"},
        {"sepal_length_cm": 6.1, "sepal_width_cm": 2.5, "petal_length_cm": 4.4, "petal_width_cm": 1.2, "species": "hybrid"}]}});
    let e = expect_error(
        app.post(path, &unseen).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("hybrid"), "{e}");
    // Text in a numeric feature names the row and the column.
    let text = json!({"dataset": {"target": "species", "records": [
        {"sepal_length_cm": "long", "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2, "species": "setosa"},
        {"sepal_length_cm": 6.1, "sepal_width_cm": 2.5, "petal_length_cm": 4.4, "petal_width_cm": 1.2, "species": "versicolor"}]}});
    let e = expect_error(
        app.post(path, &text).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("row 1") && m.contains("sepal_length_cm"), "{e}");
    // Unknown version and model.
    expect_error(
        app.post(
            "/v1/models/iris/versions/9/evaluate",
            &json!({"dataset_id": ds}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;
    expect_error(
        app.get("/v1/models/nope/versions/1/evaluations").await,
        StatusCode::NOT_FOUND,
        "model_not_found",
    )
    .await;
    let list = expect(
        app.get("/v1/models/iris/versions/1/evaluations").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["evaluations"], json!([]));

    // An inline dataset that fits is scored (extra columns are ignored), and survives a
    // restart with its version; deleting the model deletes it.
    let fits = json!({"dataset": {"target": "species", "records": [
        {"id": 1, "sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2, "species": "setosa"},
        {"id": 2, "sepal_length_cm": 6.1, "sepal_width_cm": 2.5, "petal_length_cm": 4.4, "petal_width_cm": 1.2, "species": "versicolor"}]}});
    let e = evaluate(&app, "iris", fits).await;
    assert_eq!(e["rows"], 2);
    assert!(e.get("dataset_id").is_none_or(Value::is_null), "{e}");
    app.stop().await;
    let d = dir.clone();
    let app = spawn_with(move |c| c.data_dir = d).await;
    let list = expect(
        app.get("/v1/models/iris/versions/1/evaluations").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["evaluations"][0]["id"], e["id"]);
    expect(app.delete("/v1/models/iris").await, StatusCode::NO_CONTENT).await;
    app.create_model("iris", 4, json!([{"units": 3, "activation": "softmax"}]))
        .await;
    let job = app
        .train("iris", json!({"dataset_id": ds, "epochs": 2}))
        .await;
    assert_eq!(app.wait_done(&job).await["status"], "succeeded");
    let list = expect(
        app.get("/v1/models/iris/versions/1/evaluations").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        list["evaluations"],
        json!([]),
        "a new model's version 1 starts clean"
    );
    app.stop().await;
    super::helpers::remove_store(&dir);
}
