//! Docker's default seccomp profile (moby `profiles/seccomp/default.json`), compiled in and
//! turned into BPF by seccompiler (rust-vmm's filter compiler), for a process holding Docker's
//! default capability set: the syscalls that profile allows without extra capabilities,
//! `socket` except AF_VSOCK, `personality` with the five values Docker allows, `clone` without
//! namespace flags, `clone3` answered with ENOSYS (so that libc falls back to `clone`, whose
//! flags can be checked), and everything else EPERM — `mount`, `unshare`, `setns`, `bpf`,
//! `keyctl`, `add_key`, `perf_event_open`, `kexec_load`, `init_module`, `reboot`, the io_uring
//! calls (refused by Docker since 2023, moby 891241e: the source of many kernel escapes) and
//! the rest.
//!
//! Installed by the forked child just before it changes to the step's user and execs, without
//! `no_new_privs`, so setuid binaries (su, sudo, apt's drop to _apt) behave as under Docker.
//! Only x86_64 and aarch64 (the architectures seccompiler and strata build for); a syscall of
//! another ABI (32-bit x86 binaries on x86_64) kills the process, where Docker's profile also
//! admits i386 and x32.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The two programs, installed in this order: the allow list (EPERM for the rest), then the
/// one that answers clone3 with ENOSYS (the kernel prefers, among equal actions, the filter
/// installed last, so clone3 gets ENOSYS rather than EPERM).
pub struct Filters {
    allow: BpfProgram,
    nosys: BpfProgram,
}

/// Syscalls Docker's profile allows unconditionally, on every architecture strata builds for.
macro_rules! syscalls {
    ($($name:ident),* $(,)?) => { &[$(libc::$name),*] };
}

