//! A Service may only be created in a namespace that carries the label named in the
//! settings. Reads the cluster's namespaces with the bare `kubernetes/namespaces/list`
//! host call. Settings: `{"namespace_label": "services-allowed"}`.

use serde::Deserialize;
use serde_json::{Value, json};
use wapc_guest::prelude::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    namespace_label: String,
}

#[derive(Deserialize)]
struct Payload {
    request: Value,
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
        Ok(settings) if settings.namespace_label.is_empty() => {
            json!({"valid": false, "message": "namespace_label must not be empty"})
        }
        Ok(_) => json!({"valid": true}),
        Err(e) => json!({"valid": false, "message": e.to_string()}),
    };
    Ok(serde_json::to_vec(&answer)?)
}

fn reject(message: String) -> CallResult {
    Ok(serde_json::to_vec(
        &json!({"accepted": false, "message": message, "code": 403}),
    )?)
}

fn validate(payload: &[u8]) -> CallResult {
    let Payload { request, settings } = serde_json::from_slice(payload)?;
    if request["kind"]["kind"] != "Service" {
        return Ok(serde_json::to_vec(&json!({"accepted": true}))?);
    }
    let namespace = request["namespace"].as_str().unwrap_or_default();
    let namespaces = match host_call("kubernetes", "namespaces", "list", b"") {
        Ok(bytes) => bytes,
        // The host refused (e.g. no grant): say why rather than fail obscurely.
        Err(e) => return reject(format!("cannot read the cluster's namespaces: {e}")),
    };
    let list: Value = serde_json::from_slice(&namespaces)?;
    let found = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|ns| ns["metadata"]["name"] == namespace);
    match found {
        None => reject(format!("namespace {namespace} does not exist")),
        Some(ns)
            if ns["metadata"]["labels"]
                .get(&settings.namespace_label)
                .is_some() =>
        {
            Ok(serde_json::to_vec(&json!({"accepted": true}))?)
        }
        Some(_) => reject(format!(
            "Services may only be created in namespaces labelled {}; {namespace} is not",
            settings.namespace_label
        )),
    }
}
