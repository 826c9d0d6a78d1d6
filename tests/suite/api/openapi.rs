//! The committed `openapi.yaml` is exactly what the code generates (run with
//! `MLPD_UPDATE_OPENAPI=1` to rewrite it), the server serves it, and every documented path is
//! routed (router and document come from one handler list, so no route goes undocumented).

use super::helpers::{expect, spawn_app};
use reqwest::StatusCode;

#[test]
fn committed_openapi_yaml_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml");
    let generated = mlpd::api::openapi_yaml();
    if std::env::var_os("MLPD_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi.yaml is stale: run `MLPD_UPDATE_OPENAPI=1 cargo test openapi` and commit it"
    );
    assert!(generated.starts_with("openapi: 3.1"), "OpenAPI 3.1");
}

#[tokio::test]
async fn the_server_serves_its_document_and_routes_every_documented_path() {
    let app = spawn_app().await;
    let r = app.get("/openapi.yaml").await;
    assert_eq!(r.headers()["content-type"], "application/yaml");
    assert_eq!(r.text().await.unwrap(), mlpd::api::openapi_yaml());
    // Every documented path answers something other than "no such route".
    let doc = mlpd::api::openapi_yaml();
    let paths: Vec<&str> = doc
        .lines()
        .filter(|l| l.starts_with("  /") && l.ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':'))
        .collect();
    assert!(paths.len() >= 14, "{paths:?}");
    for p in paths {
        let concrete = p
            .replace("{name}", "m")
            .replace("{version}", "1")
            .replace("{id}", "00000000-0000-0000-0000-000000000000");
        for method in ["GET", "POST", "DELETE"] {
            let r = app
                .client
                .request(method.parse().unwrap(), app.url(&concrete))
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::NOT_FOUND {
                let body: serde_json::Value = r.json().await.unwrap();
                assert_ne!(
                    body["error"]["code"], "route_not_found",
                    "{method} {concrete}"
                );
            }
        }
    }
    expect(app.get("/health").await, StatusCode::OK).await;
}
