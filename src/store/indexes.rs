//! Image indexes in the store: one name for the images of several platforms (and their
//! attestation manifests), as `strata build --platform a,b` makes and a registry serves.
//!
//! An index is a blob like a manifest; index.json names it with an entry whose media type is
//! the OCI image index, annotated with the name as every other entry. The manifests it lists
//! are blobs of the store that need no entry of their own: prune walks index → manifests →
//! config and layers ([`Store::prune`]), so an untagged entry for one of them is dropped when
//! an index takes it in.

use std::collections::{BTreeMap, BTreeSet};

use super::{Error, ImageRecord, ImageRef, Result, Store};
use crate::oci::{self, canonical_json, media, Descriptor, Digest, Index, Platform, REF_NAME};

/// The annotation BuildKit puts on an attestation manifest of an index (its value
/// `attestation-manifest`); such a manifest's platform is `unknown/unknown`.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// Whether an index's entry is an image for a platform (not an attestation manifest, not a
/// nested index).
pub fn is_platform_image(d: &Descriptor) -> bool {
    media::is_manifest(&d.media_type)
        && !d.annotations.contains_key(REFERENCE_TYPE)
        && d.platform
            .as_ref()
            .is_none_or(|p| p.os != "unknown" && p.architecture != "unknown")
}

/// The platforms of an index's images, in the index's order (`linux/amd64`, `linux/arm64`).
pub fn index_platforms(index: &Index) -> Vec<Platform> {
    let mut seen = BTreeSet::new();
    index
        .manifests
        .iter()
        .filter(|d| is_platform_image(d))
        .filter_map(|d| d.platform.clone())
        .filter(|p| seen.insert(p.to_string()))
        .collect()
}

/// The image of `index` for `want`: the exact variant first, then one that leaves the variant
/// open (see [`Platform::matches`]); both compared in normal form (`aarch64` is `arm64`).
pub fn platform_manifest<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let want = want.normalized();
    let images = || {
        index
            .manifests
            .iter()
            .filter(|d| is_platform_image(d))
            .filter_map(|d| Some((d, d.platform.as_ref()?.normalized())))
    };
    images()
        .find(|(_, p)| {
            p.os == want.os && p.architecture == want.architecture && p.variant == want.variant
        })
        .or_else(|| images().find(|(_, p)| p.matches(&want)))
        .map(|(d, _)| d)
}

