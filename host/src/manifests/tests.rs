use std::path::PathBuf;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment as K8sDeployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn deployment(trust: Trust) -> Deployment {
    Deployment {
        namespace: "admission".into(),
        name: "policy-server".into(),
        image: "registry.example.com/policy-server:1".into(),
        replicas: 2,
        trust,
        module_dir: "/policies".into(),
        registry_credentials: None,
        sources: None,
    }
}

fn examples() -> PoliciesFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policies.yml");
    PoliciesFile::load(&path, false).unwrap()
}

/// The YAML as `kubectl apply` reads it: one document per object.
fn documents(file: &PoliciesFile, deployment: &Deployment) -> Vec<Value> {
    let yaml = to_yaml(&objects(file, deployment).unwrap()).unwrap();
    yaml.split("\n---\n")
        .map(|document| serde_saphyr::from_str(document).unwrap())
        .collect()
}

/// The one document of `kind`, read as its Kubernetes type; it must say nothing the type
/// does not hold (what a typo or a misplaced field would be).
fn typed<T: DeserializeOwned + Serialize>(documents: &[Value], kind: &str) -> T {
    let found: Vec<&Value> = documents.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "{kind}: {found:?}");
    let object: T = serde_json::from_value(found[0].clone()).unwrap();
    assert_eq!(&serde_json::to_value(&object).unwrap(), found[0], "{kind}");
    object
}

#[test]
fn the_examples_make_a_complete_deployment() {
    let file = examples();
    let documents = documents(&file, &deployment(Trust::CaBundle(CA.into())));
    let kinds: Vec<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
        ]
    );
    typed::<ServiceAccount>(&documents, "ServiceAccount");
    typed::<ClusterRoleBinding>(&documents, "ClusterRoleBinding");
    typed::<Service>(&documents, "Service");
    let budget: PodDisruptionBudget = typed(&documents, "PodDisruptionBudget");
    assert!(budget.spec.unwrap().min_available.is_some());

    // Exactly the kinds the examples read, and no access reviews.
    let role: ClusterRole = typed(&documents, "ClusterRole");
    let rules: Vec<Value> = role
        .rules
        .unwrap()
        .iter()
        .map(|rule| serde_json::to_value(rule).unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            json!({"apiGroups": [""], "resources": ["namespaces", "services"], "verbs": ["list", "watch"]}),
            json!({"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["list", "watch"]}),
        ]
    );

    let deployment_object: K8sDeployment = typed(&documents, "Deployment");
    let spec = deployment_object.spec.unwrap();
    assert!(spec.replicas.unwrap() >= 2);
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    assert_eq!(pod.service_account_name.as_deref(), Some("policy-server"));
    let pod_security = pod.security_context.unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());
    let container = &pod.containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
    let requests = container.resources.clone().unwrap().requests.unwrap();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));

    // The policies the server reads, each module where the image holds it.
    let config: ConfigMap = typed(&documents, "ConfigMap");
    let text = &config.data.unwrap()["policies.yml"];
    let served = PoliciesFile::parse(text, PathBuf::new()).unwrap();
    assert_eq!(
        served.policies.keys().collect::<Vec<_>>(),
        file.policies.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        served.policies["pod-privileged"].module,
        "/policies/pod_privileged.wasm"
    );
    assert_eq!(
        served.policies["default-labels"].settings,
        file.policies["default-labels"].settings
    );

    // One entry per policy, mutating ones apart, none reaching the server's namespace.
    let validating: ValidatingWebhookConfiguration =
        typed(&documents, "ValidatingWebhookConfiguration");
    let mutating: MutatingWebhookConfiguration = typed(&documents, "MutatingWebhookConfiguration");
    let validating = validating.webhooks.unwrap();
    let mutating = mutating.webhooks.unwrap();
    let mutators = file.policies.values().filter(|p| p.is_mutating()).count();
    assert_eq!(mutating.len(), mutators);
    assert_eq!(validating.len() + mutating.len(), file.policies.len());
    let ingress = validating
        .iter()
        .find(|w| w.name == "unique-ingress-host.policy-server.admission.svc")
        .unwrap();
    let service = ingress.client_config.service.as_ref().unwrap();
    assert_eq!(
        service.path.as_deref(),
        Some("/validate/unique-ingress-host")
    );
    assert_eq!(
        ingress.client_config.ca_bundle.as_ref().unwrap().0,
        CA.as_bytes()
    );
    assert_eq!(
        serde_json::to_value(ingress.rules.as_ref().unwrap()).unwrap(),
        json!([{"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                "resources": ["ingresses"], "operations": ["CREATE", "UPDATE"]}])
    );
    for selector in validating
        .iter()
        .map(|w| &w.namespace_selector)
        .chain(mutating.iter().map(|w| &w.namespace_selector))
    {
        assert_eq!(
            serde_json::to_value(selector).unwrap()["matchExpressions"],
            json!([{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["admission"]}])
        );
    }
}

fn file(yaml: &str) -> anyhow::Result<PoliciesFile> {
    PoliciesFile::parse(yaml, PathBuf::from("/srv"))
}

#[test]
fn a_policys_webhook_fields_reach_its_entry() {
    let file = file(
        r#"
checked:
  module: checked.wasm
  contextAwareResources: [{apiVersion: authorization.k8s.io/v1, kind: SubjectAccessReview}]
  rules: [{apiGroups: [apps], apiVersions: [v1], resources: [deployments], operations: ["*"], scope: Namespaced}]
  namespaceSelector: {matchLabels: {tenant: blue}}
  objectSelector: {matchLabels: {checked: "yes"}}
  failurePolicy: Ignore
  matchPolicy: Exact
  sideEffects: NoneOnDryRun
  timeoutSeconds: 5
"#,
    )
    .unwrap();
    let documents = documents(
        &file,
        &deployment(Trust::CertManager {
            issuer: "selfsigned".into(),
        }),
    );
    let entry = &documents
        .iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .unwrap();
    assert_eq!(
        entry["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "admission/policy-server"
    );
    let webhook = &entry["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(webhook["matchPolicy"], "Exact");
    assert_eq!(webhook["sideEffects"], "NoneOnDryRun");
    assert_eq!(webhook["timeoutSeconds"], 5);
    assert_eq!(
        webhook["objectSelector"],
        json!({"matchLabels": {"checked": "yes"}})
    );
    assert_eq!(
        webhook["namespaceSelector"]["matchLabels"],
        json!({"tenant": "blue"})
    );
    assert_eq!(webhook["rules"][0]["scope"], "Namespaced");
    assert!(webhook["clientConfig"].get("caBundle").is_none());
    // can_i, and nothing to cache.
    let role = documents
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .unwrap();
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}])
    );
    let certificate = documents
        .iter()
        .find(|d| d["kind"] == "Certificate")
        .unwrap();
    assert_eq!(certificate["spec"]["secretName"], "policy-server-tls");
    assert_eq!(
        certificate["spec"]["dnsNames"][0],
        "policy-server.admission.svc"
    );
}

