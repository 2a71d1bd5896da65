//! The server under attack, one module per thing an attacker can try: hold connections
//! and bodies, starve policies with a slow one, tamper with the compile cache, forge or
//! flood the log, and race the shutdown. Real sockets on loopback; each test bounded in
//! time and count. They assert behaviour and memory bounds, never speed.

mod compile_cache;
mod connections;
mod fairness;
mod logs;
mod raw;
mod shutdown;

use policy_server_e2e::ServerBuilder;
use policy_server_e2e::requests::{pod, review};
use serde_json::{Value, json};

/// A server for `policies`, an object of policy id to policy (written as JSON, which is
/// YAML too).
fn server(policies: Value) -> ServerBuilder {
    let yml = serde_json::to_string_pretty(&policies).unwrap();
    ServerBuilder::new(env!("CARGO_BIN_EXE_policy-server"), yml)
}

fn deny_latest_tag() -> Value {
    json!({"module": policy_server_e2e::wasm().deny_latest_tag})
}

fn required_labels() -> Value {
    json!({
        "module": policy_server_e2e::wasm().required_labels,
        "settings": {"required_labels": ["team"]},
    })
}

fn misbehaving(behaviour: &str) -> Value {
    json!({
        "module": policy_server_e2e::wasm().misbehaving,
        "settings": {"behaviour": behaviour},
    })
}

/// A review that `deny_latest_tag` accepts.
fn pinned_pod() -> Value {
    review(pod("web", json!({"team": "a"}), &["nginx:1.27"]))
}
