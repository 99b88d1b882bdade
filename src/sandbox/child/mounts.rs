//! The step's mounts inside its root: bind mounts made read-only by a remount, the mount points
//! created (and recorded, so the layer leaves them out), the /etc files, host binds, tmpfs,
//! secrets held in memory, build contexts and stages, cache mounts and their hand-over to the
//! step's user.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

use super::{io, mount, R};
use crate::sandbox::sys::Sys;
use crate::sandbox::{Bind, BindSource, SetupError, Spec};

/// Bind-mount `src` at `target` (with `flags` such as MS_REC), then make it read-only when
/// asked (a bind mount takes MS_RDONLY only on a remount). The remount keeps the flags the
/// source's mount has (nosuid, nodev, noexec, atime): in a user namespace they are locked,
/// and a remount that drops one is refused (a container's tmpfs /tmp is nosuid,nodev).
pub(super) fn bind(
    sys: &dyn Sys,
    src: &str,
    target: &str,
    flags: libc::c_ulong,
    readonly: bool,
) -> R<()> {
    mount(sys, src, target, "", libc::MS_BIND | flags, "")?;
    if readonly {
        mount(
            sys,
            "",
            target,
            "",
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | sys.locked_flags(target),
            "",
        )?;
    }
    Ok(())
}

/// Create the missing directories of `inside` (a path in the root `root`, `/`-separated),
/// each recorded in `created` (so the layer leaves it out when it stays empty) and owned as
/// the directory it was made in: a mount point under `/home/app` is app's, not root's, so a
/// `~/.cache/pip` cache mount does not leave a root-owned `~/.cache` that app cannot write.
pub(super) fn make_dirs(root: &str, inside: &str, created: &mut Vec<String>) -> R<()> {
    use std::os::unix::fs::MetadataExt;
    let mut path = root.trim_end_matches('/').to_string();
    let mut rel = String::new();
    let mut owner = std::fs::metadata(&path)
        .map(|m| (m.uid(), m.gid()))
        .map_err(io(&path))?;
    for part in inside.split('/').filter(|p| !p.is_empty() && *p != ".") {
        path.push('/');
        path.push_str(part);
        rel.push('/');
        rel.push_str(part);
        match std::fs::metadata(&path) {
            Ok(m) => owner = (m.uid(), m.gid()),
            Err(_) => {
                std::fs::create_dir(&path).map_err(io(format!("creating {path}")))?;
                created.push(rel.clone());
                std::os::unix::fs::lchown(&path, Some(owner.0), Some(owner.1))
                    .map_err(io(format!("chown {path}")))?;
            }
        }
    }
    Ok(())
}

pub(super) fn ensure_file(root: &str, inside: &str, created: &mut Vec<String>) -> R<()> {
    let path = format!(
        "{}/{}",
        root.trim_end_matches('/'),
        inside.trim_start_matches('/')
    );
    if std::fs::symlink_metadata(&path).is_err() {
        if let Some((parent, _)) = inside.trim_end_matches('/').rsplit_once('/') {
            make_dirs(root, parent, created)?;
        }
        std::fs::write(&path, b"").map_err(io(format!("creating {path}")))?;
        created.push(inside.to_string());
    }
    Ok(())
}

/// `target` (a path in the root `root`) with `..` cleaned and the root's symlinks followed
/// inside the root: an absolute path as seen from the root, every existing component of it a
/// real directory of the root.
pub(super) fn in_root(root: &str, target: &str) -> R<String> {
    let clean = crate::fsx::clean(&format!("/{target}"));
    let rel =
        crate::fsx::resolve_in_root(Path::new(root), Path::new(clean.trim_start_matches('/')), 0)
            .map_err(io(format!("mount target {target}")))?;
    let rel = rel.to_str().ok_or_else(|| SetupError::Io {
        what: format!("mount target {target}"),
        cause: crate::sandbox::OsError {
            errno: None,
            message: "not UTF-8".into(),
        },
    })?;
    Ok(format!("/{}", rel.trim_start_matches('/')))
}

pub(super) fn ensure_dir(root: &str, inside: &str, created: &mut Vec<String>) -> R<()> {
    make_dirs(root, inside, created)
}

/// Give the cache mounted at `path` (its content too, symlinks not followed) to `uid`:`gid`
/// when its top directory is someone else's. Mounts below it are not entered.
pub(super) fn hand_over(path: &Path, uid: u32, gid: u32) -> R<()> {
    use std::os::unix::fs::MetadataExt;
    let top = std::fs::symlink_metadata(path).map_err(io(path.display().to_string()))?;
    if (top.uid(), top.gid()) == (uid, gid) {
        return Ok(());
    }
    let dev = top.dev();
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).map_err(io(p.display().to_string()))?;
        if m.dev() != dev {
            continue;
        }
        if (m.uid(), m.gid()) != (uid, gid) {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
                .map_err(io(format!("chown {}", p.display())))?;
        }
        if m.is_dir() {
            for e in std::fs::read_dir(&p).map_err(io(p.display().to_string()))? {
                todo.push(e.map_err(io(p.display().to_string()))?.path());
            }
        }
    }
    Ok(())
}

