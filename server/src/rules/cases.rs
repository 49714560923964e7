//! Described requests run against rules, without a server or a database: the
//! admin API's `rules:test` and `nimbus rules test <cases file>` (the Firestore
//! emulator workflow without an emulator). Documents that `get()`/`exists()`
//! read come from the case; any other document counts as missing.

use std::collections::BTreeMap;

use nimbus_rules_lang::ast::Method;
use nimbus_rules_lang::{Auth, Decision, Lookup, Pos, Request, Rules};
use serde::Deserialize;
use serde_json::Value;

/// One described request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    #[serde(default)]
    pub name: Option<String>,
    /// `get`, `list`, `create`, `update` or `delete`.
    pub method: String,
    /// The document path, `orders/o1`.
    pub path: String,
    /// The signed-in user, or absent/null when signed out.
    #[serde(default)]
    pub auth: Option<CaseAuth>,
    /// The stored document's data (`resource.data`), absent when it does not exist.
    #[serde(default)]
    pub resource: Option<Value>,
    /// The document after the write (`request.resource.data`).
    #[serde(default)]
    pub new_data: Option<Value>,
    /// Other documents by path, for `get()`/`exists()`; `null` = does not exist.
    #[serde(default)]
    pub documents: BTreeMap<String, Option<Value>>,
    /// `allow` or `deny`, for `nimbus rules test`.
    #[serde(default)]
    pub expect: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseAuth {
    pub uid: String,
    /// Token claims (`request.auth.token`); `sub` is added when absent.
    #[serde(default)]
    pub token: serde_json::Map<String, Value>,
}

/// Whether the case is allowed, and by which `allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    pub at: Option<Pos>,
}

struct GivenDocuments<'a>(&'a BTreeMap<String, Option<Value>>);

impl Lookup for GivenDocuments<'_> {
    fn document(&self, path: &str) -> Option<Option<&Value>> {
        Some(self.0.get(path).and_then(Option::as_ref))
    }
}

pub fn parse_method(name: &str) -> Result<Method, String> {
    Ok(match name {
        "get" => Method::Get,
        "list" => Method::List,
        "create" => Method::Create,
        "update" => Method::Update,
        "delete" => Method::Delete,
        other => return Err(format!("unknown method {other:?} (expected get, list, create, update or delete)")),
    })
}

/// Decides the case against `rules`.
pub fn run(rules: &Rules, case: &Case) -> Result<Outcome, String> {
    let method = parse_method(&case.method)?;
    let auth = case.auth.as_ref().map(|a| {
        let mut token = a.token.clone();
        token.entry("sub").or_insert_with(|| Value::String(a.uid.clone()));
        Auth::new(&a.uid, &Value::Object(token))
    });
    let request = Request {
        method,
        path: case.path.trim_matches('/'),
        auth: auth.as_ref(),
        time_micros: crate::clock::now_micros(),
        existing: case.resource.as_ref(),
        incoming: case.new_data.as_ref(),
    };
    Ok(match rules.decide(&request, &GivenDocuments(&case.documents)) {
        Decision::Allow(pos) => Outcome { allowed: true, at: Some(pos) },
        Decision::Deny | Decision::NeedDocument(_) => Outcome { allowed: false, at: None },
    })
}

/// A cases file: `{"rules": "<folder, relative to the file>", "cases": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesFile {
    #[serde(default)]
    pub rules: Option<String>,
    pub cases: Vec<Case>,
}

/// Runs a cases file and prints one line per case; returns (passed, failed).
pub fn run_file(path: &std::path::Path, rules_dir: Option<&std::path::Path>) -> Result<(usize, usize), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: CasesFile = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let dir = match (rules_dir, &file.rules) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(relative)) => base.join(relative),
        (None, None) => std::path::PathBuf::from("rules"),
    };
    let rules = super::load_dir(&dir)?;
    let (mut passed, mut failed) = (0, 0);
    for (i, case) in file.cases.iter().enumerate() {
        let name = case.name.clone().unwrap_or_else(|| format!("case {}", i + 1));
        let expect = match case.expect.as_deref() {
            Some("allow") => true,
            Some("deny") => false,
            _ => return Err(format!("{name}: `expect` must be \"allow\" or \"deny\"")),
        };
        let outcome = run(&rules, case).map_err(|e| format!("{name}: {e}"))?;
        if outcome.allowed == expect {
            passed += 1;
            println!("ok   {name}");
        } else {
            failed += 1;
            let got = if outcome.allowed { "allow" } else { "deny" };
            println!("FAIL {name}: expected {}, got {got}", case.expect.as_deref().unwrap_or_default());
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok((passed, failed))
}
