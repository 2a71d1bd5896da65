//! Field selectors: the grammar of `fields.ParseSelector` in k8s.io/apimachinery (terms
//! `field=value`, `field==value`, `field!=value`, joined by `,`; `\` escapes `\`, `,`
//! and `=` in values), over the fields every kind supports: `metadata.name` and
//! `metadata.namespace`. Kind-specific fields (a Pod's `spec.nodeName`) are refused as
//! the API server refuses an unsupported one.

use super::SelectorError;

/// A parsed field selector: every term must hold. The empty selector matches every
/// object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    field: Field,
    value: String,
    equal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

/// The fields of one object a field selector can read.
#[derive(Debug, Clone, Copy)]
pub struct ObjectFields<'a> {
    /// Empty for a cluster-scoped object, as the API server sees it.
    pub namespace: &'a str,
    pub name: &'a str,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in split_unescaped(text, ',') {
            if part.is_empty() {
                continue;
            }
            let (field, operator, value) = split_term(part).ok_or_else(|| {
                SelectorError(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                ))
            })?;
            let field = match field {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => {
                    return Err(SelectorError(format!(
                        "field label not supported: {other} (this server selects on \
                         metadata.name and metadata.namespace)"
                    )));
                }
            };
            terms.push(Term {
                field,
                value: unescape(value)?,
                equal: operator != "!=",
            });
        }
        Ok(Self { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, object: ObjectFields<'_>) -> bool {
        self.terms.iter().all(|term| {
            let actual = match term.field {
                Field::Name => object.name,
                Field::Namespace => object.namespace,
            };
            (actual == term.value) == term.equal
        })
    }

    /// The one namespace the selector pins (`metadata.namespace=x`), if any: a list can
    /// then read that namespace's objects only.
    pub fn namespace(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|term| term.field == Field::Namespace && term.equal)
            .map(|term| term.value.as_str())
    }
}

/// Splits on `separator` where it is not escaped by a backslash.
fn split_unescaped(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        let mut escaped = false;
        for (i, c) in current.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == separator && !escaped => {
                    rest = Some(&current[i + 1..]);
                    return Some(&current[..i]);
                }
                _ => escaped = false,
            }
        }
        rest = None;
        Some(current)
    })
}

/// The first operator in the term splits it; the field itself has no escapes.
fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    (0..term.len())
        .filter(|&i| term.is_char_boundary(i))
        .find_map(|i| {
            ["!=", "==", "="]
                .into_iter()
                .find(|op| term[i..].starts_with(op))
                .map(|op| (&term[..i], op, &term[i + op.len()..]))
        })
}

fn unescape(value: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(value.len());
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError(format!("invalid escape sequence: \\{c}")));
            }
            out.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => {
                return Err(SelectorError(format!(
                    "invalid field selector: unescaped {c} in value '{value}'"
                )));
            }
            c => out.push(c),
        }
    }
    if escaped {
        return Err(SelectorError("invalid escape sequence: \\".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_as_the_api_server_does() {
        let web = ObjectFields {
            namespace: "shop",
            name: "web",
        };
        let cluster_scoped = ObjectFields {
            namespace: "",
            name: "shop",
        };
        let cases: &[(&str, ObjectFields<'_>, bool)] = &[
            ("", web, true),
            ("metadata.name=web", web, true),
            ("metadata.name==web", web, true),
            ("metadata.name!=web", web, false),
            ("metadata.name=db", web, false),
            ("metadata.namespace=shop", web, true),
            ("metadata.namespace!=shop,metadata.name=web", web, false),
            ("metadata.namespace=shop,metadata.name!=db", web, true),
            // A cluster-scoped object has the empty namespace.
            ("metadata.namespace=", cluster_scoped, true),
            ("metadata.namespace=shop", cluster_scoped, false),
            // Empty terms are skipped.
            ("metadata.name=web,", web, true),
            // Escaped separators are part of the value.
            (
                r"metadata.name=a\,b",
                ObjectFields {
                    namespace: "",
                    name: "a,b",
                },
                true,
            ),
        ];
        for (selector, object, expected) in cases {
            let parsed =
                FieldSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
            assert_eq!(
                parsed.matches(*object),
                *expected,
                "{selector:?} on {object:?}"
            );
        }
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        let cases = [
            ("metadata.name", "can't understand 'metadata.name'"),
            (
                "spec.nodeName=a",
                "field label not supported: spec.nodeName",
            ),
            // The field is not trimmed: the API server refuses it the same way.
            (
                "metadata.name =a",
                "field label not supported: metadata.name ",
            ),
            (r"metadata.name=a\b", "invalid escape sequence"),
            ("metadata.name=a=b", "unescaped ="),
        ];
        for (selector, reason) in cases {
            let err = FieldSelector::parse(selector)
                .expect_err(selector)
                .to_string();
            assert!(err.contains(reason), "{selector:?}: {err}");
        }
    }

    #[test]
    fn knows_the_namespace_it_pins() {
        let pinned = FieldSelector::parse("metadata.name!=x,metadata.namespace=shop").unwrap();
        assert_eq!(pinned.namespace(), Some("shop"));
        let open = FieldSelector::parse("metadata.namespace!=shop").unwrap();
        assert_eq!(open.namespace(), None);
    }
}
