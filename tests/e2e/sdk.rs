//! The TypeScript SDK (`client-sdk-ts/`) against the real binary, on both
//! backends: this test starts a server and runs the SDK's own integration
//! tests (`node --test client-sdk-ts/test/`) against it. `scripts/test`
//! installs the SDK's dev dependencies from its lockfile and builds it first.

use std::process::Command;

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

on_both_backends!(the_sdk_works_against_the_server);

const RULES: &str = "rules_version = '2';
    service cloud.firestore { match /databases/{db}/documents {
      match /{path=**} { allow read, write: if request.auth != null; }
    } }";

const WHOAMI: &str = r#"
import { onHttp } from "nimbus:functions";
export const whoami = onHttp({ method: "GET", path: "/whoami" }, (req, ctx) => ({ uid: ctx.auth ? ctx.auth.uid : null }));
"#;

async fn the_sdk_works_against_the_server(backend: Backend) {
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk-ts");
    assert!(
        sdk.join("dist/index.js").exists(),
        "the SDK is not built: run `npm ci && npm run build` in client-sdk-ts (scripts/test does)"
    );
    let options = Options::default()
        .file("rules/app.rules", RULES)
        .file("functions/whoami.js", WHOAMI)
        .env("NIMBUS_AUTH_ACCESS_TTL_SECS", "10")
        .env("NIMBUS_AUTH_SIGNUP_PER_MINUTE", "1000")
        .env("NIMBUS_AUTH_SIGNIN_PER_MINUTE", "1000");
    let server = Server::start_with(backend, options).await;
    let output = Command::new("node")
        .args(["--experimental-websocket", "--test", "--test-force-exit", "--test-concurrency=1", "test/"])
        .current_dir(&sdk)
        .env("NIMBUS_URL", &server.base)
        .output()
        .expect("node runs (scripts/test installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the SDK's tests failed against the server:\n{text}");
    assert!(text.contains("# fail 0") && !text.contains("# pass 0"), "{text}");
}