const COMMON: &[libc::c_long] = syscalls![
    SYS_accept,
    SYS_accept4,
    SYS_adjtimex,
    SYS_bind,
    SYS_brk,
    SYS_capget,
    SYS_capset,
    SYS_chdir,
    SYS_chroot, // CAP_SYS_CHROOT is in Docker's default set
    SYS_clock_adjtime,
    SYS_clock_getres,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_close,
    SYS_close_range,
    SYS_connect,
    SYS_copy_file_range,
    SYS_dup,
    SYS_dup3,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_eventfd2,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_fadvise64,
    SYS_fallocate,
    SYS_fanotify_mark,
    SYS_fchdir,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchown,
    SYS_fchownat,
    SYS_fcntl,
    SYS_fdatasync,
    SYS_fgetxattr,
    SYS_flistxattr,
    SYS_flock,
    SYS_fremovexattr,
    SYS_fsetxattr,
    SYS_fstat,
    SYS_fstatfs,
    SYS_fsync,
    SYS_ftruncate,
    SYS_futex,
    SYS_futex_waitv,
    SYS_getcpu,
    SYS_getcwd,
    SYS_getdents64,
    SYS_getegid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getgroups,
    SYS_getitimer,
    SYS_getpeername,
    SYS_getpgid,
    SYS_getpid,
    SYS_getppid,
    SYS_getpriority,
    SYS_getrandom,
    SYS_getresgid,
    SYS_getresuid,
    SYS_getrlimit,
    SYS_get_robust_list,
    SYS_getrusage,
    SYS_getsid,
    SYS_getsockname,
    SYS_getsockopt,
    SYS_gettid,
    SYS_gettimeofday,
    SYS_getuid,
    SYS_getxattr,
    SYS_inotify_add_watch,
    SYS_inotify_init1,
    SYS_inotify_rm_watch,
    SYS_io_cancel,
    SYS_ioctl,
    SYS_io_destroy,
    SYS_io_getevents,
    SYS_ioprio_get,
    SYS_ioprio_set,
    SYS_io_setup,
    SYS_io_submit,
    SYS_kill,
    SYS_landlock_add_rule,
    SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self,
    SYS_lgetxattr,
    SYS_linkat,
    SYS_listen,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_lremovexattr,
    SYS_lseek,
    SYS_lsetxattr,
    SYS_madvise,
    SYS_membarrier,
    SYS_memfd_create,
    SYS_memfd_secret,
    SYS_mincore,
    SYS_mkdirat,
    SYS_mknodat,
    SYS_mlock,
    SYS_mlock2,
    SYS_mlockall,
    SYS_mmap,
    SYS_mprotect,
    SYS_mq_getsetattr,
    SYS_mq_notify,
    SYS_mq_open,
    SYS_mq_timedreceive,
    SYS_mq_timedsend,
    SYS_mq_unlink,
    SYS_mremap,
    SYS_msgctl,
    SYS_msgget,
    SYS_msgrcv,
    SYS_msgsnd,
    SYS_msync,
    SYS_munlock,
    SYS_munlockall,
    SYS_munmap,
    SYS_name_to_handle_at,
    SYS_nanosleep,
    SYS_newfstatat,
    SYS_openat,
    SYS_openat2,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_pipe2,
    SYS_pkey_alloc,
    SYS_pkey_free,
    SYS_pkey_mprotect,
    SYS_ppoll,
    SYS_prctl,
    SYS_pread64,
    SYS_preadv,
    SYS_preadv2,
    SYS_prlimit64,
    SYS_process_mrelease,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_pselect6,
    SYS_ptrace,
    SYS_pwrite64,
    SYS_pwritev,
    SYS_pwritev2,
    SYS_read,
    SYS_readahead,
    SYS_readlinkat,
    SYS_readv,
    SYS_recvfrom,
    SYS_recvmmsg,
    SYS_recvmsg,
    SYS_remap_file_pages,
    SYS_removexattr,
    SYS_renameat,
    SYS_renameat2,
    SYS_restart_syscall,
    SYS_rseq,
    SYS_rt_sigaction,
    SYS_rt_sigpending,
    SYS_rt_sigprocmask,
    SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn,
    SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait,
    SYS_rt_tgsigqueueinfo,
    SYS_sched_getaffinity,
    SYS_sched_getattr,
    SYS_sched_getparam,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_sched_getscheduler,
    SYS_sched_rr_get_interval,
    SYS_sched_setaffinity,
    SYS_sched_setattr,
    SYS_sched_setparam,
    SYS_sched_setscheduler,
    SYS_sched_yield,
    SYS_seccomp,
    SYS_semctl,
    SYS_semget,
    SYS_semop,
    SYS_semtimedop,
    SYS_sendfile,
    SYS_sendmmsg,
    SYS_sendmsg,
    SYS_sendto,
    SYS_setfsgid,
    SYS_setfsuid,
    SYS_setgid,
    SYS_setgroups,
    SYS_setitimer,
    SYS_setpgid,
    SYS_setpriority,
    SYS_setregid,
    SYS_setresgid,
    SYS_setresuid,
    SYS_setreuid,
    SYS_setrlimit,
    SYS_set_robust_list,
    SYS_setsid,
    SYS_setsockopt,
    SYS_set_tid_address,
    SYS_setuid,
    SYS_setxattr,
    SYS_shmat,
    SYS_shmctl,
    SYS_shmdt,
    SYS_shmget,
    SYS_shutdown,
    SYS_sigaltstack,
    SYS_signalfd4,
    SYS_socketpair,
    SYS_splice,
    SYS_statfs,
    SYS_statx,
    SYS_symlinkat,
    SYS_sync,
    SYS_sync_file_range,
    SYS_syncfs,
    SYS_sysinfo,
    SYS_tee,
    SYS_tgkill,
    SYS_timer_create,
    SYS_timer_delete,
    SYS_timer_getoverrun,
    SYS_timer_gettime,
    SYS_timer_settime,
    SYS_timerfd_create,
    SYS_timerfd_gettime,
    SYS_timerfd_settime,
    SYS_times,
    SYS_tkill,
    SYS_truncate,
    SYS_umask,
    SYS_uname,
    SYS_unlinkat,
    SYS_utimensat,
    SYS_vmsplice,
    SYS_wait4,
    SYS_waitid,
    SYS_write,
    SYS_writev,
];

