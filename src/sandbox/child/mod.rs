//! The sandbox session and its children: the session makes the user namespace and forks a
//! child per task; a child enters its other namespaces, builds the root, runs the process as
//! pid 1's child, and reports how it ended. Runs single-threaded from the first instruction of
//! `main()`.

// Errors here are [`SetupError`]s that name their path (`io("creating {path}")`): the reason
// clippy.toml steers code to fs-err is met, so std::fs is allowed here and in the submodules.
#![allow(clippy::disallowed_methods)]

mod identity;
mod kernelfs;
mod mounts;
mod pid1;
mod rootfs;
#[cfg(test)]
mod tests;

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd};

use super::binfmt::Registration;
use super::error::io;
use super::protocol::{
    read_frame, write_frame, SessionReply, SessionRequest, ToChild, JSON_REQUEST, MAX_REQUEST,
};
use super::session::MAX_FDS;
use super::sys::{Linux, Sys};
use super::{Network, Outcome, Report, SetupError, Spec, Task};
use pid1::init;

type R<T> = Result<T, SetupError>;

/// The calling thread's errno, as a number.
fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A failed system call `call` ("fork", "pivot_root"), with errno.
fn syscall(call: &str) -> SetupError {
    SetupError::Syscall {
        call: call.into(),
        errno: last_errno(),
    }
}

/// A refused system call `call` ("pivot_root"), with its errno.
fn refused(call: &str) -> impl FnOnce(rustix::io::Errno) -> SetupError + '_ {
    move |e| SetupError::Syscall {
        call: call.into(),
        errno: e.raw_os_error(),
    }
}

/// unshare(2) of `flags`; a refusal names the namespaces as `namespaces` says them.
fn unshare(sys: &dyn Sys, flags: libc::c_int, namespaces: &str) -> R<()> {
    sys.unshare(flags).map_err(|e| SetupError::Unshare {
        namespaces: namespaces.into(),
        errno: e.raw_os_error(),
    })
}

fn cstr(s: &str) -> CString {
    CString::new(s.as_bytes()).unwrap_or_else(|_| CString::new("?").expect("no NUL"))
}

fn report(r: &Report) {
    // SAFETY: fd 3 is the report pipe the parent set up; we never close it explicitly.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(3) });
    let _ = write_frame(&mut *f, r);
}

