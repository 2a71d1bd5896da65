use std::collections::BTreeMap;

use super::*;

fn labels(pairs: &[(&'static str, &'static str)]) -> BTreeMap<&'static str, &'static str> {
    pairs.iter().copied().collect()
}

fn selects(selector: &str, pairs: &[(&'static str, &'static str)]) -> bool {
    let labels = labels(pairs);
    LabelSelector::parse(selector)
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .matches(|key| labels.get(key).copied())
}

/// The API server's matching rules, case by case (apimachinery's selector_test.go
/// holds the same table): a selector, labels, and whether they match.
#[test]
fn matches_as_the_api_server_does() {
    let app_web = &[("app", "web"), ("tier", "frontend")][..];
    type Labels<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&str, Labels<'_>, bool)] = &[
        ("", &[], true),
        ("", app_web, true),
        ("app=web", app_web, true),
        ("app==web", app_web, true),
        ("app=db", app_web, false),
        ("app!=db", app_web, true),
        ("app!=web", app_web, false),
        // `!=` and `notin` also select objects without the key.
        ("env!=prod", app_web, true),
        ("env notin (prod)", app_web, true),
        ("app in (web, db)", app_web, true),
        ("app in (db,cache)", app_web, false),
        ("app notin (web)", app_web, false),
        ("app", app_web, true),
        ("env", app_web, false),
        ("!env", app_web, true),
        ("!app", app_web, false),
        ("app=web,tier=frontend", app_web, true),
        ("app=web,tier=backend", app_web, false),
        ("app=web, !env , tier in (frontend)", app_web, true),
        // An empty value is a value.
        ("app=", app_web, false),
        ("app=", &[("app", "")], true),
        ("app in ()", &[("app", "")], true),
        ("app in (web,)", &[("app", "")], true),
        // Integer comparisons; a label that is not an integer never matches.
        ("replicas>2", &[("replicas", "3")], true),
        ("replicas>2", &[("replicas", "2")], false),
        ("replicas<2", &[("replicas", "1")], true),
        ("replicas<2", &[("replicas", "x")], false),
        ("replicas<2", &[], false),
        // Keywords are plain words where a value stands.
        ("mode in (in, notin)", &[("mode", "notin")], true),
        ("example.com/team=a", &[("example.com/team", "a")], true),
        // A prefix's parts are not limited to 63 characters, only the whole to 253.
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.io/x",
            &[(
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.io/x",
                "",
            )],
            true,
        ),
    ];
    for (selector, labels, expected) in cases {
        assert_eq!(
            selects(selector, labels),
            *expected,
            "{selector:?} on {labels:?}"
        );
    }
}

/// Selectors the API server refuses (400), with the reason it gives.
#[test]
fn refuses_what_the_api_server_refuses() {
    let cases = [
        ("app=web,", "found '', expected: identifier after ','"),
        (
            "app web",
            "found 'web', expected: !=, <, =, ==, >, in, notin",
        ),
        (
            "=web",
            "found '=', expected: !, identifier, or 'end of string'",
        ),
        ("app in web", "found 'web', expected: '('"),
        ("app in (web", "found '', expected: ',' or ')'"),
        ("app=(web)", "found '(', expected: identifier"),
        ("!app=web", "found '=', expected: ',' or 'end of string'"),
        ("replicas>two", "the value must be an integer"),
        ("-app=web", "invalid label key \"-app\""),
        ("Example.com/app=web", "invalid label key"),
        ("app=we b", "found 'b', expected: ',' or 'end of string'"),
        ("app=-web", "invalid label value \"-web\""),
        (
            "app=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "invalid label value",
        ),
    ];
    for (selector, reason) in cases {
        let err = LabelSelector::parse(selector)
            .expect_err(selector)
            .to_string();
        assert!(err.contains(reason), "{selector:?}: {err}");
    }
}

#[test]
fn white_space_around_tokens_is_ignored() {
    assert_eq!(
        LabelSelector::parse("  app = web ,  tier notin ( a , b )  ").unwrap(),
        LabelSelector::parse("app=web,tier notin (a,b)").unwrap()
    );
}
