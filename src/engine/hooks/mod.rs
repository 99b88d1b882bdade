//! The work the engine has the sandbox do inside the user namespace (the hooks `main()` gives the
//! sandbox child): one typed [`Hook`], answered with a typed [`HookOutput`] or [`HookError`] over
//! the sandbox's report pipe, and the engine's side that runs one ([`hook_done`],
//! [`hook_output`]). Each kind of work has its file: unpacking a layer into a snapshot
//! (`unpack.rs`), writing a step's changes or a directory as a tar (`diff.rs`), the digest of
//! what a bind mount shows (`digest.rs`), COPY and ADD (`copy.rs`), removing trees
//! (`remove.rs`), a cache mount's directory (`cache_mount.rs`), `strata doctor`'s tests
//! (`probe.rs`).

use std::path::{Path, PathBuf};

use super::error::{BuildError, Doing as _};

use crate::oci::Digest;
use crate::sandbox::{self, idmap, HookSpec};

pub mod copy;

mod cache_mount;
mod diff;
mod digest;
mod error;
mod probe;
mod remove;
mod unpack;

pub use diff::DiffSpec;
pub(crate) use diff::{digest_file, forget_mount_points};
pub use error::HookError;

use error::{at, bare};

/// The work the engine has the sandbox do inside the user namespace, without a new root: the
/// files involved belong to ids only that namespace can own. Sent to the sandbox child as JSON
/// (a typed task, not a name and strings).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Hook {
    /// Unpack the layer `blob` into the snapshot dir `dest`, checking it against `diff_id`,
    /// over the snapshots `lower` of the layers below it (top first): an entry under a lower
    /// layer's symlink lands where the symlink leads, as containerd's applier puts it.
    Unpack {
        blob: PathBuf,
        dest: PathBuf,
        diff_id: Digest,
        #[serde(default)]
        lower: Vec<PathBuf>,
    },
    /// Remove these trees (missing ones are fine).
    Remove { paths: Vec<PathBuf> },
    /// Write a step's changes as a layer tar (see [`DiffSpec`]).
    Diff(DiffSpec),
    /// Take the mount points a RUN step's sandbox `created` out of its `upper` dir, before the
    /// next step mounts that dir (see [`super::exec::forget_created`]).
    Forget {
        upper: PathBuf,
        created: Vec<String>,
        lowers: Vec<PathBuf>,
    },
    /// The copy snapshotter's step: gather what changed in `root` since `state` into the
    /// spec's `upper`, then as [`Hook::Diff`].
    CopyDiff {
        root: PathBuf,
        state: PathBuf,
        diff: DiffSpec,
    },
    /// `strata doctor`: mount an overlay below `dir` and read through it.
    OverlayTest { dir: PathBuf },
    /// `strata doctor`: nothing, in the user namespace.
    Noop,
    /// `strata doctor`: mount a proc at `dir` from a new PID namespace, as a RUN step's root
    /// gets one (refused in a container whose /proc has masked paths).
    ProcTest { dir: PathBuf },
    /// A COPY or ADD (see [`copy`]), answered with [`HookOutput::Copy`].
    Copy { job: Box<copy::CopyJob> },
    /// A directory (a cache mount) as a plain tar at `out`, owners as seen inside.
    TarDir { dir: PathBuf, out: PathBuf },
    /// The digest of what a bind mount of `sub` in the filesystem of `lowers` (top first)
    /// shows (see [`digest::tree_digest`]), written as text to `out`; `work` holds the overlay view.
    TreeDigest {
        lowers: Vec<PathBuf>,
        sub: String,
        work: PathBuf,
        out: PathBuf,
    },
    /// An image's root filesystem as a tar at `out`: its `layers` (blob, diffID) applied in
    /// order onto `dir` with their owners (which only this namespace can give the files of a
    /// rootless build), then written from there.
    Flatten {
        layers: Vec<(PathBuf, Digest)>,
        dir: PathBuf,
        out: PathBuf,
    },
    /// [`Hook::Flatten`] of several images, each into its own directory of `dir` (named by
    /// the first of each pair), then one tar of `dir`: a multi-platform `type=tar` output.
    FlattenEach {
        trees: Vec<(String, Vec<(PathBuf, Digest)>)>,
        dir: PathBuf,
        out: PathBuf,
    },
    /// A cache mount's directory, owned and moded as the step asked, created once.
    MakeCache {
        path: PathBuf,
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

/// What a hook answers when it succeeds, sent back over the sandbox's report pipe.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum HookOutput {
    /// The work is done (files written where the hook was told).
    Done,
    /// A COPY or ADD: its layer, or the user-facing reason it could not be made.
    Copy(copy::CopyResult),
}

