//! `strata build`: the BuildKit behaviours of ../shared/conformance/buildkit-behaviours.md for
//! the engine's sections, each checked on a real build in the rootless sandbox, on a busybox
//! base made here from Debian's busybox-static. `make test` runs this file as root and again as
//! the unprivileged user strata-test (scripts/test-as-user.sh); tests/BEHAVIOURS.md maps each
//! behaviour to its test. Without /bin/busybox the tests say SKIPPED (and fail under
//! STRATA_REQUIRE_TOOLS=1, as in CI).

#[macro_use]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::store;
use support::text;

/// A store with busybox:latest imported ([`store::Store`]: root:x:0:0, app:x:1000:1000,
/// nobody), strata run from the copy the unprivileged users can reach, with the caller's
/// STRATA_CACHE_LIMIT, and contexts whose files may be in subdirectories.
struct B(store::Store);

const STORE: store::Options = store::Options {
    kind: "build",
    bin: store::Bin::Copied,
    cache_limit: store::CacheLimit::Inherited,
    ctx: store::CtxFiles::WithParents,
};

impl std::ops::Deref for B {
    type Target = store::Store;
    fn deref(&self) -> &store::Store {
        &self.0
    }
}

impl B {
    fn new(name: &str) -> Option<B> {
        store::Store::new(&STORE, name).map(B)
    }

    /// `strata run IMAGE sh -c SCRIPT` → stdout (asserting success).
    fn sh(&self, image: &str, script: &str) -> String {
        let o = self.strata(&["run", image, "sh", "-c", script]);
        assert!(o.status.success(), "run {script}: {}", text(&o.stderr));
        text(&o.stdout)
    }

    fn config(&self, image: &str) -> serde_json::Value {
        let o = self.strata(&["inspect", image]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["Config"].clone()
    }

    /// The image id (config digest) of `image` (`name:tag`).
    fn id(&self, image: &str) -> String {
        let o = self.strata(&["images", "--format", "json"]);
        let out = text(&o.stdout);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("images --format json: {e}: {out}"));
        v.as_array()
            .unwrap()
            .iter()
            .find(|i| {
                i["names"].as_array().is_some_and(|n| {
                    n.iter()
                        .any(|x| x.as_str().is_some_and(|s| s.starts_with(image)))
                })
            })
            .map(|i| i["id"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{image} not in {out}"))
    }

    /// Every file below the store (to check a secret never lands there).
    fn store_contains(&self, needle: &[u8]) -> Vec<PathBuf> {
        contains_under(Path::new(&self.root), needle)
    }
}

/// Every regular file under `root` whose bytes contain `needle`.
fn contains_under(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    contains_under_but(root, needle, |_| false)
}

/// Every regular file in the temporary directory of the test run whose bytes contain `needle`,
/// the test binaries' copies of strata aside (`strata-bin-<pid>`, [`support::strata_bin`]: the
/// binary under test, 170 MB in a debug build, one for each test binary that ran; reading them
/// all made the scan take a minute in `make test`'s unprivileged pass).
fn tmp_contains(needle: &[u8]) -> Vec<PathBuf> {
    contains_under_but(&std::env::temp_dir(), needle, |e| {
        e.file_name().to_string_lossy().starts_with("strata-bin-")
    })
}

/// Every regular file under `root` whose bytes contain `needle`, not looking into the
/// directories `skip` names.
fn contains_under_but(
    root: &Path,
    needle: &[u8],
    skip: fn(&std::fs::DirEntry) -> bool,
) -> Vec<PathBuf> {
    {
        let mut hits = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    if !skip(&e) {
                        stack.push(p);
                    }
                } else if ft.is_file() {
                    if let Ok(data) = fs_err::read(&p) {
                        if data.windows(needle.len()).any(|w| w == needle) {
                            hits.push(p);
                        }
                    }
                }
            }
        }
        hits
    }
}

fn df(body: &str) -> (&'static str, String) {
    ("Dockerfile", body.to_string())
}

fn files<'a>(list: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    list.iter().map(|(a, b)| (*a, b.as_str())).collect()
}

// ---- RUN ----------------------------------------------------------------------------------

#[test]
fn run_shell_exec_env_args_user_workdir() {
    let b = require!(B::new("run"));
    let f = [df(r#"FROM busybox
ENTRYPOINT ["/bin/false"]
ARG A=from-arg
ENV E=from-env
RUN echo "shell:$0:$A:$E" > /shell
RUN ["/bin/sh", "-c", "echo exec:$A > /exec"]
SHELL ["/bin/sh", "-c", "echo shellcmd; eval \"$1\"", "x"]
RUN echo via-shell-instruction > /shellinst
SHELL ["/bin/sh", "-c"]
WORKDIR /w
USER app
RUN id > /tmp/id && pwd > /tmp/pwd
USER root
RUN id > /tmp/rootid
ENTRYPOINT []
"#)];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "r", "--build-arg", "A=from-cli"]);
    assert_eq!(b.sh("r", "cat /shell"), "shell:/bin/sh:from-cli:from-env\n");
    assert_eq!(b.sh("r", "cat /exec"), "exec:from-cli\n");
    assert_eq!(b.sh("r", "cat /shellinst"), "via-shell-instruction\n");
    assert_eq!(b.sh("r", "cat /tmp/pwd"), "/w\n");
    assert!(b
        .sh("r", "cat /tmp/id")
        .starts_with("uid=1000(app) gid=1000(app)"));
    let rootid = b.sh("r", "cat /tmp/rootid");
    assert!(
        rootid.starts_with("uid=0(root) gid=0(root) groups=0(root),10(wheel)"),
        "{rootid}"
    );
    // ARGs are not kept in the image; ENV is.
    let env = b.config("r")["config"]["Env"].to_string();
    assert!(
        env.contains("E=from-env") && !env.contains("A=from"),
        "{env}"
    );
}

#[test]
fn failing_run_names_the_line_and_exits_non_zero() {
    let b = require!(B::new("fail"));
    let f = [df(
        "FROM busybox\nRUN echo before\nRUN echo some output; exit 3\nRUN echo never\n",
    )];
    let c = b.ctx("c", &files(&f));
    let err = b.fails(&c, &[]);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(
        err.contains("did not complete successfully: exit code: 3"),
        "{err}"
    );
    assert!(
        err.contains("some output"),
        "the step's log is shown: {err}"
    );
    assert!(!err.contains("never"), "{err}");
    // Nothing left behind in the store's tmp.
    let tmp: Vec<_> = fs_err::read_dir(Path::new(&b.root).join("v1/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(tmp.is_empty(), "leftovers: {tmp:?}");
}

#[test]
fn run_network_none_has_only_loopback() {
    let b = require!(B::new("net"));
    let f = [df("FROM busybox\nRUN --network=none tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /nets\nRUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /hostnets\n")];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "n"]);
    assert_eq!(b.sh("n", "cat /nets"), "lo\n");
    assert_ne!(b.sh("n", "cat /hostnets"), "lo\n");
}

#[test]
fn run_network_host_needs_the_entitlement() {
    let b = require!(B::new("nethost"));
    // Each RUN has its own network by default: an interface besides lo, its own loopback.
    let f = [df(
        "FROM busybox\nRUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort > /own\n",
    )];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "own"]);
    let own = b.sh("own", "cat /own");
    assert!(
        own.lines().any(|l| l == "lo") && own.lines().count() >= 2,
        "{own}"
    );
    // The host's network is an opt-in on the command line, as buildx's entitlement.
    let f = [df("FROM busybox\nRUN --network=host true\n")];
    let c = b.ctx("h", &files(&f));
    let e = b.fails(&c, &["-t", "h"]);
    assert!(
        e.contains("--allow network.host") && e.contains("Dockerfile:2"),
        "{e}"
    );
    b.ok(&c, &["-t", "h", "--allow", "network.host"]);
    let e = b.fails(&c, &["-t", "h2", "--network", "host"]);
    assert!(e.contains("--allow network.host"), "{e}");
    let e = b.fails(&c, &["-t", "h3", "--allow", "security.insecure"]);
    assert!(e.contains("not supported"), "{e}");
}

#[test]
fn expansion_is_bounded_and_long_dockerfiles_build() {
    let b = require!(B::new("expansion"));
    // A chain of self-doubling ARGs (858 bytes once allocated 6.7 GB): an error at the line
    // that crosses the limit, naming the variable.
    let mut text = String::from("FROM busybox\nARG A=0123456789abcdef\n");
    for _ in 0..40 {
        text.push_str("ARG A=$A$A\n");
    }
    text.push_str("RUN echo ${#A}\n");
    let c = b.ctx("dbl", &files(&[df(&text)]));
    let e = b.fails(&c, &["-t", "dbl"]);
    assert!(
        e.contains("Dockerfile:19") && e.contains("$A") && e.contains("1 MiB"),
        "{e}"
    );
    // 1,500 `LABEL lN=$a10` lines (25 KB), each word just under the 1 MiB per-word limit: the
    // build took 7.5 GB and 30 s and wrote a 1.5 GB config. Now the growth of all the words of
    // the build is bounded too: an error at the line that crosses 16 MiB, in bounded memory.
    let mut text = String::from("FROM busybox\nARG a0=");
    text.push_str(&"x".repeat(1000));
    text.push('\n');
    for i in 1..=10 {
        text.push_str(&format!("ARG a{i}=$a{p}$a{p}\n", p = i - 1));
    }
    for n in 0..1500 {
        text.push_str(&format!("LABEL l{n}=$a10\n"));
    }
    let c = b.ctx("labels", &files(&[df(&text)]));
    let t = std::time::Instant::now();
    // Reaped by wait4 below (for its peak memory), not by Child::wait.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(support::strata_bin())
        .args([
            "--root",
            &b.root,
            "build",
            "--progress",
            "plain",
            "-t",
            "labels",
        ])
        .arg(&c)
        .env_remove("STRATA_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.unwrap(), &mut err);
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 on our own child, which reaps it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    eprintln!(
        "1,500 LABEL lines refused in {:?}, peak RSS {} MiB",
        t.elapsed(),
        usage.ru_maxrss >> 10
    );
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0,
        "{err}"
    );
    assert!(
        err.contains("Dockerfile:27") && err.contains("LABEL l14=$a10") && err.contains("16 MiB"),
        "{err}"
    );
    assert!(usage.ru_maxrss < 512 << 10, "{} KiB", usage.ru_maxrss);
    assert!(b.strata(&["inspect", "labels"]).status.code() != Some(0));
    // 5,000 ENV lines (20,000 took 51 s when every step hashed the whole environment; see
    // benches/expansion.sh): the image has them all, in order, and a rebuild is the same image.
    let mut text = String::from("FROM busybox\n");
    for i in 0..5000 {
        text.push_str(&format!("ENV V{i}=value{i}\n"));
    }
    text.push_str("ENV V17=changed V4999=${V4998}-last\nRUN echo $V17 $V4999 > /out\n");
    let c = b.ctx("long", &files(&[df(&text)]));
    b.ok(&c, &["-t", "long"]);
    assert_eq!(b.sh("long", "cat /out"), "changed value4998-last\n");
    let env = b.config("long")["config"]["Env"].clone();
    let env: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let pos = |k: &str| {
        env.iter()
            .position(|e| e.starts_with(&format!("{k}=")))
            .unwrap()
    };
    assert!(pos("V0") < pos("V17") && pos("V17") < pos("V4999"));
    assert_eq!(env[pos("V17")], "V17=changed");
    let id = b.id("long");
    b.ok(&c, &["-t", "long"]);
    assert_eq!(b.id("long"), id);
}

