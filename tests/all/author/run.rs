//! `policy-server run`: one policy, one request, the server's answer and an exit code.

use serde_json::json;

use super::{author, documents, says, text};
use policy_server_e2e::wasm;

#[test]
fn run_answers_as_the_server_and_says_it_by_exit_code() {
    let rejected = author(&[
        "run",
        "deny-latest-tag",
        "--policies",
        "policies.yml",
        "--request",
        "requests/pod-latest.json",
    ]);
    assert_eq!(
        rejected.status.code(),
        Some(1),
        "{}",
        text(&rejected.stderr)
    );
    let review = &documents(&rejected.stdout)[0];
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(
        review["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(review["response"]["allowed"], false);
    says(&rejected, "rejected (403): Images must be pinned");

    // A module by path, settings inline, a plain object for a request.
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: kube-system}\n\
         spec:\n  containers: [{name: c, image: 'nginx:latest'}]\n",
    )
    .unwrap();
    let module = wasm().deny_latest_tag.display().to_string();
    let exempt = author(&[
        "run",
        &module,
        "--settings",
        r#"{"exempt_namespaces": ["kube-system"]}"#,
        "--request",
        &pod.display().to_string(),
        "--raw",
    ]);
    assert_eq!(exempt.status.code(), Some(0), "{}", text(&exempt.stderr));
    assert_eq!(
        text(&exempt.stdout).lines().count(),
        1,
        "--raw is one line per document"
    );
    assert_eq!(documents(&exempt.stdout)[0]["response"]["allowed"], true);
}

#[test]
fn run_shows_what_a_monitor_mode_policy_said_and_takes_settings_and_grants() {
    let monitored = author(&[
        "run",
        "required-labels-monitor",
        "--policies",
        "policies.yml",
        "--request",
        "requests/pod-latest.json",
    ]);
    assert_eq!(
        monitored.status.code(),
        Some(0),
        "{}",
        text(&monitored.stderr)
    );
    says(
        &monitored,
        "allowed (monitor mode; the policy rejected it: (400): Pod 'web' is missing required labels",
    );

    // Settings from a file, and a grant given on the command line to a bare module.
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.yaml");
    std::fs::write(&settings, "namespace_label: tenant\n").unwrap();
    let service = dir.path().join("service.json");
    std::fs::write(
        &service,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
               "spec": {"ports": [{"port": 80}]}})
        .to_string(),
    )
    .unwrap();
    let module = wasm().namespace_label.display().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            &module,
            "--request",
            service.to_str().unwrap(),
            "--cluster-snapshot",
            "cluster-snapshot.yaml",
        ];
        args.extend_from_slice(extra);
        author(&args)
    };
    let settings_flag = format!("@{}", settings.display());
    // No namespace in the object: `default`, as the API server does; it has `tenant`.
    let granted = run(&[
        "--settings",
        &settings_flag,
        "--allow-context",
        "v1/Namespace",
    ]);
    assert_eq!(granted.status.code(), Some(0), "{}", text(&granted.stderr));
    let ungranted = run(&["--settings", &settings_flag]);
    assert_eq!(
        ungranted.status.code(),
        Some(1),
        "{}",
        text(&ungranted.stderr)
    );
    let not_a_mapping = run(&["--settings", "settings.json"]);
    assert_eq!(not_a_mapping.status.code(), Some(2));
    says(
        &not_a_mapping,
        "not a mapping of settings (to read a file, write @FILE)",
    );
}

#[test]
fn run_prints_the_patched_object_of_a_mutation_for_either_kind_of_policy() {
    for policy in ["default-labels", "default-labels-component"] {
        let mutated = author(&[
            "run",
            policy,
            "--policies",
            "policies.yml",
            "--request",
            "requests/pod-latest.json",
        ]);
        assert_eq!(mutated.status.code(), Some(0), "{}", text(&mutated.stderr));
        let documents = documents(&mutated.stdout);
        assert_eq!(documents.len(), 2, "{}", text(&mutated.stdout));
        assert_eq!(documents[0]["response"]["patchType"], "JSONPatch");
        assert_eq!(
            documents[1]["metadata"]["labels"],
            json!({"app": "web", "team": "unassigned", "managed-by": "policy-server"}),
            "{policy}"
        );
        says(&mutated, "mutated");
    }
}

#[test]
fn run_errors_say_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let garbled = dir.path().join("request.json");
    std::fs::write(&garbled, "{\"request\": {\"uid\": \n").unwrap();
    let lacking = dir.path().join("namespaces-only.yaml");
    std::fs::write(
        &lacking,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n",
    )
    .unwrap();
    let trap = wasm().misbehaving.display().to_string();
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "run",
                "no/such/module.wasm",
                "--request",
                "requests/pod-latest.json",
            ],
            "cannot read module",
        ),
        (
            &[
                "run",
                "deny-latest-tag",
                "--policies",
                "policies.yml",
                "--request",
                &garbled.display().to_string(),
            ],
            "is not JSON or YAML",
        ),
        (
            &[
                "run",
                "unique-ingress-host",
                "--policies",
                "policies.yml",
                "--request",
                "requests/ingress-taken-host.json",
            ],
            "give --cluster-snapshot FILE",
        ),
        (
            &[
                "run",
                "unique-ingress-host",
                "--policies",
                "policies.yml",
                "--request",
                "requests/ingress-taken-host.json",
                "--cluster-snapshot",
                &lacking.display().to_string(),
            ],
            "has no object of it: add some, or an empty `kind: IngressList` document",
        ),
        (
            &[
                "run",
                "no-such-policy",
                "--policies",
                "policies.yml",
                "--request",
                "requests/pod-latest.json",
            ],
            "has no policy 'no-such-policy' (it has: ",
        ),
        (
            &[
                "run",
                &trap,
                "--settings",
                r#"{"behaviour": "trap"}"#,
                "--request",
                "requests/pod-latest.json",
            ],
            "error: internal server error: policy 'misbehaving'",
        ),
    ];
    for (args, reason) in cases {
        let output = author(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stderr).contains(reason),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}
