//! The terminal of `strata run -t` and of the debug shells, made inside the sandbox from its
//! own devpts, as runc makes a container's console: pid 1 opens `/dev/ptmx` after
//! `pivot_root` (the sandbox's devpts instance), binds the new `/dev/pts/N` over
//! `/dev/console`, and sends the master side back to strata over a unix socket (SCM_RIGHTS),
//! which strata gave the sandbox child as its descriptor 0. So the process's terminal is a node
//! of its own `/dev/pts`: `tty` prints `/dev/pts/0` and ttyname(3) resolves it (a terminal of
//! the host's devpts, as before, is no file inside the sandbox).
//!
//! strata's side ([`ConsoleSocket`]) receives the master and relays it
//! ([`super::terminal::relay`]).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// strata's end of the console socket and the end the sandbox child gets as its fd 0.
pub struct ConsoleSocket {
    ours: OwnedFd,
    theirs: Option<OwnedFd>,
}

impl ConsoleSocket {
    pub fn new() -> io::Result<ConsoleSocket> {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok(ConsoleSocket {
            ours,
            theirs: Some(theirs),
        })
    }

    /// The sandbox's end (taken once: strata must not keep a copy, or [`Self::receive`] never
    /// sees the end of a sandbox that failed before it made the terminal).
    pub fn take_theirs(&mut self) -> Option<OwnedFd> {
        self.theirs.take()
    }

    /// Wait for the master side of the sandbox's terminal; `None` when the sandbox ended
    /// without sending one (it failed before; its report says why).
    pub fn receive(self) -> io::Result<Option<OwnedFd>> {
        drop(self.theirs);
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        loop {
            match rustix::net::recvmsg(
                &self.ours,
                &mut [IoSliceMut::new(&mut byte)],
                &mut ancillary,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(m) if m.bytes == 0 => return Ok(None),
                Ok(_) => break,
            }
        }
        let mut got = None;
        for m in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                for fd in fds {
                    got.get_or_insert(fd);
                }
            }
        }
        Ok(got)
    }
}

/// The sandbox's terminal, made by pid 1 after `pivot_root`.
pub(super) struct Console {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Why the terminal could not be made or sent to strata, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A call on the terminal refused: `what` names it ("unlocking the terminal").
    #[error("{what}: {cause}")]
    Os { what: String, cause: io::Error },
    /// The terminal's path as a C string (it never holds a NUL).
    #[error("{0}")]
    Path(#[from] std::ffi::NulError),
    #[error("no room for the terminal's descriptor")]
    NoRoom,
    #[error("sending the terminal to strata (fd {fd}): {cause}")]
    Send { fd: i32, cause: rustix::io::Errno },
}

fn errno(what: &str) -> ConsoleError {
    ConsoleError::Os {
        what: what.into(),
        cause: io::Error::last_os_error(),
    }
}

/// Open a new terminal of the sandbox's devpts (`/dev/ptmx` is `pts/ptmx` of its own instance),
/// with the window size `size` (rows, columns), bind its slave over `/dev/console`, and give
/// the slave to `uid` (as runc does for a container's stdio) so that a non-root user can open
/// its own terminal by name. Both descriptors are close-on-exec.
pub(super) fn allocate(
    sys: &dyn super::sys::Sys,
    size: Option<[u16; 2]>,
    uid: u32,
) -> Result<Console, ConsoleError> {
    // SAFETY: plain open and ioctls on descriptors this process owns; the path is a valid
    // NUL-terminated string.
    unsafe {
        let m = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if m < 0 {
            return Err(errno("opening /dev/ptmx of the sandbox's devpts"));
        }
        let master = OwnedFd::from_raw_fd(m);
        let unlock: libc::c_int = 0;
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(errno("unlocking the terminal"));
        }
        let mut n: libc::c_uint = 0;
        if libc::ioctl(m, libc::TIOCGPTN, &mut n) != 0 {
            return Err(errno("the terminal's number"));
        }
        let path = format!("/dev/pts/{n}");
        // The peer without a path lookup (Linux 4.13); by its path on older kernels.
        let mut s = libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if s < 0 {
            let p = std::ffi::CString::new(path.as_str())?;
            s = libc::open(p.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        }
        if s < 0 {
            return Err(errno(&format!("opening {path}")));
        }
        let slave = OwnedFd::from_raw_fd(s);
        if let Some([rows, cols]) = size {
            let ws = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            libc::ioctl(m, libc::TIOCSWINSZ, &ws);
        }
        if libc::fchown(s, uid, u32::MAX) != 0 {
            return Err(errno(&format!("giving {path} to uid {uid}")));
        }
        // /dev is the sandbox's own tmpfs: /dev/console is a file there, the terminal bound
        // over it.
        let console = c"/dev/console";
        let f = libc::open(
            console.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
            0o600,
        );
        if f < 0 {
            return Err(errno("creating /dev/console"));
        }
        libc::close(f);
        sys.mount(&path, "/dev/console", "", libc::MS_BIND, "")
            .map_err(|e| ConsoleError::Os {
                what: format!("binding {path} over /dev/console"),
                cause: e.into(),
            })?;
        Ok(Console { master, slave })
    }
}

/// Send `master` to strata over the console socket `socket`.
pub(super) fn send(socket: BorrowedFd<'_>, master: &OwnedFd) -> Result<(), ConsoleError> {
    let fds = [master.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(ConsoleError::NoRoom);
    }
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(b"M")],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(|cause| ConsoleError::Send {
        fd: socket.as_raw_fd(),
        cause,
    })?;
    Ok(())
}
