//! The local image store: a content-addressed OCI image layout on disk, tags, locks, atomic
//! writes, snapshots (unpacked layers) and garbage collection.
//!
//! Layout (versioned, so a future format can live beside this one):
//!
//! ```text
//! $ROOT/CACHEDIR.TAG
//! $ROOT/v1/oci/            an OCI image layout: oci-layout, index.json, blobs/sha256/
//! $ROOT/v1/snapshots/sha256/<diffID>/   each layer unpacked once, shared read-only
//! $ROOT/v1/tmp/            temp files; anything here is garbage once no writer holds the lock
//! $ROOT/v1/locks/          index.lock (read-modify-write of index.json), gc.lock
//! ```
//!
//! Invariants: a blob file's name is the sha256 of its bytes (checked when written and when
//! read from outside); index.json and blobs are replaced by rename after fsync, so a process
//! killed at any instant leaves either the old or the new state; writers hold `gc.lock` shared
//! while they add blobs and references, and prune holds it exclusive, so prune never removes a
//! blob that is about to be referenced. Tags are `org.opencontainers.image.ref.name`
//! annotations of index.json entries, so skopeo and umoci read the store as it is
//! (`oci:$ROOT/v1/oci:NAME:TAG`).

// Every std::fs call here goes through `at(path, …)`, which names the path in the error: the
// reason clippy.toml steers code to fs-err is met, so std::fs is allowed in this file.
#![allow(clippy::disallowed_methods)]

mod fsck;
mod images;
mod indexes;
mod io_util;
mod snapshots;
mod transfer;

pub use fsck::{FsckReport, Problem};
pub use images::{make_writable, select_platform, tree_size, DiskUsage, ImageRecord, ImageRef};
pub use indexes::{
    index_platforms, is_platform_image, platform_list, platform_manifest, IndexRecord,
    REFERENCE_TYPE,
};
pub use io_util::{owner_gone, owner_tag, write_atomic, TempFile};
pub use snapshots::unpack_verified;
pub use transfer::SaveFormat;

use std::fs::File;
use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};

use crate::oci::{self, canonical_json, media, Digest, Index, REF_NAME};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("image \"{0}\" not found in the store")]
    NotFound(String),
    #[error("blob {0} is missing from the store")]
    MissingBlob(Digest),
    #[error("{0}")]
    Invalid(String),
    #[error("image \"{image}\" has no image for platform {wanted}; it has {available} (choose one with --platform)")]
    NoPlatform {
        image: String,
        wanted: String,
        available: String,
    },
    #[error(transparent)]
    Oci(#[from] oci::Error),
    #[error(transparent)]
    Apply(#[from] crate::layer::ApplyError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn at<T>(path: &Path, r: io::Result<T>) -> Result<T> {
    r.map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// An open store. Cheap: no lock is held between calls.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    base: PathBuf,
}

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n# This file marks the strata image store as a cache directory.\n# For information about cache directory tags see https://bford.info/cachedir/\n";

/// Where the store lives: `--root`, else `$STRATA_ROOT`, else `$XDG_DATA_HOME/strata`, else
/// `~/.local/share/strata`.
pub fn default_root() -> Option<PathBuf> {
    if let Some(r) = std::env::var_os("STRATA_ROOT").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(r));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("strata"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/strata"))
}

/// Make `dir` (and its missing parents) as a directory only its owner can enter (0700); with
/// `repair`, an existing one that group or others may enter is set back to 0700. The store is
/// private to its owner, as podman's storage is: its snapshots hold the images' files (setuid
/// binaries become setuid binaries of the building user, 1777 directories such as a base's
/// /tmp would let anyone plant files into later builds), its cache mounts, debug dirs and
/// blobs what the builds read. `ROOT/v1` holds all of it and is repaired on every open (a
/// store made by an older strata was 0755); a ROOT strata creates is 0700 too, and an
/// existing ROOT (a directory the user chose) is left as it is.
fn private_dir(dir: &Path, repair: bool) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // A symlink to a directory (a store moved to another disk) is followed.
    if let Some(m) = std::fs::metadata(dir).ok().filter(|m| m.is_dir()) {
        if repair && m.mode() & 0o077 != 0 {
            let mode = m.mode() & 0o7777 & !0o077;
            at(
                dir,
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)),
            )?;
        }
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        at(parent, std::fs::create_dir_all(parent))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        // Another process made it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {
            private_dir(dir, repair)
        }
        Err(e) => Err(Error::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Whether the open file `f` is still the file at `p`.
fn same_file(f: &File, p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(p)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy)]
enum LockKind {
    Shared,
    Exclusive,
}

