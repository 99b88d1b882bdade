//! Snapshots: each layer unpacked once into `snapshots/sha256/<diffID>/`, then shared read-only
//! (the sandbox mounts them as overlay lower dirs). A snapshot is unpacked into tmp and renamed
//! into place, so it is either whole or absent.

use std::path::PathBuf;

use super::{at, Error, Result, Store};
use crate::layer::{self, ApplyOptions, ApplyReport};
use crate::oci::{Descriptor, Digest};

impl Store {
    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.base.join("snapshots/sha256").join(diff_id.hex())
    }

    /// The layer blob whose uncompressed content is `diff_id`, from any image in the store.
    pub fn layer_for_diff_id(&self, diff_id: &Digest) -> Result<Descriptor> {
        for img in self.images()? {
            if let Some(i) = img.config.rootfs.diff_ids.iter().position(|d| d == diff_id) {
                if let Some(l) = img.manifest.layers.get(i) {
                    return Ok(l.clone());
                }
            }
        }
        Err(Error::Invalid(format!(
            "no image in the store has a layer with diffID {diff_id}"
        )))
    }

    /// The unpacked layer `diff_id`, unpacking it on first use (in this process). Returns its
    /// path and, when it was unpacked now, what had to be left out.
    pub fn snapshot(&self, diff_id: &Digest) -> Result<(PathBuf, Option<ApplyReport>)> {
        let mut report = None;
        let p = self.snapshot_with(diff_id, |blob, dest| {
            let r = at(blob, std::fs::File::open(blob))
                .and_then(|f| at(dest, layer::decompress_pipelined(f)))?;
            report = Some(unpack_verified(
                r,
                dest,
                diff_id,
                &ApplyOptions {
                    overlay_whiteouts: true,
                    ..Default::default()
                },
                &[],
            )?);
            Ok(())
        })?;
        Ok((p, report))
    }

    /// The unpacked layer `diff_id`; on first use `unpack(blob, dir)` fills a new directory
    /// (for example inside a user namespace, so that owners are kept as seen there), which is
    /// then renamed into place.
    pub fn snapshot_with(
        &self,
        diff_id: &Digest,
        unpack: impl FnOnce(&std::path::Path, &std::path::Path) -> Result<()>,
    ) -> Result<PathBuf> {
        if self.snapshot_path(diff_id).exists() {
            return Ok(self.snapshot_path(diff_id));
        }
        let desc = self.layer_for_diff_id(diff_id)?;
        self.snapshot_of(diff_id, &desc.digest, unpack)
    }

    /// [`Store::snapshot_with`] for a layer blob known by digest (one no image refers to yet,
    /// such as a build step's).
    /// The unpacker's own error type comes back as it is (the engine's carries the sandbox's
    /// typed error and its advice).
    pub fn snapshot_of<E: From<Error>>(
        &self,
        diff_id: &Digest,
        blob: &Digest,
        unpack: impl FnOnce(&std::path::Path, &std::path::Path) -> std::result::Result<(), E>,
    ) -> std::result::Result<PathBuf, E> {
        let dest = self.snapshot_path(diff_id);
        if dest.exists() {
            return Ok(dest);
        }
        let _w = self.writer_lock()?;
        // One unpack per layer at a time: concurrent builds (or stages) wait for the first.
        let _one = self.lock(
            &format!("snapshot-{}.lock", diff_id.hex()),
            super::LockKind::Exclusive,
        )?;
        if dest.exists() {
            return Ok(dest);
        }
        let desc_digest = blob.clone();
        let tmp = self.tmp_dir().join(super::io_util::unique_name("snapshot"));
        at(&tmp, std::fs::create_dir(&tmp))?;
        match unpack(&self.blob_path(&desc_digest), &tmp) {
            Ok(()) => {
                at(&dest, std::fs::rename(&tmp, &dest))?;
                super::io_util::sync_dir(dest.parent().unwrap_or(&dest));
                Ok(dest)
            }
            Err(e) => {
                super::images::make_writable(&tmp);
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }
}

impl Store {
    /// Make `dir` (a finished step's upper dir, whose content is exactly the layer `diff_id`)
    /// the snapshot of that layer, saving an unpack. Returns false (leaving `dir`) when the
    /// snapshot already exists.
    pub fn adopt_snapshot(&self, diff_id: &Digest, dir: &std::path::Path) -> Result<bool> {
        let dest = self.snapshot_path(diff_id);
        if dest.exists() {
            return Ok(false);
        }
        match std::fs::rename(dir, &dest) {
            Ok(()) => {
                super::io_util::sync_dir(dest.parent().unwrap_or(&dest));
                Ok(true)
            }
            Err(_) if dest.exists() => Ok(false),
            Err(e) => Err(at(&dest, Err::<(), _>(e)).unwrap_err()),
        }
    }
}

/// Apply a layer and check that the tar hashes to `diff_id`; a snapshot over the snapshots
/// `lower` (top first; see [`layer::apply::apply_layer_over`]).
pub fn unpack_verified(
    mut r: layer::Pipelined,
    dest: &std::path::Path,
    diff_id: &Digest,
    opts: &ApplyOptions,
    lower: &[PathBuf],
) -> Result<ApplyReport> {
    let report = layer::apply::apply_layer_over(&mut r, dest, opts, lower)?;
    // The hash covers the whole stream, the tar's end padding included.
    let actual = at(dest, r.finish())?;
    if &actual != diff_id {
        return Err(crate::oci::Error::DigestMismatch {
            what: format!("layer {diff_id}"),
            expected: diff_id.clone(),
            actual,
        }
        .into());
    }
    Ok(report)
}

impl Store {
    /// Apply every layer of an image, in order, onto `dest` (created; must not exist or be
    /// empty). Returns what each layer had to leave out.
    pub fn unpack(
        &self,
        img: &super::ImageRecord,
        dest: &std::path::Path,
    ) -> Result<Vec<ApplyReport>> {
        if dest.exists()
            && std::fs::read_dir(dest)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(Error::Invalid(format!(
                "{}: exists and is not empty",
                dest.display()
            )));
        }
        at(dest, std::fs::create_dir_all(dest))?;
        let mut reports = Vec::new();
        for l in &img.manifest.layers {
            let r = at(dest, layer::decompress(self.open_blob(&l.digest)?))?;
            reports.push(layer::apply_layer(r, dest, &ApplyOptions::default())?);
        }
        Ok(reports)
    }
}
