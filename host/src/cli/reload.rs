//! Hot reload of policies.yml: on SIGHUP, and when the file changes on disk (checked
//! every 2 s, following symlinks, so a ConfigMap update, which swaps a symlink, is seen).
//!
//! The new set is read, compiled and its settings checked off the request path; kinds it
//! newly reads are cached (listed) first. Only a set that loads whole replaces the served
//! one (`--continue-on-errors` applies at start only: a reload never swaps in a policy
//! that fails). A bad file leaves the old set serving, and says why in the log and in
//! `policy_server_policy_reloads_total`. Kinds no policy reads any more stop being
//! watched once the last request on the old set is answered.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use guest_adapter::{ClusterCache, NoCluster, ResourceKind};
use tokio::signal::unix::{SignalKind, signal};

use super::cluster::{Granted, granted};
use crate::cache::{CacheSource, Cluster};
use crate::config::PoliciesFile;
use crate::fetch::Fetcher;
use crate::metrics::cluster::ClusterCollector;
use crate::metrics::{LoadOutcome, metrics};
use crate::policy::{
    Evaluator, LoadOptions, LoadedPolicies, ServedPolicies, WorkerLimits, load_policies,
};
use crate::runtime::{Runtime, upgrade_in_background};
use crate::tls::FileStamp;

/// How often the file is looked at.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// A failed reload is tried again (the API server may have been down, the ClusterRole
/// not yet applied), first after this, then twice as long each time up to
/// [`MAX_RETRY_AFTER`], until one succeeds or the file changes.
const FIRST_RETRY_AFTER: Duration = Duration::from_secs(4);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// How long a reload waits for the first list of a newly granted kind.
const LIST_WITHIN: Duration = Duration::from_secs(60);

/// What a reload needs: where the file is, and what the first load was given.
pub(super) struct Reloader {
    pub path: PathBuf,
    pub allow_empty: bool,
    pub served: Arc<ServedPolicies>,
    pub runtime: Arc<Runtime>,
    pub fetcher: Arc<Fetcher>,
    /// The cache; made by the first reload that grants a kind if the start had none.
    pub cluster: Option<Cluster>,
    pub source: CacheSource,
    /// The kinds the served set reads.
    pub reading: Vec<ResourceKind>,
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

    async fn run(mut self, mut hangups: tokio::signal::unix::Signal) {
        let mut seen = FileStamp::of(&self.path);
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Replaced sets still answering requests: kinds are retired once none is.
        let mut retiring: Vec<Weak<Evaluator>> = Vec::new();
        // After a failed reload: when to try again, and how long to wait after that.
        let mut retry: Option<(Instant, Duration)> = None;
        loop {
            let trigger = tokio::select! {
                _ = hangups.recv() => Some("SIGHUP"),
                _ = poll.tick() => {
                    if FileStamp::of(&self.path) != seen {
                        Some("the file changed")
                    } else {
                        retry
                            .is_some_and(|(at, _)| Instant::now() >= at)
                            .then_some("retrying after a failure")
                    }
                }
            };
            retiring.retain(|old| old.strong_count() > 0);
            if retiring.is_empty() {
                self.retire_unread_kinds();
            }
            let Some(trigger) = trigger else {
                continue;
            };
            // Taken before reading, so a change made while loading is loaded next time.
            let now = FileStamp::of(&self.path);
            let changed = now != seen;
            seen = now;
            match self.reload(trigger).await {
                Some(old) => {
                    retiring.push(old);
                    retry = None;
                }
                None => {
                    let after = match retry {
                        Some((_, after)) if !changed => (after * 2).min(MAX_RETRY_AFTER),
                        _ => FIRST_RETRY_AFTER,
                    };
                    retry = Some((Instant::now() + after, after));
                }
            }
        }
    }

    /// Loads the file and swaps it in; the old set, if it was replaced.
    async fn reload(&mut self, trigger: &'static str) -> Option<Weak<Evaluator>> {
        let started = Instant::now();
        tracing::info!(%trigger, path = %self.path.display(), "reloading policies");
        match self.load().await {
            Ok((LoadedPolicies { policies, upgrades }, reading)) => {
                let count = policies.len();
                let old = self.served.replace(Evaluator::new(
                    self.runtime.clone(),
                    policies,
                    self.worker_limits,
                ));
                self.reading = reading;
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
                Some(old)
            }
            Err(e) => {
                metrics().policies_reloaded(LoadOutcome::Failed);
                tracing::error!("reload failed, the policies loaded before keep serving: {e:#}");
                None
            }
        }
    }

    async fn load(&mut self) -> anyhow::Result<(LoadedPolicies, Vec<ResourceKind>)> {
        let file = PoliciesFile::load(&self.path, self.allow_empty)?;
        let Granted {
            kinds,
            asks_access_reviews,
        } = granted(&file);
        if (!kinds.is_empty() || asks_access_reviews) && self.cluster.is_none() {
            let cluster = crate::cache::start(Vec::new(), &self.source, false).await?;
            metrics().register_collector(ClusterCollector(cluster.state.clone()));
            self.cluster = Some(cluster);
        }
        let added = match &self.cluster {
            Some(cluster) => cluster
                .add_kinds(&kinds, LIST_WITHIN)
                .await
                .context("cannot cache a newly granted kind")?,
            None => Vec::new(),
        };
        let cache: Arc<dyn ClusterCache> = match &self.cluster {
            Some(cluster) => cluster.state.clone(),
            None => Arc::new(NoCluster),
        };
        let reviewer = self.cluster.as_ref().and_then(|c| c.reviewer.clone());
        let runtime = self.runtime.clone();
        let options = LoadOptions {
            continue_on_errors: false,
            ..self.options.clone()
        };
        // Remote modules are fetched again: a tag may have moved.
        let paths = Arc::new(self.fetcher.fetch(&file).await);
        let loaded = tokio::task::spawn_blocking({
            let (file, paths) = (file.clone(), paths.clone());
            move || load_policies(&file, &paths, &runtime, cache, reviewer, &options)
        })
        .await
        .context("policy loading panicked")?;
        match loaded {
            Ok(loaded) => {
                self.fetcher.commit(&paths);
                self.fetcher.keep_only(&file);
                Ok((loaded, kinds))
            }
            Err(e) => {
                // Kinds cached for this set alone go with it.
                if let Some(cluster) = &self.cluster {
                    added.iter().for_each(|kind| cluster.remove_kind(kind));
                }
                Err(e)
            }
        }
    }

    /// Stops caching the kinds the served set does not read (only once no older set,
    /// which might, is still answering a request).
    fn retire_unread_kinds(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        for kind in cluster.state.kinds() {
            if !self.reading.iter().any(|read| read.matches(&kind)) {
                cluster.remove_kind(&kind);
            }
        }
    }
}