/// The x86_64 syscalls of Docker's list that newer architectures replaced with `*at` forms.
#[cfg(target_arch = "x86_64")]
const ARCH: &[libc::c_long] = syscalls![
    SYS_access,
    SYS_alarm,
    SYS_arch_prctl,
    SYS_chmod,
    SYS_chown,
    SYS_creat,
    SYS_dup2,
    SYS_epoll_create,
    SYS_epoll_ctl_old,
    SYS_epoll_wait,
    SYS_epoll_wait_old,
    SYS_eventfd,
    SYS_fork,
    SYS_futimesat,
    SYS_getdents,
    SYS_getpgrp,
    SYS_get_thread_area,
    SYS_inotify_init,
    SYS_lchown,
    SYS_link,
    SYS_lstat,
    SYS_mkdir,
    SYS_mknod,
    SYS_modify_ldt,
    SYS_open,
    SYS_pause,
    SYS_pipe,
    SYS_poll,
    SYS_readlink,
    SYS_rename,
    SYS_rmdir,
    SYS_select,
    SYS_set_thread_area,
    SYS_signalfd,
    SYS_stat,
    SYS_symlink,
    SYS_time,
    SYS_unlink,
    SYS_utime,
    SYS_utimes,
    SYS_vfork,
];

#[cfg(not(target_arch = "x86_64"))]
const ARCH: &[libc::c_long] = &[];

/// Syscalls of Docker's list that the libc crate does not name (asm-generic and x86_64 numbers;
/// from 451 on both share one table). Docker's profile as of moby/profiles in moby b985e23
/// (August 2026): without these a newer libc's `fchmodat` (fchmodat2), `futex_*`, `*xattrat`
/// or `mseal` would get EPERM, which it does not fall back from as it does from ENOSYS.
const NEWER: &[libc::c_long] = &[
    451, // cachestat
    452, // fchmodat2
    453, // map_shadow_stack
    454, // futex_wake
    455, // futex_wait
    456, // futex_requeue
    457, // statmount
    458, // listmount
    462, // mseal
    463, // setxattrat
    464, // getxattrat
    465, // listxattrat
    466, // removexattrat
];
#[cfg(target_arch = "x86_64")]
const UNNAMED: &[libc::c_long] = &[333 /* io_pgetevents */, 335 /* uretprobe */];
#[cfg(not(target_arch = "x86_64"))]
const UNNAMED: &[libc::c_long] = &[292 /* io_pgetevents */];

/// `clone` flags that create namespaces (Docker's mask 0x7E020000).
const CLONE_NS_FLAGS: u64 = 0x7E02_0000;
const AF_VSOCK: u64 = 40;
/// The `personality` values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32
/// and 0xffffffff (query).
const PERSONALITIES: [u64; 5] = [0, 8, 0x20000, 0x20008, 0xffff_ffff];

/// Why Docker's profile could not be compiled: seccompiler's refusal, in its words.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A condition or rule of the profile refused.
    #[error("{0}")]
    Rule(seccompiler::BackendError),
    /// This architecture, or a filter of the profile, refused.
    #[error("seccomp: {0}")]
    Filter(seccompiler::BackendError),
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, ProfileError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(ProfileError::Rule)
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, ProfileError> {
    SeccompRule::new(conds).map_err(ProfileError::Rule)
}

fn arch() -> Result<TargetArch, ProfileError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(ProfileError::Filter)
}

/// Docker's default profile for Docker's default capabilities, compiled.
pub fn docker_default() -> Result<Filters, ProfileError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in COMMON.iter().chain(ARCH).chain(UNNAMED).chain(NEWER) {
        rules.insert(*nr, Vec::new());
    }
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![cond(0, SeccompCmpOp::Ne, AF_VSOCK)?])?],
    );
    rules.insert(
        libc::SYS_personality,
        PERSONALITIES
            .iter()
            .map(|p| rule(vec![cond(0, SeccompCmpOp::Eq, *p)?]))
            .collect::<Result<_, _>>()?,
    );
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::MaskedEq(CLONE_NS_FLAGS),
            0,
        )?])?],
    );
    let allow: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch()?,
    )
    .and_then(BpfProgram::try_from)
    .map_err(ProfileError::Filter)?;
    let nosys: BpfProgram = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .and_then(BpfProgram::try_from)
    .map_err(ProfileError::Filter)?;
    Ok(Filters { allow, nosys })
}

