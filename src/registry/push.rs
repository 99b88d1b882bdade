//! Pushing an image of the store: blobs first (HEAD, then a cross-repository mount when the
//! blob came from another repository of the same registry, else an upload, monolithic or in
//! chunks), then the manifest by digest, then the tag. Layers stored uncompressed are sent
//! gzip-compressed (or as `--compression` says); the compressed copy is kept in the store so a
//! second push does not compress again. A failed upload starts a fresh session. An image index
//! ([`Registry::push_index`]) goes manifest by manifest (each by digest), then the index under
//! the tag.

use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;

use super::client::{snippet, Host};
use super::pull::{scope, store_name, ANN_DIGEST, ANN_SOURCE};
use super::{BlobOutcome, Error, Reference, Registry, Result};
use crate::layer::Compression;
use crate::oci::{self, canonical_json, media, Descriptor, Digest, Index, Manifest};
use crate::store::{ImageRecord, Store};

/// Blobs sent at once.
pub const PARALLEL: usize = 4;

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// What uncompressed layers become on the wire (gzip by default; `None` sends them as they
    /// are).
    pub compression: Compression,
    /// Upload in PATCH chunks of this size instead of one PUT.
    pub chunk_size: Option<u64>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            compression: Compression::GZIP,
            chunk_size: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pushed {
    pub reference: Reference,
    pub digest: Digest,
    pub size: u64,
    /// (uploaded, mounted, already there) blob counts.
    pub counts: (usize, usize, usize),
}

impl std::fmt::Display for Pushed {
    /// `pushed REF@DIGEST (N blobs uploaded, M mounted, K already there)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pushed {}@{} ({} blobs uploaded, {} mounted, {} already there)",
            self.reference, self.digest, self.counts.0, self.counts.1, self.counts.2
        )
    }
}

impl Registry {
    /// Where a push to `dest` goes: the reference registries.conf makes of it, that registry's
    /// session and the repository. A digest in `dest` is refused (it is the registry's answer).
    fn push_destination(
        &self,
        dest: &Reference,
    ) -> Result<(Reference, std::sync::Arc<super::client::Host>, String)> {
        if dest.digest().is_some() {
            return Err(Error::Protocol(format!(
                "{dest}: push to a tag, not a digest (the digest is the registry's answer)"
            )));
        }
        let target = self.policy.push_target(dest)?;
        let at = target.reference.clone();
        let host = self.host(at.domain(), target.insecure)?;
        let repo = at.path().to_string();
        Ok((at, host, repo))
    }

    /// Push `img` to `dest` (its tag; a digest in `dest` is not allowed).
    pub fn push(
        &self,
        store: &Store,
        img: &ImageRecord,
        dest: &Reference,
        opts: &PushOptions,
    ) -> Result<Pushed> {
        let (at, host, repo) = self.push_destination(dest)?;
        let _w = store.writer_lock()?;
        let sources = mount_sources(store, at.domain(), &repo)?;
        let sent = self.send_image(
            &host,
            &repo,
            dest,
            store,
            img,
            opts,
            &sources,
            Some(at.tag()),
        )?;
        let (mdigest, mbytes, counts) = (sent.digest, sent.bytes, sent.counts);
        let blobs = sent.blobs;
        // Where its blobs are now, so that a later push to another repository of the same
        // registry mounts them. No local name is added (as podman and skopeo): where `dest`
        // already names this image (`build -t REF --push`, `push REF`), that name notes the
        // registry's digest, so a later `--pull` finds it current.
        let sent: Vec<Digest> = blobs.iter().map(|b| b.digest.clone()).collect();
        store.note_pushed(&at.full_name(), &sent)?;
        let name = store_name(dest).to_string();
        store.update_index(|idx| {
            for d in idx.manifests.iter_mut().filter(|d| {
                d.digest == img.manifest_digest
                    && d.annotations.get(crate::oci::REF_NAME) == Some(&name)
            }) {
                d.annotations.insert(ANN_DIGEST.into(), mdigest.to_string());
            }
            Ok(())
        })?;
        Ok(Pushed {
            reference: dest.clone(),
            digest: mdigest,
            size: mbytes.len() as u64,
            counts,
        })
    }

