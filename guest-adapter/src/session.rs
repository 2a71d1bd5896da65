//! One policy's view of the host, and one evaluation's use of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access::AccessRules;
use crate::answer::Answer;
use crate::cluster::{CacheError, ClusterCache, KindSnapshot, Scope};
use crate::query::{ClusterQuery, GetQuery, InvalidArgument, ListQuery, ResourceKind};
use crate::record::HostCallRecorder;
use crate::review::{AccessReview, AccessReviewer};
use crate::untrusted::{LogBudget, MAX_LOGGED_BYTES_PER_EVALUATION};

/// Why a guest's request was not answered. The message is what the guest receives.
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
    #[error("policy '{policy}': {source}")]
    InvalidArgument {
        policy: Arc<str>,
        #[source]
        source: InvalidArgument,
    },
    #[error(
        "policy '{policy}' is not allowed to read {kind}: grant it in the policy's contextAwareResources"
    )]
    NotAllowed {
        policy: Arc<str>,
        kind: ResourceKind,
    },
    #[error(
        "policy '{policy}' is not allowed to ask can_i: grant it authorization.k8s.io/v1 \
         SubjectAccessReview in the policy's contextAwareResources"
    )]
    AccessReviewsNotAllowed { policy: Arc<str> },
    /// Kubewarden's own words, so guest code that looks for them keeps working.
    #[error("resource {kind} is cluster wide. Cannot search for it inside of a namespace")]
    ClusterWide { kind: ResourceKind },
    /// Kubewarden's own words, so guest code that tells "not found" apart keeps working.
    #[error("Cannot find {kind} named '{name}' inside of namespace '{namespace:?}'")]
    NotFound {
        kind: ResourceKind,
        namespace: Option<String>,
        name: String,
    },
    #[error("policy '{policy}': {source}")]
    Cache {
        policy: Arc<str>,
        #[source]
        source: CacheError,
    },
    #[error("policy '{policy}': can_i failed: {reason}")]
    AccessReview { policy: Arc<str>, reason: String },
}

/// What the host knows about one policy: its id, what it may ask, and where answers come
/// from. Built once per policy at start-up.
pub struct PolicyContext {
    policy_id: Arc<str>,
    access: AccessRules,
    cache: Arc<dyn ClusterCache>,
    reviewer: Option<Arc<dyn AccessReviewer>>,
    recorder: Option<Arc<dyn HostCallRecorder>>,
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
            reviewer: None,
            recorder: None,
        }
    }

    /// Where `can_i` is asked; without one (no cluster), `can_i` is a host error.
    pub fn with_reviewer(mut self, reviewer: Arc<dyn AccessReviewer>) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    /// Where every host call's outcome is counted.
    pub fn with_recorder(mut self, recorder: Arc<dyn HostCallRecorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    pub fn policy_id(&self) -> &Arc<str> {
        &self.policy_id
    }
}

/// One evaluation's session with the host. The first snapshot of a kind is pinned, so an
/// evaluation that asks twice sees the same state even if the cache moved on.
pub struct GuestSession {
    context: Arc<PolicyContext>,
    pinned: Vec<Arc<dyn KindSnapshot>>,
    /// When the evaluation must end: a question to the API server waits no longer.
    deadline: Option<Instant>,
    /// What is left of this evaluation's allowance of guest log output.
    log_budget: LogBudget,
}

impl GuestSession {
    pub fn new(context: Arc<PolicyContext>) -> Self {
        Self {
            context,
            pinned: Vec::new(),
            deadline: None,
            log_budget: LogBudget::default(),
        }
    }

    pub fn policy_id(&self) -> &Arc<str> {
        &self.context.policy_id
    }

    pub(crate) fn recorder(&self) -> Option<&dyn HostCallRecorder> {
        self.context.recorder.as_deref()
    }

    /// The grant `kind` falls under, as the policy's configuration spells it.
    pub(crate) fn granted(&self, kind: &ResourceKind) -> Option<&ResourceKind> {
        self.context
            .access
            .granted()
            .iter()
            .find(|granted| granted.matches(kind))
    }

    /// Starts an evaluation that may take `timeout`: pinned snapshots are forgotten, so it
    /// sees the latest cache.
    pub fn begin(&mut self, timeout: Duration) {
        self.pinned.clear();
        self.deadline = Some(Instant::now() + timeout);
        self.log_budget = LogBudget::default();
    }

