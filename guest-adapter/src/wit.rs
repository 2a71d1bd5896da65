//! The WIT interface `cluster-context` (component policies), mapped onto the same queries,
//! access rules and snapshots as the waPC calls. Every version of the interface lands
//! here: `@0.1.0`'s three list functions are `list` of a fixed kind. Errors become the
//! interface's typed cases at this boundary.

use std::time::Instant;

use crate::answer::Answer;
use crate::cluster::CacheError;
use crate::query::{self, ClusterQuery, GetQuery, ListQuery, ResourceKind};
use crate::record::CallStyle;
use crate::review::AccessReview;
use crate::session::{GuestSession, HostCallError};

/// The cases of the WIT `error` variant; the text is the same the legacy call gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextError {
    NotAllowed(String),
    NotFound(String),
    Unavailable(String),
    Invalid(String),
}

impl From<HostCallError> for ContextError {
    fn from(err: HostCallError) -> Self {
        let text = err.to_string();
        match err {
            HostCallError::NotAllowed { .. } | HostCallError::AccessReviewsNotAllowed { .. } => {
                Self::NotAllowed(text)
            }
            HostCallError::NotFound { .. } => Self::NotFound(text),
            HostCallError::Cache {
                source:
                    CacheError::NotCached(_) | CacheError::Unavailable(_) | CacheError::Unserved { .. },
                ..
            }
            | HostCallError::AccessReview { .. } => Self::Unavailable(text),
            HostCallError::Unknown { .. }
            | HostCallError::MalformedPayload { .. }
            | HostCallError::InvalidArgument { .. }
            | HostCallError::ClusterWide { .. } => Self::Invalid(text),
        }
    }
}

/// The arguments of `list` as the component passes them.
pub struct WitListQuery {
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

impl GuestSession {
    fn wit_kind(&self, api_version: String, kind: String) -> Result<ResourceKind, HostCallError> {
        query::kind(api_version, kind).map_err(|e| self.invalid(e))
    }

    /// Answers `query` and records the call.
    fn wit_query(
        &mut self,
        started: Instant,
        operation: &'static str,
        query: Result<ClusterQuery, HostCallError>,
    ) -> Result<Answer, ContextError> {
        let query = match query {
            Ok(query) => query,
            Err(e) => {
                let refused = Err(e);
                self.record(started, CallStyle::Wit, operation, None, &refused);
                return refused.map_err(ContextError::from);
            }
        };
        let answer = self.query(&query);
        self.record(
            started,
            CallStyle::Wit,
            operation,
            Some(query.kind()),
            &answer,
        );
        answer.map_err(ContextError::from)
    }

    /// `list(kind, query)`.
    pub fn wit_list(
        &mut self,
        api_version: String,
        kind: String,
        query: WitListQuery,
    ) -> Result<Answer, ContextError> {
        let started = Instant::now();
        let query = self.wit_kind(api_version, kind).and_then(|kind| {
            ListQuery::parse(
                kind,
                query.namespace,
                query.label_selector.as_deref(),
                query.field_selector.as_deref(),
            )
            .map(ClusterQuery::List)
            .map_err(|e| self.invalid(e))
        });
        self.wit_query(started, "list", query)
    }

    /// `get(kind, namespace, name)`.
    pub fn wit_get(
        &mut self,
        api_version: String,
        kind: String,
        namespace: Option<String>,
        name: String,
    ) -> Result<Answer, ContextError> {
        let started = Instant::now();
        let query = self.wit_kind(api_version, kind).and_then(|kind| {
            GetQuery::parse(kind, namespace, name)
                .map(ClusterQuery::Get)
                .map_err(|e| self.invalid(e))
        });
        self.wit_query(started, "get", query)
    }

    /// `list-namespaces`, `list-services`, `list-ingresses` of `@0.1.0`.
    pub fn wit_list_all(&mut self, kind: ResourceKind) -> Result<Answer, ContextError> {
        self.wit_query(
            Instant::now(),
            "list",
            Ok(ClusterQuery::List(ListQuery::all(kind))),
        )
    }

    /// `can-i(review)`: the `SubjectAccessReviewStatus` JSON.
    pub fn wit_can_i(&mut self, review: &AccessReview) -> Result<Answer, ContextError> {
        let started = Instant::now();
        let answer = self.can_i(review, false);
        self.record(started, CallStyle::Wit, "can_i", None, &answer);
        answer.map_err(ContextError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::{FakeCache, namespaces, services, session};

    fn query(namespace: Option<&str>, labels: Option<&str>) -> WitListQuery {
        WitListQuery {
            namespace: namespace.map(str::to_owned),
            label_selector: labels.map(str::to_owned),
            field_selector: None,
        }
    }

    #[test]
    fn answers_are_the_bytes_a_legacy_call_gets() {
        let cache = FakeCache::with(vec![namespaces(&["shop"]), services()]);
        let mut session = session(&[ResourceKind::services()], cache);
        let typed = session
            .wit_list(
                "v1".into(),
                "Service".into(),
                query(Some("shop"), Some("tier")),
            )
            .unwrap();
        let legacy = session
            .wapc_host_call(
                "kubewarden",
                "kubernetes",
                "list_resources_by_namespace",
                br#"{"api_version":"v1","kind":"Service","namespace":"shop","label_selector":"tier"}"#,
            )
            .unwrap();
        assert_eq!(typed.to_bytes(), legacy.to_bytes());
    }

    #[test]
    fn errors_map_to_their_typed_cases() {
        let cache = FakeCache::with(vec![namespaces(&["shop"]), services()]);
        let mut session = session(&[ResourceKind::services()], cache);
        let not_allowed = session
            .wit_list_all(ResourceKind::namespaces())
            .unwrap_err();
        assert!(matches!(not_allowed, ContextError::NotAllowed(m) if m.contains("v1/Namespace")));
        let missing = session
            .wit_get(
                "v1".into(),
                "Service".into(),
                Some("shop".into()),
                "gone".into(),
            )
            .unwrap_err();
        assert!(
            matches!(missing, ContextError::NotFound(m) if m.starts_with("Cannot find v1/Service"))
        );
        let bad_selector = session
            .wit_list("v1".into(), "Service".into(), query(None, Some("a in")))
            .unwrap_err();
        assert!(matches!(bad_selector, ContextError::Invalid(m) if m.contains("label_selector")));
        let no_kind = session
            .wit_get("v1".into(), String::new(), None, "x".into())
            .unwrap_err();
        assert!(
            matches!(no_kind, ContextError::Invalid(m) if m.contains("kind: must not be empty"))
        );
    }
}
