//! Images in the store: references, listing, tagging, import, and garbage collection.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{at, io_util, Error, Result, Store};
use crate::layer::{self, Compression, LayerInfo};
use crate::oci::{
    self, canonical_json, media, Descriptor, Digest, History, ImageConfig, Index, Manifest,
    Platform, RootFs, REF_NAME,
};

/// Names in the store are references, displayed the way users type them (`busybox:latest`, not
/// `docker.io/library/busybox:latest`): the registry module's one reference type.
pub use crate::oci::Reference as ImageRef;

impl From<crate::oci::ReferenceError> for Error {
    fn from(e: crate::oci::ReferenceError) -> Error {
        Error::Invalid(e.to_string())
    }
}

/// One image of the store with every name it has.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub names: Vec<ImageRef>,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config_digest: Digest,
    pub config: ImageConfig,
}

impl ImageRecord {
    /// The image id: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }

    /// Bytes of the layer blobs as stored.
    pub fn size(&self) -> u64 {
        self.manifest.layers.iter().map(|l| l.size).sum()
    }
}

/// The manifest for `want` in an index, or the first one when none says its platform.
pub fn select_platform<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    index
        .manifests
        .iter()
        .filter(|d| media::is_manifest(&d.media_type))
        .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(want)))
        .or_else(|| {
            index
                .manifests
                .iter()
                .find(|d| media::is_manifest(&d.media_type) && d.platform.is_none())
        })
}

/// The name an index entry is annotated with, if it parses.
fn annotated_names(d: &Descriptor) -> Vec<ImageRef> {
    d.annotations
        .get(REF_NAME)
        .and_then(|r| ImageRef::parse(r).ok())
        .into_iter()
        .collect()
}

impl Store {
    pub(super) fn load_record(
        &self,
        manifest_digest: &Digest,
        names: Vec<ImageRef>,
    ) -> Result<ImageRecord> {
        let mbytes = self.read_blob(manifest_digest)?;
        let manifest: Manifest = oci::parse_json(&mbytes, &format!("manifest {manifest_digest}"))?;
        let cbytes = self.read_blob(&manifest.config.digest)?;
        let config: ImageConfig =
            oci::parse_json(&cbytes, &format!("config {}", manifest.config.digest))?;
        Ok(ImageRecord {
            names,
            manifest_digest: manifest_digest.clone(),
            config_digest: manifest.config.digest.clone(),
            manifest,
            config,
        })
    }

