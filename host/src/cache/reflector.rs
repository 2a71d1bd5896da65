//! One reflector per cached kind: kube-runtime's watcher (list, then watch from the
//! list's resourceVersion, re-list after `410 Gone`, backoff on errors) feeding a
//! [`KindList`] that publishes a new List after each burst of changes.

use std::sync::Arc;

use anyhow::Context;
use futures::{FutureExt, StreamExt};
use guest_adapter::ResourceKind;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use super::ClusterState;
use super::list::{Changes, KindList, prepare_object};

/// Resolves the API resource (plural name, scope) of a kind: well-known kinds directly,
/// others through API discovery.
pub async fn api_resource(client: &Client, kind: &ResourceKind) -> anyhow::Result<ApiResource> {
    let (group, version) = match kind.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", kind.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &kind.kind);
    let plural = match (group, kind.kind.as_str()) {
        ("", "Namespace") => Some("namespaces"),
        ("", "Service") => Some("services"),
        ("networking.k8s.io", "Ingress") => Some("ingresses"),
        _ => None,
    };
    match plural {
        Some(plural) => Ok(ApiResource::from_gvk_with_plural(&gvk, plural)),
        None => kube::discovery::pinned_kind(client, &gvk)
            .await
            .map(|(resource, _)| resource)
            .with_context(|| format!("cannot discover the API resource of {kind}")),
    }
}

/// Keeps `kind` in `state` up to date until the task is dropped.
pub async fn reflect(
    client: Client,
    resource: ApiResource,
    kind: ResourceKind,
    state: Arc<ClusterState>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    // MostRecent: a re-list after `410 Gone` must not come from a stale API server cache.
    let config = watcher::Config::default().list_semantic(watcher::ListSemantic::MostRecent);
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut reflector = Reflector::new(kind);
    while let Some(event) = stream.next().await {
        reflector.handle(event);
        // Coalesce a burst: take every event that is already there, then publish once.
        while let Some(Some(event)) = stream.next().now_or_never() {
            reflector.handle(event);
        }
        if let Some((list, relisted)) = reflector.take_publishable() {
            state.publish(&reflector.kind, list);
            if relisted {
                // It walks the whole heap: not on a runtime thread.
                tokio::task::spawn_blocking(super::release_freed_memory);
            }
        }
    }
}

/// The state machine behind [`reflect`], apart from the stream so it can be tested.
struct Reflector {
    kind: ResourceKind,
    list: KindList,
    /// Changes since the last publication.
    pending: Changes,
    pending_rv: u64,
    /// Objects of a (re-)list in progress; they replace the whole list at `InitDone`.
    relisting: Option<Changes>,
    synced: bool,
    /// A whole list arrived since the last publication.
    relisted: bool,
    dirty: bool,
    failing: bool,
}

impl Reflector {
    fn new(kind: ResourceKind) -> Self {
        Self {
            list: KindList::new(kind.clone()),
            kind,
            pending: Changes::new(),
            pending_rv: 0,
            relisting: None,
            synced: false,
            relisted: false,
            dirty: false,
            failing: false,
        }
    }

    fn handle(&mut self, event: Result<Event<DynamicObject>, watcher::Error>) {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                // Once per outage: the watcher retries with backoff, and the last
                // published List keeps being served meanwhile.
                if !self.failing {
                    tracing::warn!(kind = %self.kind, error = %err, "watch failed; serving the last snapshot while retrying");
                    self.failing = true;
                } else {
                    tracing::debug!(kind = %self.kind, error = %err, "watch still failing");
                }
                return;
            }
        };
        if self.failing {
            tracing::info!(kind = %self.kind, "watch recovered");
            self.failing = false;
        }
        match event {
            Event::Init => self.relisting = Some(Changes::new()),
            Event::InitApply(object) => {
                if let Some((key, bytes, rv)) = self.prepare(object) {
                    self.relisting
                        .get_or_insert_with(Changes::new)
                        .insert(key, Some(bytes));
                    self.pending_rv = self.pending_rv.max(rv);
                }
            }
            Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                // A re-list replaces everything: objects deleted while the watch was down
                // must disappear, so start from an empty list.
                self.list = KindList::new(self.kind.clone());
                self.pending = listed;
                self.dirty = true;
                self.relisted = true;
                self.synced = true;
            }
            Event::Apply(object) => {
                if let Some((key, bytes, rv)) = self.prepare(object) {
                    self.pending.insert(key, Some(bytes));
                    self.pending_rv = self.pending_rv.max(rv);
                    self.dirty = true;
                }
            }
            Event::Delete(object) => {
                if let Some((key, _, rv)) = self.prepare(object) {
                    self.pending.insert(key, None);
                    self.pending_rv = self.pending_rv.max(rv);
                    self.dirty = true;
                }
            }
        }
    }

    fn prepare(
        &self,
        object: DynamicObject,
    ) -> Option<(super::list::ObjectKey, bytes::Bytes, u64)> {
        let value = serde_json::to_value(object).ok()?;
        prepare_object(&self.kind, value)
    }

    /// The new List, if there were changes since the last one and the first list is done,
    /// and whether it comes from a whole (re-)list.
    fn take_publishable(&mut self) -> Option<(guest_adapter::ListJson, bool)> {
        if !(self.synced && self.dirty) {
            return None;
        }
        let changes = std::mem::take(&mut self.pending);
        self.list.apply(changes, self.pending_rv);
        self.dirty = false;
        let relisted = std::mem::take(&mut self.relisted);
        if relisted {
            tracing::info!(
                kind = %self.kind,
                objects = self.list.len(),
                bytes = self.list.held_bytes(),
                "listed; cached"
            );
        }
        Some((self.list.json(), relisted))
    }
}
