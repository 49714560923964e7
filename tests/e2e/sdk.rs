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
        .args(["--noEmit", "--strict", "--target", "ES2022", "--module", "ES2022", "--moduleResolution", "bundler", "usage.ts"])
        .current_dir(server.dir.path())
        .output()
        .expect("tsc runs (scripts/test installs the SDK's dev dependencies)");
    let text = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    let types = std::fs::read_to_string(server.dir.path().join("types.ts")).unwrap_or_default();
    assert!(check.status.success(), "the generated types do not check:\n{text}\n{types}");
    assert!(types.contains("export interface Products {"), "{types}");
}
