//! The engine's typed errors, and what the command line needs from any error strata returns:
//! its hints (data, never text inside the message) and its [`Class`], which is the exit code.
//! The other modules' error types carry their own hints (`registry::Error::hint`,
//! `sandbox::Error::advice`, `context::Error::hint`, a Dockerfile `Diagnostic`'s hint);
//! [`explain`] reads them all from an error chain.

use crate::engine::interrupt::Interrupted;

pub use crate::context::UNSTABLE_CONTEXT;

/// What kind of failure an error is; the command line exits with [`Class::exit_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A RUN command failed, or the build failed for another reason: 1.
    Failed,
    /// What was given is wrong (the Dockerfile, a flag, a context path, a secret, a stage
    /// name): 2, as for a command-line usage error.
    Input,
    /// A registry could not be reached, refused, or has no such image: 3.
    Registry,
    /// This machine cannot run the sandbox (user namespaces, subordinate ids): 4.
    Environment,
    /// Ctrl-C or SIGTERM: 128 + the signal, as a shell reports it.
    Interrupted(i32),
}

impl Class {
    pub const fn exit_code(self) -> i32 {
        match self {
            Class::Failed => 1,
            Class::Input => 2,
            Class::Registry => 3,
            Class::Environment => 4,
            Class::Interrupted(sig) => 128 + sig,
        }
    }
}

/// What to do when the store's filesystem is full (ENOSPC).
pub const NO_SPACE: &str = "the store's filesystem is full: `strata df` shows what takes the space; `strata prune` removes what no image or cached step uses, `strata prune --cache` the build cache too, `strata prune --all` the cache mounts as well (or put the store on a larger disk with STRATA_ROOT or --root)";

/// Whether `e` (or a cause of it) is a disk that is full. ENOSPC from `unshare`/`clone` is
/// something else (the limit on user namespaces), and so is not counted.
pub fn is_no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let setup = |c: &(dyn std::error::Error + 'static)| match c.downcast_ref() {
        Some(crate::sandbox::Error::Setup { cause, .. }) => Some(cause.clone()),
        _ => None,
    };
    let namespaces = chain(e).any(|c| setup(c).is_some_and(|s| s.is_namespace()));
    !namespaces
        && chain(e).any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|x| x.raw_os_error() == Some(libc::ENOSPC))
                || setup(c).is_some_and(|s| s.errno() == Some(libc::ENOSPC))
                || c.to_string().contains("No space left on device")
        })
}

/// Marks an error that only says "another stage failed first".
#[derive(Debug, thiserror::Error)]
#[error("cancelled: another stage failed")]
pub struct Cancelled;

