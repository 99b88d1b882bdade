//! `strata manifest create`: combine images already in a registry into one image index, as
//! `docker buildx imagetools create` does. Each source (a tag or a digest of the same
//! registry) is an image manifest, whose platform is read from its config, or an index, whose
//! entries are taken as they are (attestation manifests too). The index is pushed by digest and
//! under the destination's tag; sources in another repository of the registry are mounted into
//! the destination's first (their blobs by cross-repository mount, their manifests by digest).
//! This is how the images of a CI matrix (one native runner per platform, each pushing its
//! image by digest) become one multi-platform tag.

use std::collections::{BTreeMap, BTreeSet};

use super::push::{PushOptions, Pushed};
use super::{Error, Reference, Registry, Result};
use crate::layer::Compression;
use crate::oci::{self, canonical_json, media, Descriptor, Digest, ImageConfig, Index, Manifest};
use crate::store::Store;

/// An image index made from registry manifests ([`Registry::combine`]).
#[derive(Debug, Clone)]
pub struct Combined {
    pub index: Index,
    /// The index as sent (canonical JSON) and its digest.
    pub bytes: Vec<u8>,
    pub digest: Digest,
    /// Per source, the manifests to make present in the destination's repository first:
    /// (source, media type, bytes, digest) of each, when the source is elsewhere.
    copies: Vec<(Reference, String, Vec<u8>, Digest)>,
}

impl Registry {
    /// Read every source's manifest (and, for an image, its config: the platform) and make the
    /// index for `dest`. Nothing is written to the registry; configs pass through `store` (as
    /// verified blobs). Every source must be on `dest`'s registry; two images for one platform
    /// are refused.
    pub fn combine(
        &self,
        store: &Store,
        sources: &[Reference],
        dest: &Reference,
        annotations: BTreeMap<String, String>,
    ) -> Result<Combined> {
        if sources.is_empty() {
            return Err(Error::Protocol(
                "no sources: name the images to combine (REF@DIGEST or REF:TAG)".into(),
            ));
        }
        let to = self.repo(dest)?;
        let mut manifests: Vec<Descriptor> = Vec::new();
        let mut copies = Vec::new();
        let mut platforms: BTreeMap<String, Reference> = BTreeMap::new();
        for src in sources {
            let from = self.repo(src)?;
            if from.at.domain() != to.at.domain() {
                return Err(Error::Protocol(format!(
                    "{src} is on {}, {dest} on {}: the sources of an index must be on its registry (copy them there first, e.g. with skopeo copy)",
                    from.at.domain(),
                    to.at.domain()
                )));
            }
            let elsewhere = from.location() != to.location();
            let (mt, bytes, digest) = from.manifest(self)?.ok_or_else(|| Error::NotFound {
                reference: src.to_string(),
                registry: from.at.domain().to_string(),
                repository: from.at.path().to_string(),
                detail: "manifest unknown".into(),
            })?;
            let mut entries = Vec::new();
            if media::is_index(&mt) {
                let i: Index = oci::parse_json(&bytes, &format!("index of {src}"))?;
                for m in i.manifests {
                    if elsewhere {
                        let (cmt, cb, cd) = from.manifest_at(self, m.digest.as_str())?;
                        copies.push((src.clone(), cmt, cb, cd));
                    }
                    entries.push(m);
                }
            } else if media::is_manifest(&mt) {
                let m: Manifest = oci::parse_json(&bytes, &format!("manifest of {src}"))?;
                let cfg: ImageConfig = oci::parse_json(
                    &from.json_blob(self, store, &m.config)?,
                    &format!("config of {src}"),
                )?;
                let mut d = Descriptor::new(&mt, digest.clone(), bytes.len() as u64);
                d.platform = Some(
                    oci::Platform {
                        architecture: cfg.architecture,
                        os: cfg.os,
                        os_version: cfg.os_version,
                        variant: cfg.variant,
                    }
                    .normalized(),
                );
                if elsewhere {
                    copies.push((src.clone(), mt.clone(), bytes.clone(), digest.clone()));
                }
                entries.push(d);
            } else {
                return Err(Error::Protocol(format!(
                    "{src}: the registry sent a {mt}, not an image manifest or index"
                )));
            }
            for d in entries {
                if crate::store::is_platform_image(&d) {
                    if let Some(p) = &d.platform {
                        let key = p.normalized().to_string();
                        if let Some(first) = platforms.insert(key.clone(), src.clone()) {
                            return Err(Error::Protocol(format!(
                                "{first} and {src} are both images for {key}: an index has one image per platform"
                            )));
                        }
                    }
                }
                if !manifests.iter().any(|m| m.digest == d.digest) {
                    manifests.push(d);
                }
            }
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            manifests,
            annotations,
        };
        let bytes = canonical_json(&index);
        let digest = Digest::of(&bytes);
        Ok(Combined {
            index,
            bytes,
            digest,
            copies,
        })
    }

    /// Push what [`Registry::combine`] made: the manifests of sources in other repositories
    /// first (blobs mounted from there), then the index by digest and under `dest`'s tag.
    pub fn push_combined(&self, store: &Store, c: &Combined, dest: &Reference) -> Result<Pushed> {
        if dest.digest().is_some() {
            return Err(Error::Protocol(format!(
                "{dest}: name the index by a tag, not a digest (the digest is the registry's answer)"
            )));
        }
        let to = self.repo(dest)?;
        let mut counts = (0, 0, 0);
        let mut seen = BTreeSet::new();
        for (src, mt, bytes, digest) in &c.copies {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let from = self.repo(src)?;
            let mut blobs = Vec::new();
            if media::is_manifest(mt) {
                let m: Manifest = oci::parse_json(bytes, &format!("manifest {digest}"))?;
                blobs.push(m.config);
                blobs.extend(m.layers);
            }
            let mounts = vec![(
                from.at.path().to_string(),
                blobs.iter().map(|b| b.digest.clone()).collect::<Vec<_>>(),
            )];
            let n = to.put_by_digest(self, store, &blobs, &mounts, mt, bytes)?;
            counts.0 += n.0;
            counts.1 += n.1;
            counts.2 += n.2;
        }
        let (digest, _) = to.put(self, store, &[], media::OCI_INDEX, &c.bytes)?;
        Ok(Pushed {
            reference: dest.clone(),
            digest,
            size: c.bytes.len() as u64,
            counts,
        })
    }

    /// The manifest or index `r` names, as the registry sends it: (media type, bytes, digest).
    pub fn raw_manifest(&self, r: &Reference) -> Result<(String, Vec<u8>, Digest)> {
        let repo = self.repo(r)?;
        repo.manifest(self)?.ok_or_else(|| Error::NotFound {
            reference: r.to_string(),
            registry: repo.at.domain().to_string(),
            repository: repo.at.path().to_string(),
            detail: "manifest unknown".into(),
        })
    }
}

/// The options for sending a source's blobs: nothing is recompressed.
pub(super) fn as_is() -> PushOptions {
    PushOptions {
        compression: Compression::None,
        chunk_size: None,
    }
}
