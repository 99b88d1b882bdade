//! COPY and ADD: Docker's path rules turned into a layer.
//!
//! A [`CopyJob`] names where the sources come from (the context, or the layers of a stage or
//! image), what the destination filesystem looks like (the layers below), and the instruction's
//! paths and flags. [`hook`] runs it inside the user namespace, where every owner in the layers
//! can be read: it mounts read-only views of the source and destination layers, resolves the
//! sources (wildcards, symlinks scoped to their root, a directory's contents rather than the
//! directory), decides where each lands (trailing slashes, existing directories, symlinks in the
//! destination path), and writes the entries straight into a compressed layer blob.
//!
//! [`resolve_sources`] is also used outside the namespace, on the context, for the step's cache
//! key: the key covers exactly the files the step reads.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::context::{self, ignore::Matcher, Entry, Filter, Kind};
use crate::layer::{Compression, LayerInfo, LayerSink};

/// Why a COPY, ADD or WORKDIR's copy job failed. It crosses the hook's report pipe as its
/// message ([`CopyResult::Error`]), which is what the user sees; the causes are part of the
/// message, not typed causes of a chain (so they class nothing: the step failed).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source that is not there (`path` relative to the source root).
    #[error("\"/{path}\": not found")]
    NotFound { path: String },
    /// A source that could not be resolved or read.
    #[error("\"/{path}\": {cause}")]
    Source { path: String, cause: io::Error },
    /// The include and ignore patterns of a source do not parse, or its walk failed.
    #[error("{0}")]
    Walk(context::Error),
    #[error("--exclude: {0}")]
    Exclude(context::ignore::Error),
    /// A file or directory (named in the message by fs_err) could not be read or made.
    #[error("{0}")]
    Io(io::Error),
    #[error("a view of the layers: {0}")]
    View(crate::sandbox::SetupError),
    #[error("writing the layer: {0}")]
    Layer(io::Error),
    /// A `--chown` user or group not in the destination's passwd or group file.
    #[error("{0}")]
    Chown(#[from] crate::fsx::passwd::ChownError),
    /// An archive that could not be opened or sniffed.
    #[error("{}: {cause}", path.display())]
    Archive { path: PathBuf, cause: io::Error },
    /// An archive that could not be unpacked.
    #[error("extracting {}: {cause}", path.display())]
    Extract {
        path: PathBuf,
        cause: crate::layer::apply::ApplyError,
    },
}

/// Where COPY reads from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Source {
    /// The build context (a host directory) with its `.dockerignore` patterns.
    Context { root: PathBuf, ignore: Vec<String> },
    /// The layers (snapshot dirs, top first) of a stage or an image.
    Layers(Vec<PathBuf>),
}

/// A heredoc source: a file of that name with that content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inline {
    pub name: String,
    pub data: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyJob {
    pub source: Source,
    /// The layers below the step (snapshot dirs, top first); empty for scratch and `--link`.
    pub dest_lowers: Vec<PathBuf>,
    /// Instead of `dest_lowers`: the path indexes of the layers below (`layer::paths`, bottom
    /// first), when some of them are not unpacked (a runner that took the steps before from
    /// a cache): COPY needs only their paths and /etc/passwd, not their files.
    #[serde(default)]
    pub dest_paths: Vec<PathBuf>,
    pub sources: Vec<String>,
    pub inline: Vec<Inline>,
    /// Absolute (WORKDIR applied), trailing slash kept.
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub excludes: Vec<String>,
    pub parents: bool,
    /// ADD: local archives are extracted.
    pub unpack: bool,
    /// Clamp times to this (SOURCE_DATE_EPOCH).
    pub epoch: Option<i64>,
    /// The time given to directories and heredoc files the step creates.
    pub now: i64,
    /// A scratch directory for mount points and extracted archives.
    pub work: PathBuf,
    /// Where the layer blob is written.
    pub out: PathBuf,
    pub compression: Compression,
    /// The instruction name, for messages.
    pub what: String,
}

