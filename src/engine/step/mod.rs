//! A step is a type: [`Step`], built once from the expanded instruction, says what it reads
//! ([`Step::inputs`]: digests for the key, and why they changed) and does its work on a cache
//! miss ([`Step::execute`]), as BuildKit's `Op` has `CacheMap` and `Exec`; `cache::key` turns
//! the inputs, the expanded instruction (in the canonical encoding of `key.rs`) and the stage's
//! settings into the step's cache key, a pure function pinned by a golden test. A step reads
//! its stage through a `StageView` and changes it through a `StageCx` (`state.rs`). The stage
//! loop (`stage.rs`) builds the steps and dispatches through them; one module per kind of step:
//!
//! - [`meta`]: ENV, LABEL, CMD and the other instructions that only change the config.
//! - [`workdir`]: WORKDIR, a layer when the directory is new.
//! - [`copy`]: COPY and ADD (local, URL and git sources).
//! - [`run`]: RUN in the sandbox, with its network; [`mounts`]: its `--mount`s, one function
//!   per kind (what setting one up fails on, `MountError`, is defined in `error.rs`).
//! - [`source`]: what COPY and RUN's bind mounts read: the context, a stage, an image.

pub(super) mod copy;
pub(super) mod meta;
pub(super) mod mounts;
pub(super) mod run;
pub(super) mod source;
pub(super) mod workdir;

use std::path::Path;

use super::cache::key::Inputs;
use super::error::{BuildError, Error};
use super::hooks;
use super::hooks::copy::{CopyJob, CopyResult, Source};
use super::state::{Ran, StageCx, StageView};
use crate::dockerfile::{self, Instruction, RunOptions};
use crate::plan::Expanded;

/// A step of a stage, built once from its expanded instruction.
pub(in crate::engine) enum Step<'i> {
    /// ENV, LABEL, CMD and the other instructions that only change the config ([`meta`]).
    Meta(&'i Instruction),
    /// WORKDIR with its path expanded ([`workdir`]).
    Workdir(&'i str),
    /// COPY, or ADD (`add`) with its remote sources once [`Step::inputs`] fetched them
    /// ([`copy`]).
    Copy {
        copy: &'i dockerfile::Copy,
        add: bool,
        fetched: Option<copy::Fetch>,
    },
    /// RUN with its mounts and network as types ([`run`]).
    Run {
        run: &'i dockerfile::Run,
        opts: &'i RunOptions,
    },
}

/// What a step's execution leaves for the stage loop.
pub(in crate::engine) enum Outcome {
    /// The step is applied to the stage (its config, key, history and record): the steps
    /// without a layer of their own work, ENV and the like, and WORKDIR.
    Applied,
    /// The step's layer (written, or being written behind the next steps) and the
    /// directories it made, for the loop to record and apply.
    Layer { ran: Ran, dirs: Vec<String> },
}

impl<'i> Step<'i> {
    /// The step of the expanded instruction `ex`; FROM is none (it starts a stage).
    pub(in crate::engine) fn new(ex: &'i Expanded) -> Result<Step<'i>, BuildError> {
        Ok(match (&ex.instruction, &ex.run) {
            (Instruction::Run(run), Some(opts)) => Step::Run { run, opts },
            (Instruction::Run(_), None) => {
                return Err(Error::Internal("a RUN step without its options".into()).into())
            }
            (Instruction::Copy(copy), _) => Step::Copy {
                copy,
                add: false,
                fetched: None,
            },
            (Instruction::Add(copy), _) => Step::Copy {
                copy,
                add: true,
                fetched: None,
            },
            (Instruction::Workdir(w), _) => Step::Workdir(w),
            (Instruction::From(_), _) => return Err(Error::FromInStage.into()),
            (ins, _) => Step::Meta(ins),
        })
    }

    /// Whether the step makes a layer through the stage loop's lookup and record (RUN, COPY,
    /// ADD); the others are applied by their execution.
    pub(in crate::engine) fn has_layer(&self) -> bool {
        matches!(self, Step::Copy { .. } | Step::Run { .. })
    }

    /// RUN's options.
    pub(in crate::engine) fn run_options(&self) -> Option<&'i RunOptions> {
        match self {
            Step::Run { opts, .. } => Some(opts),
            _ => None,
        }
    }

    /// Whether ADD fetched its sources (their digests are what was fetched: nothing to read
    /// again after the step).
    pub(in crate::engine) fn fetched(&self) -> bool {
        matches!(
            self,
            Step::Copy {
                fetched: Some(_),
                ..
            }
        )
    }

    /// The same step before [`Step::inputs`] fetched anything: to read its local sources again.
    pub(in crate::engine) fn fresh(&self) -> Step<'i> {
        match self {
            Step::Meta(i) => Step::Meta(i),
            Step::Workdir(w) => Step::Workdir(w),
            Step::Copy { copy, add, .. } => Step::Copy {
                copy,
                add: *add,
                fetched: None,
            },
            Step::Run { run, opts } => Step::Run { run, opts },
        }
    }

    /// What the step reads, for its key (ADD's remote sources are fetched here: their digests
    /// are only known once downloaded).
    pub(in crate::engine) fn inputs(
        &mut self,
        st: StageView<'_, '_, '_>,
    ) -> Result<Inputs, BuildError> {
        match self {
            Step::Run { opts, .. } => run::inputs(st, opts),
            Step::Copy {
                copy: c,
                add,
                fetched,
            } => {
                let (inputs, got) = copy::inputs(st, c, *add)?;
                *fetched = got;
                Ok(inputs)
            }
            Step::Meta(_) | Step::Workdir(_) => Ok(Inputs::default()),
        }
    }

    /// Do the step's work, changing the stage only through `cx`.
    pub(in crate::engine) fn execute(
        self,
        cx: &mut StageCx<'_, '_, '_>,
    ) -> Result<Outcome, BuildError> {
        match self {
            Step::Meta(ins) => meta::execute(cx, ins).map(|()| Outcome::Applied),
            Step::Workdir(w) => workdir::execute(cx, w).map(|()| Outcome::Applied),
            Step::Copy {
                copy: c,
                add,
                fetched,
            } => {
                let (layer, dirs) = copy::execute(cx.view(), c, add, fetched.as_ref())?;
                Ok(Outcome::Layer {
                    ran: Ran::Done(layer),
                    dirs,
                })
            }
            Step::Run { run: r, opts } => Ok(Outcome::Layer {
                ran: run::execute(cx, r, opts)?,
                dirs: Vec::new(),
            }),
        }
    }
}

