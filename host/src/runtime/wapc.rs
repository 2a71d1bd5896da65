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
use guest_adapter::{AccessRules, Answer, GuestSession, NoCluster, PolicyContext};
use wapc::wapc_functions::{
    GUEST_CALL, GUEST_ERROR_FN, GUEST_REQUEST_FN, GUEST_RESPONSE_FN, HOST_CALL, HOST_CONSOLE_LOG,
    HOST_ERROR_FN, HOST_ERROR_LEN_FN, HOST_RESPONSE_FN, HOST_RESPONSE_LEN_FN, TINYGO_START,
    WAPC_INIT,
};
use wasmtime::{Caller, Engine, Instance, InstancePre, Linker, Memory, Module, Store, TypedFunc};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;

use super::error::GuestAbiError;
use super::guest_output::GuestOutput;
use super::limits::{Limited, MemoryCap, guarded_store, guest_error, instantiation_error};
use super::{EvalError, Runtime, preinit};

/// Start-up gets this long when it runs at load time for [`pre_initialize`].
const PRE_INITIALIZATION_TIMEOUT: Duration = Duration::from_secs(2);

/// A compiled waPC module, linked and ready to be instantiated any number of times.
pub struct WapcModule {
    pre: InstancePre<WapcState>,
    /// Start-up (`_start`, `wapc_init`) ran once when the module was loaded and its
    /// instances begin where it left off (see [`super::preinit`]); otherwise every
    /// instance runs it.
    pre_initialized: bool,
}

impl WapcModule {
    /// Compiles and links a module, pre-initialized when its state allows. Fails if it
    /// imports anything the host does not give.
    pub fn compile(runtime: &Runtime, bytes: &[u8]) -> anyhow::Result<Self> {
        let linker = wapc_linker(runtime.engine())?;
        let link = |bytes: &[u8]| -> anyhow::Result<(Module, InstancePre<WapcState>)> {
            let module = runtime.compile_module(bytes)?;
            let pre = linker
                .instantiate_pre(&module)
                .map_err(anyhow::Error::from)
                .context("the module imports something this host does not provide")?;
            if module.get_export(GUEST_CALL).is_none() {
                anyhow::bail!("the module does not export `{GUEST_CALL}`: it is not a waPC module");
            }
            Ok((module, pre))
        };
        let ordinary = |pre| Self {
            pre,
            pre_initialized: false,
        };
        if let Some(snapshot) = runtime.load_pre_initialized(bytes) {
            match link(&snapshot) {
                Ok((_, pre)) => return Ok(Self::pre_initialized(pre)),
                Err(e) => tracing::warn!("ignoring a stored snapshot: {e:#}"),
            }
        }
        let instrumented = match preinit::instrument(bytes) {
            Ok(Ok(instrumented)) => instrumented,
            Ok(Err(reason)) => {
                tracing::info!("start-up runs for every evaluation: {reason}");
                return Ok(ordinary(link(bytes)?.1));
            }
            // Malformed: let wasmtime say how.
            Err(_) => return Ok(ordinary(link(bytes)?.1)),
        };
        // The instrumented module behaves as the original, so it is also what runs when
        // start-up cannot be captured.
        let (module, pre) = link(&instrumented.wasm)?;
        let started = std::time::Instant::now();
        let snapshot = start_up_linker(&linker)
            .and_then(|linker| linker.instantiate_pre(&module).map_err(anyhow::Error::from))
            .map_err(|e| format!("cannot link start-up: {e:#}"))
            .and_then(|start_up| pre_initialize(&start_up, runtime, bytes, &instrumented.plan))
            .and_then(|snapshot| match link(&snapshot) {
                Ok((_, pre)) => Ok((snapshot, pre)),
                Err(e) => Err(format!("the snapshot does not load: {e:#}")),
            });
        match snapshot {
            Ok((snapshot, snapshot_pre)) => {
                tracing::debug!(elapsed = ?started.elapsed(), bytes = snapshot.len(), "pre-initialized");
                runtime.store_pre_initialized(bytes, &snapshot);
                Ok(Self::pre_initialized(snapshot_pre))
            }
            Err(reason) => {
                tracing::info!("start-up runs for every evaluation: {reason}");
                Ok(ordinary(pre))
            }
        }
    }

    fn pre_initialized(pre: InstancePre<WapcState>) -> Self {
        Self {
            pre,
            pre_initialized: true,
        }
    }

