//! The policy server: a Kubernetes admission webhook that evaluates WebAssembly policies.
//!
//! Data flows one way: HTTP request ([`webhook`]) -> admission parse ([`admission`]) ->
//! policy lookup and semantics ([`policy`]) -> runtime ([`runtime`]) -> guest -> host call
//! (`guest-adapter`) -> back.

pub mod admission;
pub mod cache;
pub mod cli;
pub mod config;
pub mod fetch;
pub mod manifests;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod runtime;
pub mod throttle;
pub mod tls;
pub mod webhook;
mod yaml;