/// Start `strata build ARGS` of `ctx` and return once its step printed `marker`.
fn start_build_until(b: &B, ctx: &Path, args: &[&str], marker: &str) -> std::process::Child {
    let mut child = Command::new(support::strata_bin())
        .arg("--root")
        .arg(&b.root)
        .args(["build", "--progress", "plain"])
        .args(args)
        .arg(ctx)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = String::new();
    while std::io::BufRead::read_line(&mut err, &mut line).unwrap_or(0) > 0 {
        seen.push_str(&line);
        if line.contains(marker) {
            // Keep draining so the build never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
            return child;
        }
        line.clear();
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the build ended before {marker}: {seen}");
}

/// Processes still running the marker step's `sleep 617` (busybox sh execs the last command
/// of the `&&` chain, so that is all that is left of it).
fn sleepers_of_marker() -> usize {
    let o = Command::new("pgrep")
        .args(["-f", "^sleep 617$"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).lines().count()
}

/// What a build leaves in the store besides its results: entries in tmp, and lock files other
/// than the two the store keeps (a per-key lock removes its file when released).
fn tmp_entries(b: &B) -> Vec<String> {
    let list = |d: &str| -> Vec<String> {
        std::fs::read_dir(Path::new(&b.root).join(d))
            .map(|r| {
                r.flatten()
                    .map(|e| format!("{d}/{}", e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = list("v1/tmp");
    out.extend(
        list("v1/locks")
            .into_iter()
            .filter(|n| !n.ends_with("/gc.lock") && !n.ends_with("/index.lock")),
    );
    out
}

#[test]
fn a_killed_build_that_is_a_zombie_or_whose_pid_was_reused_is_collected() {
    let b = require!(B::new("zombie"));
    // Not `sleep 617`: the test above counts those.
    let f = [df("FROM busybox\nRUN echo $((6*7))-running && sleep 619\n")];
    let c = b.ctx("c", &files(&f));
    // Killed, and not reaped by its parent (this test): a zombie, as a strata whose parent
    // died stays until PID 1 reaps it (minutes here; for ever under a PID 1 that never reaps).
    let mut child = start_build_until(&b, &c, &[], "42-running");
    let pid = child.id();
    // SAFETY: SIGKILL to our own child, which we reap below.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let state = || {
        fs_err::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(')').unwrap().1.trim_start().chars().next())
            .ok()
            .flatten()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while state() != Some('Z') {
        assert!(std::time::Instant::now() < deadline, "{:?}", state());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mine = |p: u32| -> Vec<String> {
        tmp_entries(&b)
            .into_iter()
            .filter(|n| n.starts_with("v1/tmp/") && n.contains(&format!("-{p}-")))
            .collect()
    };
    assert!(
        !mine(pid).is_empty(),
        "the killed build left its step's dir"
    );
    // Entries of a live process that had the pid before: this test's own pid with a start
    // time it does not have is another process's leftover; with the right one, ours (live).
    let me = std::process::id();
    let tmp = Path::new(&b.root).join("v1/tmp");
    let start = fs_err::read_to_string(format!("/proc/{me}/stat"))
        .unwrap()
        .rsplit_once(')')
        .unwrap()
        .1
        .split_ascii_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    fs_err::create_dir_all(tmp.join(format!("run-{me}-s1-0"))).unwrap();
    fs_err::create_dir_all(tmp.join(format!("run-{me}-s{start}-0"))).unwrap();
    let quick = b.ctx("q", &files(&[df("FROM busybox\nRUN true\n")]));
    b.ok(&quick, &["-t", "q"]);
    assert_eq!(state(), Some('Z'), "still a zombie during the sweep");
    assert!(mine(pid).is_empty(), "{:?}", tmp_entries(&b));
    assert!(!tmp.join(format!("run-{me}-s1-0")).exists(), "pid reused");
    assert!(
        tmp.join(format!("run-{me}-s{start}-0")).exists(),
        "a live owner"
    );
    fs_err::remove_dir(tmp.join(format!("run-{me}-s{start}-0"))).unwrap();
    child.wait().unwrap();
    let o = Command::new("pgrep")
        .args(["-f", "^sleep 619$"])
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "", "the killed build's step outlived it");
    let o = b.strata(&["fsck"]);
    assert!(
        o.status.success() && text(&o.stdout).contains(" 0 problems"),
        "{}",
        text(&o.stdout)
    );
}

/// Free bytes of the filesystem `p` is on.
fn free_bytes(p: &Path) -> u64 {
    let st = rustix::fs::statvfs(p).unwrap();
    st.f_bavail * st.f_frsize
}

#[test]
fn a_full_disk_leaves_no_failed_step_behind_and_says_how_to_get_space_back() {
    // The store on a small filesystem of its own (a 48 MiB tmpfs; mounting one needs root):
    // built as root and as strata-test (rootless, on a tmpfs given to it).
    not_applicable!(rustix::process::geteuid().is_root(), "mounting a small filesystem for the store needs root (the root run builds on it as root and as strata-test)");
    let b = require!(B::new("enospc"));
    let mut runners: Vec<Option<&str>> = vec![None];
    if Command::new("id")
        .arg("strata-test")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        runners.push(Some("strata-test"));
    } else {
        support::skip("no user strata-test: the rootless run is left out");
    }
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&b.dir)
        .output();
    for who in runners {
        let mnt = b.dir.join(format!("small-{}", who.unwrap_or("root")));
        fs_err::create_dir_all(&mnt).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs"])
            .arg(&mnt)
            .output()
            .unwrap();
        require!(o.status.success(), "mounting a tmpfs: {}", text(&o.stderr));
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = Command::new("umount").arg("-l").arg(&self.0).output();
            }
        }
        let _unmount = Unmount(mnt.clone());
        if let Some(u) = who {
            let o = Command::new("chown").arg(u).arg(&mnt).output().unwrap();
            assert!(o.status.success());
        }
        let root = mnt.join("store");
        let run = |args: &[&str]| -> Output {
            let mut c = match who {
                Some(u) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", u, "--", support::strata_bin()]);
                    c
                }
                None => Command::new(support::strata_bin()),
            };
            c.arg("--root")
                .arg(&root)
                .args(args)
                .env_remove("STRATA_ROOT")
                .current_dir("/tmp")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        let o = run(&[
            "import",
            b.dir.join("rootfs").to_str().unwrap(),
            "busybox:latest",
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let free = free_bytes(&mnt);
        let ctx = b.ctx(
            &format!("full-{}", who.unwrap_or("root")),
            &[
                // A command that fails for want of space (it wrote all it could), and two steps
                // whose second fills the disk while the first one's layer is being written.
                ("a/Dockerfile", "FROM busybox\nRUN head -c 60000000 /dev/zero > /big; echo filled; exit 1\n"),
                ("b/Dockerfile", "FROM busybox\nRUN head -c 30000000 /dev/zero > /a\nRUN head -c 30000000 /dev/zero > /b\n"),
            ],
        );
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&ctx)
            .output();
        for case in ["a", "b"] {
            let o = run(&[
                "build",
                "--progress",
                "plain",
                ctx.join(case).to_str().unwrap(),
            ]);
            let err = text(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{who:?} {case}: {err}");
            assert!(
                err.contains("the store's filesystem is full") && err.contains("strata prune"),
                "{who:?} {case}: {err}"
            );
            // The failed step's files are gone: the space is back (once the sandbox's mount
            // namespace, which strata's exit ends, lets go of them), nothing in tmp, nothing
            // kept for `strata debug`.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while free_bytes(&mnt) + (2 << 20) < free && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let now = free_bytes(&mnt);
            assert!(
                now + (2 << 20) >= free,
                "{who:?} {case}: {} MiB of {} MiB free after the failure",
                now >> 20,
                free >> 20
            );
            let tmp: Vec<_> = std::fs::read_dir(root.join("v1/tmp")).unwrap().collect();
            assert!(tmp.is_empty(), "{who:?} {case}: {tmp:?}");
            let o = run(&["debug", "--", "true"]);
            assert!(
                text(&o.stderr).contains("no failed RUN step is kept"),
                "{who:?} {case}: {}",
                text(&o.stderr)
            );
            let o = run(&["fsck"]);
            assert!(
                o.status.success() && text(&o.stdout).contains(" 0 problems"),
                "{who:?} {case}: {}",
                text(&o.stdout)
            );
        }
        let o = run(&["prune", "--all"]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
}

#[test]
fn interrupted_builds_clean_up_and_killed_ones_are_collected() {
    let b = require!(B::new("interrupt"));
    // The marker is the step's output, not its command line (which the progress prints first).
    let f = [df("FROM busybox\nRUN echo $((6*7))-running && sleep 617\n")];
    let c = b.ctx("c", &files(&f));
    // SIGINT (Ctrl-C) and SIGTERM: the step is stopped, its scratch dir removed, exit 130/143.
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let mut child = start_build_until(&b, &c, &[], "42-running");
        assert_eq!(sleepers_of_marker(), 1, "the step runs");
        let t = std::time::Instant::now();
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "signal {sig}");
        assert_eq!(
            sleepers_of_marker(),
            0,
            "the step's processes outlived the build"
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            t.elapsed()
        );
        assert!(tmp_entries(&b).is_empty(), "{:?}", tmp_entries(&b));
    }
    // SIGKILL leaves the step's scratch dir; the next build removes it (its owner is dead).
    let mut child = start_build_until(&b, &c, &[], "42-running");
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let left = tmp_entries(&b);
    assert!(
        left.iter().any(|n| n.starts_with("v1/tmp/"))
            && left.iter().any(|n| n.starts_with("v1/locks/step-")),
        "a SIGKILL leaves the step's scratch dir and its lock file: {left:?}"
    );
    let quick = b.ctx("q", &files(&[df("FROM busybox\nRUN true\n")]));
    b.ok(&quick, &["-t", "q"]);
    assert!(tmp_entries(&b).is_empty(), "{:?}", tmp_entries(&b));
    // Nothing else was lost: the store is whole.
    let o = b.strata(&["fsck"]);
    assert!(
        o.status.success() && text(&o.stdout).contains(" 0 problems"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn copy_into_a_dangling_symlink_follows_it_as_buildkit() {
    let b = require!(B::new("danglink"));
    let f = [
        df("FROM busybox\nRUN ln -s /target /link && ln -s /tdir /dlink\nCOPY a.txt /link\nCOPY a.txt /dlink/\n"),
        ("a.txt", "hello\n".to_string()),
    ];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "dl"]);
    // The links stay links; the file lands where they point (fsutil's Copy resolves its
    // destination with RootPath), the trailing-slash form making the directory.
    assert_eq!(
        b.sh(
            "dl",
            "readlink /link; readlink /dlink; cat /target; cat /tdir/a.txt"
        ),
        "/target\n/tdir\nhello\nhello\n"
    );
}

#[test]
fn identical_builds_at_once_do_the_work_once() {
    let b = require!(B::new("samekey"));
    let f = [df("FROM busybox\nRUN sleep 2 && echo $((6*7))-built\n")];
    let c = b.ctx("c", &files(&f));
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(support::strata_bin())
                .arg("--root")
                .arg(&b.root)
                .args(["build", "--progress", "plain"])
                .arg(&c)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let logs: Vec<String> = children
        .into_iter()
        .map(|ch| {
            let o = ch.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", text(&o.stderr));
            text(&o.stderr)
        })
        .collect();
    // The step ran (its output is in the log) in exactly one build; the other three waited and
    // took it from the cache.
    let ran = logs
        .iter()
        .filter(|l| l.contains("cache miss") && l.contains("42-built"))
        .count();
    let cached = logs.iter().filter(|l| l.contains("CACHED")).count();
    assert_eq!((ran, cached), (1, 3), "{logs:#?}");
}

#[test]
fn sigkill_at_20_instants_leaves_a_consistent_store() {
    let b = require!(B::new("crash"));
    // Two stages, layers written by RUN and COPY, a cross-stage COPY: an ARG busts the cache
    // so every round does all of it.
    let f = [
        df("FROM busybox AS a\nARG N\nRUN echo $N > /n && dd if=/dev/zero of=/big bs=64k count=64 2>/dev/null\nCOPY data/ /data/\nRUN cat /n /data/* > /sum\n\nFROM busybox\nARG N\nCOPY --from=a /sum /big /\nRUN echo $N-final > /final\nENV DONE=1\n"),
        ("data/x", "x\n".to_string()),
        ("data/y", "y\n".to_string()),
    ];
    let c = b.ctx("c", &files(&f));
    let t0 = std::time::Instant::now();
    b.ok(&c, &["-t", "warm", "--build-arg", "N=warm"]);
    let full = t0.elapsed();
    for k in 0..20u32 {
        let n = format!("N=round{k}");
        let mut child = Command::new(support::strata_bin())
            .arg("--root")
            .arg(&b.root)
            .args(["build", "-q", "-t", "crash", "--build-arg", &n])
            .arg(&c)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full * k / 20);
        child.kill().unwrap();
        child.wait().unwrap();
        let o = b.strata(&["fsck"]);
        assert!(
            o.status.success() && text(&o.stdout).contains(" 0 problems"),
            "round {k}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        // The next build removes the killed one's leftovers and gives the right image.
        b.ok(&c, &["-t", "crash", "--build-arg", &n]);
        assert!(
            tmp_entries(&b).is_empty(),
            "round {k}: {:?}",
            tmp_entries(&b)
        );
        assert_eq!(
            b.sh("crash", "cat /final; head -n 2 /sum; wc -c < /big"),
            format!("round{k}-final\nround{k}\nx\n4194304\n"),
            "round {k}"
        );
        // And a no-op rebuild is fully cached, the same image.
        let id = b.id("crash");
        let log = b.ok(&c, &["-t", "crash", "--build-arg", &n]);
        assert!(!log.contains("cache miss"), "round {k}: {log}");
        assert_eq!(b.id("crash"), id, "round {k}");
    }
}

#[test]
fn identical_layers_twice_in_one_image() {
    let b = require!(B::new("duplayer"));
    // The two COPY layers are the same blob and snapshot; overlayfs refuses a lowerdir list
    // that names a directory twice, so the RUN after them used to fail with ELOOP.
    let f = [
        df("FROM busybox\nCOPY a /x\nRUN echo one > /y\nCOPY a /x\nRUN cat /x /y > /both\nCOPY a /z\n"),
        ("a", "hi\n".to_string()),
    ];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "dup"]);
    assert_eq!(b.sh("dup", "cat /both /z"), "hi\none\nhi\n");
}

#[test]
fn home_comes_from_passwd_unless_env_sets_it() {
    let b = require!(B::new("home"));
    // As runc (and so Docker and BuildKit): HOME is the user's passwd home at run time when
    // the image sets none, and it is not written into the image's config.
    let f = [df("FROM busybox\nRUN echo $HOME > /h-root && cd ~ && pwd >> /h-root\nRUN echo app:x:1000:1000::/home/app:/bin/sh >> /etc/passwd\nUSER app\nRUN echo $HOME > /tmp/h-app\nUSER 4321\nRUN echo $HOME > /tmp/h-none\nUSER root\nENV HOME=/custom\nRUN echo $HOME > /h-env\n")];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "home"]);
    assert_eq!(
        b.sh("home", "cat /h-root /tmp/h-app /tmp/h-none /h-env"),
        "/root\n/root\n/home/app\n/\n/custom\n"
    );
    let o = b.strata(&["inspect", "home"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let env = &v["Config"]["config"]["Env"];
    let homes: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str().filter(|e| e.starts_with("HOME=")))
        .collect();
    assert_eq!(homes, ["HOME=/custom"], "only the ENV line's HOME: {env}");
}

#[test]
fn run_entrypoint_replaces_the_images_and_drops_its_cmd() {
    let b = require!(B::new("entrypoint"));
    let f = [df(
        "FROM busybox\nENTRYPOINT [\"echo\", \"ep\"]\nCMD [\"cmd\"]\n",
    )];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "ep"]);
    let run = |args: &[&str]| {
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        let o = b.strata(&a);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    assert_eq!(run(&["ep"]), "ep cmd\n");
    assert_eq!(run(&["ep", "arg"]), "ep arg\n");
    // As docker run: the image's CMD goes with its ENTRYPOINT.
    assert_eq!(run(&["--entrypoint", "echo", "ep"]), "\n");
    assert_eq!(run(&["--entrypoint", "echo", "ep", "x"]), "x\n");
    assert_eq!(run(&["--entrypoint", "", "ep", "echo", "y"]), "y\n");
}

#[test]
fn a_no_op_rebuild_counts_the_steps_its_build_counted() {
    let b = require!(B::new("stepcount"));
    let f = [
        df("FROM busybox AS b\nWORKDIR /made\nRUN echo 1 > f\nENV A=1\nFROM busybox\nCOPY --from=b /made/f /f\nWORKDIR /\nCOPY x /x\n"),
        ("x", "x".to_string()),
    ];
    let c = b.ctx("c", &files(&f));
    let first = b.ok(&c, &["-t", "n"]);
    assert!(first.contains("(4 steps, 0 cached)"), "{first}");
    let again = b.ok(&c, &["-t", "n"]);
    assert!(again.contains("(4 steps, 4 cached)"), "{again}");
}

#[test]
fn a_from_that_is_almost_a_stage_is_not_pulled() {
    let b = require!(B::new("stagetypo"));
    let f = [df(
        "FROM busybox AS builder\nRUN echo x > /x\nFROM busybox\nCOPY --from=biulder /x /x\n",
    )];
    let c = b.ctx("c", &files(&f));
    let err = b.fails(&c, &[]);
    assert!(
        err.contains("--from=biulder: there is no stage biulder")
            && err.contains("did you mean the stage builder?")
            && err.contains("Dockerfile:4"),
        "{err}"
    );
}

#[test]
fn a_build_that_adds_to_the_cache_keeps_it_within_its_limit() {
    let b = require!(B::new("cachegc"));
    let f = [df("FROM busybox AS builder\nARG N=1\nRUN head -c 300000 /dev/urandom > /blob-$N\nFROM busybox\nARG N=1\nCOPY --from=builder /blob-$N /kept\n")];
    let c = b.ctx("c", &files(&f));
    let first = b.ok(&c, &["-t", "app"]);
    assert!(!first.contains("build cache over"), "{first}");
    // N=2 with a limit of about one builder layer: the steps of N=1, used least recently, go
    // with their blobs; the new ones stay.
    let o = Command::new(support::strata_bin())
        .args(["--root", b.root.as_str()])
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "other",
            "--build-arg",
            "N=2",
        ])
        .arg(&c)
        .env("STRATA_CACHE_LIMIT", "700k")
        .env_remove("STRATA_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("build cache over its limit (") && err.contains(" steps dropped, "),
        "{err}"
    );
    let df = text(&b.strata(&["df"]).stdout);
    assert!(df.contains("layers of its 2 steps"), "{df}");
    let warm = b.ok(&c, &["-t", "other", "--build-arg", "N=2"]);
    assert!(!warm.contains("cache miss"), "the new steps stayed: {warm}");
    // A no-op build adds nothing and collects nothing.
    assert!(!warm.contains("build cache over"), "{warm}");
    let cold = b.ok(&c, &["-t", "app"]);
    assert!(cold.contains("cache miss"), "the old ones went: {cold}");
    let fsck = b.strata(&["fsck"]);
    assert!(
        text(&fsck.stdout).contains(" 0 problems"),
        "{}",
        text(&fsck.stdout)
    );
}