    /// Whether start-up ran once at load (see [`super::preinit`]) rather than in every
    /// instance.
    pub fn is_pre_initialized(&self) -> bool {
        self.pre_initialized
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
        let (mut store, instance) = instantiate(&module.pre, runtime, context, timeout)?;
        if !module.pre_initialized {
            run_start_up(&instance, &mut store, timeout)?;
        }
        let guest_call = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, GUEST_CALL)
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
    let mut store = guarded_store(runtime, state, timeout);
    let instance = match pre.instantiate(&mut store) {
        Ok(instance) => instance,
        Err(e) => return Err(instantiation_error(&mut store, e, timeout)),
    };
    let memory = instance.get_memory(&mut store, "memory").ok_or_else(|| {
        EvalError::Protocol("the module does not export its memory as `memory`".into())
    })?;
    store.data_mut().memory = Some(memory);
    Ok((store, instance))
}

/// How a guest's start-up ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
enum StartUp {
    Returned,
    /// It called `proc_exit(0)`, as TinyGo's `_start` does.
    Exited,
}

/// Runs the guest's own set-up: TinyGo's runtime in `_start`, then `wapc_init`.
fn run_start_up(
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
fn pre_initialize(
    pre: &InstancePre<WapcState>,
    runtime: &Runtime,
    original: &[u8],
    plan: &preinit::Plan,
) -> Result<Vec<u8>, String> {
    let context = Arc::new(PolicyContext::new(
        "(pre-initialization)",
        AccessRules::default(),
        Arc::new(NoCluster),
    ));
    let (mut store, instance) = instantiate(pre, runtime, context, PRE_INITIALIZATION_TIMEOUT)
        .map_err(|e| e.to_string())?;
    match run_start_up(&instance, &mut store, PRE_INITIALIZATION_TIMEOUT) {
        Ok(StartUp::Returned) => {}
        // The unwinding exit leaves the guest's shadow stack pointer mid-call.
        Ok(StartUp::Exited) => return Err("start-up exits the process".into()),
        Err(e) => return Err(format!("start-up fails ({e})")),
    }
    // Its answers depend on the cluster at load time: every instance must ask anew.
    if store.data().host_calls > 0 {
        return Err("start-up calls the host".into());
    }
    let globals = plan
        .global_exports()
        .map(|name| {
            instance
                .get_global(&mut store, &name)
                .map(|global| global.get(&mut store))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or("the instrumented module lacks a global export")?;
    let memory = instance
        .get_memory(&mut store, plan.memory_export())
        .ok_or("the instrumented module lacks its memory export")?;
    preinit::snapshot(original, plan, memory.data(&store), &globals)
        .map_err(|e| format!("cannot write the snapshot: {e:#}"))
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

/// Splits a caller into its memory bytes and host state, so a host function can copy
/// between the two without intermediate buffers.
fn memory_and_state<'a>(
    caller: &'a mut Caller<'_, WapcState>,
) -> wasmtime::Result<(&'a mut [u8], &'a mut WapcState)> {
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| abi_error("host function called before the module's memory was known"))?;
    Ok(memory.data_and_store_mut(caller))
}

fn abi_error(message: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(GuestAbiError(message.into()))
}

/// wasm32 pointers and lengths are unsigned, even though the ABI types them as `i32`.
fn guest_range(
    memory_len: usize,
    ptr: i32,
    len: usize,
) -> wasmtime::Result<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    match start.checked_add(len) {
        Some(end) if end <= memory_len => Ok(start..end),
        _ => Err(abi_error(format!(
            "guest passed an out-of-bounds buffer ({len} bytes at address {start:#x}, memory is {memory_len} bytes)"
        ))),
    }
}

fn read(memory: &[u8], ptr: i32, len: i32) -> wasmtime::Result<&[u8]> {
    Ok(&memory[guest_range(memory.len(), ptr, len as u32 as usize)?])
}

fn write(memory: &mut [u8], ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let range = guest_range(memory.len(), ptr, bytes.len())?;
    memory[range].copy_from_slice(bytes);
    Ok(())
}

/// The linker start-up runs with at load: the ordinary one, except that reading a clock
/// (whose answer changes from one evaluation to the next) stops start-up, so that its
/// module is not pre-initialized. What start-up may still call gives the same answer to
/// every instance (no arguments, no environment, no preopened directories, logged
/// output), but for randomness: seeds drawn at load.
fn start_up_linker(ordinary: &Linker<WapcState>) -> anyhow::Result<Linker<WapcState>> {
    fn refuse(call: &str) -> wasmtime::Error {
        abi_error(format!("start-up calls `{call}`, which reads a clock"))
    }
    let mut linker = ordinary.clone();
    linker.allow_shadowing(true);
    for wasi in ["wasi_snapshot_preview1", "wasi_unstable"] {
        linker.func_wrap(
            wasi,
            "clock_time_get",
            |_: Caller<'_, WapcState>, _: i32, _: i64, _: i32| -> wasmtime::Result<i32> {
                Err(refuse("clock_time_get"))
            },
        )?;
        linker.func_wrap(
            wasi,
            "clock_res_get",
            |_: Caller<'_, WapcState>, _: i32, _: i32| -> wasmtime::Result<i32> {
                Err(refuse("clock_res_get"))
            },
        )?;
        linker.func_wrap(
            wasi,
            "poll_oneoff",
            |_: Caller<'_, WapcState>, _: i32, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> {
                Err(refuse("poll_oneoff"))
            },
        )?;
    }
    Ok(linker)
}

