//! The paths a layer holds (kinds and link targets, no content) and what it deletes, so that the
//! filesystem of a stack of layers can be answered without unpacking it: which path is a
//! directory, where a symlink leads, what `/etc/passwd` says. COPY needs no more from the layers
//! below it, so on a runner that took every earlier step from a cache, a COPY of changed code
//! does not wait for the base image to be unpacked (the lowers it would otherwise mount).
//!
//! Read from the layer's tar (headers, and the bytes of `etc/passwd` and `etc/group`) and
//! cached next to the blob as `<digest>.paths` in the store's facts directory.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The `/etc` files whose content is kept (for `--chown NAME`), and how large they may be.
const ETC_FILES: [&str; 2] = ["etc/passwd", "etc/group"];
const ETC_MAX: u64 = 1 << 20;

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir,
    File,
    Symlink(String),
    /// A device, fifo or socket.
    Other,
}

/// A directory's owner, permission bits and modification time, as its tar header says: a
/// COPY into an existing directory writes its parents into the layer as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// The paths of one layer (relative, no leading `/`), in the tar's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerPaths {
    pub entries: Vec<(String, Kind)>,
    /// The metadata of the layer's directories.
    #[serde(default)]
    pub dirs: BTreeMap<String, DirMeta>,
    /// Paths this layer deletes (whiteouts).
    pub deleted: Vec<String>,
    /// Directories made opaque (everything below them in lower layers hidden).
    pub opaque: Vec<String>,
    /// The content of `etc/passwd` and `etc/group` when this layer has them as files.
    pub etc: BTreeMap<String, String>,
}

/// The paths of the layer `tar` (uncompressed).
pub fn read(tar: impl Read) -> io::Result<LayerPaths> {
    let mut out = LayerPaths::default();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        out.add(&mut entry?)?;
    }
    Ok(out)
}

impl LayerPaths {
    /// Take in one entry of the layer's tar, in order (reads the content of the /etc files
    /// kept, nothing else).
    pub fn add<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> io::Result<()> {
        let path = match super::TarPath::of(&entry.path()?.to_string_lossy()) {
            super::TarPath::Root => return Ok(()),
            super::TarPath::Opaque(d) => {
                self.opaque.push(d);
                return Ok(());
            }
            super::TarPath::Deleted(p) => {
                self.deleted.push(p);
                return Ok(());
            }
            super::TarPath::Entry(p) => p,
        };
        let t = entry.header().entry_type();
        let kind = if t.is_dir() {
            let h = entry.header();
            self.dirs.insert(
                path.clone(),
                DirMeta {
                    mode: h.mode().unwrap_or(0o755) & 0o7777,
                    uid: h.uid().unwrap_or(0) as u32,
                    gid: h.gid().unwrap_or(0) as u32,
                    mtime: h.mtime().unwrap_or(0) as i64,
                },
            );
            Kind::Dir
        } else if t.is_symlink() {
            let target = entry
                .link_name()?
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            Kind::Symlink(target)
        } else if t.is_file() || t.is_hard_link() || t == tar::EntryType::Continuous {
            Kind::File
        } else {
            Kind::Other
        };
        if kind == Kind::File
            && t.is_file()
            && ETC_FILES.contains(&path.as_str())
            && entry.header().size()? <= ETC_MAX
        {
            let mut s = String::new();
            entry.read_to_string(&mut s)?;
            self.etc.insert(path.clone(), s);
        }
        self.entries.push((path, kind));
        Ok(())
    }

    /// The paths saved at `file` (JSON).
    pub fn load(file: &Path) -> io::Result<LayerPaths> {
        let bytes = fs_err::read(file)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::other(format!("{}: {e}", file.display())))
    }
}

/// The filesystem of a stack of layers, as paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    paths: BTreeMap<String, Kind>,
    etc: BTreeMap<String, String>,
    dirs: BTreeMap<String, DirMeta>,
}

/// The layers' paths read again (the rare bottom layer that names a path twice).
fn files_again(files: &[PathBuf]) -> io::Result<Vec<LayerPaths>> {
    files.iter().map(|f| LayerPaths::load(f)).collect()
}

/// Remove `dir`'s descendants (not `dir`) from `m`.
fn remove_below(m: &mut BTreeMap<String, Kind>, dir: &str) {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let gone: Vec<String> = m
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .filter(|k| k != dir)
        .collect();
    for k in gone {
        m.remove(&k);
    }
}

