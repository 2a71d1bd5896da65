//! Policies loaded for an author's command exactly as `serve` loads them (fetch, compile,
//! settings checked by the policy), with the cluster they may read, and one request
//! evaluated through the server's own decision steps: no second implementation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use guest_adapter::{ClusterCache, HostCallRecorder, NoCluster, ResourceKind};
use serde_json::{Map, Value, json};

use crate::admission::{IncomingReview, OutgoingReview};
use crate::cache::{CacheSource, Cluster};
use crate::config::PoliciesFile;
use crate::fetch::{Fetcher, ModuleLocation};
use crate::policy::{
    Endpoint, LoadOptions, LoadedPolicies, Policy, PolicyMode, decide, load_policies,
};
use crate::runtime::{Compilers, EvalError, Runtime, RuntimeConfig};

/// One policy to load: a module with its settings and grants, or an entry of a
/// policies.yml with what the command line overrides.
#[derive(Debug, Clone, Default)]
pub struct PolicyEntry {
    /// The policies.yml entry (module resolved), or just `{module: ...}`.
    pub entry: Map<String, Value>,
}

impl PolicyEntry {
    /// `policy` is an id of `policies` if that file is given, else a module (a path,
    /// `file://`, `registry://` or `https://`).
    pub fn resolve(policy: &str, policies: Option<&Path>) -> anyhow::Result<Self> {
        let Some(policies) = policies else {
            return Self::module(policy, Path::new("."));
        };
        let file = PoliciesFile::load(policies, false)?;
        let Some(config) = file.policies.get(policy) else {
            bail!(
                "{} has no policy '{policy}' (it has: {})",
                policies.display(),
                file.policies.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        // The entry as written, with a relative module made absolute: the file it was
        // relative to is not the one loaded here.
        let text = std::fs::read_to_string(policies)?;
        let raw: Map<String, Value> = crate::yaml::from_str(&text, crate::yaml::config_options())?;
        let mut entry = raw[policy].as_object().cloned().unwrap_or_default();
        if let ModuleLocation::File(path) = ModuleLocation::parse(&config.module, &file.dir)? {
            entry.insert(
                "module".into(),
                absolute(&path)?.display().to_string().into(),
            );
        }
        Ok(Self { entry })
    }

    /// A module (a path relative to `base`, or a URL) with no settings and no grants.
    pub fn module(module: &str, base: &Path) -> anyhow::Result<Self> {
        let module = match ModuleLocation::parse(module, base)? {
            ModuleLocation::File(path) => absolute(&path)?.display().to_string(),
            _ => module.to_owned(),
        };
        Ok(Self {
            entry: Map::from_iter([("module".to_owned(), Value::from(module))]),
        })
    }

    /// Replaces the settings.
    pub fn settings(mut self, settings: Value) -> Self {
        self.entry.insert("settings".into(), settings);
        self
    }

    /// Adds grants (`apiVersion/Kind`, as `v1/Namespace` or `apps/v1/Deployment`).
    pub fn allow_context(mut self, kinds: &[String]) -> anyhow::Result<Self> {
        let grants = self
            .entry
            .entry("contextAwareResources")
            .or_insert_with(|| json!([]));
        let Some(grants) = grants.as_array_mut() else {
            bail!("contextAwareResources is not a list");
        };
        for kind in kinds {
            let kind = parse_kind("--allow-context", kind)?;
            grants.push(json!({"apiVersion": kind.api_version, "kind": kind.kind}));
        }
        Ok(self)
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("module {}", path.display()))
}

/// How long the first list of every kind from a live cluster may take.
pub const LIST_WITHIN: Duration = Duration::from_secs(120);

/// Where the policies' cluster state comes from.
#[derive(Debug, Clone)]
pub enum ClusterChoice {
    None,
    Snapshot(PathBuf),
    Live { kubeconfig: Option<PathBuf> },
}

/// How an author's command loads its policies.
#[derive(Clone)]
pub struct LoadHow {
    /// Winch by default, for a quick answer: verdicts are the same on either tier.
    pub compilers: Compilers,
    /// A policy that does not load answers every request with the reason.
    pub continue_on_errors: bool,
    pub host_call_recorder: Option<Arc<dyn HostCallRecorder>>,
    /// `sources.yml` and Docker `config.json`, for remote modules.
    pub sources: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
}

impl Default for LoadHow {
    fn default() -> Self {
        Self {
            compilers: Compilers::Winch,
            continue_on_errors: false,
            host_call_recorder: None,
            sources: None,
            docker_config: None,
        }
    }
}

/// Loaded policies, by id, and what they run on.
pub struct Session {
    pub runtime: Arc<Runtime>,
    pub policies: HashMap<String, Arc<Policy>>,
    /// Kept for the reflectors of a live cluster.
    _cluster: Option<Cluster>,
}

/// What one evaluation came to.
#[derive(Debug)]
pub struct Evaluation {
    /// The AdmissionReview the server would answer.
    pub review: Value,
    /// The JSON Patch of a mutation, decoded.
    pub patch: Option<Value>,
    /// The object after the policy's patch, for a mutation.
    pub patched_object: Option<Value>,
    /// In monitor mode, the response the policy's own verdict makes (the server allows
    /// the request whatever it is).
    pub policy_verdict: Option<Value>,
    /// The evaluation itself failed (a trap, a timeout, a policy that did not load): the
    /// rejection is the server's, not the policy's verdict.
    pub failed: bool,
}

impl Session {
    /// Loads `entries` (by id) with the cluster `cluster` gives.
    pub async fn load(
        entries: Vec<(String, PolicyEntry)>,
        cluster: &ClusterChoice,
        how: LoadHow,
    ) -> anyhow::Result<Self> {
        let LoadHow {
            compilers,
            continue_on_errors,
            host_call_recorder,
            sources,
            docker_config,
        } = how;
        let document: Map<String, Value> = entries
            .into_iter()
            .map(|(id, entry)| (id, Value::Object(entry.entry)))
            .collect();
        let file = PoliciesFile::parse(&Value::Object(document).to_string(), PathBuf::new())?;
        let kinds = super::super::cluster::granted(&file).kinds;
        let cluster = load_cluster(kinds, cluster).await?;
        let runtime = Arc::new(Runtime::new(RuntimeConfig {
            compilers,
            ..RuntimeConfig::default()
        })?);
        // A store of the user's: `serve`'s keeps only what its policies.yml names.
        let fetcher = Fetcher::new(super::module_store(), sources.as_deref(), docker_config)?;
        let paths = Arc::new(fetcher.fetch(&file).await);
        let cache: Arc<dyn ClusterCache> = match &cluster {
            Some(cluster) => cluster.state.clone(),
            None => Arc::new(NoCluster),
        };
        let reviewer = cluster
            .as_ref()
            .and_then(|cluster| cluster.reviewer.clone());
        let options = LoadOptions {
            default_timeout: crate::cli::DEFAULT_POLICY_TIMEOUT,
            continue_on_errors,
            host_call_recorder,
        };
        let progress = super::progress::after_a_second("compiling");
        let LoadedPolicies { policies, upgrades } = tokio::task::spawn_blocking({
            let (runtime, paths) = (runtime.clone(), paths.clone());
            move || load_policies(&file, &paths, &runtime, cache, reviewer, &options)
        })
        .await
        .context("policy loading panicked")??;
        fetcher.commit(&paths);
        // An author's command runs the code it compiled: nothing to upgrade to.
        drop(upgrades);
        drop(progress);
        Ok(Self {
            runtime,
            policies,
            _cluster: cluster,
        })
    }

    /// Evaluates `review` with policy `id` as `/validate/{id}` does.
    pub fn evaluate(&self, id: &str, review: &Value) -> anyhow::Result<Evaluation> {
        let policy = self
            .policies
            .get(id)
            .with_context(|| format!("no policy '{id}' was loaded"))?;
        let bytes = serde_json::to_vec(review)?;
        let incoming =
            IncomingReview::parse(&bytes).context("the request is not an AdmissionReview")?;
        // As the server refuses it (400): the answer could not echo the uid.
        if incoming.uid.is_empty() {
            bail!("request.uid is missing or empty; an AdmissionReview's answer must echo it");
        }
        // A panic in the host costs the evaluation, as on the server's workers.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            policy.validate(&self.runtime, &incoming.request)
        }))
        .unwrap_or_else(|_| Err(EvalError::Trap("the evaluation panicked".into())));
        let failed = outcome.is_err() || policy.load_error().is_some();
        // In monitor mode the server allows whatever the policy said: keep what it said.
        let policy_verdict = match (&outcome, policy.mode) {
            (Ok(verdict), PolicyMode::Monitor) => Some(serde_json::to_value(decide(
                policy,
                Endpoint::Audit,
                &incoming,
                Ok(verdict.clone()),
            ))?),
            _ => None,
        };
        let response = decide(policy, Endpoint::Validate, &incoming, outcome);
        let patch = match &response.patch {
            Some(patch) => Some(decoded_patch(patch)?),
            None => None,
        };
        let patched_object = match &patch {
            Some(patch) => Some(apply_patch(review, patch)?),
            None => None,
        };
        let review =
            serde_json::to_value(OutgoingReview::new(incoming.api_version.clone(), response))?;
        Ok(Evaluation {
            review,
            patch,
            patched_object,
            policy_verdict,
            failed,
        })
    }
}

