//! Signals sent to the sandbox's pid 1 go on to its process, as docker's `--sig-proxy` and an
//! init such as tini do: `strata run` forwards SIGTERM, SIGINT, … to pid 1 (whose pid in
//! strata's namespace the sandbox reports, [`super::Report::Pid1`]), and pid 1 sends each to
//! the process, so an application's handler runs (a graceful shutdown) instead of the whole
//! sandbox being killed.
//!
//! The kernel delivers a signal from an ancestor namespace to a namespace's init only when
//! init has a handler for it (or the signal is blocked): pid 1 blocks [`FORWARDED`] and
//! SIGCHLD, gives the forwarded ones a handler, and waits for both with `sigwaitinfo`, reaping
//! on SIGCHLD. The process starts with every signal at its default and none blocked.

/// The signals pid 1 passes on to its process (docker forwards every signal it can catch
/// but SIGCHLD, SIGPIPE and SIGURG; these are the ones a process is told to stop, reload or
/// reopen its logs with).
pub const FORWARDED: [libc::c_int; 6] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// A set of `signals`.
pub fn set_of(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset and sigaddset fill the set they are given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

extern "C" fn pending(_: libc::c_int) {}

/// What pid 1 waits for: the forwarded signals and SIGCHLD.
fn init_set() -> libc::sigset_t {
    let mut all = FORWARDED.to_vec();
    all.push(libc::SIGCHLD);
    set_of(&all)
}

/// pid 1, first thing: block what it will wait for (a signal that arrives before it waits
/// stays pending) and give the forwarded signals a handler (never run while they are blocked).
pub(super) fn init_prepare() {
    let set = init_set();
    // SAFETY: sigprocmask and sigaction with valid, initialised arguments; the handler does
    // nothing.
    unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        for sig in FORWARDED {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = pending as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// pid 1: reap every child, pass each forwarded signal on to `process`, and return the wait
/// status of `process` when it ends (the rest of the namespace dies with pid 1).
pub(super) fn init_wait(process: libc::pid_t) -> std::io::Result<libc::c_int> {
    let set = init_set();
    loop {
        loop {
            let mut status = 0;
            // SAFETY: waiting for any child of pid 1, without blocking.
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if r == process {
                return Ok(status);
            }
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                break;
            }
        }
        // SAFETY: sigwaitinfo on a valid set; the info is not needed.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig > 0 && sig != libc::SIGCHLD {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(process, sig) };
        }
    }
}
