//! Content checksums of context files, cached by metadata: a file whose size, mtime, inode and
//! ctime are what they were reuses its recorded digest, so a no-op rebuild reads no file
//! contents. The digest of a set of entries covers path, kind, mode, owner and content (or link
//! target) — never times — so touching a file changes nothing.

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
    mtime_ns: i128,
    ino: u64,
    ctime_ns: i128,
    digest: Digest,
}

/// The metadata cache, kept in a file between builds: one line per file, sorted by path.
///
/// Loading it parses no digest and hashes no path: the file's text is kept and indexed by one
/// sorted vector of line offsets, searched by binary search (a no-op rebuild of 200,000 files
/// looks up 200,000 paths; a map of owned strings cost more to build and free than the stats).
/// Files hashed in this process go to `updates`, which wins over the text.
#[derive(Debug, Default)]
pub struct Cache {
    path: Option<PathBuf>,
    text: String,
    /// Lines of `text` that parse, as (start of the path, end of the line), sorted by path.
    lines: Vec<(u32, u32)>,
    updates: HashMap<String, Record>,
    dirty: bool,
}

/// What a checksum pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Files whose contents were read and hashed.
    pub hashed: usize,
    /// Files whose recorded digest was reused.
    pub reused: usize,
    /// Files whose content digest differs from the one recorded.
    pub changed: Vec<String>,
    /// Files the cache had no record of (all of them on a first build).
    pub added: Vec<String>,
}

fn ns(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// What says a file is unchanged: (size, mtime, inode, ctime).
type Stamp = (u64, i128, u64, i128);

fn stamp(m: &std::fs::Metadata) -> Stamp {
    (
        m.len(),
        ns(m.mtime(), m.mtime_nsec()),
        m.ino(),
        ns(m.ctime(), m.ctime_nsec()),
    )
}

/// The byte offset just after the `n`th tab of `line`.
fn nth_tab_end(line: &str, n: usize) -> Option<usize> {
    let mut seen = 0;
    for (i, b) in line.bytes().enumerate() {
        if b == b'\t' {
            seen += 1;
            if seen == n {
                return Some(i + 1);
            }
        }
    }
    None
}

impl Record {
    fn stamp(&self) -> Stamp {
        (self.size, self.mtime_ns, self.ino, self.ctime_ns)
    }
}

impl Cache {
    /// Load the cache at `path` (a missing or unreadable file is an empty cache; a file over
    /// 4 GiB, which offsets cannot index, too).
    pub fn load(path: &Path) -> Cache {
        let text = fs_err::read_to_string(path)
            .ok()
            .filter(|t| t.len() < u32::MAX as usize)
            .unwrap_or_default();
        let mut lines = Vec::with_capacity(text.len() / 100);
        let mut at = 0;
        for line in text.split_inclusive('\n') {
            let end = at + line.len();
            // size, mtime, inode, ctime, digest, then the path (which may hold tabs).
            if let Some(path_at) = nth_tab_end(line, 5) {
                lines.push(((at + path_at) as u32, end as u32));
            }
            at = end;
        }
        let mut c = Cache {
            path: Some(path.to_path_buf()),
            text,
            lines,
            updates: HashMap::new(),
            dirty: false,
        };
        // Written sorted; sorted again if someone else wrote it otherwise.
        if !c
            .lines
            .windows(2)
            .all(|w| c.path_of(w[0]) <= c.path_of(w[1]))
        {
            let mut lines = std::mem::take(&mut c.lines);
            lines.sort_by(|a, b| c.path_of(*a).cmp(c.path_of(*b)));
            c.lines = lines;
        }
        c
    }

    fn path_of(&self, (start, end): (u32, u32)) -> &str {
        self.text[start as usize..end as usize].trim_end_matches('\n')
    }

    /// The record of `rel`: this process's, else the loaded file's (parsed on demand).
    fn get(&self, rel: &str) -> Option<Record> {
        if let Some(r) = self.updates.get(rel) {
            return Some(r.clone());
        }
        let i = self
            .lines
            .binary_search_by(|l| self.path_of(*l).cmp(rel))
            .ok()?;
        let (path_at, _) = self.lines[i];
        let head = &self.text[..path_at as usize];
        let head = &head[head.rfind('\n').map_or(0, |n| n + 1)..];
        let f: Vec<&str> = head.trim_end_matches('\t').splitn(5, '\t').collect();
        let [size, mtime_ns, ino, ctime_ns, digest] = f.as_slice() else {
            return None;
        };
        Some(Record {
            size: size.parse().ok()?,
            mtime_ns: mtime_ns.parse().ok()?,
            ino: ino.parse().ok()?,
            ctime_ns: ctime_ns.parse().ok()?,
            digest: digest.parse().ok()?,
        })
    }

    /// Write the cache back (temp file and rename) if it changed.
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let mut all: Vec<(&str, String)> =
            Vec::with_capacity(self.lines.len() + self.updates.len());
        for l in &self.lines {
            let p = self.path_of(*l);
            if !self.updates.contains_key(p) {
                let line_start = self.text[..l.0 as usize].rfind('\n').map_or(0, |n| n + 1);
                all.push((
                    p,
                    self.text[line_start..l.1 as usize]
                        .trim_end_matches('\n')
                        .to_string(),
                ));
            }
        }
        for (p, r) in &self.updates {
            all.push((
                p,
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{p}",
                    r.size, r.mtime_ns, r.ino, r.ctime_ns, r.digest
                ),
            ));
        }
        all.sort_by(|a, b| a.0.cmp(b.0));
        let mut text = String::new();
        for (_, line) in all {
            text.push_str(&line);
            text.push('\n');
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        fs_err::write(&tmp, text)?;
        fs_err::rename(&tmp, path)?;
        self.dirty = false;
        Ok(())
    }

    /// The content digest of the file `rel` below `root`, from the cache when its metadata is
    /// unchanged.
    fn file_digest(
        &mut self,
        root: &Path,
        rel: &str,
        m: &Meta,
        stats: &mut Stats,
    ) -> Result<Digest, Error> {
        let seen = (m.size, m.mtime_ns, m.ino, m.ctime_ns);
        let known = self.get(rel);
        if let Some(r) = &known {
            if r.stamp() == seen {
                stats.reused += 1;
                return Ok(r.digest.clone());
            }
        }
        let full = root.join(rel);
        let io = |e: std::io::Error| Error::Io {
            path: full.display().to_string(),
            source: e,
        };
        let mut f = super::open_beneath(root, Path::new(rel)).map_err(io)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        // The stamp recorded must be that of the bytes hashed: the file opened is the one that
        // was stat'ed (not swapped since), and nothing wrote to it while it was read.
        if stamp(&f.metadata().map_err(io)?) != seen {
            return Err(Error::Changed {
                path: full.display().to_string(),
            });
        }
        let digest = h.finish();
        stats.hashed += 1;
        match known {
            None => stats.added.push(rel.to_string()),
            Some(r) if r.digest != digest => stats.changed.push(rel.to_string()),
            Some(_) => {}
        }
        let (size, mtime_ns, ino, ctime_ns) = seen;
        self.updates.insert(
            rel.to_string(),
            Record {
                size,
                mtime_ns,
                ino,
                ctime_ns,
                digest: digest.clone(),
            },
        );
        self.dirty = true;
        Ok(digest)
    }
}

