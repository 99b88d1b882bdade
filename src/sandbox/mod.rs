//! The rootless sandbox: runs one process the way a Dockerfile RUN step runs, with nothing but
//! the kernel — a user namespace, a mount namespace with an overlay root, a pid namespace, and
//! a network namespace of its own (or the host's, or an empty one).
//!
//! The user namespace is made once per strata process, by the [`session`]: the strata binary
//! re-executed with the hidden subcommand `__sandbox`, which `main()` dispatches before any
//! thread exists (creating a user namespace fails in a multithreaded process). strata writes its
//! uid/gid maps (with newuidmap/newgidmap when the user has subordinate ids); from then on the
//! session forks one child per task, already in the mapped namespace. Each child reads its
//! [`Task`] from a pipe and reports on another, in typed frames ([`protocol`]).
//!
//! Synchronous, no tokio; knows paths, not layers or caches.

pub mod binfmt;
mod child;
pub mod console;
pub mod copyfs;
pub mod emulation;
mod error;
pub mod idmap;
pub mod net;
pub mod overlay;
pub mod probe;
pub mod protocol;
pub mod seccomp;
mod session;
pub mod signals;
mod sys;
pub mod terminal;
pub mod user;

pub use child::child_main;
pub use error::{HookFailure, OsError, SetupError};
pub use session::prepare;

/// What `main()` gives the sandbox to run a hook's task (see [`HookSpec`]): the engine's typed
/// hooks, which the sandbox carries as JSON without knowing them, as it carries their typed
/// outputs and errors back over the report pipe ([`run_hook_output`]).
pub type HookFn = dyn Fn(serde_json::Value) -> Result<serde_json::Value, HookFailure>;

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The hidden subcommand of the re-executed child.
pub const CHILD_ARG: &str = "__sandbox";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Network {
    /// A network namespace of its own with outbound access through slirp4netns ([`net`]): pip and
    /// apt reach their mirrors, nothing reaches the host's loopback. The default, as BuildKit.
    #[default]
    Private,
    /// The host's network, loopback included: an explicit opt-in.
    Host,
    /// An empty network namespace: only a loopback that is down.
    None,
}

/// The root filesystem of the process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Rootfs {
    /// An overlay: read-only lower dirs (top first) under a writable upper dir.
    Overlay {
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        merged: PathBuf,
    },
    /// Where overlayfs cannot be mounted: the lower dirs (top first) copied into `root` (with
    /// reflinks where possible); `state` records each entry so [`copyfs::diff`] finds changes.
    Copy {
        lower: Vec<PathBuf>,
        root: PathBuf,
        state: PathBuf,
    },
}

/// Set once an overlay mount was refused in this process: its later steps use copies at once.
static OVERLAY_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether steps use the copy snapshotter: asked for (`STRATA_SNAPSHOTTER=copy`), or overlayfs
/// was refused earlier in this process (old kernels, filesystems that refuse it in a user
/// namespace).
pub fn use_copies() -> bool {
    std::env::var("STRATA_SNAPSHOTTER").as_deref() == Ok("copy")
        || OVERLAY_REFUSED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Whether `e` is the kernel refusing a step's overlay mount; if so, this process uses copies
/// from now on ([`use_copies`]) and the caller runs the step again with [`Rootfs::copy_in`].
pub fn overlay_refused(e: &Error) -> bool {
    let refused = matches!(e, Error::Setup { cause, .. } if cause.is_overlay_refused());
    if refused {
        OVERLAY_REFUSED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    refused
}

impl Rootfs {
    /// The copy snapshotter's root for a step laid out in `step` over `lower` (top first).
    pub fn copy_in(step: &std::path::Path, lower: Vec<PathBuf>) -> io::Result<Rootfs> {
        let root = step.join("rootfs");
        std::fs::create_dir_all(&root)?;
        Ok(Rootfs::Copy {
            lower,
            root,
            state: step.join("rootfs.state"),
        })
    }

    /// The lower dirs, top first.
    pub fn lower(&self) -> &[PathBuf] {
        match self {
            Rootfs::Overlay { lower, .. } | Rootfs::Copy { lower, .. } => lower,
        }
    }
}

/// A host path mounted into the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bind {
    pub host: PathBuf,
    pub target: String,
    pub readonly: bool,
    #[serde(default)]
    pub source: BindSource,
}

/// What a [`Bind`] mounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub enum BindSource {
    /// The host path `host`.
    #[default]
    Host,
    /// An empty tmpfs (`size` in bytes).
    Tmpfs { size: Option<u64> },
    /// The path `sub` of an overlay of `lower` (top first), with a throwaway upper dir in
    /// `host` (so writes to a read-write mount are discarded). `sub` is resolved inside the
    /// overlay as if it were `/` (a stage's symlink to /etc/shadow names the stage's file).
    Layers { lower: Vec<PathBuf>, sub: String },
    /// The path `sub` of the directory `host` (a build context), resolved inside it as if it
    /// were `/` and opened beneath it with no symlink followed, in the sandbox's own mount
    /// namespace; the descriptor is what is bound, so nothing swapped in afterwards counts.
    Context { sub: String },
    /// The file `Spec::memory_files[index]`: content that exists only in memory (a secret), so
    /// that no kill at any instant can leave a copy on disk; owned by `uid`:`gid` inside.
    Memory {
        index: usize,
        #[serde(default)]
        uid: u32,
        #[serde(default)]
        gid: u32,
    },
    /// A cache mount's directory `host`. With `follow_user` (a cache mount that names no
    /// `uid`/`gid`), it belongs to the user the step runs as: once that user is known, a cache
    /// another user owns is handed over to them, its content included (what BuildKit leaves
    /// root's, so that `USER app` cannot write its pip or uv cache).
    Cache { follow_user: bool },
}

