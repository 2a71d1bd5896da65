//! The legacy contract's operations, as Kubewarden's host calls them: their waPC names and
//! JSON payloads, and the JSON answers read back into verdicts.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::WapcModule;
use crate::runtime::{EvalError, GuestCall, GuestVerdict, PolicyGuest, SettingsVerdict};

impl WapcModule {
    fn call_json<T: DeserializeOwned>(
        &self,
        call: GuestCall<'_>,
        operation: &str,
        payload: Bytes,
    ) -> Result<T, EvalError> {
        let answer = self.call(
            call.runtime,
            call.context.clone(),
            call.timeout,
            operation,
            payload,
        )?;
        serde_json::from_slice(&answer).map_err(|e| EvalError::BadAnswer(e.to_string()))
    }
}

impl PolicyGuest for WapcModule {
    fn validate(
        &self,
        call: GuestCall<'_>,
        request: &RawValue,
        settings: &str,
    ) -> Result<GuestVerdict, EvalError> {
        // The request's bytes pass through as the API server sent them, copied once into
        // a buffer of the right size (growing a `format!` string cost 7% of a worker's time).
        let parts: [&[u8]; 5] = [
            br#"{"request":"#,
            request.get().as_bytes(),
            br#","settings":"#,
            settings.as_bytes(),
            b"}",
        ];
        let mut payload = Vec::with_capacity(parts.iter().map(|part| part.len()).sum());
        parts
            .iter()
            .for_each(|part| payload.extend_from_slice(part));
        self.call_json(call, "validate", payload.into())
    }

    fn validate_settings(
        &self,
        call: GuestCall<'_>,
        settings: &str,
    ) -> Result<SettingsVerdict, EvalError> {
        let payload = Bytes::copy_from_slice(settings.as_bytes());
        self.call_json(call, "validate_settings", payload)
    }

    /// Older policies do not implement `protocol_version`: their answer is an error.
    fn protocol_version(&self, call: GuestCall<'_>) -> Option<String> {
        self.call_json(call, "protocol_version", Bytes::new()).ok()
    }

    fn is_pre_initialized(&self) -> bool {
        self.pre_initialized
    }
}