/// What the hook reports back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CopyResult {
    Layer {
        layer: crate::engine::cache::LayerRec,
        entries: usize,
        /// Directories the step created or copied (absolute), so later steps know they exist.
        dirs: Vec<String>,
    },
    /// A user-facing error (a source not found, an unknown --chown user, ...).
    Error(String),
}

/// One source after resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The real path below the source root (symlinks followed), slash-separated, "" for the root.
    pub path: String,
    /// The name the match has (the last component as written or matched, not the link target's).
    pub name: String,
    pub is_dir: bool,
    /// With `--parents`: the path kept below the destination.
    pub keep: Option<String>,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// A source path as written, made relative to its root: leading `/` dropped, `.` and `..`
/// resolved and clamped at the root.
fn clean_rel(s: &str) -> String {
    let c = crate::fsx::clean(&format!("/{s}"));
    c.trim_start_matches('/').to_string()
}

/// Resolve `sources` below `root`. A missing plain path is an error naming it; a wildcard may
/// match nothing (the caller decides whether that leaves nothing to copy).
pub fn resolve_sources(
    root: &Path,
    sources: &[String],
    parents: bool,
) -> Result<Vec<Resolved>, CopyError> {
    let mut out = Vec::new();
    for s in sources {
        // `--parents` with a `/./` pivot keeps only what follows it.
        let (pivot, pattern) = match (parents, s.find("/./")) {
            (true, Some(i)) => (clean_rel(&s[..i]), clean_rel(&s[i + 3..])),
            _ => (String::new(), clean_rel(s)),
        };
        let full = join(&pivot, &pattern);
        let matches: Vec<String> = if has_glob(&full) {
            glob(root, &full)
        } else {
            vec![full.clone()]
        };
        if matches.is_empty() && !has_glob(&full) {
            return Err(CopyError::NotFound { path: full });
        }
        for m in matches {
            let real = crate::fsx::resolve_in_root(root, Path::new(&m), 0).map_err(|cause| {
                CopyError::Source {
                    path: m.clone(),
                    cause,
                }
            })?;
            let real = real.to_string_lossy().into_owned();
            let meta = match std::fs::metadata(root.join(&real)) {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(CopyError::NotFound { path: m })
                }
                Err(cause) => return Err(CopyError::Source { path: m, cause }),
            };
            let name = m.rsplit('/').next().unwrap_or("").to_string();
            // Below the pivot, which may itself hold wildcards (`a/b*/./c`): as many
            // components as it has are dropped from the match.
            let keep = parents.then(|| {
                let skip = pivot.split('/').filter(|c| !c.is_empty()).count();
                m.split('/')
                    .filter(|c| !c.is_empty())
                    .skip(skip)
                    .collect::<Vec<_>>()
                    .join("/")
            });
            out.push(Resolved {
                path: real,
                name,
                is_dir: meta.is_dir(),
                keep,
            });
        }
    }
    Ok(out)
}

/// Every path below `root` matching `pattern` component by component (symlinked directories
/// are followed inside the root), in lexical order.
fn glob(root: &Path, pattern: &str) -> Vec<String> {
    let comps: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let mut found = vec![String::new()];
    for c in &comps {
        let mut next = Vec::new();
        // `**` (as in BuildKit's include patterns): zero or more directories.
        if *c == "**" {
            for base in &found {
                descendants(root, base, &mut next);
            }
            next.sort();
            next.dedup();
            found = next;
            continue;
        }
        // A malformed wildcard matches nothing (the front end refuses most of them first).
        let g = if has_glob(c) {
            match crate::context::glob::Glob::new(c) {
                Ok(g) => Some(g),
                Err(_) => return Vec::new(),
            }
        } else {
            None
        };
        for base in &found {
            let Some(g) = &g else {
                let p = join(base, c);
                let real = crate::fsx::resolve_in_root(root, Path::new(&p), 0);
                if real.is_ok_and(|r| std::fs::symlink_metadata(root.join(r)).is_ok()) {
                    next.push(p);
                }
                continue;
            };
            let Ok(real) = crate::fsx::resolve_in_root(root, Path::new(base), 0) else {
                continue;
            };
            let Ok(rd) = std::fs::read_dir(root.join(real)) else {
                continue;
            };
            // Go's Match lets a wildcard match a leading dot, and so does BuildKit.
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| g.is_match(n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| join(base, &n)));
        }
        found = next;
    }
    found
}

