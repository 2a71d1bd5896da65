//! The cache filled by watching a fake API server: changes reach the next evaluation,
//! readiness waits for the first list, `410 Gone` re-lists, an outage keeps the last
//! snapshot, lists come in pages, and evaluations never reach the API server.

use std::time::Duration;

use policy_server_e2e::fake_apiserver::{FakeApiServer, INGRESSES, NAMESPACES, SERVICES};
use policy_server_e2e::policies::{INGRESS, NAMESPACE, SERVICE};
use policy_server_e2e::requests::review;
use policy_server_e2e::{Server, eventually};
use serde_json::{Value, json};

use super::{echo_policy, ingress, namespace, service, service_policy};
use crate::{message, server, start_live};

async fn wait_ready(server: &Server) {
    server.wait_ready(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_on_the_api_server_reach_the_next_evaluations() {
    let fake = FakeApiServer::start().await;
    fake.apply(
        NAMESPACES,
        namespace("default", json!({"services-allowed": "true"})),
    );
    let server = start_live(&fake, [("svc", service_policy().reads(NAMESPACE))], &[]);
    wait_ready(&server).await;

    let check = |namespace: &'static str, expected: &'static str| {
        let server = &server;
        move || async move {
            let response = server
                .validate("svc", &review(service("api", namespace)))
                .await;
            let got = if response["allowed"] == true {
                "allowed".to_owned()
            } else {
                message(&response)
            };
            (got != expected).then_some(got)
        }
    };
    assert_eq!(check("default", "allowed")().await, None);
    assert_eq!(
        check("team-b", "namespace team-b does not exist")().await,
        None
    );

    fake.apply(
        NAMESPACES,
        namespace("team-b", json!({"services-allowed": "yes"})),
    );
    eventually("added namespace is seen", check("team-b", "allowed")).await;

    fake.apply(NAMESPACES, namespace("team-b", json!({"owner": "b"})));
    eventually(
        "modified namespace is seen",
        check(
            "team-b",
            "Services may only be created in namespaces labelled services-allowed; team-b is not",
        ),
    )
    .await;

    fake.delete(NAMESPACES, "", "team-b");
    eventually(
        "deleted namespace is gone",
        check("team-b", "namespace team-b does not exist"),
    )
    .await;

    // The cache listed once and then watched from the list's resourceVersion.
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/api/v1/namespaces") && !r.contains("watch=true")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("resourceVersion=")),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_is_503_until_the_first_list() {
    let mut fake = FakeApiServer::start().await;
    fake.apply(
        NAMESPACES,
        namespace("default", json!({"services-allowed": "true"})),
    );
    fake.stop();
    let server = start_live(&fake, [("svc", service_policy().reads(NAMESPACE))], &[]);
    let (status, body) = server.get("/readiness").await;
    assert_eq!(status, 503, "{body}");
    // Not synced yet: the guest is told the cache is unavailable.
    let response = server
        .validate("svc", &review(service("api", "default")))
        .await;
    assert!(
        message(&response).contains("not available yet"),
        "{response}"
    );

    fake.restart().await;
    wait_ready(&server).await;
    let response = server
        .validate("svc", &review(service("api", "default")))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_410_gone_the_cache_relists_and_is_right() {
    let mut fake = FakeApiServer::start().await;
    fake.apply(
        NAMESPACES,
        namespace("default", json!({"services-allowed": "true"})),
    );
    fake.apply(
        NAMESPACES,
        namespace("old", json!({"services-allowed": "true"})),
    );
    let server = start_live(&fake, [("svc", service_policy().reads(NAMESPACE))], &[]);
    wait_ready(&server).await;
    let lists_before = fake
        .requests()
        .iter()
        .filter(|r| !r.contains("watch=true"))
        .count();

    // While the watch is down, objects change and the history is compacted: resuming from
    // the cache's resourceVersion gets 410 Gone, so only a re-list can make it right.
    fake.stop();
    fake.delete(NAMESPACES, "", "old");
    fake.apply(
        NAMESPACES,
        namespace("new", json!({"services-allowed": "true"})),
    );
    fake.compact().await;

    let server = &server;
    eventually("re-listed state is served", || async move {
        let new = server.validate("svc", &review(service("api", "new"))).await;
        let old = server.validate("svc", &review(service("api", "old"))).await;
        (new["allowed"] != true || message(&old) != "namespace old does not exist")
            .then(|| format!("new: {new}, old: {old}"))
    })
    .await;
    let lists_after = fake
        .requests()
        .iter()
        .filter(|r| !r.contains("watch=true"))
        .count();
    assert!(
        lists_after > lists_before,
        "no re-list after 410: {:?}",
        fake.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn while_the_api_server_is_down_the_last_snapshot_is_served() {
    let mut fake = FakeApiServer::start().await;
    fake.apply(
        NAMESPACES,
        namespace("default", json!({"services-allowed": "true"})),
    );
    let server = start_live(
        &fake,
        [("svc", service_policy().reads(NAMESPACE))],
        &["--log-level", "info,policy_server::cache=debug"],
    );
    wait_ready(&server).await;

    fake.stop();
    // Wait until the reflector has retried at least twice, then check the outage was
    // reported once, not once per retry.
    server
        .wait_for_log(|e| e["message"].as_str().unwrap_or("").contains("watch failed"))
        .await;
    server
        .wait_for_log(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("watch still failing")
        })
        .await;
    let response = server
        .validate("svc", &review(service("api", "default")))
        .await;
    assert_eq!(
        response["allowed"], true,
        "answered from the last snapshot: {response}"
    );
    let (status, _) = server.get("/readiness").await;
    assert_eq!(
        status, 200,
        "an outage after the first sync keeps the server ready"
    );
    let warnings = server
        .log()
        .lines()
        .filter(|l| l.contains("watch failed"))
        .count();
    assert_eq!(warnings, 1, "{}", server.log());

    fake.apply(
        NAMESPACES,
        namespace("later", json!({"services-allowed": "true"})),
    );
    fake.restart().await;
    let server = &server;
    eventually("changes made during the outage are seen", || async move {
        let response = server
            .validate("svc", &review(service("api", "later")))
            .await;
        (response["allowed"] != true).then(|| response.to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_file_and_live_cache_answer_byte_equal_lists() {
    let fake = FakeApiServer::start().await;
    fake.apply(
        NAMESPACES,
        json!({"metadata": {"name": "default", "labels": {"a": "1"},
        "managedFields": [{"manager": "kubectl"}],
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"}}}),
    );
    fake.apply(NAMESPACES, namespace("zürich", json!({"b": "ü"})));
    fake.apply(SERVICES, service("web", "default"));
    fake.apply(INGRESSES, ingress("web", "default", "a.example.com"));

    let live = start_live(
        &fake,
        [("echo", echo_policy("namespaces").reads(NAMESPACE))],
        &[],
    );
    wait_ready(&live).await;

    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot.json");
    std::fs::write(&snapshot, fake.list(NAMESPACES).to_string()).unwrap();
    let from_file = server([("echo", echo_policy("namespaces").reads(NAMESPACE))])
        .arg("--cluster-snapshot")
        .arg(snapshot.display().to_string())
        .start();

    let request = review(service("api", "default"));
    let live_list = message(&live.validate("echo", &request).await);
    let file_list = message(&from_file.validate("echo", &request).await);
    assert_eq!(live_list, file_list);

    let list: Value = serde_json::from_str(&live_list).unwrap();
    assert_eq!(list["kind"], "NamespaceList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["metadata"]["resourceVersion"], "102");
    assert_eq!(list["items"][0]["kind"], "Namespace");
    assert_eq!(list["items"][0]["apiVersion"], "v1");
    assert!(
        list["items"][0]["metadata"].get("managedFields").is_none(),
        "{list}"
    );
    assert_eq!(
        list["items"][0]["metadata"]["annotations"],
        json!({"keep": "me"})
    );
    assert_eq!(list["items"][1]["metadata"]["name"], "zürich");
}

#[tokio::test(flavor = "multi_thread")]
async fn services_and_ingresses_are_served_from_the_cache_without_asking_the_api_server() {
    let fake = FakeApiServer::start().await;
    fake.apply(SERVICES, service("web", "default"));
    fake.apply(SERVICES, service("db", "data"));
    fake.apply(INGRESSES, ingress("web", "default", "a.example.com"));
    let policies = [
        ("services", echo_policy("services").reads(SERVICE)),
        ("ingresses", echo_policy("ingresses").reads(INGRESS)),
    ];
    let server = start_live(&fake, policies, &[]);
    wait_ready(&server).await;

    let requests_before = fake.requests().len();
    for _ in 0..5 {
        let services: Value = serde_json::from_str(&message(
            &server
                .validate("services", &review(service("x", "default")))
                .await,
        ))
        .unwrap();
        assert_eq!(services["kind"], "ServiceList");
        let names: Vec<&str> = services["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["db", "web"], "sorted by namespace, then name");
        assert_eq!(services["items"][0]["kind"], "Service");

        let ingresses: Value = serde_json::from_str(&message(
            &server
                .validate("ingresses", &review(service("x", "default")))
                .await,
        ))
        .unwrap();
        assert_eq!(ingresses["kind"], "IngressList");
        assert_eq!(ingresses["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(
            ingresses["items"][0]["spec"]["rules"][0]["host"],
            "a.example.com"
        );
    }
    assert_eq!(
        fake.requests().len(),
        requests_before,
        "evaluations must not reach the API server: {:?}",
        &fake.requests()[requests_before..]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_collections_are_listed_in_pages_and_arrive_whole() {
    let fake = FakeApiServer::start().await;
    for i in 0..1_203 {
        fake.apply(NAMESPACES, namespace(&format!("team-{i:04}"), json!({})));
    }
    let server = start_live(
        &fake,
        [("echo", echo_policy("namespaces").reads(NAMESPACE))],
        &[],
    );
    wait_ready(&server).await;

    let list: Value = serde_json::from_str(&message(
        &server
            .validate("echo", &review(service("api", "team-0000")))
            .await,
    ))
    .unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..1_203).map(|i| format!("team-{i:04}")).collect();
    assert_eq!(names, expected);
    assert_eq!(list["metadata"]["resourceVersion"], "1303");

    // kube-rs asked for pages and followed the continue tokens to the end.
    let lists: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.contains("/api/v1/namespaces?") && !r.contains("watch=true"))
        .collect();
    assert!(lists.iter().all(|r| r.contains("limit=500")), "{lists:?}");
    assert_eq!(
        lists.iter().filter(|r| r.contains("continue=")).count(),
        2,
        "{lists:?}"
    );
}
