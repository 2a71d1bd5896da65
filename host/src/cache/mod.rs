//! The cluster cache: one immutable, indexed snapshot per kind that some policy may
//! read, filled from the Kubernetes API (API discovery, then one reflector per kind) or
//! from a snapshot file.

pub mod discovery;
pub mod index;
pub mod object;
pub mod reflector;
pub mod review;
pub mod snapshot_file;

mod state;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use guest_adapter::{AccessReviewer, ResourceKind};
use tokio::task::AbortHandle;

use discovery::DiscoveryError;
pub use reflector::WatchHealth;
pub use state::{ClusterState, KindReport, KindStatus, well_known_scope};

/// Where the cache gets its objects.
#[derive(Debug, Clone)]
pub enum CacheSource {
    /// A snapshot file, read once at start-up.
    File(PathBuf),
    /// The Kubernetes API, from a kubeconfig (or the in-cluster/default configuration).
    Cluster { kubeconfig: Option<PathBuf> },
}

/// The cache and, with a cluster, where `can_i` is asked.
pub struct Cluster {
    pub state: Arc<ClusterState>,
    pub reviewer: Option<Arc<dyn AccessReviewer>>,
    /// Kinds the cluster does not serve, with the reason; their reflectors do not run.
    pub unserved: Vec<(ResourceKind, String)>,
    feed: Feed,
}

/// What fills the cache, kept so kinds can be added and dropped after the start.
enum Feed {
    File(PathBuf),
    Api {
        client: kube::Client,
        /// The task that keeps each kind up to date (discovery, then its reflector).
        reflectors: Mutex<Vec<(ResourceKind, AbortHandle)>>,
    },
}

impl Cluster {
    /// Caches `kinds` too (a reload granted them) and returns those it added once each
    /// has been listed; or fails, leaving none of them cached, if one is not served or
    /// not listed within `within`. Kinds cached already are left as they are.
    pub async fn add_kinds(
        &self,
        kinds: &[ResourceKind],
        within: Duration,
    ) -> anyhow::Result<Vec<ResourceKind>> {
        // A kind the cluster did not serve is asked about again: its CRD may be installed now.
        for kind in kinds {
            if self.state.unserved_reason(kind).is_some() {
                self.remove_kind(kind);
            }
        }
        let added: Vec<ResourceKind> = kinds
            .iter()
            .filter(|kind| self.state.add((*kind).clone(), false))
            .cloned()
            .collect();
        if added.is_empty() {
            return Ok(added);
        }
        tracing::info!(kinds = ?added.iter().map(ToString::to_string).collect::<Vec<_>>(), "caching newly granted kinds");
        match self.fill(&added, within).await {
            Ok(()) => Ok(added),
            Err(e) => {
                for kind in &added {
                    self.remove_kind(kind);
                }
                Err(e)
            }
        }
    }

