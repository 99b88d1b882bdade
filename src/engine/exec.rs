//! What the engine runs inside the user namespace (the hooks `main()` gives the sandbox child)
//! and the helpers around them: unpacking snapshots so that owners are kept as seen inside,
//! reading a step's upper dir as a layer, removing trees owned by subordinate ids.

use std::path::{Path, PathBuf};

use super::error::{BuildError, Doing as _};

use crate::layer::ApplyOptions;
use crate::oci::Digest;
use crate::sandbox::{self, idmap, HookSpec, Rootfs, Spec};
use crate::store::Store;

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
    /// next step mounts that dir (see [`forget_created`]).
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
    /// A COPY or ADD (see [`super::copy`]), answered with [`HookOutput::Copy`].
    Copy { job: Box<super::copy::CopyJob> },
    /// A directory (a cache mount) as a plain tar at `out`, owners as seen inside.
    TarDir { dir: PathBuf, out: PathBuf },
    /// The digest of what a bind mount of `sub` in the filesystem of `lowers` (top first)
    /// shows (see [`tree_digest`]), written as text to `out`; `work` holds the overlay view.
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
    /// A cache mount's directory, owned and moded as the step asked, created once.
    MakeCache {
        path: PathBuf,
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

/// The digest of the tree at `sub` below `root` (symlinks in `sub` followed inside the root, as
/// a bind mount's source is): every entry's path below it, kind, permission bits, owner, and
/// content or link target, in name order; times are left out, as in BuildKit's content
/// checksums. A missing source has a digest of its own (the step then fails on its mount).
pub fn tree_digest(root: &Path, sub: &str) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let clean = crate::fsx::clean(&format!("/{sub}"));
    let rel = clean.trim_start_matches('/');
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let start = match crate::fsx::resolve_in_root(root, Path::new(rel), 0) {
        Ok(r) => root.join(r),
        Err(_) => {
            h.update(b"missing");
            return Ok(hex::encode(h.finish()));
        }
    };
    let mut stack = vec![(start, String::new())];
    while let Some((p, name)) = stack.pop() {
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name.is_empty() => {
                h.update(b"missing");
                break;
            }
            Err(e) => return Err(e),
        };
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "d"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_file() {
            "f"
        } else if ft.is_char_device() || ft.is_block_device() {
            "c"
        } else {
            "o"
        };
        h.update(
            format!(
                "{name}\0{kind}\0{:o}\0{}\0{}\0",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            )
            .as_bytes(),
        );
        match kind {
            "f" => {
                let mut f = fs_err::File::open(&p)?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            "l" => h.update(std::fs::read_link(&p)?.as_os_str().as_encoded_bytes()),
            "c" => h.update(m.rdev().to_string().as_bytes()),
            "d" => {
                let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&p)?
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<std::io::Result<_>>()?;
                // Popped in name order.
                names.sort();
                for n in names.into_iter().rev() {
                    let child = format!("{name}/{}", n.to_string_lossy());
                    stack.push((p.join(&n), child));
                }
            }
            _ => {}
        }
        h.update(b"\n");
    }
    Ok(hex::encode(h.finish()))
}

/// What [`Hook::Diff`] writes: the overlay upper dir `upper` as the layer tar `out`, leaving out
/// the mount points the sandbox `created` (and directories copied up only to hold them, when
/// `lowers` has them alike); times clamped to `epoch` when set.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DiffSpec {
    pub upper: PathBuf,
    pub out: PathBuf,
    pub epoch: Option<i64>,
    pub created: Vec<String>,
    pub lowers: Vec<PathBuf>,
}

/// What a hook answers when it succeeds, sent back over the sandbox's report pipe.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum HookOutput {
    /// The work is done (files written where the hook was told).
    Done,
    /// A COPY or ADD: its layer, or the user-facing reason it could not be made.
    Copy(super::copy::CopyResult),
}

/// Why a hook failed, sent back over the sandbox's report pipe; its text is what users read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum HookError {
    /// The task was not a [`Hook`].
    #[error("bad sandbox hook: {message}")]
    Decode { message: String },
    /// A file or layer operation failed; `what` names it and its path when the cause does not.
    #[error("{}{cause}", prefix(what))]
    Io {
        what: Option<String>,
        cause: sandbox::OsError,
    },
    /// The sandbox's own work for the hook (an overlay view) failed.
    #[error("{}{cause}", prefix(what))]
    Setup {
        what: Option<String>,
        cause: Box<sandbox::SetupError>,
    },
    /// doctor's proc test: a system call failed (`unshare(CLONE_NEWPID)`, `fork`, `mount -t
    /// proc`).
    #[error("{call}: {cause}")]
    Call {
        call: String,
        cause: sandbox::OsError,
    },
    /// doctor's proc test was killed.
    #[error("the proc test was killed")]
    ProcKilled,
}