impl Filters {
    /// Install both programs in the calling thread. Needs CAP_SYS_ADMIN in the current user
    /// namespace (no `no_new_privs`). Async-signal-safe: two prctl calls on prepared memory.
    ///
    /// # Safety
    /// For the forked child before exec; the programs must outlive the call (they do: the
    /// kernel copies them).
    pub unsafe fn install(&self) -> bool {
        for p in [&self.allow, &self.nosys] {
            let prog = libc::sock_fprog {
                len: p.len() as libc::c_ushort,
                filter: p.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            ) != 0
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_compiles_and_keeps_docker_s_refusals() {
        let f = docker_default().unwrap();
        assert!(f.allow.len() > 300, "{}", f.allow.len());
        assert!(f.nosys.len() < 20);
        // What Docker refuses without CAP_SYS_ADMIN and friends is not in the allow list.
        for refused in [
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_pivot_root,
            libc::SYS_bpf,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_perf_event_open,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_reboot,
            libc::SYS_open_by_handle_at,
            libc::SYS_sethostname,
            libc::SYS_clone3,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
        ] {
            assert!(
                !COMMON.contains(&refused)
                    && !ARCH.contains(&refused)
                    && !UNNAMED.contains(&refused)
                    && !NEWER.contains(&refused),
                "{refused}"
            );
        }
        let mut all: Vec<_> = COMMON
            .iter()
            .chain(ARCH)
            .chain(UNNAMED)
            .chain(NEWER)
            .collect();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n, "a syscall listed twice");
    }

    /// Install the filters in a forked child (with no_new_privs, so that an unprivileged test
    /// run may install them too) and make each syscall there; the child reports the errnos.
    fn errnos_under_the_filter(calls: &[(libc::c_long, [usize; 3])]) -> Vec<i32> {
        let f = docker_default().unwrap();
        let (r, w) = crate::sandbox::pipe().unwrap();
        // SAFETY: the child only makes syscalls and writes to a pipe, then _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            use std::os::fd::AsRawFd;
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if !f.install() {
                    libc::_exit(2);
                }
                for (nr, a) in calls {
                    let rc = libc::syscall(*nr, a[0], a[1], a[2]);
                    let e: i32 = if rc < 0 { *libc::__errno_location() } else { 0 };
                    libc::write(w.as_raw_fd(), &e as *const i32 as *const libc::c_void, 4);
                }
                libc::_exit(0);
            }
        }
        drop(w);
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status}"
        );
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut out).unwrap();
        out.chunks(4)
            .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn io_uring_is_refused_and_newer_calls_docker_allows_are_not() {
        let mut params = [0u8; 120];
        let p = params.as_mut_ptr() as usize;
        let got = errnos_under_the_filter(&[
            (libc::SYS_io_uring_setup, [1, p, 0]),
            (libc::SYS_io_uring_enter, [usize::MAX, 0, 0]),
            (libc::SYS_io_uring_register, [usize::MAX, 0, 0]),
            // fchmodat2(AT_FDCWD, "", 0, AT_EMPTY_PATH…) on a bad descriptor: EBADF from the
            // kernel (or ENOSYS before 6.6), never the filter's EPERM.
            (452, [usize::MAX - 1, c"".as_ptr() as usize, 0]),
            (libc::SYS_getppid, [0, 0, 0]),
        ]);
        assert_eq!(got[..3], [libc::EPERM; 3], "io_uring: {got:?}");
        assert_ne!(got[3], libc::EPERM, "fchmodat2: {got:?}");
        assert_eq!(got[4], 0, "getppid: {got:?}");
    }
}
