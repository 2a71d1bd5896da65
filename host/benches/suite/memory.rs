//! Memory: the server's resident set with the cluster cache filled from the fake API
//! server (10,000 namespaces, 100,000 services, 5,000 ingresses) beside the JSON size of
//! those objects; then after a minute at rest, after evaluations that fill a policy's
//! memory limit, and over a million requests: it must not grow in any.

use std::time::Duration;

use policy_server_e2e::fake_apiserver::{FakeApiServer, INGRESSES, NAMESPACES, SERVICES};
use policy_server_e2e::requests::{pod, review};
use policy_server_e2e::{Server, ServerBuilder};
use serde_json::json;

use crate::cluster::{ingress, namespace, namespace_name, service};
use crate::load::{Resident, Wrk, resident};
use crate::report::{Report, Table, num, text};
use crate::{Scale, async_runtime, policies_yml, server_binary};

const MIB: f64 = (1 << 20) as f64;
const SOAK_CHUNK: Duration = Duration::from_secs(20);
const STARTS: usize = 5;
const AT_REST: Duration = Duration::from_secs(60);
const GRABS: usize = 20;

pub fn run(report: &mut Report, scale: &Scale) -> anyhow::Result<()> {
    let wasm = policy_server_e2e::wasm();
    let yml = policies_yml(&[
        // The trivial policy is also granted services, so all three kinds are cached.
        (
            "trivial",
            json!({"module": wasm.deny_latest_tag, "settings": {},
            "contextAwareResources": [{"apiVersion": "v1", "kind": "Service"}]}),
        ),
        (
            "namespaces",
            json!({"module": wasm.service_namespace_label,
            "contextAwareResources": [{"apiVersion": "v1", "kind": "Namespace"}],
            "settings": {"namespace_label": "services-allowed"}}),
        ),
        (
            "ingresses",
            json!({"module": wasm.unique_ingress_host,
            "contextAwareResources": [{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress"}]}),
        ),
        // Fills its memory limit on every evaluation, until it traps.
        (
            "grabs",
            json!({"module": wasm.misbehaving, "settings": {"behaviour": "grab_memory"}}),
        ),
    ]);
    let runtime = async_runtime();
    let dir = tempfile::tempdir()?;
    let start = |api: &FakeApiServer, name: &str| -> anyhow::Result<Server> {
        let kubeconfig = dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&kubeconfig, api.kubeconfig())?;
        let server = ServerBuilder::new(server_binary(), yml.clone())
            .arg("--kubeconfig")
            .arg(kubeconfig.display().to_string())
            .start();
        runtime.block_on(async {
            server.wait_ready(Duration::from_secs(120)).await;
            // Optimized code is compiled in the background after readiness.
            server
                .wait_for_log_within(Duration::from_secs(300), |event| {
                    event["message"] == "upgrades done"
                })
                .await;
        });
        // Let start-up work (first lists, their parsing) settle before reading the RSS.
        std::thread::sleep(Duration::from_secs(2));
        Ok(server)
    };

    // Each side is the median of a few starts: which pages a run touches varies.
    let median_of_starts =
        |api: &FakeApiServer, name: &str| -> anyhow::Result<(Resident, Server)> {
            let mut runs = Vec::new();
            for run in 0..STARTS {
                let server = start(api, &format!("{name}-{run}"))?;
                runs.push((resident(server.pid())?, server));
            }
            runs.sort_by_key(|(memory, _)| memory.anonymous);
            Ok(runs.swap_remove(STARTS / 2))
        };
    let empty_api = runtime.block_on(FakeApiServer::start());
    let (empty, empty_server) = median_of_starts(&empty_api, "empty")?;
    drop(empty_server);

    let api = runtime.block_on(FakeApiServer::start());
    for i in 0..10_000 {
        api.apply(NAMESPACES, namespace(i));
    }
    // 10 per namespace.
    for i in 0..100_000 {
        let mut object = service(i);
        object["metadata"]["namespace"] = json!(namespace_name(i / 10));
        api.apply(SERVICES, object);
    }
    for i in 0..5_000 {
        api.apply(INGRESSES, ingress(i));
    }
    let json_bytes: usize = [NAMESPACES, SERVICES, INGRESSES]
        .into_iter()
        .flat_map(|collection| {
            api.list(collection)["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|object| serde_json::to_vec(&object).map_or(0, |bytes| bytes.len()))
        .sum();
    let (loaded, server) = median_of_starts(&api, "loaded")?;
    // At rest, before any request: nothing may grow (watch streams idle, caches settled).
    std::thread::sleep(AT_REST);
    let rested = resident(server.pid())?;
    // The cache really holds them: the last namespace, with its label, is known.
    let service = review(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "api", "namespace": namespace_name(9_999)}}));
    let answer = runtime.block_on(server.validate("namespaces", &service));
    anyhow::ensure!(
        answer["allowed"] == true,
        "the loaded cache does not know team-09999: {answer}"
    );
    let cache = loaded.anonymous.saturating_sub(empty.anonymous) as f64;
    let ratio = cache / json_bytes as f64;
    // The cache's own account of what it holds, as it logs it after each whole list.
    let held: u64 = server
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == "listed; cached")
        .map(|event| {
            (
                event["kind"].to_string(),
                event["bytes"].as_u64().unwrap_or(0),
            )
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .values()
        .sum();
    anyhow::ensure!(
        held > 0,
        "the server logged no cached lists: {}",
        server.log()
    );

    let mut table = Table::new(
        "memory",
        format!("Memory with the cluster cache filled (median of {STARTS} starts each)"),
        &["measure", "MiB (RSS for a server)", "anonymous MiB"],
    );
    let mib = |bytes: u64| num(bytes as f64 / MIB, 1);
    table.row(vec![
        text("JSON of the 115,000 cached objects"),
        num(json_bytes as f64 / MIB, 1),
        text(""),
    ]);
    table.row(vec![
        text("empty cluster"),
        mib(empty.total),
        mib(empty.anonymous),
    ]);
    table.row(vec![
        text("10,000 ns + 100,000 svc + 5,000 ingresses"),
        mib(loaded.total),
        mib(loaded.anonymous),
    ]);
    table.row(vec![
        text("cache (difference)"),
        num((loaded.total as f64 - empty.total as f64) / MIB, 1),
        num(cache / MIB, 1),
    ]);
    table.row(vec![text("cache / JSON"), text(""), num(ratio, 2)]);
    table.row(vec![
        text("held by the cache, as it logs it (Lists + keys + index)"),
        num(held as f64 / MIB, 1),
        text(""),
    ]);
    table.row(vec![
        text("held / JSON"),
        num(held as f64 / json_bytes as f64, 2),
        text(""),
    ]);
    table.row(vec![
        text(format!("the same, after {} s at rest", AT_REST.as_secs())),
        mib(rested.total),
        mib(rested.anonymous),
    ]);
    // What the instance pool keeps of memory a policy touched is bounded per slot (the
    // cache check above used one slot, the grabs another).
    let grab_review = review(pod("web", json!({"team": "a"}), &["nginx:1.27"]));
    for _ in 0..GRABS {
        let answer = runtime.block_on(server.validate("grabs", &grab_review));
        anyhow::ensure!(
            answer["allowed"] == false,
            "grab_memory was allowed: {answer}"
        );
    }
    let grabbed = resident(server.pid())?;
    table.row(vec![
        text(format!(
            "the same, after the cache check and {GRABS} evaluations that each fill the memory limit"
        )),
        mib(grabbed.total),
        mib(grabbed.anonymous),
    ]);
    report.add(table);
    report.at_most(
        "RSS growth over a minute at rest, live cluster of 115,000 objects, MiB",
        (rested.total as f64 - loaded.total as f64) / MIB,
        1.0,
    );
    report.at_most(
        format!(
            "RSS growth after the cache check and {GRABS} evaluations that each fill the memory limit, MiB"
        ),
        (grabbed.total as f64 - rested.total as f64) / MIB,
        10.0,
    );
    // The larger of the two: the resident difference is noisy by a few MiB either way.
    report.at_most(
        "cache memory / JSON of the cached objects (larger of resident and held)",
        ratio.max(held as f64 / json_bytes as f64),
        1.5,
    );

    // The soak: the trivial policy at 16 connections until a million requests.
    let wrk = Wrk::new()?;
    let url = server.ip_url("/validate/trivial");
    let body = serde_json::to_vec(&review(pod("web", json!({"team": "a"}), &["nginx:1.27"])))?;
    let mut soak = Table::new(
        "soak",
        "Resident set over the soak (trivial legacy policy, 16 connections)",
        &["requests", "RSS MiB"],
    );
    // Other starts ran since `loaded` was read: read it again right before the load.
    let before_load = resident(server.pid())?.total;
    soak.row(vec![text("0"), num(before_load as f64 / MIB, 1)]);
    let mut served = 0u64;
    let mut warm_rss = None;
    while served < scale.soak_requests {
        let chunk = if scale.soak_requests < 100_000 {
            scale.load_duration
        } else {
            SOAK_CHUNK
        };
        served += wrk.run(&url, &body, 16, chunk)?.requests;
        let rss = resident(server.pid())?.total;
        // Growth counts from the end of the first chunk: pools and buffers are warm then.
        warm_rss.get_or_insert(rss);
        soak.row(vec![text(served.to_string()), num(rss as f64 / MIB, 1)]);
    }
    let end_rss = resident(server.pid())?.total;
    report.add(soak);
    let growth = end_rss as f64 - warm_rss.unwrap_or(end_rss) as f64;
    report.at_most(
        format!("RSS growth over {served} requests after the first chunk, MiB"),
        growth / MIB,
        1.0,
    );
    report.at_most(
        format!("RSS after {served} requests - RSS right before them, MiB"),
        (end_rss as f64 - before_load as f64) / MIB,
        10.0,
    );
    drop(api);
    Ok(())
}
