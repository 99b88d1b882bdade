//! `strata run`'s signals, as docker's `--sig-proxy`: SIGHUP, SIGINT, SIGQUIT, SIGTERM,
//! SIGUSR1 and SIGUSR2 sent to strata go to the sandbox's pid 1, which passes them on to the
//! process ([`strata::sandbox::signals`]), so an application's handler runs: a graceful
//! shutdown on SIGTERM, a reload on SIGHUP. A process that does not end within the stop
//! timeout of the first SIGINT, SIGTERM or SIGQUIT is killed (as `docker stop -t`), and so is
//! one that gets the same SIGINT or SIGTERM a second time (an impatient Ctrl-C). Before the sandbox runs
//! (while the image is pulled) and after it ended, a signal does what it did before: strata
//! ends by it.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata::sandbox::signals::{set_of, FORWARDED};

/// Where the forwarded signals go.
enum Target {
    /// The sandbox is not running yet.
    NotYet,
    /// Its pid 1 (a pidfd where the kernel has them: a recycled pid is never signalled).
    Running {
        pid: i32,
        pidfd: Option<OwnedFd>,
        /// SIGINT and SIGTERM forwarded so far, and whether any of SIGINT, SIGTERM and
        /// SIGQUIT was (the stop timeout runs from the first).
        ints: u32,
        terms: u32,
        stopping: bool,
    },
    Ended,
}

impl Target {
    fn signal(&self, sig: libc::c_int) {
        if let Target::Running { pid, pidfd, .. } = self {
            let sent = pidfd.as_ref().is_some_and(|fd| {
                rustix::process::pidfd_send_signal(
                    fd,
                    rustix::process::Signal::from_named_raw(sig)
                        .unwrap_or(rustix::process::Signal::KILL),
                )
                .is_ok()
            });
            if !sent && pidfd.is_none() {
                // SAFETY: kill(2) of the sandbox's pid 1, which strata started.
                unsafe { libc::kill(*pid, sig) };
            }
        }
    }
}

/// The forwarding of `strata run`'s signals; see the module's documentation.
pub struct Forwarder {
    target: Arc<Mutex<Target>>,
}

fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "a signal",
    }
}

impl Forwarder {
    /// Block the forwarded signals in the calling thread, and so in every thread it starts
    /// from now on (call it before any other thread exists), and take them on a thread of their
    /// own. `stop_timeout`: how long a process may take to end after the first SIGINT, SIGTERM
    /// or SIGQUIT before it is killed (`None`: as long as it takes).
    pub fn install(stop_timeout: Option<Duration>) -> std::io::Result<Forwarder> {
        let set = set_of(&FORWARDED);
        // SAFETY: blocks signals in this thread; the set is initialised.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        let target = Arc::new(Mutex::new(Target::NotYet));
        let t = target.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let mut sig = 0;
                // SAFETY: sigwait on an initialised set of signals this thread has blocked.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                let mut target = t.lock().unwrap_or_else(|e| e.into_inner());
                let Target::Running {
                    pid,
                    ints,
                    terms,
                    stopping,
                    ..
                } = &mut *target
                else {
                    // Nothing runs: end by the signal, as without forwarding.
                    // SAFETY: the default action, unblocked in this thread, then the signal.
                    unsafe {
                        libc::signal(sig, libc::SIG_DFL);
                        let one = set_of(&[sig]);
                        libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
                        libc::raise(sig);
                    }
                    continue;
                };
                let again = match sig {
                    libc::SIGINT => {
                        *ints += 1;
                        *ints > 1
                    }
                    libc::SIGTERM => {
                        *terms += 1;
                        *terms > 1
                    }
                    _ => false,
                };
                let first_stop = !*stopping
                    && [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT].contains(&sig);
                *stopping |= first_stop;
                let pid = *pid;
                if again {
                    eprintln!("strata: {} again: killing the process", name(sig));
                    target.signal(libc::SIGKILL);
                    continue;
                }
                target.signal(sig);
                if let (true, Some(d)) = (first_stop, stop_timeout) {
                    let t = t.clone();
                    let _ = std::thread::Builder::new()
                        .name("stop-timeout".into())
                        .spawn(move || {
                            std::thread::sleep(d);
                            let target = t.lock().unwrap_or_else(|e| e.into_inner());
                            if matches!(&*target, Target::Running { pid: p, .. } if *p == pid) {
                                eprintln!(
                                    "strata: the process did not end within {}s of {}: killing it (--stop-timeout)",
                                    d.as_secs(),
                                    name(sig)
                                );
                                target.signal(libc::SIGKILL);
                            }
                        });
                }
            })?;
        Ok(Forwarder { target })
    }

    /// The sandbox's pid 1 exists: forward to it from now on.
    pub fn started(&self, pid: u32) {
        let pid = pid as i32;
        let pidfd = rustix::process::Pid::from_raw(pid).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Target::Running {
            pid,
            pidfd,
            ints: 0,
            terms: 0,
            stopping: false,
        };
    }

    /// The sandbox ended.
    pub fn ended(&self) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Target::Ended;
    }
}