/// `base` and every directory below it (inside `root`, symlinks not followed), for `**`.
fn descendants(root: &Path, base: &str, out: &mut Vec<String>) {
    out.push(base.to_string());
    let Ok(rd) = std::fs::read_dir(root.join(base)) else {
        return;
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        descendants(root, &join(base, &n), out);
    }
}

/// Escape glob metacharacters so a literal path can be given to a [`Matcher`].
pub fn escape_pattern(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The entries a resolved context source brings in, after `.dockerignore` and `--exclude`,
/// with paths relative to the context root (the source itself first when it is a directory).
pub fn source_entries(
    root: &Path,
    r: &Resolved,
    ignore: &[String],
    excludes: &[String],
) -> Result<Vec<Entry>, CopyError> {
    if !r.is_dir {
        return Ok(vec![Entry {
            path: r.path.clone(),
            kind: Kind::File,
            meta: None,
        }]);
    }
    let include: Vec<String> = if r.path.is_empty() {
        Vec::new()
    } else {
        vec![escape_pattern(&r.path)]
    };
    let filter = Filter::new(&include, ignore).map_err(CopyError::Walk)?;
    let mut entries = context::walk(root, &filter).map_err(CopyError::Walk)?;
    if !excludes.is_empty() {
        let ex = Matcher::new(excludes).map_err(CopyError::Exclude)?;
        let prefix = if r.path.is_empty() {
            String::new()
        } else {
            format!("{}/", r.path)
        };
        entries.retain(|e| match e.path.strip_prefix(&prefix) {
            Some(rel) => !ex.excluded(rel),
            None => true,
        });
    }
    Ok(entries)
}

/// What one tar entry is.
#[derive(Debug, Clone)]
enum Body {
    Dir,
    /// A regular file `rel` below the source root `root`, opened without following symlinks.
    File {
        root: PathBuf,
        rel: PathBuf,
    },
    Data(Vec<u8>),
    Symlink(PathBuf),
}

#[derive(Debug, Clone)]
struct Out {
    body: Body,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// The hook: run `job`; its answer goes back over the sandbox's report pipe.
pub fn hook(job: &CopyJob) -> CopyResult {
    match run(job) {
        Ok(r) => r,
        Err(e) => CopyResult::Error(e.to_string()),
    }
}

/// A read-only view of `lowers` (top first) at `at`: the single dir itself, an empty dir, or
/// an overlay of several.
fn view(lowers: &[PathBuf], at: &Path) -> Result<PathBuf, CopyError> {
    match lowers {
        [] => {
            fs_err::create_dir_all(at).map_err(CopyError::Io)?;
            Ok(at.to_path_buf())
        }
        [one] => Ok(one.clone()),
        many => {
            fs_err::create_dir_all(at).map_err(CopyError::Io)?;
            crate::sandbox::overlay::mount(at, many, None).map_err(CopyError::View)?;
            Ok(at.to_path_buf())
        }
    }
}

/// The filesystem below the step, as COPY asks about it: an unpacked view, or the layers'
/// paths.
enum Dest {
    Dir(PathBuf),
    Paths(crate::layer::paths::Merged),
}

impl Dest {
    fn open(job: &CopyJob) -> Result<Dest, CopyError> {
        if job.dest_paths.is_empty() {
            return Ok(Dest::Dir(view(&job.dest_lowers, &job.work.join("dest"))?));
        }
        crate::layer::paths::Merged::load(&job.dest_paths)
            .map(Dest::Paths)
            .map_err(CopyError::Io)
    }

    /// `etc/passwd` or `etc/group` (empty when absent).
    fn etc(&self, rel: &str) -> String {
        match self {
            Dest::Dir(d) => fs_err::read_to_string(d.join(rel)).unwrap_or_default(),
            Dest::Paths(m) => m.etc(rel),
        }
    }

    /// `rel` with symlinks followed inside the root.
    fn resolve(&self, rel: &str) -> std::io::Result<PathBuf> {
        match self {
            Dest::Dir(d) => crate::fsx::resolve_in_root(d, Path::new(rel), 0),
            Dest::Paths(m) => m.resolve(Path::new(rel), 0),
        }
    }

    /// The owner, mode and time of the directory at the resolved `real`, if it is one.
    fn dir_meta(&self, real: &str) -> Option<crate::layer::paths::DirMeta> {
        let rel = real.trim_start_matches('/');
        match self {
            Dest::Dir(d) => {
                use std::os::unix::fs::MetadataExt;
                let m = std::fs::symlink_metadata(d.join(rel)).ok()?;
                m.is_dir().then(|| crate::layer::paths::DirMeta {
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime: m.mtime(),
                })
            }
            Dest::Paths(m) => m.dir_meta(rel),
        }
    }

    /// Whether the resolved `real` exists, and is a directory.
    fn is_dir(&self, real: &str) -> Option<bool> {
        let rel = real.trim_start_matches('/');
        match self {
            Dest::Dir(d) => std::fs::symlink_metadata(d.join(rel))
                .ok()
                .map(|m| m.is_dir()),
            Dest::Paths(m) => m.kind(rel).map(|k| *k == crate::layer::paths::Kind::Dir),
        }
    }
}

fn run(job: &CopyJob) -> Result<CopyResult, CopyError> {
    let dest_root = Dest::open(job)?;
    let (src_root, ignore, keep_owner) = match &job.source {
        Source::Context { root, ignore } => (root.clone(), ignore.clone(), false),
        Source::Layers(l) => (view(l, &job.work.join("src"))?, Vec::new(), true),
    };
    let owner = match &job.chown {
        Some(spec) => {
            let passwd = dest_root.etc("etc/passwd");
            let group = dest_root.etc("etc/group");
            Some(owner_ids(spec, &passwd, &group)?)
        }
        None => None,
    };
    let mut plan = Planner {
        job,
        dest_root: &dest_root,
        owner,
        entries: BTreeMap::new(),
        dirs: Vec::new(),
    };
    if job.sources.is_empty() && job.inline.is_empty() {
        // WORKDIR: just the directory (and its parents), owned as asked.
        let dest = crate::fsx::clean(&job.dest);
        plan.parents_of(&dest);
        let o = plan.created(Body::Dir, 0o755);
        plan.add(&dest, o);
    } else {
        copy_sources(&mut plan, &src_root, &ignore, keep_owner)?;
    }
    plan.existing_parents();
    let info = write_layer(job, &plan.entries).map_err(CopyError::Layer)?;
    Ok(CopyResult::Layer {
        layer: info.into(),
        entries: plan.entries.len(),
        dirs: plan.dirs,
    })
}

/// Plan the entries of the job's sources (below `src_root`) and heredocs at their destinations.
fn copy_sources(
    plan: &mut Planner,
    src_root: &Path,
    ignore: &[String],
    keep_owner: bool,
) -> Result<(), CopyError> {
    let job = plan.job;
    let resolved = resolve_sources(src_root, &job.sources, job.parents)?;
    if resolved.is_empty() && job.inline.is_empty() {
        // Wildcards that match nothing copy nothing, as in BuildKit (AllowEmptyWildcard);
        // with --parents the destination directory is still made.
        if job.parents {
            let dest = plan.real_dest(&crate::fsx::clean(&job.dest));
            if !plan.is_dir_in_dest(&dest) {
                plan.parents_of(&dest);
                let o = plan.created(Body::Dir, plan.dir_mode());
                plan.add(&dest, o);
            }
        }
        return Ok(());
    }
    let count = resolved.len() + job.inline.len();
    let dest_is_dir = job.dest.ends_with('/')
        || job.dest.ends_with("/.")
        || count > 1
        || plan.is_dir_in_dest(&job.dest)
        || job.parents;
    // As BuildKit (fsutil's Copy resolves its destination with RootPath): a destination that
    // is a symlink in the image, dangling or not, is followed, so `COPY a /link` writes the
    // file where /link points and keeps the link (it used to replace the link).
    let dest = plan.real_dest(&crate::fsx::clean(&job.dest));
    for inline in &job.inline {
        let target = if dest_is_dir {
            join_abs(&dest, &inline.name)
        } else {
            dest.clone()
        };
        plan.parents_of(&target);
        let mode = plan.mode(0o644, false);
        let o = plan.created(Body::Data(inline.data.clone().into_bytes()), mode);
        plan.add(&target, o);
    }
    for r in &resolved {
        let base = match &r.keep {
            Some(k) => join_abs(&dest, k),
            None if r.is_dir => dest.clone(),
            None if dest_is_dir => join_abs(&dest, &r.name),
            None => dest.clone(),
        };
        if !r.is_dir && job.unpack {
            if let Some(tmp) = extract_archive(src_root, Path::new(&r.path), job)? {
                // An archive's contents go into the destination directory itself.
                plan.tree(&tmp, "", &dest, &[], &[], true)?;
                continue;
            }
        }
        if r.is_dir {
            plan.tree(src_root, &r.path, &base, ignore, &job.excludes, keep_owner)?;
        } else {
            plan.parents_of(&base);
            let m = fs_err::metadata(src_root.join(&r.path)).map_err(CopyError::Io)?;
            let o = plan.file_out(src_root, &r.path, &m, keep_owner);
            plan.add(&base, o);
        }
    }
    Ok(())
}

fn join_abs(dir: &str, name: &str) -> String {
    crate::fsx::clean(&format!("{dir}/{name}"))
}

/// `--chown` ids: names resolved in the destination's passwd and group files.
pub fn owner_ids(spec: &str, passwd: &str, group: &str) -> Result<(u32, u32), CopyError> {
    let chown = crate::dockerfile::Chown::split(spec);
    Ok(crate::fsx::passwd::chown_ids(
        &chown.user,
        chown.group.as_deref(),
        passwd,
        group,
    )?)
}

struct Planner<'a> {
    job: &'a CopyJob,
    dest_root: &'a Dest,
    owner: Option<(u32, u32)>,
    /// Destination path (absolute, clean) → entry.
    entries: BTreeMap<String, Out>,
    dirs: Vec<String>,
}

impl Planner<'_> {
    fn clamp(&self, t: i64) -> i64 {
        match self.job.epoch {
            Some(e) if t > e => e,
            _ => t,
        }
    }

    /// An entry the step creates (a directory or a heredoc file): `--chown`'s owner or root,
    /// the build's time.
    fn created(&self, body: Body, mode: u32) -> Out {
        let (uid, gid) = self.owner.unwrap_or((0, 0));
        Out {
            body,
            mode,
            uid,
            gid,
            mtime: self.clamp(self.job.now),
        }
    }

    fn mode(&self, m: u32, is_dir: bool) -> u32 {
        match &self.job.chmod {
            Some(c) => c
                .parse::<crate::dockerfile::Chmod>()
                .map_or(m, |c| c.apply(m, is_dir)),
            None => m,
        }
    }

    /// The real location of `abs` in the destination, following symlinks there.
    fn real_dest(&self, abs: &str) -> String {
        let rel = abs.trim_start_matches('/');
        match self.dest_root.resolve(rel) {
            Ok(p) => format!("/{}", p.to_string_lossy()),
            Err(_) => abs.to_string(),
        }
    }

    /// Whether `abs` exists in the destination (symlinks followed), and is a directory.
    fn exists_in_dest(&self, abs: &str) -> Option<bool> {
        self.dest_root.is_dir(&self.real_dest(abs))
    }

    fn is_dir_in_dest(&self, abs: &str) -> bool {
        let a = crate::fsx::clean(abs);
        self.entries
            .get(&a)
            .map(|o| matches!(o.body, Body::Dir))
            .unwrap_or_else(|| self.exists_in_dest(&a) == Some(true))
    }

    /// Add (replacing) an entry at the destination path `abs`, redirected through symlinks of
    /// the destination's directories.
    fn add(&mut self, abs: &str, o: Out) {
        let abs = crate::fsx::clean(abs);
        let parent = abs.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        let name = abs.rsplit('/').next().unwrap_or("");
        let real_parent = if parent.is_empty() {
            String::new()
        } else {
            self.real_dest(parent)
        };
        let path = format!("{}/{name}", real_parent.trim_end_matches('/'));
        if matches!(o.body, Body::Dir) {
            self.dirs.push(path.clone());
        }
        self.entries.insert(path, o);
    }

    /// Create the missing directories above `abs` (root-owned 0755, or `--chown`'s owner).
    fn parents_of(&mut self, abs: &str) {
        let abs = crate::fsx::clean(abs);
        let mut cur = String::new();
        let comps: Vec<&str> = abs.split('/').filter(|c| !c.is_empty()).collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            cur = format!("{cur}/{c}");
            if self.is_dir_in_dest(&cur) {
                continue;
            }
            let o = self.created(Body::Dir, self.dir_mode());
            self.add(&cur.clone(), o);
        }
    }

    /// The mode of the directories the step creates: an octal `--chmod`'s, else 0755 (as
    /// BuildKit's copy, which makes them with the numeric mode it applies to the files).
    fn dir_mode(&self) -> u32 {
        match &self.job.chmod {
            Some(c) => c
                .parse::<crate::dockerfile::Chmod>()
                .ok()
                .and_then(|c| c.octal())
                .unwrap_or(0o755),
            None => 0o755,
        }
    }

    /// Every directory above the planned entries that the destination already has goes into
    /// the layer as it is there (owner, mode, time), as in the layers BuildKit and Docker make
    /// (their differs include every parent of a change): a layer unpacked on its own, as a
    /// snapshot is, would otherwise give those directories root's owner and 0755 on top of
    /// the image's.
    fn existing_parents(&mut self) {
        let mut add = Vec::new();
        for path in self.entries.keys() {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                if parent.is_empty() {
                    break;
                }
                p = parent;
                if self.entries.contains_key(p) || add.iter().any(|(a, _)| a == p) {
                    continue;
                }
                if let Some(m) = self.dest_root.dir_meta(p) {
                    add.push((p.to_string(), m));
                }
            }
        }
        for (p, m) in add {
            let o = Out {
                body: Body::Dir,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                mtime: self.clamp(m.mtime),
            };
            self.entries.insert(p, o);
        }
    }

    fn file_out(&self, root: &Path, rel: &str, m: &std::fs::Metadata, keep_owner: bool) -> Out {
        self.meta_out(root, rel, &context::Meta::of(m), keep_owner)
    }

    /// [`Planner::file_out`] from what a walk's stat saw.
    fn meta_out(&self, root: &Path, rel: &str, m: &context::Meta, keep_owner: bool) -> Out {
        let path = root.join(rel);
        let kind = m.mode & libc::S_IFMT;
        let is_dir = kind == libc::S_IFDIR;
        let body = if is_dir {
            Body::Dir
        } else if kind == libc::S_IFLNK {
            Body::Symlink(std::fs::read_link(&path).unwrap_or_default())
        } else if kind == libc::S_IFREG {
            Body::File {
                root: root.to_path_buf(),
                rel: PathBuf::from(rel),
            }
        } else {
            // Sockets, fifos, devices in a context: an empty regular file, as BuildKit does.
            Body::Data(Vec::new())
        };
        let (uid, gid) = match (self.owner, keep_owner) {
            (Some(o), _) => o,
            (None, true) => (m.uid, m.gid),
            (None, false) => (0, 0),
        };
        let mode = if matches!(body, Body::Symlink(_)) {
            0o777
        } else {
            self.mode(m.mode & 0o7777, is_dir)
        };
        Out {
            body,
            mode,
            uid,
            gid,
            mtime: self.clamp(m.mtime_ns.div_euclid(1_000_000_000)),
        }
    }

    /// Copy the tree at `root/rel` (its contents, and its own metadata for the target dir)
    /// to `target`.
    fn tree(
        &mut self,
        root: &Path,
        rel: &str,
        target: &str,
        ignore: &[String],
        excludes: &[String],
        keep_owner: bool,
    ) -> Result<(), CopyError> {
        let r = Resolved {
            path: rel.to_string(),
            name: String::new(),
            is_dir: true,
            keep: None,
        };
        let entries = source_entries(root, &r, ignore, excludes)?;
        self.parents_of(target);
        if !self.is_dir_in_dest(target) {
            // Only the directory's contents are copied: the destination is made as a parent
            // directory is (root's or --chown's, 0755 or an octal --chmod), with the source
            // directory's time, as BuildKit's copy leaves it.
            let m = fs_err::metadata(root.join(rel)).map_err(CopyError::Io)?;
            let mut o = self.created(Body::Dir, self.dir_mode());
            o.mtime = self.clamp(context::Meta::of(&m).mtime_ns.div_euclid(1_000_000_000));
            self.add(target, o);
        }
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        for e in entries {
            let Some(below) = e.path.strip_prefix(&prefix) else {
                continue;
            };
            if below.is_empty() {
                continue;
            }
            // The walk's own stat when it has one (a second stat of each file through an
            // overlay of a stage's layers was a third of a venv's COPY --from).
            let m = match e.meta {
                Some(m) => m,
                None => context::Meta::of(
                    &fs_err::symlink_metadata(root.join(&e.path)).map_err(CopyError::Io)?,
                ),
            };
            let dest = join_abs(target, below);
            // An existing directory keeps its owner and mode.
            if m.mode & libc::S_IFMT == libc::S_IFDIR && self.exists_in_dest(&dest) == Some(true) {
                continue;
            }
            let o = self.meta_out(root, &e.path, &m, keep_owner);
            self.add(&dest, o);
        }
        Ok(())
    }
}

