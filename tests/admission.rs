//! End to end: the real server binary, real policies built from this repository, real
//! AdmissionReviews over HTTPS.
//!
//! Over 450 lines while its topics (verdicts, configuration, limits, endpoints, the compile
//! cache) wait to become modules of one test binary, as `tests/hostile/` is (issue 13).

use base64::Engine as _;
use policy_server_e2e::requests::{deployment, pod, review};
use policy_server_e2e::{Server, wasm};
use serde_json::{Value, json};

fn policy(id: &str, module: &std::path::Path, extra: &str) -> String {
    format!("{id}:\n  module: {}\n{extra}\n", module.display())
}

fn required_labels(id: &str, extra: &str) -> String {
    policy(
        id,
        &wasm().required_labels,
        &format!("  settings:\n    required_labels: [team]\n{extra}"),
    )
}

fn default_labels(id: &str, extra: &str) -> String {
    policy(
        id,
        &wasm().default_labels,
        &format!("  settings:\n    labels: {{team: unassigned, tier: \"ünïcode-☃\"}}\n{extra}"),
    )
}

fn deny_latest_tag(id: &str, extra: &str) -> String {
    policy(id, &wasm().deny_latest_tag, extra)
}

fn misbehaving(id: &str, behaviour: &str, extra: &str) -> String {
    policy(
        id,
        &wasm().misbehaving,
        &format!("  settings:\n    behaviour: {behaviour}\n{extra}"),
    )
}

fn builder(policies_yml: impl Into<String>) -> policy_server_e2e::ServerBuilder {
    policy_server_e2e::ServerBuilder::new(env!("CARGO_BIN_EXE_policy-server"), policies_yml)
}

fn start(policies: &[String]) -> Server {
    builder(policies.concat()).arg("--workers").arg("4").start()
}

