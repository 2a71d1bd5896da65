//! Rejects Pods and workloads whose containers use an image without a tag or with
//! `:latest`, written against the bare waPC protocol: JSON in, JSON out.
//!
//! Settings: `{"exempt_namespaces": ["kube-system", ...]}` (optional).

use serde::Deserialize;
use serde_json::{Value, json};
use wapc_guest::prelude::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    exempt_namespaces: Vec<String>,
}

#[derive(Deserialize)]
struct Payload {
    request: Value,
    #[serde(default)]
    settings: Settings,
}

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings);
    register_function("protocol_version", |_| Ok(br#""v1""#.to_vec()));
}

fn validate_settings(payload: &[u8]) -> CallResult {
    let answer = match serde_json::from_slice::<Settings>(payload) {
        Ok(_) => json!({"valid": true}),
        Err(e) => json!({"valid": false, "message": e.to_string()}),
    };
    Ok(serde_json::to_vec(&answer)?)
}

fn validate(payload: &[u8]) -> CallResult {
    let Payload { request, settings } = serde_json::from_slice(payload)?;
    let namespace = request["namespace"].as_str().unwrap_or_default();
    if settings.exempt_namespaces.iter().any(|n| n == namespace) {
        return Ok(serde_json::to_vec(&json!({"accepted": true}))?);
    }
    let object = &request["object"];
    // A Pod has its spec at the top; workloads keep it in a template.
    let pod_spec = [
        "/spec",
        "/spec/template/spec",
        "/spec/jobTemplate/spec/template/spec",
    ]
    .iter()
    .filter_map(|path| object.pointer(path))
    .find(|spec| spec.get("containers").is_some());
    let offending: Vec<String> = pod_spec
        .into_iter()
        .flat_map(|spec| ["initContainers", "containers", "ephemeralContainers"].map(|k| &spec[k]))
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|c| Some((c["name"].as_str()?, c["image"].as_str()?)))
        .filter(|(_, image)| uses_latest(image))
        .map(|(name, image)| format!("{name} ({image})"))
        .collect();
    let answer = if offending.is_empty() {
        json!({"accepted": true})
    } else {
        json!({
            "accepted": false,
            "message": format!("containers must pin an image tag other than latest: {}", offending.join(", ")),
            "code": 403,
        })
    };
    Ok(serde_json::to_vec(&answer)?)
}

/// `nginx`, `nginx:latest` and `registry:5000/nginx` use latest; a digest pins the image.
fn uses_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    match last_segment.split_once(':') {
        None => true,
        Some((_, tag)) => tag == "latest",
    }
}
