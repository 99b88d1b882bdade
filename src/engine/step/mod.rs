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
pub(super) mod run;
pub(super) mod source;
pub(super) mod workdir;

use std::path::Path;

use super::cache::{self, KeyInput};
use super::copy::{CopyJob, CopyResult, Source};
use super::exec;
use super::stage::St;
use crate::dockerfile::Instruction;
use crate::oci::Digest;

/// Where a step sits and the stage settings that change what it does: with the instruction
/// and its inputs, everything its key covers. The environment is not hashed: the parent key
/// and the instructions before determine it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::engine) struct KeyScope<'a> {
    /// The key of the step before (or of the stage's base).
    pub parent: &'a str,
    pub user: String,
    pub workdir: String,
    pub shell: Vec<String>,
    /// `os/architecture` of the stage.
    pub platform: String,
    /// Build args and ARGs with a value, not shadowed by ENV: only a RUN step's environment
    /// has them, so only its key hashes them.
    pub args: Vec<(String, String)>,
    /// SOURCE_DATE_EPOCH: the layers of RUN and COPY steps have their times clamped to it, so
    /// a layer made without it (or with another) is not the same result.
    pub epoch: Option<i64>,
}

/// What a step reads, for its key.
#[derive(Debug, Default, PartialEq, Eq)]
pub(in crate::engine) struct Inputs {
    /// Digests of what the step reads (context content, source stages, bind mounts' sources).
    pub digests: Vec<String>,
    /// Settings of the step outside its instruction (RUN's effective network).
    pub settings: Vec<String>,
    /// The context files that changed since the last build, as the reason for a miss.
    pub changed: Vec<String>,
}

impl Inputs {
    /// "3 files changed: a, b, c" when context files changed.
    pub fn why_changed(&self) -> Option<String> {
        let n = self.changed.len();
        (n > 0).then(|| {
            let shown: Vec<&str> = self.changed.iter().take(5).map(|s| s.as_str()).collect();
            format!(
                "{n} file{} changed: {}{}",
                if n == 1 { "" } else { "s" },
                shown.join(", "),
                if n > 5 { ", …" } else { "" }
            )
        })
    }
}

/// The cache key of a step: a pure function of its scope, expanded instruction and inputs,
/// through a versioned canonical encoding (`cache::KEY_VERSION`).
pub(in crate::engine) fn key(scope: &KeyScope, ins: &Instruction, inputs: &Inputs) -> Digest {
    let args: &[(String, String)] = if matches!(ins, Instruction::Run(_)) {
        &scope.args
    } else {
        &[]
    };
    let mut settings = vec![
        format!("user={}", scope.user),
        format!("workdir={}", scope.workdir),
        format!(
            "shell={}",
            serde_json::to_string(&scope.shell).unwrap_or_default()
        ),
        format!("platform={}", scope.platform),
    ];
    if let Some(e) = scope.epoch {
        settings.push(format!("epoch={e}"));
    }
    settings.extend(inputs.settings.iter().cloned());
    KeyInput {
        version: cache::KEY_VERSION,
        parent: scope.parent,
        instruction: super::key::instruction(ins),
        args,
        inputs: &inputs.digests,
        settings: &settings,
    }
    .key()
}

