//! One user namespace per strata process, made once and reused by every sandbox child.
//!
//! The first sandbox task of a process starts the *session*: the strata binary re-executed
//! with [`CHILD_ARG`](super::CHILD_ARG), which unshares a user namespace and waits for strata to
//! write its uid/gid maps (newuidmap and newgidmap, two setuid helpers, when the user has
//! subordinate ids). Then it serves requests on a socket: each request carries the descriptors of
//! one new child (stdin, stdout, stderr, the report pipe, the task pipe, secret files) and the
//! session forks that child, already inside the mapped namespace; the child reads its task from
//! the task pipe (see [`protocol`](super::protocol)).
//!
//! A rootless step used to pay an exec of strata and both setuid helpers for every sandbox
//! process, three times per RUN step (the command, reading its changes, removing its scratch
//! dir): now it pays one fork. The session ends when strata does: its socket reads EOF and it
//! exits, and every child it forked dies with it (PR_SET_PDEATHSIG).

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use super::binfmt;
use super::emulation::{self, Refusal};
use super::protocol::{
    read_frame, write_frame, SessionReply, SessionRequest, ToChild, JSON_REQUEST, MAX_REQUEST,
};
use super::{high, idmap, pipe, probe, Error, Report, SetupError, CHILD_ARG};
use crate::oci::Platform;

/// The most descriptors one request carries: stdin, stdout, stderr, the two pipes and up to
/// 100 secret files (more are refused before a request is made).
pub(crate) const MAX_FDS: usize = 5 + 100;

