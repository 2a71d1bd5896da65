//! One policy's view of the host, and one evaluation's use of it.

use std::sync::Arc;

use crate::access::AccessRules;
use crate::cluster::{CacheError, ClusterCache, ListJson};
use crate::query::{ClusterQuery, ResourceKind};

/// Why a guest's request was not answered. The message is what the guest receives, so it
/// names the policy and what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostCallError {
    #[error("policy '{policy}': unknown host call {binding}/{namespace}/{operation}")]
    Unknown {
        policy: Arc<str>,
        binding: String,
        namespace: String,
        operation: String,
    },
    #[error("policy '{policy}': malformed payload for {call}: {reason}")]
    MalformedPayload {
        policy: Arc<str>,
        call: String,
        reason: String,
    },
    #[error(
        "policy '{policy}' is not allowed to read {kind}: grant it in the policy's contextAwareResources"
    )]
    NotAllowed {
        policy: Arc<str>,
        kind: ResourceKind,
    },
    #[error("policy '{policy}': {source}")]
    Cache {
        policy: Arc<str>,
        #[source]
        source: CacheError,
    },
}

/// What the host knows about one policy: its id, the kinds it may read, and the cache.
/// Built once per policy at start-up.
pub struct PolicyContext {
    policy_id: Arc<str>,
    access: AccessRules,
    cache: Arc<dyn ClusterCache>,
}

impl PolicyContext {
    pub fn new(
        policy_id: impl Into<Arc<str>>,
        access: AccessRules,
        cache: Arc<dyn ClusterCache>,
    ) -> Self {
        Self {
            policy_id: policy_id.into(),
            access,
            cache,
        }
    }

    pub fn policy_id(&self) -> &Arc<str> {
        &self.policy_id
    }
}

/// One evaluation's session with the host. The first answer for a kind is pinned, so an
/// evaluation that asks twice sees the same snapshot even if the cache moved on.
pub struct GuestSession {
    context: Arc<PolicyContext>,
    pinned: Vec<(ResourceKind, ListJson)>,
}

impl GuestSession {
    pub fn new(context: Arc<PolicyContext>) -> Self {
        Self {
            context,
            pinned: Vec::new(),
        }
    }

    pub fn policy_id(&self) -> &Arc<str> {
        &self.context.policy_id
    }

    /// Forgets pinned answers: the next evaluation in this session sees the latest cache.
    pub fn reset(&mut self) {
        self.pinned.clear();
    }

    /// Answers a cluster query: access check, then the (pinned) cached answer.
    pub fn query(&mut self, query: &ClusterQuery) -> Result<ListJson, HostCallError> {
        let kind = query.kind();
        if !self.context.access.allows(kind) {
            return Err(HostCallError::NotAllowed {
                policy: self.context.policy_id.clone(),
                kind: kind.clone(),
            });
        }
        match query {
            ClusterQuery::ListAll(kind) => self.list(kind),
        }
    }

    fn list(&mut self, kind: &ResourceKind) -> Result<ListJson, HostCallError> {
        if let Some((_, answer)) = self.pinned.iter().find(|(k, _)| k == kind) {
            return Ok(answer.clone());
        }
        let answer = self
            .context
            .cache
            .list(kind)
            .map_err(|source| HostCallError::Cache {
                policy: self.context.policy_id.clone(),
                source,
            })?;
        self.pinned.push((kind.clone(), answer.clone()));
        Ok(answer)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A cache whose answer for every kind can be replaced between calls.
    #[derive(Default)]
    pub(crate) struct FakeCache(pub Mutex<Option<ListJson>>);

    impl ClusterCache for FakeCache {
        fn list(&self, kind: &ResourceKind) -> Result<ListJson, CacheError> {
            self.0
                .lock()
                .unwrap()
                .clone()
                .ok_or_else(|| CacheError::Unavailable(kind.clone()))
        }
    }

    pub(crate) fn session(granted: &[ResourceKind], cache: Arc<FakeCache>) -> GuestSession {
        let context = PolicyContext::new("p1", AccessRules::new(granted.to_vec()), cache);
        GuestSession::new(Arc::new(context))
    }

    #[test]
    fn one_evaluation_sees_one_snapshot_per_kind() {
        let cache = Arc::new(FakeCache(Mutex::new(Some(ListJson::new("first")))));
        let mut session = session(&[ResourceKind::namespaces()], cache.clone());
        let query = ClusterQuery::ListAll(ResourceKind::namespaces());
        assert_eq!(session.query(&query).unwrap().as_str(), "first");
        *cache.0.lock().unwrap() = Some(ListJson::new("second"));
        assert_eq!(session.query(&query).unwrap().as_str(), "first");
        let mut next = GuestSession::new(session.context.clone());
        assert_eq!(next.query(&query).unwrap().as_str(), "second");
    }

    #[test]
    fn ungranted_kinds_are_denied_with_policy_and_kind() {
        let cache = Arc::new(FakeCache(Mutex::new(Some(ListJson::new("")))));
        let mut session = session(&[ResourceKind::namespaces()], cache);
        let err = session
            .query(&ClusterQuery::ListAll(ResourceKind::services()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy 'p1' is not allowed to read v1/Service: grant it in the policy's contextAwareResources"
        );
    }

    #[test]
    fn cache_errors_name_the_policy() {
        let cache = Arc::new(FakeCache::default());
        let mut session = session(&[ResourceKind::namespaces()], cache);
        let err = session
            .query(&ClusterQuery::ListAll(ResourceKind::namespaces()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy 'p1': v1/Namespace is not available yet: the cache has not finished its first list"
        );
    }
}
