//! Freshness: from a change on the fake API server to the first evaluation that sees it,
//! with 10,000 namespaces and 100,000 services cached. A namespace's label is taken away
//! and given back, again and again; after each change the client asks the context-aware
//! policy (which reads that namespace with `get_resource`) until its verdict follows, and
//! the time of that answer is the freshness of the change.

use std::time::{Duration, Instant};

use policy_server_e2e::ServerBuilder;
use policy_server_e2e::fake_apiserver::{FakeApiServer, NAMESPACES, SERVICES};
use policy_server_e2e::requests::review;
use serde_json::json;

use crate::cluster::{namespace, namespace_name, service};
use crate::report::{Report, Table, num, text};
use crate::stats::Stats;
use crate::{Scale, async_runtime, policies_yml, server_binary};

const NAMESPACES_IN_CLUSTER: usize = 10_000;
const SERVICES_IN_CLUSTER: usize = 100_000;
const WATCHED: usize = 7;

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let wasm = policy_server_e2e::wasm();
    let runtime = async_runtime();
    let api = runtime.block_on(FakeApiServer::start());
    for i in 0..NAMESPACES_IN_CLUSTER {
        api.apply(NAMESPACES, namespace(i));
    }
    for i in 0..SERVICES_IN_CLUSTER {
        let mut object = service(i);
        object["metadata"]["namespace"] = serde_json::Value::from(namespace_name(i / 10));
        api.apply(SERVICES, object);
    }
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig())?;
    let yml = policies_yml(&[
        (
            "namespace-label",
            json!({"module": wasm.namespace_label,
                   "contextAwareResources": [{"apiVersion": "v1", "kind": "Namespace"}],
                   "settings": {"namespace_label": "services-allowed"}}),
        ),
        // Services are cached too, so their reflector shares the machine.
        (
            "services",
            json!({"module": wasm.unique_service_selector,
                   "contextAwareResources": [{"apiVersion": "v1", "kind": "Service"}]}),
        ),
    ]);
    let server = ServerBuilder::new(server_binary(), yml)
        .arg("--kubeconfig")
        .arg(kubeconfig.display().to_string())
        .start();
    let service = review(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api", "namespace": namespace_name(WATCHED)}}));

    let mut samples = Vec::with_capacity(scale.freshness_changes);
    let mut polls = 0usize;
    runtime.block_on(async {
        // Ready: the first list is in, and the label is there.
        server.wait_ready(Duration::from_secs(60)).await;
        for change in 0..scale.freshness_changes {
            let labelled = change % 2 == 1;
            let mut object = namespace(WATCHED);
            if !labelled {
                object["metadata"]["labels"]
                    .as_object_mut()
                    .expect("labels")
                    .remove("services-allowed");
            }
            let changed = Instant::now();
            api.apply(NAMESPACES, object);
            loop {
                polls += 1;
                let answer = server.validate("namespace-label", &service).await;
                if answer["allowed"] == labelled {
                    break;
                }
                anyhow::ensure!(
                    changed.elapsed() < Duration::from_secs(30),
                    "change {change} was not seen in 30 s"
                );
            }
            samples.push(changed.elapsed().as_secs_f64() * 1e3);
            // Changes apart from each other, as in a real cluster.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    })?;
    let stats = Stats::of(samples);
    let mut table = Table::new(
        "freshness",
        format!(
            "Freshness: change on the API server to the first evaluation that sees it ({NAMESPACES_IN_CLUSTER} namespaces, {SERVICES_IN_CLUSTER} services cached)"
        ),
        &[
            "changes",
            "evaluations asked",
            "p50 ms",
            "p99 ms",
            "mean ms",
        ],
    );
    table.row(vec![
        text(scale.freshness_changes.to_string()),
        text(polls.to_string()),
        num(stats.p50, 2),
        num(stats.p99, 2),
        num(stats.mean, 2),
    ]);
    report.add(table);
    report.at_most("freshness p99, ms", stats.p99, 50.0);
    drop(api);
    Ok(())
}
