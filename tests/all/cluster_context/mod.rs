//! Context-aware policies reading the cluster cache: filled from a snapshot file
//! (`snapshot`) or from a fake Kubernetes API server that speaks the real list/watch
//! protocol (`live`).

mod live;
mod snapshot;

use policy_server_e2e::{Policy, wasm};
use serde_json::{Value, json};

use crate::misbehaving;

/// Allows Services only in namespaces labelled `services-allowed` (reads namespaces).
pub(crate) fn service_policy() -> Policy {
    Policy::new(&wasm().service_namespace_label)
        .settings(json!({"namespace_label": "services-allowed"}))
}

/// Refuses an Ingress whose host another Ingress serves (reads ingresses).
pub(crate) fn ingress_policy() -> Policy {
    Policy::new(&wasm().unique_ingress_host)
}

/// A policy that rejects with the exact List it got for `resource` as message.
fn echo_policy(resource: &str) -> Policy {
    misbehaving(&format!("echo:{resource}"))
}

pub(crate) fn service(name: &str, namespace: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"ports": [{"port": 80}]}})
}

pub(crate) fn ingress(name: &str, namespace: &str, host: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"rules": [{"host": host}]}})
}

pub(crate) fn namespace(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}})
}
