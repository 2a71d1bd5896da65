//! What can go wrong while a guest runs, in words an operator understands.

use std::time::Duration;

use wasmtime::Trap;

/// An evaluation that did not produce a verdict. The server answers these with code 500
/// and this message; the policy keeps serving other requests.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("policy evaluation timed out after {0:?}")]
    Timeout(Duration),
    #[error("policy exceeded its memory limit of {} MiB", .0 >> 20)]
    MemoryLimit(usize),
    #[error("policy overflowed its stack")]
    StackOverflow,
    #[error("policy trapped: {0}")]
    Trap(String),
    #[error("policy broke the waPC protocol: {0}")]
    Protocol(String),
    #[error("policy returned an error: {0}")]
    Guest(String),
    #[error("policy answer is not valid: {0}")]
    BadAnswer(String),
    #[error("cannot start the policy: {0}")]
    Instantiate(String),
    #[error("the policy could not be loaded: {0}")]
    NotLoaded(String),
}

impl EvalError {
    /// Classifies an error returned by wasmtime while a guest ran.
    pub(crate) fn from_wasm(
        err: wasmtime::Error,
        timeout: Duration,
        memory_exceeded: Option<usize>,
    ) -> Self {
        if let Some(abi) = err.downcast_ref::<GuestAbiError>() {
            return Self::Protocol(abi.to_string());
        }
        let trap = err.downcast_ref::<Trap>();
        match (trap, memory_exceeded) {
            (Some(Trap::Interrupt), _) => Self::Timeout(timeout),
            (Some(Trap::StackOverflow), _) => Self::StackOverflow,
            // A refused memory growth surfaces as the guest allocator's abort.
            (Some(Trap::UnreachableCodeReached | Trap::MemoryOutOfBounds) | None, Some(limit)) => {
                Self::MemoryLimit(limit)
            }
            (Some(trap), _) => Self::Trap(trap.to_string()),
            (None, None) => Self::Trap(format!("{err:#}")),
        }
    }
}

/// A guest broke the host ABI (for example passed a pointer outside its memory).
/// Raised from host functions as a trap, recognized again in [`EvalError::from_wasm`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct GuestAbiError(pub(crate) String);
