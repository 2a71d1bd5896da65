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

mod run;
mod suite;

/// Runs `policy-server ARGS` in the examples directory.
fn author(args: &[&str]) -> Output {
    wasm();
    Command::new(env!("CARGO_BIN_EXE_policy-server"))
        .args(args)
        .current_dir(repo_root().join("examples"))
        .output()
        .unwrap()
}

/// Asserts that `output`'s stderr says `part`.
fn says(output: &Output, part: &str) {
    let stderr = text(&output.stderr);
    assert!(stderr.contains(part), "expected {part:?} in:\n{stderr}");
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
        says(&output, "ingress default/web");
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
    says(&output, "ingress default/web");
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
