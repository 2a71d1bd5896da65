//! The waPC runner: pre-initialization, fresh instances, and the ABI as guests see it.
use super::*;
use guest_adapter::{AccessRules, NoCluster};

use crate::runtime::PolicyGuest;

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
    let timeout = Duration::from_secs(1);
    let first = WapcModule::compile(&runtime, wasm).unwrap();
    // Before its upgrade, the first compile runs start-up in every instance, with the
    // same answers.
    assert!(!first.guest.is_pre_initialized());
    for _ in 0..2 {
        let answer = first
            .guest
            .call(&runtime, context(), timeout, "validate", Bytes::new())
            .unwrap();
        assert_eq!(answer, b"A*3");
    }
    let module = first.finish(&runtime);
    assert_eq!(module.is_pre_initialized(), pre_initialized);
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
    let module = WapcModule::compile(&runtime, &wasm)
        .unwrap()
        .finish(&runtime);
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

#[test]
fn a_start_up_found_uncapturable_is_not_tried_again_on_the_next_start() {
    let cache = tempfile::tempdir().unwrap();
    let start = r#"(func (export "_start") (call $init) (call $exit (i32.const 0)))"#;
    let wasm = guest(start, "");
    let runtime = || {
        Runtime::new(crate::runtime::RuntimeConfig {
            compile_cache_dir: Some(cache.path().to_owned()),
            ..Default::default()
        })
        .unwrap()
    };
    let first_start = runtime();
    let first = WapcModule::compile(&first_start, &wasm).unwrap();
    assert!(first.upgrade.is_some(), "the first start tries");
    let upgraded = first.finish(&first_start);
    assert!(!upgraded.is_pre_initialized());

    // The next start serves the optimized code the first one kept, with nothing to try.
    let next_start = runtime();
    let next = WapcModule::compile(&next_start, &wasm).unwrap();
    assert!(next.upgrade.is_none(), "start-up is not captured again");
    assert!(Engine::same(
        next.guest.pre.module().engine(),
        next_start.engine(Tier::Optimized)
    ));
    let answer = next
        .guest
        .call(
            &next_start,
            context(),
            Duration::from_secs(1),
            "validate",
            Bytes::new(),
        )
        .unwrap();
    assert_eq!(answer, b"A*3");
}
