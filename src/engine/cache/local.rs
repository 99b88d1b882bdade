//! The step cache: a key per step, and the store's map from keys to what the step produced.
//!
//! A key is the sha256 of a canonical JSON encoding of: the key format version, the parent's
//! key (or the base image's digest), the instruction with its words expanded, the environment
//! and build args it sees, and the digest of exactly the content it reads (context files after
//! `.dockerignore`, the layer diffIDs of a source stage, bind-mounted content). Secrets never enter a key.
//!
//! Records live in `$ROOT/v1/cache/<key>` as small JSON files written atomically; a record whose
//! layer blob has been pruned is a miss.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::layer::LayerInfo;
use crate::oci::{Descriptor, Digest};
use crate::store::Store;

/// Bumped whenever what goes into a key, or what a step produces for it, changes.
/// 2: the environment is no longer hashed into every key (the parent key and the expanded
/// instruction already determine it, and hashing it made a step cost the size of the whole
/// environment); ARGs only into RUN keys, the one step that sees them as environment; COPY
/// follows a destination that is a symlink (as BuildKit) instead of replacing it.
/// 3: the instruction is encoded field by field (`engine::cache::key`), not as its Debug output, and
/// the shell and network settings as JSON and names; a release can keep its keys.
/// 4: context digests leave out owners and the group and other write bits (umask noise), so
/// checkouts on two machines give the same keys; SOURCE_DATE_EPOCH is in the key when set.
pub const KEY_VERSION: u32 = 4;

/// A layer blob as the cache and the copy hook pass it around.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRec {
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

impl From<LayerInfo> for LayerRec {
    fn from(i: LayerInfo) -> Self {
        LayerRec {
            diff_id: i.diff_id,
            digest: i.digest,
            size: i.size,
            media_type: i.media_type.to_string(),
        }
    }
}

impl LayerRec {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(&self.media_type, self.digest.clone(), self.size)
    }
}

/// One step as the build applied it, for export.
#[derive(Debug, Clone)]
pub struct Applied {
    pub stage: usize,
    pub key: Digest,
    pub record: Record,
}

/// What a step produced: its layer (none for metadata-only steps and empty diffs) and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub layer: Option<LayerRec>,
    /// The history time of the step (RFC 3339), so a cached rebuild gives the same image.
    pub created: String,
    /// Directories the step is known to have created (COPY destinations, WORKDIR).
    #[serde(default)]
    pub dirs: Vec<String>,
    /// The key the steps after this one chain from, when it is not the key the record was
    /// found under: a RUN that bind-mounts another stage is also known by the content of what
    /// it mounts, and chains from that key, so a cached rebuild that reaches it either way
    /// reaches the same steps after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<crate::oci::Digest>,
}

/// Everything a key is computed from.
#[derive(Debug, Serialize)]
pub struct KeyInput<'a> {
    pub version: u32,
    pub parent: &'a str,
    /// The expanded instruction in its canonical encoding ([`super::key::instruction`]).
    pub instruction: serde_json::Value,
    /// ARGs a RUN step sees in its environment (empty for other steps).
    pub args: &'a [(String, String)],
    /// Digests of what the step reads (context content, source stages, bind mounts).
    pub inputs: &'a [String],
    /// Settings that change what the step does (user, workdir, shell, network, platform).
    pub settings: &'a [String],
}

impl KeyInput<'_> {
    pub fn key(&self) -> Digest {
        Digest::of(&crate::oci::canonical_json(self))
    }
}

fn dir(store: &Store) -> PathBuf {
    store.root().join("v1/cache")
}

/// The record for `key`, if present and its layer blob is still in the store.
pub fn get(store: &Store, key: &Digest) -> Option<Record> {
    let path = dir(store).join(key.hex());
    let bytes = fs_err::read(&path).ok()?;
    let rec: Record = serde_json::from_slice(&bytes).ok()?;
    match &rec.layer {
        Some(l) if !store.has_blob(&l.digest) => None,
        _ => {
            // A hit is a use: the record's mtime is its last use, for least-recently-used
            // eviction (one utimensat per cached step).
            let now = rustix::fs::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            };
            let _ = rustix::fs::utimensat(
                rustix::fs::CWD,
                &path,
                &rustix::fs::Timestamps {
                    last_access: now,
                    last_modification: now,
                },
                rustix::fs::AtFlags::empty(),
            );
            Some(rec)
        }
    }
}

/// The build cache as prune sees it: its records, the blob bytes of their layers, the layers'
/// blobs and diffIDs (what prune must keep for it).
#[derive(Debug, Default)]
pub struct Usage {
    pub records: usize,
    pub bytes: u64,
    pub blobs: std::collections::BTreeSet<Digest>,
    pub diff_ids: std::collections::BTreeSet<Digest>,
}

/// Every record with its last use and its layer, oldest use first.
fn entries(store: &Store) -> Vec<(std::time::SystemTime, PathBuf, Option<LayerRec>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir(store)) else {
        return out;
    };
    for e in rd.flatten() {
        let used = e
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        let layer = fs_err::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            .and_then(|r| r.layer);
        out.push((used, e.path(), layer));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    out
}

/// What the build cache holds now (each layer counted once).
pub fn usage(store: &Store) -> Usage {
    let mut u = Usage::default();
    for (_, _, layer) in entries(store) {
        u.records += 1;
        if let Some(l) = layer {
            if u.blobs.insert(l.digest.clone()) {
                u.bytes += l.size;
            }
            u.diff_ids.insert(l.diff_id);
        }
    }
    u
}

