//! The cache of cluster state, as the adapter sees it: a source of prepared answers.

use bytes::Bytes;

use crate::query::ResourceKind;

/// Why the cache cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The kind is not cached (no policy was granted it, so no reflector runs for it).
    #[error("{0} is not cached by this server")]
    NotCached(ResourceKind),
    /// The kind is cached but its first list has not completed yet.
    #[error("{0} is not available yet: the cache has not finished its first list")]
    Unavailable(ResourceKind),
}

/// Prepared List answers, one per cached kind. Implementations publish a new immutable
/// answer on every change; `list` hands out the latest one without copying it.
pub trait ClusterCache: Send + Sync {
    /// The latest List JSON of `kind` (`apiVersion`, `kind: ...List`,
    /// `metadata.resourceVersion`, `items`).
    fn list(&self, kind: &ResourceKind) -> Result<Bytes, CacheError>;
}

/// A cache that holds nothing: for servers whose policies read no cluster state.
#[derive(Debug, Default)]
pub struct NoCluster;

impl ClusterCache for NoCluster {
    fn list(&self, kind: &ResourceKind) -> Result<Bytes, CacheError> {
        Err(CacheError::NotCached(kind.clone()))
    }
}
