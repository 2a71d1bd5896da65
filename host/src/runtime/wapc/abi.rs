//! The waPC ABI on the host side: the functions a guest imports from `wapc` (and the
//! start-up variant of the linker), and the bounds-checked copies between guest memory
//! and the host.

use super::*;

/// Splits a caller into its memory bytes and host state, so a host function can copy
/// between the two without intermediate buffers.
pub(super) fn memory_and_state<'a>(
    caller: &'a mut Caller<'_, WapcState>,
) -> wasmtime::Result<(&'a mut [u8], &'a mut WapcState)> {
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| abi_error("host function called before the module's memory was known"))?;
    Ok(memory.data_and_store_mut(caller))
}

pub(super) fn abi_error(message: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(GuestAbiError(message.into()))
}

/// wasm32 pointers and lengths are unsigned, even though the ABI types them as `i32`.
pub(super) fn guest_range(
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

pub(super) fn read(memory: &[u8], ptr: i32, len: i32) -> wasmtime::Result<&[u8]> {
    Ok(&memory[guest_range(memory.len(), ptr, len as u32 as usize)?])
}

pub(super) fn write(memory: &mut [u8], ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let range = guest_range(memory.len(), ptr, bytes.len())?;
    memory[range].copy_from_slice(bytes);
    Ok(())
}

/// The linker start-up runs with at load: the ordinary one, except that reading a clock
/// (whose answer changes from one evaluation to the next) stops start-up, so that its
/// module is not pre-initialized. What start-up may still call gives the same answer to
/// every instance (no arguments, no environment, no preopened directories, logged
/// output), but for randomness: seeds drawn at load.
pub(super) fn start_up_linker(ordinary: &Linker<WapcState>) -> anyhow::Result<Linker<WapcState>> {
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

pub(super) fn wapc_linker(engine: &Engine) -> anyhow::Result<Linker<WapcState>> {
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