/// mount(2) through `sys`; a refusal is [`SetupError::Mount`] with its operands and errno.
fn mount(
    sys: &dyn Sys,
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> R<()> {
    sys.mount(src, target, fstype, flags, data)
        .map_err(|e| SetupError::Mount {
            fstype: fstype.into(),
            from: src.into(),
            target: target.into(),
            data: data.into(),
            errno: e.raw_os_error(),
        })
}

/// The session's entry point (see [`super::session`]): never returns. `hook` runs named hooks
/// of `main()` in the children it forks.
pub fn child_main(hook: &super::HookFn) -> ! {
    let code = match session(&Linux, hook) {
        Ok(()) => 0,
        Err(e) => {
            report(&Report::Error(e));
            125
        }
    };
    std::process::exit(code)
}

/// Make the user namespace, wait for strata to map it, then fork one child per request until
/// strata closes the socket (fd 5).
fn session(sys: &dyn Sys, hook: &super::HookFn) -> R<()> {
    // This process has one thread (a user namespace needs it).
    sys.unshare(libc::CLONE_NEWUSER)
        .map_err(|e| SetupError::UserNs {
            errno: e.raw_os_error(),
        })?;
    report(&Report::Unshared);
    // SAFETY: fd 4 is the pipe strata dup'ed for us; this is its only owner.
    let mut from_parent = unsafe { std::fs::File::from_raw_fd(4) };
    if !matches!(read_frame(&mut from_parent), Ok(Some(ToChild::Mapped))) {
        return Err(SetupError::NotMapped);
    }
    sys.setresgid(0)
        .and_then(|()| sys.setresuid(0))
        .map_err(|e| SetupError::BecomeRoot {
            errno: e.raw_os_error(),
        })?;
    report(&Report::Ready);
    drop(from_parent);
    // SAFETY: fd 3 (the report pipe) and fd 5 (the socket) are ours; children are reaped by the
    // kernel (SIGCHLD ignored): strata learns how each ended from its report, not its status.
    let control = unsafe {
        libc::close(3);
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        std::os::fd::OwnedFd::from_raw_fd(5)
    };
    let me = std::process::id() as i32;
    let mut binfmt = Binfmt::default();
    let mut request = vec![0u8; MAX_REQUEST];
    loop {
        let mut space =
            vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut ancillary = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            &control,
            &mut [std::io::IoSliceMut::new(&mut request)],
            &mut ancillary,
            rustix::net::RecvFlags::CMSG_CLOEXEC,
        );
        let msg = match got {
            Err(rustix::io::Errno::INTR) => continue,
            // strata is gone (or the socket broke): end, and the children with us.
            Err(_) => return Ok(()),
            Ok(m) if m.bytes == 0 => return Ok(()),
            Ok(m) => m,
        };
        let mut fds = Vec::new();
        for m in ancillary.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(it) = m {
                fds.extend(it);
            }
        }
        let reply = if request[0] == JSON_REQUEST {
            drop(fds);
            let req =
                serde_json::from_slice::<SessionRequest>(&request[1..msg.bytes.min(MAX_REQUEST)]);
            match req {
                Ok(SessionRequest::Emulate(regs)) => binfmt.register(sys, &regs),
                Err(_) => SessionReply::Failed(SetupError::BadRequest { count: 0 }),
            }
        } else if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) || fds.len() < 5 {
            SessionReply::Failed(SetupError::BadRequest { count: fds.len() })
        } else {
            // SAFETY: single-threaded; the child only continues in `forked`, which never
            // returns.
            let r = match unsafe { libc::fork() } {
                -1 => SessionReply::Failed(syscall("fork")),
                0 => forked(sys, hook, me, fds),
                pid => SessionReply::Started(pid as u32),
            };
            drop(fds);
            r
        };
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        if rustix::io::write(&control, &body).is_err() {
            return Ok(());
        }
    }
}

/// The session's own binfmt_misc instance (see [`super::emulation`]): mounted detached on the
/// first request, in a mount namespace the session makes for it (a mount needs one its user
/// namespace owns), and kept open for the session's life, which keeps its handlers.
#[derive(Default)]
struct Binfmt {
    instance: Option<std::os::fd::OwnedFd>,
    refused: Option<SetupError>,
}

impl Binfmt {
    fn register(&mut self, sys: &dyn Sys, regs: &[Registration]) -> SessionReply {
        let platform = regs.first().map(|r| r.platform.clone()).unwrap_or_default();
        if let Some(e) = &self.refused {
            return SessionReply::NoInstance(e.clone());
        }
        if self.instance.is_none() {
            let made = sys
                .unshare(libc::CLONE_NEWNS)
                .map_err(|e| SetupError::Emulation {
                    platform: platform.clone(),
                    message: format!(
                        "a mount namespace for binfmt_misc: unshare(CLONE_NEWNS): {}",
                        std::io::Error::from(e)
                    ),
                    errno: Some(e.raw_os_error()),
                    fix: None,
                })
                .and_then(|()| {
                    sys.binfmt_instance()
                        .map_err(|e| super::emulation::error(&platform, &e))
                });
            match made {
                Ok(fd) => self.instance = Some(fd),
                Err(e) => {
                    self.refused = Some(e.clone());
                    return SessionReply::NoInstance(e);
                }
            }
        }
        let Some(fd) = &self.instance else {
            return SessionReply::Failed(SetupError::NoTask);
        };
        let dir = std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        match sys.binfmt_register(&dir, regs) {
            Ok(()) => SessionReply::Emulating,
            Err(e) => SessionReply::Failed(super::emulation::error(&platform, &e)),
        }
    }
}