/// Platforms as a list for messages and `strata images`: `linux/amd64,linux/arm64`.
pub fn platform_list(platforms: &[Platform]) -> String {
    platforms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// One index of the store with every name it has (`strata images`).
#[derive(Debug, Clone)]
pub struct IndexRecord {
    pub names: Vec<ImageRef>,
    pub digest: Digest,
    pub index: Index,
}

impl IndexRecord {
    pub fn platforms(&self) -> Vec<Platform> {
        index_platforms(&self.index)
    }
}

impl Store {
    /// Store an OCI image index over manifests already in the store (image manifests with
    /// their platform set, and attestation manifests) and point `names` at it (replacing what
    /// each name pointed at). Every manifest must be in the store. Returns the index's
    /// descriptor.
    pub fn put_index(
        &self,
        manifests: &[Descriptor],
        annotations: BTreeMap<String, String>,
        names: &[ImageRef],
    ) -> Result<Descriptor> {
        self.put_index_noted(manifests, annotations, names, &BTreeMap::new())
    }

    /// [`Store::put_index`] with `notes` on the names' entries in index.json (where the index
    /// came from: a pull notes the registry's index digest and repository there).
    pub fn put_index_noted(
        &self,
        manifests: &[Descriptor],
        annotations: BTreeMap<String, String>,
        names: &[ImageRef],
        notes: &BTreeMap<String, String>,
    ) -> Result<Descriptor> {
        if manifests.is_empty() {
            return Err(Error::Invalid(
                "an image index needs at least one manifest".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for d in manifests {
            if !media::is_manifest(&d.media_type) {
                return Err(Error::Invalid(format!(
                    "{} ({}) is not an image manifest: an index in the store lists manifests",
                    d.digest, d.media_type
                )));
            }
            if is_platform_image(d) {
                let Some(p) = &d.platform else {
                    return Err(Error::Invalid(format!(
                        "manifest {} has no platform: every image of an index says its platform",
                        d.digest
                    )));
                };
                if !seen.insert(p.normalized().to_string()) {
                    return Err(Error::Invalid(format!(
                        "two manifests for platform {p} in one index (the second is {})",
                        d.digest
                    )));
                }
            }
        }
        let mut entries: Vec<Descriptor> = manifests.to_vec();
        for d in &mut entries {
            d.annotations.remove(REF_NAME);
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            manifests: entries,
            annotations,
        };
        self.name_index(
            media::OCI_INDEX,
            &canonical_json(&index),
            &index,
            names,
            notes,
        )
    }

    /// Store an index exactly as a registry serves it (`bytes`, of media type `media_type`: OCI
    /// index or Docker manifest list), every manifest it lists being in the store already, and
    /// point `names` at it with `notes` on their entries. The index keeps its digest: the name
    /// then stands for what the registry's reference does.
    pub fn put_index_bytes(
        &self,
        media_type: &str,
        bytes: &[u8],
        names: &[ImageRef],
        notes: &BTreeMap<String, String>,
    ) -> Result<Descriptor> {
        if !media::is_index(media_type) {
            return Err(Error::Invalid(format!(
                "{media_type} is not an image index's media type"
            )));
        }
        let index: Index = oci::parse_json(bytes, "image index")?;
        if let Some(d) = index
            .manifests
            .iter()
            .find(|d| !media::is_manifest(&d.media_type))
        {
            return Err(Error::Invalid(format!(
                "{} ({}) is not an image manifest: an index in the store lists manifests",
                d.digest, d.media_type
            )));
        }
        self.name_index(media_type, bytes, &index, names, notes)
    }

    /// Write the index blob `bytes` (parsed: `index`), then point `names` at it; its manifests
    /// must be in the store.
    fn name_index(
        &self,
        media_type: &str,
        bytes: &[u8],
        index: &Index,
        names: &[ImageRef],
        notes: &BTreeMap<String, String>,
    ) -> Result<Descriptor> {
        // Prune waits while the index and the names are written.
        let _w = self.writer_lock()?;
        for d in &index.manifests {
            if !self.has_blob(&d.digest) {
                return Err(Error::MissingBlob(d.digest.clone()));
            }
        }
        let digest = self.put_blob(bytes)?;
        let desc = Descriptor::new(media_type, digest.clone(), bytes.len() as u64);
        let listed: BTreeSet<&Digest> = index.manifests.iter().map(|d| &d.digest).collect();
        let names: Vec<String> = names.iter().map(ToString::to_string).collect();
        self.update_index(|idx| {
            idx.manifests.retain(|m| match m.annotations.get(REF_NAME) {
                Some(n) => !names.contains(n),
                // Untagged entries of the manifests the index now keeps, or of the index.
                None => !listed.contains(&m.digest) && m.digest != digest,
            });
            for n in &names {
                let mut d = desc.clone();
                d.annotations.extend(notes.clone());
                d.annotations.insert(REF_NAME.to_string(), n.clone());
                idx.manifests.push(d);
            }
            if names.is_empty() {
                idx.manifests.push(desc.clone());
            }
            Ok(())
        })?;
        Ok(desc)
    }

    /// The index `what` (a name or an index digest) points at, if it names an index. A digest
    /// may be shortened to a unique prefix of at least 4 hex digits (the IMAGE ID `strata
    /// images` shows), as image ids may.
    pub fn find_index(&self, what: &str) -> Result<Option<(Descriptor, Index)>> {
        let entries = self.index()?;
        let by_name = ImageRef::parse(what).ok().map(|r| r.to_string());
        let by_digest = what.parse::<Digest>().ok();
        let indexes = || {
            entries
                .manifests
                .iter()
                .filter(|d| media::is_index(&d.media_type))
        };
        let mut found = indexes().find(|d| {
            by_name.is_some() && d.annotations.get(REF_NAME) == by_name.as_ref()
                || by_digest.as_ref() == Some(&d.digest)
        });
        let hex = what.strip_prefix("sha256:").unwrap_or(what);
        if found.is_none() && hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: BTreeSet<&Digest> = indexes()
                .filter(|d| d.digest.hex().starts_with(hex))
                .map(|d| &d.digest)
                .collect();
            match hits.len() {
                0 => {}
                1 => found = indexes().find(|d| hits.contains(&d.digest)),
                n => {
                    return Err(Error::Invalid(format!(
                        "image id prefix \"{what}\" matches {n} image indexes; give more digits"
                    )))
                }
            }
        }
        let Some(d) = found.cloned() else {
            return Ok(None);
        };
        let index = self.read_index(&d.digest)?;
        Ok(Some((d, index)))
    }

    /// The descriptor of `img`'s manifest as an index lists it: media type, digest, size and
    /// the platform its config says (what [`Store::put_index`] takes for an image).
    pub fn descriptor_of(&self, img: &ImageRecord) -> Result<Descriptor> {
        let p = self.blob_path(&img.manifest_digest);
        let size = super::at(&p, self.open_blob(&img.manifest_digest)?.metadata())?.len();
        let mut d = Descriptor::new(
            img.manifest
                .media_type
                .as_deref()
                .unwrap_or(media::OCI_MANIFEST),
            img.manifest_digest.clone(),
            size,
        );
        d.platform = Some(Platform {
            architecture: img.config.architecture.clone(),
            os: img.config.os.clone(),
            os_version: img.config.os_version.clone(),
            variant: img.config.variant.clone(),
        });
        Ok(d)
    }

    /// The image whose manifest is the blob `d` (an image of an index, which has no entry of
    /// its own), with no names.
    pub fn image_of_manifest(&self, d: &Digest) -> Result<ImageRecord> {
        self.load_record(d, Vec::new())
    }

    /// Read and parse the index blob `d`.
    pub fn read_index(&self, d: &Digest) -> Result<Index> {
        Ok(oci::parse_json(&self.read_blob(d)?, &format!("index {d}"))?)
    }

    /// Every index of the store with its names, sorted by name.
    pub fn indexes(&self) -> Result<Vec<IndexRecord>> {
        let mut by_digest: BTreeMap<Digest, IndexRecord> = BTreeMap::new();
        for d in self.index()?.manifests {
            if !media::is_index(&d.media_type) {
                continue;
            }
            let name = d
                .annotations
                .get(REF_NAME)
                .and_then(|n| ImageRef::parse(n).ok());
            match by_digest.get_mut(&d.digest) {
                Some(r) => r.names.extend(name),
                None => {
                    let index = self.read_index(&d.digest)?;
                    by_digest.insert(
                        d.digest.clone(),
                        IndexRecord {
                            names: name.into_iter().collect(),
                            digest: d.digest,
                            index,
                        },
                    );
                }
            }
        }
        let mut out: Vec<IndexRecord> = by_digest.into_values().collect();
        for r in &mut out {
            r.names.sort();
        }
        out.sort_by(|a, b| a.names.first().cmp(&b.names.first()));
        Ok(out)
    }

    /// An image for a platform: a name that points at an index resolves to that platform's
    /// manifest (None: the host's platform; error listing the platforms the index has when
    /// none matches); a name that points at a single manifest resolves as `resolve` does (and,
    /// when a platform is given, must match it).
    pub fn resolve_platform(&self, what: &str, platform: Option<&Platform>) -> Result<ImageRecord> {
        if let Some((entry, index)) = self.find_index(what)? {
            let want = platform.cloned().unwrap_or_else(Platform::host);
            let Some(d) = platform_manifest(&index, &want) else {
                return Err(Error::NoPlatform {
                    image: what.to_string(),
                    wanted: want.normalized().to_string(),
                    available: platform_list(&index_platforms(&index)),
                });
            };
            let names = self
                .index()?
                .manifests
                .iter()
                .filter(|m| m.digest == entry.digest)
                .filter_map(|m| m.annotations.get(REF_NAME))
                .filter_map(|n| ImageRef::parse(n).ok())
                .collect();
            return self.load_record(&d.digest, names);
        }
        let img = self.resolve_manifest(what)?;
        if let Some(want) = platform {
            let have = Platform {
                architecture: img.config.architecture.clone(),
                os: img.config.os.clone(),
                os_version: None,
                variant: img.config.variant.clone(),
            }
            .normalized();
            if !have.matches(&want.normalized()) {
                return Err(Error::NoPlatform {
                    image: what.to_string(),
                    wanted: want.normalized().to_string(),
                    available: have.to_string(),
                });
            }
        }
        Ok(img)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Compression;
    use crate::oci::ImageConfig;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("strata-index-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            super::super::make_writable(&self.0);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    fn plat(arch: &str) -> Platform {
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            ..Default::default()
        }
    }

    /// A store with an amd64 and an arm64 image (untagged), and an attestation manifest.
    fn two_platforms(name: &str) -> (Store, Gone, Vec<Descriptor>) {
        let root = tmp(name);
        let gone = Gone(root.clone());
        let s = Store::open(&root).unwrap();
        let t = root.join("tree");
        fs_err::create_dir_all(&t).unwrap();
        fs_err::write(t.join("f"), "x").unwrap();
        let base = s
            .import(&t, &r("base"), Compression::GZIP, Some(0))
            .unwrap();
        s.remove("base").unwrap();
        let mut descs = Vec::new();
        for arch in ["amd64", "arm64"] {
            let mut cfg: ImageConfig = base.config.clone();
            cfg.architecture = arch.into();
            // A one-file uncompressed layer of its own.
            let mut tar = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(arch.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, "arch", arch.as_bytes()).unwrap();
            let tar = tar.into_inner().unwrap();
            let l = s.put_blob(&tar).unwrap();
            cfg.rootfs.diff_ids.push(l.clone());
            let mut layers = base.manifest.layers.clone();
            layers.push(Descriptor::new(media::OCI_LAYER, l, tar.len() as u64));
            let img = s.add_image(&cfg, &layers, &[]).unwrap();
            let entry = s
                .index()
                .unwrap()
                .manifests
                .into_iter()
                .find(|d| d.digest == img.manifest_digest)
                .unwrap();
            assert_eq!(entry.platform, Some(plat(arch)));
            assert_eq!(s.descriptor_of(&img).unwrap(), entry);
            descs.push(entry);
        }
        // An attestation manifest as BuildKit makes them.
        let cfg = s.put_blob(b"{}").unwrap();
        let stmt = s.put_blob(b"{\"_type\":\"statement\"}").unwrap();
        let m = oci::Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config: Descriptor::new("application/vnd.oci.image.config.v1+json", cfg, 2),
            layers: vec![Descriptor::new("application/vnd.in-toto+json", stmt, 21)],
            annotations: BTreeMap::new(),
        };
        let mb = canonical_json(&m);
        let md = s.put_blob(&mb).unwrap();
        let mut att = Descriptor::new(media::OCI_MANIFEST, md, mb.len() as u64);
        att.platform = Some(Platform {
            architecture: "unknown".into(),
            os: "unknown".into(),
            ..Default::default()
        });
        att.annotations
            .insert(REFERENCE_TYPE.into(), "attestation-manifest".into());
        att.annotations.insert(
            "vnd.docker.reference.digest".into(),
            descs[0].digest.to_string(),
        );
        descs.push(att);
        (s, gone, descs)
    }

    #[test]
    fn an_index_resolves_per_platform_and_names_what_it_has() {
        let (s, _g, descs) = two_platforms("resolve");
        let mut ann = BTreeMap::new();
        ann.insert("org.opencontainers.image.created".into(), "now".into());
        let d = s.put_index(&descs, ann, &[r("multi:1")]).unwrap();
        assert_eq!(d.media_type, media::OCI_INDEX);
        // The images are the index's now: no untagged entries of their own.
        assert_eq!(s.index().unwrap().manifests.len(), 1);
        assert!(s.images().unwrap().is_empty());
        let (entry, idx) = s.find_index("multi:1").unwrap().unwrap();
        assert_eq!(entry.digest, d.digest);
        assert_eq!(idx.manifests.len(), 3);
        assert_eq!(
            s.find_index(d.digest.as_str()).unwrap().unwrap().0.digest,
            d.digest
        );
        assert!(s.find_index("nope").unwrap().is_none());
        assert_eq!(
            platform_list(&index_platforms(&idx)),
            "linux/amd64,linux/arm64"
        );
        for arch in ["amd64", "arm64"] {
            let img = s.resolve_platform("multi:1", Some(&plat(arch))).unwrap();
            assert_eq!(img.config.architecture, arch);
            assert_eq!(img.names, vec![r("multi:1")]);
        }
        // aarch64 is arm64; a variant the image leaves open matches.
        let mut v8 = plat("aarch64");
        v8.variant = Some("v8".into());
        assert_eq!(
            s.resolve_platform("multi:1", Some(&v8))
                .unwrap()
                .config
                .architecture,
            "arm64"
        );
        // No platform: the host's.
        let host = s.resolve_platform("multi:1", None).unwrap();
        assert_eq!(host.config.architecture, Platform::host().architecture);
        assert_eq!(
            s.resolve("multi:1").unwrap().manifest_digest,
            host.manifest_digest
        );
        let e = s
            .resolve_platform("multi:1", Some(&plat("riscv64")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux/riscv64") && e.contains("linux/amd64,linux/arm64"),
            "{e}"
        );
        // The listing shows the index with its platforms.
        let list = s.indexes().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].names, vec![r("multi:1")]);
        assert_eq!(list[0].platforms().len(), 2);
        // The index's images have no entries (no names) of their own.
        let one = s
            .resolve_platform(descs[0].digest.as_str(), None)
            .unwrap_err();
        assert!(matches!(one, Error::NotFound(_)), "{one}");
    }

    #[test]
    fn a_single_image_must_match_the_platform_asked_for() {
        let (s, _g, descs) = two_platforms("single");
        s.set_ref(&r("one"), &descs[1]).unwrap();
        assert_eq!(
            s.resolve_platform("one", Some(&plat("arm64")))
                .unwrap()
                .config
                .architecture,
            "arm64"
        );
        let e = s
            .resolve_platform("one", Some(&plat("amd64")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux/amd64") && e.contains("linux/arm64"),
            "{e}"
        );
    }

    #[test]
    fn prune_keeps_what_an_index_refers_to_and_remove_lets_it_go() {
        let (s, _g, descs) = two_platforms("prune");
        let d = s
            .put_index(&descs, BTreeMap::new(), &[r("multi:1"), r("multi:2")])
            .unwrap();
        let garbage = s.put_blob(b"garbage").unwrap();
        let blobs = |s: &Store| {
            fs_err::read_dir(s.layout_dir().join("blobs/sha256"))
                .unwrap()
                .count()
        };
        s.prune(false).unwrap();
        assert!(!s.has_blob(&garbage));
        // The index, two images (manifest, config, two layers each, the first layer shared),
        // the attestation manifest with its config and statement.
        assert_eq!(blobs(&s), 1 + 2 * 3 + 1 + 3);
        let report = s.fsck().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        for arch in ["amd64", "arm64"] {
            s.resolve_platform("multi:1", Some(&plat(arch))).unwrap();
        }
        // The attestation manifest and its blobs are kept too.
        let att: oci::Manifest =
            oci::parse_json(&s.read_blob(&descs[2].digest).unwrap(), "m").unwrap();
        assert!(s.has_blob(&att.layers[0].digest));
        // Removing one tag keeps the other; tag gives it a third.
        assert_eq!(s.remove("multi:1").unwrap(), vec!["multi:1"]);
        assert!(s.find_index("multi:1").unwrap().is_none());
        s.tag("multi:2", &r("multi:3")).unwrap();
        assert_eq!(s.find_index("multi:3").unwrap().unwrap().0.digest, d.digest);
        // The short id `strata images` shows finds it, and removes every name.
        let short = &d.digest.hex()[..12];
        assert_eq!(s.find_index(short).unwrap().unwrap().0.digest, d.digest);
        assert_eq!(
            s.resolve(short).unwrap().config.architecture,
            Platform::host().architecture
        );
        assert_eq!(s.remove(short).unwrap().len(), 2);
        assert!(s.index().unwrap().manifests.is_empty());
        s.prune(false).unwrap();
        assert_eq!(blobs(&s), 0);
    }

    #[test]
    fn a_name_moves_between_an_image_and_an_index() {
        let (s, _g, descs) = two_platforms("move");
        s.set_ref(&r("app"), &descs[0]).unwrap();
        s.put_index(&descs[..2], BTreeMap::new(), &[r("app")])
            .unwrap();
        assert!(s.find_index("app").unwrap().is_some());
        assert_eq!(s.index().unwrap().manifests.len(), 1);
        s.set_ref(&r("app"), &descs[1]).unwrap();
        assert!(s.find_index("app").unwrap().is_none());
        assert_eq!(s.resolve("app").unwrap().config.architecture, "arm64");
        // A manifest not in the store is refused, and nothing changes.
        let mut missing = descs[0].clone();
        missing.digest = Digest::of(b"not here");
        let e = s
            .put_index(&[missing], BTreeMap::new(), &[r("app")])
            .unwrap_err();
        assert!(matches!(e, Error::MissingBlob(_)), "{e}");
        assert!(s.find_index("app").unwrap().is_none());
        // Two images for one platform are refused.
        let e = s
            .put_index(&[descs[0].clone(), descs[0].clone()], BTreeMap::new(), &[])
            .unwrap_err();
        assert!(e.to_string().contains("linux/amd64"), "{e}");
    }
    #[test]
    fn an_index_kept_as_a_registry_sent_it_keeps_its_digest_and_notes() {
        let (s, _g, descs) = two_platforms("bytes");
        // A Docker manifest list as a registry would send it (not strata's canonical JSON).
        let list = format!(
            "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{}\",\n  \"manifests\": {}\n}}",
            media::DOCKER_LIST,
            serde_json::to_string(&descs[..2]).unwrap()
        );
        let mut notes = BTreeMap::new();
        notes.insert("io.example.from".to_string(), "registry".to_string());
        let d = s
            .put_index_bytes(
                media::DOCKER_LIST,
                list.as_bytes(),
                &[r("pulled:1")],
                &notes,
            )
            .unwrap();
        assert_eq!(d.digest, Digest::of(list.as_bytes()));
        let (entry, idx) = s.find_index("pulled:1").unwrap().unwrap();
        assert_eq!(entry.digest, d.digest);
        assert_eq!(entry.media_type, media::DOCKER_LIST);
        assert_eq!(entry.annotations["io.example.from"], "registry");
        assert_eq!(idx.manifests.len(), 2);
        assert_eq!(
            s.resolve_platform("pulled:1", Some(&plat("arm64")))
                .unwrap()
                .config
                .architecture,
            "arm64"
        );
        s.prune(false).unwrap();
        assert!(s.fsck().unwrap().problems.is_empty());
        // A store-made index carries the notes on its entry, not in its blob.
        let made = s
            .put_index_noted(&descs[..1], BTreeMap::new(), &[r("made:1")], &notes)
            .unwrap();
        let (entry, idx) = s.find_index("made:1").unwrap().unwrap();
        assert_eq!(entry.digest, made.digest);
        assert_eq!(entry.annotations["io.example.from"], "registry");
        assert!(idx.manifests[0].annotations.is_empty());
        // A manifest not in the store, and a manifest's media type, are refused.
        let mut missing = descs[0].clone();
        missing.digest = Digest::of(b"not here");
        let bad = serde_json::json!({"schemaVersion": 2, "manifests": [missing]}).to_string();
        let e = s
            .put_index_bytes(media::OCI_INDEX, bad.as_bytes(), &[r("bad")], &notes)
            .unwrap_err();
        assert!(matches!(e, Error::MissingBlob(_)), "{e}");
        let e = s
            .put_index_bytes(media::OCI_MANIFEST, list.as_bytes(), &[r("bad")], &notes)
            .unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        assert!(s.find_index("bad").unwrap().is_none());
    }
}
