//! Against the fake API server: discovery, any kind, the watch, `can_i`.

use policy_server_e2e::fake_apiserver::{FakeApiServer, NAMESPACES, SERVICES, WIDGETS};
use policy_server_e2e::requests::review;
use policy_server_e2e::{eventually, wasm};
use serde_json::{Value, json};

use std::time::Duration;

use super::*;

fn widget(namespace: &str, name: &str, size: u32) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace}, "spec": {"size": size}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_resource_kind_is_discovered_and_followed() {
    let fake = FakeApiServer::start().await;
    fake.apply(WIDGETS, widget("shop", "first", 1));
    let get = |name: &str| json!({"behaviour": "get", "api_version": "example.com/v1", "kind": "widget", "namespace": "shop", "name": name});
    let yml = [
        typed_call("get-later", get("later"), &[("Example.com/v1", "widget")]),
        legacy_call(
            "get-first",
            "get_resource",
            json!({"api_version": "example.com/v1", "kind": "Widget", "namespace": "shop", "name": "first"}),
            &[WIDGET],
        ),
    ];
    let server = start_live(&fake, yml, &[]);
    server.wait_ready(Duration::from_secs(20)).await;
    let requests = fake.requests();
    assert!(
        requests.iter().any(|r| r == "GET /apis/example.com/v1"),
        "{requests:?}"
    );

    let first: Value = serde_json::from_str(&answer(&server, "get-first").await).unwrap();
    assert_eq!(
        (first["kind"].as_str(), first["spec"]["size"].as_u64()),
        (Some("Widget"), Some(1))
    );
    assert!(
        answer(&server, "get-later")
            .await
            .starts_with("not-found: Cannot find example.com/v1/widget named 'later'")
    );

    // Created after start-up: the kind's reflector brings it in.
    fake.apply(WIDGETS, widget("shop", "later", 2));
    let server = &server;
    eventually("the new widget is visible", || async move {
        let said = answer(server, "get-later").await;
        (!said.contains("\"size\":2")).then_some(said)
    })
    .await;
    // Deleted between two evaluations: gone from the next one.
    fake.delete(WIDGETS, "shop", "first");
    eventually("the deleted widget is gone", || async move {
        let said = answer(server, "get-first").await;
        (!said.starts_with("Host error: Cannot find example.com/v1/Widget named 'first'"))
            .then_some(said)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kind_the_cluster_does_not_serve_stops_the_start_or_fails_its_reads() {
    let fake = FakeApiServer::start().await;
    let gadgets = ("example.com/v1", "Gadget");
    let yml = typed_call(
        "gadgets",
        json!({"behaviour": "list", "api_version": "example.com/v1", "kind": "Gadget"}),
        &[gadgets],
    );
    let (status, output) = server([yml.clone()])
        .kubeconfig(fake.kubeconfig())
        .start_expecting_failure();
    assert!(!status.success());
    assert!(
        output.contains(
            "policy 'gadgets' reads example.com/v1/Gadget, which the cluster does not serve"
        ),
        "{output}"
    );

    let namespaces = typed_call(
        "namespaces",
        json!({"behaviour": "list", "api_version": "v1", "kind": "Namespace"}),
        &[NAMESPACE],
    );
    let server = start_live(&fake, [yml.clone(), namespaces], &["--continue-on-errors"]);
    server.wait_ready(Duration::from_secs(20)).await;
    let said = answer(&server, "gadgets").await;
    assert!(said.starts_with("unavailable: policy 'gadgets': example.com/v1/Gadget cannot be read: the cluster serves no kind Gadget"), "{said}");
    assert!(
        answer(&server, "namespaces")
            .await
            .contains("NamespaceList")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn can_i_asks_the_api_server_and_reuses_recent_answers() {
    let fake = FakeApiServer::start().await;
    fake.apply(NAMESPACES, json!({"metadata": {"name": "default"}}));
    fake.allow_user("alice");
    let sar = ("authorization.k8s.io/v1", "SubjectAccessReview");
    let ask = |user: &str| json!({"behaviour": "can_i", "user": user, "verb": "create", "resource": "pods", "namespace": "default"});
    let legacy = json!({"subject_access_review": {"user": "alice", "groups": ["dev"],
        "resource_attributes": {"verb": "create", "resource": "pods", "namespace": "default"}}, "disable_cache": false});
    let yml = [
        typed_call("alice", ask("alice"), &[sar]),
        typed_call("bob", ask("bob"), &[sar]),
        typed_call("ungranted", ask("alice"), &[NAMESPACE]),
        legacy_call("legacy", "can_i", legacy, &[sar]),
    ];
    let server = start_live(&fake, yml, &[]);
    server.wait_ready(Duration::from_secs(20)).await;
    let alice = answer(&server, "alice").await;
    assert_eq!(alice, "allowed=true denied=false", "{}", server.log());
    assert_eq!(answer(&server, "bob").await, "allowed=false denied=false");
    assert!(
        answer(&server, "ungranted")
            .await
            .starts_with("not-allowed: policy 'ungranted' is not allowed to ask can_i")
    );
    let status: Value = serde_json::from_str(&answer(&server, "legacy").await).unwrap();
    assert_eq!(
        status,
        json!({"allowed": true, "reason": "allowed by the fake API server"})
    );

    let reviews = || {
        fake.requests()
            .iter()
            .filter(|r| r.starts_with("POST") && r.contains("subjectaccessreviews"))
            .count()
    };
    let before = reviews();
    for _ in 0..3 {
        assert_eq!(answer(&server, "alice").await, "allowed=true denied=false");
    }
    assert_eq!(reviews(), before, "answered from the 5-second answer cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn services_by_namespace_follow_the_live_cache() {
    let fake = FakeApiServer::start().await;
    fake.apply(SERVICES, service("shop", "web", json!({"app": "web"})));
    let yml = [
        policy(
            "selector",
            &wasm().unique_service_selector,
            &[SERVICE],
            json!({}),
        ),
        policy(
            "selector-c",
            &wasm().unique_service_selector_component,
            &[SERVICE],
            json!({}),
        ),
    ];
    let server = start_live(&fake, yml, &[]);
    server.wait_ready(Duration::from_secs(20)).await;
    let request = review(service("shop", "api", json!({"app": "api"})));
    for id in ["selector", "selector-c"] {
        assert_eq!(server.validate(id, &request).await["allowed"], true);
    }
    fake.apply(SERVICES, service("shop", "api-old", json!({"app": "api"})));
    let (server, request) = (&server, &request);
    eventually("both styles see the new Service", || async move {
        let legacy = verdict(&server.validate("selector", request).await);
        let component = verdict(&server.validate("selector-c", request).await);
        let expected = (
            false,
            json!(409),
            "service shop/api-old already selects the same pods".to_owned(),
        );
        (legacy != expected || component != expected).then(|| format!("{legacy:?} {component:?}"))
    })
    .await;
}
