//! The pet-store web app (`examples/petstore-web/`) served by `nimbus serve`
//! from `NIMBUS_STATIC_DIR`, on both backends: the static folder with its
//! single-page fallback (API paths keep their JSON errors), the catalogue
//! seeded by `nimbus import firestore --skip-existing`, and the app driven in
//! headless Chromium (`examples/petstore-web/test/browser.mjs`). `scripts/test`
//! installs Chromium and builds the SDK and the app first.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(crate::harness::repository_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The demo's rules and functions, with the web app as the static folder.
async fn shop(backend: Backend) -> Server {
    let public = crate::harness::repository_root().join("examples/petstore-web/public");
    assert!(
        public.join("app.js").exists(),
        "the web app is not built: run `npm ci && npm run build` in examples/petstore-web (scripts/test does)"
    );
    let options = Options::default()
        .file("rules/petstore.rules", &repo_file("rules/petstore.rules"))
        .file("functions/petstore.js", &repo_file("functions/petstore.js"))
        .env("NIMBUS_STATIC_DIR", &public.display().to_string())
        .env("NIMBUS_AUTH_SIGNUP_PER_MINUTE", "1000")
        .env("NIMBUS_AUTH_SIGNIN_PER_MINUTE", "1000");
    Server::start_with(backend, options).await
}

on_both_backends!(the_static_folder_serves_the_app_and_leaves_the_api_alone, the_pet_store_works_in_a_browser);

async fn the_static_folder_serves_the_app_and_leaves_the_api_alone(backend: Backend) {
    let server = shop(backend).await;
    let get = |path: &str| server.client.get(server.url(path)).send();
    let index = get("/").await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(index.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = index.text().await.unwrap();
    assert!(page.contains("Pet Store"), "{page}");
    let route = get("/orders/recent").await.unwrap();
    assert_eq!(route.status(), 200, "a path without a file gets index.html");
    assert_eq!(route.text().await.unwrap(), page);
    let script = get("/app.js").await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"].to_str().unwrap().contains("javascript"));
    for path in ["/v1/nothing", "/fn/nothing", "/.well-known/nothing"] {
        let (status, body) = server.call("GET", path, None, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not-found")), "{path}: {body}");
    }
    let (status, body) = server.call("POST", "/somewhere", None, Some(json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not-found")), "only GET and HEAD reach the app");
    let outside = reqwest::Client::new().get(server.url("/../../Cargo.toml")).send().await.unwrap();
    assert!(!outside.text().await.unwrap().contains("[workspace]"), "nothing outside the folder is served");
}

/// Seeds the catalogue the way `scripts/serve` does: twice, the second time changing nothing.
fn seed(server: &Server) {
    let seed = crate::harness::repository_root().join("examples/petstore-web/seed.jsonl").display().to_string();
    let first = server.run_cli(&["import", "firestore", &seed, "--skip-existing"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let again = server.run_cli(&["import", "firestore", &seed, "--skip-existing"]);
    let report = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success() && report.starts_with("0 documents imported, 8 skipped"), "{report}");
}

async fn the_pet_store_works_in_a_browser(backend: Backend) {
    let label = format!("{backend:?}").to_lowercase();
    let server = shop(backend).await;
    seed(&server);
    let (_, bed) = server.admin("PATCH", "/v1/docs/products/dog-bed", Some(json!({"stock": 5}))).await;
    assert_eq!(bed["data"]["stock"], 5, "{bed}");
    let last =
        json!({"name": "Last-chance hammock", "emoji": "🏝️", "price": 19, "stock": 1, "description": "Only one left."});
    assert_eq!(server.admin("PUT", "/v1/docs/products/last-hammock", Some(last)).await.0, 201);
    let app = crate::harness::repository_root().join("examples/petstore-web");
    let artifacts = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::harness::repository_root().join("target"))
        .join("petstore-web-screenshots")
        .join(&label);
    let output = Command::new("node")
        .arg("test/browser.mjs")
        .current_dir(&app)
        .env("NIMBUS_URL", &server.base)
        .env("ARTIFACTS", &artifacts)
        .env("LAST_ITEM", "last-hammock")
        .output()
        .expect("node runs (scripts/test installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the browser test failed (screenshots in {}):\n{text}", artifacts.display());
    let (_, orders) = server.admin("POST", "/v1/query", Some(json!({"collection": "orders", "count": true}))).await;
    assert_eq!(orders["count"], 2, "the dog bed and one hammock");
}
