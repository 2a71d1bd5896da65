//! Kubewarden's `kubewarden/kubernetes/*` host calls (list by namespace, list all, get,
//! can_i) and their typed twins in `cluster-context@0.2.0`, answered from the indexed
//! cache: `snapshot` (real SDK 0.17 policies
//! and their component twins, byte-identical answers in both call styles, every refusal,
//! the README's examples) and `live` (any kind, a custom resource included, discovery at
//! start-up, the watch, and `can_i` against the API server).

mod live;
mod snapshot;

use std::path::Path;

pub use policy_server_e2e::policies::{NAMESPACE, SERVICE};
use policy_server_e2e::requests::review;
use policy_server_e2e::{Policies, Policy, Server, wasm};
use serde_json::{Value, json};

use crate::{server, start_live};

/// A policy entry: `module`, the kinds it may read, its settings (as JSON).
pub fn policy<'a>(
    id: &'a str,
    module: &Path,
    grants: &[(&str, &str)],
    settings: Value,
) -> (&'a str, Policy) {
    let policy = grants
        .iter()
        .fold(Policy::new(module).settings(settings), |policy, grant| {
            policy.reads(*grant)
        });
    (id, policy)
}

pub const WIDGET: (&str, &str) = ("example.com/v1", "Widget");

pub fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

pub fn service(namespace: &str, name: &str, selector: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
           "spec": {"selector": selector, "ports": [{"port": 80}]}})
}

/// A review of a cluster-scoped object carries no namespace at all.
pub fn cluster_review(object: Value) -> Value {
    let mut review = review(object);
    review["request"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    review
}

/// A cluster of three tenants' namespaces and a few Services, as a snapshot file.
pub fn snapshot(dir: &tempfile::TempDir) -> String {
    let objects = [
        namespace(
            "shop",
            json!({"services-allowed": "true", "tenant": "blue"}),
        ),
        namespace("shop-dev", json!({"tenant": "blue"})),
        namespace("team-a", json!({"tenant": "green"})),
        service("shop", "web", json!({"app": "web"})),
        service("shop", "db", json!({"app": "db"})),
        service("team-a", "web", json!({"app": "web"})),
    ];
    let path = dir.path().join("snapshot.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(&path, list.to_string()).unwrap();
    path.display().to_string()
}

pub fn start_on_snapshot(policies: impl Into<Policies>) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = server(policies)
        .arg("--cluster-snapshot")
        .arg(snapshot(&dir))
        .start();
    (server, dir)
}

pub fn verdict(response: &Value) -> (bool, Value, String) {
    (
        response["allowed"].as_bool().unwrap_or_default(),
        response["status"]["code"].clone(),
        response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// `call:` makes a raw waPC host call; the component makes the typed call. Both reject
/// with the answer's exact text.
pub fn legacy_call<'a>(
    id: &'a str,
    operation: &str,
    payload: Value,
    grants: &[(&str, &str)],
) -> (&'a str, Policy) {
    let settings = json!({"behaviour": format!("call:kubewarden/kubernetes/{operation}"),
                          "payload": payload.to_string()});
    policy(id, &wasm().misbehaving, grants, settings)
}

pub fn typed_call<'a>(id: &'a str, settings: Value, grants: &[(&str, &str)]) -> (&'a str, Policy) {
    policy(id, &wasm().misbehaving_component, grants, settings)
}

pub async fn answer(server: &Server, id: &str) -> String {
    let response = server
        .validate(id, &review(service("any", "any", json!({}))))
        .await;
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
