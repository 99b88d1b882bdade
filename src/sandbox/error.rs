//! Why a sandbox could not be made, as a typed value: the child builds a [`SetupError`] where
//! a call fails, sends it over the report pipe ([`super::protocol`]), and strata decides what
//! it means (fall back to copies, which hint to give) from its variant and errno, never from
//! its text. The text ([`std::fmt::Display`]) is what users read and is kept word for word.

use std::io;

use serde::{Deserialize, Serialize};

/// An OS error that crossed the report pipe: its errno when it had one, and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsError {
    pub errno: Option<i32>,
    pub message: String,
}

impl OsError {
    /// The calling thread's last OS error (errno).
    pub fn last() -> OsError {
        io::Error::last_os_error().into()
    }
}

impl From<io::Error> for OsError {
    fn from(e: io::Error) -> OsError {
        OsError {
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }
}

impl From<rustix::io::Errno> for OsError {
    fn from(e: rustix::io::Errno) -> OsError {
        io::Error::from(e).into()
    }
}

impl std::fmt::Display for OsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `errno` as the kernel's words: "Operation not permitted (os error 1)".
fn os(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Why the sandbox could not be made (or could not start the process), with its operands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SetupError {
    /// The kernel refused a user namespace (a policy, or the namespace limit).
    #[error("unshare(CLONE_NEWUSER): {}", os(*errno))]
    UserNs { errno: i32 },
    /// The session could not become root of its user namespace once mapped.
    #[error("becoming root in the user namespace: {}", os(*errno))]
    BecomeRoot { errno: i32 },
    /// strata did not say that the session's maps were written.
    #[error("the parent did not write the uid/gid maps")]
    NotMapped,
    /// Writing the session's uid/gid maps failed (strata's side).
    #[error("writing the uid/gid maps: {cause}")]
    IdMaps { cause: OsError },
    /// The session ended before it said it had made its user namespace.
    #[error("the sandbox session exited ({status}) before creating its user namespace")]
    SessionExited { status: String },
    /// The session could not answer a request for a child.
    #[error("a request for a sandbox child came with {count} descriptors")]
    BadRequest { count: usize },
    /// More descriptors for one child than a request carries.
    #[error("{count} descriptors for one sandbox child")]
    TooManyDescriptors { count: usize },
    /// More secret files than one step may have.
    #[error("{count} secret files in one step (100 at most)")]
    TooManySecrets { count: usize },
    /// The child ended without saying how.
    #[error("the sandbox child {pid} ended without reporting")]
    NoReport { pid: u32 },
    /// unshare(2) of other namespaces (`namespaces` as the message names them).
    #[error("unshare({namespaces}): {}", os(*errno))]
    Unshare { namespaces: String, errno: i32 },
    /// A mount(2) refused.
    #[error("mount {fstype} {from} on {target} ({data}): {}", os(*errno))]
    Mount {
        fstype: String,
        from: String,
        target: String,
        data: String,
        errno: i32,
    },
    /// A new proc refused (a container whose own /proc has masked paths).
    #[error("mount proc proc on {target} (): {}", os(*errno))]
    Proc { target: String, errno: i32 },
    /// The kernel refused an overlay of `layers` lower dirs.
    #[error("mount overlay ({layers} layers): {}", os(*errno))]
    Overlay { layers: usize, errno: i32 },
    /// More lower dirs than fit in one overlay mount on this kernel.
    #[error("mount overlay ({layers} layers): more than fit in one mount on this kernel (Linux 6.8 mounts any number); squash layers of the base image or use fewer steps")]
    OverlayTooMany { layers: usize },
    /// Another system call (`fork`, `pivot_root`, …) failed.
    #[error("{call}: {}", os(*errno))]
    Syscall { call: String, errno: i32 },
    /// A file operation failed; `what` names it and its path ("creating /x", "chown /x").
    #[error("{what}: {cause}")]
    Io { what: String, cause: OsError },
    /// A file operation failed whose error names its path itself.
    #[error("{cause}")]
    Os { cause: OsError },
    /// strata could not give the step its private network; strata says why.
    #[error("the step's network was not set up")]
    NetworkNotReady,
    /// The step's private network cannot be had (slirp4netns missing or failing).
    #[error("{message}")]
    Network { message: String },
    /// The task could not be read from its pipe.
    #[error("reading the sandbox task: {cause}")]
    TaskRead { cause: OsError },
    /// The task pipe closed before a task came.
    #[error("strata sent no sandbox task")]
    NoTask,
    /// USER names no user or group the image has (the message says which).
    #[error("{message}")]
    User { user: String, message: String },
    /// USER needs ids this user namespace does not map.
    #[error("USER {user} needs uid {uid} and gid {gid}, but only root is mapped in this user namespace (no subordinate ids for this user in /etc/subuid and /etc/subgid, or newuidmap/newgidmap missing; see `strata doctor`)")]
    RootOnly { user: String, uid: u32, gid: u32 },
    /// A cache mount could not be handed to the step's user.
    #[error("cache mount {target}: giving it to the step's user: {cause}")]
    CacheOwner {
        target: String,
        cause: Box<SetupError>,
    },
    /// The spec has an empty argv.
    #[error("no command to run")]
    NoCommand,
    /// `--ulimit` names a limit strata does not know.
    #[error("--ulimit: no limit {name}")]
    UnknownUlimit { name: String },
    /// setrlimit(2) refused a `--ulimit`.
    #[error("--ulimit {name}={soft}:{hard}: {}{}", os(*errno), if *errno == libc::EPERM { " (above the hard limit strata runs with: raising it needs CAP_SYS_RESOURCE, which a user namespace does not give; `ulimit -H` shows it)" } else { "" })]
    Ulimit {
        name: String,
        soft: u64,
        hard: u64,
        errno: i32,
    },
    /// The terminal of `-t` could not be made or handed over.
    #[error("{message}")]
    Console { message: String },
    /// Docker's seccomp profile could not be compiled.
    #[error("{message}")]
    Seccomp { message: String },
    /// A step of a foreign platform cannot run here: no QEMU, a kernel that cannot mount
    /// binfmt_misc in a user namespace and no handler on the host, a platform strata cannot
    /// emulate, or the registration refused. `message` names the platform and what is
    /// missing; `fix` is what to do.
    #[error("cannot run {platform} binaries: {message}")]
    Emulation {
        platform: String,
        message: String,
        errno: Option<i32>,
        fix: Option<String>,
    },
    /// A hook of `main()` failed (its own typed error inside).
    #[error("{}", .0.message)]
    Hook(HookFailure),
}

/// A hook's failure as the sandbox carries it without knowing the hook: the hook's own typed
/// error as JSON (for the engine to read back), its text, and the errno behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookFailure {
    pub error: serde_json::Value,
    pub message: String,
    pub errno: Option<i32>,
}

impl SetupError {
    /// The errno behind the failure, when a system call failed.
    pub fn errno(&self) -> Option<i32> {
        use SetupError::*;
        match self {
            UserNs { errno }
            | BecomeRoot { errno }
            | Unshare { errno, .. }
            | Mount { errno, .. }
            | Proc { errno, .. }
            | Overlay { errno, .. }
            | Syscall { errno, .. }
            | Ulimit { errno, .. } => Some(*errno),
            IdMaps { cause } | Io { cause, .. } | Os { cause } | TaskRead { cause } => cause.errno,
            Emulation { errno, .. } => *errno,
            CacheOwner { cause, .. } => cause.errno(),
            Hook(f) => f.errno,
            _ => None,
        }
    }

