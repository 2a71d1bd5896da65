//! Policies as the server knows them: configuration, the compiled guest behind it, and
//! the Kubewarden semantics that turn a guest's verdict into an admission response.

mod decision;
mod evaluator;
mod loader;
mod verdict;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use guest_adapter::PolicyContext;
use serde_json::value::RawValue;

pub use crate::config::PolicyMode;
pub use decision::{Endpoint, decide};
pub use evaluator::Evaluator;
pub use loader::{LoadOptions, load_policies};
pub use verdict::{GuestVerdict, SettingsVerdict};

use crate::runtime::wapc::WapcModule;
use crate::runtime::{EvalError, Runtime};

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
    state: PolicyState,
}

enum PolicyState {
    Ready(Runner),
    Failed(String),
}

/// The compiled guest and how to call it.
enum Runner {
    Wapc {
        module: Arc<WapcModule>,
        context: Arc<PolicyContext>,
    },
}

impl Policy {
    /// Why this policy cannot serve, if it failed to load.
    pub fn load_error(&self) -> Option<&str> {
        match &self.state {
            PolicyState::Failed(reason) => Some(reason),
            PolicyState::Ready(_) => None,
        }
    }

    /// Runs `validate` on `request` (the AdmissionRequest JSON, passed through verbatim).
    pub fn validate(
        &self,
        runtime: &Runtime,
        request: &RawValue,
    ) -> Result<GuestVerdict, EvalError> {
        let payload = format!(
            r#"{{"request":{},"settings":{}}}"#,
            request.get(),
            self.settings
        );
        let answer = self.call(runtime, "validate", Bytes::from(payload))?;
        serde_json::from_slice(&answer).map_err(|e| EvalError::BadAnswer(e.to_string()))
    }

    /// Runs `validate_settings` on this policy's settings.
    pub fn validate_settings(&self, runtime: &Runtime) -> Result<SettingsVerdict, EvalError> {
        let answer = self.call(
            runtime,
            "validate_settings",
            Bytes::from(self.settings.clone()),
        )?;
        serde_json::from_slice(&answer).map_err(|e| EvalError::BadAnswer(e.to_string()))
    }

    /// Runs `protocol_version`; `None` if the guest does not implement it.
    pub fn protocol_version(&self, runtime: &Runtime) -> Option<String> {
        let answer = self.call(runtime, "protocol_version", Bytes::new()).ok()?;
        serde_json::from_slice(&answer).ok()
    }

    fn call(
        &self,
        runtime: &Runtime,
        operation: &str,
        payload: Bytes,
    ) -> Result<Vec<u8>, EvalError> {
        match &self.state {
            PolicyState::Ready(Runner::Wapc { module, context }) => {
                module.call(runtime, context.clone(), self.timeout, operation, payload)
            }
            PolicyState::Failed(reason) => Err(EvalError::NotLoaded(reason.clone())),
        }
    }
}