/// An in-memory file (memfd) holding `content` with permission bits `mode`, for
/// [`BindSource::Memory`].
pub fn memory_file(content: &[u8], mode: u32) -> io::Result<std::sync::Arc<OwnedFd>> {
    let fd = rustix::fs::memfd_create("strata-secret", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(content)?;
    rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(mode))?;
    Ok(std::sync::Arc::new(OwnedFd::from(f)))
}

/// The descriptor number the child sees memory file `index` as.
pub(crate) const MEMORY_FD_BASE: i32 = 10;

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub rootfs: Rootfs,
    pub argv: Vec<String>,
    /// `NAME=value`, exactly what the process gets.
    pub env: Vec<String>,
    /// As in USER: `name`, `uid`, `name:group`, `uid:gid`; empty for root.
    pub user: String,
    /// Created if missing.
    pub workdir: String,
    pub network: Network,
    pub hostname: String,
    /// Files bind-mounted read-only over /etc/resolv.conf, /etc/hosts and /etc/hostname.
    pub etc_files: Vec<(String, PathBuf)>,
    pub binds: Vec<Bind>,
    pub maps: idmap::IdMaps,
    /// Host ports forwarded into the private network (`strata run -p`).
    #[serde(default)]
    pub ports: Option<net::Forwards>,
    /// Give the process a terminal of the sandbox's own devpts on 0, 1 and 2, as its
    /// controlling terminal, so that shells get job control (`strata run -t`, see
    /// [`run_on_console`]).
    #[serde(default)]
    pub tty: bool,
    /// The terminal's window size at the start (rows, columns); strata follows later changes.
    #[serde(default)]
    pub tty_size: Option<[u16; 2]>,
    /// Resource limits of the process (`--ulimit`).
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// The size of /dev/shm in bytes (`--shm-size`; 64 MiB without it, as Docker's).
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// Give the process strata's standard input (`strata run -i`); otherwise /dev/null, as a
    /// RUN step gets.
    #[serde(default)]
    pub stdin: bool,
    /// The platform of the image the process runs in; `None` for the host's own. A foreign
    /// platform's binaries run under QEMU registered with binfmt_misc (see [`binfmt`]).
    #[serde(default)]
    pub platform: Option<crate::oci::Platform>,
    /// The files of [`BindSource::Memory`] binds, handed to the child as descriptors (never
    /// serialized: their content stays out of the spec and off the disk).
    #[serde(skip)]
    pub memory_files: Vec<std::sync::Arc<OwnedFd>>,
}

