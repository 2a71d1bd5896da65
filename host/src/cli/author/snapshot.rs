//! `policy-server snapshot`: the cluster state some policies may read, from the live
//! cluster, written as a snapshot file that `serve`, `run` and `test` read. Objects are
//! kept as the cache keeps them (managed fields and the last-applied annotation trimmed),
//! one typed List per kind: record once, replay anywhere.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use guest_adapter::selector::{FieldSelector, LabelSelector};
use guest_adapter::{ClusterCache, ResourceKind};

use super::async_runtime;
use crate::cache::CacheSource;
use crate::config::PoliciesFile;

#[derive(Debug, Args)]
pub(in crate::cli) struct SnapshotArgs {
    /// Record the kinds the policies of this file may read (contextAwareResources).
    #[arg(long, required_unless_present = "kinds")]
    policies: Option<PathBuf>,
    /// Record this kind too, as apiVersion/Kind (v1/Namespace, apps/v1/Deployment);
    /// repeatable.
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// Kubeconfig (default: in-cluster or the usual kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Write the snapshot here (default: stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub(in crate::cli) fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    let mut kinds = match &args.policies {
        Some(path) => super::super::cluster::granted(&PoliciesFile::load(path, false)?).kinds,
        None => Vec::new(),
    };
    for kind in &args.kinds {
        let kind = super::session::parse_kind("--kind", kind)?.canonical();
        if !kinds.iter().any(|known| known.matches(&kind)) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        bail!("nothing to record: the policies read no kind from the cluster (add --kind)");
    }
    let text = async_runtime()?.block_on(record(kinds, args.kubeconfig))?;
    match &args.output {
        // Owner-only: a recorded Secret is as secret in the file.
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut file| file.write_all(text.as_bytes()))
                .with_context(|| format!("cannot write {}", path.display()))?
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(())
}

/// Lists every kind through the cache (so objects are trimmed as it trims them) and
/// writes one List document per kind.
async fn record(kinds: Vec<ResourceKind>, kubeconfig: Option<PathBuf>) -> anyhow::Result<String> {
    let progress = super::progress::after_a_second("listing the cluster");
    let cluster =
        crate::cache::start(kinds.clone(), &CacheSource::Cluster { kubeconfig }, false).await?;
    if let Some((kind, reason)) = cluster.unserved.first() {
        bail!("the cluster does not serve {kind}: {reason}");
    }
    super::session::wait_listed(&cluster, &kinds, super::session::LIST_WITHIN).await?;
    drop(progress);
    let mut text = format!(
        "# Recorded by policy-server snapshot: {}\n",
        kinds
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for kind in &kinds {
        let list = cluster
            .state
            .snapshot(kind)
            .map_err(|err| anyhow::anyhow!("{kind}: {err}"))?
            .list(None, &LabelSelector::default(), &FieldSelector::default());
        let mut bytes = vec![0; list.len()];
        list.copy_to(&mut bytes);
        text.push_str("---\n");
        text.push_str(std::str::from_utf8(&bytes).context("a cached list is not UTF-8")?);
        text.push('\n');
    }
    Ok(text)
}