/// The hook runner `main()` gives the sandbox child: a [`Hook`] as JSON, answered with a
/// [`HookOutput`] or a [`HookError`] as JSON.
pub fn hook(task: serde_json::Value) -> Result<serde_json::Value, sandbox::HookFailure> {
    let run = || -> Result<HookOutput, HookError> {
        let h: Hook = serde_json::from_value(task).map_err(|e| HookError::Decode {
            message: e.to_string(),
        })?;
        run_hook(h)
    };
    match run() {
        Ok(out) => Ok(serde_json::to_value(&out).unwrap_or_default()),
        Err(e) => Err(e.into_failure()),
    }
}

fn run_hook(h: Hook) -> Result<HookOutput, HookError> {
    match h {
        Hook::Unpack {
            blob,
            dest,
            diff_id,
            lower,
        } => unpack::unpack(&blob, &dest, &diff_id, &lower)?,
        Hook::Remove { paths } => remove::remove(&paths)?,
        Hook::TarDir { dir, out } => diff::tar_dir(&dir, &out)?,
        Hook::Diff(d) => diff::diff(&d)?,
        Hook::Forget {
            upper,
            created,
            lowers,
        } => diff::forget_mount_points(&upper, &created, &lowers),
        Hook::CopyDiff { root, state, diff } => {
            // Copy snapshotter: gather the changes into an upper-shaped dir, then as Diff.
            let before = sandbox::copyfs::State::load(&state).map_err(bare)?;
            let upper = &diff.upper;
            std::fs::create_dir_all(upper).map_err(at(upper.display()))?;
            sandbox::copyfs::diff(&root, &before, upper).map_err(bare)?;
            return run_hook(Hook::Diff(diff));
        }
        Hook::OverlayTest { dir } => probe::overlay_test(&dir)?,
        Hook::TreeDigest {
            lowers,
            sub,
            work,
            out,
        } => {
            let root = digest::view(&lowers, &work)?;
            let d = digest::tree_digest(&root, &sub).map_err(at(&sub))?;
            fs_err::write(&out, d).map_err(bare)?;
        }
        Hook::Flatten { layers, dir, out } => diff::flatten(&layers, &dir, &out)?,
        Hook::FlattenEach { trees, dir, out } => diff::flatten_each(&trees, &dir, &out)?,
        Hook::Noop => {}
        Hook::ProcTest { dir } => probe::proc_test(&dir)?,
        Hook::Copy { job } => return Ok(HookOutput::Copy(copy::hook(&job))),
        Hook::MakeCache {
            path,
            uid,
            gid,
            mode,
        } => cache_mount::make_cache(&path, uid, gid, mode)?,
    }
    Ok(HookOutput::Done)
}

/// Run a hook inside the user namespace; anything but exit status 0 is an error saying `what`.
pub fn hook_done(
    exe: &Path,
    hook: Hook,
    maps: &idmap::IdMaps,
    what: &str,
) -> Result<(), BuildError> {
    hook_output(exe, hook, maps, what).map(|_| ())
}

