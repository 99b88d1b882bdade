//! Paths inside a root, the foundation every floor may use: Go's lexical `clean`, symlinks
//! resolved as if a directory were `/` (`resolve_in_root`, `resolve_links`), and opens that never
//! follow a symlink on the way (`open_beneath`, `open_path_beneath`), and the one reader of an
//! image's `/etc/passwd` and `/etc/group` ([`passwd`]). Nothing here knows what a context, a
//! layer or a sandbox is: they all take paths (and those files' text) from here.

pub mod passwd;

use std::io;
use std::path::{Component, Path, PathBuf};

/// Go's `path.Clean`: no doubled or trailing slashes, `.` and `..` resolved lexically.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Resolve `rel` (already clean) inside `root`, following symlinks in every component but the
/// last as if `root` were `/`. The result is always below `root`.
pub fn resolve_parent_in_root(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    let mut resolved = resolve_in_root(root, parent, 0)?;
    if let Some(name) = rel.file_name() {
        resolved.push(name);
    }
    Ok(root.join(resolved))
}

/// Resolve every component of `rel` inside `root`; returns a path relative to `root`.
pub fn resolve_in_root(root: &Path, rel: &Path, depth: u32) -> io::Result<PathBuf> {
    resolve_links(rel, depth, &|candidate: &Path| {
        match std::fs::symlink_metadata(root.join(candidate)) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::read_link(root.join(candidate))
                    .map(Some)
                    .map_err(|e| {
                        if e.kind() == io::ErrorKind::InvalidInput {
                            // It was a link a moment ago: swapped during the build.
                            io::Error::other(format!(
                                "{} changed during the build",
                                candidate.display()
                            ))
                        } else {
                            e
                        }
                    })
            }
            _ => Ok(None),
        }
    })
}

/// Resolve every component of the relative path `rel` as if its root were `/`: `link` says
/// where a path (relative to the root) points when it is a symlink. `..` is clamped at the
/// root; more than 40 links is an error.
pub fn resolve_links(
    rel: &Path,
    depth: u32,
    link: &dyn Fn(&Path) -> io::Result<Option<PathBuf>>,
) -> io::Result<PathBuf> {
    if depth > 40 {
        return Err(io::Error::other("too many levels of symbolic links"));
    }
    let mut cur = PathBuf::new();
    let comps: Vec<Component> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        match c {
            Component::Normal(n) => {
                let candidate = cur.join(n);
                let Some(target) = link(&candidate)? else {
                    cur = candidate;
                    continue;
                };
                let base = if target.is_absolute() {
                    PathBuf::new()
                } else {
                    cur.clone()
                };
                let mut rest = base.join(&target);
                for r in &comps[i + 1..] {
                    rest.push(r.as_os_str());
                }
                // Clean lexically, clamping `..` at the root.
                let mut clean = PathBuf::new();
                for rc in rest.components() {
                    match rc {
                        Component::Normal(x) => clean.push(x),
                        Component::ParentDir => {
                            clean.pop();
                        }
                        _ => {}
                    }
                }
                return resolve_links(&clean, depth + 1, link);
            }
            Component::ParentDir => {
                cur.pop();
            }
            _ => {}
        }
    }
    Ok(cur)
}

/// Open the regular file `rel` below `root` for reading without following any symlink on the
/// way (the walk saw none there; one that is there now was swapped in during the build, and
/// could point outside the context): openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
/// relative to the context's directory, or, where the kernel has no openat2, a walk of
/// O_NOFOLLOW opens component by component. What is hashed and what is copied are read this
/// way, so no byte from outside the context can reach a key or a layer.
pub fn open_beneath(root: &Path, rel: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::OFlags;
    let f = std::fs::File::from(beneath(root, rel, OFlags::RDONLY | OFlags::NOCTTY)?);
    if !f.metadata()?.is_file() {
        return Err(swapped(rel, "changed"));
    }
    Ok(f)
}

/// An `O_PATH` descriptor of the file or directory `rel` below `root` (the root itself for an
/// empty path), opened as [`open_beneath`] opens: for a bind mount of the context, made through
/// `/proc/self/fd/N`, so that the mount is of exactly what was resolved and checked, whatever
/// is swapped in at that path afterwards.
pub fn open_path_beneath(root: &Path, rel: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::OFlags;
    let fd = beneath(root, rel, OFlags::PATH)?;
    let st = rustix::fs::fstat(&fd)?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if !matches!(
        kind,
        rustix::fs::FileType::RegularFile | rustix::fs::FileType::Directory
    ) {
        return Err(swapped(rel, "changed"));
    }
    Ok(fd)
}

fn swapped(rel: &Path, what: &str) -> std::io::Error {
    std::io::Error::other(format!(
        "{} {what} during the build (a symlink or a non-file where a file was); nothing outside the context is read",
        rel.display()
    ))
}

/// `rel` below `root` opened with `flags` (plus CLOEXEC and NOFOLLOW), no symlink followed on
/// the way: openat2 where the kernel has it, else one O_NOFOLLOW open per component.
fn beneath(
    root: &Path,
    rel: &Path,
    flags: rustix::fs::OFlags,
) -> std::io::Result<std::os::fd::OwnedFd> {
    beneath_at(&open_root(root)?, rel, flags)
}

/// The context root, opened to resolve paths beneath it ([`beneath_at`]).
pub fn open_root(root: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// [`beneath`] relative to the root's descriptor `dir` (opened once for many paths).
pub fn beneath_at(
    dir: &std::os::fd::OwnedFd,
    rel: &Path,
    flags: rustix::fs::OFlags,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use std::os::fd::AsFd;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    match rustix::fs::openat2(
        dir,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::XDEV) => Err(swapped(rel, "changed")),
        Err(rustix::io::Errno::NOSYS) => {
            // Before Linux 5.6: one component at a time, none of them a symlink.
            let comps: Vec<_> = rel
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            let mut cur: Option<std::os::fd::OwnedFd> = None;
            for (i, c) in comps.iter().enumerate() {
                let std::path::Component::Normal(name) = c else {
                    return Err(swapped(rel, "is not a plain path"));
                };
                let last = i + 1 == comps.len();
                let f = if last {
                    flags
                } else {
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
                };
                let at = cur.as_ref().map_or(dir.as_fd(), |c| c.as_fd());
                cur = Some(
                    rustix::fs::openat(at, *name, f, Mode::empty()).map_err(|e| {
                        if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                            swapped(rel, "changed")
                        } else {
                            e.into()
                        }
                    })?,
                );
            }
            match cur {
                // O_PATH | O_NOFOLLOW opens a symlink itself: the callers check the kind.
                Some(fd) => Ok(fd),
                None => Ok(rustix::fs::openat(dir, ".", flags, Mode::empty())?),
            }
        }
        Err(e) => Err(e.into()),
    }
}
