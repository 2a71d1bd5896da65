//! One reflector per cached kind: kube-runtime's watcher (list, then watch from the
//! list's resourceVersion, re-list after `410 Gone`, backoff on errors) feeding a
//! [`Reflector`] that publishes a new snapshot after each burst of changes.

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use guest_adapter::{ResourceKind, Scope};
use kube::Api;
use kube::api::DynamicObject;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::ClusterState;
use super::discovery::Resolved;
use super::index::KindIndex;
use super::object::{Changes, Prepared, prepare_object};

/// Keeps one kind in `state` up to date until the task is dropped.
pub async fn reflect(client: kube::Client, resolved: Resolved, state: Arc<ClusterState>) {
    tracing::info!(kind = %resolved.kind, plural = %resolved.resource.plural, scope = ?resolved.scope, "starting reflector");
    let api: Api<DynamicObject> = Api::all_with(client, &resolved.resource);
    // MostRecent: a re-list after `410 Gone` must not come from a stale API server cache.
    let config = watcher::Config::default().list_semantic(watcher::ListSemantic::MostRecent);
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut reflector = Reflector::new(resolved.kind, resolved.scope);
    while let Some(event) = stream.next().await {
        reflector.handle(event);
        // Coalesce a burst: take every event that is already there, then publish once.
        while let Some(Some(event)) = stream.next().now_or_never() {
            reflector.handle(event);
        }
        state.record_watch(reflector.kind(), reflector.health());
        // A whole list rebuilds every block: off the runtime's task threads, which also
        // serve admission requests.
        if let Some(publication) = tokio::task::block_in_place(|| reflector.take_publication()) {
            state.publish(publication.index);
            if publication.relisted {
                // It walks the whole heap: not on a runtime thread.
                tokio::task::spawn_blocking(crate::memory::release_freed_memory);
            }
        }
    }
}

/// What waits to be published.
#[derive(Debug, Default)]
enum Pending {
    #[default]
    Nothing,
    /// Changes on top of the current snapshot.
    Changes(Changes),
    /// A whole (re-)list, which replaces it: objects deleted while the watch was down
    /// must disappear.
    WholeList(Changes),
}

/// A new snapshot to publish, and whether it comes from a whole (re-)list.
pub struct Publication {
    pub index: Arc<KindIndex>,
    pub relisted: bool,
}

/// The state machine behind [`reflect`], apart from the stream so it can be fed events
/// in tests.
pub struct Reflector {
    current: Arc<KindIndex>,
    /// Objects of a (re-)list in progress, between `Init` and `InitDone`.
    listing: Option<Changes>,
    pending: Pending,
    /// The newest resourceVersion seen; never goes back, even across re-lists.
    resource_version: u64,
    /// Until the first list is done there is nothing to publish.
    synced: bool,
    /// How the watch has fared, for the metrics.
    health: WatchHealth,
}

/// How one kind's watch has fared since the reflector started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchHealth {
    /// Whole lists, the first one included (a re-list follows `410 Gone` or an outage).
    pub lists: u64,
    /// Failed list or watch calls, each followed by a retry with backoff.
    pub errors: u64,
    /// Inside an outage: the last call failed and none has succeeded since.
    pub failing: bool,
}

impl Reflector {
    pub fn new(kind: ResourceKind, scope: Scope) -> Self {
        Self {
            current: Arc::new(KindIndex::new(kind, scope)),
            listing: None,
            pending: Pending::Nothing,
            resource_version: 0,
            synced: false,
            health: WatchHealth::default(),
        }
    }

    pub fn health(&self) -> WatchHealth {
        self.health
    }

    fn kind(&self) -> &ResourceKind {
        guest_adapter::KindSnapshot::kind(self.current.as_ref())
    }

    pub fn handle(&mut self, event: Result<Event<DynamicObject>, watcher::Error>) {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                self.health.errors += 1;
                // Once per outage: the watcher retries with backoff, and the last
                // published snapshot keeps being served meanwhile.
                if !self.health.failing {
                    tracing::warn!(kind = %self.kind(), error = %err, "watch failed; serving the last snapshot while retrying");
                    self.health.failing = true;
                } else {
                    tracing::debug!(kind = %self.kind(), error = %err, "watch still failing");
                }
                return;
            }
        };
        if std::mem::take(&mut self.health.failing) {
            tracing::info!(kind = %self.kind(), "watch recovered");
        }
        match event {
            Event::Init => {
                self.health.lists += 1;
                self.listing = Some(Changes::new());
            }
            Event::InitApply(object) => {
                if let Some(prepared) = self.prepare(object) {
                    self.listing
                        .get_or_insert_with(Changes::new)
                        .insert(prepared.key, Some(prepared.object));
                }
            }
            Event::InitDone => {
                self.pending = Pending::WholeList(self.listing.take().unwrap_or_default());
                self.synced = true;
            }
            Event::Apply(object) => {
                if let Some(prepared) = self.prepare(object) {
                    self.change().insert(prepared.key, Some(prepared.object));
                }
            }
            Event::Delete(object) => {
                if let Some(prepared) = self.prepare(object) {
                    self.change().insert(prepared.key, None);
                }
            }
        }
    }

    /// Where a watch event's change goes: on top of a pending whole list, if any.
    fn change(&mut self) -> &mut Changes {
        if matches!(self.pending, Pending::Nothing) {
            self.pending = Pending::Changes(Changes::new());
        }
        match &mut self.pending {
            Pending::Changes(changes) | Pending::WholeList(changes) => changes,
            Pending::Nothing => unreachable!("set just above"),
        }
    }

    fn prepare(&mut self, object: DynamicObject) -> Option<Prepared> {
        let value = serde_json::to_value(object).ok()?;
        let prepared = prepare_object(self.kind(), value)?;
        self.resource_version = self.resource_version.max(prepared.resource_version);
        Some(prepared)
    }

    /// The new snapshot, if the first list is done and something changed since the
    /// last one.
    pub fn take_publication(&mut self) -> Option<Publication> {
        if !self.synced {
            return None;
        }
        let (index, relisted) = match std::mem::take(&mut self.pending) {
            Pending::Nothing => return None,
            Pending::Changes(changes) => {
                (self.current.apply(&changes, self.resource_version), false)
            }
            Pending::WholeList(changes) => {
                let empty = KindIndex::new(
                    self.kind().clone(),
                    guest_adapter::KindSnapshot::scope(self.current.as_ref()),
                );
                (empty.apply(&changes, self.resource_version), true)
            }
        };
        self.current = Arc::new(index);
        if relisted {
            tracing::info!(
                kind = %self.kind(),
                objects = self.current.len(),
                bytes = self.current.held_bytes(),
                "listed; cached"
            );
        }
        Some(Publication {
            index: self.current.clone(),
            relisted,
        })
    }
}

