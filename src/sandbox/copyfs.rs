//! The copy snapshotter, for where overlayfs cannot be mounted in a user namespace: the lower
//! dirs are copied into one root (reflinks where the filesystem has them), every entry's inode
//! and ctime are recorded, and after the step the changes are gathered into a directory shaped
//! like an overlay upper dir (changed entries, 0/0 character-device whiteouts for deletions), so
//! the same layer writer reads both. Runs inside the user namespace, so owners are kept.

// Every std::fs call here maps its error through `err(path, …)`, which names the path.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

fn err(p: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{}: {e}", p.display()))
}

fn xattrs(p: &Path) -> Vec<(std::ffi::CString, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            continue;
        }
        let Ok(c) = std::ffi::CString::new(name) else {
            continue;
        };
        let mut v = vec![0u8; 4096];
        if let Ok(l) = rustix::fs::lgetxattr(p, c.as_c_str(), &mut v) {
            v.truncate(l);
            out.push((c, v));
        }
    }
    out
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    let mut v = [0u8; 4];
    [c"user.overlay.opaque", c"trusted.overlay.opaque"]
        .iter()
        .any(|n| rustix::fs::lgetxattr(p, *n, &mut v).is_ok_and(|l| &v[..l] == b"y"))
}

/// Copy one entry (not a directory's children) with owner, mode, xattrs and times.
fn copy_entry(
    src: &Path,
    dst: &Path,
    m: &std::fs::Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let ft = m.file_type();
    if ft.is_dir() {
        if std::fs::symlink_metadata(dst)
            .map(|d| !d.is_dir())
            .unwrap_or(false)
        {
            std::fs::remove_file(dst).map_err(|e| err(dst, e))?;
        }
        if !dst.exists() {
            std::fs::create_dir(dst).map_err(|e| err(dst, e))?;
        }
    } else {
        if std::fs::symlink_metadata(dst).is_ok() {
            let r = if std::fs::symlink_metadata(dst)
                .map(|d| d.is_dir())
                .unwrap_or(false)
            {
                std::fs::remove_dir_all(dst)
            } else {
                std::fs::remove_file(dst)
            };
            r.map_err(|e| err(dst, e))?;
        }
        if ft.is_symlink() {
            let t = std::fs::read_link(src).map_err(|e| err(src, e))?;
            std::os::unix::fs::symlink(t, dst).map_err(|e| err(dst, e))?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    return std::fs::hard_link(first, dst).map_err(|e| err(dst, e));
                }
                links.insert((m.dev(), m.ino()), dst.to_path_buf());
            }
            let from = std::fs::File::open(src).map_err(|e| err(src, e))?;
            let to = std::fs::File::create(dst).map_err(|e| err(dst, e))?;
            // A reflink where the filesystem can (btrfs, xfs), else a copy.
            if rustix::fs::ioctl_ficlone(&to, &from).is_err() {
                let mut from = from;
                let mut to = to;
                io::copy(&mut from, &mut to).map_err(|e| err(dst, e))?;
            }
        } else {
            let kind = if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else if ft.is_block_device() {
                rustix::fs::FileType::BlockDevice
            } else if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else {
                return Ok(());
            };
            if let Err(e) = rustix::fs::mknodat(
                rustix::fs::CWD,
                dst,
                kind,
                rustix::fs::Mode::from_raw_mode(m.mode() & 0o7777),
                m.rdev(),
            ) {
                if !is_whiteout(m) {
                    return Err(err(dst, e));
                }
            }
        }
    }
    let _ = std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()));
    if !ft.is_symlink() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(|e| err(dst, e))?;
    }
    for (n, v) in xattrs(src) {
        let _ = rustix::fs::lsetxattr(dst, n.as_c_str(), &v, rustix::fs::XattrFlags::empty());
    }
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec(),
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        },
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        dst,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
    Ok(())
}

