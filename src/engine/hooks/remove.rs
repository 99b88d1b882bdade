//! [`super::Hook::Remove`]: trees that may hold files of subordinate ids, removed inside the
//! user namespace.

use std::path::PathBuf;

use super::error::{at, HookError};

pub(super) fn remove(paths: &[PathBuf]) -> Result<(), HookError> {
    for p in paths {
        crate::store::make_writable(p);
        match std::fs::remove_dir_all(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(format!("removing {}", p.display()))(e)),
        }
    }
    Ok(())
}
