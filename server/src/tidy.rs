//! Tidy checks that keep `docs/ARCHITECTURE.md` true: every module of the
//! three crates opens with a `//!` paragraph, no `unwrap()`/`expect()` outside
//! tests, `sqlx` and `rusqlite` are named only under `store/`, `axum` only in the gateway
//! (`http/`), in `api.rs` files and in `app.rs`, and the top-level modules
//! import each other only as `ALLOWED_IMPORTS` says (no cycle).

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
            for driver in ["sqlx", "rusqlite"] {
                assert!(!mentions(&text, driver), "{path} uses {driver}; only store/ may speak SQL");
            }
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

/// The top-level modules each top-level module of `server/src` may import
/// (docs/ARCHITECTURE.md, "Bird's-eye view"). `app` wires everything and
/// `cli`, `main` and `lib` sit above it, so they are not listed. The table
/// must stay acyclic: data flows one way.
const ALLOWED_IMPORTS: &[(&str, &[&str])] = &[
    ("clock", &[]),
    ("config", &[]),
    ("error", &[]),
    ("ids", &[]),
    ("supervise", &[]),
    ("swap", &[]),
    ("telemetry", &["config"]),
    ("watch", &["supervise"]),
    ("store", &["clock", "config", "error", "supervise"]),
    ("http", &["config", "error", "store", "supervise"]),
    ("auth", &["clock", "config", "error", "http", "ids", "store"]),
    ("rules", &["auth", "clock", "error", "http", "store", "supervise", "swap", "watch"]),
    ("triggers", &["clock", "ids", "store", "supervise", "swap"]),
    ("documents", &["auth", "clock", "config", "error", "http", "ids", "rules", "store", "swap", "triggers"]),
    (
        "functions",
        &["auth", "clock", "documents", "error", "http", "ids", "store", "supervise", "swap", "triggers", "watch"],
    ),
    ("realtime", &["auth", "clock", "config", "documents", "error", "http", "rules", "store", "supervise"]),
    ("import", &["auth", "documents"]),
    ("graphql", &["auth", "clock", "config", "documents", "error", "http", "ids", "realtime", "store", "swap"]),
];

/// The top-level module a source file belongs to (`documents/api.rs` → `documents`).
fn top_module(path: &str) -> &str {
    path.split('/').next().unwrap_or(path).trim_end_matches(".rs")
}

/// The top-level modules a text names as `crate::<module>` (comments included:
/// a doc link is a dependency of the reader, too).
fn named_modules(text: &str) -> std::collections::BTreeSet<String> {
    text.match_indices("crate::")
        .map(|(at, prefix)| {
            text[at + prefix.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
        })
        .collect()
}

#[test]
fn imports_between_top_level_modules_run_one_way() {
    let allowed: std::collections::HashMap<&str, &[&str]> = ALLOWED_IMPORTS.iter().copied().collect();
    for (path, text) in files() {
        let module = top_module(&path);
        if ["app", "cli", "main", "lib", "tidy"].contains(&module) {
            continue;
        }
        let Some(may) = allowed.get(module) else { panic!("{path}: add module `{module}` to ALLOWED_IMPORTS") };
        for named in named_modules(&text) {
            assert!(
                named == module || may.contains(&named.as_str()),
                "{path} imports crate::{named}, which `{module}` may not (ALLOWED_IMPORTS, docs/ARCHITECTURE.md)"
            );
        }
    }
    // The table itself has no cycle: repeatedly remove modules whose imports are all removed.
    let mut left: Vec<(&str, &[&str])> = ALLOWED_IMPORTS.to_vec();
    while !left.is_empty() {
        let names: Vec<&str> = left.iter().map(|(m, _)| *m).collect();
        let before = left.len();
        left.retain(|(_, imports)| imports.iter().any(|i| names.contains(i)));
        assert!(
            left.len() < before,
            "ALLOWED_IMPORTS has a cycle among {:?}",
            left.iter().map(|(m, _)| m).collect::<Vec<_>>()
        );
    }
}