/// [`hook_done`], returning what the hook answered over the report pipe.
pub fn hook_output(
    exe: &Path,
    hook: Hook,
    maps: &idmap::IdMaps,
    what: &str,
) -> Result<HookOutput, BuildError> {
    let h = HookSpec {
        task: serde_json::to_value(&hook)?,
        maps: maps.clone(),
    };
    match sandbox::run_hook_output(exe, &h).map_err(BuildError::from)? {
        (sandbox::Outcome::Exited(0), Some(out)) => {
            serde_json::from_value(out).doing_with(|| format!("{what}: reading the hook's answer"))
        }
        (sandbox::Outcome::Exited(0), None) => Err(super::error::Error::HookNoAnswer {
            what: what.to_string(),
        }
        .into()),
        (o, _) => Err(super::error::Error::HookEnded {
            what: what.to_string(),
            outcome: format!("{o:?}"),
        }
        .into()),
    }
}

/// The typed error of a hook that failed inside the sandbox, when `e` is one.
pub fn hook_error(e: &sandbox::Error) -> Option<HookError> {
    match e {
        sandbox::Error::Setup { cause, .. } => match cause.as_ref() {
            sandbox::SetupError::Hook(f) => serde_json::from_value(f.error.clone()).ok(),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_answers_typed_output_or_a_typed_error_as_json() {
        let d = std::env::temp_dir().join(format!("strata-hook-{}", std::process::id()));
        fs_err::create_dir_all(&d).unwrap();
        let gone = d.join("gone");
        let task = serde_json::to_value(Hook::Remove { paths: vec![gone] }).unwrap();
        let out: HookOutput = serde_json::from_value(hook(task).unwrap()).unwrap();
        assert!(matches!(out, HookOutput::Done));

        let f = hook(serde_json::json!({"NoSuchHook": {}})).unwrap_err();
        assert!(f.message.starts_with("bad sandbox hook: "), "{}", f.message);
        let e: HookError = serde_json::from_value(f.error).unwrap();
        assert!(matches!(e, HookError::Decode { .. }));

        // A file where a directory is expected: the errno crosses with the text.
        let file = d.join("file");
        fs_err::write(&file, "x").unwrap();
        let task = serde_json::to_value(Hook::Remove {
            paths: vec![file.join("below")],
        })
        .unwrap();
        let f = hook(task).unwrap_err();
        assert_eq!(f.errno, Some(libc::ENOTDIR), "{f:?}");
        let e: HookError = serde_json::from_value(f.error).unwrap();
        assert_eq!(e.to_string(), f.message);
        fs_err::remove_dir_all(&d).unwrap();
    }

    /// Run `h` as the sandbox child does: as JSON, answered as JSON.
    fn run(h: Hook) -> Result<HookOutput, sandbox::HookFailure> {
        let out = hook(serde_json::to_value(h).unwrap())?;
        Ok(serde_json::from_value(out).unwrap())
    }

    #[test]
    fn a_dir_tarred_then_unpacked_is_the_same_tree_and_a_wrong_diff_id_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("strata-hookrt-{}", std::process::id()));
        let src = d.join("src");
        fs_err::create_dir_all(src.join("app/bin")).unwrap();
        fs_err::write(src.join("app/bin/tool"), "#!/bin/sh\n").unwrap();
        fs_err::write(src.join("app/secret"), "s").unwrap();
        std::os::unix::fs::symlink("bin/tool", src.join("app/run")).unwrap();
        for (p, mode) in [("app/bin/tool", 0o751), ("app/secret", 0o600)] {
            std::fs::set_permissions(src.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let tar = d.join("app.tar");
        let done = run(Hook::TarDir {
            dir: src.clone(),
            out: tar.clone(),
        });
        assert!(matches!(done, Ok(HookOutput::Done)), "{done:?}");
        let diff_id = Digest::of(&fs_err::read(&tar).unwrap());

        let wrong = Digest::of(b"another layer");
        let f = run(Hook::Unpack {
            blob: tar.clone(),
            dest: d.join("bad"),
            diff_id: wrong,
            lower: vec![],
        })
        .unwrap_err();
        assert!(!f.message.is_empty());

        let dest = d.join("dest");
        run(Hook::Unpack {
            blob: tar,
            dest: dest.clone(),
            diff_id,
            lower: vec![],
        })
        .unwrap();
        // Modes, owners, contents and links as they were (through the TreeDigest hook).
        let digest_of = |dir: &Path, name: &str| {
            let out = d.join(name);
            run(Hook::TreeDigest {
                lowers: vec![dir.to_path_buf()],
                sub: "app".into(),
                work: d.join("work"),
                out: out.clone(),
            })
            .unwrap();
            fs_err::read_to_string(out).unwrap()
        };
        let (a, b) = (
            digest_of(&src, "src.digest"),
            digest_of(&dest, "dest.digest"),
        );
        assert_eq!(a, digest::tree_digest(&src, "app").unwrap());
        assert_eq!(a, b);
        fs_err::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_image_flattened_applies_each_layers_whiteouts_to_the_ones_below() {
        let d = std::env::temp_dir().join(format!("strata-hookflat-{}", std::process::id()));
        let base = d.join("base");
        fs_err::create_dir_all(base.join("etc")).unwrap();
        fs_err::write(base.join("etc/old"), "old").unwrap();
        fs_err::write(base.join("etc/kept"), "kept").unwrap();
        let bottom = d.join("bottom.tar");
        run(Hook::TarDir {
            dir: base,
            out: bottom.clone(),
        })
        .unwrap();
        // The top layer deletes /etc/old and adds /etc/new.
        let top = d.join("top.tar");
        let mut b = tar::Builder::new(fs_err::File::create(&top).unwrap());
        for (name, data) in [("etc/.wh.old", &b""[..]), ("etc/new", &b"new"[..])] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap();
        let layer = |p: &PathBuf| (p.clone(), Digest::of(&fs_err::read(p).unwrap()));
        let out = d.join("rootfs.tar");
        run(Hook::Flatten {
            layers: vec![layer(&bottom), layer(&top)],
            dir: d.join("flat"),
            out: out.clone(),
        })
        .unwrap();
        let mut names = diff::tests::names(&out);
        names.sort();
        assert_eq!(names, ["etc/", "etc/kept", "etc/new"]);
        assert_eq!(
            fs_err::read_to_string(d.join("flat/etc/new")).unwrap(),
            "new"
        );
        fs_err::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn every_hook_crosses_as_json_unchanged() {
        let p = |s: &str| PathBuf::from(s);
        let hooks = [
            Hook::Unpack {
                blob: p("/b"),
                dest: p("/d"),
                diff_id: Digest::of(b"x"),
                lower: vec![p("/l1"), p("/l2")],
            },
            Hook::Remove {
                paths: vec![p("/x")],
            },
            Hook::Diff(DiffSpec {
                upper: p("/u"),
                out: p("/o"),
                epoch: Some(1),
                created: vec!["/etc/hosts".into()],
                lowers: vec![p("/l")],
            }),
            Hook::Forget {
                upper: p("/u"),
                created: vec!["/etc/hosts".into()],
                lowers: vec![],
            },
            Hook::OverlayTest { dir: p("/t") },
            Hook::Noop,
            Hook::ProcTest { dir: p("/t") },
            Hook::TarDir {
                dir: p("/c"),
                out: p("/o"),
            },
            Hook::TreeDigest {
                lowers: vec![p("/l")],
                sub: "src".into(),
                work: p("/w"),
                out: p("/o"),
            },
            Hook::Flatten {
                layers: vec![(p("/b"), Digest::of(b"y"))],
                dir: p("/d"),
                out: p("/o"),
            },
            Hook::MakeCache {
                path: p("/c"),
                uid: 1000,
                gid: 100,
                mode: 0o755,
            },
        ];
        for h in hooks {
            let v = serde_json::to_value(&h).unwrap();
            let back: Hook = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&back).unwrap(), v);
        }
        // An Unpack written before `lower` existed still reads (serde default).
        let old: Hook = serde_json::from_value(serde_json::json!({"Unpack": {
            "blob": "/b", "dest": "/d", "diff_id": Digest::of(b"x")}}))
        .unwrap();
        assert!(matches!(old, Hook::Unpack { lower, .. } if lower.is_empty()));
    }
}
