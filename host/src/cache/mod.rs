//! The cluster cache: one immutable, indexed snapshot per kind that some policy may
//! read, filled from the Kubernetes API (API discovery, then one reflector per kind) or
//! from a snapshot file.

pub mod discovery;
pub mod index;
pub mod object;
pub mod reflector;
pub mod review;
pub mod snapshot_file;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use guest_adapter::{AccessReviewer, CacheError, ClusterCache, KindSnapshot, ResourceKind, Scope};

use discovery::DiscoveryError;
use index::KindIndex;
pub use reflector::WatchHealth;

/// The latest snapshot of every cached kind. Writers (a reflector per kind) publish
/// whole new snapshots; readers take a handle to the current one.
pub struct ClusterState {
    /// Looked up ignoring case, as access rules match kinds: a scan, as a server caches
    /// a handful of kinds.
    kinds: Vec<KindSlot>,
}

struct KindSlot {
    kind: ResourceKind,
    state: RwLock<SlotState>,
    /// For the metrics only: never taken on the request path.
    health: Mutex<KindHealth>,
}

#[derive(Default)]
struct KindHealth {
    changed_at: Option<Instant>,
    watch: WatchHealth,
}

/// What the metrics say of one cached kind.
#[derive(Debug, Clone)]
pub struct KindReport {
    pub kind: ResourceKind,
    pub status: KindStatus,
    pub objects: usize,
    pub bytes: usize,
    pub resource_version: u64,
    /// Since the last published change (or first publication).
    pub since_change: Option<Duration>,
    pub watch: WatchHealth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindStatus {
    /// The first list has not completed.
    Pending,
    /// Served, and its watch is healthy (or it comes from a snapshot file).
    Ready,
    /// Served from the last snapshot while the watch retries.
    Stale,
    /// The cluster does not serve the kind.
    Unserved,
}

impl KindStatus {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Ready, Self::Stale, Self::Unserved];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Stale => "stale",
            Self::Unserved => "unserved",
        }
    }
}

enum SlotState {
    /// The first list has not completed.
    Pending,
    Ready(Arc<KindIndex>),
    /// The cluster does not serve the kind (with `--continue-on-errors`).
    Unserved(String),
}

impl ClusterState {
    /// A cache for `kinds`, none of them available until first published.
    pub fn new(kinds: impl IntoIterator<Item = ResourceKind>) -> Self {
        let mut slots: Vec<KindSlot> = Vec::new();
        for kind in kinds {
            if !slots.iter().any(|slot| slot.kind.matches(&kind)) {
                slots.push(KindSlot {
                    kind,
                    state: RwLock::new(SlotState::Pending),
                    health: Mutex::default(),
                });
            }
        }
        Self { kinds: slots }
    }

    /// The cached kinds, spelled as configured.
    pub fn kinds(&self) -> impl Iterator<Item = &ResourceKind> {
        self.kinds.iter().map(|slot| &slot.kind)
    }

    fn slot(&self, kind: &ResourceKind) -> Option<&KindSlot> {
        self.kinds.iter().find(|slot| slot.kind.matches(kind))
    }

    fn set(&self, kind: &ResourceKind, state: SlotState) {
        if let Some(slot) = self.slot(kind) {
            let previous = std::mem::replace(
                &mut *slot.state.write().expect("cache lock poisoned"),
                state,
            );
            // Freed after the lock is released: after a relist nothing of it is shared, and
            // readers must not wait for a whole kind to be freed.
            drop(previous);
        }
    }

    /// Makes `index` the snapshot of its kind.
    pub fn publish(&self, index: Arc<KindIndex>) {
        let kind = index.kind().clone();
        self.set(&kind, SlotState::Ready(index));
        if let Some(slot) = self.slot(&kind) {
            slot.health().changed_at = Some(Instant::now());
        }
    }

    /// Records how the watch of `kind` is faring.
    pub fn record_watch(&self, kind: &ResourceKind, watch: WatchHealth) {
        if let Some(slot) = self.slot(kind) {
            slot.health().watch = watch;
        }
    }

