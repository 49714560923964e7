//! Load-time checks: every name, function and method a rule uses must exist,
//! so an unsupported feature fails to load with its position instead of
//! silently denying at run time.

use crate::ast::{Expr, ExprKind, Function, Match, PathPart, Ruleset, Segment};
use crate::error::CompileError;
use crate::methods::METHODS;

const GLOBALS: &[&str] = &["get", "exists", "getAfter", "existsAfter", "debug", "string", "int", "float", "path"];
const NOT_YET: &[&str] = &["hashing", "latlng"];
/// Namespaces whose functions are called as `duration.value(...)`.
pub(crate) const NAMESPACES: &[(&str, &[&str])] = &[
    ("duration", &["value"]),
    ("timestamp", &["value", "date"]),
    ("math", &["abs", "ceil", "floor", "round", "sqrt", "pow", "isInfinite", "isNaN"]),
];

pub fn check(ruleset: &Ruleset) -> Result<(), CompileError> {
    let mut functions: Vec<&[Function]> = vec![&ruleset.functions];
    let base = vec!["request".to_owned(), "resource".to_owned()];
    for function in &ruleset.functions {
        check_function(function, &base, &functions)?;
    }
    for block in &ruleset.matches {
        check_match(block, ruleset.version, &base, &mut functions)?;
    }
    Ok(())
}

/// One recursive wildcard per pattern; in rules version 1 it must end the pattern.
fn check_pattern(block: &Match, version: u8) -> Result<(), CompileError> {
    let rest_at: Vec<usize> =
        block.pattern.iter().enumerate().filter(|(_, s)| matches!(s, Segment::Rest(_))).map(|(i, _)| i).collect();
    match rest_at.as_slice() {
        [] => Ok(()),
        [at] if version < 2 && *at + 1 != block.pattern.len() => Err(CompileError::new(
            block.pos,
            "`{name=**}` must be the last segment of a pattern in rules version 1 (rules_version = '2' allows it anywhere)",
        )),
        [_] => Ok(()),
        _ => Err(CompileError::new(block.pos, "a pattern may have only one `{name=**}` segment")),
    }
}

fn check_match<'r>(
    block: &'r Match,
    version: u8,
    names: &[String],
    functions: &mut Vec<&'r [Function]>,
) -> Result<(), CompileError> {
    check_pattern(block, version)?;
    let mut names = names.to_vec();
    for segment in &block.pattern {
        if let Segment::Var(name) | Segment::Rest(name) = segment {
            names.push(name.clone());
        }
    }
    functions.insert(0, &block.functions);
    for function in &block.functions {
        check_function(function, &names, functions)?;
    }
    for allow in &block.allows {
        check_expr(&allow.condition, &names, functions)?;
    }
    for inner in &block.matches {
        check_match(inner, version, &names, functions)?;
    }
    functions.remove(0);
    Ok(())
}

fn check_function(function: &Function, names: &[String], functions: &[&[Function]]) -> Result<(), CompileError> {
    let mut names = names.to_vec();
    names.extend(function.params.iter().cloned());
    for (name, expr) in &function.lets {
        check_expr(expr, &names, functions)?;
        names.push(name.clone());
    }
    check_expr(&function.body, &names, functions)
}

fn defined(name: &str, functions: &[&[Function]]) -> bool {
    functions.iter().any(|list| list.iter().any(|f| f.name == name))
}

fn check_expr(expr: &Expr, names: &[String], functions: &[&[Function]]) -> Result<(), CompileError> {
    let recurse = |e: &Expr| check_expr(e, names, functions);
    match &expr.kind {
        ExprKind::Null | ExprKind::Bool(_) | ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Str(_) => Ok(()),
        ExprKind::List(items) => items.iter().try_for_each(recurse),
        ExprKind::Map(entries) => entries.iter().try_for_each(|(_, e)| recurse(e)),
        ExprKind::Path(parts) => parts.iter().try_for_each(|p| match p {
            PathPart::Literal(_) => Ok(()),
            PathPart::Interpolated(e) => recurse(e),
        }),
        ExprKind::Ident(name) if names.iter().any(|n| n == name) => Ok(()),
        ExprKind::Ident(name) if NOT_YET.contains(&name.as_str()) => {
            Err(CompileError::new(expr.pos, format!("`{name}` is not supported by Nimbus yet")))
        }
        ExprKind::Ident(name) => Err(CompileError::new(expr.pos, format!("unknown name `{name}`"))),
        ExprKind::Member(target, _) => recurse(target),
        ExprKind::Index(target, index) => recurse(target).and_then(|()| recurse(index)),
        ExprKind::Call(name, args) => {
            if NOT_YET.contains(&name.as_str()) {
                return Err(CompileError::new(expr.pos, format!("`{name}()` is not supported by Nimbus yet")));
            }
            if !GLOBALS.contains(&name.as_str()) && !defined(name, functions) {
                return Err(CompileError::new(expr.pos, format!("unknown function `{name}`")));
            }
            args.iter().try_for_each(recurse)
        }
        ExprKind::MethodCall(target, name, args) if namespace_call(target, name).is_some() => {
            if namespace_call(target, name) == Some(false) {
                return Err(CompileError::new(expr.pos, format!("unknown function `{name}()` in this namespace")));
            }
            args.iter().try_for_each(recurse)
        }
        ExprKind::MethodCall(target, name, args) => {
            recurse(target)?;
            if !METHODS.contains(&name.as_str()) {
                return Err(CompileError::new(expr.pos, format!("unknown method `{name}()`")));
            }
            args.iter().try_for_each(recurse)
        }
        ExprKind::Unary(_, inner) | ExprKind::Is(inner, _) => recurse(inner),
        ExprKind::Binary(_, left, right) => recurse(left).and_then(|()| recurse(right)),
        ExprKind::Ternary(a, b, c) => recurse(a).and_then(|()| recurse(b)).and_then(|()| recurse(c)),
    }
}

/// `Some(known)` when `target.name(...)` is a namespace call such as `duration.value`.
fn namespace_call(target: &Expr, name: &str) -> Option<bool> {
    let ExprKind::Ident(namespace) = &target.kind else { return None };
    let (_, functions) = NAMESPACES.iter().find(|(n, _)| n == namespace)?;
    Some(functions.contains(&name))
}
