//! Mounting an overlay of many layers. A refusal is [`SetupError::Overlay`] (or
//! [`SetupError::OverlayTooMany`]): the engine takes that as the kernel refusing overlays and
//! uses the copy snapshotter instead.
//!
//! mount(2) takes its options as one page (4,096 bytes): with store paths of about 100
//! characters that is some 37 lower layers, and images go to 127 (Docker's limit). So the
//! layers are given one at a time with the mount API's `lowerdir+` (Linux 6.8), and on an
//! older kernel as one string, with names relative to their common directory (the store's
//! snapshots, 65 characters each: about 60 layers) when absolute paths do not fit.

use std::path::{Path, PathBuf};

use super::SetupError;

use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags,
};

/// What mount(2) accepts as options, less a margin.
const PAGE: usize = 4000;

/// An overlay of `lowers` (top first) at `target`; with `upper` = (upperdir, workdir) it is
/// writable, else read-only. `userxattr` as in a user namespace.
pub fn mount(
    target: &Path,
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
) -> Result<(), SetupError> {
    // STRATA_OVERLAY_MOUNT=legacy: the older kernels' way, for the tests.
    let api = std::env::var_os("STRATA_OVERLAY_MOUNT").is_none_or(|v| v != "legacy");
    match if api {
        mount_api(target, lowers, upper)
    } else {
        Err(rustix::io::Errno::INVAL)
    } {
        Ok(()) => return Ok(()),
        // No `lowerdir+` (before 6.8), or no mount API for overlay: the string.
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {}
        Err(e) => {
            return Err(SetupError::Overlay {
                layers: lowers.len(),
                errno: e.raw_os_error(),
            })
        }
    }
    legacy(target, lowers, upper)
}

fn mount_api(
    target: &Path,
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
) -> rustix::io::Result<()> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for l in lowers {
        fsconfig_set_string(&fs, "lowerdir+", l.as_path())?;
    }
    if let Some((u, w)) = upper {
        fsconfig_set_string(&fs, "upperdir", u)?;
        fsconfig_set_string(&fs, "workdir", w)?;
    }
    fsconfig_set_flag(&fs, "userxattr")?;
    fsconfig_create(&fs)?;
    let attrs = if upper.is_some() {
        MountAttrFlags::empty()
    } else {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    };
    let m = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    move_mount(
        &m,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}

fn legacy(
    target: &Path,
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
) -> Result<(), SetupError> {
    let tail = match upper {
        Some((u, w)) => format!(
            ",upperdir={},workdir={},userxattr",
            u.display(),
            w.display()
        ),
        None => ",userxattr".to_string(),
    };
    let abs: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let mut data = format!("lowerdir={}{tail}", abs.join(":"));
    // Too long: names relative to the lowers' common directory, from there. The caller is a
    // single-threaded sandbox process, so changing its directory for the call is safe.
    let mut back = None;
    if data.len() > PAGE {
        let parent = lowers.first().and_then(|p| p.parent());
        let (Some(parent), true) = (parent, lowers.iter().all(|p| p.parent() == parent)) else {
            return Err(too_many(lowers.len()));
        };
        let names: Vec<String> = lowers
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        data = format!("lowerdir={}{tail}", names.join(":"));
        if data.len() > PAGE {
            return Err(too_many(lowers.len()));
        }
        back = std::env::current_dir().ok();
        std::env::set_current_dir(parent)
            .map_err(super::error::io(parent.display().to_string()))?;
    }
    let flags = if upper.is_some() {
        rustix::mount::MountFlags::empty()
    } else {
        rustix::mount::MountFlags::RDONLY
    };
    let data = std::ffi::CString::new(data).map_err(|e| SetupError::Os {
        cause: super::OsError {
            errno: None,
            message: e.to_string(),
        },
    })?;
    let r = rustix::mount::mount("overlay", target, "overlay", flags, Some(data.as_c_str()));
    if let Some(b) = back {
        let _ = std::env::set_current_dir(b);
    }
    r.map_err(|e| SetupError::Overlay {
        layers: lowers.len(),
        errno: e.raw_os_error(),
    })
}

fn too_many(layers: usize) -> SetupError {
    SetupError::OverlayTooMany { layers }
}