/// Failures of build steps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A RUN command exited with a code other than 0.
    #[error("process \"{argv}\" did not complete successfully: exit code: {code}")]
    CommandFailed {
        argv: String,
        code: i32,
        /// How to look at where it failed (`--debug`, `strata debug`), when that is possible.
        hint: Option<&'static str>,
    },
    /// `--from=NAME` names no stage, context or image strata could tell apart from a typo.
    #[error("--from={name}: there is no stage {name}")]
    NoSuchStage { name: String, suggestion: String },
    /// A required `--mount=type=secret` with no `--secret` for it.
    #[error("secret {id}: not found")]
    MissingSecret { id: String },
    /// A required `--mount=type=ssh` with no `--ssh` for it.
    #[error("ssh agent {id}: not given")]
    MissingSsh { id: String },
    /// A context file changed between the key and the step reading it.
    #[error("the build context changed while this step read it{files}; nothing was cached")]
    ContextChanged { files: String },
    /// The Dockerfile is not there (`given` with `-f`, else looked for in the context).
    #[error("{}", if *given { format!("{}: file not found (given with -f)", path.display()) } else { format!("no Dockerfile at {}", path.display()) })]
    NoDockerfile {
        path: std::path::PathBuf,
        given: bool,
    },
    /// A flag's value is not one strata takes (or not yet).
    #[error("{message}")]
    BadFlag { message: String },
    /// The build context given is not a directory (nor `-`).
    #[error("build context \"{given}\": not a directory")]
    NoContext { given: String },
    /// `RUN --network=host` without `--allow network.host`.
    #[error("RUN --network=host gives the step the host's network, loopback included")]
    HostNetworkNotAllowed,
    /// The stages ran without an error, yet the target stage has no result.
    #[error("the build stopped before the target stage finished")]
    TargetUnfinished,
    /// `--push` without a `-t` name.
    #[error("--push needs a name to push to: give -t REGISTRY/REPOSITORY[:TAG]")]
    PushWithoutName,
    /// `--output type=registry` with neither `name=` nor a `-t` name.
    #[error("--output type=registry needs a name: give -t REGISTRY/REPOSITORY[:TAG] or name=")]
    RegistryOutputWithoutName,
    /// `--output type=local,dest=DIR` where DIR has files.
    #[error("--output {}: the directory exists and is not empty", dest.display())]
    OutputNotEmpty { dest: std::path::PathBuf },
    /// An ONBUILD trigger of a stage's base image does not parse.
    #[error("ONBUILD trigger \"{trigger}\" of the base of stage {stage}: {message}")]
    BadTrigger {
        trigger: String,
        stage: String,
        message: String,
    },
    /// `FROM --platform=` names no platform (`at` is `Dockerfile:LINE`).
    #[error("{at}: invalid --platform \"{platform}\"")]
    BadPlatform { at: String, platform: String },
    /// `FROM --platform=` asks for a platform the base image is not.
    #[error("{at}: base image {image} is {os}/{architecture}, not the {want} that --platform asks for (strata does not emulate other platforms)")]
    WrongPlatform {
        at: String,
        image: String,
        os: String,
        architecture: String,
        want: String,
    },
    /// A base image has no image for the platform a stage is built for (`--platform` of the
    /// build, or `FROM --platform=`).
    #[error("{at}: base image {image} has no {want} image (the one found is {found})")]
    BaseLacksPlatform {
        at: String,
        image: String,
        found: String,
        want: String,
    },
    /// An output that takes one image (`type=docker`, `--load`) with several platforms.
    #[error("{what}: docker exporter does not support multiple platforms ({platforms})")]
    DockerExporterMultiPlatform { what: String, platforms: String },
    /// Something a multi-platform build does not do yet.
    #[error("{what} with several platforms ({platforms}) is not supported yet")]
    NotWithPlatforms { what: String, platforms: String },
    /// An OCI layout (a named context) has no image of the tag asked for.
    #[error("{}: no image tagged {tag}", layout.display())]
    NoTaggedImage {
        layout: std::path::PathBuf,
        tag: String,
    },
    /// An OCI layout (a named context) has no image.
    #[error("{}: no image in the layout", layout.display())]
    EmptyLayout { layout: std::path::PathBuf },
    /// `FROM name` where the named context `name` is a directory.
    #[error("{at}: FROM {name}: the build context {name} is a directory ({}); FROM needs an image (docker-image://REF or oci-layout://PATH)", dir.display())]
    ContextIsDir {
        at: String,
        name: String,
        dir: std::path::PathBuf,
    },
    /// A stage's base is a named context that was not given.
    #[error("{at}: no build context named {name}")]
    NoNamedContext { at: String, name: String },
    /// An instruction's variables do not expand.
    #[error("{cause}")]
    Expand {
        cause: crate::dockerfile::shell::ShellError,
    },
    /// A heredoc's body does not expand.
    #[error("heredoc {path}: {cause}")]
    Heredoc {
        path: String,
        cause: crate::dockerfile::shell::ShellError,
    },
    #[error("FROM inside a stage")]
    FromInStage,
    /// What cannot happen did (a bug).
    #[error("internal error: {0}")]
    Internal(String),
    /// A hook in the user namespace exited 0 without saying what it did.
    #[error("{what} ended without an answer")]
    HookNoAnswer { what: String },
    /// A hook in the user namespace did not exit 0 (`outcome` as the sandbox tells it).
    #[error("{what} ended with {outcome}")]
    HookEnded { what: String, outcome: String },
    /// A COPY hook answered something else than a COPY's result.
    #[error("{what}: the hook answered something else than a COPY")]
    HookNotCopy { what: String },
    /// A failed step's filesystem is not kept for `strata debug` (`why`: a secret in it).
    #[error("not kept: {why}")]
    NotKept { why: &'static str },
    #[error("source can't be a URL for COPY")]
    UrlInCopy,
    #[error("ADD: mixing URL or git sources with local files (or --from) in one ADD is not supported; use one ADD per kind of source")]
    MixedAddSources,
    #[error("ADD: one git repository per ADD, not mixed with other sources")]
    TwoGitSources,
    #[error("checksum requires HTTP(S) or Git sources")]
    ChecksumForLocal,
    /// A COPY or ADD the copy job refused (a source not found, an unknown --chown user, …).
    #[error("{message}")]
    Copy { message: String },
    /// The directory of a WORKDIR could not be made.
    #[error("WORKDIR {dir}: {message}")]
    Workdir { dir: String, message: String },
    /// A COPY source that `.dockerignore` excludes.
    #[error("\"/{path}\": not found (excluded by .dockerignore)")]
    Excluded { path: String },
    /// The `.dockerignore` patterns do not parse.
    #[error("{cause}")]
    BadIgnore {
        cause: crate::context::ignore::Error,
    },
    /// `--from=` names the stage it is in.
    #[error("--from={name} names this stage itself")]
    FromItself { name: String },
    /// EXPOSE of what is not a port.
    #[error("EXPOSE {port}: {message}")]
    BadPort {
        port: String,
        message: crate::dockerfile::flags::PortError,
    },
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
}

