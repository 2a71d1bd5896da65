//! Admission requests as Kubernetes sends them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

/// A unique uid per request, so a test can match answers to requests.
fn next_uid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    format!(
        "00000000-0000-4000-8000-{:012}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// An `admission.k8s.io/v1` AdmissionReview for a CREATE of `object`.
pub fn review(object: Value) -> Value {
    let kind = object["kind"].as_str().unwrap_or("Pod").to_owned();
    let api_version = object["apiVersion"].as_str().unwrap_or("v1").to_owned();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let resource = format!("{}s", kind.to_lowercase());
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": next_uid(),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

pub fn pod(name: &str, labels: Value, images: &[&str]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": containers(images)}
    })
}

pub fn deployment(name: &str, labels: Value, images: &[&str]) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers(images)}
            }
        }
    })
}

fn containers(images: &[&str]) -> Value {
    images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect()
}
