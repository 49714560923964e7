//! Recursive-descent parser: tokens → `Ruleset`. Accepts what Firebase accepts
//! in practice: statements without the final `;`, trailing commas, functions
//! at any level, files without `rules_version`.

use crate::ast::*;
use crate::error::{CompileError, Pos};
use crate::lexer::{tokenize, Tok, Token};

pub fn parse(source: &str) -> Result<Ruleset, CompileError> {
    let mut parser = Parser { tokens: tokenize(source)?, at: 0 };
    parser.ruleset()
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

type Parsed<T> = Result<T, CompileError>;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.at].tok
    }

    fn pos(&self) -> Pos {
        self.tokens[self.at].pos
    }

    fn next(&mut self) -> Token {
        let token = self.tokens[self.at].clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        token
    }

    fn error<T>(&self, message: impl Into<String>) -> Parsed<T> {
        Err(CompileError::new(self.pos(), message))
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn is_ident(&self, name: &str) -> bool {
        matches!(self.peek(), Tok::Ident(n) if n == name)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        if self.is_punct(p) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, p: &str) -> Parsed<()> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            self.error(format!("expected `{p}`, found {}", describe(self.peek())))
        }
    }

    fn ident(&mut self) -> Parsed<String> {
        match self.peek().clone() {
            Tok::Ident(name) => {
                self.next();
                Ok(name)
            }
            other => self.error(format!("expected a name, found {}", describe(&other))),
        }
    }

    fn ruleset(&mut self) -> Parsed<Ruleset> {
        let mut ruleset = Ruleset { version: 1, ..Default::default() };
        let mut saw_service = false;
        loop {
            match self.peek().clone() {
                Tok::Eof => break,
                Tok::Ident(word) if word == "rules_version" => {
                    self.next();
                    self.expect_punct("=")?;
                    let pos = self.pos();
                    ruleset.version = match self.next().tok {
                        Tok::Str(v) if v == "1" => 1,
                        Tok::Str(v) if v == "2" => 2,
                        _ => return Err(CompileError::new(pos, "rules_version must be '1' or '2'")),
                    };
                    self.eat_punct(";");
                }
                Tok::Ident(word) if word == "service" => {
                    if saw_service {
                        return self.error("only one `service` block per ruleset");
                    }
                    saw_service = true;
                    self.next();
                    let name_pos = self.pos();
                    let mut name = self.ident()?;
                    while self.eat_punct(".") {
                        name = format!("{name}.{}", self.ident()?);
                    }
                    if name != "cloud.firestore" && name != "nimbus" {
                        return Err(CompileError::new(
                            name_pos,
                            format!("unsupported service `{name}` (use `cloud.firestore` or `nimbus`)"),
                        ));
                    }
                    self.expect_punct("{")?;
                    while !self.eat_punct("}") {
                        match self.peek() {
                            Tok::Ident(w) if w == "match" => ruleset.matches.push(self.match_block()?),
                            Tok::Ident(w) if w == "function" => ruleset.functions.push(self.function()?),
                            Tok::Eof => return self.error("unclosed `service` block"),
                            other => {
                                return self.error(format!("expected `match` or `function`, found {}", describe(other)))
                            }
                        }
                    }
                }
                Tok::Ident(word) if word == "function" => ruleset.functions.push(self.function()?),
                other => {
                    return self.error(format!(
                        "expected `rules_version`, `service` or `function`, found {}",
                        describe(&other)
                    ))
                }
            }
        }
        if !saw_service {
            return self.error("missing `service cloud.firestore { ... }` block");
        }
        Ok(ruleset)
    }

    fn match_block(&mut self) -> Parsed<Match> {
        let pos = self.pos();
        self.next(); // match
        let pattern = self.pattern()?;
        self.expect_punct("{")?;
        let mut block = Match { pattern, pos, allows: Vec::new(), functions: Vec::new(), matches: Vec::new() };
        while !self.eat_punct("}") {
            match self.peek() {
                Tok::Ident(w) if w == "match" => block.matches.push(self.match_block()?),
                Tok::Ident(w) if w == "function" => block.functions.push(self.function()?),
                Tok::Ident(w) if w == "allow" => block.allows.push(self.allow()?),
                Tok::Eof => return self.error("unclosed `match` block"),
                other => {
                    return self.error(format!("expected `allow`, `match` or `function`, found {}", describe(other)))
                }
            }
        }
        Ok(block)
    }

    fn pattern(&mut self) -> Parsed<Vec<Segment>> {
        let mut segments = Vec::new();
        while self.eat_punct("/") {
            if self.eat_punct("{") {
                let name = self.ident()?;
                if self.eat_punct("=") {
                    self.expect_punct("*")?;
                    self.expect_punct("*")?;
                    self.expect_punct("}")?;
                    segments.push(Segment::Rest(name));
                } else {
                    self.expect_punct("}")?;
                    segments.push(Segment::Var(name));
                }
            } else {
                segments.push(Segment::Literal(self.path_literal_segment()?));
            }
        }
        if segments.is_empty() {
            return self.error("expected a path pattern such as /posts/{postId}");
        }
        Ok(segments)
    }

    /// A literal segment: names, digits and `-` joined (`user-profiles`, `v1`),
    /// or the database name `(default)`.
    fn path_literal_segment(&mut self) -> Parsed<String> {
        if self.eat_punct("(") {
            let name = self.ident()?;
            self.expect_punct(")")?;
            return Ok(format!("({name})"));
        }
        let mut text = String::new();
        loop {
            match self.peek().clone() {
                Tok::Ident(name) => text.push_str(&name),
                Tok::Int(n) => text.push_str(&n.to_string()),
                Tok::Punct("-") if !text.is_empty() => text.push('-'),
                _ => break,
            }
            self.next();
        }
        if text.is_empty() {
            return self.error(format!("expected a path segment, found {}", describe(self.peek())));
        }
        Ok(text)
    }

    fn allow(&mut self) -> Parsed<Allow> {
        let pos = self.pos();
        self.next(); // allow
        let mut methods = Vec::new();
        loop {
            let method_pos = self.pos();
            let name = self.ident()?;
            match name.as_str() {
                "read" => methods.extend([Method::Get, Method::List]),
                "write" => methods.extend([Method::Create, Method::Update, Method::Delete]),
                "get" => methods.push(Method::Get),
                "list" => methods.push(Method::List),
                "create" => methods.push(Method::Create),
                "update" => methods.push(Method::Update),
                "delete" => methods.push(Method::Delete),
                other => {
                    return Err(CompileError::new(
                        method_pos,
                        format!("unknown method `{other}` (expected read, write, get, list, create, update or delete)"),
                    ))
                }
            }
            if !self.eat_punct(",") {
                break;
            }
        }
        let condition = if self.eat_punct(":") {
            if !self.is_ident("if") {
                return self.error("expected `if` after `:`");
            }
            self.next();
            self.expr()?
        } else {
            Expr { kind: ExprKind::Bool(true), pos }
        };
        self.eat_punct(";");
        Ok(Allow { methods, condition, pos })
    }

    fn function(&mut self) -> Parsed<Function> {
        let pos = self.pos();
        self.next(); // function
        let name = self.ident()?;
        self.expect_punct("(")?;
        let mut params = Vec::new();
        while !self.eat_punct(")") {
            params.push(self.ident()?);
            if !self.eat_punct(",") {
                self.expect_punct(")")?;
                break;
            }
        }
        self.expect_punct("{")?;
        let mut lets = Vec::new();
        while self.is_ident("let") {
            self.next();
            let name = self.ident()?;
            self.expect_punct("=")?;
            lets.push((name, self.expr()?));
            self.eat_punct(";");
        }
        if !self.is_ident("return") {
            return self.error("expected `return` (a function body is `let` bindings and one `return`)");
        }
        self.next();
        let body = self.expr()?;
        self.eat_punct(";");
        self.expect_punct("}")?;
        Ok(Function { name, params, lets, body, pos })
    }

    pub fn expr(&mut self) -> Parsed<Expr> {
        let condition = self.binary(0)?;
        if self.eat_punct("?") {
            let then = self.expr()?;
            self.expect_punct(":")?;
            let otherwise = self.expr()?;
            let pos = condition.pos;
            return Ok(Expr { kind: ExprKind::Ternary(Box::new(condition), Box::new(then), Box::new(otherwise)), pos });
        }
        Ok(condition)
    }

    /// Precedence climbing over `|| && == != < <= > >= in is + - * / %`.
    fn binary(&mut self, level: usize) -> Parsed<Expr> {
        const LEVELS: &[&[(&str, BinaryOp)]] = &[
            &[("||", BinaryOp::Or)],
            &[("&&", BinaryOp::And)],
            &[("==", BinaryOp::Compare(CompareOp::Eq)), ("!=", BinaryOp::Compare(CompareOp::Ne))],
            &[
                ("<=", BinaryOp::Compare(CompareOp::Le)),
                (">=", BinaryOp::Compare(CompareOp::Ge)),
                ("<", BinaryOp::Compare(CompareOp::Lt)),
                (">", BinaryOp::Compare(CompareOp::Gt)),
            ],
            &[("+", BinaryOp::Add), ("-", BinaryOp::Sub)],
            &[("*", BinaryOp::Mul), ("/", BinaryOp::Div), ("%", BinaryOp::Rem)],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        loop {
            let op = LEVELS[level].iter().find(|(p, _)| self.is_punct(p)).map(|(_, op)| *op);
            let op = match op {
                Some(op) => {
                    self.next();
                    op
                }
                None if level == 3 && self.is_ident("in") => {
                    self.next();
                    BinaryOp::In
                }
                None if level == 3 && self.is_ident("is") => {
                    self.next();
                    let type_pos = self.pos();
                    let name = self.ident()?;
                    let type_name = type_name(&name)
                        .ok_or_else(|| CompileError::new(type_pos, format!("unknown type `{name}`")))?;
                    let pos = left.pos;
                    left = Expr { kind: ExprKind::Is(Box::new(left), type_name), pos };
                    continue;
                }
                None => return Ok(left),
            };
            let right = self.binary(level + 1)?;
            let pos = left.pos;
            left = Expr { kind: ExprKind::Binary(op, Box::new(left), Box::new(right)), pos };
        }
    }

    fn unary(&mut self) -> Parsed<Expr> {
        let pos = self.pos();
        if self.eat_punct("!") {
            return Ok(Expr { kind: ExprKind::Unary(UnaryOp::Not, Box::new(self.unary()?)), pos });
        }
        if self.eat_punct("-") {
            return Ok(Expr { kind: ExprKind::Unary(UnaryOp::Neg, Box::new(self.unary()?)), pos });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Parsed<Expr> {
        let mut expr = self.primary()?;
        loop {
            let pos = self.pos();
            if self.eat_punct(".") {
                let pos = self.pos();
                let name = self.ident()?;
                if self.is_punct("(") {
                    let args = self.arguments()?;
                    expr = Expr { kind: ExprKind::MethodCall(Box::new(expr), name, args), pos };
                } else {
                    expr = Expr { kind: ExprKind::Member(Box::new(expr), name), pos };
                }
            } else if self.eat_punct("[") {
                let index = self.expr()?;
                self.expect_punct("]")?;
                expr = Expr { kind: ExprKind::Index(Box::new(expr), Box::new(index)), pos };
            } else {
                return Ok(expr);
            }
        }
    }

    fn arguments(&mut self) -> Parsed<Vec<Expr>> {
        self.expect_punct("(")?;
        let mut args = Vec::new();
        while !self.eat_punct(")") {
            args.push(self.expr()?);
            if !self.eat_punct(",") {
                self.expect_punct(")")?;
                break;
            }
        }
        Ok(args)
    }

    fn primary(&mut self) -> Parsed<Expr> {
        let pos = self.pos();
        let kind = match self.peek().clone() {
            Tok::Int(n) => {
                self.next();
                ExprKind::Int(n)
            }
            Tok::Float(f) => {
                self.next();
                ExprKind::Float(f)
            }
            Tok::Str(s) => {
                self.next();
                ExprKind::Str(s)
            }
            Tok::Ident(name) => {
                self.next();
                match name.as_str() {
                    "null" => ExprKind::Null,
                    "true" => ExprKind::Bool(true),
                    "false" => ExprKind::Bool(false),
                    _ if self.is_punct("(") => ExprKind::Call(name, self.arguments()?),
                    _ => ExprKind::Ident(name),
                }
            }
            Tok::Punct("(") => {
                self.next();
                let inner = self.expr()?;
                self.expect_punct(")")?;
                return Ok(inner);
            }
            Tok::Punct("[") => {
                self.next();
                let mut items = Vec::new();
                while !self.eat_punct("]") {
                    items.push(self.expr()?);
                    if !self.eat_punct(",") {
                        self.expect_punct("]")?;
                        break;
                    }
                }
                ExprKind::List(items)
            }
            Tok::Punct("{") => {
                self.next();
                let mut entries = Vec::new();
                while !self.eat_punct("}") {
                    let key = match self.next().tok {
                        Tok::Str(s) | Tok::Ident(s) => s,
                        other => return self.error(format!("expected a map key, found {}", describe(&other))),
                    };
                    self.expect_punct(":")?;
                    entries.push((key, self.expr()?));
                    if !self.eat_punct(",") {
                        self.expect_punct("}")?;
                        break;
                    }
                }
                ExprKind::Map(entries)
            }
            Tok::Punct("/") => ExprKind::Path(self.path_literal()?),
            other => return self.error(format!("expected an expression, found {}", describe(&other))),
        };
        Ok(Expr { kind, pos })
    }

    /// `/databases/$(database)/documents/users/$(uid)`.
    fn path_literal(&mut self) -> Parsed<Vec<PathPart>> {
        let mut parts = Vec::new();
        while self.eat_punct("/") {
            if self.eat_punct("$(") {
                let inner = self.expr()?;
                self.expect_punct(")")?;
                parts.push(PathPart::Interpolated(inner));
            } else {
                parts.push(PathPart::Literal(self.path_literal_segment()?));
            }
        }
        Ok(parts)
    }
}

fn type_name(name: &str) -> Option<TypeName> {
    Some(match name {
        "string" => TypeName::String,
        "int" => TypeName::Int,
        "float" => TypeName::Float,
        "number" => TypeName::Number,
        "bool" => TypeName::Bool,
        "map" => TypeName::Map,
        "list" => TypeName::List,
        "timestamp" => TypeName::Timestamp,
        "duration" => TypeName::Duration,
        "path" => TypeName::Path,
        "null" => TypeName::Null,
        _ => return None,
    })
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(n) => format!("`{n}`"),
        Tok::Int(n) => format!("`{n}`"),
        Tok::Float(f) => format!("`{f}`"),
        Tok::Str(s) => format!("'{s}'"),
        Tok::Punct(p) => format!("`{p}`"),
        Tok::Eof => "the end of the file".into(),
    }
}