impl Error {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::CommandFailed { hint, .. } => return hint.map(str::to_string),
            Error::NoSuchStage { name, suggestion } => format!(
                "did you mean the stage {suggestion}? (an image of that name is written with its registry or tag, docker.io/library/{name}:latest)"
            ),
            Error::MissingSecret { id } => {
                format!("pass it with --secret id={id},src=FILE or --secret id={id},env=VAR")
            }
            Error::MissingSsh { id } => {
                format!("pass --ssh {id}=SOCKET (or --ssh default to use $SSH_AUTH_SOCK)")
            }
            Error::ContextChanged { .. } => UNSTABLE_CONTEXT.to_string(),
            Error::NoDockerfile { given: true, .. } => {
                "a relative -f is looked up in the current directory, then in the context"
                    .to_string()
            }
            Error::NoDockerfile { given: false, .. } => "give one with -f FILE".to_string(),
            Error::BadFlag { .. } => return None,
            Error::BaseLacksPlatform { want, .. } => format!(
                "use a base whose index has {want} (`strata images` lists the platforms a tag has), or leave {want} out of --platform"
            ),
            Error::DockerExporterMultiPlatform { .. } => {
                "build one platform for it (--platform linux/amd64), or write the image index with --output type=oci,dest=FILE or push it with --push".to_string()
            }
            Error::NotWithPlatforms { .. } => {
                "build each platform on its own (one --platform per build) for it".to_string()
            }
            Error::NoContext { .. } => {
                "give a directory, or - for a tar on standard input".to_string()
            }
            Error::HostNetworkNotAllowed => {
                "allow it on the command line with `--allow network.host` (as buildx's entitlement)"
                    .to_string()
            }
            _ => return None,
        })
    }

    pub fn class(&self) -> Class {
        match self {
            Error::CommandFailed { .. } | Error::ContextChanged { .. } => Class::Failed,
            Error::NoSuchStage { .. }
            | Error::MissingSecret { .. }
            | Error::MissingSsh { .. }
            | Error::NoDockerfile { .. }
            | Error::NoContext { .. }
            | Error::BadFlag { .. }
            | Error::BaseLacksPlatform { .. }
            | Error::DockerExporterMultiPlatform { .. }
            | Error::NotWithPlatforms { .. }
            | Error::HostNetworkNotAllowed => Class::Input,
            // Each of these was a plain message before it was typed, and kept its class.
            _ => Class::Failed,
        }
    }
}