/// A child of the session: put `fds` in place (0, 1, 2, the report pipe on 3, the task pipe on
/// 4, secret files from [`MEMORY_FD_BASE`](super::MEMORY_FD_BASE)), then do the task.
fn forked(sys: &dyn Sys, hook: &super::HookFn, session: i32, fds: Vec<std::os::fd::OwnedFd>) -> ! {
    // run_spec waits for its pid 1: SIGCHLD must not be ignored here.
    // SAFETY: resetting a signal's disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let _ = sys.prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    // SAFETY: plain signal and descriptor syscalls on descriptors this process owns.
    unsafe {
        // The session may have ended before the line above: then nothing waits for us.
        if libc::getppid() != session {
            libc::_exit(125);
        }
        libc::close(5);
        // Copies above every target first, so that no dup2 overwrites a source still needed.
        let high: Vec<i32> = fds
            .iter()
            .map(|f| libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 128))
            .collect();
        drop(fds);
        for (i, fd) in high.iter().enumerate() {
            let target = if i < 5 {
                i as i32
            } else {
                super::MEMORY_FD_BASE + (i - 5) as i32
            };
            if *fd < 0 || libc::dup2(*fd, target) < 0 {
                libc::_exit(125);
            }
            libc::close(*fd);
        }
    }
    let code = match run_task(sys, hook) {
        Ok(code) => code,
        Err(e) => {
            report(&Report::Error(e));
            125
        }
    };
    std::process::exit(code)
}

/// Read the task from fd 4 and do it.
fn run_task(sys: &dyn Sys, hook: &super::HookFn) -> R<i32> {
    // SAFETY: fd 4 is the task pipe `forked` put there; this is its only owner.
    let mut from_parent = unsafe { std::fs::File::from_raw_fd(4) };
    let task: Task = read_frame(&mut from_parent)
        .map_err(|e| SetupError::TaskRead { cause: e.into() })?
        .ok_or(SetupError::NoTask)?;
    // A private network's namespace is made first, owned by the session's user namespace, so
    // that slirp4netns can configure it while we build the root.
    let private_net = matches!(&task, Task::Run(s) if s.network == Network::Private);
    if private_net {
        unshare(sys, libc::CLONE_NEWNET, "CLONE_NEWNET")?;
    }
    report(&Report::Unshared);
    match task {
        Task::Hook(h) => {
            unshare(sys, libc::CLONE_NEWNS, "CLONE_NEWNS")?;
            let output = hook(h.task).map_err(SetupError::Hook)?;
            report(&Report::HookOutput(output));
            report(&Report::Outcome(Outcome::Exited(0)));
            Ok(0)
        }
        // With a private network strata sends NetworkReady on the task pipe once slirp4netns
        // is ready.
        Task::Run(spec) => run_spec(sys, &spec, private_net.then_some(from_parent)),
    }
}

fn run_spec(sys: &dyn Sys, spec: &Spec, net_ready: Option<std::fs::File>) -> R<i32> {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    unshare(sys, flags, "mount, pid, uts, ipc namespaces")?;
    // The first child is pid 1 of the new pid namespace; when it exits, the kernel kills every
    // process left in the namespace.
    // SAFETY: single-threaded process; the child only continues this function.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(syscall("fork"));
    }
    if pid > 0 {
        // strata may signal pid 1 from now on (`strata run` forwards SIGTERM and others).
        report(&Report::Pid1(pid as u32));
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFSIGNALED(status) {
            // pid 1 was killed (`strata run`'s stop timeout, or a second Ctrl-C): it could not
            // say how its process ended; it ended with pid 1.
            report(&Report::Outcome(Outcome::Signaled(libc::WTERMSIG(status))));
        }
        return Ok(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        });
    }
    let _ = sys.prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    let code = match init(sys, spec, net_ready) {
        Ok(o) => {
            report(&Report::Outcome(o));
            o.code()
        }
        Err(e) => {
            report(&Report::Error(e));
            125
        }
    };
    std::process::exit(code)
}
