//! Test support: build the example and test policies, start the real `policy-server`
//! binary on a loopback port with TLS, and talk to it over HTTPS.

pub mod build;
mod eventually;
pub mod fake_apiserver;
pub mod policies;
pub mod requests;
pub mod server;

pub use build::{Wasm, wasm};
pub use eventually::eventually;
pub use policies::{Policies, Policy};
pub use server::{Server, ServerBuilder};
