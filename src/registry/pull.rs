//! Pulling: resolve a reference (mirrors first, as registries.conf says) to a manifest, pick the
//! platform from an index or manifest list, then fetch the config and the layers, 6 at a time,
//! each streamed through its sha256 into a store temp file and renamed into place only when the
//! digest and size match. A dropped connection resumes with `Range`; a second process that
//! needs the same blob waits for the first (a lock per digest) and finds it there.
//!
//! Manifests keep their exact bytes (Docker schema2 or OCI), so the image's digest is the
//! registry's digest, and `--pull` can compare with one HEAD.

use std::io::{Read, Seek, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::header::{ACCEPT, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;

use super::client::{snippet, Host};
use super::config::PullSource;
use super::{BlobOutcome, Error, Reference, Registry, Result};
use crate::oci::{self, media, Descriptor, Digest, Index, Manifest, Platform};
use crate::store::{ImageRecord, Store};

/// Every manifest type strata reads, for `Accept` (distribution hides OCI manifests from a
/// client that does not list them).
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Manifests and configs are small; a larger answer is refused rather than held in memory.
const MANIFEST_MAX: u64 = 8 << 20;
const CONFIG_MAX: u64 = crate::oci::MAX_CONFIG as u64;
/// Layers fetched at once per pull (skopeo uses 6, crane 4).
pub const PARALLEL: usize = 6;

/// Index annotations strata keeps on a pulled image's store entry.
pub const ANN_DIGEST: &str = "io.strata.registry.digest";
pub const ANN_SOURCE: &str = "io.strata.registry.repository";

/// A pulled image.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub record: ImageRecord,
    /// What the reference resolved to at the registry (an index's digest for a
    /// multi-platform image, else the manifest's).
    pub digest: Digest,
    /// Where it came from (a mirror or the registry).
    pub source: Reference,
    /// Bytes downloaded (0 when every blob was already in the store).
    pub downloaded: u64,
}

pub(crate) fn scope(repo: &str, actions: &str) -> String {
    format!("repository:{repo}:{actions}")
}

impl Registry {
    /// The digest `r` points to now, by HEAD (GET when the registry gives no digest header),
    /// trying the mirrors first. Returns the digest and the source that answered.
    pub fn head(&self, r: &Reference) -> Result<(Digest, Reference)> {
        let sources = self.policy.pull_sources(r)?;
        self.try_sources(r, &sources, |src| {
            let host = self.host(src.reference.domain(), src.insecure)?;
            let repo = src.reference.path().to_string();
            let sel = src.reference.manifest_selector();
            let resp = self.send(
                &host,
                &format!("HEAD manifest {}", src.reference),
                &[scope(&repo, "pull")],
                &repo,
                &r.to_string(),
                &|c, base| {
                    c.head(format!("{base}/v2/{repo}/manifests/{sel}"))
                        .header(ACCEPT, ACCEPT_MANIFESTS)
                },
            )?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Err(not_found(r, &src.reference, "manifest unknown"));
            }
            if !resp.status().is_success() {
                return Err(Error::Http {
                    method: "HEAD".into(),
                    url: format!("{}/{repo}/manifests/{sel}", host.name),
                    status: resp.status().as_u16(),
                    body: String::new(),
                });
            }
            let d = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Digest>().ok());
            match d {
                Some(d) => Ok((d, src.reference.clone())),
                None => {
                    let (_, bytes, _) = self.get_manifest(&host, &src.reference, r, &sel)?;
                    Ok((Digest::of(&bytes), src.reference.clone()))
                }
            }
        })
    }

    /// Try each source in order; a mirror's failure moves on to the next, the primary's is
    /// the answer. The error of the last source is returned.
    fn try_sources<T>(
        &self,
        r: &Reference,
        sources: &[PullSource],
        f: impl Fn(&PullSource) -> Result<T>,
    ) -> Result<T> {
        let mut last = None;
        for (i, src) in sources.iter().enumerate() {
            match f(src) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if i + 1 < sources.len() {
                        self.observer.note(&format!(
                            "{r}: mirror {} failed ({e}); trying the next source",
                            src.reference.domain()
                        ));
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Protocol(format!("{r}: no source to pull from"))))
    }

    /// GET a manifest by tag or digest: (media type, bytes, digest of the bytes). Checks the
    /// bytes against a digest selector.
    pub(crate) fn get_manifest(
        &self,
        host: &Host,
        at: &Reference,
        user_ref: &Reference,
        sel: &str,
    ) -> Result<(String, Vec<u8>, Digest)> {
        let repo = at.path().to_string();
        let resp = self.send(
            host,
            &format!("GET manifest {at}"),
            &[scope(&repo, "pull")],
            &repo,
            &user_ref.to_string(),
            &|c, base| {
                c.get(format!("{base}/v2/{repo}/manifests/{sel}"))
                    .header(ACCEPT, ACCEPT_MANIFESTS)
            },
        )?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(not_found(user_ref, at, &snippet(resp)));
        }
        if !resp.status().is_success() {
            return Err(Error::Http {
                method: "GET".into(),
                url: format!("{}/v2/{repo}/manifests/{sel}", host.name),
                status: resp.status().as_u16(),
                body: snippet(resp),
            });
        }
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let mut bytes = Vec::new();
        super::client::Paced::new(resp, self.timeouts)
            .take(MANIFEST_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.body_error(host, &format!("GET manifest {at} (reading it)"), e))?;
        if bytes.len() as u64 > MANIFEST_MAX {
            return Err(Error::Protocol(format!(
                "{at}: the manifest is larger than {} MiB",
                MANIFEST_MAX >> 20
            )));
        }
        let digest = Digest::of(&bytes);
        if let Ok(want) = sel.parse::<Digest>() {
            if want != digest {
                return Err(Error::DigestMismatch {
                    what: format!("manifest of {at}"),
                    expected: want,
                    actual: digest,
                });
            }
        }
        // The media type: the body's own field wins over the header (some servers send
        // application/json).
        let body_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
                    return Some(DOCKER_SCHEMA1.to_string());
                }
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
                    .or_else(|| {
                        if v.get("manifests").is_some() {
                            Some(media::OCI_INDEX.into())
                        } else if v.get("layers").is_some() {
                            Some(media::OCI_MANIFEST.into())
                        } else {
                            None
                        }
                    })
            });
        let mt = body_type.unwrap_or(ct);
        Ok((mt, bytes, digest))
    }

    /// Pull `r` for `platform` into `store` and name it there.
    pub fn pull(&self, store: &Store, r: &Reference, platform: &Platform) -> Result<Pulled> {
        let sources = self.policy.pull_sources(r)?;
        self.try_sources(r, &sources, |src| self.pull_from(store, r, src, platform))
    }

    fn pull_from(
        &self,
        store: &Store,
        r: &Reference,
        src: &PullSource,
        platform: &Platform,
    ) -> Result<Pulled> {
        let at = &src.reference;
        let host = self.host(at.domain(), src.insecure)?;
        let (mt, bytes, top) = self.get_manifest(&host, at, r, &at.manifest_selector())?;
        self.observer
            .resolved(&r.to_string(), &top, &at.to_string());
        // BuildKit's attestation manifest of the chosen image, when the index has one.
        let mut attestation = None;
        // The registry's index as it sent it (kept whole once every manifest it lists is here).
        let mut registry_index = None;
        let (mt, mbytes, mdigest, entry_platform) = if media::is_index(&mt) {
            let index: Index = oci::parse_json(&bytes, &format!("index of {at}"))?;
            let chosen = crate::store::select_platform(&index, platform).ok_or_else(|| {
                let available: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .filter(|p| p.os != "unknown")
                    .map(|p| match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                    .collect();
                Error::Platform {
                    reference: r.to_string(),
                    want: match &platform.variant {
                        Some(v) => format!("{}/{}/{v}", platform.os, platform.architecture),
                        None => format!("{}/{}", platform.os, platform.architecture),
                    },
                    available: if available.is_empty() {
                        "no platforms".into()
                    } else {
                        available.join(", ")
                    },
                }
            })?;
            let (cmt, cbytes, cdigest) = self.get_manifest(&host, at, r, chosen.digest.as_str())?;
            attestation = index
                .manifests
                .iter()
                .find(|d| {
                    crate::sbom::attest::is_attestation(d)
                        && d.annotations.get(crate::sbom::attest::REFERENCE_DIGEST)
                            == Some(&cdigest.to_string())
                })
                .cloned();
            let platform = chosen.platform.clone();
            registry_index = Some((mt, bytes, index));
            (cmt, cbytes, cdigest, platform)
        } else {
            (mt, bytes, top.clone(), None)
        };
        if mt == DOCKER_SCHEMA1 {
            return Err(Error::Protocol(format!(
                "{r}: Docker schema 1 manifests are not supported (deprecated since 2017); push the image again with a current client"
            )));
        }
        if !media::is_manifest(&mt) {
            return Err(Error::Protocol(format!(
                "{r}: the registry sent a {mt}, not an image manifest"
            )));
        }
        let manifest: Manifest = oci::parse_json(&mbytes, &format!("manifest of {at}"))?;
        let _w = store.writer_lock()?;
        let repo = at.path().to_string();
        let downloaded = AtomicUsize::new(0);
        // The config first (small), then the layers in parallel.
        self.fetch_blob(
            &host,
            &repo,
            r,
            &manifest.config,
            store,
            Blob::Config,
            &downloaded,
        )?;
        let config: oci::ImageConfig = oci::parse_json(
            &store.read_blob(&manifest.config.digest)?,
            &format!("config of {r}"),
        )?;
        let layers: Vec<&Descriptor> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type != media::DOCKER_FOREIGN_LAYER)
            .collect();
        if layers.len() != config.rootfs.diff_ids.len() {
            return Err(Error::Protocol(format!(
                "{r}: the manifest lists {} layers but the config {} diffIDs",
                layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let layers: Vec<(&Descriptor, &Digest)> =
            layers.into_iter().zip(&config.rootfs.diff_ids).collect();
        super::for_each_parallel(&layers, PARALLEL, |(l, diff_id)| {
            self.fetch_blob(&host, &repo, r, l, store, Blob::Layer(diff_id), &downloaded)
        })?;
        // The manifest as the registry sent it, then the name.
        store.put_blob(&mbytes)?;
        let mut desc = Descriptor::new(&mt, mdigest.clone(), mbytes.len() as u64);
        desc.platform = entry_platform.or_else(|| {
            Some(Platform {
                architecture: config.architecture.clone(),
                os: config.os.clone(),
                os_version: None,
                variant: config.variant.clone(),
            })
        });
        let name = store_name(r);
        let mut notes = std::collections::BTreeMap::new();
        notes.insert(ANN_DIGEST.to_string(), top.to_string());
        notes.insert(ANN_SOURCE.to_string(), at.full_name());
        // With its attestations (SBOM, provenance); an attestation that cannot be fetched
        // leaves the image alone.
        let attestation = attestation.filter(|a| {
            self.pull_attestation(&host, at, r, a, store, &downloaded)
                .is_ok()
        });
        // The other platforms of the same registry index pulled under the name before are
        // kept beside this one: the name is then an index of every platform pulled.
        let _n = store.name_lock(&name)?;
        let mut members = match &registry_index {
            Some(_) => pulled_before(store, &name, &top, &desc)?,
            None => Vec::new(),
        };
        if members.is_empty() && attestation.is_none() {
            let mut desc = desc.clone();
            desc.annotations.extend(notes);
            store.set_ref(&name, &desc)?;
        } else {
            members.push(desc.clone());
            members.extend(attestation);
            let whole = registry_index.as_ref().filter(|(_, _, index)| {
                index.manifests.iter().all(|d| {
                    media::is_manifest(&d.media_type)
                        && members.iter().any(|m| m.digest == d.digest)
                })
            });
            match whole {
                // Every manifest of the registry's index is here: the name is that index.
                Some((imt, ibytes, _)) => {
                    store.put_index_bytes(imt, ibytes, std::slice::from_ref(&name), &notes)?;
                }
                None => {
                    store.put_index_noted(
                        &members,
                        Default::default(),
                        std::slice::from_ref(&name),
                        &notes,
                    )?;
                }
            }
        }
        let mut record = store.image_of_manifest(&mdigest)?;
        record.names = vec![name];
        Ok(Pulled {
            record,
            digest: top,
            source: at.clone(),
            downloaded: downloaded.load(Ordering::SeqCst) as u64,
        })
    }

    /// The attestation manifest `a` and its blobs (small in-toto statements, size-capped as a
    /// config) into the store.
    fn pull_attestation(
        &self,
        host: &Host,
        at: &Reference,
        r: &Reference,
        a: &Descriptor,
        store: &Store,
        downloaded: &AtomicUsize,
    ) -> Result<()> {
        let (_, bytes, digest) = self.get_manifest(host, at, r, a.digest.as_str())?;
        let m: Manifest = oci::parse_json(&bytes, &format!("attestation manifest {digest}"))?;
        let repo = at.path().to_string();
        for b in std::iter::once(&m.config).chain(&m.layers) {
            self.fetch_blob(host, &repo, r, b, store, Blob::Config, downloaded)?;
        }
        store.put_blob(&bytes)?;
        Ok(())
    }

    /// Download one blob into the store (nothing to do when it is there). A layer is inflated
    /// and hashed while it arrives, so a layer whose content is not the diffID its config
    /// promises is refused here, before it is stored, instead of at its first unpack.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fetch_blob(
        &self,
        host: &Host,
        repo: &str,
        user_ref: &Reference,
        desc: &Descriptor,
        store: &Store,
        kind: Blob,
        downloaded: &AtomicUsize,
    ) -> Result<()> {
        let max = match kind {
            Blob::Config => CONFIG_MAX,
            Blob::Layer(_) => u64::MAX,
        };
        if desc.size > max {
            return Err(Error::Protocol(format!(
                "{user_ref}: blob {} is {} bytes, more than the {max} allowed for it",
                desc.digest, desc.size
            )));
        }
        if store.has_blob(&desc.digest) {
            self.observer.blob_done(&desc.digest, BlobOutcome::Present);
            return Ok(());
        }
        // One download per blob across threads and processes.
        let _one = store.blob_lock(&desc.digest)?;
        if store.has_blob(&desc.digest) {
            self.observer.blob_done(&desc.digest, BlobOutcome::Present);
            return Ok(());
        }
        self.observer.blob_start(&desc.digest, desc.size, false);
        let mut tmp = store.temp_file()?;
        let mut hasher = oci::Sha256::new();
        // A layer's package list (an SBOM's per-layer scan) rides the same pass: the inflate
        // is most of a scan's cost, and later SBOMs read the list from the store.
        let new_tee = || match kind {
            Blob::Layer(_) => {
                let (scan, found) = crate::sbom::SharedScan::new(Default::default());
                crate::layer::DiffIdTee::with_sink(Some(Box::new(scan)))
                    .map(|t| (Some(t), Some(found)))
            }
            Blob::Config => Ok((None, None)),
        };
        let mut have: u64 = 0;
        let mut breaks = 0u32;
        let digest = desc.digest.clone();
        let tmp_path = tmp.path().to_path_buf();
        let io = |e: std::io::Error| crate::store::Error::Io {
            path: tmp_path.clone(),
            source: e,
        };
        let (mut tee, mut packages) = new_tee().map_err(io)?;
        'download: loop {
            let from = have;
            let resp = self.send(
                host,
                &format!("GET blob {}", digest.short()),
                &[scope(repo, "pull")],
                repo,
                &user_ref.to_string(),
                &|c, base| {
                    let rb = c.get(format!("{base}/v2/{repo}/blobs/{digest}"));
                    if from > 0 {
                        rb.header(RANGE, format!("bytes={from}-"))
                    } else {
                        rb
                    }
                },
            )?;
            match resp.status() {
                StatusCode::OK => {
                    if have > 0 {
                        // The server ignored the Range: start over.
                        have = 0;
                        hasher = oci::Sha256::new();
                        (tee, packages) = new_tee().map_err(io)?;
                        let f = tmp.file_mut();
                        f.set_len(0).map_err(io)?;
                        f.rewind().map_err(io)?;
                    }
                }
                StatusCode::PARTIAL_CONTENT if have > 0 => {}
                _ => return Err(blob_status_error(host, repo, user_ref, &digest, resp)),
            }
            let mut resp = super::client::Paced::new(resp, self.timeouts);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match resp.read(&mut buf) {
                    Ok(0) => break 'download,
                    Ok(_) if self.observer.cancelled() => return Err(Error::Cancelled),
                    // A stall (nothing, or too little, for too long) is not resumed: the
                    // registry had its time.
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        return Err(self.body_error(
                            host,
                            &format!("GET blob {digest} (after {have} of {} bytes)", desc.size),
                            e,
                        ))
                    }
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        if let Some(t) = &mut tee {
                            t.feed(&buf[..n]);
                        }
                        tmp.file_mut().write_all(&buf[..n]).map_err(io)?;
                        have += n as u64;
                        downloaded.fetch_add(n, Ordering::SeqCst);
                        if have > desc.size {
                            return Err(Error::Protocol(format!(
                                "{user_ref}: blob {digest} is longer than the {} bytes its descriptor says; nothing was stored",
                                desc.size
                            )));
                        }
                        self.observer.blob_progress(&digest, have);
                    }
                    Err(e) => {
                        breaks += 1;
                        if breaks >= self.retry.attempts {
                            return Err(Error::Unreachable {
                                host: host.name.clone(),
                                detail: format!(
                                    "blob {digest}: the connection broke {breaks} times (last: {e})"
                                ),
                            });
                        }
                        self.observer.retry(
                            &format!("GET blob {}", digest.short()),
                            &format!("connection broke after {have} bytes ({e}); resuming"),
                        );
                        std::thread::sleep(self.retry.backoff(breaks));
                        continue 'download;
                    }
                }
            }
        }
        let layer_paths = verify_blob(user_ref, desc, have, hasher, tee, kind)?;
        store.commit_blob(tmp, &digest)?;
        // The layer's paths, read on the way (what COPY asks of a layer it does not unpack);
        // best effort: without them COPY reads the blob again when it needs them.
        if let Some(p) = layer_paths {
            let _ = store.put_layer_paths(&digest, &p);
        }
        // Its packages likewise (without them an SBOM scans the blob when it needs them).
        if let Some(p) = packages.and_then(|f| f.take()) {
            let _ = store.put_layer_packages(&digest, &p);
        }
        self.observer.blob_done(&digest, BlobOutcome::Downloaded);
        Ok(())
    }
}

