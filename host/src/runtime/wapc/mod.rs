//! The legacy runner: waPC guests (Kubewarden policies) on wasmtime.
//!
//! The host side of the waPC ABI is small, so it is implemented here directly rather than
//! through an engine provider: answers to host calls are copied once, from shared bytes
//! straight into guest memory. Every pointer a guest passes is bounds-checked against its
//! own memory; a bad one ends the evaluation with an error, never touches host memory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use guest_adapter::{Answer, GuestSession, PolicyContext};
use wapc::wapc_functions::{
    GUEST_CALL, GUEST_ERROR_FN, GUEST_REQUEST_FN, GUEST_RESPONSE_FN, HOST_CALL, HOST_CONSOLE_LOG,
    HOST_ERROR_FN, HOST_ERROR_LEN_FN, HOST_RESPONSE_FN, HOST_RESPONSE_LEN_FN,
};
use wasmtime::{
    Caller, Engine, Instance, InstancePre, Linker, Memory, Module, ModuleExport, Store, TypedFunc,
};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;

use super::error::{GuestAbiError, NotPreInitialized};
use super::guest_output::GuestOutput;
use super::limits::{Limited, MemoryCap, guarded_store, guest_error, instantiation_error};
use super::{EvalError, FirstCompile, Runtime, Tier, preinit};

mod abi;
mod operations;
mod start_up;
use abi::{start_up_linker, wapc_linker};
use start_up::{pre_initialize, run_start_up};

/// A compiled waPC module, linked and ready to be instantiated any number of times.
pub struct WapcModule {
    pre: InstancePre<WapcState>,
    /// The exports every instance looks up, resolved once (a lookup by name hashes).
    exports: Exports,
    /// Start-up (`_start`, `wapc_init`) ran once when the module was loaded and its
    /// instances begin where it left off (see [`super::preinit`]); otherwise every
    /// instance runs it.
    pre_initialized: bool,
}

impl WapcModule {
    /// Compiles and links a module. Fails if it imports anything the host does not give.
    ///
    /// A module pre-initialized by an earlier run (in the compile cache) is ready at once.
    /// Otherwise the first compile is baseline code that runs start-up in every instance,
    /// and the upgrade captures start-up once (in that code) and compiles, optimized, the
    /// module that begins where start-up left off: the server is ready after one fast
    /// compile, and its policies serve as fast as ever soon after.
    pub fn compile(runtime: &Runtime, bytes: &[u8]) -> anyhow::Result<FirstCompile<Self>> {
        if let Some(snapshot) = runtime.load_pre_initialized(bytes) {
            match link(runtime, Tier::Optimized, &snapshot) {
                Ok((_, pre)) => return Ok(FirstCompile::done(Self::pre_initialized(pre))),
                Err(e) => tracing::warn!("ignoring a stored snapshot: {e:#}"),
            }
        }
        if runtime.start_up_stays(bytes) {
            tracing::info!("start-up runs for every evaluation, as an earlier start found");
            return Self::compile_ordinary(runtime, bytes);
        }
        let instrumented = match preinit::instrument(bytes) {
            Ok(instrumented) => instrumented,
            // Let wasmtime say how.
            Err(NotPreInitialized::Malformed(_)) => {
                return Ok(FirstCompile::done(Self::ordinary(
                    link(runtime, Tier::Optimized, bytes)?.1,
                )));
            }
            Err(reason) => {
                tracing::info!("start-up runs for every evaluation: {reason}");
                return Self::compile_ordinary(runtime, bytes);
            }
        };
        // The instrumented module behaves as the original: it serves until the upgrade,
        // and for good when start-up cannot be captured.
        let (module, pre) = link_first(runtime, &instrumented.wasm)?;
        let original = bytes.to_vec();
        let upgrade = move |runtime: &Runtime| {
            let started = std::time::Instant::now();
            let linker = wapc_linker(module.engine())?;
            let snapshot = start_up_linker(&linker)
                .and_then(|linker| linker.instantiate_pre(&module).map_err(anyhow::Error::from))
                .map_err(NotPreInitialized::StartUpLink)
                .and_then(|start_up| {
                    pre_initialize(&start_up, runtime, &original, &instrumented.plan)
                })
                .and_then(|snapshot| match link(runtime, Tier::Optimized, &snapshot) {
                    Ok((_, pre)) => Ok((snapshot, pre)),
                    Err(e) => Err(NotPreInitialized::SnapshotDoesNotLoad(e)),
                });
            match snapshot {
                Ok((snapshot, pre)) => {
                    tracing::debug!(elapsed = ?started.elapsed(), bytes = snapshot.len(), "pre-initialized");
                    runtime.store_pre_initialized(&original, &snapshot);
                    Ok(Self::pre_initialized(pre))
                }
                Err(reason) => {
                    tracing::info!("start-up runs for every evaluation: {reason}");
                    // A time limit may not hold on another start (or another tier).
                    if !matches!(
                        reason,
                        NotPreInitialized::StartUpFails(EvalError::Timeout(_))
                    ) {
                        runtime.store_start_up_stays(&original, &reason.to_string());
                    }
                    // Still worth optimized code, when the first was baseline: that of
                    // the original, which a later start finds in the compile cache.
                    if Engine::same(module.engine(), runtime.engine(Tier::Optimized)) {
                        anyhow::bail!("the first compile stays");
                    }
                    let (_, pre) = link(runtime, Tier::Optimized, &original)?;
                    Ok(Self::ordinary(pre))
                }
            }
        };
        Ok(FirstCompile {
            guest: Self::ordinary(pre),
            upgrade: Some(Box::new(upgrade)),
        })
    }

