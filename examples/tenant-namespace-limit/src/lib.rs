//! At most `max_namespaces` Namespaces per tenant: a new Namespace labelled `tenant=<t>`
//! is rejected when `t` already has that many. Counts them with `list_resources_all` and
//! a label selector, so only the tenant's namespaces cross into the policy.
//! Settings: `{"max_namespaces": 3}`.

use k8s_openapi::api::core::v1::Namespace;
use kubewarden_policy_sdk::host_capabilities::kubernetes::{
    ListAllResourcesRequest, list_all_resources,
};
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
    max_namespaces: usize,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.max_namespaces == 0 {
            return Err("max_namespaces must be at least 1".to_owned());
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
    if request.request.kind.kind != "Namespace" {
        return accept_request();
    }
    let namespace: Namespace = serde_json::from_value(request.request.object)?;
    let name = namespace.metadata.name.clone().unwrap_or_default();
    let Some(tenant) = namespace
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get("tenant"))
    else {
        return accept_request();
    };
    let existing = list_all_resources::<Namespace>(&ListAllResourcesRequest {
        api_version: "v1".to_owned(),
        kind: "Namespace".to_owned(),
        label_selector: Some(format!("tenant={tenant}")),
        field_selector: Some(format!("metadata.name!={name}")),
        field_masks: Some(["metadata.name".to_owned()].into()),
    })?;
    let max = request.settings.max_namespaces;
    if existing.items.len() >= max {
        return reject_request(
            Some(format!(
                "tenant {tenant} already has {} namespaces (at most {max})",
                existing.items.len()
            )),
            Some(403),
            None,
            None,
        );
    }
    accept_request()
}