/// The answer to a blob's GET that is neither the blob nor the rest of it.
fn blob_status_error(
    host: &Host,
    repo: &str,
    user_ref: &Reference,
    digest: &Digest,
    resp: reqwest::blocking::Response,
) -> Error {
    match resp.status() {
        StatusCode::NOT_FOUND => Error::NotFound {
            reference: user_ref.to_string(),
            registry: host.name.clone(),
            repository: repo.to_string(),
            detail: format!("blob {digest} is missing ({})", snippet(resp)),
        },
        s => Error::Http {
            method: "GET".into(),
            url: format!("{}/v2/{repo}/blobs/{digest}", host.name),
            status: s.as_u16(),
            body: snippet(resp),
        },
    }
}

/// A downloaded blob against its descriptor (digest and size) and, for a layer, its
/// uncompressed content against the diffID the config promises; the layer's paths when read.
fn verify_blob(
    user_ref: &Reference,
    desc: &Descriptor,
    have: u64,
    hasher: oci::Sha256,
    tee: Option<crate::layer::DiffIdTee>,
    kind: Blob,
) -> Result<Option<crate::layer::paths::LayerPaths>> {
    let digest = &desc.digest;
    let actual = hasher.finish();
    if actual != *digest || have != desc.size {
        return Err(Error::DigestMismatch {
            what: format!("{user_ref}: blob ({have} of {} bytes)", desc.size),
            expected: digest.clone(),
            actual,
        });
    }
    let mut layer_paths = None;
    if let (Some(t), Blob::Layer(diff_id)) = (tee, kind) {
        match t.finish() {
            Ok((actual, _, p)) if actual == *diff_id => layer_paths = p,
            Ok((actual, len, _)) => {
                return Err(Error::DigestMismatch {
                    what: format!(
                        "{user_ref}: layer {digest} uncompressed ({len} bytes) against the diffID in the image's config; nothing was stored"
                    ),
                    expected: diff_id.clone(),
                    actual,
                })
            }
            Err(e) => {
                return Err(Error::Protocol(format!(
                    "{user_ref}: layer {digest} is not a readable gzip, zstd or tar stream ({e}); nothing was stored"
                )))
            }
        }
    }
    Ok(layer_paths)
}