#[test]
fn the_build_cache_survives_prune_and_has_a_lifecycle_of_its_own() {
    let b = require!(B::new("cachelife"));
    // A builder stage whose layers no tagged image names: a plain prune used to drop them, so
    // the next build reran it.
    let f = [df("FROM busybox AS builder\nARG N=1\nRUN head -c 300000 /dev/urandom > /blob-$N\nFROM busybox\nARG N=1\nCOPY --from=builder /blob-$N /kept\n")];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "app"]);
    let o = b.strata(&["prune"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let again = b.ok(&c, &["-t", "app"]);
    assert!(
        !again.contains("cache miss"),
        "a plain prune left the cache: {again}"
    );
    let df = text(&b.strata(&["df"]).stdout);
    assert!(
        df.contains("build cache") && df.contains("layers of its 2 steps"),
        "{df}"
    );

    // Least recently used out first: build N=2, then use N=1 again; keeping about one builder
    // layer's worth keeps N=1's steps and drops N=2's.
    b.ok(&c, &["-t", "other", "--build-arg", "N=2"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.ok(&c, &["-t", "app"]);
    let o = b.strata(&["prune", "--cache", "--keep-storage", "700k"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("Build cache: 2 steps dropped"),
        "{}",
        text(&o.stdout)
    );
    let warm = b.ok(&c, &["-t", "app"]);
    assert!(
        !warm.contains("cache miss"),
        "the recently used steps stayed: {warm}"
    );
    let cold = b.ok(&c, &["-t", "other", "--build-arg", "N=2"]);
    assert!(cold.contains("cache miss"), "the old ones went: {cold}");

    // --cache alone drops every step; the images stay whole.
    let o = b.strata(&["prune", "--cache"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let fsck = b.strata(&["fsck"]);
    assert!(
        text(&fsck.stdout).contains(" 0 problems"),
        "{}",
        text(&fsck.stdout)
    );
    assert_eq!(b.sh("app", "wc -c < /kept"), "300000\n");
    let rebuilt = b.ok(&c, &["-t", "app"]);
    assert!(rebuilt.contains("cache miss"), "{rebuilt}");
}

#[test]
fn a_failed_step_is_shown_in_its_dockerfile_lines() {
    let b = require!(B::new("failshow"));
    let f = [df("FROM busybox\nRUN echo one && \\\n    exit 3\n")];
    let c = b.ctx("c", &files(&f));
    let (code, err) = b.fails_with(&c, &[]);
    // A RUN command that fails fails the build: exit code 1, whatever the command's code.
    assert_eq!(code, Some(1), "{err}");
    let file = c.join("Dockerfile");
    assert!(
        err.contains(&format!(
            "error: process \"/bin/sh -c echo one &&     exit 3\" did not complete successfully: exit code: 3\n --> {}:2:1\n  |\n2 | RUN echo one && \\\n  | ^^^^^^^^^^^^^^^^^\n3 |     exit 3\n  |     ^^^^^^\n",
            file.display()
        )),
        "{err}"
    );
    // Hints are shown as hints.
    let f = [df(
        "FROM busybox\nRUN --mount=type=secret,id=tok,required=true true\n",
    )];
    let c = b.ctx("s", &files(&f));
    let (code, err) = b.fails_with(&c, &[]);
    // A secret the build was not given is wrong input: 2.
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("error: secret tok: not found\n --> ")
            && err.contains("  = hint: pass it with --secret id=tok"),
        "{err}"
    );
}

#[test]
fn debug_opens_a_shell_in_the_failed_step() {
    let b = require!(B::new("debugshell"));
    require!(
        Path::new("/usr/bin/script").exists(),
        "script (util-linux) is not installed: no terminal to test --debug with"
    );
    let f = [df("FROM busybox\nENV MARK=env-seen\nWORKDIR /work\nRUN echo made-by-the-step > /made && exit 4\n")];
    let c = b.ctx("c", &files(&f));
    // Through script(1), which gives strata a terminal: the shell sees what the command left,
    // its environment and working directory; exiting it ends the build with the failure.
    let line = format!(
        "{} --root {} build --debug {}",
        support::sh_quote(support::strata_bin()),
        support::sh_quote(&b.root),
        support::sh_quote(&c.display().to_string())
    );
    let (code, out) = support::on_a_terminal(
        &line,
        &[(3000, "cat /made; echo $MARK; pwd\n"), (1000, "exit\n")],
    );
    assert!(
        out.contains("made-by-the-step\nenv-seen\n/work\n"),
        "the shell ran in the failed step: {out}"
    );
    assert!(
        out.contains("did not complete successfully: exit code: 4"),
        "{out}"
    );
    assert_ne!(code, 0, "{out}");
    // Without a terminal it says what --debug needs; without --debug, that it exists.
    let err = b.fails(&c, &["--debug"]);
    assert!(
        err.contains("--debug opens its shell when standard input is a terminal"),
        "{err}"
    );
    let err = b.fails(&c, &[]);
    assert!(
        err.contains(
            "`strata debug` opens a shell where this command failed (or build with --debug)"
        ),
        "{err}"
    );
    // `strata debug`, after the build: the same shell in the same state, on a terminal; one
    // failure kept, the newest.
    let debug_dir = Path::new(&b.root).join("v1/debug");
    assert_eq!(fs_err::read_dir(&debug_dir).unwrap().count(), 1);
    let line = format!(
        "{} --root {} debug",
        support::sh_quote(support::strata_bin()),
        support::sh_quote(&b.root)
    );
    let (code, out) = support::on_a_terminal(
        &line,
        &[(3000, "cat /made; echo $MARK; pwd\n"), (1000, "exit 7\n")],
    );
    assert!(
        out.contains("made-by-the-step\nenv-seen\n/work\n"),
        "the shell ran in the failed step: {out}"
    );
    assert!(
        out.contains(":4 RUN echo made-by-the-step > /made && exit 4 (exit code 4, just now)"),
        "{out}"
    );
    assert_eq!(code, 7, "the shell's exit code is strata debug's: {out}");
    // A command instead of the shell needs no terminal.
    let o = b.strata(&["debug", "--", "sh", "-c", "cat /made; id -u"]);
    assert_eq!(
        text(&o.stdout),
        "made-by-the-step\n0\n",
        "{}",
        text(&o.stderr)
    );
    // Without a terminal and without a command it says how.
    let o = b.strata(&["debug"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("standard input is not a terminal: run it from one, or give a command: strata debug -- ls -l /"),
        "{}",
        text(&o.stderr)
    );
    // A step with a secret is not kept (its command may have copied the secret, meaning to
    // delete it later): the failure kept before stays, and the hint says why.
    let f = [df(
        "FROM busybox\nRUN --mount=type=secret,id=tok cp /run/secrets/tok /tmp/had-it && exit 5\n",
    )];
    let c = b.ctx("s", &files(&f));
    let secret = b.dir.join("tok");
    fs_err::write(&secret, "s3cr3t-value").unwrap();
    let err = b.fails(
        &c,
        &["--secret", &format!("id=tok,src={}", secret.display())],
    );
    assert!(
        err.contains(
            "a step with a secret or an SSH socket is not kept for `strata debug` afterwards"
        ),
        "{err}"
    );
    assert!(b.store_contains(b"s3cr3t-value").is_empty());
    let o = b.strata(&["debug", "--", "cat", "/made"]);
    assert_eq!(text(&o.stdout), "made-by-the-step\n", "{}", text(&o.stderr));
    // Prune removes it.
    let o = b.strata(&["prune"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!debug_dir.exists() || fs_err::read_dir(&debug_dir).unwrap().count() == 0);
    let o = b.strata(&["debug", "--", "true"]);
    assert!(
        text(&o.stderr).contains("no failed RUN step is kept in this store"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn run_heredocs_script_and_shebang() {
    let b = require!(B::new("heredoc"));
    let f = [df("FROM busybox\nRUN <<EOF\necho one > /one\necho two >> /one\nEOF\nRUN <<EOF\n#!/bin/awk -f\nBEGIN { print \"from awk\" > \"/awk\" }\nEOF\nRUN cat <<A > /piped && tr a-z A-Z < /piped > /upper\nhello\nA\n")];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "h"]);
    assert_eq!(b.sh("h", "cat /one"), "one\ntwo\n");
    assert_eq!(b.sh("h", "cat /awk"), "from awk\n");
    assert_eq!(b.sh("h", "cat /upper"), "HELLO\n");
}

#[test]
fn long_heredocs_run_from_a_file_and_oversized_arguments_fail_at_once() {
    let b = require!(B::new("bigheredoc"));
    // 200 KB of script: over the 128 KiB Linux passes in one argument (`sh -c SCRIPT` fails
    // with E2BIG, under BuildKit too). strata runs it from a file.
    let lines: String = (0..4000)
        .map(|i| format!("echo line {i} of a long script >> /lines\n"))
        .collect();
    assert!(lines.len() > 128 << 10);
    let f = [df(&format!(
        "FROM busybox\nRUN <<EOF\n{lines}echo done-$((6*7)) > /out\nEOF\nRUN cat <<A > /copy && wc -l < /copy > /n\n{lines}A\n"
    ))];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "long"]);
    assert_eq!(
        b.sh("long", "cat /out; wc -l < /lines; cat /n"),
        "done-42\n4000\n4000\n"
    );
    // What no file can carry: an argument of an exec-form command, a variable of the
    // environment over the limit. An error at once, naming it.
    // (Lines are at most 64 KiB, as in BuildKit: continuation lines make the long one.)
    let big = vec!["x".repeat(50_000); 4].join("\\\n");
    let c2 = b.ctx(
        "c2",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nRUN [\"sh\", \"-c\", \"true {big}\"]\n"),
        )],
    );
    let t = std::time::Instant::now();
    let (code, err) = b.fails_with(&c2, &[]);
    assert_eq!(code, Some(2), "wrong input, not this machine's sandbox");
    assert!(
        err.contains("argument 3 of the command is 200005 bytes") && err.contains("Dockerfile:2"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(
        err.len() < 20_000,
        "the error repeats the argument: {} bytes",
        err.len()
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    let c3 = b.ctx(
        "c3",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nENV BIG={big}\nRUN true\n"),
        )],
    );
    let err = b.fails(&c3, &[]);
    assert!(
        err.contains("the environment variable BIG is 200004 bytes"),
        "{}",
        &err[..err.len().min(2000)]
    );
    // A heredoc over the sandbox's 64 MiB frame (the hostile input that hung, holding the
    // store's lock, before): built, within a deadline.
    let huge = format!(
        "FROM busybox\nRUN <<EOF\n: <<'X'\n{}X\necho done-$((6*7)) > /out\nEOF\n",
        format!("{}\n", "z".repeat(1 << 20)).repeat(65)
    );
    let c4 = b.ctx("c4", &[("Dockerfile", &huge)]);
    drop(huge);
    let t = std::time::Instant::now();
    let mut child = Command::new(support::strata_bin())
        .args(["--root", &b.root, "build", "-q", "-t", "huge"])
        .arg(&c4)
        .env_remove("STRATA_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > std::time::Duration::from_secs(240) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a 65 MiB heredoc did not build in 240 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    assert!(status.success(), "{}", &err[..err.len().min(4000)]);
    eprintln!("a 65 MiB heredoc built in {:?}", t.elapsed());
    assert_eq!(b.sh("huge", "cat /out"), "done-42\n");
}

// ---- RUN --mount --------------------------------------------------------------------------

#[test]
fn cache_mount_persists_is_owned_as_asked_and_stays_out_of_the_layer() {
    let b = require!(B::new("cachemount"));
    let f = [df("FROM busybox\nUSER app\nARG N\nRUN --mount=type=cache,target=/cache,uid=1000,gid=1000,mode=0700 echo $N >> /cache/log && cat /cache/log > /tmp/seen && stat -c '%u %g %a' /cache > /tmp/owner\n")];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "m", "--build-arg", "N=1"]);
    b.ok(&c, &["-t", "m", "--build-arg", "N=2"]);
    assert_eq!(b.sh("m", "cat /tmp/seen"), "1\n2\n");
    assert_eq!(b.sh("m", "cat /tmp/owner"), "1000 1000 700\n");
    assert_eq!(b.sh("m", "ls -A /cache 2>/dev/null | wc -l"), "0\n");
}

#[test]
fn cache_mounts_without_ids_belong_to_the_steps_user() {
    let b = require!(B::new("cacheuser"));
    // Root fills a shared cache first; app's steps then use it, and a pip-style cache under
    // app's home whose parent (~/.cache) does not exist; an explicit uid keeps BuildKit's
    // meaning (root's, not writable by app).
    let f = [df(r#"FROM busybox
RUN mkdir -p /home/app && chown app:app /home/app
RUN --mount=type=cache,id=shared,target=/data echo root >> /data/log
USER app
ARG N
RUN --mount=type=cache,target=/home/app/.cache/pip echo $N >> ~/.cache/pip/log && cat ~/.cache/pip/log > ~/seen && stat -c '%U:%G' ~/.cache ~/.cache/pip > ~/owners && mkdir ~/.cache/uv-would-go-here
RUN --mount=type=cache,id=shared,target=/data echo $N >> /data/log && cat /data/log > ~/shared
RUN --mount=type=cache,id=rootonly,target=/r,uid=0,gid=0 stat -c %u /r > ~/rootonly && (touch /r/x 2>/dev/null && echo writable || echo refused) >> ~/rootonly
"#)];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "u", "--build-arg", "N=1"]);
    assert_eq!(b.sh("u", "cat /home/app/seen"), "1\n");
    assert_eq!(b.sh("u", "cat /home/app/owners"), "app:app\napp:app\n");
    assert_eq!(b.sh("u", "cat /home/app/shared"), "root\n1\n");
    assert_eq!(b.sh("u", "cat /home/app/rootonly"), "0\nrefused\n");
    b.ok(&c, &["-t", "u", "--build-arg", "N=2"]);
    assert_eq!(b.sh("u", "cat /home/app/seen"), "1\n2\n");
    assert_eq!(b.sh("u", "cat /home/app/shared"), "root\n1\n2\n");
    // No mount point, and no directory made only to hold one, is in a layer: ~/.cache stays
    // because the step wrote into it (uv-would-go-here), the mount point itself does not.
    assert_eq!(
        b.sh("u", "ls -A /home/app /home/app/.cache; ls -d /data /r 2>&1 | grep -c 'No such'"),
        "/home/app:\n.cache\nowners\nrootonly\nseen\nshared\n\n/home/app/.cache:\nuv-would-go-here\n2\n"
    );
    // --no-cache: as BuildKit, each step gets an empty cache mount of its own and the kept ones
    // are neither used nor emptied; pruning the whole build cache empties them.
    b.ok(&c, &["-t", "u", "--build-arg", "N=3", "--no-cache"]);
    assert_eq!(b.sh("u", "cat /home/app/seen"), "3\n");
    assert_eq!(b.sh("u", "cat /home/app/shared"), "3\n");
    b.ok(&c, &["-t", "u", "--build-arg", "N=4"]);
    assert_eq!(b.sh("u", "cat /home/app/seen"), "1\n2\n4\n");
    let o = b.strata(&["prune", "--cache", "--all"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    b.ok(&c, &["-t", "u", "--build-arg", "N=5"]);
    assert_eq!(b.sh("u", "cat /home/app/seen"), "5\n");
    assert_eq!(b.sh("u", "cat /home/app/shared"), "root\n5\n");
}

#[test]
fn a_mount_target_through_an_absolute_symlink_stays_in_the_root() {
    let b = require!(B::new("mountlink"));
    // The image's /ubin is a link to /usr/bin: followed inside the root, never on the host.
    let name = format!("strata-mountlink-{}", std::process::id());
    let f = [df(&format!(
        "FROM busybox\nRUN --mount=type=cache,target=/ubin/{name}/c --mount=type=tmpfs,target=/ubin/{name}/t touch /ubin/{name}/c/x /ubin/{name}/t/y && ls -d /usr/bin/{name}/c > /seen\n"
    ))];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "l"]);
    assert!(!Path::new("/usr/bin").join(&name).exists());
    assert_eq!(
        b.sh(
            "l",
            &format!("cat /seen; ls -d /usr/bin/{name} 2>&1 | grep -c 'No such'")
        ),
        format!("/usr/bin/{name}/c\n1\n")
    );
}

#[test]
fn a_cache_mount_under_a_missing_directory_leaves_nothing_in_the_layer() {
    let b = require!(B::new("cacheparent"));
    let f = [df("FROM busybox\nRUN --mount=type=cache,target=/root/.cache/pip/http echo x > /root/.cache/pip/http/f && echo done > /done\n")];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "p"]);
    assert_eq!(b.sh("p", "cat /done; ls -A /root"), "done\n");
}

#[test]
fn bind_tmpfs_and_stage_mounts() {
    let b = require!(B::new("bind"));
    let f = [
        df("FROM busybox AS s\nRUN mkdir /out && echo from-stage > /out/x\nFROM busybox\nRUN --mount=target=/ctx cat /ctx/input > /got && (touch /ctx/w 2>/dev/null && echo rw || echo ro) > /mode\nRUN --mount=type=bind,from=s,source=/out,target=/o,rw cat /o/x > /fromstage && echo scribble > /o/y\nRUN --mount=type=tmpfs,target=/scratch echo t > /scratch/f && ls /scratch > /tmpfs\nRUN --mount=type=bind,from=busybox:latest,source=/etc/group,target=/imagegroup head -n 1 /imagegroup > /fromimage\n"),
        ("input", "v1".into()),
    ];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "b"]);
    assert_eq!(b.sh("b", "cat /got"), "v1");
    assert_eq!(b.sh("b", "cat /mode"), "ro\n");
    assert_eq!(b.sh("b", "cat /fromstage"), "from-stage\n");
    assert_eq!(b.sh("b", "cat /tmpfs"), "f\n");
    assert_eq!(b.sh("b", "cat /fromimage"), "root:x:0:\n");
    assert_eq!(
        b.sh(
            "b",
            "ls -A /scratch /ctx /o 2>/dev/null | grep -c . || true"
        ),
        "0\n"
    );
    // The bound content is part of the key: a change reruns the step.
    fs_err::write(c.join("input"), "v2").unwrap();
    let out = b.ok(&c, &["-t", "b"]);
    assert!(out.contains("cache miss: 1 file changed: input"), "{out}");
    assert_eq!(b.sh("b", "cat /got"), "v2");
}

#[test]
fn inherited_descriptors_never_reach_a_run_step() {
    // strata started with a directory of the caller's on 7 and a file on 8, neither
    // close-on-exec (a CI agent, make's jobserver, socket activation): a RUN step must see
    // neither (runc's CVE-2024-21626 class: /proc/self/fd/7 is a way out of the root).
    let b = require!(B::new("fds"));
    let outside = b.dir.join("outside");
    fs_err::create_dir_all(&outside).unwrap();
    fs_err::write(outside.join("private"), "PRIVATE-BYTES\n").unwrap();
    let log = b.dir.join("outside.log");
    fs_err::write(&log, "").unwrap();
    let c = b.ctx(
        "c",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN ls /proc/self/fd | tr '\\n' ' ' > /fds; \
             cat /proc/self/fd/7/private > /leak 2>/dev/null; \
             echo planted >> /proc/self/fd/8 2>/dev/null; true\n",
        )],
    );
    let line = format!(
        "exec 7<{} 8>>{}; exec {} --root {} build --progress plain -t fds {}",
        outside.display(),
        log.display(),
        support::sh_quote(support::strata_bin()),
        support::sh_quote(&b.root),
        c.display()
    );
    let o = Command::new("sh")
        .args(["-c", &line])
        .env_remove("STRATA_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        b.sh("fds", "cat /fds; test -s /leak && echo LEAK; true"),
        "0 1 2 3 "
    );
    assert_eq!(fs_err::read_to_string(&log).unwrap(), "");
}

#[test]
fn secrets_reach_the_step_and_nothing_else() {
    let b = require!(B::new("secret"));
    let value = "s3cr3t-value-4711";
    let f = [df("FROM busybox\nRUN --mount=type=secret,id=tok cat /run/secrets/tok > /tmp/len.tmp && wc -c < /tmp/len.tmp > /len && rm /tmp/len.tmp\nRUN --mount=type=secret,id=tok,env=TOK echo -n \"$TOK\" | wc -c > /envlen\n")];
    let c = b.ctx("c", &files(&f));
    let secret = b.dir.join("tok.txt");
    fs_err::write(&secret, value).unwrap();
    let spec = format!("id=tok,src={}", secret.display());
    let log = b.ok(&c, &["-t", "s", "--secret", &spec]);
    assert!(!log.contains(value), "{log}");
    assert_eq!(b.sh("s", "cat /len").trim(), value.len().to_string());
    assert_eq!(b.sh("s", "cat /envlen").trim(), value.len().to_string());
    assert_eq!(b.sh("s", "ls /run/secrets 2>/dev/null | wc -l"), "0\n");
    assert!(b.store_contains(value.as_bytes()).is_empty());
    // A required secret that is not given.
    let c2 = b.ctx(
        "c2",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN --mount=type=secret,id=missing,required cat /run/secrets/missing\n",
        )],
    );
    let err = b.fails(&c2, &[]);
    assert!(err.contains("secret missing: not found"), "{err}");
    // Killed with SIGKILL while a step has the secret mounted: no copy anywhere on disk (the
    // store, the temporary directory of the whole test run, the copies of strata aside), because it only ever lived in
    // memory (a memfd, then a tmpfs of the sandbox's own mount namespace).
    let f = [df("FROM busybox\nRUN --mount=type=secret,id=tok cat /run/secrets/tok > /dev/null && echo $((6*7))-mounted && sleep 60\n")];
    let c3 = b.ctx("c3", &files(&f));
    let mut child = start_build_until(&b, &c3, &["--secret", &spec], "42-mounted");
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let hits: Vec<PathBuf> = tmp_contains(value.as_bytes())
        .into_iter()
        .filter(|p| p != &secret)
        .collect();
    assert!(
        hits.is_empty(),
        "the secret is on disk after a kill: {hits:?}"
    );
    assert!(b.store_contains(value.as_bytes()).is_empty());
}

