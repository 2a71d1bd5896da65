//! End to end: Kubewarden's `kubewarden/kubernetes/*` host calls (list by namespace, list
//! all, get, can_i) and their typed twins in `cluster-context@0.2.0`, answered from the
//! indexed cache: real SDK 0.17 policies and their component twins, byte-identical
//! answers in both call styles, every denial, any kind (a custom resource included),
//! discovery at start-up, and `can_i` against the API server.

use policy_server_e2e::fake_apiserver::{FakeApiServer, NAMESPACES, SERVICES, WIDGETS};
use policy_server_e2e::requests::review;
use policy_server_e2e::{Server, ServerBuilder, eventually, wasm};
use serde_json::{Value, json};

fn builder(policies_yml: String) -> ServerBuilder {
    ServerBuilder::new(env!("CARGO_BIN_EXE_policy-server"), policies_yml)
}

/// A policy entry: `module`, the kinds it may read, its settings (as JSON).
fn policy(id: &str, module: &std::path::Path, grants: &[(&str, &str)], settings: Value) -> String {
    let grants: String = grants
        .iter()
        .map(|(api_version, kind)| {
            format!("    - {{apiVersion: \"{api_version}\", kind: \"{kind}\"}}\n")
        })
        .collect();
    let grants = if grants.is_empty() {
        String::new()
    } else {
        format!("  contextAwareResources:\n{grants}")
    };
    format!(
        "{id}:\n  module: {}\n{grants}  settings: {settings}\n",
        module.display()
    )
}

const NAMESPACE: (&str, &str) = ("v1", "Namespace");
const SERVICE: (&str, &str) = ("v1", "Service");
const WIDGET: (&str, &str) = ("example.com/v1", "Widget");

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn service(namespace: &str, name: &str, selector: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
           "spec": {"selector": selector, "ports": [{"port": 80}]}})
}

