//! The build context: `.dockerignore` matching with Docker's semantics ([`ignore`]) and the
//! filtered walk that COPY sources and `.dockerignore` make of a context tree ([`walk`]).
//!
//! Content digests of what a walk yields, with a metadata cache so a no-op rebuild reads no
//! file ([`checksum`]). Never follows a symlink: links are reported as links.

pub mod checksum;
pub mod glob;
pub mod ignore;

use std::path::Path;

use ignore::Matcher;

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
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    match rustix::fs::openat2(
        &dir,
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
            let mut cur = dir;
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
                cur = rustix::fs::openat(&cur, *name, f, Mode::empty()).map_err(|e| {
                    if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                        swapped(rel, "changed")
                    } else {
                        e.into()
                    }
                })?;
            }
            if comps.is_empty() {
                cur = rustix::fs::openat(&cur, ".", flags, Mode::empty())?;
            }
            // O_PATH | O_NOFOLLOW opens a symlink itself: the callers check the kind.
            Ok(cur)
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// One entry a filtered walk yields, with its slash-separated path below the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    /// What the walk's stat saw (relative to the directory it read, so no path lookup from
    /// the root): the checksum pass uses it instead of a stat of its own. `None` for entries
    /// not made by a walk.
    pub meta: Option<Meta>,
}

/// The metadata of an entry that its content digest depends on, and that says whether a
/// cached digest still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits and file type (st_mode).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub ctime_ns: i128,
}

impl Meta {
    pub fn of(m: &std::fs::Metadata) -> Meta {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Meta {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ino: m.ino(),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    pub fn of_stat(st: &rustix::fs::Stat) -> Meta {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec as i64),
            ino: st.st_ino,
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec as i64),
        }
    }

    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pattern(#[from] ignore::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: changed while it was read (its size, time or inode moved); nothing was cached"
    )]
    Changed { path: String },
}

impl Error {
    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Changed { .. } => Some(crate::engine::error::UNSTABLE_CONTEXT),
            _ => None,
        }
    }
}

/// Include patterns (COPY sources; none means everything) and exclude patterns
/// (`.dockerignore`), as the walk applies them.
#[derive(Debug, Clone)]
pub struct Filter {
    include: Option<Matcher>,
    exclude: Matcher,
}

impl Filter {
    pub fn new<S: AsRef<str>>(include: &[S], exclude: &[S]) -> Result<Filter, Error> {
        let include = if include.is_empty() {
            None
        } else {
            Some(Matcher::new(include)?)
        };
        Ok(Filter {
            include,
            exclude: Matcher::new(exclude)?,
        })
    }

    fn included(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|m| m.excluded(path))
    }

    /// Does the filter let `path` through (what opening it through the filter decides)?
    pub fn visible(&self, path: &str) -> bool {
        self.included(path) && !self.exclude.excluded(path)
    }
}

/// Walk `root` in lexical order, yielding what passes the filter. A directory that is not
/// itself yielded is still entered when something below it could be (an include pattern deeper
/// down, an exception under an excluded directory); it is then yielded just before its first
/// yielded descendant.
pub fn walk(root: &Path, filter: &Filter) -> Result<Vec<Entry>, Error> {
    let mut out = Vec::new();
    let mut pending: Vec<(Entry, bool)> = Vec::new();
    walk_dir(root, "", filter, &mut pending, &mut out)?;
    stat_all(root, &mut out)?;
    Ok(out)
}

/// Fill in every entry's [`Meta`]: on as many threads as there are cores for a large walk (as
/// `git status` stats its index on several), each stat relative to its parent directory, opened
/// once per run of entries below it (beneath the root, no symlink followed), so no stat looks
/// its path up from the root.
fn stat_all(root: &Path, entries: &mut [Entry]) -> Result<(), Error> {
    let threads = if entries.len() < 4096 {
        1
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8)
    };
    let chunk = entries.len().div_ceil(threads).max(1);
    if threads == 1 {
        return stat_part(root, entries);
    }
    std::thread::scope(|s| {
        let parts: Vec<_> = entries
            .chunks_mut(chunk)
            .map(|part| s.spawn(move || stat_part(root, part)))
            .collect();
        let mut first = Ok(());
        for p in parts {
            let r = p.join().unwrap_or_else(|_| {
                Err(Error::Io {
                    path: root.display().to_string(),
                    source: std::io::Error::other("a stat thread panicked"),
                })
            });
            if first.is_ok() {
                first = r;
            }
        }
        first
    })
}

fn stat_part(root: &Path, part: &mut [Entry]) -> Result<(), Error> {
    use rustix::fs::{AtFlags, OFlags};
    let mut dir: Option<(String, std::os::fd::OwnedFd)> = None;
    for e in part {
        let (parent, name) = e.path.rsplit_once('/').unwrap_or(("", e.path.as_str()));
        let io = |er: std::io::Error| Error::Io {
            path: root.join(&e.path).display().to_string(),
            source: er,
        };
        if dir.as_ref().map(|(p, _)| p.as_str()) != Some(parent) {
            let fd =
                beneath(root, Path::new(parent), OFlags::PATH | OFlags::DIRECTORY).map_err(io)?;
            dir = Some((parent.to_string(), fd));
        }
        let (_, fd) = dir.as_ref().expect("opened above");
        let st =
            rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|er| io(er.into()))?;
        e.meta = Some(Meta::of_stat(&st));
    }
    Ok(())
}

/// `pending`: the directories entered but not yielded yet (and whether they have been since).
fn walk_dir(
    root: &Path,
    rel: &str,
    f: &Filter,
    pending: &mut Vec<(Entry, bool)>,
    out: &mut Vec<Entry>,
) -> Result<(), Error> {
    let dir = root.join(rel);
    let io = |e: std::io::Error| Error::Io {
        path: dir.display().to_string(),
        source: e,
    };
    let mut names: Vec<(String, std::fs::FileType)> = fs_err::read_dir(&dir)
        .map_err(io)?
        .map(|e| e.and_then(|e| Ok((e.file_name().to_string_lossy().into_owned(), e.file_type()?))))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, ft) in names {
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let is_dir = ft.is_dir();
        let kind = if is_dir {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::File
        };
        let included = f.included(&path);
        let may_include_below = is_dir
            && !included
            && f.include
                .as_ref()
                .is_some_and(|m| m.could_match_below(&path, false));
        if !included && !may_include_below {
            continue;
        }
        let entry = Entry {
            path: path.clone(),
            kind,
            meta: None,
        };
        if f.exclude.excluded(&path) {
            if is_dir && f.exclude.could_match_below(&path, true) {
                pending.push((entry, false));
                walk_dir(root, &path, f, pending, out)?;
                pending.pop();
            }
            continue;
        }
        if included {
            for (p, done) in pending.iter_mut().filter(|(_, done)| !*done) {
                out.push(p.clone());
                *done = true;
            }
            out.push(entry);
            if is_dir {
                walk_dir(root, &path, f, pending, out)?;
            }
        } else {
            pending.push((entry, false));
            walk_dir(root, &path, f, pending, out)?;
            pending.pop();
        }
    }
    Ok(())
}
