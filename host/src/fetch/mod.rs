//! Where policy modules come from. A `module` in policies.yml is a local file, an OCI
//! artifact (`registry://`) or a URL (`https://`); remote ones are fetched into a local
//! store, by digest, before the policies load (see [`Fetcher::fetch`]). Kubewarden's
//! `sources.yml` and Docker's `config.json` say how each host is reached.

mod credentials;
mod failure;
mod location;
pub mod registry;
mod sources;
pub mod store;
mod url;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::anyhow;

pub use credentials::Credentials;
pub use location::ModuleLocation;
pub use sources::Sources;
pub use store::ModuleStore;

use crate::config::{PoliciesFile, PolicyConfig};
use crate::metrics::{FetchOutcome, metrics};
use store::Pin;

/// A registry or server that does not answer within this is taken as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A transfer that stalls this long is abandoned.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// One attempt at a module, whole: a source that trickles bytes must not hold a start
/// or a reload for ever.
const ATTEMPT_WITHIN: Duration = Duration::from_secs(300);
const USER_AGENT: &str = concat!("policy-server/", env!("CARGO_PKG_VERSION"));

/// How remote modules are fetched: where they are stored, and how hosts are reached.
#[derive(Debug)]
pub struct Fetcher {
    store_dir: PathBuf,
    store: OnceLock<ModuleStore>,
    sources: Sources,
    credentials: Credentials,
    /// Whether a source out of reach may be stood in for by the copy fetched before.
    stale_copies: bool,
}

/// Where each policy's module is on disk, or why it could not be fetched; and what the
/// sources named, to be noted once the policies load ([`Fetcher::commit`]).
#[derive(Debug, Default)]
pub struct ModulePaths {
    paths: HashMap<String, Result<PathBuf, String>>,
    pins: Vec<Pin>,
}

/// A module fetched: where it is, how it came, and what its source now names.
struct Fetched {
    path: PathBuf,
    outcome: FetchOutcome,
    /// Noted only once the policies load, so a set that fails to load does not make
    /// its module the copy a later outage falls back to.
    pin: Option<Pin>,
}

impl ModulePaths {
    /// The module of `config`, as a local file.
    pub fn of(&self, config: &PolicyConfig) -> anyhow::Result<&Path> {
        match self.paths.get(&config.module) {
            Some(Ok(path)) => Ok(path),
            Some(Err(reason)) => Err(anyhow!("{reason}")),
            None => Err(anyhow!("module {} was not fetched", config.module)),
        }
    }
}

