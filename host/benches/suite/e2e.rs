//! End to end over HTTPS: the release binary on loopback under wrk, for the no-op route
//! (the floor: HTTP, TLS and review parsing, no wasm), a trivial legacy policy, and
//! context-aware policies over a snapshot of 10,000 namespaces and 100,000 services: the
//! seed policy that lists every namespace, the SDK 0.17 policy that gets one
//! (`get_resource`) and its component twin, and the SDK policy that lists one namespace's
//! services.

use std::time::Duration;

use policy_server_e2e::ServerBuilder;
use policy_server_e2e::requests::{pod, review};
use serde_json::{Value, json};

use crate::cluster::{list, namespace, namespace_name, service};
use crate::load::Wrk;
use crate::report::{Report, Table, num, text};
use crate::{Scale, async_runtime, policies_yml, server_binary};

pub const SNAPSHOT_NAMESPACES: usize = 10_000;
const SNAPSHOT_SERVICES: usize = 100_000;
const CONCURRENCY: [usize; 3] = [1, 16, 64];
const TARGET_PAIRS: usize = 3;

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let wasm = policy_server_e2e::wasm();
    let dir = tempfile::tempdir()?;
    let snapshot = dir.path().join("namespaces.json");
    // 10 services per namespace, each with its own selector.
    let services = (0..SNAPSHOT_SERVICES).map(|i| {
        let mut object = service(i);
        object["metadata"]["namespace"] = Value::from(namespace_name(i / 10));
        object
    });
    let objects = (0..SNAPSHOT_NAMESPACES)
        .map(namespace)
        .chain(services)
        .collect();
    std::fs::write(&snapshot, serde_json::to_vec(&list(objects))?)?;
    let namespaces = json!([{"apiVersion": "v1", "kind": "Namespace"}]);
    let services = json!([{"apiVersion": "v1", "kind": "Service"}]);
    let label = json!({"namespace_label": "services-allowed"});
    let yml = policies_yml(&[
        (
            "trivial",
            json!({"module": wasm.deny_latest_tag, "settings": {}}),
        ),
        (
            "context-legacy",
            json!({"module": wasm.service_namespace_label,
            "contextAwareResources": namespaces, "settings": label}),
        ),
        (
            "context-get",
            json!({"module": wasm.namespace_label,
            "contextAwareResources": namespaces, "settings": label}),
        ),
        (
            "context-component",
            json!({"module": wasm.service_namespace_label_component,
            "contextAwareResources": namespaces, "settings": label}),
        ),
        (
            "context-by-namespace",
            json!({"module": wasm.unique_service_selector,
            "contextAwareResources": services, "settings": {}}),
        ),
    ]);
    let server = ServerBuilder::new(server_binary(), yml)
        .arg("--enable-noop-route")
        .arg("--cluster-snapshot")
        .arg(snapshot.display().to_string())
        .start();

    let pod = review(pod("web", json!({"team": "a"}), &["nginx:1.27"]));
    let service = review(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api", "namespace": namespace_name(SNAPSHOT_NAMESPACES / 2)}}));
    let new_service = review(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "new", "namespace": namespace_name(SNAPSHOT_NAMESPACES / 2)},
        "spec": {"selector": {"app": "new"}}}));
    let routes: [(&str, &str, &Value); 6] = [
        ("no-op route (no wasm)", "/noop", &pod),
        (
            "trivial legacy (deny-latest-tag)",
            "/validate/trivial",
            &pod,
        ),
        (
            "seed list of 10,000 namespaces (SDK 0.8 era, wapc-guest)",
            "/validate/context-legacy",
            &service,
        ),
        (
            "get_resource of one namespace (SDK 0.17)",
            "/validate/context-get",
            &service,
        ),
        (
            "get of one namespace (component, 0.2.0)",
            "/validate/context-component",
            &service,
        ),
        (
            "10 services of one namespace of 100,000 (SDK 0.17)",
            "/validate/context-by-namespace",
            &new_service,
        ),
    ];
    // Every route must answer what a user expects before it is timed.
    let client = async_runtime();
    client.block_on(async {
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
    // When wrk stops, the requests it had in flight are still queued in the server; one
    // more request, answered after them, makes sure the next run starts on an idle server.
    let settle = |path: &str, body: &Value| client.block_on(server.post_json(path, body));
    let mut table = Table::new(
        "e2e",
        "End to end over HTTPS, wrk on loopback",
        &[
            "route",
            "connections",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "of no-op requests/s",
        ],
    );
    let mut floor = [0.0; CONCURRENCY.len()];
    let mut rates = Vec::new();
    for (index, (name, path, json_body)) in routes.iter().enumerate() {
        let url = server.ip_url(path);
        let body = serde_json::to_vec(json_body)?;
        wrk.run(&url, &body, 16, Duration::from_secs(1))?; // warm up
        settle(path, json_body);
        for (c, &concurrency) in CONCURRENCY.iter().enumerate() {
            let load = wrk.run(&url, &body, concurrency, scale.load_duration)?;
            settle(path, json_body);
            if index == 0 {
                floor[c] = load.requests_per_second;
            }
            rates.push(load.requests_per_second);
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
    // The context-aware targets at 16 connections, against the trivial policy.
    let at_16 = |route: usize| rates[route * CONCURRENCY.len() + 1];
    for (route, name) in [
        (3, "get_resource"),
        (4, "component get"),
        (5, "by-namespace list"),
    ] {
        report.at_least(
            format!("{name} policy / trivial policy requests/s, c=16, 10,000 namespaces"),
            at_16(route) / at_16(1),
            0.5,
        );
    }

    // The target's ratio: the two routes in alternation at 16 connections, so drifting
    // load on the machine weighs on both; the median of the pairs.
    let (noop, trivial) = (&routes[0], &routes[1]);
    let (noop_url, trivial_url) = (server.ip_url(noop.1), server.ip_url(trivial.1));
    let (noop_body, trivial_body) = (serde_json::to_vec(noop.2)?, serde_json::to_vec(trivial.2)?);
    let mut pairs = Table::new(
        "e2e_pairs",
        "Trivial legacy policy against the no-op route, alternating, 16 connections",
        &["pair", "no-op requests/s", "trivial requests/s", "ratio"],
    );
    let mut ratios = Vec::new();
    for pair in 1..=TARGET_PAIRS {
        let floor = wrk.run(&noop_url, &noop_body, 16, scale.load_duration)?;
        settle(noop.1, noop.2);
        let policy = wrk.run(&trivial_url, &trivial_body, 16, scale.load_duration)?;
        settle(trivial.1, trivial.2);
        let ratio = policy.requests_per_second / floor.requests_per_second;
        ratios.push(ratio);
        pairs.row(vec![
            text(pair.to_string()),
            num(floor.requests_per_second, 0),
            num(policy.requests_per_second, 0),
            num(ratio, 2),
        ]);
    }
    report.add(pairs);
    report.at_least(
        "trivial legacy / no-op requests/s, c=16 (median of alternating pairs)",
        crate::stats::Stats::of(ratios).p50,
        0.5,
    );
    Ok(())
}
