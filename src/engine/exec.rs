//! What the engine runs inside the user namespace (the hooks `main()` gives the sandbox child)
//! and the helpers around them: unpacking snapshots so that owners are kept as seen inside,
//! reading a step's upper dir as a layer, removing trees owned by subordinate ids.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::layer::ApplyOptions;
use crate::oci::Digest;
use crate::sandbox::{self, idmap, HookSpec, Rootfs, Spec};
use crate::store::Store;

/// The hooks `main()` gives the sandbox child.
pub fn hook(name: &str, args: &[String]) -> Result<(), String> {
    match (name, args) {
        ("unpack", [blob, dest, diff_id]) => {
            let diff: Digest = diff_id.parse().map_err(|e| format!("{e}"))?;
            let f = fs_err::File::open(blob).map_err(|e| format!("{blob}: {e}"))?;
            let r = crate::layer::decompress_pipelined(f).map_err(|e| format!("{blob}: {e}"))?;
            let report = crate::store::unpack_verified(
                r,
                Path::new(dest),
                &diff,
                &ApplyOptions {
                    chown: true,
                    overlay_whiteouts: true,
                },
            )
            .map_err(|e| e.to_string())?;
            if !report.skipped_devices.is_empty() {
                eprintln!(
                    "warning: {} device node(s) left out of layer {diff}: {}",
                    report.skipped_devices.len(),
                    report.skipped_devices.join(", ")
                );
            }
            Ok(())
        }
        ("remove", paths) => {
            for p in paths {
                crate::store::make_writable(Path::new(p));
                match std::fs::remove_dir_all(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("removing {p}: {e}")),
                }
            }
            Ok(())
        }
        ("diff", [upper, out, rest @ ..]) => {
            // The step's layer: read inside the user namespace, so owners are as seen there.
            // rest = [--epoch=N], mount points the sandbox created, "--", then the lower dirs.
            let (epoch, rest) = match rest.first().and_then(|a| a.strip_prefix("--epoch=")) {
                Some(e) => (
                    Some(e.parse::<i64>().map_err(|e| e.to_string())?),
                    &rest[1..],
                ),
                None => (None, rest),
            };
            let split = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
            let (created, lowers) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
            forget_mount_points(Path::new(upper), created, lowers);
            let opts = crate::layer::WriteOptions {
                overlay_whiteouts: true,
                source_date_epoch: epoch,
            };
            let f = fs_err::File::create(out).map_err(|e| format!("{out}: {e}"))?;
            let w = crate::layer::write_tree(
                Path::new(upper),
                std::io::BufWriter::with_capacity(1 << 20, f),
                &opts,
            )
            .map_err(|e| format!("reading {upper}: {e}"))?;
            w.into_inner()
                .map_err(|e| e.to_string())?
                .sync_all()
                .map_err(|e| e.to_string())
        }
        ("copydiff", [root, state, upper, out, rest @ ..]) => {
            // Copy snapshotter: gather the changes into an upper-shaped dir, then as "diff".
            let before =
                sandbox::copyfs::State::load(Path::new(state)).map_err(|e| e.to_string())?;
            std::fs::create_dir_all(upper).map_err(|e| format!("{upper}: {e}"))?;
            sandbox::copyfs::diff(Path::new(root), &before, Path::new(upper))
                .map_err(|e| e.to_string())?;
            let mut args = vec![upper.clone(), out.clone()];
            args.extend(rest.iter().cloned());
            hook("diff", &args)
        }
        ("overlay-test", [dir]) => {
            let d = Path::new(dir);
            for s in ["l", "u", "w", "m"] {
                std::fs::create_dir_all(d.join(s)).map_err(|e| e.to_string())?;
            }
            fs_err::write(d.join("l/f"), "x").map_err(|e| e.to_string())?;
            let data = format!(
                "lowerdir={0}/l,upperdir={0}/u,workdir={0}/w,userxattr",
                d.display()
            );
            rustix::mount::mount(
                "overlay",
                d.join("m"),
                "overlay",
                rustix::mount::MountFlags::empty(),
                Some(
                    std::ffi::CString::new(data)
                        .map_err(|e| e.to_string())?
                        .as_c_str(),
                ),
            )
            .map_err(|e| format!("mount -t overlay: {e}"))?;
            fs_err::read(d.join("m/f"))
                .map(|_| ())
                .map_err(|e| format!("reading through the overlay: {e}"))
        }
        ("noop", []) => Ok(()),
        ("copy", [spec]) => super::copy::hook(spec),
        ("mkcache", [path, uid, gid, mode]) => {
            // A cache mount's directory, owned as the step asked, created once.
            let p = Path::new(path);
            if p.exists() {
                return Ok(());
            }
            let parse = |s: &str| s.parse::<u32>().map_err(|e| format!("{s}: {e}"));
            // Made under a unique name and renamed without replacing: two steps creating the
            // same cache at once both end up with the one that won.
            let tmp = p.with_extension(format!("new{}", std::process::id()));
            std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            std::os::unix::fs::chown(&tmp, Some(parse(uid)?), Some(parse(gid)?))
                .map_err(|e| format!("chown {}: {e}", tmp.display()))?;
            let mode = u32::from_str_radix(mode, 8).map_err(|e| format!("{mode}: {e}"))?;
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
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
                Err(e) => Err(format!("{}: {e}", p.display())),
            }
        }
        _ => Err(format!("unknown sandbox hook {name} {args:?}")),
    }
}

