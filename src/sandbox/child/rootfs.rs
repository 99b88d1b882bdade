//! The step's root: the host's mounts made private, the overlay of the image's layers (or the
//! copy, bound onto itself), then pivot_root into it with the old root detached.

use super::{cstr, io, mount, refused, R};
use crate::sandbox::sys::Sys;
use crate::sandbox::{Rootfs, SetupError, Spec};

/// The root: mounts made private, then the overlay (or the copy, bound onto itself); its path.
pub(super) fn root_fs(sys: &dyn Sys, spec: &Spec) -> R<String> {
    let rec_private = libc::MS_REC | libc::MS_PRIVATE;
    mount(sys, "", "/", "", rec_private, "")?;
    Ok(match &spec.rootfs {
        Rootfs::Overlay {
            lower,
            upper,
            work,
            merged,
        } => {
            sys.mount_overlay(merged, lower, Some((upper, work)))?;
            merged.display().to_string()
        }
        Rootfs::Copy { lower, root, state } => {
            if !state.exists() {
                let st = crate::sandbox::copyfs::prepare(lower, root)
                    .map_err(io(format!("copying the image into {}", root.display())))?;
                st.save(state)
                    .map_err(|e| SetupError::Os { cause: e.into() })?;
            }
            let r = root.display().to_string();
            // pivot_root needs a mount point.
            mount(sys, &r, &r, "", libc::MS_BIND | libc::MS_REC, "")?;
            r
        }
    })
}

/// pivot_root into `root`, detach the old root, name the host.
pub(super) fn pivot(sys: &dyn Sys, root: &str, hostname: &str) -> R<()> {
    let chdir = |dir: &str| {
        sys.chdir(&cstr(dir))
            .map_err(|e| io(format!("chdir {dir}"))(e.into()))
    };
    // pivot_root(".", ".") then detach the old root: no directory is left in the new root.
    chdir(root)?;
    sys.pivot_root(".", ".").map_err(refused("pivot_root"))?;
    sys.umount2(".", libc::MNT_DETACH)
        .map_err(refused("detaching the old root"))?;
    chdir("/")?;
    // As before the seam: a hostname the kernel refuses is not a failure.
    let _ = sys.sethostname(hostname);
    Ok(())
}
