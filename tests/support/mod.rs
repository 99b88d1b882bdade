//! The one support module every integration test binary shares (`mod support;`): the binary
//! under test, skips that are recorded and fail under CI (`require!`, [`skip`]), skips that are
//! not applicable to a pass (`not_applicable!`), strata for other users, terminals, and
//! temporary directories removed when a test ends; [`snapshot`]: expected output kept in files;
//! [`store`]: a test's stores, and a busybox store, removed when the test ends.

pub mod snapshot;
#[allow(dead_code)]
pub mod store;

use std::os::unix::fs::PermissionsExt;

/// Does this run forbid skips for missing tools? `CI` set (non-empty) or `STRATA_REQUIRE_TOOLS=1`
/// (what `make test` sets under CI): then a test that would skip fails instead, so a skipped
/// test never counts as a pass there.
#[allow(dead_code)]
pub fn skips_fail() -> bool {
    std::env::var("STRATA_REQUIRE_TOOLS").as_deref() == Ok("1")
        || std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The name of the running test (libtest names each test's thread after it).
#[allow(dead_code)]
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unknown test>")
        .to_string()
}

/// Record that the running test is skipped because `reason` (something `scripts/test-deps.sh`
/// installs or creates is missing): "SKIPPED <test>: <reason>" on stderr, and a line appended
/// to the file `$STRATA_SKIP_LOG` names, if set. Under CI ([`skips_fail`]) it panics with the
/// reason instead. The caller returns from the test (see `require!`).
#[allow(dead_code)]
pub fn skip(reason: &str) {
    if skips_fail() {
        panic!("{reason} (run scripts/test-deps.sh)");
    }
    record_skip("SKIPPED", reason);
}

/// Record that the running test does nothing in this pass because `reason` (it is not
/// applicable here: a root-only step in the unprivileged pass, or the other way round). Never
/// fails, also not under CI: the other pass covers it.
#[allow(dead_code)]
pub fn not_applicable(reason: &str) {
    record_skip("NOT APPLICABLE", reason);
}

/// Is this the unprivileged pass of `make test`, run as `user`, after a root pass that already
/// ran, as `user` (through runuser), every scenario of the tests that switch users themselves
/// (their `runners()`)? scripts/test-as-user.sh says so with `STRATA_ROOT_PASS_RAN_AS=<user>`.
/// Such a test then has nothing left to do here: its runners are none and it records itself
/// [`not_applicable`]. Never true for root, nor when the script is run with
/// `STRATA_USER_PASS_ALL=1` (it then leaves the variable out).
#[allow(dead_code)]
pub fn root_pass_ran_as(user: &str) -> bool {
    !rustix::process::geteuid().is_root()
        && std::env::var("STRATA_ROOT_PASS_RAN_AS").as_deref() == Ok(user)
}

/// Who a rootless-and-root test runs as: `None` (the caller itself) and, when root, also the
/// unprivileged user `strata-test` (recorded as a skip when the user does not exist). Nothing
/// in the unprivileged pass of make test when the root pass already ran it as strata-test.
#[allow(dead_code)]
pub fn runners() -> Vec<Option<&'static str>> {
    const TEST_USER: &str = "strata-test";
    if root_pass_ran_as(TEST_USER) {
        not_applicable(&format!("the root pass ran this as {TEST_USER} already"));
        return Vec::new();
    }
    let mut v = vec![None];
    if rustix::process::geteuid().is_root() {
        if std::process::Command::new("id")
            .arg(TEST_USER)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            v.push(Some(TEST_USER));
        } else {
            skip(&format!("no user {TEST_USER}: its runs are left out"));
        }
    }
    v
}

fn record_skip(kind: &str, reason: &str) {
    let line = format!("{kind} {}: {reason}", test_name());
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("STRATA_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// `require!(cond, "reason")`: unless `cond` holds, skip the running test with that reason
/// ([`skip`]: recorded, and a failure under CI) and return from it. `require!(opt)`: the value
/// of a fixture that returns `Option<T>` (having called [`skip`] itself), or return.
#[allow(unused_macros)]
macro_rules! require {
    ($cond:expr, $($reason:tt)+) => {
        if !$cond {
            $crate::support::skip(&format!($($reason)+));
            return;
        }
    };
    ($fixture:expr) => {
        match $fixture {
            Some(v) => v,
            None => return,
        }
    };
}

/// `not_applicable!(cond, "reason")`: unless `cond` holds, the running test does nothing in
/// this pass ([`not_applicable`]: recorded, never a failure) and returns.
#[allow(unused_macros)]
macro_rules! not_applicable {
    ($cond:expr, $($reason:tt)+) => {
        if !$cond {
            $crate::support::not_applicable(&format!($($reason)+));
            return;
        }
    };
}

/// The binary under test, where cargo built it.
#[allow(dead_code)]
pub fn strata() -> &'static str {
    env!("CARGO_BIN_EXE_strata")
}

/// Bytes as text, lossily.
#[allow(dead_code)]
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Is `cmd` on PATH?
#[allow(dead_code)]
pub fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The binary under test, hard-linked or copied where the unprivileged users can run it (the
/// checkout may be in a directory they cannot enter).
#[allow(dead_code)]
pub fn strata_bin() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("strata-bin-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dest = dir.join("strata");
        // A directory left by an earlier process with the same pid holds an old binary.
        let fresh = dest.exists()
            && fs_err::read(&dest).ok() == fs_err::read(env!("CARGO_BIN_EXE_strata")).ok();
        if !fresh {
            let tmp = dir
                .join(format!("strata.{:?}", std::thread::current().id()).replace(['(', ')'], ""));
            let _ = std::fs::remove_file(&tmp);
            // A hard link where it can be one (the same file system, and the binary is the
            // caller's own, as fs.protected_hardlinks wants): the binary is 170 MB in a debug
            // build, and cargo's file is already 0755. Else a copy.
            if std::fs::hard_link(env!("CARGO_BIN_EXE_strata"), &tmp).is_err() {
                fs_err::copy(env!("CARGO_BIN_EXE_strata"), &tmp).unwrap();
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            fs_err::rename(&tmp, &dest).unwrap();
        }
        dest.display().to_string()
    })
}

/// `a` quoted for sh.
#[allow(dead_code)]
pub fn sh_quote(a: &str) -> String {
    format!("'{}'", a.replace('\'', "'\\''"))
}

/// Run the sh command `line` inside `script` (util-linux), which gives it a terminal of its own
/// as a user would have one, then write each `(delay in ms, bytes)` of `typed` to that terminal.
/// Returns the exit code and what appeared on the terminal (carriage returns removed).
#[allow(dead_code)]
pub fn on_a_terminal(line: &str, typed: &[(u64, &str)]) -> (i32, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new("script")
        .args(["-qec", line, "/dev/null"])
        .current_dir("/tmp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    for (delay, bytes) in typed {
        std::thread::sleep(std::time::Duration::from_millis(*delay));
        let _ = std::io::Write::write_all(&mut input, bytes.as_bytes());
    }
    let o = child.wait_with_output().unwrap();
    drop(input);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).replace('\r', ""),
    )
}

