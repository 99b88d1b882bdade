//! Content checksums of context files, cached by metadata: a file whose size, mtime, inode and
//! ctime are what they were reuses its recorded digest, so a no-op rebuild reads no file
//! contents. The digest of a set of entries covers path, kind, mode, owner and content (or link
//! target) — never times — so touching a file changes nothing.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Entry, Error, Kind};
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

/// The metadata cache, kept in a file between builds.
#[derive(Debug, Default)]
pub struct Cache {
    path: Option<PathBuf>,
    records: BTreeMap<String, Record>,
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

impl Record {
    fn stamp(&self) -> Stamp {
        (self.size, self.mtime_ns, self.ino, self.ctime_ns)
    }
}

impl Cache {
    /// Load the cache at `path` (a missing or unreadable file is an empty cache).
    pub fn load(path: &Path) -> Cache {
        let mut records = BTreeMap::new();
        if let Ok(text) = fs_err::read_to_string(path) {
            for line in text.lines() {
                let f: Vec<&str> = line.splitn(6, '\t').collect();
                if f.len() != 6 {
                    continue;
                }
                let (Ok(size), Ok(mtime_ns), Ok(ino), Ok(ctime_ns), Ok(digest)) = (
                    f[0].parse(),
                    f[1].parse(),
                    f[2].parse(),
                    f[3].parse(),
                    f[4].parse::<Digest>(),
                ) else {
                    continue;
                };
                records.insert(
                    f[5].to_string(),
                    Record {
                        size,
                        mtime_ns,
                        ino,
                        ctime_ns,
                        digest,
                    },
                );
            }
        }
        Cache {
            path: Some(path.to_path_buf()),
            records,
            dirty: false,
        }
    }

    /// Write the cache back (temp file and rename) if it changed.
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let mut text = String::new();
        for (p, r) in &self.records {
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{p}\n",
                r.size, r.mtime_ns, r.ino, r.ctime_ns, r.digest
            ));
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
        m: &std::fs::Metadata,
        stats: &mut Stats,
    ) -> Result<Digest, Error> {
        let seen = stamp(m);
        if let Some(r) = self.records.get(rel) {
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
        match self.records.get(rel) {
            None => stats.added.push(rel.to_string()),
            Some(r) if r.digest != digest => stats.changed.push(rel.to_string()),
            Some(_) => {}
        }
        let (size, mtime_ns, ino, ctime_ns) = seen;
        self.records.insert(
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
/// content or link target of each, in order.
pub fn digest(root: &Path, entries: &[Entry], cache: &mut Cache) -> Result<(Digest, Stats), Error> {
    let mut stats = Stats::default();
    let mut h = Sha256::new();
    h.update(b"strata-context-v1\0");
    for e in entries {
        let full = root.join(&e.path);
        let m = std::fs::symlink_metadata(&full).map_err(|er| Error::Io {
            path: full.display().to_string(),
            source: er,
        })?;
        let content = match e.kind {
            // Sockets, fifos and devices are copied as empty files: never opened.
            Kind::File if !m.file_type().is_file() => "special".to_string(),
            Kind::File => cache
                .file_digest(root, &e.path, &m, &mut stats)?
                .to_string(),
            Kind::Symlink => fs_err::read_link(&full)
                .map_err(|er| Error::Io {
                    path: full.display().to_string(),
                    source: er,
                })?
                .display()
                .to_string(),
            Kind::Dir => String::new(),
        };
        let kind = match e.kind {
            Kind::File => 'f',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
        };
        h.update(
            format!(
                "{}\0{kind}\0{:o}\0{}\0{}\0{content}\n",
                e.path,
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            )
            .as_bytes(),
        );
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
