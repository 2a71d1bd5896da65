//! Adds default labels to objects that lack them, and says so in a warning.
//!
//! Settings: `{"labels": {"key": "value", ...}}` (at least one).

use std::collections::BTreeMap;

use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, request::ValidationRequest,
    response::ValidationResponse, settings::Validatable, validate_settings,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use guest::prelude::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.labels.is_empty() {
            return Err("labels must contain at least one label".to_owned());
        }
        if self.labels.keys().any(String::is_empty) {
            return Err("label names must not be empty".to_owned());
        }
        Ok(())
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn validate(payload: &[u8]) -> CallResult {
    let request = ValidationRequest::<Settings>::new(payload)?;
    let mut object = request.request.object;
    // DELETE requests carry no object: nothing to label.
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return accept_request();
    };
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(labels) = labels.as_object_mut() else {
        return accept_request();
    };
    let mut added = Vec::new();
    for (key, value) in &request.settings.labels {
        if !labels.contains_key(key) {
            labels.insert(key.clone(), Value::String(value.clone()));
            added.push(format!("added label {key}={value}"));
        }
    }
    if added.is_empty() {
        return accept_request();
    }
    Ok(serde_json::to_vec(&ValidationResponse {
        accepted: true,
        message: None,
        code: None,
        mutated_object: Some(object),
        audit_annotations: None,
        warnings: Some(added),
    })?)
}
