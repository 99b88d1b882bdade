//! Manifests that are not images: strata's build cache (an OCI image manifest whose config is
//! strata's own JSON and whose layers are cached blobs). Read and written through the same
//! session, verified blob paths and upload flow as images, with no platform selection and no
//! store name.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::client::Host;
use super::pull::Blob;
use super::push::PushOptions;
use super::{Error, Reference, Registry, Result};
use crate::oci::{Descriptor, Digest};
use crate::store::Store;

/// One repository of a registry, resolved through registries.conf as a push target (no
/// mirrors: a cache is read from and written to where it lives).
pub struct Repo {
    /// The reference as the user wrote it (messages).
    pub user_ref: Reference,
    /// Where it is after registries.conf rewrites.
    pub at: Reference,
    host: Arc<Host>,
    repo: String,
}

impl Registry {
    pub fn repo(&self, r: &Reference) -> Result<Repo> {
        let target = self.policy.push_target(r)?;
        let at = target.reference.clone();
        let host = self.host(at.domain(), target.insecure)?;
        Ok(Repo {
            user_ref: r.clone(),
            repo: at.path().to_string(),
            at,
            host,
        })
    }
}

impl Repo {
    /// Registry host and repository path, to tell whether two repos are the same.
    pub fn location(&self) -> String {
        format!("{}/{}", self.at.domain(), self.repo)
    }

    /// The manifest the tag names now: (media type, bytes, digest), or `None` when there is
    /// none yet.
    pub fn manifest(&self, reg: &Registry) -> Result<Option<(String, Vec<u8>, Digest)>> {
        match reg.get_manifest(
            &self.host,
            &self.at,
            &self.user_ref,
            &self.at.manifest_selector(),
        ) {
            Ok(m) => Ok(Some(m)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The manifest with selector `sel` (a digest) in this repository.
    pub fn manifest_at(&self, reg: &Registry, sel: &str) -> Result<(String, Vec<u8>, Digest)> {
        reg.get_manifest(&self.host, &self.at, &self.user_ref, sel)
    }

    /// A small JSON blob (a config), through the store (verified, size-capped), as bytes.
    pub fn json_blob(&self, reg: &Registry, store: &Store, d: &Descriptor) -> Result<Vec<u8>> {
        self.blob(reg, store, d, Blob::Config)?;
        Ok(store.read_blob(&d.digest)?)
    }

    /// A layer into the store, checked against its digest and `diff_id`.
    pub fn layer(
        &self,
        reg: &Registry,
        store: &Store,
        d: &Descriptor,
        diff_id: &Digest,
    ) -> Result<()> {
        self.blob(reg, store, d, Blob::Layer(diff_id))
    }

    fn blob(&self, reg: &Registry, store: &Store, d: &Descriptor, kind: Blob) -> Result<()> {
        let n = AtomicUsize::new(0);
        reg.fetch_blob(&self.host, &self.repo, &self.user_ref, d, store, kind, &n)
    }

    /// Send `blobs` that the store holds (each checked with HEAD first; the caller leaves out
    /// those it knows the repository has), then the manifest by digest and under the tag.
    /// Returns the manifest's digest and the (uploaded, mounted, already there) counts.
    pub fn put(
        &self,
        reg: &Registry,
        store: &Store,
        blobs: &[Descriptor],
        media_type: &str,
        manifest: &[u8],
    ) -> Result<(Digest, (usize, usize, usize))> {
        let d = Digest::of(manifest);
        let counts = reg.send_parts(
            &self.host,
            &self.repo,
            &self.user_ref,
            store,
            blobs,
            &[],
            &PushOptions {
                compression: crate::layer::Compression::None,
                chunk_size: None,
            },
            (media_type, manifest, &d),
            &[d.to_string(), self.at.tag().to_string()],
        )?;
        Ok((d, counts))
    }

    /// Send `blobs` (each mounted from one of `mounts`, the repositories of this registry that
    /// hold it, else uploaded from the store), then the manifest by digest only.
    pub fn put_by_digest(
        &self,
        reg: &Registry,
        store: &Store,
        blobs: &[Descriptor],
        mounts: &[(String, Vec<Digest>)],
        media_type: &str,
        manifest: &[u8],
    ) -> Result<(usize, usize, usize)> {
        let d = Digest::of(manifest);
        reg.send_parts(
            &self.host,
            &self.repo,
            &self.user_ref,
            store,
            blobs,
            mounts,
            &super::combine::as_is(),
            (media_type, manifest, &d),
            &[d.to_string()],
        )
    }
}
