//! The sandbox's kernel seam: every call the child makes on the kernel while it builds the
//! step's root and hardens the step's process goes through [`Sys`] — [`Linux`] makes the
//! calls, and in tests `fake::Recorder` records them with their arguments (and fails the ones
//! it is told to), so the exact order of the set-up and the hardening is a unit test without
//! namespaces (youki's `libcontainer/src/syscall/` is the model).
//!
//! What stays outside: fork, waitpid, the descriptor shuffling of a new child, signal masks and
//! dispositions (process control of the child itself, not the sandbox's shape), and plain file
//! operations on paths (made through `std::fs` with the path in the error).

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use super::seccomp::Filters;
use super::SetupError;

/// A call's outcome: its errno when the kernel refused.
pub type SysResult<T = ()> = Result<T, Errno>;

/// The program, arguments and environment of an `execve`, made before the fork: the exec'd
/// child only reads them (the pointer arrays point into the strings, which never move).
pub struct Exec {
    prog: CString,
    // Own what `argv_p` and `env_p` point to (read through them, and by the fake).
    #[cfg_attr(not(test), allow(dead_code))]
    argv: Vec<CString>,
    #[allow(dead_code)]
    env: Vec<CString>,
    argv_p: Vec<*const libc::c_char>,
    env_p: Vec<*const libc::c_char>,
}

impl Exec {
    pub fn new(prog: CString, argv: Vec<CString>, env: Vec<CString>) -> Exec {
        let nul_ended = |v: &[CString]| {
            let mut p: Vec<*const libc::c_char> = v.iter().map(|a| a.as_ptr()).collect();
            p.push(std::ptr::null());
            p
        };
        let (argv_p, env_p) = (nul_ended(&argv), nul_ended(&env));
        Exec {
            prog,
            argv,
            env,
            argv_p,
            env_p,
        }
    }

    #[cfg(test)]
    pub fn prog(&self) -> &CStr {
        &self.prog
    }

    #[cfg(test)]
    pub fn argv(&self) -> &[CString] {
        &self.argv
    }
}

