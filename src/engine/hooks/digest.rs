//! [`super::Hook::TreeDigest`]: the digest of what a bind mount of a path in a stack of layers
//! shows, read through a view of those layers.

use std::path::{Path, PathBuf};

use super::error::{at, HookError};
use crate::sandbox;

/// The digest of the tree at `sub` below `root` (symlinks in `sub` followed inside the root, as
/// a bind mount's source is): every entry's path below it, kind, permission bits, owner, and
/// content or link target, in name order; times are left out, as in BuildKit's content
/// checksums. A missing source has a digest of its own (the step then fails on its mount).
pub fn tree_digest(root: &Path, sub: &str) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let clean = crate::fsx::clean(&format!("/{sub}"));
    let rel = clean.trim_start_matches('/');
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let start = match crate::fsx::resolve_in_root(root, Path::new(rel), 0) {
        Ok(r) => root.join(r),
        Err(_) => {
            h.update(b"missing");
            return Ok(hex::encode(h.finish()));
        }
    };
    let mut stack = vec![(start, String::new())];
    while let Some((p, name)) = stack.pop() {
        let m = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name.is_empty() => {
                h.update(b"missing");
                break;
            }
            Err(e) => return Err(e),
        };
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "d"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_file() {
            "f"
        } else if ft.is_char_device() || ft.is_block_device() {
            "c"
        } else {
            "o"
        };
        h.update(
            format!(
                "{name}\0{kind}\0{:o}\0{}\0{}\0",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            )
            .as_bytes(),
        );
        match kind {
            "f" => {
                let mut f = fs_err::File::open(&p)?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            "l" => h.update(std::fs::read_link(&p)?.as_os_str().as_encoded_bytes()),
            "c" => h.update(m.rdev().to_string().as_bytes()),
            "d" => {
                let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&p)?
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<std::io::Result<_>>()?;
                // Popped in name order.
                names.sort();
                for n in names.into_iter().rev() {
                    let child = format!("{name}/{}", n.to_string_lossy());
                    stack.push((p.join(&n), child));
                }
            }
            _ => {}
        }
        h.update(b"\n");
    }
    Ok(hex::encode(h.finish()))
}

/// A read-only view of `lowers` (top first): an empty dir below `work`, the single dir
/// itself, or an overlay of several below `work`.
pub(super) fn view(lowers: &[PathBuf], work: &Path) -> Result<PathBuf, HookError> {
    Ok(match lowers {
        [] => {
            let empty = work.join("empty");
            std::fs::create_dir_all(&empty).map_err(at(empty.display()))?;
            empty
        }
        [one] => one.clone(),
        many => {
            let at_ = work.join("view");
            std::fs::create_dir_all(&at_).map_err(at(at_.display()))?;
            sandbox::overlay::mount(&at_, many, None).map_err(|cause| HookError::Setup {
                what: Some("a view of the layers".into()),
                cause: Box::new(cause),
            })?;
            at_
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_tree_digest_covers_names_modes_contents_and_links_not_times() {
        let root = std::env::temp_dir().join(format!("strata-hookdig-{}", std::process::id()));
        let a = root.join("a");
        fs_err::create_dir_all(a.join("sub")).unwrap();
        fs_err::write(a.join("f"), "one").unwrap();
        fs_err::write(a.join("sub/g"), "two").unwrap();
        chmod(&a.join("f"), 0o644);
        std::os::unix::fs::symlink("f", a.join("link")).unwrap();
        let d = || tree_digest(&root, "a").unwrap();
        let first = d();
        assert_eq!(first.len(), 64);
        // The path is cleaned as a bind mount's source is.
        assert_eq!(tree_digest(&root, "/a/./sub/..").unwrap(), first);

        // Times are left out.
        let f = fs_err::File::options()
            .write(true)
            .open(a.join("f"))
            .unwrap();
        f.file()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(7))
            .unwrap();
        drop(f);
        assert_eq!(d(), first);

        // Permission bits, content, a link's target and a name each change it.
        chmod(&a.join("f"), 0o600);
        let moded = d();
        assert_ne!(moded, first);
        chmod(&a.join("f"), 0o644);
        assert_eq!(d(), first);
        fs_err::write(a.join("sub/g"), "twO").unwrap();
        assert_ne!(d(), first);
        fs_err::write(a.join("sub/g"), "two").unwrap();
        fs_err::remove_file(a.join("link")).unwrap();
        std::os::unix::fs::symlink("sub/g", a.join("link")).unwrap();
        assert_ne!(d(), first);
        fs_err::remove_file(a.join("link")).unwrap();
        std::os::unix::fs::symlink("f", a.join("link")).unwrap();
        assert_eq!(d(), first);
        fs_err::rename(a.join("sub/g"), a.join("sub/h")).unwrap();
        assert_ne!(d(), first);
        fs_err::rename(a.join("sub/h"), a.join("sub/g")).unwrap();
        assert_eq!(d(), first);

        // A symlink on the way is followed inside the root: /l -> /a is /a.
        std::os::unix::fs::symlink("/a", root.join("l")).unwrap();
        assert_eq!(tree_digest(&root, "l").unwrap(), first);

        // A missing source has a digest of its own, not an empty directory's.
        let missing = tree_digest(&root, "nope").unwrap();
        let of_missing = hex::encode(ring::digest::digest(&ring::digest::SHA256, b"missing"));
        assert_eq!(missing, of_missing);
        fs_err::create_dir(root.join("nope")).unwrap();
        assert_ne!(tree_digest(&root, "nope").unwrap(), missing);
        fs_err::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_view_of_no_layer_is_an_empty_dir_and_of_one_the_layer_itself() {
        let w = std::env::temp_dir().join(format!("strata-hookview-{}", std::process::id()));
        let empty = view(&[], &w).unwrap();
        assert_eq!(empty, w.join("empty"));
        assert_eq!(fs_err::read_dir(&empty).unwrap().count(), 0);
        let one = w.join("one");
        assert_eq!(view(std::slice::from_ref(&one), &w).unwrap(), one);
        assert!(!one.exists(), "the layer is used as it is, not made");
        fs_err::remove_dir_all(&w).unwrap();
    }
}
