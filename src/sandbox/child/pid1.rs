//! pid 1 of the step's pid namespace: builds the root (through [`super::rootfs`],
//! [`super::kernelfs`], [`super::mounts`]), resolves the user, forks the step's process and,
//! in that fork, resets signals, hardens it (groups, seccomp, capabilities, ids) and execs it;
//! then passes signals on and reaps until the process ends.

use std::ffi::{CStr, CString};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::identity::{caps_to_drop, harden, Refused};
use super::kernelfs::kernel_fs;
use super::mounts::{hand_over, mount_binds};
use super::rootfs::{pivot, root_fs};
use super::{cstr, io, report, syscall, R};
use crate::sandbox::protocol::{read_frame, ToChild};
use crate::sandbox::sys::{Exec, Sys};
use crate::sandbox::{user, Outcome, Report, SetupError, Spec};
use rustix::io::Errno;

/// Say `msg` (when there is one) on stderr and exit 126, in the forked child before exec
/// (async-signal-safe).
fn fail(msg: &[u8]) -> ! {
    // SAFETY: write and _exit are async-signal-safe; msg is valid for its length.
    unsafe {
        if !msg.is_empty() {
            libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
        }
        libc::_exit(126)
    }
}

/// The forked child of pid 1: stdio, signals, session, then [`start`]; never returns (126 or
/// 127 on failure).
#[allow(clippy::too_many_arguments)]
fn exec_child(
    sys: &dyn Sys,
    spec: &Spec,
    exec: &Exec,
    console: Option<&std::os::fd::OwnedFd>,
    ids: &user::Ids,
    workdir: &CStr,
    filters: &crate::sandbox::seccomp::Filters,
    drop_caps: &[u32],
    prog: &str,
) -> ! {
    reset_process(spec, console);
    let errno = match start(
        sys,
        spec.maps.root_only,
        ids,
        filters,
        drop_caps,
        workdir,
        exec,
    ) {
        Ok(errno) => errno,
        Err(refused) => fail(refused.message()),
    };
    // Said on the process's stderr, as a shell says it (this process is a fork of a
    // single-threaded one: formatting is safe here): 126 when the file is there but cannot be
    // run (not executable, an argument list over the kernel's limit).
    let e = std::io::Error::from(errno);
    let msg = format!("strata: exec {prog}: {e}\n");
    // SAFETY: write and _exit on a valid buffer.
    unsafe {
        libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
        libc::_exit(if errno == Errno::NOENT { 127 } else { 126 });
    }
}

/// Harden the process ([`harden`]: groups, seccomp, capabilities, ids, workdir), close every
/// descriptor above 2, exec. Returns the exec's errno when it failed.
#[allow(clippy::too_many_arguments)]
pub(super) fn start(
    sys: &dyn Sys,
    root_only: bool,
    ids: &user::Ids,
    filters: &crate::sandbox::seccomp::Filters,
    drop_caps: &[u32],
    workdir: &CStr,
    exec: &Exec,
) -> Result<Errno, Refused> {
    harden(sys, root_only, ids, filters, drop_caps, workdir)?;
    // The process starts with exactly 0, 1 and 2: not the report and task pipes, not the
    // memory files (already mounted), and nothing strata inherited without close-on-exec (a
    // directory of the caller's, a jobserver pipe, a socket: a way out of the root, as in
    // runc's CVE-2024-21626).
    sys.close_range(3);
    Ok(sys.execve(exec))
}