    /// Every kind's state, for the metrics.
    pub fn report(&self) -> Vec<KindReport> {
        self.kinds
            .iter()
            .map(|slot| {
                let health = slot.health();
                let mut report = KindReport {
                    kind: slot.kind.clone(),
                    status: KindStatus::Pending,
                    objects: 0,
                    bytes: 0,
                    resource_version: 0,
                    since_change: health.changed_at.map(|at| at.elapsed()),
                    watch: health.watch,
                };
                match &*slot.state.read().expect("cache lock poisoned") {
                    SlotState::Pending => {}
                    SlotState::Unserved(_) => report.status = KindStatus::Unserved,
                    SlotState::Ready(index) => {
                        report.status = if health.watch.failing {
                            KindStatus::Stale
                        } else {
                            KindStatus::Ready
                        };
                        report.objects = index.len();
                        report.bytes = index.held_bytes();
                        report.resource_version = index.resource_version();
                    }
                }
                report
            })
            .collect()
    }

    /// Records that the cluster does not serve `kind`: reads of it fail with `reason`.
    pub fn mark_unserved(&self, kind: &ResourceKind, reason: String) {
        self.set(kind, SlotState::Unserved(reason));
    }

    /// Whether every kind has completed its first list (or is known not to be served).
    pub fn all_synced(&self) -> bool {
        self.kinds.iter().all(|slot| {
            !matches!(
                *slot.state.read().expect("cache lock poisoned"),
                SlotState::Pending
            )
        })
    }

    /// Fills every kind from a snapshot file's objects; kinds the file lacks are
    /// published empty.
    pub fn publish_file(&self, mut file: snapshot_file::Snapshot) {
        for slot in &self.kinds {
            let index = file
                .take(&slot.kind)
                .unwrap_or_else(|| KindIndex::new(slot.kind.clone(), well_known_scope(&slot.kind)));
            self.publish(Arc::new(index));
        }
    }
}

impl KindSlot {
    fn health(&self) -> MutexGuard<'_, KindHealth> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The scope of the kinds every cluster has, for a kind with no objects to tell.
pub fn well_known_scope(kind: &ResourceKind) -> Scope {
    if kind.matches(&ResourceKind::namespaces()) {
        Scope::Cluster
    } else {
        Scope::Namespaced
    }
}

impl ClusterCache for ClusterState {
    fn snapshot(&self, kind: &ResourceKind) -> Result<Arc<dyn KindSnapshot>, CacheError> {
        let slot = self
            .slot(kind)
            .ok_or_else(|| CacheError::NotCached(kind.clone()))?;
        match &*slot.state.read().expect("cache lock poisoned") {
            SlotState::Ready(index) => Ok(index.clone()),
            SlotState::Pending => Err(CacheError::Unavailable(slot.kind.clone())),
            SlotState::Unserved(reason) => Err(CacheError::Unserved {
                kind: slot.kind.clone(),
                reason: reason.clone(),
            }),
        }
    }
}

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
            for found in resolved {
                tokio::spawn(reflector::reflect(client.clone(), found, state.clone()));
            }
            for kind in unreachable {
                tokio::spawn(discover_then_reflect(
                    client.clone(),
                    kind,
                    state.clone(),
                    continue_on_errors,
                ));
            }
            let reviewer =
                review::ApiAccessReviewer::new(client, tokio::runtime::Handle::current());
            Ok(Cluster {
                state,
                reviewer: Some(Arc::new(reviewer)),
                unserved,
            })
        }
    }
}

/// How long start-up waits for one kind's discovery before retrying it in the background.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Discovery retried with backoff until the API server answers, then the reflector.
async fn discover_then_reflect(
    client: kube::Client,
    kind: ResourceKind,
    state: Arc<ClusterState>,
    continue_on_errors: bool,
) {
    let mut delay = Duration::from_millis(500);
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
                delay = (delay * 2).min(Duration::from_secs(5));
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
