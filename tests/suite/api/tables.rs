//! Real tables through the HTTP API: text categories, missing cells, named features; the task
//! follows the model; predictions by records, columns and CSV. Every run is seeded and scored
//! on rows the model never saw (every fourth row of the file is held out).

use super::helpers::{TestApp, expect, expect_error, spawn_app};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

fn read(file: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("datasets")
            .join(file),
    )
    .unwrap()
}

/// The file's header and rows, split into (training CSV text, held-out records as text).
fn split(file: &str) -> (String, Vec<Map<String, Value>>) {
    let text = read(file);
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let mut train = csv::Writer::from_writer(Vec::new());
    train.write_record(&header).unwrap();
    let mut held = Vec::new();
    for (i, r) in rdr.records().enumerate() {
        let r = r.unwrap();
        if i % 4 == 0 {
            held.push(
                header
                    .iter()
                    .zip(r.iter())
                    .map(|(h, v)| (h.clone(), Value::String(v.to_string())))
                    .collect(),
            );
        } else {
            train.write_record(&r).unwrap();
        }
    }
    (
        String::from_utf8(train.into_inner().unwrap()).unwrap(),
        held,
    )
}

/// A record's text cells as JSON values: numbers as numbers, empty as null.
fn typed(r: &Map<String, Value>, keep: &[&str]) -> Map<String, Value> {
    keep.iter()
        .map(|k| {
            let s = r[*k].as_str().unwrap();
            let v = if s.is_empty() || s == "NA" {
                Value::Null
            } else if let Ok(x) = s.parse::<f64>() {
                json!(x)
            } else {
                json!(s)
            };
            (k.to_string(), v)
        })
        .collect()
}

async fn upload(app: &TestApp, query: &str, csv: String) -> Value {
    expect(
        app.post_csv(&format!("/v1/datasets?{query}"), csv).await,
        StatusCode::CREATED,
    )
    .await
}