/// The process's stdio (the terminal, or /dev/null for stdin), default signal dispositions
/// and an empty mask, a new session (with the terminal as its controlling one). Calls on this
/// process's own state, not the sandbox's: outside [`Sys`].
fn reset_process(spec: &Spec, console: Option<&std::os::fd::OwnedFd>) {
    let devnull = cstr("/dev/null");
    // SAFETY: raw syscalls on valid pointers and descriptors this process owns.
    unsafe {
        if let Some(t) = &console {
            // The terminal (close-on-exec itself) on 0, 1 and 2.
            for n in 0..3 {
                libc::dup2(t.as_raw_fd(), n);
            }
        } else if !spec.stdin {
            let fd = libc::open(devnull.as_ptr(), libc::O_RDONLY);
            if fd >= 0 {
                libc::dup2(fd, 0);
                libc::close(fd);
            }
        }
        // Default signal dispositions and an empty mask, as runc gives a container's
        // process: strata's runtime ignores SIGPIPE, and an ignored signal stays ignored
        // across exec (`yes | head` would print "Broken pipe" and `set -o pipefail` fail).
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Through the raw syscall: glibc's signal() refuses 32 and 33, which it keeps for
        // itself, and those can arrive ignored from whatever started strata.
        #[repr(C)]
        struct KernelSigaction {
            handler: usize,
            flags: libc::c_ulong,
            restorer: usize,
            mask: u64,
        }
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        libc::setsid();
        if console.is_some() {
            // The terminal on 0, 1 and 2 becomes this new session's controlling terminal, and
            // the step's process group its foreground: Ctrl-C and Ctrl-Z reach the shell.
            libc::ioctl(0, libc::TIOCSCTTY, 0);
        }
    }
}

/// pid 1: build the root, start the process, reap until it ends.
pub(super) fn init(sys: &dyn Sys, spec: &Spec, net_ready: Option<std::fs::File>) -> R<Outcome> {
    crate::sandbox::signals::init_prepare();
    let root = root_fs(sys, spec)?;

    let mut created = Vec::new();
    kernel_fs(sys, spec, &root, &mut created)?;

    let hand_to_user = mount_binds(sys, spec, &root, &mut created)?;
    report(&Report::Created(created));

    pivot(sys, &root, &spec.hostname)?;

    let ids = step_user(spec)?;
    for t in &hand_to_user {
        hand_over(Path::new(t), ids.uid, ids.gid).map_err(|e| SetupError::CacheOwner {
            target: t.clone(),
            cause: Box::new(e),
        })?;
    }
    let console = open_console(sys, spec, ids.uid)?;
    let workdir = if spec.workdir.is_empty() {
        "/".to_string()
    } else {
        spec.workdir.clone()
    };
    if std::fs::metadata(&workdir).is_err() {
        std::fs::create_dir_all(&workdir).map_err(io(format!("creating WORKDIR {workdir}")))?;
    }

    let argv: Vec<CString> = spec.argv.iter().map(|a| cstr(a)).collect();
    if argv.is_empty() {
        return Err(SetupError::NoCommand);
    }
    let env = environment(spec, &ids);
    let path_var = search_path(spec);
    let Some(prog) = find_program(&spec.argv[0], path_var) else {
        // As a shell (and docker run): a command that is not there is the process's failure,
        // exit code 127, with the reason on its stderr; not a failure of the sandbox.
        let msg = format!(
            "strata: {}: executable file not found in $PATH ({path_var})\n",
            spec.argv[0]
        );
        let _ = std::io::stderr().write_all(msg.as_bytes());
        return Ok(Outcome::Exited(127));
    };
    let exec = Exec::new(cstr(&prog), argv, env);
    let wd = cstr(&workdir);
    if let Some(mut f) = net_ready {
        if !matches!(read_frame(&mut f), Ok(Some(ToChild::NetworkReady))) {
            return Err(SetupError::NetworkNotReady);
        }
    }

    let drop_caps = caps_to_drop();
    // --ulimit: set here, inherited by the process.
    for l in &spec.rlimits {
        l.apply(sys)?;
    }
    let filters = crate::sandbox::seccomp::docker_default().map_err(|e| SetupError::Seccomp {
        message: e.to_string(),
    })?;
    let forked = std::time::Instant::now();
    // SAFETY: single-threaded; the child only calls async-signal-safe functions before exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(syscall("fork"));
    }
    if pid == 0 {
        exec_child(
            sys,
            spec,
            &exec,
            console.as_ref(),
            &ids,
            &wd,
            &filters,
            &drop_caps,
            &prog,
        );
    }
    drop(console);
    // Reap everything and pass forwarded signals on; return when our process ends (the rest
    // dies with the namespace).
    let status = crate::sandbox::signals::init_wait(pid).map_err(io("waitpid"))?;
    // How long the process ran, from its fork to its exit: the rest of a step's time is
    // strata's (setting up, committing).
    report(&Report::Ran {
        micros: u64::try_from(forked.elapsed().as_micros()).unwrap_or(u64::MAX),
    });
    if libc::WIFEXITED(status) {
        return Ok(Outcome::Exited(libc::WEXITSTATUS(status)));
    }
    Ok(Outcome::Signaled(libc::WTERMSIG(status)))
}

