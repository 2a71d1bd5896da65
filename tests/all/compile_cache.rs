//! The compile cache: filled by a cold start (compiled and pre-initialized code) or by
//! `policy-server precompile`, used by the next start, with the same verdicts. Tampering
//! with it is in `hostile`.

use policy_server_e2e::requests::{pod, review};
use policy_server_e2e::{Policies, Policy, wasm};
use serde_json::{Value, json};

use crate::{deny_latest_tag, module_event, required_labels, server};

#[tokio::test]
async fn the_compile_cache_is_filled_once_and_then_used() {
    let cache = tempfile::tempdir().unwrap();
    let policies = [("labels", required_labels()), ("latest", deny_latest_tag())];
    let start_cached = || {
        server(policies.clone())
            .arg("--compile-cache-dir")
            .arg(cache.path().display().to_string())
            .start()
    };
    let cache_log = |event: &Value| event["message"] == "compile cache";
    let object = review(pod("web", json!({}), &["nginx:latest"]));

    let mut cold = start_cached();
    // Each module is compiled once, as baseline code, before the server is ready
    // (running start-up in every instance), then, in the background, as optimized code
    // of the pre-initialized module: the only compile worth keeping.
    let logged = cold.wait_for_log(cache_log).await;
    assert_eq!(
        (logged["hits"].as_u64(), logged["misses"].as_u64()),
        (Some(0), Some(2)),
        "{logged}"
    );
    for module in ["required_labels.wasm", "deny_latest_tag.wasm"] {
        let compiled = cold.wait_for_log(module_event("compiled", module)).await;
        assert_eq!(
            (&compiled["pre_initialized"], &compiled["upgrading"]),
            (&json!(false), &json!(true)),
            "{compiled}"
        );
        let upgraded = cold.wait_for_log(module_event("upgraded", module)).await;
        assert_eq!(upgraded["pre_initialized"], true, "{upgraded}");
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
    // Ready on the stored snapshots: nothing left to upgrade.
    for module in ["required_labels.wasm", "deny_latest_tag.wasm"] {
        let compiled = warm.wait_for_log(module_event("compiled", module)).await;
        assert_eq!(
            (&compiled["pre_initialized"], &compiled["upgrading"]),
            (&json!(true), &json!(false)),
            "{compiled}"
        );
    }
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

/// Runs `policy-server precompile` on `policies` into `cache`; its status and output.
fn precompile(policies: Policies, cache: &std::path::Path) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yml");
    std::fs::write(&file, policies.to_yaml()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_policy-server"))
        .arg("precompile")
        .arg("--policies")
        .arg(&file)
        .arg("--compile-cache-dir")
        .arg(cache)
        .args(["--log-fmt", "json"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

#[tokio::test]
async fn a_server_started_on_a_precompiled_cache_compiles_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let policies = || {
        Policies::from([
            ("labels", required_labels()),
            ("latest", deny_latest_tag()),
            (
                "component",
                Policy::new(&wasm().default_labels_component)
                    .settings(json!({"labels": {"team": "unassigned"}}))
                    .allowed_to_mutate(true),
            ),
        ])
    };
    let (status, output) = precompile(policies(), cache.path());
    assert!(status.success(), "{output}");
    assert!(output.contains("\"precompiled\""), "{output}");

    let server = server(policies())
        .arg("--compile-cache-dir")
        .arg(cache.path().display().to_string())
        .start();
    let logged = server
        .wait_for_log(|event| event["message"] == "compile cache")
        .await;
    assert_eq!(
        (logged["hits"].as_u64(), logged["misses"].as_u64()),
        (Some(3), Some(0)),
        "{logged}"
    );
    for module in ["required_labels.wasm", "deny_latest_tag.wasm"] {
        let compiled = server.wait_for_log(module_event("compiled", module)).await;
        assert_eq!(
            (&compiled["pre_initialized"], &compiled["upgrading"]),
            (&json!(true), &json!(false)),
            "{compiled}"
        );
    }
    let unlabelled = review(pod("web", json!({}), &["nginx:1.27"]));
    assert_eq!(
        server.validate("labels", &unlabelled).await["allowed"],
        false
    );
    let mutated = server.validate("component", &unlabelled).await;
    assert_eq!(mutated["patchType"], "JSONPatch", "{mutated}");
}

#[tokio::test]
async fn precompile_refuses_a_broken_policy_with_the_reason() {
    let cache = tempfile::tempdir().unwrap();
    let broken = required_labels().settings(json!({"required_labels": []}));
    let (status, output) = precompile(Policies::from([("broken", broken)]), cache.path());
    assert!(!status.success(), "{output}");
    assert!(output.contains("policy 'broken'"), "{output}");
    assert!(
        output.contains("required_labels must name at least one label"),
        "{output}"
    );
}
