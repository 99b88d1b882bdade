//! The build context: `.dockerignore` matching with Docker's semantics ([`ignore`]) and the
//! filtered walk that COPY sources and `.dockerignore` make of a context tree ([`walk`]).
//!
//! Content digests of what a walk yields, with a metadata cache so a no-op rebuild reads no
//! file ([`checksum`]). Never follows a symlink: links are reported as links.

pub mod checksum;
pub mod glob;
pub mod ignore;

use std::collections::HashMap;
use std::path::Path;

use ignore::Matcher;

/// The hint for a context that changed while a step read it.
pub const UNSTABLE_CONTEXT: &str =
    "run the build again once the files are stable; files written during builds belong in .dockerignore";

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
    pub mtime_ns: i64,
    pub ino: u64,
    pub ctime_ns: i64,
}

impl Meta {
    pub fn of(m: &std::fs::Metadata) -> Meta {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
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
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
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
            Error::Changed { .. } => Some(UNSTABLE_CONTEXT),
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
    let mut listings = read_dirs(root, filter)?;
    let mut out = Vec::new();
    let mut pending: Vec<(Entry, bool)> = Vec::new();
    out.reserve(listings.values().map(Vec::len).sum());
    assemble(&mut listings, "", &mut pending, &mut out);
    Ok(out)
}

/// What the walk keeps of one directory entry.
struct Child {
    /// Its path below the root (made once, moved into the [`Entry`]).
    path: String,
    kind: Kind,
    /// Stat'ed when the walk may yield it.
    meta: Option<Meta>,
    /// Yielded if something is (it passes the filter); else only a way down.
    included: bool,
    /// Entered: a directory the walk yields or may yield something below.
    enter: bool,
}

/// Read every directory the walk enters: names in order, kinds, and a stat of each entry it
/// may yield, relative to the directory just read (no path looked up from the root). The
/// directories of one depth are read on as many threads as there are cores (at most 8), as
/// `git status` stats its index on several; each is opened beneath the root with no symlink
/// followed.
fn read_dirs(root: &Path, f: &Filter) -> Result<HashMap<String, Vec<Child>>, Error> {
    let threads = crate::cores().min(8);
    let root_fd = &crate::fsx::open_root(root).map_err(|e| Error::Io {
        path: root.display().to_string(),
        source: e,
    })?;
    let mut listings = HashMap::new();
    let mut level = vec![String::new()];
    while !level.is_empty() {
        let read: Vec<Result<(String, Vec<Child>), Error>> = if threads == 1 || level.len() < 8 {
            level
                .drain(..)
                .map(|d| read_one(root, root_fd, f, d, threads))
                .collect()
        } else {
            let chunk = level.len().div_ceil(threads);
            let parts: Vec<Vec<String>> = level.chunks(chunk).map(|c| c.to_vec()).collect();
            level.clear();
            std::thread::scope(|s| {
                let handles: Vec<_> = parts
                    .into_iter()
                    .map(|part| {
                        s.spawn(move || {
                            part.into_iter()
                                .map(|d| read_one(root, root_fd, f, d, 1))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| {
                        h.join()
                            .unwrap_or_else(|_| vec![Err(panicked(root, "walk"))])
                    })
                    .collect()
            })
        };
        for r in read {
            let (dir, children) = r?;
            for c in children.iter().filter(|c| c.enter) {
                level.push(c.path.clone());
            }
            listings.insert(dir, children);
        }
    }
    Ok(listings)
}

fn kind_of(t: rustix::fs::FileType) -> Kind {
    match t {
        rustix::fs::FileType::Directory => Kind::Dir,
        rustix::fs::FileType::Symlink => Kind::Symlink,
        _ => Kind::File,
    }
}

/// Read the directory `rel`: its entries sorted by name, with what the filter makes of them.
/// `threads`: how many threads may stat a large directory's entries (1 on the threads that
/// already read a level of directories side by side).
fn read_one(
    root: &Path,
    root_fd: &std::os::fd::OwnedFd,
    f: &Filter,
    rel: String,
    threads: usize,
) -> Result<(String, Vec<Child>), Error> {
    use rustix::fs::{AtFlags, FileType, OFlags};
    let io = |path: &str, e: std::io::Error| Error::Io {
        path: root.join(path).display().to_string(),
        source: e,
    };
    let fd = crate::fsx::beneath_at(root_fd, Path::new(&rel), OFlags::RDONLY | OFlags::DIRECTORY)
        .map_err(|e| io(&rel, e))?;
    // Paths made once, as `rel/name`; sorted by name. The entries are read with getdents
    // into one buffer, no allocation per entry.
    let prefix = if rel.is_empty() { 0 } else { rel.len() + 1 };
    let mut names: Vec<(String, Option<Kind>)> = Vec::new();
    let mut buf = Vec::with_capacity(32 * 1024);
    let mut dir = rustix::fs::RawDir::new(&fd, buf.spare_capacity_mut());
    while let Some(e) = dir.next() {
        let e = e.map_err(|e| io(&rel, e.into()))?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = match e.file_type() {
            FileType::Unknown => None,
            t => Some(kind_of(t)),
        };
        let mut path = String::with_capacity(prefix + name.len());
        if prefix > 0 {
            path.push_str(&rel);
            path.push('/');
        }
        path.push_str(&String::from_utf8_lossy(name));
        names.push((path, kind));
    }
    names.sort_unstable_by(|a, b| a.0[prefix..].cmp(&b.0[prefix..]));
    let dfd = &fd;
    let stat = |path: &str| {
        rustix::fs::statat(dfd, &path[prefix..], AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io(path, e.into()))
    };
    let mut children = Vec::with_capacity(names.len());
    for (path, kind) in names {
        let mut st = None;
        let kind = match kind {
            Some(k) => k,
            // No type from the directory (some filesystems): ask the inode.
            None => {
                let s = stat(&path)?;
                let k = kind_of(FileType::from_raw_mode(s.st_mode));
                st = Some(s);
                k
            }
        };
        let is_dir = kind == Kind::Dir;
        let included = f.included(&path);
        let may_include_below = is_dir
            && !included
            && f.include
                .as_ref()
                .is_some_and(|m| m.could_match_below(&path, false));
        if !included && !may_include_below {
            continue;
        }
        let excluded = f.exclude.excluded(&path);
        let (yield_it, enter) = if excluded {
            // Excluded: entered only for an exception below it, and yielded only before one.
            let below = is_dir && f.exclude.could_match_below(&path, true);
            (below, below)
        } else {
            (true, is_dir)
        };
        if !yield_it && !enter {
            continue;
        }
        children.push(Child {
            path,
            kind,
            meta: st.as_ref().map(Meta::of_stat),
            included: included && !excluded,
            enter,
        });
    }
    // The stats: a large directory's on every core (a context of one directory of thousands
    // of files is common), a small one's here.
    let fill = |part: &mut [Child]| -> Result<(), Error> {
        for c in part.iter_mut().filter(|c| c.meta.is_none()) {
            c.meta = Some(Meta::of_stat(&stat(&c.path)?));
        }
        Ok(())
    };
    if threads > 1 && children.len() >= 1024 {
        let chunk = children.len().div_ceil(threads);
        std::thread::scope(|s| {
            let parts: Vec<_> = children
                .chunks_mut(chunk)
                .map(|part| s.spawn(|| fill(part)))
                .collect();
            parts.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(panicked(&root.join(&rel), "stat")))
            })
        })?;
    } else {
        fill(&mut children)?;
    }
    Ok((rel, children))
}

/// The error for a `what` thread (walk, stat, checksum) over `path` that panicked.
pub(crate) fn panicked(path: &Path, what: &str) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(format!("a {what} thread panicked")),
    }
}

/// Yield the entries below `rel` in walk order from the directories read. `pending`: the
/// directories entered but not yielded yet (and whether they have been since); they are
/// yielded just before their first yielded descendant.
fn assemble(
    listings: &mut HashMap<String, Vec<Child>>,
    rel: &str,
    pending: &mut Vec<(Entry, bool)>,
    out: &mut Vec<Entry>,
) {
    let Some(children) = listings.remove(rel) else {
        return;
    };
    for c in children {
        let entry = Entry {
            path: c.path,
            kind: c.kind,
            meta: c.meta,
        };
        if c.included {
            for (p, done) in pending.iter_mut().filter(|(_, done)| !*done) {
                out.push(p.clone());
                *done = true;
            }
            if c.enter {
                let path = entry.path.clone();
                out.push(entry);
                assemble(listings, &path, pending, out);
            } else {
                out.push(entry);
            }
        } else if c.enter {
            let path = entry.path.clone();
            pending.push((entry, false));
            assemble(listings, &path, pending, out);
            pending.pop();
        }
    }
}
