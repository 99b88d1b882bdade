//! The sandbox session and its children: the session makes the user namespace and forks a
//! child per task; a child enters its other namespaces, builds the root, runs the process as
//! pid 1's child, and reports how it ended. Runs single-threaded from the first instruction of
//! `main()`.

// Errors here are [`SetupError`]s that name their path (`io("creating {path}")`): the reason
// clippy.toml steers code to fs-err is met, so std::fs is allowed in this file.
#![allow(clippy::disallowed_methods)]

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

use super::error::io;
use super::protocol::{read_frame, write_frame, SessionReply, ToChild};
use super::session::MAX_FDS;
use super::{user, Bind, BindSource, Network, Outcome, Report, Rootfs, SetupError, Spec, Task};

type R<T> = Result<T, SetupError>;

/// The calling thread's errno, as a number.
fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A failed system call `call` ("fork", "pivot_root"), with errno.
fn syscall(call: &str) -> SetupError {
    SetupError::Syscall {
        call: call.into(),
        errno: last_errno(),
    }
}

/// A failed unshare of `namespaces` (as the message names them), with errno.
fn unshare_failed(namespaces: &str) -> SetupError {
    SetupError::Unshare {
        namespaces: namespaces.into(),
        errno: last_errno(),
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s.as_bytes()).unwrap_or_else(|_| CString::new("?").expect("no NUL"))
}

fn report(r: &Report) {
    // SAFETY: fd 3 is the report pipe the parent set up; we never close it explicitly.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(3) });
    let _ = write_frame(&mut *f, r);
}

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> R<()> {
    let (s, t, f, d) = (cstr(src), cstr(target), cstr(fstype), cstr(data));
    // SAFETY: all pointers are valid NUL-terminated strings (or null where allowed).
    let rc = unsafe {
        libc::mount(
            if src.is_empty() {
                std::ptr::null()
            } else {
                s.as_ptr()
            },
            t.as_ptr(),
            if fstype.is_empty() {
                std::ptr::null()
            } else {
                f.as_ptr()
            },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                d.as_ptr() as *const libc::c_void
            },
        )
    };
    if rc != 0 {
        return Err(SetupError::Mount {
            fstype: fstype.into(),
            from: src.into(),
            target: target.into(),
            data: data.into(),
            errno: last_errno(),
        });
    }
    Ok(())
}

/// The session's entry point (see [`super::session`]): never returns. `hook` runs named hooks
/// of `main()` in the children it forks.
pub fn child_main(hook: &super::HookFn) -> ! {
    let code = match session(hook) {
        Ok(()) => 0,
        Err(e) => {
            report(&Report::Error(e));
            125
        }
    };
    std::process::exit(code)
}

/// Make the user namespace, wait for strata to map it, then fork one child per request until
/// strata closes the socket (fd 5).
fn session(hook: &super::HookFn) -> R<()> {
    // SAFETY: unshare has no memory-safety preconditions; this process has one thread.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err(SetupError::UserNs {
            errno: last_errno(),
        });
    }
    report(&Report::Unshared);
    // SAFETY: fd 4 is the pipe strata dup'ed for us; this is its only owner.
    let mut from_parent = unsafe { std::fs::File::from_raw_fd(4) };
    if !matches!(read_frame(&mut from_parent), Ok(Some(ToChild::Mapped))) {
        return Err(SetupError::NotMapped);
    }
    // SAFETY: plain credential syscalls.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            return Err(SetupError::BecomeRoot {
                errno: last_errno(),
            });
        }
    }
    report(&Report::Ready);
    drop(from_parent);
    // SAFETY: fd 3 (the report pipe) and fd 5 (the socket) are ours; children are reaped by the
    // kernel (SIGCHLD ignored): strata learns how each ended from its report, not its status.
    let control = unsafe {
        libc::close(3);
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        std::os::fd::OwnedFd::from_raw_fd(5)
    };
    let me = std::process::id() as i32;
    loop {
        let mut space =
            vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut ancillary = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        let got = rustix::net::recvmsg(
            &control,
            &mut [std::io::IoSliceMut::new(&mut byte)],
            &mut ancillary,
            rustix::net::RecvFlags::CMSG_CLOEXEC,
        );
        let msg = match got {
            Err(rustix::io::Errno::INTR) => continue,
            // strata is gone (or the socket broke): end, and the children with us.
            Err(_) => return Ok(()),
            Ok(m) if m.bytes == 0 => return Ok(()),
            Ok(m) => m,
        };
        let mut fds = Vec::new();
        for m in ancillary.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(it) = m {
                fds.extend(it);
            }
        }
        let reply = if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) || fds.len() < 5 {
            SessionReply::Failed(SetupError::BadRequest { count: fds.len() })
        } else {
            // SAFETY: single-threaded; the child only continues in `forked`, which never
            // returns.
            match unsafe { libc::fork() } {
                -1 => SessionReply::Failed(syscall("fork")),
                0 => forked(hook, me, fds),
                pid => SessionReply::Started(pid as u32),
            }
        };
        drop(fds);
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        if rustix::io::write(&control, &body).is_err() {
            return Ok(());
        }
    }
}

