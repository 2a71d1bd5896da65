//! Builds what the tests run: the example policies, the test-only policies and the
//! server binary. Each is built once per test process, by cargo (which locks its own
//! target directories, so parallel test processes are safe).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of every wasm module the tests use.
#[derive(Debug)]
pub struct Wasm {
    /// kubewarden-policy-sdk, wasm32-wasip1, validating.
    pub required_labels: PathBuf,
    /// kubewarden-policy-sdk, wasm32-unknown-unknown, mutating.
    pub default_labels: PathBuf,
    /// plain wapc-guest, wasm32-wasip1, validating.
    pub deny_latest_tag: PathBuf,
    /// test-only, wasm32-wasip1: misbehaves as its settings say.
    pub misbehaving: PathBuf,
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository")
}

/// Builds (once) and returns the wasm modules.
pub fn wasm() -> &'static Wasm {
    static WASM: OnceLock<Wasm> = OnceLock::new();
    WASM.get_or_init(|| {
        install_targets(&["wasm32-wasip1", "wasm32-unknown-unknown"]);
        let examples = repo_root().join("examples");
        let test_policies = repo_root().join("tests/policies");
        cargo_build(&examples, "wasm32-wasip1", &["required-labels", "deny-latest-tag"]);
        cargo_build(&examples, "wasm32-unknown-unknown", &["default-labels"]);
        cargo_build(&test_policies, "wasm32-wasip1", &["misbehaving"]);
        let module = |dir: &Path, target: &str, name: &str| {
            let path = dir.join(format!("target/{target}/release/{name}.wasm"));
            assert!(path.is_file(), "{} was not built", path.display());
            path
        };
        Wasm {
            required_labels: module(&examples, "wasm32-wasip1", "required_labels"),
            default_labels: module(&examples, "wasm32-unknown-unknown", "default_labels"),
            deny_latest_tag: module(&examples, "wasm32-wasip1", "deny_latest_tag"),
            misbehaving: module(&test_policies, "wasm32-wasip1", "misbehaving"),
        }
    })
}

/// Builds (once) and returns the `policy-server` binary of this workspace.
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let status = Command::new(cargo_program())
            .current_dir(repo_root())
            .args(["build", "-p", "policy-server", "--bin", "policy-server"])
            .status()
            .expect("running cargo");
        assert!(status.success(), "building policy-server failed");
        // Tests run from <target>/debug/deps; the binary sits in <target>/debug.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target layout");
        let binary = profile_dir.join("policy-server");
        assert!(binary.is_file(), "{} not found", binary.display());
        binary
    })
}

fn install_targets(targets: &[&str]) {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let Ok(installed) = installed else {
        return; // no rustup: the toolchain must already have the targets
    };
    let installed = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|line| line.trim() == *t))
        .collect();
    if !missing.is_empty() {
        let status = Command::new("rustup")
            .args(["target", "add"])
            .args(&missing)
            .status()
            .expect("running rustup");
        assert!(status.success(), "rustup target add {missing:?} failed");
    }
}

fn cargo_build(workspace: &Path, target: &str, packages: &[&str]) {
    let mut command = cargo();
    command
        .current_dir(workspace)
        .args(["build", "--release", "--target", target]);
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command.status().expect("running cargo");
    assert!(status.success(), "building {packages:?} for {target} failed");
}

fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Cargo for the wasm workspaces, which keep their own target directories.
fn cargo() -> Command {
    let mut command = Command::new(cargo_program());
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        command.env_remove(var);
    }
    command
}
