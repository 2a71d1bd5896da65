//! A component policy (WIT world `policy`, wasm32-wasip2) beside its legacy waPC twin, in
//! the same server, reading the same cache: the same verdicts, lists, patches, refusals
//! and containment, in either call style.

use std::path::Path;

use policy_server_e2e::fake_apiserver::{FakeApiServer, NAMESPACES};
use policy_server_e2e::policies::{INGRESS, NAMESPACE, SERVICE};
use policy_server_e2e::requests::review;
use policy_server_e2e::{Policies, Policy, eventually, wasm};
use serde_json::{Value, json};

use crate::{
    default_labels, example_snapshot, misbehaving, misbehaving_component, server, start_live,
};

fn twin(module: &Path) -> Policy {
    Policy::new(module).settings(json!({"namespace_label": "services-allowed"}))
}

/// `service_namespace_label` as a waPC module and as a component.
fn twins(grant: Option<(&str, &str)>) -> Policies {
    let grant = |policy: Policy| match grant {
        Some(grant) => policy.reads(grant),
        None => policy,
    };
    Policies::from([
        ("legacy", grant(twin(&wasm().service_namespace_label))),
        (
            "component",
            grant(twin(&wasm().service_namespace_label_component)),
        ),
    ])
}

fn service(name: &str, namespace: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace}, "spec": {"ports": [{"port": 80}]}})
}

