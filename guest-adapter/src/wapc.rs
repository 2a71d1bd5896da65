//! The waPC host-call router: `(binding, namespace, operation, payload)` -> answer bytes.
//!
//! Every answer is a [`Bytes`], so a prepared answer (a cached list) can be handed to the
//! runtime without a copy; the runtime copies it once, into guest memory.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

/// Why a host call was not answered. The message is what the guest receives through
/// `__host_error`, so it names the call and, where relevant, the policy.
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
        call: &'static str,
        reason: String,
    },
}

/// Routes the host calls of one policy. One router is built per policy at start-up and
/// shared by all its evaluations.
#[derive(Debug, Clone)]
pub struct WapcRouter {
    policy_id: Arc<str>,
}

impl WapcRouter {
    pub fn new(policy_id: impl Into<Arc<str>>) -> Self {
        Self {
            policy_id: policy_id.into(),
        }
    }

    pub fn policy_id(&self) -> &str {
        &self.policy_id
    }

    /// Answers one waPC host call.
    pub fn host_call(
        &self,
        binding: &str,
        namespace: &str,
        operation: &str,
        payload: &[u8],
    ) -> Result<Bytes, HostCallError> {
        match (binding, namespace, operation) {
            ("kubewarden", "tracing", "log") => {
                self.log(payload)?;
                Ok(Bytes::new())
            }
            _ => Err(HostCallError::Unknown {
                policy: self.policy_id.clone(),
                binding: binding.to_owned(),
                namespace: namespace.to_owned(),
                operation: operation.to_owned(),
            }),
        }
    }

    /// `kubewarden/tracing/log`: the SDK's structured log drain. The payload is a JSON
    /// object with `level` and `message`; every other field is kept as structured context.
    fn log(&self, payload: &[u8]) -> Result<(), HostCallError> {
        #[derive(Deserialize)]
        struct LogEvent {
            level: String,
            #[serde(default, alias = "msg")]
            message: String,
            #[serde(flatten)]
            fields: serde_json::Map<String, serde_json::Value>,
        }
        let event: LogEvent =
            serde_json::from_slice(payload).map_err(|e| HostCallError::MalformedPayload {
                policy: self.policy_id.clone(),
                call: "kubewarden/tracing/log",
                reason: e.to_string(),
            })?;
        let policy = &*self.policy_id;
        let fields = serde_json::Value::Object(event.fields);
        match event.level.as_str() {
            "trace" => tracing::trace!(target: "policy_log", policy, %fields, "{}", event.message),
            "debug" => tracing::debug!(target: "policy_log", policy, %fields, "{}", event.message),
            "warning" | "warn" => {
                tracing::warn!(target: "policy_log", policy, %fields, "{}", event.message)
            }
            "error" | "critical" => {
                tracing::error!(target: "policy_log", policy, %fields, "{}", event.message)
            }
            _ => tracing::info!(target: "policy_log", policy, %fields, "{}", event.message),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_calls_get_an_error_naming_the_call_and_policy() {
        let router = WapcRouter::new("p1");
        let err = router
            .host_call("kubewarden", "oci", "v1/manifest_digest", b"{}")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy 'p1': unknown host call kubewarden/oci/v1/manifest_digest"
        );
    }

    #[test]
    fn log_calls_are_answered_with_an_empty_payload() {
        let router = WapcRouter::new("p1");
        let answer = router
            .host_call(
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
        let router = WapcRouter::new("p1");
        let err = router
            .host_call("kubewarden", "tracing", "log", b"not json")
            .unwrap_err();
        assert!(
            matches!(err, HostCallError::MalformedPayload { .. }),
            "{err}"
        );
    }
}
