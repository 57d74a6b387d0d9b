//! The string grammar of label selectors.

use super::{Operator, Requirement, Selector};
use crate::validation::names::{label_value_errors, qualified_name_errors};

/// A selector string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

fn is_special(c: char) -> bool {
    c.is_whitespace() || "!=<>(),".contains(c)
}

fn lex(s: &str) -> Vec<Tok> {
    let mut out = vec![];
    let mut it = s.chars().peekable();
    while let Some(&c) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        let tok = match c {
            '!' => {
                it.next();
                if it.peek() == Some(&'=') {
                    it.next();
                    Tok::NotEq
                } else {
                    Tok::Not
                }
            }
            '=' => {
                it.next();
                if it.peek() == Some(&'=') {
                    it.next();
                    Tok::DoubleEq
                } else {
                    Tok::Eq
                }
            }
            '>' | '<' | '(' | ')' | ',' => {
                it.next();
                match c {
                    '>' => Tok::Gt,
                    '<' => Tok::Lt,
                    '(' => Tok::Open,
                    ')' => Tok::Close,
                    _ => Tok::Comma,
                }
            }
            _ => {
                let mut id = String::new();
                while let Some(&c) = it.peek() {
                    if is_special(c) {
                        break;
                    }
                    id.push(c);
                    it.next();
                }
                Tok::Ident(id)
            }
        };
        out.push(tok);
    }
    out
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            Some(Tok::Ident(k)) => {
                if let Some(e) = qualified_name_errors(&k).into_iter().next() {
                    return Err(SelectorError(format!("invalid label key {k:?}: {e}")));
                }
                Ok(k)
            }
            other => Err(SelectorError(format!(
                "expected a label key, found {}",
                show(other.as_ref())
            ))),
        }
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        // `key=` (empty value) is allowed: the next token ends the requirement.
        let v = match self.peek() {
            Some(Tok::Ident(_)) => match self.next() {
                Some(Tok::Ident(v)) => v,
                _ => String::new(),
            },
            None | Some(Tok::Comma) | Some(Tok::Close) => String::new(),
            other => {
                return Err(SelectorError(format!(
                    "expected a value, found {}",
                    show(other)
                )))
            }
        };
        if let Some(e) = label_value_errors(&v).into_iter().next() {
            return Err(SelectorError(format!("invalid label value {v:?}: {e}")));
        }
        Ok(v)
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        if self.next() != Some(Tok::Open) {
            return Err(SelectorError("expected '(' after 'in'/'notin'".into()));
        }
        let mut values = vec![];
        loop {
            values.push(self.value()?);
            match self.next() {
                Some(Tok::Comma) => continue,
                Some(Tok::Close) => break,
                other => {
                    return Err(SelectorError(format!(
                        "expected ',' or ')', found {}",
                        show(other.as_ref())
                    )))
                }
            }
        }
        if values.len() == 1 && values[0].is_empty() {
            return Err(SelectorError(
                "for 'in', 'notin' operators, values set can't be empty".into(),
            ));
        }
        Ok(values)
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(&Tok::Not) {
            self.next();
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Operator::DoesNotExist,
                values: vec![],
                single: false,
            });
        }
        let key = self.key()?;
        let (op, values, single) = match self.peek().cloned() {
            None | Some(Tok::Comma) => (Operator::Exists, vec![], false),
            Some(Tok::Eq) | Some(Tok::DoubleEq) => {
                self.next();
                (Operator::In, vec![self.value()?], true)
            }
            Some(Tok::NotEq) => {
                self.next();
                (Operator::NotIn, vec![self.value()?], true)
            }
            Some(Tok::Gt) | Some(Tok::Lt) => {
                let op = if self.next() == Some(Tok::Gt) {
                    Operator::GreaterThan
                } else {
                    Operator::LessThan
                };
                let v = self.value()?;
                if v.parse::<i64>().is_err() {
                    return Err(SelectorError(format!(
                        "for 'Gt', 'Lt' operators, the value must be an integer, not {v:?}"
                    )));
                }
                (op, vec![v], false)
            }
            Some(Tok::Ident(w)) if w == "in" || w == "notin" => {
                self.next();
                let op = if w == "in" {
                    Operator::In
                } else {
                    Operator::NotIn
                };
                (op, self.set()?, false)
            }
            other => {
                return Err(SelectorError(format!(
                    "found {}, expected: in, notin, =, ==, !=, gt, lt",
                    show(other.as_ref())
                )))
            }
        };
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Requirement {
            key,
            op,
            values,
            single,
        })
    }
}

fn show(t: Option<&Tok>) -> String {
    match t {
        None => "end of string".into(),
        Some(Tok::Ident(s)) => format!("'{s}'"),
        Some(t) => format!(
            "'{}'",
            match t {
                Tok::Not => "!",
                Tok::Eq => "=",
                Tok::DoubleEq => "==",
                Tok::NotEq => "!=",
                Tok::Gt => ">",
                Tok::Lt => "<",
                Tok::Open => "(",
                Tok::Close => ")",
                _ => ",",
            }
        ),
    }
}

pub(super) fn parse(text: &str) -> Result<Selector, SelectorError> {
    let mut p = Parser {
        toks: lex(text),
        pos: 0,
    };
    let mut reqs = vec![];
    if p.peek().is_none() {
        return Ok(Selector::everything());
    }
    loop {
        reqs.push(p.requirement()?);
        match p.next() {
            None => break,
            Some(Tok::Comma) => {
                if p.peek().is_none() {
                    return Err(SelectorError(
                        "found end of string, expected a requirement after ','".into(),
                    ));
                }
            }
            other => {
                return Err(SelectorError(format!(
                    "found {}, expected: ',' or end of string",
                    show(other.as_ref())
                )))
            }
        }
    }
    Ok(Selector::from_requirements(reqs))
}
