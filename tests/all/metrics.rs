//! `--metrics-port`: what an operator's Prometheus scrapes, read back with a Prometheus
//! text parser.

use std::time::Duration;

use policy_server_e2e::fake_apiserver::{FakeApiServer, NAMESPACES};
use policy_server_e2e::policies::NAMESPACE;
use policy_server_e2e::requests::{pod, review};
use policy_server_e2e::{Server, eventually};
use prometheus_parse::{Scrape, Value as Sample};
use serde_json::json;

use crate::cluster_context::{namespace, service, service_policy};
use crate::{
    default_labels, example_snapshot, misbehaving, pinned_pod, required_labels, server, start_live,
};

/// The server's metrics port, as its log says.
async fn metrics_port(server: &Server) -> u16 {
    let event = server
        .wait_for_log(|event| event["message"] == "serving metrics at /metrics")
        .await;
    let address = event["address"].as_str().unwrap();
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// Scrapes the server's metrics port.
pub(super) async fn scrape(server: &Server) -> Scrape {
    let port = metrics_port(server).await;
    let response = policy_server_e2e::http_client()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap()
}

/// The value of the sample `name` whose labels include `labels`, if exactly one has them.
pub(super) fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:#?}");
    match &found[0].value {
        Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
        Sample::Histogram(buckets) => buckets.last().map_or(0.0, |bucket| bucket.count),
        Sample::Summary(_) => panic!("{name} is a summary"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn evaluations_host_calls_and_the_cache_are_counted() {
    let server = server([
        ("labels", required_labels()),
        ("labels-monitor", required_labels().monitor()),
        ("defaults", default_labels()),
        ("svc", service_policy().reads(NAMESPACE)),
        ("trap", misbehaving("trap")),
        ("spin", misbehaving("loop").timeout_seconds(1)),
    ])
    .arg("--metrics-port")
    .arg("0")
    .arg("--cluster-snapshot")
    .arg(example_snapshot())
    .start();
    let unlabelled = review(pod("web", json!({}), &["nginx:1.27"]));
    for _ in 0..3 {
        server.validate("labels", &pinned_pod()).await;
    }
    server.validate("labels", &unlabelled).await;
    server.validate("labels-monitor", &unlabelled).await;
    server.validate("defaults", &unlabelled).await;
    server
        .validate("svc", &review(service("api", "default")))
        .await;
    server
        .validate("svc", &review(service("api", "team-a")))
        .await;
    server.validate("trap", &pinned_pod()).await;
    server.validate("spin", &pinned_pod()).await;

    let scrape = scrape(&server).await;
    let evaluations = |policy, outcome, mode| {
        value(
            &scrape,
            "policy_server_evaluations_total",
            &[("policy", policy), ("outcome", outcome), ("mode", mode)],
        )
    };
    assert_eq!(evaluations("labels", "accepted", "protect"), 3.0);
    assert_eq!(evaluations("labels", "rejected", "protect"), 1.0);
    // The guest's verdict, though the answer allowed it.
    assert_eq!(evaluations("labels-monitor", "rejected", "monitor"), 1.0);
    assert_eq!(evaluations("defaults", "mutated", "protect"), 1.0);
    assert_eq!(evaluations("svc", "accepted", "protect"), 1.0);
    assert_eq!(evaluations("svc", "rejected", "protect"), 1.0);
    assert_eq!(evaluations("trap", "error", "protect"), 1.0);
    assert_eq!(evaluations("spin", "timeout", "protect"), 1.0);
    assert_eq!(evaluations("spin", "accepted", "protect"), 0.0);

    // Every evaluation is in its policy's latency histogram; the timeout took its second.
    let latencies = |policy| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "policy_server_evaluation_duration_seconds"
                    && s.labels.get("policy") == Some(policy)
            })
            .map(|s| s.value.clone())
    };
    let Some(Sample::Histogram(buckets)) = latencies("labels") else {
        panic!("no histogram for labels: {:?}", latencies("labels"));
    };
    assert_eq!(buckets.last().unwrap().count, 4.0, "{buckets:?}");
    let Some(Sample::Histogram(spin)) = latencies("spin") else {
        panic!("no histogram for spin");
    };
    let under_a_second = spin
        .iter()
        .filter(|bucket| bucket.less_than < 0.9)
        .map(|bucket| bucket.count)
        .fold(0.0, f64::max);
    assert_eq!(under_a_second, 0.0, "{spin:?}");
    assert_eq!(value(&scrape, "policy_server_queue_depth", &[]), 0.0);

    // The service policy asked for namespaces twice, by the legacy call style.
    assert_eq!(
        value(
            &scrape,
            "policy_server_host_calls_total",
            &[
                ("policy", "svc"),
                ("style", "wapc"),
                ("kind", "v1/Namespace"),
                ("outcome", "ok"),
            ],
        ),
        2.0
    );
    assert_eq!(
        value(
            &scrape,
            "policy_server_policy_loads_total",
            &[("outcome", "loaded")]
        ),
        6.0
    );
    assert_eq!(
        value(&scrape, "policy_server_build_info", &[]),
        1.0,
        "build info"
    );

    // The snapshot file's two namespaces, ready.
    let namespaces = [("kind", "v1/Namespace")];
    assert_eq!(
        value(&scrape, "policy_server_cache_objects", &namespaces),
        2.0
    );
    assert!(value(&scrape, "policy_server_cache_bytes", &namespaces) > 100.0);
    assert_eq!(
        value(
            &scrape,
            "policy_server_cache_kind_state",
            &[("kind", "v1/Namespace"), ("state", "ready")]
        ),
        1.0
    );
    let age = value(
        &scrape,
        "policy_server_cache_last_change_age_seconds",
        &namespaces,
    );
    assert!((0.0..60.0).contains(&age), "{age}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watch_of_each_kind_is_visible_through_an_outage_and_a_relist() {
    let mut fake = FakeApiServer::start().await;
    fake.apply(NAMESPACES, namespace("default", json!({})));
    let version = fake.apply(NAMESPACES, namespace("team-a", json!({})));
    let server = start_live(
        &fake,
        [("svc", service_policy().reads(NAMESPACE))],
        &["--metrics-port", "0"],
    );
    server.wait_ready(Duration::from_secs(20)).await;
    let namespaces = [("kind", "v1/Namespace")];
    let state = |scrape: &Scrape, state| {
        value(
            scrape,
            "policy_server_cache_kind_state",
            &[("kind", "v1/Namespace"), ("state", state)],
        )
    };
    let healthy = scrape(&server).await;
    assert_eq!(state(&healthy, "ready"), 1.0);
    assert_eq!(
        value(&healthy, "policy_server_cache_objects", &namespaces),
        2.0
    );
    assert_eq!(
        value(
            &healthy,
            "policy_server_cache_resource_version",
            &namespaces
        ),
        version as f64
    );
    assert_eq!(
        value(&healthy, "policy_server_cache_lists_total", &namespaces),
        1.0
    );
    assert_eq!(
        value(
            &healthy,
            "policy_server_cache_watch_errors_total",
            &namespaces
        ),
        0.0
    );

    // Down, with the history compacted meanwhile: stale, then a re-list once it is back.
    fake.stop();
    let server = &server;
    eventually("the kind is reported stale", || async move {
        let scrape = scrape(server).await;
        (state(&scrape, "stale") != 1.0).then(|| format!("{:?}", scrape.samples))
    })
    .await;
    let newer = fake.apply(NAMESPACES, namespace("team-b", json!({})));
    fake.compact().await;
    fake.restart().await;
    eventually("the kind is re-listed and ready", || async move {
        let scrape = scrape(server).await;
        let seen = (
            state(&scrape, "ready"),
            value(&scrape, "policy_server_cache_lists_total", &namespaces),
            value(&scrape, "policy_server_cache_objects", &namespaces),
            value(&scrape, "policy_server_cache_resource_version", &namespaces),
        );
        // At least one re-list: a busy machine may see the watch fail again while it
        // comes back, and list once more.
        let (ready, lists, objects, version) = seen;
        (ready != 1.0 || lists < 2.0 || objects != 3.0 || version != newer as f64)
            .then(|| format!("{seen:?}"))
    })
    .await;
    let recovered = scrape(server).await;
    assert!(
        value(
            &recovered,
            "policy_server_cache_watch_errors_total",
            &namespaces
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_port_holds_eight_connections_and_recovers() {
    let server = server([("labels", required_labels())])
        .arg("--metrics-port")
        .arg("0")
        .start();
    let port = metrics_port(&server).await;
    let get = || async move {
        policy_server_e2e::http_client()
            .timeout(Duration::from_millis(1500))
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
    };
    assert!(get().await.is_ok());

    // Eight connections that send nothing take every slot: a ninth is not served...
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    assert!(get().await.is_err(), "a ninth connection was served");
    // ...until they go; the webhook is served meanwhile.
    let answer = server.validate("labels", &pinned_pod()).await;
    assert_eq!(answer["allowed"], true);
    drop(idle);
    eventually("scrapes are served again", || async move {
        get().await.err().map(|e| e.to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grafana_dashboard_asks_only_for_metrics_the_server_exports() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            policy_server_e2e::build::repo_root().join("host/deploy/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let server = server([("svc", service_policy().reads(NAMESPACE))])
        .arg("--metrics-port")
        .arg("0")
        .arg("--cluster-snapshot")
        .arg(example_snapshot())
        .start();
    // One evaluation with a host call, so every family has a sample.
    server
        .validate("svc", &review(service("api", "default")))
        .await;
    let exported = scrape(&server).await.docs;
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("policy_server_"))
            {
                let family = ["_bucket", "_total", "_count", "_sum", "_info"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name);
                assert!(
                    exported.contains_key(family),
                    "panel '{}' asks for {name}, which the server does not export: {:?}",
                    panel["title"],
                    exported.keys().collect::<Vec<_>>()
                );
                asked += 1;
            }
        }
    }
    assert!(asked >= 14, "{asked}");
}