#[test]
fn a_failed_step_with_a_secret_or_an_agent_leaves_neither_on_disk() {
    // A secret in an environment variable (`--secret id=…,env=VAR`, mounted with `env=`), a
    // secret file and an SSH agent's socket: a step with any of them that fails is never kept
    // for `strata debug` (its record would hold the value and the socket's path), and neither
    // reaches the store, the temporary directory or the build's output.
    let b = require!(B::new("secret-fail"));
    let value = "env-s3cr3t-8817";
    let file_value = "file-s3cr3t-5523";
    let secret = b.dir.join("tok.txt");
    fs_err::write(&secret, file_value).unwrap();
    let sock = b.dir.join("agent-sock-6691");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // A step that is kept, first: the later failures must not replace it.
    let kept = b.ctx(
        "kept",
        &[(
            "Dockerfile",
            "FROM busybox
RUN echo kept > /k && exit 3
",
        )],
    );
    b.fails(&kept, &[]);
    let cases = [
        ("env", "RUN --mount=type=secret,id=tok,env=TOK test -n \"$TOK\" && echo \"$TOK\" > /tmp/copy && exit 4"),
        ("file", "RUN --mount=type=secret,id=f,env=F cp /run/secrets/f /tmp/copy && exit 5"),
        ("ssh", "RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && exit 6"),
    ];
    for (name, run) in cases {
        let c = b.ctx(name, &[("Dockerfile", &format!("FROM busybox\n{run}\n"))]);
        for progress in ["plain", "json"] {
            let o = Command::new(support::strata_bin())
                .args(["--root", &b.root, "build", "--progress", progress])
                .args(["--secret", "id=tok,env=MY_TOKEN"])
                .args(["--secret", &format!("id=f,src={}", secret.display())])
                .args(["--ssh", &format!("default={}", sock.display())])
                .arg(&c)
                .env("MY_TOKEN", value)
                .env_remove("STRATA_ROOT")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let out = format!("{}{}", text(&o.stdout), text(&o.stderr));
            assert!(!o.status.success(), "{name}: {out}");
            assert!(
                out.contains("not kept for `strata debug`"),
                "{name} ({progress}): {out}"
            );
            for needle in [value, file_value, "agent-sock-6691"] {
                assert!(
                    !out.contains(needle),
                    "{name} ({progress}): {needle} in {out}"
                );
            }
        }
    }
    // On disk: the store, and the whole temporary directory of the test run (the test
    // binaries' copies of strata aside), in one pass.
    let needles = [value, file_value, "agent-sock-6691"];
    let mut hits = Vec::new();
    let mut todo = vec![std::env::temp_dir()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() && !e.file_name().to_string_lossy().starts_with("strata-bin-") {
                todo.push(p);
            } else if t.is_file() && p != secret {
                if let Ok(data) = fs_err::read(&p) {
                    for n in needles {
                        if data.windows(n.len()).any(|w| w == n.as_bytes()) {
                            hits.push((n, p.clone()));
                        }
                    }
                }
            }
        }
    }
    assert!(hits.is_empty(), "on disk: {hits:?}");
    // The failure kept before is still the one `strata debug` opens.
    let o = b.strata(&["debug", "--", "cat", "/k"]);
    assert_eq!(text(&o.stdout), "kept\n", "{}", text(&o.stderr));
}

#[test]
fn ssh_mount_exposes_the_agent_socket() {
    let b = require!(B::new("ssh"));
    let sock = b.dir.join("agent.sock");
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let f = [df("FROM busybox\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo $SSH_AUTH_SOCK > /sock\n")];
    let c = b.ctx("c", &files(&f));
    let arg = format!("default={}", sock.display());
    b.ok(&c, &["-t", "ssh", "--ssh", &arg]);
    assert!(b
        .sh("ssh", "cat /sock")
        .starts_with("/run/buildkit/ssh_agent."));
}

// ---- COPY / ADD ---------------------------------------------------------------------------

#[test]
fn copy_path_rules() {
    let b = require!(B::new("copy"));
    let f = [
        df("FROM busybox\nWORKDIR /w\nCOPY a.go b.go /multi/\nCOPY *.go /glob/\nCOPY dir /contents\nCOPY dir/ /slash/\nCOPY a.go rel/\nCOPY a.go ./renamed\nCOPY f* nomatch* /mixed/\nCOPY a.go /ubin/\nCOPY sub/*/deep /wild/\nCOPY a.go \"\"\n"),
        ("a.go", "a".into()),
        ("b.go", "b".into()),
        ("dir/in", "in".into()),
        ("dir/nested/x", "x".into()),
        ("fa", "fa".into()),
        ("sub/one/deep", "deep".into()),
    ];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "cp"]);
    let ls = b.sh("cp", "cd / && ls multi glob contents slash w/rel mixed wild && cat w/renamed usr/bin/a.go w/a.go");
    assert_eq!(
        ls,
        "contents:\nin\nnested\n\nglob:\na.go\nb.go\n\nmixed:\nfa\n\nmulti:\na.go\nb.go\n\nslash:\nin\nnested\n\nw/rel:\na.go\n\nwild:\ndeep\naaa"
    );
    // Owned by root, whatever the context's owner.
    assert_eq!(
        b.sh("cp", "stat -c '%u:%g' /multi/a.go /contents/nested"),
        "0:0\n0:0\n"
    );
    // A missing source is named.
    let c2 = b.ctx("c2", &[("Dockerfile", "FROM busybox\nCOPY notexist /x\n")]);
    let err = b.fails(&c2, &[]);
    assert!(
        err.contains("\"/notexist\": not found") && err.contains("Dockerfile:2"),
        "{err}"
    );
    let c3 = b.ctx(
        "c3",
        &[(
            "Dockerfile",
            "FROM busybox\nCOPY https://example.com/x /x\n",
        )],
    );
    assert!(b.fails(&c3, &[]).contains("source can't be a URL for COPY"));
}

#[test]
fn copy_chown_chmod_and_created_dirs() {
    let b = require!(B::new("chown"));
    let f = [
        df("FROM busybox\nCOPY --chown=app:staff f /owned/deep/f\nCOPY --chown=daemon f /d1\nCOPY --chown=1042:1043 f /num\nCOPY --chmod=0640 f /m1\nCOPY --chmod=u=rwx,go= f /m2\nCOPY --chown=app d /dir/\n"),
        ("f", "f".into()),
        ("d/x", "x".into()),
    ];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "o"]);
    assert_eq!(
        b.sh("o", "stat -c '%n %u:%g %a' /owned /owned/deep /owned/deep/f /d1 /num /m1 /m2 /dir /dir/x"),
        "/owned 1000:50 755\n/owned/deep 1000:50 755\n/owned/deep/f 1000:50 644\n/d1 1:1 644\n/num 1042:1043 644\n/m1 0:0 640\n/m2 0:0 700\n/dir 1000:1000 755\n/dir/x 1000:1000 644\n"
    );
    let c2 = b.ctx(
        "c2",
        &[
            ("Dockerfile", "FROM busybox\nCOPY --chown=nosuch f /f\n"),
            ("f", "f"),
        ],
    );
    assert!(b.fails(&c2, &[]).contains("unable to find user nosuch"));
}

#[test]
fn copy_from_stage_link_exclude_parents_heredoc() {
    let b = require!(B::new("copyfrom"));
    let f = [
        df("FROM busybox AS s\nRUN mkdir -p /out/sub && echo 1 > /out/sub/one && chown 1000 /out/sub/one && ln -s /out/sub /out/link\nFROM busybox\nARG WHO=world\nCOPY --from=s /out/link/one /viaLink\nCOPY --from=s /out /fromstage\nCOPY --link a.txt /linked/\nCOPY --exclude=*.png --exclude=sub/*.md assets /assets/\nCOPY --parents x/y/z.txt x/q.txt /par/\nCOPY --parents ./x/./y/z.txt /piv/\nCOPY <<EOF /hello\nhello ${WHO}\nEOF\nCOPY <<'EOF' /literal\nhello ${WHO}\nEOF\n"),
        ("a.txt", "a".into()),
        ("assets/keep.txt", "k".into()),
        ("assets/drop.png", "p".into()),
        ("assets/sub/drop.md", "m".into()),
        ("assets/sub/keep.md.txt", "k".into()),
        ("x/y/z.txt", "z".into()),
        ("x/q.txt", "q".into()),
    ];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "cf"]);
    assert_eq!(
        b.sh(
            "cf",
            "cat /viaLink; stat -c %u /fromstage/sub/one; readlink /fromstage/link"
        ),
        "1\n1000\n/out/sub\n"
    );
    assert_eq!(b.sh("cf", "cat /linked/a.txt"), "a");
    assert_eq!(
        b.sh("cf", "cd /assets && find . -type f | sort"),
        "./keep.txt\n./sub/keep.md.txt\n"
    );
    assert_eq!(
        b.sh("cf", "cd /par && find . -type f | sort"),
        "./x/q.txt\n./x/y/z.txt\n"
    );
    assert_eq!(b.sh("cf", "cd /piv && find . -type f"), "./y/z.txt\n");
    assert_eq!(
        b.sh("cf", "cat /hello /literal"),
        "hello world\nhello ${WHO}\n"
    );
}

#[test]
fn copy_link_layer_is_reused_when_the_base_changes() {
    let b = require!(B::new("link"));
    let other = b.ctx(
        "o",
        &[("Dockerfile", "FROM busybox\nRUN echo other > /other\n")],
    );
    b.ok(&other, &["-t", "other"]);
    let c = b.ctx(
        "c",
        &[
            (
                "Dockerfile",
                "ARG BASE=busybox\nFROM $BASE\nCOPY --link a.txt /linked/\nCOPY a.txt /plain/\n",
            ),
            ("a.txt", "a"),
        ],
    );
    b.ok(&c, &["-t", "l1"]);
    let out = b.ok(&c, &["-t", "l2", "--build-arg", "BASE=other"]);
    assert!(
        out.contains("COPY --link a.txt /linked/\n#1 CACHED"),
        "{out}"
    );
    assert!(out.contains("COPY a.txt /plain/\n#2 cache miss"), "{out}");
    assert_eq!(
        b.sh("l2", "cat /other /linked/a.txt /plain/a.txt"),
        "other\naa"
    );
}

#[test]
fn context_symlinks_never_reach_outside() {
    let b = require!(B::new("symlink"));
    let c = b.ctx(
        "c",
        &[("Dockerfile", "FROM busybox\nCOPY ln/hostname /got\n")],
    );
    std::os::unix::fs::symlink("/etc", c.join("ln")).unwrap();
    let err = b.fails(&c, &[]);
    assert!(
        err.contains("not found"),
        "a link to /etc resolves inside the context: {err}"
    );
    // A link inside a copied directory is copied as a link.
    let c2 = b.ctx(
        "c2",
        &[("Dockerfile", "FROM busybox\nCOPY d /d\n"), ("d/f", "f")],
    );
    std::os::unix::fs::symlink("/etc/passwd", c2.join("d/l")).unwrap();
    b.ok(&c2, &["-t", "sl"]);
    assert_eq!(b.sh("sl", "readlink /d/l"), "/etc/passwd\n");
}

#[test]
fn a_file_swapped_for_a_symlink_during_200_builds_never_leaks_outside_bytes() {
    let b = require!(B::new("swaprace"));
    let outside = b.dir.join("outside-secret");
    let marker = "OUTSIDE-BYTES-9d1c";
    fs_err::write(&outside, marker.repeat(64)).unwrap();
    let c = b.ctx(
        "c",
        &[
            (
                "Dockerfile",
                "FROM busybox\nCOPY d/f /single\nCOPY d /tree/\nRUN --mount=type=bind,source=d/f,target=/m cat /m > /bound\nRUN --mount=type=bind,source=d,target=/m,rw cat /m/f > /bound-rw\n",
            ),
            ("d/f", "inside\n"),
            ("d/g", "other\n"),
        ],
    );
    // A thread swaps d/f between a file and a symlink to a file outside the context, every
    // fraction of a millisecond, while strata hashes and copies it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (st, f, out) = (stop.clone(), c.join("d/f"), outside.clone());
    let swapper = std::thread::spawn(move || {
        let tmp_link = f.with_file_name(".f-link");
        let tmp_file = f.with_file_name(".f-file");
        let mut n = 0u64;
        while !st.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = std::fs::remove_file(&tmp_link);
            let _ = std::os::unix::fs::symlink(&out, &tmp_link);
            let _ = std::fs::rename(&tmp_link, &f);
            // Most of the time a symlink for an instant only, so that some builds get through.
            std::thread::sleep(std::time::Duration::from_micros(50 * (n % 5)));
            let _ = fs_err::write(&tmp_file, "inside\n");
            let _ = std::fs::rename(&tmp_file, &f);
            std::thread::sleep(std::time::Duration::from_micros(500 * (n % 7)));
            // A quiet moment now and then, so that some builds get through all their steps
            // (a file changed while a step reads it fails the step).
            if n % 16 == 15 {
                std::thread::sleep(std::time::Duration::from_millis(40));
            }
            n += 1;
        }
        n
    });
    let (mut built, mut refused) = (0, 0);
    for i in 0..200 {
        let o = b.build(&c, &["--no-cache", "-t", &format!("race:{}", i % 4)]);
        if o.status.success() {
            built += 1;
        } else {
            refused += 1;
            let e = text(&o.stderr);
            // A refusal names the file that was being swapped; nothing else may fail.
            assert!(e.contains("d/f"), "{e}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 200, "the swapper ran {swaps} times");
    assert!(built > 0, "no build succeeded ({refused} refused)");
    // No byte of the outside file in any blob, snapshot or cache record of the store.
    assert!(b.store_contains(marker.as_bytes()).is_empty());
    eprintln!("{built} builds, {refused} refused, {swaps} swaps");
}

#[test]
fn bind_mount_sources_never_leave_their_stage_or_context() {
    let b = require!(B::new("bindescape"));
    let marker = "HOST-ONLY-BYTES-51f0";
    let outside = b.dir.join("host-secret");
    fs_err::write(&outside, marker).unwrap();
    let outside_dir = b.dir.join("host-dir");
    fs_err::create_dir_all(&outside_dir).unwrap();
    fs_err::write(outside_dir.join("f"), marker).unwrap();
    // A stage's symlinks to host paths: the source is resolved inside the stage, as BuildKit
    // does, so they name the stage's own (missing) files. This used to bind the host's file.
    for (link, to, source) in [
        ("/x", outside.display().to_string(), "x"),
        ("/d", outside_dir.display().to_string(), "d/f"),
        (
            "/up",
            "../../../..".to_string() + &outside.display().to_string(),
            "up",
        ),
    ] {
        for rw in ["", ",rw"] {
            let df = format!(
                "FROM busybox AS s\nRUN ln -s {to} {link}\nFROM busybox\nRUN --mount=type=bind,from=s,source={source},target=/m{rw} cat /m > /got\n"
            );
            let c = b.ctx("c", &[("Dockerfile", df.as_str())]);
            let o = b.build(&c, &["-t", "esc"]);
            let err = text(&o.stderr);
            assert!(!o.status.success(), "{source}{rw}: {err}");
            assert!(
                err.contains(&format!("mount source {source}")) && err.contains("No such file"),
                "{source}{rw}: {err}"
            );
        }
    }
    // COPY --from follows a stage's symlink inside the stage too.
    let df = format!(
        "FROM busybox AS s\nRUN ln -s {} /x\nFROM busybox\nCOPY --from=s /x /got\n",
        outside.display()
    );
    let c = b.ctx("c", &[("Dockerfile", df.as_str())]);
    let o = b.build(&c, &["-t", "esc"]);
    assert!(!o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("not found"), "{}", text(&o.stderr));
    // The context's own symlinks likewise resolve inside it.
    let c = b.ctx(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN --mount=type=bind,source=link,target=/m cat /m > /got\n",
        )],
    );
    std::os::unix::fs::symlink(&outside, c.join("link")).unwrap();
    let o = b.build(&c, &["-t", "esc"]);
    assert!(!o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("link"), "{}", text(&o.stderr));
    assert!(b.store_contains(marker.as_bytes()).is_empty());
}

