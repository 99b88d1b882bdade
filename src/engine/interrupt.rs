//! SIGINT and SIGTERM during a build: the first one is recorded by the handler, and a watcher
//! thread of the build turns it into a cancellation (running steps killed, their temporary
//! directories removed by the normal error path); strata then exits 130 or 143. A second signal
//! kills strata at once, as an impatient user means.

use std::sync::atomic::{AtomicI32, Ordering};

static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The build was interrupted by this signal.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {}", if *.0 == libc::SIGINT { "SIGINT (Ctrl-C)" } else { "SIGTERM" })]
pub struct Interrupted(pub i32);

impl Interrupted {
    /// The shell's exit code for it: 128 + the signal.
    pub fn exit_code(&self) -> i32 {
        128 + self.0
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    if SIGNAL
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // The second one: the default action, now.
        // SAFETY: signal and raise are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Catch SIGINT and SIGTERM for the rest of the process (system calls restart, so nothing
/// but the watcher sees them).
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask is well-formed.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The signal that interrupted the build, if one did.
pub fn requested() -> Option<Interrupted> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(Interrupted(s)),
    }
}