/// Whether COPY and WORKDIR look at the layers below through their paths rather than an
/// unpacked view, whichever reads less: unpacking writes every file of the layers that have no
/// snapshot yet (about three times the cost of reading a layer), reading paths reads the
/// layers whose paths are not cached yet. A runner that took every earlier step from a cache
/// has neither, and reads paths; a cold build that unpacked its base reads paths only where
/// they are cached. STRATA_COPY_VIEW=paths|mounts forces one (tests). Under a RUN step whose
/// layer is still being written (WORKDIR after RUN; COPY waits for it), the snapshots: its
/// upper dir is one, and its paths are not read yet.
pub(in crate::engine) fn by_paths(st: &St<'_, '_>) -> bool {
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
    st: &St<'_, '_>,
    dir: &Path,
    source: Source,
    link: bool,
    what: &str,
) -> anyhow::Result<CopyJob> {
    let by_paths = !link && by_paths(st);
    let dest_paths = if by_paths {
        crate::engine::stage::layer_paths(st.b, &st.config, &st.layers)?
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

pub(in crate::engine) fn run_copy(st: &mut St<'_, '_>, job: CopyJob) -> anyhow::Result<CopyResult> {
    fs_err::create_dir_all(&job.work)?;
    let what = format!("{} in the user namespace", job.what);
    let out = job.out.clone();
    let exec::HookOutput::Copy(res) = exec::hook_output(
        &st.b.exe,
        exec::Hook::Copy { job: Box::new(job) },
        &st.b.maps,
        &what,
    )?
    else {
        anyhow::bail!("{what}: the hook answered something else than a COPY");
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
                .map_err(anyhow::Error::from)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::{load, Source};

    fn scope() -> KeyScope<'static> {
        KeyScope {
            parent: "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            user: "app".into(),
            workdir: "/w".into(),
            shell: vec!["/bin/sh".into(), "-c".into()],
            platform: "linux/amd64".into(),
            args: vec![("V".into(), "1".into())],
            epoch: None,
        }
    }

    fn instruction(text: &str) -> Instruction {
        let src = Source::new("Dockerfile", format!("FROM scratch\n{text}\n"));
        let (_, cmds) = load(&src).unwrap();
        cmds.into_iter().last().unwrap().instruction
    }

    /// The whole key, settings included, pinned for a RUN, a COPY and a metadata step: a
    /// change to how the scope is hashed changes every key, so it must be deliberate (bump
    /// `cache::KEY_VERSION` and update these).
    #[test]
    fn golden_step_keys() {
        let run = instruction("RUN echo $V");
        let inputs = Inputs {
            settings: vec!["network=private".into()],
            ..Default::default()
        };
        let copy = instruction("COPY a /b");
        let copy_inputs = Inputs {
            digests: vec!["sha256:ab a:a:-".into()],
            ..Default::default()
        };
        let env = instruction("ENV A=1");
        let got = [
            key(&scope(), &run, &inputs).hex()[..16].to_string(),
            key(&scope(), &copy, &copy_inputs).hex()[..16].to_string(),
            key(&scope(), &env, &Inputs::default()).hex()[..16].to_string(),
        ];
        assert_eq!(
            got,
            ["53a6c99ea6d4f191", "ff32fb79f9ff4c6e", "1eb2faeae890d7ea"],
            "{got:?}"
        );
    }

    /// Each part of the scope is in the key; build args only in a RUN step's.
    #[test]
    fn every_setting_changes_the_key_and_args_only_for_run() {
        let run = instruction("RUN true");
        let env = instruction("ENV A=1");
        let none = Inputs::default();
        let base = key(&scope(), &run, &none);
        let variants = [
            KeyScope {
                parent: "sha256:1",
                ..scope()
            },
            KeyScope {
                user: "root".into(),
                ..scope()
            },
            KeyScope {
                workdir: "/".into(),
                ..scope()
            },
            KeyScope {
                shell: vec!["/bin/bash".into(), "-c".into()],
                ..scope()
            },
            KeyScope {
                platform: "linux/arm64".into(),
                ..scope()
            },
            KeyScope {
                args: vec![("V".into(), "2".into())],
                ..scope()
            },
            KeyScope {
                epoch: Some(0),
                ..scope()
            },
        ];
        for v in &variants {
            assert_ne!(key(v, &run, &none), base, "{v:?}");
        }
        let no_args = KeyScope {
            args: Vec::new(),
            ..scope()
        };
        assert_eq!(key(&no_args, &env, &none), key(&scope(), &env, &none));
        let net = Inputs {
            settings: vec!["network=none".into()],
            ..Default::default()
        };
        assert_ne!(key(&scope(), &run, &net), base);
        let read = Inputs {
            digests: vec!["x".into()],
            ..Default::default()
        };
        assert_ne!(key(&scope(), &run, &read), base);
        // Why a step changed is not part of what it is.
        let changed = Inputs {
            changed: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(key(&scope(), &run, &changed), base);
    }
}
