//! Content checksums of context files, cached by metadata: a file whose size, mtime, inode and
//! ctime are what they were reuses its recorded digest, so a no-op rebuild reads no file
//! contents. The digest of a set of entries covers path, kind, mode (less the group and other
//! write bits, which only say what umask made the checkout) and content (or link target) —
//! never times or owners — so touching a file changes nothing.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Entry, Error, Kind, Meta};
use crate::oci::{Digest, Sha256};

/// What was recorded for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    size: u64,
    mtime_ns: i64,
    ino: u64,
    ctime_ns: i64,
    digest: Digest,
}

/// The metadata cache, kept in a file between builds: one line per file, `size mtime inode
/// ctime digest path` separated by tabs, in walk order (the order [`super::walk`] yields paths
/// in: siblings by name, a directory's entries right after it).
///
/// A build looks files up in that same order, so on a rebuild each lookup is the line after
/// the previous one (a cursor per thread: [`digest`] works on every core): loading reads the
/// text and parses nothing, and a lookup parses one line and compares one path. A lookup that
/// is not the next line bisects the text; only a path the text does not have builds an index
/// of every line, in case the text is in another order. Files hashed in this process go to
/// `updates`, which wins over the text; saving merges the two, both in walk order, without
/// parsing the lines it keeps.
#[derive(Debug, Default)]
pub struct Cache {
    path: Option<PathBuf>,
    text: Text,
    /// Every line that parses, as (line start, path start, line end), sorted in walk order;
    /// built only when the text is not in walk order (written by an older strata).
    index: std::sync::OnceLock<(Vec<LineAt>, bool)>,
    updates: HashMap<String, Record>,
    dirty: bool,
    /// The text starts with [`HEADER`]: it is in walk order, so a path bisecting does not find
    /// is not there.
    ordered: bool,
    /// Whole sets seen before: ([`fingerprint`] of a set's entries, its digest), most recent
    /// first, kept in a file beside the text (`.memo`).
    memo: Vec<(Digest, Digest)>,
    memo_dirty: bool,
}

/// How many sets' digests [`Cache::memo`] keeps: a Dockerfile's COPY steps of the context,
/// for a few Dockerfiles and targets.
const MEMO_SETS: usize = 64;

/// Where a line is in the text: (line start, path start, line end).
type LineAt = (u32, u32, u32);

/// The cache file's text: mapped from the file (no copy; a file replaced by another process's
/// save stays as it was for this one, since saves rename a new file into place), or empty.
#[derive(Default)]
struct Text(Option<(std::ptr::NonNull<u8>, usize)>);

// SAFETY: the mapping is read-only and private, owned by this value, and unmapped only on
// drop; &str views of it are immutable.
unsafe impl Send for Text {}
unsafe impl Sync for Text {}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Text({} bytes)", self.len())
    }
}

impl Text {
    /// Map `path`; an empty, unreadable, non-UTF-8 or oversized (4 GiB and more) file is an
    /// empty text.
    fn map(path: &Path) -> Text {
        use rustix::mm::{MapFlags, ProtFlags};
        let Ok(f) = fs_err::File::open(path) else {
            return Text(None);
        };
        let len = match f.metadata() {
            Ok(m) if m.len() > 0 && m.len() < u64::from(u32::MAX) => m.len() as usize,
            _ => return Text(None),
        };
        // SAFETY: a fresh read-only private mapping of a whole file we opened; nothing else
        // in this process refers to that memory.
        let Ok(p) = (unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::PRIVATE | MapFlags::POPULATE,
                &f,
                0,
            )
        }) else {
            return Text(None);
        };
        let Some(p) = std::ptr::NonNull::new(p.cast::<u8>()) else {
            return Text(None);
        };
        let t = Text(Some((p, len)));
        if std::str::from_utf8(t.bytes()).is_err() {
            return Text(None);
        }
        t
    }

    fn bytes(&self) -> &[u8] {
        match self.0 {
            // SAFETY: the mapping of `len` readable bytes lives as long as `self`.
            Some((p, len)) => unsafe { std::slice::from_raw_parts(p.as_ptr(), len) },
            None => &[],
        }
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        // SAFETY: checked to be UTF-8 when mapped, and never written.
        unsafe { std::str::from_utf8_unchecked(self.bytes()) }
    }
}

impl Drop for Text {
    fn drop(&mut self) {
        if let Some((p, len)) = self.0.take() {
            // SAFETY: unmapping the mapping this value made, once; no view outlives `self`.
            let _ = unsafe { rustix::mm::munmap(p.as_ptr().cast(), len) };
        }
    }
}

/// The first line of a cache file written in walk order.
const HEADER: &str = "# strata context checksums, walk order\n";

