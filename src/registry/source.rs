//! The one seam between a reference and a local image: build (`FROM`, `COPY --from=IMAGE`,
//! `--build-context docker-image://`), `run` and `check` all resolve images here.
//!
//! - [`PullPolicy::Missing`] (the default): the store's copy if it has one, else a pull.
//! - [`PullPolicy::Always`] (`--pull`): one HEAD asks the registry what the reference points to;
//!   when the store has that digest nothing is downloaded, otherwise the new image is pulled and
//!   the move is reported ("python:3.12-slim moved from sha256:a… to sha256:b…").
//! - [`PullPolicy::Never`]: the store only (`check`).
//!
//! Each reference is resolved once per `ImageSource`, so the stages of one build agree.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::pull::{store_name, ANN_DIGEST};
use super::{Error, Observer, Reference, Registry, Result};
use crate::oci::{Descriptor, Digest, Platform};
use crate::store::{ImageRecord, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    #[default]
    Missing,
    Always,
    Never,
}

/// A reference resolved to an image in the store.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub record: ImageRecord,
    /// The reference as normalised (None when the input was an image id).
    pub reference: Option<Reference>,
    /// The digest the reference stands for: the registry's (an index or a manifest) when the
    /// image came from one, else the manifest's.
    pub digest: Digest,
    /// It was downloaded now.
    pub pulled: bool,
    /// With `--pull`: the digest the store had before the reference moved.
    pub moved_from: Option<Digest>,
}

impl Resolved {
    /// An image the store already has.
    fn local(digest: Digest, record: ImageRecord, reference: Option<Reference>) -> Resolved {
        Resolved {
            record,
            reference,
            digest,
            pulled: false,
            moved_from: None,
        }
    }
}

pub struct ImageSource<'a> {
    store: &'a Store,
    policy: PullPolicy,
    platform: Platform,
    observer: Arc<dyn Observer + Send + Sync>,
    registry: OnceLock<std::result::Result<Registry, Arc<Error>>>,
    done: Mutex<HashMap<String, Resolved>>,
    /// One resolution at a time per reference (two stages with the same base pull it once).
    busy: Mutex<()>,
}

