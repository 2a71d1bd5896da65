//! A Service may only be created in a namespace that carries the label named in the
//! settings: `service-namespace-label`'s rule, written on kubewarden-policy-sdk 0.17, which
//! reads the one namespace it needs with `get_resource` instead of listing them all.
//! Settings: `{"namespace_label": "services-allowed"}`.

use k8s_openapi::api::core::v1::Namespace;
use kubewarden_policy_sdk::host_capabilities::kubernetes::{GetResourceRequest, get_resource};
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use serde::Deserialize;

use guest::prelude::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    namespace_label: String,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.namespace_label.is_empty() {
            return Err("namespace_label must not be empty".to_owned());
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

fn reject(message: String) -> CallResult {
    reject_request(Some(message), Some(403), None, None)
}

fn validate(payload: &[u8]) -> CallResult {
    let request = ValidationRequest::<Settings>::new(payload)?;
    if request.request.kind.kind != "Service" {
        return accept_request();
    }
    let namespace = request.request.namespace.clone();
    let found = get_resource::<Namespace>(&GetResourceRequest {
        api_version: "v1".to_owned(),
        kind: "Namespace".to_owned(),
        name: namespace.clone(),
        namespace: None,
        disable_cache: false,
        field_masks: None,
    });
    let label = &request.settings.namespace_label;
    match found {
        Ok(ns)
            if ns
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(label)) =>
        {
            accept_request()
        }
        Ok(_) => reject(format!(
            "Services may only be created in namespaces labelled {label}; {namespace} is not"
        )),
        // The host says "Cannot find ..." for a missing object, as Kubewarden's does.
        Err(e) if e.to_string().contains("Cannot find") => {
            reject(format!("namespace {namespace} does not exist"))
        }
        Err(e) => reject(format!("cannot read the cluster's namespaces: {e}")),
    }
}
