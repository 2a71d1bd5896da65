//! Rejects any object that lacks one of the labels named in the settings.
//!
//! Settings: `{"required_labels": ["team", ...]}` (at least one, none empty).

use std::sync::LazyLock;

use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, logging, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use serde::Deserialize;
use slog::{Logger, info, o};

use guest::prelude::*;

static LOG_DRAIN: LazyLock<Logger> = LazyLock::new(|| {
    Logger::root(
        logging::KubewardenDrain::new(),
        o!("policy" => "required-labels"),
    )
});

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    required_labels: Vec<String>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.required_labels.is_empty() {
            return Err("required_labels must name at least one label".to_owned());
        }
        if self.required_labels.iter().any(String::is_empty) {
            return Err("required_labels must not contain an empty label name".to_owned());
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
    let object = &request.request.object;
    let labels = object
        .pointer("/metadata/labels")
        .and_then(|l| l.as_object());
    let missing: Vec<&str> = request
        .settings
        .required_labels
        .iter()
        .map(String::as_str)
        .filter(|label| !labels.is_some_and(|l| l.contains_key(*label)))
        .collect();
    let name = object
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>");
    info!(LOG_DRAIN, "validating"; "name" => name, "missing" => missing.len());
    if missing.is_empty() {
        return accept_request();
    }
    reject_request(
        Some(format!(
            "{} '{name}' is missing required labels: {}",
            request.request.kind.kind,
            missing.join(", ")
        )),
        Some(400),
        None,
        None,
    )
}
