//! Hot reload of policies.yml (SIGHUP, or the file replaced on disk): the new set serves
//! the next requests, requests in flight finish on the old one, none fails; a bad file
//! leaves the old set serving; kinds newly granted are cached first, unread ones dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use policy_server_e2e::fake_apiserver::{FakeApiServer, INGRESSES, NAMESPACES};
use policy_server_e2e::policies::{INGRESS, NAMESPACE};
use policy_server_e2e::requests::{pod, review};
use policy_server_e2e::{Policies, Policy, Server, eventually, wasm};
use serde_json::{Value, json};

use crate::cluster_context::{ingress, ingress_policy, namespace, service, service_policy};
use crate::{server, start_live};

/// Pods must carry these labels.
fn labels_required(labels: &[&str]) -> Policies {
    Policies::from([(
        "labels",
        Policy::new(&wasm().required_labels).settings(json!({"required_labels": labels})),
    )])
}

/// A pod labelled `team` only: the first set accepts it, the second does not.
fn team_only() -> Value {
    review(pod("web", json!({"team": "a"}), &["nginx:1.27"]))
}

/// Waits until the server answers `team_only` as the set that `strict` says.
async fn wait_for_set(server: &Server, strict: bool) {
    eventually("the reloaded set answers", || async move {
        let answer = server.validate("labels", &team_only()).await;
        (answer["allowed"] != !strict).then(|| answer.to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reloads_under_load_lose_no_request() {
    let lenient = labels_required(&["team"]);
    let strict = labels_required(&["team", "cost-center"]);
    let server = Arc::new(server(lenient.clone()).arg("--workers").arg("2").start());

    // Clients that every set accepts, sending without pause through every reload.
    let both = review(pod(
        "web",
        json!({"team": "a", "cost-center": "42"}),
        &["nginx:1.27"],
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, both, stop) = (server.clone(), both.clone(), stop.clone());
            let (answered, failed) = (answered.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = server.post_json("/validate/labels", &both).await;
                    if status == 200 && body["response"]["allowed"] == true {
                        answered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("failed during a reload: {status} {body}");
                    }
                }
            })
        })
        .collect();

    for round in 0..10 {
        let to_strict = round % 2 == 0;
        let next = if to_strict { &strict } else { &lenient };
        server.rewrite_policies(&next.to_yaml());
        // Half the reloads are asked for; the others are the file change being noticed.
        if round % 4 < 2 {
            server.signal_hangup();
        }
        wait_for_set(&server, to_strict).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        answered.load(Ordering::Relaxed) > 100,
        "too little load to tell: {}",
        answered.load(Ordering::Relaxed)
    );
    let reloads = server
        .log()
        .lines()
        .filter(|line| line.contains("policies reloaded"))
        .count();
    assert!(reloads >= 10, "{reloads} reloads:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_file_leaves_the_old_set_serving() {
    let strict = labels_required(&["team", "cost-center"]);
    let server = server(strict).start();

    // Not YAML; then a module that is not there; then settings the policy refuses.
    let missing_module = Policies::from([(
        "labels",
        Policy::new(std::path::Path::new("/nonexistent/policy.wasm")),
    )]);
    let bad_settings = labels_required(&[]).to_yaml().replace("[]", "42");
    for (bad, said) in [
        ("labels: [unclosed".to_owned(), "invalid policies file"),
        (missing_module.to_yaml(), "/nonexistent/policy.wasm"),
        (bad_settings, "settings"),
    ] {
        server.rewrite_policies(&bad);
        server.signal_hangup();
        let server = &server;
        eventually("the reload fails, saying why", || async move {
            let failed = server.log().lines().any(|l| {
                l.contains("\"level\":\"ERROR\"") && l.contains("reload failed") && l.contains(said)
            });
            (!failed).then(|| server.log())
        })
        .await;
        // Still the strict set.
        let answer = server.validate("labels", &team_only()).await;
        assert_eq!(answer["allowed"], false, "{answer}");
    }

    server.rewrite_policies(&labels_required(&["team"]).to_yaml());
    server.signal_hangup();
    wait_for_set(&server, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_reload_is_tried_again_until_it_loads() {
    let server = server(labels_required(&["team", "cost-center"])).start();
    // The file names a module that is not there yet (as when an image or a volume lags
    // behind its ConfigMap): the reload fails, and nobody sends another SIGHUP.
    let dir = tempfile::tempdir().unwrap();
    let later = dir.path().join("later.wasm");
    let lenient = Policies::from([(
        "labels",
        Policy::new(&later).settings(json!({"required_labels": ["team"]})),
    )]);
    server.rewrite_policies(&lenient.to_yaml());
    server.signal_hangup();
    server
        .wait_for_log(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reload failed"))
        })
        .await;
    std::fs::copy(&wasm().required_labels, &later).unwrap();
    wait_for_set(&server, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_caches_newly_granted_kinds_and_drops_unread_ones() {
    let fake = FakeApiServer::start().await;
    fake.apply(
        NAMESPACES,
        namespace("default", json!({"services-allowed": "true"})),
    );
    fake.apply(NAMESPACES, namespace("team-a", json!({})));
    fake.apply(INGRESSES, ingress("shop", "default", "shop.example.com"));
    // At start no policy reads the cluster: nothing is cached, nothing watched.
    let server = start_live(&fake, labels_required(&["team"]), &[]);
    server.wait_ready(Duration::from_secs(20)).await;
    assert!(!fake.requests().iter().any(|r| r.contains("namespaces")));

    // Granted namespaces: they are listed before the policy that reads them serves.
    server
        .rewrite_policies(&Policies::from([("svc", service_policy().reads(NAMESPACE))]).to_yaml());
    server.signal_hangup();
    let server = &server;
    eventually("the namespace policy serves", || async move {
        let (status, body) = server
            .post_json("/validate/svc", &review(service("api", "team-a")))
            .await;
        (status != 200).then(|| body.to_string())
    })
    .await;
    let allowed = server
        .validate("svc", &review(service("api", "default")))
        .await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let rejected = server
        .validate("svc", &review(service("api", "team-a")))
        .await;
    assert_eq!(rejected["allowed"], false, "{rejected}");

    // Ingresses instead: namespaces are no longer watched once the old set is done.
    server
        .rewrite_policies(&Policies::from([("hosts", ingress_policy().reads(INGRESS))]).to_yaml());
    server.signal_hangup();
    eventually("the ingress policy serves", || async move {
        let (status, body) = server
            .post_json(
                "/validate/hosts",
                &review(ingress("shop-v2", "team-a", "shop.example.com")),
            )
            .await;
        (status != 200 || body["response"]["allowed"] != false).then(|| body.to_string())
    })
    .await;
    server
        .wait_for_log(|event| {
            event["message"] == "no policy reads this kind any more: no longer cached"
                && event["kind"] == "v1/Namespace"
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kind_the_cluster_does_not_serve_fails_the_reload() {
    let fake = FakeApiServer::start().await;
    let server = start_live(&fake, labels_required(&["team", "cost-center"]), &[]);
    server.wait_ready(Duration::from_secs(20)).await;
    let unknown = Policy::new(&wasm().required_labels)
        .settings(json!({"required_labels": ["team"]}))
        .reads(("example.com/v1", "Gadget"));
    server.rewrite_policies(&Policies::from([("labels", unknown)]).to_yaml());
    server.signal_hangup();
    let event = server
        .wait_for_log(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reload failed"))
        })
        .await;
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("example.com/v1/Gadget"),
        "{event}"
    );
    // The old set still serves.
    wait_for_set(&server, true).await;
}