/// A child of the session: put `fds` in place (0, 1, 2, the report pipe on 3, the task pipe on
/// 4, secret files from [`MEMORY_FD_BASE`](super::MEMORY_FD_BASE)), then do the task.
fn forked(hook: &super::HookFn, session: i32, fds: Vec<std::os::fd::OwnedFd>) -> ! {
    // SAFETY: plain signal, prctl and descriptor syscalls on descriptors this process owns.
    unsafe {
        // run_spec waits for its pid 1: SIGCHLD must not be ignored here.
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The session may have ended before the line above: then nothing waits for us.
        if libc::getppid() != session {
            libc::_exit(125);
        }
        libc::close(5);
        // Copies above every target first, so that no dup2 overwrites a source still needed.
        let high: Vec<i32> = fds
            .iter()
            .map(|f| libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 128))
            .collect();
        drop(fds);
        for (i, fd) in high.iter().enumerate() {
            let target = if i < 5 {
                i as i32
            } else {
                super::MEMORY_FD_BASE + (i - 5) as i32
            };
            if *fd < 0 || libc::dup2(*fd, target) < 0 {
                libc::_exit(125);
            }
            libc::close(*fd);
        }
    }
    let code = match run_task(hook) {
        Ok(code) => code,
        Err(e) => {
            report(&Report::Error(e));
            125
        }
    };
    std::process::exit(code)
}

/// Read the task from fd 4 and do it.
fn run_task(hook: &super::HookFn) -> R<i32> {
    // SAFETY: fd 4 is the task pipe `forked` put there; this is its only owner.
    let mut from_parent = unsafe { std::fs::File::from_raw_fd(4) };
    let task: Task = read_frame(&mut from_parent)
        .map_err(|e| SetupError::TaskRead { cause: e.into() })?
        .ok_or(SetupError::NoTask)?;
    // A private network's namespace is made first, owned by the session's user namespace, so
    // that slirp4netns can configure it while we build the root.
    let private_net = matches!(&task, Task::Run(s) if s.network == Network::Private);
    // SAFETY: see above.
    if private_net && unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(unshare_failed("CLONE_NEWNET"));
    }
    report(&Report::Unshared);
    match task {
        Task::Hook(h) => {
            // SAFETY: see above.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return Err(unshare_failed("CLONE_NEWNS"));
            }
            let output = hook(h.task).map_err(SetupError::Hook)?;
            report(&Report::HookOutput(output));
            report(&Report::Outcome(Outcome::Exited(0)));
            Ok(0)
        }
        // With a private network strata sends NetworkReady on the task pipe once slirp4netns
        // is ready.
        Task::Run(spec) => run_spec(&spec, private_net.then_some(from_parent)),
    }
}

fn run_spec(spec: &Spec, net_ready: Option<std::fs::File>) -> R<i32> {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: see above.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(unshare_failed("mount, pid, uts, ipc namespaces"));
    }
    // The first child is pid 1 of the new pid namespace; when it exits, the kernel kills every
    // process left in the namespace.
    // SAFETY: single-threaded process; the child only continues this function.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(syscall("fork"));
    }
    if pid > 0 {
        // strata may signal pid 1 from now on (`strata run` forwards SIGTERM and others).
        report(&Report::Pid1(pid as u32));
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFSIGNALED(status) {
            // pid 1 was killed (`strata run`'s stop timeout, or a second Ctrl-C): it could not
            // say how its process ended; it ended with pid 1.
            report(&Report::Outcome(Outcome::Signaled(libc::WTERMSIG(status))));
        }
        return Ok(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        });
    }
    // SAFETY: see above.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let code = match init(spec, net_ready) {
        Ok(o) => {
            report(&Report::Outcome(o));
            o.code()
        }
        Err(e) => {
            report(&Report::Error(e));
            125
        }
    };
    std::process::exit(code)
}

