//! The container image (host/Dockerfile), built with buildah where it is installed, and
//! the server run in it.

use std::path::Path;
use std::process::Command;

use policy_server_e2e::build::repo_root;
use policy_server_e2e::registry::{self, TestRegistry, Transport};
use policy_server_e2e::wasm;

#[tokio::test(flavor = "multi_thread")]
async fn the_image_holds_the_server_its_libraries_and_the_modules() {
    if Command::new("buildah").arg("--version").output().is_err() {
        eprintln!("skipped: no container builder here (install Debian's buildah to run it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    let module = &wasm().deny_latest_tag;
    run(Command::new(repo_root().join("host/image/rootfs.sh"))
        .arg(env!("CARGO_BIN_EXE_policy-server"))
        .arg(&rootfs)
        .arg(module));
    // What the manifests' ConfigMap would hold, pointing into the image.
    let name = Path::new(module).file_name().unwrap().to_str().unwrap();
    std::fs::create_dir(rootfs.join("config")).unwrap();
    let mut policies = format!("pinned:\n  module: /policies/{name}\n");
    // And one the image pulls from a registry over TLS, where one can run: the image's
    // TLS stack verifies the registry with the CA that sources.yml names.
    let registry = if registry::available() {
        let registry = TestRegistry::start(Transport::Tls, false).await;
        registry.push("policies/deny-latest", "v1", module).await;
        registry.sources_file(&rootfs.join("config"));
        policies += &format!(
            "pulled:
  module: {}
",
            registry.module("policies/deny-latest:v1")
        );
        Some(registry)
    } else {
        std::fs::write(rootfs.join("config/sources.yml"), "{}").unwrap();
        None
    };
    std::fs::write(rootfs.join("config/policies.yml"), policies).unwrap();
    // A storage of its own, so the test leaves nothing behind.
    let buildah = || {
        let mut command = Command::new("buildah");
        command
            .arg("--root")
            .arg(dir.path().join("storage"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        command
    };
    run(buildah()
        .args([
            "bud",
            "--isolation",
            "chroot",
            "-t",
            "policy-server-test",
            "-f",
        ])
        .arg(repo_root().join("host/Dockerfile"))
        .arg(&rootfs));

    let config = run(buildah().args(["inspect", "--type", "image", "policy-server-test"]));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    let config = &config["OCIv1"]["config"];
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/policy-server"]));

    // It runs with nothing but what the image holds.
    let container = run(buildah().args(["from", "policy-server-test"]));
    let version = run(buildah()
        .args(["run", "--isolation", "chroot", container.trim(), "--"])
        .args(["/policy-server", "--version"]));
    assert!(version.starts_with("policy-server "), "{version}");
    // As the non-root user, on the image's own files: the module loads, compiles and
    // checks its settings (precompile does all a start does, without serving).
    run(buildah()
        .args(["run", "--isolation", "chroot", container.trim(), "--"])
        .args([
            "/policy-server",
            "precompile",
            "--policies",
            "/config/policies.yml",
        ])
        .args(["--compile-cache-dir", "/tmp/cache"])
        .args(["--policies-download-dir", "/tmp/modules"])
        .args(["--sources-path", "/config/sources.yml"]));
    drop(registry);
}

/// Runs `command`, panicking with its output if it fails; returns its stdout.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