/// The path `sub` of the directory `dir`, resolved inside it as if it were `/` (so a symlink
/// to /etc/shadow names dir's file, never the host's), then opened beneath it with no symlink
/// followed: a bind source that cannot leave `dir`, whatever is swapped in meanwhile. Returns
/// `/proc/self/fd/N` for the mount, and the descriptor to keep open until it is made.
fn beneath(dir: &Path, sub: &str, target: &str) -> R<(std::path::PathBuf, std::os::fd::OwnedFd)> {
    let rel = Path::new(sub.trim_start_matches('/'));
    let not_found = || io(format!("mount source {sub} for {target}"));
    let resolved = crate::fsx::resolve_in_root(dir, rel, 0).map_err(not_found())?;
    let fd = crate::fsx::open_path_beneath(dir, &resolved).map_err(not_found())?;
    Ok((format!("/proc/self/fd/{}", fd.as_raw_fd()).into(), fd))
}

/// Put memory file `index` (an inherited memfd) on a tmpfs of its own at `dir` (an empty
/// directory of the step's scratch space): the tmpfs exists only in this mount namespace, so the
/// content never reaches a disk and goes away with the sandbox however it ends. Returns the
/// file to bind-mount (bind mounts of a memfd itself are refused by the kernel).
fn memory_file(
    sys: &dyn Sys,
    dir: &Path,
    index: usize,
    uid: u32,
    gid: u32,
) -> R<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let fd = crate::sandbox::MEMORY_FD_BASE + index as i32;
    // SAFETY: the parent dup'ed memory file `index` to this descriptor; ManuallyDrop leaves it
    // open for the exec'd child's close loop.
    let mut src = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let mode = src
        .metadata()
        .map_err(io(format!("memory file {index}")))?
        .permissions()
        .mode()
        & 0o7777;
    let mut content = Vec::new();
    std::io::Seek::rewind(&mut *src).map_err(io(format!("memory file {index}")))?;
    src.read_to_end(&mut content)
        .map_err(io(format!("memory file {index}")))?;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let d = dir.display().to_string();
    mount(
        sys,
        "tmpfs",
        &d,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        &format!("mode=0700,size={}", content.len() + 4096),
    )?;
    let f = dir.join("content");
    std::fs::write(&f, &content).map_err(io(format!("writing {}", f.display())))?;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", f.display())))?;
    if (uid, gid) != (0, 0) {
        std::os::unix::fs::chown(&f, Some(uid), Some(gid))
            .map_err(io(format!("chown {} to {uid}:{gid}", f.display())))?;
    }
    Ok(f)
}

/// The step's /etc files and binds (host dirs, tmpfs, secrets, contexts, layers, caches) in
/// the root `root`; returns the cache mounts to hand to the step's user once it is known.
pub(super) fn mount_binds(
    sys: &dyn Sys,
    spec: &Spec,
    root: &str,
    created: &mut Vec<String>,
) -> R<Vec<String>> {
    // resolv.conf, hosts, hostname: provided, not part of the layer.
    for (name, host) in &spec.etc_files {
        let inside = in_root(root, &format!("/etc/{name}"))?;
        ensure_file(root, &inside, created)?;
        bind(
            sys,
            &host.display().to_string(),
            &format!("{root}{inside}"),
            0,
            true,
        )?;
    }
    // Descriptors of resolved bind sources, open until their mounts are made.
    let mut held_fds = Vec::new();
    // Cache mounts that belong to the step's user (known once the root is in place).
    let mut hand_to_user = Vec::new();
    for Bind {
        host,
        target,
        readonly,
        source,
    } in &spec.binds
    {
        // The target as the image's own symlinks lead, never out of the root (an image whose
        // /home is a link to an absolute host path cannot make the sandbox create there).
        let inside = in_root(root, target)?;
        let t = format!("{root}{inside}");
        let host = match source {
            BindSource::Host => host.clone(),
            BindSource::Cache { follow_user } => {
                if *follow_user && !readonly {
                    hand_to_user.push(inside.clone());
                }
                host.clone()
            }
            BindSource::Tmpfs { size } => {
                ensure_dir(root, &inside, created)?;
                let opts = match size {
                    Some(n) => format!("mode=1777,size={n}"),
                    None => "mode=1777".to_string(),
                };
                mount(
                    sys,
                    "tmpfs",
                    &t,
                    "tmpfs",
                    libc::MS_NOSUID | libc::MS_NODEV,
                    &opts,
                )?;
                continue;
            }
            BindSource::Memory { index, uid, gid } => memory_file(sys, host, *index, *uid, *gid)?,
            BindSource::Context { sub } => {
                let (path, fd) = beneath(host, sub, target)?;
                held_fds.push(fd);
                path
            }
            BindSource::Layers { lower, sub } => {
                let (m, u, w) = (host.join("m"), host.join("u"), host.join("w"));
                for d in [&m, &u, &w] {
                    std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
                }
                sys.mount_overlay(&m, lower, Some((&u, &w)))?;
                let (path, fd) = beneath(&m, sub, target)?;
                held_fds.push(fd);
                path
            }
        };
        if host.is_dir() {
            ensure_dir(root, &inside, created)?;
        } else {
            ensure_file(root, &inside, created)?;
        }
        bind(
            sys,
            &host.display().to_string(),
            &t,
            libc::MS_REC,
            *readonly,
        )?;
    }
    drop(held_fds);
    Ok(hand_to_user)
}
