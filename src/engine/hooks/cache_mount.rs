//! [`super::Hook::MakeCache`]: a RUN cache mount's directory, made once with the owner and mode
//! the step asked, inside the user namespace (the ids may be subordinate ones).

use std::path::Path;

use super::error::{at, HookError};

pub(super) fn make_cache(p: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), HookError> {
    if p.exists() {
        return Ok(());
    }
    // Made under a unique name and renamed without replacing: two steps creating the
    // same cache at once both end up with the one that won.
    let tmp = p.with_extension(format!("new{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(at(tmp.display()))?;
    std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))
        .map_err(at(format!("chown {}", tmp.display())))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(at(format!("chmod {}", tmp.display())))?;
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        &tmp,
        rustix::fs::CWD,
        p,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(_) if p.exists() => {
            let _ = std::fs::remove_dir(&tmp);
            Ok(())
        }
        Err(e) => Err(at(p.display())(std::io::Error::from(e))),
    }
}
