//! The cluster cache: one prepared List per kind that some policy may read, filled from
//! the Kubernetes API (one reflector per kind) or from a snapshot file.

pub mod list;
pub mod reflector;
pub mod snapshot_file;

use std::collections::HashMap;
use std::sync::RwLock;

use guest_adapter::{CacheError, ClusterCache, ListJson, ResourceKind};

use list::{Changes, KindList};

/// The latest published List of every cached kind. Writers (a reflector per kind)
/// publish whole new answers; readers take a handle to the current one.
pub struct ClusterState {
    kinds: HashMap<LookupKey, KindSlot>,
}

/// Kinds are looked up ignoring case, as access rules match them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LookupKey(String, String);

impl From<&ResourceKind> for LookupKey {
    fn from(kind: &ResourceKind) -> Self {
        Self(
            kind.api_version.to_ascii_lowercase(),
            kind.kind.to_ascii_lowercase(),
        )
    }
}

struct KindSlot {
    kind: ResourceKind,
    /// `None` until the first list completed.
    published: RwLock<Option<ListJson>>,
}

impl ClusterState {
    /// A cache for `kinds`, none of them available until first published.
    pub fn new(kinds: impl IntoIterator<Item = ResourceKind>) -> Self {
        let kinds = kinds
            .into_iter()
            .map(|kind| {
                let slot = KindSlot {
                    kind: kind.clone(),
                    published: RwLock::new(None),
                };
                (LookupKey::from(&kind), slot)
            })
            .collect();
        Self { kinds }
    }

    /// The cached kinds, spelled as configured.
    pub fn kinds(&self) -> impl Iterator<Item = &ResourceKind> {
        self.kinds.values().map(|slot| &slot.kind)
    }

    /// Makes `list` the answer for its kind.
    pub fn publish(&self, kind: &ResourceKind, list: ListJson) {
        if let Some(slot) = self.kinds.get(&LookupKey::from(kind)) {
            *slot.published.write().expect("cache lock poisoned") = Some(list);
        }
    }

    /// Whether every kind has completed its first list.
    pub fn all_synced(&self) -> bool {
        self.kinds.values().all(|slot| {
            slot.published
                .read()
                .expect("cache lock poisoned")
                .is_some()
        })
    }

    /// Fills every kind from a set of objects (a snapshot file): kinds without objects
    /// are published as empty Lists.
    pub fn publish_all(&self, mut lists: HashMap<ResourceKind, (Changes, u64)>) {
        for slot in self.kinds.values() {
            let key = lists.keys().find(|k| k.matches(&slot.kind)).cloned();
            let mut list = KindList::new(slot.kind.clone());
            if let Some((changes, resource_version)) = key.and_then(|k| lists.remove(&k)) {
                list.apply(changes, resource_version);
            }
            self.publish(&slot.kind, list.json());
        }
    }
}

impl ClusterCache for ClusterState {
    fn list(&self, kind: &ResourceKind) -> Result<ListJson, CacheError> {
        let slot = self
            .kinds
            .get(&LookupKey::from(kind))
            .ok_or_else(|| CacheError::NotCached(kind.clone()))?;
        slot.published
            .read()
            .expect("cache lock poisoned")
            .clone()
            .ok_or_else(|| CacheError::Unavailable(kind.clone()))
    }
}

/// Hands memory freed by a burst of short-lived allocations back to the OS: parsing a
/// whole List allocates several times its size, compiling policies far more, and glibc
/// keeps what they freed in its per-thread arenas, where it would count against the
/// server for good.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's heaps to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Where the cache gets its objects.
#[derive(Debug, Clone)]
pub enum CacheSource {
    /// A snapshot file, read once at start-up.
    File(std::path::PathBuf),
    /// The Kubernetes API, from a kubeconfig (or the in-cluster/default configuration).
    Cluster {
        kubeconfig: Option<std::path::PathBuf>,
    },
}

/// Builds the cache for `kinds` and starts filling it: from the file at once, or with one
/// reflector per kind (started now, not on first use, so no admission request waits for
/// an initial list).
pub async fn start(
    kinds: Vec<ResourceKind>,
    source: &CacheSource,
) -> anyhow::Result<std::sync::Arc<ClusterState>> {
    use anyhow::Context;
    let state = std::sync::Arc::new(ClusterState::new(kinds));
    match source {
        CacheSource::File(path) => {
            state.publish_all(snapshot_file::load(path)?);
            release_freed_memory();
        }
        CacheSource::Cluster { kubeconfig } => {
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
            let client =
                kube::Client::try_from(config).context("cannot build a Kubernetes client")?;
            for kind in state.kinds().cloned().collect::<Vec<_>>() {
                let resource = reflector::api_resource(&client, &kind).await?;
                tracing::info!(%kind, plural = %resource.plural, "starting reflector");
                tokio::spawn(reflector::reflect(
                    client.clone(),
                    resource,
                    kind,
                    state.clone(),
                ));
            }
        }
    }
    Ok(state)
}
