//! Hot reload of policies.yml: on SIGHUP, and when the file changes on disk (checked
//! every 2 s, following symlinks, so a ConfigMap update, which swaps a symlink, is seen).
//!
//! The new set is read, compiled and its settings checked off the request path; only a
//! set that loads whole replaces the served one (`--continue-on-errors` applies at start
//! only: a reload never swaps in a policy that fails). A bad file leaves the old set
//! serving, and says why in the log and in `policy_server_policy_reloads_total`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use guest_adapter::{AccessReviewer, ClusterCache, NoCluster};
use tokio::signal::unix::{SignalKind, signal};

use super::cluster::{Granted, granted};
use crate::cache::ClusterState;
use crate::config::PoliciesFile;
use crate::metrics::{LoadOutcome, metrics};
use crate::policy::{
    Evaluator, LoadOptions, LoadedPolicies, ServedPolicies, WorkerLimits, load_policies,
};
use crate::runtime::{Runtime, upgrade_in_background};
use crate::tls::FileStamp;

/// How often the file is looked at.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What a reload needs: where the file is, and what the first load was given.
pub(super) struct Reloader {
    pub path: PathBuf,
    pub allow_empty: bool,
    pub served: Arc<ServedPolicies>,
    pub runtime: Arc<Runtime>,
    pub cache: Option<Arc<ClusterState>>,
    pub reviewer: Option<Arc<dyn AccessReviewer>>,
    pub options: LoadOptions,
    pub worker_limits: WorkerLimits,
}

impl Reloader {
    /// Reloads on SIGHUP or a change of the file, until the task is dropped. The SIGHUP
    /// handler is installed now, not when the task first runs: SIGHUP's default action
    /// ends the process.
    pub(super) fn start(self) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        Ok(tokio::spawn(self.run(hangups)))
    }

    async fn run(self, mut hangups: tokio::signal::unix::Signal) {
        let mut seen = FileStamp::of(&self.path);
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                _ = hangups.recv() => "SIGHUP",
                _ = poll.tick() => {
                    let now = FileStamp::of(&self.path);
                    if now == seen {
                        continue;
                    }
                    "the file changed"
                }
            };
            // Taken before reading, so a change made while loading is loaded next time.
            seen = FileStamp::of(&self.path);
            self.reload(trigger).await;
        }
    }

    async fn reload(&self, trigger: &'static str) {
        let started = Instant::now();
        tracing::info!(%trigger, path = %self.path.display(), "reloading policies");
        match self.load().await {
            Ok(LoadedPolicies { policies, upgrades }) => {
                let count = policies.len();
                self.served.replace(Evaluator::new(
                    self.runtime.clone(),
                    policies,
                    self.worker_limits,
                ));
                metrics().policies_reloaded(LoadOutcome::Loaded);
                tracing::info!(policies = count, elapsed = ?started.elapsed(), "policies reloaded");
                self.runtime.release_compiler();
                if upgrades.is_empty() {
                    crate::memory::release_freed_memory();
                } else if let Err(e) = upgrade_in_background(self.runtime.clone(), upgrades) {
                    tracing::warn!(
                        "cannot start the thread that upgrades compiled policies: {e:#}"
                    );
                }
            }
            Err(e) => {
                metrics().policies_reloaded(LoadOutcome::Failed);
                tracing::error!("reload failed, the policies loaded before keep serving: {e:#}");
            }
        }
    }

    async fn load(&self) -> anyhow::Result<LoadedPolicies> {
        let file = PoliciesFile::load(&self.path, self.allow_empty)?;
        let Granted { kinds, .. } = granted(&file);
        let missing: Vec<String> = kinds
            .iter()
            .filter(|kind| {
                !self
                    .cache
                    .as_ref()
                    .is_some_and(|cache| cache.kinds().any(|cached| cached.matches(kind)))
            })
            .map(ToString::to_string)
            .collect();
        anyhow::ensure!(
            missing.is_empty(),
            "a policy is granted {}, which the server does not cache: a newly granted kind takes a restart",
            missing.join(", ")
        );
        let cache: Arc<dyn ClusterCache> = match &self.cache {
            Some(state) => state.clone(),
            None => Arc::new(NoCluster),
        };
        let (runtime, reviewer) = (self.runtime.clone(), self.reviewer.clone());
        let options = LoadOptions {
            continue_on_errors: false,
            ..self.options.clone()
        };
        tokio::task::spawn_blocking(move || {
            load_policies(&file, &runtime, cache, reviewer, &options)
        })
        .await
        .context("policy loading panicked")?
    }
}