/// What goes wrong fetching ADD's remote sources.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// `--checksum`'s value does not parse (the parser's message).
    #[error("{0}")]
    BadChecksum(crate::dockerfile::flags::ChecksumError),
    #[error("invalid checksum digest format {expected} for {url}: a commit hash is for git sources; a file needs sha256:<hex>")]
    CommitForFile { expected: String, url: String },
    #[error("digest mismatch for {url}: expected {expected}, got {alg}:{got}")]
    Mismatch {
        url: String,
        expected: String,
        alg: &'static str,
        got: String,
    },
    #[error("setting up the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("downloading {url}")]
    Download {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("downloading {url}: HTTP {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    /// git could not be run (its error shown in the message, as before it was typed).
    #[error("running git (needed for ADD of a git repository): {0}")]
    NoGit(std::io::Error),
    #[error("git {args}: {stderr}")]
    Git { args: String, stderr: String },
    #[error("{url}: repository does not contain ref {reference} ({cause})")]
    NoRef {
        url: String,
        reference: String,
        cause: Box<FetchError>,
    },
    #[error("{url}: expected checksum to match {checksum}, the ref resolved to commit {commit}")]
    CommitMismatch {
        url: String,
        checksum: String,
        commit: String,
    },
    #[error(
        "invalid checksum {checksum} for {url}: a git source takes a commit hash, not a digest"
    )]
    DigestForGit { checksum: String, url: String },
    #[error("{url}: no directory {subdir} in the repository")]
    NoSubdir { url: String, subdir: String },
}

/// What goes wrong with `--load`.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("--load={given}: expected docker or podman (--load alone: docker when its socket answers, else podman)")]
    BadTarget { given: String },
    #[error(
        "DOCKER_HOST={host}: --load talks to a docker daemon through a unix socket (unix://PATH)"
    )]
    DockerHost { host: String },
    /// Neither a docker daemon nor podman (`socket`: where docker was looked for).
    #[error("--load: no docker daemon answers at {socket} and podman is not installed: start docker (or set DOCKER_HOST=unix://PATH), install podman, or write an archive with --output type=docker,dest=FILE")]
    NoTarget { socket: String },
    #[error("--load: podman load failed ({status}): {stderr}")]
    Podman { status: String, stderr: String },
    /// The docker daemon at `socket` answered something wrong (`said`).
    #[error("--load: the docker daemon at {}: {said}", socket.display())]
    Daemon {
        socket: std::path::PathBuf,
        said: String,
    },
}

/// A layer of an imported cache that could not be used (missing, damaged, or not the diffID
/// its record claims): [`crate::engine::build`] starts again without the cache at index
/// `cache_from` among the build's `--cache-from` (or, for
/// [`crate::engine::cache::remote::REMEMBERED`], without the remembered records of `digest`).
#[derive(Debug, thiserror::Error)]
#[error("the cache {name}: layer {digest}: {reason}")]
pub struct BadImport {
    pub cache_from: usize,
    pub name: String,
    pub digest: crate::oci::Digest,
    pub reason: String,
}

