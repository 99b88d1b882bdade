//! strata's side of a process's pseudo-terminal (`strata run -t`, the shell of `strata build
//! --debug`), whose master the sandbox made and sent ([`super::console`]): strata puts its own
//! terminal (when stdin is one) in raw mode so that every key reaches the process's line
//! discipline (Ctrl-C, Ctrl-Z and job control are the shell's), copies bytes both ways, and
//! keeps the window size of the pseudo-terminal that of its own terminal.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Our terminal in raw mode until dropped (when stdin is a terminal).
pub struct Raw {
    saved: Option<rustix::termios::Termios>,
}

impl Raw {
    pub fn enter() -> Raw {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(
                stdin.as_fd(),
                rustix::termios::OptionalActions::Now,
                &raw,
            );
        }
        Raw { saved }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin().as_fd(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

/// Copy stdin to the master and the master to stdout, and follow our window size, on threads
/// of their own. The output thread ends when the process and everything that held the slave
/// have ended (the master then reads EIO); join it to have all the output.
pub fn relay(master: OwnedFd, input: bool) -> std::io::Result<std::thread::JoinHandle<()>> {
    let to_master = std::fs::File::from(master.try_clone()?);
    let mut output = std::fs::File::from(master.try_clone()?);
    let size_fd = master;
    follow_size(&size_fd);
    if input {
        std::thread::Builder::new()
            .name("tty-in".into())
            .spawn(move || {
                let mut input = to_master;
                let mut buf = [0u8; 4096];
                let mut stdin = std::io::stdin().lock();
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 || input.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            })?;
    }
    std::thread::Builder::new()
        .name("tty-size".into())
        .spawn(move || loop {
            // A resize of our terminal (there is no SIGWINCH handler to wait on): checked a few
            // times a second, which is how fast a person drags a window.
            std::thread::sleep(std::time::Duration::from_millis(250));
            follow_size(&size_fd);
        })?;
    std::thread::Builder::new()
        .name("tty-out".into())
        .spawn(move || {
            let mut buf = [0u8; 16384];
            let mut stdout = std::io::stdout();
            while let Ok(n) = output.read(&mut buf) {
                if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = stdout.flush();
            }
        })
}

/// Our terminal's window size (stdin's, else stdout's): rows and columns.
fn our_winsize() -> Option<libc::winsize> {
    for fd in [
        std::io::stdin().as_fd().as_raw_fd(),
        std::io::stdout().as_fd().as_raw_fd(),
    ] {
        // SAFETY: TIOCGWINSZ fills a zeroed winsize.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0 {
                return Some(ws);
            }
        }
    }
    None
}

/// Our terminal's window size as (rows, columns), for the sandbox to start its terminal with.
pub fn size() -> Option<[u16; 2]> {
    our_winsize().map(|w| [w.ws_row, w.ws_col])
}

/// Give the pseudo-terminal our terminal's window size.
fn follow_size(master: &OwnedFd) {
    let Some(ws) = our_winsize() else { return };
    // SAFETY: TIOCGWINSZ fills a winsize; TIOCSWINSZ reads one.
    unsafe {
        let mut cur: libc::winsize = std::mem::zeroed();
        libc::ioctl(master.as_raw_fd(), libc::TIOCGWINSZ, &mut cur);
        if (cur.ws_row, cur.ws_col) != (ws.ws_row, ws.ws_col) {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}
