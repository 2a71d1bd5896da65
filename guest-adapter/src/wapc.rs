//! The waPC host-call router: `(binding, namespace, operation, payload)` -> a request
//! the session answers. Two generations of Kubernetes calls are understood: the seed's
//! `kubernetes/{namespaces,services,ingresses}/list` (kubewarden-policy-sdk up to 0.8) and
//! Kubewarden's host capabilities `kubewarden/kubernetes/*` (SDK 0.9 and later, the Go and
//! JS SDKs), with the JSON payloads Kubewarden's host reads.
//!
//! Every answer is an [`Answer`], so a prepared answer reaches the runtime without a
//! copy; the runtime copies it once, into guest memory.

use std::time::Instant;

use serde::Deserialize;

use crate::answer::Answer;
use crate::mask::FieldMask;
use crate::query::{self, ClusterQuery, GetQuery, ListQuery, ResourceKind, given};
use crate::record::CallStyle;
use crate::review::AccessReview;
use crate::session::{GuestSession, HostCallError};
use crate::untrusted::untrusted;

/// A waPC host call, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum WapcRequest {
    /// A question to the cluster cache.
    Cluster(ClusterQuery),
    /// `kubewarden/kubernetes/can_i`: a SubjectAccessReview.
    CanI { review: AccessReview, fresh: bool },
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
    /// Not JSON, or not the JSON the call takes (serde names the field).
    MalformedPayload(String),
    /// Well-formed, but an argument is unusable (an empty kind, a bad selector).
    InvalidArgument(query::InvalidArgument),
}

/// `list_resources_by_namespace` and `list_resources_all`. Unknown fields are ignored,
/// as Kubewarden's host ignores them.
#[derive(Debug, Deserialize)]
struct ListRequest {
    api_version: String,
    kind: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    label_selector: Option<String>,
    #[serde(default)]
    field_selector: Option<String>,
    #[serde(default)]
    field_masks: Option<Vec<String>>,
}

/// `get_resource`. Its `disable_cache` asks Kubewarden's host to skip a 5 s answer cache;
/// here every answer comes from the watch-fed cache, which is fresher than that, so the
/// field is read by nobody (and, like any unknown field, ignored).
#[derive(Debug, Deserialize)]
struct GetRequest {
    api_version: String,
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    field_masks: Option<Vec<String>>,
}

/// `can_i`.
#[derive(Debug, Deserialize)]
struct CanIRequest {
    subject_access_review: AccessReview,
    #[serde(default)]
    disable_cache: bool,
}

fn payload<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, RouteError> {
    serde_json::from_slice(payload).map_err(|e| RouteError::MalformedPayload(e.to_string()))
}

fn list_request(bytes: &[u8], by_namespace: bool) -> Result<WapcRequest, RouteError> {
    let request: ListRequest = payload(bytes)?;
    let namespace = given(request.namespace);
    if by_namespace && namespace.is_none() {
        return Err(RouteError::MalformedPayload(
            "missing field `namespace`".into(),
        ));
    }
    let kind =
        query::kind(request.api_version, request.kind).map_err(RouteError::InvalidArgument)?;
    let mut query = ListQuery::parse(
        kind,
        if by_namespace { namespace } else { None },
        request.label_selector.as_deref(),
        request.field_selector.as_deref(),
    )
    .map_err(RouteError::InvalidArgument)?;
    query.mask = request.field_masks.and_then(FieldMask::new);
    Ok(WapcRequest::Cluster(ClusterQuery::List(query)))
}

fn get_request(bytes: &[u8]) -> Result<WapcRequest, RouteError> {
    let request: GetRequest = payload(bytes)?;
    let kind =
        query::kind(request.api_version, request.kind).map_err(RouteError::InvalidArgument)?;
    let mut query = GetQuery::parse(kind, request.namespace, request.name)
        .map_err(RouteError::InvalidArgument)?;
    query.mask = request.field_masks.and_then(FieldMask::new);
    Ok(WapcRequest::Cluster(ClusterQuery::Get(query)))
}