/// A dockerd of the test's own (data, exec root, socket and pid under `dir`, no bridge, no
/// iptables), stopped by pid on drop.
#[allow(dead_code)]
pub struct Dockerd {
    child: std::process::Child,
    sock: std::path::PathBuf,
}

#[allow(dead_code)]
impl Dockerd {
    pub fn start(dir: &std::path::Path) -> Option<Dockerd> {
        fs_err::create_dir_all(dir).ok()?;
        let sock = dir.join("docker.sock");
        let child = std::process::Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["-H", &format!("unix://{}", sock.display())])
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .stdout(
                fs_err::File::create(dir.join("dockerd.log"))
                    .ok()?
                    .into_parts()
                    .0,
            )
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let d = Dockerd { child, sock };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if d.docker(&["version"]).status.success() {
                return Some(d);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        None
    }

    /// The docker client against this daemon (Debian's client, which matches the daemon of
    /// the docker.io package, when there is one).
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        let client = if std::path::Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        std::process::Command::new(client)
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to the dockerd we started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A directory removed when the test's thread ends (libtest runs each test on a thread of its
/// own; thread-local destructors run after a panic too), so `cargo test` leaves nothing in the
/// temp dir. Read-only directories (snapshots) are made writable first.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        fn writable(p: &std::path::Path) {
            if let Ok(m) = std::fs::symlink_metadata(p) {
                if m.is_dir() {
                    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
                    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                        writable(&e.path());
                    }
                }
            }
        }
        writable(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

thread_local! {
    static CLEANUP: std::cell::RefCell<Vec<Cleanup>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Remove `d` when the calling test's thread ends (see [`Cleanup`]).
#[allow(dead_code)]
pub fn removed_at_the_end(d: &std::path::Path) {
    CLEANUP.with(|c| c.borrow_mut().push(Cleanup(d.to_path_buf())));
}

/// Lay out a busybox root filesystem at `r` from the host's `/bin/busybox` (Debian's
/// busybox-static): the binary and a symlink per applet in /bin, an absolute symlink `/ubin`
/// (as /bin → usr/bin is in Debian), passwd and group files (root, daemon, app 1000, nobody),
/// /tmp 1777. The caller imports it (`strata import R busybox:latest`). None without
/// /bin/busybox.
#[allow(dead_code)]
pub fn busybox_rootfs(r: &std::path::Path) -> Option<()> {
    if !std::path::Path::new("/bin/busybox").exists() {
        return None;
    }
    fs_err::create_dir_all(r.join("bin")).unwrap();
    for d in ["etc", "tmp", "root", "usr/bin"] {
        fs_err::create_dir_all(r.join(d)).unwrap();
    }
    fs_err::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for a in String::from_utf8_lossy(&list.stdout).lines() {
        if a != "busybox" {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
        }
    }
    std::os::unix::fs::symlink("/usr/bin", r.join("ubin")).unwrap();
    fs_err::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    fs_err::write(
        r.join("etc/group"),
        "root:x:0:\nwheel:x:10:root\ndaemon:x:1:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n",
    )
    .unwrap();
    std::fs::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    Some(())
}

/// A static file server on 127.0.0.1 for `dir` (HTTP/1.0, GET only, every file with the same
/// Last-Modified), enough for ADD's downloads and git's dumb HTTP protocol. Returns its port;
/// it serves until the test process ends.
#[allow(dead_code)]
pub fn serve(dir: std::path::PathBuf) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                let _ = r.read_line(&mut first);
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = first.split_whitespace().nth(1).unwrap_or("/");
                let path = path
                    .split('?')
                    .next()
                    .unwrap_or("/")
                    .trim_start_matches('/');
                let mut w = conn;
                match fs_err::read(dir.join(path)) {
                    Ok(body) if !path.is_empty() => {
                        let _ = write!(w, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nConnection: close\r\n\r\n", body.len());
                        let _ = w.write_all(&body);
                    }
                    _ => {
                        let _ = write!(w, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                }
            });
        }
    });
    port
}
