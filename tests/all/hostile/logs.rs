//! The log: nothing a client or a guest writes can forge a line, flood it, or leak a
//! Secret into it; the answers that carry guest text are capped too.

use serde_json::json;

use crate::{misbehaving, misbehaving_component, pinned_pod, server};

const FORGED: &str = "2026-12-01T00:00:00.000000Z  INFO policy_server: forged line";

#[tokio::test]
async fn forged_uids_and_guest_output_neither_forge_nor_flood_the_text_log() {
    let server = server([
        ("huge-error", misbehaving("huge_error")),
        ("huge-rejection", misbehaving("huge_rejection")),
        ("flood", misbehaving("log_flood")),
    ])
    .text_log()
    .start();
    let mut object = pinned_pod();
    object["request"]["uid"] = json!(format!("uid\n{FORGED}\u{1b}[2J"));

    let (status, body) = server.post_json("/validate/huge-error", &object).await;
    assert_eq!(status, 200, "{body}");
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.len() < 300 << 10,
        "a {} byte message",
        message.len()
    );
    assert!(message.contains("more bytes"), "{}", &message[..200]);

    let answer = server.validate("huge-rejection", &object).await;
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message.len() < 300 << 10,
        "a {} byte message",
        message.len()
    );

    let accepted = server.validate("flood", &pinned_pod()).await;
    assert_eq!(accepted["allowed"], true, "{accepted}");
    // The warning about the flood is the last thing logged for it.
    policy_server_e2e::eventually("the flood is cut off with a warning", || async {
        let log = server.log();
        (!log.contains("more log output than one evaluation may"))
            .then(|| format!("{} bytes of log", log.len()))
    })
    .await;

    let log = server.log();
    for line in log.lines() {
        assert!(!line.starts_with(FORGED), "a forged line: {line}");
        assert!(!line.contains('\u{1b}'), "an escape sequence: {line:?}");
        assert!(line.len() < 10 << 10, "a {} byte log line", line.len());
    }
    assert!(
        log.contains("uid\\n2026-12-01"),
        "the uid was not logged escaped: {log}"
    );
    // 10,000 lines of 60 bytes asked for; one evaluation's allowance (64 KiB) given.
    assert!(log.len() < 200 << 10, "{} bytes of log", log.len());
}

#[tokio::test]
async fn a_policy_error_about_a_secret_never_reaches_the_log() {
    let server = server([("huge-error", misbehaving("huge_error"))]).start();
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "default"},
        "data": {"password": "c3VwZXItc2VjcmV0LXZhbHVl"},
    });
    let object = policy_server_e2e::requests::review(secret);
    let (status, body) = server.post_json("/validate/huge-error", &object).await;
    assert_eq!(status, 200, "{body}");
    let logged = server
        .wait_for_log(|event| event["message"] == "evaluation failed")
        .await;
    assert!(
        logged["error"].as_str().unwrap().contains("withheld"),
        "{logged}"
    );
    assert!(!server.log().contains("c3VwZXItc2VjcmV0LXZhbHVl"));
}

#[tokio::test]
async fn overload_is_logged_once_per_interval_not_once_per_request() {
    let server = server([("slow", misbehaving("loop").timeout_seconds(1))])
        .arg("--workers")
        .arg("1")
        .arg("--max-queued-evaluations")
        .arg("1")
        .start();
    let object = pinned_pod();
    let answers =
        futures::future::join_all((0..40).map(|_| server.post_json("/validate/slow", &object)))
            .await;
    let refused = answers.iter().filter(|(status, _)| *status == 503).count();
    assert!(refused >= 30, "{refused} of 40 refused");
    let lines = server
        .log()
        .lines()
        .filter(|line| line.contains("request refused for now"))
        .count();
    assert!(lines <= 2, "{lines} log lines for {refused} refusals");
}

#[tokio::test]
async fn a_components_stderr_reaches_the_log_tagged_escaped_and_capped() {
    // Each write to stderr crosses into the host (about 0.2 ms): room for a busy machine.
    let chatty = misbehaving_component("stderr_flood").timeout_seconds(10);
    let server = server([("chatty", chatty)]).start();
    // Writes past the allowance succeed for the guest: it is not broken by them.
    let accepted = server.validate("chatty", &pinned_pod()).await;
    assert_eq!(accepted["allowed"], true, "{accepted}");
    let first = server
        .wait_for_log(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("stderr line 0 "))
        })
        .await;
    assert_eq!(first["policy"], "chatty", "{first}");
    assert_eq!(first["stream"], "stderr", "{first}");
    assert!(
        !first["message"].as_str().unwrap().contains('\u{1b}'),
        "{first}"
    );
    server
        .wait_for_log(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.contains("more output than one evaluation may"))
        })
        .await;
    // 2,000 lines of about 65 bytes asked for; one evaluation's 64 KiB given.
    let lines = server
        .log()
        .lines()
        .filter(|l| l.contains("stderr line"))
        .count();
    assert!(
        lines < 1_500,
        "{lines} of 2,000 lines logged (about 1,100 fit)"
    );
}
