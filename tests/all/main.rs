//! End to end: the real server binary, real policies built from this repository, real
//! AdmissionReviews over real sockets (HTTPS unless a test says otherwise), and for the
//! cluster a fake API server that speaks the real list/watch protocol.
//!
//! One test binary, linked once, with a module per topic (as wasmtime's `tests/all/`):
//! `cargo test -p policy-server --test all <module>::` runs one topic.
//!
//! - `author`: the policy author's commands (run, test, snapshot, bench);
//! - `verdicts`: what policies answer, as Kubewarden's semantics shape it;
//! - `configuration`: policies.yml and flags the server refuses, or serves around;
//! - `containment`: policies that trap, loop, grab memory or break the ABI;
//! - `endpoints`: the HTTP surface (bad requests, audit, raw, probes, noop, TLS);
//! - `compile_cache`: compiled policies reused across starts;
//! - `cluster_context`: the cache, from a snapshot file or a live (fake) API server;
//! - `cluster_queries`: Kubewarden's host calls and their typed twins, any kind;
//! - `components`: WIT components beside their legacy waPC twins;
//! - `tiers`: every kind of policy on baseline and optimized code, and the swap;
//! - `hostile`: clients and policies that try to take the server down;
//! - `image`: the container image, where buildah is installed;
//! - `metrics`: the Prometheus metrics, scraped and parsed;
//! - `registry`: policies pulled from a real OCI registry and from https:// URLs;
//! - `reload`: policies.yml reloaded under load, and a bad one refused.

mod author;
mod cluster_context;
mod cluster_queries;
mod compile_cache;
mod components;
mod configuration;
mod containment;
mod endpoints;
mod hostile;
mod image;
mod metrics;
mod registry;
mod reload;
mod tiers;
mod verdicts;

use policy_server_e2e::fake_apiserver::FakeApiServer;
use policy_server_e2e::requests::{pod, review};
use policy_server_e2e::{Policies, Policy, ServerBuilder, wasm};
use serde_json::{Value, json};

/// A server for `policies`: `server([("id", policy), ...])`.
fn server(policies: impl Into<Policies>) -> ServerBuilder {
    server_for_yaml(policies.into().to_yaml())
}

/// A server for a policies.yml taken as written: for what typed values cannot say.
fn server_for_yaml(policies_yml: impl Into<String>) -> ServerBuilder {
    ServerBuilder::new(env!("CARGO_BIN_EXE_policy-server"), policies_yml)
}

/// A server for `policies` with four workers, so a looping policy leaves room for others.
fn start(policies: impl Into<Policies>) -> policy_server_e2e::Server {
    server(policies).arg("--workers").arg("4").start()
}

/// A server reading the cluster from `fake`, with `extra` flags; not waiting until it is
/// ready (a test may check that it is not).
fn start_live(
    fake: &FakeApiServer,
    policies: impl Into<Policies>,
    extra: &[&str],
) -> policy_server_e2e::Server {
    let builder = server(policies)
        .kubeconfig(fake.kubeconfig())
        .args(extra.iter().copied());
    tokio::task::block_in_place(|| builder.start())
}

/// kubewarden-policy-sdk, validating: pods need the label `team`.
fn required_labels() -> Policy {
    Policy::new(&wasm().required_labels).settings(json!({"required_labels": ["team"]}))
}

/// kubewarden-policy-sdk, mutating: adds `team` and a non-ASCII `tier` label.
fn default_labels() -> Policy {
    Policy::new(&wasm().default_labels)
        .settings(json!({"labels": {"team": "unassigned", "tier": "ünïcode-☃"}}))
}

/// Plain wapc-guest, validating: images must pin a tag other than `latest`.
fn deny_latest_tag() -> Policy {
    Policy::new(&wasm().deny_latest_tag)
}

/// The test-only waPC policy that misbehaves as `behaviour` says.
fn misbehaving(behaviour: &str) -> Policy {
    Policy::new(&wasm().misbehaving).settings(json!({"behaviour": behaviour}))
}

/// The test-only component that misbehaves as `behaviour` says.
fn misbehaving_component(behaviour: &str) -> Policy {
    Policy::new(&wasm().misbehaving_component).settings(json!({"behaviour": behaviour}))
}

/// A review of a pod that every policy here accepts.
fn pinned_pod() -> Value {
    review(pod("web", json!({"team": "a"}), &["nginx:1.27"]))
}

/// The message of a rejection (empty if there is none).
fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Matches the log event `message` about the module whose path ends with `module`.
fn module_event(message: &'static str, module: &str) -> impl Fn(&Value) -> bool {
    let module = module.to_owned();
    move |event| {
        event["message"] == message
            && event["module"]
                .as_str()
                .is_some_and(|path| path.ends_with(&module))
    }
}

/// The cluster snapshot the examples ship.
fn example_snapshot() -> String {
    policy_server_e2e::build::repo_root()
        .join("examples/cluster-snapshot.yaml")
        .display()
        .to_string()
}
