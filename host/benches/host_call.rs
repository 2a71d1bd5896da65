//! Cost of one cluster-context host call (`kubernetes/namespaces/list`) for lists of 100,
//! 1,000 and 10,000 realistic namespaces, beside a plain copy of the same bytes.
//!
//! A tiny waPC guest calls the host K times per evaluation (K = payload length); the
//! per-call cost is the difference between K calls and none, divided by K. It covers the
//! whole ABI round trip: routing, access check, cache lookup, and the copy into guest
//! memory. It also reports what the cache holds per object (live heap bytes of the
//! prepared List and its index, through a counting allocator) beside the object's JSON.
//! `cargo bench -p policy-server --bench host_call`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use guest_adapter::{AccessRules, PolicyContext, ResourceKind};
use policy_server::cache::ClusterState;
use policy_server::cache::list::{Changes, KindList, prepare_object};
use policy_server::runtime::wapc::{WapcInstance, WapcModule};
use policy_server::runtime::{Runtime, RuntimeConfig};
use serde_json::json;

const GUEST: &str = r#"
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

/// Counts live heap bytes, to measure what the cache keeps.
struct CountingAllocator;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const CALLS_PER_EVALUATION: usize = 20;
const ROUNDS: usize = 200;

/// A prepared List of `count` realistic namespaces, the live heap bytes the cache keeps
/// for it (List plus index), and the summed JSON size of the objects.
fn namespaces(count: usize) -> (KindList, isize, usize) {
    let kind = ResourceKind::namespaces();
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut json_bytes = 0;
    let mut changes = Changes::new();
    for i in 0..count {
        let object = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {
                "name": format!("team-{i:05}"),
                "uid": format!("6a1f5c3e-0000-4000-8000-{i:012}"),
                "resourceVersion": (1000 + i).to_string(),
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"kubernetes.io/metadata.name": format!("team-{i:05}"),
                           "team": format!("t{}", i % 50), "env": "production"},
                "annotations": {"owner": "platform@example.com", "cost-center": format!("cc-{}", i % 7)}
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        });
        let (key, bytes, _) = prepare_object(&kind, object).unwrap();
        json_bytes += bytes.len();
        changes.insert(key, Some(bytes));
    }
    let mut list = KindList::new(kind);
    list.apply(changes, 1000 + count as u64);
    let kept = LIVE_BYTES.load(Ordering::Relaxed) - before;
    (list, kept, json_bytes)
}

fn main() -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let module = WapcModule::compile(&runtime, &wat::parse_str(GUEST)?)?;
    println!(
        "{:>8} {:>12} {:>14} {:>14} {:>8} {:>14} {:>14}",
        "items",
        "list bytes",
        "host call µs",
        "plain copy µs",
        "ratio",
        "cache B/object",
        "JSON B/object"
    );
    for count in [100, 1_000, 10_000] {
        let (list, kept, json_bytes) = namespaces(count);
        let list = list.bytes();
        let state = Arc::new(ClusterState::new([ResourceKind::namespaces()]));
        state.publish(&ResourceKind::namespaces(), list.clone());
        let context = Arc::new(PolicyContext::new(
            "bench",
            AccessRules::new([ResourceKind::namespaces()]),
            state,
        ));
        // One instance, reused: its memory is already grown, so only the calls count.
        let mut instance = WapcInstance::new(&module, &runtime, context, Duration::from_secs(10))?;
        let with_calls = Bytes::from(vec![0u8; CALLS_PER_EVALUATION]);
        let per_call = |instance: &mut WapcInstance, payload: &Bytes| {
            let started = Instant::now();
            for _ in 0..ROUNDS {
                instance
                    .call("validate", payload.clone())
                    .expect("evaluation");
            }
            started.elapsed().as_secs_f64() * 1e6 / ROUNDS as f64
        };
        per_call(&mut instance, &with_calls); // warm up
        let loaded = per_call(&mut instance, &with_calls);
        let empty = per_call(&mut instance, &Bytes::new());
        let host_call = (loaded - empty) / CALLS_PER_EVALUATION as f64;

        let mut destination = vec![0u8; list.len()];
        let copies = ROUNDS * CALLS_PER_EVALUATION;
        let started = Instant::now();
        for _ in 0..copies {
            destination.copy_from_slice(std::hint::black_box(&list));
            std::hint::black_box(&mut destination);
        }
        let copy = started.elapsed().as_secs_f64() * 1e6 / copies as f64;
        println!(
            "{count:>8} {:>12} {host_call:>14.2} {copy:>14.2} {:>8.2} {:>14.0} {:>14.0}",
            list.len(),
            host_call / copy,
            kept as f64 / count as f64,
            json_bytes as f64 / count as f64,
        );
    }
    Ok(())
}