/// What a checksum pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Files whose contents were read and hashed.
    pub hashed: usize,
    /// Files whose recorded digest was reused.
    pub reused: usize,
    /// Files an earlier build had recorded (reused or changed since): none when this set of
    /// files was never seen before, whatever this build hashed for its earlier steps.
    pub recorded: usize,
    /// Files whose content digest differs from the one recorded.
    pub changed: Vec<String>,
    /// Files the cache had no record of (all of them on a first build).
    pub added: Vec<String>,
}

fn ns(secs: i64, nsec: i64) -> i64 {
    // Nanoseconds fit an i64 from 1678 to 2262; a time outside saturates (ctime, which
    // nobody can set, still tells a change).
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// What says a file is unchanged: (size, mtime, inode, ctime).
type Stamp = (u64, i64, u64, i64);

fn stamp(m: &std::fs::Metadata) -> Stamp {
    (
        m.len(),
        ns(m.mtime(), m.mtime_nsec()),
        m.ino(),
        ns(m.ctime(), m.ctime_nsec()),
    )
}

impl Record {
    fn stamp(&self) -> Stamp {
        (self.size, self.mtime_ns, self.ino, self.ctime_ns)
    }
}

/// The order of paths in a walk: byte order with `/` below every other byte, so a
/// directory's entries come right after it and before its next sibling (`a`, `a/b`, `a-c`).
pub(crate) fn walk_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let key = |c: &u8| if *c == b'/' { 0 } else { u16::from(*c) + 1 };
    match (a.get(n), b.get(n)) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => key(x).cmp(&key(y)),
    }
}

/// One line of the cache file, borrowed from its text.
struct Line<'t> {
    /// Where the line ends (its newline, or the end of the text).
    end: usize,
    stamp: Stamp,
    /// `sha256:` and 64 hex digits, as written.
    digest: &'t str,
    path: &'t str,
}

/// Parse the line starting at `start`; `None` at the end of the text. A line that does not
/// parse gives `Some(Err(end))`.
fn line_at(text: &str, start: usize) -> Option<Result<Line<'_>, usize>> {
    if start >= text.len() {
        return None;
    }
    let rest = &text[start..];
    let len = rest.find('\n').unwrap_or(rest.len());
    let line = &rest[..len];
    let end = start + len;
    let parse = || -> Option<Line<'_>> {
        let mut f = line.splitn(6, '\t');
        let size = f.next()?.parse::<u64>().ok()?;
        let mtime = f.next()?.parse::<i64>().ok()?;
        let ino = f.next()?.parse::<u64>().ok()?;
        let ctime = f.next()?.parse::<i64>().ok()?;
        let digest = f.next()?;
        let path = f.next()?;
        // The digest's hex digits are checked where they are parsed (a changed file); a
        // reused one goes into the context digest as written.
        let ok = digest.len() == 71 && digest.starts_with("sha256:");
        ok.then_some(Line {
            end,
            stamp: (size, mtime, ino, ctime),
            digest,
            path,
        })
    };
    Some(parse().ok_or(end))
}

impl Cache {
    /// Load the cache at `path` (a missing or unreadable file is an empty cache; a file over
    /// 4 GiB, which the index's offsets cannot hold, too). Nothing is parsed yet.
    pub fn load(path: &Path) -> Cache {
        let text = Text::map(path);
        let ordered = text.starts_with(HEADER);
        // The memo: `fingerprint digest` lines; one that does not parse is dropped.
        let memo = fs_err::read_to_string(path.with_extension("memo"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (f, d) = l.split_once(' ')?;
                Some((f.parse().ok()?, d.parse().ok()?))
            })
            .take(MEMO_SETS)
            .collect();
        Cache {
            path: Some(path.to_path_buf()),
            // Written by an older strata (not in walk order): written again in walk order.
            dirty: !ordered && !text.is_empty(),
            ordered,
            text,
            memo,
            ..Cache::default()
        }
    }

    /// The digest recorded for the set of fingerprint `f`, which becomes the most recent.
    fn memo_get(&mut self, f: &Digest) -> Option<Digest> {
        let i = self.memo.iter().position(|(x, _)| x == f)?;
        if i > 0 {
            let hit = self.memo.remove(i);
            self.memo.insert(0, hit);
            self.memo_dirty = true;
        }
        Some(self.memo[0].1.clone())
    }

    fn memo_put(&mut self, f: Digest, d: Digest) {
        self.memo.retain(|(x, _)| *x != f);
        self.memo.insert(0, (f, d));
        self.memo.truncate(MEMO_SETS);
        self.memo_dirty = true;
    }

