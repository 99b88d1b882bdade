//! The engine's side of the work done inside the user namespace, around the hooks (`hooks/`):
//! unpacking snapshots so that owners are kept as seen inside, a RUN step's root and /etc
//! files, reading a step's changes as a layer, removing trees owned by subordinate ids.

use std::path::{Path, PathBuf};

use super::error::{BuildError, Doing as _};
use super::hooks::{self, hook_done, DiffSpec, Hook};

use crate::oci::Digest;
use crate::sandbox::{self, idmap, Rootfs, Spec};
use crate::store::Store;

/// Take the mount points `created` by a RUN step's sandbox out of its overlay `upper` dir (and
/// the directories copied up only to hold them, when `lowers` has them alike), as
/// [`Hook::Diff`] does: for a step whose layer is written while the next step mounts `upper`.
/// Inside the user namespace unless strata runs as root (the dirs may belong to subordinate
/// ids).
pub fn forget_created(
    upper: &Path,
    created: &[String],
    lowers: &[PathBuf],
    maps: &idmap::IdMaps,
) -> Result<(), BuildError> {
    if created.is_empty() {
        return Ok(());
    }
    if maps.root_only || rustix::process::getuid().is_root() {
        hooks::forget_mount_points(upper, created, lowers);
        return Ok(());
    }
    hook_done(
        &exe()?,
        Hook::Forget {
            upper: upper.to_path_buf(),
            created: created.to_vec(),
            lowers: lowers.to_vec(),
        },
        maps,
        "taking the step's mount points out of its changes",
    )
}

pub fn exe() -> Result<PathBuf, BuildError> {
    std::env::current_exe().doing("finding the strata binary to re-execute for the sandbox")
}

/// A sandbox error as the engine returns it: typed, so its advice reaches the command line as
/// hints ([`super::error::explain`]).
pub fn sandbox_err(e: sandbox::Error) -> BuildError {
    e.into()
}

/// Remove a tree that may hold files owned by subordinate ids: inside the user namespace.
pub fn remove_tree(path: &Path, maps: &idmap::IdMaps) -> Result<(), BuildError> {
    if !path.exists() {
        return Ok(());
    }
    if maps.root_only || rustix::process::getuid().is_root() {
        crate::store::make_writable(path);
        return std::fs::remove_dir_all(path).doing_with(|| format!("removing {}", path.display()));
    }
    hook_done(
        &exe()?,
        Hook::Remove {
            paths: vec![path.to_path_buf()],
        },
        maps,
        &format!("removing {} in the user namespace", path.display()),
    )
}

/// [`remove_tree`] as the store's prune and collection call it (their error type).
pub fn remove_store_tree(path: &Path, maps: &idmap::IdMaps) -> crate::store::Result<()> {
    remove_tree(path, maps).map_err(|e| crate::store::Error::Invalid(super::error::with_causes(&e)))
}

/// Remove what killed strata processes left in the store's tmp dir: every entry there is named
/// `WHAT-PID-sSTART-…` by the process that made it, and one whose process is gone (a zombie
/// counts as gone, and a pid reused by a process that started at another time too; see
/// [`crate::store::owner_gone`]) is garbage (a step's scratch dir, a half-written blob). Dirs are removed inside the user namespace (their files
/// may belong to subordinate ids). Lock files of killed holders go too. Best effort: a failure
/// leaves the entry for `prune`.
pub fn clean_leftovers(store: &Store, maps: &idmap::IdMaps) {
    store.remove_stale_locks();
    let Ok(rd) = std::fs::read_dir(store.tmp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if crate::store::owner_gone(&name) != Some(true) {
            continue;
        }
        let p = e.path();
        let _ = if p.is_dir() {
            remove_tree(&p, maps).map_err(|e| e.to_string())
        } else {
            std::fs::remove_file(&p).map_err(|e| e.to_string())
        };
    }
}

/// The snapshot of every layer (`diff_ids` with their blobs in `layers`), bottom first,
/// unpacked inside the user namespace on first use.
pub fn snapshots(
    store: &Store,
    exe: &Path,
    diff_ids: &[Digest],
    layers: &[crate::oci::Descriptor],
    maps: &idmap::IdMaps,
) -> Result<Vec<PathBuf>, BuildError> {
    let mut out = Vec::new();
    for (d, l) in diff_ids.iter().zip(layers) {
        let p = store.snapshot_of(d, &l.digest, |blob, dest| {
            let unpack = Hook::Unpack {
                blob: blob.to_path_buf(),
                dest: dest.to_path_buf(),
                diff_id: d.clone(),
                lower: out.iter().rev().cloned().collect(),
            };
            hook_done(exe, unpack, maps, &format!("unpacking layer {d}"))
        })?;
        out.push(p);
    }
    Ok(out)
}

