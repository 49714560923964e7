//! The TypeScript SDK (`client-sdk-ts/`) against the real binary, on both
//! backends: the SDK's own integration tests (`node --test client-sdk-ts/test/`)
//! against a server, a live listener that outlives a server restart, and
//! `nimbus types` output type-checked against the SDK. `scripts/test`
//! installs the SDK's dev dependencies from its lockfile and builds it first.

use std::process::Command;

use crate::harness::{free_port, Backend, Options, Server};
use crate::on_both_backends;

on_both_backends!(the_sdk_works_against_the_server);

const RULES: &str = "rules_version = '2';
    service cloud.firestore { match /databases/{db}/documents {
      match /{path=**} {
        allow read: if request.auth != null;
        allow write: if request.auth != null && (request.resource == null || !('refuse' in request.resource.data));
      }
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

const SCHEMAS: &str = r#"
[schemas.products]
type = "object"
required = ["name", "price"]
additionalProperties = false
[schemas.products.properties.name]
type = "string"
[schemas.products.properties.price]
type = "number"
[schemas.products.properties.tags]
type = "array"
items = { type = "string" }
"#;

/// `nimbus types` writes interfaces that type-check with the SDK (`doc<Products>()`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_types_check_against_the_sdk() {
    let server = Server::start_with(Backend::Sqlite, Options::default().file("nimbus.toml", SCHEMAS)).await;
    let output = server.run_cli(&["types", "--out", "types.ts"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk-ts");
    let usage = format!(
        "import {{ createClient }} from {:?};\nimport type {{ Products }} from './types';\n\
         const client = createClient({{ url: 'http://localhost' }});\n\
         export async function price(): Promise<number | undefined> {{\n\
           const snapshot = await client.doc<Products>('products/p1').get();\n\
           return snapshot.data?.price;\n}}\n\
         // @ts-expect-error: `colour` is not a property of Products\n\
         export const wrong: Products = {{ name: 'x', price: 1, colour: 'red' }};\n",
        sdk.join("dist/index.js").display().to_string()
    );
    std::fs::write(server.dir.path().join("usage.ts"), usage).expect("write usage");
    let check = Command::new("node")
        .arg(sdk.join("node_modules/typescript/bin/tsc"))
        .args([
            "--noEmit",
            "--strict",
            "--target",
            "ES2022",
            "--module",
            "ES2022",
            "--moduleResolution",
            "bundler",
            "usage.ts",
        ])
        .current_dir(server.dir.path())
        .output()
        .expect("tsc runs (scripts/test installs the SDK's dev dependencies)");
    let text = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    let types = std::fs::read_to_string(server.dir.path().join("types.ts")).unwrap_or_default();
    assert!(check.status.success(), "the generated types do not check:\n{text}\n{types}");
    assert!(types.contains("export interface Products {"), "{types}");
}

on_both_backends!(a_live_listener_resumes_across_a_server_restart);

/// The SDK reconnects by itself after the server restarts and resumes from its
/// last position: what was written while it was away arrives, nothing twice.
async fn a_live_listener_resumes_across_a_server_restart(backend: Backend) {
    use std::io::BufRead;
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk-ts");
    let listen = format!("127.0.0.1:{}", free_port());
    let options = Options::default().file("rules/app.rules", RULES).env("NIMBUS_LISTEN", &listen);
    let mut server = Server::start_with(backend, options).await;
    server.admin("PUT", "/v1/docs/restart/a", Some(serde_json::json!({"n": 1}))).await;
    let mut follower = Command::new("node")
        .args(["--experimental-websocket", "support/follow.mjs", "restart", "3"])
        .current_dir(&sdk)
        .env("NIMBUS_URL", &server.base)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let first = lines_rx.recv_timeout(std::time::Duration::from_secs(20)).expect("a first snapshot");
    assert!(first.starts_with("ids a "), "{first}");
    server.crash_and_restart().await;
    server.admin("PUT", "/v1/docs/restart/b", Some(serde_json::json!({"n": 2}))).await;
    server.admin("PUT", "/v1/docs/restart/c", Some(serde_json::json!({"n": 3}))).await;
    let status = follower.wait().expect("the follower ends");
    let lines: Vec<String> = std::iter::once(first).chain(lines_rx.try_iter()).collect();
    assert!(status.success(), "the follower did not see all three: {lines:?}");
    let added: Vec<&str> = lines.iter().flat_map(|l| l.split("changes ").nth(1).unwrap_or("").split(',')).collect();
    assert_eq!(added.iter().filter(|c| c.starts_with("added:")).count(), 3, "each document added once: {lines:?}");
    assert!(lines.last().is_some_and(|l| l.starts_with("ids a,b,c ")), "{lines:?}");
}
