//! End to end: a component policy (WIT world `policy`, wasm32-wasip2) beside its legacy
//! waPC twin, in the same server, reading the same cache.

use policy_server_e2e::fake_apiserver::{FakeApiServer, NAMESPACES};
use policy_server_e2e::requests::review;
use policy_server_e2e::{ServerBuilder, eventually, wasm};
use serde_json::{Value, json};

fn builder(policies_yml: String) -> ServerBuilder {
    ServerBuilder::new(env!("CARGO_BIN_EXE_policy-server"), policies_yml)
}

const GRANT_NAMESPACES: &str =
    "  contextAwareResources:\n    - apiVersion: v1\n      kind: Namespace\n";

fn twin(id: &str, module: &std::path::Path, grant: &str) -> String {
    format!(
        "{id}:\n  module: {}\n{grant}  settings:\n    namespace_label: services-allowed\n",
        module.display()
    )
}

fn twins(grant: &str) -> String {
    [
        twin("legacy", &wasm().service_namespace_label, grant),
        twin(
            "component",
            &wasm().service_namespace_label_component,
            grant,
        ),
    ]
    .concat()
}

fn service(name: &str, namespace: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace}, "spec": {"ports": [{"port": 80}]}})
}

/// The parts of a response that make the verdict.
fn verdict(response: &Value) -> Value {
    json!({"allowed": response["allowed"], "status": response["status"]})
}

fn snapshot() -> String {
    policy_server_e2e::build::repo_root()
        .join("examples/cluster-snapshot.yaml")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_component_gives_the_same_verdicts_as_its_legacy_twin() {
    let server = builder(twins(GRANT_NAMESPACES))
        .arg("--cluster-snapshot")
        .arg(snapshot())
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
    let yml = [
        twins(""),
        twin("granted", &wasm().service_namespace_label, GRANT_NAMESPACES),
    ]
    .concat();
    let server = builder(yml)
        .arg("--cluster-snapshot")
        .arg(snapshot())
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
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let builder = builder(twins(GRANT_NAMESPACES))
        .arg("--kubeconfig")
        .arg(kubeconfig.display().to_string());
    let server = tokio::task::block_in_place(|| builder.start());

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

fn behaving(id: &str, module: &std::path::Path, behaviour: &str, extra: &str) -> String {
    format!(
        "{id}:\n  module: {}\n{extra}  settings:\n    behaviour: \"{behaviour}\"\n",
        module.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn both_call_styles_get_byte_identical_lists() {
    let yml = [
        behaving(
            "legacy",
            &wasm().misbehaving,
            "echo:namespaces",
            GRANT_NAMESPACES,
        ),
        behaving(
            "component",
            &wasm().misbehaving_component,
            "echo:namespaces",
            GRANT_NAMESPACES,
        ),
    ]
    .concat();
    let server = builder(yml)
        .arg("--cluster-snapshot")
        .arg(snapshot())
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
    let component = &wasm().misbehaving_component;
    let yml = [
        behaving("trap", component, "trap", ""),
        behaving("spin", component, "loop", "  timeoutEvalSeconds: 1\n"),
        behaving("grab", component, "grab_memory", ""),
        behaving("fine", component, "accept", ""),
    ]
    .concat();
    let server = builder(yml)
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
    let grant =
        "  contextAwareResources:\n    - apiVersion: networking.k8s.io/v1\n      kind: Ingress\n";
    let yml = format!(
        "legacy:\n  module: {}\n{grant}component:\n  module: {}\n{grant}",
        wasm().unique_ingress_host.display(),
        wasm().unique_ingress_host_component.display()
    );
    let server = builder(yml)
        .arg("--cluster-snapshot")
        .arg(snapshot())
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
    let settings = "  allowedToMutate: true\n  settings:\n    labels: {team: unassigned, tier: \"ünïcode-☃\"}\n";
    let yml = format!(
        "legacy:\n  module: {}\n{settings}component:\n  module: {}\n{settings}",
        wasm().default_labels.display(),
        wasm().default_labels_component.display()
    );
    let server = builder(yml).start();
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
    let yml = format!(
        "broken:\n  module: {}\n  settings:\n    labels: {{}}\n",
        wasm().default_labels_component.display()
    );
    let (status, output) = builder(yml).start_expecting_failure();
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
    let yml = format!(
        "limit:\n  module: {}\n  contextAwareResources:\n    - {{apiVersion: v1, kind: Service}}\n  settings:\n    max: 1\n\
         ungranted:\n  module: {}\n  settings:\n    max: 1\n",
        module.display(),
        module.display()
    );
    let server = tokio::task::block_in_place(|| {
        builder(yml)
            .arg("--cluster-snapshot")
            .arg(snapshot())
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