/// The kernel as the sandbox child uses it. Paths are as the call takes them; flags are the
/// kernel's (`libc::MS_*`, `libc::CLONE_*`, `libc::PR_*`).
pub trait Sys {
    /// mount(2); an empty `source`, `fstype` or `data` is passed as NULL.
    fn mount(
        &self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> SysResult;
    /// An overlay of `lowers` (top first) at `target`, writable with `upper` = (upper, work):
    /// the mount API or mount(2), as [`super::overlay::mount`] chooses.
    fn mount_overlay(
        &self,
        target: &Path,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
    ) -> Result<(), SetupError>;
    /// The flags of the mount `path` is on (statvfs(2)) as `MS_*` flags: those a remount in a
    /// user namespace must keep (nosuid, nodev, noexec, atime). 0 when statvfs fails.
    fn locked_flags(&self, path: &str) -> libc::c_ulong;
    fn umount2(&self, target: &str, flags: libc::c_int) -> SysResult;
    fn pivot_root(&self, new_root: &str, put_old: &str) -> SysResult;
    fn chdir(&self, path: &CStr) -> SysResult;
    fn unshare(&self, flags: libc::c_int) -> SysResult;
    fn sethostname(&self, name: &str) -> SysResult;
    fn setgroups(&self, groups: &[libc::gid_t]) -> SysResult;
    /// setresgid(gid, gid, gid).
    fn setresgid(&self, gid: libc::gid_t) -> SysResult;
    /// setresuid(uid, uid, uid).
    fn setresuid(&self, uid: libc::uid_t) -> SysResult;
    /// prctl(option, arg2, 0, 0, 0): PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_CAP_AMBIENT, …
    fn prctl(&self, option: libc::c_int, arg2: libc::c_ulong) -> SysResult;
    /// capset(2) of this process, version 3: effective, permitted and inheritable as two words
    /// each (capabilities 0–31, 32–63).
    fn capset(&self, effective: [u32; 2], permitted: [u32; 2], inheritable: [u32; 2]) -> SysResult;
    /// Load `filters` (Docker's profile) in this thread.
    fn seccomp_load(&self, filters: &Filters) -> SysResult;
    fn setrlimit(&self, resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> SysResult;
    /// Close every descriptor numbered `first` or above (close_range(2), or one close each on
    /// a kernel without it).
    fn close_range(&self, first: u32);
    /// execve(2): returns only when it failed.
    fn execve(&self, exec: &Exec) -> Errno;
    /// A binfmt_misc instance of this user namespace, mounted nowhere
    /// ([`super::binfmt::mount_detached`]): its root's descriptor.
    fn binfmt_instance(&self) -> Result<std::os::fd::OwnedFd, super::binfmt::Error>;
    /// Register `regs` in the instance whose root is `dir` ([`super::binfmt::register_at`]).
    fn binfmt_register(
        &self,
        dir: &Path,
        regs: &[super::binfmt::Registration],
    ) -> Result<(), super::binfmt::Error>;
}

fn last() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

fn check(rc: libc::c_long) -> SysResult {
    if rc == 0 {
        Ok(())
    } else {
        Err(last())
    }
}

fn c(s: &str) -> CString {
    CString::new(s.as_bytes()).unwrap_or_else(|_| CString::new("?").expect("no NUL"))
}

/// The kernel itself. Between fork and exec only the calls the exec'd child makes are used
/// (setgroups, seccomp, prctl, capset, setres*id, chdir, close_range, execve): each one system
/// call on memory prepared before the fork.
pub struct Linux;

impl Sys for Linux {
    fn mount(
        &self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> SysResult {
        let (s, t, f, d) = (c(source), c(target), c(fstype), c(data));
        let or_null = |empty: bool, p: *const libc::c_char| {
            if empty {
                std::ptr::null()
            } else {
                p
            }
        };
        // SAFETY: all pointers are valid NUL-terminated strings (or null where allowed).
        let rc = unsafe {
            libc::mount(
                or_null(source.is_empty(), s.as_ptr()),
                t.as_ptr(),
                or_null(fstype.is_empty(), f.as_ptr()),
                flags,
                or_null(data.is_empty(), d.as_ptr()) as *const libc::c_void,
            )
        };
        check(rc.into())
    }

    fn mount_overlay(
        &self,
        target: &Path,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
    ) -> Result<(), SetupError> {
        super::overlay::mount(target, lowers, upper)
    }

    fn locked_flags(&self, path: &str) -> libc::c_ulong {
        let p = c(path);
        // SAFETY: a valid NUL-terminated path and a zeroed statvfs for the kernel to fill.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(p.as_ptr(), &mut st) } != 0 {
            return 0;
        }
        let mut out = 0;
        for (st_flag, ms_flag) in [
            (libc::ST_NOSUID, libc::MS_NOSUID),
            (libc::ST_NODEV, libc::MS_NODEV),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
        ] {
            if st.f_flag & st_flag != 0 {
                out |= ms_flag;
            }
        }
        out
    }

    fn umount2(&self, target: &str, flags: libc::c_int) -> SysResult {
        let t = c(target);
        // SAFETY: a valid NUL-terminated path.
        check(unsafe { libc::umount2(t.as_ptr(), flags) }.into())
    }

    fn pivot_root(&self, new_root: &str, put_old: &str) -> SysResult {
        let (n, o) = (c(new_root), c(put_old));
        // SAFETY: pivot_root via syscall with valid path pointers.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) })
    }

    fn chdir(&self, path: &CStr) -> SysResult {
        // SAFETY: a valid NUL-terminated path.
        check(unsafe { libc::chdir(path.as_ptr()) }.into())
    }

    fn unshare(&self, flags: libc::c_int) -> SysResult {
        // SAFETY: unshare has no memory-safety preconditions (the caller is single-threaded).
        check(unsafe { libc::unshare(flags) }.into())
    }

    fn sethostname(&self, name: &str) -> SysResult {
        let n = c(name);
        // SAFETY: valid pointer and length.
        check(unsafe { libc::sethostname(n.as_ptr(), name.len()) }.into())
    }

    fn setgroups(&self, groups: &[libc::gid_t]) -> SysResult {
        // SAFETY: a valid array of `groups.len()` ids.
        check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) }.into())
    }

    fn setresgid(&self, gid: libc::gid_t) -> SysResult {
        // SAFETY: a plain credential syscall.
        check(unsafe { libc::setresgid(gid, gid, gid) }.into())
    }

    fn setresuid(&self, uid: libc::uid_t) -> SysResult {
        // SAFETY: a plain credential syscall.
        check(unsafe { libc::setresuid(uid, uid, uid) }.into())
    }

    fn prctl(&self, option: libc::c_int, arg2: libc::c_ulong) -> SysResult {
        // SAFETY: the options used take integers, no pointers.
        check(unsafe { libc::prctl(option, arg2, 0, 0, 0) }.into())
    }

    fn capset(&self, effective: [u32; 2], permitted: [u32; 2], inheritable: [u32; 2]) -> SysResult {
        #[repr(C)]
        struct CapHeader {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        struct CapData {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut hdr = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [0, 1].map(|i| CapData {
            effective: effective[i],
            permitted: permitted[i],
            inheritable: inheritable[i],
        });
        // SAFETY: a valid header and the two data words version 3 takes.
        check(unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) })
    }

    fn seccomp_load(&self, filters: &Filters) -> SysResult {
        // SAFETY: the programs are valid for the call; the kernel copies them.
        if unsafe { filters.install() } {
            Ok(())
        } else {
            Err(last())
        }
    }

    fn setrlimit(&self, resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> SysResult {
        let l = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit with a valid, initialised rlimit.
        check(unsafe { libc::setrlimit(resource, &l) }.into())
    }

    fn binfmt_instance(&self) -> Result<std::os::fd::OwnedFd, super::binfmt::Error> {
        super::binfmt::mount_detached()
    }

    fn binfmt_register(
        &self,
        dir: &Path,
        regs: &[super::binfmt::Registration],
    ) -> Result<(), super::binfmt::Error> {
        super::binfmt::register_at(dir, regs).map(|_| ())
    }

    fn close_range(&self, first: u32) {
        // SAFETY: closing descriptors has no memory-safety preconditions; the caller is the
        // process about to exec.
        unsafe {
            if libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) == 0 {
                return;
            }
            // Before Linux 5.9: a close of every possible number.
            let mut lim: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur.min(1 << 20) as i32
            } else {
                1 << 16
            };
            for fd in first as i32..max {
                libc::close(fd);
            }
        }
    }

    fn execve(&self, exec: &Exec) -> Errno {
        // SAFETY: NUL-terminated arrays of pointers into strings `exec` owns.
        unsafe {
            libc::execve(
                exec.prog.as_ptr(),
                exec.argv_p.as_ptr(),
                exec.env_p.as_ptr(),
            )
        };
        last()
    }
}

