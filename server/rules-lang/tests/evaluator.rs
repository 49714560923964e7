//! Data-driven evaluator cases: rule text and a request in, decision out.

use nimbus_rules_lang::ast::Method;
use nimbus_rules_lang::{Auth, Decision, Lookup, Request, Rules};
use serde_json::{json, Value};

struct Docs(Vec<(&'static str, Option<Value>)>);

impl Lookup for Docs {
    fn document(&self, path: &str) -> Option<Option<&Value>> {
        self.0.iter().find(|(p, _)| *p == path).map(|(_, d)| d.as_ref())
    }
}

fn alice() -> Auth {
    Auth::new(
        "alice",
        &json!({"sub": "alice", "admin": false, "email": "alice@example.com", "email_verified": true, "groups": ["a", "b"]}),
    )
}

/// Decides `method path` against rules text, with alice signed in unless `auth` is false.
fn decide_with(
    rules: &str,
    method: Method,
    path: &str,
    auth: bool,
    existing: Option<Value>,
    incoming: Option<Value>,
    docs: &Docs,
) -> Decision {
    let rules = Rules::compile(&[("test.rules", rules)]).unwrap_or_else(|e| panic!("{e}\n{rules}"));
    let auth_value = alice();
    let request = Request {
        method,
        path,
        auth: auth.then_some(&auth_value),
        time_micros: 1_700_000_000_000_000,
        existing: existing.as_ref(),
        incoming: incoming.as_ref(),
    };
    rules.decide(&request, docs)
}

fn allowed(decision: &Decision) -> bool {
    matches!(decision, Decision::Allow(_))
}

/// One `allow get` with `condition` on `match /things/{id}`, against an existing document.
fn condition(expr: &str) -> bool {
    let rules = format!("rules_version = '2';\nservice cloud.firestore {{ match /databases/{{database}}/documents {{ match /things/{{id}} {{ allow get: if {expr}; }} }} }}");
    let existing = json!({"owner": "alice", "n": 5, "f": 2.5, "tags": ["x", "y"], "title": "Hello World", "nested": {"a": {"b": 1}}, "nothing": null, "ok": true});
    allowed(&decide_with(&rules, Method::Get, "things/t1", true, Some(existing), None, &Docs(vec![])))
}

#[test]
fn expression_cases() {
    let cases: &[(&str, bool)] = &[
        ("true", true),
        ("false", false),
        ("request.auth != null", true),
        ("request.auth.uid == 'alice'", true),
        ("request.auth.uid == 'bob'", false),
        ("request.auth.token.email_verified", true),
        ("request.auth.token.admin == true", false),
        ("'a' in request.auth.token.groups", true),
        ("'z' in request.auth.token.groups", false),
        ("resource.data.owner == request.auth.uid", true),
        ("resource.id == 't1'", true),
        ("id == 't1'", true),
        ("database == '(default)'", true),
        ("resource.data.n == 5", true),
        ("resource.data.n == 5.0", true),
        ("resource.data.n > 4 && resource.data.n < 6", true),
        ("resource.data.n >= 5 && resource.data.n <= 5", true),
        ("resource.data.n != 5", false),
        ("resource.data.f > 2", true),
        ("resource.data.n + 1 == 6", true),
        ("resource.data.n - 1 == 4", true),
        ("resource.data.n * 2 == 10", true),
        ("resource.data.n / 2 == 2", true),
        ("resource.data.n % 2 == 1", true),
        ("resource.data.f * 2 == 5.0", true),
        ("-resource.data.n == -5", true),
        ("!(resource.data.n == 5)", false),
        ("resource.data.n == 5 ? true : false", true),
        ("resource.data.n == 4 ? true : false", false),
        ("resource.data.title.size() == 11", true),
        ("resource.data.title.lower() == 'hello world'", true),
        ("resource.data.title.upper() == 'HELLO WORLD'", true),
        ("resource.data.title.matches('Hello.*')", true),
        ("resource.data.title.matches('World')", false),
        ("resource.data.title.split(' ')[1] == 'World'", true),
        ("'  x '.trim() == 'x'", true),
        ("resource.data.title.replace('o', '0') == 'Hell0 W0rld'", true),
        ("resource.data.tags.size() == 2", true),
        ("resource.data.tags[0] == 'x'", true),
        ("resource.data.tags[-1] == 'y'", true),
        ("resource.data.tags.hasAll(['x'])", true),
        ("resource.data.tags.hasAll(['x', 'z'])", false),
        ("resource.data.tags.hasAny(['z', 'y'])", true),
        ("resource.data.tags.hasAny(['z'])", false),
        ("resource.data.tags.hasOnly(['x', 'y', 'z'])", true),
        ("resource.data.tags.hasOnly(['x'])", false),
        ("resource.data.tags.join('-') == 'x-y'", true),
        ("resource.data.tags.concat(['z']).size() == 3", true),
        ("['a', 'a', 'b'].toSet().size() == 2", true),
        ("['a', 'b'].union(['b', 'c']).size() == 3", true),
        ("['a', 'b'].difference(['b']) == ['a']", true),
        ("['a', 'b'].intersection(['b', 'c']) == ['b']", true),
        ("resource.data.keys().hasAll(['owner', 'n'])", true),
        ("resource.data.keys().hasOnly(['owner'])", false),
        ("resource.data.size() == 8", true),
        ("resource.data.nested.a.b == 1", true),
        ("resource.data.nested['a']['b'] == 1", true),
        ("resource.data.get('missing', 7) == 7", true),
        ("resource.data.get(['nested', 'a', 'b'], 0) == 1", true),
        ("resource.data.get(['nested', 'x', 'b'], 0) == 0", true),
        ("'owner' in resource.data", true),
        ("'ghost' in resource.data", false),
        ("resource.data.nothing == null", true),
        ("resource.data.nothing is null", true),
        ("resource.data.n is int", true),
        ("resource.data.n is number", true),
        ("resource.data.f is float", true),
        ("resource.data.f is int", false),
        ("resource.data.title is string", true),
        ("resource.data.tags is list", true),
        ("resource.data.nested is map", true),
        ("resource.data.ok is bool", true),
        ("request.time is timestamp", true),
        ("request.path is path", true),
        ("request.method == 'get'", true),
        ("request.resource == null", true),
        ("request.time > request.time - (request.time - request.time)", false),
        ("request.time.toMillis() == 1700000000000", true),
        ("{'a': 1}.diff({'a': 2, 'b': 3}).affectedKeys().hasAll(['a', 'b'])", true),
        ("{'a': 1, 'c': 1}.diff({'a': 1}).removedKeys() == ['c']", true),
        ("{'a': 1}.diff({'a': 1, 'b': 2}).addedKeys() == ['b']", true),
        ("{'a': 1}.diff({'a': 2}).changedKeys() == ['a']", true),
        ("{'a': 1}.diff({'a': 1}).unchangedKeys() == ['a']", true),
        ("string(5) == '5'", true),
        ("int('42') == 42", true),
        ("float(1) == 1.0", true),
        ("int(2.9) == 2", true),
        ("debug(true)", true),
        ("request.time - duration.value(1, 'h') < request.time", true),
        ("request.time + duration.value(2, 'd') > request.time", true),
        ("duration.value(90, 's').seconds() == 90", true),
        ("(request.time - timestamp.value(1699999999000)).seconds() == 1", true),
        ("timestamp.date(2023, 11, 14) == request.time.date()", true),
        ("request.time.year() == 2023 && request.time.month() == 11 && request.time.day() == 14", true),
        ("request.time.hours() == 22 && request.time.minutes() == 13 && request.time.seconds() == 20", true),
        ("duration.value(1, 'fortnight') > duration.value(1, 's')", false),
        ("[1, 2, 3,] == [1, 2, 3]", true),
        ("{'k': 'v',}.k == 'v'", true),
        // Errors are values: they deny, but || and && can still decide.
        ("resource.data.missing == 1", false),
        ("resource.data.missing == 1 || true", true),
        ("true || resource.data.missing == 1", true),
        ("resource.data.missing == 1 && false", false),
        ("resource.data.missing == 1 || false", false),
        ("!(resource.data.missing == 1)", false),
        ("resource.data.title > 5", false),
        ("resource.data.n / 0 == 1", false),
        ("resource.data.title.size() > 'x'", false),
        ("1 in 'abc'", false),
        ("resource.data.nothing.x == 1", false),
        ("resource.data.tags[5] == 1", false),
        ("int('x') == 1", false),
        ("'(' .matches('(')", false),
        // Integer arithmetic is checked: overflow is a rule error (deny), never a panic.
        ("(-9223372036854775807 - 1) / -1 == 0", false),
        ("(-9223372036854775807 - 1) / -1 == 0 || true", true),
        ("(-9223372036854775807 - 1) % -1 == 0", false),
        ("-(-9223372036854775807 - 1) == 0", false),
        ("9223372036854775807 + 1 > 0", false),
        ("(-9223372036854775807 - 1) - 1 < 0", false),
        ("9223372036854775807 * 2 > 0", false),
        ("resource.data.n % 0 == 0", false),
        ("7 / 2 == 3 && -7 % 2 == -1", true),
        ("timestamp.value(9223372036854775) + duration.value(9223372036854775, 'ms') > request.time", false),
        ("timestamp.value(-9223372036854775) - duration.value(9223372036854775, 'ms') < request.time", false),
        ("request.time - timestamp.value(-9223372036854775) > duration.value(0, 's')", false),
        ("timestamp.value(-9223372036854775) - request.time < duration.value(0, 's')", false),
        (
            "duration.value(9223372036854775, 'ms') + duration.value(9223372036854775, 'ms') > duration.value(0, 's')",
            false,
        ),
        ("duration.value(9223372036854775807, 'w') > duration.value(0, 's')", false),
        ("timestamp.value(-9223372036854775).date() < request.time", false),
        ("timestamp.date(99999999999999, 1, 1) > request.time", false),
        ("timestamp.date(-99999999999999, 1, 1) < request.time", false),
        ("timestamp.date(9999, 12, 31) > request.time", true),
        ("math.abs(-3) == 3 && math.abs(-2.5) == 2.5", true),
        ("math.abs(-9223372036854775807 - 1) > 0", false),
        ("math.ceil(2.1) == 3 && math.floor(-2.1) == -3 && math.round(2.5) == 3", true),
        ("math.ceil(2.1) is int", true),
        ("math.sqrt(16) == 4.0 && math.pow(2, 10) == 1024", true),
        ("math.isNaN(math.sqrt(-1)) && math.isInfinite(math.pow(10, 400))", true),
        ("math.ceil(math.pow(10, 300)) > 0", false),
        ("math.abs('x') == 1", false),
    ];
    let mut failures = Vec::new();
    for (expr, expected) in cases {
        if condition(expr) != *expected {
            failures.push(format!("{expr} should be {expected}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert!(cases.len() >= 100, "{} cases", cases.len());
}

/// method, path, signed in, existing, incoming, documents, expected, why
type Case<'a> = (Method, &'a str, bool, Option<Value>, Option<Value>, &'a Docs, bool, &'a str);

const OWNED: &str = r#"
rules_version = '2';
service cloud.firestore {
  match /databases/{database}/documents {
    function signedIn() { return request.auth != null }
    function isOwner(uid) { return signedIn() && request.auth.uid == uid; }
    match /posts/{postId} {
      allow read: if true;
      allow create: if isOwner(request.resource.data.owner)
                    && request.resource.data.keys().hasOnly(['owner', 'title'])
                    && request.resource.data.title is string;
      allow update: if isOwner(resource.data.owner)
                    && request.resource.data.diff(resource.data).affectedKeys().hasOnly(['title']);
      allow delete: if isOwner(resource.data.owner)
      match /comments/{commentId} {
        allow create: if exists(/databases/$(database)/documents/posts/$(postId))
                      && get(/databases/$(database)/documents/posts/$(postId)).data.open == true;
      }
    }
    match /admin/{rest=**} {
      allow read, write: if request.auth.token.admin == true;
    }
    match /public/{doc=**} {
      allow get;
    }
  }
}
"#;

#[test]
fn structural_cases() {
    let none = Docs(vec![]);
    let mine = Some(json!({"owner": "alice", "title": "t"}));
    let theirs = Some(json!({"owner": "bob", "title": "t"}));
    let cases: Vec<Case> = vec![
        (Method::Get, "posts/p1", false, theirs.clone(), None, &none, true, "anyone reads posts"),
        (Method::List, "posts/p1", false, theirs.clone(), None, &none, true, "read covers list"),
        (
            Method::Create,
            "posts/p1",
            true,
            None,
            Some(json!({"owner": "alice", "title": "t"})),
            &none,
            true,
            "create own",
        ),
        (
            Method::Create,
            "posts/p1",
            true,
            None,
            Some(json!({"owner": "bob", "title": "t"})),
            &none,
            false,
            "forged owner",
        ),
        (
            Method::Create,
            "posts/p1",
            false,
            None,
            Some(json!({"owner": "alice", "title": "t"})),
            &none,
            false,
            "signed out",
        ),
        (
            Method::Create,
            "posts/p1",
            true,
            None,
            Some(json!({"owner": "alice", "title": 5})),
            &none,
            false,
            "title must be a string",
        ),
        (
            Method::Create,
            "posts/p1",
            true,
            None,
            Some(json!({"owner": "alice", "title": "t", "x": 1})),
            &none,
            false,
            "extra field",
        ),
        (
            Method::Update,
            "posts/p1",
            true,
            mine.clone(),
            Some(json!({"owner": "alice", "title": "new"})),
            &none,
            true,
            "owner edits title",
        ),
        (
            Method::Update,
            "posts/p1",
            true,
            mine.clone(),
            Some(json!({"owner": "bob", "title": "t"})),
            &none,
            false,
            "owner cannot change owner",
        ),
        (
            Method::Update,
            "posts/p1",
            true,
            theirs.clone(),
            Some(json!({"owner": "bob", "title": "x"})),
            &none,
            false,
            "not the owner",
        ),
        (Method::Delete, "posts/p1", true, mine.clone(), None, &none, true, "owner deletes"),
        (Method::Delete, "posts/p1", true, theirs.clone(), None, &none, false, "others cannot delete"),
        (Method::Delete, "posts/p1", true, None, None, &none, false, "resource null: error denies"),
        (Method::Get, "posts/p1/comments/c1", true, None, None, &none, false, "no read rule on comments"),
        (Method::Get, "other/x", true, None, None, &none, false, "default deny"),
        (Method::Get, "admin/a/b/c", true, None, None, &none, false, "not admin"),
        (Method::Get, "public", false, None, None, &none, true, "{doc=**} matches zero segments in v2"),
        (Method::Get, "public/a/b/c", false, None, None, &none, true, "recursive wildcard"),
        (Method::Create, "public/a", false, None, Some(json!({})), &none, false, "allow get only"),
    ];
    for (method, path, auth, existing, incoming, docs, expected, why) in cases {
        let decision = decide_with(OWNED, method, path, auth, existing, incoming, docs);
        assert_eq!(allowed(&decision), expected, "{why}: {method:?} {path} → {decision:?}");
    }
}

#[test]
fn get_and_exists_ask_for_documents() {
    let incoming = Some(json!({"text": "hi"}));
    let decision =
        decide_with(OWNED, Method::Create, "posts/p1/comments/c1", true, None, incoming.clone(), &Docs(vec![]));
    assert_eq!(decision, Decision::NeedDocument("posts/p1".into()));
    let open = Docs(vec![("posts/p1", Some(json!({"open": true})))]);
    assert!(allowed(&decide_with(OWNED, Method::Create, "posts/p1/comments/c1", true, None, incoming.clone(), &open)));
    let closed = Docs(vec![("posts/p1", Some(json!({"open": false})))]);
    assert!(!allowed(&decide_with(
        OWNED,
        Method::Create,
        "posts/p1/comments/c1",
        true,
        None,
        incoming.clone(),
        &closed
    )));
    let missing = Docs(vec![("posts/p1", None)]);
    assert!(!allowed(&decide_with(OWNED, Method::Create, "posts/p1/comments/c1", true, None, incoming, &missing)));
}

#[test]
fn admin_claims_and_version_one_wildcards() {
    let rules = "service cloud.firestore { match /databases/{db}/documents { match /admin/{rest=**} { allow read: if request.auth.token.admin == true; } } }";
    let admin = Auth::new("root", &json!({"admin": true}));
    let compiled = Rules::compile(&[("v1.rules", rules)]).unwrap();
    let request = |path| Request {
        method: Method::Get,
        path,
        auth: Some(&admin),
        time_micros: 0,
        existing: None,
        incoming: None,
    };
    assert!(allowed(&compiled.decide(&request("admin/x/y"), &Docs(vec![]))));
    assert_eq!(compiled.decide(&request("admin"), &Docs(vec![])), Decision::Deny, "v1: ** needs at least one segment");
}

#[test]
fn errors_name_file_line_and_column() {
    let cases = [
        ("service cloud.firestore { match /a/{b} { allow read: if foo(); } }", "x.rules:1:57: unknown function `foo`"),
        (
            "service cloud.firestore {\n  match /a/{b} {\n    allow read: if request.auth.uid.bogus();\n  }\n}",
            "x.rules:3:37: unknown method `bogus()`",
        ),
        ("service cloud.firestore { match /a/{b} { allow read: if nope == 1; } }", "x.rules:1:57: unknown name `nope`"),
        (
            "service cloud.firestore { match /a/{b} { allow read: if hashing.sha256('x') == 1; } }",
            "x.rules:1:57: `hashing` is not supported by Nimbus yet",
        ),
        (
            "service cloud.firestore { match /a/{b} { allow read: if latlng.value(1, 2) == 1; } }",
            "x.rules:1:57: `latlng` is not supported by Nimbus yet",
        ),
        (
            "service cloud.firestore { match /a/{b} { allow peek: if true; } }",
            "x.rules:1:48: unknown method `peek` (expected read, write, get, list, create, update or delete)",
        ),
        ("service cloud.firestore { match /a/{b} { allow read: if 'x; } }", "x.rules:1:57: unterminated string"),
        ("service cloud.firestore { match /a/{b} { allow read: if (true; } }", "x.rules:1:62: expected `)`, found `;`"),
        (
            "service cloud.storage { }",
            "x.rules:1:9: unsupported service `cloud.storage` (use `cloud.firestore` or `nimbus`)",
        ),
        ("match /a/{b} {}", "x.rules:1:1: expected `rules_version`, `service` or `function`, found `match`"),
        (
            "service cloud.firestore { match /a/{r=**}/b { allow read; } }",
            "x.rules:1:27: `{name=**}` must be the last segment of a pattern in rules version 1 (rules_version = '2' allows it anywhere)",
        ),
    ];
    for (source, expected) in cases {
        let error = Rules::compile(&[("x.rules", source)]).err().map(|e| e.to_string());
        assert_eq!(error.as_deref(), Some(expected), "{source}");
    }
}

#[test]
fn firebase_leniency_loads() {
    let source = r#"
        function global(x) { let y = x + 1; return y > 1 }
        service cloud.firestore {
          function svc() { return true }
          match /databases/{database}/documents {
            match /items/{id} {
              function local(a, b,) { return a == b }
              allow read: if local(1, 1,) && svc() && global(1)
              allow write: if false
            }
          }
        }
    "#;
    let rules = Rules::compile(&[("lenient.rules", source)]).unwrap();
    let request =
        Request { method: Method::Get, path: "items/i", auth: None, time_micros: 0, existing: None, incoming: None };
    assert!(allowed(&rules.decide(&request, &Docs(vec![]))));
}

#[test]
fn covers_tells_whether_a_collection_can_be_listed() {
    let rules = Rules::compile(&[("c.rules", OWNED)]).unwrap();
    assert!(rules.covers(Method::List, "posts"));
    assert!(!rules.covers(Method::List, "posts/p1/comments"), "comments have no read rule");
    assert!(!rules.covers(Method::Delete, "public"));
    assert!(rules.covers(Method::List, "admin/x"), "recursive wildcard");
    assert!(!rules.covers(Method::List, "elsewhere"));
}

/// Compiles `matches` inside the Firestore wrapper (`service cloud.firestore`, `/databases/{database}/documents`).
fn documents_rules(matches: &str) -> Rules {
    let source = format!(
        "rules_version = '2';\nservice cloud.firestore {{\n  match /databases/{{database}}/documents {{\n{matches}\n  }}\n}}\n"
    );
    Rules::compile(&[("test.rules", source.as_str())]).unwrap()
}

#[test]
fn list_conditions_push_owner_checks_down() {
    use nimbus_rules_lang::pushdown::{CompareOp, Condition};
    let rules = documents_rules(
        r#"
        function isOwner(uid) { return request.auth != null && request.auth.uid == uid; }
        match /notes/{id} {
          allow list: if isOwner(resource.data.owner) || resource.data.public == true;
        }
        match /tasks/{id} {
          allow list: if request.auth.uid == resource.data.owner && resource.data.tags.size() > 0;
        }
        match /open/{id} { allow read; }
        match /mixed/{id} { allow list: if resource.data.n > 1 || id == 'x'; }
        match /admin/{id} { allow list: if request.auth.token.admin == true; }"#,
    );
    let alice = alice();
    let field = |f: &str| f.split('.').map(str::to_owned).collect::<Vec<_>>();
    let tasks = rules.list_condition("tasks", Some(&alice), 0);
    assert_eq!(
        tasks,
        Condition::And(vec![
            Condition::Compare { field: field("owner"), op: CompareOp::Eq, value: json!("alice") },
            Condition::Unknown
        ]),
        "the row-dependent rest (tags.size()) is left for per-row checks"
    );
    assert!(!tasks.is_exact());
    assert_eq!(rules.list_condition("open", None, 0), Condition::Anything);
    let mixed = rules.list_condition("mixed", None, 0);
    assert_eq!(
        mixed,
        Condition::Or(vec![
            Condition::Compare { field: field("n"), op: CompareOp::Gt, value: json!(1) },
            Condition::Unknown
        ]),
        "a condition on the id cannot be pushed"
    );
    assert!(!mixed.is_exact());
    assert_eq!(rules.list_condition("admin", Some(&alice), 0), Condition::Nothing, "decided without reading rows");
    assert_eq!(rules.list_condition("elsewhere", Some(&alice), 0), Condition::Nothing);
    let notes = rules.list_condition("notes", None, 0);
    assert_eq!(
        notes,
        Condition::Compare { field: field("public"), op: CompareOp::Eq, value: json!(true) },
        "signed out: only public notes"
    );
    assert!(notes.is_exact(), "nothing is left for per-row checks");
    assert!(rules.list_condition("notes", Some(&alice), 0).is_exact());
}

#[test]
fn list_conditions_leave_what_they_cannot_express_for_per_row_checks() {
    use nimbus_rules_lang::pushdown::Condition;
    let rules = documents_rules(
        r#"
        match /groups/{id} { allow list: if resource.data.group in request.auth.token; }
        match /fetched/{id} { allow list: if get(/databases/$(database)/documents/config/c).data.open == true; }
        match /single/only { allow list: if true; }
        match /stamps/{id} { allow list: if resource.data.at < request.time; }"#,
    );
    let alice = alice();
    for collection in ["groups", "fetched", "single"] {
        let condition = rules.list_condition(collection, Some(&alice), 0);
        assert!(!condition.is_exact(), "{collection}: {condition:?}");
        assert_ne!(condition, Condition::Nothing, "{collection}: a necessary condition never drops visible rows");
    }
    assert_eq!(
        rules.list_condition("stamps", Some(&alice), 0),
        Condition::Compare {
            field: vec!["at".into()],
            op: nimbus_rules_lang::pushdown::CompareOp::Lt,
            value: json!({"$timestamp": "1970-01-01T00:00:00.000000Z"})
        },
        "a timestamp comparison is pushed down in the wire form"
    );
}

#[test]
fn collection_groups_push_down_what_reaches_the_whole_group() {
    use nimbus_rules_lang::pushdown::{CompareOp, Condition};
    let rules = documents_rules(
        r#"
        match /{path=**}/comments/{id} { allow list: if resource.data.author == request.auth.uid; }
        match /posts/{p}/reviews/{id} { allow list: if resource.data.public == true; }"#,
    );
    let alice = alice();
    let comments = rules.group_list_condition("comments", Some(&alice), 0);
    assert_eq!(comments, Condition::Compare { field: vec!["author".into()], op: CompareOp::Eq, value: json!("alice") });
    assert!(comments.is_exact());
    let reviews = rules.group_list_condition("reviews", Some(&alice), 0);
    assert!(!reviews.is_exact(), "a rule for part of the group leaves every row to be checked: {reviews:?}");
    assert!(rules.covers_group(Method::List, "reviews"));
    assert!(!rules.covers_group(Method::List, "orders"));
    assert_eq!(rules.group_list_condition("orders", Some(&alice), 0), Condition::Nothing);
}

/// Documents as stored, and the request's own writes for `getAfter`.
struct WithWrites {
    stored: Vec<(&'static str, Option<Value>)>,
    after: Vec<(&'static str, Option<Value>)>,
}

impl Lookup for WithWrites {
    fn document(&self, path: &str) -> Option<Option<&Value>> {
        self.stored.iter().find(|(p, _)| *p == path).map(|(_, d)| d.as_ref())
    }

    fn document_after(&self, path: &str) -> Option<Option<&Value>> {
        self.after.iter().find(|(p, _)| *p == path).map(|(_, d)| d.as_ref()).or_else(|| self.document(path))
    }
}

#[test]
fn get_after_sees_the_request_s_own_writes() {
    let rules = r#"
rules_version = '2';
service cloud.firestore {
  match /databases/(default)/documents {
    match /rooms/{room}/members/{uid} {
      allow create: if getAfter(/databases/(default)/documents/rooms/$(room)).data.count == 1
                    && !existsAfter(/databases/(default)/documents/invites/$(uid))
                    && exists(/databases/(default)/documents/invites/$(uid));
    }
  }
}"#;
    let rules = Rules::compile(&[("after.rules", rules)]).unwrap_or_else(|e| panic!("{e}"));
    let incoming = json!({"joined": true});
    let request = Request {
        method: Method::Create,
        path: "rooms/r1/members/alice",
        auth: None,
        time_micros: 0,
        existing: None,
        incoming: Some(&incoming),
    };
    let batch = WithWrites {
        stored: vec![("rooms/r1", Some(json!({"count": 0}))), ("invites/alice", Some(json!({})))],
        after: vec![("rooms/r1", Some(json!({"count": 1}))), ("invites/alice", None)],
    };
    assert!(allowed(&rules.decide(&request, &batch)), "the batch bumps the count and spends the invite");
    let alone = WithWrites { stored: batch.stored.clone(), after: vec![] };
    assert!(!allowed(&rules.decide(&request, &alone)), "without the other writes, the count is still 0");
    let unknown = WithWrites { stored: vec![], after: vec![] };
    assert_eq!(rules.decide(&request, &unknown), Decision::NeedDocument("rooms/r1".into()));
}
