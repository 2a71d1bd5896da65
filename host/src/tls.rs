//! The webhook's TLS configuration (rustls, ring provider), with the certificate
//! reloaded when its files change: cert-manager rotates them in place (a Secret volume
//! swaps a symlink), and the server must pick the new pair up without a restart or a
//! dropped connection. New handshakes get the new pair; open connections keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the certificate files are looked at.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Builds a server config from PEM files, offering HTTP/2 and HTTP/1.1 through ALPN, and
/// the resolver whose [`ReloadingCertificate::watch`] keeps it current.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<ReloadingCertificate>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(ReloadingCertificate::load(
        cert_file,
        key_file,
        provider.clone(),
    )?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), resolver))
}

/// The served certificate and key, replaced when their files change and the new pair is
/// good; a bad new pair is logged and the old one kept.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// What the files looked like when `key` was read from them.
    seen: FilesSeen,
}

/// The stamps of the certificate and the key file (`None` while one cannot be read).
type FilesSeen = [Option<FileStamp>; 2];

/// What a rotation changes in a file, following symlinks as a Secret or ConfigMap
/// volume's are: at least one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    inode: u64,
    modified: SystemTime,
    len: u64,
}

impl FileStamp {
    /// The file's stamp now; none if it cannot be read.
    pub(crate) fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        Some(Self {
            inode: metadata.ino(),
            modified: metadata.modified().ok()?,
            len: metadata.len(),
        })
    }
}

impl ReloadingCertificate {
    fn load(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Self> {
        let seen = files_seen(cert_file, key_file);
        let key = read_pair(cert_file, key_file, &provider)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            current: RwLock::new(Loaded {
                key: Arc::new(key),
                seen,
            }),
        })
    }

    /// Re-reads the pair if its files changed since the last look. True if a new pair
    /// is now served.
    pub fn reload_if_changed(&self) -> bool {
        let seen = files_seen(&self.cert_file, &self.key_file);
        if self.current.read().unwrap_or_else(|e| e.into_inner()).seen == seen {
            return false;
        }
        let result = read_pair(&self.cert_file, &self.key_file, &self.provider);
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        // Looked at again only once the files change again: a half-written pair is retried
        // when the second file lands.
        current.seen = seen;
        match result {
            Ok(key) => {
                current.key = Arc::new(key);
                tracing::info!(cert_file = %self.cert_file.display(), "serving the new TLS certificate");
                true
            }
            Err(err) => {
                tracing::error!(
                    cert_file = %self.cert_file.display(),
                    "the TLS certificate files changed but do not hold a usable pair; still serving the previous one: {err:#}"
                );
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_CHECK_INTERVAL`] for as long as the server runs.
    pub fn watch(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RELOAD_CHECK_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let this = self.clone();
                // File reads and key parsing are blocking work.
                let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .key
                .clone(),
        )
    }
}

fn files_seen(cert_file: &Path, key_file: &Path) -> FilesSeen {
    [cert_file, key_file].map(FileStamp::of)
}

fn read_pair(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("cannot read certificate file {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid certificate in {}", cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate found in {}",
        cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("cannot read a private key from {}", key_file.display()))?;
    CertifiedKey::from_der(certs, key, provider)
        .context("the certificate does not match the private key")
}