/// Merge one lower dir (overlay-style whiteouts and opaque dirs) onto `dst`.
fn merge(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(|e| err(src, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(src, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let m = std::fs::symlink_metadata(&s).map_err(|e| err(&s, e))?;
        if is_whiteout(&m) {
            if let Ok(dm) = std::fs::symlink_metadata(&d) {
                let r = if dm.is_dir() {
                    std::fs::remove_dir_all(&d)
                } else {
                    std::fs::remove_file(&d)
                };
                r.map_err(|e| err(&d, e))?;
            }
            continue;
        }
        if m.is_dir() && is_opaque(&s) && d.is_dir() {
            std::fs::remove_dir_all(&d).map_err(|e| err(&d, e))?;
        }
        copy_entry(&s, &d, &m, links)?;
        if m.is_dir() {
            merge(&s, &d, links)?;
            // Children changed the dir's times: set them again.
            copy_entry(&s, &d, &m, links)?;
        }
    }
    Ok(())
}

/// Fill `root` from the lower dirs (top first) and return what each entry looked like.
pub fn prepare(lower: &[PathBuf], root: &Path) -> io::Result<State> {
    let mut links = HashMap::new();
    for l in lower.iter().rev() {
        merge(l, root, &mut links)?;
    }
    State::record(root)
}

/// (inode, ctime) of every entry below a root, to find what a step changed.
#[derive(Debug, Default)]
pub struct State(BTreeMap<PathBuf, (u64, i64, i64)>);

impl State {
    pub fn record(root: &Path) -> io::Result<State> {
        let mut map = BTreeMap::new();
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            for e in std::fs::read_dir(root.join(&rel)).map_err(|e| err(&root.join(&rel), e))? {
                let e = e.map_err(|e| err(root, e))?;
                let r = rel.join(e.file_name());
                let m = std::fs::symlink_metadata(e.path()).map_err(|er| err(&e.path(), er))?;
                map.insert(r.clone(), (m.ino(), m.ctime(), m.ctime_nsec()));
                if m.is_dir() {
                    todo.push(r);
                }
            }
        }
        Ok(State(map))
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|(p, (i, c, n))| format!("{i} {c} {n} {}", p.display()))
            .collect();
        std::fs::write(path, lines.join("\n")).map_err(|e| err(path, e))
    }

    pub fn load(path: &Path) -> io::Result<State> {
        let text = std::fs::read_to_string(path).map_err(|e| err(path, e))?;
        let mut map = BTreeMap::new();
        for l in text.lines().filter(|l| !l.is_empty()) {
            let mut it = l.splitn(4, ' ');
            let (i, c, n, p) = (it.next(), it.next(), it.next(), it.next());
            if let (Some(i), Some(c), Some(n), Some(p)) = (i, c, n, p) {
                map.insert(
                    PathBuf::from(p),
                    (
                        i.parse().unwrap_or(0),
                        c.parse().unwrap_or(0),
                        n.parse().unwrap_or(0),
                    ),
                );
            }
        }
        Ok(State(map))
    }
}

/// Gather what changed in `root` since `before` into `upper`, shaped like an overlay upper dir.
pub fn diff(root: &Path, before: &State, upper: &Path) -> io::Result<()> {
    let after = State::record(root)?;
    let mut links = HashMap::new();
    let mut parents_done: Vec<PathBuf> = Vec::new();
    let mut ensure_parents =
        |rel: &Path, links: &mut HashMap<(u64, u64), PathBuf>| -> io::Result<()> {
            let mut acc = PathBuf::new();
            for c in rel.parent().unwrap_or(Path::new("")).components() {
                acc.push(c);
                if parents_done.contains(&acc) {
                    continue;
                }
                let m = std::fs::symlink_metadata(root.join(&acc))
                    .map_err(|e| err(&root.join(&acc), e))?;
                copy_entry(&root.join(&acc), &upper.join(&acc), &m, links)?;
                parents_done.push(acc.clone());
            }
            Ok(())
        };
    for (rel, state) in &after.0 {
        if before.0.get(rel) == Some(state) {
            continue;
        }
        ensure_parents(rel, &mut links)?;
        let m = std::fs::symlink_metadata(root.join(rel)).map_err(|e| err(&root.join(rel), e))?;
        copy_entry(&root.join(rel), &upper.join(rel), &m, &mut links)?;
    }
    let gone: Vec<&PathBuf> = before
        .0
        .keys()
        .filter(|p| !after.0.contains_key(*p))
        .collect();
    for rel in gone {
        // A whiteout for the topmost deleted entry only.
        if rel.parent().is_some_and(|p| {
            !p.as_os_str().is_empty() && !after.0.contains_key(p) && before.0.contains_key(p)
        }) {
            continue;
        }
        ensure_parents(rel, &mut links)?;
        let name: OsString = rel.file_name().unwrap_or_default().to_os_string();
        let w = upper.join(rel.parent().unwrap_or(Path::new(""))).join(name);
        if std::fs::symlink_metadata(&w).is_ok() {
            continue;
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &w,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .map_err(|e| err(&w, e))?;
    }
    Ok(())
}