    /// Whether making a namespace failed (unshare's ENOSPC is the namespace limit, not a disk).
    pub fn is_namespace(&self) -> bool {
        matches!(self, SetupError::UserNs { .. } | SetupError::Unshare { .. })
    }

    /// Whether the kernel refused an overlay mount (the copy snapshotter works instead).
    pub fn is_overlay_refused(&self) -> bool {
        matches!(
            self,
            SetupError::Overlay { .. } | SetupError::OverlayTooMany { .. }
        )
    }

    /// What to tell the user: `strata doctor`'s advice when the user namespace was refused.
    pub fn advice(&self) -> Vec<String> {
        use SetupError::*;
        match self {
            Proc { .. } => super::probe::proc_fixes(),
            UserNs { .. } | BecomeRoot { .. } | RootOnly { .. } => super::probe::advice(),
            Emulation { fix, .. } => fix
                .iter()
                .cloned()
                .chain(["`strata doctor` lists the platforms this machine runs, and how".into()])
                .collect(),
            _ if self.errno() == Some(libc::EPERM) => {
                vec!["run `strata doctor` for a full report".into()]
            }
            _ => Vec::new(),
        }
    }
}

/// A failed call's [`SetupError::Io`]: `what` names the operation and its path.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> SetupError {
    let what = what.into();
    move |e| SetupError::Io {
        what,
        cause: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_today_s_and_the_variant_crosses_the_pipe() {
        let e = SetupError::Mount {
            fstype: "tmpfs".into(),
            from: "tmpfs".into(),
            target: "/r/dev".into(),
            data: "mode=755".into(),
            errno: libc::EPERM,
        };
        assert_eq!(
            e.to_string(),
            "mount tmpfs tmpfs on /r/dev (mode=755): Operation not permitted (os error 1)"
        );
        let mut buf = Vec::new();
        super::super::protocol::write_frame(&mut buf, &e).unwrap();
        let back: SetupError = super::super::protocol::read_frame(&mut io::Cursor::new(buf))
            .unwrap()
            .unwrap();
        assert_eq!(back, e);
        assert_eq!(back.errno(), Some(libc::EPERM));
        assert_eq!(back.advice(), vec!["run `strata doctor` for a full report"]);
        let u = SetupError::UserNs {
            errno: libc::ENOSPC,
        };
        assert_eq!(
            u.to_string(),
            "unshare(CLONE_NEWUSER): No space left on device (os error 28)"
        );
        assert!(u.is_namespace());
        assert!(SetupError::OverlayTooMany { layers: 200 }.is_overlay_refused());
    }
}
