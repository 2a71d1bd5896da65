//! The request a policy author hands `run`, `test` and `bench`: an AdmissionReview, a
//! bare AdmissionRequest, or a plain Kubernetes object (from which the CREATE request
//! the API server would send is made). JSON or YAML.

use std::path::Path;

use anyhow::{Context, bail};
use kube::api::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::admission::ADMISSION_API_VERSION;

/// The largest request read: the server's default body limit.
const MAX_REQUEST_BYTES: u64 = 3 << 20;

/// Kubernetes' own kinds that live outside namespaces; any other kind (a custom
/// resource's included) is taken as namespaced.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "StorageClass",
    "CustomResourceDefinition",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "PriorityClass",
    "RuntimeClass",
    "IngressClass",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "APIService",
    "CertificateSigningRequest",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "ComponentStatus",
];

/// The uid of a request made here: what the answer must echo.
pub const MADE_UP_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Reads `path` and returns the AdmissionReview to evaluate.
pub fn review_from_file(path: &Path) -> anyhow::Result<Value> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read request file {}", path.display()))?
        .len();
    if size > MAX_REQUEST_BYTES {
        bail!(
            "request file {} is {size} bytes: the server takes at most {MAX_REQUEST_BYTES} \
             (kube-apiserver's own limit is 3 MiB)",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read request file {}", path.display()))?;
    let document: Value = crate::yaml::from_str(&text, crate::yaml::config_options())
        .with_context(|| format!("request file {} is not JSON or YAML", path.display()))?;
    review_from(document).with_context(|| format!("request file {}", path.display()))
}

/// Makes an AdmissionReview of `document`, whichever of the three it is.
pub fn review_from(document: Value) -> anyhow::Result<Value> {
    let Value::Object(map) = &document else {
        bail!(
            "it holds no object (an AdmissionReview, an AdmissionRequest or a Kubernetes object)"
        );
    };
    if map.get("kind").and_then(Value::as_str) == Some("AdmissionReview")
        || map.contains_key("request")
    {
        if !map.get("request").is_some_and(Value::is_object) {
            bail!("it is an AdmissionReview without a request object");
        }
        return Ok(document);
    }
    // An AdmissionRequest: its kind is a group/version/kind object, not a string.
    if map.get("kind").is_some_and(Value::is_object) && map.contains_key("operation") {
        return Ok(json!({
            "apiVersion": ADMISSION_API_VERSION,
            "kind": "AdmissionReview",
            "request": document,
        }));
    }
    let (Some(api_version), Some(kind)) = (
        map.get("apiVersion").and_then(Value::as_str),
        map.get("kind").and_then(Value::as_str),
    ) else {
        bail!(
            "it is neither an AdmissionReview (with `request`), an AdmissionRequest (with \
             `operation` and `kind`), nor a Kubernetes object (with `apiVersion` and `kind`)"
        );
    };
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    };
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let (group, version, kind) = (group.to_owned(), version.to_owned(), kind.to_owned());
    let mut document = document;
    let name = document["metadata"]["name"].clone();
    // The API server puts a namespaced object without one in `default`.
    if document["metadata"]["namespace"].is_null()
        && !CLUSTER_SCOPED.contains(&kind.as_str())
        && let Some(metadata) = document["metadata"].as_object_mut()
    {
        metadata.insert("namespace".into(), "default".into());
    }
    let namespace = document["metadata"]["namespace"].clone();
    let mut request = json!({
        "uid": MADE_UP_UID,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource.plural},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": resource.plural},
        "operation": "CREATE",
        "userInfo": {"username": "policy-author", "groups": ["system:authenticated"]},
        "object": document,
        "oldObject": null,
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    });
    if !name.is_null() {
        request["name"] = name;
    }
    if !namespace.is_null() {
        request["namespace"] = namespace;
    }
    Ok(json!({
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "AdmissionReview",
        "request": request,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_becomes_an_admission_review() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]},
        });
        let made = review_from(pod.clone()).unwrap();
        assert_eq!(made["kind"], "AdmissionReview");
        let request = &made["request"];
        assert_eq!(request["operation"], "CREATE");
        assert_eq!(request["uid"], MADE_UP_UID);
        assert_eq!(
            request["kind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        assert_eq!(request["resource"]["resource"], "pods");
        assert_eq!(
            (&request["name"], &request["namespace"]),
            (&json!("web"), &json!("shop"))
        );
        assert_eq!(request["object"], pod);

        let deployment =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}});
        let made = review_from(deployment).unwrap();
        assert_eq!(made["request"]["kind"]["group"], "apps");
        assert_eq!(made["request"]["resource"]["resource"], "deployments");
        // Namespaced, without a namespace: the API server's `default`.
        assert_eq!(made["request"]["namespace"], "default");
        assert_eq!(
            made["request"]["object"]["metadata"]["namespace"],
            "default"
        );
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}});
        assert!(
            review_from(namespace).unwrap()["request"]
                .get("namespace")
                .is_none()
        );

        // A bare request is wrapped as it is; a review is taken as it is.
        let bare = made["request"].clone();
        assert_eq!(review_from(bare.clone()).unwrap()["request"], bare);
        assert_eq!(review_from(made.clone()).unwrap(), made);
    }

    #[test]
    fn what_is_none_of_them_is_refused_with_the_reason() {
        for (document, reason) in [
            (json!([1, 2]), "holds no object"),
            (
                json!({"kind": "AdmissionReview"}),
                "without a request object",
            ),
            (
                json!({"metadata": {"name": "x"}}),
                "neither an AdmissionReview",
            ),
        ] {
            let err = review_from(document).unwrap_err().to_string();
            assert!(err.contains(reason), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("req.json");
        std::fs::write(&path, "{\"apiVersion\": \"v1\",\n  \"kind\": [}").unwrap();
        let err = format!("{:#}", review_from_file(&path).unwrap_err());
        assert!(err.contains("is not JSON or YAML"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }
}