    /// Every image, with its names, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let mut by_manifest: BTreeMap<Digest, ImageRecord> = BTreeMap::new();
        for (_, rec) in self.entries()? {
            match by_manifest.get_mut(&rec.manifest_digest) {
                Some(r) => r.names.extend(rec.names),
                None => {
                    by_manifest.insert(rec.manifest_digest.clone(), rec);
                }
            }
        }
        let mut out: Vec<ImageRecord> = by_manifest.into_values().collect();
        for r in &mut out {
            r.names.sort();
        }
        out.sort_by(|a, b| a.names.first().cmp(&b.names.first()));
        Ok(out)
    }

    /// The first index entry that is an image manifest and that `which` picks, with its
    /// record: only that one image's manifest and config are read.
    pub fn find_entry(
        &self,
        which: impl Fn(&Descriptor) -> bool,
    ) -> Result<Option<(Descriptor, ImageRecord)>> {
        let index = self.index()?;
        let Some(d) = index
            .manifests
            .into_iter()
            .find(|d| media::is_manifest(&d.media_type) && which(d))
        else {
            return Ok(None);
        };
        let rec = self.load_record(&d.digest, annotated_names(&d))?;
        Ok(Some((d, rec)))
    }

    /// Every index entry that is an image manifest, with its record (names as annotated).
    pub fn entries(&self) -> Result<Vec<(Descriptor, ImageRecord)>> {
        let index = self.index()?;
        let mut loaded: BTreeMap<Digest, ImageRecord> = BTreeMap::new();
        let mut out = Vec::new();
        for d in index.manifests {
            if !media::is_manifest(&d.media_type) {
                continue;
            }
            let rec = match loaded.get(&d.digest) {
                Some(r) => r.clone(),
                None => {
                    let r = self.load_record(&d.digest, Vec::new())?;
                    loaded.insert(d.digest.clone(), r.clone());
                    r
                }
            };
            let mut rec = rec;
            rec.names = annotated_names(&d);
            out.push((d, rec));
        }
        Ok(out)
    }

    /// The blob of layer `l` (stored uncompressed) compressed with `c`, made once and
    /// remembered in `compressed/KIND/<digest>` (a push sends it; a second push reuses it).
    pub fn compressed_layer(&self, l: &Descriptor, c: Compression) -> Result<Descriptor> {
        let kind = match c {
            Compression::None => return Ok(l.clone()),
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
        };
        let dir = self.base.join("compressed").join(kind);
        let rec = dir.join(l.digest.hex());
        if let Some(d) = self.compressed_copy(l, c) {
            return Ok(d);
        }
        let _w = self.writer_lock()?;
        let blob = self.blob_path(&l.digest);
        let mut f = self.open_blob(&l.digest)?;
        let info = self.put_layer(c, |sink| std::io::copy(&mut f, sink).map(|_| ()))?;
        if info.diff_id != l.digest {
            return Err(oci::Error::DigestMismatch {
                what: blob.display().to_string(),
                expected: l.digest.clone(),
                actual: info.diff_id,
            }
            .into());
        }
        let d = Descriptor::new(c.media_type(), info.digest, info.size);
        at(&dir, std::fs::create_dir_all(&dir))?;
        io_util::write_atomic(&self.tmp_dir(), &rec, &canonical_json(&d))?;
        Ok(d)
    }

    /// The copy of the uncompressed layer `l` compressed with `c` that an earlier push made
    /// ([`Store::compressed_layer`]), when the store still has it.
    pub fn compressed_copy(&self, l: &Descriptor, c: Compression) -> Option<Descriptor> {
        let kind = match c {
            Compression::None => return None,
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
        };
        let rec = self.base.join("compressed").join(kind).join(l.digest.hex());
        let d = oci::parse_json::<Descriptor>(&fs_err::read(&rec).ok()?, "compressed layer record")
            .ok()?;
        self.has_blob(&d.digest).then_some(d)
    }

    /// Find an image by `name[:tag]`, by id (config digest, or a unique prefix of its hex of at
    /// least 4 digits) or by manifest digest. A name (or digest) of an image index resolves to
    /// the host platform's image of it ([`Store::resolve_platform`]).
    pub fn resolve(&self, what: &str) -> Result<ImageRecord> {
        if self.find_index(what)?.is_some() {
            return self.resolve_platform(what, None);
        }
        self.resolve_manifest(what)
    }

    /// [`Store::resolve`] among the entries that are image manifests.
    pub(super) fn resolve_manifest(&self, what: &str) -> Result<ImageRecord> {
        let images = self.images()?;
        if let Ok(r) = ImageRef::parse(what) {
            if let Some(img) = images.iter().find(|i| i.names.contains(&r)) {
                return Ok(img.clone());
            }
        }
        let hex = what.strip_prefix("sha256:").unwrap_or(what);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&ImageRecord> = images
                .iter()
                .filter(|i| {
                    i.config_digest.hex().starts_with(hex)
                        || i.manifest_digest.hex().starts_with(hex)
                })
                .collect();
            match hits.len() {
                1 => return Ok(hits[0].clone()),
                n if n > 1 => {
                    return Err(Error::Invalid(format!(
                        "image id prefix \"{what}\" matches {n} images; give more digits"
                    )))
                }
                _ => {}
            }
        }
        Err(Error::NotFound(what.to_string()))
    }

    /// Point `name` at a manifest already in the store (replacing what the name pointed at).
    pub fn set_ref(&self, name: &ImageRef, manifest: &Descriptor) -> Result<()> {
        let mut d = manifest.clone();
        d.annotations.insert(REF_NAME.to_string(), name.to_string());
        self.update_index(|idx| {
            idx.manifests.retain(|m| {
                m.annotations.get(REF_NAME).map(String::as_str) != Some(&name.to_string())
            });
            // An untagged entry for the same manifest is now redundant.
            idx.manifests
                .retain(|m| m.digest != d.digest || m.annotations.contains_key(REF_NAME));
            idx.manifests.push(d);
            Ok(())
        })
    }

    /// Add an image (config and layer blobs already in the store) under `names`.
    pub fn add_image(
        &self,
        config: &ImageConfig,
        layers: &[Descriptor],
        names: &[ImageRef],
    ) -> Result<ImageRecord> {
        self.add_image_annotated(config, layers, names, BTreeMap::new())
    }

    /// [`Store::add_image`] with manifest annotations (the base image a build recorded).
    pub fn add_image_annotated(
        &self,
        config: &ImageConfig,
        layers: &[Descriptor],
        names: &[ImageRef],
        annotations: BTreeMap<String, String>,
    ) -> Result<ImageRecord> {
        let cbytes = canonical_json(config);
        // What strata would refuse to pull it does not make (a config is read whole into
        // memory by every tool): the error names what makes it large.
        if cbytes.len() > crate::oci::MAX_CONFIG {
            return Err(Error::Invalid(format!(
                "the image config would be {} bytes, over the {} MiB limit for a config{}",
                cbytes.len(),
                crate::oci::MAX_CONFIG >> 20,
                largest_part(config)
            )));
        }
        let _w = self.writer_lock()?;
        let cdigest = self.put_blob(&cbytes)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: Descriptor::new(media::OCI_CONFIG, cdigest, cbytes.len() as u64),
            layers: layers.to_vec(),
            annotations,
        };
        self.add_manifest(
            &manifest,
            Some(Platform {
                architecture: config.architecture.clone(),
                os: config.os.clone(),
                os_version: None,
                variant: config.variant.clone(),
            }),
            names,
        )
    }

    /// Store a manifest and name it; every blob it points to must already be here.
    pub fn add_manifest(
        &self,
        manifest: &Manifest,
        platform: Option<Platform>,
        names: &[ImageRef],
    ) -> Result<ImageRecord> {
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !self.has_blob(&d.digest) {
                return Err(Error::MissingBlob(d.digest.clone()));
            }
        }
        let mbytes = canonical_json(manifest);
        let mdigest = self.put_blob(&mbytes)?;
        let mut desc = Descriptor::new(
            manifest
                .media_type
                .as_deref()
                .unwrap_or(media::OCI_MANIFEST),
            mdigest.clone(),
            mbytes.len() as u64,
        );
        desc.platform = platform;
        if names.is_empty() {
            self.update_index(|idx| {
                if !idx.manifests.iter().any(|m| m.digest == mdigest) {
                    idx.manifests.push(desc.clone());
                }
                Ok(())
            })?;
        }
        for n in names {
            self.set_ref(n, &desc)?;
        }
        self.load_record(&mdigest, names.to_vec())
    }

    /// Give an image another name.
    pub fn tag(&self, source: &str, target: &ImageRef) -> Result<()> {
        let _w = self.writer_lock()?;
        if let Some((mut desc, _)) = self.find_index(source)? {
            desc.annotations.remove(REF_NAME);
            return self.set_ref(target, &desc);
        }
        let img = self.resolve_manifest(source)?;
        let idx = self.index()?;
        let desc = idx
            .manifests
            .iter()
            .find(|d| d.digest == img.manifest_digest)
            .cloned()
            .ok_or_else(|| Error::NotFound(source.to_string()))?;
        let mut desc = desc;
        desc.annotations.remove(REF_NAME);
        self.set_ref(target, &desc)
    }

    /// Remove a name, or every name of an image given by id. Blobs stay until `prune`.
    /// Returns the names removed.
    pub fn remove(&self, what: &str) -> Result<Vec<String>> {
        if let Some((desc, _)) = self.find_index(what)? {
            // By name: that name; by digest (or a prefix of it): every name of the index.
            let name = desc.annotations.get(REF_NAME).cloned();
            let by_digest = desc
                .annotations
                .get(REF_NAME)
                .is_none_or(|n| ImageRef::parse(what).map_or(true, |r| r.to_string() != *n));
            return self.update_index(|idx| {
                let mut removed = Vec::new();
                idx.manifests.retain(|m| {
                    let drop = m.digest == desc.digest
                        && (by_digest || m.annotations.get(REF_NAME) == name.as_ref());
                    if drop {
                        removed.push(
                            m.annotations
                                .get(REF_NAME)
                                .cloned()
                                .unwrap_or_else(|| desc.digest.to_string()),
                        );
                    }
                    !drop
                });
                Ok(removed)
            });
        }
        let img = self.resolve_manifest(what)?;
        let by_name = ImageRef::parse(what).ok().filter(|r| img.names.contains(r));
        self.update_index(|idx| {
            let mut removed = Vec::new();
            idx.manifests.retain(|m| {
                if m.digest != img.manifest_digest {
                    return true;
                }
                let name = m.annotations.get(REF_NAME).cloned();
                let drop = match (&by_name, &name) {
                    (Some(r), Some(n)) => *n == r.to_string(),
                    (Some(_), None) => false,
                    (None, _) => true,
                };
                if drop {
                    removed.push(name.unwrap_or_else(|| img.config_digest.to_string()));
                }
                !drop
            });
            Ok(removed)
        })
    }

    /// Store a layer blob from a writer closure that fills a [`layer::LayerSink`].
    pub fn put_layer(
        &self,
        compression: Compression,
        fill: impl FnOnce(&mut layer::LayerSink<std::fs::File>) -> std::io::Result<()>,
    ) -> Result<LayerInfo> {
        let mut tmp = self.temp_file()?;
        let file = tmp.with(|f| f.try_clone())?;
        let mut sink = at(tmp.path(), layer::LayerSink::new(file, compression))?;
        at(tmp.path(), fill(&mut sink))?;
        let (_f, info) = at(tmp.path(), sink.finish())?;
        self.commit_blob(tmp, &info.digest)?;
        Ok(info)
    }

    /// Store the layer tar at `tar` (synced by whoever wrote it). Uncompressed, the file itself
    /// becomes the blob: it is hashed and moved into place, not copied. Otherwise it is
    /// compressed into a new blob and left where it is.
    pub fn put_layer_file(&self, tar: &Path, compression: Compression) -> Result<LayerInfo> {
        self.put_layer_file_hashed(tar, compression, None)
    }

    /// [`Store::put_layer_file`] for a tar whose digest and size its writer computed as it
    /// wrote it (strata's own diff hook): an uncompressed layer is then moved in without
    /// being read again. A size that does not match the file is refused.
    pub fn put_layer_file_hashed(
        &self,
        tar: &Path,
        compression: Compression,
        known: Option<(Digest, u64)>,
    ) -> Result<LayerInfo> {
        let mut f = at(tar, fs_err::File::open(tar))?;
        if compression != Compression::None {
            return self.put_layer(compression, |sink| std::io::copy(&mut f, sink).map(|_| ()));
        }
        let (digest, size) = match known {
            Some((digest, size)) => {
                let len = at(tar, f.metadata())?.len();
                if len != size {
                    return Err(Error::Invalid(format!(
                        "{}: {len} bytes, where its writer counted {size}",
                        tar.display()
                    )));
                }
                (digest, size)
            }
            None => {
                let mut h = oci::HashingReader::new(&mut f);
                at(tar, std::io::copy(&mut h, &mut std::io::sink()))?;
                h.finish()
            }
        };
        self.adopt_blob(tar, &digest)?;
        Ok(LayerInfo {
            diff_id: digest.clone(),
            digest,
            size,
            uncompressed_size: size,
            media_type: Compression::None.media_type(),
        })
    }

    /// `strata import`: a directory or a tar (plain or compressed) becomes a one-layer image.
    pub fn import(
        &self,
        source: &Path,
        name: &ImageRef,
        compression: Compression,
        epoch: Option<i64>,
    ) -> Result<ImageRecord> {
        let _w = self.writer_lock()?;
        let meta = at(source, std::fs::metadata(source))?;
        let info = if meta.is_dir() {
            let opts = layer::WriteOptions {
                source_date_epoch: epoch,
                ..Default::default()
            };
            self.put_layer(compression, |sink| {
                // Headers are 512 bytes: one write per MiB, not one per entry.
                let mut buffered = std::io::BufWriter::with_capacity(1 << 20, sink);
                layer::write_tree(source, &mut buffered, &opts)?;
                std::io::Write::flush(&mut buffered)
            })?
        } else {
            check_tar(source)?;
            let f = super::open_file(source)?;
            let mut r = at(source, layer::decompress(f))?;
            self.put_layer(compression, |sink| std::io::copy(&mut r, sink).map(|_| ()))?
        };
        let created = oci::rfc3339(epoch.unwrap_or_else(oci::now_secs));
        let host = Platform::host();
        let config = ImageConfig {
            created: Some(created.clone()),
            architecture: host.architecture,
            os: host.os,
            variant: host.variant,
            config: Some(Default::default()),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![info.diff_id.clone()],
            },
            history: vec![History {
                created: Some(created),
                created_by: Some(format!(
                    "strata import {}",
                    source.file_name().unwrap_or_default().to_string_lossy()
                )),
                comment: Some("imported".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let layer = Descriptor::new(info.media_type, info.digest.clone(), info.size);
        self.add_image(&config, &[layer], std::slice::from_ref(name))
    }

    /// Every blob the index reaches.
    fn reachable(&self) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>)> {
        let mut blobs = BTreeSet::new();
        let mut diff_ids = BTreeSet::new();
        let index = self.index()?;
        let mut todo: Vec<Descriptor> = index.manifests.clone();
        while let Some(d) = todo.pop() {
            if !blobs.insert(d.digest.clone()) {
                continue;
            }
            if media::is_index(&d.media_type) {
                let i: Index = oci::parse_json(&self.read_blob(&d.digest)?, "index")?;
                todo.extend(i.manifests);
            } else if media::is_manifest(&d.media_type) {
                let m: Manifest = oci::parse_json(&self.read_blob(&d.digest)?, "manifest")?;
                if let Ok(c) = self.read_blob(&m.config.digest) {
                    if let Ok(cfg) = oci::parse_json::<ImageConfig>(&c, "config") {
                        diff_ids.extend(cfg.rootfs.diff_ids);
                    }
                }
                blobs.insert(m.config.digest.clone());
                blobs.extend(m.layers.iter().map(|l| l.digest.clone()));
            }
        }
        Ok((blobs, diff_ids))
    }

    /// Remove unreferenced blobs and snapshots, and leftovers in tmp; with `all`, every
    /// snapshot too (they are rebuilt on demand). Returns bytes freed.
    pub fn prune(&self, all: bool) -> Result<u64> {
        self.prune_with(all, &|p: &Path| {
            make_writable(p);
            at(p, std::fs::remove_dir_all(p))
        })
    }

    /// [`Store::prune`] with the way to remove a directory tree given: trees unpacked in a user
    /// namespace hold files owned by subordinate ids, which only that namespace can remove.
    pub fn prune_with(&self, all: bool, remove_dir: &dyn Fn(&Path) -> Result<()>) -> Result<u64> {
        self.prune_keeping(all, &|| Ok(Default::default()), remove_dir)
    }

    /// [`Store::prune_with`] that also keeps the blobs and the snapshots (by diffID) `roots`
    /// names: the build cache's layers, which no image may refer to. `roots` is read with the
    /// store's gc lock held, so no writer adds a root meanwhile.
    #[allow(clippy::type_complexity)]
    pub fn prune_keeping(
        &self,
        all: bool,
        roots: &dyn Fn() -> Result<(BTreeSet<Digest>, BTreeSet<Digest>)>,
        remove_dir: &dyn Fn(&Path) -> Result<()>,
    ) -> Result<u64> {
        let gc = self.gc_lock()?;
        self.prune_keeping_locked(&gc, all, roots, remove_dir)
    }

    /// [`Store::prune_keeping`] with the gc lock already held ([`Store::try_gc_lock`]).
    #[allow(clippy::type_complexity)]
    pub fn prune_keeping_locked(
        &self,
        _gc: &super::Lock,
        all: bool,
        roots: &dyn Fn() -> Result<(BTreeSet<Digest>, BTreeSet<Digest>)>,
        remove_dir: &dyn Fn(&Path) -> Result<()>,
    ) -> Result<u64> {
        let (mut keep, mut keep_diffs) = self.reachable()?;
        let (more, more_diffs) = roots()?;
        keep.extend(more);
        keep_diffs.extend(more_diffs);
        let mut freed = 0;
        let blobs = self.layout_dir().join("blobs/sha256");
        for e in at(&blobs, std::fs::read_dir(&blobs))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let keep_it = format!("sha256:{name}")
                .parse::<Digest>()
                .is_ok_and(|d| keep.contains(&d));
            if !keep_it {
                freed += e.metadata().map(|m| m.len()).unwrap_or(0);
                at(&e.path(), std::fs::remove_file(e.path()))?;
            }
        }
        let snaps = self.base.join("snapshots/sha256");
        for e in at(&snaps, std::fs::read_dir(&snaps))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let keep_it = !all
                && format!("sha256:{name}")
                    .parse::<Digest>()
                    .is_ok_and(|d| keep_diffs.contains(&d));
            if !keep_it {
                freed += tree_size(&e.path());
                remove_dir(&e.path())?;
            }
        }
        // The size facts, path indexes and package lists of blobs that are gone (layer::facts,
        // layer::paths, sbom).
        let facts = self.facts_dir();
        if let Ok(rd) = std::fs::read_dir(&facts) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let blob_kept = name
                    .strip_suffix(".json")
                    .or_else(|| name.strip_suffix(".paths2"))
                    .or_else(|| name.strip_suffix(".pkgs"))
                    .and_then(|h| format!("sha256:{h}").parse::<Digest>().ok())
                    .is_some_and(|d| keep.contains(&d));
                if !blob_kept {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        // The failed step kept for `strata debug`.
        let debug = self.debug_dir();
        if let Ok(rd) = std::fs::read_dir(&debug) {
            for e in rd.flatten() {
                freed += tree_size(&e.path());
                remove_dir(&e.path())?;
            }
        }
        // With gc.lock exclusive no writer is running: everything in tmp is a leftover.
        let tmp = self.tmp_dir();
        for e in at(&tmp, std::fs::read_dir(&tmp))?.flatten() {
            freed += tree_size(&e.path());
            let p = e.path();
            if p.is_dir() {
                remove_dir(&p)?;
            } else {
                at(&p, std::fs::remove_file(&p))?;
            }
        }
        self.remove_stale_locks();
        io_util::sync_dir(&blobs);
        Ok(freed)
    }

    /// Remember that `blobs` are in `repository` (`registry/path`) after a push, for a later
    /// push's cross-repository mounts: a push names no local image (as podman and skopeo,
    /// `strata push IMAGE REF` adds no tag). One small file per repository, merged; two
    /// processes pushing to one repository at once may keep only one's list (a mount not tried
    /// is an upload, nothing worse).
    pub fn note_pushed(&self, repository: &str, blobs: &[Digest]) -> Result<()> {
        let dir = self.base.join("pushed");
        at(&dir, std::fs::create_dir_all(&dir))?;
        let file = dir.join(format!("{}.json", Digest::of(repository.as_bytes()).hex()));
        let mut known: Pushed = fs_err::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| Pushed {
                repository: repository.to_string(),
                blobs: BTreeSet::new(),
            });
        known.blobs.extend(blobs.iter().cloned());
        io_util::write_atomic(&self.tmp_dir(), &file, &canonical_json(&known))
    }

    /// The repositories pushed to from this store, with the blobs each was sent
    /// ([`Store::note_pushed`]).
    pub fn pushed(&self) -> Vec<(String, Vec<Digest>)> {
        let Ok(rd) = std::fs::read_dir(self.base.join("pushed")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| fs_err::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<Pushed>(&b).ok())
            .map(|p| (p.repository, p.blobs.into_iter().collect()))
            .collect()
    }

    /// Disk use, classified as [`Store::prune_keeping`] classifies it: `cache_roots` are the
    /// blobs and diffIDs the build cache keeps (what prune is given as its roots).
    pub fn disk_usage(
        &self,
        cache_roots: (BTreeSet<Digest>, BTreeSet<Digest>),
    ) -> Result<DiskUsage> {
        let (images, image_diffs) = self.reachable()?;
        let (cache, cache_diffs) = cache_roots;
        let mut du = DiskUsage::default();
        let blobs = self.layout_dir().join("blobs/sha256");
        for e in at(&blobs, std::fs::read_dir(&blobs))?.flatten() {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            let d = format!("sha256:{}", e.file_name().to_string_lossy())
                .parse::<Digest>()
                .ok();
            du.blobs += size;
            match d {
                Some(d) if images.contains(&d) => du.image_blobs += size,
                Some(d) if cache.contains(&d) => du.cache_only_blobs += size,
                _ => du.unreferenced_blobs += size,
            }
        }
        let snaps = self.base.join("snapshots/sha256");
        if let Ok(rd) = std::fs::read_dir(&snaps) {
            for e in rd.flatten() {
                let size = tree_size(&e.path());
                du.snapshots += size;
                let kept = format!("sha256:{}", e.file_name().to_string_lossy())
                    .parse::<Digest>()
                    .is_ok_and(|d| image_diffs.contains(&d) || cache_diffs.contains(&d));
                if !kept {
                    du.unreferenced_snapshots += size;
                }
            }
        }
        // What prune removes: the entries of these directories.
        let entries = |dir: &Path| -> u64 {
            std::fs::read_dir(dir)
                .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
                .unwrap_or(0)
        };
        du.tmp = entries(&self.tmp_dir());
        du.debug = entries(&self.debug_dir());
        du.images = self.images()?.len() + self.indexes()?.len();
        Ok(du)
    }
}

