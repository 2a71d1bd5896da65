//! Connections and bodies: nothing a client holds open is held forever, and what bodies
//! in flight may hold is bounded and given back.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::raw::{closed_within, connect, exchange, post_head, read_response};
use crate::{deny_latest_tag, pinned_pod, server};

#[tokio::test]
async fn connections_that_send_nothing_or_stall_in_their_headers_are_closed() {
    for tls in [false, true] {
        let mut builder = server([("latest", deny_latest_tag())])
            .arg("--header-timeout-seconds")
            .arg("1");
        if !tls {
            builder = builder.plain_http();
        }
        let server = builder.start();
        let mut silent = connect(server.address()).await;
        // Without TLS, half a request head; with TLS, not even a handshake.
        let mut half_head = connect(server.address()).await;
        half_head
            .write_all(b"POST /validate/latest HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        for (what, stream) in [("silent", &mut silent), ("half a head", &mut half_head)] {
            let closed = closed_within(stream, Duration::from_secs(10)).await;
            assert!(
                closed.is_some(),
                "a {what} connection (tls: {tls}) was still open after 10 s"
            );
        }
    }
}

#[tokio::test]
async fn a_kept_alive_connection_may_idle_between_requests_past_the_header_timeout() {
    let server = server([("latest", deny_latest_tag())])
        .plain_http()
        .arg("--header-timeout-seconds")
        .arg("1")
        .start();
    let body = serde_json::to_vec(&pinned_pod()).unwrap();
    let mut stream = connect(server.address()).await;
    let (status, answer) = exchange(&mut stream, "/validate/latest", &body).await;
    assert_eq!(status, 200, "{answer}");
    // Longer than the header timeout, and than hyper's own default header timeout (30 s),
    // shorter than the idle timeout: clients reuse such connections, and one closed under
    // them loses the request they send.
    tokio::time::sleep(Duration::from_secs(32)).await;
    let (status, answer) = exchange(&mut stream, "/validate/latest", &body).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_later_ones_served() {
    let server = server([("latest", deny_latest_tag())])
        .plain_http()
        .arg("--max-connections")
        .arg("8")
        .arg("--header-timeout-seconds")
        .arg("2")
        .start();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect(server.address()).await);
    }
    // Give the server a moment to accept all eight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect(server.address()).await;
    let closed = closed_within(&mut extra, Duration::from_secs(1)).await;
    assert!(
        closed.is_some(),
        "a connection beyond the cap was kept waiting"
    );
    // The silent ones are closed at their header deadline, freeing their slots.
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(10))
                .await
                .is_some()
        );
    }
    let answer = server.validate("latest", &pinned_pod()).await;
    assert_eq!(answer["allowed"], true, "{answer}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let server = server([("latest", deny_latest_tag())])
        .plain_http()
        .arg("--body-timeout-seconds")
        .arg("1")
        .start();
    let mut stream = connect(server.address()).await;
    stream
        .write_all(post_head("/validate/latest", 1000).as_bytes())
        .await
        .unwrap();
    stream.write_all(b"{\"apiVersion\":").await.unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .expect("no answer 10 s after the body stalled");
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("did not arrive in time"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_hold_no_more_than_the_budget_and_their_memory_is_given_back() {
    const BUDGET: u64 = 32 << 20;
    const CONNECTIONS: usize = 200;
    const BODY: usize = (3 << 20) - 1;
    let server = server([("latest", deny_latest_tag())])
        .plain_http()
        .arg("--max-body-bytes-in-flight")
        .arg(BUDGET.to_string())
        .start();
    // Warm the paths a request takes, so the idle figure includes them.
    for _ in 0..20 {
        server.validate("latest", &pinned_pod()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.rss_bytes();

    // Each client sends all of a 3 MiB body but its last byte, then waits.
    let address = server.address();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = connect(address).await;
                let head = post_head("/validate/latest", BODY + 1);
                let body = vec![b' '; BODY];
                let sent = async {
                    stream.write_all(head.as_bytes()).await?;
                    stream.write_all(&body).await
                };
                let refused = match tokio::time::timeout(Duration::from_secs(20), sent).await {
                    // Written: the server holds it, or answered 503 and stopped reading.
                    Ok(Ok(())) | Ok(Err(_)) => {
                        let answer = tokio::time::timeout(
                            Duration::from_millis(200),
                            read_response(&mut stream),
                        )
                        .await;
                        matches!(answer, Ok((503, _)))
                    }
                    Err(_) => true,
                };
                (stream, refused)
            })
        })
        .collect();
    let mut peak = idle;
    let mut held = Vec::new();
    let mut refused = 0;
    let mut pending = clients;
    while !pending.is_empty() {
        peak = peak.max(server.rss_bytes());
        let (done, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|c| c.is_finished());
        for client in done {
            let (stream, was_refused) = client.await.unwrap();
            refused += usize::from(was_refused);
            held.push(stream);
        }
        pending = rest;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peak = peak.max(server.rss_bytes());
    let grown = peak.saturating_sub(idle);
    assert!(
        grown < BUDGET + (32 << 20),
        "RSS grew by {} MiB with a body budget of {} MiB",
        grown >> 20,
        BUDGET >> 20
    );
    assert!(
        refused > 0,
        "{CONNECTIONS} bodies of 3 MiB fit a budget of 32 MiB?"
    );

    drop(held);
    let mut after = server.rss_bytes();
    for _ in 0..100 {
        if after <= idle + (16 << 20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = server.rss_bytes();
    }
    assert!(
        after <= idle + (16 << 20),
        "RSS stayed at {} MiB after the clients left (idle: {} MiB, peak: {} MiB)",
        after >> 20,
        idle >> 20,
        peak >> 20
    );
    // And it still serves.
    let answer = server.validate("latest", &pinned_pod()).await;
    assert_eq!(answer["allowed"], true, "{answer}");
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_in_chunks_arrives_whole() {
    let server = server([("latest", deny_latest_tag())]).plain_http().start();
    // Padded past one 64 KiB read segment, so the body is joined from several.
    let mut object = pinned_pod();
    object["request"]["object"]["metadata"]["annotations"] = json!({"pad": "p".repeat(100_000)});
    let body = serde_json::to_vec(&object).unwrap();
    let mut chunked = Vec::new();
    for byte in &body {
        chunked.extend_from_slice(b"1\r\n");
        chunked.push(*byte);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut stream = connect(server.address()).await;
    stream
        .write_all(
            b"POST /validate/latest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    stream.write_all(&chunked).await.unwrap();
    let (status, answer) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert_eq!(answer["response"]["uid"], object["request"]["uid"]);
}
