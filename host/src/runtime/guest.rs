//! What the policy layer asks of a compiled policy, whichever call style it was built in.
//! Each runner answers these questions in its own ABI (waPC operations with JSON payloads,
//! or the typed exports of the WIT world) and maps its answers and errors at that
//! boundary, so nothing above the runtime knows which style it called.

use std::sync::Arc;
use std::time::Duration;

use guest_adapter::PolicyContext;
use serde_json::value::RawValue;

use super::{EvalError, GuestVerdict, Runtime, SettingsVerdict};

/// A compiled policy, linked and ready to be instantiated: every call runs in a fresh
/// instance that is dropped afterwards.
pub trait PolicyGuest: Send + Sync {
    /// Judges `request` (the AdmissionRequest JSON, passed through verbatim) under
    /// `settings` (JSON).
    fn validate(
        &self,
        call: GuestCall<'_>,
        request: &RawValue,
        settings: &str,
    ) -> Result<GuestVerdict, EvalError>;

    /// Says whether `settings` (JSON) are valid for this policy.
    fn validate_settings(
        &self,
        call: GuestCall<'_>,
        settings: &str,
    ) -> Result<SettingsVerdict, EvalError>;

    /// The version of the contract the guest speaks, if it says.
    fn protocol_version(&self, call: GuestCall<'_>) -> Option<String>;

    /// Whether start-up ran once at load rather than in every instance.
    fn is_pre_initialized(&self) -> bool {
        false
    }
}

/// What every call to a guest runs under: the engine, the policy's view of the cluster,
/// and its time limit.
#[derive(Clone, Copy)]
pub struct GuestCall<'a> {
    pub runtime: &'a Runtime,
    pub context: &'a Arc<PolicyContext>,
    pub timeout: Duration,
}