/// A [`Sys`] that records each call and makes none.
#[cfg(test)]
pub mod fake {
    use std::cell::RefCell;
    use std::ffi::CStr;
    use std::path::{Path, PathBuf};

    use rustix::io::Errno;

    use super::{Exec, Sys, SysResult};
    use crate::sandbox::seccomp::Filters;
    use crate::sandbox::SetupError;

    /// One call with its arguments.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Mount {
            source: String,
            target: String,
            fstype: String,
            flags: libc::c_ulong,
            data: String,
        },
        Overlay {
            target: PathBuf,
            lowers: Vec<PathBuf>,
            writable: bool,
        },
        Umount2 {
            target: String,
            flags: libc::c_int,
        },
        PivotRoot {
            new_root: String,
            put_old: String,
        },
        Chdir(String),
        Unshare(libc::c_int),
        Sethostname(String),
        Setgroups(Vec<libc::gid_t>),
        Setresgid(libc::gid_t),
        Setresuid(libc::uid_t),
        Prctl {
            option: libc::c_int,
            arg2: libc::c_ulong,
        },
        Capset {
            effective: [u32; 2],
            permitted: [u32; 2],
            inheritable: [u32; 2],
        },
        SeccompLoad,
        Setrlimit {
            resource: libc::__rlimit_resource_t,
            soft: u64,
            hard: u64,
        },
        CloseRange(u32),
        /// A binfmt_misc instance mounted detached.
        BinfmtInstance,
        /// Handlers registered in it: the entry names.
        BinfmtRegister(Vec<String>),
        Execve {
            prog: String,
            argv: Vec<String>,
        },
    }

    type Matcher = Box<dyn Fn(&Call) -> bool>;

    /// Records every call; a call a [`Recorder::fail`] matcher matches fails with its errno
    /// (after being recorded), every other one succeeds. `execve` fails with ENOEXEC unless
    /// told otherwise (a real one would not return).
    #[derive(Default)]
    pub struct Recorder {
        calls: RefCell<Vec<Call>>,
        failures: RefCell<Vec<(Matcher, i32)>>,
    }

    impl Recorder {
        pub fn new() -> Recorder {
            Recorder::default()
        }

        /// Fail the calls `matches` picks with `errno`.
        pub fn fail(&self, errno: i32, matches: impl Fn(&Call) -> bool + 'static) {
            self.failures.borrow_mut().push((Box::new(matches), errno));
        }

        /// The calls so far, in order.
        pub fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }

        fn record(&self, call: Call) -> SysResult {
            let errno = self
                .failures
                .borrow()
                .iter()
                .find(|(m, _)| m(&call))
                .map(|(_, e)| *e);
            self.calls.borrow_mut().push(call);
            match errno {
                Some(e) => Err(Errno::from_raw_os_error(e)),
                None => Ok(()),
            }
        }
    }

    fn s(c: &CStr) -> String {
        c.to_string_lossy().into_owned()
    }

    impl Sys for Recorder {
        fn mount(
            &self,
            source: &str,
            target: &str,
            fstype: &str,
            flags: libc::c_ulong,
            data: &str,
        ) -> SysResult {
            self.record(Call::Mount {
                source: source.into(),
                target: target.into(),
                fstype: fstype.into(),
                flags,
                data: data.into(),
            })
        }

        fn mount_overlay(
            &self,
            target: &Path,
            lowers: &[PathBuf],
            upper: Option<(&Path, &Path)>,
        ) -> Result<(), SetupError> {
            self.record(Call::Overlay {
                target: target.into(),
                lowers: lowers.to_vec(),
                writable: upper.is_some(),
            })
            .map_err(|e| SetupError::Overlay {
                layers: lowers.len(),
                errno: e.raw_os_error(),
            })
        }

        fn locked_flags(&self, _path: &str) -> libc::c_ulong {
            0
        }

        fn umount2(&self, target: &str, flags: libc::c_int) -> SysResult {
            self.record(Call::Umount2 {
                target: target.into(),
                flags,
            })
        }

        fn pivot_root(&self, new_root: &str, put_old: &str) -> SysResult {
            self.record(Call::PivotRoot {
                new_root: new_root.into(),
                put_old: put_old.into(),
            })
        }

        fn chdir(&self, path: &CStr) -> SysResult {
            self.record(Call::Chdir(s(path)))
        }

        fn unshare(&self, flags: libc::c_int) -> SysResult {
            self.record(Call::Unshare(flags))
        }

        fn sethostname(&self, name: &str) -> SysResult {
            self.record(Call::Sethostname(name.into()))
        }

        fn setgroups(&self, groups: &[libc::gid_t]) -> SysResult {
            self.record(Call::Setgroups(groups.to_vec()))
        }

        fn setresgid(&self, gid: libc::gid_t) -> SysResult {
            self.record(Call::Setresgid(gid))
        }

        fn setresuid(&self, uid: libc::uid_t) -> SysResult {
            self.record(Call::Setresuid(uid))
        }

        fn prctl(&self, option: libc::c_int, arg2: libc::c_ulong) -> SysResult {
            self.record(Call::Prctl { option, arg2 })
        }

        fn capset(
            &self,
            effective: [u32; 2],
            permitted: [u32; 2],
            inheritable: [u32; 2],
        ) -> SysResult {
            self.record(Call::Capset {
                effective,
                permitted,
                inheritable,
            })
        }

        fn seccomp_load(&self, _filters: &Filters) -> SysResult {
            self.record(Call::SeccompLoad)
        }

        fn setrlimit(
            &self,
            resource: libc::__rlimit_resource_t,
            soft: u64,
            hard: u64,
        ) -> SysResult {
            self.record(Call::Setrlimit {
                resource,
                soft,
                hard,
            })
        }

        fn close_range(&self, first: u32) {
            let _ = self.record(Call::CloseRange(first));
        }

        fn binfmt_instance(&self) -> Result<std::os::fd::OwnedFd, crate::sandbox::binfmt::Error> {
            self.record(Call::BinfmtInstance).map_err(|e| {
                crate::sandbox::binfmt::Error::Mount {
                    path: PathBuf::from("(a detached mount)"),
                    kernel: "6.18.0".into(),
                    source: e.into(),
                }
            })?;
            Ok(fs_err::File::open("/dev/null")
                .expect("/dev/null")
                .into_parts()
                .0
                .into())
        }

        fn binfmt_register(
            &self,
            _dir: &Path,
            regs: &[crate::sandbox::binfmt::Registration],
        ) -> Result<(), crate::sandbox::binfmt::Error> {
            self.record(Call::BinfmtRegister(
                regs.iter().map(|r| r.name.clone()).collect(),
            ))
            .map_err(|e| crate::sandbox::binfmt::Error::Register {
                platform: regs.first().map(|r| r.platform.clone()).unwrap_or_default(),
                interpreter: regs
                    .first()
                    .map(|r| r.interpreter.clone())
                    .unwrap_or_default(),
                source: e.into(),
            })
        }

        fn execve(&self, exec: &Exec) -> Errno {
            let call = Call::Execve {
                prog: s(exec.prog()),
                argv: exec.argv().iter().map(|a| s(a)).collect(),
            };
            match self.record(call) {
                Err(e) => e,
                Ok(()) => Errno::NOEXEC,
            }
        }
    }
}
