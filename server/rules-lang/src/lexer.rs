//! Turns rules source text into tokens with line and column positions.

use crate::error::{CompileError, Pos};

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    /// A path segment after `/` in a path literal or match pattern, raw text.
    Punct(&'static str),
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

const PUNCTS: &[&str] = &[
    "&&", "||", "==", "!=", "<=", ">=", "$(", "=", "<", ">", "!", "+", "-", "*", "/", "%", "(", ")", "{", "}", "[",
    "]", ",", ";", ":", ".", "?",
];

/// Walks the source one character at a time, tracking line and column.
struct Cursor {
    chars: Vec<char>,
    i: usize,
    line: u32,
    col: u32,
}

impl Cursor {
    fn peek(&self, offset: usize) -> Option<char> {
        self.chars.get(self.i + offset).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn pos(&self) -> Pos {
        Pos { line: self.line, col: self.col }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let mut text = String::new();
        while let Some(c) = self.peek(0).filter(|c| keep(*c)) {
            text.push(c);
            self.bump();
        }
        text
    }
}

pub fn tokenize(source: &str) -> Result<Vec<Token>, CompileError> {
    let mut cur = Cursor { chars: source.chars().collect(), i: 0, line: 1, col: 1 };
    let mut tokens = Vec::new();
    while let Some(c) = cur.peek(0) {
        let pos = cur.pos();
        if c.is_whitespace() {
            cur.bump();
        } else if c == '/' && cur.peek(1) == Some('/') {
            cur.take_while(|c| c != '\n');
        } else if c == '/' && cur.peek(1) == Some('*') {
            cur.bump();
            cur.bump();
            while !(cur.peek(0) == Some('*') && cur.peek(1) == Some('/')) {
                if cur.bump().is_none() {
                    return Err(CompileError::new(pos, "unterminated comment"));
                }
            }
            cur.bump();
            cur.bump();
        } else if c.is_ascii_alphabetic() || c == '_' {
            let name = cur.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
            tokens.push(Token { tok: Tok::Ident(name), pos });
        } else if c.is_ascii_digit() {
            tokens.push(Token { tok: number(&mut cur, pos)?, pos });
        } else if c == '\'' || c == '"' {
            tokens.push(Token { tok: Tok::Str(string(&mut cur, pos)?), pos });
        } else {
            let rest: String = [Some(c), cur.peek(1)].iter().flatten().collect();
            let Some(punct) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
                return Err(CompileError::new(pos, format!("unexpected character {c:?}")));
            };
            for _ in 0..punct.len() {
                cur.bump();
            }
            tokens.push(Token { tok: Tok::Punct(punct), pos });
        }
    }
    tokens.push(Token { tok: Tok::Eof, pos: cur.pos() });
    Ok(tokens)
}

fn number(cur: &mut Cursor, pos: Pos) -> Result<Tok, CompileError> {
    let mut text = cur.take_while(|c| c.is_ascii_digit());
    if cur.peek(0) == Some('.') && cur.peek(1).is_some_and(|d| d.is_ascii_digit()) {
        cur.bump();
        text.push('.');
        text.push_str(&cur.take_while(|c| c.is_ascii_digit()));
        return text.parse().map(Tok::Float).map_err(|_| CompileError::new(pos, "invalid number"));
    }
    text.parse().map(Tok::Int).map_err(|_| CompileError::new(pos, "integer out of range"))
}

fn string(cur: &mut Cursor, pos: Pos) -> Result<String, CompileError> {
    let quote = cur.bump();
    let mut text = String::new();
    loop {
        match cur.bump() {
            None | Some('\n') => return Err(CompileError::new(pos, "unterminated string")),
            Some('\\') => match cur.bump() {
                None => return Err(CompileError::new(pos, "unterminated string")),
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some('r') => text.push('\r'),
                Some(other) => text.push(other),
            },
            Some(c) if Some(c) == quote => return Ok(text),
            Some(c) => text.push(c),
        }
    }
}