/// Bind-mount `src` at `target` (with `flags` such as MS_REC), then make it read-only when
/// asked (a bind mount takes MS_RDONLY only on a remount). The remount keeps the flags the
/// source's mount has (nosuid, nodev, noexec, atime): in a user namespace they are locked,
/// and a remount that drops one is refused (a container's tmpfs /tmp is nosuid,nodev).
fn bind(src: &str, target: &str, flags: libc::c_ulong, readonly: bool) -> R<()> {
    mount(src, target, "", libc::MS_BIND | flags, "")?;
    if readonly {
        mount(
            "",
            target,
            "",
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | locked_flags(target),
            "",
        )?;
    }
    Ok(())
}

/// The mount flags of the mount `path` is on that a user namespace cannot clear.
fn locked_flags(path: &str) -> libc::c_ulong {
    let c = cstr(path);
    // SAFETY: a valid NUL-terminated path and a zeroed statvfs for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let f = st.f_flag;
    let mut out = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag != 0 {
            out |= ms_flag;
        }
    }
    out
}

/// Create the missing directories of `inside` (a path in the root `root`, `/`-separated),
/// each recorded in `created` (so the layer leaves it out when it stays empty) and owned as
/// the directory it was made in: a mount point under `/home/app` is app's, not root's, so a
/// `~/.cache/pip` cache mount does not leave a root-owned `~/.cache` that app cannot write.
fn make_dirs(root: &str, inside: &str, created: &mut Vec<String>) -> R<()> {
    use std::os::unix::fs::MetadataExt;
    let mut path = root.trim_end_matches('/').to_string();
    let mut rel = String::new();
    let mut owner = std::fs::metadata(&path)
        .map(|m| (m.uid(), m.gid()))
        .map_err(io(&path))?;
    for part in inside.split('/').filter(|p| !p.is_empty() && *p != ".") {
        path.push('/');
        path.push_str(part);
        rel.push('/');
        rel.push_str(part);
        match std::fs::metadata(&path) {
            Ok(m) => owner = (m.uid(), m.gid()),
            Err(_) => {
                std::fs::create_dir(&path).map_err(io(format!("creating {path}")))?;
                created.push(rel.clone());
                std::os::unix::fs::lchown(&path, Some(owner.0), Some(owner.1))
                    .map_err(io(format!("chown {path}")))?;
            }
        }
    }
    Ok(())
}

fn ensure_file(root: &str, inside: &str, created: &mut Vec<String>) -> R<()> {
    let path = format!(
        "{}/{}",
        root.trim_end_matches('/'),
        inside.trim_start_matches('/')
    );
    if std::fs::symlink_metadata(&path).is_err() {
        if let Some((parent, _)) = inside.trim_end_matches('/').rsplit_once('/') {
            make_dirs(root, parent, created)?;
        }
        std::fs::write(&path, b"").map_err(io(format!("creating {path}")))?;
        created.push(inside.to_string());
    }
    Ok(())
}

/// `target` (a path in the root `root`) with `..` cleaned and the root's symlinks followed
/// inside the root: an absolute path as seen from the root, every existing component of it a
/// real directory of the root.
fn in_root(root: &str, target: &str) -> R<String> {
    let clean = crate::fsx::clean(&format!("/{target}"));
    let rel =
        crate::fsx::resolve_in_root(Path::new(root), Path::new(clean.trim_start_matches('/')), 0)
            .map_err(io(format!("mount target {target}")))?;
    let rel = rel.to_str().ok_or_else(|| SetupError::Io {
        what: format!("mount target {target}"),
        cause: super::OsError {
            errno: None,
            message: "not UTF-8".into(),
        },
    })?;
    Ok(format!("/{}", rel.trim_start_matches('/')))
}

fn ensure_dir(root: &str, inside: &str, created: &mut Vec<String>) -> R<()> {
    make_dirs(root, inside, created)
}

/// Give the cache mounted at `path` (its content too, symlinks not followed) to `uid`:`gid`
/// when its top directory is someone else's. Mounts below it are not entered.
fn hand_over(path: &Path, uid: u32, gid: u32) -> R<()> {
    use std::os::unix::fs::MetadataExt;
    let top = std::fs::symlink_metadata(path).map_err(io(path.display().to_string()))?;
    if (top.uid(), top.gid()) == (uid, gid) {
        return Ok(());
    }
    let dev = top.dev();
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).map_err(io(p.display().to_string()))?;
        if m.dev() != dev {
            continue;
        }
        if (m.uid(), m.gid()) != (uid, gid) {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
                .map_err(io(format!("chown {}", p.display())))?;
        }
        if m.is_dir() {
            for e in std::fs::read_dir(&p).map_err(io(p.display().to_string()))? {
                todo.push(e.map_err(io(p.display().to_string()))?.path());
            }
        }
    }
    Ok(())
}

