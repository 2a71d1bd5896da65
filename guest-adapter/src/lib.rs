//! Where guest calls meet the host.
//!
//! A policy asks the host for something in one of two call styles: a legacy waPC
//! `host_call(binding, namespace, operation, payload)` or a typed WIT import. This crate
//! turns either into one [`ClusterQuery`], checks it against what the policy was granted
//! ([`AccessRules`]), and answers it from the cluster cache ([`ClusterCache`]), pinning
//! one snapshot per kind for the whole evaluation ([`GuestSession`]). It knows nothing
//! about HTTP, wasmtime instances or Kubernetes clients: runtimes call in, and the cache
//! is reached through a trait.

pub mod access;
pub mod cluster;
pub mod query;
pub mod session;
pub mod wapc;

pub use access::AccessRules;
pub use cluster::{CacheError, ClusterCache, ListJson, NoCluster};
pub use query::{ClusterQuery, ResourceKind};
pub use session::{GuestSession, HostCallError, PolicyContext};
