//! The cache of cluster state, as the adapter sees it: a source of prepared answers.

use std::sync::Arc;

use bytes::Bytes;

use crate::query::ResourceKind;

/// A prepared List answer: the JSON text, shared. Cloning it is cheap; a runtime copies
/// it once, into guest memory, whether it hands it out as bytes (waPC) or as a string
/// (components).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListJson(Arc<str>);

impl ListJson {
    pub fn new(json: impl Into<Arc<str>>) -> Self {
        Self(json.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The shared text itself, for runtimes that lower it as a string.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl AsRef<[u8]> for ListJson {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<ListJson> for Bytes {
    /// Without copying: the bytes keep the shared text alive.
    fn from(list: ListJson) -> Self {
        Bytes::from_owner(list)
    }
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
}

/// Prepared List answers, one per cached kind. Implementations publish a new immutable
/// answer on every change; `list` hands out the latest one without copying it.
pub trait ClusterCache: Send + Sync {
    /// The latest List JSON of `kind` (`apiVersion`, `kind: ...List`,
    /// `metadata.resourceVersion`, `items`).
    fn list(&self, kind: &ResourceKind) -> Result<ListJson, CacheError>;
}

/// A cache that holds nothing: for servers whose policies read no cluster state.
#[derive(Debug, Default)]
pub struct NoCluster;

impl ClusterCache for NoCluster {
    fn list(&self, kind: &ResourceKind) -> Result<ListJson, CacheError> {
        Err(CacheError::NotCached(kind.clone()))
    }
}