/// Turns the four waPC host-call strings into a request.
pub fn route(
    binding: &str,
    namespace: &str,
    operation: &str,
    payload_bytes: &[u8],
) -> Result<WapcRequest, RouteError> {
    let seed_list = |kind| {
        Ok(WapcRequest::Cluster(ClusterQuery::List(ListQuery::all(
            kind,
        ))))
    };
    match (binding, namespace, operation) {
        // The context-aware calls of the original design; the payload is unused.
        ("kubernetes", "namespaces", "list") => seed_list(ResourceKind::namespaces()),
        ("kubernetes", "services", "list") => seed_list(ResourceKind::services()),
        ("kubernetes", "ingresses", "list") => seed_list(ResourceKind::ingresses()),
        ("kubewarden", "kubernetes", "list_resources_by_namespace") => {
            list_request(payload_bytes, true)
        }
        // `list_all_resources`: the name older Go SDKs call it by.
        ("kubewarden", "kubernetes", "list_resources_all" | "list_all_resources") => {
            list_request(payload_bytes, false)
        }
        ("kubewarden", "kubernetes", "get_resource") => get_request(payload_bytes),
        ("kubewarden", "kubernetes", "can_i") => {
            let request: CanIRequest = payload(payload_bytes)?;
            Ok(WapcRequest::CanI {
                review: request.subject_access_review,
                fresh: request.disable_cache,
            })
        }
        ("kubewarden", "tracing", "log") => payload(payload_bytes).map(WapcRequest::Log),
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
    ) -> Result<Answer, HostCallError> {
        let started = Instant::now();
        let request = match route(binding, namespace, operation, payload) {
            Ok(request) => request,
            Err(e) => {
                let refused = Err(match e {
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
                    RouteError::InvalidArgument(source) => self.invalid(source),
                });
                self.record(
                    started,
                    CallStyle::Wapc,
                    operation_name(operation),
                    None,
                    &refused,
                );
                return refused;
            }
        };
        match request {
            WapcRequest::Cluster(query) => {
                let answer = self.query(&query);
                let name = match query {
                    ClusterQuery::List(_) => "list",
                    ClusterQuery::Get(_) => "get",
                };
                self.record(started, CallStyle::Wapc, name, Some(query.kind()), &answer);
                answer
            }
            WapcRequest::CanI { review, fresh } => {
                let answer = self.can_i(&review, fresh);
                self.record(started, CallStyle::Wapc, "can_i", None, &answer);
                answer
            }
            WapcRequest::Log(event) => {
                log(self, event);
                let answer = Ok(Answer::default());
                self.record(started, CallStyle::Wapc, "log", None, &answer);
                answer
            }
        }
    }
}

/// The metrics name of a host call that could not be routed.
fn operation_name(operation: &str) -> &'static str {
    match operation {
        "list" | "list_resources_by_namespace" | "list_resources_all" | "list_all_resources" => {
            "list"
        }
        "get_resource" => "get",
        "can_i" => "can_i",
        "log" => "log",
        _ => "unknown",
    }
}

/// Re-emits a guest's log line as a host log event, tagged with the policy: escaped,
/// capped, and within the evaluation's allowance.
fn log(session: &mut GuestSession, event: LogEvent) {
    let fields = serde_json::Value::Object(event.fields).to_string();
    if !session.admit_guest_log(event.message.len() + fields.len()) {
        return;
    }
    let policy = session.policy_id().as_ref();
    let (message, fields) = (untrusted(&event.message), untrusted(&fields));
    match event.level.as_str() {
        "trace" => tracing::trace!(target: "policy_log", policy, %fields, "{message}"),
        "debug" => tracing::debug!(target: "policy_log", policy, %fields, "{message}"),
        "warning" | "warn" => tracing::warn!(target: "policy_log", policy, %fields, "{message}"),
        "error" | "critical" => tracing::error!(target: "policy_log", policy, %fields, "{message}"),
        _ => tracing::info!(target: "policy_log", policy, %fields, "{message}"),
    }
}

#[cfg(test)]
mod tests;