/// Drop the least recently used records until the layers the rest refer to take at most
/// `keep` bytes (0: drop every record). The blobs and snapshots they leave unreferenced go at
/// the next prune. Returns how many records were dropped, and the bytes of the layers the
/// records kept refer to.
pub fn evict(store: &Store, keep: u64) -> (usize, u64) {
    let all = entries(store);
    // Bytes per blob, and how many of the records still kept refer to it.
    let mut refs: std::collections::BTreeMap<Digest, (u64, usize)> = Default::default();
    for (_, _, l) in &all {
        if let Some(l) = l {
            refs.entry(l.digest.clone()).or_insert((l.size, 0)).1 += 1;
        }
    }
    let mut total: u64 = refs.values().map(|(s, _)| s).sum();
    let mut dropped = 0;
    for (_, path, layer) in all {
        if total <= keep && keep > 0 {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            dropped += 1;
            if let Some(l) = layer {
                if let Some((size, n)) = refs.get_mut(&l.digest) {
                    *n -= 1;
                    if *n == 0 {
                        total -= *size;
                    }
                }
            }
        }
    }
    (dropped, total)
}

/// The build cache's size limit when nothing sets one: the layers its steps refer to.
pub const DEFAULT_LIMIT: u64 = 10 << 30;

/// `$STRATA_CACHE_LIMIT` is not a size.
#[derive(Debug, thiserror::Error)]
#[error("STRATA_CACHE_LIMIT=\"{value}\": expected a size such as 20g or 512m")]
pub struct BadLimit {
    pub value: String,
}

/// The build cache's size limit: `$STRATA_CACHE_LIMIT` (a size such as `20g`), else
/// [`DEFAULT_LIMIT`].
pub fn limit() -> Result<u64, BadLimit> {
    match std::env::var("STRATA_CACHE_LIMIT") {
        Ok(v) => crate::dockerfile::instructions::parse_size(&v).ok_or(BadLimit { value: v }),
        Err(_) => Ok(DEFAULT_LIMIT),
    }
}

/// What [`collect`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Steps dropped from the cache, least recently used first.
    pub dropped: usize,
    /// Bytes of blobs and snapshots removed.
    pub freed: u64,
    /// What the cache's layers take now.
    pub kept: u64,
}

/// After a build: when the build cache's layers take more than `limit`, drop its least
/// recently used steps until they fit, then remove the blobs and snapshots that neither an
/// image nor a cached step refers to any more. Never waits for another process: `None` when a
/// build or a prune is using the store (the next build collects), or when the cache fits.
pub fn collect(
    store: &Store,
    limit: u64,
    remove_dir: &dyn Fn(&std::path::Path) -> crate::store::Result<()>,
) -> crate::store::Result<Option<Collected>> {
    if usage(store).bytes <= limit {
        return Ok(None);
    }
    let Some(gc) = store.try_gc_lock()? else {
        return Ok(None);
    };
    // Under the lock no build is running, so no step is between reading a record and using
    // its layer.
    let (dropped, kept) = evict(store, limit);
    let freed = store.prune_keeping_locked(
        &gc,
        false,
        &|| {
            let u = usage(store);
            Ok((u.blobs, u.diff_ids))
        },
        remove_dir,
    )?;
    Ok(Some(Collected {
        dropped,
        freed,
        kept,
    }))
}

/// Record what the step with `key` produced.
pub fn put(
    store: &Store,
    key: &Digest,
    rec: &Record,
) -> Result<(), crate::engine::error::BuildError> {
    let d = dir(store);
    fs_err::create_dir_all(&d)?;
    let bytes = serde_json::to_vec(rec)?;
    crate::store::write_atomic(&store.tmp_dir(), &d.join(key.hex()), &bytes)?;
    Ok(())
}

/// Bytes of the records whose layer blob is gone (what [`prune`] removes without `all`).
pub fn stale_bytes(store: &Store) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir(store)) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            fs_err::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
                .is_none_or(|r| r.layer.is_some_and(|l| !store.has_blob(&l.digest)))
        })
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Bytes of the `RUN --mount=type=cache` directories.
pub fn mounts_bytes(store: &Store) -> u64 {
    crate::store::tree_size(&store.root().join("v1/cache-mounts"))
}

/// Remove the records whose layer blob is gone (every record, and the cache mounts, with
/// `all`). Returns the bytes freed.
pub fn prune(
    store: &Store,
    all: bool,
    remove_dir: &dyn Fn(&std::path::Path) -> crate::store::Result<()>,
) -> crate::store::Result<u64> {
    let mut freed = 0;
    if let Ok(rd) = std::fs::read_dir(dir(store)) {
        for e in rd.flatten() {
            let stale = all
                || fs_err::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
                    .is_none_or(|r| r.layer.is_some_and(|l| !store.has_blob(&l.digest)));
            if stale {
                freed += e.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let mounts = store.root().join("v1/cache-mounts");
    if all && mounts.exists() {
        remove_dir(&mounts)?;
    }
    Ok(freed)
}

/// Where the cache mount `id` lives in the store.
pub(crate) fn cache_mount_dir(store: &crate::store::Store, id: &str) -> PathBuf {
    store
        .root()
        .join("v1/cache-mounts")
        .join(&Digest::of(id.as_bytes()).hex()[..32])
}
