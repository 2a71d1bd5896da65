//! The compile cache: compiled policies (machine code) and pre-initialized modules, kept
//! between runs so a restart compiles nothing.
//!
//! A cached artifact is loaded as code the server will run, so the cache must be this
//! server's alone: its directory is created 0700 and its files 0600, and a directory or
//! file owned by another user or writable by others is refused. That is what keeps
//! foreign code out. Every file also names what it was made from (the module's SHA-256,
//! the kind of artifact and the engine's settings) and carries a digest of its own
//! contents: a file moved, swapped, copied from another engine or cut short is ignored
//! and rebuilt, never run for another module.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use sha2::{Digest, Sha256};

/// Bump when files written by an older server must no longer be read.
const MAGIC: &[u8; 8] = b"PSART\x00\x00\x03";

/// Larger files are refused unread: no policy compiles to this much.
const MAX_ARTIFACT_BYTES: u64 = 1 << 30;
const HEADER_BYTES: usize = MAGIC.len() + 32 + 32;

/// What an artifact is, and so which folder it lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArtifactKind {
    /// Machine code of a module or component, for this engine's settings.
    Compiled,
    /// A pre-initialized module (wasm), see [`super::preinit`].
    PreInitialized,
    /// Why a module's start-up cannot be captured (text): a later start serves its
    /// optimized code at once instead of trying again.
    StartUpStays,
}

impl ArtifactKind {
    fn folder(self) -> &'static str {
        match self {
            Self::Compiled => "compiled",
            Self::PreInitialized => "pre-initialized",
            Self::StartUpStays => "start-up-stays",
        }
    }
}

pub(crate) struct ArtifactStore {
    root: PathBuf,
    /// Mixed into every file name: what else decides the artifact (engine settings,
    /// memory limit, server version).
    salt: Vec<u8>,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

/// The SHA-256 of a module's bytes.
pub(crate) type SourceDigest = [u8; 32];

pub(crate) fn source_digest(wasm: &[u8]) -> SourceDigest {
    Sha256::digest(wasm).into()
}

impl ArtifactStore {
    /// Opens (creating if needed) the cache at `root`; refuses one that others could write.
    pub(crate) fn open(root: &Path, salt: Vec<u8>) -> anyhow::Result<Self> {
        let store = Self {
            root: root.to_owned(),
            salt,
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
        };
        private_dir(root)?;
        for kind in [
            ArtifactKind::Compiled,
            ArtifactKind::PreInitialized,
            ArtifactKind::StartUpStays,
        ] {
            private_dir(&store.root.join(kind.folder()))?;
        }
        Ok(store)
    }

