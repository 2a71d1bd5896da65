//! SIGTERM and certificate rotation: nothing a client sent is lost, and the pod is gone
//! within its grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::raw::{connect, post_head};
use crate::{deny_latest_tag, pinned_pod, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_sent_around_sigterm_is_answered() {
    for run in 0..3 {
        let mut server = server([("latest", deny_latest_tag())])
            .plain_http()
            .arg("--shutdown-drain-seconds")
            .arg("1")
            .arg("--shutdown-grace-seconds")
            .arg("5")
            .start();
        let server_url = server.url("/validate/latest");
        let object = Arc::new(pinned_pod());
        let (answered, lost) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        // Sixteen kept-alive connections, each sending its next request as soon as the
        // last is answered. Like the API server, a client moves elsewhere once an answer
        // says `Connection: close` (and would for a new connection: endpoints changed).
        let clients: Vec<_> = (0..16)
            .map(|_| {
                let (url, object) = (server_url.clone(), object.clone());
                let (answered, lost) = (answered.clone(), lost.clone());
                tokio::spawn(async move {
                    let client = policy_server_e2e::http_client().build().unwrap();
                    let until = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < until {
                        match client.post(&url).json(&*object).send().await {
                            Ok(response) => {
                                assert_eq!(response.status(), 200);
                                answered.fetch_add(1, Ordering::Relaxed);
                                if response
                                    .headers()
                                    .get("connection")
                                    .is_some_and(|v| v == "close")
                                {
                                    return;
                                }
                            }
                            Err(err) => {
                                lost.fetch_add(1, Ordering::Relaxed);
                                eprintln!("lost: {err:?}");
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let signalled = Instant::now();
        server.signal_terminate();
        for client in clients {
            client.await.unwrap();
        }
        let status = server.wait();
        let stopped = signalled.elapsed();
        assert!(status.success(), "run {run}: {status}");
        assert_eq!(
            lost.load(Ordering::Relaxed),
            0,
            "run {run}: requests lost around SIGTERM ({} answered)",
            answered.load(Ordering::Relaxed)
        );
        assert!(
            stopped < Duration::from_secs(5),
            "run {run}: stopping took {stopped:?}"
        );
    }
}

#[tokio::test]
async fn while_draining_it_is_not_ready_but_serves_and_a_slow_body_cannot_delay_the_exit() {
    let mut server = server([("latest", deny_latest_tag())])
        .plain_http()
        .arg("--body-timeout-seconds")
        .arg("30")
        .arg("--shutdown-drain-seconds")
        .arg("2")
        .arg("--shutdown-grace-seconds")
        .arg("4")
        .start();
    let mut slow_body = connect(server.address()).await;
    slow_body
        .write_all(post_head("/validate/latest", 1000).as_bytes())
        .await
        .unwrap();
    slow_body.write_all(b"{").await.unwrap();

    let signalled = Instant::now();
    server.signal_terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = server.get("/readiness").await;
    assert_eq!(status, 503, "ready while shutting down");
    let answer = server.validate("latest", &pinned_pod()).await;
    assert_eq!(answer["allowed"], true, "{answer}");

    let status = server.wait();
    let stopped = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        stopped < Duration::from_secs(6),
        "a slow body stretched shutdown to {stopped:?} (grace period: 4 s)"
    );
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections_and_open_ones_keep_going() {
    let server = server([("latest", deny_latest_tag())]).start();
    let object = pinned_pod();
    // An HTTP/2 connection opened before the rotation.
    let answer = server.validate("latest", &object).await;
    assert_eq!(answer["allowed"], true);

    let served = server.certs().unwrap();
    let rotated_dir = tempfile::tempdir().unwrap();
    let rotated = policy_server_e2e::server::TestCerts::generate(rotated_dir.path());
    // Renamed into place, as a Secret volume swaps its files.
    for (new, old) in [
        (&rotated.key_file, &served.key_file),
        (&rotated.cert_file, &served.cert_file),
    ] {
        let staged = old.with_extension("new");
        std::fs::copy(new, &staged).unwrap();
        std::fs::rename(&staged, old).unwrap();
    }

    let trusting_new_ca = policy_server_e2e::http_client()
        .tls_certs_only([reqwest::Certificate::from_pem(rotated.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    policy_server_e2e::eventually("the new certificate is served", || async {
        match trusting_new_ca.get(server.url("/readiness")).send().await {
            Ok(response) if response.status() == 200 => None,
            Ok(response) => Some(format!("status {}", response.status())),
            Err(err) => Some(format!("{err:?}")),
        }
    })
    .await;
    // The connection made with the old certificate was not dropped.
    let answer = server.validate("latest", &object).await;
    assert_eq!(answer["allowed"], true);
}