    /// Write the memo back (temp file and rename) if it changed.
    fn save_memo(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.memo_dirty {
            return Ok(());
        }
        let file = path.with_extension("memo");
        let tmp = path.with_extension(format!("memo-tmp{}", std::process::id()));
        let mut text = String::with_capacity(self.memo.len() * 144);
        for (f, d) in &self.memo {
            text.push_str(f.as_str());
            text.push(' ');
            text.push_str(d.as_str());
            text.push('\n');
        }
        fs_err::write(&tmp, text)?;
        fs_err::rename(&tmp, &file)?;
        self.memo_dirty = false;
        Ok(())
    }

    /// Every line that parses, sorted in walk order (as written by [`Cache::save`], else
    /// sorted here: a file of an older strata is in byte order), and whether it already was.
    fn sorted_lines(&self) -> (Vec<LineAt>, bool) {
        let mut lines = Vec::with_capacity(self.text.len() / 100);
        let mut at = 0;
        while let Some(l) = line_at(&self.text, at) {
            let end = match l {
                Ok(l) => {
                    let path_at = l.end - l.path.len();
                    lines.push((at as u32, path_at as u32, l.end as u32));
                    l.end
                }
                Err(end) => end,
            };
            at = end + 1;
        }
        let path = |l: &LineAt| &self.text[l.1 as usize..l.2 as usize];
        if !lines
            .windows(2)
            .all(|w| walk_cmp(path(&w[0]), path(&w[1])).is_lt())
        {
            lines.sort_by(|a, b| walk_cmp(path(a), path(b)));
            lines.dedup_by(|a, b| path(a) == path(b));
            return (lines, false);
        }
        (lines, true)
    }

    /// The start of the line that holds byte `at` (or the text's end).
    fn line_start(&self, at: usize) -> usize {
        // By bytes: `at` may fall inside a character of a path that is not ASCII.
        self.text.as_bytes()[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |n| n + 1)
    }

    /// The recorded line of `rel`: the one at `cursor` (the next line), else found by
    /// bisecting the text, else through the index. `cursor` moves past the line found.
    fn recorded(&self, rel: &str, cursor: &mut usize) -> Option<Line<'_>> {
        if let Some(Ok(l)) = line_at(&self.text, *cursor) {
            if l.path == rel {
                *cursor = l.end + 1;
                return Some(l);
            }
        }
        // Bisect: [lo, hi) are byte offsets of line starts still possible.
        let (mut lo, mut hi) = (0, self.text.len());
        while lo < hi {
            let mid = self.line_start(lo + (hi - lo) / 2).max(lo);
            let Some(parsed) = line_at(&self.text, mid) else {
                break;
            };
            let (end, ord) = match parsed {
                Ok(l) => (l.end, walk_cmp(l.path, rel)),
                // A line that does not parse: step over it.
                Err(end) => (end, std::cmp::Ordering::Less),
            };
            match ord {
                std::cmp::Ordering::Equal => {
                    *cursor = end + 1;
                    return line_at(&self.text, mid)?.ok();
                }
                std::cmp::Ordering::Less => lo = end + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        if self.ordered {
            return None;
        }
        // Not there, or the text is in another order: the index knows.
        let (index, _) = self.index.get_or_init(|| self.sorted_lines());
        let text = &self.text;
        let i = index
            .binary_search_by(|l| walk_cmp(&text[l.1 as usize..l.2 as usize], rel))
            .ok()?;
        let (start, _, end) = index[i];
        *cursor = end as usize + 1;
        line_at(text, start as usize)?.ok()
    }

    /// Write the cache back (temp file and rename) if it changed: the lines kept and this
    /// process's records, merged in walk order.
    pub fn save(&mut self) -> std::io::Result<()> {
        use std::io::Write as _;
        self.save_memo()?;
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let lines = match self.index.take() {
            Some((i, _)) => i,
            None => self.sorted_lines().0,
        };
        let mut updates: Vec<(&String, &Record)> = self.updates.iter().collect();
        updates.sort_by(|a, b| walk_cmp(a.0, b.0));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut out = std::io::BufWriter::with_capacity(1 << 20, fs_err::File::create(&tmp)?);
        out.write_all(HEADER.as_bytes())?;
        let mut u = updates.into_iter().peekable();
        let write_update = |out: &mut std::io::BufWriter<fs_err::File>,
                            (p, r): (&String, &Record)|
         -> std::io::Result<()> {
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{p}",
                r.size, r.mtime_ns, r.ino, r.ctime_ns, r.digest
            )
        };
        for (start, path_at, end) in lines {
            let p = &self.text[path_at as usize..end as usize];
            while let Some(next) = u.next_if(|(q, _)| walk_cmp(q, p).is_lt()) {
                write_update(&mut out, next)?;
            }
            if !self.updates.contains_key(p) {
                out.write_all(self.text[start as usize..end as usize].as_bytes())?;
                out.write_all(b"\n")?;
            }
        }
        for next in u {
            write_update(&mut out, next)?;
        }
        // No fsync: a cache lost in a crash costs a rehash, not a wrong digest (a line that
        // does not parse is skipped).
        out.into_inner().map_err(|e| e.into_error())?;
        fs_err::rename(&tmp, path)?;
        self.dirty = false;
        Ok(())
    }
}

