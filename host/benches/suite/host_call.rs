//! Cost of one cluster-context list call (namespaces) for 100, 1,000 and 10,000
//! realistic namespaces, in both call styles, beside a plain copy of the same bytes.
//!
//! A guest calls the list K times per evaluation; the per-call cost is the difference
//! between K calls and none, divided by K, in one reused instance (its memory already
//! grown, so only the calls count). It covers the whole round trip: routing, access
//! check, cache lookup, and the copy into guest memory. The legacy guest is a few lines
//! of WAT that reads the answer into a fixed buffer; the component guest is Rust
//! (`tests/policies/misbehaving-component`), whose `cabi_realloc` allocates each answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use guest_adapter::{AccessRules, ListJson, PolicyContext, ResourceKind};
use policy_server::cache::ClusterState;
use policy_server::cache::list::{Changes, KindList, prepare_object};
use policy_server::runtime::component::{ComponentInstance, ComponentModule};
use policy_server::runtime::wapc::{WapcInstance, WapcModule};
use policy_server::runtime::{Runtime, RuntimeConfig};
use serde_json::json;

use crate::Scale;
use crate::cluster::namespace;
use crate::report::{Report, Table, num, text};

const LEGACY_GUEST: &str = r#"
(module
  (import "wapc" "__host_call" (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response_len" (func $response_len (result i32)))
  (import "wapc" "__host_response" (func $response (param i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (memory (export "memory") 512)
  (data (i32.const 0) "kubernetesnamespaceslist")
  (func (export "__guest_call") (param $op_len i32) (param $calls i32) (result i32)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $calls)))
        (drop (call $host_call (i32.const 0) (i32.const 10) (i32.const 10) (i32.const 10)
                               (i32.const 20) (i32.const 4) (i32.const 0) (i32.const 0)))
        (drop (call $response_len))
        (call $response (i32.const 4096))
        (local.set $calls (i32.sub (local.get $calls) (i32.const 1)))
        (br $again)))
    (call $guest_response (i32.const 0) (i32.const 0))
    (i32.const 1)))
"#;

const CALLS_PER_EVALUATION: usize = 20;
const TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let legacy = WapcModule::compile(&runtime, &wat::parse_str(LEGACY_GUEST)?)?;
    let component = ComponentModule::compile(
        &runtime,
        &std::fs::read(&policy_server_e2e::wasm().misbehaving_component)?,
    )?;
    let mut table = Table::new(
        "host_call",
        "One list call against a plain copy of its bytes (µs per call)",
        &[
            "namespaces",
            "List bytes",
            "plain copy",
            "waPC call",
            "waPC / copy",
            "component call",
            "component / copy",
        ],
    );
    for count in [100, 1_000, 10_000] {
        let list = namespaces(count);
        let state = Arc::new(ClusterState::new([ResourceKind::namespaces()]));
        state.publish(&ResourceKind::namespaces(), list.clone());
        let context = Arc::new(PolicyContext::new(
            "bench",
            AccessRules::new([ResourceKind::namespaces()]),
            state,
        ));
        let rounds = scale.host_call_rounds;

        let mut instance = WapcInstance::new(&legacy, &runtime, context.clone(), TIMEOUT)?;
        let with_calls = Bytes::from(vec![0u8; CALLS_PER_EVALUATION]);
        let legacy_call = per_call(rounds, |calls| {
            let payload = if calls {
                with_calls.clone()
            } else {
                Bytes::new()
            };
            instance.call("validate", payload).expect("evaluation");
        });

        let mut instance = ComponentInstance::new(&component, &runtime, context, TIMEOUT)?;
        let settings =
            |times: usize| json!({"behaviour": "list_namespaces", "times": times}).to_string();
        let (with_calls, without) = (settings(CALLS_PER_EVALUATION), settings(0));
        // The component's first calls grow its memory; the warm-up in `per_call` absorbs it.
        let component_call = per_call(rounds, |calls| {
            let settings = if calls { &with_calls } else { &without };
            let verdict = instance.validate("{}", settings).expect("evaluation");
            assert!(verdict.accepted);
        });

        let copy = plain_copy(list.as_bytes(), rounds * CALLS_PER_EVALUATION);
        table.row(vec![
            text(count.to_string()),
            text(list.len().to_string()),
            num(copy, 2),
            num(legacy_call, 2),
            num(legacy_call / copy, 2),
            num(component_call, 2),
            num(component_call / copy, 2),
        ]);
        report.at_most(
            format!("waPC list call / plain copy, {count} namespaces"),
            legacy_call / copy,
            2.0,
        );
        report.at_most(
            format!("component list call / plain copy, {count} namespaces"),
            component_call / copy,
            2.0,
        );
    }
    report.add(table);
    Ok(())
}

/// The prepared List of `count` namespaces, as the cache publishes it.
fn namespaces(count: usize) -> ListJson {
    let kind = ResourceKind::namespaces();
    let mut changes = Changes::new();
    for i in 0..count {
        let (key, bytes, _) = prepare_object(&kind, namespace(i)).expect("a namespace");
        changes.insert(key, Some(bytes));
    }
    let mut list = KindList::new(kind);
    list.apply(changes, 1000 + count as u64);
    list.json()
}

/// µs per call: (time of evaluations with calls − without) / calls, in blocks that
/// alternate the two; the median over the blocks, so a burst of load on the machine
/// spoils one block, not the figure. `evaluate(true)` makes the calls, `evaluate(false)`
/// none.
fn per_call(rounds: usize, mut evaluate: impl FnMut(bool)) -> f64 {
    const BLOCKS: usize = 7;
    let per_block = rounds.div_ceil(BLOCKS).max(1);
    let mut time = |calls: bool| {
        let started = Instant::now();
        for _ in 0..per_block {
            evaluate(calls);
        }
        started.elapsed().as_secs_f64() * 1e6
    };
    time(true); // warm up
    time(false);
    let estimates: Vec<f64> = (0..BLOCKS)
        .map(|_| {
            let loaded = time(true);
            let empty = time(false);
            (loaded - empty) / (per_block * CALLS_PER_EVALUATION) as f64
        })
        .collect();
    crate::stats::Stats::of(estimates).p50
}

/// µs per copy of `bytes` into a buffer already in memory, median over blocks.
fn plain_copy(bytes: &[u8], copies: usize) -> f64 {
    const BLOCKS: usize = 7;
    let per_block = copies.div_ceil(BLOCKS).max(1);
    let mut destination = vec![0u8; bytes.len()];
    let estimates: Vec<f64> = (0..BLOCKS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..per_block {
                destination.copy_from_slice(std::hint::black_box(bytes));
                std::hint::black_box(&mut destination);
            }
            started.elapsed().as_secs_f64() * 1e6 / per_block as f64
        })
        .collect();
    crate::stats::Stats::of(estimates).p50
}
