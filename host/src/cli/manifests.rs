//! `policy-server manifests`: prints what a cluster needs to run the server for a
//! policies.yml (see [`crate::manifests`]).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::PoliciesFile;
use crate::manifests::{Deployment, Trust, objects, to_yaml};

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("trust").required(true).args(["ca_bundle", "cert_manager_issuer"]))]
pub(super) struct ManifestArgs {
    /// The policies to serve (policies.yml).
    #[arg(long, default_value = "policies.yml")]
    policies: PathBuf,
    /// Namespace of the server (left out of every webhook, so the server cannot block its
    /// own pods).
    #[arg(long, default_value = "policy-server")]
    namespace: String,
    /// Name of the Deployment, Service, ServiceAccount and the rest.
    #[arg(long, default_value = "policy-server")]
    name: String,
    /// The server's image; it holds the policies' modules in --module-dir.
    #[arg(long)]
    image: String,
    /// Replicas (at least 2).
    #[arg(long, default_value_t = 2)]
    replicas: i32,
    /// PEM file of the CA that signed the certificate in the Secret `<name>-tls`.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// Have cert-manager issue the certificate from this Issuer (in --namespace) and
    /// inject its CA into the webhook configurations.
    #[arg(long)]
    cert_manager_issuer: Option<String>,
    /// Where the image holds the modules: each `module:` becomes this directory and its
    /// file name.
    #[arg(long, default_value = "/policies")]
    module_dir: String,
    /// A Secret of type kubernetes.io/dockerconfigjson (in --namespace) with the
    /// credentials of the registries `registry://` modules come from.
    #[arg(long, value_name = "SECRET")]
    registry_credentials_secret: Option<String>,
    /// A ConfigMap (in --namespace) whose key `sources.yml` is Kubewarden's sources file:
    /// insecure registries and the CAs of private ones.
    #[arg(long, value_name = "CONFIGMAP")]
    sources_config_map: Option<String>,
}

pub(super) fn run(args: ManifestArgs) -> anyhow::Result<()> {
    let file = PoliciesFile::load(&args.policies, false)?;
    let trust = match (args.ca_bundle, args.cert_manager_issuer) {
        (Some(path), _) => Trust::CaBundle(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read the CA bundle {}", path.display()))?,
        ),
        (None, Some(issuer)) => Trust::CertManager { issuer },
        (None, None) => unreachable!("clap requires one of them"),
    };
    let deployment = Deployment {
        namespace: args.namespace,
        name: args.name,
        image: args.image,
        replicas: args.replicas,
        trust,
        module_dir: args.module_dir,
        registry_credentials: args.registry_credentials_secret,
        sources: args.sources_config_map,
    };
    let objects = objects(&file, &deployment)
        .with_context(|| format!("cannot make manifests for {}", args.policies.display()))?;
    print!("{}", to_yaml(&objects)?);
    Ok(())
}
