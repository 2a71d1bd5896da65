//! Modules fetched from registries and URLs, kept on disk by digest: a restart finds what
//! it pulled before, and a module whose bytes no longer match its digest is not used.
//!
//! Layout: `modules/sha256/<hex>.wasm` for the bytes, `pins/<hash of the source>.json`
//! for which digest a source (a tag, a URL) named when it was last fetched.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest module fetched: well above the largest policies seen (a componentize-py
/// component is about 19 MB), far below what would hurt a node.
pub const MAX_MODULE_BYTES: u64 = 128 << 20;

#[derive(Debug, Clone)]
pub struct ModuleStore {
    dir: PathBuf,
}

/// What a source named when it was last fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub source: String,
    /// The digest of the registry manifest (none for a URL).
    pub manifest: Option<String>,
    /// `sha256:<hex>` of the module's bytes.
    pub module: String,
}

impl ModuleStore {
    /// Opens (making it, owner-only: its modules are compiled and run) the store in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        for sub in ["modules/sha256", "pins"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join(sub))
                .with_context(|| {
                    format!(
                        "cannot create the policy download directory {}",
                        dir.display()
                    )
                })?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn module_path(&self, digest: &str) -> anyhow::Result<PathBuf> {
        let Some(hex) = digest.strip_prefix("sha256:") else {
            bail!("digest {digest} is not a sha256 digest");
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("digest {digest} is malformed");
        }
        Ok(self
            .dir
            .join("modules/sha256")
            .join(format!("{}.wasm", hex.to_ascii_lowercase())))
    }

    /// The stored module of `digest`, if its bytes still hash to it; a module that does
    /// not (a disk error, a hand edit) is not used, and the next download replaces it.
    pub fn verified(&self, digest: &str) -> Option<PathBuf> {
        let path = self.module_path(digest).ok()?;
        let bytes = std::fs::read(&path).ok()?;
        if sha256_digest(&bytes) == digest.to_ascii_lowercase() {
            return Some(path);
        }
        tracing::warn!(path = %path.display(), %digest, "a stored module does not match its digest: it is fetched again");
        None
    }

    /// [`Self::verified`], off the async runtime's threads: hashing a module takes
    /// milliseconds per megabyte, and those threads also answer admission requests.
    pub async fn verified_in_background(&self, digest: &str) -> Option<PathBuf> {
        let (store, digest) = (self.clone(), digest.to_owned());
        tokio::task::spawn_blocking(move || store.verified(&digest))
            .await
            .ok()
            .flatten()
    }