#[test]
fn what_cannot_make_a_working_deployment_is_refused() {
    let trust = || deployment(Trust::CaBundle(CA.into()));
    let error = |yaml: &str, deployment: Deployment| {
        let file = file(yaml).unwrap();
        format!("{:#}", objects(&file, &deployment).unwrap_err())
    };
    let rules =
        r#"rules: [{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [CREATE]}]"#;
    assert!(
        error("p:\n  module: p.wasm\n", trust()).contains("policy 'p' has no `rules`"),
        "{}",
        error("p:\n  module: p.wasm\n", trust())
    );
    let single = Deployment {
        replicas: 1,
        ..trust()
    };
    assert!(error(&format!("p:\n  module: p.wasm\n  {rules}\n"), single).contains("at least 2"));
    for id in ["Bad_Id", "-lead", "trail-", &"x".repeat(64)] {
        assert!(
            error(&format!("{id}:\n  module: p.wasm\n  {rules}\n"), trust())
                .contains("cannot name a webhook"),
            "{id}"
        );
    }
    let twins =
        format!("a:\n  module: one/p.wasm\n  {rules}\nb:\n  module: two/p.wasm\n  {rules}\n");
    assert!(error(&twins, trust()).contains("have the same file name"));
    // Caught when the file is read, for the server as for the manifests.
    let refused = file(&format!(
        "p:\n  module: p.wasm\n  mutating: true\n  {rules}\n"
    ))
    .unwrap_err();
    assert!(
        format!("{refused:#}").contains("allowedToMutate"),
        "{refused:#}"
    );
    let refused = file(&format!(
        "p:\n  module: p.wasm\n  failurePolicy: Sometimes\n  {rules}\n"
    ))
    .unwrap_err();
    assert!(
        format!("{refused:#}").contains("Fail, Ignore"),
        "{refused:#}"
    );
}

#[test]
fn registry_modules_are_pulled_by_the_pod_with_its_credentials_and_sources() {
    let file = file(
        "pulled:\n  module: registry://registry.example.com/policies/p:v1\n  \
         rules: [{apiGroups: [\"\"], apiVersions: [v1], resources: [pods], operations: [CREATE]}]\n",
    )
    .unwrap();
    let deployment = Deployment {
        registry_credentials: Some("registry-pull".into()),
        sources: Some("registry-sources".into()),
        ..deployment(Trust::CaBundle(CA.into()))
    };
    let documents = documents(&file, &deployment);
    let config_map: ConfigMap = typed(&documents, "ConfigMap");
    let served: Value = serde_saphyr::from_str(&config_map.data.unwrap()["policies.yml"]).unwrap();
    assert_eq!(
        served["pulled"]["module"], "registry://registry.example.com/policies/p:v1",
        "a registry module is left as written"
    );
    let workload: K8sDeployment = typed(&documents, "Deployment");
    let pod = workload.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap();
    let flag = |name: &str| {
        let at = args
            .iter()
            .position(|arg| arg == name)
            .unwrap_or_else(|| panic!("{name}: {args:?}"));
        args[at + 1].clone()
    };
    assert_eq!(flag("--docker-config-json-path"), "/registry/config.json");
    assert_eq!(flag("--sources-path"), "/sources/sources.yml");
    assert_eq!(flag("--policies-download-dir"), "/cache/modules");
    let volumes = pod.volumes.unwrap();
    let credentials = volumes
        .iter()
        .find(|v| v.name == "registry-credentials")
        .unwrap();
    let secret = credentials.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("registry-pull"));
    assert_eq!(secret.items.as_ref().unwrap()[0].key, ".dockerconfigjson");
    let sources = volumes.iter().find(|v| v.name == "sources").unwrap();
    assert_eq!(
        sources.config_map.as_ref().unwrap().name,
        "registry-sources"
    );
    let mounts = container.volume_mounts.as_ref().unwrap();
    for (name, path) in [
        ("registry-credentials", "/registry"),
        ("sources", "/sources"),
    ] {
        let mount = mounts.iter().find(|m| m.name == name).unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (path, Some(true))
        );
    }
}