/// Start a build, run `during` when its first step misses the cache (its key is computed, the
/// step about to read), and return the build's exit and whole stderr.
fn build_changing_during_step(
    b: &B,
    ctx: &Path,
    during: impl FnOnce(),
) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(support::strata_bin())
        .arg("--root")
        .arg(&b.root)
        .args(["build", "--progress", "plain", "-t", "changing"])
        .arg(ctx)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let (mut line, mut seen) = (String::new(), String::new());
    let mut during = Some(during);
    while std::io::BufRead::read_line(&mut err, &mut line).unwrap_or(0) > 0 {
        seen.push_str(&line);
        if line.contains("cache miss") {
            if let Some(f) = during.take() {
                f();
            }
        }
        line.clear();
    }
    assert!(during.is_none(), "no step missed the cache: {seen}");
    (child.wait().unwrap(), seen)
}

#[test]
fn a_context_file_changed_while_a_step_reads_it_is_refused() {
    let b = require!(B::new("changing"));
    // COPY: a 192 MiB file takes the copy long enough that the append lands while it reads.
    let c = b.ctx("c", &[("Dockerfile", "FROM busybox\nCOPY big /big\n")]);
    let big = c.join("big");
    fs_err::File::create(&big)
        .unwrap()
        .set_len(192 << 20)
        .unwrap();
    let (status, err) = build_changing_during_step(&b, &c, || {
        let mut f = fs_err::OpenOptions::new().append(true).open(&big).unwrap();
        std::io::Write::write_all(&mut f, b"appended").unwrap();
    });
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("the build context changed while this step read it (1 file changed: big)")
            && err.contains("hint: run the build again"),
        "{err}"
    );
    assert!(b.strata(&["inspect", "changing"]).status.code() != Some(0));
    // Nothing was cached: once the file is stable the step runs (and copies all of it).
    let log = b.ok(&c, &["-t", "changing"]);
    assert!(log.contains("cache miss"), "{log}");
    assert_eq!(
        b.sh("changing", "wc -c < /big; tail -c 8 /big"),
        format!("{}\nappended", (192 << 20) + 8)
    );

    // RUN with the context bound: the step reads the file, then it changes before the step ends.
    let c = b.ctx(
        "r",
        &[
            (
                "Dockerfile",
                "FROM busybox\nRUN --mount=target=/ctx cat /ctx/input > /seen && sleep 2\n",
            ),
            ("input", "v1\n"),
        ],
    );
    let input = c.join("input");
    let (status, err) = build_changing_during_step(&b, &c, || {
        fs_err::write(&input, "v2\n").unwrap();
    });
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("changed while this step read it (1 file changed: input)"),
        "{err}"
    );
    b.ok(&c, &["-t", "changing"]);
    assert_eq!(b.sh("changing", "cat /seen"), "v2\n");
}

#[test]
fn add_unpacks_local_archives_only_when_asked() {
    let b = require!(B::new("add"));
    let c = b.ctx("c", &[("Dockerfile", "FROM busybox\nADD t.tar.gz /x/\nADD --unpack=false t.tar.gz /kept/\nCOPY t.tar.gz /copied/\nADD --chown=100:200 t.tar.gz /owned/\n"), ("src/dir/f", "f")]);
    let o = Command::new("tar")
        .args(["-czf", "t.tar.gz", "-C", "src", "dir"])
        .current_dir(&c)
        .output()
        .unwrap();
    assert!(o.status.success());
    b.ok(&c, &["-t", "a"]);
    assert_eq!(
        b.sh("a", "cat /x/dir/f; ls /kept /copied"),
        "f/copied:\nt.tar.gz\n\n/kept:\nt.tar.gz\n"
    );
    assert_eq!(b.sh("a", "stat -c '%u:%g' /owned/dir/f"), "100:200\n");
}

use support::serve;

