//! The HTTP(S) side: routes, error answers, connection limits, and the server loop with
//! graceful shutdown. Nothing below this module knows about HTTP.

mod body;
mod connection;
mod limits;
mod routes;
mod server;

pub use limits::ServerLimits;
pub use routes::{AppState, Readiness};
pub use server::{Listener, ShutdownTiming, serve};
