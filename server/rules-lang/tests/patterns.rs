//! Path matching: nested `match` blocks under recursive wildcards, and a
//! property check that a rule matches exactly the paths its full pattern does
//! (the full pattern turned into a regular expression is the oracle).

use nimbus_rules_lang::ast::Method;
use nimbus_rules_lang::{Decision, Lookup, Request, Rules};

struct NoDocs;

impl Lookup for NoDocs {
    fn document(&self, _path: &str) -> Option<Option<&serde_json::Value>> {
        Some(None)
    }
}

fn reads(rules: &Rules, path: &str) -> bool {
    let request = Request { method: Method::Get, path, auth: None, time_micros: 0, existing: None, incoming: None };
    matches!(rules.decide(&request, &NoDocs), Decision::Allow(_))
}

/// `blocks` nested from outermost to innermost; the innermost allows reads.
fn nested(version: u8, blocks: &[&str]) -> String {
    let mut text = "allow read: if true;".to_owned();
    for block in blocks.iter().rev() {
        text = format!("match {block} {{ {text} }}");
    }
    format!(
        "rules_version = '{version}';\nservice cloud.firestore {{ match /databases/{{db}}/documents {{ {text} }} }}"
    )
}

fn compile(source: &str) -> Rules {
    Rules::compile(&[("p.rules", source)]).unwrap_or_else(|e| panic!("{e}\n{source}"))
}

#[test]
fn a_match_nested_under_a_recursive_wildcard_keeps_its_own_segments() {
    let cases: &[(u8, &[&str], &str, bool)] = &[
        (2, &["/forum/{path=**}", "/comments/{c}"], "forum/secret", false),
        (2, &["/forum/{path=**}", "/comments/{c}"], "forum/comments/c1", true),
        (2, &["/forum/{path=**}", "/comments/{c}"], "forum/t/comments/c1", true),
        (2, &["/forum/{path=**}", "/comments/{c}"], "forum/a/b/comments/c1", true),
        (2, &["/forum/{path=**}", "/comments/{c}"], "forum/a/comments", false),
        (2, &["/forum/{path=**}", "/comments/{c}"], "forum/a/comments/c1/x", false),
        (1, &["/forum/{path=**}", "/comments/{c}"], "forum/comments/c1", false),
        (1, &["/forum/{path=**}", "/comments/{c}"], "forum/t/comments/c1", true),
        (2, &["/{p=**}", "/publicPosts/{id}"], "secret/x", false),
        (2, &["/{p=**}", "/publicPosts/{id}"], "publicPosts/x", true),
        (2, &["/{p=**}", "/publicPosts/{id}"], "users/u/publicPosts/x", true),
        (2, &["/a", "/{p=**}", "/b/{id}", "/c/{x}"], "a/b/1", false),
        (2, &["/a", "/{p=**}", "/b/{id}", "/c/{x}"], "a/b/1/c/2", true),
        (2, &["/a", "/{p=**}", "/b/{id}", "/c/{x}"], "a/z/z/b/1/c/2", true),
        (2, &["/a/{p=**}", "/b/{q=**}", "/c/{x}"], "a/b/c/1", true),
        (2, &["/a/{p=**}", "/b/{q=**}", "/c/{x}"], "a/1/b/2/3/c/4", true),
        (2, &["/a/{p=**}", "/b/{q=**}", "/c/{x}"], "a/1/2/3/c/4", false),
        (2, &["/{path=**}/comments/{c}"], "posts/p1/comments/c1", true),
        (2, &["/{path=**}/comments/{c}"], "comments/c1", true),
        (2, &["/{path=**}/comments/{c}"], "posts/p1", false),
        (2, &["/{doc=**}"], "anything/at/all", true),
    ];
    for (version, blocks, path, expected) in cases {
        let source = nested(*version, blocks);
        assert_eq!(reads(&compile(&source), path), *expected, "v{version} {blocks:?} on {path}");
    }
}

#[test]
fn version_one_wants_the_recursive_wildcard_last_and_one_per_pattern() {
    let v1 = "service cloud.firestore { match /{p=**}/comments/{c} { allow read; } }";
    let error = Rules::compile(&[("v1.rules", v1)]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("rules version 1"), "{error}");
    let two = "rules_version = '2'; service cloud.firestore { match /{p=**}/x/{q=**} { allow read; } }";
    let error = Rules::compile(&[("two.rules", two)]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("only one"), "{error}");
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

const WORDS: &[&str] = &["a", "b", "c"];

/// A random match statement: one to three segments, at most one `**`.
fn random_block(gen: &mut Gen, version: u8, index: usize) -> String {
    let len = 1 + gen.below(3);
    let mut block = String::new();
    let mut rest_used = false;
    for i in 0..len {
        let last = i + 1 == len;
        match gen.below(4) {
            0 if !rest_used && (version == 2 || last) => {
                rest_used = true;
                block.push_str(&format!("/{{r{index}_{i}=**}}"));
            }
            1 => block.push_str(&format!("/{{v{index}_{i}}}")),
            _ => block.push_str(&format!("/{}", WORDS[gen.below(3)])),
        }
    }
    block
}

/// The regular expression a full pattern stands for (on `/`-prefixed paths).
fn oracle(blocks: &[String], version: u8) -> regex::Regex {
    let mut expression = String::from("^");
    for block in blocks {
        for segment in block.split('/').skip(1) {
            let part = match segment {
                s if s.ends_with("=**}") && version == 2 => "(/[^/]+)*".to_owned(),
                s if s.ends_with("=**}") => "(/[^/]+)+".to_owned(),
                s if s.starts_with('{') => "/[^/]+".to_owned(),
                s => format!("/{s}"),
            };
            expression.push_str(&part);
        }
    }
    expression.push('$');
    regex::Regex::new(&expression).unwrap_or_else(|e| panic!("{e}: {expression}"))
}

#[test]
fn a_rule_matches_exactly_the_paths_of_its_full_pattern() {
    let mut gen = Gen(0x9E37_79B9_7F4A_7C15);
    for _ in 0..400 {
        let version = 1 + (gen.below(2) as u8);
        let depth = 1 + gen.below(3);
        let blocks: Vec<String> = (0..depth).map(|i| random_block(&mut gen, version, i)).collect();
        // Version 1 only allows `**` at the end of the whole pattern.
        if version == 1 && blocks.iter().rev().skip(1).any(|b| b.contains("**")) {
            continue;
        }
        let refs: Vec<&str> = blocks.iter().map(String::as_str).collect();
        let rules = compile(&nested(version, &refs));
        let oracle = oracle(&blocks, version);
        for _ in 0..30 {
            let len = 1 + gen.below(6);
            let path: Vec<&str> = (0..len).map(|_| WORDS[gen.below(3)]).collect();
            let path = path.join("/");
            assert_eq!(
                reads(&rules, &path),
                oracle.is_match(&format!("/{path}")),
                "v{version} {blocks:?} on {path} (oracle {oracle})"
            );
        }
    }
}
