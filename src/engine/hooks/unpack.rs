//! [`super::Hook::Unpack`]: a layer unpacked into its snapshot, owners kept as seen inside.

use std::path::{Path, PathBuf};

use super::error::{at, bare, HookError};
use crate::layer::ApplyOptions;
use crate::oci::Digest;

pub(super) fn unpack(
    blob: &Path,
    dest: &Path,
    diff_id: &Digest,
    lower: &[PathBuf],
) -> Result<(), HookError> {
    let f = fs_err::File::open(blob).map_err(bare)?;
    let r = crate::layer::decompress_pipelined(f).map_err(at(blob.display()))?;
    let report = crate::store::unpack_verified(
        r,
        dest,
        diff_id,
        &ApplyOptions {
            chown: true,
            overlay_whiteouts: true,
        },
        lower,
    )
    .map_err(bare)?;
    if !report.skipped_devices.is_empty() {
        eprintln!(
            "warning: {} device node(s) left out of layer {diff_id}: {}",
            report.skipped_devices.len(),
            report.skipped_devices.join(", ")
        );
    }
    Ok(())
}
