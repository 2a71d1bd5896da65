//! Start-up: read every module, refuse what this server cannot run, compile each distinct
//! module once, and validate every policy's settings through the policy itself.

use crate::metrics::{self, LoadOutcome};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use guest_adapter::{
    AccessReviewer, AccessRules, ClusterCache, HostCallRecorder, PolicyContext, ResourceKind,
};

use super::{Loaded, Policy};
use crate::config::{PoliciesFile, PolicyConfig};
use crate::fetch::ModulePaths;
use crate::runtime::component::ComponentModule;
use crate::runtime::metadata::{self, BinaryKind, ExecutionMode};
use crate::runtime::wapc::WapcModule;
use crate::runtime::{GuestCall, PendingUpgrade, PolicyGuest, Runtime, Swappable};
use crate::throttle::LogThrottle;

#[derive(Clone)]
pub struct LoadOptions {
    /// Time limit of a policy that sets no `timeoutEvalSeconds`.
    pub default_timeout: Duration,
    /// Serve the other policies when one fails to load; the failed one rejects every
    /// request with the reason.
    pub continue_on_errors: bool,
    /// Where host calls are recorded, if not in the process's metrics (`bench` times
    /// them).
    pub host_call_recorder: Option<Arc<dyn HostCallRecorder>>,
}

/// The policies of a file, ready to serve, and the upgrades of their modules that are
/// left to run (see [`crate::runtime::upgrade_in_background`]).
pub struct LoadedPolicies {
    pub policies: HashMap<String, Arc<Policy>>,
    pub upgrades: Vec<PendingUpgrade>,
}

/// Loads every policy of `file`. Fails on the first broken policy unless
/// `continue_on_errors` is set.
pub fn load_policies(
    file: &PoliciesFile,
    paths: &ModulePaths,
    runtime: &Runtime,
    cache: Arc<dyn ClusterCache>,
    reviewer: Option<Arc<dyn AccessReviewer>>,
    options: &LoadOptions,
) -> anyhow::Result<LoadedPolicies> {
    let mut modules = Modules::default();
    let mut policies = HashMap::new();
    for (id, config) in &file.policies {
        let timeout = config.timeout().unwrap_or(options.default_timeout);
        let access = AccessRules::new(
            config
                .context_aware_resources
                .iter()
                .map(|r| ResourceKind::new(&r.api_version, &r.kind)),
        );
        let mut context = PolicyContext::new(id.as_str(), access, cache.clone()).with_recorder(
            options
                .host_call_recorder
                .clone()
                .unwrap_or_else(metrics::host_call_recorder),
        );
        if let Some(reviewer) = &reviewer {
            context = context.with_reviewer(reviewer.clone());
        }
        let context = Arc::new(context);
        let loaded = (|| {
            let settings = config.settings_json().to_string();
            let guest = load_module(config, paths, runtime, &mut modules)?;
            let loaded = Loaded { guest, context };
            check_settings(&*loaded.guest, loaded.call(runtime, timeout), id, &settings)?;
            anyhow::Ok((settings, loaded))
        })();
        metrics::metrics().policy_loaded(match loaded {
            Ok(_) => LoadOutcome::Loaded,
            Err(_) => LoadOutcome::Failed,
        });
        let (settings, state) = match loaded {
            Ok((settings, loaded)) => (settings, Ok(loaded)),
            Err(err) if options.continue_on_errors => {
                let reason = format!("{err:#}");
                tracing::error!(policy = %id, %reason, "policy failed to load; it will reject every request");
                (String::new(), Err(reason))
            }
            Err(err) => return Err(err.context(format!("policy '{id}' cannot be loaded"))),
        };
        let policy = Policy {
            id: id.as_str().into(),
            mode: config.policy_mode,
            allowed_to_mutate: config.allowed_to_mutate,
            custom_message: config.message.clone(),
            timeout,
            settings,
            state,
            failure_log: LogThrottle::default(),
        };
        policies.insert(id.clone(), Arc::new(policy));
    }
    Ok(LoadedPolicies {
        policies,
        upgrades: modules.upgrades,
    })
}

/// Modules compiled so far, by canonical path, and their upgrades still to run.
#[derive(Default)]
struct Modules {
    compiled: HashMap<PathBuf, Arc<dyn PolicyGuest>>,
    upgrades: Vec<PendingUpgrade>,
}

/// Reads, checks and compiles the module of a policy (fetched already, if remote), or
/// reuses it if another policy already loaded the same file.
fn load_module(
    config: &PolicyConfig,
    paths: &ModulePaths,
    runtime: &Runtime,
    modules: &mut Modules,
) -> anyhow::Result<Arc<dyn PolicyGuest>> {
    let path = paths.of(config)?;
    let path = path
        .canonicalize()
        .with_context(|| format!("cannot read module {}", path.display()))?;
    let module = match modules.compiled.get(&path) {
        Some(module) => module.clone(),
        None => {
            let bytes = std::fs::read(&path)
                .with_context(|| format!("cannot read module {}", path.display()))?;
            let (kind, metadata) =
                metadata::inspect(&bytes).with_context(|| format!("module {}", path.display()))?;
            if let Some(mode) = metadata.and_then(|m| m.execution_mode)
                && mode != ExecutionMode::KubewardenWapc
            {
                bail!(
                    "module {} is annotated with execution mode '{}', which this server does not run \
                     (it runs 'kubewarden-wapc' policies)",
                    path.display(),
                    mode.as_str()
                );
            }
            let started = std::time::Instant::now();
            // What compilation logs (such as why start-up cannot be pre-initialized) names
            // the module.
            let span = tracing::info_span!("compile", module = %path.display()).entered();
            // A component is told from a core module by its bytes: no field in policies.yml.
            let first = match kind {
                BinaryKind::CoreModule => WapcModule::compile(runtime, &bytes)
                    .with_context(|| format!("cannot compile module {}", path.display()))?
                    .into_dyn(),
                BinaryKind::Component => ComponentModule::compile(runtime, &bytes)
                    .with_context(|| format!("cannot compile component {}", path.display()))?
                    .into_dyn(),
            };
            drop(span);
            let pre_initialized = first.guest.is_pre_initialized();
            let upgrading = first.upgrade.is_some();
            tracing::info!(module = %path.display(), elapsed = ?started.elapsed(), pre_initialized, upgrading, "compiled");
            let module = match first.upgrade {
                Some(work) => {
                    let swappable = Arc::new(Swappable::new(first.guest));
                    modules.upgrades.push(PendingUpgrade {
                        module: path.display().to_string(),
                        target: swappable.clone(),
                        work,
                    });
                    swappable as Arc<dyn PolicyGuest>
                }
                None => first.guest,
            };
            modules.compiled.insert(path, module.clone());
            module
        }
    };
    Ok(module)
}

/// Asks the policy whether its settings are valid, before it serves anything.
fn check_settings(
    guest: &dyn PolicyGuest,
    call: GuestCall<'_>,
    id: &str,
    settings: &str,
) -> anyhow::Result<()> {
    if let Some(version) = guest.protocol_version(call) {
        tracing::debug!(policy = %id, %version, "protocol version");
    }
    let verdict = guest
        .validate_settings(call, settings)
        .context("settings validation failed")?;
    if !verdict.valid {
        bail!(
            "Policy settings are invalid: {}",
            verdict.message.as_deref().unwrap_or("no message")
        );
    }
    Ok(())
}
