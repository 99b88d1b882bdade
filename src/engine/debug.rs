//! `strata debug`: the last failed RUN step, kept so that a shell can be opened in it after its
//! build has ended. The step's scratch directory (its overlay's upper dir with what the command
//! left, the provided /etc files, the throwaway dirs of its mounts) is renamed out of the
//! store's tmp into `debug/`, with a record of its sandbox spec; only the newest failure is
//! kept, and `prune` removes it. A step with a secret (a file or an environment variable) or
//! an SSH socket is never kept: what its command wrote (`cp /run/secrets/x /tmp/x && … && rm
//! /tmp/x`, cut short by the failure) may hold the secret, its record would hold an
//! environment secret's value and the agent socket's path, and nothing may leave a secret's
//! value on disk; `build --debug` still opens a shell in it while the build runs.

use std::path::{Path, PathBuf};

use super::error::{BuildError, Doing as _};
use serde::{Deserialize, Serialize};

use crate::dockerfile::{MountKind, MountSpec};
use crate::sandbox::{idmap, BindSource, Spec};
use crate::store::Store;

const RECORD: &str = "failure.json";

/// A kept failed step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    /// The step's sandbox, its paths moved to the kept directory.
    pub spec: Spec,
    /// The stage's SHELL program, which `strata debug` opens.
    pub shell: String,
    /// Where it failed: `Dockerfile:4 RUN …`.
    pub step: String,
    pub exit_code: i32,
    /// When, in seconds since the epoch.
    pub when: i64,
}

/// Why a failed step cannot be kept, if it cannot: it had a secret (a file, or a value in an
/// environment variable, `--mount=type=secret,env=…`, which would be written into the record)
/// or an SSH agent's socket (`--mount=type=ssh`, whose host path is the user's), whether or not
/// the build gave it one. `mounts` are the step's RUN mounts.
pub fn not_kept_because(mounts: &[MountSpec], spec: &Spec) -> Option<&'static str> {
    let secret = mounts.iter().any(|m| m.kind == MountKind::Secret)
        || spec
            .binds
            .iter()
            .any(|b| matches!(b.source, BindSource::Memory { .. }));
    if secret {
        return Some("it had a secret, which what it wrote may hold");
    }
    mounts
        .iter()
        .any(|m| m.kind == MountKind::Ssh)
        .then_some("it had an SSH agent's socket")
}

/// Keep the failed step whose scratch dir is `step` (moved, so the caller's clean-up of `step`
/// finds nothing left), replacing the failure kept before. Refused for a step with a secret
/// or an SSH socket ([`not_kept_because`] with the step's `mounts`).
pub fn keep(
    store: &Store,
    step: &Path,
    failure: Failure,
    mounts: &[MountSpec],
    maps: &idmap::IdMaps,
) -> Result<PathBuf, BuildError> {
    if let Some(why) = not_kept_because(mounts, &failure.spec) {
        return Err(super::error::Error::NotKept { why }.into());
    }
    let dir = store.debug_dir();
    fs_err::create_dir_all(&dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Names sort by time: the newest is the last.
    let name = format!("failure-{:020}-{}", now.as_nanos(), std::process::id());
    let dest = dir.join(&name);
    fs_err::rename(step, &dest)?;
    let mut f = failure;
    f.spec.relocate(step, &dest);
    f.spec.memory_files = Vec::new();
    let written = serde_json::to_vec(&f)
        .map_err(BuildError::from)
        .and_then(|r| {
            crate::store::write_atomic(&store.tmp_dir(), &dest.join(RECORD), &r)
                .map_err(BuildError::from)
        });
    if let Err(e) = written {
        // Half kept is not kept (a full disk, typically): the step's files go.
        let _ = super::exec::remove_tree(&dest, maps);
        return Err(e);
    }
    for e in fs_err::read_dir(&dir)?.flatten() {
        if e.file_name().to_string_lossy().as_ref() < name.as_str() {
            let _ = super::exec::remove_tree(&e.path(), maps);
        }
    }
    Ok(dest)
}

/// The newest kept failure, with its directory.
pub fn last(store: &Store) -> Result<Option<(PathBuf, Failure)>, BuildError> {
    let Ok(rd) = std::fs::read_dir(store.debug_dir()) else {
        return Ok(None);
    };
    let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    names.sort();
    while let Some(dir) = names.pop() {
        let record = dir.join(RECORD);
        let Ok(bytes) = fs_err::read(&record) else {
            continue;
        };
        let f: Failure = serde_json::from_slice(&bytes)
            .doing_with(|| format!("reading {}", record.display()))?;
        return Ok(Some((dir, f)));
    }
    Ok(None)
}
