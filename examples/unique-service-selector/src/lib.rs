//! Rejects a Service whose selector equals the selector of another Service in the same
//! namespace (two Services fronting the same Pods is usually a mistake). Reads the
//! namespace's Services with `list_resources_by_namespace`. Settings: none.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use kubewarden_policy_sdk::host_capabilities::kubernetes::{
    ListResourcesByNamespaceRequest, list_resources_by_namespace,
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
struct Settings {}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn selector(service: &Service) -> BTreeMap<String, String> {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.clone())
        .unwrap_or_default()
}

fn validate(payload: &[u8]) -> CallResult {
    let request = ValidationRequest::<Settings>::new(payload)?;
    if request.request.kind.kind != "Service" {
        return accept_request();
    }
    let service: Service = serde_json::from_value(request.request.object)?;
    let wanted = selector(&service);
    if wanted.is_empty() {
        return accept_request(); // a Service without selector fronts no Pods
    }
    let name = service.metadata.name.clone().unwrap_or_default();
    let namespace = service
        .metadata
        .namespace
        .clone()
        .unwrap_or(request.request.namespace);
    let others = list_resources_by_namespace::<Service>(&ListResourcesByNamespaceRequest {
        api_version: "v1".to_owned(),
        kind: "Service".to_owned(),
        namespace: namespace.clone(),
        label_selector: None,
        field_selector: None,
        field_masks: None,
    })?;
    let taken = others.items.iter().find(|other| {
        other.metadata.name.as_deref() != Some(name.as_str()) && selector(other) == wanted
    });
    match taken {
        Some(other) => reject_request(
            Some(format!(
                "service {namespace}/{} already selects the same pods",
                other.metadata.name.as_deref().unwrap_or_default()
            )),
            Some(409),
            None,
            None,
        ),
        None => accept_request(),
    }
}
