//! Property tests of the parsers at the HTTP edge (proptest), against a real server: dataset
//! uploads (CSV, JSON, gzip), predict bodies (inputs, records, columns, CSV), the import
//! document and `/v2` tensors (JSON and binary). For generated inputs — valid bodies mutated at
//! a random place, text from the parsers' own alphabet, raw bytes — no request is answered 5xx
//! (or kills the server), and every refusal is a 4xx in the route's JSON error shape; accepted
//! inputs round-trip (the same rows in every predict form give the same outputs; an imported
//! export exports the same model).
//!
//! Deterministic: a fixed seed, no failure files; the case counts keep the whole module to a
//! few seconds. Set `PROPTEST_CASES` to run more (the seed stays fixed).

use super::helpers::{TestApp, spawn_with};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use reqwest::RequestBuilder;
use serde_json::{Map, Value, json};

/// A server on its own runtime: the proptest runner is synchronous.
struct Harness {
    app: TestApp,
    rt: tokio::runtime::Runtime,
}

impl Harness {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = rt.block_on(spawn_with(|c| {
            c.max_datasets = 0;
            c.max_models = 0;
        }));
        Harness { app, rt }
    }

    /// Sends a request: (status, content type, body).
    fn send(&self, req: RequestBuilder) -> (u16, String, Vec<u8>) {
        self.rt.block_on(async {
            let r = req.send().await.expect("the server answers");
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            (r.status().as_u16(), ct, r.bytes().await.unwrap().to_vec())
        })
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.app.client.post(self.app.url(path))
    }

    fn post_json(&self, path: &str, body: &Value) -> (u16, String, Vec<u8>) {
        self.send(
            self.post(path)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).unwrap()),
        )
    }

    /// A small classifier on two numeric features `a`, `b` (trained on a CSV, so it has a
    /// signature and takes records, columns and CSV too).
    fn trained_xor(&self, name: &str) {
        let csv = "a,b,y\n0,0,no\n0,1,yes\n1,0,yes\n1,1,no\n";
        let (s, _, body) = self.send(
            self.post("/v1/datasets?target=y")
                .header("content-type", "text/csv")
                .body(csv),
        );
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&body));
        let id = serde_json::from_slice::<Value>(&body).unwrap()["id"].clone();
        let model = json!({"name": name, "layers": [{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "softmax"}]});
        assert_eq!(self.post_json("/v1/models", &model).0, 201);
        let (s, _, body) = self.post_json(
            &format!("/v1/models/{name}/train"),
            &json!({"dataset_id": id, "epochs": 30, "batch_size": 4}),
        );
        assert_eq!(s, 202);
        let job = serde_json::from_slice::<Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        self.rt.block_on(async {
            let done = self.app.wait_done(&job).await;
            assert_eq!(done["status"], "succeeded", "{done}");
        });
    }

    /// The server still answers.
    fn alive(&self) {
        let r = self.send(self.app.client.get(self.app.url("/health")));
        assert_eq!(r.0, 200);
        println!("{}", seen());
    }
}

fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x6d6c_7064),
        max_shrink_iters: 256,
        ..Config::default()
    })
}

/// How `/v1` errors look (`{"error": {"code", "message"}}`) or `/v2`'s (`{"error": "…"}`).
#[derive(Clone, Copy)]
enum Shape {
    V1,
    V2,
}

/// Answers checked so far, by status class (2xx, 4xx): printed by each test, so a run shows
/// that both accepted and refused inputs were generated.
static SEEN: [std::sync::atomic::AtomicU32; 2] = [
    std::sync::atomic::AtomicU32::new(0),
    std::sync::atomic::AtomicU32::new(0),
];

fn seen() -> String {
    let [ok, refused] = &SEEN;
    use std::sync::atomic::Ordering::Relaxed;
    format!(
        "{} accepted, {} refused (all tests so far)",
        ok.load(Relaxed),
        refused.load(Relaxed)
    )
}