/// Paths Docker hides from a container: files get /dev/null, directories an empty read-only
/// tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in a container.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mask_paths(root: &str) -> R<()> {
    let hidden = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for p in MASKED_PATHS {
        let t = format!("{root}{p}");
        match std::fs::symlink_metadata(&t) {
            Err(_) => continue,
            Ok(m) if m.is_dir() => mount("tmpfs", &t, "tmpfs", hidden, "size=0,mode=0555")?,
            Ok(_) => bind("/dev/null", &t, 0, false)?,
        }
    }
    for p in READONLY_PATHS {
        let t = format!("{root}{p}");
        if std::fs::symlink_metadata(&t).is_ok() {
            bind(&t, &t, libc::MS_REC, true)?;
        }
    }
    Ok(())
}

/// Docker's default capability set: what a RUN step's root keeps. Every other capability leaves
/// the bounding set, so no setuid binary or file capability can bring it back.
pub const DEFAULT_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// The capabilities to drop from the bounding set: all the kernel knows but Docker's set.
fn caps_to_drop() -> Vec<u32> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    (0..=last).filter(|c| !DEFAULT_CAPS.contains(c)).collect()
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drop every capability outside Docker's set from the bounding set, and keep only Docker's
/// set as effective and permitted (none inheritable, none ambient). Async-signal-safe: only
/// syscalls, for the forked child before exec.
///
/// # Safety
/// Must run in the process about to exec, before it changes to the step's user.
unsafe fn limit_capabilities(drop_list: &[u32]) -> bool {
    for c in drop_list {
        if libc::prctl(libc::PR_CAPBSET_DROP, *c as libc::c_ulong, 0, 0, 0) != 0 {
            return false;
        }
    }
    libc::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
        0,
        0,
    );
    let mut mask = [0u32; 2];
    for c in DEFAULT_CAPS {
        mask[(*c / 32) as usize] |= 1 << (c % 32);
    }
    let mut hdr = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [
        CapData {
            effective: mask[0],
            permitted: mask[0],
            inheritable: 0,
        },
        CapData {
            effective: mask[1],
            permitted: mask[1],
            inheritable: 0,
        },
    ];
    libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) == 0
}

/// Close every descriptor numbered `first` or above, in the forked child just before exec:
/// whatever strata inherited without close-on-exec would otherwise reach the step's process
/// (a directory opened by the caller is a way out of the root, as in runc's CVE-2024-21626).
/// Async-signal-safe: close_range(2), or a close of every possible number where the kernel
/// lacks it (before Linux 5.9).
///
/// # Safety
/// Only for the process about to exec: every descriptor above `first` goes.
unsafe fn close_from(first: u32) {
    if libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) == 0 {
        return;
    }
    let mut lim: libc::rlimit = std::mem::zeroed();
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
        lim.rlim_cur.min(1 << 20) as i32
    } else {
        1 << 16
    };
    for fd in first as i32..max {
        libc::close(fd);
    }
}

/// Say why on stderr and exit 126, in the forked child before exec (async-signal-safe).
fn fail(msg: &[u8]) -> ! {
    // SAFETY: write and _exit are async-signal-safe; msg is valid for its length.
    unsafe {
        libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
        libc::_exit(126)
    }
}

/// The path `sub` of the directory `dir`, resolved inside it as if it were `/` (so a symlink
/// to /etc/shadow names dir's file, never the host's), then opened beneath it with no symlink
/// followed: a bind source that cannot leave `dir`, whatever is swapped in meanwhile. Returns
/// `/proc/self/fd/N` for the mount, and the descriptor to keep open until it is made.
fn beneath(dir: &Path, sub: &str, target: &str) -> R<(std::path::PathBuf, std::os::fd::OwnedFd)> {
    let rel = Path::new(sub.trim_start_matches('/'));
    let not_found = || io(format!("mount source {sub} for {target}"));
    let resolved = crate::fsx::resolve_in_root(dir, rel, 0).map_err(not_found())?;
    let fd = crate::fsx::open_path_beneath(dir, &resolved).map_err(not_found())?;
    Ok((format!("/proc/self/fd/{}", fd.as_raw_fd()).into(), fd))
}