fn prefix(what: &Option<String>) -> String {
    what.as_deref()
        .map(|w| format!("{w}: "))
        .unwrap_or_default()
}

impl HookError {
    /// The errno behind the failure, when a system call failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            HookError::Io { cause, .. } | HookError::Call { cause, .. } => cause.errno,
            HookError::Setup { cause, .. } => cause.errno(),
            HookError::Decode { .. } | HookError::ProcKilled => None,
        }
    }

    /// The hook's error as the sandbox carries it.
    fn into_failure(self) -> sandbox::HookFailure {
        sandbox::HookFailure {
            error: serde_json::to_value(&self).unwrap_or_default(),
            message: self.to_string(),
            errno: self.errno(),
        }
    }
}

/// An error `e` (of any kind, its errno found in its chain) as a [`HookError::Io`].
fn io_err<E: std::error::Error + 'static>(what: Option<String>) -> impl FnOnce(E) -> HookError {
    move |e| {
        let mut errno = None;
        let mut c: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(x) = c {
            if let Some(io) = x.downcast_ref::<std::io::Error>() {
                if let Some(n) = io.raw_os_error() {
                    errno = Some(n);
                    break;
                }
            }
            c = x.source();
        }
        HookError::Io {
            what,
            cause: sandbox::OsError {
                errno,
                message: e.to_string(),
            },
        }
    }
}

/// [`io_err`] with no context (the error names its path itself).
fn bare<E: std::error::Error + 'static>(e: E) -> HookError {
    io_err(None)(e)
}

/// [`io_err`] after `what`.
fn at<E: std::error::Error + 'static>(what: impl std::fmt::Display) -> impl FnOnce(E) -> HookError {
    io_err(Some(what.to_string()))
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
        } => unpack(&blob, &dest, &diff_id, &lower)?,
        Hook::Remove { paths } => remove(&paths)?,
        Hook::TarDir { dir, out } => tar_dir(&dir, &out)?,
        Hook::Diff(d) => diff(&d)?,
        Hook::Forget {
            upper,
            created,
            lowers,
        } => forget_mount_points(&upper, &created, &lowers),
        Hook::CopyDiff { root, state, diff } => {
            // Copy snapshotter: gather the changes into an upper-shaped dir, then as Diff.
            let before = sandbox::copyfs::State::load(&state).map_err(bare)?;
            let upper = &diff.upper;
            std::fs::create_dir_all(upper).map_err(at(upper.display()))?;
            sandbox::copyfs::diff(&root, &before, upper).map_err(bare)?;
            return run_hook(Hook::Diff(diff));
        }
        Hook::OverlayTest { dir } => overlay_test(&dir)?,
        Hook::TreeDigest {
            lowers,
            sub,
            work,
            out,
        } => {
            let root = view(&lowers, &work)?;
            let d = tree_digest(&root, &sub).map_err(at(&sub))?;
            fs_err::write(&out, d).map_err(bare)?;
        }
        Hook::Flatten { layers, dir, out } => flatten(&layers, &dir, &out)?,
        Hook::Noop => {}
        Hook::ProcTest { dir } => proc_test(&dir)?,
        Hook::Copy { job } => return Ok(HookOutput::Copy(super::copy::hook(&job))),
        Hook::MakeCache {
            path,
            uid,
            gid,
            mode,
        } => make_cache(&path, uid, gid, mode)?,
    }
    Ok(HookOutput::Done)
}

fn unpack(blob: &Path, dest: &Path, diff_id: &Digest, lower: &[PathBuf]) -> Result<(), HookError> {
    let f = fs_err::File::open(blob).map_err(bare)?;
    let r = crate::layer::decompress_pipelined(f).map_err(at(blob.display()))?;
    let report = crate::store::unpack_verified(
        r,
        dest,
        diff_id,
        &ApplyOptions {
            chown: true,
            overlay_whiteouts: true,
        },
        lower,
    )
    .map_err(bare)?;
    if !report.skipped_devices.is_empty() {
        eprintln!(
            "warning: {} device node(s) left out of layer {diff_id}: {}",
            report.skipped_devices.len(),
            report.skipped_devices.join(", ")
        );
    }
    Ok(())
}

