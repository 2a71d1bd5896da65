//! Realistic cluster objects (labels, annotations, specs of the usual size) for the
//! cache, the host calls and the snapshots of the end-to-end runs.

use serde_json::{Value, json};

pub fn namespace_name(i: usize) -> String {
    format!("team-{i:05}")
}

pub fn namespace(i: usize) -> Value {
    let name = namespace_name(i);
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": format!("6a1f5c3e-0000-4000-8000-{i:012}"),
            "resourceVersion": (1000 + i).to_string(),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"kubernetes.io/metadata.name": name, "team": format!("t{}", i % 50),
                       "env": "production", "services-allowed": "true"},
            "annotations": {"owner": "platform@example.com", "cost-center": format!("cc-{}", i % 7)}
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

pub fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": format!("api-{i:05}"),
            "namespace": namespace_name(i % 1000),
            "uid": format!("7b2e6d4f-0000-4000-8000-{i:012}"),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": format!("api-{i:05}"), "team": format!("t{}", i % 50)},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": format!("10.96.{}.{}", i / 250, i % 250),
            "clusterIPs": [format!("10.96.{}.{}", i / 250, i % 250)],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "selector": {"app": format!("api-{i:05}")},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                      {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090}],
            "sessionAffinity": "None"
        },
        "status": {"loadBalancer": {}}
    })
}

pub fn ingress(i: usize) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {
            "name": format!("web-{i:05}"),
            "namespace": namespace_name(i % 1000),
            "uid": format!("8c3f7e5a-0000-4000-8000-{i:012}"),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": format!("web-{i:05}")},
            "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"}
        },
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": [format!("web-{i:05}.example.com")], "secretName": format!("web-{i:05}-tls")}],
            "rules": [{"host": format!("web-{i:05}.example.com"), "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": format!("api-{i:05}"), "port": {"number": 80}}}}
            ]}}]
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    })
}

/// A List of `items` as `kubectl get -o json` writes one.
pub fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items})
}
