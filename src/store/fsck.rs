//! `strata fsck`: check every blob against its digest and every reference against the blobs.

use super::{Result, Store};
use crate::layer;
use crate::oci::{self, media, Digest, ImageConfig, Index, Manifest, REF_NAME};

/// One problem found, in words that name the blob or reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub images_checked: usize,
    pub problems: Vec<Problem>,
    /// Leftovers of interrupted writes in tmp (harmless; `prune` removes them).
    pub leftovers: usize,
}

impl Store {
    pub fn fsck(&self) -> Result<FsckReport> {
        let _w = self.writer_lock()?;
        let mut r = FsckReport::default();
        let blobs = self.layout_dir().join("blobs/sha256");
        for e in super::at(&blobs, std::fs::read_dir(&blobs))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(want) = format!("sha256:{name}").parse::<Digest>() else {
                r.problems
                    .push(Problem(format!("unexpected file in blobs/sha256: {name}")));
                continue;
            };
            r.blobs_checked += 1;
            let mut f = match super::open_file(&e.path()) {
                Ok(f) => f,
                Err(err) => {
                    r.problems.push(Problem(format!("blob {want}: {err}")));
                    continue;
                }
            };
            let mut hr = oci::HashingReader::new(&mut f);
            if let Err(err) = std::io::copy(&mut hr, &mut std::io::sink()) {
                r.problems.push(Problem(format!("blob {want}: {err}")));
                continue;
            }
            let (actual, _) = hr.finish();
            if actual != want {
                r.problems.push(Problem(format!(
                    "blob {want} is corrupt: its content hashes to {actual}"
                )));
            }
        }
        let index: Index = match self.index() {
            Ok(i) => i,
            Err(e) => {
                r.problems.push(Problem(format!("index.json: {e}")));
                return Ok(r);
            }
        };
        for d in &index.manifests {
            let name = d
                .annotations
                .get(REF_NAME)
                .cloned()
                .unwrap_or_else(|| d.digest.to_string());
            r.images_checked += 1;
            self.check_manifest(&name, d, &mut r.problems);
        }
        r.leftovers = std::fs::read_dir(self.tmp_dir())
            .map(|rd| rd.count())
            .unwrap_or(0);
        Ok(r)
    }

    fn check_manifest(&self, name: &str, d: &oci::Descriptor, problems: &mut Vec<Problem>) {
        let mut p = |m: String| problems.push(Problem(format!("{name}: {m}")));
        let bytes = match self.read_blob(&d.digest) {
            Ok(b) => b,
            Err(e) => return p(format!("manifest: {e}")),
        };
        if media::is_index(&d.media_type) {
            match oci::parse_json::<Index>(&bytes, "index") {
                Ok(i) => {
                    for m in &i.manifests {
                        self.check_manifest(name, m, problems);
                    }
                }
                Err(e) => p(e.to_string()),
            }
            return;
        }
        let m: Manifest = match oci::parse_json(&bytes, "manifest") {
            Ok(m) => m,
            Err(e) => return p(e.to_string()),
        };
        // An attestation manifest of an index: its config and layers are not an image's.
        if d.annotations.contains_key(super::REFERENCE_TYPE) {
            for b in std::iter::once(&m.config).chain(&m.layers) {
                if let Err(e) = self.read_blob(&b.digest) {
                    p(format!("attestation {}: {e}", d.digest));
                }
            }
            return;
        }
        let cfg: ImageConfig = match self
            .read_blob(&m.config.digest)
            .map_err(|e| e.to_string())
            .and_then(|b| oci::parse_json(&b, "config").map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => return p(format!("config {}: {e}", m.config.digest)),
        };
        if cfg.rootfs.diff_ids.len() != m.layers.len() {
            p(format!(
                "config lists {} diff_ids but the manifest has {} layers",
                cfg.rootfs.diff_ids.len(),
                m.layers.len()
            ));
        }
        for (l, diff) in m.layers.iter().zip(&cfg.rootfs.diff_ids) {
            let f = match self.open_blob(&l.digest) {
                Ok(f) => f,
                Err(e) => {
                    p(format!("layer: {e}"));
                    continue;
                }
            };
            let actual = layer::decompress(f).and_then(|r| {
                let mut hr = oci::HashingReader::new(r);
                std::io::copy(&mut hr, &mut std::io::sink())?;
                Ok(hr.finish().0)
            });
            match actual {
                Ok(a) if &a == diff => {}
                Ok(a) => p(format!(
                    "layer {} uncompresses to {a}, but the config says {diff}",
                    l.digest
                )),
                Err(e) => p(format!("layer {}: {e}", l.digest)),
            }
        }
    }
}