    /// Keeps the pins of `sources` and the modules they name; removes every other pin
    /// and module, and what an interrupted download left.
    pub fn keep_only(&self, sources: &[&str]) -> anyhow::Result<()> {
        let mut kept = std::collections::HashSet::new();
        for source in sources {
            if let Some(pin) = self.pinned(source) {
                kept.insert(self.pin_path(source));
                kept.insert(self.module_path(&pin.module)?);
            }
        }
        for dir in [self.dir.join("pins"), self.dir.join("modules/sha256")] {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if !kept.contains(&path) {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && entry.file_name().to_string_lossy().starts_with(".tmp")
            {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    pub fn pinned(&self, source: &str) -> Option<Pin> {
        let text = std::fs::read(self.pin_path(source)).ok()?;
        serde_json::from_slice::<Pin>(&text)
            .ok()
            .filter(|pin| pin.source == source)
    }

    pub fn pin(&self, pin: &Pin) -> anyhow::Result<()> {
        let path = self.pin_path(&pin.source);
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(&serde_json::to_vec(pin)?)?;
        file.persist(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    fn pin_path(&self, source: &str) -> PathBuf {
        let name = sha256_digest(source.as_bytes());
        self.dir
            .join("pins")
            .join(format!("{}.json", &name["sha256:".len()..]))
    }

    /// A module being downloaded: bytes go to a temporary file beside the store, and into
    /// the store only once they are complete and match their digest.
    pub fn download(&self, limit: u64) -> anyhow::Result<Download<'_>> {
        Ok(Download {
            store: self,
            file: tempfile::NamedTempFile::new_in(&self.dir)
                .with_context(|| format!("cannot write in {}", self.dir.display()))?,
            hasher: Sha256::new(),
            written: 0,
            limit,
        })
    }
}

pub struct Download<'a> {
    store: &'a ModuleStore,
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    written: u64,
    limit: u64,
}

impl Download<'_> {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.written += chunk.len() as u64;
        if self.written > self.limit {
            bail!("the module is larger than {} bytes", self.limit);
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk)?;
        Ok(())
    }

    /// Stores the module by its digest (which must be `expected`, if given) and returns
    /// the digest and where the module is.
    pub fn finish(self, expected: Option<&str>) -> anyhow::Result<(String, PathBuf)> {
        let digest = format!("sha256:{:x}", self.hasher.finalize());
        if let Some(expected) = expected
            && !expected.eq_ignore_ascii_case(&digest)
        {
            bail!("the module's digest is {digest}, not {expected}");
        }
        let path = self.store.module_path(&digest)?;
        self.file
            .persist(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok((digest, path))
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_is_stored_by_digest_and_checked_when_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(dir.path()).unwrap();
        let module = b"\0asm\x01\0\0\0".repeat(100);
        let digest = sha256_digest(&module);
        let mut download = store.download(MAX_MODULE_BYTES).unwrap();
        for chunk in module.chunks(7) {
            download.write(chunk).unwrap();
        }
        let (stored_digest, path) = download.finish(Some(&digest)).unwrap();
        assert_eq!(stored_digest, digest);
        assert_eq!(std::fs::read(&path).unwrap(), module);
        assert_eq!(store.verified(&digest), Some(path.clone()));

        // A flipped byte on disk: not used; the next download replaces it.
        let mut corrupt = module.clone();
        corrupt[9] ^= 1;
        std::fs::write(&path, &corrupt).unwrap();
        assert_eq!(store.verified(&digest), None);
        let mut download = store.download(MAX_MODULE_BYTES).unwrap();
        download.write(&module).unwrap();
        download.finish(Some(&digest)).unwrap();
        assert_eq!(store.verified(&digest), Some(path.clone()));
        assert_eq!(store.verified("sha256:../../etc/passwd"), None);
    }

    #[test]
    fn a_download_over_its_limit_or_of_other_bytes_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(dir.path()).unwrap();
        let mut download = store.download(10).unwrap();
        download.write(&[0; 10]).unwrap();
        let err = download.write(&[0]).unwrap_err();
        assert!(err.to_string().contains("larger than 10 bytes"), "{err}");
        drop(download);

        let mut download = store.download(10).unwrap();
        download.write(b"abc").unwrap();
        let claimed = sha256_digest(b"abd");
        let err = download.finish(Some(&claimed)).unwrap_err();
        assert!(err.to_string().contains("not sha256:"), "{err}");
        assert_eq!(store.verified(&claimed), None);
        // Nothing is left behind but the store's own directories.
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 2);
    }

    #[test]
    fn only_what_the_sources_pin_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(dir.path()).unwrap();
        let stored = |bytes: &[u8], source: &str| {
            let mut download = store.download(MAX_MODULE_BYTES).unwrap();
            download.write(bytes).unwrap();
            let (digest, path) = download.finish(None).unwrap();
            store
                .pin(&Pin {
                    source: source.into(),
                    manifest: None,
                    module: digest.clone(),
                })
                .unwrap();
            (digest, path)
        };
        let (old, old_path) = stored(b"v1", "https://example.com/p.wasm");
        let (new, new_path) = stored(b"v2", "https://example.com/p.wasm");
        let (_, gone_path) = stored(b"other", "registry://r/other:v1");
        let leftover = tempfile::NamedTempFile::new_in(dir.path())
            .unwrap()
            .keep()
            .unwrap()
            .1;
        store.keep_only(&["https://example.com/p.wasm"]).unwrap();
        assert_eq!(store.verified(&new), Some(new_path));
        assert_eq!(store.verified(&old), None);
        assert!(!old_path.exists() && !gone_path.exists() && !leftover.exists());
        assert_eq!(store.pinned("registry://r/other:v1"), None);
    }

    #[test]
    fn pins_are_kept_per_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::open(dir.path()).unwrap();
        let pin = Pin {
            source: "registry://localhost:5000/p:v1".into(),
            manifest: Some(sha256_digest(b"manifest")),
            module: sha256_digest(b"module"),
        };
        store.pin(&pin).unwrap();
        assert_eq!(store.pinned(&pin.source), Some(pin.clone()));
        assert_eq!(store.pinned("registry://localhost:5000/p:v2"), None);
        let moved = Pin {
            module: sha256_digest(b"module v2"),
            ..pin.clone()
        };
        store.pin(&moved).unwrap();
        assert_eq!(store.pinned(&pin.source), Some(moved));
    }
}