/// The parts of a response that make the verdict.
fn verdict(response: &Value) -> Value {
    json!({"allowed": response["allowed"], "status": response["status"]})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_component_gives_the_same_verdicts_as_its_legacy_twin() {
    let server = server(twins(Some(NAMESPACE)))
        .arg("--cluster-snapshot")
        .arg(example_snapshot())
        .start();
    let requests = [
        review(service("api", "default")),
        review(service("api", "team-a")),
        review(service("api", "nowhere")),
        review(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "team-a"}}),
        ),
    ];
    let mut seen = Vec::new();
    for request in &requests {
        let legacy = server.validate("legacy", request).await;
        let component = server.validate("component", request).await;
        assert_eq!(verdict(&component), verdict(&legacy), "request {request}");
        seen.push(legacy["allowed"].as_bool().unwrap());
    }
    assert_eq!(
        seen,
        [true, false, false, true],
        "the requests cover both verdicts"
    );
    let rejected = server.validate("component", &requests[1]).await;
    assert_eq!(rejected["status"]["code"], 403);
    assert_eq!(
        rejected["status"]["message"],
        "Services may only be created in namespaces labelled services-allowed; team-a is not"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_context_read_reads_the_same_in_both_call_styles() {
    // Another policy grants namespaces, so the cache holds them; the twins may not read them.
    let policies = twins(None).with(
        "granted",
        twin(&wasm().service_namespace_label).reads(NAMESPACE),
    );
    let server = server(policies)
        .arg("--cluster-snapshot")
        .arg(example_snapshot())
        .start();
    let request = review(service("api", "default"));
    let legacy = server.validate("legacy", &request).await;
    let component = server.validate("component", &request).await;
    let denial = |id: &str| {
        format!(
            "policy '{id}' is not allowed to read v1/Namespace: grant it in the policy's contextAwareResources"
        )
    };
    let legacy_message = legacy["status"]["message"].as_str().unwrap();
    let component_message = component["status"]["message"].as_str().unwrap();
    assert!(
        legacy_message.ends_with(&denial("legacy")),
        "{legacy_message}"
    );
    assert!(
        component_message.ends_with(&denial("component")),
        "{component_message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn both_styles_follow_the_live_cache() {
    let fake = FakeApiServer::start().await;
    fake.apply(
        NAMESPACES,
        json!({"metadata": {"name": "default", "labels": {"services-allowed": "1"}}}),
    );
    let server = start_live(&fake, twins(Some(NAMESPACE)), &[]);

    fake.apply(
        NAMESPACES,
        json!({"metadata": {"name": "fresh", "labels": {"services-allowed": "1"}}}),
    );
    let request = review(service("api", "fresh"));
    let server = &server;
    let request = &request;
    eventually(
        "the new namespace is seen by both policies",
        || async move {
            let legacy = server.validate("legacy", request).await;
            let component = server.validate("component", request).await;
            (legacy["allowed"] != true || component["allowed"] != true)
                .then(|| format!("legacy {legacy}, component {component}"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_call_styles_get_byte_identical_lists() {
    let server = server([
        ("legacy", misbehaving("echo:namespaces").reads(NAMESPACE)),
        (
            "component",
            misbehaving_component("echo:namespaces").reads(NAMESPACE),
        ),
    ])
    .arg("--cluster-snapshot")
    .arg(example_snapshot())
    .start();
    let request = review(service("api", "default"));
    let legacy = server.validate("legacy", &request).await;
    let component = server.validate("component", &request).await;
    let legacy_list = legacy["status"]["message"].as_str().unwrap();
    let component_list = component["status"]["message"].as_str().unwrap();
    assert_eq!(legacy_list, component_list);
    let list: Value = serde_json::from_str(legacy_list).unwrap();
    assert_eq!(list["kind"], "NamespaceList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misbehaving_component_is_contained_like_a_legacy_policy() {
    let server = server([
        ("trap", misbehaving_component("trap")),
        ("spin", misbehaving_component("loop").timeout_seconds(1)),
        ("grab", misbehaving_component("grab_memory")),
        ("fine", misbehaving_component("accept")),
    ])
    .arg("--policy-memory-limit-mib")
    .arg("64")
    .start();
    let expectations = [
        ("trap", "wasm `unreachable` instruction executed"),
        ("spin", "policy evaluation timed out after 1s"),
        ("grab", "policy exceeded its memory limit of 64 MiB"),
    ];
    for (id, expected) in expectations {
        let response = server
            .validate(id, &review(service("api", "default")))
            .await;
        assert_eq!(response["allowed"], false, "{id}: {response}");
        assert_eq!(response["status"]["code"], 500, "{id}: {response}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{id}: {message}");
        let fine = server
            .validate("fine", &review(service("api", "default")))
            .await;
        assert_eq!(fine["allowed"], true, "after {id}: {fine}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ingress_component_gives_the_same_verdicts_as_its_legacy_twin() {
    let server = server([
        (
            "legacy",
            Policy::new(&wasm().unique_ingress_host).reads(INGRESS),
        ),
        (
            "component",
            Policy::new(&wasm().unique_ingress_host_component).reads(INGRESS),
        ),
    ])
    .arg("--cluster-snapshot")
    .arg(example_snapshot())
    .start();
    let ingress = |name: &str, namespace: &str, host: &str| {
        review(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"rules": [{"host": host}]}}),
        )
    };
    let requests = [
        ingress("shop-v2", "team-a", "shop.example.com"),
        ingress("web", "default", "shop.example.com"),
        ingress("blog", "team-a", "blog.example.com"),
    ];
    let mut allowed = Vec::new();
    for request in &requests {
        let legacy = server.validate("legacy", request).await;
        let component = server.validate("component", request).await;
        assert_eq!(verdict(&component), verdict(&legacy), "request {request}");
        allowed.push(legacy["allowed"].as_bool().unwrap());
    }
    assert_eq!(allowed, [false, true, true]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mutating_component_gives_the_same_patch_as_its_legacy_twin() {
    let legacy = default_labels().allowed_to_mutate(true);
    let component = legacy
        .clone()
        .field("module", json!(wasm().default_labels_component));
    let server = server([("legacy", legacy), ("component", component)]).start();
    let pod = |labels: Value| {
        review(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}))
    };
    for request in [
        pod(json!({"team": "a"})),
        pod(json!({"team": "a", "tier": "b"})),
    ] {
        let legacy = server.validate("legacy", &request).await;
        let component = server.validate("component", &request).await;
        for field in ["allowed", "patchType", "patch", "warnings", "status"] {
            assert_eq!(
                component[field], legacy[field],
                "{field}: legacy {legacy}, component {component}"
            );
        }
    }
    let mutated = server.validate("component", &pod(json!({}))).await;
    assert_eq!(mutated["patchType"], "JSONPatch");
    assert_eq!(
        mutated["warnings"],
        json!(["added label team=unassigned", "added label tier=ünïcode-☃"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn component_settings_are_validated_at_start_up() {
    let broken = Policy::new(&wasm().default_labels_component).settings(json!({"labels": {}}));
    let (status, output) = server([("broken", broken)]).start_expecting_failure();
    assert!(!status.success());
    assert!(output.contains("policy 'broken'"), "{output}");
    assert!(
        output.contains("Policy settings are invalid: labels must contain at least one label"),
        "{output}"
    );
}

/// The Python policy of `wit/README.md` (componentize-py): built from
/// `examples/service-limit-py`, served, and judging from the cluster cache.
#[tokio::test(flavor = "multi_thread")]
async fn the_python_example_reads_the_cluster_through_the_same_interface() {
    let module = policy_server_e2e::build::python_component();
    let limit = Policy::new(module).settings(json!({"max": 1}));
    let policies = [
        ("limit", limit.clone().reads(SERVICE)),
        ("ungranted", limit),
    ];
    let server = tokio::task::block_in_place(|| {
        server(policies)
            .arg("--cluster-snapshot")
            .arg(example_snapshot())
            .start()
    });
    // examples/cluster-snapshot.yaml has one Service, in `default`.
    let full = server
        .validate("limit", &review(service("api", "default")))
        .await;
    assert_eq!(full["allowed"], false, "{full}");
    assert_eq!(
        full["status"]["message"],
        "namespace default already has 1 services"
    );
    let room = server
        .validate("limit", &review(service("api", "team-a")))
        .await;
    assert_eq!(room["allowed"], true, "{room}");
    let denied = server
        .validate("ungranted", &review(service("api", "team-a")))
        .await;
    assert_eq!(
        denied["status"]["message"],
        "cannot list services: policy 'ungranted' is not allowed to read v1/Service: grant it in the policy's contextAwareResources"
    );
}