async fn train_model(app: &TestApp, name: &str, layers: Value, body: Value) -> Value {
    expect(
        app.post("/v1/models", &json!({"name": name, "layers": layers}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let job = app.train(name, body).await;
    let done = wait_long(app, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    done
}

/// Polls a job until it ends: up to 5 minutes, since these runs train on tens of thousands of
/// rows and the machine running the tests may be busy.
async fn wait_long(app: &TestApp, id: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let job: Value = app
            .get(&format!("/v1/jobs/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "canceled")
        ) {
            return job;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "job never ended: {job}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn predict(app: &TestApp, model: &str, body: &Value) -> Value {
    expect(
        app.post(&format!("/v1/models/{model}/predict"), body).await,
        StatusCode::OK,
    )
    .await
}

fn r2(pred: &[f64], truth: &[f64]) -> f64 {
    let mean = truth.iter().sum::<f64>() / truth.len() as f64;
    let ss_res: f64 = pred.iter().zip(truth).map(|(p, t)| (p - t).powi(2)).sum();
    let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    1.0 - ss_res / ss_tot
}

#[tokio::test]
async fn diamonds_as_they_come_regress_price_with_their_categories() {
    let app = spawn_app().await;
    let (train, held) = split("diamonds.csv");
    let d = upload(&app, "target=price&name=diamonds", train).await;
    let types: Vec<(&str, &str)> = d["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        [
            ("carat", "numeric"),
            ("cut", "categorical"),
            ("color", "categorical"),
            ("clarity", "categorical"),
            ("depth", "numeric"),
            ("table", "numeric"),
            ("x", "numeric"),
            ("y", "numeric"),
            ("z", "numeric"),
            ("price", "numeric"),
        ]
    );
    let cut = &d["columns"][1];
    assert_eq!(cut["levels"], 5);
    assert_eq!(cut["top"][0]["value"], "Ideal", "the most frequent cut");
    assert!(
        d.get("classes").is_none(),
        "an integer price with many values is no class set"
    );
    // No `inputs`: the width follows the encoded data. An identity output regresses the
    // integer price without being told.
    let done = train_model(
        &app,
        "diamonds",
        json!([{"units": 64, "activation": "relu"}, {"units": 32, "activation": "relu"}, {"units": 1, "activation": "identity"}]),
        json!({"dataset_id": d["id"], "epochs": 20, "learning_rate": 0.003, "batch_size": 128, "seed": 7}),
    )
    .await;
    assert_eq!(done["rows_used"], 40455);
    assert_eq!(done["rows_skipped"], 0);
    let v = expect(
        app.get("/v1/models/diamonds/versions/1").await,
        StatusCode::OK,
    )
    .await;
    let sig = &v["signature"];
    assert_eq!(
        sig["inputs"],
        6 + 5 + 7 + 8,
        "6 numbers, 5 cuts, 7 colors, 8 clarities"
    );
    assert_eq!(sig["targets"], json!(["price"]));
    let m = expect(app.get("/v1/models/diamonds").await, StatusCode::OK).await;
    assert_eq!(m["inputs"], 26);

    let features = [
        "carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z",
    ];
    let records: Vec<Value> = held
        .iter()
        .map(|r| Value::Object(typed(r, &features)))
        .collect();
    let truth: Vec<f64> = held
        .iter()
        .map(|r| r["price"].as_str().unwrap().parse().unwrap())
        .collect();
    let p = predict(&app, "diamonds", &json!({ "records": records })).await;
    let pred: Vec<f64> = p["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o[0].as_f64().unwrap())
        .collect();
    let score = r2(&pred, &truth);
    eprintln!("diamonds held-out R² {score}");
    assert!(score >= 0.97, "held-out R² {score}");

    // The same rows by columns, by CSV (with the price column, which is ignored), and as the
    // network's inputs encoded by hand from the signature: the very same outputs.
    let rows = &records[..25];
    let by_records = predict(&app, "diamonds", &json!({ "records": rows })).await;
    let mut columns = Map::new();
    for f in features {
        columns.insert(f.into(), rows.iter().map(|r| r[f].clone()).collect());
    }
    let by_columns = predict(&app, "diamonds", &json!({ "columns": columns })).await;
    let mut csv_body = format!("{},price\n", features.join(","));
    for r in &held[..25] {
        let cells: Vec<&str> = features.iter().map(|f| r[*f].as_str().unwrap()).collect();
        csv_body += &format!("{},{}\n", cells.join(","), r["price"].as_str().unwrap());
    }
    let by_csv = expect(
        app.post_csv("/v1/models/diamonds/predict", csv_body).await,
        StatusCode::OK,
    )
    .await;
    let inputs: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            let mut x = Vec::new();
            for f in sig["features"].as_array().unwrap() {
                let feat = &f["feature"];
                let name = feat["name"].as_str().unwrap();
                match feat["type"].as_str().unwrap() {
                    "numeric" => x.push(r[name].as_f64().unwrap()),
                    _ => {
                        for level in feat["levels"].as_array().unwrap() {
                            x.push(if level == &r[name] { 1.0 } else { 0.0 });
                        }
                    }
                }
            }
            x
        })
        .collect();
    let by_inputs = predict(&app, "diamonds", &json!({ "inputs": inputs })).await;
    assert_eq!(by_records["outputs"], by_inputs["outputs"]);
    assert_eq!(by_columns["outputs"], by_inputs["outputs"]);
    assert_eq!(by_csv["outputs"], by_inputs["outputs"]);

    // A missing field is imputed; an unseen cut is all zeros; both still predict.
    let mut partial = rows[0].as_object().unwrap().clone();
    partial.remove("depth");
    partial.insert("cut".into(), json!("Astonishing"));
    let p = predict(&app, "diamonds", &json!({ "records": [partial] })).await;
    assert!(p["outputs"][0][0].as_f64().unwrap().is_finite());
    // Bad records name the row and field.
    for (body, field) in [
        (
            json!({"records": [rows[0], {"carat": 0.3, "colour": "E"}]}),
            "records[1].colour",
        ),
        (json!({"records": [{"carat": "heavy"}]}), "records[0].carat"),
        (json!({"records": [{"price": 3}]}), "records[0]"),
        (json!({"records": [{"carat": [1]}]}), "records[0].carat"),
        (
            json!({"columns": {"carat": [0.3, 0.4], "cut": ["Ideal"]}}),
            "columns.cut",
        ),
        (json!({"records": rows, "inputs": inputs}), "body"),
    ] {
        let e = expect_error(
            app.post("/v1/models/diamonds/predict", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(e["field"], field, "{body}: {e}");
    }
    let e = expect_error(
        app.post_csv(
            "/v1/models/diamonds/predict",
            "carat,cut,shine\n0.3,Ideal,1\n",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("\"shine\""), "{e}");
}

#[tokio::test]
async fn titanic_ignores_the_name_imputes_ages_and_names_class_probabilities() {
    let app = spawn_app().await;
    let (train, held) = split("titanic.csv");
    let d = upload(&app, "target=survived&ignore=name", train).await;
    let age = d["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "age")
        .unwrap()
        .clone();
    assert_eq!(age["type"], "numeric");
    assert!(age["missing"].as_u64().unwrap() > 150, "{age}");
    assert_eq!(
        d["classes"],
        json!({"type": "str", "values": ["no", "yes"]})
    );
    train_model(
        &app,
        "titanic",
        json!([{"units": 16, "activation": "relu"}, {"units": 2, "activation": "softmax"}]),
        json!({"dataset_id": d["id"], "epochs": 30, "learning_rate": 0.003, "batch_size": 32, "seed": 3, "l2": 0.001,
               "preprocessing": {"impute": "median", "missing_indicator": true}}),
    )
    .await;
    let v = expect(
        app.get("/v1/models/titanic/versions/1").await,
        StatusCode::OK,
    )
    .await;
    let f = &v["signature"]["features"];
    assert_eq!(f[1]["feature"]["name"], "age");
    assert_eq!(f[1]["feature"]["imputation"], "median");
    assert_eq!(f[1]["columns"], json!(["age", "age:missing"]));
    let records: Vec<Value> = held
        .iter()
        .map(|r| Value::Object(typed(r, &["sex", "age", "class"])))
        .collect();
    let p = predict(&app, "titanic", &json!({ "records": records })).await;
    let labels = p["labels"].as_array().unwrap();
    let right = labels
        .iter()
        .zip(&held)
        .filter(|(l, r)| l.as_str() == r["survived"].as_str())
        .count();
    let accuracy = right as f64 / held.len() as f64;
    eprintln!("titanic held-out accuracy {accuracy}");
    assert!(accuracy >= 0.77, "held-out accuracy {accuracy}");
    let probs = &p["probabilities"][0];
    let sum = probs["no"].as_f64().unwrap() + probs["yes"].as_f64().unwrap();
    assert!((sum - 1.0).abs() < 1e-5, "{probs}");
    // The ignored column is known to the model: a row as it came (name and all) is accepted
    // and the name disregarded, by records and by CSV; the signature and dataset say so.
    assert_eq!(v["signature"]["ignored"], json!(["name"]));
    assert_eq!(d["ignored"], json!(["name"]));
    let whole: Vec<Value> = held[..5]
        .iter()
        .map(|r| Value::Object(typed(r, &["name", "sex", "age", "class", "survived"])))
        .collect();
    let with_name = predict(&app, "titanic", &json!({ "records": whole })).await;
    assert_eq!(
        with_name["outputs"],
        json!(p["outputs"].as_array().unwrap()[..5])
    );
    let csv = read("titanic.csv");
    let head: Vec<&str> = csv.lines().take(3).collect();
    let by_csv = expect(
        app.post_csv("/v1/models/titanic/predict", head.join("\n"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_csv["outputs"].as_array().unwrap().len(), 2);
    let e = expect_error(
        app.post(
            "/v1/models/titanic/predict",
            &json!({"records": [{"sex": "male", "nickname": "Al"}]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(
        e["field"], "records[0].nickname",
        "other fields are still refused"
    );
}

#[tokio::test]
async fn airquality_trains_with_its_nas_and_counts_the_rows_left_out() {
    let app = spawn_app().await;
    let d = upload(&app, "target=Ozone", read("airquality.csv")).await;
    let ozone = d["columns"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (ozone["name"].as_str(), ozone["missing"].as_u64()),
        (Some("Ozone"), Some(37))
    );
    let done = train_model(
        &app,
        "air",
        json!([{"units": 16, "activation": "relu"}, {"units": 1, "activation": "identity"}]),
        json!({"dataset_id": d["id"], "epochs": 30, "validation_split": 0.25, "learning_rate": 0.01, "seed": 1}),
    )
    .await;
    assert_eq!(
        (done["rows_used"].as_u64(), done["rows_skipped"].as_u64()),
        (Some(116), Some(37))
    );
    // A record with a missing Solar.R is imputed (the mean of the training rows).
    let v = expect(app.get("/v1/models/air/versions/1").await, StatusCode::OK).await;
    let solar = &v["signature"]["features"][0]["feature"];
    assert_eq!(solar["name"], "Solar.R");
    assert!(solar["impute"].as_f64().unwrap() > 100.0, "{solar}");
    let p = predict(
        &app,
        "air",
        &json!({"records": [{"Solar.R": null, "Wind": 7.4, "Temp": 67, "Month": 5, "Day": 1}]}),
    )
    .await;
    assert!(p["outputs"][0][0].as_f64().unwrap().is_finite());
}

#[tokio::test]
async fn the_task_follows_the_model_and_bad_tables_are_named() {
    let app = spawn_app().await;
    // An integer target: a softmax model learns classes, an identity one numbers.
    let csv = "size,district,price\n850,gangnam,420000\n900,mapo,600000\n700,gangnam,420000\n1000,mapo,600000\n";
    let d = upload(&app, "", csv.into()).await;
    train_model(
        &app,
        "cls",
        json!([{"units": 2, "activation": "softmax"}]),
        json!({"dataset_id": d["id"], "epochs": 2}),
    )
    .await;
    let v = expect(app.get("/v1/models/cls/versions/1").await, StatusCode::OK).await;
    assert_eq!(
        v["labels"],
        json!({"type": "int", "values": [420000, 600000]})
    );
    train_model(
        &app,
        "reg",
        json!([{"units": 1, "activation": "identity"}]),
        json!({"dataset_id": d["id"], "epochs": 2}),
    )
    .await;
    let v = expect(app.get("/v1/models/reg/versions/1").await, StatusCode::OK).await;
    assert!(v.get("labels").is_none());
    // A model defined with the raw feature count is told the encoded width.
    expect(
        app.post("/v1/models", &json!({"name": "two", "inputs": 2, "layers": [{"units": 1, "activation": "identity"}]}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let e = expect_error(
        app.post("/v1/models/two/train", &json!({"dataset_id": d["id"]}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("3 wide"), "{e}");
    // Text targets cannot train a regressor; a level cap names the column; unknown: error.
    let text = upload(&app, "target=district", "size,district\n1,a\n2,b\n".into()).await;
    let e = expect_error(
        app.post("/v1/models/reg/train", &json!({"dataset_id": text["id"]}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("holds text"), "{e}");
    let e = expect_error(
        app.post(
            "/v1/models/reg/train",
            &json!({"dataset_id": d["id"], "preprocessing": {"max_levels": 1}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(e["field"], "preprocessing.max_levels");
    assert!(
        e["message"].as_str().unwrap().contains("\"district\""),
        "{e}"
    );
    expect(
        app.post(
            "/v1/models",
            &json!({"name": "strict", "layers": [{"units": 1, "activation": "identity"}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let job = app
        .train(
            "strict",
            json!({"dataset_id": d["id"], "epochs": 1, "preprocessing": {"unknown": "error"}}),
        )
        .await;
    assert_eq!(app.wait_done(&job).await["status"], "succeeded");
    let e = expect_error(
        app.post(
            "/v1/models/strict/predict",
            &json!({"records": [{"size": 1, "district": "jongno"}]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(e["field"], "records[0].district");

    // Bad tables: each a 422 naming what is wrong, nothing stored.
    let before = expect(app.get("/v1/datasets").await, StatusCode::OK).await["datasets"]
        .as_array()
        .unwrap()
        .len();
    for (query, body, says) in [
        ("target=y", "a,y\n1,yes\n2,yes\n", "single category"),
        (
            "target=y",
            "a,b,y\n1,,1\n2,NA,2\n",
            "\"b\" is entirely missing",
        ),
        ("target=y", "a,y\n1,2\n3,4,5\n", "line 3"),
        ("target=y", "a,a,y\n1,2,3\n", "twice"),
        ("target=y", "a,,y\n1,2,3\n", "empty name"),
        ("target=y", "a;y\n1;2\n", "?delimiter=%3B"),
        ("target=y&ignore=nope", "a,y\n1,2\n", "\"nope\""),
    ] {
        let e = expect_error(
            app.post_csv(&format!("/v1/datasets?{query}"), body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{body:?}: {e}"
        );
    }
    let after = expect(app.get("/v1/datasets").await, StatusCode::OK).await["datasets"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "nothing was stored");
    // Valid: a BOM, CRLF line ends, quoted fields with commas, a `;` delimiter, a custom
    // missing token; and JSON records.
    let d = upload(
        &app,
        "target=y",
        "\u{feff}name,\"size, m2\",y\r\n\"Kim, A\",-,1.5\r\n\"Lee, B\",30,2.5\r\n".into(),
    )
    .await;
    assert_eq!(d["columns"][0]["name"], "name");
    assert_eq!(d["columns"][1]["name"], "size, m2");
    assert_eq!(
        d["columns"][1]["type"], "categorical",
        "`-` is text by default"
    );
    let d = upload(
        &app,
        "target=y&delimiter=%3B&missing=-",
        "a;y\n-;1\n3;2\n".into(),
    )
    .await;
    assert_eq!(
        (
            d["columns"][0]["type"].as_str(),
            d["columns"][0]["missing"].as_u64()
        ),
        (Some("numeric"), Some(1))
    );
    let d = expect(
        app.post(
            "/v1/datasets",
            &json!({"records": [{"sqft": 850, "district": "gangnam", "price": 1}, {"sqft": null, "district": "mapo", "price": 2}], "target": "price"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(d["columns"][0]["missing"], 1);
    assert_eq!(d["columns"][1]["type"], "categorical");
    assert_eq!(d["targets"], json!(["price"]));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post_encoded(
    app: &TestApp,
    path: &str,
    content_type: &str,
    encoding: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", content_type)
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn gzip_uploads_are_decompressed_as_a_stream_under_the_same_limit() {
    // Limit 1 MiB: diamonds (2.5 MB) does not fit as it is, nor once decompressed.
    let app = super::helpers::spawn_with(|c| c.max_dataset_bytes = 1 << 20).await;
    let titanic = read("titanic.csv");
    let plain = upload(&app, "target=survived&ignore=name", titanic.clone()).await;
    let packed = expect(
        post_encoded(
            &app,
            "/v1/datasets?target=survived&ignore=name",
            "text/csv",
            "gzip",
            gzip(titanic.as_bytes()),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(packed["rows"], plain["rows"]);
    assert_eq!(packed["columns"], plain["columns"], "the same table");
    // JSON bodies too.
    let records = json!({"records": [{"a": 1, "y": "x"}, {"a": 2, "y": "z"}], "target": "y"});
    let d = expect(
        post_encoded(
            &app,
            "/v1/datasets",
            "application/json",
            "gzip",
            gzip(records.to_string().as_bytes()),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(d["rows"], 2);

    let count = |v: Value| v["datasets"].as_array().unwrap().len();
    let before = count(expect(app.get("/v1/datasets").await, StatusCode::OK).await);
    // A bomb: 64 MiB of CSV in ≈ 64 KiB; refused at the limit (the server reads 1 MiB + 1
    // byte of it, and stays up).
    let mut csv = b"a,y\n".to_vec();
    csv.extend(b"0,0\n".repeat(16 << 20));
    let bomb = gzip(&csv);
    drop(csv);
    assert!(bomb.len() < 1 << 20, "the compressed body fits the limit");
    for ct in ["text/csv", "application/json"] {
        let e = expect_error(
            post_encoded(&app, "/v1/datasets?target=y", ct, "gzip", bomb.clone()).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        )
        .await;
        assert!(
            e["message"].as_str().unwrap().contains("decompressed"),
            "{e}"
        );
    }
    // Not gzip at all; cut short; an encoding we do not speak.
    let e = expect_error(
        post_encoded(
            &app,
            "/v1/datasets",
            "text/csv",
            "gzip",
            b"a,y\n1,2\n".to_vec(),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(
        e["message"].as_str().unwrap().contains("not valid gzip"),
        "{e}"
    );
    let whole = gzip(titanic.as_bytes());
    expect_error(
        post_encoded(
            &app,
            "/v1/datasets?target=survived",
            "text/csv",
            "gzip",
            whole[..whole.len() / 2].to_vec(),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        post_encoded(&app, "/v1/datasets", "text/csv", "br", whole.clone()).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let after = count(expect(app.get("/v1/datasets").await, StatusCode::OK).await);
    assert_eq!(before, after, "nothing was stored");
}
