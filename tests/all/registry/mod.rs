//! Policies pulled from a real OCI registry (Debian's docker-registry, started per test)
//! over TLS with a test CA and over plain HTTP as an insecure source, with and without
//! credentials; and from an https:// URL. Skipped, with a message, where the registry is
//! not installed (CI installs it).

use std::path::Path;

use policy_server_e2e::registry::{self, TestRegistry, Transport};
use policy_server_e2e::requests::{pod, review};
use policy_server_e2e::{Policy, Server, ServerBuilder, wasm};
use serde_json::{Value, json};

use crate::metrics::{scrape, value};
use crate::{message, server};

mod author;
mod url;

fn privileged_pod() -> Value {
    let mut pod = pod("web", json!({}), &["nginx:1.27"]);
    pod["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    review(pod)
}

fn plain_pod() -> Value {
    review(pod("web", json!({}), &["nginx:1.27"]))
}

/// Checks that `id` serves pod-privileged's verdicts.
async fn serves_pod_privileged(server: &Server, id: &str) {
    let rejected = server.validate(id, &privileged_pod()).await;
    assert_eq!(rejected["allowed"], false, "{rejected}");
    assert_eq!(
        message(&rejected),
        "Privileged container is not allowed: c0"
    );
    let allowed = server.validate(id, &plain_pod()).await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
}

/// Starts a server that must refuse to start, saying `reason`; returns what it said.
fn refused(server: ServerBuilder, reason: &str) -> String {
    let (status, output) = server.start_expecting_failure();
    assert!(!status.success(), "{output}");
    assert!(output.contains(reason), "expected {reason:?} in:\n{output}");
    output
}

/// Flags of a server that keeps its downloads in `dir/store` and reads `sources`.
fn fetch_flags(dir: &Path, sources: Option<&Path>) -> Vec<String> {
    let mut flags = vec![
        "--policies-download-dir".to_owned(),
        dir.join("store").display().to_string(),
    ];
    if let Some(sources) = sources {
        flags.push("--sources-path".into());
        flags.push(sources.display().to_string());
    }
    flags
}

/// A registry over `transport` holding pod-privileged as `policies/pod-privileged:v1`,
/// and a temporary directory with the sources.yml that trusts it.
struct PodPrivilegedRegistry {
    registry: TestRegistry,
    dir: tempfile::TempDir,
    sources: std::path::PathBuf,
}

impl PodPrivilegedRegistry {
    async fn start(transport: Transport, authenticated: bool) -> Self {
        let registry = TestRegistry::start(transport, authenticated).await;
        registry
            .push("policies/pod-privileged", "v1", &wasm().pod_privileged)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let sources = registry.sources_file(dir.path());
        Self {
            registry,
            dir,
            sources,
        }
    }

    /// The module reference of the pushed tag.
    fn module(&self) -> String {
        self.registry.module("policies/pod-privileged:v1")
    }
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    format!(
        "sha256:{:x}",
        sha2::Sha256::digest(std::fs::read(path).unwrap())
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_pulled_over_tls_serves_and_a_restart_takes_it_from_the_store() {
    if !registry::available() {
        return;
    }
    let mut registry = TestRegistry::start(Transport::Tls, false).await;
    let module = &wasm().pod_privileged;
    let manifest = registry.push("policies/pod-privileged", "v1", module).await;
    let dir = tempfile::tempdir().unwrap();
    let sources = registry.sources_file(dir.path());
    let by_tag = registry.module("policies/pod-privileged:v1");
    let by_digest = registry.module(&format!("policies/pod-privileged@{manifest}"));
    let policies = [
        ("by-tag", Policy::new(&by_tag)),
        ("by-digest", Policy::new(&by_digest)),
    ];

    // The CA is not trusted without sources.yml: the start fails and says why.
    let output = refused(
        server(policies.clone()).args(fetch_flags(dir.path(), None)),
        "TLS certificate of localhost",
    );
    assert!(output.contains("is not trusted"), "{output}");
    assert!(
        output.contains(&format!("cannot fetch registry://{}", registry.host)),
        "{output}"
    );

    let server_with_store = || {
        server(policies.clone())
            .args(fetch_flags(dir.path(), Some(&sources)))
            .args(["--metrics-port", "0"])
    };
    let mut first = tokio::task::block_in_place(|| server_with_store().start());
    serves_pod_privileged(&first, "by-tag").await;
    serves_pod_privileged(&first, "by-digest").await;
    let digest = sha256_of(module);
    let stored = dir
        .path()
        .join("store/modules/sha256")
        .join(format!("{}.wasm", &digest["sha256:".len()..]));
    assert_eq!(
        sha256_of(&stored),
        digest,
        "the store keys the module by its digest"
    );
    let fetches = |scrape: &prometheus_parse::Scrape, outcome: &str| {
        value(
            scrape,
            "policy_server_module_fetches_total",
            &[("source", "registry"), ("outcome", outcome)],
        )
    };
    let scraped = scrape(&first).await;
    // Fetched at once: the second may find the module the first just stored.
    let downloaded = fetches(&scraped, "downloaded");
    assert!(downloaded >= 1.0, "{downloaded}");
    assert_eq!(downloaded + fetches(&scraped, "stored"), 2.0);
    first.terminate();

    // The registry is gone: the digest is served from the store without asking, the tag
    // from what it named last time, with a warning.
    registry.stop();
    let mut second = tokio::task::block_in_place(|| server_with_store().start());
    serves_pod_privileged(&second, "by-tag").await;
    serves_pod_privileged(&second, "by-digest").await;
    let log = second.log();
    assert!(
        log.contains("module pinned by digest is in the local store"),
        "{log}"
    );
    assert!(log.contains("serving the copy fetched before"), "{log}");
    let scraped = scrape(&second).await;
    assert_eq!(fetches(&scraped, "stored"), 1.0);
    assert_eq!(fetches(&scraped, "stale_copy"), 1.0);
    second.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_insecure_source_is_pulled_over_plain_http() {
    if !registry::available() {
        return;
    }
    let registry = TestRegistry::start(Transport::PlainHttp, false).await;
    registry
        .push("policies/pod-privileged", "v1", &wasm().pod_privileged)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let module = registry.module("policies/pod-privileged:v1");
    let policies = [("privileged", Policy::new(&module))];

    refused(
        server(policies.clone()).args(fetch_flags(dir.path(), None)),
        "does not speak TLS: one that serves plain HTTP must be listed in insecure_sources",
    );

    let sources = registry.sources_file(dir.path());
    let server = tokio::task::block_in_place(|| {
        server(policies)
            .args(fetch_flags(dir.path(), Some(&sources)))
            .start()
    });
    serves_pod_privileged(&server, "privileged").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_come_from_a_docker_config_and_bad_ones_are_named() {
    if !registry::available() {
        return;
    }
    let PodPrivilegedRegistry {
        registry,
        dir,
        sources,
    } = PodPrivilegedRegistry::start(Transport::Tls, true).await;
    let module = registry.module("policies/pod-privileged:v1");
    let policies = [("privileged", Policy::new(&module))];
    let with_config = |config: Option<&Path>| {
        let mut builder = server(policies.clone()).args(fetch_flags(dir.path(), Some(&sources)));
        if let Some(config) = config {
            builder = builder
                .arg("--docker-config-json-path")
                .arg(config.display().to_string());
        }
        builder
    };

    refused(with_config(None), "asks for credentials and there are none");

    let wrong = registry::docker_config(dir.path(), &registry.host, registry::USER, "wrong");
    let output = refused(with_config(Some(&wrong)), "refused the credentials");
    assert!(output.contains("config.json"), "{output}");

    let right = registry::docker_config(
        dir.path(),
        &registry.host,
        registry::USER,
        registry::PASSWORD,
    );
    let server = tokio::task::block_in_place(|| with_config(Some(&right)).start());
    serves_pod_privileged(&server, "privileged").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_continue_on_errors_a_missing_tag_or_a_registry_down_fails_that_policy_alone() {
    if !registry::available() {
        return;
    }
    let PodPrivilegedRegistry {
        registry,
        dir,
        sources,
    } = PodPrivilegedRegistry::start(Transport::Tls, false).await;
    // A port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policies = [
        (
            "good",
            Policy::new(registry.module("policies/pod-privileged:v1")),
        ),
        (
            "missing-tag",
            Policy::new(registry.module("policies/pod-privileged:v9")),
        ),
        (
            "registry-down",
            Policy::new(format!(
                "registry://127.0.0.1:{closed}/policies/pod-privileged:v1"
            )),
        ),
    ];

    refused(
        server(policies.clone()).args(fetch_flags(dir.path(), Some(&sources))),
        "no such tag or digest",
    );

    let server = tokio::task::block_in_place(|| {
        server(policies)
            .args(fetch_flags(dir.path(), Some(&sources)))
            .arg("--continue-on-errors")
            .start()
    });
    serves_pod_privileged(&server, "good").await;
    let missing = server.validate("missing-tag", &plain_pod()).await;
    assert_eq!(missing["allowed"], false, "{missing}");
    assert!(
        message(&missing).contains("no such tag or digest"),
        "{missing}"
    );
    let down = server.validate("registry-down", &plain_pod()).await;
    assert_eq!(down["allowed"], false, "{down}");
    assert!(message(&down).contains("cannot be reached"), "{down}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_that_does_not_match_its_digest_is_refused() {
    if !registry::available() {
        return;
    }
    let registry = TestRegistry::start(Transport::Tls, false).await;
    let module = &wasm().pod_privileged;
    registry.push("policies/pod-privileged", "v1", module).await;
    // The registry's copy changes under it (a bad disk, a tampered mirror): it serves
    // bytes of the right length that are not the layer the manifest names.
    let blob = registry.blob_file(&sha256_of(module));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let sources = registry.sources_file(dir.path());
    refused(
        server([(
            "privileged",
            Policy::new(registry.module("policies/pod-privileged:v1")),
        )])
        .args(fetch_flags(dir.path(), Some(&sources))),
        "Invalid digest. Expected sha256:",
    );
    let stored = std::fs::read_dir(dir.path().join("store/modules/sha256")).unwrap();
    assert_eq!(stored.count(), 0, "nothing is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_pulls_again_and_follows_a_moved_tag() {
    if !registry::available() {
        return;
    }
    let registry = TestRegistry::start(Transport::Tls, false).await;
    registry
        .push("policies/workloads", "stable", &wasm().pod_privileged)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let sources = registry.sources_file(dir.path());
    let module = registry.module("policies/workloads:stable");
    let server = tokio::task::block_in_place(|| {
        server([("workloads", Policy::new(&module))])
            .args(fetch_flags(dir.path(), Some(&sources)))
            .start()
    });
    serves_pod_privileged(&server, "workloads").await;

    // The tag now names another policy: one that refuses `:latest` images.
    registry
        .push("policies/workloads", "stable", &wasm().deny_latest_tag)
        .await;
    server.signal_hangup();
    server
        .wait_for_log(|event| event["message"] == "policies reloaded")
        .await;
    let latest = review(pod("web", json!({}), &["nginx:latest"]));
    let rejected = server.validate("workloads", &latest).await;
    assert_eq!(rejected["allowed"], false, "{rejected}");
    // pod-privileged allowed that pod; the new module is the one serving.
    let privileged = server.validate("workloads", &privileged_pod()).await;
    assert_eq!(privileged["allowed"], true, "{privileged}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_module_that_failed_to_load_is_not_what_an_outage_falls_back_to() {
    if !registry::available() {
        return;
    }
    let mut registry = TestRegistry::start(Transport::Tls, false).await;
    registry
        .push("policies/workloads", "stable", &wasm().pod_privileged)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let sources = registry.sources_file(dir.path());
    let module = registry.module("policies/workloads:stable");
    let start = || {
        tokio::task::block_in_place(|| {
            server([("workloads", Policy::new(&module))])
                .args(fetch_flags(dir.path(), Some(&sources)))
                .start()
        })
    };
    let mut first = start();
    serves_pod_privileged(&first, "workloads").await;

    // The tag moves to bytes that are no module: the reload pulls them and fails.
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"not a wasm module").unwrap();
    registry.push("policies/workloads", "stable", &broken).await;
    first.signal_hangup();
    first
        .wait_for_log(|event| {
            event["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("reload failed"))
        })
        .await;
    serves_pod_privileged(&first, "workloads").await;
    first.terminate();

    // A restart during an outage serves the module that last loaded, not the broken one.
    registry.stop();
    let second = start();
    serves_pod_privileged(&second, "workloads").await;
    assert!(
        second.log().contains("serving the copy fetched before"),
        "{}",
        second.log()
    );
}
