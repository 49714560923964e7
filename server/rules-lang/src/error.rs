//! The language's errors: compile errors with the position they refer to
//! (`line:col: message`), and evaluation errors, which are values (`Eval`).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A rules file that cannot be loaded: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub pos: Pos,
    pub message: String,
}

impl CompileError {
    pub fn new(pos: Pos, message: impl Into<String>) -> CompileError {
        CompileError { pos, message: message.into() }
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

impl std::error::Error for CompileError {}

/// Why an expression has no value.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// A runtime error (missing field, wrong type, …): denies.
    Error(String),
    /// The document at this path must be supplied before evaluation can finish.
    NeedDocument(String),
}

/// The result of evaluating an expression.
pub type Eval = Result<crate::value::Value, EvalError>;

/// The result of checked integer arithmetic, or a rule error (never a panic).
pub(crate) fn checked(result: Option<i64>) -> Result<i64, EvalError> {
    result.ok_or_else(|| EvalError::Error("integer overflow".into()))
}