    /// Send `blobs` (in parallel; each HEAD first, then a mount from one of `sources` that
    /// holds it, else an upload), then the manifest under each of `selectors` (its digest, then
    /// a tag). Returns the (uploaded, mounted, already there) counts.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_parts(
        &self,
        host: &Host,
        repo: &str,
        dest: &Reference,
        store: &Store,
        blobs: &[Descriptor],
        sources: &[(String, Vec<Digest>)],
        opts: &PushOptions,
        (mt, mbytes, mdigest): (&str, &[u8], &Digest),
        selectors: &[String],
    ) -> Result<(usize, usize, usize)> {
        let at = dest;
        let counts = [
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ];
        super::for_each_parallel(blobs, PARALLEL, |b| {
            let from: Vec<&String> = sources
                .iter()
                .filter(|(_, ds)| ds.contains(&b.digest))
                .map(|(r, _)| r)
                .collect();
            let k = match self.push_blob(host, repo, dest, store, b, &from, opts)? {
                BlobOutcome::Mounted => 1,
                BlobOutcome::Present => 2,
                _ => 0,
            };
            counts[k].fetch_add(1, Ordering::SeqCst);
            Ok(())
        })?;
        // The manifest by digest, then the tag.
        for sel in selectors {
            let resp = self.send(
                host,
                &format!("PUT manifest {sel}"),
                &[scope(repo, "pull,push")],
                repo,
                &dest.to_string(),
                &|c, base| {
                    c.put(format!("{base}/v2/{repo}/manifests/{sel}"))
                        .header(CONTENT_TYPE, mt)
                        .body(mbytes.to_vec())
                },
            )?;
            if !resp.status().is_success() {
                return Err(Error::Http {
                    method: "PUT".into(),
                    url: format!("{}/v2/{repo}/manifests/{sel}", host.name),
                    status: resp.status().as_u16(),
                    body: snippet(resp),
                });
            }
            if let Some(d) = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Digest>().ok())
            {
                if &d != mdigest {
                    return Err(Error::DigestMismatch {
                        what: format!("the manifest pushed to {at}"),
                        expected: mdigest.clone(),
                        actual: d,
                    });
                }
            }
        }
        let c = |i: usize| counts[i].load(Ordering::SeqCst);
        Ok((c(0), c(1), c(2)))
    }

    #[allow(clippy::too_many_arguments)]
    fn push_blob(
        &self,
        host: &Host,
        repo: &str,
        dest: &Reference,
        store: &Store,
        b: &Descriptor,
        mount_from: &[&String],
        opts: &PushOptions,
    ) -> Result<BlobOutcome> {
        let d = &b.digest;
        let rs = dest.to_string();
        let push_scope = [scope(repo, "pull,push")];
        let head = self.send(
            host,
            &format!("HEAD blob {}", d.short()),
            &push_scope,
            repo,
            &rs,
            &|c, base| c.head(format!("{base}/v2/{repo}/blobs/{d}")),
        )?;
        if head.status().is_success() {
            self.observer.blob_done(d, BlobOutcome::Present);
            return Ok(BlobOutcome::Present);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            // A session: a mount when a source repository is known (201 = mounted; 202 = not
            // mounted, here is an upload session instead). A mount the registry refuses is not
            // an error: the blob is uploaded.
            let mut session = None;
            if let Some(src) = mount_from.first().filter(|_| attempt == 1) {
                let scopes = [scope(repo, "pull,push"), scope(src, "pull")];
                let r = self.send(
                    host,
                    &format!("mount blob {}", d.short()),
                    &scopes,
                    repo,
                    &rs,
                    &|c, base| {
                        c.post(format!(
                            "{base}/v2/{repo}/blobs/uploads/?mount={d}&from={src}"
                        ))
                        .header(CONTENT_LENGTH, "0")
                    },
                );
                match r {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        self.observer.blob_done(d, BlobOutcome::Mounted);
                        return Ok(BlobOutcome::Mounted);
                    }
                    Ok(r) if r.status() == StatusCode::ACCEPTED => session = Some(r),
                    Ok(r) => self.observer.note(&format!(
                        "mounting {} from {src} was refused (HTTP {}); uploading it",
                        d.short(),
                        r.status().as_u16()
                    )),
                    Err(e) => self.observer.note(&format!(
                        "mounting {} from {src} failed ({e}); uploading it",
                        d.short()
                    )),
                }
            }
            let resp = match session {
                Some(r) => r,
                None => self.send(
                    host,
                    &format!("start upload {}", d.short()),
                    &push_scope,
                    repo,
                    &rs,
                    &|c, base| {
                        c.post(format!("{base}/v2/{repo}/blobs/uploads/"))
                            .header(CONTENT_LENGTH, "0")
                    },
                )?,
            };
            if resp.status() != StatusCode::ACCEPTED {
                return Err(Error::Http {
                    method: "POST".into(),
                    url: format!("{}/v2/{repo}/blobs/uploads/", host.name),
                    status: resp.status().as_u16(),
                    body: snippet(resp),
                });
            }
            let loc = location(&resp, &self.base(host)?)?;
            self.observer.blob_start(d, b.size, true);
            match self.upload(host, repo, &rs, store, b, &loc, opts) {
                Ok(()) => {
                    self.observer.blob_done(d, BlobOutcome::Uploaded);
                    return Ok(BlobOutcome::Uploaded);
                }
                Err(e) if attempt < self.retry.attempts && !matches!(e, Error::Denied { .. }) => {
                    self.observer.retry(
                        &format!("upload of {}", d.short()),
                        &format!("{e}; starting a new upload session"),
                    );
                    std::thread::sleep(self.retry.backoff(attempt));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Send the blob's bytes to an upload session at `loc` and close it with its digest.
    #[allow(clippy::too_many_arguments)]
    fn upload(
        &self,
        host: &Host,
        repo: &str,
        rs: &str,
        store: &Store,
        b: &Descriptor,
        loc: &str,
        opts: &PushOptions,
    ) -> Result<()> {
        let d = &b.digest;
        let path = store.blob_path(d);
        let push_scope = [scope(repo, "pull,push")];
        let mut loc = loc.to_string();
        let base = self.base(host)?;
        if let Some(chunk) = opts.chunk_size.filter(|c| *c > 0 && *c < b.size) {
            let mut off = 0u64;
            while off < b.size {
                let n = chunk.min(b.size - off);
                let bytes = read_range(&path, off, n)?;
                let l = loc.clone();
                let resp = self.send_once(host, &push_scope, repo, rs, &|c| {
                    c.patch(&l)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header("Content-Range", format!("{off}-{}", off + n - 1))
                        .header(CONTENT_LENGTH, n.to_string())
                        .body(bytes.clone())
                })?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(Error::Http {
                        method: "PATCH".into(),
                        url: format!("{}/v2/{repo}/blobs/uploads/…", host.name),
                        status: resp.status().as_u16(),
                        body: snippet(resp),
                    });
                }
                // The session URL changes after every chunk (distribution puts state in it).
                loc = location(&resp, &base)?;
                off += n;
            }
            let url = with_digest(&loc, d);
            let resp = self.send_once(host, &push_scope, repo, rs, &|c| {
                c.put(&url).header(CONTENT_LENGTH, "0")
            })?;
            return finish(resp, host, repo, d);
        }
        let url = with_digest(&loc, d);
        // Checked here so the request below only fails on the network.
        let _ = crate::store::open_file(&path)?;
        let resp = self.send_once(host, &push_scope, repo, rs, &|c| {
            let body = match std::fs::OpenOptions::new().read(true).open(&path) {
                Ok(f) => reqwest::blocking::Body::sized(f, b.size),
                Err(_) => reqwest::blocking::Body::from(Vec::new()),
            };
            // The answer comes after the whole body: allow for a slow link (1 MB/s).
            c.put(&url)
                .timeout(self.timeouts.stall + std::time::Duration::from_secs(b.size / 1_000_000))
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, b.size.to_string())
                .body(body)
        })?;
        finish(resp, host, repo, d)
    }

    /// One request to an absolute URL (an upload session's), with auth but no retries: a
    /// session cannot be replayed, so the caller starts a new one.
    fn send_once(
        &self,
        host: &Host,
        scopes: &[String],
        repo: &str,
        rs: &str,
        mk: &dyn Fn(&reqwest::blocking::Client) -> reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response> {
        self.send_with(host, "upload", scopes, repo, rs, false, &|c, _| mk(c))
            .and_then(|r| {
                if super::client::retryable(r.status()) {
                    Err(Error::Http {
                        method: "upload".into(),
                        url: host.name.clone(),
                        status: r.status().as_u16(),
                        body: snippet(r),
                    })
                } else {
                    Ok(r)
                }
            })
    }
}

/// One image manifest as it went to a registry.
struct SentImage {
    media_type: String,
    bytes: Vec<u8>,
    digest: Digest,
    blobs: Vec<Descriptor>,
    counts: (usize, usize, usize),
}

impl Registry {
    /// Send `img`'s blobs (uncompressed layers compressed as `opts` says), then its manifest
    /// by digest and, with `tag`, under the tag.
    #[allow(clippy::too_many_arguments)]
    fn send_image(
        &self,
        host: &Host,
        repo: &str,
        dest: &Reference,
        store: &Store,
        img: &ImageRecord,
        opts: &PushOptions,
        sources: &[(String, Vec<Digest>)],
        tag: Option<&str>,
    ) -> Result<SentImage> {
        // The layers as they go on the wire.
        let mut layers = Vec::new();
        let mut changed = false;
        for l in &img.manifest.layers {
            if media::is_uncompressed_layer(&l.media_type) && opts.compression != Compression::None
            {
                layers.push(store.compressed_layer(l, opts.compression)?);
                changed = true;
            } else {
                layers.push(l.clone());
            }
        }
        let (mt, mbytes) = if !changed {
            // As stored: a pulled image keeps its digest when pushed elsewhere.
            let bytes = store.read_blob(&img.manifest_digest)?;
            let mt = img
                .manifest
                .media_type
                .clone()
                .unwrap_or_else(|| media::OCI_MANIFEST.into());
            (mt, bytes)
        } else {
            let mut config = img.manifest.config.clone();
            config.media_type = media::OCI_CONFIG.into();
            let m = Manifest {
                schema_version: 2,
                media_type: Some(media::OCI_MANIFEST.into()),
                config,
                layers: layers
                    .iter()
                    .map(|l| {
                        let mut l = l.clone();
                        if l.media_type == media::DOCKER_LAYER_GZIP {
                            l.media_type = media::OCI_LAYER_GZIP.into();
                        }
                        l
                    })
                    .collect(),
                annotations: img.manifest.annotations.clone(),
            };
            (media::OCI_MANIFEST.to_string(), canonical_json(&m))
        };
        let mdigest = Digest::of(&mbytes);
        let mut blobs = vec![img.manifest.config.clone()];
        blobs.extend(layers.iter().cloned());
        let mut selectors = vec![mdigest.to_string()];
        selectors.extend(tag.map(str::to_string));
        let counts = self.send_parts(
            host,
            repo,
            dest,
            store,
            &blobs,
            sources,
            opts,
            (&mt, &mbytes, &mdigest),
            &selectors,
        )?;
        Ok(SentImage {
            media_type: mt,
            bytes: mbytes,
            digest: mdigest,
            blobs,
            counts,
        })
    }

    /// Push the image index `index` of the store (its descriptor, as
    /// [`Store::find_index`] or [`Store::put_index`] gives it) to `dest`: every manifest it
    /// lists by digest first (each image's blobs as [`Registry::push`] sends them; an
    /// attestation manifest and its blobs as they are), then the index under the tag
    /// (`application/vnd.oci.image.index.v1+json`). An image whose layers are compressed on
    /// the way gets a new manifest digest, so the index sent lists the manifests as sent (and
    /// an attestation's `vnd.docker.reference.digest` follows its image); it is the store's
    /// index byte for byte when nothing changed. `build --push` of several platforms calls
    /// this after [`Store::put_index`]. Returns the digest of the index sent, and blob counts
    /// summed over the manifests.
    pub fn push_index(
        &self,
        store: &Store,
        index: &Descriptor,
        dest: &Reference,
        opts: &PushOptions,
    ) -> Result<Pushed> {
        let (at, host, repo) = self.push_destination(dest)?;
        let _w = store.writer_lock()?;
        let stored = store.read_blob(&index.digest)?;
        let mut idx: Index = oci::parse_json(&stored, &format!("index {}", index.digest))?;
        let sources = mount_sources(store, at.domain(), &repo)?;
        let mut counts = (0, 0, 0);
        let mut sent_blobs = Vec::new();
        let mut renamed: Vec<(Digest, Digest)> = Vec::new();
        let add = |c: &mut (usize, usize, usize), d: (usize, usize, usize)| {
            c.0 += d.0;
            c.1 += d.1;
            c.2 += d.2;
        };
        // Images first, then attestation manifests (which may name an image's new digest).
        let order: Vec<usize> = (0..idx.manifests.len())
            .filter(|&i| crate::store::is_platform_image(&idx.manifests[i]))
            .chain(
                (0..idx.manifests.len())
                    .filter(|&i| !crate::store::is_platform_image(&idx.manifests[i])),
            )
            .collect();
        for i in order {
            let m = &mut idx.manifests[i];
            if !media::is_manifest(&m.media_type) {
                return Err(Error::Protocol(format!(
                    "index {}: {} is a {}, not a manifest (nested indexes are not pushed)",
                    index.digest, m.digest, m.media_type
                )));
            }
            if crate::store::is_platform_image(m) {
                let img = store.image_of_manifest(&m.digest)?;
                let sent =
                    self.send_image(&host, &repo, dest, store, &img, opts, &sources, None)?;
                add(&mut counts, sent.counts);
                sent_blobs.extend(sent.blobs.iter().map(|b| b.digest.clone()));
                if sent.digest != m.digest {
                    renamed.push((m.digest.clone(), sent.digest.clone()));
                    m.digest = sent.digest;
                    m.size = sent.bytes.len() as u64;
                    m.media_type = sent.media_type;
                }
            } else {
                let key = "vnd.docker.reference.digest";
                if let Some((_, new)) = renamed
                    .iter()
                    .find(|(old, _)| m.annotations.get(key) == Some(&old.to_string()))
                {
                    m.annotations.insert(key.into(), new.to_string());
                }
                let bytes = store.read_blob(&m.digest)?;
                let man: Manifest = oci::parse_json(&bytes, &format!("manifest {}", m.digest))?;
                let mut blobs = vec![man.config.clone()];
                blobs.extend(man.layers.iter().cloned());
                let c = self.send_parts(
                    &host,
                    &repo,
                    dest,
                    store,
                    &blobs,
                    &sources,
                    &PushOptions {
                        compression: Compression::None,
                        ..opts.clone()
                    },
                    (&m.media_type, &bytes, &m.digest),
                    &[m.digest.to_string()],
                )?;
                add(&mut counts, c);
                sent_blobs.extend(blobs.iter().map(|b| b.digest.clone()));
            }
        }
        let (bytes, mt) = if renamed.is_empty() {
            let mt = idx
                .media_type
                .clone()
                .unwrap_or_else(|| media::OCI_INDEX.into());
            (stored, mt)
        } else {
            idx.media_type = Some(media::OCI_INDEX.into());
            (canonical_json(&idx), media::OCI_INDEX.to_string())
        };
        let digest = Digest::of(&bytes);
        self.send_parts(
            &host,
            &repo,
            dest,
            store,
            &[],
            &[],
            opts,
            (&mt, &bytes, &digest),
            &[digest.to_string(), at.tag().to_string()],
        )?;
        store.note_pushed(&at.full_name(), &sent_blobs)?;
        // As for an image: the local name that is the pushed reference notes the registry's
        // digest of the index (a later `--pull` finds it current).
        let name = store_name(dest).to_string();
        store.update_index(|entries| {
            for d in entries.manifests.iter_mut().filter(|d| {
                d.digest == index.digest && d.annotations.get(crate::oci::REF_NAME) == Some(&name)
            }) {
                d.annotations.insert(ANN_DIGEST.into(), digest.to_string());
            }
            Ok(())
        })?;
        Ok(Pushed {
            reference: dest.clone(),
            digest,
            size: bytes.len() as u64,
            counts,
        })
    }
}

fn finish(resp: reqwest::blocking::Response, host: &Host, repo: &str, d: &Digest) -> Result<()> {
    if resp.status() == StatusCode::CREATED || resp.status().is_success() {
        return Ok(());
    }
    Err(Error::Http {
        method: "PUT".into(),
        url: format!("{}/v2/{repo}/blobs/uploads/…?digest={d}", host.name),
        status: resp.status().as_u16(),
        body: snippet(resp),
    })
}

fn read_range(path: &std::path::Path, off: u64, n: u64) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = crate::store::open_file(path)?;
    let io = |e| crate::store::Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    f.seek(SeekFrom::Start(off)).map_err(io)?;
    let mut v = vec![0u8; n as usize];
    f.read_exact(&mut v).map_err(io)?;
    Ok(v)
}

