//! Per-evaluation cost, in process: a fresh instance per evaluation (what the server
//! does) against one instance reused for every evaluation, for legacy example policies
//! and their component twins. The two are timed in alternation, so they see the same load.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use guest_adapter::{AccessRules, NoCluster, PolicyContext, ResourceKind};
use policy_server::cache::{ClusterState, snapshot_file};
use policy_server::runtime::component::{ComponentInstance, ComponentModule};
use policy_server::runtime::wapc::{WapcInstance, WapcModule};
use policy_server::runtime::{GuestCall, PolicyGuest, Runtime, RuntimeConfig};
use policy_server_e2e::requests::{pod, review};
use serde_json::{Value, json};

use crate::Scale;
use crate::report::{Report, Table, num, text};
use crate::stats::{Stats, measure_alternating};

const TIMEOUT: Duration = Duration::from_secs(2);

/// One policy and the evaluation it is measured on.
struct Case {
    name: &'static str,
    style: &'static str,
    wasm: std::path::PathBuf,
    request: Value,
    settings: Value,
    context: Arc<PolicyContext>,
}

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let wasm = policy_server_e2e::wasm();
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let no_cluster = Arc::new(PolicyContext::new(
        "bench",
        AccessRules::default(),
        Arc::new(NoCluster),
    ));
    let namespaces = Arc::new(ClusterState::new([ResourceKind::namespaces()]));
    namespaces.publish_file(snapshot_file::load(
        &policy_server_e2e::build::repo_root().join("examples/cluster-snapshot.yaml"),
    )?);
    let with_namespaces = Arc::new(PolicyContext::new(
        "bench",
        AccessRules::new([ResourceKind::namespaces()]),
        namespaces,
    ));
    let labelled_pod = review(pod(
        "web",
        json!({"team": "a", "app": "web"}),
        &["nginx:1.27"],
    ))["request"]
        .clone();
    let unlabelled_pod =
        review(pod("web", json!({"app": "web"}), &["nginx:1.27"]))["request"].clone();
    let service = review(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api", "namespace": "default"}}))["request"]
        .clone();
    let default_labels = json!({"labels": {"team": "unassigned", "managed-by": "policy-server"}});
    let namespace_label = json!({"namespace_label": "services-allowed"});
    let cases = [
        Case {
            name: "required-labels",
            style: "waPC (SDK, wasip1)",
            wasm: wasm.required_labels.clone(),
            request: labelled_pod.clone(),
            settings: json!({"required_labels": ["team"]}),
            context: no_cluster.clone(),
        },
        Case {
            name: "pod-privileged",
            style: "waPC (SDK 0.17, wasip1)",
            wasm: wasm.pod_privileged.clone(),
            request: labelled_pod.clone(),
            settings: json!({"skip_init_containers": false}),
            context: no_cluster.clone(),
        },
        Case {
            name: "deny-latest-tag",
            style: "waPC (wapc-guest, wasip1)",
            wasm: wasm.deny_latest_tag.clone(),
            request: labelled_pod.clone(),
            settings: json!({}),
            context: no_cluster.clone(),
        },
        Case {
            name: "default-labels",
            style: "waPC (SDK, unknown-unknown)",
            wasm: wasm.default_labels.clone(),
            request: unlabelled_pod.clone(),
            settings: default_labels.clone(),
            context: no_cluster.clone(),
        },
        Case {
            name: "default-labels",
            style: "component",
            wasm: wasm.default_labels_component.clone(),
            request: unlabelled_pod,
            settings: default_labels,
            context: no_cluster,
        },
        Case {
            name: "service-namespace-label",
            style: "waPC (wapc-guest, wasip1)",
            wasm: wasm.service_namespace_label.clone(),
            request: service.clone(),
            settings: namespace_label.clone(),
            context: with_namespaces.clone(),
        },
        Case {
            name: "service-namespace-label",
            style: "component",
            wasm: wasm.service_namespace_label_component.clone(),
            request: service,
            settings: namespace_label,
            context: with_namespaces,
        },
    ];

    let mut table = Table::new(
        "evaluation",
        "Per evaluation, in process (µs)",
        &[
            "policy",
            "style",
            "fresh p50",
            "fresh p99",
            "reused p50",
            "reused p99",
            "fresh − reused p50",
            "instance alone p50",
        ],
    );
    let mut fresh_by_twin: Vec<(&str, &str, Stats)> = Vec::new();
    for case in &cases {
        let [fresh, reused, instance_alone] = if case.style == "component" {
            measure_component(&runtime, case, scale)?
        } else {
            measure_legacy(&runtime, case, scale)?
        };
        table.row(vec![
            text(case.name),
            text(case.style),
            num(fresh.p50, 1),
            num(fresh.p99, 1),
            num(reused.p50, 1),
            num(reused.p99, 1),
            num(fresh.p50 - reused.p50, 1),
            num(instance_alone.p50, 1),
        ]);
        report.at_most(
            format!("fresh-instance overhead µs, {} ({})", case.name, case.style),
            fresh.p50 - reused.p50,
            10.0,
        );
        fresh_by_twin.push((case.name, case.style, fresh));
    }
    report.add(table);

    let mut twins = Table::new(
        "twins",
        "Component twin against its legacy policy (fresh instances)",
        &["policy", "component / waPC, p50"],
    );
    for (name, style, component) in fresh_by_twin
        .iter()
        .filter(|(_, style, _)| *style == "component")
    {
        let _ = style;
        if let Some((_, _, legacy)) = fresh_by_twin
            .iter()
            .find(|(n, s, _)| n == name && *s != "component")
        {
            twins.row(vec![text(*name), num(component.p50 / legacy.p50, 2)]);
        }
    }
    report.add(twins);
    Ok(())
}