impl Spec {
    /// Every path of the spec below `from` moved below `to` (a failed step's scratch dir kept
    /// for `strata debug` is renamed out of the store's tmp).
    pub fn relocate(&mut self, from: &std::path::Path, to: &std::path::Path) {
        let mv = |p: &mut PathBuf| {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = to.join(rest);
            }
        };
        match &mut self.rootfs {
            Rootfs::Overlay {
                lower,
                upper,
                work,
                merged,
            } => {
                lower.iter_mut().for_each(mv);
                mv(upper);
                mv(work);
                mv(merged);
            }
            Rootfs::Copy { lower, root, state } => {
                lower.iter_mut().for_each(mv);
                mv(root);
                mv(state);
            }
        }
        self.etc_files.iter_mut().for_each(|(_, p)| mv(p));
        for b in &mut self.binds {
            mv(&mut b.host);
            if let BindSource::Layers { lower, .. } = &mut b.source {
                lower.iter_mut().for_each(mv);
            }
        }
        if let Some(f) = &mut self.ports {
            mv(&mut f.socket);
        }
    }
}

/// A resource limit, as `docker run --ulimit NAME=SOFT[:HARD]` gives one (`-1`: unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// The name `ulimit` and docker use: `nofile`, `nproc`, `core`, …
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// The names of the limits and their resources.
const RLIMITS: &[(&str, libc::__rlimit_resource_t)] = &[
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

/// A `--ulimit` value strata cannot take: the value as given, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlimitError {
    #[error("invalid ulimit \"{given}\": expected NAME=SOFT[:HARD], as nofile=1024:4096")]
    Form { given: String },
    #[error("invalid ulimit \"{given}\": no limit {name} (known: {known})")]
    Unknown {
        given: String,
        name: String,
        known: String,
    },
    #[error("invalid ulimit \"{given}\": {value} is not a number")]
    NotNumber { given: String, value: String },
    #[error("invalid ulimit \"{given}\": the soft limit is above the hard one")]
    SoftAboveHard { given: String },
}

impl Rlimit {
    /// `NAME=SOFT[:HARD]` (`nofile=1024:4096`; `-1` for unlimited).
    pub fn parse(s: &str) -> Result<Rlimit, UlimitError> {
        let given = || s.to_string();
        let (name, v) = s
            .split_once('=')
            .ok_or_else(|| UlimitError::Form { given: given() })?;
        if !RLIMITS.iter().any(|(n, _)| *n == name) {
            let names: Vec<&str> = RLIMITS.iter().map(|(n, _)| *n).collect();
            return Err(UlimitError::Unknown {
                given: given(),
                name: name.to_string(),
                known: names.join(", "),
            });
        }
        let num = |x: &str| -> Result<u64, UlimitError> {
            match x.trim() {
                "-1" | "unlimited" => Ok(libc::RLIM_INFINITY),
                n => n.parse().map_err(|_| UlimitError::NotNumber {
                    given: given(),
                    value: n.to_string(),
                }),
            }
        };
        let (soft, hard) = match v.split_once(':') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(v)?, num(v)?),
        };
        if soft > hard {
            return Err(UlimitError::SoftAboveHard { given: given() });
        }
        Ok(Rlimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }

    /// Set it for this process (and so for the processes it starts).
    pub(crate) fn apply(&self, sys: &dyn sys::Sys) -> Result<(), SetupError> {
        let Some((_, res)) = RLIMITS.iter().find(|(n, _)| *n == self.name) else {
            return Err(SetupError::UnknownUlimit {
                name: self.name.clone(),
            });
        };
        sys.setrlimit(*res, self.soft, self.hard)
            .map_err(|e| SetupError::Ulimit {
                name: self.name.clone(),
                soft: self.soft,
                hard: self.hard,
                errno: e.raw_os_error(),
            })
    }

    /// As given (`nofile=1024:4096`), for a cache key.
    pub fn describe(&self) -> String {
        let n = |v: u64| {
            if v == libc::RLIM_INFINITY {
                "-1".to_string()
            } else {
                v.to_string()
            }
        };
        format!("{}={}:{}", self.name, n(self.soft), n(self.hard))
    }
}

/// Work the child does inside the user namespace without a new root: a task for the hook runner
/// `main()` provides (for example unpacking a layer so that owners are kept as seen inside).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookSpec {
    /// The hook, as its runner ([`HookFn`]) reads it.
    pub task: serde_json::Value,
    pub maps: idmap::IdMaps,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Task {
    Run(Box<Spec>),
    Hook(HookSpec),
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
}

