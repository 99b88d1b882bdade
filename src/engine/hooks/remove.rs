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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn remove_takes_read_only_trees_and_passes_over_missing_ones() {
        let d = std::env::temp_dir().join(format!("strata-hookrm-{}", std::process::id()));
        let tree = d.join("tree");
        fs_err::create_dir_all(tree.join("ro/deep")).unwrap();
        fs_err::write(tree.join("ro/deep/f"), "x").unwrap();
        for p in ["ro/deep", "ro"] {
            std::fs::set_permissions(tree.join(p), std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        remove(&[tree.clone(), d.join("missing")]).unwrap();
        assert!(!tree.exists());
        assert!(d.exists(), "only the trees named go");

        // A path below a file: the error names the path and keeps the errno.
        fs_err::write(d.join("file"), "x").unwrap();
        let below = d.join("file/below");
        let e = remove(std::slice::from_ref(&below)).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOTDIR));
        assert!(
            e.to_string()
                .starts_with(&format!("removing {}: ", below.display())),
            "{e}"
        );
        fs_err::remove_dir_all(&d).unwrap();
    }
}