fn remove(paths: &[PathBuf]) -> Result<(), HookError> {
    for p in paths {
        crate::store::make_writable(p);
        match std::fs::remove_dir_all(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(format!("removing {}", p.display()))(e)),
        }
    }
    Ok(())
}

/// `dir` as a plain tar at `out`, owners as seen inside, synced.
fn tar_dir(dir: &Path, out: &Path) -> Result<(), HookError> {
    let f = fs_err::File::create(out).map_err(bare)?;
    let w = crate::layer::write_tree(
        dir,
        std::io::BufWriter::with_capacity(1 << 20, f),
        &crate::layer::WriteOptions::default(),
    )
    .map_err(at(dir.display()))?;
    w.into_inner()
        .map_err(|e| bare(e.into_error()))?
        .sync_all()
        .map_err(bare)
}

fn diff(d: &DiffSpec) -> Result<(), HookError> {
    // The step's layer: read inside the user namespace, so owners are as seen there.
    forget_mount_points(&d.upper, &d.created, &d.lowers);
    let opts = crate::layer::WriteOptions {
        overlay_whiteouts: true,
        source_date_epoch: d.epoch,
    };
    // Hashed as written (a megabyte at a time), so strata need not read it again.
    let f = fs_err::File::create(&d.out).map_err(bare)?;
    let w = crate::layer::write_tree(
        &d.upper,
        std::io::BufWriter::with_capacity(1 << 20, crate::oci::BackgroundHashingWriter::new(f)),
        &opts,
    )
    .map_err(at(format!("reading {}", d.upper.display())))?;
    let (f, digest, size) = w
        .into_inner()
        .map_err(|e| bare(e.into_error()))?
        .finish()
        .map_err(bare)?;
    f.sync_all().map_err(bare)?;
    fs_err::write(digest_file(&d.out), format!("{digest} {size}")).map_err(bare)
}

fn overlay_test(d: &Path) -> Result<(), HookError> {
    for s in ["l", "u", "w", "m"] {
        std::fs::create_dir_all(d.join(s)).map_err(bare)?;
    }
    fs_err::write(d.join("l/f"), "x").map_err(bare)?;
    // The mount RUN steps get (sandbox::overlay), so doctor tests what builds do.
    sandbox::overlay::mount(
        &d.join("m"),
        &[d.join("l")],
        Some((&d.join("u"), &d.join("w"))),
    )
    .map_err(|cause| HookError::Setup {
        what: None,
        cause: Box::new(cause),
    })?;
    fs_err::read(d.join("m/f"))
        .map(|_| ())
        .map_err(at("reading through the overlay"))
}

/// A read-only view of `lowers` (top first): an empty dir below `work`, the single dir
/// itself, or an overlay of several below `work`.
fn view(lowers: &[PathBuf], work: &Path) -> Result<PathBuf, HookError> {
    Ok(match lowers {
        [] => {
            let empty = work.join("empty");
            std::fs::create_dir_all(&empty).map_err(at(empty.display()))?;
            empty
        }
        [one] => one.clone(),
        many => {
            let at_ = work.join("view");
            std::fs::create_dir_all(&at_).map_err(at(at_.display()))?;
            sandbox::overlay::mount(&at_, many, None).map_err(|cause| HookError::Setup {
                what: Some("a view of the layers".into()),
                cause: Box::new(cause),
            })?;
            at_
        }
    })
}

fn flatten(layers: &[(PathBuf, Digest)], dir: &Path, out: &Path) -> Result<(), HookError> {
    std::fs::create_dir_all(dir).map_err(at(dir.display()))?;
    for (blob, diff_id) in layers {
        let f = fs_err::File::open(blob).map_err(bare)?;
        let r = crate::layer::decompress_pipelined(f).map_err(at(blob.display()))?;
        crate::store::unpack_verified(
            r,
            dir,
            diff_id,
            &ApplyOptions {
                chown: true,
                overlay_whiteouts: false,
            },
            // Each layer goes onto the ones before it in the same directory.
            &[],
        )
        .map_err(bare)?;
    }
    tar_dir(dir, out)
}

