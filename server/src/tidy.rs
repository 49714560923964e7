//! Tidy checks that keep `docs/ARCHITECTURE.md` true: every module of the
//! three crates opens with a `//!` paragraph, no `unwrap()`/`expect()` outside
//! tests, `sqlx` is named only under `store/`, and `axum` only in
//! the gateway (`http/`), in `api.rs` files and in `app.rs`.

use std::path::{Path, PathBuf};

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read server/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn files() -> Vec<(String, String)> {
    files_under("src")
}

/// `(path relative to the folder, text)` of every `.rs` file under `folder`
/// (relative to the `nimbus` package).
fn files_under(folder: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut paths = Vec::new();
    source_files(&root, &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read source");
            (p.strip_prefix(&root).expect("under src").to_string_lossy().replace('\\', "/"), text)
        })
        .collect()
}

fn mentions(text: &str, krate: &str) -> bool {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .any(|l| l.contains(&format!("{krate}::")) || l.contains(&format!("use {krate}")))
}

#[test]
fn every_module_says_what_it_owns() {
    for folder in ["src", "rules-lang/src", "js-runtime/src"] {
        for (path, text) in files_under(folder) {
            // Test-only files of the two crates may start with their items.
            if path == "tests.rs" {
                continue;
            }
            assert!(text.starts_with("//!"), "{folder}/{path} must open with a //! comment saying what it owns");
        }
    }
}

#[test]
fn sql_stays_in_store() {
    for (path, text) in files() {
        if !path.starts_with("store/") {
            assert!(!mentions(&text, "sqlx"), "{path} uses sqlx; only store/ may speak SQL");
        }
    }
}

#[test]
fn axum_stays_in_the_gateway() {
    for (path, text) in files() {
        let allowed = path.starts_with("http/") || path.ends_with("api.rs") || path == "app.rs" || path == "tidy.rs";
        if !allowed {
            assert!(!mentions(&text, "axum"), "{path} uses axum; only http/, api.rs files and app.rs may");
        }
    }
}

#[test]
fn no_unwrap_outside_tests() {
    for folder in ["src", "rules-lang/src", "js-runtime/src"] {
        for (path, text) in files_under(folder) {
            if path == "tidy.rs" || path == "tests.rs" {
                continue;
            }
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (number, line) in code.lines().enumerate() {
                let line = line.trim_start();
                let panics = line.contains(".unwrap()") || line.contains(".expect(");
                assert!(
                    line.starts_with("//") || !panics,
                    "{folder}/{path}:{}: no unwrap()/expect() outside tests; map the error instead",
                    number + 1
                );
            }
        }
    }
}
