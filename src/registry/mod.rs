//! The registry side: references, credentials, policy (registries.conf, certs.d), and a client
//! of the OCI distribution protocol that pulls into the store and pushes from it.
//!
//! - [`reference`]: Docker's reference grammar and normalisation; the one reference type.
//! - [`config`]: registries.conf v2 (mirrors, rewrites, insecure, blocked, aliases,
//!   short-name-mode) and certs.d.
//! - [`credentials`]: auth.json / docker config.json / credential helpers; login and logout.
//! - [`client`]: one HTTP session per registry host: scheme, the auth challenge (anonymous,
//!   Basic, Bearer tokens per scope with refresh), retries with backoff and `Retry-After`.
//! - [`pull`] and [`push`]: the protocol's flows; blobs go through the store's verified
//!   temp-then-rename path, so nothing partial or unverified becomes a blob.
//! - [`combine`]: images already in a registry made into one image index (`strata manifest`).
//! - [`source`]: the one seam that turns a reference into a local image (store first, pull if
//!   missing, `--pull` to check for a newer one), used by build, run and check.
//!
//! The client is synchronous (reqwest's blocking client, which runs its own runtime thread) and
//! parallel with threads; nothing here prints: progress goes through [`Observer`].

pub mod artifact;
pub mod client;
pub mod combine;
pub mod config;
pub mod credentials;
pub mod pull;
pub mod push;
pub mod source;

use std::path::PathBuf;

pub use crate::oci::reference::{Reference, ReferenceError};
pub use client::Registry;
pub use source::{ImageSource, PullPolicy, Resolved};

use crate::oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("transfer cancelled")]
    Cancelled,
    #[error("{reference}: not found on {registry}: {detail}")]
    NotFound {
        reference: String,
        registry: String,
        repository: String,
        detail: String,
    },
    #[error("{reference}: access denied by {registry} ({detail}); credentials tried: {tried}")]
    Denied {
        reference: String,
        registry: String,
        detail: String,
        tried: String,
    },
    #[error("{reference}: no image for {want} in its index; it has: {available}")]
    Platform {
        reference: String,
        want: String,
        available: String,
    },
    #[error("{host}: TLS failure: {detail}")]
    Tls {
        host: String,
        detail: String,
        dirs: String,
    },
    #[error("{host}: unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    /// The registry stopped answering, or sent too slowly (see `client::Timeouts`).
    #[error("{host}: {what}: {detail}")]
    Stalled {
        host: String,
        what: String,
        detail: String,
    },
    /// Redirects that never end (reqwest follows 10).
    #[error("{host}: {what}: too many redirects ({detail})")]
    TooManyRedirects {
        host: String,
        what: String,
        detail: String,
    },
    /// The TLS server closed the connection after the handshake: it may want a client
    /// certificate.
    #[error("{host}: unreachable: {detail}")]
    ClosedAfterHandshake {
        host: String,
        detail: String,
        dirs: String,
    },
    #[error("{reference}: blocked by the registry policy in {}", file.display())]
    Blocked { reference: String, file: PathBuf },
    #[error("short name \"{name}\" has no alias and short-name-mode is enforcing (in {})", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))]
    ShortName { name: String, files: Vec<PathBuf> },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}; nothing was stored")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{method} {url}: HTTP {status}: {body}")]
    Http {
        method: String,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{0}")]
    Protocol(String),
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("credentials: {0}")]
    Credentials(String),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Oci(#[from] crate::oci::Error),
}

impl Error {
    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::NotFound { repository, .. } => format!(
                "check the name and tag (`skopeo list-tags docker://{repository}` lists the tags)"
            ),
            Error::Denied { registry, .. } => format!(
                "`strata login {registry}`, or check the user's rights on the repository"
            ),
            Error::Platform { .. } => {
                "choose one with FROM --platform=… (strata does not emulate other platforms)"
                    .to_string()
            }
            Error::Tls { dirs, .. } => format!(
                "put the registry's CA in one of {dirs} as ca.crt (and a client certificate as NAME.cert with NAME.key), or mark the registry insecure in registries.conf"
            ),
            Error::ClosedAfterHandshake { dirs, .. } => format!(
                "if the registry requires a client certificate, put it in one of {dirs} as NAME.cert with NAME.key"
            ),
            Error::ShortName { name, .. } => {
                format!("write the full name, such as docker.io/library/{name}")
            }
            Error::Unreachable { host, .. } => format!(
                "check the network and the proxy (HTTPS_PROXY); to pull through a mirror, add one for {host} to registries.conf (README: Registries); an image saved elsewhere (`strata save`, `docker save`) loads with `strata load -i FILE`; `strata doctor` tries the registries registries.conf names"
            ),
            Error::Stalled { .. } => "on a slow link, wait longer with STRATA_REGISTRY_TIMEOUT=SECONDS (default 30) or accept a slower rate with STRATA_REGISTRY_MIN_RATE=BYTES (default 1024 a second)".to_string(),
            Error::TooManyRedirects { .. } => {
                "the registry (or a proxy or mirror in front of it) redirects in a loop: check its configuration or the mirror in registries.conf".to_string()
            }
            _ => return None,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a blob was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Already in the store (pull) or already in the repository (push).
    Present,
    Downloaded,
    Uploaded,
    /// Mounted from another repository of the same registry.
    Mounted,
}

impl BlobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobOutcome::Present => "already there",
            BlobOutcome::Downloaded => "downloaded",
            BlobOutcome::Uploaded => "uploaded",
            BlobOutcome::Mounted => "mounted",
        }
    }
}

/// What the registry code reports while it works. Every method has a no-op default.
pub trait Observer: Sync {
    /// A reference was resolved to a digest at `source` (a mirror or the registry itself).
    fn resolved(&self, _reference: &str, _digest: &Digest, _source: &str) {}
    /// `--pull` found that a tag now points elsewhere.
    fn moved(&self, _reference: &str, _from: &Digest, _to: &Digest) {}
    /// `--pull` found that a tag still points at what the store has.
    fn current(&self, _reference: &str, _digest: &Digest) {}
    /// A blob transfer starts (`push` false for a download).
    fn blob_start(&self, _digest: &Digest, _size: u64, _push: bool) {}
    /// Bytes moved so far for a blob.
    fn blob_progress(&self, _digest: &Digest, _done: u64) {}
    fn blob_done(&self, _digest: &Digest, _outcome: BlobOutcome) {}
    /// A request failed and is tried again.
    fn retry(&self, _what: &str, _why: &str) {}
    /// A line for the user (a mirror skipped, a fallback taken).
    fn note(&self, _msg: &str) {}
    /// The caller gave up (Ctrl-C): transfers stop at their next chunk.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Run `f` on every item, `workers` at a time; the first error stops the others (at their next
/// item) and is returned.
pub(crate) fn for_each_parallel<T: Sync>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let first_error: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    let failed = || {
        first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    };
    std::thread::scope(|s| {
        for _ in 0..workers.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                if failed() {
                    break;
                }
                if let Err(e) = f(item) {
                    first_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                    break;
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}