impl Merged {
    /// The stack of `layers`, bottom first.
    pub fn of<'a>(layers: impl IntoIterator<Item = &'a LayerPaths>) -> Merged {
        let mut m = Merged::default();
        m.stack(layers);
        m
    }

    /// The stack of the layers whose paths are saved in `files`, bottom first.
    pub fn load(files: &[PathBuf]) -> io::Result<Merged> {
        let mut layers = files
            .iter()
            .map(|f| LayerPaths::load(f))
            .collect::<io::Result<Vec<_>>>()?;
        if layers.is_empty() {
            return Ok(Merged::default());
        }
        // The bottom layer (a base image's, 10,000 paths for Debian's python) is taken as it
        // is, its map built in one pass from its sorted paths (a third of the time of
        // inserting them one by one): a first layer hides nothing below it, unless a path
        // comes twice, which takes the general way.
        let bottom = layers.remove(0);
        let n = bottom.entries.len();
        let mut m = if bottom.opaque.is_empty() && bottom.deleted.is_empty() {
            let paths: BTreeMap<String, Kind> = bottom.entries.into_iter().collect();
            if paths.len() == n {
                Merged {
                    paths,
                    etc: bottom.etc,
                    dirs: bottom.dirs,
                }
            } else {
                return Ok(Merged::of(&files_again(files)?));
            }
        } else {
            Merged::of([&bottom])
        };
        m.stack(&layers);
        Ok(m)
    }

    /// Add `layers` (bottom first) on top.
    fn stack<'a>(&mut self, layers: impl IntoIterator<Item = &'a LayerPaths>) {
        let m = self;
        for l in layers {
            for d in &l.opaque {
                remove_below(&mut m.paths, d);
            }
            for d in &l.deleted {
                m.paths.remove(d);
                remove_below(&mut m.paths, d);
                m.etc.remove(d);
            }
            for (p, k) in &l.entries {
                // A path that stops being a directory hides what was below it.
                if *k != Kind::Dir && m.paths.get(p) == Some(&Kind::Dir) {
                    remove_below(&mut m.paths, p);
                }
                if *k != Kind::File {
                    m.etc.remove(p);
                }
                m.paths.insert(p.clone(), k.clone());
                if *k == Kind::Dir {
                    if let Some(d) = l.dirs.get(p) {
                        m.dirs.insert(p.clone(), *d);
                    }
                }
            }
            for (p, s) in &l.etc {
                m.etc.insert(p.clone(), s.clone());
            }
        }
    }

    /// What `rel` (relative, resolved) is, if anything.
    pub fn kind(&self, rel: &str) -> Option<&Kind> {
        let r = super::rel_path(rel);
        if r.is_empty() {
            return Some(&Kind::Dir);
        }
        self.paths.get(r)
    }

    /// The metadata of the directory `rel` (relative, resolved), when it is one.
    pub fn dir_meta(&self, rel: &str) -> Option<DirMeta> {
        let r = super::rel_path(rel);
        match self.paths.get(r) {
            Some(Kind::Dir) => self.dirs.get(r).copied(),
            _ => None,
        }
    }

    /// The content of `etc/passwd` or `etc/group` (empty when absent).
    pub fn etc(&self, rel: &str) -> String {
        self.etc.get(rel).cloned().unwrap_or_default()
    }

    /// `rel` with the symlinks of its components followed as if the stack's root were `/`
    /// (`..` clamped at the root), as `fsx::resolve_in_root` does on a directory.
    pub fn resolve(&self, rel: &Path, depth: u32) -> io::Result<PathBuf> {
        crate::fsx::resolve_links(rel, depth, &|candidate: &Path| {
            Ok(match self.kind(&candidate.to_string_lossy()) {
                Some(Kind::Symlink(target)) => Some(PathBuf::from(target)),
                _ => None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Kind)], deleted: &[&str], opaque: &[&str]) -> LayerPaths {
        LayerPaths {
            entries: entries
                .iter()
                .map(|(p, k)| (p.to_string(), k.clone()))
                .collect(),
            deleted: deleted.iter().map(|s| s.to_string()).collect(),
            opaque: opaque.iter().map(|s| s.to_string()).collect(),
            etc: BTreeMap::new(),
            dirs: BTreeMap::new(),
        }
    }

    #[test]
    fn whiteouts_opaque_dirs_and_symlinks_as_overlayfs_shows_them() {
        let base = layer(
            &[
                ("usr", Kind::Dir),
                ("usr/bin", Kind::Dir),
                ("bin", Kind::Symlink("usr/bin".into())),
                ("usr/bin/sh", Kind::File),
                ("opt", Kind::Dir),
                ("opt/a", Kind::File),
                ("srv", Kind::Dir),
                ("srv/x", Kind::File),
                ("abs", Kind::Symlink("/usr".into())),
                ("up", Kind::Symlink("../../../usr".into())),
            ],
            &[],
            &[],
        );
        let top = layer(
            &[("opt/b", Kind::File), ("srv", Kind::File)],
            &["usr/bin/sh"],
            &["opt"],
        );
        let m = Merged::of([&base, &top]);
        assert_eq!(m.kind("opt/a"), None, "hidden by the opaque dir");
        assert_eq!(m.kind("opt/b"), Some(&Kind::File));
        assert_eq!(m.kind("usr/bin/sh"), None, "whited out");
        assert_eq!(m.kind("srv/x"), None, "its directory became a file");
        assert_eq!(m.kind(""), Some(&Kind::Dir));
        let r = |p: &str| m.resolve(Path::new(p), 0).unwrap();
        assert_eq!(r("bin/ls"), PathBuf::from("usr/bin/ls"));
        assert_eq!(r("abs/bin"), PathBuf::from("usr/bin"));
        assert_eq!(
            r("up/bin"),
            PathBuf::from("usr/bin"),
            "`..` clamped at the root"
        );
        let looped = layer(
            &[
                ("a", Kind::Symlink("b".into())),
                ("b", Kind::Symlink("a".into())),
            ],
            &[],
            &[],
        );
        assert!(Merged::of([&looped]).resolve(Path::new("a/x"), 0).is_err());
    }

    #[test]
    fn loading_a_stack_is_merging_it() {
        let dir = std::env::temp_dir().join(format!("strata-paths-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        let e = |p: &str, k: Kind| (p.to_string(), k);
        let base = LayerPaths {
            entries: vec![
                e("usr", Kind::Dir),
                e("bin", Kind::Symlink("usr/bin".into())),
                e("usr/bin", Kind::Dir),
                e("usr/bin/python3", Kind::File),
                e("etc", Kind::Dir),
                e("etc/passwd", Kind::File),
            ],
            etc: [(
                "etc/passwd".to_string(),
                "root:x:0:0::/root:/bin/sh\n".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        // A bottom layer that names a path twice: a directory, then a file in its place.
        let twice = LayerPaths {
            entries: vec![e("a", Kind::Dir), e("a/x", Kind::File), e("a", Kind::File)],
            ..Default::default()
        };
        let top = LayerPaths {
            entries: vec![e("opt", Kind::Dir), e("opt/venv", Kind::Dir)],
            deleted: vec!["usr/bin/python3".into()],
            ..Default::default()
        };
        let save = |name: &str, l: &LayerPaths| {
            let f = dir.join(name);
            fs_err::write(&f, serde_json::to_vec(l).unwrap()).unwrap();
            f
        };
        let (b, w, t) = (save("b", &base), save("w", &twice), save("t", &top));
        for (files, layers) in [
            (vec![b.clone()], vec![&base]),
            (vec![b.clone(), t.clone()], vec![&base, &top]),
            (vec![w.clone(), t.clone()], vec![&twice, &top]),
            (vec![t.clone(), b.clone()], vec![&top, &base]),
        ] {
            assert_eq!(
                Merged::load(&files).unwrap(),
                Merged::of(layers),
                "{files:?}"
            );
        }
        let m = Merged::load(&[w]).unwrap();
        assert_eq!((m.kind("a"), m.kind("a/x")), (Some(&Kind::File), None));
        assert_eq!(Merged::load(&[]).unwrap(), Merged::default());
        fs_err::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_keeps_kinds_targets_and_the_etc_files() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        b.append_data(&mut h, "etc/", &[][..]).unwrap();
        let passwd = b"root:x:0:0::/root:/bin/sh\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(passwd.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/passwd", &passwd[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "bin", "usr/bin").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        b.append_data(&mut h, "etc/.wh.shadow", &[][..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let p = read(&bytes[..]).unwrap();
        assert_eq!(
            p.entries,
            vec![
                ("etc".to_string(), Kind::Dir),
                ("etc/passwd".to_string(), Kind::File),
                ("bin".to_string(), Kind::Symlink("usr/bin".into())),
            ]
        );
        assert_eq!(p.deleted, vec!["etc/shadow".to_string()]);
        assert_eq!(p.etc["etc/passwd"], "root:x:0:0::/root:/bin/sh\n");
        assert_eq!(
            Merged::of([&p]).etc("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\n"
        );
    }
}
