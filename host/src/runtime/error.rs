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

/// Why a waPC module's start-up is not captured once at load (see [`super::preinit`]).
/// Not a load failure: such a module runs its start-up in every instance, as it always
/// could.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotPreInitialized {
    /// wasmtime's own compile of the module then says what is wrong with it.
    #[error("the module does not parse: {0}")]
    Malformed(#[from] wasmparser::BinaryReaderError),
    /// Its state cannot be captured whole (see [`super::preinit`] for which shapes).
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot link start-up: {0:#}")]
    StartUpLink(anyhow::Error),
    #[error("start-up fails ({0})")]
    StartUpFails(EvalError),
    /// The unwinding exit leaves the guest's shadow stack pointer mid-call.
    #[error("start-up exits the process")]
    StartUpExits,
    /// Its answers depend on the cluster at load time: every instance must ask anew.
    #[error("start-up calls the host")]
    StartUpCallsHost,
    #[error("the instrumented module lacks its {0} export")]
    MissingExport(&'static str),
    #[error("cannot write the snapshot: {0:#}")]
    Snapshot(anyhow::Error),
    #[error("the snapshot does not load: {0:#}")]
    SnapshotDoesNotLoad(anyhow::Error),
}
