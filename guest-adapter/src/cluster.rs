//! The cache of cluster state, as the adapter sees it: one immutable snapshot per kind,
//! which answers lists and gets from its indexes.

use std::sync::Arc;

use crate::answer::Answer;
use crate::query::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};

/// Whether objects of a kind live in namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// Why the cache cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The kind is not cached (no policy was granted it, so no reflector runs for it).
    #[error("{0} is not cached by this server")]
    NotCached(ResourceKind),
    /// The kind is cached but its first list has not completed yet.
    #[error("{0} is not available yet: the cache has not finished its first list")]
    Unavailable(ResourceKind),
    /// The cluster does not serve the kind (found at start-up, kept for the policies that
    /// asked for it when the server runs with `--continue-on-errors`).
    #[error("{kind} cannot be read: {reason}")]
    Unserved { kind: ResourceKind, reason: String },
}

/// The latest state of every cached kind.
pub trait ClusterCache: Send + Sync {
    /// The current snapshot of `kind`. It never changes: a change in the cluster
    /// publishes a new one.
    fn snapshot(&self, kind: &ResourceKind) -> Result<Arc<dyn KindSnapshot>, CacheError>;
}

/// One kind at one moment: its objects, serialized, indexed by namespace and name.
/// Answers cost in proportion to what they hold, not to the number of objects.
pub trait KindSnapshot: Send + Sync {
    /// The kind, spelled as the API server spells it.
    fn kind(&self) -> &ResourceKind;

    fn scope(&self) -> Scope;

    /// The List JSON (`apiVersion`, `kind: ...List`, `metadata.resourceVersion`, `items`)
    /// of the objects in `namespace` (all namespaces if `None`) that both selectors
    /// select, ordered by namespace and name as the API server lists them.
    fn list(
        &self,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Answer;

    /// One object's JSON; `namespace` is empty for a cluster-scoped kind.
    fn get(&self, namespace: &str, name: &str) -> Option<Answer>;
}

/// A cache that holds nothing: for servers whose policies read no cluster state.
#[derive(Debug, Default)]
pub struct NoCluster;

impl ClusterCache for NoCluster {
    fn snapshot(&self, kind: &ResourceKind) -> Result<Arc<dyn KindSnapshot>, CacheError> {
        Err(CacheError::NotCached(kind.clone()))
    }
}