fn wapc_linker(engine: &Engine) -> anyhow::Result<Linker<WapcState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, WapcState::wasi)?;
    // Old TinyGo builds import the pre-snapshot names.
    wasmtime_wasi::p0::add_to_linker_sync(&mut linker, WapcState::wasi)?;

    const NS: &str = wapc::HOST_NAMESPACE;
    linker.func_wrap(
        NS,
        GUEST_REQUEST_FN,
        |mut caller: Caller<'_, WapcState>, op_ptr: i32, payload_ptr: i32| {
            let (memory, state) = memory_and_state(&mut caller)?;
            write(memory, op_ptr, &state.exchange.operation)?;
            write(memory, payload_ptr, &state.exchange.payload)
        },
    )?;
    linker.func_wrap(
        NS,
        GUEST_RESPONSE_FN,
        |mut caller: Caller<'_, WapcState>, ptr: i32, len: i32| {
            let (memory, state) = memory_and_state(&mut caller)?;
            state.exchange.guest_response = Some(read(memory, ptr, len)?.to_vec());
            Ok(())
        },
    )?;
    linker.func_wrap(
        NS,
        GUEST_ERROR_FN,
        |mut caller: Caller<'_, WapcState>, ptr: i32, len: i32| {
            let (memory, state) = memory_and_state(&mut caller)?;
            let message = String::from_utf8_lossy(read(memory, ptr, len)?).into_owned();
            state.exchange.guest_error = Some(message);
            Ok(())
        },
    )?;
    linker.func_wrap(
        NS,
        HOST_CALL,
        |mut caller: Caller<'_, WapcState>,
         binding_ptr: i32,
         binding_len: i32,
         namespace_ptr: i32,
         namespace_len: i32,
         operation_ptr: i32,
         operation_len: i32,
         payload_ptr: i32,
         payload_len: i32|
         -> wasmtime::Result<i32> {
            let (memory, state) = memory_and_state(&mut caller)?;
            state.host_calls += 1;
            let binding = String::from_utf8_lossy(read(memory, binding_ptr, binding_len)?);
            let namespace = String::from_utf8_lossy(read(memory, namespace_ptr, namespace_len)?);
            let operation = String::from_utf8_lossy(read(memory, operation_ptr, operation_len)?);
            let payload = read(memory, payload_ptr, payload_len)?;
            let answer = state
                .session
                .wapc_host_call(&binding, &namespace, &operation, payload);
            let exchange = &mut state.exchange;
            match answer {
                Ok(answer) => {
                    exchange.host_response = Some(answer);
                    exchange.host_error = None;
                    Ok(1)
                }
                Err(err) => {
                    tracing::debug!(policy = %state.session.policy_id(), %err, "host call refused");
                    exchange.host_response = None;
                    exchange.host_error = Some(err.to_string());
                    Ok(0)
                }
            }
        },
    )?;
    linker.func_wrap(
        NS,
        HOST_RESPONSE_LEN_FN,
        |caller: Caller<'_, WapcState>| -> i32 {
            let exchange = &caller.data().exchange;
            exchange
                .host_response
                .as_ref()
                .map_or(0, |r| r.len() as i32)
        },
    )?;
    linker.func_wrap(
        NS,
        HOST_RESPONSE_FN,
        |mut caller: Caller<'_, WapcState>, ptr: i32| {
            let (memory, state) = memory_and_state(&mut caller)?;
            match &state.exchange.host_response {
                Some(answer) => {
                    // Piece by piece, straight from the cache's bytes.
                    let range = guest_range(memory.len(), ptr, answer.len())?;
                    answer.copy_to(&mut memory[range]);
                    Ok(())
                }
                None => Ok(()),
            }
        },
    )?;
    linker.func_wrap(
        NS,
        HOST_ERROR_LEN_FN,
        |caller: Caller<'_, WapcState>| -> i32 {
            let exchange = &caller.data().exchange;
            exchange.host_error.as_ref().map_or(0, |e| e.len() as i32)
        },
    )?;
    linker.func_wrap(
        NS,
        HOST_ERROR_FN,
        |mut caller: Caller<'_, WapcState>, ptr: i32| {
            let (memory, state) = memory_and_state(&mut caller)?;
            match &state.exchange.host_error {
                Some(error) => write(memory, ptr, error.as_bytes()),
                None => Ok(()),
            }
        },
    )?;
    linker.func_wrap(
        NS,
        HOST_CONSOLE_LOG,
        |mut caller: Caller<'_, WapcState>, ptr: i32, len: i32| {
            let (memory, state) = memory_and_state(&mut caller)?;
            let bytes = read(memory, ptr, len)?;
            if state.session.admit_guest_log(bytes.len()) {
                let text = String::from_utf8_lossy(bytes);
                let text = guest_adapter::untrusted(&text);
                tracing::info!(target: "policy_console", policy = %state.session.policy_id(), "{text}");
            }
            Ok(())
        },
    )?;
    Ok(linker)
}