/// Put memory file `index` (an inherited memfd) on a tmpfs of its own at `dir` (an empty
/// directory of the step's scratch space): the tmpfs exists only in this mount namespace, so the
/// content never reaches a disk and goes away with the sandbox however it ends. Returns the
/// file to bind-mount (bind mounts of a memfd itself are refused by the kernel).
fn memory_file(dir: &Path, index: usize, uid: u32, gid: u32) -> R<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let fd = super::MEMORY_FD_BASE + index as i32;
    // SAFETY: the parent dup'ed memory file `index` to this descriptor; ManuallyDrop leaves it
    // open for the exec'd child's close loop.
    let mut src = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let mode = src
        .metadata()
        .map_err(io(format!("memory file {index}")))?
        .permissions()
        .mode()
        & 0o7777;
    let mut content = Vec::new();
    std::io::Seek::rewind(&mut *src).map_err(io(format!("memory file {index}")))?;
    src.read_to_end(&mut content)
        .map_err(io(format!("memory file {index}")))?;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let d = dir.display().to_string();
    mount(
        "tmpfs",
        &d,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        &format!("mode=0700,size={}", content.len() + 4096),
    )?;
    let f = dir.join("content");
    std::fs::write(&f, &content).map_err(io(format!("writing {}", f.display())))?;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", f.display())))?;
    if (uid, gid) != (0, 0) {
        std::os::unix::fs::chown(&f, Some(uid), Some(gid))
            .map_err(io(format!("chown {} to {uid}:{gid}", f.display())))?;
    }
    Ok(f)
}

/// /proc (a new one, or with STRATA_PROC=host the container's), /dev (a small tmpfs with the host's usual nodes, pts and
/// shm), /sys read-only, and Docker's masked and read-only paths, in the root `root`.
fn kernel_fs(spec: &Spec, root: &str, created: &mut Vec<String>) -> R<()> {
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    ensure_dir(root, "/proc", created)?;
    let proc_at = format!("{root}/proc");
    if let Err(e) = mount("proc", &proc_at, "proc", nosuid_nodev_noexec, "") {
        // A container whose /proc has masked paths refuses a new proc. STRATA_PROC=host: the
        // container's own, bound (the step sees the container's processes, not its own pid
        // namespace's; signals stay within its namespace).
        if std::env::var("STRATA_PROC").as_deref() != Ok("host") {
            return Err(SetupError::Proc {
                target: proc_at,
                errno: e.errno().unwrap_or(0),
            });
        }
        mount("/proc", &proc_at, "", libc::MS_BIND | libc::MS_REC, "")?;
    }

    // /dev: a small tmpfs with the usual nodes bound from the host, pts and shm.
    ensure_dir(root, "/dev", created)?;
    mount(
        "tmpfs",
        &format!("{root}/dev"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=755,size=65536k",
    )?;
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        let t = format!("{root}/dev/{d}");
        std::fs::write(&t, b"").map_err(io(format!("creating {t}")))?;
        mount(&format!("/dev/{d}"), &t, "", libc::MS_BIND, "")?;
    }
    std::fs::create_dir_all(format!("{root}/dev/pts"))
        .map_err(|e| SetupError::Os { cause: e.into() })?;
    mount(
        "devpts",
        &format!("{root}/dev/pts"),
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        // Terminals in the group tty (5) as under runc, where that id exists inside.
        if spec.maps.root_only {
            "newinstance,ptmxmode=0666,mode=0620"
        } else {
            "newinstance,ptmxmode=0666,mode=0620,gid=5"
        },
    )?;
    std::fs::create_dir_all(format!("{root}/dev/shm"))
        .map_err(|e| SetupError::Os { cause: e.into() })?;
    mount(
        "shm",
        &format!("{root}/dev/shm"),
        "tmpfs",
        nosuid_nodev_noexec,
        // 64 MiB as Docker's default, or --shm-size.
        &match spec.shm_size {
            Some(n) => format!("mode=1777,size={n}"),
            None => "mode=1777,size=65536k".into(),
        },
    )?;
    for (l, t) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(t, format!("{root}/dev/{l}"))
            .map_err(io(format!("/dev/{l}")))?;
    }

    // /sys: the host's, read-only.
    ensure_dir(root, "/sys", created)?;
    mount(
        "/sys",
        &format!("{root}/sys"),
        "",
        libc::MS_BIND | libc::MS_REC,
        "",
    )?;
    mount(
        "",
        &format!("{root}/sys"),
        "",
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | nosuid_nodev_noexec,
        "",
    )?;

    // Docker's masked and read-only paths (moby's default spec): kernel memory, keys, timers
    // and firmware hidden; /proc/sys and friends read-only.
    mask_paths(root)?;
    Ok(())
}