/// The step's user from the image's /etc/passwd and /etc/group (read after pivot_root), which
/// must be root when only root is mapped.
fn step_user(spec: &Spec) -> R<user::Ids> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let ids = user::resolve(&spec.user, &passwd, &group).map_err(|e| SetupError::User {
        user: spec.user.clone(),
        message: e.to_string(),
    })?;
    if spec.maps.root_only && (ids.uid != 0 || ids.gid != 0) {
        return Err(SetupError::RootOnly {
            user: spec.user.clone(),
            uid: ids.uid,
            gid: ids.gid,
        });
    }
    Ok(ids)
}

/// With `-t`, the step's terminal (given to `uid`), on our stdout and stderr too.
fn open_console(sys: &dyn Sys, spec: &Spec, uid: u32) -> R<Option<std::os::fd::OwnedFd>> {
    // -t: the terminal, from this sandbox's devpts; its master goes to strata over the console
    // socket strata gave us as fd 0. Our own messages (a command not found) go to it too.
    if !spec.tty {
        return Ok(None);
    }
    let console = |e: crate::sandbox::console::ConsoleError| SetupError::Console {
        message: e.to_string(),
    };
    let c = crate::sandbox::console::allocate(sys, spec.tty_size, uid).map_err(console)?;
    // SAFETY: fd 0 is the console socket strata passed; borrowed for one sendmsg.
    crate::sandbox::console::send(unsafe { std::os::fd::BorrowedFd::borrow_raw(0) }, &c.master)
        .map_err(console)?;
    drop(c.master);
    // SAFETY: dup2 onto our own stdout and stderr.
    unsafe {
        libc::dup2(c.slave.as_raw_fd(), 1);
        libc::dup2(c.slave.as_raw_fd(), 2);
    }
    Ok(Some(c.slave))
}

/// The process's environment: the spec's, and HOME when the image's ENV does not set it: the
/// user's home from the image's passwd ("/" for a user without an entry), as runc sets it:
/// `cd ~` works, and pip, uv and npm find their caches under it (a cache mount on
/// /root/.cache/pip is used, not bypassed).
fn environment(spec: &Spec, ids: &user::Ids) -> Vec<CString> {
    let mut env: Vec<CString> = spec.env.iter().map(|e| cstr(e)).collect();
    if !spec.env.iter().any(|e| e.starts_with("HOME=")) {
        let home = ids.home.as_deref().filter(|h| !h.is_empty()).unwrap_or("/");
        env.push(cstr(&format!("HOME={home}")));
    }
    env
}

/// The PATH the program is looked up in: the step's, or the default.
fn search_path(spec: &Spec) -> &str {
    spec.env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::oci::DEFAULT_PATH)
}

/// `name` as a path (when it has a `/`), or the first regular file `name` in `path_var`'s
/// directories.
fn find_program(name: &str, path_var: &str) -> Option<String> {
    if name.contains('/') {
        return Some(name.to_string());
    }
    path_var
        .split(':')
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
}