/// Whether COPY and WORKDIR look at the layers below through their paths rather than an
/// unpacked view, whichever reads less: unpacking writes every file of the layers that have no
/// snapshot yet (about three times the cost of reading a layer), reading paths reads the
/// layers whose paths are not cached yet. A runner that took every earlier step from a cache
/// has neither, and reads paths; a cold build that unpacked its base reads paths only where
/// they are cached. STRATA_COPY_VIEW=paths|mounts forces one (tests). Under a RUN step whose
/// layer is still being written (WORKDIR after RUN; COPY waits for it), the snapshots: its
/// upper dir is one, and its paths are not read yet.
pub(in crate::engine) fn by_paths(st: StageView<'_, '_, '_>) -> bool {
    if st.has_pending() {
        return false;
    }
    match std::env::var("STRATA_COPY_VIEW").as_deref() {
        Ok("paths") => return true,
        Ok("mounts") => return false,
        _ => {}
    }
    let store = st.b().store;
    let (mut unpack, mut index) = (0u64, 0u64);
    for (d, l) in st.config().rootfs.diff_ids.iter().zip(st.layers()) {
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
    st: StageView<'_, '_, '_>,
    dir: &Path,
    source: Source,
    link: bool,
    what: &str,
) -> Result<CopyJob, BuildError> {
    let by_paths = !link && by_paths(st);
    let dest_paths = if by_paths {
        crate::engine::state::layer_paths(st.b(), st.config(), st.layers())?
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
        epoch: st.b().opts.epoch,
        now: st.now(),
        work: dir.join("work"),
        out: dir.join("layer.blob"),
        compression: st.b().opts.compression,
        what: what.to_string(),
    })
}

/// The largest COPY layer whose paths are read when it is made (else when first needed).
const PATHS_AT_COMMIT_MAX: u64 = 1 << 30;

pub(in crate::engine) fn run_copy(
    st: StageView<'_, '_, '_>,
    job: CopyJob,
) -> Result<CopyResult, BuildError> {
    let b = st.b();
    fs_err::create_dir_all(&job.work)?;
    let what = format!("{} in the user namespace", job.what);
    let out = job.out.clone();
    let hooks::HookOutput::Copy(res) = hooks::hook_output(
        &b.exe,
        hooks::Hook::Copy { job: Box::new(job) },
        &b.maps,
        &what,
    )?
    else {
        return Err(crate::engine::error::Error::HookNotCopy { what }.into());
    };
    if let CopyResult::Layer { layer, .. } = &res {
        // The hook wrote (and synced) the blob in the store's tmp dir: move it into place.
        b.store.adopt_blob(&out, &layer.digest)?;
        // Its paths now, while the blob is in the page cache: a COPY's layer has no snapshot
        // (a RUN step's upper directory becomes one), so the next COPY or WORKDIR reads the
        // paths instead of unpacking it (a venv of 1,000 files took 2 s to unpack here).
        // Best effort; an uncompressed layer (a build's default) is read by its tar headers
        // only; none over PATHS_AT_COMMIT_MAX. Its facts are left to the size report, which
        // reads them as cheaply and is not made by every build (`-q`).
        let store = b.store;
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