/// What one thread of [`digest`] found: its entries' lines, what it hashed, and the records of
/// the files it hashed.
#[derive(Default)]
struct Part {
    lines: String,
    /// Files read and hashed, and files whose recorded digest was reused.
    hashed: usize,
    reused: usize,
    recorded: usize,
    /// Changed and new files, with the number of their entry (for walk order).
    changed_at: Vec<(usize, String)>,
    added_at: Vec<(usize, String)>,
    updates: Vec<(String, Record)>,
}

/// Append to the part's lines the content digest of the file `rel` (entry number `at`) below
/// `root`: the recorded one when
/// its metadata is unchanged, else read and hashed (and its record added to `part`).
fn file_digest(
    cache: &Cache,
    cursor: &mut usize,
    root: &Path,
    (at, rel): (usize, &str),
    m: &Meta,
    part: &mut Part,
) -> Result<(), Error> {
    let seen = (m.size, m.mtime_ns, m.ino, m.ctime_ns);
    let known: Option<(Stamp, Digest)> = match cache.updates.get(rel) {
        Some(r) => Some((r.stamp(), r.digest.clone())),
        None => match cache.recorded(rel, cursor) {
            Some(l) if l.stamp == seen => {
                // The common case of a rebuild: the digest's text goes into the line as it
                // was recorded, never parsed.
                part.reused += 1;
                part.recorded += 1;
                part.lines.push_str(l.digest);
                return Ok(());
            }
            Some(l) => {
                part.recorded += 1;
                l.digest.parse().ok().map(|d| (l.stamp, d))
            }
            None => None,
        },
    };
    if let Some((stamp, d)) = &known {
        if *stamp == seen {
            part.reused += 1;
            part.lines.push_str(d.as_str());
            return Ok(());
        }
    }
    let full = root.join(rel);
    let io = |e: std::io::Error| Error::Io {
        path: full.display().to_string(),
        source: e,
    };
    let mut f = crate::fsx::open_beneath(root, Path::new(rel)).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    // The stamp recorded must be that of the bytes hashed: the file opened is the one that was
    // stat'ed (not swapped since), and nothing wrote to it while it was read.
    if stamp(&f.metadata().map_err(io)?) != seen {
        return Err(Error::Changed {
            path: full.display().to_string(),
        });
    }
    let digest = h.finish();
    part.hashed += 1;
    match known {
        None => part.added_at.push((at, rel.to_string())),
        Some((_, d)) if d != digest => part.changed_at.push((at, rel.to_string())),
        Some(_) => {}
    }
    part.lines.push_str(digest.as_str());
    let (size, mtime_ns, ino, ctime_ns) = seen;
    part.updates.push((
        rel.to_string(),
        Record {
            size,
            mtime_ns,
            ino,
            ctime_ns,
            digest,
        },
    ));
    Ok(())
}

/// The digest of `entries` (as a walk yields them) below `root`: path, kind, mode (less the
/// group and other write bits) and content or link target of each, in order. Uses the
/// metadata the walk saw when it has it.
/// A large set is split across the cores (lookups, and the files read on a first build or
/// after a change); the lines are hashed in order.
///
/// A set whose every entry has the path, kind, mode and file metadata it had when its digest
/// was last made (its [`fingerprint`] is in the memo) has that digest again: a no-op rebuild
/// neither looks up nor formats a line per file. That is exactly what the per-file records
/// would give: each of those files would reuse the digest recorded for the same metadata.
pub fn digest(root: &Path, entries: &[Entry], cache: &mut Cache) -> Result<(Digest, Stats), Error> {
    let print = fingerprint(root, entries);
    if let Some(d) = print.as_ref().and_then(|f| cache.memo_get(f)) {
        let files = entries
            .iter()
            .filter(|e| e.kind == Kind::File && e.meta.is_some_and(|m| m.is_file()))
            .count();
        let stats = Stats {
            reused: files,
            recorded: files,
            ..Stats::default()
        };
        return Ok((d, stats));
    }
    let threads = if entries.len() < 2 * BLOCK {
        1
    } else {
        crate::cores().min(8)
    };
    let (d, stats) = digest_on(root, entries, cache, threads)?;
    if let Some(f) = print {
        cache.memo_put(f, d.clone());
    }
    Ok((d, stats))
}

