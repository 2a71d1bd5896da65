//! The policy author's commands, as a person runs them: `run`, `test`, `snapshot` and
//! `bench` on the example policies (legacy modules and components), their exit codes,
//! their output, and their errors.

use std::path::Path;
use std::process::{Command, Output};

use policy_server_e2e::build::repo_root;
use policy_server_e2e::fake_apiserver::{FakeApiServer, INGRESSES, NAMESPACES};
use policy_server_e2e::wasm;
use serde_json::{Value, json};

use crate::cluster_context::{ingress, namespace};

/// Runs `policy-server ARGS` in the examples directory.
fn author(args: &[&str]) -> Output {
    wasm();
    Command::new(env!("CARGO_BIN_EXE_policy-server"))
        .args(args)
        .current_dir(repo_root().join("examples"))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON documents of `stdout`, pretty-printed one after the other.
fn documents(stdout: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

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
    assert!(
        text(&rejected.stderr).contains("rejected (403): Images must be pinned"),
        "{}",
        text(&rejected.stderr)
    );

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
    assert!(
        text(&monitored.stderr).contains(
            "allowed (monitor mode; the policy rejected it: (400): Pod 'web' is missing required labels"
        ),
        "{}",
        text(&monitored.stderr)
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
    assert!(
        text(&not_a_mapping.stderr)
            .contains("not a mapping of settings (to read a file, write @FILE)"),
        "{}",
        text(&not_a_mapping.stderr)
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
        assert!(
            text(&mutated.stderr).contains("mutated"),
            "{}",
            text(&mutated.stderr)
        );
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

#[test]
fn the_examples_test_file_passes_and_writes_junit() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let output = author(&[
        "test",
        "policy-tests.yml",
        "--junit",
        &junit.display().to_string(),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    let cases = stdout
        .lines()
        .filter(|line| line.starts_with("PASS "))
        .count();
    assert!(cases >= 14, "{stdout}");
    assert!(
        stdout.contains(&format!("{cases} passed, 0 failed (1 file)")),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(&format!("tests=\"{cases}\"")), "{xml}");
    assert!(xml.contains("failures=\"0\""), "{xml}");
}

#[test]
fn a_failing_case_shows_what_differs_and_fails_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let examples = repo_root().join("examples");
    let suite = dir.path().join("suite.yml");
    std::fs::write(
        &suite,
        format!(
            "policies: {}\ncases:\n\
             - name: expects the wrong label\n  policy: default-labels\n  request: {}\n  \
             expect:\n    allowed: true\n    patchedObject:\n      apiVersion: v1\n      kind: Pod\n      \
             metadata: {{name: web, namespace: default, labels: {{team: platform}}}}\n\
             - name: expects an allowance\n  policy: deny-latest-tag\n  request: {}\n  \
             expect: {{allowed: true}}\n\
             - name: names a module that is not there\n  policy: no-such-policy.wasm\n  \
             request: {}\n  expect: {{allowed: false}}\n\
             - name: expects the trap it gets\n  policy: {}\n  settings: {{behaviour: trap}}\n  \
             request: {}\n  expect: {{error: trapped}}\n",
            examples.join("policies.yml").display(),
            examples.join("requests/pod-latest.json").display(),
            examples.join("requests/pod-latest.json").display(),
            examples.join("requests/pod-latest.json").display(),
            wasm().misbehaving.display(),
            examples.join("requests/pod-latest.json").display(),
        ),
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let output = author(&[
        "test",
        &suite.display().to_string(),
        "--junit",
        &junit.display().to_string(),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("FAIL expects the wrong label"), "{stdout}");
    assert!(stdout.contains("patched object differs"), "{stdout}");
    assert!(stdout.contains("-      \"team\": \"platform\""), "{stdout}");
    assert!(
        stdout.contains("+      \"team\": \"unassigned\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("allowed: expected true, got false (Images must be pinned"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL names a module that is not there"),
        "a rejection expected of a policy is not met by a failure to load it: {stdout}"
    );
    assert!(stdout.contains("is neither a policy of"), "{stdout}");
    assert!(stdout.contains("PASS expects the trap it gets"), "{stdout}");
    assert!(stdout.contains("1 passed, 3 failed"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"3\""), "{xml}");

    // A file that cannot run is reported, the others still run, and the exit code says so.
    let output = author(&["test", "no-such-file.yml", "policy-tests.yml"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("ERROR no-such-file.yml: cannot read"),
        "{stdout}"
    );
    assert!(
        stdout.contains(" passed, 0 failed (2 files, 1 could not run)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_of_the_live_cluster_replays_the_same_verdicts() {
    let fake = FakeApiServer::start().await;
    fake.apply(NAMESPACES, namespace("default", json!({})));
    fake.apply(INGRESSES, ingress("web", "default", "shop.example.com"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let snapshot = dir.path().join("snapshot.yaml");
    let output = tokio::task::block_in_place(|| {
        author(&[
            "snapshot",
            "--policies",
            "policies.yml",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "-o",
            &snapshot.display().to_string(),
        ])
    });
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let recorded = std::fs::read_to_string(&snapshot).unwrap();
    assert!(
        recorded.contains("IngressList") && recorded.contains("shop.example.com"),
        "{recorded}"
    );

    // The recorded ingress refuses the same host, for the module and its component twin.
    for policy in ["unique-ingress-host", "unique-ingress-host-component"] {
        let output = tokio::task::block_in_place(|| {
            author(&[
                "run",
                policy,
                "--policies",
                "policies.yml",
                "--request",
                "requests/ingress-taken-host.json",
                "--cluster-snapshot",
                &snapshot.display().to_string(),
            ])
        });
        assert_eq!(
            output.status.code(),
            Some(1),
            "{policy}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stderr).contains("ingress default/web"),
            "{}",
            text(&output.stderr)
        );
    }
    // And straight from the live cluster, listed once.
    let output = tokio::task::block_in_place(|| {
        author(&[
            "run",
            "unique-ingress-host",
            "--policies",
            "policies.yml",
            "--request",
            "requests/ingress-taken-host.json",
            "--live-cluster",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
        ])
    });
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("ingress default/web"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn bench_reports_rate_latency_and_host_calls() {
    let output = author(&[
        "bench",
        "namespace-label",
        "--policies",
        "policies.yml",
        "--cluster-snapshot",
        "cluster-snapshot.yaml",
        "--request",
        &service_request().display().to_string(),
        "--seconds",
        "0.3",
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    for part in [
        "evaluations",
        "/s)",
        "p50",
        "p99",
        "host calls   1.0 per evaluation",
        "without them",
    ] {
        assert!(stdout.contains(part), "{part}: {stdout}");
    }
}

/// A Service in `default` (whose namespace allows services), as a plain object.
fn service_request() -> &'static Path {
    static FILE: std::sync::OnceLock<tempfile::TempPath> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "api", "namespace": "default"},
                   "spec": {"ports": [{"port": 80}]}})
            .to_string(),
        )
        .unwrap();
        file.into_temp_path()
    })
}
