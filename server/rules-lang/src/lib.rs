//! The Nimbus security rules compiler: a Firestore-compatible rules language.
//! Parses and checks rules files (`parser`, `check`), matches request paths
//! against `match` blocks, and evaluates `allow` conditions (`eval`,
//! `methods`). Pure: no IO, no async; the host supplies documents for
//! `get()`/`exists()` through `Lookup`.

pub mod ast;
pub mod check;
pub mod error;
pub mod eval;
pub mod lexer;
pub mod methods;
pub mod parser;
pub mod pushdown;
pub mod time;
pub mod value;

use std::collections::{BTreeMap, HashMap};

use ast::{Allow, Function, Match, Method, Segment};
pub use error::{CompileError, Pos};
pub use eval::Lookup;
use eval::{Env, EvalError, Scope};
use value::Value;

/// A rules file that failed to load: the file, then `line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    pub error: CompileError,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.error)
    }
}

impl std::error::Error for FileError {}

/// One `match` block flattened to its full pattern, with the functions it sees.
struct Rule {
    pattern: Vec<Segment>,
    /// Variables bound by the stripped Firestore wrapper (`database`).
    fixed: Vec<(String, String)>,
    allows: Vec<Allow>,
    /// Function lists visible here, innermost first.
    functions: Vec<std::sync::Arc<Vec<Function>>>,
    version: u8,
}

/// Compiled rules, ready to decide requests. Default deny.
pub struct Rules {
    rules: Vec<Rule>,
}

/// The signed-in caller as rules see it (`request.auth`: `uid` and all token
/// claims as `token`), converted once; a host can keep it with the token.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    value: Value,
}

impl Auth {
    pub fn new(uid: &str, token: &serde_json::Value) -> Auth {
        let mut map = BTreeMap::new();
        map.insert("uid".to_owned(), Value::Str(uid.to_owned()));
        map.insert("token".to_owned(), Value::from_json(token));
        Auth { value: Value::Map(map) }
    }

    /// `{uid, token}` as a rule value.
    pub fn value(&self) -> &Value {
        &self.value
    }
}

/// A request to decide.
pub struct Request<'a> {
    pub method: Method,
    /// The document path, `posts/p1` (for a list: the path of each document considered).
    pub path: &'a str,
    pub auth: Option<&'a Auth>,
    pub time_micros: i64,
    /// The stored document (`resource`), if it exists.
    pub existing: Option<&'a serde_json::Value>,
    /// The document after the write (`request.resource`), for create and update.
    pub incoming: Option<&'a serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the `allow` at this position.
    Allow(Pos),
    Deny,
    /// Evaluation needs this document (for `get`/`exists`); supply it and decide again.
    NeedDocument(String),
}

impl Rules {
    /// Parses, checks and merges rules files (`(file name, source)`).
    pub fn compile(files: &[(&str, &str)]) -> Result<Rules, FileError> {
        let mut rules = Vec::new();
        for (file, source) in files {
            let wrap = |error| FileError { file: (*file).to_owned(), error };
            let ruleset = parser::parse(source).map_err(wrap)?;
            check::check(&ruleset).map_err(wrap)?;
            let globals = std::sync::Arc::new(ruleset.functions.clone());
            for block in &ruleset.matches {
                let (pattern, fixed) = strip_wrapper(&block.pattern);
                flatten(block, pattern, fixed, vec![globals.clone()], ruleset.version, &mut rules);
            }
        }
        Ok(Rules { rules })
    }

    /// Allow when any `allow` for the method on a matching pattern is true.
    pub fn decide(&self, request: &Request, lookup: &dyn Lookup) -> Decision {
        let segments: Vec<&str> = request.path.split('/').collect();
        let env = Env::new(request, lookup);
        let mut needed = None;
        for rule in &self.rules {
            let Some(mut vars) = bind(&rule.pattern, &segments, rule.version) else { continue };
            vars.extend(rule.fixed.iter().map(|(k, v)| (k.clone(), Value::Str(v.clone()))));
            let functions: Vec<&[Function]> = rule.functions.iter().map(|f| f.as_slice()).collect();
            let scope = Scope { vars, functions };
            for allow in rule.allows.iter().filter(|a| a.methods.contains(&request.method)) {
                match eval::eval(&allow.condition, &scope, &env) {
                    Ok(Value::Bool(true)) => return Decision::Allow(allow.pos),
                    Err(EvalError::NeedDocument(path)) => needed = needed.or(Some(path)),
                    _ => {}
                }
            }
        }
        needed.map_or(Decision::Deny, Decision::NeedDocument)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// A condition on `resource.data` that every document `auth` may `list` in
    /// `collection` meets (see `pushdown`); the host still checks each row.
    pub fn list_condition(&self, collection: &str, auth: Option<&Auth>, time_micros: i64) -> pushdown::Condition {
        let request =
            Request { method: Method::List, path: collection, auth, time_micros, existing: None, incoming: None };
        pushdown::list_condition(self.list_rules(), collection, &request)
    }

    /// The condition on `resource.data` for `list` over the collection group
    /// `group` (every collection whose last segment it is); see `pushdown`.
    pub fn group_list_condition(&self, group: &str, auth: Option<&Auth>, time_micros: i64) -> pushdown::Condition {
        let request = Request { method: Method::List, path: group, auth, time_micros, existing: None, incoming: None };
        pushdown::group_list_condition(self.list_rules(), group, &request)
    }

    /// Whether any `allow` for `method` can apply to a document in some
    /// collection of the group `group`.
    pub fn covers_group(&self, method: Method, group: &str) -> bool {
        self.rules
            .iter()
            .filter(|rule| rule.allows.iter().any(|a| a.methods.contains(&method)))
            .any(|rule| pushdown::group_reach(&rule.pattern, group, rule.version) != pushdown::GroupReach::None)
    }

    /// Each rule's pattern, version, `allow list` conditions, functions and fixed variables.
    fn list_rules(&self) -> impl Iterator<Item = pushdown::RuleView<'_>> {
        self.rules.iter().map(|rule| {
            let conditions: Vec<&ast::Expr> =
                rule.allows.iter().filter(|a| a.methods.contains(&Method::List)).map(|a| &a.condition).collect();
            let functions: Vec<&[Function]> = rule.functions.iter().map(|f| f.as_slice()).collect();
            (rule.pattern.as_slice(), rule.version, conditions, functions, rule.fixed.as_slice())
        })
    }