struct Session {
    control: OwnedFd,
    process: Child,
    maps: idmap::IdMaps,
    /// The platforms this session runs, and how (see [`emulation`]).
    emulation: emulation::Cache,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The session of this process (there is one set of maps per process in practice; another set
/// replaces it).
static SESSION: Mutex<Option<Session>> = Mutex::new(None);

/// Have the session for `maps` (started on first use) fork a sandbox child with `fds` as its
/// descriptors 0, 1, 2, 3, 4 and the secret files after them. Returns the child's pid. A
/// child that runs binaries of `platform` (when foreign) finds QEMU registered for it in the
/// session's user namespace, or the host's handler ([`emulation`]).
pub(super) fn fork_child(
    exe: &Path,
    maps: &idmap::IdMaps,
    platform: Option<&Platform>,
    fds: &[BorrowedFd<'_>],
) -> Result<u32, Error> {
    let mut slot = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_some_and(|s| &s.maps != maps) {
        *slot = None;
    }
    let mut restarted = false;
    loop {
        let session = match slot.as_mut() {
            Some(s) => s,
            None => slot.insert(Session::start(exe, maps)?),
        };
        if let Some(p) = platform {
            let Session {
                control, emulation, ..
            } = &mut *session;
            let route = emulation.ensure(&binfmt::Machine::detect, p, &mut |regs| {
                emulate(control, regs)
            });
            match route {
                Ok(_) => {}
                // A session that is gone (killed from outside) is replaced, once.
                Err(SetupError::Emulation {
                    errno: None,
                    ref message,
                    ..
                }) if message == GONE && !restarted => {
                    restarted = true;
                    *slot = None;
                    continue;
                }
                Err(cause) => {
                    return Err(Error::Setup {
                        advice: cause.advice(),
                        cause: Box::new(cause),
                    })
                }
            }
        }
        match session.request(fds) {
            Ok(pid) => return Ok(pid),
            // A session that is gone (killed from outside) is replaced, once.
            Err(Error::Io(_)) if !restarted => {
                restarted = true;
                *slot = None;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Start the session for `maps` on a thread of its own, so that its start (an exec and the two
/// setuid helpers) overlaps the caller's own preparation (`strata run` resolving its image).
/// Best effort: a failure is reported by the first task, which starts the session again.
pub fn prepare(exe: &Path, maps: &idmap::IdMaps) {
    let (exe, maps) = (exe.to_path_buf(), maps.clone());
    let _ = std::thread::Builder::new()
        .name("sandbox-session".into())
        .spawn(move || {
            let mut slot = SESSION.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Session::start(&exe, &maps).ok();
            }
        });
}

impl Session {
    fn start(exe: &Path, maps: &idmap::IdMaps) -> Result<Session, Error> {
        let (report_r, report_w) = pipe()?;
        let (go_r, go_w) = pipe()?;
        let (mine, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        let mut cmd = Command::new(exe);
        cmd.arg(CHILD_ARG)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // The settings the sandbox reads itself (see `overlay::mount` and `child::pid1::init`).
        for k in ["STRATA_OVERLAY_MOUNT", "STRATA_PROC"] {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        let (rw_high, gr_high, so_high) = (high(&report_w)?, high(&go_r)?, high(&theirs)?);
        let (rw, gr, so) = (
            rw_high.as_raw_fd(),
            gr_high.as_raw_fd(),
            so_high.as_raw_fd(),
        );
        // SAFETY: only dup2, which is async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(rw, 3) < 0 || libc::dup2(gr, 4) < 0 || libc::dup2(so, 5) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut process = cmd.spawn()?;
        drop((report_w, go_r, theirs, rw_high, gr_high, so_high));
        let mut report = std::fs::File::from(report_r);
        let mut go = std::fs::File::from(go_w);
        let pid = process.id();
        let mut fail = |cause: Option<SetupError>, advice: Vec<String>| {
            let _ = process.kill();
            let status = process.wait();
            let cause = cause.unwrap_or_else(|| SetupError::SessionExited {
                status: match status {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                },
            });
            Error::Setup {
                cause: Box::new(cause),
                advice,
            }
        };
        // The session's next report must be `want`; anything else is the reason it failed.
        let mut expect = |want: Report,
                          fail: &mut dyn FnMut(Option<SetupError>, Vec<String>) -> Error|
         -> Result<(), Error> {
            match read_frame::<Report>(&mut report) {
                Ok(Some(r)) if std::mem::discriminant(&r) == std::mem::discriminant(&want) => {
                    Ok(())
                }
                Ok(Some(Report::Error(cause))) => {
                    let advice = cause.advice();
                    Err(fail(Some(cause), advice))
                }
                _ => Err(fail(None, probe::advice())),
            }
        };
        expect(Report::Unshared, &mut fail)?;
        if let Err(e) = idmap::apply(maps, pid) {
            return Err(fail(
                Some(SetupError::IdMaps { cause: e.into() }),
                probe::advice(),
            ));
        }
        // A failed write means the session already ended: its report says why.
        let _ = write_frame(&mut go, &ToChild::Mapped);
        expect(Report::Ready, &mut fail)?;
        Ok(Session {
            control: mine,
            process,
            maps: maps.clone(),
            emulation: emulation::Cache::default(),
        })
    }

    fn request(&mut self, fds: &[BorrowedFd<'_>]) -> Result<u32, Error> {
        if fds.len() > MAX_FDS {
            return Err(Error::Setup {
                cause: Box::new(SetupError::TooManyDescriptors { count: fds.len() }),
                advice: Vec::new(),
            });
        }
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("no room for the descriptors of a sandbox child").into());
        }
        rustix::net::sendmsg(
            &self.control,
            &[IoSlice::new(b"T")],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(io::Error::from)?;
        let mut buf = [0u8; 1024];
        let n = loop {
            match rustix::io::read(&self.control, &mut buf) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r.map_err(io::Error::from)?,
            }
        };
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        match serde_json::from_slice::<SessionReply>(&buf[..n]) {
            Ok(SessionReply::Started(pid)) => Ok(pid),
            Ok(SessionReply::Failed(cause)) => Err(Error::Setup {
                cause: Box::new(cause),
                advice: Vec::new(),
            }),
            Ok(r) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the session answered a request for a child with {r:?}"),
            )
            .into()),
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e).into()),
        }
    }
}

/// The message of the error [`emulate`] gives when the session is gone (it is replaced).
const GONE: &str = "the sandbox session ended";

/// Ask the session on `control` to register `regs` in its binfmt_misc instance.
fn emulate(control: &OwnedFd, regs: &[binfmt::Registration]) -> Result<(), Refusal> {
    let platform = regs.first().map(|r| r.platform.clone()).unwrap_or_default();
    let gone = || {
        Refusal::Failed(SetupError::Emulation {
            platform: platform.clone(),
            message: GONE.into(),
            errno: None,
            fix: None,
        })
    };
    let mut body = vec![JSON_REQUEST];
    serde_json::to_writer(&mut body, &SessionRequest::Emulate(regs.to_vec()))
        .map_err(|_| gone())?;
    if body.len() > MAX_REQUEST {
        return Err(Refusal::Failed(SetupError::Emulation {
            platform: platform.clone(),
            message: format!("a registration request of {} bytes", body.len()),
            errno: None,
            fix: None,
        }));
    }
    rustix::net::send(control, &body, SendFlags::NOSIGNAL).map_err(|_| gone())?;
    let mut buf = [0u8; 4096];
    let n = loop {
        match rustix::io::read(control, &mut buf) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) | Ok(0) => return Err(gone()),
            Ok(n) => break n,
        }
    };
    match serde_json::from_slice::<SessionReply>(&buf[..n]) {
        Ok(SessionReply::Emulating) => Ok(()),
        Ok(SessionReply::NoInstance(e)) => Err(Refusal::NoInstance(e)),
        Ok(SessionReply::Failed(e)) => Err(Refusal::Failed(e)),
        _ => Err(gone()),
    }
}
