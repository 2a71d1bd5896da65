//! Per-instance resource limits that remember why a guest was stopped.

use std::time::Duration;

use wasmtime::{Engine, ResourceLimiter, Store};

use super::{EvalError, Runtime};

/// Caps linear memory and tables of one instance. Refusing growth makes a guest's
/// allocator fail (usually with a bare `unreachable` trap), so the limiter records that
/// it refused: the evaluation error can then say "memory limit" instead of "unreachable".
pub(crate) struct MemoryCap {
    max_bytes: usize,
    max_table_elements: usize,
    exceeded: bool,
}

impl MemoryCap {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            max_table_elements: 100_000,
            exceeded: false,
        }
    }

    /// The cap, if the guest asked for more than it.
    pub(crate) fn exceeded(&self) -> Option<usize> {
        self.exceeded.then_some(self.max_bytes)
    }
}

/// Host state of an instance, which carries its [`MemoryCap`].
pub(crate) trait Limited: Send + 'static {
    fn memory_cap(&mut self) -> &mut MemoryCap;
}

/// A store for one evaluation, as both runners need it: memory cap, and an epoch
/// deadline `timeout` from now that traps. `engine` is the one that compiled what will
/// run in it.
pub(crate) fn guarded_store<T: Limited>(
    engine: &Engine,
    runtime: &Runtime,
    data: T,
    timeout: Duration,
) -> Store<T> {
    let mut store = Store::new(engine, data);
    store.limiter(|state| state.memory_cap());
    store.epoch_deadline_trap();
    store.set_epoch_deadline(runtime.deadline_ticks(timeout));
    store
}

/// Classifies an error from a guest that ran in `store`.
pub(crate) fn guest_error<T: Limited>(
    store: &mut Store<T>,
    err: wasmtime::Error,
    timeout: Duration,
) -> EvalError {
    let exceeded = store.data_mut().memory_cap().exceeded();
    EvalError::from_wasm(err, timeout, exceeded)
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes && maximum.is_none_or(|max| desired <= max);
        if !allowed {
            self.exceeded = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements && maximum.is_none_or(|max| desired <= max))
    }
}

/// Classifies an error from instantiating a guest: a plain trap there means the guest
/// could not start.
pub(crate) fn instantiation_error<T: Limited>(
    store: &mut Store<T>,
    err: wasmtime::Error,
    timeout: Duration,
) -> EvalError {
    match guest_error(store, err, timeout) {
        EvalError::Trap(reason) => EvalError::Instantiate(reason),
        other => other,
    }
}
