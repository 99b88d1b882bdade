//! Why a hook failed, as the sandbox carries it back over its report pipe, and the helpers that
//! turn the errors of the hooks' file work into it.

use crate::sandbox;

/// Why a hook failed, sent back over the sandbox's report pipe; its text is what users read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum HookError {
    /// The task was not a [`super::Hook`].
    #[error("bad sandbox hook: {message}")]
    Decode { message: String },
    /// A file or layer operation failed; `what` names it and its path when the cause does not.
    #[error("{}{cause}", prefix(what))]
    Io {
        what: Option<String>,
        cause: sandbox::OsError,
    },
    /// The sandbox's own work for the hook (an overlay view) failed.
    #[error("{}{cause}", prefix(what))]
    Setup {
        what: Option<String>,
        cause: Box<sandbox::SetupError>,
    },
    /// doctor's proc test: a system call failed (`unshare(CLONE_NEWPID)`, `fork`, `mount -t
    /// proc`).
    #[error("{call}: {cause}")]
    Call {
        call: String,
        cause: sandbox::OsError,
    },
    /// doctor's proc test was killed.
    #[error("the proc test was killed")]
    ProcKilled,
}

fn prefix(what: &Option<String>) -> String {
    what.as_deref()
        .map(|w| format!("{w}: "))
        .unwrap_or_default()
}

impl HookError {
    /// The errno behind the failure, when a system call failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            HookError::Io { cause, .. } | HookError::Call { cause, .. } => cause.errno,
            HookError::Setup { cause, .. } => cause.errno(),
            HookError::Decode { .. } | HookError::ProcKilled => None,
        }
    }

    /// The hook's error as the sandbox carries it.
    pub(super) fn into_failure(self) -> sandbox::HookFailure {
        sandbox::HookFailure {
            error: serde_json::to_value(&self).unwrap_or_default(),
            message: self.to_string(),
            errno: self.errno(),
        }
    }
}

/// An error `e` (of any kind, its errno found in its chain) as a [`HookError::Io`].
pub(super) fn io_err<E: std::error::Error + 'static>(
    what: Option<String>,
) -> impl FnOnce(E) -> HookError {
    move |e| {
        let mut errno = None;
        let mut c: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(x) = c {
            if let Some(io) = x.downcast_ref::<std::io::Error>() {
                if let Some(n) = io.raw_os_error() {
                    errno = Some(n);
                    break;
                }
            }
            c = x.source();
        }
        HookError::Io {
            what,
            cause: sandbox::OsError {
                errno,
                message: e.to_string(),
            },
        }
    }
}

/// [`io_err`] with no context (the error names its path itself).
pub(super) fn bare<E: std::error::Error + 'static>(e: E) -> HookError {
    io_err(None)(e)
}

/// [`io_err`] after `what`.
pub(super) fn at<E: std::error::Error + 'static>(
    what: impl std::fmt::Display,
) -> impl FnOnce(E) -> HookError {
    io_err(Some(what.to_string()))
}