/// The step's /etc files and binds (host dirs, tmpfs, secrets, contexts, layers, caches) in
/// the root `root`; returns the cache mounts to hand to the step's user once it is known.
fn mount_binds(spec: &Spec, root: &str, created: &mut Vec<String>) -> R<Vec<String>> {
    // resolv.conf, hosts, hostname: provided, not part of the layer.
    for (name, host) in &spec.etc_files {
        let inside = in_root(root, &format!("/etc/{name}"))?;
        ensure_file(root, &inside, created)?;
        bind(
            &host.display().to_string(),
            &format!("{root}{inside}"),
            0,
            true,
        )?;
    }
    // Descriptors of resolved bind sources, open until their mounts are made.
    let mut held_fds = Vec::new();
    // Cache mounts that belong to the step's user (known once the root is in place).
    let mut hand_to_user = Vec::new();
    for Bind {
        host,
        target,
        readonly,
        source,
    } in &spec.binds
    {
        // The target as the image's own symlinks lead, never out of the root (an image whose
        // /home is a link to an absolute host path cannot make the sandbox create there).
        let inside = in_root(root, target)?;
        let t = format!("{root}{inside}");
        let host = match source {
            BindSource::Host => host.clone(),
            BindSource::Cache { follow_user } => {
                if *follow_user && !readonly {
                    hand_to_user.push(inside.clone());
                }
                host.clone()
            }
            BindSource::Tmpfs { size } => {
                ensure_dir(root, &inside, created)?;
                let opts = match size {
                    Some(n) => format!("mode=1777,size={n}"),
                    None => "mode=1777".to_string(),
                };
                mount(
                    "tmpfs",
                    &t,
                    "tmpfs",
                    libc::MS_NOSUID | libc::MS_NODEV,
                    &opts,
                )?;
                continue;
            }
            BindSource::Memory { index, uid, gid } => memory_file(host, *index, *uid, *gid)?,
            BindSource::Context { sub } => {
                let (path, fd) = beneath(host, sub, target)?;
                held_fds.push(fd);
                path
            }
            BindSource::Layers { lower, sub } => {
                let (m, u, w) = (host.join("m"), host.join("u"), host.join("w"));
                for d in [&m, &u, &w] {
                    std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
                }
                super::overlay::mount(&m, lower, Some((&u, &w)))?;
                let (path, fd) = beneath(&m, sub, target)?;
                held_fds.push(fd);
                path
            }
        };
        if host.is_dir() {
            ensure_dir(root, &inside, created)?;
        } else {
            ensure_file(root, &inside, created)?;
        }
        bind(&host.display().to_string(), &t, libc::MS_REC, *readonly)?;
    }
    drop(held_fds);
    Ok(hand_to_user)
}