/// The absolute upload URL from a `Location` header (which may be relative).
fn location(resp: &reqwest::blocking::Response, base: &str) -> Result<String> {
    let l = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Error::Protocol("the registry started an upload without a Location".into())
        })?;
    if l.starts_with("http://") || l.starts_with("https://") {
        Ok(l.to_string())
    } else if l.starts_with('/') {
        Ok(format!("{base}{l}"))
    } else {
        Ok(format!("{base}/{l}"))
    }
}

fn with_digest(loc: &str, d: &Digest) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={d}")
}

/// Repositories of `domain` (other than `repo`) that store images came from, with their blobs.
fn mount_sources(store: &Store, domain: &str, repo: &str) -> Result<Vec<(String, Vec<Digest>)>> {
    let mut out: Vec<(String, Vec<Digest>)> = Vec::new();
    // Pushed to from here.
    for (full, blobs) in store.pushed() {
        if let Some((d, r)) = full.split_once('/') {
            if d == domain && r != repo {
                out.push((r.to_string(), blobs));
            }
        }
    }
    for (desc, img) in store.entries()? {
        let Some(src) = desc.annotations.get(ANN_SOURCE) else {
            continue;
        };
        let Some((d, r)) = src.split_once('/') else {
            continue;
        };
        if d != domain || r == repo {
            continue;
        }
        let mut blobs = vec![img.manifest.config.digest.clone()];
        blobs.extend(img.manifest.layers.iter().map(|l| l.digest.clone()));
        match out.iter_mut().find(|(x, _)| x == r) {
            Some((_, v)) => v.extend(blobs),
            None => out.push((r.to_string(), blobs)),
        }
    }
    Ok(out)
}
