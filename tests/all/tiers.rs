//! Every kind of policy under each compiler: baseline code (Winch) and optimized code
//! (Cranelift) give the same verdicts, patches and cluster reads, and contain the same
//! misbehaviour (traps, loops cut by the epoch deadline, memory grabs, deep recursion).
//! A tiered server swaps one for the other while it serves.

use base64::Engine as _;
use policy_server_e2e::Policy;
use policy_server_e2e::policies::NAMESPACE;
use policy_server_e2e::requests::{pod, review};
use policy_server_e2e::{Server, wasm};
use serde_json::{Value, json};

use crate::{
    default_labels, deny_latest_tag, example_snapshot, message, misbehaving, misbehaving_component,
    module_event, required_labels, server,
};

fn every_kind() -> Vec<(&'static str, Policy)> {
    let namespace_label = json!({"namespace_label": "services-allowed"});
    vec![
        ("sdk", required_labels()),
        ("plain", deny_latest_tag()),
        ("mutating", default_labels().allowed_to_mutate(true)),
        (
            "mutating-component",
            default_labels()
                .allowed_to_mutate(true)
                .field("module", json!(wasm().default_labels_component)),
        ),
        (
            "context",
            Policy::new(&wasm().service_namespace_label)
                .settings(namespace_label.clone())
                .reads(NAMESPACE),
        ),
        (
            "context-component",
            Policy::new(&wasm().service_namespace_label_component)
                .settings(namespace_label)
                .reads(NAMESPACE),
        ),
        ("trap", misbehaving("trap")),
        ("loop", misbehaving("loop").timeout_seconds(1)),
        ("grab", misbehaving("grab_memory")),
        ("deep", misbehaving("stack_overflow")),
        ("trap-component", misbehaving_component("trap")),
        (
            "loop-component",
            misbehaving_component("loop").timeout_seconds(1),
        ),
        ("grab-component", misbehaving_component("grab_memory")),
    ]
}

fn start(compilers: &str) -> Server {
    server(every_kind())
        .args(["--compilers", compilers, "--policy-memory-limit-mib", "64"])
        .args(["--cluster-snapshot", &example_snapshot()])
        .start()
}

/// What each policy answers, reduced to what must not depend on the compiler.
async fn answers(server: &Server) -> Vec<(String, Value)> {
    let unlabelled = review(pod("web", json!({}), &["nginx:latest"]));
    let service = |namespace: &str| {
        review(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "api", "namespace": namespace}, "spec": {"ports": [{"port": 80}]}}))
    };
    let mut answers = Vec::new();
    for (id, _) in every_kind() {
        let requests = if id.starts_with("context") {
            vec![service("default"), service("team-a")]
        } else {
            vec![unlabelled.clone()]
        };
        for request in requests {
            let response = server.validate(id, &request).await;
            let patch = response["patch"].as_str().map(|patch| {
                let patch = base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .unwrap();
                serde_json::from_slice::<Value>(&patch).unwrap()
            });
            let answer = json!({
                "allowed": response["allowed"],
                "code": response["status"]["code"],
                "message": message(&response),
                "patch": patch,
            });
            answers.push((id.to_owned(), answer));
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread")]
async fn baseline_and_optimized_code_answer_and_contain_alike() {
    let winch = start("winch");
    let cranelift = start("cranelift");
    let (baseline, optimized) = (answers(&winch).await, answers(&cranelift).await);
    assert_eq!(baseline, optimized);

    let said = |id: &str| -> String {
        let (_, answer) = optimized.iter().find(|(each, _)| each == id).unwrap();
        answer["message"].as_str().unwrap().to_owned()
    };
    assert_eq!(said("sdk"), "Pod 'web' is missing required labels: team");
    assert!(said("plain").starts_with("containers must pin an image tag"));
    for (id, expected) in [
        ("trap", "wasm `unreachable` instruction executed"),
        ("loop", "timed out after 1s"),
        ("grab", "policy exceeded its memory limit of 64 MiB"),
        ("deep", "policy overflowed its stack"),
        ("trap-component", "wasm `unreachable` instruction executed"),
        ("loop-component", "timed out after 1s"),
        (
            "grab-component",
            "policy exceeded its memory limit of 64 MiB",
        ),
    ] {
        assert!(said(id).contains(expected), "{id}: {}", said(id));
    }
    let patched = optimized
        .iter()
        .filter(|(id, answer)| id.starts_with("mutating") && answer["patch"].is_array())
        .count();
    assert_eq!(patched, 2, "both mutating policies patch: {optimized:?}");
    let context: Vec<&Value> = optimized
        .iter()
        .filter(|(id, _)| id == "context")
        .map(|(_, answer)| &answer["allowed"])
        .collect();
    assert_eq!(context, [true, false], "read from the cluster snapshot");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiered_server_serves_at_once_and_swaps_in_optimized_code() {
    let server = server(every_kind())
        .args(["--compilers", "tiered", "--policy-memory-limit-mib", "64"])
        .args(["--cluster-snapshot", &example_snapshot()])
        .start();
    let before = answers(&server).await;
    // One upgrade per distinct module, each logged when its code is swapped.
    let modules = [
        &wasm().required_labels,
        &wasm().deny_latest_tag,
        &wasm().default_labels,
        &wasm().default_labels_component,
        &wasm().service_namespace_label,
        &wasm().service_namespace_label_component,
        &wasm().misbehaving,
        &wasm().misbehaving_component,
    ];
    for module in modules {
        let name = module.file_name().unwrap().to_str().unwrap();
        let compiled = server.wait_for_log(module_event("compiled", name)).await;
        assert_eq!(compiled["upgrading"], true, "{compiled}");
        server.wait_for_log(module_event("upgraded", name)).await;
    }
    assert_eq!(answers(&server).await, before);
}
