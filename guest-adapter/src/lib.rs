//! Where guest calls meet the host.
//!
//! A policy asks the host for something in one of two call styles: a legacy waPC
//! `host_call(binding, namespace, operation, payload)` or (later) a typed WIT import.
//! This crate turns either into one request type, checks it against what the policy is
//! allowed to do, and answers it. It knows nothing about HTTP, wasmtime instances or
//! Kubernetes clients: the runtimes call in, and backends are reached through traits.

pub mod wapc;

pub use wapc::{HostCallError, WapcRouter};