/// What [`Store::note_pushed`] keeps for one repository.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Pushed {
    repository: String,
    blobs: BTreeSet<Digest>,
}

/// The store's disk use (`strata df`). The blob figures add up: `blobs` = `image_blobs` +
/// `cache_only_blobs` + `unreferenced_blobs`; a plain prune removes `unreferenced_blobs`,
/// `unreferenced_snapshots`, `tmp` and `debug`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiskUsage {
    pub images: usize,
    /// Every blob of the store.
    pub blobs: u64,
    /// Blobs an image refers to (its manifest, config and layers).
    pub image_blobs: u64,
    /// Blobs only the build cache refers to: layers of cached steps no image has.
    pub cache_only_blobs: u64,
    /// Blobs nothing refers to.
    pub unreferenced_blobs: u64,
    /// Every snapshot (an unpacked layer; rebuilt from its blob when needed).
    pub snapshots: u64,
    /// Snapshots of layers neither an image nor the build cache has.
    pub unreferenced_snapshots: u64,
    /// Leftovers of interrupted writes and steps.
    pub tmp: u64,
    /// The failed RUN step kept for `strata debug`.
    pub debug: u64,
}

impl DiskUsage {
    /// What a plain `strata prune` frees now (the build cache within its limit).
    pub fn reclaimable(&self) -> u64 {
        self.unreferenced_blobs + self.unreferenced_snapshots + self.tmp + self.debug
    }
}