#[cfg(test)]
mod abi_properties;

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest whose start-up grows memory, writes to it and sets a global, and whose
    /// `__guest_call` answers from that state: "A", the call count after start-up set it
    /// to 41 (so "*" in a fresh instance) and '0' + pages (3). Without start-up the write
    /// at 64 KiB is out of bounds. `extra` is spliced into the module.
    fn guest(start_up: &str, extra: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module
              (import "wapc" "__guest_response" (func $response (param i32 i32)))
              (import "wapc" "__host_call"
                (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              (import "wasi_snapshot_preview1" "clock_time_get"
                (func $clock (param i32 i64 i32) (result i32)))
              (memory (export "memory") 1)
              (global $calls (mut i32) (i32.const 0))
              (func $init
                (drop (memory.grow (i32.const 2)))
                (i32.store8 (i32.const 65536) (i32.const 0x41))
                (global.set $calls (i32.const 41)))
              {start_up}
              {extra}
              (func (export "__guest_call") (param i32 i32) (result i32)
                (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
                (i32.store8 (i32.const 65537) (global.get $calls))
                (i32.store8 (i32.const 65538) (i32.add (i32.const 48) (memory.size)))
                (call $response (i32.const 65536) (i32.const 3))
                (i32.const 1)))"#
        ))
        .unwrap()
    }

    const WAPC_INIT: &str = r#"(func (export "wapc_init") (call $init))"#;

    fn context() -> Arc<PolicyContext> {
        Arc::new(PolicyContext::new(
            "test",
            AccessRules::default(),
            Arc::new(NoCluster),
        ))
    }

    /// Compiles `wasm` and checks what fresh and reused instances answer.
    fn check(wasm: &[u8], pre_initialized: bool) {
        let runtime = Runtime::new(Default::default()).unwrap();
        let module = WapcModule::compile(&runtime, wasm).unwrap();
        assert_eq!(module.is_pre_initialized(), pre_initialized);
        let timeout = Duration::from_secs(1);
        for _ in 0..3 {
            let answer = module
                .call(&runtime, context(), timeout, "validate", Bytes::new())
                .unwrap();
            assert_eq!(
                answer, b"A*3",
                "each fresh instance starts where start-up left off"
            );
        }
        let mut reused = WapcInstance::new(&module, &runtime, context(), timeout).unwrap();
        assert_eq!(reused.call("validate", Bytes::new()).unwrap(), b"A*3");
        assert_eq!(reused.call("validate", Bytes::new()).unwrap(), b"A+3");
    }

    #[test]
    fn start_up_that_only_touches_memory_and_globals_runs_once_at_load() {
        check(&guest(WAPC_INIT, ""), true);
    }

    #[test]
    fn a_start_function_is_part_of_start_up_and_does_not_run_again() {
        // The start function adds 10 pages: run again, memory.size would not be 3.
        let start = r#"(func $grow (drop (memory.grow (i32.const 10)))) (start $grow)"#;
        let wasm = guest(WAPC_INIT, start);
        let runtime = Runtime::new(Default::default()).unwrap();
        let module = WapcModule::compile(&runtime, &wasm).unwrap();
        assert!(module.is_pre_initialized());
        let answer = module
            .call(
                &runtime,
                context(),
                Duration::from_secs(1),
                "validate",
                Bytes::new(),
            )
            .unwrap();
        assert_eq!(answer, b"A*=", "11 + 2 pages: '0' + 13");
    }

    #[test]
    fn code_that_can_change_tables_keeps_start_up_in_every_instance() {
        let table = r#"(table 1 funcref)
            (func $unused (table.set (i32.const 0) (ref.null func)))"#;
        check(&guest(WAPC_INIT, table), false);
    }

    #[test]
    fn start_up_that_calls_the_host_runs_in_every_instance() {
        let init = r#"(func (export "wapc_init")
            (call $init)
            (drop (call $host_call (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                                   (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))))"#;
        check(&guest(init, ""), false);
    }

    #[test]
    fn start_up_that_reads_a_clock_runs_in_every_instance() {
        let init = r#"(func (export "wapc_init")
            (call $init)
            (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 8))))"#;
        check(&guest(init, ""), false);
    }

    #[test]
    fn start_up_that_exits_runs_in_every_instance() {
        let start = r#"(func (export "_start") (call $init) (call $exit (i32.const 0)))"#;
        check(&guest(start, ""), false);
    }
}