/// A 2xx, or a 4xx in the route's error shape; never a 5xx.
fn check_answer(
    (status, ct, body): &(u16, String, Vec<u8>),
    shape: Shape,
) -> Result<Option<Value>, TestCaseError> {
    let text = String::from_utf8_lossy(body);
    SEEN[usize::from(*status >= 300)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    prop_assert!(*status < 500, "a {status}: {text}");
    if *status < 300 {
        return Ok(serde_json::from_slice(body).ok());
    }
    prop_assert!((400..500).contains(status), "{status}: {text}");
    prop_assert!(
        ct.starts_with("application/json"),
        "{status} as {ct}: {text}"
    );
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TestCaseError::fail(format!("{status} body is not JSON ({e}): {text}")))?;
    match shape {
        Shape::V1 => {
            prop_assert!(v["error"]["code"].is_string(), "{v}");
            prop_assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{v}"
            );
        }
        Shape::V2 => prop_assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}"),
    }
    Ok(None)
}

/// Any JSON value, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e3f64..1e3).prop_map(Value::from),
        prop_oneof![
            Just(1e39),
            Just(-1e300),
            Just(406.5),
            Just(1e-46),
            Just(4.0e2)
        ]
        .prop_map(Value::from),
        "[a-z0-9 _.-]{0,8}".prop_map(Value::from),
        Just(Value::from("\u{0}\u{feff}é")),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every place in a JSON document (as a list of keys and indices).