/// Times, in alternation: an evaluation in a fresh instance, one in a reused instance,
/// and a fresh instance made and dropped without a call (the engine's share of the
/// difference: what remains is what the guest's first call costs more than a later one).
fn measure_legacy(runtime: &Runtime, case: &Case, scale: &Scale) -> anyhow::Result<[Stats; 3]> {
    let module = WapcModule::compile(runtime, &std::fs::read(&case.wasm)?)?.finish(runtime);
    let payload =
        Bytes::from(json!({"request": case.request, "settings": case.settings}).to_string());
    let check = module.call(
        runtime,
        case.context.clone(),
        TIMEOUT,
        "validate",
        payload.clone(),
    )?;
    let answer: Value = serde_json::from_slice(&check)?;
    anyhow::ensure!(
        answer["accepted"] == true,
        "{}: expected an accepting verdict, got {answer}",
        case.name
    );
    let mut instance = WapcInstance::new(&module, runtime, case.context.clone(), TIMEOUT)?;
    Ok(measure_alternating(
        scale.warmup,
        scale.samples,
        [
            &mut || {
                module
                    .call(
                        runtime,
                        case.context.clone(),
                        TIMEOUT,
                        "validate",
                        payload.clone(),
                    )
                    .expect("evaluation");
            },
            &mut || {
                instance
                    .call("validate", payload.clone())
                    .expect("evaluation");
            },
            &mut || {
                drop(
                    WapcInstance::new(&module, runtime, case.context.clone(), TIMEOUT)
                        .expect("instantiation"),
                );
            },
        ],
    ))
}

/// As [`measure_legacy`], for a component.
fn measure_component(runtime: &Runtime, case: &Case, scale: &Scale) -> anyhow::Result<[Stats; 3]> {
    let module = ComponentModule::compile(runtime, &std::fs::read(&case.wasm)?)?.finish(runtime);
    let (request, settings) = (case.request.to_string(), case.settings.to_string());
    let raw_request = serde_json::value::RawValue::from_string(request.clone())?;
    let call = GuestCall {
        runtime,
        context: &case.context,
        timeout: TIMEOUT,
    };
    let verdict = module.validate(call, &raw_request, &settings)?;
    anyhow::ensure!(
        verdict.accepted,
        "{}: expected an accepting verdict",
        case.name
    );
    let mut instance = ComponentInstance::new(&module, runtime, case.context.clone(), TIMEOUT)?;
    Ok(measure_alternating(
        scale.warmup,
        scale.samples,
        [
            &mut || {
                module
                    .validate(call, &raw_request, &settings)
                    .expect("evaluation");
            },
            &mut || {
                instance.validate(&request, &settings).expect("evaluation");
            },
            &mut || {
                drop(
                    ComponentInstance::new(&module, runtime, case.context.clone(), TIMEOUT)
                        .expect("instantiation"),
                );
            },
        ],
    ))
}