/// The forked child of pid 1: stdio, signals, session, groups, seccomp, capabilities, ids,
/// workdir, no inherited descriptors, then exec; never returns (126 or 127 on failure).
#[allow(clippy::too_many_arguments)]
fn exec_child(
    spec: &Spec,
    argv: &[CString],
    env: &[CString],
    console: Option<&std::os::fd::OwnedFd>,
    ids: &user::Ids,
    workdir: &str,
    filters: &super::seccomp::Filters,
    drop_caps: &[u32],
    prog: &str,
    prog_c: &CString,
) -> ! {
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut env_p: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_p.push(std::ptr::null());
    let groups: Vec<libc::gid_t> = ids.groups.clone();
    let wd = cstr(workdir);
    let devnull = cstr("/dev/null");
    // SAFETY: raw syscalls on valid pointers; on any failure the child exits 127.
    unsafe {
        if let Some(t) = &console {
            // The terminal (close-on-exec itself) on 0, 1 and 2.
            for n in 0..3 {
                libc::dup2(t.as_raw_fd(), n);
            }
        } else if !spec.stdin {
            let fd = libc::open(devnull.as_ptr(), libc::O_RDONLY);
            if fd >= 0 {
                libc::dup2(fd, 0);
                libc::close(fd);
            }
        }
        // Default signal dispositions and an empty mask, as runc gives a container's
        // process: strata's runtime ignores SIGPIPE, and an ignored signal stays ignored
        // across exec (`yes | head` would print "Broken pipe" and `set -o pipefail` fail).
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Through the raw syscall: glibc's signal() refuses 32 and 33, which it keeps for
        // itself, and those can arrive ignored from whatever started strata.
        #[repr(C)]
        struct KernelSigaction {
            handler: usize,
            flags: libc::c_ulong,
            restorer: usize,
            mask: u64,
        }
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        libc::setsid();
        if console.is_some() {
            // The terminal on 0, 1 and 2 becomes this new session's controlling terminal, and
            // the step's process group its foreground: Ctrl-C and Ctrl-Z reach the shell.
            libc::ioctl(0, libc::TIOCSCTTY, 0);
        }
        if !spec.maps.root_only && libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            libc::_exit(126);
        }
        // Docker's seccomp profile, while we still hold CAP_SYS_ADMIN (so without
        // no_new_privs: setuid binaries keep working), then Docker's capability set while
        // we still hold CAP_SETPCAP; a non-root USER then loses the rest when it changes
        // ids, as under Docker.
        if !filters.install() {
            fail(b"strata: installing the seccomp filter failed\n");
        }
        if !limit_capabilities(drop_caps) {
            fail(b"strata: dropping capabilities failed\n");
        }
        if libc::setresgid(ids.gid, ids.gid, ids.gid) != 0
            || libc::setresuid(ids.uid, ids.uid, ids.uid) != 0
        {
            libc::_exit(126);
        }
        if libc::chdir(wd.as_ptr()) != 0 {
            libc::_exit(126);
        }
        // The process starts with exactly 0, 1 and 2: not the report and task pipes, not
        // the memory files (already mounted), and nothing strata inherited without
        // close-on-exec (a directory of the caller's, a jobserver pipe, a socket).
        close_from(3);
        libc::execve(prog_c.as_ptr(), argv_p.as_ptr(), env_p.as_ptr());
        // Said on the process's stderr, as a shell says it (this process is a fork of a
        // single-threaded one: formatting is safe here): 126 when the file is there but
        // cannot be run (not executable, an argument list over the kernel's limit).
        let e = std::io::Error::last_os_error();
        let msg = format!("strata: exec {prog}: {e}\n");
        libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
        libc::_exit(if e.raw_os_error() == Some(libc::ENOENT) {
            127
        } else {
            126
        });
    }
}
/// pid 1: build the root, start the process, reap until it ends.
/// The root: mounts made private, then the overlay (or the copy, bound onto itself); its path.
fn root_fs(spec: &Spec) -> R<String> {
    let rec_private = libc::MS_REC | libc::MS_PRIVATE;
    mount("", "/", "", rec_private, "")?;
    Ok(match &spec.rootfs {
        Rootfs::Overlay {
            lower,
            upper,
            work,
            merged,
        } => {
            super::overlay::mount(merged, lower, Some((upper, work)))?;
            merged.display().to_string()
        }
        Rootfs::Copy { lower, root, state } => {
            if !state.exists() {
                let st = super::copyfs::prepare(lower, root)
                    .map_err(io(format!("copying the image into {}", root.display())))?;
                st.save(state)
                    .map_err(|e| SetupError::Os { cause: e.into() })?;
            }
            let r = root.display().to_string();
            // pivot_root needs a mount point.
            mount(&r, &r, "", libc::MS_BIND | libc::MS_REC, "")?;
            r
        }
    })
}

/// pivot_root into `root`, detach the old root, name the host.
fn pivot(root: &str, hostname: &str) -> R<()> {
    // pivot_root(".", ".") then detach the old root: no directory is left in the new root.
    std::env::set_current_dir(root).map_err(io(format!("chdir {root}")))?;
    let dot = cstr(".");
    // SAFETY: pivot_root via syscall with valid path pointers.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
        return Err(syscall("pivot_root"));
    }
    // SAFETY: see above.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(syscall("detaching the old root"));
    }
    std::env::set_current_dir("/").map_err(io("chdir /"))?;
    let host = cstr(hostname);
    // SAFETY: valid pointer and length.
    unsafe { libc::sethostname(host.as_ptr(), hostname.len()) };
    Ok(())
}

