//! The waPC host-call router: `(binding, namespace, operation, payload)` -> a request
//! the session answers.
//!
//! Every answer is a [`Bytes`], so a prepared answer (a cached list) reaches the runtime
//! without a copy; the runtime copies it once, into guest memory.

use bytes::Bytes;
use serde::Deserialize;

use crate::query::{ClusterQuery, ResourceKind};
use crate::session::{GuestSession, HostCallError};

/// A waPC host call, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum WapcRequest {
    /// A question to the cluster cache.
    Cluster(ClusterQuery),
    /// `kubewarden/tracing/log`: a structured log line from the SDK.
    Log(LogEvent),
}

/// A log line from a guest: `level`, `message`, and any other fields as context.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LogEvent {
    pub level: String,
    #[serde(default, alias = "msg")]
    pub message: String,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Why a host call could not be understood (the session adds the policy id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    Unknown,
    MalformedPayload(String),
}

/// Turns the four waPC host-call strings into a request.
pub fn route(
    binding: &str,
    namespace: &str,
    operation: &str,
    payload: &[u8],
) -> Result<WapcRequest, RouteError> {
    let list = |kind| Ok(WapcRequest::Cluster(ClusterQuery::ListAll(kind)));
    match (binding, namespace, operation) {
        // The context-aware calls of the original design; the payload is unused.
        ("kubernetes", "namespaces", "list") => list(ResourceKind::namespaces()),
        ("kubernetes", "services", "list") => list(ResourceKind::services()),
        ("kubernetes", "ingresses", "list") => list(ResourceKind::ingresses()),
        ("kubewarden", "tracing", "log") => serde_json::from_slice(payload)
            .map(WapcRequest::Log)
            .map_err(|e| RouteError::MalformedPayload(e.to_string())),
        _ => Err(RouteError::Unknown),
    }
}

impl GuestSession {
    /// Answers one waPC host call.
    pub fn wapc_host_call(
        &mut self,
        binding: &str,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Bytes, HostCallError> {
        let request = route(binding, namespace, operation, payload).map_err(|e| match e {
            RouteError::Unknown => HostCallError::Unknown {
                policy: self.policy_id().clone(),
                binding: binding.to_owned(),
                namespace: namespace.to_owned(),
                operation: operation.to_owned(),
            },
            RouteError::MalformedPayload(reason) => HostCallError::MalformedPayload {
                policy: self.policy_id().clone(),
                call: format!("{binding}/{namespace}/{operation}"),
                reason,
            },
        })?;
        match request {
            WapcRequest::Cluster(query) => self.query(&query).map(Bytes::from),
            WapcRequest::Log(event) => {
                log(self.policy_id(), event);
                Ok(Bytes::new())
            }
        }
    }
}

/// Longest guest log message kept; a chatty guest cannot flood the host's log.
const MAX_LOG_MESSAGE_BYTES: usize = 64 << 10;

/// Re-emits a guest's log line as a host log event, tagged with the policy.
fn log(policy: &str, event: LogEvent) {
    let fields = serde_json::Value::Object(event.fields);
    let mut message = event.message;
    if message.len() > MAX_LOG_MESSAGE_BYTES {
        let cut = (0..=MAX_LOG_MESSAGE_BYTES)
            .rev()
            .find(|&i| message.is_char_boundary(i))
            .unwrap_or(0);
        message.truncate(cut);
    }
    match event.level.as_str() {
        "trace" => tracing::trace!(target: "policy_log", policy, %fields, "{message}"),
        "debug" => tracing::debug!(target: "policy_log", policy, %fields, "{message}"),
        "warning" | "warn" => tracing::warn!(target: "policy_log", policy, %fields, "{message}"),
        "error" | "critical" => tracing::error!(target: "policy_log", policy, %fields, "{message}"),
        _ => tracing::info!(target: "policy_log", policy, %fields, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::cluster::ListJson;
    use crate::session::tests::{FakeCache, session};

    #[test]
    fn seed_calls_route_to_cluster_lists() {
        assert_eq!(
            route("kubernetes", "ingresses", "list", b""),
            Ok(WapcRequest::Cluster(ClusterQuery::ListAll(
                ResourceKind::ingresses()
            )))
        );
        assert_eq!(
            route("kubernetes", "pods", "list", b""),
            Err(RouteError::Unknown)
        );
    }

    #[test]
    fn granted_lists_are_answered_from_the_cache() {
        let cache = Arc::new(FakeCache(Mutex::new(Some(ListJson::new(
            r#"{"items":[]}"#,
        )))));
        let mut session = session(&[ResourceKind::new("v1", "namespace")], cache);
        let answer = session
            .wapc_host_call("kubernetes", "namespaces", "list", b"")
            .unwrap();
        assert_eq!(answer, "{\"items\":[]}");
    }

    #[test]
    fn unknown_calls_get_an_error_naming_the_call_and_policy() {
        let mut session = session(&[], Arc::default());
        let err = session
            .wapc_host_call("kubewarden", "oci", "v1/manifest_digest", b"{}")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy 'p1': unknown host call kubewarden/oci/v1/manifest_digest"
        );
    }

    #[test]
    fn log_calls_are_answered_with_an_empty_payload() {
        let mut session = session(&[], Arc::default());
        let answer = session
            .wapc_host_call(
                "kubewarden",
                "tracing",
                "log",
                br#"{"level":"info","message":"hello","column":3}"#,
            )
            .unwrap();
        assert!(answer.is_empty());
    }

    #[test]
    fn malformed_log_payload_is_a_host_error() {
        let mut session = session(&[], Arc::default());
        let err = session
            .wapc_host_call("kubewarden", "tracing", "log", b"not json")
            .unwrap_err();
        assert!(
            matches!(err, HostCallError::MalformedPayload { .. }),
            "{err}"
        );
    }
}
