//! Cost of one cluster-context call, in both call styles, beside a plain copy of the
//! same bytes:
//!
//! - a whole list of namespaces (100, 1,000 and 10,000 realistic ones): the seed call;
//! - `get_resource` of one namespace and a by-namespace list of 10 services, with the
//!   kind at 1,000, 10,000 and 100,000 objects: the cost must follow the answer, not the
//!   kind's size.
//!
//! A guest calls K times per evaluation; the per-call cost is the difference between K
//! calls and none, divided by K, in one reused instance (its memory already grown, so
//! only the calls count). It covers the whole round trip: routing, payload parsing,
//! access check, index lookup, and the copy into guest memory. The legacy guest is a few
//! lines of WAT that reads the answer into a fixed buffer; the component guest is Rust
//! (`tests/policies/misbehaving-component`), whose `cabi_realloc` allocates each answer.
//!
//! Over 400 lines on purpose: the two call styles are measured by the same steps, side by
//! side, so a difference in their figures is a difference in the host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use guest_adapter::{
    AccessRules, ClusterQuery, GetQuery, GuestSession, ListQuery, PolicyContext, ResourceKind,
    Scope,
};
use policy_server::cache::ClusterState;
use policy_server::cache::index::KindIndex;
use policy_server::cache::object::{Changes, prepare_object};
use policy_server::runtime::component::{ComponentInstance, ComponentModule};
use policy_server::runtime::wapc::{WapcInstance, WapcModule};
use policy_server::runtime::{Runtime, RuntimeConfig};
use serde_json::{Value, json};

use crate::Scale;
use crate::cluster::{namespace, namespace_name, service};
use crate::report::{Report, Table, num, text};

const CALLS_PER_EVALUATION: usize = 20;
const TIMEOUT: Duration = Duration::from_secs(30);

/// A legacy guest that makes one host call as often as its payload is long: binding,
/// namespace and operation at address 0, the call's payload after them, the answer read
/// at 64 KiB.
fn legacy_guest(binding: &str, namespace: &str, operation: &str, payload: &str) -> String {
    let names = format!("{binding}{namespace}{operation}");
    let escaped = payload.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"
(module
  (import "wapc" "__host_call" (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response_len" (func $response_len (result i32)))
  (import "wapc" "__host_response" (func $response (param i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (memory (export "memory") 512)
  (data (i32.const 0) "{names}{escaped}")
  (func (export "__guest_call") (param $op_len i32) (param $calls i32) (result i32)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $calls)))
        (if (i32.eqz (call $host_call (i32.const 0) (i32.const {b}) (i32.const {b}) (i32.const {n})
                                      (i32.const {bn}) (i32.const {o}) (i32.const {at}) (i32.const {p})))
          (then unreachable))
        (drop (call $response_len))
        (call $response (i32.const 65536))
        (local.set $calls (i32.sub (local.get $calls) (i32.const 1)))
        (br $again)))
    (call $guest_response (i32.const 0) (i32.const 0))
    (i32.const 1)))
"#,
        b = binding.len(),
        n = namespace.len(),
        bn = binding.len() + namespace.len(),
        o = operation.len(),
        at = names.len(),
        p = payload.len(),
    )
}

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let component = ComponentModule::compile(
        &runtime,
        &std::fs::read(&policy_server_e2e::wasm().misbehaving_component)?,
    )?
    .finish(&runtime);
    whole_lists(report, scale, &runtime, &component)?;
    lookups(report, scale, &runtime, &component)
}

