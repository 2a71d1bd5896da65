//! Misbehaves on `validate` as `{"behaviour": ...}` in its settings asks:
//! `accept`, `loop`, `trap`, `panic`, `grab_memory`, `stack_overflow`,
//! `unknown_host_call` (rejects with the host's error message), `remember` (rejects if a
//! previous evaluation left state behind: proves instances are fresh), `echo:<resource>`
//! (rejects with the exact bytes of the `kubernetes/<resource>/list` answer as message),
//! `call:<binding>/<namespace>/<operation>` (makes that host call with the settings'
//! `payload` text and rejects with the answer's exact text, or the host's error),
//! `huge_error` (fails with a 3 MB error that embeds the request), `huge_rejection`
//! (rejects with a 3 MB message), `log_flood` (writes 10,000 console lines, each with a
//! newline and an ANSI escape, then accepts).

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Deserialize;
use serde_json::json;
use wapc_guest::prelude::*;

#[derive(Deserialize)]
struct Payload {
    settings: Settings,
}

#[derive(Deserialize)]
struct Settings {
    behaviour: String,
    #[serde(default)]
    payload: String,
}

static EVALUATIONS: AtomicU32 = AtomicU32::new(0);

#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", |_| Ok(br#"{"valid":true}"#.to_vec()));
}

fn validate(payload: &[u8]) -> CallResult {
    let Payload { settings } = serde_json::from_slice(payload)?;
    match settings.behaviour.as_str() {
        "accept" => {}
        "loop" => {
            let mut i: u64 = 0;
            loop {
                i = black_box(i.wrapping_add(1));
            }
        }
        "trap" => core::arch::wasm32::unreachable(),
        "panic" => panic!("the policy panicked on purpose"),
        "grab_memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "stack_overflow" => return Ok(recurse(black_box(1)).to_le_bytes().to_vec()),
        "unknown_host_call" => {
            let message = match host_call("kubewarden", "no-such-namespace", "v1/nothing", b"{}") {
                Ok(_) => "the host answered an unknown call".to_owned(),
                Err(e) => e.to_string(),
            };
            return Ok(serde_json::to_vec(
                &json!({"accepted": false, "message": message}),
            )?);
        }
        echo if echo.starts_with("echo:") => {
            let resource = &echo["echo:".len()..];
            let message = match host_call("kubernetes", resource, "list", b"") {
                Ok(bytes) => String::from_utf8(bytes)?,
                Err(e) => e.to_string(),
            };
            return Ok(serde_json::to_vec(
                &json!({"accepted": false, "message": message}),
            )?);
        }
        call if call.starts_with("call:") => {
            let mut names = call["call:".len()..].splitn(3, '/');
            let (binding, namespace, operation) = (
                names.next().unwrap_or_default(),
                names.next().unwrap_or_default(),
                names.next().unwrap_or_default(),
            );
            let message =
                match host_call(binding, namespace, operation, settings.payload.as_bytes()) {
                    Ok(bytes) => String::from_utf8(bytes)?,
                    Err(e) => e.to_string(),
                };
            return Ok(serde_json::to_vec(
                &json!({"accepted": false, "message": message}),
            )?);
        }
        "huge_error" => {
            let request = String::from_utf8_lossy(payload);
            return Err(format!("failed on {}", request.repeat(3_000_000 / request.len() + 1)).into());
        }
        "huge_rejection" => {
            let message = "x".repeat(3_000_000);
            return Ok(serde_json::to_vec(
                &json!({"accepted": false, "message": message}),
            )?);
        }
        "log_flood" => {
            for i in 0..10_000 {
                console_log(&format!(
                    "line {i}\n2026-01-01T00:00:00Z  INFO forged: \u{1b}[31mred"
                ));
            }
        }
        "remember" => {
            let seen = EVALUATIONS.fetch_add(1, Ordering::SeqCst);
            if seen > 0 {
                let message = format!("state leaked from {seen} earlier evaluations");
                return Ok(serde_json::to_vec(
                    &json!({"accepted": false, "message": message}),
                )?);
            }
        }
        other => return Err(format!("unknown behaviour {other}").into()),
    }
    Ok(serde_json::to_vec(&json!({"accepted": true}))?)
}

/// Recursion through an opaque function pointer: no tail-call or loop rewrite, and no
/// locals in linear memory, so it is the wasm call stack (not Rust's shadow stack) that
/// overflows.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == 0 {
        return 0;
    }
    let next: fn(u64) -> u64 = black_box(recurse);
    next(depth + 1).wrapping_mul(3)
}
