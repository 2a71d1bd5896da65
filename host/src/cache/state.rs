//! The cached kinds and their latest snapshots: what evaluations read, what reflectors
//! (or a snapshot file) publish, and what readiness and the metrics look at.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use guest_adapter::{CacheError, ClusterCache, KindSnapshot, ResourceKind, Scope};

use super::index::KindIndex;
use super::reflector::WatchHealth;
use super::snapshot_file;

/// The latest snapshot of every cached kind. Writers (a reflector per kind) publish
/// whole new snapshots; readers take a handle to the current one.
pub struct ClusterState {
    /// Looked up ignoring case, as access rules match kinds: a scan, as a server caches
    /// a handful of kinds. A reload may add kinds and drop others.
    kinds: RwLock<Vec<Arc<KindSlot>>>,
}

struct KindSlot {
    kind: ResourceKind,
    state: RwLock<SlotState>,
    /// Readiness waits for its first list: a kind of the start. (A kind added by a
    /// reload is waited for by the reload, which swaps in the policies that read it only
    /// once it is listed, so readiness need not turn.)
    awaited: bool,
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
        let state = Self {
            kinds: RwLock::default(),
        };
        for kind in kinds {
            state.add(kind, true);
        }
        state
    }

    /// Starts caching `kind` (unavailable until first published); false if it is cached
    /// already. `awaited`: readiness waits for its first list.
    pub fn add(&self, kind: ResourceKind, awaited: bool) -> bool {
        let mut slots = self.kinds.write().expect("cache lock poisoned");
        if slots.iter().any(|slot| slot.kind.matches(&kind)) {
            return false;
        }
        slots.push(Arc::new(KindSlot {
            kind,
            state: RwLock::new(SlotState::Pending),
            awaited,
            health: Mutex::default(),
        }));
        true
    }

    /// Stops caching `kind`: its reads fail as for any kind not cached.
    pub fn remove(&self, kind: &ResourceKind) {
        let removed: Vec<Arc<KindSlot>> = {
            let mut slots = self.kinds.write().expect("cache lock poisoned");
            let (removed, kept) = std::mem::take(&mut *slots)
                .into_iter()
                .partition(|slot| slot.kind.matches(kind));
            *slots = kept;
            removed
        };
        // Freed outside the lock (a whole kind's snapshot may be large).
        drop(removed);
    }

    /// The cached kinds, spelled as configured.
    pub fn kinds(&self) -> Vec<ResourceKind> {
        self.slots().iter().map(|slot| slot.kind.clone()).collect()
    }

    /// Whether `kind` has completed its first list (or is known not to be served).
    pub fn is_synced(&self, kind: &ResourceKind) -> bool {
        self.slot(kind).is_some_and(|slot| slot.is_synced())
    }

    /// Why the cluster does not serve `kind`, if it said so.
    pub fn unserved_reason(&self, kind: &ResourceKind) -> Option<String> {
        let slot = self.slot(kind)?;
        match &*slot.state.read().expect("cache lock poisoned") {
            SlotState::Unserved(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    fn slots(&self) -> Vec<Arc<KindSlot>> {
        self.kinds.read().expect("cache lock poisoned").clone()
    }

    fn slot(&self, kind: &ResourceKind) -> Option<Arc<KindSlot>> {
        self.kinds
            .read()
            .expect("cache lock poisoned")
            .iter()
            .find(|slot| slot.kind.matches(kind))
            .cloned()
    }

    fn set(&self, kind: &ResourceKind, state: SlotState) {
        if let Some(slot) = self.slot(kind) {
            slot.replace(state);
        }
    }

    /// Makes `index` the snapshot of its kind.
    pub fn publish(&self, index: Arc<KindIndex>) {
        if let Some(slot) = self.slot(index.kind()) {
            slot.health().changed_at = Some(Instant::now());
            slot.replace(SlotState::Ready(index));
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
        self.slots()
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
        self.slots()
            .iter()
            .all(|slot| !slot.awaited || slot.is_synced())
    }

    /// Fills every kind from a snapshot file's objects; kinds the file lacks are
    /// published empty.
    pub fn publish_file(&self, mut file: snapshot_file::Snapshot) {
        for slot in self.slots() {
            let index = file
                .take(&slot.kind)
                .unwrap_or_else(|| KindIndex::new(slot.kind.clone(), well_known_scope(&slot.kind)));
            self.publish(Arc::new(index));
        }
    }
}

impl KindSlot {
    fn replace(&self, state: SlotState) {
        let previous = std::mem::replace(
            &mut *self.state.write().expect("cache lock poisoned"),
            state,
        );
        // Freed after the lock is released: after a relist nothing of it is shared, and
        // readers must not wait for a whole kind to be freed.
        drop(previous);
    }

    fn health(&self) -> MutexGuard<'_, KindHealth> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_synced(&self) -> bool {
        !matches!(
            *self.state.read().expect("cache lock poisoned"),
            SlotState::Pending
        )
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