/// What goes wrong reading a `--cache-from` / `--cache-to` cache (`what`: its reference, or
/// `DIR:TAG` for a layout) or checking one of its layers as it is copied into the store.
#[derive(Debug, thiserror::Error)]
pub enum RemoteCacheError {
    #[error("{what}: the cache config is not valid")]
    BadConfig {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: the cache config lists {diff_ids} diffIDs for {layers} layers")]
    DiffIdCount {
        what: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error("{what} is an image without a strata cache in its config (built without --cache-to type=inline)")]
    NoInline { what: String },
    #[error("{what}: the inline cache is not valid")]
    BadInline {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: the image's config and manifest disagree on its layers")]
    LayersDisagree { what: String },
    #[error("{what} is a {media_type}, not a cache manifest")]
    NotManifest { what: String, media_type: String },
    /// An image index (a multi-platform image with inline caches) without the build's platform.
    #[error("{what} is an image index without a {platform} image (it has {has})")]
    NoPlatformInIndex {
        what: String,
        platform: String,
        has: String,
    },
    #[error("layer {digest} is neither in the store nor in an imported cache")]
    NotImported { digest: crate::oci::Digest },
    /// A layer copied from a layout is longer than its descriptor's `size`.
    #[error("longer than the {size} bytes its descriptor says; nothing was stored")]
    TooLong { size: u64 },
    /// A layer copied from a layout is not its descriptor's `digest` (`have` bytes of `size`).
    #[error("its bytes ({have} of {size}) hash to {actual}, not {digest}; nothing was stored")]
    WrongDigest {
        have: u64,
        size: u64,
        actual: crate::oci::Digest,
        digest: crate::oci::Digest,
    },
    /// A layer copied from a layout inflates to another diffID than its record gives it.
    #[error("uncompressed ({len} bytes) it is {actual}, not the diffID {diff_id} its record gives it; nothing was stored")]
    WrongDiffId {
        len: u64,
        actual: crate::oci::Digest,
        diff_id: crate::oci::Digest,
    },
    /// A layer copied from a layout does not inflate (`cause` shown in the message).
    #[error("not a readable gzip, zstd or tar stream ({cause}); nothing was stored")]
    Unreadable { cause: std::io::Error },
}

/// Everything [`crate::engine::build`] fails with: the engine's own failures ([`Error`]) and
/// the typed errors of the floors below, kept whole so that [`explain`] reads their hints and
/// class, wrapped in what the engine was doing when they happened.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Engine(#[from] Error),
    /// A step failed: `step` is where (`Dockerfile:3 RUN make`), as BuildKit names it.
    #[error("{step}")]
    Step {
        step: Box<crate::engine::StepFailed>,
        #[source]
        source: Box<BuildError>,
    },
    /// The base image of a stage could not be had.
    #[error("base image {reference}")]
    Base {
        reference: String,
        #[source]
        source: Box<BuildError>,
    },
    /// An output (`--output`, `-t`, `--push`) could not be written.
    #[error("output {output}")]
    Output {
        output: String,
        #[source]
        source: Box<BuildError>,
    },
    /// A `--cache-to` / `--cache-from` cache could not be read or written.
    #[error("cache {cache}")]
    Cache {
        cache: String,
        #[source]
        source: Box<BuildError>,
    },
    /// What the engine was doing (`writing /s/v1/tmp/x`, `reading the layer of sha256:…`).
    #[error("{what}")]
    Doing {
        what: String,
        #[source]
        source: Box<BuildError>,
    },
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    Registry(#[from] crate::registry::Error),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::Error),
    #[error(transparent)]
    Context(#[from] crate::context::Error),
    #[error(transparent)]
    Dockerfile(#[from] crate::dockerfile::Diagnostic),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Oci(#[from] crate::oci::Error),
    #[error(transparent)]
    Apply(#[from] crate::layer::apply::ApplyError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Reference(#[from] crate::oci::ReferenceError),
    #[error(transparent)]
    Copy(#[from] crate::engine::hooks::copy::CopyError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    BadImport(#[from] BadImport),
    #[error(transparent)]
    RemoteCache(#[from] RemoteCacheError),
    #[error(transparent)]
    Layout(#[from] crate::oci::layout::LayoutError),
    #[error(transparent)]
    Mount(#[from] MountError),
}

impl BuildError {
    /// The error this one stands for when it only wraps another (a transparent variant), so
    /// that a walk down the chain sees the typed error itself.
    fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(match self {
            BuildError::Engine(e) => e,
            BuildError::Cancelled(e) => e,
            BuildError::Interrupted(e) => e,
            BuildError::Registry(e) => e,
            BuildError::Sandbox(e) => e,
            BuildError::Context(e) => e,
            BuildError::Dockerfile(e) => e,
            BuildError::Store(e) => e,
            BuildError::Oci(e) => e,
            BuildError::Apply(e) => e,
            BuildError::Io(e) => e,
            BuildError::Json(e) => e,
            BuildError::Reference(e) => e,
            BuildError::Copy(e) => e,
            BuildError::Fetch(e) => e,
            BuildError::Load(e) => e,
            BuildError::BadImport(e) => e,
            BuildError::RemoteCache(e) => e,
            BuildError::Layout(e) => e,
            BuildError::Mount(e) => e,
            BuildError::Step { .. }
            | BuildError::Base { .. }
            | BuildError::Output { .. }
            | BuildError::Cache { .. }
            | BuildError::Doing { .. } => return None,
        })
    }

    /// A step failed: `self` wrapped in `step` (the CLI shows its lines).
    pub fn in_step(self, step: crate::engine::StepFailed) -> BuildError {
        BuildError::Step {
            step: Box::new(step),
            source: Box::new(self),
        }
    }

    /// The step this error happened in, if it names one.
    pub fn step(&self) -> Option<&crate::engine::StepFailed> {
        match self {
            BuildError::Step { step, .. } => Some(step),
            _ => None,
        }
    }

    /// Wrap in what the engine was doing.
    pub fn doing(self, what: impl Into<String>) -> BuildError {
        BuildError::Doing {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// The hints and the exit class, as [`explain`] reads them.
    pub fn explain(&self) -> Explained {
        explain(self)
    }

    /// Whether this is only "another stage failed first".
    pub fn is_cancelled(&self) -> bool {
        chain(self).any(|c| c.is::<Cancelled>())
    }
}

/// `.doing("what")` on any result whose error becomes a [`BuildError`]: a `.context`, but
/// typed.
pub trait Doing<T> {
    fn doing(self, what: impl Into<String>) -> Result<T, BuildError>;
    fn doing_with<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, BuildError>;
}

impl<T, E: Into<BuildError>> Doing<T> for Result<T, E> {
    fn doing(self, what: impl Into<String>) -> Result<T, BuildError> {
        self.map_err(|e| e.into().doing(what))
    }
    fn doing_with<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, BuildError> {
        self.map_err(|e| e.into().doing(what()))
    }
}

/// The causes of `e`, outermost first, each [`BuildError`] that only wraps another replaced by
/// what it wraps, so that downcasts see them.
pub fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(see_through(e)), |c| c.source().map(see_through))
}

/// What `c` stands for when it is a [`BuildError`] that only wraps another, and so on down.
/// A boxed cause (`source: Box<BuildError>`) is seen as the box:
/// looked inside too.
fn see_through<'a>(
    mut c: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    loop {
        let b = c
            .downcast_ref::<BuildError>()
            .or_else(|| c.downcast_ref::<Box<BuildError>>().map(|b| &**b));
        match b {
            Some(b) => match b.inner() {
                Some(inner) => c = inner,
                None => return b,
            },
            None => return c,
        }
    }
}

/// `e` and its causes, outermost first, joined by `: ` (as the command line shows a chain).
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    for c in std::iter::successors(e.source(), |c| c.source()) {
        out.push_str(": ");
        out.push_str(&c.to_string());
    }
    out
}

/// The step an error chain failed in, if it names one (the CLI shows its lines).
pub fn failed_step<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a crate::engine::StepFailed> {
    std::iter::successors(Some(e), |c| c.source()).find_map(|c| {
        c.downcast_ref::<crate::engine::StepFailed>()
            .or_else(|| c.downcast_ref::<BuildError>().and_then(BuildError::step))
            .or_else(|| c.downcast_ref::<Box<BuildError>>().and_then(|b| b.step()))
    })
}

/// The hints and the class of an error chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// Each typed cause's hint, outermost first.
    pub hints: Vec<String>,
    pub class: Class,
}

/// Read the hints and the class of every typed cause in `e`'s chain. The innermost typed
/// cause gives the class (it knows best what went wrong), except that an interruption always
/// wins; a chain of plain messages is [`Class::Failed`].
pub fn explain(e: &(dyn std::error::Error + 'static)) -> Explained {
    let mut hints = Vec::new();
    let mut class = None;
    let mut interrupted = None;
    for c in chain(e) {
        let (hint, cls): (Option<String>, Option<Class>) =
            if let Some(x) = c.downcast_ref::<Error>() {
                (x.hint(), Some(x.class()))
            } else if let Some(i) = c.downcast_ref::<Interrupted>() {
                interrupted = Some(Class::Interrupted(i.0));
                (None, None)
            } else if let Some(x) = c.downcast_ref::<crate::registry::Error>() {
                let cls = match x {
                    crate::registry::Error::Cancelled => None,
                    crate::registry::Error::Reference(_)
                    | crate::registry::Error::ShortName { .. }
                    | crate::registry::Error::Blocked { .. } => Some(Class::Input),
                    crate::registry::Error::Store(_) | crate::registry::Error::Oci(_) => None,
                    _ => Some(Class::Registry),
                };
                (x.hint(), cls)
            } else if let Some(x) = c.downcast_ref::<crate::sandbox::Error>() {
                let cls = match x {
                    crate::sandbox::Error::Setup { .. } => Class::Environment,
                    crate::sandbox::Error::Io(_) => Class::Failed,
                    crate::sandbox::Error::TooLarge { .. } => Class::Input,
                };
                for a in x.advice() {
                    hints.push(a.clone());
                }
                (None, Some(cls))
            } else if let Some(x) = c.downcast_ref::<crate::context::Error>() {
                let cls = match x {
                    crate::context::Error::Changed { .. } => Class::Failed,
                    _ => Class::Input,
                };
                (x.hint().map(str::to_string), Some(cls))
            } else if let Some(d) = c.downcast_ref::<crate::dockerfile::Diagnostic>() {
                (d.hint.clone(), Some(Class::Input))
            } else if let Some(crate::store::Error::NotFound(_)) =
                c.downcast_ref::<crate::store::Error>()
            {
                (None, Some(Class::Input))
            } else {
                (None, None)
            };
        hints.extend(hint);
        if cls.is_some() {
            class = cls;
        }
    }
    // A full disk says so whatever failed on it (the commit of a layer, a pull, a hook in the
    // sandbox: not this machine's sandbox being unable to run).
    if is_no_space(e) {
        if !hints.iter().any(|h| h == NO_SPACE) {
            hints.push(NO_SPACE.to_string());
        }
        class = Some(Class::Failed);
    }
    Explained {
        hints,
        class: interrupted.or(class).unwrap_or(Class::Failed),
    }
}

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
    NotFound {
        rel: String,
        root: std::path::PathBuf,
    },
    /// A bind mount's source could not be opened beneath its context.
    #[error("mount source \"{rel}\": {cause}")]
    Source { rel: String, cause: std::io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typed error under a message, as the command line's `.context("…")` puts one.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Under(&'static str, #[source] BuildError);

    #[test]
    fn exit_codes_by_class() {
        assert_eq!(
            [
                Class::Failed,
                Class::Input,
                Class::Registry,
                Class::Environment,
                Class::Interrupted(2),
                Class::Interrupted(15)
            ]
            .map(Class::exit_code),
            [1, 2, 3, 4, 130, 143]
        );
    }

    #[test]
    fn the_innermost_typed_cause_classes_the_chain_and_hints_are_collected() {
        let e = BuildError::from(Error::MissingSecret { id: "tok".into() })
            .doing("Dockerfile:3 RUN cat /run/secrets/tok");
        let x = explain(&e);
        assert_eq!(x.class, Class::Input);
        assert_eq!(
            x.hints,
            ["pass it with --secret id=tok,src=FILE or --secret id=tok,env=VAR"]
        );
        // Messages never carry their hints.
        assert!(!with_causes(&e).contains("hint"), "{}", with_causes(&e));

        let reg = crate::registry::Error::Denied {
            reference: "r/x".into(),
            registry: "r".into(),
            detail: "401".into(),
            tried: "none".into(),
        };
        let e = Err::<(), _>(reg).doing("base image").unwrap_err();
        let x = explain(&e);
        assert_eq!(x.class, Class::Registry);
        assert_eq!(x.hints.len(), 1);
        assert!(x.hints[0].contains("strata login r"), "{:?}", x.hints);
    }

    #[test]
    fn typed_causes_are_seen_through_build_errors_and_their_wrappers() {
        let reg = crate::registry::Error::Denied {
            reference: "r/x".into(),
            registry: "r".into(),
            detail: "401".into(),
            tried: "none".into(),
        };
        let e = BuildError::from(reg).doing("pulling r/x");
        let e = BuildError::Base {
            reference: "r/x".into(),
            source: Box::new(e),
        };
        let x = e.explain();
        assert_eq!(x.class, Class::Registry);
        assert!(x.hints[0].contains("strata login r"), "{:?}", x.hints);
        // Under the command line's message too.
        assert_eq!(explain(&Under("strata build", e)).class, Class::Registry);
        // A typed error under a BuildError under another: seen, and so is its class.
        let too_large = BuildError::from(crate::sandbox::Error::TooLarge {
            message: "an argument of 1 MiB".into(),
            advice: Vec::new(),
        });
        let wrapped = too_large.doing("RUN x");
        assert_eq!(wrapped.explain().class, Class::Input);
        assert_eq!(explain(&Under("strata build", wrapped)).class, Class::Input);
        assert!(BuildError::from(Cancelled).doing("stage b").is_cancelled());
        assert!(!BuildError::from(Error::HostNetworkNotAllowed).is_cancelled());
        let io = BuildError::from(std::io::Error::from_raw_os_error(libc::ENOSPC)).doing("w");
        assert!(io.explain().hints.iter().any(|h| h == NO_SPACE));
        assert_eq!(format!("{}", io), "w");
    }

    #[test]
    fn an_interruption_wins_and_plain_messages_are_failures() {
        let e = BuildError::from(Interrupted(15)).doing("RUN sleep 9");
        assert_eq!(explain(&e).class, Class::Interrupted(15));
        // Over a full disk's class too (the disk named by the message).
        let e = BuildError::from(Interrupted(15))
            .doing("writing /s/layer.tar: No space left on device");
        assert_eq!(explain(&e).class, Class::Interrupted(15));
        let plain = std::io::Error::other("plain");
        assert_eq!(explain(&plain).class, Class::Failed);
        assert!(explain(&plain).hints.is_empty());
    }

    #[test]
    fn a_full_disk_says_how_to_get_space_back_and_a_namespace_limit_does_not() {
        let full = BuildError::from(crate::sandbox::Error::Setup {
            cause: Box::new(crate::sandbox::SetupError::Io {
                what: "reading /s/upper".into(),
                cause: crate::sandbox::OsError {
                    errno: Some(libc::ENOSPC),
                    message: "failed to write to file `/s/layer.tar`: No space left on device (os error 28)".into(),
                },
            }),
            advice: Vec::new(),
        });
        let x = explain(&full);
        assert_eq!(x.class, Class::Failed);
        assert!(x.hints.iter().any(|h| h == NO_SPACE), "{x:?}");
        let io = BuildError::from(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .doing("writing a blob");
        assert!(explain(&io).hints.iter().any(|h| h == NO_SPACE));
        // max_user_namespaces reached: unshare says ENOSPC too, and it is this machine's
        // sandbox, not a disk.
        let ns = BuildError::from(crate::sandbox::Error::Setup {
            cause: Box::new(crate::sandbox::SetupError::UserNs {
                errno: libc::ENOSPC,
            }),
            advice: Vec::new(),
        });
        let x = explain(&ns);
        assert_eq!(x.class, Class::Environment);
        assert!(!x.hints.iter().any(|h| h == NO_SPACE), "{x:?}");
    }
}
