//! The OCI image layout (image-spec `image-layout.md`): a directory with an `oci-layout` file,
//! an `index.json` and its blobs under `blobs/sha256/`. The one reader and writer of it, for
//! `strata save`/`load` of an OCI directory (`store/transfer.rs`) and for `--cache-to` /
//! `--cache-from type=local` (`engine/cache/remote.rs`). Every write is to a temporary file
//! beside its destination, then renamed: a reader never sees half a file.

// Every std::fs call here names its path in the error it returns (`at`, or a variant that
// carries the path or the digest): what clippy.toml steers code to fs-err for is met.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{canonical_json, media, parse_json, Descriptor, Digest, Index, Manifest, REF_NAME};

/// What reading or writing a layout failed on; each names its path or digest.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The directory has no `oci-layout` file.
    #[error("{}: not an OCI image layout (no oci-layout file)", dir.display())]
    NotALayout { dir: PathBuf },
    /// A blob the layout should hold is not there.
    #[error("{}: blob {digest} is missing", dir.display())]
    MissingBlob { dir: PathBuf, digest: Digest },
    /// A blob larger than its reader takes.
    #[error("{}: blob {digest} is too large ({size} bytes)", dir.display())]
    TooLarge {
        dir: PathBuf,
        digest: Digest,
        size: u64,
    },
    /// A blob whose content is not its digest.
    #[error("{}: does not match its digest {digest}", path.display())]
    Mismatch { path: PathBuf, digest: Digest },
    /// `index.json` (or a manifest) is not valid JSON of its type.
    #[error(transparent)]
    Json(#[from] super::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn at<T>(path: &Path, r: io::Result<T>) -> Result<T, LayoutError> {
    r.map_err(|source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// An OCI image layout at a directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The layout at `dir`, which must have its `oci-layout` file.
    pub fn open(dir: &Path) -> Result<Layout, LayoutError> {
        if !dir.join("oci-layout").exists() {
            return Err(LayoutError::NotALayout {
                dir: dir.to_path_buf(),
            });
        }
        Ok(Layout::at(dir))
    }

    /// The layout at `dir` as it is: perhaps nothing there yet (its [`Layout::index`] is
    /// then `None`).
    pub fn at(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    /// The layout at `dir`, made when it is not there: `blobs/sha256/` and the `oci-layout`
    /// file (an existing one is left as it is).
    pub fn create(dir: &Path) -> Result<Layout, LayoutError> {
        let l = Layout::at(dir);
        let blobs = l.blobs_dir();
        at(&blobs, std::fs::create_dir_all(&blobs))?;
        let file = dir.join("oci-layout");
        if !file.exists() {
            let text = format!(
                "{{\"imageLayoutVersion\":\"{}\"}}",
                media::OCI_LAYOUT_VERSION
            );
            l.write_file(&file, text.as_bytes())?;
        }
        Ok(l)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `blobs/sha256/`.
    pub fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs/sha256")
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).exists()
    }

    /// The blob `d`, open for reading (not checked: the reader checks what it reads).
    pub fn open_blob(&self, d: &Digest) -> Result<std::fs::File, LayoutError> {
        let p = self.blob_path(d);
        std::fs::File::open(&p).map_err(|e| self.blob_error(d, p, e))
    }

    /// The blob `d` whole, at most `max` bytes, checked against its digest.
    pub fn read_blob(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>, LayoutError> {
        if d.size > max {
            return Err(LayoutError::TooLarge {
                dir: self.dir.clone(),
                digest: d.digest.clone(),
                size: d.size,
            });
        }
        let p = self.blob_path(&d.digest);
        let bytes = std::fs::read(&p).map_err(|e| self.blob_error(&d.digest, p.clone(), e))?;
        if Digest::of(&bytes) != d.digest {
            return Err(LayoutError::Mismatch {
                path: p,
                digest: d.digest.clone(),
            });
        }
        Ok(bytes)
    }

    fn blob_error(&self, d: &Digest, path: PathBuf, e: io::Error) -> LayoutError {
        if e.kind() == io::ErrorKind::NotFound {
            LayoutError::MissingBlob {
                dir: self.dir.clone(),
                digest: d.clone(),
            }
        } else {
            LayoutError::Io { path, source: e }
        }
    }

    /// Add the blob `d` unless the layout has it: `fill` writes it to the temporary path it
    /// is given (`tmp_name` in the blobs directory), which then takes the blob's name; on a
    /// failure the temporary file is removed. Whether it was written.
    pub fn put_blob<E: From<LayoutError>>(
        &self,
        d: &Digest,
        tmp_name: &str,
        fill: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<bool, E> {
        let to = self.blob_path(d);
        if to.exists() {
            return Ok(false);
        }
        let tmp = self.blobs_dir().join(tmp_name);
        let r = fill(&tmp).and_then(|()| Ok(at(&to, std::fs::rename(&tmp, &to))?));
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r.map(|()| true)
    }

    /// `index.json`; `None` when there is none (an empty directory, a cache not written yet).
    pub fn index(&self) -> Result<Option<Index>, LayoutError> {
        let p = self.dir.join("index.json");
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LayoutError::Io { path: p, source: e }),
        };
        Ok(Some(parse_json(&bytes, &p.display().to_string())?))
    }

    /// Replace `index.json` with `index`, in its canonical encoding.
    pub fn write_index(&self, index: &Index) -> Result<(), LayoutError> {
        self.write_file(&self.dir.join("index.json"), &canonical_json(index))
    }

    /// The entry of the index named `tag` (its `org.opencontainers.image.ref.name`).
    pub fn tagged(&self, tag: &str) -> Result<Option<Descriptor>, LayoutError> {
        Ok(self.index()?.and_then(|idx| {
            idx.manifests
                .into_iter()
                .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
        }))
    }

    /// Remove the blobs that no manifest of `index` refers to. Nothing is removed when a
    /// manifest cannot be read (it may refer to any of them).
    pub fn remove_unused(&self, index: &Index) {
        let mut keep = std::collections::BTreeSet::new();
        for d in &index.manifests {
            keep.insert(d.digest.hex().to_string());
            let Ok(bytes) = self.read_blob(d, 8 << 20) else {
                return;
            };
            let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
                return;
            };
            keep.insert(m.config.digest.hex().to_string());
            keep.extend(m.layers.iter().map(|l| l.digest.hex().to_string()));
        }
        let Ok(rd) = std::fs::read_dir(self.blobs_dir()) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && !keep.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Write `path` (a file of the layout's top directory) through a temporary file beside it.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(
            ".{}-{}-{}.tmp",
            name.unwrap_or_default(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || {
            let mut f = std::fs::File::create_new(&tmp)?;
            io::Write::write_all(&mut f, bytes)?;
            f.sync_all()
        };
        let r = at(&tmp, write()).and_then(|()| at(path, std::fs::rename(&tmp, path)));
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }
}

/// Add `d` to `index`, in place of the entry of the same name (`ref.name`) if it has one.
pub fn set_entry(index: &mut Index, d: Descriptor) {
    if let Some(r) = d.annotations.get(REF_NAME) {
        index
            .manifests
            .retain(|m| m.annotations.get(REF_NAME) != Some(r));
    }
    index.manifests.push(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let d = std::env::temp_dir().join(format!(
            "strata-layout-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn put(l: &Layout, bytes: &[u8]) -> Descriptor {
        let d = Digest::of(bytes);
        l.put_blob(&d, ".t", |p| at(p, std::fs::write(p, bytes)))
            .unwrap();
        Descriptor::new(media::OCI_MANIFEST, d, bytes.len() as u64)
    }

    #[test]
    fn a_layout_written_reads_back() {
        let dir = tmp();
        assert!(matches!(
            Layout::open(&dir),
            Err(LayoutError::NotALayout { .. })
        ));
        let l = Layout::create(&dir).unwrap();
        assert!(Layout::open(&dir).is_ok());
        assert_eq!(l.index().unwrap(), None);
        let m = put(&l, b"{\"schemaVersion\":2}");
        let mut tagged = m.clone();
        tagged.annotations.insert(REF_NAME.into(), "v1".into());
        let mut idx = Index::default();
        set_entry(&mut idx, tagged.clone());
        set_entry(&mut idx, tagged.clone());
        assert_eq!(idx.manifests.len(), 1, "one entry per name");
        l.write_index(&idx).unwrap();
        assert_eq!(l.index().unwrap(), Some(idx));
        assert_eq!(l.tagged("v1").unwrap(), Some(tagged));
        assert_eq!(l.tagged("v2").unwrap(), None);
        assert_eq!(l.read_blob(&m, 1 << 20).unwrap(), b"{\"schemaVersion\":2}");
        assert!(!l
            .put_blob(&m.digest, ".t", |_| Ok::<_, LayoutError>(()))
            .unwrap());
        assert!(matches!(
            l.read_blob(&m, 3),
            Err(LayoutError::TooLarge { size: 19, .. })
        ));
        // Nothing left beside the files written.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_changed_blob_is_an_error_naming_it() {
        let dir = tmp();
        let l = Layout::create(&dir).unwrap();
        let m = put(&l, b"abc");
        std::fs::remove_file(l.blob_path(&m.digest)).unwrap();
        let e = l.read_blob(&m, 10).unwrap_err();
        assert!(matches!(&e, LayoutError::MissingBlob { digest, .. } if *digest == m.digest));
        assert!(e.to_string().contains(&m.digest.to_string()), "{e}");
        assert!(matches!(
            l.open_blob(&m.digest),
            Err(LayoutError::MissingBlob { .. })
        ));
        std::fs::write(l.blob_path(&m.digest), b"abd").unwrap();
        assert!(matches!(
            l.read_blob(&m, 10),
            Err(LayoutError::Mismatch { .. })
        ));
        // A failed fill leaves no temporary file.
        let d = Digest::of(b"x");
        let r = l.put_blob(&d, ".t", |p| {
            std::fs::write(p, b"x").unwrap();
            Err(LayoutError::NotALayout { dir: dir.clone() })
        });
        assert!(r.is_err());
        assert!(!l.blobs_dir().join(".t").exists() && !l.has_blob(&d));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_index_is_an_error_naming_the_file() {
        let dir = tmp();
        let l = Layout::create(&dir).unwrap();
        std::fs::write(dir.join("index.json"), b"{\"manifests\": 3}").unwrap();
        let e = l.index().unwrap_err();
        assert!(matches!(e, LayoutError::Json(_)), "{e:?}");
        assert!(e.to_string().contains("index.json"), "{e}");
        assert!(l.tagged("v1").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unused_blobs_are_removed_and_used_ones_kept() {
        let dir = tmp();
        let l = Layout::create(&dir).unwrap();
        let config = put(&l, b"{}");
        let layer = put(&l, b"layer");
        let stale = put(&l, b"stale");
        let m = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: config.clone(),
            layers: vec![layer.clone()],
            annotations: Default::default(),
        };
        let mb = canonical_json(&m);
        let md = put(&l, &mb);
        let idx = Index {
            manifests: vec![md.clone()],
            ..Index::default()
        };
        l.remove_unused(&idx);
        for d in [&config, &layer, &md] {
            assert!(l.has_blob(&d.digest));
        }
        assert!(!l.has_blob(&stale.digest));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