fn init(spec: &Spec, net_ready: Option<std::fs::File>) -> R<Outcome> {
    super::signals::init_prepare();
    let root = root_fs(spec)?;

    let mut created = Vec::new();
    kernel_fs(spec, &root, &mut created)?;

    let hand_to_user = mount_binds(spec, &root, &mut created)?;
    report(&Report::Created(created));

    pivot(&root, &spec.hostname)?;

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let ids = user::resolve(&spec.user, &passwd, &group).map_err(|message| SetupError::User {
        user: spec.user.clone(),
        message,
    })?;
    if spec.maps.root_only && (ids.uid != 0 || ids.gid != 0) {
        return Err(SetupError::RootOnly {
            user: spec.user.clone(),
            uid: ids.uid,
            gid: ids.gid,
        });
    }
    for t in &hand_to_user {
        hand_over(Path::new(t), ids.uid, ids.gid).map_err(|e| SetupError::CacheOwner {
            target: t.clone(),
            cause: Box::new(e),
        })?;
    }
    // -t: the terminal, from this sandbox's devpts; its master goes to strata over the console
    // socket strata gave us as fd 0. Our own messages (a command not found) go to it too.
    let console = if spec.tty {
        let console = |message| SetupError::Console { message };
        let c = super::console::allocate(spec.tty_size, ids.uid).map_err(console)?;
        // SAFETY: fd 0 is the console socket strata passed; borrowed for one sendmsg.
        super::console::send(unsafe { std::os::fd::BorrowedFd::borrow_raw(0) }, &c.master)
            .map_err(console)?;
        drop(c.master);
        // SAFETY: dup2 onto our own stdout and stderr.
        unsafe {
            libc::dup2(c.slave.as_raw_fd(), 1);
            libc::dup2(c.slave.as_raw_fd(), 2);
        }
        Some(c.slave)
    } else {
        None
    };
    let workdir = if spec.workdir.is_empty() {
        "/".to_string()
    } else {
        spec.workdir.clone()
    };
    if std::fs::metadata(&workdir).is_err() {
        std::fs::create_dir_all(&workdir).map_err(io(format!("creating WORKDIR {workdir}")))?;
    }

    let argv: Vec<CString> = spec.argv.iter().map(|a| cstr(a)).collect();
    if argv.is_empty() {
        return Err(SetupError::NoCommand);
    }
    // HOME, when the image's ENV does not set it, is the user's home from the image's passwd
    // ("/" for a user without an entry), as runc sets it: `cd ~` works, and pip, uv and npm
    // find their caches under it (a cache mount on /root/.cache/pip is used, not bypassed).
    let mut env: Vec<CString> = spec.env.iter().map(|e| cstr(e)).collect();
    if !spec.env.iter().any(|e| e.starts_with("HOME=")) {
        let home = ids.home.as_deref().filter(|h| !h.is_empty()).unwrap_or("/");
        env.push(cstr(&format!("HOME={home}")));
    }
    let path_var = spec
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::oci::DEFAULT_PATH)
        .to_string();
    let found = if spec.argv[0].contains('/') {
        Some(spec.argv[0].clone())
    } else {
        path_var
            .split(':')
            .map(|d| format!("{d}/{}", spec.argv[0]))
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
    };
    let Some(prog) = found else {
        // As a shell (and docker run): a command that is not there is the process's failure,
        // exit code 127, with the reason on its stderr; not a failure of the sandbox.
        let msg = format!(
            "strata: {}: executable file not found in $PATH ({path_var})\n",
            spec.argv[0]
        );
        let _ = std::io::stderr().write_all(msg.as_bytes());
        return Ok(Outcome::Exited(127));
    };
    let prog_c = cstr(&prog);
    if let Some(mut f) = net_ready {
        if !matches!(read_frame(&mut f), Ok(Some(ToChild::NetworkReady))) {
            return Err(SetupError::NetworkNotReady);
        }
    }

    let drop_caps = caps_to_drop();
    // --ulimit: set here, inherited by the process.
    for l in &spec.rlimits {
        l.apply()?;
    }
    let filters =
        super::seccomp::docker_default().map_err(|message| SetupError::Seccomp { message })?;
    let forked = std::time::Instant::now();
    // SAFETY: single-threaded; the child only calls async-signal-safe functions before exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(syscall("fork"));
    }
    if pid == 0 {
        exec_child(
            spec,
            &argv,
            &env,
            console.as_ref(),
            &ids,
            &workdir,
            &filters,
            &drop_caps,
            &prog,
            &prog_c,
        );
    }
    drop(console);
    // Reap everything and pass forwarded signals on; return when our process ends (the rest
    // dies with the namespace).
    let status = super::signals::init_wait(pid).map_err(io("waitpid"))?;
    // How long the process ran, from its fork to its exit: the rest of a step's time is
    // strata's (setting up, committing).
    report(&Report::Ran {
        micros: u64::try_from(forked.elapsed().as_micros()).unwrap_or(u64::MAX),
    });
    if libc::WIFEXITED(status) {
        return Ok(Outcome::Exited(libc::WEXITSTATUS(status)));
    }
    Ok(Outcome::Signaled(libc::WTERMSIG(status)))
}