/// The seed call: every namespace.
fn whole_lists(
    report: &mut Report,
    scale: &Scale,
    runtime: &Runtime,
    component: &ComponentModule,
) -> anyhow::Result<()> {
    let legacy = WapcModule::compile(
        runtime,
        &wat::parse_str(legacy_guest("kubernetes", "namespaces", "list", ""))?,
    )?
    .finish(runtime);
    let mut table = Table::new(
        "host_call",
        "One whole-list call against a plain copy of its bytes (µs per call)",
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
        let state = cache(
            ResourceKind::namespaces(),
            Scope::Cluster,
            (0..count).map(namespace),
        );
        let context = context(state);
        let list = answer_bytes(
            &context,
            ClusterQuery::List(ListQuery::all(ResourceKind::namespaces())),
        );
        let list_all = json!({"behaviour": "list", "api_version": "v1", "kind": "Namespace"});
        let (legacy_call, component_call) =
            both_styles(scale, runtime, &legacy, component, &context, list_all)?;
        let copy = plain_copy(&list, scale.host_call_rounds * CALLS_PER_EVALUATION);
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

/// `get_resource` of one namespace and a by-namespace list of 10 services, at three kind
/// sizes.
fn lookups(
    report: &mut Report,
    scale: &Scale,
    runtime: &Runtime,
    component: &ComponentModule,
) -> anyhow::Result<()> {
    let target = namespace_name(7);
    let get_payload =
        json!({"api_version": "v1", "kind": "Namespace", "name": target, "disable_cache": false});
    let list_payload = json!({"api_version": "v1", "kind": "Service", "namespace": target});
    let legacy = |operation: &str, payload: &Value| -> anyhow::Result<WapcModule> {
        let wat = legacy_guest("kubewarden", "kubernetes", operation, &payload.to_string());
        Ok(WapcModule::compile(runtime, &wat::parse_str(wat)?)?.finish(runtime))
    };
    let get_guest = legacy("get_resource", &get_payload)?;
    let list_guest = legacy("list_resources_by_namespace", &list_payload)?;
    let mut table = Table::new(
        "host_call_lookup",
        "get_resource of one namespace and a by-namespace list of 10 services, by kind size (µs per call)",
        &[
            "call",
            "objects",
            "answer bytes",
            "plain copy",
            "waPC call",
            "waPC / copy",
            "component call",
            "component / copy",
        ],
    );
    let sizes = [1_000, 10_000, 100_000];
    let mut per_size = Vec::new();
    for objects in sizes {
        let state = cache(
            ResourceKind::namespaces(),
            Scope::Cluster,
            (0..objects).map(namespace),
        );
        let query = ClusterQuery::Get(GetQuery {
            kind: ResourceKind::namespaces(),
            namespace: None,
            name: target.clone(),
            mask: None,
        });
        let settings =
            json!({"behaviour": "get", "api_version": "v1", "kind": "Namespace", "name": target});
        let row = Lookup {
            call: "get namespace",
            objects,
            legacy: &get_guest,
            query,
            settings,
        };
        per_size.push(row.measure(scale, runtime, component, state, &mut table)?);
    }
    for objects in sizes {
        // 10 services per namespace, whatever the kind's size.
        let services = (0..objects).map(|i| {
            let mut object = service(i);
            object["metadata"]["namespace"] = Value::from(namespace_name(i / 10));
            object
        });
        let state = cache(ResourceKind::services(), Scope::Namespaced, services);
        let query = ClusterQuery::List(ListQuery {
            namespace: Some(target.clone()),
            ..ListQuery::all(ResourceKind::services())
        });
        let settings = json!({"behaviour": "list", "api_version": "v1", "kind": "Service",
                              "namespace": target});
        let row = Lookup {
            call: "list 10 services",
            objects,
            legacy: &list_guest,
            query,
            settings,
        };
        per_size.push(row.measure(scale, runtime, component, state, &mut table)?);
    }
    report.add(table);
    for (call, rows) in [
        ("get namespace", &per_size[..3]),
        ("list 10 services", &per_size[3..]),
    ] {
        for (style, pick) in [("waPC", 0), ("component", 1)] {
            let cost = |row: &(f64, f64, f64)| if pick == 0 { row.0 } else { row.1 };
            report.at_most(
                format!("{style} {call}: 100,000 / 1,000 objects"),
                cost(&rows[2]) / cost(&rows[0]),
                1.5,
            );
            report.at_most(
                format!("{style} {call} / plain copy, 100,000 objects"),
                cost(&rows[2]) / rows[2].2,
                2.0,
            );
        }
    }
    Ok(())
}

/// One row of the lookup table.
struct Lookup<'a> {
    call: &'static str,
    objects: usize,
    legacy: &'a WapcModule,
    query: ClusterQuery,
    settings: Value,
}

impl Lookup<'_> {
    /// µs per call (waPC, component) and of a plain copy of the answer.
    fn measure(
        self,
        scale: &Scale,
        runtime: &Runtime,
        component: &ComponentModule,
        state: Arc<ClusterState>,
        table: &mut Table,
    ) -> anyhow::Result<(f64, f64, f64)> {
        let context = context(state);
        let answer = answer_bytes(&context, self.query);
        let (legacy_call, component_call) = both_styles(
            scale,
            runtime,
            self.legacy,
            component,
            &context,
            self.settings,
        )?;
        // Small copies: many more of them, for a stable figure.
        let copy = plain_copy(&answer, scale.host_call_rounds * CALLS_PER_EVALUATION * 100);
        table.row(vec![
            text(self.call),
            text(self.objects.to_string()),
            text(answer.len().to_string()),
            num(copy, 3),
            num(legacy_call, 3),
            num(legacy_call / copy, 1),
            num(component_call, 3),
            num(component_call / copy, 1),
        ]);
        Ok((legacy_call, component_call, copy))
    }
}