    /// Whether any `allow` for `method` applies to some document directly in
    /// `collection` (so a query there is filtered rather than refused).
    pub fn covers(&self, method: Method, collection: &str) -> bool {
        let mut segments: Vec<&str> = collection.split('/').collect();
        segments.push("");
        self.rules.iter().filter(|rule| rule.allows.iter().any(|a| a.methods.contains(&method))).any(|rule| {
            let mut path = segments.clone();
            if let (Some(Segment::Literal(id)), Some(last)) = (rule.pattern.last(), path.last_mut()) {
                *last = id.as_str();
            }
            bind(&rule.pattern, &path, rule.version).is_some()
        })
    }
}

/// `match /databases/{database}/documents { … }` (or the literal
/// `/databases/(default)/documents`) addresses our documents directly: drop
/// those three segments and bind `database` to `(default)`.
fn strip_wrapper(pattern: &[Segment]) -> (Vec<Segment>, Vec<(String, String)>) {
    match pattern {
        [Segment::Literal(a), Segment::Var(db), Segment::Literal(c), rest @ ..]
            if a == "databases" && c == "documents" =>
        {
            (rest.to_vec(), vec![(db.clone(), "(default)".to_owned())])
        }
        [Segment::Literal(a), Segment::Literal(db), Segment::Literal(c), rest @ ..]
            if a == "databases" && db == "(default)" && c == "documents" =>
        {
            (rest.to_vec(), Vec::new())
        }
        _ => (pattern.to_vec(), Vec::new()),
    }
}

fn flatten(
    block: &Match,
    pattern: Vec<Segment>,
    fixed: Vec<(String, String)>,
    mut functions: Vec<std::sync::Arc<Vec<Function>>>,
    version: u8,
    out: &mut Vec<Rule>,
) {
    functions.insert(0, std::sync::Arc::new(block.functions.clone()));
    if !block.allows.is_empty() {
        out.push(Rule {
            pattern: pattern.clone(),
            fixed: fixed.clone(),
            allows: block.allows.clone(),
            functions: functions.clone(),
            version,
        });
    }
    for inner in &block.matches {
        let mut full = pattern.clone();
        full.extend(inner.pattern.iter().cloned());
        flatten(inner, full, fixed.clone(), functions.clone(), version, out);
    }
}

/// Binds pattern variables if the pattern matches the whole path. A
/// recursive wildcard `{name=**}` takes zero or more segments (one or more in
/// rules version 1) wherever it stands, and the segments after it must match
/// what follows, so `/forum/{p=**}/comments/{c}` never matches `forum/secret`.
fn bind(pattern: &[Segment], path: &[&str], version: u8) -> Option<HashMap<String, Value>> {
    let mut vars = HashMap::new();
    bind_from(pattern, path, version, &mut vars).then_some(vars)
}

fn bind_from(pattern: &[Segment], path: &[&str], version: u8, vars: &mut HashMap<String, Value>) -> bool {
    let Some((segment, rest_of_pattern)) = pattern.split_first() else { return path.is_empty() };
    match segment {
        Segment::Literal(text) => {
            path.first() == Some(&text.as_str()) && bind_from(rest_of_pattern, &path[1..], version, vars)
        }
        Segment::Var(name) => {
            let Some((first, rest_of_path)) = path.split_first() else { return false };
            vars.insert(name.clone(), Value::Str((*first).to_owned()));
            bind_from(rest_of_pattern, rest_of_path, version, vars)
        }
        Segment::Rest(name) => {
            let least = usize::from(version < 2);
            // The segments after the wildcard need at least one path segment each.
            let fixed_after = rest_of_pattern.iter().filter(|s| !matches!(s, Segment::Rest(_))).count();
            let most = path.len().saturating_sub(fixed_after);
            (least..=most).any(|taken| {
                vars.insert(name.clone(), Value::Str(path[..taken].join("/")));
                bind_from(rest_of_pattern, &path[taken..], version, vars)
            })
        }
    }
}
