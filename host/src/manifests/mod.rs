//! `policy-server manifests`: everything a cluster needs to run this server for the
//! policies of a policies.yml, as Kubernetes objects ready for `kubectl apply -f -`.
//!
//! Objects are built from k8s-openapi's types, so a field that Kubernetes does not know
//! cannot be written. What a policy grants decides the RBAC (`list` and `watch` on exactly
//! the kinds it may read); what it says of its webhook (`rules`, selectors, ...) becomes
//! its entry in the webhook configurations.

mod rbac;
mod webhooks;
mod workload;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::config::PoliciesFile;

/// Who the server is in the cluster, and how it is reached.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub namespace: String,
    /// Of the Deployment, Service, ServiceAccount and the rest.
    pub name: String,
    pub image: String,
    pub replicas: i32,
    pub trust: Trust,
    /// Where the image holds the policies' modules: each `module:` is rewritten to this
    /// directory and the module's file name.
    pub module_dir: String,
    /// A `kubernetes.io/dockerconfigjson` Secret with the credentials of the registries
    /// that `registry://` modules are pulled from.
    pub registry_credentials: Option<String>,
    /// A ConfigMap whose `sources.yml` (Kubewarden's) says how registries are reached.
    pub sources: Option<String>,
}

/// How the API server comes to trust the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The PEM CA bundle that signed the certificate in the Secret `<name>-tls`.
    CaBundle(String),
    /// cert-manager issues the certificate (a Certificate from this Issuer) and injects
    /// its CA into the webhook configurations.
    CertManager { issuer: String },
}

/// The port the server listens on for admission requests.
const WEBHOOK_PORT: i32 = 8443;
/// Plain-HTTP probes (`--readiness-probe-port`).
const PROBE_PORT: i32 = 8081;
/// `--metrics-port`.
const METRICS_PORT: i32 = 9090;

impl Deployment {
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".to_owned(),
                "policy-server".to_owned(),
            ),
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
        ])
    }

    fn tls_secret(&self) -> String {
        format!("{}-tls", self.name)
    }
}

/// Every object, in the order `kubectl apply` should create them.
pub fn objects(file: &PoliciesFile, deployment: &Deployment) -> anyhow::Result<Vec<Value>> {
    anyhow::ensure!(
        deployment.replicas >= 2,
        "--replicas is {}: an admission webhook needs at least 2, or every drain or rollout \
         leaves the API server with no one to ask",
        deployment.replicas
    );
    let mut objects = vec![
        json(&rbac::service_account(deployment))?,
        json(&rbac::cluster_role(file, deployment))?,
        json(&rbac::cluster_role_binding(deployment))?,
        json(&workload::config_map(file, deployment)?)?,
    ];
    if let Trust::CertManager { issuer } = &deployment.trust {
        objects.push(workload::certificate(deployment, issuer));
    }
    objects.extend([
        json(&workload::deployment(deployment))?,
        json(&workload::service(deployment))?,
        json(&workload::disruption_budget(deployment))?,
    ]);
    let (validating, mutating) = webhooks::configurations(file, deployment)?;
    if let Some(validating) = validating {
        objects.push(json(&validating)?);
    }
    if let Some(mutating) = mutating {
        objects.push(json(&mutating)?);
    }
    Ok(objects)
}

/// The objects as one multi-document YAML stream.
pub fn to_yaml(objects: &[Value]) -> anyhow::Result<String> {
    serde_saphyr::to_string_multiple(objects).context("cannot write the manifests as YAML")
}

/// An object with its `apiVersion` and `kind`, as k8s-openapi serializes them.
fn json(object: &impl Serialize) -> anyhow::Result<Value> {
    serde_json::to_value(object).context("cannot serialize a manifest")
}
