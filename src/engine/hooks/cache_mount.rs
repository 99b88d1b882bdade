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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_cache_dir_is_made_once_with_the_owner_and_mode_asked() {
        let d = std::env::temp_dir().join(format!("strata-hookcache-{}", std::process::id()));
        fs_err::create_dir_all(&d).unwrap();
        let p = d.join("cache");
        let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
        make_cache(&p, uid.as_raw(), gid.as_raw(), 0o1770).unwrap();
        let m = fs_err::metadata(&p).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.mode() & 0o7777, 0o1770);
        assert_eq!((m.uid(), m.gid()), (uid.as_raw(), gid.as_raw()));

        // Made once: a second step asking another mode finds the first one's dir.
        fs_err::write(p.join("kept"), "x").unwrap();
        make_cache(&p, uid.as_raw(), gid.as_raw(), 0o755).unwrap();
        assert_eq!(fs_err::metadata(&p).unwrap().mode() & 0o7777, 0o1770);
        assert!(p.join("kept").exists());
        let names: Vec<_> = fs_err::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["cache"], "no temporary dir left beside it");
        fs_err::remove_dir_all(&d).unwrap();
    }
}
