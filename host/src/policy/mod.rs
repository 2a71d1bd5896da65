//! Policies as the server knows them: configuration, the compiled guest behind it, and
//! the Kubewarden semantics that turn a guest's verdict into an admission response.

mod decision;
mod evaluator;
mod loader;
mod scheduler;
mod served;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use guest_adapter::PolicyContext;
use serde_json::value::RawValue;

pub use crate::config::PolicyMode;
pub use crate::runtime::{GuestVerdict, SettingsVerdict};
pub use decision::{Endpoint, decide};
pub use evaluator::{DEFAULT_QUEUED_PER_WORKER, Evaluator, Unavailable, WorkerLimits};
pub use loader::{LoadOptions, LoadedPolicies, load_policies};
pub use scheduler::QueueFull;
pub use served::ServedPolicies;

use crate::runtime::{EvalError, GuestCall, PolicyGuest, Runtime};

/// A policy ready to serve (or, with `--continue-on-errors`, one that failed to load and
/// answers every request with the reason).
pub struct Policy {
    pub id: Arc<str>,
    pub mode: PolicyMode,
    pub allowed_to_mutate: bool,
    pub custom_message: Option<String>,
    pub timeout: Duration,
    /// The settings JSON, serialized once: every evaluation embeds these bytes.
    settings: String,
    state: Result<Loaded, String>,
    /// Failed evaluations are logged once per interval: a client can repeat them at will.
    failure_log: crate::throttle::LogThrottle,
}

/// A loaded policy's guest (shared by every policy that uses the same module) and its
/// own view of the cluster.
struct Loaded {
    guest: Arc<dyn PolicyGuest>,
    context: Arc<PolicyContext>,
}

impl Policy {
    /// Why this policy cannot serve, if it failed to load.
    pub fn load_error(&self) -> Option<&str> {
        self.state.as_ref().err().map(String::as_str)
    }

    /// Runs `validate` on `request` (the AdmissionRequest JSON, passed through verbatim).
    pub fn validate(
        &self,
        runtime: &Runtime,
        request: &RawValue,
    ) -> Result<GuestVerdict, EvalError> {
        let (guest, call) = self.guest(runtime)?;
        guest.validate(call, request, &self.settings)
    }

    /// Runs `validate_settings` on this policy's settings.
    pub fn validate_settings(&self, runtime: &Runtime) -> Result<SettingsVerdict, EvalError> {
        let (guest, call) = self.guest(runtime)?;
        guest.validate_settings(call, &self.settings)
    }

    /// The contract version the guest speaks, if it says.
    pub fn protocol_version(&self, runtime: &Runtime) -> Option<String> {
        let (guest, call) = self.guest(runtime).ok()?;
        guest.protocol_version(call)
    }

    fn guest<'a>(
        &'a self,
        runtime: &'a Runtime,
    ) -> Result<(&'a dyn PolicyGuest, GuestCall<'a>), EvalError> {
        let loaded = self
            .state
            .as_ref()
            .map_err(|reason| EvalError::NotLoaded(reason.clone()))?;
        Ok((&*loaded.guest, loaded.call(runtime, self.timeout)))
    }
}

impl Loaded {
    fn call<'a>(&'a self, runtime: &'a Runtime, timeout: Duration) -> GuestCall<'a> {
        GuestCall {
            runtime,
            context: &self.context,
            timeout,
        }
    }
}
