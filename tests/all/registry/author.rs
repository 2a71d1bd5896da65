//! The author's `test` command pulls its modules as the server does, with
//! `--sources-path` saying which CA to trust.

use std::process::Command;

use policy_server_e2e::registry::{self, Transport};
use serde_json::json;

use super::{PodPrivilegedRegistry, plain_pod, privileged_pod};

#[tokio::test(flavor = "multi_thread")]
async fn the_test_command_pulls_a_policy_trusting_the_sources_file() {
    if !registry::available() {
        return;
    }
    let pushed = PodPrivilegedRegistry::start(Transport::Tls, false).await;
    let (dir, sources, module) = (&pushed.dir, &pushed.sources, pushed.module());
    let suite = dir.path().join("policy-tests.yml");
    let cases = json!({"cases": [
        {"name": "a privileged pod is rejected", "policy": module,
         "request": privileged_pod(), "expect": {"allowed": false, "message": "Privileged"}},
        {"name": "a plain pod is allowed", "policy": module,
         "request": plain_pod(), "expect": {"allowed": true}},
    ]});
    std::fs::write(&suite, cases.to_string()).unwrap();
    let test = |flags: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_policy-server"))
            .arg("test")
            .arg(&suite)
            .args(flags)
            // The user-level module store, kept inside the test.
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code(), stdout)
    };

    // Without sources.yml the test CA is not trusted: the cases fail and say why.
    let (code, stdout) = test(&[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("0 passed, 2 failed"), "{stdout}");
    assert!(stdout.contains("is not trusted"), "{stdout}");

    let (code, stdout) = test(&["--sources-path", &sources.display().to_string()]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
}
