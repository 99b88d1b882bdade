//! What a layer holds, as far as image size goes: the bytes of its files, the bytes below each
//! directory, what it deletes, and the things that make images fat (package-manager caches,
//! bytecode, compilers and headers). Read once from the layer's tar (headers only: file data is
//! skipped, never hashed or kept) and small enough to cache as JSON next to the blob.

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// Files at least this large are listed by path in [`LayerFacts::sizes`] (smaller ones only
/// count towards their directories).
pub const LISTED_FILE: u64 = 64 << 10;

/// The version of what [`LayerFacts`] finds: facts cached by an older strata are read again
/// (2: apt's pkgcache.bin and srcpkgcache.bin, apk, Poetry, Pipenv, PDM and Yarn caches).
pub const VERSION: u32 = 2;

/// The facts of one layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerFacts {
    /// [`VERSION`] when read (0: before versions).
    #[serde(default)]
    pub version: u32,
    /// Regular files (hard links not counted twice).
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Bytes below each directory, at every level (`usr`, `usr/lib`, …), and the size of each
    /// file of [`LISTED_FILE`] or more. Paths are relative, without a leading `/`.
    pub sizes: BTreeMap<String, u64>,
    /// Paths this layer deletes (whiteouts).
    pub deleted: Vec<String>,
    /// Directories this layer makes opaque (hides everything below them from lower layers).
    pub opaque: Vec<String>,
    /// Bytes of package-manager caches by kind: `pip`, `uv`, `poetry`, `pipenv`, `pdm`,
    /// `apt-lists`, `apt-archives`, `apt-pkgcache`, `apk`, `npm`, `yarn`.
    pub caches: BTreeMap<String, u64>,
    /// Bytes of Python bytecode (`__pycache__` and `.pyc` files).
    pub pycache: u64,
    /// C compilers (`usr/bin/gcc-12`, `usr/bin/cc`, …).
    pub compilers: Vec<String>,
    /// Bytes of C headers under `usr/include` (what `-dev` packages install).
    pub headers: u64,
    /// For a layer stored uncompressed: about how many bytes it takes gzip-compressed, what a
    /// push sends for it ([`super::estimate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip_estimate: Option<u64>,
}

/// The package-manager cache a path belongs to, if any.
fn cache_kind(path: &str) -> Option<&'static str> {
    let within =
        |dir: &str| path.contains(&format!("/{dir}/")) || path.starts_with(&format!("{dir}/"));
    if within(".cache/pip") {
        Some("pip")
    } else if within(".cache/uv") {
        Some("uv")
    } else if within(".cache/pypoetry") {
        Some("poetry")
    } else if within(".cache/pipenv") {
        Some("pipenv")
    } else if within(".cache/pdm") {
        Some("pdm")
    } else if path.starts_with("var/lib/apt/lists/") {
        Some("apt-lists")
    } else if path.starts_with("var/cache/apt/archives/") && path.ends_with(".deb") {
        Some("apt-archives")
    } else if path == "var/cache/apt/pkgcache.bin" || path == "var/cache/apt/srcpkgcache.bin" {
        // What apt-get update and install leave (76 MB on Debian 12 after installing libpq5,
        // with /var/lib/apt/lists removed as commonly advised): apt-get clean removes them.
        Some("apt-pkgcache")
    } else if path.starts_with("var/cache/apk/") {
        Some("apk")
    } else if within(".npm/_cacache") {
        Some("npm")
    } else if within(".cache/yarn") || within(".yarn/berry/cache") {
        Some("yarn")
    } else {
        None
    }
}