/// The JSON Patch of a response (base64 in it).
fn decoded_patch(patch: &str) -> anyhow::Result<Value> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(patch)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The request's object with `patch` applied.
fn apply_patch(review: &Value, patch: &Value) -> anyhow::Result<Value> {
    let patch: json_patch::Patch = serde_json::from_value(patch.clone())?;
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).context("the policy's patch does not apply")?;
    Ok(object)
}

/// Waits until every kind has been listed once (a live cluster lists in the
/// background); names those that were not within `within`.
pub async fn wait_listed(
    cluster: &Cluster,
    kinds: &[ResourceKind],
    within: Duration,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let pending: Vec<String> = kinds
            .iter()
            .filter(|kind| !cluster.state.is_synced(kind))
            .map(ToString::to_string)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!(
                "the cluster did not list {} within {within:?}",
                pending.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `apiVersion/Kind` (`v1/Namespace`, `apps/v1/Deployment`), as `flag` gave it.
pub fn parse_kind(flag: &str, kind: &str) -> anyhow::Result<ResourceKind> {
    match kind.rsplit_once('/') {
        Some((api_version, name)) if !api_version.is_empty() && !name.is_empty() => {
            Ok(ResourceKind::new(api_version, name))
        }
        _ => {
            bail!("{flag} {kind}: expected apiVersion/Kind, as v1/Namespace or apps/v1/Deployment")
        }
    }
}

async fn load_cluster(
    kinds: Vec<ResourceKind>,
    choice: &ClusterChoice,
) -> anyhow::Result<Option<Cluster>> {
    if kinds.is_empty() {
        return Ok(None);
    }
    let names = || {
        kinds
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let source = match choice {
        ClusterChoice::None => bail!(
            "the policy may read {} from the cluster: give --cluster-snapshot FILE (record one \
             with `policy-server snapshot`) or --live-cluster",
            names()
        ),
        ClusterChoice::Snapshot(path) => {
            // A kind the file lacks would silently read as empty: say so instead.
            let present = crate::cache::snapshot_file::load(path)?;
            if let Some(missing) = kinds.iter().find(|kind| !present.has(kind)) {
                bail!(
                    "the policy may read {missing}, and cluster snapshot {} has no object of it: \
                     add some, or an empty `kind: {}List` document if the policy should see none",
                    path.display(),
                    missing.kind
                );
            }
            CacheSource::File(path.clone())
        }
        ClusterChoice::Live { kubeconfig } => CacheSource::Cluster {
            kubeconfig: kubeconfig.clone(),
        },
    };
    let cluster = crate::cache::start(kinds.clone(), &source, false).await?;
    if let Some((kind, reason)) = cluster.unserved.first() {
        bail!("the cluster does not serve {kind}: {reason}");
    }
    wait_listed(&cluster, &kinds, LIST_WITHIN).await?;
    Ok(Some(cluster))
}
