//! The syntax tree of a rules file.

use crate::error::Pos;

/// A whole rules file (or several files merged).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ruleset {
    /// `rules_version`: 1 when absent (then `{x=**}` matches one or more segments).
    pub version: u8,
    pub functions: Vec<Function>,
    pub matches: Vec<Match>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Literal(String),
    /// `{name}`: exactly one segment.
    Var(String),
    /// `{name=**}`: the rest of the path.
    Rest(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub pattern: Vec<Segment>,
    pub pos: Pos,
    pub allows: Vec<Allow>,
    pub functions: Vec<Function>,
    pub matches: Vec<Match>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    List,
    Create,
    Update,
    Delete,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::List => "list",
            Method::Create => "create",
            Method::Update => "update",
            Method::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Allow {
    pub methods: Vec<Method>,
    pub condition: Expr,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub params: Vec<String>,
    pub lets: Vec<(String, Expr)>,
    pub body: Expr,
    pub pos: Pos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Compare(CompareOp),
    In,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// `==`, `!=`, `<`, `<=`, `>`, `>=`: in expressions, and in the conditions
/// pushed down into queries (`pushdown::Condition::Compare`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    /// The operator with its operands swapped (`a < b` is `b > a`).
    pub fn flipped(self) -> CompareOp {
        match self {
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::Le => CompareOp::Ge,
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::Ge => CompareOp::Le,
            same => same,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeName {
    String,
    Int,
    Float,
    Number,
    Bool,
    Map,
    List,
    Timestamp,
    Duration,
    Path,
    Null,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathPart {
    Literal(String),
    Interpolated(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Expr>),
    Map(Vec<(String, Expr)>),
    Path(Vec<PathPart>),
    Ident(String),
    Member(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    /// A call of a rule function or a global (`get`, `exists`, …).
    Call(String, Vec<Expr>),
    /// `receiver.name(args)`.
    MethodCall(Box<Expr>, String, Vec<Expr>),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    Is(Box<Expr>, TypeName),
}
