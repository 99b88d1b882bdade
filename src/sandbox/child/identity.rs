//! Who the step's process is: Docker's capability set (the bounding set cut to it, effective
//! and permitted limited to it).

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

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drop every capability outside Docker's set from the bounding set, and keep only Docker's
/// set as effective and permitted (none inheritable, none ambient). Async-signal-safe: only
/// syscalls, for the forked child before exec.
///
/// # Safety
/// Must run in the process about to exec, before it changes to the step's user.
pub(super) unsafe fn limit_capabilities(drop_list: &[u32]) -> bool {
    for c in drop_list {
        if libc::prctl(libc::PR_CAPBSET_DROP, *c as libc::c_ulong, 0, 0, 0) != 0 {
            return false;
        }
    }
    libc::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
        0,
        0,
    );
    let mut mask = [0u32; 2];
    for c in DEFAULT_CAPS {
        mask[(*c / 32) as usize] |= 1 << (c % 32);
    }
    let mut hdr = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [
        CapData {
            effective: mask[0],
            permitted: mask[0],
            inheritable: 0,
        },
        CapData {
            effective: mask[1],
            permitted: mask[1],
            inheritable: 0,
        },
    ];
    libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) == 0
}
