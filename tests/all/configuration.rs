//! policies.yml and flags: what the server refuses to start with (naming the policy and
//! the reason, before compiling anything), and what it serves around.

use policy_server_e2e::Policies;
use policy_server_e2e::requests::{pod, review};
use serde_json::json;

use crate::{deny_latest_tag, required_labels, server, server_for_yaml};

#[tokio::test]
async fn invalid_settings_stop_the_start_with_the_policy_and_reason() {
    let broken = required_labels().settings(json!({"required_labels": []}));
    let (status, output) = server([("broken", broken)]).start_expecting_failure();
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
    let twice = Policies::default()
        .with("labels", required_labels())
        .with("labels", deny_latest_tag());
    let cases = [
        (twice, vec![], "duplicate mapping key `labels`"),
        (Policies::default(), vec![], "there are no policies in it"),
        (
            [("labels", required_labels().timeout_seconds(0))].into(),
            vec![],
            "timeoutEvalSeconds is 0",
        ),
        (
            [("labels", required_labels())].into(),
            vec!["--policy-timeout", "100000000000000"],
            "--policy-timeout is 100000000000000",
        ),
    ];
    for (policies, args, reason) in cases {
        let mut builder = server(policies);
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
    let server = server_for_yaml("# the policies come later\n")
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
    let broken = required_labels()
        .monitor()
        .settings(json!({"required_labels": []}));
    let server = server([("broken", broken), ("labels", required_labels())])
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
