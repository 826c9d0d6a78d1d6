//! `GET /v1/models/{name}/versions/{v}/export?format=onnx`. The graph's numerics are checked in
//! `export::onnx`'s unit tests and, with onnx.checker and ONNX Runtime, in tests/interop.

use super::helpers::{expect, expect_error, spawn_app};
use mlpd::export::proto::ModelProto;
use prost::Message;
use reqwest::StatusCode;

#[tokio::test]
async fn onnx_is_an_export_format_and_json_stays_the_default() {
    let app = spawn_app().await;
    app.trained_iris("iris").await;
    let doc = expect(
        app.get("/v1/models/iris/versions/1/export").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(doc["format"], "mlpd.model");
    let r = app
        .get("/v1/models/iris/versions/1/export?format=onnx")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"iris-v1.onnx\""
    );
    let m = ModelProto::decode(r.bytes().await.unwrap()).unwrap();
    let g = m.graph.unwrap();
    assert_eq!(g.name.as_deref(), Some("iris"));
    let outputs: Vec<_> = g.output.iter().map(|o| o.name.clone().unwrap()).collect();
    assert_eq!(outputs, ["outputs", "label"]);
    expect_error(
        app.get("/v1/models/iris/versions/1/export?format=pmml")
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    expect_error(
        app.get("/v1/models/iris/versions/9/export?format=onnx")
            .await,
        StatusCode::NOT_FOUND,
        "version_not_found",
    )
    .await;
}

#[tokio::test]
async fn a_model_with_categorical_features_exports_one_input_per_feature() {
    use mlpd::export::proto::data_type;
    let app = spawn_app().await;
    let csv = "size,district,price\n850,gangnam,420\n,mapo,600\n700,gangnam,430\n1000,mapo,610\n";
    let d = expect(
        app.post_csv("/v1/datasets", csv.to_owned()).await,
        StatusCode::CREATED,
    )
    .await;
    expect(
        app.post(
            "/v1/models",
            &serde_json::json!({"name": "flats", "description": "flat prices",
                "layers": [{"units": 1, "activation": "identity"}]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let job = app
        .train(
            "flats",
            serde_json::json!({"dataset_id": d["id"], "epochs": 2,
                "preprocessing": {"missing_indicator": true}}),
        )
        .await;
    let done = app.wait_done(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let r = app
        .get("/v1/models/flats/versions/1/export?format=onnx")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let m = ModelProto::decode(r.bytes().await.unwrap()).unwrap();
    let g = m.graph.unwrap();
    let inputs: Vec<(String, i32)> = g
        .input
        .iter()
        .map(|i| {
            let t = i.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
            (i.name.clone().unwrap(), t.elem_type.unwrap())
        })
        .collect();
    assert_eq!(
        inputs,
        [
            ("size".to_string(), data_type::FLOAT),
            ("district".to_string(), data_type::STRING)
        ]
    );
    let ops: Vec<&str> = g.node.iter().filter_map(|n| n.op_type.as_deref()).collect();
    for op in [
        "Imputer",
        "IsNaN",
        "LabelEncoder",
        "Equal",
        "Concat",
        "Gemm",
    ] {
        assert!(ops.contains(&op), "{op} in {ops:?}");
    }
    let meta: std::collections::HashMap<_, _> = m
        .metadata_props
        .iter()
        .map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap()))
        .collect();
    assert_eq!(meta["features"], r#"["size","district"]"#);
    assert_eq!(meta["description"], "flat prices");
    assert_eq!(meta["targets"], r#"["price"]"#);
    let doc = expect(
        app.get("/v1/models/flats/versions/1/export").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(doc["format"], "mlpd.model");
}
