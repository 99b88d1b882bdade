//! What setting up a RUN step's mount fails on, apart from the files, sandbox and hooks it
//! uses: a leaf that `engine/error.rs` can name without importing the step modules.

use std::path::PathBuf;

/// What setting up a mount failed on (besides the files, sandbox and hooks it uses).
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("--mount needs target=")]
    NoTarget,
    #[error("secret mount needs id= or target=")]
    NoSecretId,
    #[error("secret {id}: environment variable {var} is not set")]
    SecretEnvUnset { id: String, var: String },
    #[error("locking cache mount {id}: {errno}")]
    Lock {
        id: String,
        errno: rustix::io::Errno,
    },
    /// A bind mount's source is not in its context.
    #[error("mount source \"{rel}\": not found in {}", root.display())]
    NotFound { rel: String, root: PathBuf },
    /// A bind mount's source could not be opened beneath its context.
    #[error("mount source \"{rel}\": {cause}")]
    Source { rel: String, cause: std::io::Error },
}
