//! What policies answer, as Kubewarden's semantics shape it: validation with message and
//! code, JSON patches, monitor mode, custom messages, and modules annotated by `kwctl`.

use base64::Engine as _;
use policy_server_e2e::requests::{deployment, pod, review};
use policy_server_e2e::{Policy, wasm};
use serde_json::{Value, json};

use crate::{default_labels, deny_latest_tag, required_labels, start};

#[tokio::test]
async fn validating_sdk_policy_accepts_and_rejects_with_message_and_code() {
    let server = start([("labels", required_labels())]);

    let accepted = server
        .validate(
            "labels",
            &review(pod("web", json!({"team": "a"}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(accepted["allowed"], true, "{accepted}");
    assert!(accepted.get("status").is_none(), "{accepted}");

    let rejected = server
        .validate(
            "labels",
            &review(pod("web", json!({"app": "web"}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(rejected["allowed"], false, "{rejected}");
    assert_eq!(rejected["status"]["code"], 400);
    assert_eq!(
        rejected["status"]["message"],
        "Pod 'web' is missing required labels: team"
    );

    // The SDK's structured log reaches the server's log through the tracing host call.
    let event = server
        .wait_for_log(|e| e["target"] == "policy_log" && e["message"] == "validating")
        .await;
    assert_eq!(event["policy"], "labels");
}

#[tokio::test]
async fn plain_wapc_policy_judges_deployments_and_pods() {
    let server = start([("latest", deny_latest_tag())]);

    let rejected = server
        .validate(
            "latest",
            &review(deployment("api", json!({}), &["nginx:1.27", "redis"])),
        )
        .await;
    assert_eq!(rejected["allowed"], false, "{rejected}");
    assert_eq!(rejected["status"]["code"], 403);
    assert_eq!(
        rejected["status"]["message"],
        "containers must pin an image tag other than latest: c1 (redis)"
    );

    let accepted = server
        .validate(
            "latest",
            &review(pod("web", json!({}), &["registry:5000/nginx:1.27"])),
        )
        .await;
    assert_eq!(accepted["allowed"], true, "{accepted}");
}

#[tokio::test]
async fn mutating_policy_answers_with_a_json_patch() {
    let server = start([("defaults", default_labels().allowed_to_mutate(true))]);
    let object = pod("web", json!({"team": "payments"}), &["nginx:1.27"]);

    let response = server.validate("defaults", &review(object.clone())).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["patchType"], "JSONPatch");
    assert_eq!(response["warnings"], json!(["added label tier=ünïcode-☃"]));

    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    let mut expected = object;
    expected["metadata"]["labels"]["tier"] = json!("ünïcode-☃");
    assert_eq!(patched, expected);

    // Nothing to add: plain acceptance, no patch.
    let labelled = pod("web", json!({"team": "x", "tier": "y"}), &["nginx:1.27"]);
    let response = server.validate("defaults", &review(labelled)).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
}

#[tokio::test]
async fn mutation_is_rejected_when_the_policy_may_not_mutate() {
    let server = start([("defaults", default_labels().allowed_to_mutate(false))]);
    let response = server
        .validate("defaults", &review(pod("web", json!({}), &["nginx:1.27"])))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(
        response["status"]["message"],
        "Request rejected by policy defaults. The policy attempted to mutate the request, \
         but it is currently configured to not allow mutations."
    );
    assert!(response.get("patch").is_none());
}

#[tokio::test]
async fn monitor_mode_allows_and_logs_the_real_decision() {
    let server = start([
        ("watch", required_labels().monitor()),
        (
            "watch-mutate",
            default_labels().monitor().allowed_to_mutate(true),
        ),
    ]);
    let response = server
        .validate("watch", &review(pod("web", json!({}), &["nginx:1.27"])))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("status").is_none(), "{response}");
    let response = server
        .validate(
            "watch-mutate",
            &review(pod("web", json!({}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response.get("patch").is_none(),
        "monitor mode never mutates: {response}"
    );

    let monitored = server
        .wait_for_log(|e| {
            e["policy"] == "watch" && e["message"].as_str().unwrap_or("").contains("monitor mode")
        })
        .await;
    assert_eq!(monitored["allowed"], false, "{monitored}");
}

#[tokio::test]
async fn custom_message_replaces_the_rejection_and_keeps_the_original_as_cause() {
    let server = start([("labels", required_labels().message("Ask the platform team"))]);
    let response = server
        .validate("labels", &review(pod("web", json!({}), &["nginx:1.27"])))
        .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["message"], "Ask the platform team");
    assert_eq!(response["status"]["code"], 400);
    assert_eq!(
        response["status"]["details"]["causes"][0]["message"],
        "Pod 'web' is missing required labels: team"
    );
}

#[tokio::test]
async fn unicode_and_large_objects_pass_through_intact() {
    let server = start([("labels", required_labels())]);
    let name = "zürich-東京-🚀";
    let response = server
        .validate(
            "labels",
            &review(pod(name, json!({"app": "ü"}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(
        response["status"]["message"],
        format!("Pod '{name}' is missing required labels: team")
    );

    // A 2 MiB spec (under the default 3 MiB limit) is evaluated like any other.
    let mut large = pod("large", json!({"team": "a"}), &["nginx:1.27"]);
    let env: Vec<Value> = (0..20_000)
        .map(|i| json!({"name": format!("VAR_{i}"), "value": "v".repeat(80)}))
        .collect();
    large["spec"]["containers"][0]["env"] = Value::Array(env);
    let review = review(large);
    assert!(serde_json::to_vec(&review).unwrap().len() > 2 << 20);
    let response = server.validate("labels", &review).await;
    assert_eq!(response["allowed"], true, "{response}");
}

/// Appends a custom section to a wasm module, as `kwctl annotate` does.
fn annotate(module: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    use wasm_encoder::Section;
    let mut out = module.to_vec();
    wasm_encoder::CustomSection {
        name: name.into(),
        data: data.into(),
    }
    .append_to(&mut out);
    out
}

#[tokio::test]
async fn kubewarden_annotated_modules_run_and_other_execution_modes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plain = std::fs::read(&wasm().required_labels).unwrap();
    let metadata = |mode: &str| {
        json!({"protocolVersion": "v1", "rules": [], "mutating": false, "executionMode": mode})
            .to_string()
    };
    let wapc = dir.path().join("wapc.wasm");
    std::fs::write(
        &wapc,
        annotate(
            &plain,
            "io.kubewarden.metadata",
            metadata("kubewarden-wapc").as_bytes(),
        ),
    )
    .unwrap();
    let opa = dir.path().join("opa.wasm");
    std::fs::write(
        &opa,
        annotate(&plain, "io.kubewarden.metadata", metadata("opa").as_bytes()),
    )
    .unwrap();

    let settings = json!({"required_labels": ["team"]});
    let server = start([("annotated", Policy::new(&wapc).settings(settings.clone()))]);
    let response = server
        .validate("annotated", &review(pod("web", json!({}), &["nginx:1.27"])))
        .await;
    assert_eq!(
        response["status"]["message"],
        "Pod 'web' is missing required labels: team"
    );

    let (status, output) =
        crate::server([("rego", Policy::new(&opa).settings(settings))]).start_expecting_failure();
    assert!(!status.success());
    assert!(
        output.contains("policy 'rego'") && output.contains("execution mode 'opa'"),
        "{output}"
    );
}

#[tokio::test]
async fn an_sdk_policy_on_typed_workloads_finds_privileged_containers_in_any_of_them() {
    let server = start([
        ("privileged", Policy::new(&wasm().pod_privileged)),
        (
            "privileged-skip-init",
            Policy::new(&wasm().pod_privileged).settings(json!({"skip_init_containers": true})),
        ),
    ]);
    let privileged = json!({"privileged": true});
    let mut workload = deployment("api", json!({}), &["nginx:1.27", "redis:7"]);
    workload["spec"]["template"]["spec"]["containers"][1]["securityContext"] = privileged.clone();
    let rejected = server.validate("privileged", &review(workload)).await;
    assert_eq!(rejected["allowed"], false, "{rejected}");
    assert_eq!(
        rejected["status"]["message"],
        "Privileged container is not allowed: c1"
    );

    let mut with_init = pod("web", json!({}), &["nginx:1.27"]);
    with_init["spec"]["initContainers"] =
        json!([{"name": "setup", "image": "busybox:1", "securityContext": privileged}]);
    let rejected = server
        .validate("privileged", &review(with_init.clone()))
        .await;
    assert_eq!(
        rejected["status"]["message"],
        "Privileged container is not allowed: setup"
    );
    let skipped = server
        .validate("privileged-skip-init", &review(with_init))
        .await;
    assert_eq!(skipped["allowed"], true, "{skipped}");

    let plain = server
        .validate(
            "privileged",
            &review(pod("web", json!({}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(plain["allowed"], true, "{plain}");
}
