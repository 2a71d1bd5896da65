//! The wasm runtimes: one wasmtime [`Engine`] shared by every policy, the limits every
//! evaluation runs under, and the runners for each call style.

mod answer_text;
mod artifacts;
pub mod component;
mod engine;
mod epoch;
mod error;
mod guest;
mod guest_output;
mod limits;
pub mod metadata;
mod preinit;
mod tiers;
mod verdict;
pub mod wapc;

pub use engine::{Compilers, Runtime, RuntimeConfig, Tier};
pub use error::EvalError;
pub use guest::{GuestCall, PolicyGuest};
pub use tiers::{FirstCompile, PendingUpgrade, Swappable, Upgrade, upgrade_in_background};
pub use verdict::{GuestVerdict, SettingsVerdict};
