//! Builds the wasm the tests run: the example policies and the test-only policies, once
//! per test process, by cargo (which locks its own target directories, so parallel test
//! processes are safe). The server binary is built by cargo itself for the tests.

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
    /// kubewarden-policy-sdk 0.8 `cluster_context`, wasm32-wasip1: lists ingresses.
    pub unique_ingress_host: PathBuf,
    /// plain wapc-guest, wasm32-wasip1: lists namespaces with a bare host call.
    pub service_namespace_label: PathBuf,
    /// wit-bindgen component on `cluster-context@0.2.0` (`get`): the twin of
    /// `service_namespace_label` and `namespace_label`.
    pub service_namespace_label_component: PathBuf,
    /// wit-bindgen component built against the first shipped WIT, `cluster-context@0.1.0`:
    /// the twin of `unique_ingress_host`.
    pub unique_ingress_host_component: PathBuf,
    /// wit-bindgen component, wasm32-wasip2: the twin of `default_labels` (mutating).
    pub default_labels_component: PathBuf,
    /// kubewarden-policy-sdk 0.17 `list_resources_by_namespace`, wasm32-wasip1.
    pub unique_service_selector: PathBuf,
    /// kubewarden-policy-sdk 0.17 `get_resource`, wasm32-wasip1: `service_namespace_label`'s rule.
    pub namespace_label: PathBuf,
    /// kubewarden-policy-sdk 0.17 `list_resources_all` with a label selector, wasm32-wasip1.
    pub tenant_namespace_limit: PathBuf,
    /// kubewarden-policy-sdk 0.17 typed workloads (after Kubewarden's pod-privileged),
    /// wasm32-wasip1.
    pub pod_privileged: PathBuf,
    /// wit-bindgen component on `cluster-context@0.2.0`: the twin of `unique_service_selector`.
    pub unique_service_selector_component: PathBuf,
    /// wit-bindgen component on `cluster-context@0.2.0`: the twin of `tenant_namespace_limit`.
    pub tenant_namespace_limit_component: PathBuf,
    /// test-only, wasm32-wasip1: misbehaves as its settings say.
    pub misbehaving: PathBuf,
    /// test-only, wasm32-wasip2: the component that misbehaves as its settings say.
    pub misbehaving_component: PathBuf,
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
}

/// Builds (once) and returns the wasm modules.
pub fn wasm() -> &'static Wasm {
    static WASM: OnceLock<Wasm> = OnceLock::new();
    WASM.get_or_init(|| {
        install_targets(&["wasm32-wasip1", "wasm32-unknown-unknown", "wasm32-wasip2"]);
        let examples = repo_root().join("examples");
        let test_policies = repo_root().join("tests/policies");
        cargo_build(
            &examples,
            "wasm32-wasip1",
            &[
                "required-labels",
                "deny-latest-tag",
                "unique-ingress-host",
                "service-namespace-label",
                "unique-service-selector",
                "namespace-label",
                "tenant-namespace-limit",
                "pod-privileged",
            ],
        );
        cargo_build(&examples, "wasm32-unknown-unknown", &["default-labels"]);
        cargo_build(
            &examples,
            "wasm32-wasip2",
            &[
                "service-namespace-label-component",
                "unique-ingress-host-component",
                "default-labels-component",
                "unique-service-selector-component",
                "tenant-namespace-limit-component",
            ],
        );
        cargo_build(&test_policies, "wasm32-wasip1", &["misbehaving"]);
        cargo_build(&test_policies, "wasm32-wasip2", &["misbehaving-component"]);
        let module = |dir: &Path, target: &str, name: &str| {
            let path = dir.join(format!("target/{target}/release/{name}.wasm"));
            assert!(path.is_file(), "{} was not built", path.display());
            path
        };
        Wasm {
            required_labels: module(&examples, "wasm32-wasip1", "required_labels"),
            default_labels: module(&examples, "wasm32-unknown-unknown", "default_labels"),
            deny_latest_tag: module(&examples, "wasm32-wasip1", "deny_latest_tag"),
            unique_ingress_host: module(&examples, "wasm32-wasip1", "unique_ingress_host"),
            service_namespace_label: module(&examples, "wasm32-wasip1", "service_namespace_label"),
            service_namespace_label_component: module(
                &examples,
                "wasm32-wasip2",
                "service_namespace_label_component",
            ),
            unique_ingress_host_component: module(
                &examples,
                "wasm32-wasip2",
                "unique_ingress_host_component",
            ),
            default_labels_component: module(
                &examples,
                "wasm32-wasip2",
                "default_labels_component",
            ),
            unique_service_selector: module(&examples, "wasm32-wasip1", "unique_service_selector"),
            namespace_label: module(&examples, "wasm32-wasip1", "namespace_label"),
            tenant_namespace_limit: module(&examples, "wasm32-wasip1", "tenant_namespace_limit"),
            pod_privileged: module(&examples, "wasm32-wasip1", "pod_privileged"),
            unique_service_selector_component: module(
                &examples,
                "wasm32-wasip2",
                "unique_service_selector_component",
            ),
            tenant_namespace_limit_component: module(
                &examples,
                "wasm32-wasip2",
                "tenant_namespace_limit_component",
            ),
            misbehaving: module(&test_policies, "wasm32-wasip1", "misbehaving"),
            misbehaving_component: module(&test_policies, "wasm32-wasip2", "misbehaving_component"),
        }
    })
}

/// The Python example (`examples/service-limit-py`) built as a component by
/// componentize-py, which is installed from PyPI first if it is missing. Built once per
/// test process: it takes ~30 s.
pub fn python_component() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
        let has_it = Command::new("componentize-py")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_it {
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", COMPONENTIZE_PY])
                .status()
                .expect("running pip (python3 is needed for the Python example)");
            assert!(status.success(), "pip install {COMPONENTIZE_PY} failed");
        }
        let source = repo_root().join("examples/service-limit-py");
        let out_dir = repo_root().join("examples/target/python");
        std::fs::create_dir_all(&out_dir).expect("creating examples/target/python");
        let output = out_dir.join("service_limit.wasm");
        let status = Command::new("componentize-py")
            .current_dir(&source)
            .arg("--wit-path")
            .arg(repo_root().join("wit"))
            .args(["--world", "policy", "componentize", "app", "-o"])
            .arg(&output)
            .status()
            .expect("running componentize-py");
        assert!(
            status.success(),
            "componentize-py failed on {}",
            source.display()
        );
        output
    })
}

fn install_targets(targets: &[&str]) {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
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
    assert!(
        status.success(),
        "building {packages:?} for {target} failed"
    );
}

/// Cargo for the wasm workspaces, which keep their own target directories.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    command
}
