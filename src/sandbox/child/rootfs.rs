//! The step's root: the host's mounts made private, the overlay of the image's layers (or the
//! copy, bound onto itself), then pivot_root into it with the old root detached.

use super::{cstr, io, mount, syscall, R};
use crate::sandbox::{Rootfs, SetupError, Spec};

/// The root: mounts made private, then the overlay (or the copy, bound onto itself); its path.
pub(super) fn root_fs(spec: &Spec) -> R<String> {
    let rec_private = libc::MS_REC | libc::MS_PRIVATE;
    mount("", "/", "", rec_private, "")?;
    Ok(match &spec.rootfs {
        Rootfs::Overlay {
            lower,
            upper,
            work,
            merged,
        } => {
            crate::sandbox::overlay::mount(merged, lower, Some((upper, work)))?;
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
            mount(&r, &r, "", libc::MS_BIND | libc::MS_REC, "")?;
            r
        }
    })
}

/// pivot_root into `root`, detach the old root, name the host.
pub(super) fn pivot(root: &str, hostname: &str) -> R<()> {
    // pivot_root(".", ".") then detach the old root: no directory is left in the new root.
    std::env::set_current_dir(root).map_err(io(format!("chdir {root}")))?;
    let dot = cstr(".");
    // SAFETY: pivot_root via syscall with valid path pointers.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
        return Err(syscall("pivot_root"));
    }
    // SAFETY: see above.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(syscall("detaching the old root"));
    }
    std::env::set_current_dir("/").map_err(io("chdir /"))?;
    let host = cstr(hostname);
    // SAFETY: valid pointer and length.
    unsafe { libc::sethostname(host.as_ptr(), hostname.len()) };
    Ok(())
}