/// Take out of the upper dir what exists only because the sandbox mounted over it: the files it
/// created (/etc/hosts, …) and directories copied up just to hold them, when the lower dir has the
/// same directory with the same owner and mode.
fn forget_mount_points(upper: &Path, created: &[String], lowers: &[String]) {
    use std::os::unix::fs::MetadataExt;
    for c in created {
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
                    std::fs::metadata(Path::new(l).join(dir)).is_ok_and(|lm| {
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

pub fn exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding the strata binary to re-execute for the sandbox")
}

pub fn sandbox_err(e: sandbox::Error) -> anyhow::Error {
    let mut msg = e.to_string();
    for a in e.advice() {
        msg.push_str(&format!("\n  hint: {a}"));
    }
    anyhow::anyhow!(msg)
}

/// Run a hook inside the user namespace; anything but exit status 0 is an error saying `what`.
pub fn hook_ok(
    exe: &Path,
    name: &str,
    args: Vec<String>,
    maps: &idmap::IdMaps,
    what: &str,
) -> anyhow::Result<()> {
    let h = HookSpec {
        name: name.into(),
        args,
        maps: maps.clone(),
    };
    match sandbox::run_hook(exe, &h).map_err(sandbox_err)? {
        sandbox::Outcome::Exited(0) => Ok(()),
        o => bail!("{what} ended with {o:?}"),
    }
}

/// Remove a tree that may hold files owned by subordinate ids: inside the user namespace.
pub fn remove_tree(path: &Path, maps: &idmap::IdMaps) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if maps.root_only || rustix::process::getuid().is_root() {
        crate::store::make_writable(path);
        return std::fs::remove_dir_all(path)
            .with_context(|| format!("removing {}", path.display()));
    }
    hook_ok(
        &exe()?,
        "remove",
        vec![path.display().to_string()],
        maps,
        &format!("removing {} in the user namespace", path.display()),
    )
}

/// Remove what killed strata processes left in the store's tmp dir: every entry there is named
/// `WHAT-PID-…` by the process that made it, and one whose process is gone is garbage (a step's
/// scratch dir, a half-written blob). Dirs are removed inside the user namespace (their files
/// may belong to subordinate ids). Lock files of killed holders go too. Best effort: a failure
/// leaves the entry for `prune`.
pub fn clean_leftovers(store: &Store, maps: &idmap::IdMaps) {
    store.remove_stale_locks();
    let Ok(rd) = std::fs::read_dir(store.tmp_dir()) else {
        return;
    };
    let me = std::process::id();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').find_map(|f| f.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let p = e.path();
        let _ = if p.is_dir() {
            remove_tree(&p, maps).map_err(|e| e.to_string())
        } else {
            std::fs::remove_file(&p).map_err(|e| e.to_string())
        };
    }
}

/// The snapshot of every layer (`diff_ids` with their blobs in `layers`), bottom first,
/// unpacked inside the user namespace on first use.
pub fn snapshots(
    store: &Store,
    exe: &Path,
    diff_ids: &[Digest],
    layers: &[crate::oci::Descriptor],
    maps: &idmap::IdMaps,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (d, l) in diff_ids.iter().zip(layers) {
        let p = store.snapshot_of(d, &l.digest, |blob, dest| {
            let args = vec![
                blob.display().to_string(),
                dest.display().to_string(),
                d.to_string(),
            ];
            hook_ok(exe, "unpack", args, maps, &format!("unpacking layer {d}"))
                .map_err(|e| crate::store::Error::Invalid(format!("{e:#}")))
        })?;
        out.push(p);
    }
    Ok(out)
}

/// Lower dirs (top first) with each snapshot once, at its top-most place. Two identical layers
/// (`COPY a /x` twice) share one snapshot, and overlayfs refuses a lowerdir list that names a
/// directory twice (ELOOP); dropping the lower copy changes nothing in the merged view, since
/// the upper copy already provides every file and whiteout of it.
pub fn unique_top_first(lower: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    lower
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// The overlay of a step and the files bind-mounted over /etc, laid out in `step`.
pub struct StepRoot {
    /// Top first; an empty directory when there are no layers (overlayfs needs one).
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    /// resolv.conf (the host's), hosts and hostname, for [`Spec::etc_files`].
    pub etc_files: Vec<(String, PathBuf)>,
}

/// Make the directories of a step's overlay root below `step`, over `lower` (top first), and
/// write its /etc files for `hostname` (resolv.conf as `network` can use it).
pub fn step_root(
    step: &Path,
    lower: Vec<PathBuf>,
    hostname: &str,
    network: sandbox::Network,
) -> anyhow::Result<StepRoot> {
    let mut lower = unique_top_first(lower);
    let (upper, work, merged, etc) = (
        step.join("upper"),
        step.join("work"),
        step.join("merged"),
        step.join("etc"),
    );
    for d in [&upper, &work, &merged, &etc] {
        fs_err::create_dir_all(d)?;
    }
    if lower.is_empty() {
        let empty = step.join("empty");
        fs_err::create_dir_all(&empty)?;
        lower.push(empty);
    }
    let host_resolv = fs_err::read_to_string("/etc/resolv.conf").unwrap_or_default();
    fs_err::write(
        etc.join("resolv.conf"),
        match network {
            sandbox::Network::Private => sandbox::net::resolv_conf(&host_resolv),
            _ => host_resolv,
        },
    )?;
    fs_err::write(
        etc.join("hosts"),
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"),
    )?;
    fs_err::write(etc.join("hostname"), format!("{hostname}\n"))?;
    Ok(StepRoot {
        lower,
        upper,
        work,
        merged,
        etc_files: ["resolv.conf", "hosts", "hostname"]
            .iter()
            .map(|n| (n.to_string(), etc.join(n)))
            .collect(),
    })
}

/// Write the changes of a finished step (its upper dir, or for the copy snapshotter what differs
/// from the recorded state) as an uncompressed layer tar at `tar`, read inside the user
/// namespace so that owners are as seen there.
pub fn diff_to_tar(
    spec: &Spec,
    step: &Path,
    created: &[String],
    tar: &Path,
    maps: &idmap::IdMaps,
    epoch: Option<i64>,
) -> anyhow::Result<()> {
    let (hook_name, mut args, lower) = match &spec.rootfs {
        Rootfs::Overlay { upper, lower, .. } => (
            "diff",
            vec![upper.display().to_string(), tar.display().to_string()],
            lower,
        ),
        Rootfs::Copy { root, state, lower } => (
            "copydiff",
            vec![
                root.display().to_string(),
                state.display().to_string(),
                step.join("changes").display().to_string(),
                tar.display().to_string(),
            ],
            lower,
        ),
    };
    if let Some(e) = epoch {
        // "copydiff" passes everything after its own four arguments on to "diff".
        args.insert(
            if hook_name == "diff" { 2 } else { 4 },
            format!("--epoch={e}"),
        );
    }
    args.extend(created.iter().cloned());
    args.push("--".into());
    args.extend(lower.iter().map(|l| l.display().to_string()));
    hook_ok(&exe()?, hook_name, args, maps, "reading the step's changes")
}