    /// Whether a line of `bytes` of the guest's own output may go to the server's log.
    /// The first line over this evaluation's allowance is replaced by a warning saying so.
    pub fn admit_guest_log(&mut self, bytes: usize) -> bool {
        let first_drop = self.log_budget.dropped() == 0;
        let admitted = self.log_budget.take(bytes);
        if !admitted && first_drop {
            tracing::warn!(
                target: "policy_log",
                policy = %self.policy_id(),
                limit_bytes = MAX_LOGGED_BYTES_PER_EVALUATION,
                "the policy wrote more log output than one evaluation may; the rest is dropped"
            );
        }
        admitted
    }

    pub(crate) fn invalid(&self, source: InvalidArgument) -> HostCallError {
        HostCallError::InvalidArgument {
            policy: self.policy_id().clone(),
            source,
        }
    }

    /// Answers a cluster query: access check, then the (pinned) snapshot's indexes.
    pub fn query(&mut self, query: &ClusterQuery) -> Result<Answer, HostCallError> {
        let snapshot = self.snapshot(query.kind())?;
        match query {
            ClusterQuery::List(list) => Self::list(snapshot.as_ref(), list),
            ClusterQuery::Get(get) => Self::get(snapshot.as_ref(), get),
        }
    }

    fn list(snapshot: &dyn KindSnapshot, query: &ListQuery) -> Result<Answer, HostCallError> {
        if query.namespace.is_some() && snapshot.scope() == Scope::Cluster {
            return Err(HostCallError::ClusterWide {
                kind: snapshot.kind().clone(),
            });
        }
        // `metadata.namespace=x` narrows the scan to one namespace as well.
        let scan = query
            .namespace
            .as_deref()
            .or_else(|| query.fields.namespace());
        let answer = snapshot.list(scan, &query.labels, &query.fields);
        Ok(match &query.mask {
            Some(mask) => mask.apply_to_list(&answer),
            None => answer,
        })
    }

    fn get(snapshot: &dyn KindSnapshot, query: &GetQuery) -> Result<Answer, HostCallError> {
        // A namespace for a cluster-scoped kind, or none for a namespaced one, names no
        // object: the API server answers 404 for either, and so does this.
        let namespace = match (snapshot.scope(), query.namespace.as_deref()) {
            (Scope::Cluster, None) => Some(""),
            (Scope::Namespaced, Some(namespace)) => Some(namespace),
            _ => None,
        };
        let answer = namespace
            .and_then(|namespace| snapshot.get(namespace, &query.name))
            .ok_or_else(|| HostCallError::NotFound {
                kind: query.kind.clone(),
                namespace: query.namespace.clone(),
                name: query.name.clone(),
            })?;
        Ok(match &query.mask {
            Some(mask) => mask.apply_to_object(&answer),
            None => answer,
        })
    }

    fn snapshot(&mut self, kind: &ResourceKind) -> Result<Arc<dyn KindSnapshot>, HostCallError> {
        let context = &self.context;
        if !context.access.allows(kind) {
            return Err(HostCallError::NotAllowed {
                policy: context.policy_id.clone(),
                kind: kind.clone(),
            });
        }
        if let Some(pinned) = self.pinned.iter().find(|s| s.kind().matches(kind)) {
            return Ok(pinned.clone());
        }
        let snapshot = context
            .cache
            .snapshot(kind)
            .map_err(|source| HostCallError::Cache {
                policy: context.policy_id.clone(),
                source,
            })?;
        self.pinned.push(snapshot.clone());
        Ok(snapshot)
    }

    /// Asks the API server whether a user may do something (`can_i`).
    pub fn can_i(&mut self, review: &AccessReview, fresh: bool) -> Result<Answer, HostCallError> {
        let context = &self.context;
        if !context.access.allows_access_reviews() {
            return Err(HostCallError::AccessReviewsNotAllowed {
                policy: context.policy_id.clone(),
            });
        }
        let failed = |reason: String| HostCallError::AccessReview {
            policy: context.policy_id.clone(),
            reason,
        };
        let reviewer = context.reviewer.as_ref().ok_or_else(|| {
            failed("this server has no Kubernetes API to ask (it serves a cluster snapshot)".into())
        })?;
        let left = self
            .deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()));
        reviewer
            .review(review, fresh, left)
            .map(Answer::whole)
            .map_err(failed)
    }
}

#[cfg(test)]
pub(crate) mod tests;
