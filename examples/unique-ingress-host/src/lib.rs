//! Rejects an Ingress that claims a host another Ingress in the cluster already serves.
//! Reads the cluster's Ingresses through the SDK's `cluster_context`, which is the
//! `kubernetes/ingresses/list` host call. Settings: none.

use k8s_openapi_017::api::networking::v1::Ingress;
use kubewarden_policy_sdk_08 as sdk;
use sdk::cluster_context::{ClusterContext, NamespaceFilter};
use sdk::wapc_guest as guest;
use sdk::{accept_request, protocol_version_guest, reject_request, request::ValidationRequest};
use serde::Deserialize;

use guest::prelude::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {}

impl sdk::settings::Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", sdk::validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn hosts(ingress: &Ingress) -> Vec<String> {
    ingress
        .spec
        .iter()
        .flat_map(|spec| spec.rules.iter().flatten())
        .filter_map(|rule| rule.host.clone())
        .collect()
}

fn validate(payload: &[u8]) -> CallResult {
    let request = ValidationRequest::<Settings>::new(payload)?;
    let ingress: Ingress = serde_json::from_value(request.request.object)?;
    let wanted = hosts(&ingress);
    if wanted.is_empty() {
        return accept_request();
    }
    let (namespace, name) = (
        ingress.metadata.namespace.clone().unwrap_or_default(),
        ingress.metadata.name.clone().unwrap_or_default(),
    );
    let existing = ClusterContext::default().ingresses(NamespaceFilter::AllNamespaces)?;
    for other in existing {
        let other_namespace = other.metadata.namespace.clone().unwrap_or_default();
        let other_name = other.metadata.name.clone().unwrap_or_default();
        if (other_namespace.as_str(), other_name.as_str()) == (namespace.as_str(), name.as_str()) {
            continue; // an update of this very Ingress
        }
        if let Some(host) = hosts(&other).into_iter().find(|h| wanted.contains(h)) {
            return reject_request(
                Some(format!(
                    "host {host} is already served by ingress {other_namespace}/{other_name}"
                )),
                Some(409),
                None,
                None,
            );
        }
    }
    accept_request()
}