/// Whether `path` is a C compiler driver.
fn is_compiler(path: &str) -> bool {
    let Some(name) = path
        .strip_prefix("usr/bin/")
        .or_else(|| path.strip_prefix("usr/local/bin/"))
    else {
        return false;
    };
    if name.contains('/') {
        return false;
    }
    let base = name
        .strip_prefix("x86_64-linux-gnu-")
        .or_else(|| name.strip_prefix("aarch64-linux-gnu-"))
        .unwrap_or(name);
    ["gcc", "cc", "g++", "c++", "clang"].contains(&base)
        || ["gcc-", "g++-", "clang-"].iter().any(|p| {
            base.strip_prefix(p)
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// Read the facts of an uncompressed layer tar.
pub fn read(tar: impl Read) -> io::Result<LayerFacts> {
    let mut facts = LayerFacts {
        version: VERSION,
        ..Default::default()
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        facts.add(&entry?)?;
    }
    Ok(facts)
}

/// The facts and the paths of an uncompressed layer tar, in one pass over it (the size report
/// reads a base layer once for both: COPY answers from the paths instead of unpacking).
pub fn read_with_paths(tar: impl Read) -> io::Result<(LayerFacts, super::paths::LayerPaths)> {
    both(tar::Archive::new(tar).entries()?)
}

/// The facts and the paths of `entries`, each entry taken once by both.
fn both<R: Read>(
    entries: tar::Entries<'_, R>,
) -> io::Result<(LayerFacts, super::paths::LayerPaths)> {
    let mut facts = LayerFacts {
        version: VERSION,
        ..Default::default()
    };
    let mut paths = super::paths::LayerPaths::default();
    for entry in entries {
        let mut entry = entry?;
        facts.add(&entry)?;
        paths.add(&mut entry)?;
    }
    Ok((facts, paths))
}

/// The facts and the paths of the layer blob `f`: an uncompressed tar (what builds store) is
/// read by its headers only, its files' data skipped by seeking (2,000 headers instead of
/// 52 MB for a COPY of the lab's `big` context); a compressed one is decompressed.
pub fn read_blob_with_paths(
    mut f: std::fs::File,
) -> io::Result<(LayerFacts, super::paths::LayerPaths)> {
    use std::io::{Seek, SeekFrom};
    let mut head = [0u8; 4];
    let n = f.read(&mut head)?;
    f.seek(SeekFrom::Start(0))?;
    if super::sniff(&head[..n]) != super::Compression::None {
        return read_with_paths(super::decompress_pipelined(f)?);
    }
    both(tar::Archive::new(f).entries_with_seek()?)
}

impl LayerFacts {
    /// Take in one entry of the layer's tar (its header only).
    pub fn add<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> io::Result<()> {
        let facts = self;
        let path = match super::TarPath::of(&entry.path()?.to_string_lossy()) {
            super::TarPath::Root => return Ok(()),
            super::TarPath::Opaque(d) => {
                facts.opaque.push(d);
                return Ok(());
            }
            super::TarPath::Deleted(p) => {
                facts.deleted.push(p);
                return Ok(());
            }
            super::TarPath::Entry(p) => p,
        };
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let kind = entry.header().entry_type();
        if (kind.is_symlink() || kind.is_file()) && is_compiler(&path) {
            facts.compilers.push(path.clone());
        }
        if !kind.is_file() {
            return Ok(());
        }
        let size = entry.header().size()?;
        facts.files += 1;
        facts.bytes += size;
        if size >= LISTED_FILE {
            facts.sizes.insert(path.clone(), size);
        }
        let mut d = dir;
        while !d.is_empty() {
            *facts.sizes.entry(d.to_string()).or_default() += size;
            d = d.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        }
        if let Some(k) = cache_kind(&path) {
            *facts.caches.entry(k.to_string()).or_default() += size;
        }
        if path.ends_with(".pyc") || path.contains("/__pycache__/") {
            facts.pycache += size;
        }
        if path.starts_with("usr/include/") {
            facts.headers += size;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, usize)], links: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, n) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(*n as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, p, &vec![0u8; *n][..]).unwrap();
        }
        for (p, t) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, p, t).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A blob read by its headers only (uncompressed, data skipped by seeking) or
    /// decompressed gives what a pass over the whole tar gives, /etc/passwd's bytes included.
    #[test]
    fn a_blob_read_by_its_headers_is_read_whole() {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in [
            ("etc/passwd", &b"root:x:0:0::/root:/bin/sh\n"[..]),
            ("app/big.bin", &[7u8; 70_000][..]),
            ("app/__pycache__/m.pyc", &b"x"[..]),
            ("var/lib/.wh.old", &b""[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, p, data).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "usr/bin/cc", "gcc-12").unwrap();
        let t = b.into_inner().unwrap();
        let whole = read_with_paths(&t[..]).unwrap();
        assert_eq!(whole.1.etc["etc/passwd"], "root:x:0:0::/root:/bin/sh\n");
        assert_eq!(whole.0.files, 3);
        let dir = std::env::temp_dir().join(format!("strata-facts-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &t).unwrap();
        for (name, bytes) in [("plain", t.clone()), ("gzip", gz.finish().unwrap())] {
            let f = dir.join(name);
            fs_err::write(&f, bytes).unwrap();
            let got = read_blob_with_paths(fs_err::File::open(&f).unwrap().into()).unwrap();
            assert_eq!(got, whole, "{name}");
        }
        fs_err::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn caches_bytecode_compilers_headers_and_deletions_are_counted() {
        let t = tar_of(
            &[
                ("root/.cache/pip/http/a", 100_000),
                ("home/app/.cache/uv/wheels/b", 7),
                ("var/lib/apt/lists/deb.debian.org_dists", 3000),
                ("var/cache/apt/archives/gcc_12.deb", 50),
                ("app/__pycache__/m.cpython-312.pyc", 40),
                ("app/m.py", 10),
                ("usr/include/stdio.h", 20),
                ("usr/bin/gcc-12", 1),
                ("var/lib/.wh.old", 0),
                ("opt/.wh..wh..opq", 0),
            ],
            &[("usr/bin/cc", "gcc-12"), ("usr/bin/ccache", "x")],
        );
        let f = read(&t[..]).unwrap();
        assert_eq!(f.files, 8);
        assert_eq!(f.bytes, 100_000 + 7 + 3000 + 50 + 40 + 10 + 20 + 1);
        assert_eq!(f.caches["pip"], 100_000);
        assert_eq!(f.caches["uv"], 7);
        assert_eq!(f.caches["apt-lists"], 3000);
        assert_eq!(f.caches["apt-archives"], 50);
        assert_eq!(f.pycache, 40);
        assert_eq!(f.headers, 20);
        assert_eq!(f.compilers, vec!["usr/bin/gcc-12", "usr/bin/cc"]);
        assert_eq!(f.deleted, vec!["var/lib/old"]);
        assert_eq!(f.opaque, vec!["opt"]);
        // Directories at every level, and the one file over the listing threshold.
        assert_eq!(f.sizes["root"], 100_000);
        assert_eq!(f.sizes["root/.cache/pip"], 100_000);
        assert_eq!(f.sizes["root/.cache/pip/http/a"], 100_000);
        assert_eq!(f.sizes["app"], 50);
        assert!(!f.sizes.contains_key("app/m.py"));
    }

    #[test]
    fn compiler_names() {
        for yes in [
            "usr/bin/gcc",
            "usr/bin/gcc-12",
            "usr/bin/x86_64-linux-gnu-gcc-12",
            "usr/bin/c++",
            "usr/local/bin/clang-17",
        ] {
            assert!(is_compiler(yes), "{yes}");
        }
        for no in [
            "usr/bin/gcc-ar-12",
            "usr/bin/ccache",
            "usr/bin/gcc-",
            "usr/lib/gcc",
            "opt/gcc",
        ] {
            assert!(!is_compiler(no), "{no}");
        }
    }
}