fn proc_test(dir: &Path) -> Result<(), HookError> {
    let call = |call: &str, cause: std::io::Error| HookError::Call {
        call: call.into(),
        cause: cause.into(),
    };
    std::fs::create_dir_all(dir).map_err(at(dir.display()))?;
    // SAFETY: unshare and fork in the single-threaded hook process; the child only
    // mounts and exits.
    if unsafe { libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS) } != 0 {
        return Err(call(
            "unshare(CLONE_NEWPID)",
            std::io::Error::last_os_error(),
        ));
    }
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(call("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = match rustix::mount::mount(
            "proc",
            dir,
            "proc",
            rustix::mount::MountFlags::empty(),
            None,
        ) {
            Ok(()) => 0,
            Err(e) => e.raw_os_error(),
        };
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(e) => Err(call("mount -t proc", std::io::Error::from_raw_os_error(e))),
        None => Err(HookError::ProcKilled),
    }
}

fn make_cache(p: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), HookError> {
    if p.exists() {
        return Ok(());
    }
    // Made under a unique name and renamed without replacing: two steps creating the
    // same cache at once both end up with the one that won.
    let tmp = p.with_extension(format!("new{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(at(tmp.display()))?;
    std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))
        .map_err(at(format!("chown {}", tmp.display())))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(at(format!("chmod {}", tmp.display())))?;
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        &tmp,
        rustix::fs::CWD,
        p,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(_) if p.exists() => {
            let _ = std::fs::remove_dir(&tmp);
            Ok(())
        }
        Err(e) => Err(at(p.display())(std::io::Error::from(e))),
    }
}

/// Take out of the upper dir what exists only because the sandbox mounted over it: the files it
/// created (/etc/hosts, …) and directories copied up just to hold them, when the lower dir has the
/// same directory with the same owner and mode.
fn forget_mount_points(upper: &Path, created: &[String], lowers: &[PathBuf]) {
    use std::os::unix::fs::MetadataExt;
    // Deepest first: a directory made only to hold a mount point is empty once the mount
    // point below it is gone.
    for c in created.iter().rev() {
        let rel = Path::new(c.trim_start_matches('/'));
        let p = upper.join(rel);
        let _ = if p.is_dir() {
            std::fs::remove_dir(&p)
        } else {
            std::fs::remove_file(&p)
        };
        let mut parent = rel.parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            let up = upper.join(dir);
            let empty = std::fs::read_dir(&up)
                .map(|mut r| r.next().is_none())
                .unwrap_or(false);
            let same_below = std::fs::metadata(&up).ok().is_some_and(|m| {
                lowers.iter().any(|l| {
                    std::fs::metadata(l.join(dir)).is_ok_and(|lm| {
                        lm.is_dir()
                            && lm.uid() == m.uid()
                            && lm.gid() == m.gid()
                            && lm.mode() == m.mode()
                    })
                })
            });
            if !(empty && same_below) || std::fs::remove_dir(&up).is_err() {
                break;
            }
            parent = dir.parent();
        }
    }
}

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
        forget_mount_points(upper, created, lowers);
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

/// Run a hook inside the user namespace; anything but exit status 0 is an error saying `what`.
pub fn hook_done(
    exe: &Path,
    hook: Hook,
    maps: &idmap::IdMaps,
    what: &str,
) -> Result<(), BuildError> {
    hook_output(exe, hook, maps, what).map(|_| ())
}

/// [`hook_done`] under the name the RUN step's cache mounts call it by.
pub fn hook_ok(exe: &Path, hook: Hook, maps: &idmap::IdMaps, what: &str) -> Result<(), BuildError> {
    hook_done(exe, hook, maps, what)
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
    match sandbox::run_hook_output(exe, &h).map_err(sandbox_err)? {
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

/// Write the changes of a finished step (its upper dir, or for the copy snapshotter what differs
/// from the recorded state) as an uncompressed layer tar at `tar`, read inside the user
/// namespace so that owners are as seen there.
/// Where the diff hook leaves the digest and size of the layer it wrote at `tar`.
fn digest_file(tar: &Path) -> PathBuf {
    tar.with_extension("digest")
}

/// The digest and size the diff hook computed for the layer at `tar` as it wrote it.
pub fn diff_digest(tar: &Path) -> Option<(Digest, u64)> {
    let text = fs_err::read_to_string(digest_file(tar)).ok()?;
    let (d, n) = text.split_once(' ')?;
    Some((d.parse().ok()?, n.parse().ok()?))
}

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
}