/// A held file lock; released on drop. A per-key lock (one step, blob or snapshot) also removes
/// its file on drop, while still holding it, so the locks directory does not grow with every
/// key ever built; [`Store::lock`] re-checks the path after locking to make that safe.
pub struct Lock {
    _file: File,
    remove: Option<PathBuf>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(p) = self.remove.take() {
            // Unlinked before the descriptor closes (fields drop after this), so no other
            // process can hold the lock on this inode while the path still names it.
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The lock files named per key (not `gc.lock` and `index.lock`, which live as long as the
/// store): they are removed by their holder, or by [`Store::remove_stale_locks`] when the holder
/// was killed.
const PER_KEY_LOCKS: [&str; 4] = ["step-", "blob-", "snapshot-", "name-"];

impl Store {
    /// Open (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        let base = root.join("v1");
        private_dir(&root, false)?;
        private_dir(&base, true)?;
        for d in ["oci/blobs/sha256", "snapshots/sha256", "tmp", "locks"] {
            let p = base.join(d);
            at(&p, std::fs::create_dir_all(&p))?;
        }
        let store = Store {
            root: root.clone(),
            base: base.clone(),
        };
        let tag = root.join("CACHEDIR.TAG");
        let layout = base.join("oci/oci-layout");
        let index = base.join("oci/index.json");
        if !(tag.exists() && layout.exists() && index.exists()) {
            // First use: write the fixed files through tmp, with prune kept out of tmp.
            let _w = store.writer_lock()?;
            let _l = store.lock("index.lock", LockKind::Exclusive)?;
            let tmp = base.join("tmp");
            if !tag.exists() {
                io_util::write_atomic(&tmp, &tag, CACHEDIR_TAG.as_bytes())?;
            }
            if !layout.exists() {
                let body = format!(
                    "{{\"imageLayoutVersion\":\"{}\"}}",
                    media::OCI_LAYOUT_VERSION
                );
                io_util::write_atomic(&tmp, &layout, body.as_bytes())?;
            }
            if !index.exists() {
                io_util::write_atomic(&tmp, &index, &canonical_json(&Index::default()))?;
            }
        }
        Ok(Store { root, base })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the store's filesystem is (all but) full: less than 1% of it, or 16 MiB, left to
    /// the user. A build step that failed then is not kept for `strata debug` (its files would
    /// hold the space), and its error says how to get space back.
    pub fn is_full(&self) -> bool {
        match rustix::fs::statvfs(&self.base) {
            Ok(st) => {
                let unit = st.f_frsize.max(1);
                let avail = st.f_bavail.saturating_mul(unit);
                let total = st.f_blocks.saturating_mul(unit);
                avail < (total / 100).max(16 << 20)
            }
            Err(_) => false,
        }
    }

    /// The OCI image layout directory inside the store.
    pub fn layout_dir(&self) -> PathBuf {
        self.base.join("oci")
    }

    /// Cached facts about layer blobs (what they hold, for the size report), one JSON file per
    /// blob digest; a cache: removed with its blob, rebuilt when missing.
    pub fn facts_dir(&self) -> PathBuf {
        self.base.join("facts")
    }

    /// Where the paths of the layer blob `d` are kept (`layer::paths`), beside its facts and
    /// pruned with it. (`.paths2`: since directories' metadata is kept too; the `.paths` files
    /// of earlier versions are left to prune.)
    pub fn layer_paths_file(&self, d: &Digest) -> PathBuf {
        self.facts_dir().join(format!("{}.paths2", d.hex()))
    }

    /// Keep the paths of the layer blob `d`.
    pub fn put_layer_paths(&self, d: &Digest, p: &crate::layer::paths::LayerPaths) -> Result<()> {
        let dir = self.facts_dir();
        at(&dir, std::fs::create_dir_all(&dir))?;
        let bytes = serde_json::to_vec(p).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&self.tmp_dir(), &self.layer_paths_file(d), &bytes)
    }

    /// Where the packages of the layer blob `d` are kept (`sbom::LayerPackages`, canonical
    /// JSON), beside its facts and pruned with it: an SBOM scans each layer once.
    pub fn layer_packages_file(&self, d: &Digest) -> PathBuf {
        self.facts_dir().join(format!("{}.pkgs", d.hex()))
    }

    /// Keep the packages found in the layer blob `d`: renamed into place, not synced (a cache;
    /// a list a crash left torn does not parse and the layer is scanned again). Its two fsyncs
    /// took up to 14 ms of a code-change rebuild's SBOM on this busy machine.
    pub fn put_layer_packages(&self, d: &Digest, p: &crate::sbom::LayerPackages) -> Result<()> {
        let dir = self.facts_dir();
        at(&dir, std::fs::create_dir_all(&dir))?;
        io_util::write_cache(&self.tmp_dir(), &self.layer_packages_file(d), &p.to_json())
    }

    /// The last failed RUN step, kept for `strata debug` (see engine::debug).
    pub fn debug_dir(&self) -> PathBuf {
        self.base.join("debug")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.base.join("tmp")
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.base.join("oci/blobs/sha256").join(d.hex())
    }

    /// The lock file `name`, created if missing, opened for locking.
    fn lock_file(&self, name: &str) -> Result<(PathBuf, File)> {
        let p = self.base.join("locks").join(name);
        let f = at(
            &p,
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&p),
        )?;
        Ok((p, f))
    }

    fn lock(&self, name: &str, kind: LockKind) -> Result<Lock> {
        let per_key = PER_KEY_LOCKS.iter().any(|k| name.starts_with(k));
        loop {
            let (p, f) = self.lock_file(name)?;
            let r = match kind {
                LockKind::Shared => f.lock_shared(),
                LockKind::Exclusive => f.lock(),
            };
            at(&p, r)?;
            if !per_key {
                return Ok(Lock {
                    _file: f,
                    remove: None,
                });
            }
            // The holder before us may have removed the file after we opened it: a lock on an
            // unlinked inode excludes nobody, so start again on what the path names now.
            if same_file(&f, &p) {
                return Ok(Lock {
                    _file: f,
                    remove: Some(p),
                });
            }
        }
    }

    /// Remove the per-key lock files nobody holds: those of a process killed while holding one
    /// (a live holder removes its own). Each is taken without waiting before it is removed, so
    /// a lock in use is left alone. Best effort; returns how many were removed.
    pub fn remove_stale_locks(&self) -> usize {
        let dir = self.base.join("locks");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !PER_KEY_LOCKS.iter().any(|k| name.starts_with(k)) {
                continue;
            }
            let p = e.path();
            let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) else {
                continue;
            };
            if f.try_lock().is_ok() && same_file(&f, &p) && std::fs::remove_file(&p).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// The gc lock, exclusively: waits for the builds using the store.
    pub fn gc_lock(&self) -> Result<Lock> {
        self.lock("gc.lock", LockKind::Exclusive)
    }

    /// The gc lock, exclusively, without waiting: `None` while a build (or a prune) uses the
    /// store.
    pub fn try_gc_lock(&self) -> Result<Option<Lock>> {
        let (p, f) = self.lock_file("gc.lock")?;
        match f.try_lock() {
            Ok(()) => Ok(Some(Lock {
                _file: f,
                remove: None,
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::Io { path: p, source: e }),
        }
    }

    /// Hold while adding blobs that a reference will point to: prune waits for it.
    pub fn writer_lock(&self) -> Result<Lock> {
        self.lock("gc.lock", LockKind::Shared)
    }

    /// Held while one process builds the step with cache key `key`: another build that reaches
    /// the same step waits, then finds it in the cache, instead of doing the work again.
    pub fn step_lock(&self, key: &Digest) -> Result<Lock> {
        self.lock(&format!("step-{}.lock", key.hex()), LockKind::Exclusive)
    }

    /// Held while one process reads what `name` points at and points it elsewhere from that
    /// (a pull adding its platform to the ones pulled before): another waits, then reads the
    /// result, so neither platform is lost.
    pub fn name_lock(&self, name: &ImageRef) -> Result<Lock> {
        let key = oci::Digest::of(name.to_string().as_bytes());
        self.lock(&format!("name-{}.lock", key.hex()), LockKind::Exclusive)
    }

    /// Held while one process downloads blob `d`: another that needs it waits, then finds it.
    pub fn blob_lock(&self, d: &Digest) -> Result<Lock> {
        self.lock(&format!("blob-{}.lock", d.hex()), LockKind::Exclusive)
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).exists()
    }

    /// Read a whole blob and check it against its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingBlob(d.clone()))
            }
            Err(e) => return Err(Error::Io { path: p, source: e }),
        };
        let actual = Digest::of(&bytes);
        if &actual != d {
            return Err(oci::Error::DigestMismatch {
                what: p.display().to_string(),
                expected: d.clone(),
                actual,
            }
            .into());
        }
        Ok(bytes)
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.blob_path(d);
        match File::open(&p) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::MissingBlob(d.clone())),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    /// A temp file in the store, to be turned into a blob with [`Store::commit_blob`].
    pub fn temp_file(&self) -> Result<TempFile> {
        TempFile::new(&self.tmp_dir())
    }

    /// Move a finished temp file into place as the blob `digest` (fsync, then rename).
    pub fn commit_blob(&self, tmp: TempFile, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        if dest.exists() {
            return Ok(());
        }
        tmp.persist(&dest)
    }

    /// Move a finished, synced file on the store's filesystem (a step's layer written by a
    /// hook in the store's tmp dir) into place as blob `digest`, which the writer computed.
    pub fn adopt_blob(&self, path: &Path, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        if dest.exists() {
            return Ok(());
        }
        at(&dest, std::fs::rename(path, &dest))?;
        io_util::sync_dir(dest.parent().unwrap_or(Path::new(".")));
        Ok(())
    }

    /// Copy `r` into the store as a blob, verifying it against `expected` when given.
    pub fn put_blob_from(
        &self,
        r: impl Read,
        expected: Option<(&Digest, Option<u64>)>,
        what: &str,
    ) -> Result<(Digest, u64)> {
        let mut tmp = self.temp_file()?;
        let mut hr = oci::HashingReader::new(r);
        tmp.with(|f| io::copy(&mut hr, f))?;
        let (digest, size) = hr.finish();
        if let Some((want, want_size)) = expected {
            if &digest != want {
                return Err(oci::Error::DigestMismatch {
                    what: what.to_string(),
                    expected: want.clone(),
                    actual: digest,
                }
                .into());
            }
            if let Some(ws) = want_size {
                if ws != size {
                    return Err(oci::Error::SizeMismatch {
                        what: what.to_string(),
                        expected: ws,
                        actual: size,
                    }
                    .into());
                }
            }
        }
        self.commit_blob(tmp, &digest)?;
        Ok((digest, size))
    }

    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        if !self.has_blob(&d) {
            // Hashed once: these bytes are the ones just digested (put_blob_from's check
            // would hash them again).
            let mut tmp = self.temp_file()?;
            tmp.with(|f| f.write_all(bytes))?;
            self.commit_blob(tmp, &d)?;
        }
        Ok(d)
    }

    /// The store's index.json.
    pub fn index(&self) -> Result<Index> {
        let p = self.layout_dir().join("index.json");
        let bytes = at(&p, std::fs::read(&p))?;
        Ok(oci::parse_json(&bytes, &p.display().to_string())?)
    }

    /// Read-modify-write index.json under the index lock; written atomically.
    pub fn update_index<T>(&self, f: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
        // The new index is written in tmp first: keep prune from clearing tmp meanwhile.
        let _w = self.writer_lock()?;
        let _l = self.lock("index.lock", LockKind::Exclusive)?;
        let p = self.layout_dir().join("index.json");
        let old = at(&p, std::fs::read(&p))?;
        let mut index: Index = oci::parse_json(&old, &p.display().to_string())?;
        let out = f(&mut index)?;
        index.manifests.sort_by(|a, b| {
            (a.annotations.get(REF_NAME), &a.digest).cmp(&(b.annotations.get(REF_NAME), &b.digest))
        });
        let bytes = canonical_json(&index);
        // Unchanged (a rebuild naming the same image): no write, no fsync.
        if old == bytes {
            return Ok(out);
        }
        io_util::write_atomic(&self.tmp_dir(), &p, &bytes)?;
        Ok(out)
    }
}

/// Open a file for reading; the error names the path.
pub(crate) fn open_file(p: &Path) -> Result<File> {
    at(p, File::open(p))
}

#[cfg(test)]
mod tests;
