//! Policies as the server knows them: configuration, the compiled guest behind it, and
//! the Kubewarden semantics that turn a guest's verdict into an admission response.

mod decision;
mod evaluator;
mod loader;
mod scheduler;
mod verdict;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use guest_adapter::PolicyContext;
use serde_json::value::RawValue;

pub use crate::config::PolicyMode;
pub use decision::{Endpoint, decide};
pub use evaluator::{DEFAULT_QUEUED_PER_WORKER, Evaluator, Unavailable, WorkerLimits};
pub use loader::{LoadOptions, load_policies};
pub use scheduler::QueueFull;
pub use verdict::{GuestVerdict, SettingsVerdict};

use crate::runtime::component::ComponentModule;
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
    /// Failed evaluations are logged once per interval: a client can repeat them at will.
    failure_log: crate::throttle::LogThrottle,
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
    Component {
        module: Arc<ComponentModule>,
        context: Arc<PolicyContext>,
    },
}

/// A compiled policy binary, shared by every policy that uses the same file.
#[derive(Clone)]
pub(crate) enum Compiled {
    Wapc(Arc<WapcModule>),
    Component(Arc<ComponentModule>),
}

impl Runner {
    fn new(compiled: Compiled, context: Arc<PolicyContext>) -> Self {
        match compiled {
            Compiled::Wapc(module) => Self::Wapc { module, context },
            Compiled::Component(module) => Self::Component { module, context },
        }
    }
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
        match self.runner()? {
            Runner::Wapc { module, context } => {
                let payload = format!(
                    r#"{{"request":{},"settings":{}}}"#,
                    request.get(),
                    self.settings
                );
                let payload = Bytes::from(payload);
                let answer =
                    module.call(runtime, context.clone(), self.timeout, "validate", payload)?;
                serde_json::from_slice(&answer).map_err(|e| EvalError::BadAnswer(e.to_string()))
            }
            Runner::Component { module, context } => {
                let verdict = module.validate(
                    runtime,
                    context.clone(),
                    self.timeout,
                    request.get(),
                    &self.settings,
                )?;
                GuestVerdict::try_from(verdict)
            }
        }
    }

    /// Runs `validate_settings` on this policy's settings.
    pub fn validate_settings(&self, runtime: &Runtime) -> Result<SettingsVerdict, EvalError> {
        match self.runner()? {
            Runner::Wapc { module, context } => {
                let payload = Bytes::from(self.settings.clone());
                let answer = module.call(
                    runtime,
                    context.clone(),
                    self.timeout,
                    "validate_settings",
                    payload,
                )?;
                serde_json::from_slice(&answer).map_err(|e| EvalError::BadAnswer(e.to_string()))
            }
            Runner::Component { module, context } => {
                let verdict = module.validate_settings(
                    runtime,
                    context.clone(),
                    self.timeout,
                    &self.settings,
                )?;
                Ok(SettingsVerdict {
                    valid: verdict.valid,
                    message: verdict.message,
                })
            }
        }
    }

    /// Runs `protocol_version`; `None` if the guest does not implement it. Components
    /// have no such operation: the version of the WIT package they target says it.
    pub fn protocol_version(&self, runtime: &Runtime) -> Option<String> {
        match self.runner().ok()? {
            Runner::Wapc { module, context } => {
                let answer = module
                    .call(
                        runtime,
                        context.clone(),
                        self.timeout,
                        "protocol_version",
                        Bytes::new(),
                    )
                    .ok()?;
                serde_json::from_slice(&answer).ok()
            }
            Runner::Component { .. } => None,
        }
    }

    fn runner(&self) -> Result<&Runner, EvalError> {
        match &self.state {
            PolicyState::Ready(runner) => Ok(runner),
            PolicyState::Failed(reason) => Err(EvalError::NotLoaded(reason.clone())),
        }
    }
}
