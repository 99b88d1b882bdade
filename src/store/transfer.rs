//! `save` and `load`: OCI layout directories, oci-archive tars and docker-archive tars (the
//! `docker save` format), in and out. Everything read from outside is checked against its
//! digest before it is referenced.

// Every std::fs call here goes through `at(path, …)`, which names the path in the error: the
// reason clippy.toml steers code to fs-err is met, so std::fs is allowed in this file.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{at, Error, ImageRecord, ImageRef, Result, Store};
use crate::layer;
use crate::oci::layout::{Layout, LayoutError};
use crate::oci::{
    self, canonical_json, media, Descriptor, Digest, ImageConfig, Index, Manifest, Platform,
    REF_NAME,
};

/// The annotation containerd and docker use for an image's full name in an OCI layout.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Largest JSON file read into memory from an archive.
const MAX_JSON: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    OciArchive,
    DockerArchive,
    OciDir,
}

impl SaveFormat {
    pub fn parse(s: &str) -> Option<SaveFormat> {
        match s {
            "oci-archive" => Some(SaveFormat::OciArchive),
            "docker-archive" => Some(SaveFormat::DockerArchive),
            "oci-dir" | "oci" => Some(SaveFormat::OciDir),
            _ => None,
        }
    }
}

fn tar_header(path: &str, size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

/// An OCI layout's `ref.name` as an image name. A full reference (`app:1`, `team/app`) is
/// used as is; a tag-like ref (`latest`, `3.12`, `v2`) names a tag of `fallback` (the archive's
/// file name); any other word is taken as the image name with the tag `latest`, as the lab's
/// layouts and skopeo's `oci:DIR:NAME` use it.
fn ref_to_name(r: &str, fallback: &str) -> String {
    if r.contains(':') || r.contains('/') {
        return r.to_string();
    }
    let tag_like = r == "latest"
        || r.starts_with(|c: char| c.is_ascii_digit())
        || (r.starts_with('v') && r[1..].starts_with(|c: char| c.is_ascii_digit()));
    if tag_like {
        format!("{fallback}:{r}")
    } else {
        format!("{r}:latest")
    }
}

/// The names an OCI layout's index entry gives (containerd's full name, else the ref name).
fn layout_names(d: &Descriptor, fallback: &str) -> Result<Vec<ImageRef>> {
    let name = d.annotations.get(CONTAINERD_NAME).cloned().or_else(|| {
        d.annotations
            .get(REF_NAME)
            .map(|r| ref_to_name(r, fallback))
    });
    Ok(name
        .map(|n| ImageRef::parse(&n))
        .transpose()?
        .into_iter()
        .collect())
}

/// Whether every manifest an image index lists is there (`read`) with every blob it needs
/// (`has`): then it is loaded whole.
fn whole_index(
    i: &Index,
    read: &dyn Fn(&Digest) -> Option<Vec<u8>>,
    has: &dyn Fn(&Digest) -> bool,
) -> bool {
    !i.manifests.is_empty()
        && i.manifests.iter().all(|m| {
            media::is_manifest(&m.media_type)
                && read(&m.digest)
                    .and_then(|b| oci::parse_json::<Manifest>(&b, "manifest").ok())
                    .is_some_and(|man| {
                        std::iter::once(&man.config)
                            .chain(&man.layers)
                            .all(|b| has(&b.digest))
                    })
        })
}

/// An error while writing an archive stream (the destination is named by `save`).
/// A layout's failures as the store's: an IO error names its path as the store's do; the
/// others keep their message.
impl From<LayoutError> for Error {
    fn from(e: LayoutError) -> Error {
        match e {
            LayoutError::Io { path, source } => Error::Io { path, source },
            LayoutError::Json(e) => Error::Oci(e),
            e => Error::Invalid(e.to_string()),
        }
    }
}

fn archive_io(e: io::Error) -> Error {
    Error::Io {
        path: PathBuf::from("<archive>"),
        source: e,
    }
}

impl Store {
    /// The descriptors (with names) an OCI export of `images` lists in its index.
    fn export_descriptors(
        &self,
        images: &[(ImageRecord, Vec<ImageRef>)],
    ) -> Result<Vec<Descriptor>> {
        let index = self.index()?;
        let mut out = Vec::new();
        for (img, names) in images {
            let base = index
                .manifests
                .iter()
                .find(|d| d.digest == img.manifest_digest)
                .cloned()
                .ok_or_else(|| Error::MissingBlob(img.manifest_digest.clone()))?;
            let names: Vec<Option<&ImageRef>> = if names.is_empty() {
                vec![None]
            } else {
                names.iter().map(Some).collect()
            };
            for n in names {
                let mut d = base.clone();
                d.annotations.clear();
                if let Some(n) = n {
                    d.annotations.insert(REF_NAME.into(), n.tag().to_string());
                    d.annotations.insert(CONTAINERD_NAME.into(), n.qualified());
                }
                out.push(d);
            }
        }
        Ok(out)
    }

    fn blobs_of(&self, img: &ImageRecord) -> Vec<Descriptor> {
        let mut v = vec![
            Descriptor::new(media::OCI_MANIFEST, img.manifest_digest.clone(), 0),
            img.manifest.config.clone(),
        ];
        v.extend(img.manifest.layers.iter().cloned());
        v
    }

    /// Every blob an index of the store reaches: the index, its manifests (attestation
    /// manifests too) and their configs and layers.
    fn index_blobs(&self, index: &Descriptor) -> Result<Vec<Descriptor>> {
        let mut out = vec![index.clone()];
        for m in self.read_index(&index.digest)?.manifests {
            let man: Manifest = oci::parse_json(
                &self.read_blob(&m.digest)?,
                &format!("manifest {}", m.digest),
            )?;
            out.push(m);
            out.push(man.config);
            out.extend(man.layers);
        }
        Ok(out)
    }

    /// Write `images` to `dest` in `format`. Archives are written to a temp file beside `dest`
    /// and renamed, so a failed save leaves no half-written archive.
    pub fn save(
        &self,
        images: &[(ImageRecord, Vec<ImageRef>)],
        dest: &Path,
        format: SaveFormat,
    ) -> Result<()> {
        self.save_with_indexes(images, &[], dest, format)
    }

    /// [`Store::save`] with image indexes of the store too (`indexes`: an index's descriptor,
    /// as [`Store::find_index`] gives it, and the names to write for it): an OCI layout or
    /// oci-archive holds each whole, every platform's image and attestation. A docker-archive
    /// holds single images only: an index is refused there (choose a platform's image).
    pub fn save_with_indexes(
        &self,
        images: &[(ImageRecord, Vec<ImageRef>)],
        indexes: &[(Descriptor, Vec<ImageRef>)],
        dest: &Path,
        format: SaveFormat,
    ) -> Result<()> {
        if format == SaveFormat::DockerArchive {
            if let Some((d, names)) = indexes.first() {
                let what = names
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| d.digest.to_string());
                return Err(Error::Invalid(format!(
                    "\"{what}\" is an image index (several platforms): a docker-archive holds one platform's image; choose one with --platform, or save it as oci-archive"
                )));
            }
        }
        let mut extra = Vec::new();
        let mut tops = Vec::new();
        for (d, names) in indexes {
            extra.extend(self.index_blobs(d)?);
            let mut base = d.clone();
            base.annotations.clear();
            base.platform = None;
            if names.is_empty() {
                tops.push(base.clone());
            }
            for n in names {
                let mut e = base.clone();
                e.annotations.insert(REF_NAME.into(), n.tag().to_string());
                e.annotations.insert(CONTAINERD_NAME.into(), n.qualified());
                tops.push(e);
            }
        }
        let extra = (extra, tops);
        match format {
            SaveFormat::OciDir => self.save_oci_dir(images, &extra, dest),
            SaveFormat::OciArchive | SaveFormat::DockerArchive => {
                let dir = dest
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                // What an earlier save killed mid-write left beside `dest`.
                super::io_util::remove_dead_leftovers(dir, ".strata-save-");
                let tmp = dir.join(format!(
                    ".{}.tmp",
                    super::io_util::unique_name("strata-save")
                ));
                let f = at(&tmp, std::fs::File::create(&tmp))?;
                let r = (|| {
                    let w = io::BufWriter::with_capacity(1 << 20, f);
                    let w = if format == SaveFormat::OciArchive {
                        self.write_oci_archive(images, &extra, w)?
                    } else {
                        self.write_docker_archive(images, w)?
                    };
                    let f = at(&tmp, w.into_inner().map_err(|e| e.into_error()))?;
                    at(&tmp, f.sync_all())
                })();
                if let Err(e) = r {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
                at(dest, std::fs::rename(&tmp, dest))
            }
        }
    }

    fn save_oci_dir(
        &self,
        images: &[(ImageRecord, Vec<ImageRef>)],
        (extra, tops): &(Vec<Descriptor>, Vec<Descriptor>),
        dest: &Path,
    ) -> Result<()> {
        let layout = Layout::create(dest)?;
        let blobs = layout.blobs_dir();
        // What an earlier save killed mid-copy left here (`.copy-PID-…` of a dead process).
        super::io_util::remove_dead_leftovers(&blobs, ".copy-");
        let all = images
            .iter()
            .map(|(img, _)| self.blobs_of(img))
            .chain(std::iter::once(extra.clone()));
        for list in all {
            for d in list {
                // Never a hard link: writing to the exported copy would change the store's
                // blob. A reflink where the filesystem has them (no data copied), else a copy.
                let from = self.blob_path(&d.digest);
                let tmp = format!(".{}", super::io_util::unique_name("copy"));
                layout.put_blob(&d.digest, &tmp, |tmp| {
                    super::io_util::clone_or_copy(&from, tmp)
                })?;
            }
        }
        let mut index = layout.index()?.unwrap_or_default();
        for d in self
            .export_descriptors(images)?
            .into_iter()
            .chain(tops.clone())
        {
            oci::layout::set_entry(&mut index, d);
        }
        Ok(layout.write_index(&index)?)
    }

    fn write_oci_archive<W: Write>(
        &self,
        images: &[(ImageRecord, Vec<ImageRef>)],
        (extra, tops): &(Vec<Descriptor>, Vec<Descriptor>),
        w: W,
    ) -> Result<W> {
        let mut b = tar::Builder::new(w);
        let layout = format!(
            "{{\"imageLayoutVersion\":\"{}\"}}",
            media::OCI_LAYOUT_VERSION
        );
        b.append(
            &tar_header("oci-layout", layout.len() as u64, false),
            layout.as_bytes(),
        )
        .map_err(archive_io)?;
        let mut manifests = self.export_descriptors(images)?;
        manifests.extend(tops.iter().cloned());
        let index = Index {
            manifests,
            ..Index::default()
        };
        let ib = canonical_json(&index);
        b.append(&tar_header("index.json", ib.len() as u64, false), &ib[..])
            .map_err(archive_io)?;
        b.append(&tar_header("blobs/", 0, true), io::empty())
            .map_err(archive_io)?;
        b.append(&tar_header("blobs/sha256/", 0, true), io::empty())
            .map_err(archive_io)?;
        let mut seen = std::collections::BTreeSet::new();
        let all = images
            .iter()
            .map(|(img, _)| self.blobs_of(img))
            .chain(std::iter::once(extra.clone()));
        for list in all {
            for d in list {
                if !seen.insert(d.digest.clone()) {
                    continue;
                }
                let f = self.open_blob(&d.digest)?;
                let size = at(&self.blob_path(&d.digest), f.metadata())?.len();
                b.append(
                    &tar_header(&format!("blobs/sha256/{}", d.digest.hex()), size, false),
                    f,
                )
                .map_err(archive_io)?;
            }
        }
        b.into_inner().map_err(archive_io)
    }

    fn write_docker_archive<W: Write>(
        &self,
        images: &[(ImageRecord, Vec<ImageRef>)],
        w: W,
    ) -> Result<W> {
        let mut b = tar::Builder::new(w);
        let mut manifest = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (img, names) in images {
            let config_name = format!("{}.json", img.config_digest.hex());
            if seen.insert(config_name.clone()) {
                let cb = self.read_blob(&img.config_digest)?;
                b.append(&tar_header(&config_name, cb.len() as u64, false), &cb[..])
                    .map_err(archive_io)?;
            }
            let mut layers = Vec::new();
            for (l, diff) in img.manifest.layers.iter().zip(&img.config.rootfs.diff_ids) {
                let name = format!("{}/layer.tar", diff.hex());
                layers.push(name.clone());
                if !seen.insert(name.clone()) {
                    continue;
                }
                // docker-archive layers are plain tars: uncompress into a temp file first, since a
                // tar entry needs its size up front.
                let mut tmp = self.temp_file()?;
                let mut r = at(tmp.path(), layer::decompress(self.open_blob(&l.digest)?))?;
                let size = tmp.with(|f| io::copy(&mut r, f))?;
                let mut f = tmp.with(|f| f.try_clone())?;
                at(tmp.path(), io::Seek::seek(&mut f, io::SeekFrom::Start(0)))?;
                b.append(
                    &tar_header(&format!("{}/", diff.hex()), 0, true),
                    io::empty(),
                )
                .map_err(archive_io)?;
                b.append(&tar_header(&name, size, false), f)
                    .map_err(archive_io)?;
            }
            manifest.push(serde_json::json!({
                "Config": config_name,
                "RepoTags": names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "Layers": layers,
            }));
        }
        let mb = serde_json::to_vec(&manifest).map_err(|e| Error::Invalid(e.to_string()))?;
        b.append(
            &tar_header("manifest.json", mb.len() as u64, false),
            &mb[..],
        )
        .map_err(archive_io)?;
        b.into_inner().map_err(archive_io)
    }

    /// Load every image of an OCI layout directory, an oci-archive or a docker-archive
    /// (optionally gzip- or zstd-compressed). Returns the images with their names.
    pub fn load(&self, src: &Path) -> Result<Vec<ImageRecord>> {
        let _w = self.writer_lock()?;
        let fallback = src
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "loaded".into());
        let fallback = fallback
            .split('.')
            .next()
            .unwrap_or("loaded")
            .to_ascii_lowercase();
        if at(src, std::fs::metadata(src))?.is_dir() {
            let layout = Layout::open(src)?;
            let index = match layout.index()? {
                Some(i) => i,
                None => {
                    let p = src.join("index.json");
                    let source = io::Error::from_raw_os_error(libc::ENOENT);
                    return Err(Error::Io { path: p, source });
                }
            };
            let mut needed = Vec::new();
            for d in &index.manifests {
                self.collect_needed(
                    d,
                    &|dg: &Digest| std::fs::read(layout.blob_path(dg)).ok(),
                    &|dg: &Digest| layout.blob_path(dg).exists(),
                    &mut needed,
                )?;
            }
            for d in &needed {
                if !self.has_blob(&d.digest) {
                    let p = layout.blob_path(&d.digest);
                    let f = layout.open_blob(&d.digest)?;
                    self.put_blob_from(f, Some((&d.digest, None)), &p.display().to_string())?;
                }
            }
            return self.name_oci_index(&index, &fallback);
        }
        let f = at(src, std::fs::File::open(src))?;
        let r = at(src, layer::decompress(f))?;
        let mut archive = tar::Archive::new(r);
        let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut files: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
        // `docker save A B` of images sharing a layer writes it once, and a symlink
        // `<id>/layer.tar -> ../<other id>/layer.tar` for the other.
        let mut links: BTreeMap<String, String> = BTreeMap::new();
        for entry in at(src, archive.entries())? {
            let mut entry = at(src, entry)?;
            let kind = entry.header().entry_type();
            if kind == tar::EntryType::Symlink {
                let path = at(src, entry.path())?.to_string_lossy().into_owned();
                if let Some(target) = at(src, entry.link_name())? {
                    let dir = Path::new(path.trim_start_matches("./"))
                        .parent()
                        .map(|d| d.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let joined = crate::fsx::clean(&format!("/{dir}/{}", target.to_string_lossy()));
                    links.insert(
                        path.trim_start_matches("./").to_string(),
                        joined.trim_start_matches('/').to_string(),
                    );
                }
                continue;
            }
            if kind != tar::EntryType::Regular {
                continue;
            }
            let path = at(src, entry.path())?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let what = format!("{}: {path}", src.display());
            if matches!(
                path.as_str(),
                "oci-layout" | "index.json" | "manifest.json" | "repositories"
            ) {
                let mut v = Vec::new();
                at(src, entry.by_ref().take(MAX_JSON).read_to_end(&mut v))?;
                small.insert(path, v);
            } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                let want: Digest = format!("sha256:{hex}").parse().map_err(|_| {
                    Error::Invalid(format!("{what}: blob name is not a sha256 digest"))
                })?;
                let got = self.put_blob_from(&mut entry, Some((&want, None)), &what)?;
                files.insert(path, got);
            } else {
                let got = self.put_blob_from(&mut entry, None, &what)?;
                files.insert(path, got);
            }
        }
        // A link (or a chain of them, within bounds) stands for the file it leads to.
        for (from, to) in &links {
            let mut t = to.clone();
            for _ in 0..16 {
                match links.get(&t) {
                    Some(next) => t = next.clone(),
                    None => break,
                }
            }
            if let Some(f) = files.get(&t).cloned() {
                files.insert(from.clone(), f);
            }
        }
        if let Some(m) = small.get("manifest.json") {
            return self.name_docker_archive(m, &files, src);
        }
        if let Some(i) = small.get("index.json") {
            let index: Index = oci::parse_json(i, &format!("{}: index.json", src.display()))?;
            return self.name_oci_index(&index, &fallback);
        }
        Err(Error::Invalid(format!(
            "{}: neither an OCI archive (index.json) nor a docker archive (manifest.json)",
            src.display()
        )))
    }

    /// Every descriptor a top-level index entry needs, reading manifests with `read` (`has`:
    /// whether the source holds a blob). An image index whose every manifest is there with
    /// all its blobs is needed whole; otherwise (a layout of one platform's blobs, as skopeo
    /// copies one) the host platform's image of it.
    fn collect_needed(
        &self,
        d: &Descriptor,
        read: &dyn Fn(&Digest) -> Option<Vec<u8>>,
        has: &dyn Fn(&Digest) -> bool,
        out: &mut Vec<Descriptor>,
    ) -> Result<()> {
        out.push(d.clone());
        let bytes = read(&d.digest).ok_or_else(|| Error::MissingBlob(d.digest.clone()))?;
        if media::is_index(&d.media_type) {
            let i: Index = oci::parse_json(&bytes, &format!("index {}", d.digest))?;
            if whole_index(&i, read, has) {
                for m in &i.manifests {
                    self.collect_needed(m, read, has, out)?;
                }
            } else if let Some(m) = super::select_platform(&i, &Platform::host()) {
                self.collect_needed(m, read, has, out)?;
            }
        } else {
            let m: Manifest = oci::parse_json(&bytes, &format!("manifest {}", d.digest))?;
            out.push(m.config.clone());
            out.extend(m.layers.iter().cloned());
        }
        Ok(())
    }

    fn name_oci_index(&self, index: &Index, fallback: &str) -> Result<Vec<ImageRecord>> {
        let mut checked = Vec::new();
        let mut indexes: Vec<(Descriptor, Vec<ImageRef>)> = Vec::new();
        for d in &index.manifests {
            let mut d = d.clone();
            if media::is_index(&d.media_type) {
                let i: Index =
                    oci::parse_json(&self.read_blob(&d.digest)?, &format!("index {}", d.digest))?;
                let read = |dg: &Digest| self.read_blob(dg).ok();
                let has = |dg: &Digest| self.has_blob(dg);
                if whole_index(&i, &read, &has) {
                    let names = layout_names(&d, fallback)?;
                    let mut desc = d.clone();
                    desc.annotations.clear();
                    desc.platform = None;
                    indexes.push((desc, names));
                    continue;
                }
                let chosen = super::select_platform(&i, &Platform::host()).ok_or_else(|| {
                    Error::Invalid(format!(
                        "image index {} has no manifest for {}/{}",
                        d.digest,
                        Platform::host().os,
                        Platform::host().architecture
                    ))
                })?;
                let annotations = d.annotations.clone();
                d = chosen.clone();
                d.annotations = annotations;
            }
            if !media::is_manifest(&d.media_type) {
                continue;
            }
            let m: Manifest = oci::parse_json(
                &self.read_blob(&d.digest)?,
                &format!("manifest {}", d.digest),
            )?;
            for b in std::iter::once(&m.config).chain(&m.layers) {
                if !self.has_blob(&b.digest) {
                    return Err(Error::MissingBlob(b.digest.clone()));
                }
            }
            let names = layout_names(&d, fallback)?;
            let mut desc = d.clone();
            desc.annotations.clear();
            checked.push((desc, names));
        }
        // Named only once every manifest was checked: a load that fails loads nothing.
        let mut out = Vec::new();
        for (desc, names) in checked {
            out.push(self.name_manifest(&desc, &names)?);
        }
        for (desc, names) in indexes {
            // Named as it is (its digest does not change); its images need no entries.
            if names.is_empty() {
                self.update_index(|idx| {
                    if !idx.manifests.iter().any(|m| m.digest == desc.digest) {
                        idx.manifests.push(desc.clone());
                    }
                    Ok(())
                })?;
            }
            for n in &names {
                self.set_ref(n, &desc)?;
            }
            // The host's image stands for it, else its first platform's.
            let mut rec = match self.resolve_platform(desc.digest.as_str(), None) {
                Ok(r) => r,
                Err(_) => {
                    let i = self.read_index(&desc.digest)?;
                    let first = i
                        .manifests
                        .iter()
                        .find(|m| super::is_platform_image(m))
                        .ok_or_else(|| {
                            Error::Invalid(format!("image index {} lists no image", desc.digest))
                        })?;
                    self.load_record(&first.digest, Vec::new())?
                }
            };
            rec.names = names;
            out.push(rec);
        }
        Ok(out)
    }

    /// Name a manifest that is already stored, as it is (its digest does not change).
    fn name_manifest(&self, desc: &Descriptor, names: &[ImageRef]) -> Result<ImageRecord> {
        if names.is_empty() {
            let d = desc.clone();
            self.update_index(|idx| {
                if !idx.manifests.iter().any(|m| m.digest == d.digest) {
                    idx.manifests.push(d);
                }
                Ok(())
            })?;
        }
        for n in names {
            self.set_ref(n, desc)?;
        }
        let mut rec = self
            .resolve(desc.digest.as_str())
            .map_err(|_| Error::NotFound(desc.digest.to_string()))?;
        rec.names = names.to_vec();
        Ok(rec)
    }

    fn name_docker_archive(
        &self,
        manifest_json: &[u8],
        files: &BTreeMap<String, (Digest, u64)>,
        src: &Path,
    ) -> Result<Vec<ImageRecord>> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> =
            oci::parse_json(manifest_json, &format!("{}: manifest.json", src.display()))?;
        let file = |p: &str| {
            files
                .get(p.trim_start_matches("./"))
                .cloned()
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}: manifest.json names {p}, which the archive does not contain",
                        src.display()
                    ))
                })
        };
        let mut checked = Vec::new();
        for e in entries {
            let (cdigest, csize) = file(&e.config)?;
            let config: ImageConfig = oci::parse_json(
                &self.read_blob(&cdigest)?,
                &format!("{}: {}", src.display(), e.config),
            )?;
            let mut layers = Vec::new();
            for (i, lp) in e.layers.iter().enumerate() {
                let (digest, size) = file(lp)?;
                let mut head = [0u8; 4];
                let n = at(
                    &self.blob_path(&digest),
                    self.open_blob(&digest)?.read(&mut head),
                )?;
                let kind = layer::sniff(&head[..n]);
                let diff_id = if kind == layer::Compression::None {
                    digest.clone()
                } else {
                    let mut hr = oci::HashingReader::new(at(
                        &self.blob_path(&digest),
                        layer::decompress(self.open_blob(&digest)?),
                    )?);
                    at(&self.blob_path(&digest), io::copy(&mut hr, &mut io::sink()))?;
                    hr.finish().0
                };
                let want = config.rootfs.diff_ids.get(i);
                if want != Some(&diff_id) {
                    return Err(Error::Invalid(format!(
                        "{}: layer {lp} has diffID {diff_id}, but the config says {}",
                        src.display(),
                        want.map(|d| d.to_string())
                            .unwrap_or_else(|| "nothing".into())
                    )));
                }
                layers.push(Descriptor::new(kind.media_type(), digest, size));
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(media::OCI_MANIFEST.into()),
                config: Descriptor::new(media::OCI_CONFIG, cdigest, csize),
                layers,
                annotations: BTreeMap::new(),
            };
            let names: Vec<ImageRef> = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| ImageRef::parse(t).map_err(Error::from))
                .collect::<Result<_>>()?;
            let platform = Platform {
                architecture: config.architecture.clone(),
                os: config.os.clone(),
                os_version: None,
                variant: config.variant.clone(),
            };
            checked.push((manifest, platform, names));
        }
        // Every image was checked before any is named: a load that fails loads nothing (the
        // blobs it stored are unreferenced, for prune).
        let mut out = Vec::new();
        for (manifest, platform, names) in checked {
            out.push(self.add_manifest(&manifest, Some(platform), &names)?);
        }
        Ok(out)
    }
}
