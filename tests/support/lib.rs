//! Test support: build the example and test policies, start the real `policy-server`
//! binary on a loopback port with TLS, and talk to it over HTTPS.

pub mod build;
mod eventually;
pub mod fake_apiserver;
pub mod policies;
pub mod registry;
pub mod requests;
pub mod server;

pub use build::{Wasm, wasm};
pub use eventually::eventually;
pub use policies::{Policies, Policy};
pub use server::{Server, ServerBuilder};

/// An HTTP client builder whose TLS runs on ring, the provider the server uses (reqwest is
/// built without a provider of its own, so one is installed for the process first).
pub fn http_client() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// Installs ring as the process's TLS provider, once.
pub fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Another provider installed first would serve as well: the result is moot.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
