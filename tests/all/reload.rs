//! Hot reload of policies.yml (SIGHUP, or the file replaced on disk): the new set serves
//! the next requests, requests in flight finish on the old one, none fails; a bad file
//! leaves the old set serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use policy_server_e2e::requests::{pod, review};
use policy_server_e2e::{Policies, Policy, Server, eventually, wasm};
use serde_json::{Value, json};

use crate::server;

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
    let failures = |server: &Server| {
        server
            .log()
            .lines()
            .filter(|line| line.contains("reload failed"))
            .count()
    };

    // Not YAML; then a module that is not there; then settings the policy refuses.
    let missing_module = Policies::from([(
        "labels",
        Policy::new(std::path::Path::new("/nonexistent/policy.wasm")),
    )]);
    let bad_settings = labels_required(&[]).to_yaml().replace("[]", "42");
    for (round, bad) in [
        "labels: [unclosed".to_owned(),
        missing_module.to_yaml(),
        bad_settings,
    ]
    .iter()
    .enumerate()
    {
        server.rewrite_policies(bad);
        server.signal_hangup();
        let server = &server;
        eventually("the reload fails", || async move {
            (failures(server) <= round).then(|| server.log())
        })
        .await;
        let failure = server
            .log()
            .lines()
            .rfind(|l| l.contains("reload failed"))
            .unwrap()
            .to_owned();
        assert!(failure.contains("\"level\":\"ERROR\""), "{failure}");
        // Still the strict set.
        let answer = server.validate("labels", &team_only()).await;
        assert_eq!(answer["allowed"], false, "{answer}");
    }

    server.rewrite_policies(&labels_required(&["team"]).to_yaml());
    server.signal_hangup();
    wait_for_set(&server, false).await;
}