/// Lower dirs (top first) with each snapshot once, at its top-most place. Two identical layers
/// (`COPY a /x` twice) share one snapshot, and overlayfs refuses a lowerdir list that names a
/// directory twice (ELOOP); dropping the lower copy changes nothing in the merged view, since
/// the upper copy already provides every file and whiteout of it.
pub fn unique_top_first(lower: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    lower
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// The overlay of a step and the files bind-mounted over /etc, laid out in `step`.
pub struct StepRoot {
    /// Top first; an empty directory when there are no layers (overlayfs needs one).
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    /// resolv.conf (the host's), hosts and hostname, for [`Spec::etc_files`].
    pub etc_files: Vec<(String, PathBuf)>,
}

/// Make the directories of a step's overlay root below `step`, over `lower` (top first), and
/// write its /etc files for `hostname` (resolv.conf as `network` can use it).
pub fn step_root(
    step: &Path,
    lower: Vec<PathBuf>,
    hostname: &str,
    network: sandbox::Network,
) -> Result<StepRoot, BuildError> {
    let mut lower = unique_top_first(lower);
    let (upper, work, merged, etc) = (
        step.join("upper"),
        step.join("work"),
        step.join("merged"),
        step.join("etc"),
    );
    for d in [&upper, &work, &merged, &etc] {
        fs_err::create_dir_all(d)?;
    }
    if lower.is_empty() {
        let empty = step.join("empty");
        fs_err::create_dir_all(&empty)?;
        lower.push(empty);
    }
    let host_resolv = fs_err::read_to_string("/etc/resolv.conf").unwrap_or_default();
    fs_err::write(
        etc.join("resolv.conf"),
        match network {
            sandbox::Network::Private => sandbox::net::resolv_conf(&host_resolv),
            _ => host_resolv,
        },
    )?;
    fs_err::write(
        etc.join("hosts"),
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"),
    )?;
    fs_err::write(etc.join("hostname"), format!("{hostname}\n"))?;
    Ok(StepRoot {
        lower,
        upper,
        work,
        merged,
        etc_files: ["resolv.conf", "hosts", "hostname"]
            .iter()
            .map(|n| (n.to_string(), etc.join(n)))
            .collect(),
    })
}

/// Add `hosts` (name, address) to the step's provided /etc/hosts (`--add-host`).
pub fn add_hosts(root: &StepRoot, hosts: &[(String, String)]) -> Result<(), BuildError> {
    if hosts.is_empty() {
        return Ok(());
    }
    let Some((_, path)) = root.etc_files.iter().find(|(n, _)| n == "hosts") else {
        return Ok(());
    };
    let mut text = fs_err::read_to_string(path)?;
    for (h, ip) in hosts {
        text.push_str(&format!("{ip}\t{h}\n"));
    }
    fs_err::write(path, text)?;
    Ok(())
}

/// The digest and size the diff hook computed for the layer at `tar` as it wrote it.
pub fn diff_digest(tar: &Path) -> Option<(Digest, u64)> {
    let text = fs_err::read_to_string(hooks::digest_file(tar)).ok()?;
    let (d, n) = text.split_once(' ')?;
    Some((d.parse().ok()?, n.parse().ok()?))
}

/// Write the changes of a finished step (its upper dir, or for the copy snapshotter what differs
/// from the recorded state) as an uncompressed layer tar at `tar`, read inside the user
/// namespace so that owners are as seen there.
pub fn diff_to_tar(
    spec: &Spec,
    step: &Path,
    created: &[String],
    tar: &Path,
    maps: &idmap::IdMaps,
    epoch: Option<i64>,
) -> Result<(), BuildError> {
    let diff = |upper: PathBuf, lower: &[PathBuf]| DiffSpec {
        upper,
        out: tar.to_path_buf(),
        epoch,
        created: created.to_vec(),
        lowers: lower.to_vec(),
    };
    let hook = match &spec.rootfs {
        Rootfs::Overlay { upper, lower, .. } => Hook::Diff(diff(upper.clone(), lower)),
        Rootfs::Copy { root, state, lower } => Hook::CopyDiff {
            root: root.clone(),
            state: state.clone(),
            diff: diff(step.join("changes"), lower),
        },
    };
    hook_done(&exe()?, hook, maps, "reading the step's changes")
}
