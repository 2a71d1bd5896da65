//! The policy author's commands: `run` one policy on one request, `test` a suite of
//! cases, record a cluster `snapshot`, `bench` one policy. No cluster needed, and the
//! server's own loading and decision steps throughout ([`session`]).

pub(super) mod bench;
mod progress;
mod request;
pub(super) mod run;
mod session;
pub(super) mod snapshot;
pub(super) mod test;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use session::{ClusterChoice, PolicyEntry};

/// Which policy, with what settings and grants, reading which cluster.
#[derive(Debug, Args)]
pub(super) struct PolicyArgs {
    /// The policy: a module (a path, file://, registry:// or https:// URL) or, with
    /// --policies, the id of a policy there.
    policy: String,
    /// The policies.yml in which POLICY is an id (its settings and grants apply).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// The policy's settings: JSON, or @FILE (JSON or YAML). Replaces those of --policies.
    #[arg(long)]
    settings: Option<String>,
    /// Let the policy read a kind from the cluster, as apiVersion/Kind (v1/Namespace,
    /// apps/v1/Deployment); repeatable, added to the grants of --policies.
    #[arg(long = "allow-context", value_name = "KIND")]
    allow_context: Vec<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    registries: RegistryArgs,
}

/// Where registry:// and https:// modules come from, as `serve` is told.
#[derive(Debug, Args)]
pub(super) struct RegistryArgs {
    /// Kubewarden's sources.yml, for registry:// or https:// modules (as `serve`).
    #[arg(long, env = "KUBEWARDEN_SOURCES_PATH")]
    sources_path: Option<PathBuf>,
    /// Docker config.json with registry credentials, for registry:// modules.
    #[arg(long, env = "KUBEWARDEN_DOCKER_CONFIG_JSON_PATH")]
    docker_config_json_path: Option<PathBuf>,
}

impl RegistryArgs {
    /// How to load modules: from the registries as these flags say.
    fn how(&self) -> session::LoadHow {
        session::LoadHow {
            sources: self.sources_path.clone(),
            docker_config: self.docker_config_json_path.clone(),
            ..session::LoadHow::default()
        }
    }
}

/// Where the cluster state comes from.
#[derive(Debug, Args)]
pub(super) struct ClusterArgs {
    /// Cluster state from a snapshot file (YAML documents or JSON; objects or Lists), as
    /// `policy-server snapshot` records it.
    #[arg(long, conflicts_with = "live_cluster")]
    cluster_snapshot: Option<PathBuf>,
    /// Cluster state from the live cluster (kubeconfig), listed once.
    #[arg(long)]
    live_cluster: bool,
    /// Kubeconfig for --live-cluster (default: in-cluster or the usual kubeconfig).
    #[arg(long, requires = "live_cluster")]
    kubeconfig: Option<PathBuf>,
}

impl ClusterArgs {
    fn choice(&self) -> ClusterChoice {
        match (&self.cluster_snapshot, self.live_cluster) {
            (Some(path), _) => ClusterChoice::Snapshot(path.clone()),
            (None, true) => ClusterChoice::Live {
                kubeconfig: self.kubeconfig.clone(),
            },
            (None, false) => ClusterChoice::None,
        }
    }
}

impl PolicyArgs {
    /// The policy's id in messages: its id in --policies, or its module's file name.
    fn id(&self) -> String {
        if self.policies.is_some() {
            return self.policy.clone();
        }
        module_id(&self.policy)
    }

    /// How to load it: from the registries as --sources-path and
    /// --docker-config-json-path say.
    fn how(&self) -> session::LoadHow {
        self.registries.how()
    }

    fn entry(&self) -> anyhow::Result<PolicyEntry> {
        let mut entry = PolicyEntry::resolve(&self.policy, self.policies.as_deref())?;
        if let Some(settings) = &self.settings {
            entry = entry.settings(settings_value(settings)?);
        }
        entry.allow_context(&self.allow_context)
    }
}

/// A policy id for a module (a path or a URL): its file name without extension.
fn module_id(module: &str) -> String {
    module
        .rsplit('/')
        .next()
        .and_then(|name| name.split(['.', ':', '@']).next())
        .filter(|name| !name.is_empty())
        .unwrap_or("policy")
        .to_owned()
}

/// `--settings`: an inline JSON (or YAML flow) mapping, or `@FILE`.
fn settings_value(settings: &str) -> anyhow::Result<Value> {
    let value = match settings.strip_prefix('@') {
        Some(path) => read_document(Path::new(path)).context("--settings")?,
        None => crate::yaml::from_str(settings, crate::yaml::config_options())
            .context("--settings is not JSON (to read a file, write @FILE)")?,
    };
    match value {
        Value::Object(_) | Value::Null => Ok(value),
        // `--settings settings.json` reads as the string "settings.json".
        other => {
            bail!("--settings is {other}, not a mapping of settings (to read a file, write @FILE)")
        }
    }
}

/// Exit codes of the author's commands.
pub mod exit {
    /// Allowed; every case passed.
    pub const SUCCESS: u8 = 0;
    /// Rejected; a case failed.
    pub const NO: u8 = 1;
    /// The evaluation failed, or the command could not run.
    pub const ERROR: u8 = 2;
}

/// Where fetched modules are kept for an author's commands: the user's cache directory
/// (made, owner-only, on the first fetch).
fn module_store() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("policy-server")
        .join("modules")
}

/// A JSON or YAML document from a file.
fn read_document(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    crate::yaml::from_str(&text, crate::yaml::config_options())
        .with_context(|| format!("{} is not JSON or YAML", path.display()))
}

/// Logs of an author's command go to stderr, warnings and errors only by default:
/// stdout is the command's answer.
pub(super) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POLICY_SERVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// An async runtime for an author's command: multi-threaded, as the cache's reflectors
/// hand whole lists to blocking sections.
fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