/// What a downloaded blob is, and so how it is checked beyond its digest.
#[derive(Clone, Copy)]
pub(crate) enum Blob<'a> {
    /// An image config: size-capped (it is read into memory).
    Config,
    /// A layer, whose uncompressed content must hash to this diffID.
    Layer(&'a Digest),
}

/// What `name` holds of the registry index `top` for other platforms than `new`'s: the images
/// pulled under it before (and their attestation manifests), to keep beside `new`. Nothing
/// when the name holds something else (another index the tag pointed at before, an image made
/// here): the pull replaces that.
fn pulled_before(
    store: &Store,
    name: &Reference,
    top: &Digest,
    new: &Descriptor,
) -> Result<Vec<Descriptor>> {
    let from_top = |d: &Descriptor| {
        d.digest == *top || d.annotations.get(ANN_DIGEST).map(String::as_str) == Some(top.as_str())
    };
    let held: Vec<Descriptor> = match store.find_index(&name.to_string())? {
        // An index of the platforms pulled before (or the registry's own, whole).
        Some((entry, index)) => {
            if !(from_top(&entry) || index.manifests.iter().any(from_top)) {
                return Ok(Vec::new());
            }
            index.manifests
        }
        // One platform pulled before.
        None => {
            let n = name.to_string();
            match store.find_entry(|d| d.annotations.get(oci::REF_NAME) == Some(&n))? {
                Some((d, _)) if from_top(&d) => vec![d],
                _ => return Ok(Vec::new()),
            }
        }
    };
    let want = new.platform.as_ref().map(Platform::normalized);
    let same = |d: &Descriptor| {
        d.digest == new.digest
            || d.platform
                .as_ref()
                .map(Platform::normalized)
                .is_some_and(|p| {
                    want.as_ref().is_some_and(|w| {
                        p.os == w.os && p.architecture == w.architecture && p.variant == w.variant
                    })
                })
    };
    let replaced: Vec<String> = held
        .iter()
        .filter(|d| crate::store::is_platform_image(d) && same(d))
        .map(|d| d.digest.to_string())
        .chain(std::iter::once(new.digest.to_string()))
        .collect();
    Ok(held
        .into_iter()
        .filter(|d| !(crate::store::is_platform_image(d) && same(d)))
        // The attestations of the image replaced go with it (the new one's come with it).
        .filter(|d| {
            !crate::sbom::attest::is_attestation(d)
                || d.annotations
                    .get(crate::sbom::attest::REFERENCE_DIGEST)
                    .is_none_or(|r| !replaced.contains(r))
        })
        .filter(|d| store.has_blob(&d.digest))
        .map(|mut d| {
            for a in [oci::REF_NAME, ANN_DIGEST, ANN_SOURCE] {
                d.annotations.remove(a);
            }
            d
        })
        .collect())
}

/// The store name of a pulled reference: `name:tag`, or `name@digest` for a pinned one.
pub fn store_name(r: &Reference) -> Reference {
    match r.digest() {
        Some(d) => Reference::from_parts(r.domain(), r.path(), None, Some(d.clone())),
        None => r.clone(),
    }
}

fn not_found(user_ref: &Reference, at: &Reference, detail: &str) -> Error {
    Error::NotFound {
        reference: user_ref.to_string(),
        registry: at.domain().to_string(),
        repository: at.full_name(),
        detail: if detail.is_empty() {
            "manifest unknown".into()
        } else {
            detail.to_string()
        },
    }
}