    /// Loads from the cache what was compiled or pre-initialized from the module whose
    /// digest is `source`.
    pub(crate) fn load(&self, kind: ArtifactKind, source: &SourceDigest) -> Option<Vec<u8>> {
        let (path, made_from) = (self.path(kind, source), self.made_from(kind, source));
        let payload = read_artifact(&path, &made_from).unwrap_or_else(|reason| {
            tracing::warn!(file = %path.display(), "ignoring a cached artifact: {reason:#}");
            None
        });
        // Hits and misses count compilations saved and paid.
        if kind == ArtifactKind::Compiled {
            let counter = if payload.is_some() {
                &self.hits
            } else {
                &self.misses
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        payload
    }

    /// Whether a file for this artifact exists (it is checked when loaded).
    pub(crate) fn contains(&self, kind: ArtifactKind, source: &SourceDigest) -> bool {
        self.path(kind, source).is_file()
    }

    /// Keeps `payload` for the next run. Written to a file of its own and renamed, so a
    /// reader (or another server sharing the directory) never sees half a file.
    pub(crate) fn store(
        &self,
        kind: ArtifactKind,
        source: &SourceDigest,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let (path, made_from) = (self.path(kind, source), self.made_from(kind, source));
        let dir = path.parent().expect("artifacts live in a folder");
        // tempfile creates its files 0600.
        let mut partial = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        let payload_digest: [u8; 32] = Sha256::digest(payload).into();
        for part in [&MAGIC[..], &made_from[..], &payload_digest[..], payload] {
            partial
                .write_all(part)
                .with_context(|| format!("cannot write {}", partial.path().display()))?;
        }
        partial
            .persist(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    pub(crate) fn hits_and_misses(&self) -> (usize, usize) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// What an artifact was made from: the module, the kind of artifact, and the salt.
    /// Both its file name and its header.
    fn made_from(&self, kind: ArtifactKind, source: &SourceDigest) -> [u8; 32] {
        Sha256::new()
            .chain_update(kind.folder())
            .chain_update(&self.salt)
            .chain_update(source)
            .finalize()
            .into()
    }

    fn path(&self, kind: ArtifactKind, source: &SourceDigest) -> PathBuf {
        let name: String = self
            .made_from(kind, source)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.root.join(kind.folder()).join(name)
    }
}

/// Creates `dir` 0700 if it is missing, and checks that only this user can write it.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the compile cache {}", dir.display()))?;
    let metadata =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    anyhow::ensure!(
        metadata.is_dir(),
        "the compile cache {} is not a directory",
        dir.display()
    );
    check_private(&metadata, dir, "directory")
}

/// Refuses what another user owns or could write: its contents would run as our code.
fn check_private(metadata: &std::fs::Metadata, path: &Path, what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    anyhow::ensure!(
        metadata.uid() == me,
        "the compile cache {what} {} belongs to user {}, not to this server's user {me}: \
         its files would be run as code, so only this user may own it",
        path.display(),
        metadata.uid()
    );
    anyhow::ensure!(
        metadata.mode() & 0o022 == 0,
        "the compile cache {what} {} is writable by others (mode {:o}): \
         its files would be run as code; make it 0700 (`chmod go-w`)",
        path.display(),
        metadata.mode() & 0o7777
    );
    Ok(())
}

/// The payload of the artifact at `path` if it exists and was made from `made_from`.
fn read_artifact(path: &Path, made_from: &[u8; 32]) -> anyhow::Result<Option<Vec<u8>>> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("cannot open it"),
    };
    // Checked on the open file, so it cannot be swapped between the check and the read.
    let metadata = file.metadata().context("cannot read its metadata")?;
    anyhow::ensure!(metadata.is_file(), "it is not a regular file");
    check_private(&metadata, path, "file")?;
    anyhow::ensure!(
        metadata.len() <= MAX_ARTIFACT_BYTES,
        "it is larger than any compiled policy ({} bytes)",
        metadata.len()
    );
    let contents = read_all(&mut file, metadata.len())?;
    anyhow::ensure!(
        contents.len() >= HEADER_BYTES && contents.starts_with(MAGIC),
        "it was not written by this version of the server"
    );
    let (header_made_from, rest) = contents[MAGIC.len()..].split_at(32);
    let (payload_digest, payload) = rest.split_at(32);
    anyhow::ensure!(
        header_made_from == made_from,
        "it was made from another module (or for another engine) than the one being loaded"
    );
    anyhow::ensure!(
        Sha256::digest(payload).as_slice() == payload_digest,
        "its contents do not match their digest (cut short or altered)"
    );
    Ok(Some(payload.to_vec()))
}

fn read_all(file: &mut File, len: u64) -> anyhow::Result<Vec<u8>> {
    let mut contents = Vec::with_capacity(len as usize);
    // Bounded even if the file grew after its size was checked.
    file.take(MAX_ARTIFACT_BYTES + 1)
        .read_to_end(&mut contents)
        .context("cannot read it")?;
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn store(dir: &Path) -> ArtifactStore {
        ArtifactStore::open(dir, b"engine".to_vec()).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn the_cache_is_created_private_whatever_the_umask() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("cache");
        // SAFETY: umask only changes this process's file creation mask.
        let previous = unsafe { libc::umask(0) };
        let opened = ArtifactStore::open(&root, Vec::new());
        let source = source_digest(b"module");
        let stored = opened
            .as_ref()
            .map(|s| s.store(ArtifactKind::Compiled, &source, b"code").is_ok());
        // SAFETY: as above.
        unsafe { libc::umask(previous) };
        assert_eq!(stored.ok(), Some(true));
        let store = opened.unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("compiled")), 0o700);
        let file = store.path(ArtifactKind::Compiled, &source);
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn a_cache_others_can_write_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ArtifactStore::open(&root, Vec::new())
            .err()
            .expect("a world-writable cache is refused");
        assert!(err.to_string().contains("writable by others"), "{err:#}");
    }

    #[test]
    fn an_artifact_is_only_ever_loaded_for_the_module_it_was_made_from() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (a, b) = (source_digest(b"module a"), source_digest(b"module b"));
        store
            .store(ArtifactKind::Compiled, &a, b"code of a")
            .unwrap();
        store
            .store(ArtifactKind::Compiled, &b, b"code of b")
            .unwrap();
        assert_eq!(
            store.load(ArtifactKind::Compiled, &a).as_deref(),
            Some(&b"code of a"[..])
        );
        // Swap the two files: neither is run for the other module.
        let (path_a, path_b) = (
            store.path(ArtifactKind::Compiled, &a),
            store.path(ArtifactKind::Compiled, &b),
        );
        let swap = dir.path().join("swap");
        std::fs::rename(&path_a, &swap).unwrap();
        std::fs::rename(&path_b, &path_a).unwrap();
        std::fs::rename(&swap, &path_b).unwrap();
        assert_eq!(store.load(ArtifactKind::Compiled, &a), None);
        assert_eq!(store.load(ArtifactKind::Compiled, &b), None);
        // Nor is a pre-initialized module taken for machine code.
        assert_eq!(store.load(ArtifactKind::PreInitialized, &a), None);
    }

    #[test]
    fn an_altered_or_loosened_artifact_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let source = source_digest(b"module");
        store
            .store(ArtifactKind::Compiled, &source, b"code")
            .unwrap();
        let path = store.path(ArtifactKind::Compiled, &source);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(store.load(ArtifactKind::Compiled, &source), None);

        store
            .store(ArtifactKind::Compiled, &source, b"code")
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(store.load(ArtifactKind::Compiled, &source), None);
        assert_eq!(store.hits_and_misses(), (0, 2));
    }
}