    async fn fill(&self, added: &[ResourceKind], within: Duration) -> anyhow::Result<()> {
        match &self.feed {
            Feed::File(path) => {
                let mut file = snapshot_file::load(path)?;
                for kind in added {
                    let index = file.take(kind).unwrap_or_else(|| {
                        index::KindIndex::new(kind.clone(), well_known_scope(kind))
                    });
                    self.state.publish(Arc::new(index));
                }
            }
            Feed::Api { client, reflectors } => {
                for kind in added {
                    // Marked unserved, not retried, if the cluster does not serve it.
                    let task = tokio::spawn(discover_then_reflect(
                        client.clone(),
                        kind.clone(),
                        self.state.clone(),
                        true,
                        Duration::ZERO,
                    ));
                    reflectors
                        .lock()
                        .expect("reflector list lock")
                        .push((kind.clone(), task.abort_handle()));
                }
            }
        }
        let deadline = tokio::time::Instant::now() + within;
        while !added.iter().all(|kind| self.state.is_synced(kind)) {
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{} not listed within {within:?}",
                    added
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for kind in added {
            if let Some(reason) = self.state.unserved_reason(kind) {
                anyhow::bail!("the cluster does not serve {kind}: {reason}");
            }
        }
        Ok(())
    }

    /// Stops caching `kind` and watching it.
    pub fn remove_kind(&self, kind: &ResourceKind) {
        if let Feed::Api { reflectors, .. } = &self.feed {
            reflectors
                .lock()
                .expect("reflector list lock")
                .retain(|(watched, task)| {
                    let stop = watched.matches(kind);
                    if stop {
                        task.abort();
                    }
                    !stop
                });
        }
        self.state.remove(kind);
        tracing::info!(%kind, "no policy reads this kind any more: no longer cached");
    }
}

/// Builds the cache for `kinds` and starts filling it: from the file at once, or with one
/// reflector per kind (started now, not on first use, so no admission request waits for
/// an initial list). Each kind is resolved through API discovery first (its scope, its
/// plural, its exact spelling); one the cluster says it does not serve is reported in
/// `unserved`. A kind whose discovery cannot reach the API server is retried in the
/// background, and stays unavailable (readiness 503) until then; if the cluster then
/// says it does not serve it, its reads fail with the reason when `continue_on_errors`,
/// and it stays unavailable otherwise.
pub async fn start(
    kinds: Vec<ResourceKind>,
    source: &CacheSource,
    continue_on_errors: bool,
) -> anyhow::Result<Cluster> {
    match source {
        CacheSource::File(path) => {
            let state = Arc::new(ClusterState::new(kinds));
            state.publish_file(snapshot_file::load(path)?);
            crate::memory::release_freed_memory();
            Ok(Cluster {
                state,
                reviewer: None,
                unserved: Vec::new(),
                feed: Feed::File(path.clone()),
            })
        }
        CacheSource::Cluster { kubeconfig } => {
            let client = client(kubeconfig.as_deref()).await?;
            let mut resolved = Vec::new();
            let mut unserved = Vec::new();
            let mut unreachable = Vec::new();
            // All kinds at once: an unreachable API server costs one timeout, not one a kind.
            let asked = futures::future::join_all(kinds.into_iter().map(|kind| {
                let client = &client;
                async move {
                    let found =
                        tokio::time::timeout(DISCOVERY_TIMEOUT, discovery::resolve(client, &kind))
                            .await;
                    (kind, found)
                }
            }));
            for (kind, found) in asked.await {
                match found {
                    Ok(Ok(found)) => resolved.push(found),
                    Ok(Err(DiscoveryError::Unserved(reason))) => unserved.push((kind, reason)),
                    Ok(Err(DiscoveryError::Unreachable(e))) => {
                        tracing::warn!(%kind, error = %e, "API discovery failed; retrying in the background");
                        unreachable.push(kind);
                    }
                    Err(_) => {
                        tracing::warn!(%kind, "API discovery timed out; retrying in the background");
                        unreachable.push(kind);
                    }
                }
            }
            let state = Arc::new(ClusterState::new(
                resolved
                    .iter()
                    .map(|found| found.kind.clone())
                    .chain(unserved.iter().map(|(kind, _)| kind.clone()))
                    .chain(unreachable.iter().cloned()),
            ));
            for (kind, reason) in &unserved {
                state.mark_unserved(kind, reason.clone());
            }
            let mut reflectors = Vec::new();
            for found in resolved {
                let kind = found.kind.clone();
                let task = tokio::spawn(reflector::reflect(client.clone(), found, state.clone()));
                reflectors.push((kind, task.abort_handle()));
            }
            for kind in unreachable {
                let task = tokio::spawn(discover_then_reflect(
                    client.clone(),
                    kind.clone(),
                    state.clone(),
                    continue_on_errors,
                    // It has just failed.
                    Duration::from_millis(500),
                ));
                reflectors.push((kind, task.abort_handle()));
            }
            let reviewer =
                review::ApiAccessReviewer::new(client.clone(), tokio::runtime::Handle::current());
            Ok(Cluster {
                state,
                reviewer: Some(Arc::new(reviewer)),
                unserved,
                feed: Feed::Api {
                    client,
                    reflectors: Mutex::new(reflectors),
                },
            })
        }
    }
}

/// How long start-up waits for one kind's discovery before retrying it in the background.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Discovery, first after `delay` and then retried with backoff until the API server
/// answers, then the reflector.
async fn discover_then_reflect(
    client: kube::Client,
    kind: ResourceKind,
    state: Arc<ClusterState>,
    continue_on_errors: bool,
    mut delay: Duration,
) {
    loop {
        tokio::time::sleep(delay).await;
        match discovery::resolve(&client, &kind).await {
            Ok(found) => return reflector::reflect(client, found, state).await,
            Err(DiscoveryError::Unserved(reason)) => {
                tracing::error!(%kind, %reason, "the cluster does not serve a granted kind");
                if continue_on_errors {
                    state.mark_unserved(&kind, reason);
                }
                return;
            }
            Err(DiscoveryError::Unreachable(e)) => {
                tracing::debug!(%kind, error = %e, "API discovery still failing");
                // One small GET: cheap to repeat, and a slow retry would hold readiness back.
                delay = (delay * 2).clamp(Duration::from_millis(500), Duration::from_secs(5));
            }
        }
    }
}

async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration found (give --kubeconfig or --cluster-snapshot)",
        )?,
    };
    kube::Client::try_from(config).context("cannot build a Kubernetes client")
}
