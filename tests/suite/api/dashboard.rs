//! The dashboard's files as served (the page itself is tested in Chromium by
//! tests/browser/dashboard.mjs, run by .ci/run).

use super::helpers::{spawn_app, spawn_with};
use reqwest::StatusCode;

#[tokio::test]
async fn the_page_and_its_files_are_served_self_contained() {
    let app = spawn_app().await;
    for (path, ct) in [
        ("/", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(ct),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        // Nothing from elsewhere (the SVG namespace is a name, not a load).
        let body = r
            .text()
            .await
            .unwrap()
            .replace("http://www.w3.org/2000/svg", "");
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
            "{path} loads nothing from elsewhere"
        );
    }
    let page = app.get("/").await.text().await.unwrap();
    assert!(page.contains(r#"<body data-auth="off">"#));
}

#[tokio::test]
async fn with_tokens_the_page_is_open_and_asks_for_one() {
    let app = spawn_with(|c| c.admin_tokens = vec!["t".parse().unwrap()]).await;
    for path in ["/", "/dashboard.js", "/dashboard.css"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
    let page = app.get("/").await.text().await.unwrap();
    assert!(page.contains(r#"<body data-auth="required">"#));
    assert_eq!(
        app.get("/v1/models").await.status(),
        StatusCode::UNAUTHORIZED
    );
}