    /// A module whose start-up runs in every instance: baseline code first when tiered,
    /// upgraded to optimized code.
    fn compile_ordinary(runtime: &Runtime, bytes: &[u8]) -> anyhow::Result<FirstCompile<Self>> {
        if !runtime.is_tiered() || runtime.has_cached_code(bytes) {
            let (_, pre) = link(runtime, Tier::Optimized, bytes)?;
            return Ok(FirstCompile::done(Self::ordinary(pre)));
        }
        let (_, pre) = link_first(runtime, bytes)?;
        let original = bytes.to_vec();
        Ok(FirstCompile {
            guest: Self::ordinary(pre),
            upgrade: Some(Box::new(move |runtime: &Runtime| {
                Ok(Self::ordinary(link(runtime, Tier::Optimized, &original)?.1))
            })),
        })
    }

    fn ordinary(pre: InstancePre<WapcState>) -> Self {
        Self::new(pre, false)
    }

    fn pre_initialized(pre: InstancePre<WapcState>) -> Self {
        Self::new(pre, true)
    }

    fn new(pre: InstancePre<WapcState>, pre_initialized: bool) -> Self {
        Self {
            exports: Exports::of(pre.module()),
            pre,
            pre_initialized,
        }
    }

    /// Calls one operation in a fresh instance that is dropped afterwards, so nothing a
    /// guest does can leak into the next evaluation.
    pub fn call(
        &self,
        runtime: &Runtime,
        context: Arc<PolicyContext>,
        timeout: Duration,
        operation: &str,
        payload: Bytes,
    ) -> Result<Vec<u8>, EvalError> {
        WapcInstance::new(self, runtime, context, timeout)?.call(operation, payload)
    }
}

/// Compiles `tier` code (optimized code may come from the compile cache) and links it for
/// the waPC host.
fn link(
    runtime: &Runtime,
    tier: Tier,
    bytes: &[u8],
) -> anyhow::Result<(Module, InstancePre<WapcState>)> {
    let module = runtime.compile_module(bytes, tier)?;
    let pre = wapc_linker(module.engine())?
        .instantiate_pre(&module)
        .map_err(anyhow::Error::from)
        .context("the module imports something this host does not provide")?;
    if module.get_export(GUEST_CALL).is_none() {
        anyhow::bail!("the module does not export `{GUEST_CALL}`: it is not a waPC module");
    }
    Ok((module, pre))
}

/// The first code of a module: baseline, or optimized when the baseline compiler cannot
/// take the module (Winch lacks some proposals, tail calls among them).
fn link_first(runtime: &Runtime, bytes: &[u8]) -> anyhow::Result<(Module, InstancePre<WapcState>)> {
    match link(runtime, Tier::Baseline, bytes) {
        Ok(linked) => Ok(linked),
        Err(e) if runtime.is_tiered() => {
            tracing::info!(
                "compiling optimized code at once: the baseline compiler refused: {e:#}"
            );
            link(runtime, Tier::Optimized, bytes)
        }
        Err(e) => Err(e),
    }
}

/// One live instance. The server makes one per evaluation; benchmarks also reuse one to
/// measure what a fresh instance costs.
pub struct WapcInstance<'r> {
    store: Store<WapcState>,
    guest_call: TypedFunc<(i32, i32), i32>,
    runtime: &'r Runtime,
    timeout: Duration,
    /// The deadline set at instantiation covers start-up and the first call, so one
    /// evaluation never gets more than its time limit.
    first_call: bool,
}

impl<'r> WapcInstance<'r> {
    pub fn new(
        module: &WapcModule,
        runtime: &'r Runtime,
        context: Arc<PolicyContext>,
        timeout: Duration,
    ) -> Result<Self, EvalError> {
        let (mut store, instance) =
            instantiate(&module.pre, &module.exports, runtime, context, timeout)?;
        if !module.pre_initialized {
            run_start_up(&instance, &mut store, timeout)?;
        }
        let guest_call = module
            .exports
            .guest_call
            .as_ref()
            .and_then(|export| instance.get_module_export(&mut store, export))
            .and_then(|export| export.into_func())
            .ok_or_else(|| EvalError::Protocol(format!("no `{GUEST_CALL}` function")))?
            .typed::<(i32, i32), i32>(&store)
            .map_err(|e| EvalError::Protocol(format!("bad `{GUEST_CALL}` export: {e}")))?;
        Ok(Self {
            store,
            guest_call,
            runtime,
            timeout,
            first_call: true,
        })
    }