/// The digest of `entries` (as a walk yields them) below `root`: path, kind, mode, owner and
/// content or link target of each, in order. Uses the metadata the walk saw when it has it.
pub fn digest(root: &Path, entries: &[Entry], cache: &mut Cache) -> Result<(Digest, Stats), Error> {
    use std::fmt::Write as _;
    let mut stats = Stats::default();
    let mut h = Sha256::new();
    h.update(b"strata-context-v1\0");
    // One line buffer for every entry: no allocation per file on a no-op rebuild.
    let mut line = String::new();
    for e in entries {
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
        line.clear();
        let _ = write!(
            line,
            "{}\0{kind}\0{:o}\0{}\0{}\0",
            e.path,
            m.mode & 0o7777,
            m.uid,
            m.gid
        );
        match e.kind {
            // Sockets, fifos and devices are copied as empty files: never opened.
            Kind::File if !m.is_file() => line.push_str("special"),
            Kind::File => {
                let d = cache.file_digest(root, &e.path, &m, &mut stats)?;
                let _ = write!(line, "{d}");
            }
            Kind::Symlink => {
                let target = fs_err::read_link(root.join(&e.path)).map_err(io)?;
                let _ = write!(line, "{}", target.display());
            }
            Kind::Dir => {}
        }
        line.push('\n');
        h.update(line.as_bytes());
    }
    Ok((h.finish(), stats))
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

    #[test]
    fn the_cache_file_is_found_by_path_sorted_or_not_and_survives_odd_lines() {
        let root = setup("cachefile");
        let file = root.with_extension("cache");
        let d = Digest::of(b"x");
        // Out of order, a path with a tab, a line that does not parse.
        fs_err::write(
            &file,
            format!("1\t2\t3\t4\t{d}\tz/last\nnot a record\n5\t6\t7\t8\t{d}\ta\tb\n"),
        )
        .unwrap();
        let mut c = Cache::load(&file);
        let r = c.get("a\tb").expect("the path with a tab");
        assert_eq!((r.size, r.mtime_ns, r.ino, r.ctime_ns), (5, 6, 7, 8));
        assert_eq!(c.get("z/last").unwrap().digest, d);
        assert!(c.get("not a record").is_none() && c.get("a").is_none());
        // An update wins over the file, and saving writes one sorted file with both.
        c.updates.insert(
            "m".into(),
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
        let paths: Vec<&str> = text
            .lines()
            .map(|l| l.splitn(6, '\t').last().unwrap())
            .collect();
        assert_eq!(paths, ["a\tb", "m", "z/last"]);
        assert_eq!(Cache::load(&file).get("m").unwrap().size, 9);
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
        fs_err::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (d3, _) = pass(&root, &mut c);
        assert_ne!(d3, d1, "mode counts");
        fs_err::rename(root.join("app/util.py"), root.join("app/utils.py")).unwrap();
        let (d4, _) = pass(&root, &mut c);
        assert_ne!(d4, d3, "names count");
    }
}
