//! API discovery for one granted kind: whether the cluster serves it (CRDs included),
//! with what plural and scope, and its exact spelling. Grants may be written in any case
//! (`kind: namespace`); the cluster's answer is what the cache uses.

use guest_adapter::{ResourceKind, Scope};
use kube::Client;
use kube::api::{ApiResource, GroupVersionKind};

/// A kind as the cluster serves it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub kind: ResourceKind,
    pub resource: ApiResource,
    pub scope: Scope,
}

/// Why a kind could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The API server answered: it does not serve the kind (or not with `list` and
    /// `watch`).
    #[error("{0}")]
    Unserved(String),
    /// The API server did not answer; worth asking again.
    #[error("cannot reach the API server for discovery: {0}")]
    Unreachable(kube::Error),
}

pub async fn resolve(client: &Client, wanted: &ResourceKind) -> Result<Resolved, DiscoveryError> {
    // Group and version names are lowercase on every API server.
    let api_version = wanted.api_version.to_ascii_lowercase();
    let lowered = ResourceKind::new(&api_version, &wanted.kind);
    let (group, version) = lowered.group_version();
    let resources = if group.is_empty() {
        client.list_core_api_resources(version).await
    } else {
        client.list_api_group_resources(&api_version).await
    }
    .map_err(|e| match e {
        kube::Error::Api(status) if status.code == 404 => DiscoveryError::Unserved(format!(
            "the cluster does not serve API version {api_version}"
        )),
        other => DiscoveryError::Unreachable(other),
    })?;
    // Subresources (`pods/status`) share their parent's kind: skip them.
    let Some(found) = resources
        .resources
        .iter()
        .find(|r| !r.name.contains('/') && r.kind.eq_ignore_ascii_case(&wanted.kind))
    else {
        return Err(DiscoveryError::Unserved(format!(
            "the cluster serves no kind {} in API version {api_version}",
            wanted.kind
        )));
    };
    for verb in ["list", "watch"] {
        if !found.verbs.iter().any(|v| v == verb) {
            return Err(DiscoveryError::Unserved(format!(
                "the cluster does not allow `{verb}` on {api_version}/{}",
                found.kind
            )));
        }
    }
    let gvk = GroupVersionKind::gvk(group, version, &found.kind);
    Ok(Resolved {
        kind: ResourceKind::new(api_version.clone(), found.kind.clone()),
        resource: ApiResource::from_gvk_with_plural(&gvk, &found.name),
        scope: if found.namespaced {
            Scope::Namespaced
        } else {
            Scope::Cluster
        },
    })
}
