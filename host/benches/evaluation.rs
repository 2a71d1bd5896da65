//! Per-evaluation cost of a legacy policy, in process: a fresh instance per evaluation
//! (what the server does) against one instance reused for every evaluation.
//!
//! Then the context-aware twins, `service-namespace-label` as a legacy module and as a
//! component, each reading namespaces from the cache, in fresh instances.
//!
//! `cargo bench -p policy-server --bench evaluation` prints p50/p99/mean of each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use guest_adapter::{AccessRules, NoCluster, PolicyContext, ResourceKind};
use policy_server::cache::{ClusterState, snapshot_file};
use policy_server::runtime::component::ComponentModule;
use policy_server::runtime::wapc::{WapcInstance, WapcModule};
use policy_server::runtime::{Runtime, RuntimeConfig};
use policy_server_e2e::requests::{pod, review};
use serde_json::json;

const WARMUP: usize = 200;
const SAMPLES: usize = 5_000;
const TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> anyhow::Result<()> {
    let wasm = policy_server_e2e::wasm();
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let router = Arc::new(PolicyContext::new(
        "bench",
        AccessRules::default(),
        Arc::new(NoCluster),
    ));
    let request = review(pod(
        "web",
        json!({"team": "a", "app": "web"}),
        &["nginx:1.27"],
    ));
    let cases = [
        (
            "required-labels (SDK, wasip1)",
            &wasm.required_labels,
            json!({"required_labels": ["team"]}),
        ),
        (
            "deny-latest-tag (wapc-guest, wasip1)",
            &wasm.deny_latest_tag,
            json!({}),
        ),
        (
            "default-labels (SDK, unknown-unknown)",
            &wasm.default_labels,
            json!({"labels": {"team": "x"}}),
        ),
    ];
    println!(
        "{:<40} {:>12} {:>10} {:>10} {:>10}",
        "policy", "instance", "p50 µs", "p99 µs", "mean µs"
    );
    for (name, path, settings) in cases {
        let module = WapcModule::compile(&runtime, &std::fs::read(path)?)?;
        let payload =
            Bytes::from(json!({"request": request["request"], "settings": settings}).to_string());

        let fresh = measure(|| {
            module
                .call(
                    &runtime,
                    router.clone(),
                    TIMEOUT,
                    "validate",
                    payload.clone(),
                )
                .expect("evaluation");
        });
        let mut instance = WapcInstance::new(&module, &runtime, router.clone(), TIMEOUT)?;
        let reused = measure(|| {
            instance
                .call("validate", payload.clone())
                .expect("evaluation");
        });
        for (kind, stats) in [("fresh", &fresh), ("reused", &reused)] {
            println!(
                "{name:<40} {kind:>12} {:>10.1} {:>10.1} {:>10.1}",
                stats.p50, stats.p99, stats.mean
            );
        }
        println!(
            "{name:<40} {:>12} {:>10.1} {:>10} {:>10.1}",
            "overhead",
            fresh.p50 - reused.p50,
            "",
            fresh.mean - reused.mean
        );
    }

    let snapshot = policy_server_e2e::build::repo_root().join("examples/cluster-snapshot.yaml");
    let state = Arc::new(ClusterState::new([ResourceKind::namespaces()]));
    state.publish_all(snapshot_file::load(&snapshot)?);
    let context = Arc::new(PolicyContext::new(
        "bench",
        AccessRules::new([ResourceKind::namespaces()]),
        state,
    ));
    let service = review(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api", "namespace": "default"}}));
    let request = service["request"].to_string();
    let settings = json!({"namespace_label": "services-allowed"}).to_string();
    let legacy = WapcModule::compile(&runtime, &std::fs::read(&wasm.service_namespace_label)?)?;
    let payload = Bytes::from(format!(r#"{{"request":{request},"settings":{settings}}}"#));
    let legacy_stats = measure(|| {
        legacy
            .call(
                &runtime,
                context.clone(),
                TIMEOUT,
                "validate",
                payload.clone(),
            )
            .expect("evaluation");
    });
    let component = ComponentModule::compile(
        &runtime,
        &std::fs::read(&wasm.service_namespace_label_component)?,
    )?;
    let component_stats = measure(|| {
        let verdict = component
            .validate(&runtime, context.clone(), TIMEOUT, &request, &settings)
            .expect("evaluation");
        assert!(verdict.accepted);
    });
    for (name, stats) in [
        ("service-namespace-label (waPC)", &legacy_stats),
        ("service-namespace-label (component)", &component_stats),
    ] {
        println!(
            "{name:<40} {:>12} {:>10.1} {:>10.1} {:>10.1}",
            "fresh", stats.p50, stats.p99, stats.mean
        );
    }
    println!(
        "component / waPC (p50): {:.2}",
        component_stats.p50 / legacy_stats.p50
    );
    Ok(())
}

struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn measure(mut run: impl FnMut()) -> Stats {
    for _ in 0..WARMUP {
        run();
    }
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    Stats {
        p50: samples[SAMPLES / 2],
        p99: samples[SAMPLES * 99 / 100],
        mean: samples.iter().sum::<f64>() / SAMPLES as f64,
    }
}
