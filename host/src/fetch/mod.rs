//! Where policy modules come from. A `module` in policies.yml is a local file, an OCI
//! artifact (`registry://`) or a URL (`https://`); remote ones are fetched into a local
//! store, by digest, before the policies load (see [`Fetcher::fetch`]). Kubewarden's
//! `sources.yml` and Docker's `config.json` say how each host is reached.

mod credentials;
mod location;
pub mod registry;
mod sources;
pub mod store;
mod url;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, anyhow};

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
const USER_AGENT: &str = concat!("policy-server/", env!("CARGO_PKG_VERSION"));

/// How remote modules are fetched: where they are stored, and how hosts are reached.
#[derive(Debug)]
pub struct Fetcher {
    store_dir: PathBuf,
    store: OnceLock<ModuleStore>,
    sources: Sources,
    credentials: Credentials,
}

/// Where each policy's module is on disk, or why it could not be fetched.
#[derive(Debug, Default)]
pub struct ModulePaths(HashMap<String, Result<PathBuf, String>>);

impl ModulePaths {
    /// The module of `config`, as a local file.
    pub fn of(&self, config: &PolicyConfig) -> anyhow::Result<&Path> {
        match self.0.get(&config.module) {
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
        })
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
                let path = self
                    .fetch_one(&location, &module)
                    .await
                    .map_err(|err| format!("cannot fetch {module}: {err:#}"));
                (module, path)
            }))
            .await;
        paths.extend(fetched);
        ModulePaths(paths)
    }

    async fn fetch_one(&self, location: &ModuleLocation, module: &str) -> anyhow::Result<PathBuf> {
        let (source, fetched) = match location {
            ModuleLocation::File(path) => return Ok(path.clone()),
            ModuleLocation::Registry(reference) => {
                ("registry", registry::pull(self, reference, module).await)
            }
            ModuleLocation::Url(address) => {
                let host = location.host().context("the URL has no host")?;
                ("url", url::download(self, address, &host, module).await)
            }
        };
        let outcome = match &fetched {
            Ok((_, outcome)) => *outcome,
            Err(_) => FetchOutcome::Failed,
        };
        metrics().module_fetched(source, outcome);
        fetched.map(|(path, _)| path)
    }
}

/// Whether `err` says the other end could not be reached (refused, timed out, or not
/// speaking the protocol asked), rather than answering no.
fn is_unreachable(err: &anyhow::Error) -> bool {
    !is_untrusted(err)
        && err.chain().any(|cause| {
            cause
                .downcast_ref::<reqwest::Error>()
                .is_some_and(|err| err.is_connect() || err.is_timeout())
                || matches!(
                    cause.downcast_ref::<oci_client::errors::OciDistributionError>(),
                    Some(oci_client::errors::OciDistributionError::RequestError(err))
                        if err.is_connect() || err.is_timeout()
                )
        })
}

/// Whether `err` is a TLS certificate the host's authorities do not vouch for: an answer,
/// not an outage, and one the operator fixes in `sources.yml`.
fn is_untrusted(err: &anyhow::Error) -> bool {
    // An io::Error's source() skips the error it wraps (and TLS errors come wrapped
    // twice): unwrap those by hand.
    let untrusted = |mut cause: &(dyn std::error::Error + 'static)| loop {
        if let Some(rustls::Error::InvalidCertificate(_)) = cause.downcast_ref::<rustls::Error>() {
            return true;
        }
        match cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => cause = inner,
            None => return false,
        }
    };
    err.chain().any(untrusted)
}

/// Says that `host`'s certificate is not trusted, and how to make it so.
fn untrusted_hint(host: &str) -> String {
    format!(
        "the TLS certificate of {host} is not trusted: add the CA that signed it to \
         source_authorities, or list the host in insecure_sources (--sources-path)"
    )
}

/// With the source out of reach, the module it named when last fetched, if the store
/// still holds it intact: a restart during a registry outage keeps its policies.
fn stored_instead(
    store: &ModuleStore,
    pinned: Option<Pin>,
    source: &str,
    err: anyhow::Error,
) -> anyhow::Result<(PathBuf, FetchOutcome)> {
    match pinned.and_then(|pin| Some((store.verified(&pin.module)?, pin.module))) {
        Some((path, digest)) => {
            tracing::warn!(
                module = source,
                %digest,
                reason = format!("{err:#}"),
                "cannot reach the module's source: serving the copy fetched before"
            );
            Ok((path, FetchOutcome::StaleCopy))
        }
        None => Err(err),
    }
}
