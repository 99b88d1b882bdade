//! Scan arbitrary bytes as a layer tar for packages, then merge and write both documents:
//! nothing may panic, and a scan keeps no more than its bounds allow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::oci::Digest;
use strata::sbom::{self, ImageInfo, LayerRef, ScanOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(l) = sbom::scan_layer_with(data, ScanOptions { files: true }) else {
        return;
    };
    assert!(l.count() <= sbom::limits::PACKAGES);
    assert!(l.deleted.len() + l.opaque.len() <= sbom::limits::WHITEOUTS);
    let r = LayerRef { diff_id: Digest::of(data), digest: None, created_by: "RUN x".into() };
    let inv = sbom::merge(&[(r.clone(), &l), (r, &l)]);
    let image = ImageInfo { name: "x:latest".into(), digest: Digest::of(b"x"), created: 0 };
    let _ = sbom::spdx::to_bytes(&inv, &image);
    let _ = sbom::cyclonedx::to_bytes(&inv, &image);
});
