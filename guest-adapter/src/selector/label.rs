//! Label selectors: the grammar of `labels.Parse` in k8s.io/apimachinery, equality- and
//! set-based (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, and the integer `>`, `<`),
//! with its key and value validation and its matching rules.
//!
//! Over 400 lines on purpose: one grammar, kept whole so it reads side by side with
//! apimachinery's `labels/selector.go`, which it follows.

use std::collections::BTreeSet;

use super::SelectorError;

/// A parsed label selector: every requirement must hold. The empty selector matches
/// every object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

impl LabelSelector {
    /// Parses a selector as the API server's `labelSelector` parameter.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        Parser::new(text).parse().map_err(SelectorError)
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with these labels is selected. `label` looks one up by key.
    pub fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|requirement| {
            let value = label(&requirement.key);
            match &requirement.operator {
                Operator::In(values) => value.is_some_and(|v| values.contains(v)),
                Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
                Operator::GreaterThan(bound) => integer(value).is_some_and(|v| v > *bound),
                Operator::LessThan(bound) => integer(value).is_some_and(|v| v < *bound),
            }
        })
    }
}

fn integer(value: Option<&str>) -> Option<i64> {
    value.and_then(|v| v.parse().ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    End,
    Identifier(&'a str),
    In,
    NotIn,
    Not,
    NotEquals,
    Equals,
    DoubleEquals,
    GreaterThan,
    LessThan,
    OpenParen,
    CloseParen,
    Comma,
}

impl Token<'_> {
    fn text(&self) -> &str {
        match self {
            Token::End => "",
            Token::Identifier(text) => text,
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Not => "!",
            Token::NotEquals => "!=",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::OpenParen => "(",
            Token::CloseParen => ")",
            Token::Comma => ",",
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// The lexer: special symbols take the longest match (`!=`, `==`); anything else up to a
/// special symbol or white space is an identifier, or the keyword `in`/`notin`.
fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = text.trim_start_matches(is_space);
    while let Some(c) = rest.chars().next() {
        let (token, len) = if is_special(c) {
            match (c, rest[1..].chars().next()) {
                ('!', Some('=')) => (Token::NotEquals, 2),
                ('=', Some('=')) => (Token::DoubleEquals, 2),
                ('!', _) => (Token::Not, 1),
                ('=', _) => (Token::Equals, 1),
                ('>', _) => (Token::GreaterThan, 1),
                ('<', _) => (Token::LessThan, 1),
                ('(', _) => (Token::OpenParen, 1),
                (')', _) => (Token::CloseParen, 1),
                _ => (Token::Comma, 1),
            }
        } else {
            let len = rest
                .find(|c: char| is_special(c) || is_space(c))
                .unwrap_or(rest.len());
            let token = match &rest[..len] {
                "in" => Token::In,
                "notin" => Token::NotIn,
                word => Token::Identifier(word),
            };
            (token, len)
        };
        tokens.push(token);
        rest = rest[len..].trim_start_matches(is_space);
    }
    tokens
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    position: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            tokens: tokens(text),
            position: 0,
        }
    }

    /// The next token where a value may stand: there `in` and `notin` are plain words.
    fn peek_value(&self) -> Token<'a> {
        match self
            .tokens
            .get(self.position)
            .copied()
            .unwrap_or(Token::End)
        {
            Token::In => Token::Identifier("in"),
            Token::NotIn => Token::Identifier("notin"),
            token => token,
        }
    }

    fn next_value(&mut self) -> Token<'a> {
        let token = self.peek_value();
        self.position += 1;
        token
    }

    fn next_operator(&mut self) -> Token<'a> {
        let token = self
            .tokens
            .get(self.position)
            .copied()
            .unwrap_or(Token::End);
        self.position += 1;
        token
    }

    fn parse(mut self) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        loop {
            match self.peek_value() {
                Token::Identifier(_) | Token::Not => {
                    requirements.push(self.requirement()?);
                    match self.next_value() {
                        Token::End => break,
                        Token::Comma => match self.peek_value() {
                            Token::Identifier(_) | Token::Not => {}
                            other => {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    other.text()
                                ));
                            }
                        },
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.text()
                            ));
                        }
                    }
                }
                Token::End => break,
                other => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.text()
                    ));
                }
            }
        }
        Ok(LabelSelector { requirements })
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut token = self.next_value();
        let negated = token == Token::Not;
        if negated {
            token = self.next_value();
        }
        let Token::Identifier(key) = token else {
            return Err(format!("found '{}', expected: identifier", token.text()));
        };
        validate_key(key)?;
        let key = key.to_owned();
        let alone = matches!(self.peek_value(), Token::End | Token::Comma);
        if negated {
            // `!key` followed by anything but the end is refused by the caller.
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
            });
        }
        if alone {
            return Ok(Requirement {
                key,
                operator: Operator::Exists,
            });
        }
        let operator = match self.next_operator() {
            Token::In => Operator::In(self.value_set("in")?),
            Token::NotIn => Operator::NotIn(self.value_set("notin")?),
            Token::Equals | Token::DoubleEquals => Operator::In(self.exact_value()?),
            Token::NotEquals => Operator::NotIn(self.exact_value()?),
            Token::GreaterThan => Operator::GreaterThan(self.integer_value()?),
            Token::LessThan => Operator::LessThan(self.integer_value()?),
            other => {
                return Err(format!(
                    "found '{}', expected: !=, <, =, ==, >, in, notin",
                    other.text()
                ));
            }
        };
        Ok(Requirement { key, operator })
    }

    /// The value after `=`, `==` or `!=`: one word, or nothing (the empty value).
    fn exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        if matches!(self.peek_value(), Token::End | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        match self.next_value() {
            Token::Identifier(value) => {
                validate_value(value)?;
                Ok(BTreeSet::from([value.to_owned()]))
            }
            other => Err(format!("found '{}', expected: identifier", other.text())),
        }
    }

    fn integer_value(&mut self) -> Result<i64, String> {
        match self.next_value() {
            Token::Identifier(value) => {
                // Validated as a label value first, as apimachinery does (`-1` is refused).
                validate_value(value)?;
                value.parse().map_err(|_| {
                    format!("for 'Gt', 'Lt' operators, the value must be an integer, not '{value}'")
                })
            }
            other => Err(format!("found '{}', expected: identifier", other.text())),
        }
    }

    /// `(a, b, ...)`; as in apimachinery, empty places (`()`, `(a,)`) stand for the
    /// empty value.
    fn value_set(&mut self, operator: &str) -> Result<BTreeSet<String>, String> {
        let open = self.next_value();
        if open != Token::OpenParen {
            return Err(format!("found '{}', expected: '('", open.text()));
        }
        let mut values = BTreeSet::new();
        if self.peek_value() == Token::CloseParen {
            self.position += 1;
            values.insert(String::new());
            return Ok(values);
        }
        loop {
            match self.next_value() {
                Token::Identifier(value) => {
                    validate_value(value)?;
                    values.insert(value.to_owned());
                    match self.peek_value() {
                        Token::Comma => {
                            self.position += 1;
                            if self.peek_value() == Token::CloseParen {
                                values.insert(String::new());
                            }
                        }
                        Token::CloseParen => {}
                        other => {
                            return Err(format!("found '{}', expected: ',' or ')'", other.text()));
                        }
                    }
                }
                Token::Comma => {
                    values.insert(String::new());
                }
                Token::CloseParen if !values.is_empty() => return Ok(values),
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        other.text()
                    ));
                }
            }
            if self.peek_value() == Token::CloseParen {
                self.position += 1;
                return Ok(values);
            }
            if values.is_empty() {
                return Err(format!(
                    "for '{operator}' operators, values set can't be empty"
                ));
            }
        }
    }
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63
/// characters (`[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`).
fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let invalid = |why: &str| Err(format!("invalid label key \"{key}\": {why}"));
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return invalid("the prefix must be a DNS subdomain (lowercase alphanumerics, '-' or '.')");
    }
    if name.is_empty() || !is_label_name(name) {
        return invalid(
            "a name must be at most 63 characters, alphanumerics, '-', '_' or '.', \
             starting and ending with an alphanumeric",
        );
    }
    Ok(())
}

fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value \"{value}\": must be at most 63 characters, alphanumerics, \
             '-', '_' or '.', starting and ending with an alphanumeric"
        ))
    }
}

fn is_label_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// apimachinery's `IsDNS1123Subdomain`: at most 253 characters in all (no limit per
/// dot-separated part).
fn is_dns_subdomain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests;