/// What decides a set's digest, cheaply: the root, and each entry's path, kind and mode, with
/// the metadata that says a file is unchanged (size, mtime, inode, ctime), and a symlink's
/// target. Not a directory's times (a file made and removed in it changes them, not the set).
/// `None` when an entry was not stat'ed.
fn fingerprint(root: &Path, entries: &[Entry]) -> Option<Digest> {
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    buf.extend_from_slice(b"strata-context-memo-v1\0");
    buf.extend_from_slice(root.as_os_str().as_encoded_bytes());
    buf.push(0);
    for e in entries {
        let m = e.meta.as_ref()?;
        buf.extend_from_slice(e.path.as_bytes());
        buf.push(0);
        buf.push(match e.kind {
            Kind::File => b'f',
            Kind::Dir => b'd',
            Kind::Symlink => b'l',
        });
        buf.extend_from_slice(&m.mode.to_le_bytes());
        if e.kind == Kind::Symlink {
            // Read as the per-file pass reads it: a link replaced within one tick of the
            // clock can have the old one's inode number, times and length.
            let target = std::fs::read_link(root.join(&e.path)).ok()?;
            buf.extend_from_slice(target.as_os_str().as_encoded_bytes());
            buf.push(0);
        }
        if e.kind != Kind::Dir {
            for v in [m.size, m.mtime_ns as u64, m.ino, m.ctime_ns as u64] {
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
        if buf.len() > 60 * 1024 {
            h.update(&buf);
            buf.clear();
        }
    }
    h.update(&buf);
    Some(h.finish())
}

/// Entries per block: the digest is that of the blocks' digests, so a block is the unit a
/// thread works on, and its lines are the only ones held in memory at a time.
const BLOCK: usize = 1024;

/// [`digest`] on `threads` threads: thread `t` does blocks `t`, `t + threads`, …; the
/// digest of the set is the sha256 of `strata-context-v3` and of each block's digest in
/// order, the same on any number of threads.
fn digest_on(
    root: &Path,
    entries: &[Entry],
    cache: &mut Cache,
    threads: usize,
) -> Result<(Digest, Stats), Error> {
    let shared: &Cache = cache;
    let blocks: Vec<&[Entry]> = entries.chunks(BLOCK).collect();
    let threads = threads.clamp(1, blocks.len().max(1));
    let work = |t: usize| -> Result<(Vec<(usize, Digest)>, Part), Error> {
        let mut part = Part::default();
        let mut hashes = Vec::new();
        let mut cursor = 0;
        for (k, block) in blocks.iter().enumerate().skip(t).step_by(threads) {
            part.lines.clear();
            digest_part(root, block, k * BLOCK, shared, &mut cursor, &mut part)?;
            hashes.push((k, Digest::of(part.lines.as_bytes())));
        }
        part.lines = String::new();
        Ok((hashes, part))
    };
    #[allow(clippy::type_complexity)]
    let parts: Vec<Result<(Vec<(usize, Digest)>, Part), Error>> = if threads == 1 {
        vec![work(0)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|t| s.spawn(move || work(t))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(super::panicked(root, "checksum")))
                })
                .collect()
        })
    };
    let mut block_digests: Vec<Option<Digest>> = vec![None; blocks.len()];
    let mut stats = Stats::default();
    let mut changed: Vec<(usize, String)> = Vec::new();
    let mut added: Vec<(usize, String)> = Vec::new();
    for p in parts {
        let (hashes, p) = p?;
        for (k, d) in hashes {
            block_digests[k] = Some(d);
        }
        stats.hashed += p.hashed;
        stats.reused += p.reused;
        stats.recorded += p.recorded;
        changed.extend(p.changed_at);
        added.extend(p.added_at);
        if !p.updates.is_empty() {
            cache.dirty = true;
        }
        cache.updates.extend(p.updates);
    }
    // In walk order, whichever thread found them.
    changed.sort_by_key(|(i, _)| *i);
    added.sort_by_key(|(i, _)| *i);
    stats.changed = changed.into_iter().map(|(_, p)| p).collect();
    stats.added = added.into_iter().map(|(_, p)| p).collect();
    let mut h = Sha256::new();
    h.update(b"strata-context-v3\0");
    for d in block_digests.iter().flatten() {
        h.update(d.as_str().as_bytes());
    }
    // Records found only through the index: the text is in another order, written back in
    // walk order.
    if cache.index.get().is_some_and(|(_, in_order)| !in_order) {
        cache.dirty = true;
    }
    Ok((h.finish(), stats))
}

