//! The server itself: its policies as a ConfigMap, the Deployment, Service and
//! PodDisruptionBudget, and with cert-manager its Certificate.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;
use k8s_openapi::api::apps::v1::{Deployment as K8sDeployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, HTTPGetAction, KeyToPath, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::rbac::metadata;
use super::{Deployment, METRICS_PORT, PROBE_PORT, WEBHOOK_PORT};
use crate::config::PoliciesFile;
use crate::fetch::ModuleLocation;
use crate::webhook::ShutdownTiming;

const CONFIG_DIR: &str = "/config";
const TLS_DIR: &str = "/tls";
const CACHE_DIR: &str = "/cache";
const REGISTRY_DIR: &str = "/registry";
const SOURCES_DIR: &str = "/sources";

/// policies.yml, with each module where the image holds it.
pub(super) fn config_map(
    file: &PoliciesFile,
    deployment: &Deployment,
) -> anyhow::Result<ConfigMap> {
    let mut in_image: BTreeMap<String, &str> = BTreeMap::new();
    let mut policies: BTreeMap<&str, Value> = BTreeMap::new();
    for (id, policy) in &file.policies {
        let mut entry = serde_json::to_value(PolicyEntry::of(policy))?;
        // A registry or URL module is pulled by the pod; a file is shipped in the image.
        let ModuleLocation::File(module) = ModuleLocation::parse(&policy.module, &file.dir)? else {
            policies.insert(id, entry);
            continue;
        };
        let Some(name) = module.file_name().and_then(|name| name.to_str()) else {
            bail!(
                "policy '{id}': module {} has no file name",
                module.display()
            );
        };
        let source = policy.module.as_str();
        match in_image.insert(name.to_owned(), source) {
            Some(other) if other != source => bail!(
                "modules {other} and {source} have the same file name, {name}: in {} one would \
                 replace the other; rename one",
                deployment.module_dir
            ),
            _ => {}
        }
        entry["module"] = Value::from(
            Path::new(&deployment.module_dir)
                .join(name)
                .display()
                .to_string(),
        );
        policies.insert(id, entry);
    }
    let text = serde_saphyr::to_string(&policies)?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{}-policies", deployment.name)),
            ..metadata(deployment, Some(&deployment.namespace))
        },
        data: Some(BTreeMap::from([("policies.yml".to_owned(), text)])),
        ..ConfigMap::default()
    })
}

/// What the server reads of a policy, in policies.yml's own spelling.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyEntry<'a> {
    module: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    settings: Option<&'a Value>,
    policy_mode: &'static str,
    allowed_to_mutate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_eval_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    context_aware_resources: Vec<Value>,
}

impl<'a> PolicyEntry<'a> {
    fn of(policy: &'a crate::config::PolicyConfig) -> Self {
        Self {
            module: &policy.module,
            settings: policy.settings.as_ref(),
            policy_mode: match policy.policy_mode {
                crate::config::PolicyMode::Protect => "protect",
                crate::config::PolicyMode::Monitor => "monitor",
            },
            allowed_to_mutate: policy.allowed_to_mutate,
            message: policy.message.as_deref(),
            timeout_eval_seconds: policy.timeout_eval_seconds,
            context_aware_resources: policy
                .context_aware_resources
                .iter()
                .map(|r| json!({"apiVersion": r.api_version, "kind": r.kind}))
                .collect(),
        }
    }
}

/// cert-manager's Certificate for the Service's names, stored in the TLS Secret.
pub(super) fn certificate(deployment: &Deployment, issuer: &str) -> Value {
    let service = format!("{}.{}.svc", deployment.name, deployment.namespace);
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": metadata(deployment, Some(&deployment.namespace)),
        "spec": {
            "secretName": deployment.tls_secret(),
            "dnsNames": [service, format!("{service}.cluster.local")],
            "issuerRef": {"name": issuer, "kind": "Issuer"},
            "privateKey": {"rotationPolicy": "Always"},
        }
    })
}

