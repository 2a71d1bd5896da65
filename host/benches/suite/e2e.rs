//! End to end over HTTPS: the release binary on loopback under wrk, for the no-op route
//! (the floor: HTTP, TLS and review parsing, no wasm), a trivial legacy policy, and the
//! context-aware twins (legacy and component) over a 10,000-namespace snapshot.

use std::time::Duration;

use policy_server_e2e::ServerBuilder;
use policy_server_e2e::requests::{pod, review};
use serde_json::{Value, json};

use crate::cluster::{list, namespace, namespace_name};
use crate::load::Wrk;
use crate::report::{Report, Table, num, text};
use crate::{Scale, async_runtime, policies_yml, server_binary};

pub const SNAPSHOT_NAMESPACES: usize = 10_000;
const CONCURRENCY: [usize; 3] = [1, 16, 64];

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let wasm = policy_server_e2e::wasm();
    let dir = tempfile::tempdir()?;
    let snapshot = dir.path().join("namespaces.json");
    std::fs::write(
        &snapshot,
        serde_json::to_vec(&list((0..SNAPSHOT_NAMESPACES).map(namespace).collect()))?,
    )?;
    let namespaces = json!([{"apiVersion": "v1", "kind": "Namespace"}]);
    let label = json!({"namespace_label": "services-allowed"});
    let yml = policies_yml(&[
        ("trivial", json!({"module": wasm.deny_latest_tag, "settings": {}})),
        ("context-legacy", json!({"module": wasm.service_namespace_label,
            "contextAwareResources": namespaces, "settings": label})),
        ("context-component", json!({"module": wasm.service_namespace_label_component,
            "contextAwareResources": namespaces, "settings": label})),
    ]);
    let server = ServerBuilder::new(server_binary(), yml)
        .arg("--enable-noop-route")
        .arg("--cluster-snapshot")
        .arg(snapshot.display().to_string())
        .start();

    let pod = review(pod("web", json!({"team": "a"}), &["nginx:1.27"]));
    let service = review(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api", "namespace": namespace_name(SNAPSHOT_NAMESPACES / 2)}}));
    let routes: [(&str, &str, &Value); 4] = [
        ("no-op route (no wasm)", "/noop", &pod),
        ("trivial legacy (deny-latest-tag)", "/validate/trivial", &pod),
        ("context-aware legacy, 10,000 namespaces", "/validate/context-legacy", &service),
        ("context-aware component, 10,000 namespaces", "/validate/context-component", &service),
    ];
    // Every route must answer what a user expects before it is timed.
    async_runtime().block_on(async {
        for (name, path, body) in &routes {
            let (status, answer) = server.post_json(path, body).await;
            anyhow::ensure!(
                status == 200 && answer["response"]["allowed"] == true,
                "{name}: expected an allowed review, got {status} {answer}"
            );
        }
        Ok(())
    })?;

    let wrk = Wrk::new()?;
    let mut table = Table::new(
        "e2e",
        "End to end over HTTPS, wrk on loopback",
        &["route", "connections", "requests/s", "p50 ms", "p99 ms", "of no-op requests/s"],
    );
    let mut floor = [0.0; CONCURRENCY.len()];
    let mut trivial = [0.0; CONCURRENCY.len()];
    for (index, (name, path, body)) in routes.iter().enumerate() {
        let url = server.ip_url(path);
        let body = serde_json::to_vec(body)?;
        wrk.run(&url, &body, 16, Duration::from_secs(1))?; // warm up
        for (c, &concurrency) in CONCURRENCY.iter().enumerate() {
            let load = wrk.run(&url, &body, concurrency, scale.load_duration)?;
            match index {
                0 => floor[c] = load.requests_per_second,
                1 => trivial[c] = load.requests_per_second,
                _ => {}
            }
            table.row(vec![
                text(*name),
                text(concurrency.to_string()),
                num(load.requests_per_second, 0),
                num(load.p50_ms, 2),
                num(load.p99_ms, 2),
                num(load.requests_per_second / floor[c], 2),
            ]);
        }
    }
    report.add(table);
    let c16 = CONCURRENCY.iter().position(|&c| c == 16).expect("c=16 is measured");
    report.at_least("trivial legacy / no-op requests/s, c=16", trivial[c16] / floor[c16], 0.5);
    Ok(())
}
