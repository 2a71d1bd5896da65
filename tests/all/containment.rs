//! Policies that trap, panic, loop, grab memory, overflow their stack, call hosts that do
//! not exist or hand the host pointers outside their memory: each gets a clear error and
//! the server keeps serving the others.

use policy_server_e2e::Policy;
use policy_server_e2e::requests::{pod, review};
use serde_json::{Value, json};

use crate::{deny_latest_tag, misbehaving, required_labels, server, start};

#[tokio::test]
async fn a_looping_policy_times_out_while_other_policies_keep_answering() {
    let server = std::sync::Arc::new(start([
        // Long enough that ten quick answers cannot outlast it on a loaded machine.
        ("spin", misbehaving("loop").timeout_seconds(8)),
        ("labels", required_labels()),
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
    let server = server([
        ("trap", misbehaving("trap")),
        ("panic", misbehaving("panic")),
        ("grab", misbehaving("grab_memory")),
        ("deep", misbehaving("stack_overflow")),
        ("fine", misbehaving("accept")),
    ])
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
    let server = start([("remember", misbehaving("remember"))]);
    for _ in 0..5 {
        let response = server
            .validate("remember", &review(pod("web", json!({}), &["nginx:1.27"])))
            .await;
        assert_eq!(response["allowed"], true, "{response}");
    }
}

#[tokio::test]
async fn unknown_host_calls_get_a_host_error_the_guest_can_handle() {
    let server = start([("caller", misbehaving("unknown_host_call"))]);
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
    let server = start([("oob", Policy::new(&module)), ("labels", required_labels())]);
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
async fn a_full_evaluation_queue_answers_503_and_the_server_recovers() {
    let server = server([
        ("spin", misbehaving("loop").timeout_seconds(2)),
        ("latest", deny_latest_tag()),
    ])
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