impl Fetcher {
    /// `sources` is read now, so a bad file fails the start, not a pull.
    pub fn new(
        store_dir: PathBuf,
        sources: Option<&Path>,
        docker_config: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            store_dir,
            store: OnceLock::new(),
            sources: sources.map(Sources::load).transpose()?.unwrap_or_default(),
            credentials: Credentials::new(docker_config),
            stale_copies: true,
        })
    }

    /// Fails a module whose source cannot be reached, rather than serving the copy
    /// fetched before: for `precompile`, which must not bake an outdated policy into an
    /// image.
    pub fn without_stale_copies(mut self) -> Self {
        self.stale_copies = false;
        self
    }

    /// The store, made on first use: a server of local files never writes it.
    fn store(&self) -> anyhow::Result<&ModuleStore> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let store = ModuleStore::open(&self.store_dir)?;
        Ok(self.store.get_or_init(|| store))
    }

    /// Fetches every remote module of `file` (each once, all at once) and resolves local
    /// ones. A module that cannot be fetched is an error for its policies alone.
    pub async fn fetch(&self, file: &PoliciesFile) -> ModulePaths {
        let mut paths = HashMap::new();
        let mut remote = BTreeMap::new();
        for config in file.policies.values() {
            match ModuleLocation::parse(&config.module, &file.dir) {
                Ok(ModuleLocation::File(path)) => {
                    paths.insert(config.module.clone(), Ok(path));
                }
                Ok(location) => {
                    remote.insert(config.module.clone(), location);
                }
                Err(err) => {
                    paths.insert(config.module.clone(), Err(format!("{err:#}")));
                }
            }
        }
        let fetched =
            futures::future::join_all(remote.into_iter().map(|(module, location)| async move {
                let fetched = self
                    .fetch_one(&location, &module)
                    .await
                    .map_err(|err| format!("cannot fetch {module}: {err:#}"));
                (module, fetched)
            }))
            .await;
        let mut pins = Vec::new();
        for (module, fetched) in fetched {
            let path = fetched.map(|fetched| {
                pins.extend(fetched.pin);
                fetched.path
            });
            paths.insert(module, path);
        }
        ModulePaths { paths, pins }
    }

    /// Notes what each source named, once the policies it was fetched for load: the
    /// copy a later outage falls back to is one that loaded.
    pub fn commit(&self, paths: &ModulePaths) {
        let Some(store) = self.store.get() else {
            return;
        };
        for pin in &paths.pins {
            if let Err(err) = store.pin(pin) {
                tracing::warn!(module = %pin.source, "cannot note the fetched module: {err:#}");
            }
        }
    }

    /// Removes from the store what `file` does not name (a tag that moved, a URL that
    /// changed, a policy dropped), once its policies serve.
    pub fn keep_only(&self, file: &PoliciesFile) {
        let Some(store) = self.store.get() else {
            return;
        };
        let sources: Vec<&str> = file.policies.values().map(|p| p.module.as_str()).collect();
        if let Err(err) = store.keep_only(&sources) {
            tracing::warn!("cannot clean the policy download directory: {err:#}");
        }
    }

    async fn fetch_one(&self, location: &ModuleLocation, module: &str) -> anyhow::Result<Fetched> {
        let (source, fetched) = match location {
            ModuleLocation::File(path) => {
                return Ok(Fetched {
                    path: path.clone(),
                    outcome: FetchOutcome::Stored,
                    pin: None,
                });
            }
            ModuleLocation::Registry(reference) => {
                ("registry", registry::pull(self, reference, module).await)
            }
            ModuleLocation::Url(address) => {
                let host = location.host().unwrap_or_default();
                ("url", url::download(self, address, &host, module).await)
            }
        };
        let outcome = match &fetched {
            Ok(fetched) => fetched.outcome,
            Err(_) => FetchOutcome::Failed,
        };
        metrics().module_fetched(source, outcome);
        fetched
    }
}

/// Runs one attempt at a source within [`ATTEMPT_WITHIN`]; one that takes longer is an
/// outage (so the copy fetched before may stand in).
async fn within_deadline<T>(attempt: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(ATTEMPT_WITHIN, attempt).await {
        Ok(result) => result,
        Err(_) => Err(failure::Outage(format!(
            "no complete answer within {} s",
            ATTEMPT_WITHIN.as_secs()
        ))
        .into()),
    }
}

/// With the source out of reach, the module it named when last fetched, if the store
/// still holds it intact (and stale copies are allowed): a restart during a registry
/// outage keeps its policies.
async fn stored_instead(
    fetcher: &Fetcher,
    pinned: Option<Pin>,
    source: &str,
    err: anyhow::Error,
) -> anyhow::Result<Fetched> {
    let store = fetcher.store()?;
    let stored = match pinned.filter(|_| fetcher.stale_copies) {
        Some(pin) => store
            .verified_in_background(&pin.module)
            .await
            .map(|path| (path, pin.module)),
        None => None,
    };
    match stored {
        Some((path, digest)) => {
            tracing::warn!(
                module = source,
                %digest,
                reason = format!("{err:#}"),
                "cannot reach the module's source: serving the copy fetched before"
            );
            Ok(Fetched {
                path,
                outcome: FetchOutcome::StaleCopy,
                pin: None,
            })
        }
        None => Err(err),
    }
}
