//! The HTTP surface: malformed and oversized requests, `validate_raw` and `audit`, the
//! probes (on their own port too), the noop route, HTTP/2 over TLS, plain HTTP, and
//! SIGTERM with a request in flight.

use policy_server_e2e::requests::{pod, review};
use serde_json::{Value, json};

use crate::{default_labels, deny_latest_tag, misbehaving, required_labels, server, start};

#[tokio::test]
async fn bad_requests_get_clear_json_errors_and_the_server_keeps_serving() {
    let server = server([("labels", required_labels())])
        .arg("--max-request-body-bytes")
        .arg("100000")
        .start();

    let (status, body) = server
        .post_bytes("/validate/labels", b"{not json".to_vec())
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );

    let (status, body) = server
        .post_json(
            "/validate/labels",
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("no `request`"),
        "{body}"
    );

    // Without a uid the answer could not be matched: refused rather than answered with "".
    let mut no_uid = review(pod("web", json!({"team": "a"}), &["nginx:1.27"]));
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let (status, body) = server.post_json("/validate/labels", &no_uid).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("request.uid is missing"),
        "{body}"
    );

    let oversize = review(pod(
        "big",
        json!({"blob": "x".repeat(200_000)}),
        &["nginx:1.27"],
    ));
    let (status, body) = server.post_json("/validate/labels", &oversize).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("100000 bytes"),
        "{body}"
    );

    let (status, body) = server
        .post_json(
            "/validate/nope",
            &review(pod("web", json!({}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "no policy with id 'nope'");

    let response = server
        .validate(
            "labels",
            &review(pod("web", json!({"team": "a"}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(response["allowed"], true);
}

#[tokio::test]
async fn validate_raw_and_audit_endpoints() {
    let server = start([
        ("latest", deny_latest_tag()),
        ("defaults", default_labels().allowed_to_mutate(true)),
    ]);

    let raw = json!({"request": {"uid": "raw-1", "namespace": "default", "object": pod("web", json!({}), &["nginx"])}});
    let (status, body) = server.post_json("/validate_raw/latest", &raw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["uid"], "raw-1");
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 403);

    // Audit reports the verdict but never mutates.
    let object = review(pod("web", json!({}), &["nginx:1.27"]));
    let (status, body) = server.post_json("/audit/defaults", &object).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none(), "{body}");
}

#[tokio::test]
async fn probes_answer_and_tls_speaks_http2() {
    let server = start([("labels", required_labels())]);
    let (status, _) = server.get("/readiness").await;
    assert_eq!(status, 200);
    let (status, _) = server.get("/livez").await;
    assert_eq!(status, 200);

    let response = server
        .client
        .post(server.url("/validate/labels"))
        .json(&review(pod("web", json!({"team": "a"}), &["nginx:1.27"])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);

    let http1 = policy_server_e2e::http_client()
        .http1_only()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let response = http1.get(server.url("/livez")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_requests_in_flight_finish() {
    let mut server = server([("spin", misbehaving("loop").timeout_seconds(2))])
        .arg("--log-level")
        .arg("info,policy_server=debug")
        .start();
    let request = server
        .client
        .post(server.url("/validate/spin"))
        .json(&review(pod("web", json!({}), &["nginx:1.27"])))
        .send();
    let in_flight = tokio::spawn(request);
    // Wait until the evaluation is running, then ask the server to stop.
    server.wait_for_log(|e| e["message"] == "evaluating").await;
    let status = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "{status:?}");
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["response"]["status"]["code"], 500, "{body}");
}

#[tokio::test]
async fn without_a_certificate_it_serves_plain_http_and_warns() {
    let server = server([("labels", required_labels())]).plain_http().start();
    assert!(server.base_url.starts_with("http://"));
    let response = server
        .validate(
            "labels",
            &review(pod("web", json!({"team": "a"}), &["nginx:1.27"])),
        )
        .await;
    assert_eq!(response["allowed"], true);
    let warning = server
        .wait_for_log(|e| {
            e["level"] == "WARN" && e["message"].as_str().unwrap_or("").contains("plain HTTP")
        })
        .await;
    assert!(warning["message"].as_str().unwrap().contains("--cert-file"));
}

#[tokio::test]
async fn a_separate_probe_port_answers_probes_only() {
    let probe_port = {
        // Reserve a free port, then hand it to the server.
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let server = server([("labels", required_labels())])
        .arg("--readiness-probe-port")
        .arg(probe_port.to_string())
        .start();
    let probes = policy_server_e2e::http_client().build().unwrap();
    let readiness = probes
        .get(format!("http://127.0.0.1:{probe_port}/readiness"))
        .send()
        .await
        .unwrap();
    assert_eq!(readiness.status(), 200);
    let validate = probes
        .post(format!("http://127.0.0.1:{probe_port}/validate/labels"))
        .json(&review(pod("web", json!({"team": "a"}), &["nginx:1.27"])))
        .send()
        .await
        .unwrap();
    assert_eq!(
        validate.status(),
        404,
        "admission requests are not served on the probe port"
    );
    drop(server);
}

#[tokio::test]
async fn the_noop_route_is_off_unless_enabled_and_parses_like_validate() {
    let server = start([("latest", deny_latest_tag())]);
    let object = review(pod("web", json!({}), &["nginx:latest"]));
    let (status, body) = server.post_json("/noop", &object).await;
    assert_eq!(status, 404, "{body}");

    let server = crate::server([("latest", deny_latest_tag())])
        .arg("--enable-noop-route")
        .start();
    // Allowed without running a policy (this pod would be denied by `latest`).
    let (status, body) = server.post_json("/noop", &object).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert_eq!(body["response"]["uid"], object["request"]["uid"]);
    let denied = server.validate("latest", &object).await;
    assert_eq!(denied["allowed"], false, "{denied}");

    let (status, body) = server.post_bytes("/noop", b"{not json".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.get("/noop").await;
    assert_eq!(status, 405, "{body}");
}
