//! Where guest calls meet the host.
//!
//! A policy asks the host for something in one of two call styles: a legacy waPC
//! `host_call(binding, namespace, operation, payload)` ([`wapc`]) or a typed WIT import
//! ([`wit`]). This crate turns either into one [`ClusterQuery`], checks it against what
//! the policy was granted ([`AccessRules`]), and answers it from the cluster cache
//! ([`ClusterCache`]), pinning one snapshot per kind for the whole evaluation
//! ([`GuestSession`]). Selectors are parsed and matched here, with the API server's
//! semantics ([`selector`]). It knows nothing about HTTP, wasmtime instances or
//! Kubernetes clients: runtimes call in, and the cache is reached through a trait.

pub mod access;
pub mod answer;
pub mod cluster;
pub mod mask;
pub mod query;
pub mod record;
pub mod review;
pub mod selector;
pub mod session;
pub mod untrusted;
pub mod wapc;
pub mod wit;

pub use access::AccessRules;
pub use answer::Answer;
pub use cluster::{CacheError, ClusterCache, KindSnapshot, NoCluster, Scope};
pub use query::{ClusterQuery, GetQuery, ListQuery, ResourceKind};
pub use record::{CallStyle, HostCallRecord, HostCallRecorder};
pub use review::{AccessReview, AccessReviewer};
pub use session::{GuestSession, HostCallError, PolicyContext};
pub use untrusted::{capped, untrusted};
