//! The cache filled from a snapshot file: answers, grants, and grants spelled in
//! another case.

use policy_server_e2e::policies::{INGRESS, NAMESPACE};
use policy_server_e2e::requests::review;
use serde_json::Value;

use super::{echo_policy, ingress, ingress_policy, service, service_policy};
use crate::{example_snapshot, message, server};

#[tokio::test(flavor = "multi_thread")]
async fn policies_read_the_snapshot_file() {
    let snapshot = example_snapshot();
    let server = server([
        ("svc", service_policy().reads(NAMESPACE)),
        ("hosts", ingress_policy().reads(INGRESS)),
    ])
    .arg("--cluster-snapshot")
    .arg(snapshot)
    .start();
    let (status, _) = server.get("/readiness").await;
    assert_eq!(status, 200);

    let allowed = server
        .validate("svc", &review(service("api", "default")))
        .await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let rejected = server
        .validate("svc", &review(service("api", "team-a")))
        .await;
    assert_eq!(
        message(&rejected),
        "Services may only be created in namespaces labelled services-allowed; team-a is not"
    );

    let taken = server
        .validate(
            "hosts",
            &review(ingress("shop-v2", "team-a", "shop.example.com")),
        )
        .await;
    assert_eq!(taken["allowed"], false);
    assert_eq!(taken["status"]["code"], 409);
    assert_eq!(
        message(&taken),
        "host shop.example.com is already served by ingress default/web"
    );
    // Updating the Ingress that owns the host is fine.
    let own = server
        .validate(
            "hosts",
            &review(ingress("web", "default", "shop.example.com")),
        )
        .await;
    assert_eq!(own["allowed"], true, "{own}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_without_the_grant_is_denied_by_name() {
    let snapshot = example_snapshot();
    let server = server([
        ("granted", service_policy().reads(NAMESPACE)),
        ("ungranted", service_policy()),
    ])
    .arg("--cluster-snapshot")
    .arg(snapshot)
    .start();
    let response = server
        .validate("ungranted", &review(service("api", "default")))
        .await;
    assert_eq!(response["allowed"], false);
    assert!(
        message(&response).ends_with(
            "policy 'ungranted' is not allowed to read v1/Namespace: grant it in the policy's contextAwareResources"
        ),
        "{response}"
    );
    let response = server
        .validate("granted", &review(service("api", "default")))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_tolerate_case_differences() {
    let snapshot = example_snapshot();
    let grant = ("V1", "namespace");
    let server = server([
        ("svc", service_policy().reads(grant)),
        ("echo", echo_policy("namespaces").reads(grant)),
    ])
    .arg("--cluster-snapshot")
    .arg(snapshot)
    .start();
    let response = server
        .validate("svc", &review(service("api", "default")))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    // The List is still named as the API server names it.
    let echoed = server.validate("echo", &review(service("a", "b"))).await;
    let list: Value = serde_json::from_str(&message(&echoed)).unwrap();
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["kind"], "NamespaceList");
}
