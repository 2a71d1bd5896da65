//! A guest's own start-up (TinyGo's `_start`, then `wapc_init`): run in every instance,
//! or once at load to pre-initialize the module (see [`crate::runtime::preinit`]).

use std::sync::Arc;
use std::time::Duration;

use guest_adapter::{AccessRules, NoCluster, PolicyContext};
use wapc::wapc_functions::{TINYGO_START, WAPC_INIT};
use wasmtime::{Instance, InstancePre, Store};
use wasmtime_wasi::I32Exit;

use super::{Exports, WapcState, instantiate};
use crate::runtime::error::NotPreInitialized;
use crate::runtime::limits::guest_error;
use crate::runtime::{EvalError, Runtime, preinit};

/// Start-up gets this long when it runs at load time for [`pre_initialize`].
const PRE_INITIALIZATION_TIMEOUT: Duration = Duration::from_secs(2);

/// How a guest's start-up ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum StartUp {
    Returned,
    /// It called `proc_exit(0)`, as TinyGo's `_start` does.
    Exited,
}

/// Runs the guest's own set-up: TinyGo's runtime in `_start`, then `wapc_init`.
pub(super) fn run_start_up(
    instance: &Instance,
    store: &mut Store<WapcState>,
    timeout: Duration,
) -> Result<StartUp, EvalError> {
    let mut outcome = StartUp::Returned;
    for start in [TINYGO_START, WAPC_INIT] {
        let Some(func) = instance.get_func(&mut *store, start) else {
            continue;
        };
        let func = func
            .typed::<(), ()>(&*store)
            .map_err(|_| EvalError::Protocol(format!("`{start}` must take no arguments")))?;
        match func.call(&mut *store, ()) {
            Ok(()) => {}
            Err(e) if e.downcast_ref::<I32Exit>().is_some_and(|exit| exit.0 == 0) => {
                outcome = StartUp::Exited;
            }
            Err(e) => return Err(guest_error(store, e, timeout)),
        }
    }
    Ok(outcome)
}

/// Runs start-up once in the instrumented module and returns the original rewritten to
/// begin where start-up left off; or why that cannot stand in for running start-up.
pub(super) fn pre_initialize(
    pre: &InstancePre<WapcState>,
    runtime: &Runtime,
    original: &[u8],
    plan: &preinit::Plan,
) -> Result<Vec<u8>, NotPreInitialized> {
    let context = Arc::new(PolicyContext::new(
        "(pre-initialization)",
        AccessRules::default(),
        Arc::new(NoCluster),
    ));
    let exports = Exports::of(pre.module());
    let (mut store, instance) =
        instantiate(pre, &exports, runtime, context, PRE_INITIALIZATION_TIMEOUT)
            .map_err(NotPreInitialized::StartUpFails)?;
    match run_start_up(&instance, &mut store, PRE_INITIALIZATION_TIMEOUT) {
        Ok(StartUp::Returned) => {}
        Ok(StartUp::Exited) => return Err(NotPreInitialized::StartUpExits),
        Err(e) => return Err(NotPreInitialized::StartUpFails(e)),
    }
    if store.data().host_calls > 0 {
        return Err(NotPreInitialized::StartUpCallsHost);
    }
    let globals = plan
        .global_exports()
        .map(|name| {
            instance
                .get_global(&mut store, &name)
                .map(|global| global.get(&mut store))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or(NotPreInitialized::MissingExport("global"))?;
    let memory = instance
        .get_memory(&mut store, plan.memory_export())
        .ok_or(NotPreInitialized::MissingExport("memory"))?;
    preinit::snapshot(original, plan, memory.data(&store), &globals)
        .map_err(NotPreInitialized::Snapshot)
}