/// Append the lines of `entries` (a block of [`digest`]) to `part`.
fn digest_part(
    root: &Path,
    entries: &[Entry],
    first: usize,
    cache: &Cache,
    cursor: &mut usize,
    part: &mut Part,
) -> Result<(), Error> {
    use std::fmt::Write as _;
    for (i, e) in entries.iter().enumerate() {
        let io = |er: std::io::Error| Error::Io {
            path: root.join(&e.path).display().to_string(),
            source: er,
        };
        let m = match e.meta {
            Some(m) => m,
            None => Meta::of(&std::fs::symlink_metadata(root.join(&e.path)).map_err(io)?),
        };
        let kind = match e.kind {
            Kind::File => 'f',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
        };
        let line = &mut part.lines;
        line.push_str(&e.path);
        line.push('\0');
        line.push(kind);
        line.push('\0');
        // The mode without the group and other write bits, and no owner: a checkout made
        // under umask 002 or 000 (GitLab's runners) or by another user is the same context as
        // one made under 022, so two runners' keys match. COPY writes owners as root (or
        // --chown) anyway.
        let _ = write!(line, "{:o}\0", m.mode & 0o7755);
        match e.kind {
            // Sockets, fifos and devices are copied as empty files: never opened.
            Kind::File if !m.is_file() => line.push_str("special"),
            Kind::File => file_digest(cache, cursor, root, (first + i, &e.path), &m, part)?,
            Kind::Symlink => {
                let target = fs_err::read_link(root.join(&e.path)).map_err(io)?;
                let _ = write!(line, "{}", target.display());
            }
            Kind::Dir => {}
        }
        part.lines.push('\n');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{walk, Filter};

    /// A context directory in the temp dir (and its cache file beside it), removed on drop.
    struct Ctx(PathBuf);

    impl std::ops::Deref for Ctx {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Ctx {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
            let _ = std::fs::remove_file(self.0.with_extension("cache"));
            let _ = std::fs::remove_file(self.0.with_extension("memo"));
        }
    }

    fn setup(name: &str) -> Ctx {
        let d = std::env::temp_dir().join(format!("strata-ctx-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        fs_err::create_dir_all(d.join("app")).unwrap();
        fs_err::write(d.join("app/main.py"), "print('hi')\n").unwrap();
        fs_err::write(d.join("app/util.py"), "x = 1\n").unwrap();
        fs_err::write(d.join("requirements.txt"), "six\n").unwrap();
        Ctx(d)
    }

    fn pass(root: &Path, cache: &mut Cache) -> (Digest, Stats) {
        let f = Filter::new::<&str>(&[], &[]).unwrap();
        digest(root, &walk(root, &f).unwrap(), cache).unwrap()
    }

    /// A set seen before has its digest from the memo (kept across processes), and any change
    /// that the per-file records would see misses it: content, mode, a symlink's target, a
    /// file added. Touching a file misses the memo but not the digest.
    #[test]
    fn a_set_seen_before_is_remembered_whole_and_any_change_misses() {
        let root = setup("memo");
        let file = root.with_extension("cache");
        std::os::unix::fs::symlink("main.py", root.join("app/link")).unwrap();
        let mut c = Cache::load(&file);
        let (first, s) = pass(&root, &mut c);
        assert_eq!(s.hashed, 3);
        c.save().unwrap();
        assert!(root.with_extension("memo").exists());
        let mut c = Cache::load(&file);
        assert_eq!(c.memo.len(), 1);
        let (again, s) = pass(&root, &mut c);
        assert_eq!((again.clone(), s.hashed, s.reused), (first.clone(), 0, 3));
        // What the set was, computed without the memo, is the same digest.
        let f = Filter::new::<&str>(&[], &[]).unwrap();
        let (plain, _) =
            digest_on(&root, &walk(&root, &f).unwrap(), &mut Cache::default(), 1).unwrap();
        assert_eq!(plain, first);
        let set_mtime = |rel: &str, secs: u64| {
            fs_err::File::options()
                .write(true)
                .open(root.join(rel))
                .unwrap()
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap();
        };
        let mut seen = vec![first.clone()];
        let mut changed = |what: &str, c: &mut Cache| {
            let before = c.memo.len();
            let (d, _) = pass(&root, c);
            assert!(!seen.contains(&d), "{what}: the digest must change");
            assert_eq!(c.memo.len(), before + 1, "{what}: a new set");
            seen.push(d);
        };
        // Same size, and a time of its own (the clock's tick could give the old one).
        fs_err::write(root.join("app/util.py"), "x = 2\n").unwrap();
        set_mtime("app/util.py", 1000);
        changed("content of the same size", &mut c);
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(
            root.join("app/util.py"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        changed("mode", &mut c);
        fs_err::remove_file(root.join("app/link")).unwrap();
        std::os::unix::fs::symlink("util.py", root.join("app/link")).unwrap();
        changed("symlink target", &mut c);
        fs_err::write(root.join("app/new.py"), "").unwrap();
        changed("a file added", &mut c);
        // The same bytes, another time: a new stamp, so a new set, with the same digest.
        let (before, _) = pass(&root, &mut c);
        set_mtime("requirements.txt", 2000);
        let n = c.memo.len();
        let (after, s) = pass(&root, &mut c);
        assert_eq!((after, s.hashed, c.memo.len()), (before, 1, n + 1));
    }

    #[test]
    fn the_cache_file_is_found_by_path_in_any_order_and_survives_odd_lines() {
        let root = setup("cachefile");
        let file = root.with_extension("cache");
        let d = Digest::of(b"x");
        // Byte order (an older strata's), a path with a tab, lines that do not parse.
        fs_err::write(
            &file,
            format!("1\t2\t3\t4\t{d}\ta-c\nnot a record\n5\t6\t7\t8\t{d}\ta\tb\n9\t9\t9\t9\tsha256:zz\tbad\n1\t1\t1\t1\t{d}\ta/b\n"),
        )
        .unwrap();
        let mut c = Cache::load(&file);
        assert!(!c.ordered);
        let mut cur = 0;
        let mut get = |c: &Cache, p: &str| {
            c.recorded(p, &mut cur)
                .map(|l| (l.stamp, l.digest.to_string()))
        };
        assert_eq!(
            get(&c, "a\tb"),
            Some(((5, 6, 7, 8), d.to_string())),
            "the path with a tab"
        );
        assert_eq!(get(&c, "a-c").unwrap().1, d.to_string());
        assert_eq!(get(&c, "a/b").unwrap().0, (1, 1, 1, 1));
        assert!(get(&c, "not a record").is_none() && get(&c, "bad").is_none());
        assert!(get(&c, "a").is_none());
        // An update wins over the file, and saving writes one file in walk order with both.
        c.updates.insert(
            "a/a".into(),
            Record {
                size: 9,
                mtime_ns: 9,
                ino: 9,
                ctime_ns: 9,
                digest: d.clone(),
            },
        );
        c.dirty = true;
        c.save().unwrap();
        let text = fs_err::read_to_string(&file).unwrap();
        assert!(text.starts_with(HEADER));
        let paths: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.splitn(6, '\t').last().unwrap())
            .collect();
        assert_eq!(paths, ["a/a", "a/b", "a\tb", "a-c"]);
        // Read back in that order, every lookup is the next line; one out of order or missing
        // is bisected; no index is ever built.
        let c = Cache::load(&file);
        assert!(c.ordered);
        let mut cur = 0;
        for p in &paths {
            assert!(c.recorded(p, &mut cur).is_some(), "{p}");
        }
        for p in paths.iter().rev() {
            assert!(c.recorded(p, &mut cur).is_some(), "{p} bisected");
        }
        assert!(c.recorded("a/0", &mut cur).is_none() && c.recorded("zz", &mut cur).is_none());
        assert_eq!(c.recorded("a/a", &mut cur).unwrap().stamp, (9, 9, 9, 9));
        assert!(c.index.get().is_none());
    }

    /// Split across threads or not, cold or warm, the digest is the same; a warm pass reads
    /// nothing and each thread finds its first record by bisecting.
    #[test]
    fn the_digest_does_not_depend_on_threads_or_the_cache() {
        let root = setup("threads");
        for i in 0..120 {
            let d = root.join(format!("d{}", i % 7));
            fs_err::create_dir_all(&d).unwrap();
            fs_err::write(d.join(format!("f{i}.txt")), format!("{i}")).unwrap();
        }
        let file = root.with_extension("cache");
        let f = Filter::new::<&str>(&[], &[]).unwrap();
        let entries = walk(&root, &f).unwrap();
        let (one, s1) = digest_on(&root, &entries, &mut Cache::default(), 1).unwrap();
        let mut c = Cache::load(&file);
        let (three, s3) = digest_on(&root, &entries, &mut c, 3).unwrap();
        assert_eq!(one, three);
        assert_eq!((s1.hashed, s3.hashed, s3.added), (123, 123, s1.added));
        c.save().unwrap();
        let mut c = Cache::load(&file);
        let (warm, s) = digest_on(&root, &entries, &mut c, 4).unwrap();
        assert_eq!((warm, s.hashed, s.reused), (one, 0, 123));
        assert!(c.index.get().is_none() && !c.dirty);
    }

    /// A directory of more entries than one thread stats: every entry still has the metadata
    /// of its own file.
    #[test]
    fn a_large_directory_is_stated_in_parts_and_right() {
        let root = setup("large");
        for i in 0..1100 {
            fs_err::write(root.join(format!("app/f{i:04}")), "x".repeat(i % 7)).unwrap();
        }
        let f = Filter::new::<&str>(&[], &[]).unwrap();
        let entries = walk(&root, &f).unwrap();
        assert_eq!(entries.len(), 1104);
        for e in &entries {
            let m = std::fs::symlink_metadata(root.join(&e.path)).unwrap();
            assert_eq!(e.meta, Some(Meta::of(&m)), "{}", e.path);
        }
    }

    /// Bisecting lands anywhere in the text, inside a multi-byte character too.
    #[test]
    fn lookups_of_paths_that_are_not_ascii() {
        let root = setup("utf8");
        let file = root.with_extension("cache");
        let d = Digest::of(b"x");
        let mut c = Cache {
            path: Some(file.clone()),
            ..Cache::default()
        };
        let names: Vec<String> = (0..50)
            .map(|i| format!("é/{}{i:02}{}", "ü".repeat(60), "ï".repeat(60)))
            .collect();
        for (i, n) in names.iter().enumerate() {
            c.updates.insert(
                n.clone(),
                Record {
                    size: i as u64,
                    mtime_ns: 1,
                    ino: 1,
                    ctime_ns: 1,
                    digest: d.clone(),
                },
            );
        }
        c.dirty = true;
        c.save().unwrap();
        let c = Cache::load(&file);
        for (i, n) in names.iter().enumerate().rev() {
            let mut cur = 0;
            assert_eq!(c.recorded(n, &mut cur).unwrap().stamp.0, i as u64, "{n}");
        }
        assert!(c.recorded("é/ünï99", &mut 0).is_none());
    }

    /// Walk order is the order `walk` yields paths in.
    #[test]
    fn walk_order_is_the_walks() {
        let root = setup("order");
        for p in ["a-c", "a/b/c", "a!", "a/bb", "ab", "a.d/x"] {
            let full = root.join(p);
            fs_err::create_dir_all(full.parent().unwrap()).unwrap();
            if !full.exists() {
                fs_err::write(&full, "x").unwrap();
            }
        }
        fs_err::create_dir_all(root.join("a/b2")).unwrap();
        let f = Filter::new::<&str>(&[], &[]).unwrap();
        let paths: Vec<String> = walk(&root, &f)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| walk_cmp(a, b));
        assert_eq!(paths, sorted);
        assert!(walk_cmp("a/b", "a-c").is_lt() && walk_cmp("a", "a/b").is_lt());
        assert!(walk_cmp("a/x", "a!").is_lt() && walk_cmp("x", "x").is_eq());
    }

    #[test]
    fn noop_reads_nothing_and_one_change_reads_one_file() {
        let root = setup("noop");
        let cache_file = root.with_extension("cache");
        let mut c = Cache::load(&cache_file);
        let (d1, s1) = pass(&root, &mut c);
        assert_eq!((s1.hashed, s1.reused), (3, 0));
        assert_eq!(
            (s1.changed.len(), s1.added.len()),
            (0, 3),
            "a first pass adds, it changes nothing"
        );
        c.save().unwrap();
        // A new process: the cache comes from disk.
        let mut c = Cache::load(&cache_file);
        let (d2, s2) = pass(&root, &mut c);
        assert_eq!(
            (d2.clone(), s2.hashed, s2.reused),
            (d1.clone(), 0, 3),
            "a no-op reads no file contents"
        );
        fs_err::write(root.join("app/main.py"), "print('changed')\n").unwrap();
        let (d3, s3) = pass(&root, &mut c);
        assert_ne!(d3, d1);
        assert_eq!(
            (s3.hashed, s3.changed.clone()),
            (1, vec!["app/main.py".to_string()])
        );
    }

    #[test]
    fn times_do_not_count_but_modes_and_names_do() {
        let root = setup("meta");
        let mut c = Cache::default();
        let (d1, _) = pass(&root, &mut c);
        let f = root.join("requirements.txt");
        let t = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, &f, &t, rustix::fs::AtFlags::empty()).unwrap();
        let (d2, s2) = pass(&root, &mut c);
        assert_eq!(d2, d1, "touch changes nothing");
        assert_eq!(
            (s2.hashed, s2.changed.len()),
            (1, 0),
            "re-read because its metadata moved, same content"
        );
        use std::os::unix::fs::PermissionsExt;
        // umask noise (group and other write) does not count; the rest of the mode does.
        fs_err::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (d2b, _) = pass(&root, &mut c);
        assert_eq!(d2b, d1, "0666 is 0644 with another umask");
        fs_err::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (d3, _) = pass(&root, &mut c);
        assert_ne!(d3, d1, "mode counts");
        fs_err::set_permissions(&f, std::fs::Permissions::from_mode(0o744)).unwrap();
        let (d3b, _) = pass(&root, &mut c);
        assert_ne!(d3b, d1, "the executable bit counts");
        fs_err::rename(root.join("app/util.py"), root.join("app/utils.py")).unwrap();
        let (d4, _) = pass(&root, &mut c);
        assert_ne!(d4, d3, "names count");
    }
}
