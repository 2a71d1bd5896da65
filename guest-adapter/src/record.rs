//! Each host call's outcome, told to whoever counts them (the server's metrics). The
//! crate knows no metrics library: the host gives it a [`HostCallRecorder`].

use std::time::{Duration, Instant};

use crate::answer::Answer;
use crate::query::ResourceKind;
use crate::session::{GuestSession, HostCallError};

/// How a guest asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallStyle {
    /// A legacy `host_call(binding, namespace, operation, payload)`.
    Wapc,
    /// A typed import of the WIT `cluster-context` interface.
    Wit,
}

impl CallStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wapc => "wapc",
            Self::Wit => "wit",
        }
    }
}

/// One host call, as it ended.
#[derive(Debug, Clone, Copy)]
pub struct HostCallRecord<'a> {
    pub policy: &'a str,
    pub style: CallStyle,
    /// `list`, `get`, `can_i`, `log`, or `unknown` for a call no route matched.
    pub operation: &'static str,
    /// The kind asked about, when the call named one the policy is granted.
    pub kind: Option<&'a ResourceKind>,
    /// `ok`, or the class of the error ([`HostCallError::class`]).
    pub outcome: &'static str,
    /// From the guest's call to its answer, ready to copy into the guest.
    pub elapsed: Duration,
}

/// Counts host calls; called on the evaluation's thread, so it must be cheap.
pub trait HostCallRecorder: Send + Sync {
    fn record(&self, call: &HostCallRecord<'_>);
}

impl HostCallError {
    /// A short, fixed name for the kind of failure (a metrics label).
    pub fn class(&self) -> &'static str {
        match self {
            Self::Unknown { .. } => "unknown_call",
            Self::MalformedPayload { .. } => "malformed",
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::NotAllowed { .. } | Self::AccessReviewsNotAllowed { .. } => "not_allowed",
            Self::ClusterWide { .. } => "cluster_wide",
            Self::NotFound { .. } => "not_found",
            Self::Cache { .. } => "unavailable",
            Self::AccessReview { .. } => "access_review_failed",
        }
    }
}

impl GuestSession {
    /// Tells the policy's recorder, if it has one, how a call ended.
    pub(crate) fn record(
        &self,
        started: Instant,
        style: CallStyle,
        operation: &'static str,
        kind: Option<&ResourceKind>,
        result: &Result<Answer, HostCallError>,
    ) {
        if let Some(recorder) = self.recorder() {
            recorder.record(&HostCallRecord {
                policy: self.policy_id(),
                style,
                operation,
                // Only a granted kind, spelled as granted: a guest may name any kind, in
                // any case, and a label value per name would be a series per name.
                kind: kind.and_then(|kind| self.granted(kind)),
                outcome: result.as_ref().map_or_else(HostCallError::class, |_| "ok"),
                elapsed: started.elapsed(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::access::AccessRules;
    use crate::session::PolicyContext;
    use crate::session::tests::{FakeCache, namespaces};
    use crate::wit::WitListQuery;

    /// A record as `(style, operation, kind, outcome)`.
    type Row = (&'static str, &'static str, Option<String>, &'static str);

    /// Keeps every record.
    #[derive(Default)]
    struct Kept(Mutex<Vec<Row>>);

    impl HostCallRecorder for Kept {
        fn record(&self, call: &HostCallRecord<'_>) {
            assert_eq!(call.policy, "p1");
            self.0.lock().unwrap().push((
                call.style.as_str(),
                call.operation,
                call.kind.map(ToString::to_string),
                call.outcome,
            ));
        }
    }

    #[test]
    fn every_call_of_either_style_is_recorded_with_its_outcome() {
        let kept = Arc::new(Kept::default());
        let context = PolicyContext::new(
            "p1",
            AccessRules::new([ResourceKind::namespaces()]),
            FakeCache::with(vec![namespaces(&["default"])]),
        )
        .with_recorder(kept.clone());
        let mut session = GuestSession::new(Arc::new(context));

        let _ = session.wapc_host_call("kubernetes", "namespaces", "list", b"");
        let _ = session.wapc_host_call("kubernetes", "services", "list", b"");
        let _ = session.wapc_host_call("kubewarden", "kubernetes", "get_resource", b"{");
        let _ = session.wapc_host_call("made", "up", "call", b"");
        let _ = session.wit_get("v1".into(), "Namespace".into(), None, "missing".into());
        let _ = session.wit_list(
            "v1".into(),
            "Namespace".into(),
            WitListQuery {
                namespace: None,
                label_selector: Some("a in (".into()),
                field_selector: None,
            },
        );
        let _ = session.wit_list_all(ResourceKind::namespaces());
        // Any spelling of a granted kind is counted under the grant's.
        let _ = session.wit_get("V1".into(), "NAMESPACE".into(), None, "default".into());

        let namespace = Some("v1/Namespace".to_owned());
        assert_eq!(
            *kept.0.lock().unwrap(),
            [
                ("wapc", "list", namespace.clone(), "ok"),
                ("wapc", "list", None, "not_allowed"),
                ("wapc", "get", None, "malformed"),
                ("wapc", "unknown", None, "unknown_call"),
                ("wit", "get", namespace.clone(), "not_found"),
                ("wit", "list", None, "invalid_argument"),
                ("wit", "list", namespace.clone(), "ok"),
                ("wit", "get", namespace, "ok"),
            ]
        );
    }
}
