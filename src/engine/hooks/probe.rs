//! `strata doctor`'s hooks: an overlay mounted and read through ([`super::Hook::OverlayTest`]),
//! a proc mounted from a new PID namespace ([`super::Hook::ProcTest`]).

use std::path::Path;

use super::error::{at, bare, HookError};
use crate::sandbox;

pub(super) fn overlay_test(d: &Path) -> Result<(), HookError> {
    for s in ["l", "u", "w", "m"] {
        std::fs::create_dir_all(d.join(s)).map_err(bare)?;
    }
    fs_err::write(d.join("l/f"), "x").map_err(bare)?;
    // The mount RUN steps get (sandbox::overlay), so doctor tests what builds do.
    sandbox::overlay::mount(
        &d.join("m"),
        &[d.join("l")],
        Some((&d.join("u"), &d.join("w"))),
    )
    .map_err(|cause| HookError::Setup {
        what: None,
        cause: Box::new(cause),
    })?;
    fs_err::read(d.join("m/f"))
        .map(|_| ())
        .map_err(at("reading through the overlay"))
}

pub(super) fn proc_test(dir: &Path) -> Result<(), HookError> {
    let call = |call: &str, cause: std::io::Error| HookError::Call {
        call: call.into(),
        cause: cause.into(),
    };
    std::fs::create_dir_all(dir).map_err(at(dir.display()))?;
    // SAFETY: unshare and fork in the single-threaded hook process; the child only
    // mounts and exits.
    if unsafe { libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS) } != 0 {
        return Err(call(
            "unshare(CLONE_NEWPID)",
            std::io::Error::last_os_error(),
        ));
    }
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(call("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = match rustix::mount::mount(
            "proc",
            dir,
            "proc",
            rustix::mount::MountFlags::empty(),
            None,
        ) {
            Ok(()) => 0,
            Err(e) => e.raw_os_error(),
        };
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(e) => Err(call("mount -t proc", std::io::Error::from_raw_os_error(e))),
        None => Err(HookError::ProcKilled),
    }
}