#[test]
fn add_from_urls_with_checksums() {
    let b = require!(B::new("addurl"));
    let www = b.dir.join("www");
    fs_err::create_dir_all(www.join("files")).unwrap();
    fs_err::write(www.join("files/data.txt"), "downloaded\n").unwrap();
    let o = Command::new("tar")
        .args(["-czf", "files/a.tar.gz", "-C", "files", "data.txt"])
        .current_dir(&www)
        .output()
        .unwrap();
    assert!(o.status.success());
    let port = serve(www);
    let base = format!("http://127.0.0.1:{port}/files");
    let sum = format!("sha256:{}", strata::oci::Digest::of(b"downloaded\n").hex());
    let df = format!("FROM busybox\nADD {base}/data.txt /d/\nADD --checksum={sum} {base}/data.txt /renamed.txt\nADD {base}/a.tar.gz /kept/\nADD --unpack=true {base}/a.tar.gz /unpacked/\nADD --chmod=644 {base}/data.txt /m\n");
    let c = b.ctx("c", &[("Dockerfile", &df)]);
    b.ok(&c, &["-t", "u"]);
    assert_eq!(
        b.sh("u", "cat /d/data.txt /renamed.txt /unpacked/data.txt; ls /kept; stat -c '%a %Y' /d/data.txt /m"),
        "downloaded\ndownloaded\ndownloaded\na.tar.gz\n600 1700000000\n644 1700000000\n"
    );
    // The download's digest is in the key: the same content is cached.
    assert_eq!(b.ok(&c, &["-t", "u"]).matches("CACHED").count(), 5);
    let bad = format!(
        "FROM busybox\nADD --checksum=sha256:{} {base}/data.txt /x\n",
        "0".repeat(64)
    );
    let c2 = b.ctx("c2", &[("Dockerfile", &bad)]);
    let err = b.fails(&c2, &[]);
    assert!(
        err.contains("digest mismatch") && err.contains("Dockerfile:2"),
        "{err}"
    );
    // sha512, which the front end accepts, is checked by the download too (it used to be
    // refused there as "only sha256").
    let sha512 = Command::new("sha512sum")
        .arg(b.dir.join("www/files/data.txt"))
        .output()
        .unwrap();
    let sha512 = text(&sha512.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let df = format!("FROM busybox\nADD --checksum=sha512:{sha512} {base}/data.txt /x\n");
    let c4 = b.ctx("c4", &[("Dockerfile", &df)]);
    b.ok(&c4, &["-t", "u512"]);
    assert_eq!(b.sh("u512", "cat /x"), "downloaded\n");
    let df = format!(
        "FROM busybox\nADD --checksum=sha512:{} {base}/data.txt /x\n",
        "0".repeat(128)
    );
    let c5 = b.ctx("c5", &[("Dockerfile", &df)]);
    let err = b.fails(&c5, &[]);
    assert!(err.contains(&format!("got sha512:{sha512}")), "{err}");
    let local = format!(
        "FROM busybox\nADD --checksum=sha256:{} f /f\n",
        "0".repeat(64)
    );
    let c3 = b.ctx("c3", &[("Dockerfile", &local), ("f", "f")]);
    let err = b.fails(&c3, &[]);
    assert!(
        err.contains("checksum requires HTTP(S) or Git sources"),
        "{err}"
    );
}

#[test]
fn add_git_repository_at_a_ref_and_subdir() {
    let b = require!(B::new("addgit"));
    let www = b.dir.join("www");
    let work = b.dir.join("work");
    fs_err::create_dir_all(work.join("sub")).unwrap();
    fs_err::write(work.join("top.txt"), "v1\n").unwrap();
    fs_err::write(work.join("sub/inner.txt"), "inner\n").unwrap();
    let git = |dir: &Path, args: &[&str]| {
        let o = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", text(&o.stderr));
    };
    git(&work, &["init", "-q"]);
    git(&work, &["add", "."]);
    git(&work, &["commit", "-qm", "one"]);
    git(&work, &["tag", "v1"]);
    fs_err::write(work.join("top.txt"), "v2\n").unwrap();
    git(&work, &["commit", "-qam", "two"]);
    fs_err::create_dir_all(&www).unwrap();
    git(
        &www,
        &["clone", "-q", "--bare", work.to_str().unwrap(), "repo.git"],
    );
    git(&www.join("repo.git"), &["update-server-info"]);
    let port = serve(www);
    let url = format!("http://127.0.0.1:{port}/repo.git");
    let df = format!("FROM busybox\nADD {url} /head/\nADD {url}#v1 /v1/\nADD {url}#v1:sub /sub/\nADD --keep-git-dir=true {url}#v1 /withgit/\n");
    let c = b.ctx("c", &[("Dockerfile", &df)]);
    b.ok(&c, &["-t", "g"]);
    assert_eq!(
        b.sh("g", "cat /head/top.txt /v1/top.txt /sub/inner.txt; ls -A /v1; test -d /withgit/.git && echo has-git"),
        "v2\nv1\ninner\nsub\ntop.txt\nhas-git\n"
    );
    let bad = format!("FROM busybox\nADD {url}#nosuchref /x/\n");
    let c2 = b.ctx("c2", &[("Dockerfile", &bad)]);
    assert!(b
        .fails(&c2, &[])
        .contains("repository does not contain ref nosuchref"));
}

// ---- config instructions ------------------------------------------------------------------

#[test]
fn config_instructions_all_reach_the_image() {
    let b = require!(B::new("config"));
    let f = [df(r#"FROM busybox
ENV A=1 B=2
ENV A=3
LABEL org.example.x="y z" other=1
MAINTAINER someone
EXPOSE 80 53/udp 1000-1001
VOLUME /data /logs
USER app:staff
WORKDIR /srv
WORKDIR sub
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost
SHELL ["/bin/sh", "-ec"]
ENTRYPOINT run it
ONBUILD RUN echo child
"#)];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "cfg", "--label", "from.cli=yes"]);
    let cfg = b.config("cfg");
    let cc = &cfg["config"];
    assert_eq!(
        cc["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "A=3",
            "B=2"
        ])
    );
    assert_eq!(cc["Labels"]["org.example.x"], "y z");
    assert_eq!(cc["Labels"]["from.cli"], "yes");
    assert_eq!(cfg["author"], "someone");
    assert_eq!(
        cc["ExposedPorts"],
        serde_json::json!({"1000/tcp": {}, "1001/tcp": {}, "53/udp": {}, "80/tcp": {}})
    );
    assert_eq!(cc["Volumes"], serde_json::json!({"/data": {}, "/logs": {}}));
    assert_eq!(cc["User"], "app:staff");
    assert_eq!(cc["WorkingDir"], "/srv/sub");
    assert_eq!(cc["StopSignal"], "SIGTERM");
    assert_eq!(
        cc["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 5_000_000_000u64, "Retries": 2})
    );
    assert_eq!(cc["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(
        cc["Entrypoint"],
        serde_json::json!(["/bin/sh", "-ec", "run it"])
    );
    assert_eq!(cc["OnBuild"], serde_json::json!(["RUN echo child"]));
    // One history entry per instruction after the base; metadata ones are empty layers.
    let h = cfg["history"].as_array().unwrap();
    let ours: Vec<_> = h.iter().skip(1).collect();
    assert_eq!(ours.len(), 14, "{h:#?}");
    let created_dir = ours.iter().filter(|e| e["empty_layer"] != true).count();
    assert_eq!(
        created_dir, 2,
        "two WORKDIRs that create directories: {h:#?}"
    );
    assert_eq!(
        cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
        3,
        "the base layer plus the two WORKDIR layers"
    );
    // WORKDIR created the directory, owned by the USER (seen from an image without the
    // ENTRYPOINT).
    let c2 = b.ctx("c2", &[("Dockerfile", "FROM cfg\nENTRYPOINT []\n")]);
    b.ok(&c2, &["-t", "cfg2"]);
    assert_eq!(b.sh("cfg2", "stat -c '%u:%g' /srv/sub"), "1000:50\n");
}

#[test]
fn entrypoint_resets_inherited_cmd_and_onbuild_fires_once() {
    let b = require!(B::new("onbuild"));
    let parent = b.ctx(
        "p",
        &[(
            "Dockerfile",
            "FROM busybox\nCMD [\"echo\", \"parent\"]\nONBUILD RUN echo fired >> /fired\n",
        )],
    );
    b.ok(&parent, &["-t", "parent"]);
    let child = b.ctx(
        "c",
        &[("Dockerfile", "FROM parent\nENTRYPOINT [\"/bin/echo\"]\n")],
    );
    b.ok(&child, &["-t", "child"]);
    let cc = b.config("child")["config"].clone();
    assert!(cc["Cmd"].is_null(), "inherited CMD reset: {cc}");
    assert!(cc["OnBuild"].is_null(), "triggers cleared: {cc}");
    let grandchild = b.ctx(
        "g",
        &[("Dockerfile", "FROM child\nENTRYPOINT []\nRUN true\n")],
    );
    b.ok(&grandchild, &["-t", "gc"]);
    assert_eq!(
        b.sh("gc", "cat /fired"),
        "fired\n",
        "fired in child, not again in the grandchild"
    );
}

#[test]
fn scratch_workdir_and_missing_base() {
    let b = require!(B::new("scratch"));
    let c = b.ctx(
        "c",
        &[
            ("Dockerfile", "FROM scratch\nWORKDIR /app\nCOPY f .\n"),
            ("f", "f"),
        ],
    );
    b.ok(
        &c,
        &[
            "-t",
            "s",
            "--output",
            &format!("type=local,dest={}", b.dir.join("out").display()),
        ],
    );
    assert!(b.dir.join("out/app/f").is_file());
    let c2 = b.ctx("c2", &[("Dockerfile", "FROM nosuchimage:1\nRUN true\n")]);
    let err = b.fails(&c2, &[]);
    assert!(
        err.contains("base image \"nosuchimage:1\" is not in the local store"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:1"), "{err}");
}

// ---- .dockerignore ------------------------------------------------------------------------

#[test]
fn dockerignore_and_dockerfile_specific_ignore() {
    let b = require!(B::new("ignore"));
    let c = b.ctx(
        "c",
        &[
            ("Dockerfile", "FROM busybox\nCOPY . /c/\n"),
            (
                ".dockerignore",
                "ba*\n!bay\n*.log\nDockerfile\n.dockerignore\n",
            ),
            ("bar", ""),
            ("baz", ""),
            ("bay", ""),
            ("keep", ""),
            ("x.log", ""),
        ],
    );
    b.ok(&c, &["-t", "i"]);
    assert_eq!(b.sh("i", "ls -A /c"), "bay\nkeep\n");
    // <Dockerfile>.dockerignore next to the Dockerfile wins.
    fs_err::write(c.join("Other"), "FROM busybox\nCOPY . /c/\n").unwrap();
    fs_err::write(c.join("Other.dockerignore"), "keep\nOther*\n").unwrap();
    b.ok(&c, &["-t", "i2", "-f", c.join("Other").to_str().unwrap()]);
    assert_eq!(
        b.sh("i2", "ls -A /c"),
        ".dockerignore\nDockerfile\nbar\nbay\nbaz\nx.log\n"
    );
    fs_err::write(c.join(".dockerignore"), "!\n").unwrap();
    let err = b.fails(&c, &[]);
    assert!(err.contains("illegal exclusion pattern"), "{err}");
    let c2 = b.ctx(
        "c2",
        &[
            ("Dockerfile", "FROM busybox\nCOPY secret.txt /\n"),
            (".dockerignore", "secret.txt\n"),
            ("secret.txt", "x"),
        ],
    );
    assert!(b.fails(&c2, &[]).contains("excluded by .dockerignore"));
}

// ---- cache --------------------------------------------------------------------------------

#[test]
fn cache_noop_one_change_no_cache_and_filters() {
    let b = require!(B::new("cache"));
    let c = b.ctx(
        "c",
        &[
            ("Dockerfile", "FROM busybox AS s0\nRUN head -c 16 /dev/urandom | od -x > /r0\nFROM busybox AS s1\nCOPY --from=s0 /r0 /r0\nCOPY app /app\nRUN head -c 16 /dev/urandom | od -x > /r1\nCOPY other /other\n"),
            ("app/main.py", "print(1)"),
            ("app/util.py", "x"),
            ("other", "o"),
        ],
    );
    let first = b.ok(&c, &["-t", "c"]);
    assert!(!first.contains("CACHED"), "{first}");
    // A first build: its files are new, not "changed".
    assert!(
        first.contains("cache miss: not in the cache") && !first.contains("changed:"),
        "{first}"
    );
    let id1 = b.id("c:latest");
    let r1 = b.sh("c", "cat /r0 /r1");
    let again = b.ok(&c, &["-t", "c"]);
    assert_eq!(again.matches("CACHED").count(), 5, "{again}");
    assert_eq!(
        b.id("c:latest"),
        id1,
        "a no-op rebuild gives the same image"
    );
    // touch changes nothing; a content change reruns that step and the ones after it.
    let f = c.join("app/main.py");
    fs_err::write(&f, "print(1)").unwrap();
    assert_eq!(b.ok(&c, &["-t", "c"]).matches("CACHED").count(), 5);
    fs_err::write(&f, "print(2)").unwrap();
    let out = b.ok(&c, &["-t", "c"]);
    assert!(
        out.contains("COPY app /app\n#3 cache miss: 1 file changed: app/main.py")
            || out.contains("cache miss: 1 file changed: app/main.py"),
        "{out}"
    );
    assert_eq!(out.matches("CACHED").count(), 2, "{out}");
    assert!(out.contains("an earlier step changed"), "{out}");
    let r2 = b.sh("c", "cat /r0 /r1");
    assert_eq!(
        r1.lines().next(),
        r2.lines().next(),
        "stage s0 stayed cached"
    );
    assert_ne!(r1, r2);
    // A renamed file matched by a directory copy invalidates it, and is named as new.
    fs_err::rename(c.join("app/util.py"), c.join("app/util2.py")).unwrap();
    let out = b.ok(&c, &["-t", "c"]);
    assert!(
        out.contains("cache miss: 1 file changed: app/util2.py (new)"),
        "{out}"
    );
    // --no-cache-filter s0 reruns s0 only (and what depends on it).
    let out = b.ok(&c, &["-t", "c", "--no-cache-filter", "s0"]);
    assert!(out.contains("#1 cache miss: --no-cache"), "{out}");
    assert!(
        out.contains("cache miss: the source stage s0 changed"),
        "{out}"
    );
    let out = b.ok(&c, &["-t", "c", "--no-cache"]);
    assert_eq!(out.matches("CACHED").count(), 0, "{out}");
}

#[test]
fn source_date_epoch_gives_the_same_image_in_two_stores() {
    let b1 = require!(B::new("sde1"));
    let b2 = require!(B::new("sde2"));
    let df = "FROM busybox\nRUN echo $SOURCE_DATE_EPOCH > /epoch && mkdir /d && touch /d/f\nCOPY f /f\nWORKDIR /new\nENV X=1\n";
    // The same base image in both stores (an import stamps its own time).
    let archive = b1.dir.join("base.tar");
    assert!(b1
        .strata(&["save", "-o", archive.to_str().unwrap(), "busybox:latest"])
        .status
        .success());
    assert!(b2.strata(&["rmi", "busybox:latest"]).status.success());
    let o = b2.strata(&["load", "-i", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut ids = Vec::new();
    for b in [&b1, &b2] {
        let c = b.ctx("c", &[("Dockerfile", df), ("f", "f")]);
        b.ok(
            &c,
            &["-t", "r", "--build-arg", "SOURCE_DATE_EPOCH=1700000000"],
        );
        ids.push(b.id("r:latest"));
        assert_eq!(
            b.sh("r", "cat /epoch; stat -c %Y /d/f /f"),
            "1700000000\n1700000000\n1700000000\n"
        );
        assert_eq!(b.config("r")["created"], "2023-11-14T22:13:20Z");
    }
    assert_eq!(ids[0], ids[1]);
}

// ---- graph and scheduling -----------------------------------------------------------------

#[test]
fn target_builds_only_what_it_needs_and_failures_stop_the_rest() {
    let b = require!(B::new("graph"));
    let c = b.ctx(
        "c",
        &[("Dockerfile", "FROM busybox AS broken\nRUN exit 1\nFROM busybox AS a\nRUN echo a > /a\nFROM busybox AS b\nRUN echo b > /b\nFROM busybox AS final\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nFROM busybox AS slow\nRUN sleep 30\nFROM busybox AS all\nCOPY --from=slow /etc/passwd /p\nCOPY --from=broken /etc/passwd /q\n")],
    );
    let out = b.ok(&c, &["-t", "f", "--target", "final", "--jobs", "2"]);
    assert!(!out.contains("exit 1"), "{out}");
    assert_eq!(b.sh("f", "cat /a /b"), "a\nb\n");
    let t = std::time::Instant::now();
    let err = b.fails(&c, &["--jobs", "2"]);
    assert!(err.contains("exit code: 1"), "{err}");
    // The sleeping stage was stopped: the build did not wait the 30 s.
    assert!(
        t.elapsed() < std::time::Duration::from_secs(25),
        "{:?}",
        t.elapsed()
    );
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !text(&ps.stdout).lines().any(|l| l == "sleep 30"),
        "a step process was left running"
    );
    let tmp: Vec<_> = fs_err::read_dir(Path::new(&b.root).join("v1/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(tmp.is_empty(), "leftovers: {tmp:?}");
}

#[test]
fn a_stage_runs_its_steps_until_one_needs_another_stage() {
    let b = require!(B::new("alongside"));
    // `slow` finishes only once the final stage's first step has run: the final stage must
    // not wait for `slow` before its COPY --from (it used to wait before its first step, and
    // `slow` gave up after 30 s). They meet in a shared cache mount.
    let df = "FROM busybox AS slow\nRUN --mount=type=cache,id=meet,target=/m i=0; until [ -f /m/final-started ]; do i=$((i+1)); [ $i -gt 300 ] && exit 3; sleep 0.1; done; echo met > /out\nFROM busybox\nRUN --mount=type=cache,id=meet,target=/m touch /m/final-started\nCOPY --from=slow /out /out\n";
    let c = b.ctx("c", &[("Dockerfile", df)]);
    b.ok(&c, &["-t", "along", "--jobs", "2"]);
    assert_eq!(b.sh("along", "cat /out"), "met\n");
    // One job: the final stage gives its slot back while it waits, so the build ends whichever
    // stage took the slot first.
    let c = b.ctx(
        "one",
        &[(
            "Dockerfile",
            "FROM busybox AS a\nRUN echo a > /a\nFROM busybox\nRUN echo b > /b\nCOPY --from=a /a /a\nRUN cat /a /b > /ab\n",
        )],
    );
    for _ in 0..3 {
        b.ok(&c, &["-t", "one", "--jobs", "1", "--no-cache"]);
        assert_eq!(b.sh("one", "cat /ab"), "a\nb\n");
    }
}

/// A RUN step's layer is written while the steps after it run on its upper dir: they see its
/// files and deletions but not its mount points, a WORKDIR's layer made meanwhile goes on top
/// of it, a step that changed nothing keeps an empty history entry, and the image, its
/// history and the cache come out as if each layer had been written before the next step.
#[test]
fn the_steps_after_a_run_go_on_while_its_layer_is_written() {
    let b = require!(B::new("pipelined"));
    let f = [
        df("FROM busybox\n\
            RUN mkdir -p /a /gone && echo one > /a/f && touch /gone/x && head -c 3000000 /dev/urandom > /a/big\n\
            ENV X=1\n\
            WORKDIR /w\n\
            RUN --mount=type=cache,target=/cache cat /a/f > /w/g && rm -rf /gone\n\
            RUN true\n\
            RUN test ! -e /gone && test ! -e /cache && cat /w/g > /h\n\
            COPY f /f\n\
            RUN cat /h /f > /hf\n"),
        ("f", "two\n".to_string()),
    ];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "p"]);
    assert_eq!(
        b.sh(
            "p",
            "cat /hf; ls -a / | grep -c -e '^gone$' -e '^cache$'; pwd"
        ),
        "one\ntwo\n0\n/w\n"
    );
    let o = b.strata(&["inspect", "p"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let history: Vec<(String, bool)> = v["Config"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap().to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let steps: Vec<(&str, bool)> = history[1..]
        .iter()
        .map(|(by, empty)| (by.split_whitespace().next().unwrap(), *empty))
        .collect();
    assert_eq!(
        steps,
        [
            ("RUN", false),
            ("ENV", true),
            ("WORKDIR", false),
            ("RUN", false),
            ("RUN", true),
            ("RUN", false),
            ("COPY", false),
            ("RUN", false)
        ],
        "{history:#?}"
    );
    let layers = history.iter().filter(|(_, empty)| !empty).count();
    assert_eq!(
        v["Config"]["rootfs"]["diff_ids"].as_array().unwrap().len(),
        layers
    );
    let sizes: Vec<u64> = v["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), layers);
    // In the history's order: the first RUN's 3 MB, then WORKDIR's directory.
    assert!(sizes[1] > 3_000_000 && sizes[2] < 100_000, "{sizes:?}");
    let fsck = b.strata(&["fsck"]);
    assert!(fsck.status.success(), "{}", text(&fsck.stderr));
    // Every step was recorded: the rebuild runs nothing and makes the same image.
    let id = b.id("p:latest");
    let again = b.ok(&c, &["-t", "p"]);
    assert!(!again.contains("cache miss"), "{again}");
    assert_eq!(b.id("p:latest"), id);
}

/// A RUN step that fails after one whose layer is still being written: that layer is recorded
/// (the rebuild takes it from the cache) and `strata debug` opens on it, not on an upper dir
/// that has since moved.
#[test]
fn a_failure_after_a_run_keeps_the_run_before_it() {
    let b = require!(B::new("pipefail"));
    let c = b.ctx(
        "c",
        &files(&[df(
            "FROM busybox\nRUN echo one > /one\nRUN cat /one > /two && exit 5\n",
        )]),
    );
    b.fails(&c, &[]);
    let o = b.strata(&["debug", "--", "cat", "/one", "/two"]);
    assert_eq!(text(&o.stdout), "one\none\n", "{}", text(&o.stderr));
    let c = b.ctx(
        "c",
        &files(&[df(
            "FROM busybox\nRUN echo one > /one\nRUN cat /one > /two\n",
        )]),
    );
    let p = b.ok(&c, &["-t", "f"]);
    assert!(p.contains("(2 steps, 1 cached)"), "{p}");
    assert_eq!(b.sh("f", "cat /two"), "one\n");
}

/// Two stages with the same RUN step (the same key), one of which reads the other after it:
/// the step's lock is not held while that stage waits, so the other stage gets the step
/// (from the cache) instead of waiting for the lock forever. Each stage may win the race to
/// the step; a build that hangs is killed after 60 s.
#[test]
fn two_stages_with_the_same_step_do_not_wait_for_each_other() {
    let b = require!(B::new("samestep"));
    let c = b.ctx(
        "c",
        &files(&[df("FROM busybox AS b\nARG N\nRUN echo \"$N\" > /x\nRUN cat /x > /y\nFROM busybox AS a\nARG N\nRUN echo \"$N\" > /x\nCOPY --from=b /y /y\n")]),
    );
    for n in 0..4 {
        let o = Command::new("timeout")
            .args(["-s", "KILL", "60", support::strata_bin(), "--root", &b.root])
            .args([
                "build",
                "-q",
                "--build-arg",
                &format!("N={n}"),
                "-t",
                "same",
            ])
            .arg(&c)
            .env_remove("STRATA_ROOT")
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "build {n} ({:?}; killed after 60 s when it hangs): {}",
            o.status,
            text(&o.stderr)
        );
        assert_eq!(b.sh("same", "cat /y"), format!("{n}\n"));
    }
}

// ---- outputs ------------------------------------------------------------------------------

#[test]
fn outputs_iidfile_and_stdin() {
    let b = require!(B::new("out"));
    let c = b.ctx(
        "c",
        &[("Dockerfile", "FROM busybox\nCOPY f /f\n"), ("f", "hello")],
    );
    let iid = b.dir.join("iid");
    b.ok(&c, &["-t", "o", "--iidfile", iid.to_str().unwrap()]);
    assert_eq!(fs_err::read_to_string(&iid).unwrap(), b.id("o:latest"));
    for (kind, name) in [
        ("oci", "o.oci.tar"),
        ("docker", "o.docker.tar"),
        ("tar", "o.rootfs.tar"),
    ] {
        let dest = b.dir.join(name);
        b.ok(
            &c,
            &["--output", &format!("type={kind},dest={}", dest.display())],
        );
        let list = Command::new("tar").arg("-tf").arg(&dest).output().unwrap();
        let names = text(&list.stdout);
        match kind {
            "oci" => assert!(
                names.contains("index.json") && names.contains("oci-layout"),
                "{names}"
            ),
            "docker" => assert!(names.contains("manifest.json"), "{names}"),
            _ => assert!(
                names.lines().any(|l| l.trim_start_matches("./") == "f"),
                "{names}"
            ),
        }
    }
    // -f - reads the Dockerfile from stdin; a context of - reads a tar from stdin.
    let mut child = Command::new(support::strata_bin())
        .args(["--root", &b.root, "build", "-q", "-t", "stdin", "-f", "-"])
        .arg(&c)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM busybox\nCOPY f /g\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), b.id("stdin:latest"));
    let tar = Command::new("tar")
        .arg("-cf")
        .arg(b.dir.join("ctx.tar"))
        .arg("-C")
        .arg(&c)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success());
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --root {} build -q -t fromtar - < {}",
            support::strata_bin(),
            b.root,
            b.dir.join("ctx.tar").display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(b.sh("fromtar", "cat /f"), "hello");
}

#[test]
fn progress_json_is_one_event_per_line() {
    let b = require!(B::new("json"));
    let c = b.ctx("c", &[("Dockerfile", "FROM busybox\nRUN echo out-line\n")]);
    let o = b.strata(&["build", "--progress", "json", c.to_str().unwrap()]);
    assert!(o.status.success());
    let events: Vec<serde_json::Value> = text(&o.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "start",
            "miss",
            "log",
            "ran",
            "done",
            "finished",
            "size-report"
        ],
        "{events:?}"
    );
    assert_eq!(events[2]["line"], "out-line");
    // The command's own time, within the step's; every event but the size report says when.
    let ran = events[3]["seconds"].as_f64().unwrap();
    let done = events[4]["seconds"].as_f64().unwrap();
    assert!(ran > 0.0 && ran <= done, "{events:?}");
    let at: Vec<f64> = events[..6]
        .iter()
        .map(|e| e["at"].as_f64().unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
    assert_eq!(events[6]["report"]["layers"].as_array().unwrap().len(), 1);
}

#[test]
fn named_build_contexts_and_platform_checks() {
    let b = require!(B::new("named"));
    let extra = b.ctx("extra", &[("data/x.txt", "from-named-dir")]);
    let layout = b.dir.join("layout");
    assert!(b
        .strata(&[
            "save",
            "--format",
            "oci-dir",
            "-o",
            layout.to_str().unwrap(),
            "busybox:latest"
        ])
        .status
        .success());
    let c = b.ctx(
        "c",
        &[(
            "Dockerfile",
            "FROM base AS one\nCOPY --from=extra data/x.txt /x.txt\nFROM fromlayout\nCOPY --from=one /x.txt /y.txt\n",
        )],
    );
    let extra_arg = format!("extra={}", extra.display());
    let layout_arg = format!("fromlayout=oci-layout://{}", layout.display());
    b.ok(
        &c,
        &[
            "-t",
            "named",
            "--build-context",
            "base=docker-image://busybox:latest",
            "--build-context",
            &extra_arg,
            "--build-context",
            &layout_arg,
        ],
    );
    assert_eq!(b.sh("named", "cat /y.txt"), "from-named-dir");
    // A base image of another platform is refused, not emulated.
    let c2 = b.ctx(
        "c2",
        &[(
            "Dockerfile",
            "FROM --platform=linux/s390x busybox\nRUN true\n",
        )],
    );
    let err = b.fails(&c2, &[]);
    assert!(
        err.contains("not the linux/s390x that --platform asks for"),
        "{err}"
    );
}

#[test]
fn cache_mount_sharing_locked_and_private_in_parallel_stages() {
    let b = require!(B::new("sharing"));
    // Two stages use the same cache at the same time. locked: the second waits, so both
    // writes land in the one cache. private: the second gets its own throwaway cache.
    let df = "FROM busybox AS a\nRUN --mount=type=cache,id=c,target=/c,sharing=MODE echo a >> /c/log && sleep 1 && cp /c/log /seen\nFROM busybox AS b\nRUN --mount=type=cache,id=c,target=/c,sharing=MODE echo b >> /c/log && sleep 1 && cp /c/log /seen\nFROM busybox\nCOPY --from=a /seen /a\nCOPY --from=b /seen /b\nRUN --mount=type=cache,id=c,target=/c cat /c/log | sort > /final\n";
    for mode in ["locked", "private"] {
        let c = b.ctx(mode, &[("Dockerfile", &df.replace("MODE", mode))]);
        b.ok(&c, &["-t", mode, "--jobs", "2"]);
        let seen = b.sh(mode, "cat /a /b | sort | tr -d '\\n'");
        let fin = b.sh(mode, "cat /final");
        if mode == "locked" {
            // The stage that ran second saw both lines.
            assert!(seen == "aab" || seen == "abb", "{seen}");
            assert_eq!(fin, "a\nb\n");
        } else {
            // Each saw only its own line; the one that held the cache wrote to it, the other
            // wrote to a throwaway copy.
            assert_eq!(seen, "ab");
            assert!(fin == "a\n" || fin == "b\n", "{fin}");
        }
        let _ = b.strata(&["prune", "--all"]);
    }
}

#[test]
fn special_files_in_the_context_are_copied_as_empty_files() {
    let b = require!(B::new("special"));
    let c = b.ctx(
        "c",
        &[("Dockerfile", "FROM busybox\nCOPY . /c/\n"), ("f", "f")],
    );
    let _l = std::os::unix::net::UnixListener::bind(c.join("sock")).unwrap();
    b.ok(&c, &["-t", "sp"]);
    assert_eq!(b.sh("sp", "test -f /c/sock && stat -c %s /c/sock"), "0\n");
}

#[test]
fn builds_as_a_user_without_subordinate_ids() {
    // Only root is mapped in the user namespace: everything but other owners still works.
    not_applicable!(
        rustix::process::geteuid().is_root(),
        "switching to strata-nosub needs root (this run is unprivileged; the root run covers it)"
    );
    if !Command::new("id")
        .arg("strata-nosub")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        support::skip("no user strata-nosub (scripts/test-deps.sh creates it)");
        return;
    }
    let b = require!(B::new("nosub"));
    let _ = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&b.dir)
        .output();
    let root = b.dir.join("nosub-store");
    let ctx = b.ctx("c", &[("Dockerfile", "FROM busybox AS a\nRUN echo a > /a\nFROM busybox\nCOPY f /f\nCOPY --from=a /a /a\nWORKDIR /w\nRUN --mount=type=cache,target=/c echo x >> /c/x && cat /a /f > /both\n"), ("f", "f\n")]);
    let _ = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&b.dir)
        .output();
    let as_nosub = |args: &[&str]| {
        Command::new("runuser")
            .args([
                "-u",
                "strata-nosub",
                "--",
                support::strata_bin(),
                "--root",
                root.to_str().unwrap(),
            ])
            .args(args)
            .current_dir("/tmp")
            .output()
            .unwrap()
    };
    let o = as_nosub(&[
        "import",
        b.dir.join("rootfs").to_str().unwrap(),
        "busybox:latest",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = as_nosub(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "n",
        ctx.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = as_nosub(&["run", "n", "cat", "/both"]);
    assert_eq!(text(&o.stdout), "a\nf\n", "{}", text(&o.stderr));
    let _ = as_nosub(&["prune", "--all"]);
}

#[test]
fn the_size_report_sees_a_venv_copied_twice() {
    let b = require!(B::new("venvtwice"));
    // The Python mistake: COPY --from of the venv, then `chown -R` in a RUN, which copies every
    // file up into a second layer; COPY --chown does it in one.
    let f = [df("FROM busybox AS build\nRUN mkdir -p /opt/venv/lib /opt/venv/bin && head -c 1500000 /dev/urandom > /opt/venv/lib/big.so && echo home > /opt/venv/pyvenv.cfg && echo py > /opt/venv/bin/python\n\
FROM busybox\n\
COPY --from=build /opt/venv /opt/venv\n\
RUN chown -R app:app /opt/venv\n")];
    let c = b.ctx("c", &files(&f));
    let out = b.ok(&c, &["-t", "twice"]);
    assert!(
        out.contains("hint: /opt/venv (1.5MB) of layer 2 (COPY --from=build /opt/venv /opt/venv) is in layer 3 (RUN chown -R app:app /opt/venv) again: the image carries it twice\n      set owners and modes as the files are copied (COPY --chown=… --chmod=…)"),
        "{out}"
    );
    fs_err::write(
        c.join("Dockerfile"),
        "FROM busybox AS build\nRUN mkdir -p /opt/venv/lib && head -c 1500000 /dev/urandom > /opt/venv/lib/big.so\nFROM busybox\nCOPY --from=build --chown=app:app /opt/venv /opt/venv\n",
    )
    .unwrap();
    let out = b.ok(&c, &["-t", "once"]);
    assert!(!out.contains("hint:"), "{out}");
    assert_eq!(b.sh("once", "stat -c %U /opt/venv/lib/big.so"), "app\n");
}

#[test]
fn the_size_report_finds_what_package_managers_leave() {
    let b = require!(B::new("leftovers"));
    // What each leaves, as on real images (apt's pair of caches: 38 MB each on Debian 12 after
    // `apt-get update && apt-get install libpq5 && rm -rf /var/lib/apt/lists/*`), 1.1 MB of
    // incompressible bytes apiece here.
    let leave = |p: &str| format!("mkdir -p $(dirname {p}) && head -c 1100000 /dev/urandom > {p}");
    let paths = [
        "/var/cache/apt/pkgcache.bin",
        "/var/cache/apt/srcpkgcache.bin",
        "/var/cache/apk/APKINDEX.5022a8a2.tar.gz",
        "/root/.cache/pypoetry/cache/repositories/PyPI/x",
        "/root/.cache/pipenv/http/x",
        "/home/app/.cache/pdm/packages/x",
        "/usr/local/share/.cache/yarn/v6/x",
    ];
    let run: Vec<String> = paths
        .iter()
        .map(|p| format!("RUN {}\n", leave(p)))
        .collect();
    let f = [df(&format!("FROM busybox\n{}", run.concat()))];
    let c = b.ctx("c", &files(&f));
    let out = b.ok(&c, &["-t", "left"]);
    for (what, fix) in [
        ("hint: apt's package caches (/var/cache/apt/pkgcache.bin and srcpkgcache.bin, which removing /var/lib/apt/lists leaves): 1.1MB in layer 2", "`apt-get clean` in the same RUN"),
        ("hint: apt's package caches (/var/cache/apt/pkgcache.bin and srcpkgcache.bin, which removing /var/lib/apt/lists leaves): 1.1MB in layer 3", "`apt-get clean`"),
        ("hint: apk's cache (/var/cache/apk: package indexes and packages): 1.1MB in layer 4", "`apk add --no-cache …`"),
        ("hint: Poetry's cache (~/.cache/pypoetry): 1.1MB in layer 5", ".cache/pypoetry poetry install"),
        ("hint: Pipenv's cache (~/.cache/pipenv): 1.1MB in layer 6", ".cache/pipenv pipenv install"),
        ("hint: PDM's cache (~/.cache/pdm): 1.1MB in layer 7", ".cache/pdm pdm install"),
        ("hint: Yarn's cache: 1.1MB in layer 8", "`yarn cache clean`"),
    ] {
        let at = out.find(what).unwrap_or_else(|| panic!("no {what:?} in\n{out}"));
        let next = &out[at..];
        let fix_line = next.lines().nth(1).unwrap_or("");
        assert!(fix_line.contains(fix), "{what}: {fix_line}");
    }
}

#[test]
fn the_size_report_shows_the_layers_and_what_makes_them_fat() {
    let b = require!(B::new("sizereport"));
    let f = [df("FROM busybox AS build\nRUN echo built > /out\n\
FROM busybox\n\
RUN mkdir -p /root/.cache/pip && head -c 2000000 /dev/urandom > /root/.cache/pip/wheel\n\
RUN mkdir -p /app/__pycache__ /scratch && head -c 1500000 /dev/urandom > /app/__pycache__/m.pyc && head -c 3000000 /dev/urandom > /scratch/big\n\
RUN rm -rf /app/__pycache__ /scratch\n\
RUN printf x > /usr/bin/gcc-12\n\
COPY --from=build /out /out\n")];
    let c = b.ctx("c", &files(&f));
    let out = b.ok(&c, &["-t", "fat:1"]);
    // The layers, top first, with the instruction that made each.
    // The content, and what a push sends: the base (stored gzip-compressed) as it is, the
    // build's uncompressed layers by an estimate of their gzip size (≈).
    assert!(
        out.contains("size: 8.5MB of content in 6 layers; a push sends ≈"),
        "{out}"
    );
    assert!(
        out.contains("  LAYER    CONTENT       PUSH  CREATED BY\n      6         6B ")
            && out.contains("  COPY --from=build /out /out\n"),
        "{out}"
    );
    // Random bytes do not compress: 2.0MB of pip cache pushes about 2.0MB, not the 0B or
    // the stored tar's size a column named COMPRESSED showed.
    assert!(
        out.contains("      2      2.0MB     ≈2.0MB  RUN mkdir -p /root/.cache/pip"),
        "{out}"
    );
    assert!(
        out.contains("      4         0B ")
            && out.contains("  RUN rm -rf /app/__pycache__ /scratch\n"),
        "{out}"
    );
    for hint in [
        "hint: 3.0MB added in layer 3 (RUN mkdir -p /app/__pycache__ /scratch && head -c 1500000 /…) is deleted in layer 4 (RUN rm -rf /app/__pycache__ /scratch) but still ships in layer 3\n",
        "hint: pip's cache: 2.0MB in layer 2 (RUN mkdir -p /root/.cache/pip && head -c 2000000 /dev/urand…)\n      use `RUN --mount=type=cache,target=<the user's home>/.cache/pip pip install …`, or `pip install --no-cache-dir`\n",
        "hint: 1.5MB of __pycache__ written in layer 3 (",
        "hint: the final stage has a compiler: /usr/bin/gcc-12 from layer 5 (RUN printf x > /usr/bin/gcc-12)\n",
    ] {
        assert!(out.contains(hint), "no {hint:?} in\n{out}");
    }
    // Biggest first.
    assert!(out.find("3.0MB added").unwrap() < out.find("pip's cache").unwrap());
    // As data in json, from the store's cached facts on a rebuild.
    let o = b.strata(&[
        "build",
        "--progress",
        "json",
        "-t",
        "fat:1",
        c.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let report: serde_json::Value = text(&o.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "size-report")
        .expect("a size-report event")["report"]
        .clone();
    let kinds: Vec<&str> = report["hints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "deleted-later",
            "cache-pip",
            "pycache-deleted-later",
            "compiler-in-final-stage"
        ]
    );
    assert_eq!(report["layers"][1]["content"], 2_000_000);
    assert_eq!(report["layers"][1]["push_estimated"], true);
    assert_eq!(report["layers"][0]["push_estimated"], false, "{report}");
    assert_eq!(report["layers"][0]["push"], report["layers"][0]["stored"]);
    assert_eq!(report["layers"].as_array().unwrap().len(), 6);
    assert!(
        fs_err::read_dir(Path::new(&b.root).join("v1/facts"))
            .unwrap()
            .count()
            >= 6
    );
    // `strata history` shows the same sizes.
    let h = text(&b.strata(&["history", "fat:1"]).stdout);
    assert!(
        h.starts_with("CREATED                   CONTENT       PUSH   CREATED BY\n"),
        "{h}"
    );
    let pip = h.lines().find(|l| l.contains(".cache/pip")).unwrap();
    assert!(pip.contains("     2.0MB "), "{h}");
    // A directory copied, then chown'ed: carried twice.
    let big = "x".repeat(1_200_000);
    let f = [
        df("FROM busybox\nCOPY big /opt/d/big\nRUN chown -R 1000:1000 /opt/d\n"),
        ("big", big),
    ];
    let c = b.ctx("dup", &files(&f));
    let out = b.ok(&c, &[]);
    assert!(
        out.contains("hint: /opt/d (1.2MB) of layer 2 (COPY big /opt/d/big) is in layer 3 (RUN chown -R 1000:1000 /opt/d) again: the image carries it twice\n      set owners and modes as the files are copied (COPY --chown=… --chmod=…)"),
        "{out}"
    );
    // A single-stage build gets no compiler hint; a quiet one no report at all.
    let f = [df("FROM busybox\nRUN printf x > /usr/bin/gcc-12\n")];
    let c = b.ctx("single", &files(&f));
    let out = b.ok(&c, &[]);
    assert!(out.contains("size: ") && !out.contains("compiler"), "{out}");
    let o = b.strata(&["build", "-q", c.to_str().unwrap()]);
    assert!(!text(&o.stderr).contains("size: "), "{}", text(&o.stderr));
}

#[test]
fn builds_fall_back_to_copied_snapshots_where_overlay_is_refused() {
    // STRATA_SNAPSHOTTER=copy takes the path a kernel that refuses overlayfs in a user namespace
    // takes after its first refusal: every RUN step on a copy of its lower layers, its layer the
    // difference from the recorded state.
    let b = require!(B::new("copysnap"));
    let f = [df(
        "FROM busybox\n\
RUN mkdir -p /d && echo one > /d/a && echo keep > /d/k && rm /bin/cat\n\
RUN echo two >> /d/a && rm /d/k && chmod 600 /d/a && ln -s a /d/link\n\
RUN test \"$(busybox cat /d/a | busybox tr '\\n' ' ')\" = \"one two \" && test ! -e /d/k\n",
    )];
    let c = b.ctx("c", &files(&f));
    let o = Command::new(support::strata_bin())
        .args([
            "--root",
            &b.root,
            "build",
            "--progress",
            "plain",
            "-t",
            "cp:1",
        ])
        .arg(&c)
        .env("STRATA_SNAPSHOTTER", "copy")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("RUN steps use copied snapshots"),
        "{}",
        text(&o.stderr)
    );
    // The image, run on overlay as usual, has what the steps left.
    assert_eq!(
        b.sh("cp:1", "busybox cat /d/a; ls /d; stat -c %a /d/a; readlink /d/link; test -e /bin/cat || echo no-cat"),
        "one\ntwo\na\nlink\n600\na\nno-cat\n"
    );
    // The same Dockerfile on overlay makes the same files.
    b.ok(&c, &["-t", "ov:1"]);
    assert_eq!(
        b.sh("ov:1", "busybox cat /d/a; ls /d; stat -c %a /d/a; readlink /d/link; test -e /bin/cat || echo no-cat"),
        "one\ntwo\na\nlink\n600\na\nno-cat\n"
    );
}

#[test]
fn run_steps_start_with_default_signal_dispositions() {
    // As under runc: nothing ignored, nothing blocked (strata's own runtime ignores SIGPIPE,
    // which made `yes | head` print "Broken pipe" instead of `yes` dying quietly).
    let b = require!(B::new("signals"));
    let f = [df("FROM busybox\nRUN grep -E '^Sig(Ign|Blk)' /proc/self/status > /sig && yes | head -n 1 > /dev/null\n")];
    let c = b.ctx("c", &files(&f));
    let out = b.ok(&c, &["-t", "sig:1"]);
    assert!(!out.contains("Broken pipe"), "{out}");
    assert_eq!(
        b.sh("sig:1", "cat /sig"),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
}

#[test]
fn images_of_many_layers_run_copy_and_mount() {
    let b = require!(B::new("manylayers"));
    // One mount(2) option string holds some 37 store paths: RUN, COPY --from and a bind mount
    // from a stage of 120 layers used to fail with ENOENT. Docker's limit is 127 layers.
    let copies = |n: usize| -> String {
        (1..=n)
            .map(|i| format!("COPY a /f{i}\n"))
            .collect::<String>()
    };
    let dockerfile = |n: usize| {
        format!(
            "FROM busybox AS many\n{}RUN ls / | grep -c '^f' > /count\nFROM busybox\nCOPY --from=many /f{n} /count /\nRUN --mount=type=bind,from=many,target=/m cat /m/count > /seen\n",
            copies(n)
        )
    };
    let f = [df(&dockerfile(120)), ("a", "x\n".to_string())];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "many"]);
    assert_eq!(b.sh("many", "cat /count /seen /f120"), "120\n120\nx\n");
    // The older kernels' way: names relative to the snapshots directory fit 50 layers whose
    // absolute paths do not; 120 do not fit, and the error says what to do.
    let legacy = |ctx: &Path| {
        Command::new(support::strata_bin())
            .arg("--root")
            .arg(&b.root)
            .args(["build", "--progress", "plain", "--no-cache"])
            .arg(ctx)
            .env("STRATA_OVERLAY_MOUNT", "legacy")
            .env_remove("STRATA_ROOT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let f50 = [df(&dockerfile(50)), ("a", "x\n".to_string())];
    let c50 = b.ctx("c50", &files(&f50));
    let o = legacy(&c50);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = legacy(&c);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("Linux 6.8"), "{}", text(&o.stderr));
}

#[test]
fn a_copy_layer_gets_its_paths_when_made_and_a_base_in_the_size_report() {
    let b = require!(B::new("pathsmade"));
    // COPY's layer has no snapshot (a RUN step's upper directory becomes one), so what comes
    // after it must answer from the layers' paths or unpack it. The paths of a COPY layer are
    // read when it is made, those of an imported base by the first size report: the second
    // build's WORKDIR then unpacks nothing.
    let c = b.ctx(
        "c",
        &files(&[
            df("FROM busybox\nCOPY dir /opt/dir\nWORKDIR /opt/dir/sub/new\nCOPY a .\n"),
            ("dir/sub/f", "1\n".to_string()),
            ("a", "2\n".to_string()),
        ]),
    );
    let layers = |tag: &str| -> Vec<(String, String)> {
        let o = b.strata(&["inspect", tag]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let digests = v["Manifest"]["layers"].as_array().unwrap().iter();
        let diff_ids = v["Config"]["rootfs"]["diff_ids"].as_array().unwrap().iter();
        digests
            .zip(diff_ids)
            .map(|(l, d)| {
                let hex = |x: &serde_json::Value| x.as_str().unwrap()[7..].to_string();
                (hex(&l["digest"]), hex(d))
            })
            .collect()
    };
    let store = Path::new(&b.root).join("v1");
    let paths_of = |hex: &str| store.join("facts").join(format!("{hex}.paths2"));
    let snapshot_of = |hex: &str| store.join("snapshots/sha256").join(hex);
    b.ok(&c, &["-t", "first"]);
    let first = layers("first");
    assert_eq!(first.len(), 4, "{first:?}");
    for (blob, _) in &first {
        assert!(paths_of(blob).exists(), "no paths for layer {blob}");
    }
    // The code changes: COPY dir runs again and WORKDIR comes after a layer with no snapshot.
    fs_err::write(c.join("dir/sub/f"), "changed\n").unwrap();
    b.ok(&c, &["-t", "second"]);
    let second = layers("second");
    assert_ne!(first[1], second[1], "the COPY layer changed");
    assert!(
        !snapshot_of(&second[1].1).exists(),
        "the new COPY layer was unpacked into a snapshot"
    );
    assert_eq!(
        b.sh("second", "pwd; cat /opt/dir/sub/f a"),
        "/opt/dir/sub/new\nchanged\n2\n"
    );
}

#[test]
fn copy_by_layer_paths_makes_the_layers_of_copy_by_mounts() {
    let b = require!(B::new("copypaths"));
    // A runner that took the steps below from a cache has their layers' paths, not their
    // files: COPY then works from the paths. Both ways must make the same layers, through
    // symlinks of the layers below (absolute, relative, into a later layer), deleted and
    // opaque directories, an existing file replaced, and --chown by name.
    let f = [
        df("FROM busybox
RUN mkdir -p /data/keep /data/old /srv/x && ln -s /data /link && ln -s data/keep /rel && echo f > /data/file && rm -rf /data/old && echo y > /srv/x/y
RUN rm -rf /srv && mkdir /srv && ln -s /nowhere /dangling
COPY a /link/
COPY a /rel/b
COPY --chown=app:staff dir/ /link/keep/
COPY dir /srv/x/
COPY a /data/file
COPY a /dangling
COPY --chown=1000 a /ubin/a
"),
        ("a", "hi\n".to_string()),
        ("dir/sub/f", "1\n".to_string()),
        ("dir/g", "2\n".to_string()),
    ];
    let c = b.ctx("c", &files(&f));
    let epoch = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000"];
    let build = |view: &str, tag: &str| {
        let mut a = vec!["build", "--progress", "plain", "--no-cache", "-t", tag];
        a.extend_from_slice(&epoch);
        a.push(c.to_str().unwrap());
        let o = Command::new(support::strata_bin())
            .arg("--root")
            .arg(&b.root)
            .args(&a)
            .env("STRATA_COPY_VIEW", view)
            .env_remove("STRATA_ROOT")
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{view}: {}", text(&o.stderr));
    };
    build("mounts", "by-mounts");
    build("paths", "by-paths");
    let ids = |tag: &str| b.config(tag)["rootfs"]["diff_ids"].clone();
    assert_eq!(ids("by-mounts"), ids("by-paths"));
    assert_eq!(
        b.sh(
            "by-paths",
            "cat /data/a /data/keep/b /data/file /nowhere /usr/bin/a; ls /srv/x"
        ),
        "hi\nhi\nhi\nhi\nhi\ng\nsub\n"
    );
    let ls = b.sh("by-paths", "ls -n /data/keep/sub/f");
    let cols: Vec<&str> = ls.split_whitespace().collect();
    assert_eq!(cols[2..4], ["1000", "50"], "{ls}");
}

#[test]
fn df_figures_add_up_and_prune_frees_what_df_calls_reclaimable() {
    let b = require!(B::new("df"));
    let usage = || -> serde_json::Value {
        let o = b.strata(&["df", "--format", "json"]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    // A builder stage's layer only the build cache has, an image's, and an imported image
    // removed again: its blobs are referenced by nothing.
    let f = [df("FROM busybox AS builder\nRUN head -c 300000 /dev/urandom > /only-cached\nFROM busybox\nCOPY --from=builder /only-cached /kept\n")];
    let c = b.ctx("c", &files(&f));
    b.ok(&c, &["-t", "app"]);
    let junk = b.dir.join("junk");
    fs_err::create_dir_all(&junk).unwrap();
    fs_err::write(junk.join("f"), "x".repeat(200_000)).unwrap();
    let o = b.strata(&["import", junk.to_str().unwrap(), "junk:1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = b.strata(&["rmi", "junk:1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let before = usage();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    let blobs = &before["blobs"];
    assert_eq!(
        n(blobs, "total"),
        n(blobs, "images") + n(blobs, "build_cache_only") + n(blobs, "unreferenced"),
        "{before}"
    );
    assert!(n(blobs, "build_cache_only") > 300_000, "{before}");
    assert!(n(blobs, "unreferenced") > 0, "{before}");
    let reclaimable = before["reclaimable"].as_u64().unwrap();
    assert!(reclaimable < n(blobs, "total"), "{before}");
    // A plain prune frees exactly that, keeps the cache's layers, and leaves nothing
    // reclaimable.
    let o = b.strata(&["prune"]);
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("({reclaimable} bytes)")),
        "df said {reclaimable}: {out}"
    );
    let after = usage();
    assert_eq!(after["reclaimable"], 0, "{after}");
    assert_eq!(after["blobs"]["unreferenced"], 0, "{after}");
    assert_eq!(
        after["blobs"]["build_cache_only"], before["blobs"]["build_cache_only"],
        "{after}"
    );
    assert_eq!(
        n(&after["blobs"], "total"),
        n(blobs, "total") - n(blobs, "unreferenced")
    );
    // The table says the same, each line named for what it counts.
    let table = text(&b.strata(&["df"]).stdout);
    for l in [
        "blobs ",
        "  of images ",
        "  of the cache only ",
        "  unreferenced ",
        "reclaimable ",
    ] {
        assert!(table.lines().any(|x| x.starts_with(l)), "{l:?} in\n{table}");
    }
}

#[test]
fn lint_warnings_are_summed_up_after_a_build_and_check_stops_before_it() {
    let b = require!(B::new("lintsum"));
    let f = [df(
        "FROM busybox AS builder\nRUN echo x > /x\nFROM busybox\nCOPY --from=builder /x /y\nmaintainer me\nCMD echo hi\n",
    )];
    let c = b.ctx("c", &files(&f));
    // The build works, and ends as buildx ends one: the count, then a line per warning.
    let err = b.ok(&c, &["-t", "linted"]);
    let file = c.join("Dockerfile");
    let tail = format!(
        "3 warnings found (use strata check for details):\n - ConsistentInstructionCasing: Command 'maintainer' should match the case of the command majority (uppercase) ({f}:5)\n - MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label ({f}:5)\n - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals ({f}:6)\n",
        f = file.display()
    );
    assert!(err.ends_with(&tail), "{err}");
    // --check: the warnings as strata check shows them, exit 1, nothing built.
    let o = b.build(&c, &["--check", "-t", "checked"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("  = docs: strata check --explain JSONArgsRecommended"),
        "{err}"
    );
    assert!(
        err.ends_with(": 3 warnings found\n") && !err.contains("built "),
        "{err}"
    );
    assert!(!text(&b.strata(&["images"]).stdout).contains("checked"));
    // A clean file: --check exits 0, and a build says nothing about lint.
    let clean = b.ctx("clean", &files(&[df("FROM busybox\nCMD [\"true\"]\n")]));
    assert_eq!(b.build(&clean, &["--check"]).status.code(), Some(0));
    assert!(!b.ok(&clean, &[]).contains("warning"));
    // `# check=error=true`: a warning fails the build before it starts.
    let strict = b.ctx(
        "strict",
        &files(&[df("# check=error=true\nFROM busybox\nCMD echo hi\n")]),
    );
    let (code, err) = b.fails_with(&strict, &[]);
    // Exit 2: a Dockerfile the check refuses is wrong input, as a parse or plan error.
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("lint violation found for rules: JSONArgsRecommended")
            && err.contains("check=error=true"),
        "{err}"
    );
    assert!(!err.contains("#1 "), "no step ran: {err}");
}

#[test]
fn buildx_flags_ci_scripts_pass() {
    let b = require!(B::new("ciflags"));
    let f = [df(
        "FROM busybox\nRUN grep myhost /etc/hosts > /hosts; ulimit -n > /nofile; ulimit -Hn >> /nofile; df -k /dev/shm | tail -1 | awk '{print $2}' > /shm\n",
    )];
    let c = b.ctx("c", &files(&f));
    let out = b.ok(
        &c,
        &[
            "-t",
            "flags",
            "--platform",
            "local",
            "--add-host",
            "myhost:10.1.2.3",
            "--ulimit",
            "nofile=512:1024",
            "--shm-size",
            "128m",
            "--annotation",
            "org.example.team=build",
            "--annotation",
            "manifest:org.example.k=v",
            "--provenance=false",
            "--sbom=false",
        ],
    );
    assert!(out.contains("built "), "{out}");
    assert_eq!(b.sh("flags", "cat /hosts"), "10.1.2.3\tmyhost\n");
    assert_eq!(b.sh("flags", "cat /nofile"), "512\n1024\n");
    assert_eq!(b.sh("flags", "cat /shm"), "131072\n");
    let inspect: serde_json::Value =
        serde_json::from_slice(&b.strata(&["inspect", "flags"]).stdout).unwrap();
    let ann = &inspect["Manifest"]["annotations"];
    assert_eq!(ann["org.example.team"], "build", "{inspect}");
    assert_eq!(ann["org.example.k"], "v", "{inspect}");
    // The settings are in the RUN step's key: another host is another step.
    let out = b.ok(&c, &["-t", "flags", "--add-host", "myhost:10.9.9.9"]);
    assert!(out.contains("cache miss"), "{out}");
    // strata run takes the same three.
    let o = b.strata(&[
        "run",
        "--add-host",
        "database:192.0.2.7",
        "--ulimit",
        "nofile=256",
        "--shm-size",
        "32m",
        "busybox",
        "sh",
        "-c",
        "grep database /etc/hosts; ulimit -n; df -k /dev/shm | tail -1 | awk '{print $2}'",
    ]);
    assert_eq!(
        text(&o.stdout),
        "192.0.2.7\tdatabase\n256\n32768\n",
        "{}",
        text(&o.stderr)
    );
    // What strata does not do (yet) is wrong input (2), said before anything is read.
    for (args, says) in [
        (
            &["--platform", "linux/amd64,linux/sparkle"][..],
            "--platform linux/sparkle: unknown platform linux/sparkle",
        ),
        (
            &["--sbom=generator=docker/scanner"],
            "strata makes the SBOM itself",
        ),
        (
            &["--provenance=mode=huge"],
            "--provenance mode=huge: unknown option mode=huge",
        ),
        (
            &["--attest", "type=vex"],
            "--attest type=vex: unknown attestation type",
        ),
        (
            &["--annotation", "index:a=b"],
            "index annotations not supported for single platform export",
        ),
        (
            &["--annotation", "manifest[linux/arm64]:a=b"],
            "no platform linux/arm64 in this build",
        ),
        (&["--add-host", "x:notanip"], "notanip is not an IP address"),
        (&["--ulimit", "nofiles=1"], "no limit nofiles"),
        (
            &["--load=kubernetes"],
            "--load=kubernetes: expected docker or podman",
        ),
    ] {
        let o = b.build(&c, args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("#1 "), "{args:?}: nothing ran: {err}");
    }
    // A hard limit above strata's own cannot be raised in a user namespace: said so.
    let f = [df("FROM busybox\nRUN true\n")];
    let c2 = b.ctx("c2", &files(&f));
    let (code, err) = b.fails_with(&c2, &["--ulimit", "nofile=4096:99999999"]);
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("--ulimit nofile=4096:99999999") && err.contains("CAP_SYS_RESOURCE"),
        "{err}"
    );
}

/// A storage.conf of podman's in `dir` (for root and rootless alike), so that no test touches
/// the machine's or the user's own podman storage.
fn private_podman(dir: &Path) -> Vec<(String, String)> {
    fs_err::create_dir_all(dir.join("xdg")).unwrap();
    std::fs::set_permissions(dir.join("xdg"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let conf = dir.join("storage.conf");
    fs_err::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\nrootless_storage_path = \"{0}/root\"\n",
            dir.display()
        ),
    )
    .unwrap();
    vec![
        ("CONTAINERS_STORAGE_CONF".into(), conf.display().to_string()),
        (
            "XDG_RUNTIME_DIR".into(),
            dir.join("xdg").display().to_string(),
        ),
    ]
}

#[test]
fn load_puts_the_image_into_docker_and_podman() {
    let b = require!(B::new("load"));
    let f = [df(
        "FROM busybox\nRUN echo loaded > /x\nCMD [\"cat\", \"/x\"]\n",
    )];
    let c = b.ctx("c", &files(&f));
    let id = text(&b.build(&c, &["-q", "-t", "loaded:1"]).stdout)
        .trim()
        .to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    let with_env = |env: &[(String, String)], args: &[&str]| -> Output {
        let mut cmd = Command::new(support::strata_bin());
        cmd.arg("--root")
            .arg(&b.root)
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    // podman, as whoever runs the tests (root, or strata-test in the unprivileged pass).
    if Path::new("/usr/bin/podman").exists() {
        let env = private_podman(&b.dir.join("podman"));
        let o = with_env(
            &env,
            &[
                "build",
                "--progress",
                "plain",
                "-t",
                "loaded:1",
                "--load=podman",
                c.to_str().unwrap(),
            ],
        );
        let err = text(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(err.contains("podman: Loaded image"), "{err}");
        let mut p = Command::new("podman");
        p.args(["image", "inspect", "--format", "{{.Id}}", "loaded:1"]);
        for (k, v) in &env {
            p.env(k, v);
        }
        let o = p.output().unwrap();
        assert_eq!(
            format!("sha256:{}", text(&o.stdout).trim()),
            id,
            "podman has the same image: {}",
            text(&o.stderr)
        );
        let mut clean = Command::new("podman");
        clean.args(["rmi", "-a", "-f"]);
        for (k, v) in &env {
            clean.env(k, v);
        }
        let _ = clean.output();
        // Rootless Podman leaves a process that keeps its user namespace: stopped by its pid.
        let pause = b.dir.join("podman/xdg/libpod/tmp/pause.pid");
        if let Some(pid) = fs_err::read_to_string(&pause)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let _ = Command::new("kill").arg(pid.to_string()).output();
        }
    } else {
        support::skip("podman is not installed: --load=podman is not tested");
    }
    // docker: a daemon of the test's own (root only), through its API socket.
    not_applicable!(rustix::process::geteuid().is_root(), "--load into docker needs a dockerd, which only root starts here (the root pass tests it, as root and as strata-test)");
    let Some(d) = support::Dockerd::start(&b.dir.join("dockerd")) else {
        support::skip("dockerd did not start: --load into docker is not tested");
        return;
    };
    let sock = b.dir.join("dockerd/docker.sock");
    let docker_host = vec![(
        "DOCKER_HOST".to_string(),
        format!("unix://{}", sock.display()),
    )];
    let o = with_env(
        &docker_host,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "loaded:1",
            "--load",
            c.to_str().unwrap(),
        ],
    );
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("docker: Loaded image: loaded:1"), "{err}");
    let o = d.docker(&["image", "inspect", "--format", "{{.Id}}", "loaded:1"]);
    assert_eq!(text(&o.stdout).trim(), id, "{}", text(&o.stderr));
    let o = d.docker(&["run", "--rm", "--network", "none", "loaded:1"]);
    assert_eq!(text(&o.stdout), "loaded\n", "{}", text(&o.stderr));
    // Rootless: strata-test with a store of its own, given the daemon's socket.
    if Command::new("id")
        .arg("strata-test")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let sub = b.dir.join("sub");
        fs_err::create_dir_all(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        let rootfs = b.dir.join("rootfs");
        let store = sub.join("store");
        let runas = |args: &[&str]| -> Output {
            Command::new("runuser")
                .args(["-u", "strata-test", "--", support::strata_bin(), "--root"])
                .arg(&store)
                .args(args)
                .env("DOCKER_HOST", format!("unix://{}", sock.display()))
                .env_remove("STRATA_ROOT")
                .current_dir("/tmp")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        let o = runas(&["import", rootfs.to_str().unwrap(), "busybox:latest"]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let o = runas(&[
            "build",
            "--progress",
            "plain",
            "-t",
            "rootless:1",
            "--load=docker",
            c.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let o = d.docker(&["run", "--rm", "--network", "none", "rootless:1"]);
        assert_eq!(text(&o.stdout), "loaded\n", "{}", text(&o.stderr));
        let _ = runas(&["prune", "--all"]);
    }
    // No daemon there: the error says where it looked and what to do.
    let o = with_env(
        &[(
            "DOCKER_HOST".into(),
            format!("unix://{}", b.dir.join("nothing.sock").display()),
        )],
        &[
            "build",
            "-t",
            "loaded:1",
            "--load=docker",
            c.to_str().unwrap(),
        ],
    );
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("nothing.sock: cannot connect"), "{err}");
}

#[test]
fn miss_reasons_in_the_tty_view_and_no_new_files_on_a_first_build() {
    let b = require!(B::new("why"));
    let f = [
        df("FROM busybox\nCOPY req.txt /app/\nRUN cat /app/req.txt > /deps\nCOPY . /app\n"),
        ("req.txt", "six\n".to_string()),
        ("app.py", "print(1)\n".to_string()),
        (".dockerignore", "*.log\n".to_string()),
    ];
    let c = b.ctx("c", &files(&f));
    // A first build: no step lists files as new (an earlier step of the same build hashed
    // req.txt, which used to make `.dockerignore (new)` a reason).
    let out = b.ok(&c, &["-t", "why"]);
    assert!(!out.contains("(new)"), "{out}");
    assert!(
        out.contains("#3 cache miss: an earlier step changed"),
        "{out}"
    );
    // A file added since: now it is a reason.
    fs_err::write(c.join("extra.py"), "x\n").unwrap();
    let out = b.ok(&c, &["-t", "why"]);
    assert!(
        out.contains("cache miss: 1 file changed: extra.py (new)"),
        "{out}"
    );
    // The tty view says why a step ran, as plain does.
    require!(
        Path::new("/usr/bin/script").exists(),
        "script (util-linux) is not installed: the tty view is not tested"
    );
    fs_err::write(c.join("app.py"), "print(2)\n").unwrap();
    let line = format!(
        "{} --root {} build --progress tty -t why {}",
        support::sh_quote(support::strata_bin()),
        support::sh_quote(&b.root),
        support::sh_quote(c.to_str().unwrap())
    );
    let (code, out) = support::on_a_terminal(&line, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("COPY . /app (cache miss: 1 file changed: app.py)"),
        "{out}"
    );
    assert!(
        out.contains("  CACHED [stage-0 3/4] RUN cat /app/req.txt"),
        "{out}"
    );
}
