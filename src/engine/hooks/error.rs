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

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32, message: &str) -> sandbox::OsError {
        sandbox::OsError {
            errno: Some(errno),
            message: message.into(),
        }
    }

    #[test]
    fn every_hook_error_crosses_as_json_with_its_text_and_errno() {
        let mount = sandbox::SetupError::Mount {
            fstype: "overlay".into(),
            from: "overlay".into(),
            target: "/w/view".into(),
            data: "lowerdir=/a:/b".into(),
            errno: libc::EPERM,
        };
        let cases = [
            (
                HookError::Decode {
                    message: "unknown variant `X`".into(),
                },
                "bad sandbox hook: unknown variant `X`".to_string(),
                None,
            ),
            (
                HookError::Io {
                    what: Some("removing /s/x".into()),
                    cause: os(libc::ENOTDIR, "Not a directory (os error 20)"),
                },
                "removing /s/x: Not a directory (os error 20)".to_string(),
                Some(libc::ENOTDIR),
            ),
            (
                HookError::Io {
                    what: None,
                    cause: os(libc::ENOENT, "failed to open file `/s/b`"),
                },
                "failed to open file `/s/b`".to_string(),
                Some(libc::ENOENT),
            ),
            (
                HookError::Setup {
                    what: Some("a view of the layers".into()),
                    cause: Box::new(mount.clone()),
                },
                format!("a view of the layers: {mount}"),
                Some(libc::EPERM),
            ),
            (
                HookError::Call {
                    call: "unshare(CLONE_NEWPID)".into(),
                    cause: os(libc::EINVAL, "Invalid argument (os error 22)"),
                },
                "unshare(CLONE_NEWPID): Invalid argument (os error 22)".to_string(),
                Some(libc::EINVAL),
            ),
            (
                HookError::ProcKilled,
                "the proc test was killed".to_string(),
                None,
            ),
        ];
        for (e, text, errno) in cases {
            assert_eq!(e.to_string(), text);
            assert_eq!(e.errno(), errno, "{e:?}");
            let back: HookError =
                serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
            assert_eq!(back, e);
            // As the sandbox carries it back over its report pipe.
            let f = e.clone().into_failure();
            assert_eq!((f.message.as_str(), f.errno), (text.as_str(), errno));
            assert_eq!(serde_json::from_value::<HookError>(f.error).unwrap(), e);
        }
    }

    #[test]
    fn a_file_error_keeps_its_errno_and_names_what_failed() {
        let dir = std::env::temp_dir().join(format!("strata-hookerr-{}", std::process::id()));
        let missing = dir.join("missing");
        // fs_err's error names the path itself.
        let e = bare(fs_err::File::open(&missing).unwrap_err());
        assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");

        // The errno is found down the error's chain of causes.
        #[derive(Debug, thiserror::Error)]
        #[error("applying the layer")]
        struct Apply(#[source] std::io::Error);
        let e = bare(Apply(std::io::Error::from_raw_os_error(libc::ENOSPC)));
        assert_eq!(e.errno(), Some(libc::ENOSPC));
        assert_eq!(e.to_string(), "applying the layer");

        let e = at("reading through the overlay")(std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.errno(), Some(libc::EACCES));
        assert_eq!(
            e.to_string(),
            format!(
                "reading through the overlay: {}",
                std::io::Error::from_raw_os_error(libc::EACCES)
            )
        );

        // An error with no OS error in it crosses with its text alone.
        let e = bare(std::io::Error::other("short tar"));
        assert_eq!((e.errno(), e.to_string()), (None, "short tar".to_string()));
    }
}
