//! The server's identity and what it may read: `list` and `watch` on exactly the kinds
//! the policies are granted, and `create` on SubjectAccessReviews only if one may ask
//! `can_i`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, GroupVersionKind};

use super::Deployment;
use crate::config::PoliciesFile;
use guest_adapter::ResourceKind;

pub(super) fn service_account(deployment: &Deployment) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(deployment, Some(&deployment.namespace)),
        ..ServiceAccount::default()
    }
}

pub(super) fn cluster_role(file: &PoliciesFile, deployment: &Deployment) -> ClusterRole {
    // Resources by API group, each once.
    let mut readable: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut asks_access_reviews = false;
    for grant in file
        .policies
        .values()
        .flat_map(|p| &p.context_aware_resources)
    {
        let kind = ResourceKind::new(&grant.api_version, &grant.kind).canonical();
        if kind.matches(&ResourceKind::subject_access_reviews()) {
            asks_access_reviews = true;
            continue;
        }
        let (group, version) = kind.group_version();
        // The plural by Kubernetes' default rule (as kube-rs guesses it): right for every
        // built-in kind and most CRDs; a CRD with an irregular plural needs its rule edited.
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind.kind));
        let resources = readable
            .entry(resource.group.to_ascii_lowercase())
            .or_default();
        if !resources.contains(&resource.plural) {
            resources.push(resource.plural);
        }
    }
    let mut rules: Vec<PolicyRule> = readable
        .into_iter()
        .map(|(group, resources)| PolicyRule {
            api_groups: Some(vec![group]),
            resources: Some(resources),
            verbs: vec!["list".into(), "watch".into()],
            ..PolicyRule::default()
        })
        .collect();
    if asks_access_reviews {
        rules.push(PolicyRule {
            api_groups: Some(vec!["authorization.k8s.io".into()]),
            resources: Some(vec!["subjectaccessreviews".into()]),
            verbs: vec!["create".into()],
            ..PolicyRule::default()
        });
    }
    ClusterRole {
        metadata: metadata(deployment, None),
        rules: Some(rules),
        ..ClusterRole::default()
    }
}

pub(super) fn cluster_role_binding(deployment: &Deployment) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: metadata(deployment, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: deployment.name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: deployment.name.clone(),
            namespace: Some(deployment.namespace.clone()),
            ..Subject::default()
        }]),
    }
}

/// The server's name and labels; a namespace for a namespaced object.
pub(super) fn metadata(deployment: &Deployment, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(deployment.name.clone()),
        namespace: namespace.map(str::to_owned),
        labels: Some(deployment.labels()),
        ..ObjectMeta::default()
    }
}
