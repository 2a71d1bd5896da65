//! Rejects a Pod, or a workload (Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! ReplicationController, Job, CronJob) whose pod template, has a privileged container,
//! as Kubewarden's `pod-privileged` policy does: the request is read into the SDK's typed
//! Kubernetes objects, the way real policies work.
//!
//! Settings: `{"skip_init_containers": bool, "skip_ephemeral_containers": bool}`, both
//! optional.

use k8s_openapi::api::core::v1::{PodSpec, SecurityContext};
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, protocol_version_guest, reject_request, request::ValidationRequest,
    settings::Validatable, validate_settings,
};
use serde::Deserialize;

use guest::prelude::*;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    skip_init_containers: bool,
    skip_ephemeral_containers: bool,
}

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

fn validate(payload: &[u8]) -> CallResult {
    let request = ValidationRequest::<Settings>::new(payload)?;
    let Some(spec) = request.extract_pod_spec_from_object()? else {
        return accept_request();
    };
    let privileged = privileged_containers(&spec, &request.settings);
    if privileged.is_empty() {
        return accept_request();
    }
    reject_request(
        Some(format!(
            "Privileged container is not allowed: {}",
            privileged.join(", ")
        )),
        None,
        None,
        None,
    )
}

fn privileged_containers(spec: &PodSpec, settings: &Settings) -> Vec<String> {
    let privileged = |context: &Option<SecurityContext>| {
        context
            .as_ref()
            .and_then(|context| context.privileged)
            .unwrap_or(false)
    };
    let init = (!settings.skip_init_containers).then_some(&spec.init_containers);
    let containers = spec
        .containers
        .iter()
        .chain(init.into_iter().flatten().flatten())
        .filter(|c| privileged(&c.security_context))
        .map(|c| c.name.clone());
    // Ephemeral containers are a type of their own, with the same two fields.
    let ephemeral = (!settings.skip_ephemeral_containers)
        .then_some(&spec.ephemeral_containers)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|c| privileged(&c.security_context))
        .map(|c| c.name.clone());
    containers.chain(ephemeral).collect()
}