#[tokio::test]
async fn validating_sdk_policy_accepts_and_rejects_with_message_and_code() {
    let server = start(&[required_labels("labels", "")]);

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
    let server = start(&[deny_latest_tag("latest", "")]);

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
    let server = start(&[default_labels("defaults", "  allowedToMutate: true")]);
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
    let server = start(&[default_labels("defaults", "  allowedToMutate: false")]);
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
    let server = start(&[
        required_labels("watch", "  policyMode: monitor"),
        default_labels(
            "watch-mutate",
            "  policyMode: monitor\n  allowedToMutate: true",
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
    let server = start(&[required_labels(
        "labels",
        "  message: Ask the platform team",
    )]);
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
async fn invalid_settings_stop_the_start_with_the_policy_and_reason() {
    let yml = policy(
        "broken",
        &wasm().required_labels,
        "  settings:\n    required_labels: []",
    );
    let (status, output) = builder(yml).start_expecting_failure();
    assert!(!status.success());
    assert!(output.contains("policy 'broken'"), "{output}");
    assert!(
        output
            .contains("Policy settings are invalid: required_labels must name at least one label"),
        "{output}"
    );
}

#[tokio::test]
async fn configuration_that_would_serve_the_wrong_thing_stops_the_start() {
    let twice = format!(
        "{}{}",
        required_labels("labels", ""),
        policy("labels", &wasm().deny_latest_tag, "")
    );
    let cases = [
        (twice, vec![], "duplicate mapping key `labels`"),
        (String::new(), vec![], "there are no policies in it"),
        (
            required_labels("labels", "  timeoutEvalSeconds: 0"),
            vec![],
            "timeoutEvalSeconds is 0",
        ),
        (
            required_labels("labels", ""),
            vec!["--policy-timeout", "100000000000000"],
            "--policy-timeout is 100000000000000",
        ),
    ];
    for (yml, args, reason) in cases {
        let mut builder = builder(yml);
        for arg in args {
            builder = builder.arg(arg);
        }
        let (status, output) = builder.start_expecting_failure();
        assert!(!status.success());
        assert!(output.contains(reason), "{reason}: {output}");
        assert!(
            !output.contains("\"compiled\""),
            "refused before compiling: {output}"
        );
    }
}

#[tokio::test]
async fn an_empty_policies_file_serves_nothing_only_when_allowed() {
    let server = builder("# the policies come later\n")
        .arg("--allow-empty-policies")
        .start();
    assert_eq!(server.get("/readiness").await.0, 200);
    let (status, body) = server
        .post_json(
            "/validate/anything",
            &review(pod("web", json!({}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn continue_on_errors_serves_the_others_and_rejects_for_the_broken_one() {
    let broken = policy(
        "broken",
        &wasm().required_labels,
        "  policyMode: monitor\n  settings:\n    required_labels: []",
    );
    let server = builder([broken, required_labels("labels", "")].concat())
        .arg("--continue-on-errors")
        .start();

    let response = server
        .validate(
            "broken",
            &review(pod("web", json!({"team": "a"}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(
        response["allowed"], false,
        "even in monitor mode: {response}"
    );
    assert_eq!(response["status"]["code"], 500);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message
            .contains("Policy settings are invalid: required_labels must name at least one label"),
        "{message}"
    );

    let response = server
        .validate(
            "labels",
            &review(pod("web", json!({"team": "a"}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn a_looping_policy_times_out_while_other_policies_keep_answering() {
    let server = std::sync::Arc::new(start(&[
        // Long enough that ten quick answers cannot outlast it on a loaded machine.
        misbehaving("spin", "loop", "  timeoutEvalSeconds: 8"),
        required_labels("labels", ""),
    ]));
    let looping = tokio::spawn({
        let server = server.clone();
        async move {
            server
                .validate("spin", &review(pod("web", json!({}), &["nginx:1.27"])))
                .await
        }
    });
    // While the loop runs, the other policy answers request after request.
    for _ in 0..10 {
        let response = server
            .validate(
                "labels",
                &review(pod("web", json!({"team": "a"}), &["nginx:1.27"])),
            )
            .await;
        assert_eq!(response["allowed"], true);
    }
    assert!(
        !looping.is_finished(),
        "the looping policy answered before its time limit"
    );

    let response = looping.await.unwrap();
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 500);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("policy 'spin'") && message.contains("timed out after 8s"),
        "{message}"
    );

    // And the server still answers normally.
    let again = server
        .validate("labels", &review(pod("web", json!({}), &["nginx:1.27"])))
        .await;
    assert_eq!(again["allowed"], false);
}

#[tokio::test]
async fn traps_panics_memory_grabs_and_stack_overflows_are_contained() {
    let server = builder(
        [
            misbehaving("trap", "trap", ""),
            misbehaving("panic", "panic", ""),
            misbehaving("grab", "grab_memory", ""),
            misbehaving("deep", "stack_overflow", ""),
            misbehaving("fine", "accept", ""),
        ]
        .concat(),
    )
    .arg("--policy-memory-limit-mib")
    .arg("64")
    .start();

    let expectations = [
        ("trap", "wasm `unreachable` instruction executed"),
        ("panic", "wasm `unreachable` instruction executed"),
        ("grab", "policy exceeded its memory limit of 64 MiB"),
        ("deep", "policy overflowed its stack"),
    ];
    for (id, expected) in expectations {
        for _ in 0..2 {
            let response = server
                .validate(id, &review(pod("web", json!({}), &["nginx:1.27"])))
                .await;
            assert_eq!(response["allowed"], false, "{id}: {response}");
            assert_eq!(response["status"]["code"], 500, "{id}: {response}");
            let message = response["status"]["message"].as_str().unwrap();
            assert!(message.contains(expected), "{id}: {message}");
        }
        let response = server
            .validate("fine", &review(pod("web", json!({}), &["nginx:1.27"])))
            .await;
        assert_eq!(response["allowed"], true, "after {id}: {response}");
    }
}

#[tokio::test]
async fn every_evaluation_gets_a_fresh_instance() {
    let server = start(&[misbehaving("remember", "remember", "")]);
    for _ in 0..5 {
        let response = server
            .validate("remember", &review(pod("web", json!({}), &["nginx:1.27"])))
            .await;
        assert_eq!(response["allowed"], true, "{response}");
    }
}

#[tokio::test]
async fn unknown_host_calls_get_a_host_error_the_guest_can_handle() {
    let server = start(&[misbehaving("caller", "unknown_host_call", "")]);
    let response = server
        .validate("caller", &review(pod("web", json!({}), &["nginx:1.27"])))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    // wapc-guest prefixes host errors with "Host error: ".
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.ends_with(
            "policy 'caller': unknown host call kubewarden/no-such-namespace/v1/nothing"
        ),
        "{message}"
    );
}

/// A waPC module that answers `validate_settings` properly but, on `validate`, hands the
/// host a response buffer far outside its memory.
const OUT_OF_BOUNDS_POLICY: &str = r#"
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "{\"valid\":true}")
  (func (export "__guest_call") (param $op_len i32) (param $payload_len i32) (result i32)
    ;; validate_settings (17 bytes) is answered; validate (8 bytes) misbehaves.
    (if (i32.eq (local.get $op_len) (i32.const 17))
      (then
        (call $guest_response (i32.const 1024) (i32.const 14))
        (return (i32.const 1))))
    (call $guest_response (i32.const 0xFFFFFF00) (i32.const 4096))
    (i32.const 1)))
"#;

#[tokio::test]
async fn out_of_bounds_pointers_get_an_error_not_host_memory() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("oob.wasm");
    std::fs::write(&module, wat::parse_str(OUT_OF_BOUNDS_POLICY).unwrap()).unwrap();
    let server = start(&[policy("oob", &module, ""), required_labels("labels", "")]);
    let response = server
        .validate("oob", &review(pod("web", json!({}), &["nginx:1.27"])))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 500);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("out-of-bounds buffer"), "{message}");

    let response = server
        .validate(
            "labels",
            &review(pod("web", json!({"team": "a"}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(response["allowed"], true);
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors_and_the_server_keeps_serving() {
    let server = builder(required_labels("labels", ""))
        .arg("--max-request-body-bytes")
        .arg("100000")
        .start();

    let (status, body) = server
        .post_bytes("/validate/labels", b"{not json".to_vec())
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );

    let (status, body) = server
        .post_json(
            "/validate/labels",
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("no `request`"),
        "{body}"
    );

    // Without a uid the answer could not be matched: refused rather than answered with "".
    let mut no_uid = review(pod("web", json!({"team": "a"}), &["nginx:1.27"]));
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let (status, body) = server.post_json("/validate/labels", &no_uid).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("request.uid is missing"),
        "{body}"
    );

    let oversize = review(pod(
        "big",
        json!({"blob": "x".repeat(200_000)}),
        &["nginx:1.27"],
    ));
    let (status, body) = server.post_json("/validate/labels", &oversize).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("100000 bytes"),
        "{body}"
    );

    let (status, body) = server
        .post_json(
            "/validate/nope",
            &review(pod("web", json!({}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "no policy with id 'nope'");

    let response = server
        .validate(
            "labels",
            &review(pod("web", json!({"team": "a"}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(response["allowed"], true);
}

#[tokio::test]
async fn unicode_and_large_objects_pass_through_intact() {
    let server = start(&[required_labels("labels", "")]);
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

#[tokio::test]
async fn validate_raw_and_audit_endpoints() {
    let server = start(&[
        deny_latest_tag("latest", ""),
        default_labels("defaults", "  allowedToMutate: true"),
    ]);

    let raw = json!({"request": {"uid": "raw-1", "namespace": "default", "object": pod("web", json!({}), &["nginx"])}});
    let (status, body) = server.post_json("/validate_raw/latest", &raw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["uid"], "raw-1");
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 403);

    // Audit reports the verdict but never mutates.
    let object = review(pod("web", json!({}), &["nginx:1.27"]));
    let (status, body) = server.post_json("/audit/defaults", &object).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none(), "{body}");
}

#[tokio::test]
async fn probes_answer_and_tls_speaks_http2() {
    let server = start(&[required_labels("labels", "")]);
    let (status, _) = server.get("/readiness").await;
    assert_eq!(status, 200);
    let (status, _) = server.get("/livez").await;
    assert_eq!(status, 200);

    let response = server
        .client
        .post(server.url("/validate/labels"))
        .json(&review(pod("web", json!({"team": "a"}), &["nginx:1.27"])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);

    let http1 = reqwest::Client::builder()
        .http1_only()
        .danger_accept_invalid_certs(true)
        .use_rustls_tls()
        .build()
        .unwrap();
    let response = http1.get(server.url("/livez")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_requests_in_flight_finish() {
    let mut server = builder(misbehaving("spin", "loop", "  timeoutEvalSeconds: 2"))
        .arg("--log-level")
        .arg("info,policy_server=debug")
        .start();
    let request = server
        .client
        .post(server.url("/validate/spin"))
        .json(&review(pod("web", json!({}), &["nginx:1.27"])))
        .send();
    let in_flight = tokio::spawn(request);
    // Wait until the evaluation is running, then ask the server to stop.
    server.wait_for_log(|e| e["message"] == "evaluating").await;
    let status = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "{status:?}");
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["response"]["status"]["code"], 500, "{body}");
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

    let settings = "  settings:\n    required_labels: [team]";
    let server = start(&[policy("annotated", &wapc, settings)]);
    let response = server
        .validate("annotated", &review(pod("web", json!({}), &["nginx:1.27"])))
        .await;
    assert_eq!(
        response["status"]["message"],
        "Pod 'web' is missing required labels: team"
    );

    let (status, output) = builder(policy("rego", &opa, settings)).start_expecting_failure();
    assert!(!status.success());
    assert!(
        output.contains("policy 'rego'") && output.contains("execution mode 'opa'"),
        "{output}"
    );
}

#[tokio::test]
async fn without_a_certificate_it_serves_plain_http_and_warns() {
    let server = builder(required_labels("labels", "")).plain_http().start();
    assert!(server.base_url.starts_with("http://"));
    let response = server
        .validate(
            "labels",
            &review(pod("web", json!({"team": "a"}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(response["allowed"], true);
    let warning = server
        .wait_for_log(|e| {
            e["level"] == "WARN" && e["message"].as_str().unwrap_or("").contains("plain HTTP")
        })
        .await;
    assert!(warning["message"].as_str().unwrap().contains("--cert-file"));
}

#[tokio::test]
async fn a_separate_probe_port_answers_probes_only() {
    let probe_port = {
        // Reserve a free port, then hand it to the server.
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let server = builder(required_labels("labels", ""))
        .arg("--readiness-probe-port")
        .arg(probe_port.to_string())
        .start();
    let probes = reqwest::Client::new();
    let readiness = probes
        .get(format!("http://127.0.0.1:{probe_port}/readiness"))
        .send()
        .await
        .unwrap();
    assert_eq!(readiness.status(), 200);
    let validate = probes
        .post(format!("http://127.0.0.1:{probe_port}/validate/labels"))
        .json(&review(pod("web", json!({"team": "a"}), &["nginx:1.27"])))
        .send()
        .await
        .unwrap();
    assert_eq!(
        validate.status(),
        404,
        "admission requests are not served on the probe port"
    );
    drop(server);
}

#[tokio::test]
async fn the_noop_route_is_off_unless_enabled_and_parses_like_validate() {
    let server = start(&[deny_latest_tag("latest", "")]);
    let object = review(pod("web", json!({}), &["nginx:latest"]));
    let (status, body) = server.post_json("/noop", &object).await;
    assert_eq!(status, 404, "{body}");

    let server = builder(deny_latest_tag("latest", ""))
        .arg("--enable-noop-route")
        .start();
    // Allowed without running a policy (this pod would be denied by `latest`).
    let (status, body) = server.post_json("/noop", &object).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert_eq!(body["response"]["uid"], object["request"]["uid"]);
    let denied = server.validate("latest", &object).await;
    assert_eq!(denied["allowed"], false, "{denied}");

    let (status, body) = server.post_bytes("/noop", b"{not json".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.get("/noop").await;
    assert_eq!(status, 405, "{body}");
}

#[tokio::test]
async fn the_compile_cache_is_filled_once_and_then_used() {
    let cache = tempfile::tempdir().unwrap();
    let policies = [required_labels("labels", ""), deny_latest_tag("latest", "")];
    let start_cached = || {
        builder(policies.concat())
            .arg("--compile-cache-dir")
            .arg(cache.path().display().to_string())
            .start()
    };
    let cache_log = |event: &Value| event["message"] == "compile cache";
    let object = review(pod("web", json!({}), &["nginx:latest"]));

    let mut cold = start_cached();
    let logged = cold.wait_for_log(cache_log).await;
    // Each module is compiled to run its start-up, then as the pre-initialized snapshot.
    assert_eq!(
        (logged["hits"].as_u64(), logged["misses"].as_u64()),
        (Some(0), Some(4)),
        "{logged}"
    );
    for module in ["required_labels.wasm", "deny_latest_tag.wasm"] {
        let compiled = cold
            .wait_for_log(|event| {
                event["message"] == "compiled"
                    && event["module"]
                        .as_str()
                        .is_some_and(|m| m.ends_with(module))
            })
            .await;
        assert_eq!(compiled["pre_initialized"], true, "{compiled}");
    }
    assert_eq!(cold.validate("labels", &object).await["allowed"], false);
    assert!(cold.terminate().success());
    let files = walk(cache.path());
    assert!(
        !files.is_empty(),
        "nothing was written to the compile cache"
    );
    let snapshots = files
        .iter()
        .filter(|file| {
            file.parent()
                .is_some_and(|dir| dir.ends_with("pre-initialized"))
        })
        .count();
    assert_eq!(
        snapshots, 2,
        "one pre-initialized snapshot per module: {files:?}"
    );

    let warm = start_cached();
    let logged = warm.wait_for_log(cache_log).await;
    assert_eq!(
        (logged["hits"].as_u64(), logged["misses"].as_u64()),
        (Some(2), Some(0)),
        "{logged}"
    );
    // Same verdicts from the cached code.
    assert_eq!(warm.validate("labels", &object).await["allowed"], false);
    let accepted = warm
        .validate(
            "latest",
            &review(pod("web", json!({"team": "a"}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(accepted["allowed"], true, "{accepted}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn a_full_evaluation_queue_answers_503_and_the_server_recovers() {
    let server = builder(
        [
            misbehaving("spin", "loop", "  timeoutEvalSeconds: 2"),
            deny_latest_tag("latest", ""),
        ]
        .concat(),
    )
    .arg("--workers")
    .arg("1")
    .arg("--max-queued-evaluations")
    .arg("1")
    .start();
    let object = review(pod("web", json!({}), &["nginx:1.27"]));
    // One loops on the only worker, one may wait for it: the others are refused at once.
    let answers =
        futures::future::join_all((0..4).map(|_| server.post_json("/validate/spin", &object)))
            .await;
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 503)
        .map(|(_, body)| body)
        .collect();
    assert!(!refused.is_empty(), "{answers:?}");
    for body in refused {
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("overloaded"), "{body}");
    }
    for (status, body) in answers.iter().filter(|(status, _)| *status != 503) {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["response"]["status"]["code"], 500, "{body}");
    }

    // Once the queue drains, requests are served again.
    let answer = server.validate("latest", &object).await;
    assert_eq!(answer["allowed"], true, "{answer}");
}
