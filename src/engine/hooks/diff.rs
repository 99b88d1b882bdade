//! Tars written inside the user namespace, owners as seen there: a step's changes as its layer
//! ([`super::Hook::Diff`], with the mount points the sandbox made taken out), a directory
//! ([`super::Hook::TarDir`]) and an image's flattened root filesystem ([`super::Hook::Flatten`]).

use std::path::{Path, PathBuf};

use super::error::{at, bare, HookError};
use crate::layer::ApplyOptions;
use crate::oci::Digest;

/// What [`super::Hook::Diff`] writes: the overlay upper dir `upper` as the layer tar `out`, leaving out
/// the mount points the sandbox `created` (and directories copied up only to hold them, when
/// `lowers` has them alike); times clamped to `epoch` when set.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DiffSpec {
    pub upper: PathBuf,
    pub out: PathBuf,
    pub epoch: Option<i64>,
    pub created: Vec<String>,
    pub lowers: Vec<PathBuf>,
}

pub(super) fn diff(d: &DiffSpec) -> Result<(), HookError> {
    // The step's layer: read inside the user namespace, so owners are as seen there.
    forget_mount_points(&d.upper, &d.created, &d.lowers);
    let opts = crate::layer::WriteOptions {
        overlay_whiteouts: true,
        source_date_epoch: d.epoch,
    };
    // Hashed as written (a megabyte at a time), so strata need not read it again.
    let f = fs_err::File::create(&d.out).map_err(bare)?;
    let w = crate::layer::write_tree(
        &d.upper,
        std::io::BufWriter::with_capacity(1 << 20, crate::oci::BackgroundHashingWriter::new(f)),
        &opts,
    )
    .map_err(at(format!("reading {}", d.upper.display())))?;
    let (f, digest, size) = w
        .into_inner()
        .map_err(|e| bare(e.into_error()))?
        .finish()
        .map_err(bare)?;
    f.sync_all().map_err(bare)?;
    fs_err::write(digest_file(&d.out), format!("{digest} {size}")).map_err(bare)
}

/// Where the diff hook leaves the digest and size of the layer it wrote at `tar`.
pub(crate) fn digest_file(tar: &Path) -> PathBuf {
    tar.with_extension("digest")
}

/// Take out of the upper dir what exists only because the sandbox mounted over it: the files it
/// created (/etc/hosts, …) and directories copied up just to hold them, when the lower dir has the
/// same directory with the same owner and mode.
pub(crate) fn forget_mount_points(upper: &Path, created: &[String], lowers: &[PathBuf]) {
    use std::os::unix::fs::MetadataExt;
    // Deepest first: a directory made only to hold a mount point is empty once the mount
    // point below it is gone.
    for c in created.iter().rev() {
        let rel = Path::new(c.trim_start_matches('/'));
        let p = upper.join(rel);
        let _ = if p.is_dir() {
            std::fs::remove_dir(&p)
        } else {
            std::fs::remove_file(&p)
        };
        let mut parent = rel.parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            let up = upper.join(dir);
            let empty = std::fs::read_dir(&up)
                .map(|mut r| r.next().is_none())
                .unwrap_or(false);
            let same_below = std::fs::metadata(&up).ok().is_some_and(|m| {
                lowers.iter().any(|l| {
                    std::fs::metadata(l.join(dir)).is_ok_and(|lm| {
                        lm.is_dir()
                            && lm.uid() == m.uid()
                            && lm.gid() == m.gid()
                            && lm.mode() == m.mode()
                    })
                })
            });
            if !(empty && same_below) || std::fs::remove_dir(&up).is_err() {
                break;
            }
            parent = dir.parent();
        }
    }
}

/// `dir` as a plain tar at `out`, owners as seen inside, synced.
pub(super) fn tar_dir(dir: &Path, out: &Path) -> Result<(), HookError> {
    let f = fs_err::File::create(out).map_err(bare)?;
    let w = crate::layer::write_tree(
        dir,
        std::io::BufWriter::with_capacity(1 << 20, f),
        &crate::layer::WriteOptions::default(),
    )
    .map_err(at(dir.display()))?;
    w.into_inner()
        .map_err(|e| bare(e.into_error()))?
        .sync_all()
        .map_err(bare)
}

pub(super) fn flatten(
    layers: &[(PathBuf, Digest)],
    dir: &Path,
    out: &Path,
) -> Result<(), HookError> {
    unpack_all(layers, dir)?;
    tar_dir(dir, out)
}

/// [`flatten`] of several images, each into `dir/<name>`, then one tar of `dir`.
pub(super) fn flatten_each(
    trees: &[(String, Vec<(PathBuf, Digest)>)],
    dir: &Path,
    out: &Path,
) -> Result<(), HookError> {
    for (name, layers) in trees {
        unpack_all(layers, &dir.join(name))?;
    }
    tar_dir(dir, out)
}

/// The layers unpacked one on another in `dir`.
fn unpack_all(layers: &[(PathBuf, Digest)], dir: &Path) -> Result<(), HookError> {
    std::fs::create_dir_all(dir).map_err(at(dir.display()))?;
    for (blob, diff_id) in layers {
        let f = fs_err::File::open(blob).map_err(bare)?;
        let r = crate::layer::decompress_pipelined(f).map_err(at(blob.display()))?;
        crate::store::unpack_verified(
            r,
            dir,
            diff_id,
            &ApplyOptions {
                chown: true,
                overlay_whiteouts: false,
            },
            // Each layer goes onto the ones before it in the same directory.
            &[],
        )
        .map_err(bare)?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The paths of the entries of the plain tar at `p`, in order.
    pub(in crate::engine::hooks) fn names(p: &Path) -> Vec<String> {
        let mut a = tar::Archive::new(fs_err::File::open(p).unwrap());
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_steps_layer_leaves_out_its_mount_points_and_comes_with_its_digest() {
        let d = std::env::temp_dir().join(format!("strata-hookdiff-{}", std::process::id()));
        let (upper, lower) = (d.join("upper"), d.join("lower"));
        // /etc copied up only to hold the hosts file the sandbox mounted; /run/secrets made
        // for a secret; /var/log holds what the step wrote next to a mount point.
        for p in ["etc", "run/secrets", "var/log"] {
            fs_err::create_dir_all(upper.join(p)).unwrap();
        }
        fs_err::create_dir_all(lower.join("etc")).unwrap();
        fs_err::create_dir_all(lower.join("var")).unwrap();
        fs_err::write(upper.join("etc/hosts"), "").unwrap();
        fs_err::write(upper.join("run/secrets/token"), "").unwrap();
        fs_err::write(upper.join("var/log/mounted"), "").unwrap();
        fs_err::write(upper.join("var/log/step.log"), "written by the step").unwrap();
        let out = d.join("layer.tar");
        diff(&DiffSpec {
            upper: upper.clone(),
            out: out.clone(),
            epoch: Some(0),
            created: ["/etc/hosts", "/run/secrets/token", "/var/log/mounted"]
                .map(String::from)
                .to_vec(),
            lowers: vec![lower],
        })
        .unwrap();
        // /run is not in the lower layer: the step's layer must make it, so it stays.
        assert_eq!(
            names(&out),
            [
                "run/",
                "run/secrets/",
                "var/",
                "var/log/",
                "var/log/step.log"
            ]
        );
        let tar = fs_err::read(&out).unwrap();
        let text = fs_err::read_to_string(digest_file(&out)).unwrap();
        assert_eq!(
            text,
            format!("{} {}", crate::oci::Digest::of(&tar), tar.len())
        );
        fs_err::remove_dir_all(&d).unwrap();
    }
}
