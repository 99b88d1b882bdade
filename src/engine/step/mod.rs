//! One module per kind of step. Each says what its step reads (digests for the key, and why
//! they changed), and executes it on a cache miss; [`key`] turns that, the expanded
//! instruction (in the canonical encoding of `key.rs`) and the stage's settings into the step's
//! cache key, a pure function pinned by a golden test. The stage loop (`stage.rs`) calls them.
//!
//! - [`meta`]: ENV, LABEL, CMD and the other instructions that only change the config.
//! - [`workdir`]: WORKDIR, a layer when the directory is new.
//! - [`copy`]: COPY and ADD (local, URL and git sources).
//! - [`run`]: RUN in the sandbox, with its mounts and network.
//! - [`source`]: what COPY and RUN's bind mounts read: the context, a stage, an image.

pub(super) mod copy;
pub(super) mod meta;
pub(super) mod mounts;
pub(super) mod run;
pub(super) mod source;
pub(super) mod workdir;

use std::path::Path;

use super::error::BuildError;
use super::hooks;
use super::hooks::copy::{CopyJob, CopyResult, Source};
use super::state::StageState;
use crate::dockerfile::Instruction;

/// Whether COPY and WORKDIR look at the layers below through their paths rather than an
/// unpacked view, whichever reads less: unpacking writes every file of the layers that have no
/// snapshot yet (about three times the cost of reading a layer), reading paths reads the
/// layers whose paths are not cached yet. A runner that took every earlier step from a cache
/// has neither, and reads paths; a cold build that unpacked its base reads paths only where
/// they are cached. STRATA_COPY_VIEW=paths|mounts forces one (tests). Under a RUN step whose
/// layer is still being written (WORKDIR after RUN; COPY waits for it), the snapshots: its
/// upper dir is one, and its paths are not read yet.
pub(in crate::engine) fn by_paths(st: &StageState<'_, '_>) -> bool {
    if !st.pending.is_empty() {
        return false;
    }
    match std::env::var("STRATA_COPY_VIEW").as_deref() {
        Ok("paths") => return true,
        Ok("mounts") => return false,
        _ => {}
    }
    let store = st.b.store;
    let (mut unpack, mut index) = (0u64, 0u64);
    for (d, l) in st.config.rootfs.diff_ids.iter().zip(&st.layers) {
        if !store.snapshot_path(d).exists() {
            unpack += l.size.max(1);
        }
        if !store.layer_paths_file(&l.digest).exists() {
            index += l.size.max(1);
        }
    }
    unpack > 0 && index < unpack.saturating_mul(3)
}

/// A copy job working in the scratch dir `dir`, with nothing to copy yet: the destination
/// is the layers below unless `link`, times and compression are the build's.
pub(in crate::engine) fn new_job(
    st: &StageState<'_, '_>,
    dir: &Path,
    source: Source,
    link: bool,
    what: &str,
) -> Result<CopyJob, BuildError> {
    let by_paths = !link && by_paths(st);
    let dest_paths = if by_paths {
        crate::engine::state::layer_paths(st.b, &st.config, &st.layers)?
    } else {
        Vec::new()
    };
    Ok(CopyJob {
        source,
        dest_lowers: if link || by_paths {
            Vec::new()
        } else {
            st.lowers_now()?
        },
        dest_paths,
        sources: Vec::new(),
        inline: Vec::new(),
        dest: String::new(),
        chown: None,
        chmod: None,
        excludes: Vec::new(),
        parents: false,
        unpack: false,
        epoch: st.b.opts.epoch,
        now: st.now(),
        work: dir.join("work"),
        out: dir.join("layer.blob"),
        compression: st.b.opts.compression,
        what: what.to_string(),
    })
}

/// The largest COPY layer whose paths are read when it is made (else when first needed).
const PATHS_AT_COMMIT_MAX: u64 = 1 << 30;

pub(in crate::engine) fn run_copy(
    st: &mut StageState<'_, '_>,
    job: CopyJob,
) -> Result<CopyResult, BuildError> {
    fs_err::create_dir_all(&job.work)?;
    let what = format!("{} in the user namespace", job.what);
    let out = job.out.clone();
    let hooks::HookOutput::Copy(res) = hooks::hook_output(
        &st.b.exe,
        hooks::Hook::Copy { job: Box::new(job) },
        &st.b.maps,
        &what,
    )?
    else {
        return Err(crate::engine::error::Error::HookNotCopy { what }.into());
    };
    if let CopyResult::Layer { layer, .. } = &res {
        // The hook wrote (and synced) the blob in the store's tmp dir: move it into place.
        st.b.store.adopt_blob(&out, &layer.digest)?;
        // Its paths now, while the blob is in the page cache: a COPY's layer has no snapshot
        // (a RUN step's upper directory becomes one), so the next COPY or WORKDIR reads the
        // paths instead of unpacking it (a venv of 1,000 files took 2 s to unpack here).
        // Best effort; an uncompressed layer (a build's default) is read by its tar headers
        // only; none over PATHS_AT_COMMIT_MAX. Its facts are left to the size report, which
        // reads them as cheaply and is not made by every build (`-q`).
        let store = st.b.store;
        if layer.size <= PATHS_AT_COMMIT_MAX && !store.layer_paths_file(&layer.digest).exists() {
            let read = store
                .open_blob(&layer.digest)
                .map_err(BuildError::from)
                .and_then(|f| Ok(crate::layer::facts::read_blob_with_paths(f)?));
            if let Ok((_, p)) = read {
                let _ = store.put_layer_paths(&layer.digest, &p);
            }
        }
    }
    Ok(res)
}

/// The `--from` of a COPY or ADD.
pub(in crate::engine) fn from_of(ins: &Instruction) -> Option<&str> {
    match ins {
        Instruction::Copy(c) | Instruction::Add(c) => c.from.as_deref(),
        _ => None,
    }
}