#[cfg(test)]
mod tests {
    use guest_adapter::KindSnapshot;
    use guest_adapter::selector::{FieldSelector, LabelSelector};
    use kube::api::{ApiResource, GroupVersionKind};
    use serde_json::json;

    use super::*;

    fn namespace(name: &str, resource_version: u64) -> DynamicObject {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("", "v1", "Namespace"),
            "namespaces",
        );
        let mut object = DynamicObject::new(name, &resource).data(json!({"spec": {}}));
        object.metadata.resource_version = Some(resource_version.to_string());
        object
    }

    fn names(index: &KindIndex) -> Vec<String> {
        let answer = index.list(None, &LabelSelector::default(), &FieldSelector::default());
        let list: serde_json::Value = serde_json::from_str(&answer.to_text()).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    }

    fn reflector() -> Reflector {
        Reflector::new(ResourceKind::namespaces(), Scope::Cluster)
    }

    fn feed(reflector: &mut Reflector, events: Vec<Event<DynamicObject>>) -> Option<Publication> {
        for event in events {
            reflector.handle(Ok(event));
        }
        reflector.take_publication()
    }

    #[test]
    fn nothing_is_published_before_the_first_list_is_done() {
        let mut reflector = reflector();
        let early = feed(
            &mut reflector,
            vec![Event::Init, Event::InitApply(namespace("a", 3))],
        );
        assert!(early.is_none());
        let listed = feed(&mut reflector, vec![Event::InitDone]).unwrap();
        assert!(listed.relisted);
        assert_eq!(names(&listed.index), ["a"]);
        assert_eq!(listed.index.resource_version(), 3);
        // An empty cluster is a publication too: the kind becomes ready.
        let mut empty = Reflector::new(ResourceKind::services(), Scope::Namespaced);
        assert!(feed(&mut empty, vec![Event::Init, Event::InitDone]).is_some());
    }

    #[test]
    fn a_burst_of_changes_is_one_publication() {
        let mut reflector = reflector();
        feed(
            &mut reflector,
            vec![
                Event::Init,
                Event::InitApply(namespace("a", 3)),
                Event::InitDone,
            ],
        );
        let burst = feed(
            &mut reflector,
            vec![
                Event::Apply(namespace("b", 4)),
                Event::Apply(namespace("c", 5)),
                Event::Delete(namespace("a", 6)),
            ],
        )
        .unwrap();
        assert!(!burst.relisted);
        assert_eq!(names(&burst.index), ["b", "c"]);
        assert_eq!(burst.index.resource_version(), 6);
        assert!(reflector.take_publication().is_none(), "nothing new");
    }

    #[test]
    fn a_relist_replaces_everything_and_keeps_the_newest_version() {
        let mut reflector = reflector();
        feed(
            &mut reflector,
            vec![
                Event::Init,
                Event::InitApply(namespace("a", 3)),
                Event::InitApply(namespace("b", 9)),
                Event::InitDone,
            ],
        );
        // The watch broke (410 Gone); "a" was deleted meanwhile, "c" created.
        reflector.handle(Err(watcher::Error::NoResourceVersion));
        let relisted = feed(
            &mut reflector,
            vec![
                Event::Init,
                Event::InitApply(namespace("b", 9)),
                Event::InitApply(namespace("c", 8)),
                Event::InitDone,
                Event::Apply(namespace("d", 10)),
            ],
        )
        .unwrap();
        assert!(relisted.relisted);
        assert_eq!(names(&relisted.index), ["b", "c", "d"]);
        assert_eq!(relisted.index.resource_version(), 10);
    }

    #[test]
    fn an_outage_keeps_the_last_snapshot() {
        let mut reflector = reflector();
        let first = feed(
            &mut reflector,
            vec![
                Event::Init,
                Event::InitApply(namespace("a", 3)),
                Event::InitDone,
            ],
        )
        .unwrap();
        reflector.handle(Err(watcher::Error::NoResourceVersion));
        reflector.handle(Err(watcher::Error::NoResourceVersion));
        assert!(reflector.take_publication().is_none());
        assert_eq!(names(&first.index), ["a"]);
    }
}