    /// Runs one waPC operation and returns the guest's response bytes.
    pub fn call(&mut self, operation: &str, payload: Bytes) -> Result<Vec<u8>, EvalError> {
        if !std::mem::take(&mut self.first_call) {
            // A reused instance: a new deadline, and a new look at the cluster cache.
            self.store
                .set_epoch_deadline(self.runtime.deadline_ticks(self.timeout));
            self.store.data_mut().session.begin(self.timeout);
        }
        let (op_len, payload_len) = (operation.len() as i32, payload.len() as i32);
        self.store.data_mut().exchange = Exchange {
            operation: Bytes::copy_from_slice(operation.as_bytes()),
            payload,
            ..Exchange::default()
        };
        let outcome = self
            .guest_call
            .call(&mut self.store, (op_len, payload_len))
            .map_err(|e| {
                let exit = e.downcast_ref::<I32Exit>().map(|exit| exit.0);
                match exit {
                    Some(code) => EvalError::Trap(format!("policy exited with status {code}")),
                    None => guest_error(&mut self.store, e, self.timeout),
                }
            })?;
        let exchange = std::mem::take(&mut self.store.data_mut().exchange);
        // waPC: 0 is failure, anything else success.
        if outcome != 0 {
            exchange.guest_response.ok_or_else(|| {
                EvalError::Protocol(format!(
                    "`{operation}` succeeded without calling `{GUEST_RESPONSE_FN}`"
                ))
            })
        } else {
            Err(EvalError::Guest(exchange.guest_error.unwrap_or_else(
                || format!("operation `{operation}` failed without an error message"),
            )))
        }
    }
}

/// A new instance in a store of its own, with its memory known to the host functions.
fn instantiate(
    pre: &InstancePre<WapcState>,
    exports: &Exports,
    runtime: &Runtime,
    context: Arc<PolicyContext>,
    timeout: Duration,
) -> Result<(Store<WapcState>, Instance), EvalError> {
    let state = WapcState {
        exchange: Exchange::default(),
        memory: None,
        session: {
            let mut session = GuestSession::new(context);
            session.begin(timeout);
            session
        },
        limits: MemoryCap::new(runtime.config().memory_limit_bytes),
        wasi: None,
        host_calls: 0,
    };
    let mut store = guarded_store(pre.module().engine(), runtime, state, timeout);
    let instance = match pre.instantiate(&mut store) {
        Ok(instance) => instance,
        Err(e) => return Err(instantiation_error(&mut store, e, timeout)),
    };
    let memory = exports
        .memory
        .as_ref()
        .and_then(|export| instance.get_module_export(&mut store, export))
        .and_then(|export| export.into_memory());
    let memory = memory.ok_or_else(|| {
        EvalError::Protocol("the module does not export its memory as `memory`".into())
    })?;
    store.data_mut().memory = Some(memory);
    Ok((store, instance))
}

/// Exports of a module, resolved for [`Instance::get_module_export`].
struct Exports {
    guest_call: Option<ModuleExport>,
    memory: Option<ModuleExport>,
}

impl Exports {
    fn of(module: &Module) -> Self {
        Self {
            guest_call: module.get_export_index(GUEST_CALL),
            memory: module.get_export_index("memory"),
        }
    }
}

/// Per-instance host state.
pub struct WapcState {
    exchange: Exchange,
    memory: Option<Memory>,
    /// Answers host calls; pins one cluster snapshot per kind for this instance.
    session: GuestSession,
    limits: MemoryCap,
    /// Built on first use: most waPC guests never touch WASI, or only for random seeds.
    wasi: Option<WasiP1Ctx>,
    /// waPC host calls made so far.
    host_calls: u32,
}

impl Limited for WapcState {
    fn memory_cap(&mut self) -> &mut MemoryCap {
        &mut self.limits
    }
}

impl WapcState {
    /// A WASI context with nothing in it: no preopened directories, no environment, no
    /// arguments, no network, empty stdin, stdout and stderr to the server's log.
    fn wasi(&mut self) -> &mut WasiP1Ctx {
        let session = &self.session;
        self.wasi.get_or_insert_with(|| {
            let (stdout, stderr) = GuestOutput::streams(session.policy_id().clone());
            wasmtime_wasi::WasiCtxBuilder::new()
                .stdout(stdout)
                .stderr(stderr)
                .build_p1()
        })
    }
}

/// The buffers of one waPC conversation.
#[derive(Default)]
struct Exchange {
    operation: Bytes,
    payload: Bytes,
    guest_response: Option<Vec<u8>>,
    guest_error: Option<String>,
    host_response: Option<Answer>,
    host_error: Option<String>,
}

#[cfg(test)]
mod abi_properties;

#[cfg(test)]
mod tests;