impl Outcome {
    /// A shell-style exit code: the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Exited(c) => c,
            Outcome::Signaled(s) => 128 + s,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Report {
    /// The child has made its namespaces (for a step with a private network, its network
    /// namespace exists for slirp4netns to configure).
    Unshared,
    /// The session only: its user namespace is mapped and it serves requests.
    Ready,
    /// A run's pid 1 exists, with this pid in strata's pid namespace: the signals of
    /// [`signals::FORWARDED`] sent to it reach the process.
    Pid1(u32),
    Outcome(Outcome),
    /// How long the step's process ran (from its fork in the sandbox to its exit).
    Ran {
        micros: u64,
    },
    Error(SetupError),
    /// Paths the sandbox created in the root to mount over (to leave out of the layer).
    Created(Vec<String>),
    /// What a hook answered (its runner's typed output, as JSON).
    HookOutput(serde_json::Value),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the sandbox: {cause}")]
    Setup {
        cause: Box<SetupError>,
        advice: Vec<String>,
    },
    #[error("sandbox: {0}")]
    Io(#[from] io::Error),
    /// A command the kernel (or the sandbox) cannot take: an argument or variable too long.
    #[error("the command is too large: {message}")]
    TooLarge {
        message: String,
        advice: Vec<String>,
    },
}

impl Error {
    pub fn advice(&self) -> &[String] {
        match self {
            Error::Setup { advice, .. } | Error::TooLarge { advice, .. } => advice,
            Error::Io(_) => &[],
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Finished {
    pub outcome: Outcome,
    /// Paths (inside the root) the sandbox created as mount points.
    pub created: Vec<String>,
    /// How long the process ran, from its start in the sandbox to its exit (`None` when it
    /// did not start).
    pub command: Option<std::time::Duration>,
    /// A hook's answer.
    pub hook_output: Option<serde_json::Value>,
}

/// A close-on-exec copy of `fd` numbered 128 or above: a child's pre_exec can then dup2 such
/// copies to small fixed numbers without one overwriting a source another still needs.
pub(crate) fn high(fd: &dyn AsRawFd) -> io::Result<OwnedFd> {
    // SAFETY: a plain fcntl on a descriptor the caller owns; the result is a new descriptor.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 128) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A copy of strata's own descriptor `n` (0, 1 or 2) for a sandbox child to inherit.
pub fn inherit(n: i32) -> io::Result<OwnedFd> {
    // SAFETY: 0, 1 and 2 stay open for the life of the process.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(n) };
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 0)?)
}

/// The longest argument or environment string Linux passes to a program (MAX_ARG_STRLEN:
/// 32 pages, the terminating NUL included).
pub const MAX_ARG_LEN: usize = 32 * 4096;

/// Whether `argv` and `env` fit what execve takes: each string under [`MAX_ARG_LEN`], all of
/// them (with their pointers) within the system's ARG_MAX. Checked before a sandbox starts, so
/// that a command the kernel would refuse with E2BIG is an error that says which string.
pub fn exec_fits(argv: &[String], env: &[String]) -> Result<(), Error> {
    const IN_A_FILE: &str =
        "put the data in a file (COPY it, or a heredoc whose first line is #!, which runs as a file)";
    let too_long = |what: String, n: usize| {
        Error::TooLarge {
        message: format!(
            "{what} is {n} bytes; Linux passes at most {} bytes in one argument or variable (execve: E2BIG)",
            MAX_ARG_LEN - 1
        ),
        advice: vec![IN_A_FILE.into()],
    }
    };
    for (i, a) in argv.iter().enumerate() {
        if a.len() >= MAX_ARG_LEN {
            return Err(too_long(
                format!("argument {} of the command", i + 1),
                a.len(),
            ));
        }
    }
    for e in env {
        if e.len() >= MAX_ARG_LEN {
            let name = e.split('=').next().unwrap_or(e);
            return Err(too_long(
                format!("the environment variable {name}"),
                e.len(),
            ));
        }
    }
    // SAFETY: sysconf has no preconditions.
    let max = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    let total: usize = argv.iter().chain(env).map(|s| s.len() + 1 + 8).sum();
    if max > 0 && total > max as usize {
        return Err(Error::TooLarge {
            message: format!(
                "the command and its environment are {total} bytes; this system passes at most {max} to a program (ARG_MAX; execve: E2BIG)"
            ),
            advice: vec![IN_A_FILE.into()],
        });
    }
    Ok(())
}

/// Run `spec` and wait for it. Output goes to `stdout` and `stderr`.
pub fn run(
    exe: &std::path::Path,
    spec: &Spec,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Finished, Error> {
    run_observed(exe, spec, stdout, stderr, &|_| {})
}

/// [`run`], telling `started` the pid of the sandbox child as soon as it exists: killing that
/// pid (SIGKILL) ends the step and every process in it (pid 1 inside dies with its parent).
pub fn run_observed(
    exe: &std::path::Path,
    spec: &Spec,
    stdout: OwnedFd,
    stderr: OwnedFd,
    started: &dyn Fn(u32),
) -> Result<Finished, Error> {
    launch(
        exe,
        &Task::Run(Box::new(spec.clone())),
        &spec.maps,
        None,
        stdout,
        stderr,
        started,
        &|_| {},
    )
}

/// [`run`] for `strata run`, telling `pid1` the pid of the sandbox's pid 1 once it exists:
/// the signals of [`signals::FORWARDED`] sent to it go on to the process.
pub fn run_forwarding(
    exe: &std::path::Path,
    spec: &Spec,
    stdout: OwnedFd,
    stderr: OwnedFd,
    pid1: &dyn Fn(u32),
) -> Result<Finished, Error> {
    launch(
        exe,
        &Task::Run(Box::new(spec.clone())),
        &spec.maps,
        None,
        stdout,
        stderr,
        &|_| {},
        pid1,
    )
}

/// [`run_forwarding`] on a terminal of the sandbox's own devpts (`spec.tty` must be set): the
/// process gets it on 0, 1 and 2 as its controlling terminal, and strata relays it to its own
/// stdout, its own stdin with `input` (in raw mode while it runs, so that Ctrl-C and Ctrl-Z are
/// the process's), following its window size.
pub fn run_on_console(
    exe: &std::path::Path,
    spec: &Spec,
    input: bool,
    pid1: &dyn Fn(u32),
) -> Result<Finished, Error> {
    let mut socket = console::ConsoleSocket::new()?;
    let theirs = socket
        .take_theirs()
        .ok_or_else(|| io::Error::other("the console socket was taken"))?;
    let raw = input.then(terminal::Raw::enter);
    let mut spec = spec.clone();
    spec.tty = true;
    spec.tty_size = spec.tty_size.or_else(terminal::size);
    // The master arrives while the sandbox runs: received and relayed on a thread, whose end
    // (the output copied to the last byte) is waited for once the process has ended.
    let relay =
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || -> io::Result<()> {
                if let Some(master) = socket.receive()? {
                    terminal::relay(master, input)?.join().ok();
                }
                Ok(())
            })?;
    let r = launch(
        exe,
        &Task::Run(Box::new(spec.clone())),
        &spec.maps,
        Some(theirs),
        inherit(1)?,
        inherit(2)?,
        &|_| {},
        pid1,
    );
    let _ = relay.join();
    drop(raw);
    r
}

/// Run a hook of `main()` inside the user namespace (no new root). Its stdout and stderr are
/// strata's.
pub fn run_hook(exe: &std::path::Path, hook: &HookSpec) -> Result<Outcome, Error> {
    run_hook_output(exe, hook).map(|(o, _)| o)
}

/// [`run_hook`], with the hook's answer (what its runner returned, as JSON) when it gave one.
pub fn run_hook_output(
    exe: &std::path::Path,
    hook: &HookSpec,
) -> Result<(Outcome, Option<serde_json::Value>), Error> {
    launch(
        exe,
        &Task::Hook(hook.clone()),
        &hook.maps,
        None,
        inherit(1)?,
        inherit(2)?,
        &|_| {},
        &|_| {},
    )
    .map(|f| (f.outcome, f.hook_output))
}

/// Have the session fork the sandbox child for `task` and wait for it. `stdin` when given,
/// else /dev/null (or strata's own for a spec with `stdin` set).
#[allow(clippy::too_many_arguments)]
fn launch(
    exe: &std::path::Path,
    task: &Task,
    maps: &idmap::IdMaps,
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    started: &dyn Fn(u32),
    pid1: &dyn Fn(u32),
) -> Result<Finished, Error> {
    use std::os::fd::AsFd;
    let private_net = matches!(task, Task::Run(s) if s.network == Network::Private);
    if private_net {
        if let Some((message, fix)) = net::unavailable() {
            return Err(Error::Setup {
                cause: Box::new(SetupError::Network { message }),
                advice: vec![fix],
            });
        }
    }
    let memory: &[std::sync::Arc<OwnedFd>] = match task {
        Task::Run(s) => &s.memory_files,
        Task::Hook(_) => &[],
    };
    if memory.len() > 100 {
        return Err(Error::Setup {
            cause: Box::new(SetupError::TooManySecrets {
                count: memory.len(),
            }),
            advice: Vec::new(),
        });
    }
    // The task's frame is made before the child exists: one the child could not take (over
    // the frame limit) is an error now, never a child waiting for a task that is not coming.
    if let Task::Run(s) = task {
        exec_fits(&s.argv, &s.env)?;
    }
    let frame = protocol::encode_frame(task).map_err(|e| Error::TooLarge {
        message: format!("the sandbox's task: {e}"),
        advice: Vec::new(),
    })?;
    let stdin = match (stdin, task) {
        (Some(i), _) => i,
        (None, Task::Run(s)) if s.stdin => inherit(0)?,
        _ => OwnedFd::from(fs_err::File::open("/dev/null")?.into_parts().0),
    };
    let (report_r, report_w) = pipe()?;
    let (task_r, task_w) = pipe()?;
    let mut fds = vec![
        stdin.as_fd(),
        stdout.as_fd(),
        stderr.as_fd(),
        report_w.as_fd(),
        task_r.as_fd(),
    ];
    fds.extend(memory.iter().map(|f| f.as_fd()));
    let platform = match task {
        Task::Run(s) => s.platform.as_ref(),
        Task::Hook(_) => None,
    };
    let pid = session::fork_child(exe, maps, platform, &fds)?;
    drop(fds);
    drop((stdin, stdout, stderr, report_w, task_r));
    started(pid);
    let mut report = std::fs::File::from(report_r);
    let mut to_child = std::fs::File::from(task_w);
    // A failed write means the child already ended: its report says why.
    let _ = to_child.write_all(&frame);
    drop(frame);

    // The step's network helper, stopped when this function returns, or why it failed.
    let mut slirp = None;
    let mut net_error = None;
    let mut reports = Vec::new();
    // The child says when it has made its namespaces: a private network's is configured by
    // slirp4netns while the child builds its root; the child waits for NetworkReady before it
    // starts the process.
    match protocol::read_frame::<Report>(&mut report)? {
        Some(Report::Unshared) if private_net => {
            let ports = match task {
                Task::Run(s) => s.ports.as_ref(),
                Task::Hook(_) => None,
            };
            match net::start(pid, ports) {
                Ok(s) => {
                    slirp = Some(s);
                    let _ = protocol::write_frame(&mut to_child, &protocol::ToChild::NetworkReady);
                }
                // No NetworkReady: the child, waiting for it, gives up when the pipe closes
                // below. Which error is the build's is decided by its report: a child that
                // failed on its own (and took its namespace with it, which is why slirp4netns
                // failed) says why; one that only saw the network fail leaves the network's.
                Err(e) => net_error = Some(e),
            }
        }
        Some(Report::Unshared) => {}
        Some(r) => reports.push(r),
        None => {}
    }
    drop(to_child);
    while let Some(r) = protocol::read_frame::<Report>(&mut report)? {
        match r {
            Report::Pid1(pid) => pid1(pid),
            r => reports.push(r),
        }
    }
    drop(slirp);
    let mut created = Vec::new();
    let mut outcome = None;
    let mut command = None;
    let mut hook_output = None;
    for r in reports {
        match r {
            Report::Outcome(o) => outcome = Some(o),
            Report::Created(c) => created = c,
            Report::Ran { micros } => command = Some(std::time::Duration::from_micros(micros)),
            Report::HookOutput(v) => hook_output = Some(v),
            Report::Error(cause) => {
                if cause == SetupError::NetworkNotReady {
                    if let Some((message, fix)) = net_error {
                        return Err(Error::Setup {
                            cause: Box::new(SetupError::Network { message }),
                            advice: vec![fix],
                        });
                    }
                }
                return Err(Error::Setup {
                    advice: cause.advice(),
                    cause: Box::new(cause),
                });
            }
            Report::Unshared | Report::Ready | Report::Pid1(_) => {}
        }
    }
    match outcome {
        Some(outcome) => Ok(Finished {
            outcome,
            created,
            command,
            hook_output,
        }),
        None => Err(Error::Setup {
            cause: Box::new(SetupError::NoReport { pid }),
            advice: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec() -> Spec {
        Spec {
            rootfs: Rootfs::Copy {
                lower: Vec::new(),
                root: PathBuf::from("/nonexistent"),
                state: PathBuf::from("/nonexistent.state"),
            },
            argv: vec!["true".into()],
            env: Vec::new(),
            user: String::new(),
            workdir: String::new(),
            network: Network::None,
            hostname: "h".into(),
            etc_files: Vec::new(),
            binds: Vec::new(),
            maps: idmap::for_current_user(),
            ports: None,
            tty: false,
            stdin: false,
            platform: None,
            memory_files: Vec::new(),
            tty_size: None,
            rlimits: Vec::new(),
            shm_size: None,
        }
    }

    #[test]
    fn a_task_the_sandbox_cannot_take_is_an_error_before_any_child_exists() {
        let null = || OwnedFd::from(fs_err::File::open("/dev/null").unwrap().into_parts().0);
        // Over the frame limit (a spec no Dockerfile can make since long scripts run from a
        // file, but any that is refused must fail at once, not leave a child waiting).
        let mut s = spec();
        s.binds.push(Bind {
            host: PathBuf::from("/x"),
            target: "y".repeat(protocol::MAX_FRAME as usize + 1),
            readonly: true,
            source: BindSource::Host,
        });
        let t = std::time::Instant::now();
        let started = std::sync::atomic::AtomicBool::new(false);
        let e = run_observed(Path::new("/nonexistent"), &s, null(), null(), &|_| {
            started.store(true, std::sync::atomic::Ordering::SeqCst)
        })
        .unwrap_err();
        assert!(e.to_string().contains("over the sandbox's limit"), "{e}");
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
        // A bound on a hang, not a speed target: the refusal itself encodes a 64 MiB frame,
        // which takes seconds in a debug build on a loaded machine (10 s failed under a load
        // of 11 on 2 cores); the hang this guards against never returned.
        assert!(t.elapsed() < std::time::Duration::from_secs(120));
        // What execve would refuse with E2BIG, named.
        let mut s = spec();
        s.argv = vec!["sh".into(), "-c".into(), "z".repeat(MAX_ARG_LEN)];
        let e = run(Path::new("/nonexistent"), &s, null(), null()).unwrap_err();
        assert!(
            e.to_string()
                .contains("argument 3 of the command is 131072 bytes"),
            "{e}"
        );
        let mut s = spec();
        s.env = vec![format!("BIG={}", "v".repeat(MAX_ARG_LEN))];
        let e = run(Path::new("/nonexistent"), &s, null(), null()).unwrap_err();
        assert!(e.to_string().contains("environment variable BIG"), "{e}");
    }

    #[test]
    fn a_bad_ulimit_says_what_is_wrong_with_it() {
        let r = Rlimit::parse("nofile=1024:4096").unwrap();
        assert_eq!((r.name.as_str(), r.soft, r.hard), ("nofile", 1024, 4096));
        assert_eq!(
            Rlimit::parse("nofile").unwrap_err().to_string(),
            "invalid ulimit \"nofile\": expected NAME=SOFT[:HARD], as nofile=1024:4096"
        );
        let e = Rlimit::parse("files=1").unwrap_err();
        assert!(matches!(&e, UlimitError::Unknown { name, .. } if name == "files"));
        assert!(e
            .to_string()
            .starts_with("invalid ulimit \"files=1\": no limit files (known: "));
        assert_eq!(
            Rlimit::parse("nofile=x").unwrap_err().to_string(),
            "invalid ulimit \"nofile=x\": x is not a number"
        );
        assert_eq!(
            Rlimit::parse("nofile=10:5").unwrap_err(),
            UlimitError::SoftAboveHard {
                given: "nofile=10:5".into()
            }
        );
    }
}
