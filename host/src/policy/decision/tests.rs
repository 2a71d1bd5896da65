//! Each of Kubewarden's decision steps, table-tested on the responses it meets.

use super::*;

fn allowed() -> AdmissionResponse {
    AdmissionResponse {
        uid: "u".into(),
        allowed: true,
        ..AdmissionResponse::default()
    }
}

fn mutated() -> AdmissionResponse {
    AdmissionResponse {
        patch: Some("W10=".into()),
        patch_type: Some("JSONPatch".into()),
        ..allowed()
    }
}

fn rejected(message: Option<&str>) -> AdmissionResponse {
    AdmissionResponse {
        uid: "u".into(),
        allowed: false,
        status: Some(Status {
            code: Some(403),
            message: message.map(str::to_owned),
            details: None,
        }),
        ..AdmissionResponse::default()
    }
}

#[test]
fn monitor_mode_allows_whatever_was_decided() {
    for response in [allowed(), mutated(), rejected(Some("no"))] {
        let mut response = response;
        allow_in_monitor_mode(&mut response);
        assert!(response.allowed);
        assert_eq!(response.status, None);
        assert_eq!((response.patch, response.patch_type), (None, None));
    }
}

#[test]
fn a_mutation_is_a_rejection_unless_the_policy_may_mutate() {
    struct Case {
        response: AdmissionResponse,
        may_mutate: bool,
        allowed: bool,
        patched: bool,
        message: Option<&'static str>,
    }
    let cases = [
        Case {
            response: mutated(),
            may_mutate: true,
            allowed: true,
            patched: true,
            message: None,
        },
        Case {
            response: mutated(),
            may_mutate: false,
            allowed: false,
            patched: false,
            message: Some("attempted to mutate the request"),
        },
        Case {
            response: allowed(),
            may_mutate: false,
            allowed: true,
            patched: false,
            message: None,
        },
        Case {
            response: rejected(Some("no")),
            may_mutate: false,
            allowed: false,
            patched: false,
            message: Some("no"),
        },
    ];
    for case in cases {
        let before = format!("{:?}", case.response);
        let after = forbid_unpermitted_mutation("p", case.may_mutate, case.response);
        assert_eq!(after.allowed, case.allowed, "{before}");
        assert_eq!(after.patch.is_some(), case.patched, "{before}");
        assert_eq!(after.uid, "u");
        let message = after.status.as_ref().and_then(|s| s.message.as_deref());
        match case.message {
            Some(expected) => {
                assert!(
                    message.is_some_and(|m| m.contains(expected)),
                    "{before}: {message:?}"
                )
            }
            None => assert_eq!(message, None, "{before}"),
        }
    }
}

#[test]
fn a_custom_message_replaces_a_rejections_and_keeps_it_as_the_first_cause() {
    struct Case {
        response: AdmissionResponse,
        custom: Option<&'static str>,
        message: Option<&'static str>,
        causes: Vec<Option<&'static str>>,
    }
    let cases = [
        Case {
            response: rejected(Some("no")),
            custom: Some("ask ops"),
            message: Some("ask ops"),
            causes: vec![Some("no")],
        },
        Case {
            response: rejected(None),
            custom: Some("ask ops"),
            message: Some("ask ops"),
            causes: vec![None],
        },
        Case {
            response: rejected(Some("no")),
            custom: None,
            message: Some("no"),
            causes: vec![],
        },
        Case {
            response: allowed(),
            custom: Some("ask ops"),
            message: None,
            causes: vec![],
        },
    ];
    for mut case in cases {
        let before = format!("{:?}", case.response);
        apply_custom_message(case.custom, &mut case.response);
        let status = case.response.status.as_ref();
        assert_eq!(
            status.and_then(|s| s.message.as_deref()),
            case.message,
            "{before}"
        );
        let causes: Vec<Option<&str>> = status
            .and_then(|s| s.details.as_ref())
            .map(|d| d.causes.iter().map(|c| c.message.as_deref()).collect())
            .unwrap_or_default();
        assert_eq!(causes, case.causes, "{before}");
    }
}