/// A review of a cluster-scoped object carries no namespace at all.
fn cluster_review(object: Value) -> Value {
    let mut review = review(object);
    review["request"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    review
}

/// A cluster of three tenants' namespaces and a few Services, as a snapshot file.
fn snapshot(dir: &tempfile::TempDir) -> String {
    let objects = [
        namespace(
            "shop",
            json!({"services-allowed": "true", "tenant": "blue"}),
        ),
        namespace("shop-dev", json!({"tenant": "blue"})),
        namespace("team-a", json!({"tenant": "green"})),
        service("shop", "web", json!({"app": "web"})),
        service("shop", "db", json!({"app": "db"})),
        service("team-a", "web", json!({"app": "web"})),
    ];
    let path = dir.path().join("snapshot.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(&path, list.to_string()).unwrap();
    path.display().to_string()
}

fn start_on_snapshot(yml: String) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = builder(yml)
        .arg("--cluster-snapshot")
        .arg(snapshot(&dir))
        .start();
    (server, dir)
}

fn verdict(response: &Value) -> (bool, Value, String) {
    (
        response["allowed"].as_bool().unwrap_or_default(),
        response["status"]["code"].clone(),
        response["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_policies_and_their_component_twins_give_the_same_verdicts() {
    let w = wasm();
    let limit = json!({"max_namespaces": 2});
    let label = json!({"namespace_label": "services-allowed"});
    let yml = [
        policy(
            "selector",
            &w.unique_service_selector,
            &[SERVICE],
            json!({}),
        ),
        policy(
            "selector-c",
            &w.unique_service_selector_component,
            &[SERVICE],
            json!({}),
        ),
        policy("label", &w.namespace_label, &[NAMESPACE], label.clone()),
        policy(
            "label-c",
            &w.service_namespace_label_component,
            &[NAMESPACE],
            label.clone(),
        ),
        policy(
            "label-seed",
            &w.service_namespace_label,
            &[NAMESPACE],
            label,
        ),
        policy(
            "limit",
            &w.tenant_namespace_limit,
            &[NAMESPACE],
            limit.clone(),
        ),
        policy(
            "limit-c",
            &w.tenant_namespace_limit_component,
            &[NAMESPACE],
            limit,
        ),
    ]
    .concat();
    let (server, _dir) = start_on_snapshot(yml);
    let cases = [
        // (policies, request, allowed, message)
        (
            &["selector", "selector-c"][..],
            review(service("shop", "api", json!({"app": "api"}))),
            true,
            "",
        ),
        (
            &["selector", "selector-c"],
            review(service("shop", "web2", json!({"app": "web"}))),
            false,
            "service shop/web already selects the same pods",
        ),
        // Another namespace's Service with the same selector does not count; nor does the
        // Service itself, when it is updated.
        (
            &["selector", "selector-c"],
            review(service("team-b", "web", json!({"app": "web"}))),
            true,
            "",
        ),
        (
            &["selector", "selector-c"],
            review(service("shop", "web", json!({"app": "web"}))),
            true,
            "",
        ),
        (
            &["label", "label-c", "label-seed"],
            review(service("shop", "api", json!({}))),
            true,
            "",
        ),
        (
            &["label", "label-c", "label-seed"],
            review(service("team-a", "api", json!({}))),
            false,
            "Services may only be created in namespaces labelled services-allowed; team-a is not",
        ),
        (
            &["label", "label-c", "label-seed"],
            review(service("nowhere", "api", json!({}))),
            false,
            "namespace nowhere does not exist",
        ),
        (
            &["limit", "limit-c"],
            cluster_review(namespace("shop-qa", json!({"tenant": "blue"}))),
            false,
            "tenant blue already has 2 namespaces (at most 2)",
        ),
        (
            &["limit", "limit-c"],
            cluster_review(namespace("team-b", json!({"tenant": "green"}))),
            true,
            "",
        ),
        // Updating a namespace does not count it twice.
        (
            &["limit", "limit-c"],
            cluster_review(namespace("shop", json!({"tenant": "blue"}))),
            true,
            "",
        ),
    ];
    for (policies, request, allowed, message) in cases {
        let mut verdicts = Vec::new();
        for id in policies {
            let (was_allowed, code, said) = verdict(&server.validate(id, &request).await);
            assert_eq!(
                (was_allowed, said.as_str()),
                (allowed, message),
                "{id}: {request}"
            );
            verdicts.push(code);
        }
        assert!(
            verdicts.windows(2).all(|pair| pair[0] == pair[1]),
            "{policies:?}: {verdicts:?}"
        );
    }
}

/// `call:` makes a raw waPC host call; the component makes the typed call. Both reject
/// with the answer's exact text.
fn legacy_call(id: &str, operation: &str, payload: Value, grants: &[(&str, &str)]) -> String {
    let settings = json!({"behaviour": format!("call:kubewarden/kubernetes/{operation}"),
                          "payload": payload.to_string()});
    policy(id, &wasm().misbehaving, grants, settings)
}

fn typed_call(id: &str, settings: Value, grants: &[(&str, &str)]) -> String {
    policy(id, &wasm().misbehaving_component, grants, settings)
}

async fn answer(server: &Server, id: &str) -> String {
    let response = server
        .validate(id, &review(service("any", "any", json!({}))))
        .await;
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn both_call_styles_get_byte_identical_answers() {
    let both = &[NAMESPACE, SERVICE];
    let yml = [
        legacy_call("by-ns", "list_resources_by_namespace",
            json!({"api_version": "v1", "kind": "Service", "namespace": "shop", "label_selector": "app in (web,db)"}), both),
        typed_call("by-ns-c", json!({"behaviour": "list", "api_version": "v1", "kind": "Service",
            "namespace": "shop", "label_selector": "app in (web,db)"}), both),
        legacy_call("all", "list_resources_all",
            json!({"api_version": "v1", "kind": "Namespace", "label_selector": "tenant=blue", "field_selector": "metadata.name!=shop"}), both),
        typed_call("all-c", json!({"behaviour": "list", "api_version": "v1", "kind": "Namespace",
            "label_selector": "tenant=blue", "field_selector": "metadata.name!=shop"}), both),
        legacy_call("get", "get_resource",
            json!({"api_version": "v1", "kind": "Service", "namespace": "team-a", "name": "web", "disable_cache": false}), both),
        typed_call("get-c", json!({"behaviour": "get", "api_version": "v1", "kind": "Service",
            "namespace": "team-a", "name": "web"}), both),
    ]
    .concat();
    let (server, _dir) = start_on_snapshot(yml);

    let by_namespace = answer(&server, "by-ns").await;
    assert_eq!(by_namespace, answer(&server, "by-ns-c").await);
    let list: Value = serde_json::from_str(&by_namespace).unwrap();
    assert_eq!(list["kind"], "ServiceList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["db", "web"],
        "ordered by name, only the namespace's"
    );

    let all = answer(&server, "all").await;
    assert_eq!(all, answer(&server, "all-c").await);
    let list: Value = serde_json::from_str(&all).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["metadata"]["name"], "shop-dev");

    let object = answer(&server, "get").await;
    assert_eq!(object, answer(&server, "get-c").await);
    let object: Value = serde_json::from_str(&object).unwrap();
    assert_eq!(
        (
            object["kind"].as_str(),
            object["metadata"]["namespace"].as_str()
        ),
        (Some("Service"), Some("team-a"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_says_what_and_why() {
    let get_missing = json!({"api_version": "v1", "kind": "Service", "namespace": "shop", "name": "gone", "disable_cache": false});
    let yml = [
        // Granted namespaces only.
        legacy_call(
            "ungranted",
            "list_resources_all",
            json!({"api_version": "v1", "kind": "Service"}),
            &[NAMESPACE],
        ),
        typed_call(
            "ungranted-c",
            json!({"behaviour": "list", "api_version": "v1", "kind": "Service"}),
            &[NAMESPACE],
        ),
        legacy_call("missing", "get_resource", get_missing, &[SERVICE]),
        typed_call(
            "missing-c",
            json!({"behaviour": "get", "api_version": "v1", "kind": "Service",
            "namespace": "shop", "name": "gone"}),
            &[SERVICE],
        ),
        legacy_call(
            "bad-selector",
            "list_resources_all",
            json!({"api_version": "v1", "kind": "Service", "label_selector": "app in web"}),
            &[SERVICE],
        ),
        typed_call(
            "bad-selector-c",
            json!({"behaviour": "list", "api_version": "v1", "kind": "Service",
            "label_selector": "app in web"}),
            &[SERVICE],
        ),
        legacy_call(
            "no-kind",
            "get_resource",
            json!({"api_version": "v1", "name": "x"}),
            &[SERVICE],
        ),
        legacy_call(
            "cluster-wide",
            "list_resources_by_namespace",
            json!({"api_version": "v1", "kind": "Namespace", "namespace": "shop"}),
            &[NAMESPACE],
        ),
        typed_call(
            "cluster-wide-c",
            json!({"behaviour": "list", "api_version": "v1", "kind": "Namespace",
            "namespace": "shop"}),
            &[NAMESPACE],
        ),
        legacy_call(
            "can-i",
            "can_i",
            json!({"subject_access_review": {"user": "u", "groups": null,
            "resource_attributes": {"verb": "get", "resource": "pods"}}, "disable_cache": false}),
            &[NAMESPACE],
        ),
        legacy_call(
            "can-i-no-cluster",
            "can_i",
            json!({"subject_access_review": {"user": "u", "groups": null,
            "resource_attributes": {"verb": "get", "resource": "pods"}}, "disable_cache": false}),
            &[("authorization.k8s.io/v1", "SubjectAccessReview")],
        ),
    ]
    .concat();
    let (server, _dir) = start_on_snapshot(yml);
    let cases = [
        (
            "ungranted",
            "Host error: policy 'ungranted' is not allowed to read v1/Service: grant it in the policy's contextAwareResources",
        ),
        (
            "ungranted-c",
            "not-allowed: policy 'ungranted-c' is not allowed to read v1/Service: grant it in the policy's contextAwareResources",
        ),
        (
            "missing",
            "Host error: Cannot find v1/Service named 'gone' inside of namespace 'Some(\"shop\")'",
        ),
        (
            "missing-c",
            "not-found: Cannot find v1/Service named 'gone' inside of namespace 'Some(\"shop\")'",
        ),
        (
            "bad-selector",
            "Host error: policy 'bad-selector': label_selector: found 'web', expected: '('",
        ),
        (
            "bad-selector-c",
            "invalid: policy 'bad-selector-c': label_selector: found 'web', expected: '('",
        ),
        (
            "no-kind",
            "Host error: policy 'no-kind': malformed payload for kubewarden/kubernetes/get_resource: missing field `kind`",
        ),
        (
            "cluster-wide",
            "Host error: resource v1/Namespace is cluster wide. Cannot search for it inside of a namespace",
        ),
        (
            "cluster-wide-c",
            "invalid: resource v1/Namespace is cluster wide. Cannot search for it inside of a namespace",
        ),
        (
            "can-i",
            "Host error: policy 'can-i' is not allowed to ask can_i",
        ),
        (
            "can-i-no-cluster",
            "Host error: policy 'can-i-no-cluster': can_i failed: this server has no Kubernetes API to ask",
        ),
    ];
    for (id, expected) in cases {
        let said = answer(&server, id).await;
        assert!(said.starts_with(expected), "{id}: {said}");
    }
}

async fn start_live(
    fake: &FakeApiServer,
    yml: String,
    extra: &[&str],
) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let mut builder = builder(yml)
        .arg("--kubeconfig")
        .arg(kubeconfig.display().to_string());
    for arg in extra {
        builder = builder.arg(*arg);
    }
    let server = tokio::task::block_in_place(|| builder.start());
    server.wait_ready(std::time::Duration::from_secs(20)).await;
    (server, dir)
}

fn widget(namespace: &str, name: &str, size: u32) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace}, "spec": {"size": size}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_resource_kind_is_discovered_and_followed() {
    let fake = FakeApiServer::start().await;
    fake.apply(WIDGETS, widget("shop", "first", 1));
    let get = |name: &str| json!({"behaviour": "get", "api_version": "example.com/v1", "kind": "widget", "namespace": "shop", "name": name});
    let yml = [
        typed_call("get-later", get("later"), &[("Example.com/v1", "widget")]),
        legacy_call("get-first", "get_resource",
            json!({"api_version": "example.com/v1", "kind": "Widget", "namespace": "shop", "name": "first"}), &[WIDGET]),
    ]
    .concat();
    let (server, _dir) = start_live(&fake, yml, &[]).await;
    let requests = fake.requests();
    assert!(
        requests.iter().any(|r| r == "GET /apis/example.com/v1"),
        "{requests:?}"
    );

    let first: Value = serde_json::from_str(&answer(&server, "get-first").await).unwrap();
    assert_eq!(
        (first["kind"].as_str(), first["spec"]["size"].as_u64()),
        (Some("Widget"), Some(1))
    );
    assert!(
        answer(&server, "get-later")
            .await
            .starts_with("not-found: Cannot find example.com/v1/widget named 'later'")
    );

    // Created after start-up: the kind's reflector brings it in.
    fake.apply(WIDGETS, widget("shop", "later", 2));
    let server = &server;
    eventually("the new widget is visible", || async move {
        let said = answer(server, "get-later").await;
        (!said.contains("\"size\":2")).then_some(said)
    })
    .await;
    // Deleted between two evaluations: gone from the next one.
    fake.delete(WIDGETS, "shop", "first");
    eventually("the deleted widget is gone", || async move {
        let said = answer(server, "get-first").await;
        (!said.starts_with("Host error: Cannot find example.com/v1/Widget named 'first'"))
            .then_some(said)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kind_the_cluster_does_not_serve_stops_the_start_or_fails_its_reads() {
    let fake = FakeApiServer::start().await;
    let gadgets = ("example.com/v1", "Gadget");
    let yml = typed_call(
        "gadgets",
        json!({"behaviour": "list", "api_version": "example.com/v1", "kind": "Gadget"}),
        &[gadgets],
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, fake.kubeconfig()).unwrap();
    let (status, output) = builder(yml.clone())
        .arg("--kubeconfig")
        .arg(kubeconfig.display().to_string())
        .start_expecting_failure();
    assert!(!status.success());
    assert!(
        output.contains(
            "policy 'gadgets' reads example.com/v1/Gadget, which the cluster does not serve"
        ),
        "{output}"
    );

    let namespaces = typed_call(
        "namespaces",
        json!({"behaviour": "list", "api_version": "v1", "kind": "Namespace"}),
        &[NAMESPACE],
    );
    let (server, _dir) =
        start_live(&fake, [yml, namespaces].concat(), &["--continue-on-errors"]).await;
    let said = answer(&server, "gadgets").await;
    assert!(said.starts_with("unavailable: policy 'gadgets': example.com/v1/Gadget cannot be read: the cluster serves no kind Gadget"), "{said}");
    assert!(
        answer(&server, "namespaces")
            .await
            .contains("NamespaceList")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn can_i_asks_the_api_server_and_reuses_recent_answers() {
    let fake = FakeApiServer::start().await;
    fake.apply(NAMESPACES, json!({"metadata": {"name": "default"}}));
    fake.allow_user("alice");
    let sar = ("authorization.k8s.io/v1", "SubjectAccessReview");
    let ask = |user: &str| json!({"behaviour": "can_i", "user": user, "verb": "create", "resource": "pods", "namespace": "default"});
    let legacy = json!({"subject_access_review": {"user": "alice", "groups": ["dev"],
        "resource_attributes": {"verb": "create", "resource": "pods", "namespace": "default"}}, "disable_cache": false});
    let yml = [
        typed_call("alice", ask("alice"), &[sar]),
        typed_call("bob", ask("bob"), &[sar]),
        typed_call("ungranted", ask("alice"), &[NAMESPACE]),
        legacy_call("legacy", "can_i", legacy, &[sar]),
    ]
    .concat();
    let (server, _dir) = start_live(&fake, yml, &[]).await;
    let alice = answer(&server, "alice").await;
    assert_eq!(alice, "allowed=true denied=false", "{}", server.log());
    assert_eq!(answer(&server, "bob").await, "allowed=false denied=false");
    assert!(
        answer(&server, "ungranted")
            .await
            .starts_with("not-allowed: policy 'ungranted' is not allowed to ask can_i")
    );
    let status: Value = serde_json::from_str(&answer(&server, "legacy").await).unwrap();
    assert_eq!(
        status,
        json!({"allowed": true, "reason": "allowed by the fake API server"})
    );

    let reviews = || {
        fake.requests()
            .iter()
            .filter(|r| r.starts_with("POST") && r.contains("subjectaccessreviews"))
            .count()
    };
    let before = reviews();
    for _ in 0..3 {
        assert_eq!(answer(&server, "alice").await, "allowed=true denied=false");
    }
    assert_eq!(reviews(), before, "answered from the 5-second answer cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn services_by_namespace_follow_the_live_cache() {
    let fake = FakeApiServer::start().await;
    fake.apply(SERVICES, service("shop", "web", json!({"app": "web"})));
    let yml = [
        policy(
            "selector",
            &wasm().unique_service_selector,
            &[SERVICE],
            json!({}),
        ),
        policy(
            "selector-c",
            &wasm().unique_service_selector_component,
            &[SERVICE],
            json!({}),
        ),
    ]
    .concat();
    let (server, _dir) = start_live(&fake, yml, &[]).await;
    let request = review(service("shop", "api", json!({"app": "api"})));
    for id in ["selector", "selector-c"] {
        assert_eq!(server.validate(id, &request).await["allowed"], true);
    }
    fake.apply(SERVICES, service("shop", "api-old", json!({"app": "api"})));
    let (server, request) = (&server, &request);
    eventually("both styles see the new Service", || async move {
        let legacy = verdict(&server.validate("selector", request).await);
        let component = verdict(&server.validate("selector-c", request).await);
        let expected = (
            false,
            json!(409),
            "service shop/api-old already selects the same pods".to_owned(),
        );
        (legacy != expected || component != expected).then(|| format!("{legacy:?} {component:?}"))
    })
    .await;
}

/// The README's walk-through: `examples/policies.yml` over `examples/cluster-snapshot.yaml`
/// gives the verdicts the README shows for the requests in `examples/requests/`.
#[tokio::test(flavor = "multi_thread")]
async fn the_examples_serve_the_verdicts_the_readme_shows() {
    wasm(); // builds the examples the file names
    let examples = policy_server_e2e::build::repo_root().join("examples");
    let yml = std::fs::read_to_string(examples.join("policies.yml")).unwrap();
    // Its module paths are relative to examples/.
    let yml = yml.replace("target/", &format!("{}/target/", examples.display()));
    let server = builder(yml)
        .arg("--cluster-snapshot")
        .arg(examples.join("cluster-snapshot.yaml").display().to_string())
        .start();
    let request = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(examples.join("requests").join(name)).unwrap())
            .unwrap()
    };
    let cases = [
        (
            "deny-latest-tag",
            "pod-latest.json",
            "Images must be pinned: see https://example.com/image-policy",
        ),
        (
            "unique-ingress-host",
            "ingress-taken-host.json",
            "host shop.example.com is already served by ingress default/web",
        ),
        (
            "tenant-namespace-limit",
            "namespace-third-blue.json",
            "tenant blue already has 2 namespaces (at most 2)",
        ),
        (
            "tenant-namespace-limit-component",
            "namespace-third-blue.json",
            "tenant blue already has 2 namespaces (at most 2)",
        ),
    ];
    for (policy, file, message) in cases {
        let response = server.validate(policy, &request(file)).await;
        assert_eq!(verdict(&response).2, message, "{policy}: {response}");
        assert_eq!(response["allowed"], false);
    }
}
