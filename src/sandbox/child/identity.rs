//! Who the step's process is: Docker's capability set (the bounding set cut to it, effective
//! and permitted limited to it), and the hardening of the step's process before exec: groups,
//! seccomp, capabilities, ids, working directory, in that order.

use std::ffi::CStr;

use crate::sandbox::seccomp::Filters;
use crate::sandbox::sys::{Sys, SysResult};
use crate::sandbox::user;

/// Docker's default capability set: what a RUN step's root keeps. Every other capability leaves
/// the bounding set, so no setuid binary or file capability can bring it back.
pub const DEFAULT_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// The capabilities to drop from the bounding set: all the kernel knows but Docker's set.
pub(super) fn caps_to_drop() -> Vec<u32> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    (0..=last).filter(|c| !DEFAULT_CAPS.contains(c)).collect()
}

/// What kept the step's process from becoming who it should be, before exec: it exits 126,
/// saying why on its stderr where strata always has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    Groups,
    Seccomp,
    Capabilities,
    Ids,
    Workdir,
}

impl Refused {
    /// The line for the process's stderr (none for the refusals that never had one).
    pub(super) fn message(self) -> &'static [u8] {
        match self {
            Refused::Seccomp => b"strata: installing the seccomp filter failed\n",
            Refused::Capabilities => b"strata: dropping capabilities failed\n",
            Refused::Groups | Refused::Ids | Refused::Workdir => b"",
        }
    }
}

/// Make the process about to exec the step's: its supplementary groups (when the user
/// namespace maps more than root), Docker's seccomp profile while it still holds
/// CAP_SYS_ADMIN (so without no_new_privs: setuid binaries keep working), Docker's capability
/// set while it still holds CAP_SETPCAP, then its gid and uid (a non-root USER loses the rest
/// of its capabilities there, as under Docker) and its working directory. Only system calls,
/// on memory prepared before the fork: async-signal-safe.
pub(super) fn harden(
    sys: &dyn Sys,
    root_only: bool,
    ids: &user::Ids,
    filters: &Filters,
    drop_caps: &[u32],
    workdir: &CStr,
) -> Result<(), Refused> {
    if !root_only {
        sys.setgroups(&ids.groups).map_err(|_| Refused::Groups)?;
    }
    sys.seccomp_load(filters).map_err(|_| Refused::Seccomp)?;
    limit_capabilities(sys, drop_caps).map_err(|_| Refused::Capabilities)?;
    sys.setresgid(ids.gid)
        .and_then(|()| sys.setresuid(ids.uid))
        .map_err(|_| Refused::Ids)?;
    sys.chdir(workdir).map_err(|_| Refused::Workdir)
}

/// Drop every capability outside Docker's set from the bounding set, and keep only Docker's
/// set as effective and permitted (none inheritable, none ambient). Must run in the process
/// about to exec, before it changes to the step's user.
fn limit_capabilities(sys: &dyn Sys, drop_list: &[u32]) -> SysResult {
    for c in drop_list {
        sys.prctl(libc::PR_CAPBSET_DROP, *c as libc::c_ulong)?;
    }
    // As before the seam: a kernel without ambient capabilities has none to clear.
    let _ = sys.prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    );
    sys.capset(docker_mask(), docker_mask(), [0, 0])
}

/// Docker's set as capset's two words.
pub(super) fn docker_mask() -> [u32; 2] {
    let mut mask = [0u32; 2];
    for c in DEFAULT_CAPS {
        mask[(*c / 32) as usize] |= 1 << (c % 32);
    }
    mask
}