/// Bytes of the files of the tree at `p` (and its directories' own sizes).
pub fn tree_size(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum::<u64>())
        .unwrap_or(0)
        + m.len()
}

/// Trees may contain read-only directories; give the owner write access so they can be removed.
pub fn make_writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return;
    };
    if m.is_dir() {
        let _ = std::fs::set_permissions(
            p,
            std::fs::Permissions::from_mode(m.permissions().mode() | 0o700),
        );
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

/// Refuse a file that is not a tar archive (plain, gzip or zstd) before anything is stored: a
/// whole number of 512-byte blocks whose headers all parse.
fn check_tar(source: &Path) -> Result<()> {
    let not_tar = |why: String| {
        // The tar crate quotes the bytes it could not read: keep garbage out of the message.
        let why = if why
            .chars()
            .any(|c| c == char::REPLACEMENT_CHARACTER || (c.is_control() && c != ' '))
            || why.len() > 120
        {
            "a block is not a tar header".to_string()
        } else {
            why
        };
        Error::Invalid(format!(
            "{}: not a tar archive ({why}); `strata import` takes a directory or a tar, optionally gzip or zstd compressed",
            source.display()
        ))
    };
    let f = super::open_file(source)?;
    let mut counted = CountingReader {
        inner: at(source, layer::decompress(f))?,
        n: 0,
    };
    {
        let mut a = tar::Archive::new(&mut counted);
        let entries = a.entries().map_err(|e| not_tar(e.to_string()))?;
        for e in entries {
            let mut e = e.map_err(|e| not_tar(e.to_string()))?;
            // A path (or a hard link's target) that climbs out of the layer is refused now,
            // not at the image's first use: the applier would refuse it then.
            let escapes = |p: &Path| crate::layer::apply::clean_entry_path(p).is_none();
            let path = e.path().map_err(|e| not_tar(e.to_string()))?.into_owned();
            let link = match e.header().entry_type() {
                tar::EntryType::Link => e.link_name().ok().flatten().map(|l| l.into_owned()),
                _ => None,
            };
            if escapes(&path) || link.as_deref().is_some_and(escapes) {
                return Err(Error::Invalid(format!(
                    "{}: the entry \"{}\"{} climbs out of the image's root with `..`; such a tar is not imported",
                    source.display(),
                    path.display(),
                    link.map(|l| format!(" (a hard link to \"{}\")", l.display()))
                        .unwrap_or_default()
                )));
            }
            std::io::copy(&mut e, &mut std::io::sink()).map_err(|e| not_tar(e.to_string()))?;
        }
    }
    std::io::copy(&mut counted, &mut std::io::sink()).map_err(|e| not_tar(e.to_string()))?;
    if counted.n == 0 || counted.n % 512 != 0 {
        return Err(not_tar(format!(
            "{} bytes, not a whole number of 512-byte blocks",
            counted.n
        )));
    }
    Ok(())
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

/// What makes `config` large, for an error: its largest LABEL, ENV or history entry.
fn largest_part(config: &ImageConfig) -> String {
    let mut parts: Vec<(usize, String)> = Vec::new();
    if let Some(c) = &config.config {
        for (k, v) in c.labels.iter().flatten() {
            parts.push((k.len() + v.len(), format!("LABEL {k}")));
        }
        for e in c.env.iter().flatten() {
            let k = e.split('=').next().unwrap_or(e);
            parts.push((e.len(), format!("ENV {k}")));
        }
    }
    for (i, h) in config.history.iter().enumerate() {
        let n = h.created_by.as_ref().map_or(0, String::len);
        parts.push((n, format!("history entry {}", i + 1)));
    }
    match parts.into_iter().max_by_key(|(n, _)| *n) {
        Some((n, what)) if n > 0 => format!(" (the largest part: {what}, {n} bytes)"),
        _ => String::new(),
    }
}
