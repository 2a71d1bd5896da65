//! The cluster cache the policies' grants call for.

use guest_adapter::ResourceKind;

use super::ServeArgs;
use crate::cache::{CacheSource, Cluster};
use crate::config::PoliciesFile;

/// Starts the cluster cache for the kinds any policy was granted to read; none if no
/// policy reads the cluster. A kind the cluster does not serve stops the start, naming
/// the policies that read it, unless `--continue-on-errors` (their reads then fail with
/// the reason).
pub(super) async fn start_cluster_cache(
    file: &PoliciesFile,
    args: &ServeArgs,
) -> anyhow::Result<Option<Cluster>> {
    let grants = || {
        file.policies.iter().flat_map(|(id, policy)| {
            policy
                .context_aware_resources
                .iter()
                // Named as the API server names them, whatever the grant's case.
                .map(move |r| (id, ResourceKind::new(&r.api_version, &r.kind).canonical()))
        })
    };
    let mut kinds: Vec<ResourceKind> = Vec::new();
    for (_, kind) in grants() {
        // `can_i` is a question to the API server, not a kind to cache.
        if !kind.matches(&ResourceKind::subject_access_reviews())
            && !kinds.iter().any(|known| known.matches(&kind))
        {
            kinds.push(kind);
        }
    }
    let asks_access_reviews =
        grants().any(|(_, kind)| kind.matches(&ResourceKind::subject_access_reviews()));
    if kinds.is_empty() && !asks_access_reviews {
        return Ok(None);
    }
    let source = match &args.cluster_snapshot {
        Some(path) => CacheSource::File(path.clone()),
        None => CacheSource::Cluster {
            kubeconfig: args.kubeconfig.clone(),
        },
    };
    let cluster = crate::cache::start(kinds, &source, args.continue_on_errors).await?;
    for (kind, reason) in &cluster.unserved {
        let readers: Vec<String> = grants()
            .filter(|(_, granted)| granted.matches(kind))
            .map(|(id, _)| format!("'{id}'"))
            .collect();
        let message = format!(
            "policy {} reads {kind}, which the cluster does not serve: {reason}",
            readers.join(", ")
        );
        if !args.continue_on_errors {
            anyhow::bail!(message);
        }
        tracing::error!("{message}; its reads will fail with this reason");
    }
    Ok(Some(cluster))
}