pub(super) fn deployment(deployment: &Deployment) -> K8sDeployment {
    let labels = deployment.labels();
    let probe = |path: &str, period| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(PROBE_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    let mount = |name: &str, path: &str, read_only| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let timing = ShutdownTiming::default();
    let args = [
        "serve",
        "--policies",
        &format!("{CONFIG_DIR}/policies.yml"),
        "--cert-file",
        &format!("{TLS_DIR}/tls.crt"),
        "--key-file",
        &format!("{TLS_DIR}/tls.key"),
        "--port",
        &WEBHOOK_PORT.to_string(),
        "--readiness-probe-port",
        &PROBE_PORT.to_string(),
        "--metrics-port",
        &METRICS_PORT.to_string(),
        "--compile-cache-dir",
        CACHE_DIR,
        "--policies-download-dir",
        &format!("{CACHE_DIR}/modules"),
        "--log-fmt",
        "json",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut args = args;
    let mut volume_mounts = vec![
        mount("policies", CONFIG_DIR, true),
        mount("tls", TLS_DIR, true),
        mount("compile-cache", CACHE_DIR, false),
    ];
    let mut volumes = vec![
        Volume {
            name: "policies".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: format!("{}-policies", deployment.name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(deployment.tls_secret()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "compile-cache".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    // What private registries need: credentials and how each is reached, read from
    // files, as the server reads them.
    if let Some(secret) = &deployment.registry_credentials {
        args.extend([
            "--docker-config-json-path".to_owned(),
            format!("{REGISTRY_DIR}/config.json"),
        ]);
        volume_mounts.push(mount("registry-credentials", REGISTRY_DIR, true));
        volumes.push(Volume {
            name: "registry-credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![KeyToPath {
                    key: ".dockerconfigjson".into(),
                    path: "config.json".into(),
                    mode: None,
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(config_map) = &deployment.sources {
        args.extend([
            "--sources-path".to_owned(),
            format!("{SOURCES_DIR}/sources.yml"),
        ]);
        volume_mounts.push(mount("sources", SOURCES_DIR, true));
        volumes.push(Volume {
            name: "sources".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.clone(),
                items: Some(vec![KeyToPath {
                    key: "sources.yml".into(),
                    path: "sources.yml".into(),
                    mode: None,
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let container = Container {
        name: "policy-server".into(),
        image: Some(deployment.image.clone()),
        args: Some(args),
        ports: Some(vec![
            port("https", WEBHOOK_PORT),
            port("probes", PROBE_PORT),
            port("metrics", METRICS_PORT),
        ]),
        readiness_probe: Some(probe("/readiness", 5)),
        liveness_probe: Some(probe("/livez", 10)),
        // The probe port opens once the policies are compiled: with an empty compile
        // cache on a small CPU share that takes a while, and must not count as dead.
        startup_probe: Some(Probe {
            failure_threshold: Some(60),
            ..probe("/livez", 5)
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("250m".into())),
                ("memory".to_owned(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("1Gi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };
    K8sDeployment {
        metadata: metadata(deployment, Some(&deployment.namespace)),
        spec: Some(DeploymentSpec {
            replicas: Some(deployment.replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(deployment.name.clone()),
                    // The server's own drain (--shutdown-grace-seconds) plus a margin.
                    termination_grace_period_seconds: Some(
                        timing.grace_period.as_secs() as i64 + 5,
                    ),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    affinity: Some(Affinity {
                        pod_anti_affinity: Some(PodAntiAffinity {
                            preferred_during_scheduling_ignored_during_execution: Some(vec![
                                WeightedPodAffinityTerm {
                                    weight: 100,
                                    pod_affinity_term: PodAffinityTerm {
                                        label_selector: Some(LabelSelector {
                                            match_labels: Some(labels),
                                            ..LabelSelector::default()
                                        }),
                                        topology_key: "kubernetes.io/hostname".into(),
                                        ..PodAffinityTerm::default()
                                    },
                                },
                            ]),
                            ..PodAntiAffinity::default()
                        }),
                        ..Affinity::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..K8sDeployment::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        ..ContainerPort::default()
    }
}

pub(super) fn service(deployment: &Deployment) -> Service {
    Service {
        metadata: metadata(deployment, Some(&deployment.namespace)),
        spec: Some(ServiceSpec {
            selector: Some(deployment.labels()),
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: 443,
                target_port: Some(IntOrString::String("https".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub(super) fn disruption_budget(deployment: &Deployment) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(deployment, Some(&deployment.namespace)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(deployment.labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