/// Extract `rel` (under `root`) into a scratch directory when it is a tar (plain, gzip or zstd);
/// `None` when it is not an archive. The file is opened once, beneath `root` and without
/// following a symlink (as every context read), and that one descriptor is sniffed and read.
fn extract_archive(root: &Path, rel: &Path, job: &CopyJob) -> Result<Option<PathBuf>, CopyError> {
    let path = root.join(rel);
    let err = |cause: io::Error| CopyError::Archive {
        path: path.clone(),
        cause,
    };
    let mut f = crate::fsx::open_beneath(root, rel).map_err(err)?;
    let mut head = [0u8; 512];
    let n = read_full(&mut f, &mut head).map_err(err)?;
    let comp = crate::layer::sniff(&head[..n]);
    let is_tar = match comp {
        Compression::None => n >= 262 && &head[257..262] == b"ustar",
        _ => {
            // Peek inside the compressed stream for a tar header.
            f.rewind().map_err(err)?;
            let mut r = crate::layer::decompress(&f).map_err(err)?;
            let mut h = [0u8; 512];
            let k = read_full(&mut r, &mut h).unwrap_or(0);
            k >= 262 && &h[257..262] == b"ustar"
        }
    };
    if !is_tar {
        return Ok(None);
    }
    let dir = job.work.join(format!(
        "archive-{}",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    fs_err::create_dir_all(&dir).map_err(CopyError::Io)?;
    f.rewind().map_err(err)?;
    let r = crate::layer::decompress(f).map_err(err)?;
    crate::layer::apply_layer(
        r,
        &dir,
        &crate::layer::ApplyOptions {
            chown: true,
            overlay_whiteouts: false,
        },
    )
    .map_err(|cause| CopyError::Extract {
        path: path.clone(),
        cause,
    })?;
    Ok(Some(dir))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn write_layer(job: &CopyJob, entries: &BTreeMap<String, Out>) -> io::Result<LayerInfo> {
    let f = fs_err::File::create(&job.out)?;
    if job.compression == Compression::None {
        // The build's default: hashed on a second thread as it is written.
        let hashing = crate::oci::BackgroundHashingWriter::new(f);
        let mut b = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, hashing));
        append_entries(&mut b, entries)?;
        let (f, digest, size) = b
            .into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .finish()?;
        f.sync_all()?;
        return Ok(LayerInfo {
            diff_id: digest.clone(),
            digest,
            size,
            uncompressed_size: size,
            media_type: Compression::None.media_type(),
        });
    }
    let sink = LayerSink::new(io::BufWriter::with_capacity(1 << 20, f), job.compression)?;
    let mut b = tar::Builder::new(sink);
    append_entries(&mut b, entries)?;
    let sink = b.into_inner()?;
    let (mut w, info) = sink.finish()?;
    w.flush()?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(info)
}

/// The planned entries, in path order, as tar entries.
fn append_entries<W: Write>(
    b: &mut tar::Builder<W>,
    entries: &BTreeMap<String, Out>,
) -> io::Result<()> {
    for (path, o) in entries {
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            continue;
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(o.mode);
        h.set_uid(o.uid.into());
        h.set_gid(o.gid.into());
        h.set_mtime(o.mtime.max(0) as u64);
        match &o.body {
            Body::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{rel}/"), io::empty())?;
            }
            Body::File { root, rel: src_rel } => {
                let f = crate::fsx::open_beneath(root, src_rel).map_err(|e| {
                    io::Error::new(e.kind(), format!("{}: {e}", root.join(src_rel).display()))
                })?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(f.metadata()?.len());
                b.append_data(&mut h, rel, f)?;
            }
            Body::Data(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, rel, d.as_slice())?;
            }
            Body::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, rel, t)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chown_names_and_numbers() {
        let passwd =
            "root:x:0:0::/root:/bin/sh\ndaemon:x:1:1::/:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n";
        let group = "root:x:0:\ndaemon:x:1:\nstaff:x:50:\n";
        assert_eq!(owner_ids("daemon", passwd, group).unwrap(), (1, 1));
        assert_eq!(owner_ids("app:staff", passwd, group).unwrap(), (1000, 50));
        assert_eq!(owner_ids("1042:1043", passwd, group).unwrap(), (1042, 1043));
        assert_eq!(owner_ids("1042", passwd, group).unwrap(), (1042, 1042));
        let e = owner_ids("nobody", passwd, group).unwrap_err().to_string();
        assert!(e.contains("unable to find user nobody"), "{e}");
    }

    #[test]
    fn sources_resolve_wildcards_symlinks_and_missing_paths() {
        let d = std::env::temp_dir().join(format!("strata-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        fs_err::create_dir_all(d.join("sub/dir")).unwrap();
        fs_err::write(d.join("a.go"), "a").unwrap();
        fs_err::write(d.join("b.go"), "b").unwrap();
        fs_err::write(d.join("sub/dir/f"), "f").unwrap();
        std::os::unix::fs::symlink("/sub", d.join("link")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", d.join("escape")).unwrap();
        let r = resolve_sources(&d, &["*.go".into()], false).unwrap();
        assert_eq!(
            r.iter().map(|x| x.path.as_str()).collect::<Vec<_>>(),
            ["a.go", "b.go"]
        );
        let r = resolve_sources(&d, &["link/dir".into()], false).unwrap();
        assert_eq!(r[0].path, "sub/dir");
        assert!(r[0].is_dir);
        // A link out of the context stays inside it: /etc below the context does not exist.
        let e = resolve_sources(&d, &["escape/passwd".into()], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not found"), "{e}");
        let e = resolve_sources(&d, &["nope".into()], false)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "\"/nope\": not found");
        assert!(resolve_sources(&d, &["nomatch*".into()], false)
            .unwrap()
            .is_empty());
        let r = resolve_sources(&d, &["sub/./dir/f".into()], true).unwrap();
        assert_eq!(r[0].keep.as_deref(), Some("dir/f"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