/// Per-call µs in one reused instance of each style.
fn both_styles(
    scale: &Scale,
    runtime: &Runtime,
    legacy: &WapcModule,
    component: &ComponentModule,
    context: &Arc<PolicyContext>,
    mut settings: Value,
) -> anyhow::Result<(f64, f64)> {
    let rounds = scale.host_call_rounds;
    let mut instance = WapcInstance::new(legacy, runtime, context.clone(), TIMEOUT)?;
    let with_calls = Bytes::from(vec![0u8; CALLS_PER_EVALUATION]);
    let legacy_call = per_call(rounds, |calls| {
        let payload = if calls {
            with_calls.clone()
        } else {
            Bytes::new()
        };
        instance.call("validate", payload).expect("evaluation");
    });
    let mut instance = ComponentInstance::new(component, runtime, context.clone(), TIMEOUT)?;
    settings["times"] = Value::from(CALLS_PER_EVALUATION);
    let with_calls = settings.to_string();
    let without = json!({"behaviour": "accept"}).to_string();
    // The component's first calls grow its memory; the warm-up in `per_call` absorbs it.
    let component_call = per_call(rounds, |calls| {
        let settings = if calls { &with_calls } else { &without };
        let verdict = instance.validate("{}", settings).expect("evaluation");
        assert!(verdict.accepted, "{:?}", verdict.message);
    });
    Ok((legacy_call, component_call))
}

fn context(state: Arc<ClusterState>) -> Arc<PolicyContext> {
    let granted = [ResourceKind::namespaces(), ResourceKind::services()];
    Arc::new(PolicyContext::new(
        "bench",
        AccessRules::new(granted),
        state,
    ))
}

/// A cache holding one kind of `objects`, indexed as the server indexes them.
fn cache(
    kind: ResourceKind,
    scope: Scope,
    objects: impl Iterator<Item = Value>,
) -> Arc<ClusterState> {
    let mut changes = Changes::new();
    for object in objects {
        let prepared = prepare_object(&kind, object).expect("an object");
        changes.insert(prepared.key, Some(prepared.object));
    }
    let state = Arc::new(ClusterState::new([kind.clone()]));
    state.publish(Arc::new(KindIndex::new(kind, scope).apply(&changes, 1)));
    state
}

/// The answer's bytes, as a guest receives them.
fn answer_bytes(context: &Arc<PolicyContext>, query: ClusterQuery) -> Bytes {
    GuestSession::new(context.clone())
        .query(&query)
        .expect("the bench's query is answered")
        .to_bytes()
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
