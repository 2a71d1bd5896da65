//! Against a snapshot file: the SDK examples and their twins, the bytes of every call in
//! both styles, every refusal, the README's walk-through.

use policy_server_e2e::requests::review;
use policy_server_e2e::wasm;
use serde_json::{Value, json};

use super::*;
use crate::server_for_yaml;

#[tokio::test(flavor = "multi_thread")]
async fn sdk_policies_and_their_component_twins_give_the_same_verdicts() {
    let w = wasm();
    let limit = json!({"max_namespaces": 2});
    let label = json!({"namespace_label": "services-allowed"});
    let yml = [
        policy(
            "selector",
            &w.unique_service_selector,
            &[SERVICE],
            json!({}),
        ),
        policy(
            "selector-c",
            &w.unique_service_selector_component,
            &[SERVICE],
            json!({}),
        ),
        policy("label", &w.namespace_label, &[NAMESPACE], label.clone()),
        policy(
            "label-c",
            &w.service_namespace_label_component,
            &[NAMESPACE],
            label.clone(),
        ),
        policy(
            "label-seed",
            &w.service_namespace_label,
            &[NAMESPACE],
            label,
        ),
        policy(
            "limit",
            &w.tenant_namespace_limit,
            &[NAMESPACE],
            limit.clone(),
        ),
        policy(
            "limit-c",
            &w.tenant_namespace_limit_component,
            &[NAMESPACE],
            limit,
        ),
    ];
    let (server, _dir) = start_on_snapshot(yml);
    let cases = [
        // (policies, request, allowed, message)
        (
            &["selector", "selector-c"][..],
            review(service("shop", "api", json!({"app": "api"}))),
            true,
            "",
        ),
        (
            &["selector", "selector-c"],
            review(service("shop", "web2", json!({"app": "web"}))),
            false,
            "service shop/web already selects the same pods",
        ),
        // Another namespace's Service with the same selector does not count; nor does the
        // Service itself, when it is updated.
        (
            &["selector", "selector-c"],
            review(service("team-b", "web", json!({"app": "web"}))),
            true,
            "",
        ),
        (
            &["selector", "selector-c"],
            review(service("shop", "web", json!({"app": "web"}))),
            true,
            "",
        ),
        (
            &["label", "label-c", "label-seed"],
            review(service("shop", "api", json!({}))),
            true,
            "",
        ),
        (
            &["label", "label-c", "label-seed"],
            review(service("team-a", "api", json!({}))),
            false,
            "Services may only be created in namespaces labelled services-allowed; team-a is not",
        ),
        (
            &["label", "label-c", "label-seed"],
            review(service("nowhere", "api", json!({}))),
            false,
            "namespace nowhere does not exist",
        ),
        (
            &["limit", "limit-c"],
            cluster_review(namespace("shop-qa", json!({"tenant": "blue"}))),
            false,
            "tenant blue already has 2 namespaces (at most 2)",
        ),
        (
            &["limit", "limit-c"],
            cluster_review(namespace("team-b", json!({"tenant": "green"}))),
            true,
            "",
        ),
        // Updating a namespace does not count it twice.
        (
            &["limit", "limit-c"],
            cluster_review(namespace("shop", json!({"tenant": "blue"}))),
            true,
            "",
        ),
    ];
    for (policies, request, allowed, message) in cases {
        let mut verdicts = Vec::new();
        for id in policies {
            let (was_allowed, code, said) = verdict(&server.validate(id, &request).await);
            assert_eq!(
                (was_allowed, said.as_str()),
                (allowed, message),
                "{id}: {request}"
            );
            verdicts.push(code);
        }
        assert!(
            verdicts.windows(2).all(|pair| pair[0] == pair[1]),
            "{policies:?}: {verdicts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_call_styles_get_byte_identical_answers() {
    let both = &[NAMESPACE, SERVICE];
    let yml = [
        legacy_call(
            "by-ns",
            "list_resources_by_namespace",
            json!({"api_version": "v1", "kind": "Service", "namespace": "shop", "label_selector": "app in (web,db)"}),
            both,
        ),
        typed_call(
            "by-ns-c",
            json!({"behaviour": "list", "api_version": "v1", "kind": "Service",
            "namespace": "shop", "label_selector": "app in (web,db)"}),
            both,
        ),
        legacy_call(
            "all",
            "list_resources_all",
            json!({"api_version": "v1", "kind": "Namespace", "label_selector": "tenant=blue", "field_selector": "metadata.name!=shop"}),
            both,
        ),
        typed_call(
            "all-c",
            json!({"behaviour": "list", "api_version": "v1", "kind": "Namespace",
            "label_selector": "tenant=blue", "field_selector": "metadata.name!=shop"}),
            both,
        ),
        legacy_call(
            "get",
            "get_resource",
            json!({"api_version": "v1", "kind": "Service", "namespace": "team-a", "name": "web", "disable_cache": false}),
            both,
        ),
        typed_call(
            "get-c",
            json!({"behaviour": "get", "api_version": "v1", "kind": "Service",
            "namespace": "team-a", "name": "web"}),
            both,
        ),
    ];
    let (server, _dir) = start_on_snapshot(yml);

    let by_namespace = answer(&server, "by-ns").await;
    assert_eq!(by_namespace, answer(&server, "by-ns-c").await);
    let list: Value = serde_json::from_str(&by_namespace).unwrap();
    assert_eq!(list["kind"], "ServiceList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["db", "web"],
        "ordered by name, only the namespace's"
    );

    let all = answer(&server, "all").await;
    assert_eq!(all, answer(&server, "all-c").await);
    let list: Value = serde_json::from_str(&all).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["metadata"]["name"], "shop-dev");

    let object = answer(&server, "get").await;
    assert_eq!(object, answer(&server, "get-c").await);
    let object: Value = serde_json::from_str(&object).unwrap();
    assert_eq!(
        (
            object["kind"].as_str(),
            object["metadata"]["namespace"].as_str()
        ),
        (Some("Service"), Some("team-a"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_says_what_and_why() {
    let get_missing = json!({"api_version": "v1", "kind": "Service", "namespace": "shop", "name": "gone", "disable_cache": false});
    let yml = [
        // Granted namespaces only.
        legacy_call(
            "ungranted",
            "list_resources_all",
            json!({"api_version": "v1", "kind": "Service"}),
            &[NAMESPACE],
        ),
        typed_call(
            "ungranted-c",
            json!({"behaviour": "list", "api_version": "v1", "kind": "Service"}),
            &[NAMESPACE],
        ),
        legacy_call("missing", "get_resource", get_missing, &[SERVICE]),
        typed_call(
            "missing-c",
            json!({"behaviour": "get", "api_version": "v1", "kind": "Service",
            "namespace": "shop", "name": "gone"}),
            &[SERVICE],
        ),
        legacy_call(
            "bad-selector",
            "list_resources_all",
            json!({"api_version": "v1", "kind": "Service", "label_selector": "app in web"}),
            &[SERVICE],
        ),
        typed_call(
            "bad-selector-c",
            json!({"behaviour": "list", "api_version": "v1", "kind": "Service",
            "label_selector": "app in web"}),
            &[SERVICE],
        ),
        legacy_call(
            "no-kind",
            "get_resource",
            json!({"api_version": "v1", "name": "x"}),
            &[SERVICE],
        ),
        legacy_call(
            "cluster-wide",
            "list_resources_by_namespace",
            json!({"api_version": "v1", "kind": "Namespace", "namespace": "shop"}),
            &[NAMESPACE],
        ),
        typed_call(
            "cluster-wide-c",
            json!({"behaviour": "list", "api_version": "v1", "kind": "Namespace",
            "namespace": "shop"}),
            &[NAMESPACE],
        ),
        legacy_call(
            "can-i",
            "can_i",
            json!({"subject_access_review": {"user": "u", "groups": null,
            "resource_attributes": {"verb": "get", "resource": "pods"}}, "disable_cache": false}),
            &[NAMESPACE],
        ),
        legacy_call(
            "can-i-no-cluster",
            "can_i",
            json!({"subject_access_review": {"user": "u", "groups": null,
            "resource_attributes": {"verb": "get", "resource": "pods"}}, "disable_cache": false}),
            &[("authorization.k8s.io/v1", "SubjectAccessReview")],
        ),
    ];
    let (server, _dir) = start_on_snapshot(yml);
    let cases = [
        (
            "ungranted",
            "Host error: policy 'ungranted' is not allowed to read v1/Service: grant it in the policy's contextAwareResources",
        ),
        (
            "ungranted-c",
            "not-allowed: policy 'ungranted-c' is not allowed to read v1/Service: grant it in the policy's contextAwareResources",
        ),
        (
            "missing",
            "Host error: Cannot find v1/Service named 'gone' inside of namespace 'Some(\"shop\")'",
        ),
        (
            "missing-c",
            "not-found: Cannot find v1/Service named 'gone' inside of namespace 'Some(\"shop\")'",
        ),
        (
            "bad-selector",
            "Host error: policy 'bad-selector': label_selector: found 'web', expected: '('",
        ),
        (
            "bad-selector-c",
            "invalid: policy 'bad-selector-c': label_selector: found 'web', expected: '('",
        ),
        (
            "no-kind",
            "Host error: policy 'no-kind': malformed payload for kubewarden/kubernetes/get_resource: missing field `kind`",
        ),
        (
            "cluster-wide",
            "Host error: resource v1/Namespace is cluster wide. Cannot search for it inside of a namespace",
        ),
        (
            "cluster-wide-c",
            "invalid: resource v1/Namespace is cluster wide. Cannot search for it inside of a namespace",
        ),
        (
            "can-i",
            "Host error: policy 'can-i' is not allowed to ask can_i",
        ),
        (
            "can-i-no-cluster",
            "Host error: policy 'can-i-no-cluster': can_i failed: this server has no Kubernetes API to ask",
        ),
    ];
    for (id, expected) in cases {
        let said = answer(&server, id).await;
        assert!(said.starts_with(expected), "{id}: {said}");
    }
}

/// The README's walk-through: `examples/policies.yml` over `examples/cluster-snapshot.yaml`
/// gives the verdicts the README shows for the requests in `examples/requests/`.
#[tokio::test(flavor = "multi_thread")]
async fn the_examples_serve_the_verdicts_the_readme_shows() {
    wasm(); // builds the examples the file names
    let examples = policy_server_e2e::build::repo_root().join("examples");
    let yml = std::fs::read_to_string(examples.join("policies.yml")).unwrap();
    // Its module paths are relative to examples/.
    let yml = yml.replace("target/", &format!("{}/target/", examples.display()));
    let server = server_for_yaml(yml)
        .arg("--cluster-snapshot")
        .arg(examples.join("cluster-snapshot.yaml").display().to_string())
        .start();
    let request = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(examples.join("requests").join(name)).unwrap())
            .unwrap()
    };
    let cases = [
        (
            "deny-latest-tag",
            "pod-latest.json",
            "Images must be pinned: see https://example.com/image-policy",
        ),
        (
            "unique-ingress-host",
            "ingress-taken-host.json",
            "host shop.example.com is already served by ingress default/web",
        ),
        (
            "tenant-namespace-limit",
            "namespace-third-blue.json",
            "tenant blue already has 2 namespaces (at most 2)",
        ),
        (
            "tenant-namespace-limit-component",
            "namespace-third-blue.json",
            "tenant blue already has 2 namespaces (at most 2)",
        ),
    ];
    for (policy, file, message) in cases {
        let response = server.validate(policy, &request(file)).await;
        assert_eq!(verdict(&response).2, message, "{policy}: {response}");
        assert_eq!(response["allowed"], false);
    }
}
