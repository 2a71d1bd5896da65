use std::sync::Arc;

use super::*;
use crate::session::tests::{FakeCache, namespaces, services, session};

fn call(session: &mut GuestSession, operation: &str, payload: &str) -> Result<String, String> {
    session
        .wapc_host_call("kubewarden", "kubernetes", operation, payload.as_bytes())
        .map(|answer| answer.to_text())
        .map_err(|e| e.to_string())
}

fn granted_session() -> GuestSession {
    let cache = FakeCache::with(vec![namespaces(&["shop"]), services()]);
    session(
        &[ResourceKind::namespaces(), ResourceKind::services()],
        cache,
    )
}

#[test]
fn seed_calls_route_to_cluster_lists() {
    assert_eq!(
        route("kubernetes", "ingresses", "list", b""),
        Ok(WapcRequest::Cluster(ClusterQuery::List(ListQuery::all(
            ResourceKind::ingresses()
        ))))
    );
    assert_eq!(
        route("kubernetes", "pods", "list", b""),
        Err(RouteError::Unknown)
    );
}

#[test]
fn kubewarden_payloads_become_queries() {
    // What kubewarden-policy-sdk 0.17 sends, `field_masks: null` included.
    let by_namespace = route(
        "kubewarden",
        "kubernetes",
        "list_resources_by_namespace",
        br#"{"api_version":"v1","kind":"Service","namespace":"shop","label_selector":"app=web","field_selector":null,"field_masks":null}"#,
    )
    .unwrap();
    let WapcRequest::Cluster(ClusterQuery::List(query)) = by_namespace else {
        panic!("{by_namespace:?}");
    };
    assert_eq!(query.namespace.as_deref(), Some("shop"));
    assert!(!query.labels.is_empty());

    let get = route(
        "kubewarden",
        "kubernetes",
        "get_resource",
        br#"{"api_version":"v1","kind":"Namespace","name":"shop","namespace":null,"disable_cache":true,"field_masks":["metadata.labels"]}"#,
    )
    .unwrap();
    let WapcRequest::Cluster(ClusterQuery::Get(query)) = get else {
        panic!("{get:?}");
    };
    assert_eq!((query.namespace, query.name.as_str()), (None, "shop"));
    assert!(query.mask.is_some());
}

#[test]
fn granted_calls_are_answered() {
    let mut session = granted_session();
    let namespace = call(
        &mut session,
        "get_resource",
        r#"{"api_version":"v1","kind":"Namespace","name":"shop","disable_cache":false}"#,
    )
    .unwrap();
    assert!(namespace.contains(r#""name":"shop""#), "{namespace}");
    let services = call(
        &mut session,
        "list_resources_all",
        r#"{"api_version":"v1","kind":"Service","label_selector":"tier=backend"}"#,
    )
    .unwrap();
    assert!(
        services.contains("\"db\"") && services.contains("\"api\""),
        "{services}"
    );
    assert!(!services.contains("\"web\""), "{services}");
    let old_go_name = call(
        &mut session,
        "list_all_resources",
        r#"{"api_version":"v1","kind":"Namespace"}"#,
    );
    assert!(old_go_name.unwrap().contains("shop"));
}

/// Every malformed payload is refused by name, before anything is looked up.
#[test]
fn malformed_payloads_name_what_is_wrong() {
    let mut session = granted_session();
    let cases = [
        (
            "get_resource",
            "not json",
            "malformed payload for kubewarden/kubernetes/get_resource: expected ident",
        ),
        (
            "get_resource",
            r#"{"api_version":"v1","name":"x"}"#,
            "missing field `kind`",
        ),
        (
            "list_resources_all",
            r#"{"kind":"Service"}"#,
            "missing field `api_version`",
        ),
        (
            "list_resources_by_namespace",
            r#"{"api_version":"v1","kind":"Service"}"#,
            "missing field `namespace`",
        ),
        (
            "list_resources_all",
            r#"{"api_version":"v1","kind":""}"#,
            "policy 'p1': kind: must not be empty",
        ),
        (
            "list_resources_all",
            r#"{"api_version":"v1","kind":"Service","label_selector":"app in web"}"#,
            "policy 'p1': label_selector: found 'web', expected: '('",
        ),
        (
            "list_resources_all",
            r#"{"api_version":"v1","kind":"Service","field_selector":"spec.type=A"}"#,
            "policy 'p1': field_selector: field label not supported: spec.type",
        ),
        (
            "get_resource",
            r#"{"api_version":"v1","kind":"Namespace","name":""}"#,
            "name: must not be empty",
        ),
        (
            "can_i",
            r#"{"disable_cache":false}"#,
            "missing field `subject_access_review`",
        ),
        (
            "delete_resource",
            "{}",
            "unknown host call kubewarden/kubernetes/delete_resource",
        ),
    ];
    for (operation, payload, message) in cases {
        let err = call(&mut session, operation, payload).unwrap_err();
        assert!(err.contains(message), "{operation} {payload}: {err}");
    }
}

#[test]
fn every_call_is_checked_against_the_grants() {
    let cache = FakeCache::with(vec![namespaces(&["shop"]), services()]);
    let mut session = session(&[ResourceKind::namespaces()], cache);
    for (operation, payload) in [
        (
            "list_resources_all",
            r#"{"api_version":"v1","kind":"Service"}"#,
        ),
        (
            "list_resources_by_namespace",
            r#"{"api_version":"v1","kind":"Service","namespace":"shop"}"#,
        ),
        (
            "get_resource",
            r#"{"api_version":"v1","kind":"Service","namespace":"shop","name":"web"}"#,
        ),
    ] {
        let err = call(&mut session, operation, payload).unwrap_err();
        assert!(
            err.contains("not allowed to read v1/Service"),
            "{operation}: {err}"
        );
    }
    let err = session
        .wapc_host_call("kubernetes", "services", "list", b"")
        .unwrap_err();
    assert!(matches!(err, HostCallError::NotAllowed { .. }));
    let review = r#"{"subject_access_review":{"user":"u","groups":null,"resource_attributes":{"verb":"get","resource":"pods"}},"disable_cache":false}"#;
    let err = call(&mut session, "can_i", review).unwrap_err();
    assert!(err.contains("not allowed to ask can_i"), "{err}");
}

#[test]
fn unknown_calls_get_an_error_naming_the_call_and_policy() {
    let mut session = session(&[], Arc::default());
    let err = session
        .wapc_host_call("kubewarden", "oci", "v1/manifest_digest", b"{}")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "policy 'p1': unknown host call kubewarden/oci/v1/manifest_digest"
    );
}

#[test]
fn log_calls_are_answered_with_an_empty_payload() {
    let mut session = session(&[], Arc::default());
    let answer = session
        .wapc_host_call(
            "kubewarden",
            "tracing",
            "log",
            br#"{"level":"info","message":"hello","column":3}"#,
        )
        .unwrap();
    assert!(answer.is_empty());
}

#[test]
fn malformed_log_payload_is_a_host_error() {
    let mut session = session(&[], Arc::default());
    let err = session
        .wapc_host_call("kubewarden", "tracing", "log", b"not json")
        .unwrap_err();
    assert!(
        matches!(err, HostCallError::MalformedPayload { .. }),
        "{err}"
    );
}