fn places(v: &Value, at: &mut Vec<Place>, out: &mut Vec<Vec<Place>>) {
    out.push(at.clone());
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(Place::Index(i));
                places(x, at, out);
                at.pop();
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                at.push(Place::Key(k.clone()));
                places(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Place {
    Key(String),
    Index(usize),
}

#[derive(Clone, Debug)]
enum Edit {
    Replace(Value),
    Remove,
    AddKey(String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => any_json().prop_map(Edit::Replace),
        2 => Just(Edit::Remove),
        1 => ("[a-z_]{1,8}", any_json()).prop_map(|(k, v)| Edit::AddKey(k, v)),
    ]
}

/// `doc` with one edit at the place `at` picks.
fn mutated(doc: &Value, at: Index, e: &Edit) -> Value {
    let mut all = Vec::new();
    places(doc, &mut Vec::new(), &mut all);
    let path = all[at.index(all.len())].clone();
    let mut out = doc.clone();
    let (last, parent_path) = match path.split_last() {
        Some((l, p)) => (Some(l.clone()), p.to_vec()),
        None => (None, Vec::new()),
    };
    let mut parent = &mut out;
    for p in &parent_path {
        parent = match p {
            Place::Key(k) => &mut parent[k.as_str()],
            Place::Index(i) => &mut parent[*i],
        };
    }
    match (e, last) {
        (Edit::Replace(v), None) => return v.clone(),
        (Edit::Replace(v), Some(Place::Key(k))) => parent[k.as_str()] = v.clone(),
        (Edit::Replace(v), Some(Place::Index(i))) => parent[i] = v.clone(),
        (Edit::Remove, Some(Place::Key(k))) => {
            parent.as_object_mut().map(|m| m.remove(&k));
        }
        (Edit::Remove, Some(Place::Index(i))) => {
            parent.as_array_mut().map(|a| a.remove(i));
        }
        (Edit::Remove, None) => return Value::Null,
        (Edit::AddKey(k, v), last) => {
            let target = match last {
                None => &mut out,
                Some(Place::Key(key)) => &mut parent[key.as_str()],
                Some(Place::Index(i)) => &mut parent[i],
            };
            if let Some(m) = target.as_object_mut() {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// Text from a CSV parser's alphabet: names, numbers, missing tokens, quotes, delimiters.
fn csv_text() -> impl Strategy<Value = String> {
    let cell = prop_oneof![
        Just("1".to_owned()),
        Just("-2.5".to_owned()),
        Just("1e40".to_owned()),
        Just("NA".to_owned()),
        Just(String::new()),
        Just("x".to_owned()),
        Just("\"q,\"\"r\"".to_owned()),
        Just("\u{feff}y".to_owned()),
        Just("\"".to_owned()),
        "[a-c0-9.;, ]{0,4}",
    ];
    let row = prop::collection::vec(cell, 0..5);
    (
        prop::collection::vec(row, 0..6),
        prop_oneof![Just(","), Just(";"), Just("\t")],
        prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
    )
        .prop_map(|(rows, d, nl)| rows.iter().map(|r| r.join(d)).collect::<Vec<_>>().join(nl))
}

fn csv_query() -> impl Strategy<Value = String> {
    let param = prop_oneof![
        "[a-c]{1,2}".prop_map(|c| format!("target={c}")),
        "[a-c]{1,2}".prop_map(|c| format!("categorical={c}")),
        "[a-c]{1,2}".prop_map(|c| format!("numeric={c}")),
        "[a-c]{1,2}".prop_map(|c| format!("ignore={c}")),
        Just("missing=x".to_owned()),
        Just("task=classification".to_owned()),
        Just("task=regression".to_owned()),
        Just("delimiter=%3B".to_owned()),
        Just("delimiter=tab".to_owned()),
        Just("name=t".to_owned()),
        Just("bogus=1".to_owned()),
    ];
    prop::collection::vec(param, 0..4).prop_map(|p| p.join("&"))
}

#[test]
fn dataset_uploads_never_fail_the_server_and_refuse_in_4xx() {
    let h = Harness::new();
    let mut run = runner(96);
    run.run(&(csv_text(), csv_query()), |(text, query)| {
        let r = h.send(
            h.post(&format!("/v1/datasets?{query}"))
                .header("content-type", "text/csv")
                .body(text.clone()),
        );
        if let Some(v) = check_answer(&r, Shape::V1)? {
            prop_assert!(v["rows"].as_u64().is_some(), "{v}");
        }
        Ok(())
    })
    .unwrap();
    let json_template = json!({
        "name": "t",
        "records": [{"a": 1, "b": "x", "y": 0}, {"a": null, "b": "z", "y": 1}],
        "target": "y", "categorical": ["a"], "ignore": [], "task": "classification"
    });
    let matrix_template = json!({"inputs": [[0, 0], [0, 1.5]], "targets": [[1], [2]]});
    let mut run = runner(96);
    run.run(
        &(any::<bool>(), any::<Index>(), edit()),
        |(records, at, e)| {
            let base = if records {
                &json_template
            } else {
                &matrix_template
            };
            let body = mutated(base, at, &e);
            check_answer(&h.post_json("/v1/datasets", &body), Shape::V1)?;
            Ok(())
        },
    )
    .unwrap();
    let mut run = runner(48);
    run.run(
        &(
            prop::collection::vec(any::<u8>(), 0..64),
            prop_oneof![Just("application/json"), Just("text/csv")],
            any::<bool>(),
        ),
        |(bytes, ct, gzip)| {
            let mut req = h.post("/v1/datasets").header("content-type", ct);
            if gzip {
                req = req.header("content-encoding", "gzip");
            }
            check_answer(&h.send(req.body(bytes)), Shape::V1)?;
            Ok(())
        },
    )
    .unwrap();
    h.alive();
}

fn rows() -> impl Strategy<Value = Vec<[f32; 2]>> {
    prop::collection::vec([-1e3f32..1e3, -1e3f32..1e3], 1..8)
}

#[test]
fn predict_bodies_never_fail_the_server_and_every_form_agrees() {
    let h = Harness::new();
    h.trained_xor("xor");
    let outputs = |r: &(u16, String, Vec<u8>)| -> Result<Value, TestCaseError> {
        prop_assert_eq!(r.0, 200, "{}", String::from_utf8_lossy(&r.2));
        let v: Value = serde_json::from_slice(&r.2).unwrap();
        Ok(v["outputs"].clone())
    };
    // Accepted inputs: the same rows as a matrix, records, columns and CSV, the same outputs.
    let mut run = runner(48);
    run.run(&rows(), |rows| {
        let m = outputs(&h.post_json("/v1/models/xor/predict", &json!({"inputs": rows})))?;
        prop_assert_eq!(m.as_array().map(Vec::len), Some(rows.len()));
        let records: Vec<Value> = rows.iter().map(|r| json!({"a": r[0], "b": r[1]})).collect();
        let rec = outputs(&h.post_json("/v1/models/xor/predict", &json!({"records": records})))?;
        let (a, b): (Vec<f32>, Vec<f32>) = rows.iter().map(|r| (r[0], r[1])).unzip();
        let cols = outputs(&h.post_json(
            "/v1/models/xor/predict",
            &json!({"columns": {"a": a, "b": b}}),
        ))?;
        let mut csv = String::from("b,a\n");
        for r in &rows {
            // Shortest round-trip text of each f32 (the parser reads it back exactly).
            csv.push_str(&format!("{:?},{:?}\n", r[1], r[0]));
        }
        let text = outputs(
            &h.send(
                h.post("/v1/models/xor/predict")
                    .header("content-type", "text/csv")
                    .body(csv),
            ),
        )?;
        prop_assert_eq!(&m, &rec);
        prop_assert_eq!(&m, &cols);
        prop_assert_eq!(&m, &text);
        Ok(())
    })
    .unwrap();
    // Anything else: a 4xx, or an answer.
    let template = json!({"records": [{"a": 1, "b": 0.5}, {"a": null, "b": 2}]});
    let matrix = json!({"inputs": [[1, 0.5], [0, 2]]});
    let columns = json!({"columns": {"a": [1, 0], "b": [0.5, 2]}});
    let mut run = runner(128);
    run.run(&(0..3usize, any::<Index>(), edit()), |(which, at, e)| {
        let base = [&template, &matrix, &columns][which];
        let body = mutated(base, at, &e);
        check_answer(
            &h.post_json("/v1/models/xor/predict?version=1", &body),
            Shape::V1,
        )?;
        Ok(())
    })
    .unwrap();
    let mut run = runner(64);
    run.run(&(csv_text(), any::<bool>()), |(text, as_json)| {
        let ct = if as_json {
            "application/json"
        } else {
            "text/csv"
        };
        let r = h.send(
            h.post("/v1/models/xor/predict")
                .header("content-type", ct)
                .body(text.clone()),
        );
        check_answer(&r, Shape::V1)?;
        Ok(())
    })
    .unwrap();
    h.alive();
}

#[test]
fn import_documents_never_fail_the_server_and_round_trip() {
    let h = Harness::new();
    h.trained_xor("xor");
    let export = |name: &str| -> Value {
        let r = h.send(
            h.app
                .client
                .get(h.app.url(&format!("/v1/models/{name}/versions/1/export"))),
        );
        assert_eq!(r.0, 200);
        serde_json::from_slice(&r.2).unwrap()
    };
    let doc = export("xor");
    let kept = ["model", "params", "metrics", "signature", "description"];
    // The document itself: imported, it exports as it came.
    let r = h.post_json("/v1/models/import?name=copy", &doc);
    assert_eq!(r.0, 201, "{}", String::from_utf8_lossy(&r.2));
    let copy = export("copy");
    for k in kept {
        assert_eq!(copy[k], doc[k], "{k}");
    }
    let count = std::sync::atomic::AtomicU32::new(0);
    let mut run = runner(128);
    run.run(&(any::<Index>(), edit()), |(at, e)| {
        let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = mutated(&doc, at, &e);
        let r = h.post_json(&format!("/v1/models/import?name=imp{n}"), &body);
        if check_answer(&r, Shape::V1)?.is_some() {
            // Accepted (values as read, e.g. an f64 weight as its f32): its export imports
            // again and exports the same.
            let once = export(&format!("imp{n}"));
            let r = h.post_json(&format!("/v1/models/import?name=again{n}"), &once);
            prop_assert_eq!(r.0, 201, "{}", String::from_utf8_lossy(&r.2));
            let twice = export(&format!("again{n}"));
            for k in kept {
                prop_assert_eq!(&twice[k], &once[k], "{}", k);
            }
        }
        Ok(())
    })
    .unwrap();
    h.alive();
}

#[test]
fn v2_tensors_never_fail_the_server_and_json_equals_binary() {
    let h = Harness::new();
    h.trained_xor("xor");
    // Accepted: the same values as JSON data and as binary data, the same outputs as /v1.
    let mut run = runner(48);
    run.run(&rows(), |rows| {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let n = rows.len();
        let json_req = json!({"inputs": [{"name": "input", "shape": [n, 2], "datatype": "FP32", "data": flat}]});
        let r = h.post_json("/v2/models/xor/infer", &json_req);
        prop_assert_eq!(r.0, 200, "{}", String::from_utf8_lossy(&r.2));
        let v: Value = serde_json::from_slice(&r.2).unwrap();
        let from_json = v["outputs"][0]["data"].clone();
        let header = serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [n, 2],
            "datatype": "FP32", "parameters": {"binary_data_size": 8 * n}}]}))
        .unwrap();
        let mut body = header.clone();
        for x in &flat {
            body.extend_from_slice(&x.to_le_bytes());
        }
        let r = h.send(
            h.post("/v2/models/xor/infer")
                .header("inference-header-content-length", header.len())
                .header("content-type", "application/octet-stream")
                .body(body),
        );
        prop_assert_eq!(r.0, 200, "{}", String::from_utf8_lossy(&r.2));
        let v: Value = serde_json::from_slice(&r.2).unwrap();
        prop_assert_eq!(&v["outputs"][0]["data"], &from_json);
        let v1 = h.post_json("/v1/models/xor/predict", &json!({"inputs": rows}));
        let v1: Value = serde_json::from_slice(&v1.2).unwrap();
        let v1_flat: Vec<Value> = v1["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().clone())
            .collect();
        prop_assert_eq!(from_json, Value::Array(v1_flat));
        Ok(())
    })
    .unwrap();
    // Mutated requests, JSON and binary.
    let template = json!({
        "id": "1",
        "inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [0, 1, 1, 0]}],
        "outputs": [{"name": "label"}],
        "parameters": {"binary_data_output": false}
    });
    let per_feature = json!({
        "inputs": [{"name": "a", "shape": [1, 1], "datatype": "FP64", "data": [1]},
                   {"name": "b", "shape": [1], "datatype": "INT32", "data": [0]}]
    });
    let mut run = runner(128);
    run.run(
        &(any::<bool>(), any::<Index>(), edit()),
        |(first, at, e)| {
            let base = if first { &template } else { &per_feature };
            let body = mutated(base, at, &e);
            check_answer(&h.post_json("/v2/models/xor/infer", &body), Shape::V2)?;
            Ok(())
        },
    )
    .unwrap();
    let header = serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [2, 2],
        "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}))
    .unwrap();
    let mut run = runner(64);
    run.run(
        &(
            prop::collection::vec(any::<u8>(), 0..40),
            0usize..80,
            prop_oneof![
                Just("FP32"),
                Just("FP64"),
                Just("INT8"),
                Just("BOOL"),
                Just("BYTES"),
                Just("FP16")
            ],
        ),
        |(tail, split, datatype)| {
            let h_text = String::from_utf8(header.clone())
                .unwrap()
                .replace("FP32", datatype);
            let mut body = h_text.clone().into_bytes();
            body.extend_from_slice(&tail);
            let r = h.send(
                h.post("/v2/models/xor/infer")
                    .header("inference-header-content-length", split.min(body.len() + 5))
                    .header("content-type", "application/octet-stream")
                    .body(body),
            );
            check_answer(&r, Shape::V2)?;
            Ok(())
        },
    )
    .unwrap();
    h.alive();
}