impl<'a> ImageSource<'a> {
    pub fn new(
        store: &'a Store,
        policy: PullPolicy,
        platform: Platform,
        observer: Arc<dyn Observer + Send + Sync>,
    ) -> ImageSource<'a> {
        ImageSource {
            store,
            policy,
            platform,
            observer,
            registry: OnceLock::new(),
            done: Mutex::new(HashMap::new()),
            busy: Mutex::new(()),
        }
    }

    /// The registry session (policy, hosts, tokens) this source pulls with, made on first use.
    pub fn registry(&self) -> Result<&Registry> {
        let r = self.registry.get_or_init(|| {
            Registry::from_environment()
                .map(|r| r.with_observer(self.observer.clone()))
                .map_err(Arc::new)
        });
        r.as_ref()
            .map_err(|e| Error::Protocol(format!("registry configuration: {e}")))
    }

    /// The image `input` names: a reference, or an image id (or unique id prefix) of the store.
    pub fn image(&self, input: &str) -> Result<Resolved> {
        self.image_for(input, None)
    }

    /// [`ImageSource::image`] for another platform than the source's (`FROM --platform`).
    pub fn image_for(&self, input: &str, platform: Option<&Platform>) -> Result<Resolved> {
        let platform = platform.unwrap_or(&self.platform);
        let key = format!(
            "{input} {}/{}/{}",
            platform.os,
            platform.architecture,
            platform.variant.as_deref().unwrap_or("")
        );
        let _one = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = self
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(r.clone());
        }
        let r = self.resolve(input, platform)?;
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, r.clone());
        Ok(r)
    }

    fn resolve(&self, input: &str, platform: &Platform) -> Result<Resolved> {
        // An image id (`sha256:…`, as named contexts from OCI layouts pass it) is the store's,
        // whatever the pull policy: no registry knows it.
        if input
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() >= 4 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            if let Ok(rec) = self.store.resolve(input) {
                return Ok(Resolved::local(rec.manifest_digest.clone(), rec, None));
            }
        }
        let parsed = match self.registry() {
            Ok(reg) => reg.policy.parse_reference(input),
            Err(_) => Reference::parse(input).map_err(Error::from),
        };
        let r = match parsed {
            Ok(r) => r,
            Err(e) => {
                // Not a reference: an image id or a prefix of one.
                return match self.store.resolve(input) {
                    Ok(rec) => Ok(Resolved::local(rec.manifest_digest.clone(), rec, None)),
                    Err(_) => Err(e),
                };
            }
        };
        let (local, other_platform) = self.local(&r, platform)?;
        if self.policy != PullPolicy::Always {
            if let Some((desc, rec)) = local {
                return Ok(Resolved::local(registry_digest(&desc, &rec), rec, Some(r)));
            }
            // An image id typed as a bare hex prefix parses as a name: try the store's ids
            // (not when the name is there, pulled for another platform: it is pulled for this).
            if !other_platform {
                if let Ok(rec) = self.store.resolve(input) {
                    return Ok(Resolved::local(rec.manifest_digest.clone(), rec, Some(r)));
                }
            }
            if self.policy == PullPolicy::Never {
                return Err(Error::NotFound {
                    reference: r.to_string(),
                    registry: "the local store".into(),
                    repository: r.full_name(),
                    detail: "not pulled yet (this command does not pull)".into(),
                });
            }
            return self.pull(&r, None, platform);
        }
        // --pull: ask the registry where the reference points now.
        let reg = self.registry()?;
        let head = reg.head(&r);
        match (head, local) {
            (Ok((now, _)), Some((desc, rec))) => {
                let had = registry_digest(&desc, &rec);
                if had == now || rec.manifest_digest == now {
                    self.observer.current(&r.to_string(), &now);
                    return Ok(Resolved::local(had, rec, Some(r)));
                }
                self.observer.moved(&r.to_string(), &had, &now);
                self.pull(&r, Some(had), platform)
            }
            (Ok(_), None) => self.pull(&r, None, platform),
            // A local image the registry does not know (built or imported here): use it.
            (Err(Error::NotFound { .. }), Some((desc, rec)))
                if !desc.annotations.contains_key(ANN_DIGEST) =>
            {
                Ok(Resolved::local(rec.manifest_digest.clone(), rec, Some(r)))
            }
            (Err(e), _) => Err(e),
        }
    }

    fn pull(
        &self,
        r: &Reference,
        moved_from: Option<Digest>,
        platform: &Platform,
    ) -> Result<Resolved> {
        let reg = self.registry()?;
        let p = reg.pull(self.store, r, platform)?;
        Ok(Resolved {
            record: p.record,
            reference: Some(r.clone()),
            digest: p.digest,
            pulled: true,
            moved_from,
        })
    }

    /// The store's entry for `r`: by name, or for a pinned reference by digest (the manifest's
    /// or the registry's); and whether the store has it pulled for another platform only.
    fn local(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<(Option<(Descriptor, ImageRecord)>, bool)> {
        let name = store_name(r).to_string();
        // A name (or digest) of an image index of the store: its image for `platform`; an
        // index without one is an error naming the platforms it has, not a pull.
        // A pinned reference's name first: the index of the platforms pulled under it.
        let mut key = name.clone();
        let mut found = self.store.find_index(&key)?;
        if let (None, Some(d)) = (&found, r.digest()) {
            key = d.to_string();
            found = self.store.find_index(&key)?;
        }
        if let Some((mut desc, index)) = found {
            // An index of the platforms pulled under the name so far: another platform is
            // pulled (and joins them).
            if desc.annotations.contains_key(ANN_DIGEST)
                && crate::store::platform_manifest(&index, platform).is_none()
            {
                return Ok((None, true));
            }
            let rec = self.store.resolve_platform(&key, Some(platform))?;
            // What the name stands for at a registry is the index (as pushed, when a push
            // noted it), not the platform's manifest: `--pull` compares that.
            let index = desc.digest.to_string();
            desc.annotations.entry(ANN_DIGEST.into()).or_insert(index);
            return Ok((Some((desc, rec)), false));
        }
        let found = self.store.find_entry(|d| match r.digest() {
            Some(dg) => {
                d.digest == *dg
                    || d.annotations.get(ANN_DIGEST).map(String::as_str) == Some(dg.as_str())
            }
            None => d.annotations.get(crate::oci::REF_NAME) == Some(&name),
        })?;
        // An image pulled for another platform than `platform` (a multi-platform build's
        // `$BUILDPLATFORM` stage pulled the base first) is not the answer: the registry is
        // asked for this one, which then joins it under the name (an index of both). An image
        // made here (built, imported, loaded) is kept, and the caller names its platform if it
        // is the wrong one.
        Ok(match found {
            Some((desc, rec))
                if desc.annotations.contains_key(ANN_DIGEST)
                    && r.digest() != Some(&desc.digest)
                    && !same_platform(&rec, platform) =>
            {
                (None, true)
            }
            found => (found, false),
        })
    }
}

/// `rec` is an image of `platform`'s OS and architecture (or says none).
fn same_platform(rec: &ImageRecord, platform: &Platform) -> bool {
    if rec.config.architecture.is_empty() {
        return true;
    }
    let have = Platform {
        architecture: rec.config.architecture.clone(),
        os: rec.config.os.clone(),
        os_version: None,
        variant: rec.config.variant.clone(),
    }
    .normalized();
    let want = platform.normalized();
    have.os == want.os && have.architecture == want.architecture
}

fn registry_digest(desc: &Descriptor, rec: &ImageRecord) -> Digest {
    desc.annotations
        .get(ANN_DIGEST)
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| rec.manifest_digest.clone())
}
