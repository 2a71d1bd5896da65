//! The cluster cache the policies' grants call for.

use guest_adapter::ResourceKind;

use super::serve::ServeArgs;
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
    let grants = || grants(file);
    let Granted {
        kinds,
        asks_access_reviews,
    } = granted(file);
    if kinds.is_empty() && !asks_access_reviews {
        return Ok(None);
    }
    let cluster = crate::cache::start(kinds, &source(args), args.continue_on_errors).await?;
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

/// What the policies of a file may ask of the cluster.
pub(super) struct Granted {
    /// The kinds to cache, each once, named as the API server names them.
    pub kinds: Vec<ResourceKind>,
    /// Whether a policy may ask `can_i` (a question to the API server, not a kind to cache).
    pub asks_access_reviews: bool,
}

pub(super) fn granted(file: &PoliciesFile) -> Granted {
    let mut kinds: Vec<ResourceKind> = Vec::new();
    let mut asks_access_reviews = false;
    for (_, kind) in grants(file) {
        if kind.matches(&ResourceKind::subject_access_reviews()) {
            asks_access_reviews = true;
        } else if !kinds.iter().any(|known| known.matches(&kind)) {
            kinds.push(kind);
        }
    }
    Granted {
        kinds,
        asks_access_reviews,
    }
}

/// Every grant, with the id of the policy it is for.
fn grants(file: &PoliciesFile) -> impl Iterator<Item = (&String, ResourceKind)> {
    file.policies.iter().flat_map(|(id, policy)| {
        policy
            .context_aware_resources
            .iter()
            // Named as the API server names them, whatever the grant's case.
            .map(move |r| (id, ResourceKind::new(&r.api_version, &r.kind).canonical()))
    })
}

/// Where the cluster cache comes from.
pub(super) fn source(args: &ServeArgs) -> CacheSource {
    match &args.cluster_snapshot {
        Some(path) => CacheSource::File(path.clone()),
        None => CacheSource::Cluster {
            kubeconfig: args.kubeconfig.clone(),
        },
    }
}
