//! Supply chain: the SBOM of a stored image, made from its layers' package lists
//! ([`crate::sbom`]), each layer scanned once and its list kept in the store beside the
//! layer's facts (`facts/<hex>.pkgs`), so a rebuild that changes the app layer scans that
//! layer only.

use std::io::{BufReader, Seek, SeekFrom};

use crate::engine::error::{BuildError, Doing as _};
use crate::oci::Descriptor;
use crate::sbom::{self, ImageInfo, Inventory, LayerPackages, LayerRef};
use crate::store::{ImageRecord, Store};

/// The SBOM formats `strata sbom` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    SpdxJson,
    CycloneDxJson,
}

impl SbomFormat {
    pub fn parse(s: &str) -> Option<SbomFormat> {
        match s {
            "spdx-json" | "spdx" => Some(SbomFormat::SpdxJson),
            "cyclonedx-json" | "cyclonedx" => Some(SbomFormat::CycloneDxJson),
            _ => None,
        }
    }
}

/// The packages of the layer blob `layer`: from the store's cache, else scanned from the blob
/// (an uncompressed blob by seeking past what is no evidence) and kept.
pub fn layer_packages(store: &Store, layer: &Descriptor) -> Result<LayerPackages, BuildError> {
    let cached = store.layer_packages_file(&layer.digest);
    if let Ok(p) = LayerPackages::load(&cached) {
        return Ok(p);
    }
    let what = || format!("reading the packages of layer {}", layer.digest);
    let mut f = store.open_blob(&layer.digest)?;
    let mut head = [0u8; 4];
    let n = std::io::Read::read(&mut f, &mut head).doing_with(what)?;
    f.seek(SeekFrom::Start(0)).doing_with(what)?;
    let found = if crate::layer::sniff(&head[..n]) == crate::layer::Compression::None {
        let mut scanner = sbom::Scanner::new(sbom::ScanOptions::default());
        let mut archive = tar::Archive::new(BufReader::with_capacity(256 << 10, f));
        for e in archive.entries_with_seek().doing_with(what)? {
            scanner.add(&mut e.doing_with(what)?).doing_with(what)?;
        }
        scanner.finish()
    } else {
        let r = crate::layer::decompress(f).doing_with(what)?;
        sbom::scan_layer(r).doing_with(what)?
    };
    // Best effort: without the cache the next SBOM scans the layer again.
    let _ = store.put_layer_packages(&layer.digest, &found);
    Ok(found)
}

/// The layers of `image`, bottom first, as the SBOM names them: diffID, blob digest and the
/// history entry (the instruction) that made each.
pub fn layer_refs(image: &ImageRecord) -> Vec<LayerRef> {
    let mut made_by = image
        .config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.created_by.clone().unwrap_or_default());
    image
        .manifest
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids)
        .map(|(l, d)| LayerRef {
            diff_id: d.clone(),
            digest: Some(l.digest.clone()),
            created_by: made_by.next().unwrap_or_default(),
        })
        .collect()
}

/// The packages of `image` once its layers are stacked.
pub fn inventory(store: &Store, image: &ImageRecord) -> Result<Inventory, BuildError> {
    let refs = layer_refs(image);
    let found = image
        .manifest
        .layers
        .iter()
        .map(|l| layer_packages(store, l))
        .collect::<Result<Vec<_>, _>>()?;
    let layers: Vec<(LayerRef, &LayerPackages)> = refs.into_iter().zip(found.iter()).collect();
    Ok(sbom::merge(&layers))
}

/// The SBOM of `image` in `format`, named `name`, dated `created` (seconds since the epoch).
pub fn document(
    store: &Store,
    image: &ImageRecord,
    name: &str,
    created: i64,
    format: SbomFormat,
) -> Result<Vec<u8>, BuildError> {
    let inv = inventory(store, image)?;
    let info = ImageInfo {
        name: name.to_string(),
        digest: image.manifest_digest.clone(),
        created,
    };
    Ok(match format {
        SbomFormat::SpdxJson => sbom::spdx::to_bytes(&inv, &info),
        SbomFormat::CycloneDxJson => sbom::cyclonedx::to_bytes(&inv, &info),
    })
}
