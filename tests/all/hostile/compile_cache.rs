//! The compile cache holds code the server runs: it must be the server's alone, and an
//! artifact runs only for the module it was made from.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::{deny_latest_tag, pinned_pod, required_labels, server};

fn cached_server(cache: &Path) -> policy_server_e2e::ServerBuilder {
    server([("latest", deny_latest_tag()), ("labels", required_labels())])
        .arg("--compile-cache-dir")
        .arg(cache.display().to_string())
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn a_cache_others_can_write_stops_the_start_with_the_reason() {
    let parent = tempfile::tempdir().unwrap();
    let cache = parent.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (status, output) = cached_server(&cache).start_expecting_failure();
    assert!(!status.success());
    assert!(output.contains("writable by others"), "{output}");
}

#[tokio::test]
async fn swapped_artifacts_are_rebuilt_not_run_for_the_wrong_policy() {
    let parent = tempfile::tempdir().unwrap();
    let cache = parent.path().join("cache");
    let unlabelled = policy_server_e2e::requests::review(policy_server_e2e::requests::pod(
        "web",
        json!({}),
        &["nginx:1.27"],
    ));

    let mut cold = cached_server(&cache).start();
    assert_eq!(cold.validate("labels", &unlabelled).await["allowed"], false);
    // Logged once the background upgrades have stored the pre-initialized modules.
    cold.wait_for_log(|event| event["message"] == "compile cache")
        .await;
    assert!(cold.terminate().success());
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // Swap every pair of artifacts of the same kind, as an attacker (or a bad copy)
    // would: `labels` would then run `latest`'s code and let the unlabelled pod in.
    for folder in ["compiled", "pre-initialized"] {
        let files = files_in(&cache.join(folder));
        assert!(files.len() >= 2, "{folder}: {files:?}");
        for pair in files.chunks_exact(2) {
            let swap = parent.path().join("swap");
            std::fs::rename(&pair[0], &swap).unwrap();
            std::fs::rename(&pair[1], &pair[0]).unwrap();
            std::fs::rename(&swap, &pair[1]).unwrap();
        }
    }

    let warm = cached_server(&cache).start();
    let verdict = warm.validate("labels", &unlabelled).await;
    assert_eq!(verdict["allowed"], false, "{verdict}");
    let verdict = warm.validate("latest", &pinned_pod()).await;
    assert_eq!(verdict["allowed"], true, "{verdict}");
    let ignored = warm
        .wait_for_log(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("ignoring a cached artifact"))
        })
        .await;
    let reason = ignored["message"].as_str().unwrap();
    assert!(reason.contains("made from another module"), "{ignored}");
}
