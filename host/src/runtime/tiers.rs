//! Tiers: a policy serves from the first compile that can run it, and a better compile of
//! the same policy (its start-up pre-initialized, its code optimized) replaces it in the
//! background. Readiness waits for one compile per module, not for every pass that makes
//! evaluations faster.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde_json::value::RawValue;

use super::{EvalError, GuestCall, GuestVerdict, PolicyGuest, Runtime, SettingsVerdict};

/// Work that makes a better compile than the first; an error says why the first stays
/// (not a failure: the first one serves correctly).
pub type Upgrade<G> = Box<dyn FnOnce(&Runtime) -> anyhow::Result<G> + Send>;

/// What a runner's compile returns: a guest that can serve now, and maybe the work that
/// would make a better one.
pub struct FirstCompile<G> {
    pub guest: G,
    pub upgrade: Option<Upgrade<G>>,
}

impl<G> FirstCompile<G> {
    pub fn done(guest: G) -> Self {
        Self {
            guest,
            upgrade: None,
        }
    }

    /// The same, as any guest.
    pub fn into_dyn(self) -> FirstCompile<Arc<dyn PolicyGuest>>
    where
        G: PolicyGuest + 'static,
    {
        FirstCompile {
            guest: Arc::new(self.guest),
            upgrade: self
                .upgrade
                .map(|upgrade| -> Upgrade<Arc<dyn PolicyGuest>> {
                    Box::new(move |runtime: &Runtime| {
                        upgrade(runtime).map(|better| Arc::new(better) as Arc<dyn PolicyGuest>)
                    })
                }),
        }
    }

    /// The best compile there is, waiting for the upgrade: for tools that do not serve
    /// (benchmarks, `precompile`) and for tests.
    pub fn finish(self, runtime: &Runtime) -> G {
        match self.upgrade {
            Some(upgrade) => match upgrade(runtime) {
                Ok(better) => better,
                Err(reason) => {
                    tracing::info!("{reason:#}");
                    self.guest
                }
            },
            None => self.guest,
        }
    }
}

/// A compiled policy whose code can be replaced while it serves: each call runs to its
/// end on the code that was current when it began.
pub struct Swappable {
    current: RwLock<Arc<dyn PolicyGuest>>,
}

impl Swappable {
    pub fn new(first: Arc<dyn PolicyGuest>) -> Self {
        Self {
            current: RwLock::new(first),
        }
    }

    fn current(&self) -> Arc<dyn PolicyGuest> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, better: Arc<dyn PolicyGuest>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = better;
    }
}

impl PolicyGuest for Swappable {
    fn validate(
        &self,
        call: GuestCall<'_>,
        request: &RawValue,
        settings: &str,
    ) -> Result<GuestVerdict, EvalError> {
        self.current().validate(call, request, settings)
    }

    fn validate_settings(
        &self,
        call: GuestCall<'_>,
        settings: &str,
    ) -> Result<SettingsVerdict, EvalError> {
        self.current().validate_settings(call, settings)
    }

    fn protocol_version(&self, call: GuestCall<'_>) -> Option<String> {
        self.current().protocol_version(call)
    }

    fn is_pre_initialized(&self) -> bool {
        self.current().is_pre_initialized()
    }
}

/// An upgrade waiting to run for a module that serves now.
pub struct PendingUpgrade {
    pub module: String,
    pub target: Arc<Swappable>,
    pub work: Upgrade<Arc<dyn PolicyGuest>>,
}

impl PendingUpgrade {
    /// Does the upgrade and swaps the module's code, or logs why the first code stays.
    pub fn run(self, runtime: &Runtime) {
        let started = Instant::now();
        let _span = tracing::info_span!("upgrade", module = %self.module).entered();
        match (self.work)(runtime) {
            Ok(better) => {
                let pre_initialized = better.is_pre_initialized();
                self.target.replace(better);
                tracing::info!(module = %self.module, elapsed = ?started.elapsed(), pre_initialized, "upgraded");
            }
            Err(reason) => tracing::info!(module = %self.module, "{reason:#}"),
        }
    }
}

/// Runs the upgrades one after another on a thread of their own, then logs the compile
/// cache's figures (which only then are final).
pub fn upgrade_in_background(
    runtime: Arc<Runtime>,
    pending: Vec<PendingUpgrade>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("policy-upgrades".into())
        .spawn(move || {
            let started = Instant::now();
            let upgrades = pending.len();
            for upgrade in pending {
                upgrade.run(&runtime);
            }
            // Compiling allocates far more than the code it leaves.
            runtime.release_compiler();
            crate::memory::release_freed_memory();
            runtime.log_compile_cache();
            tracing::info!(upgrades, elapsed = ?started.elapsed(), "upgrades done");
        })
}
