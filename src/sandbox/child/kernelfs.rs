//! The kernel's file systems in the root: a new /proc, a small /dev, /sys read-only, and
//! Docker's masked and read-only paths.

use super::mounts::{bind, ensure_dir};
use super::{io, mount, R};
use crate::sandbox::sys::Sys;
use crate::sandbox::{SetupError, Spec};

/// Paths Docker hides from a container: files get /dev/null, directories an empty read-only
/// tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in a container.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mask_paths(sys: &dyn Sys, root: &str) -> R<()> {
    let hidden = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for p in MASKED_PATHS {
        let t = format!("{root}{p}");
        match std::fs::symlink_metadata(&t) {
            Err(_) => continue,
            Ok(m) if m.is_dir() => mount(sys, "tmpfs", &t, "tmpfs", hidden, "size=0,mode=0555")?,
            Ok(_) => bind(sys, "/dev/null", &t, 0, false)?,
        }
    }
    for p in READONLY_PATHS {
        let t = format!("{root}{p}");
        if std::fs::symlink_metadata(&t).is_ok() {
            bind(sys, &t, &t, libc::MS_REC, true)?;
        }
    }
    Ok(())
}

/// /proc (a new one, or with STRATA_PROC=host the container's), /dev (a small tmpfs with the host's usual nodes, pts and
/// shm), /sys read-only, and Docker's masked and read-only paths, in the root `root`.
pub(super) fn kernel_fs(
    sys: &dyn Sys,
    spec: &Spec,
    root: &str,
    created: &mut Vec<String>,
) -> R<()> {
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    ensure_dir(root, "/proc", created)?;
    let proc_at = format!("{root}/proc");
    if let Err(e) = mount(sys, "proc", &proc_at, "proc", nosuid_nodev_noexec, "") {
        // A container whose /proc has masked paths refuses a new proc. STRATA_PROC=host: the
        // container's own, bound (the step sees the container's processes, not its own pid
        // namespace's; signals stay within its namespace).
        if std::env::var("STRATA_PROC").as_deref() != Ok("host") {
            return Err(SetupError::Proc {
                target: proc_at,
                errno: e.errno().unwrap_or(0),
            });
        }
        mount(sys, "/proc", &proc_at, "", libc::MS_BIND | libc::MS_REC, "")?;
    }

    // /dev: a small tmpfs with the usual nodes bound from the host, pts and shm.
    ensure_dir(root, "/dev", created)?;
    mount(
        sys,
        "tmpfs",
        &format!("{root}/dev"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=755,size=65536k",
    )?;
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        let t = format!("{root}/dev/{d}");
        std::fs::write(&t, b"").map_err(io(format!("creating {t}")))?;
        mount(sys, &format!("/dev/{d}"), &t, "", libc::MS_BIND, "")?;
    }
    std::fs::create_dir_all(format!("{root}/dev/pts"))
        .map_err(|e| SetupError::Os { cause: e.into() })?;
    mount(
        sys,
        "devpts",
        &format!("{root}/dev/pts"),
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        // Terminals in the group tty (5) as under runc, where that id exists inside.
        if spec.maps.root_only {
            "newinstance,ptmxmode=0666,mode=0620"
        } else {
            "newinstance,ptmxmode=0666,mode=0620,gid=5"
        },
    )?;
    std::fs::create_dir_all(format!("{root}/dev/shm"))
        .map_err(|e| SetupError::Os { cause: e.into() })?;
    mount(
        sys,
        "shm",
        &format!("{root}/dev/shm"),
        "tmpfs",
        nosuid_nodev_noexec,
        // 64 MiB as Docker's default, or --shm-size.
        &match spec.shm_size {
            Some(n) => format!("mode=1777,size={n}"),
            None => "mode=1777,size=65536k".into(),
        },
    )?;
    for (l, t) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(t, format!("{root}/dev/{l}"))
            .map_err(io(format!("/dev/{l}")))?;
    }

    // /sys: the host's, read-only.
    ensure_dir(root, "/sys", created)?;
    mount(
        sys,
        "/sys",
        &format!("{root}/sys"),
        "",
        libc::MS_BIND | libc::MS_REC,
        "",
    )?;
    mount(
        sys,
        "",
        &format!("{root}/sys"),
        "",
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | nosuid_nodev_noexec,
        "",
    )?;

    // Docker's masked and read-only paths (moby's default spec): kernel memory, keys, timers
    // and firmware hidden; /proc/sys and friends read-only.
    mask_paths(sys, root)?;
    Ok(())
}
