//! The HTTP(S) side: routes, error answers, and the server loop with graceful shutdown.
//! Nothing below this module knows about HTTP.

mod routes;
mod server;

pub use routes::{AppState, Readiness};
pub use server::{Listener, serve};
