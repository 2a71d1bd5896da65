//! One webhook entry per policy, in a ValidatingWebhookConfiguration or (when the policy
//! mutates) a MutatingWebhookConfiguration, with the fields the policy sets in
//! policies.yml. The server's own namespace is left out of every entry, so a broken
//! server cannot keep its own pods from being created.

use std::collections::BTreeMap;

use anyhow::bail;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ServiceReference, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::rbac::metadata;
use super::{Deployment, Trust};
use crate::config::{PoliciesFile, PolicyConfig};

/// The label every namespace carries with its own name (Kubernetes 1.21 and later).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub(super) fn configurations(
    file: &PoliciesFile,
    deployment: &Deployment,
) -> anyhow::Result<(
    Option<ValidatingWebhookConfiguration>,
    Option<MutatingWebhookConfiguration>,
)> {
    let mut validating = Vec::new();
    let mut mutating = Vec::new();
    for (id, policy) in &file.policies {
        if policy.rules.is_empty() {
            bail!(
                "policy '{id}' has no `rules`: say which requests it reviews (as in a \
                 ClusterAdmissionPolicy: apiGroups, apiVersions, resources, operations)"
            );
        }
        if !is_dns_label(id) {
            bail!(
                "policy id '{id}' cannot name a webhook: use at most 63 lowercase letters, \
                 digits and '-', starting and ending with a letter or digit"
            );
        }
        let entry = Entry::of(id, policy, deployment);
        if policy.is_mutating() {
            mutating.push(MutatingWebhook {
                name: entry.name,
                client_config: entry.client_config,
                rules: Some(policy.rules.clone()),
                namespace_selector: Some(entry.namespace_selector),
                object_selector: policy.object_selector.clone(),
                failure_policy: policy.failure_policy.clone(),
                match_policy: policy.match_policy.clone(),
                side_effects: entry.side_effects,
                timeout_seconds: policy.timeout_seconds,
                admission_review_versions: vec!["v1".into()],
                // A later mutation may change what this one decided on: ask again.
                reinvocation_policy: Some("IfNeeded".into()),
                ..MutatingWebhook::default()
            });
        } else {
            validating.push(ValidatingWebhook {
                name: entry.name,
                client_config: entry.client_config,
                rules: Some(policy.rules.clone()),
                namespace_selector: Some(entry.namespace_selector),
                object_selector: policy.object_selector.clone(),
                failure_policy: policy.failure_policy.clone(),
                match_policy: policy.match_policy.clone(),
                side_effects: entry.side_effects,
                timeout_seconds: policy.timeout_seconds,
                admission_review_versions: vec!["v1".into()],
                ..ValidatingWebhook::default()
            });
        }
    }
    let object_metadata = || {
        let mut metadata = metadata(deployment, None);
        if let Trust::CertManager { .. } = deployment.trust {
            metadata.annotations = Some(BTreeMap::from([(
                "cert-manager.io/inject-ca-from".to_owned(),
                format!("{}/{}", deployment.namespace, deployment.name),
            )]));
        }
        metadata
    };
    let validating = (!validating.is_empty()).then(|| ValidatingWebhookConfiguration {
        metadata: object_metadata(),
        webhooks: Some(validating),
    });
    let mutating = (!mutating.is_empty()).then(|| MutatingWebhookConfiguration {
        metadata: object_metadata(),
        webhooks: Some(mutating),
    });
    Ok((validating, mutating))
}

/// What validating and mutating entries share.
struct Entry {
    name: String,
    client_config: WebhookClientConfig,
    namespace_selector: LabelSelector,
    side_effects: String,
}

impl Entry {
    fn of(id: &str, policy: &PolicyConfig, deployment: &Deployment) -> Self {
        // The policy's own selector, narrowed to leave the server's namespace out.
        let mut namespace_selector = policy.namespace_selector.clone().unwrap_or_default();
        namespace_selector
            .match_expressions
            .get_or_insert_with(Vec::new)
            .push(LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: "NotIn".into(),
                values: Some(vec![deployment.namespace.clone()]),
            });
        Self {
            // A webhook name must be a fully qualified domain name, unique in its
            // configuration: the policy id under the Service's name.
            name: format!("{id}.{}.{}.svc", deployment.name, deployment.namespace),
            client_config: WebhookClientConfig {
                service: Some(ServiceReference {
                    name: deployment.name.clone(),
                    namespace: deployment.namespace.clone(),
                    path: Some(format!("/validate/{id}")),
                    port: Some(443),
                }),
                ca_bundle: match &deployment.trust {
                    Trust::CaBundle(pem) => Some(ByteString(pem.as_bytes().to_vec())),
                    Trust::CertManager { .. } => None,
                },
                url: None,
            },
            namespace_selector,
            side_effects: policy.side_effects.clone().unwrap_or_else(|| "None".into()),
        }
    }
}

/// A DNS-1123 label, as each part of a webhook's name must be.
fn is_dns_label(text: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&text.len())
        && text.chars().all(|c| alphanumeric(c) || c == '-')
        && text.starts_with(alphanumeric)
        && text.ends_with(alphanumeric)
}
