//! `strata run` in the rootless sandbox, as root, as an unprivileged user with subordinate ids
//! (`strata-test`) and as one without (`strata-nosub`); both users are made by
//! scripts/test-deps.sh. Base image: busybox from Debian's busybox-static, imported per user.
//! A test that loops over [`runners`] does nothing in the unprivileged pass of `make test`
//! (scripts/test-as-user.sh): the root pass ran it as strata-test; the others run in both.
//! Where a user or busybox is missing the test says SKIPPED; with STRATA_REQUIRE_TOOLS=1 (CI) it
//! fails instead.

#[macro_use]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Me,
    Sub,
    NoSub,
}

impl Who {
    fn user(self) -> Option<&'static str> {
        match self {
            Who::Me => None,
            Who::Sub => Some("strata-test"),
            Who::NoSub => Some("strata-nosub"),
        }
    }
    /// Can ids other than root exist inside?
    fn many_ids(self) -> bool {
        match self {
            // The user running the tests: root, or whatever /etc/subuid gives it.
            Who::Me => !strata::sandbox::idmap::for_current_user().root_only,
            Who::Sub => true,
            Who::NoSub => false,
        }
    }
}

fn runners() -> Vec<Who> {
    if support::root_pass_ran_as("strata-test") {
        support::not_applicable("the root pass ran this as strata-test already (Who::Sub)");
        return Vec::new();
    }
    let mut v = vec![Who::Me];
    if rustix::process::geteuid().is_root() {
        for w in [Who::Sub, Who::NoSub] {
            let u = w.user().unwrap();
            if Command::new("id")
                .arg(u)
                .output()
                .is_ok_and(|o| o.status.success())
            {
                v.push(w);
            } else {
                support::skip(&format!("no user {u}: its runs are left out"));
            }
        }
    }
    v
}

struct Env {
    who: Who,
    root: String,
    dir: PathBuf,
}

fn cmd(who: Who, prog: &str, args: &[&str]) -> Command {
    let mut c = match who.user() {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", prog]);
            c
        }
        None => Command::new(prog),
    };
    c.args(args).env_remove("STRATA_ROOT").current_dir("/tmp");
    c
}

fn strata() -> &'static str {
    support::strata_bin()
}

impl Env {
    fn new(name: &str, who: Who) -> Option<Env> {
        if !Path::new("/bin/busybox").exists() {
            support::skip("/bin/busybox (busybox-static) is not installed");
            return None;
        }
        let base = std::env::temp_dir().join(format!("strata-sbx-{}", std::process::id()));
        fs_err::create_dir_all(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let dir = base.join(format!("{name}-{who:?}"));
        let _ = std::fs::remove_dir_all(&dir);
        let r = cmd(who, "mkdir", &["-p", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(r.status.success());
        let rootfs = dir.join("rootfs");
        let script = format!(
            "set -e; r={r}; mkdir -p $r/bin $r/etc $r/tmp $r/root; cp /bin/busybox $r/bin/busybox; \
             for a in $(/bin/busybox --list); do [ \"$a\" = busybox ] || ln -sf busybox $r/bin/$a; done; \
             printf 'root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:/:/bin/sh\\n' > $r/etc/passwd; \
             printf 'root:x:0:\\nnogroup:x:65534:\\n' > $r/etc/group; chmod 1777 $r/tmp",
            r = rootfs.display()
        );
        let o = cmd(who, "sh", &["-c", &script]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let e = Env {
            who,
            root: dir.join("store").display().to_string(),
            dir,
        };
        let o = e.strata(&["import", rootfs.to_str().unwrap(), "bb:1"]);
        assert!(
            o.status.success(),
            "import as {who:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Some(e)
    }

    fn strata(&self, args: &[&str]) -> Output {
        let mut a = vec!["--root", self.root.as_str()];
        a.extend_from_slice(args);
        cmd(self.who, strata(), &a).output().unwrap()
    }

    /// `strata run bb:1 sh -c SCRIPT` with extra flags; returns (code, stdout, stderr).
    fn sh(&self, flags: &[&str], script: &str) -> (i32, String, String) {
        let mut a = vec!["run"];
        a.extend_from_slice(flags);
        a.extend_from_slice(&["bb:1", "sh", "-c", script]);
        let o = self.strata(&a);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

#[test]
fn exit_codes_signals_and_output() {
    for who in runners() {
        let e = require!(Env::new("basic", who));
        assert_eq!(
            e.sh(&[], "echo hello"),
            (0, "hello\n".into(), String::new()),
            "{who:?}"
        );
        assert_eq!(e.sh(&[], "exit 7").0, 7, "{who:?}");
        assert_eq!(e.sh(&[], "kill -9 $$").0, 137, "{who:?}");
        // pid 1 is strata's init; the process is its child.
        assert_eq!(e.sh(&[], "echo $$").1, "2\n", "{who:?}");
        let (code, out, _) = e.sh(&[], "head -c 20000000 /dev/zero | tr '\\0' x");
        assert_eq!(
            (code, out.len()),
            (0, 20_000_000),
            "{who:?}: megabytes of output"
        );
        assert_eq!(
            e.sh(&[], "cat - < /dev/stdin | wc -c").1.trim(),
            "0",
            "stdin is /dev/null"
        );
        // A command that is not there exits 127, as in a shell and docker run.
        let o = e.strata(&["run", "bb:1", "no-such-command"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(127), "{who:?}: {err}");
        assert!(
            err.contains("no-such-command: executable file not found in $PATH"),
            "{who:?}: {err}"
        );
    }
}

#[test]
fn everything_after_the_image_is_the_containers() {
    let e = require!(Env::new("argv", Who::Me));
    // strata's own flags (--version, --help, -e, --rm) after IMAGE go to the command.
    let o = e.strata(&[
        "run",
        "--entrypoint",
        "echo",
        "bb:1",
        "--version",
        "-e",
        "X=1",
        "--help",
        "--rm",
    ]);
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).as_ref()),
        (Some(0), "--version -e X=1 --help --rm\n"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Before IMAGE they are strata's.
    let o = e.strata(&["run", "-e", "X=1", "bb:1", "sh", "-c", "echo $X"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1\n");
}

#[test]
fn environment_is_the_images_and_nothing_from_the_host() {
    for who in runners() {
        let e = require!(Env::new("env", who));
        let a = vec!["--root", e.root.as_str(), "run", "-e", "A=1", "bb:1", "env"];
        let o = cmd(who, strata(), &a)
            .env("STRATA_LEAK", "secret")
            .output()
            .unwrap();
        let mut env: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        env.sort();
        let keys: Vec<&str> = env.iter().map(|l| l.split('=').next().unwrap()).collect();
        assert_eq!(
            keys,
            vec!["A", "HOME", "HOSTNAME", "PATH"],
            "{who:?}: {env:?}"
        );
        assert!(env.contains(&"HOME=/root".to_string()), "{who:?}: {env:?}");
    }
}

#[test]
fn interactive_runs_read_stdin_and_others_read_nothing() {
    for who in runners() {
        let e = require!(Env::new("stdin", who));
        let run = |flags: &[&str]| {
            let mut a = vec!["--root", e.root.as_str(), "run"];
            a.extend_from_slice(flags);
            a.extend_from_slice(&["bb:1", "sh", "-c", "cat; echo end"]);
            let mut child = cmd(who, strata(), &a)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut input = child.stdin.take().unwrap();
            // The writer may find the pipe closed when the process never reads it.
            let _ = std::io::Write::write_all(&mut input, b"print(6*7)\n");
            drop(input);
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "{who:?} {flags:?}");
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        assert_eq!(run(&["-i"]), "print(6*7)\nend\n", "{who:?}");
        assert_eq!(run(&[]), "end\n", "{who:?}: without -i stdin is /dev/null");
    }
}

#[test]
fn published_ports_reach_a_server_in_the_run() {
    require!(
        Path::new("/usr/bin/slirp4netns").exists(),
        "slirp4netns is not installed: the default network cannot be tested"
    );
    for who in runners() {
        let e = require!(Env::new("publish", who));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let publish = format!("127.0.0.1:{port}:8000");
        let a = [
            "--root",
            e.root.as_str(),
            "run",
            "-p",
            publish.as_str(),
            "bb:1",
            "sh",
            "-c",
            "printf 'HTTP/1.0 200 OK\\r\\n\\r\\nhello-from-the-step' | nc -l -p 8000",
        ];
        let child = cmd(who, strata(), &a)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The host side listens as soon as the network is up; until the server in the step
        // listens, slirp4netns closes what it cannot deliver: try again.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = String::new();
        while Instant::now() < deadline {
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
                got.clear();
                let _ = c.read_to_string(&mut got);
                if got.contains("hello-from-the-step") {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let o = child.wait_with_output().unwrap();
        assert!(
            got.contains("hello-from-the-step"),
            "{who:?}: got {got:?}; {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success(),
            "{who:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // A port that cannot be published is an error that names it.
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = format!("127.0.0.1:{}:80", busy.local_addr().unwrap().port());
        let o = e.strata(&["run", "-p", &taken, "bb:1", "true"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(&taken),
            "{who:?}: {err}"
        );
        let o = e.strata(&["run", "--network", "none", "-p", "8080:80", "bb:1", "true"]);
        assert!(!o.status.success(), "{who:?}");
    }
}

/// `strata run ARGS` as `e`'s user on a terminal of its own ([`support::on_a_terminal`]), after
/// `setup` has run in that terminal (`stty rows 33 cols 111`).
fn on_a_terminal(e: &Env, setup: &str, args: &[&str], typed: &[(u64, &str)]) -> (i32, String) {
    let mut line = format!("{setup}; ");
    if let Some(u) = e.who.user() {
        line.push_str(&format!("runuser -u {u} -- "));
    }
    line.push_str(&support::sh_quote(strata()));
    for a in ["--root", e.root.as_str(), "run"].iter().chain(args) {
        line.push(' ');
        line.push_str(&support::sh_quote(a));
    }
    support::on_a_terminal(&line, typed)
}

#[test]
fn a_terminal_with_its_size_and_job_control() {
    require!(
        Path::new("/usr/bin/script").exists(),
        "script (util-linux) is not installed: no terminal to test -t with"
    );
    for who in runners() {
        let e = require!(Env::new("tty", who));
        // -t: stdin, stdout and stderr are a terminal with the window size of strata's.
        let (code, out) = on_a_terminal(
            &e,
            "stty rows 33 cols 111",
            &[
                "-t",
                "bb:1",
                "sh",
                "-c",
                "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; stty size",
            ],
            &[],
        );
        assert_eq!(code, 0, "{who:?}: {out}");
        assert!(out.contains("all-tty\n33 111\n"), "{who:?}: {out:?}");
        // -it: an interactive shell; Ctrl-C stops the foreground job, not the shell (job
        // control through the terminal), and the shell's exit code is strata's.
        let t = Instant::now();
        let (code, out) = on_a_terminal(
            &e,
            "true",
            &["-it", "bb:1", "sh"],
            &[
                (1500, "sleep 60\n"),
                (1000, "\x03"),
                (500, "echo after-$((6*7))\n"),
                (500, "exit 3\n"),
            ],
        );
        assert_eq!(code, 3, "{who:?}: {out}");
        assert!(out.contains("after-42"), "{who:?}: {out:?}");
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{who:?}: Ctrl-C did not stop sleep"
        );
    }
}

/// What each way of running sees of descriptors 7 (a directory of the caller's) and 8 (a file
/// of the caller's, open for appending): the class of runc's CVE-2024-21626.
const FD_PROBE: &str = "ls /proc/self/fd | tr '\\n' ' '; echo; \
     cat /proc/self/fd/7/private 2>/dev/null; ls /proc/self/fd/7/ 2>/dev/null; \
     echo planted >> /proc/self/fd/8 2>/dev/null && echo wrote-8; true";

#[test]
fn inherited_descriptors_never_reach_the_sandbox() {
    // A CI agent, make's jobserver or socket activation leave descriptors open without
    // close-on-exec; strata inherits them, and the step must not: through /proc/self/fd/7 it
    // would read the caller's files and through 8 write them.
    for who in runners() {
        let e = require!(Env::new("fds", who));
        let outside = e.dir.join("outside");
        let log = e.dir.join("outside.log");
        let o = cmd(
            who,
            "sh",
            &[
                "-c",
                &format!(
                    "mkdir -p {d} && echo PRIVATE-BYTES > {d}/private && chmod 600 {d}/private && : > {l}",
                    d = outside.display(),
                    l = log.display()
                ),
            ],
        )
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let open = format!("exec 7<{} 8>>{}", outside.display(), log.display());
        // The caller's shell really has both open (so the check below can fail).
        let o = cmd(who, "sh", &["-c", &format!("{open}; {FD_PROBE}")])
            .output()
            .unwrap();
        let host = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            host.contains("PRIVATE-BYTES") && host.contains("wrote-8"),
            "{who:?}: {host}"
        );
        fs_err::write(&log, "").ok();
        let run = |flags: &str| {
            let line = format!(
                "{open}; exec {} --root {} run {flags} bb:1 sh -c {}",
                support::sh_quote(strata()),
                support::sh_quote(&e.root),
                support::sh_quote(FD_PROBE)
            );
            let o = cmd(who, "sh", &["-c", &line])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{who:?} run {flags}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        for flags in ["--network none", "-i", ""] {
            let out = run(flags);
            // Only 0, 1, 2 and the directory ls itself opens.
            assert_eq!(out, "0 1 2 3 \n", "{who:?} run {flags}: {out}");
        }
        if Path::new("/usr/bin/script").exists() {
            let mut line = format!("{open}; ");
            if let Some(u) = who.user() {
                line.push_str(&format!("exec runuser -u {u} -- "));
            } else {
                line.push_str("exec ");
            }
            line.push_str(&format!(
                "{} --root {} run -t bb:1 sh -c {}",
                support::sh_quote(strata()),
                support::sh_quote(&e.root),
                support::sh_quote(FD_PROBE)
            ));
            let (code, out) = support::on_a_terminal(&line, &[]);
            assert_eq!(code, 0, "{who:?} run -t: {out}");
            assert!(out.contains("0 1 2 3 \n"), "{who:?} run -t: {out:?}");
            assert!(
                !out.contains("PRIVATE") && !out.contains("wrote-8"),
                "{who:?} run -t: {out:?}"
            );
        } else {
            support::skip("script (util-linux) is not installed: run -t is left out");
        }
        assert_eq!(fs_err::read_to_string(&log).unwrap(), "", "{who:?}");
    }
}

#[test]
fn users_workdir_and_etc_files() {
    for who in runners() {
        let e = require!(Env::new("user", who));
        let (code, out, err) = e.sh(&["--user", "nobody"], "id -u; id -g");
        if who.many_ids() {
            assert_eq!(
                (code, out.as_str()),
                (0, "65534\n65534\n"),
                "{who:?}: {err}"
            );
            let (_, out, err) = e.sh(&[], "su -s /bin/sh nobody -c 'id -u'");
            assert_eq!(out, "65534\n", "{who:?}: privilege drop: {err}");
            let (code, out, err) = e.sh(&["--user", "1234:5678"], "id -u; id -g");
            assert_eq!((code, out.as_str()), (0, "1234\n5678\n"), "{who:?}: {err}");
            // HOME as runc sets it: the passwd entry's, "/" without an entry.
            let (_, out, _) = e.sh(&["--user", "1234:5678"], "echo $HOME");
            assert_eq!(out, "/\n", "{who:?}");
        } else {
            assert_ne!(code, 0);
            assert!(
                err.contains("only root is mapped") && err.contains("strata doctor"),
                "{err}"
            );
        }
        let (_, out, err) = e.sh(&[], "cd ~ && pwd");
        assert_eq!(out, "/root\n", "{who:?}: {err}");
        let (_, out, _) = e.sh(&["-e", "HOME=/custom"], "echo $HOME");
        assert_eq!(out, "/custom\n", "{who:?}: an explicit HOME wins");
        assert_eq!(
            e.sh(&["--workdir", "/made/for/you"], "pwd").1,
            "/made/for/you\n",
            "{who:?}"
        );
        let (_, out, _) = e.sh(
            &[],
            "cat /etc/hostname; hostname; grep -c localhost /etc/hosts",
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], lines[1], "{who:?}");
        assert_eq!(lines[2], "2");
        // The host's resolv.conf with the host's network; slirp4netns's forwarder with the
        // step's own.
        let host_resolv = fs_err::read_to_string("/etc/resolv.conf").unwrap_or_default();
        assert_eq!(
            e.sh(&["--network", "host"], "cat /etc/resolv.conf").1,
            host_resolv,
            "{who:?}"
        );
        assert_eq!(
            e.sh(&[], "cat /etc/resolv.conf").1,
            strata::sandbox::net::resolv_conf(&host_resolv),
            "{who:?}"
        );
        assert!(e
            .sh(&[], "cat /etc/resolv.conf")
            .1
            .starts_with("nameserver 10.0.2.3\n"));
    }
}

#[test]
fn network_none_has_only_loopback() {
    for who in runners() {
        let e = require!(Env::new("net", who));
        let (_, out, _) = e.sh(
            &["--network", "none"],
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
        );
        assert_eq!(out, "lo\n", "{who:?}");
        let (_, host, _) = e.sh(&[], "tail -n +3 /proc/net/dev | wc -l");
        assert!(host.trim().parse::<u32>().unwrap() >= 1, "{who:?}");
    }
}

#[test]
fn dockers_capabilities_seccomp_masked_proc_and_read_only_proc_sys() {
    for who in runners() {
        let e = require!(Env::new("caps", who));
        // Root in the step: Docker's default set (CapBnd 00000000a80425fb), nothing inheritable
        // or ambient.
        let (code, out, err) = e.sh(&[], "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status");
        assert_eq!(code, 0, "{who:?}: {err}");
        for (k, v) in [
            ("CapInh", "0000000000000000"),
            ("CapPrm", "00000000a80425fb"),
            ("CapEff", "00000000a80425fb"),
            ("CapBnd", "00000000a80425fb"),
            ("CapAmb", "0000000000000000"),
        ] {
            assert!(out.contains(&format!("{k}:\t{v}")), "{who:?}: {out}");
        }
        // Docker's seccomp profile: two filters (the allow list, clone3's ENOSYS); namespaces
        // and mounts refused even to root in the step.
        let (code, out, err) = e.sh(
            &[],
            "grep -E '^Seccomp(_filters)?:' /proc/self/status | tr -d '\t'; \
             unshare -U true 2>/dev/null && echo unshared || echo no-unshare; \
             mount -t tmpfs none /tmp 2>/dev/null && echo mounted || echo no-mount",
        );
        assert_eq!(code, 0, "{who:?}: {err}");
        assert_eq!(
            out, "Seccomp:2\nSeccomp_filters:2\nno-unshare\nno-mount\n",
            "{who:?}: {err}"
        );
        // Another user has none left.
        if who.many_ids() {
            let (_, out, err) = e.sh(&["--user", "nobody"], "grep CapEff /proc/self/status");
            assert_eq!(out.trim(), "CapEff:\t0000000000000000", "{who:?}: {err}");
            // Root can still become another user (su, as apt-get does to drop to _apt).
            let (_, out, err) = e.sh(
                &[],
                "su -s /bin/sh nobody -c 'id -u; grep CapEff /proc/self/status'",
            );
            assert_eq!(out, "65534\nCapEff:\t0000000000000000\n", "{who:?}: {err}");
        }
        // What the capabilities still allow keeps working: chown to other ids, mknod refused
        // as under Docker in a user namespace, sysctl writes refused.
        let (code, out, err) = e.sh(
            &[],
            "(touch /tmp/f && chown 65534:65534 /tmp/f && stat -c %u:%g /tmp/f) 2>/dev/null || echo no-ids; \
             echo x > /proc/sys/kernel/domainname 2>/dev/null && echo wrote || echo refused; \
             for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do \
               [ -e $p ] && echo \"$p $(wc -c < $p)\"; done; \
             for d in /proc/acpi /proc/scsi /sys/firmware; do \
               [ -d $d ] && echo \"$d $(ls -A $d | wc -l)\"; done; true",
        );
        assert_eq!(code, 0, "{who:?}: {err}");
        let mut lines = out.lines();
        let chowned = if who.many_ids() {
            "65534:65534"
        } else {
            "no-ids"
        };
        assert_eq!(lines.next(), Some(chowned), "{who:?}: {out} {err}");
        assert_eq!(lines.next(), Some("refused"), "{who:?}: {out}");
        for l in lines {
            // Every masked file reads empty, every masked directory lists nothing.
            assert!(l.ends_with(" 0"), "{who:?}: {l} in {out}");
        }
    }
}

/// A server on the host's 127.0.0.1 that answers every connection with a marker and counts
/// them, until dropped.
struct HostService {
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The first line of each request.
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostService {
    /// A server on 127.0.0.1 (test traffic stays on loopback).
    fn start() -> HostService {
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (h, s, reqs) = (hits.clone(), stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        h.fetch_add(1, Ordering::SeqCst);
                        use std::io::{BufRead, Write};
                        // Read the request first: closing on unread bytes would reset.
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(3)));
                        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
                        let mut line = String::new();
                        let mut first = true;
                        while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                            if std::mem::take(&mut first) {
                                reqs.lock().unwrap().push(line.trim_end().to_string());
                            }
                            line.clear();
                        }
                        let _ = c
                            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\nhost-secret");
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        HostService {
            port,
            hits,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for HostService {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn slirps_of(who: Who) -> usize {
    let o = Command::new("pgrep")
        .args(["-x", "slirp4netns", "-u"])
        .arg(who.user().unwrap_or("root"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).lines().count()
}

#[test]
fn default_network_reaches_out_but_never_the_hosts_loopback() {
    require!(
        Path::new("/usr/bin/slirp4netns").exists(),
        "slirp4netns is not installed: the default network cannot be tested"
    );
    let svc = HostService::start();
    for who in runners() {
        let e = require!(Env::new("privnet", who));
        let before = slirps_of(who);
        let hits = svc.hits();
        // Its own namespace: loopback and a copy of the host's outbound interface, with the
        // host's default route.
        let (code, out, err) = e.sh(
            &[],
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '; echo; ip route | grep default | cut -d' ' -f3",
        );
        assert_eq!(code, 0, "{who:?}: {err}");
        let mut lines = out.lines();
        let ifs = lines.next().unwrap_or("");
        assert!(
            ifs.contains("lo ") && ifs.split(' ').filter(|x| !x.is_empty()).count() >= 2,
            "{who:?}: {out}"
        );
        let gw = lines.next().unwrap_or("").trim().to_string();
        assert!(!gw.is_empty(), "{who:?}: no default route: {out}");
        // The host's 127.0.0.1 is not the step's, and the gateway does not lead to it either.
        for addr in ["127.0.0.1".to_string(), gw.clone()] {
            // (busybox's nc: its static wget crashes in getaddrinfo without NSS files.)
            let (code, out, err) = e.sh(
                &[],
                &format!(
                    "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} {}; echo rc=$?",
                    svc.port
                ),
            );
            assert_eq!(code, 0, "{who:?}: {err}");
            assert!(!out.contains("host-secret"), "{who:?} {addr}: {out}");
            // nc ran and could not connect (refused on the step's own loopback, no answer
            // through the gateway).
            assert!(out.contains("rc=1"), "{who:?} {addr}: {out} {err}");
            assert!(
                err.contains("can't connect") || err.contains("timed out"),
                "{who:?} {addr}: {err}"
            );
        }
        assert_eq!(
            svc.hits(),
            hits,
            "{who:?}: a step reached the host's loopback"
        );
        // --network host is the explicit way to share it.
        let (_, out, err) = e.sh(
            &["--network", "host"],
            &format!(
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 {}",
                svc.port
            ),
        );
        assert!(out.ends_with("host-secret"), "{who:?}: {out} {err}");
        // slirp4netns goes away with the step.
        let mut left = slirps_of(who);
        for _ in 0..50 {
            if left <= before {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            left = slirps_of(who);
        }
        assert!(
            left <= before,
            "{who:?}: {left} slirp4netns processes left (before: {before})"
        );
    }
    // Each runner's --network host step reached it, and nothing else did.
    assert_eq!(svc.hits(), runners().len());
}

#[test]
fn proxy_build_args_reach_run_steps_but_not_the_image_or_the_key() {
    // The proxy listens on loopback only, so the steps use the host's network (test traffic
    // never leaves 127.0.0.0/8); what is checked is how the args reach the step, the image
    // and the key, which is the same on every network.
    let proxy = HostService::start();
    let url = format!("http://127.0.0.1:{}", proxy.port);
    for who in runners() {
        let e = require!(Env::new("proxyargs", who));
        // The step talks to the proxy its environment names (busybox nc: see above), as a
        // client honouring http_proxy would; the image records none of it.
        let ctx = e.dir.join("ctx");
        let r = cmd(who, "mkdir", &["-p", ctx.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(r.status.success());
        let df = "FROM bb:1\nRUN p=${http_proxy#http://} && printf 'GET http://example.invalid/x HTTP/1.0\\r\\n\\r\\n' | nc -w 5 ${p%:*} ${p##*:} > /got && env > /env\n";
        let script = format!("cat > {}/Dockerfile", ctx.display());
        let mut c = cmd(who, "sh", &["-c", &script]);
        let mut child = c.stdin(Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), df.as_bytes()).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        let build = |proxy_url: &str| {
            e.strata(&[
                "build",
                "--progress",
                "plain",
                "--network",
                "host",
                "--allow",
                "network.host",
                "-t",
                "px:1",
                "--build-arg",
                &format!("http_proxy={proxy_url}"),
                "--build-arg",
                "NO_PROXY=internal.example",
                ctx.to_str().unwrap(),
            ])
        };
        let o = build(&url);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{who:?}: {err}");
        assert!(
            proxy
                .requests
                .lock()
                .unwrap()
                .iter()
                .any(|r| r == "GET http://example.invalid/x HTTP/1.0"),
            "{who:?}: the proxy saw {:?}",
            proxy.requests.lock().unwrap()
        );
        let o = e.strata(&[
            "run",
            "px:1",
            "sh",
            "-c",
            "cat /got; echo; grep -ci proxy /env",
        ]);
        let out = String::from_utf8_lossy(&o.stdout);
        // Both spellings of each (HTTP_PROXY and http_proxy, NO_PROXY and no_proxy), as
        // BuildKit's ExecOp sets them.
        assert!(
            out.contains("host-secret") && out.ends_with("\n4\n"),
            "{who:?}: {out}"
        );
        // Not in the image: config, history.
        let o = e.strata(&["inspect", "px:1"]);
        let config = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && config.contains("\"history\""),
            "{config}"
        );
        assert!(
            !config.contains(&url) && !config.contains("internal.example"),
            "{who:?}: {config}"
        );
        // Not in the key: another proxy builds nothing again.
        let o = build("http://other.invalid:3128");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && !err.contains("cache miss"),
            "{who:?}: {err}"
        );
    }
}

/// Every path below `dir` (symlinks not followed), as root sees them.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn the_store_is_private_to_its_owner() {
    // An image's setuid file becomes, in a snapshot, a setuid binary of the user who built it,
    // and an image's 1777 /tmp a directory anyone could plant files in for every later build
    // on that base: no other local user may reach either (nor blobs, cache mounts, debug dirs).
    for who in runners() {
        let e = require!(Env::new("private", who));
        let (code, _, err) = e.sh(
            &["--commit", "suid:1"],
            "cp /bin/busybox /suid && chmod 4755 /suid && mkdir -p /var/tmp && chmod 1777 /var/tmp",
        );
        assert_eq!(code, 0, "{who:?}: {err}");
        let (code, _, err) = e.sh(&[], "true");
        assert_eq!(code, 0, "{who:?}: {err}");
        let o = e.strata(&["run", "suid:1", "true"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v1 = Path::new(&e.root).join("v1");
        let mode = |p: &Path| fs_err::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&v1), 0o700, "{who:?}: {}", v1.display());
        // What another user would go for, found as root (the test's own view).
        let files = walk(&v1);
        let suid = files
            .iter()
            .find(|p| p.ends_with("suid") && mode(p) & 0o4000 != 0)
            .unwrap_or_else(|| panic!("{who:?}: no setuid snapshot file in {files:?}"))
            .clone();
        let sticky: Vec<&PathBuf> = files
            .iter()
            .filter(|p| p.is_dir() && mode(p) == 0o1777)
            .collect();
        assert!(!sticky.is_empty(), "{who:?}: no 1777 snapshot dir");
        let blob = files
            .iter()
            .find(|p| p.parent().is_some_and(|d| d.ends_with("blobs/sha256")))
            .unwrap()
            .clone();
        // The other user: strata-nosub, or strata-test when the store is strata-nosub's.
        let other = if who == Who::NoSub {
            "strata-test"
        } else {
            "strata-nosub"
        };
        if !rustix::process::geteuid().is_root() {
            support::not_applicable(&format!("{other} cannot be switched to without root (the root run covers it); the store's mode was checked"));
            continue;
        }
        let probe = |what: &str| {
            let line = format!(
                "test -x {} && echo REACHED-SUID; cat {} >/dev/null 2>&1 && echo READ-BLOB; \
                 for d in {}; do touch \"$d/planted\" 2>/dev/null && echo PLANTED; done; true",
                support::sh_quote(&suid.display().to_string()),
                support::sh_quote(&blob.display().to_string()),
                sticky
                    .iter()
                    .map(|d| support::sh_quote(&d.display().to_string()))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let o = Command::new("runuser")
                .args(["-u", other, "--", "sh", "-c", &line])
                .current_dir("/tmp")
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            eprintln!("{who:?} {what}: {other} got {out:?}");
            out
        };
        assert_eq!(probe("private store"), "", "{who:?}");
        // A store made by an older strata (0755 all the way down): the same probe gets in,
        // and the next strata command that opens the store closes it again.
        for d in [Path::new(&e.root), &v1] {
            fs_err::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let open = probe("0755 store");
        assert!(
            open.contains("REACHED-SUID") && open.contains("READ-BLOB") && open.contains("PLANTED"),
            "{who:?}: the probe cannot fail: {open}"
        );
        for d in &sticky {
            let _ = std::fs::remove_file(d.join("planted"));
        }
        let o = e.strata(&["images"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(mode(&v1), 0o700, "{who:?}: repaired on open");
        assert_eq!(probe("repaired store"), "", "{who:?}");
    }
}

/// An entry of a hand-made layer: path (a trailing `/` for a directory), symlink target (None
/// for a file or directory), content.
type LayoutEntry<'a> = (&'a str, Option<&'a str>, &'a [u8]);

/// An OCI layout in `dir`, tagged `latest`, of the image whose layers are `layers`; the first
/// layer also gets busybox.
fn layout_of(dir: &Path, layers: &[Vec<LayoutEntry<'_>>]) {
    let blobs = dir.join("blobs/sha256");
    fs_err::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> (String, usize) {
        let hex: String = ring::digest::digest(&ring::digest::SHA256, b)
            .as_ref()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        fs_err::write(blobs.join(&hex), b).unwrap();
        (format!("sha256:{hex}"), b.len())
    };
    let busybox = fs_err::read("/bin/busybox").unwrap();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, entries) in layers.iter().enumerate() {
        let mut t = tar::Builder::new(Vec::new());
        let mut add = |path: &str, link: Option<&str>, data: &[u8], mode: u32| {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(0);
            h.set_mode(mode);
            match link {
                Some(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    t.append_link(&mut h, path, target).unwrap();
                }
                None if path.ends_with('/') => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    t.append_data(&mut h, path, std::io::empty()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    t.append_data(&mut h, path, data).unwrap();
                }
            }
        };
        if i == 0 {
            add("bin/", None, b"", 0o755);
            add("bin/busybox", None, &busybox, 0o755);
            for a in ["sh", "ls", "cat", "test", "readlink"] {
                add(&format!("bin/{a}"), Some("busybox"), b"", 0o777);
            }
        }
        for (path, link, data) in entries {
            add(
                path,
                *link,
                data,
                if link.is_some() { 0o777 } else { 0o644 },
            );
        }
        let bytes = t.into_inner().unwrap();
        let (d, n) = put(&bytes);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}));
        diff_ids.push(d);
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (cd, cn) = put(&serde_json::to_vec(&config).unwrap());
    let m = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn}, "layers": descs});
    let (md, mn) = put(&serde_json::to_vec(&m).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    fs_err::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs_err::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn whiteouts_and_files_under_a_lower_layer_s_symlink_go_where_it_leads() {
    // Layer 1: /real/{x,y} and two links to it; layer 2 (hand-made: BuildKit never writes
    // one, as it diffs real directories) whites out link/x and alink/y and adds link/z, with
    // no entry for the links themselves. containerd's applier (archive/tar.go applyNaive:
    // the parent resolved with fs.RootPath inside the root) removes /real/x and /real/y and
    // writes /real/z, and leaves the links: so does strata, in its per-layer snapshots (they
    // used to turn both links into directories) and when it unpacks the whole image.
    for who in runners() {
        let e = require!(Env::new("wh-link", who));
        let layout = e.dir.join("layout");
        layout_of(
            &layout,
            &[
                vec![
                    ("real/", None, b"".as_slice()),
                    ("real/x", None, b"x\n"),
                    ("real/y", None, b"y\n"),
                    ("link", Some("real"), b""),
                    ("alink", Some("/real"), b""),
                ],
                vec![
                    ("link/.wh.x", None, b"".as_slice()),
                    ("alink/.wh.y", None, b""),
                    ("link/z", None, b"z\n"),
                ],
            ],
        );
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&layout)
            .output();
        let o = e.strata(&["load", "-i", layout.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "{who:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = e.strata(&[
            "run",
            "--network",
            "none",
            "layout:latest",
            "sh",
            "-c",
            "for l in link alink; do test -L /$l && echo \"$l -> $(readlink /$l)\"; done; ls /real /link/ /alink/",
        ]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{who:?}: {out} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let image_run = out.clone();
        assert_eq!(
            out, "link -> real\nalink -> /real\n/alink/:\nz\n\n/link/:\nz\n\n/real:\nz\n",
            "{who:?}"
        );
        // The whole image unpacked in one directory: the same tree.
        let dest = e.dir.join("unpacked");
        let o = e.strata(&["unpack", "layout:latest", dest.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "{who:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let links: Vec<String> = ["link", "alink"]
            .iter()
            .map(|l| {
                fs_err::read_link(dest.join(l))
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(links, ["real", "/real"], "{who:?}");
        let mut real: Vec<String> = fs_err::read_dir(dest.join("real"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        real.sort();
        assert_eq!(real, ["z"], "{who:?}: {image_run}");
    }
}

#[test]
fn chown_setuid_whiteouts_and_hardlinks_in_the_layer() {
    for who in runners() {
        let e = require!(Env::new("layer", who));
        let script = if who.many_ids() {
            "set -e; rm /bin/cat; rm -rf /root; mkdir /root; touch /root/new; \
             for i in 1 42 1000 65534; do touch /f$i; chown $i:$i /f$i; done; \
             cp /bin/busybox /suid; chmod 4755 /suid; echo x > /a; ln /a /b"
        } else {
            "set -e; rm /bin/cat; rm -rf /root; mkdir /root; touch /root/new; cp /bin/busybox /suid; chmod 4755 /suid; echo x > /a; ln /a /b; \
             if chown 42 /a 2>/dev/null; then exit 9; fi"
        };
        let (code, _, err) = e.sh(&["--commit", "layer:1"], script);
        assert_eq!(code, 0, "{who:?}: {err}");
        let out = e.dir.join("saved");
        let o = e.strata(&[
            "save",
            "layer:1",
            "--format",
            "oci-dir",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // Read the top layer as root (the saved blobs are plain files).
        let entries: std::collections::BTreeMap<String, Entry> =
            layer_entries(&top_layer_of_layout(&out))
                .into_iter()
                .map(|e| (e.0.clone(), e))
                .collect();
        assert!(entries.contains_key("bin/.wh.cat"), "{who:?}: {entries:?}");
        assert!(
            entries.contains_key("root/.wh..wh..opq") && entries.contains_key("root/new"),
            "{who:?}: rm -rf then mkdir makes an opaque dir: {entries:?}"
        );
        assert_eq!(entries["suid"].4, 0o4755, "{who:?}");
        let (a, b) = (&entries["a"], &entries["b"]);
        assert!(
            a.1 == tar::EntryType::Link.as_byte() || b.1 == tar::EntryType::Link.as_byte(),
            "{who:?}: hard link kept: {a:?} {b:?}"
        );
        if who.many_ids() {
            for i in [1u64, 42, 1000, 65534] {
                assert_eq!(
                    entries[&format!("f{i}")].2,
                    i,
                    "{who:?}: owner as seen inside"
                );
            }
        }
        for mp in [
            "etc",
            "etc/hosts",
            "etc/resolv.conf",
            "etc/hostname",
            "proc",
            "dev",
            "sys",
        ] {
            assert!(
                !entries.contains_key(mp),
                "{who:?}: sandbox mount point {mp} leaked into the layer: {entries:?}"
            );
        }
    }
}

/// Processes whose command line is exactly `marker` (`sleep 99xy`).
fn sleepers(marker: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = fs_err::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&c)
                .trim_end_matches('\0')
                .replace('\0', " ")
                == marker
            {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn background_processes_and_killed_steps_leave_nothing() {
    for who in runners() {
        let e = require!(Env::new("life", who));
        let marker = format!("sleep 99{}", who as u8);
        // A daemon left behind by the step dies with it.
        let t = Instant::now();
        let (code, out, _) = e.sh(&[], &format!("{marker}7 & echo started"));
        assert_eq!((code, out.as_str()), (0, "started\n"));
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            sleepers(&format!("{marker}7")),
            0,
            "{who:?}: the background process must be killed"
        );
        // A long step whose strata is killed with SIGKILL.
        let mut child = cmd(
            who,
            strata(),
            &[
                "--root",
                &e.root,
                "run",
                "bb:1",
                "sh",
                "-c",
                &format!("{marker}8"),
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sleepers(&format!("{marker}8")) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let started = sleepers(&format!("{marker}8"));
        // runuser's child is strata: SIGKILL strata itself (and runuser).
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("strata --root {} run", e.root)])
            .status();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(started, 1, "{who:?}: the step started");
        let deadline = Instant::now() + Duration::from_secs(5);
        while sleepers(&format!("{marker}8")) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            sleepers(&format!("{marker}8")),
            0,
            "{who:?}: no process outlives a killed strata"
        );
        let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&e.root), "{who:?}: no mount left behind");
        assert_eq!(
            e.sh(&[], "sleep 1; echo done").1,
            "done\n",
            "{who:?}: long step"
        );
    }
}

type Entry = (String, u8, u64, u64, u32, String);

/// (path, type, uid, gid, permission bits, link) of every entry of a layer blob.
fn layer_entries(blob: &Path) -> Vec<Entry> {
    let f = fs_err::File::open(blob).unwrap();
    let mut t = tar::Archive::new(strata::layer::decompress(f).unwrap());
    let mut v: Vec<Entry> = t
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path()
                    .unwrap()
                    .display()
                    .to_string()
                    .trim_end_matches('/')
                    .to_string(),
                h.entry_type().as_byte(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mode().unwrap() & 0o7777,
                e.link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The top layer of the only image of an oci-archive.
fn top_layer_of_archive(archive: &Path, dir: &Path) -> PathBuf {
    fs_err::create_dir_all(dir).unwrap();
    assert!(Command::new("tar")
        .args([
            "-C",
            dir.to_str().unwrap(),
            "-xf",
            archive.to_str().unwrap()
        ])
        .status()
        .unwrap()
        .success());
    top_layer_of_layout(dir)
}

/// The top layer blob of the only image of an OCI layout directory.
fn top_layer_of_layout(dir: &Path) -> PathBuf {
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs_err::read(p).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        dir.join("blobs/sha256")
            .join(&digest.as_str().unwrap()[7..])
    };
    let idx = json(dir.join("index.json"));
    let m = json(blob(&idx["manifests"][0]["digest"]));
    blob(&m["layers"].as_array().unwrap().last().unwrap()["digest"])
}

#[test]
fn run_step_layer_matches_buildah() {
    if !rustix::process::geteuid().is_root() {
        support::not_applicable(
            "buildah is driven as root here (its rootless mode needs its own user set-up)",
        );
        return;
    }
    if !Command::new("sh")
        .args(["-c", "command -v buildah"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        support::skip("buildah is not installed");
        return;
    }
    let e = require!(Env::new("buildah", Who::Me));
    // A base whose /root has a file, so that `rm -rf /root; mkdir /root` must hide it.
    let (code, _, err) = e.sh(&["--commit", "bb:1"], "touch /root/old");
    assert_eq!(code, 0, "{err}");
    let script = "set -e; rm /bin/cat; rm -rf /root; mkdir /root; touch /root/new; mkdir -p /d; echo x > /d/a; ln /d/a /d/b; \
                  chown 42:42 /d/a; cp /bin/busybox /suid; chmod 4755 /suid; mkdir -m 0700 /private; ln -s ../d/a /d/link";
    let (code, _, err) = e.sh(&["--commit", "mine:1"], script);
    assert_eq!(code, 0, "{err}");
    let base = e.dir.join("base.tar");
    let mine = e.dir.join("mine.tar");
    assert!(e
        .strata(&["save", "bb:1", "-o", base.to_str().unwrap()])
        .status
        .success());
    assert!(e
        .strata(&["save", "mine:1", "-o", mine.to_str().unwrap()])
        .status
        .success());
    let bh = e.dir.join("buildah");
    let b = |args: &[&str]| {
        let mut a = vec![
            "--storage-driver",
            "vfs",
            "--root",
            bh.join("root").to_str().unwrap().to_string().leak(),
            "--runroot",
            bh.join("run").to_str().unwrap().to_string().leak(),
        ];
        a.extend_from_slice(args);
        let o = Command::new("buildah").args(&a).output().unwrap();
        assert!(
            o.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let ctr = b(&[
        "from",
        "--pull-never",
        &format!("oci-archive:{}", base.display()),
    ]);
    b(&[
        "run",
        "--isolation",
        "chroot",
        &ctr,
        "--",
        "sh",
        "-c",
        script,
    ]);
    let theirs = e.dir.join("theirs.tar");
    b(&[
        "commit",
        "-q",
        &ctr,
        &format!("oci-archive:{}", theirs.display()),
    ]);
    let ours = layer_entries(&top_layer_of_archive(&mine, &e.dir.join("x-mine")));
    let theirs = layer_entries(&top_layer_of_archive(&theirs, &e.dir.join("x-theirs")));
    // buildah 1.28 also writes the mount points it made (/etc files, /dev, /proc, /sys, /run);
    // strata leaves them out.
    let buildah_only = [
        "etc",
        "etc/hostname",
        "etc/hosts",
        "etc/resolv.conf",
        "run",
        "dev",
        "proc",
        "sys",
    ];
    let theirs: Vec<Entry> = theirs
        .into_iter()
        .filter(|t| !buildah_only.contains(&t.0.as_str()))
        .collect();
    // A re-created directory: overlay marks it opaque, buildah's diff whites out each old child.
    let opaque: Vec<String> = ours
        .iter()
        .filter_map(|o| o.0.strip_suffix("/.wh..wh..opq").map(str::to_string))
        .collect();
    assert_eq!(opaque, vec!["root"]);
    let ours_n: Vec<&Entry> = ours
        .iter()
        .filter(|o| !o.0.ends_with("/.wh..wh..opq"))
        .collect();
    let theirs_n: Vec<&Entry> = theirs
        .iter()
        .filter(|t| !(t.0.starts_with("root/.wh.") && opaque.contains(&"root".to_string())))
        .collect();
    assert!(
        theirs.iter().any(|t| t.0 == "root/.wh.old"),
        "buildah whites out the old child: {theirs:?}"
    );
    assert_eq!(
        ours_n, theirs_n,
        "the same paths, types, owners, modes, links and whiteouts"
    );
    // And the two layers give the same filesystem on the same base.
    let theirs_archive = e.dir.join("theirs.tar");
    let r2 = e.dir.join("store2");
    let s2 = |args: &[&str]| {
        let mut a = vec!["--root", r2.to_str().unwrap()];
        a.extend_from_slice(args);
        let o = Command::new(strata()).args(&a).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // buildah's archive has no name: strata loads it untagged and prints its id.
    let loaded = s2(&["load", "-i", theirs_archive.to_str().unwrap()]);
    let id = loaded.trim().rsplit(' ').next().unwrap().to_string();
    s2(&["load", "-i", mine.to_str().unwrap()]);
    s2(&["unpack", &id, e.dir.join("fs-theirs").to_str().unwrap()]);
    s2(&["unpack", "mine:1", e.dir.join("fs-mine").to_str().unwrap()]);
    assert_eq!(tree(&e.dir.join("fs-mine")), tree(&e.dir.join("fs-theirs")));
}

/// Every path below `root` with its type, owner and mode.
fn tree(root: &Path) -> Vec<(String, u32, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs_err::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            out.push((
                p.strip_prefix(root).unwrap().display().to_string(),
                m.uid(),
                m.gid(),
                m.mode(),
            ));
            if m.is_dir() {
                todo.push(p);
            }
        }
    }
    out.retain(|(p, ..)| {
        ![
            "etc/hostname",
            "etc/hosts",
            "etc/resolv.conf",
            "run",
            "dev",
            "proc",
            "sys",
        ]
        .contains(&p.as_str())
    });
    out.sort();
    out
}

/// Layer entries with a re-created directory written either way (opaque marker or a whiteout per
/// old child) reduced to the same form.
fn normalized(entries: &[Entry]) -> Vec<Entry> {
    let opaque: Vec<String> = entries
        .iter()
        .filter_map(|e| e.0.strip_suffix("/.wh..wh..opq").map(str::to_string))
        .collect();
    let explicit: Vec<String> = entries
        .iter()
        .filter(|e| e.0.contains("/.wh.") && !e.0.ends_with(".wh..opq"))
        .map(|e| e.0.rsplit_once("/.wh.").unwrap().0.to_string())
        .collect();
    entries
        .iter()
        .filter(|e| !e.0.ends_with("/.wh..wh..opq"))
        .filter(|e| {
            !(e.0.contains("/.wh.")
                && (opaque.iter().any(|o| e.0.starts_with(&format!("{o}/")))
                    || explicit.iter().any(|d| {
                        e.0.starts_with(&format!("{d}/.wh."))
                            && entries.iter().any(|x| x.0 == *d && x.1 == b'5')
                    })))
        })
        .cloned()
        .collect()
}

#[test]
fn copy_snapshotter_gives_the_same_layer_and_says_so() {
    for who in runners().into_iter().filter(|w| w.many_ids()) {
        let e = require!(Env::new("copy", who));
        let (code, _, err) = e.sh(
            &["--commit", "bb:1"],
            "touch /root/old; mkdir -p /keep; touch /keep/k",
        );
        assert_eq!(code, 0, "{err}");
        let script = "set -e; rm /bin/cat; rm -rf /root; mkdir /root; touch /root/new; mkdir -p /d; echo x > /d/a; ln /d/a /d/b; \
                      chown 42:42 /d/a; cp /bin/busybox /suid; chmod 4755 /suid; ln -s ../d/a /d/link; rm /keep/k";
        let (code, _, err) = e.sh(&["--commit", "ov:1"], script);
        assert_eq!(code, 0, "{who:?}: {err}");
        let mut a = vec![
            "--root",
            e.root.as_str(),
            "run",
            "--commit",
            "cp:1",
            "bb:1",
            "sh",
            "-c",
            script,
        ];
        let o = cmd(who, strata(), &std::mem::take(&mut a))
            .env("STRATA_SNAPSHOTTER", "copy")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{who:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("note: using copied snapshots"));
        let mut layers = Vec::new();
        for img in ["ov:1", "cp:1"] {
            let out = e.dir.join(format!("{}.tar", img.replace(':', "-")));
            assert!(e
                .strata(&["save", img, "-o", out.to_str().unwrap()])
                .status
                .success());
            let x = e.dir.join(format!("x-{}", img.replace(':', "-")));
            layers.push(layer_entries(&top_layer_of_archive(&out, &x)));
        }
        assert!(
            layers[1].iter().any(|x| x.0 == "root/.wh.old"),
            "{who:?}: {:?}",
            layers[1]
        );
        assert!(
            layers[1].iter().any(|x| x.0 == "keep/.wh.k"),
            "{who:?}: {:?}",
            layers[1]
        );
        assert_eq!(normalized(&layers[0]), normalized(&layers[1]), "{who:?}");
    }
}

#[test]
fn ctrl_c_stops_the_step() {
    let e = require!(Env::new("sigint", Who::Me));
    use std::os::unix::process::CommandExt;
    let marker = "sleep 9931";
    let mut child = Command::new(strata())
        .args(["--root", &e.root, "run", "bb:1", "sh", "-c", marker])
        .process_group(0)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sleepers(marker) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = sleepers(marker);
    // What a terminal does on Ctrl-C: SIGINT to the foreground process group.
    let pgid = child.id() as i32;
    // SAFETY: kill(2) on a process group we created.
    unsafe { libc::kill(-pgid, libc::SIGINT) };
    let status = child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleepers(marker) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(started, 1, "the step started");
    assert!(!status.success());
    assert_eq!(sleepers(marker), 0, "no process outlives Ctrl-C");
    assert!(
        !fs_err::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&e.root),
        "no mount left behind"
    );
}

/// The pid of `strata --root ROOT run …` (not runuser's, not its sandbox session's).
fn strata_pid(root: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(c) = fs_err::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = String::from_utf8_lossy(&c)
            .split('\0')
            .map(str::to_string)
            .collect();
        if args[0].ends_with("/strata")
            && args.windows(2).any(|w| w[0] == "--root" && w[1] == root)
            && args.iter().any(|a| a == "run")
        {
            return Some(pid);
        }
    }
    None
}

/// `strata run FLAGS IMAGE ARGV` as `e`'s user, its stdout piped: waits for the line
/// `ready`, then sends strata each of `signals`, 300 ms apart. Returns (exit code, stdout,
/// stderr, seconds from the first signal to the end).
fn signalled(
    e: &Env,
    flags: &[&str],
    image_and_argv: &[&str],
    signals: &[i32],
) -> (i32, String, String, f64) {
    use std::io::BufRead;
    // No network: these runs need none, and a slirp4netns of theirs would be counted by the
    // test that checks its own go away.
    let mut a = vec!["--root", e.root.as_str(), "run", "--network", "none"];
    a.extend_from_slice(flags);
    a.extend_from_slice(image_and_argv);
    let mut child = cmd(e.who, strata(), &a)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first, "ready\n", "{:?}: {image_and_argv:?}", e.who);
    let pid = strata_pid(&e.root).expect("strata's pid");
    let t = Instant::now();
    for s in signals {
        // SAFETY: kill(2) of the strata this test started.
        unsafe { libc::kill(pid, *s) };
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        rest,
        String::from_utf8_lossy(&o.stderr).into_owned(),
        t.elapsed().as_secs_f64(),
    )
}

#[test]
fn signals_reach_the_processs_handlers_and_an_ignored_stop_is_killed() {
    for who in runners() {
        let e = require!(Env::new("sigproxy", who));
        let sh = |script: &str| ["bb:1", "sh", "-c", script].map(str::to_string);
        // A handler for each forwarded signal runs in the process; SIGTERM's ends it with 3.
        let handlers = "for s in HUP USR1 USR2 QUIT INT; do trap \"echo got-$s\" $s; done; \
             trap 'echo got-TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done";
        let argv = sh(handlers);
        let (code, out, err, _) = signalled(
            &e,
            &[],
            &argv.each_ref().map(|s| s.as_str()),
            &[
                libc::SIGHUP,
                libc::SIGUSR1,
                libc::SIGUSR2,
                libc::SIGQUIT,
                libc::SIGINT,
                libc::SIGTERM,
            ],
        );
        assert_eq!(
            (code, out.as_str()),
            (
                3,
                "got-HUP\ngot-USR1\ngot-USR2\ngot-QUIT\ngot-INT\ngot-TERM\n"
            ),
            "{who:?}: {err}"
        );
        // A process that ignores SIGTERM is killed after --stop-timeout.
        let ignores = sh("trap 'echo ignored' TERM INT; echo ready; while :; do sleep 0.1; done");
        let (code, out, err, took) = signalled(
            &e,
            &["--stop-timeout", "1"],
            &ignores.each_ref().map(|s| s.as_str()),
            &[libc::SIGTERM],
        );
        assert_eq!((code, out.as_str()), (137, "ignored\n"), "{who:?}: {err}");
        assert!(
            err.contains("did not end within 1s of SIGTERM: killing it"),
            "{who:?}: {err}"
        );
        assert!((0.9..8.0).contains(&took), "{who:?}: {took}s");
        // A second Ctrl-C kills at once (the default timeout, 10 s, is not waited for).
        let (code, out, err, took) = signalled(
            &e,
            &[],
            &ignores.each_ref().map(|s| s.as_str()),
            &[libc::SIGINT, libc::SIGINT],
        );
        assert_eq!((code, out.as_str()), (137, "ignored\n"), "{who:?}: {err}");
        assert!(err.contains("SIGINT again: killing the process"), "{who:?}");
        assert!(took < 5.0, "{who:?}: {took}s");
        // --sig-proxy=false: the signal ends strata, and the process with it.
        let marker = format!("sleep 99{}5", who as u8);
        let quiet = sh(&format!("echo ready; {marker}"));
        let (code, _, err, _) = signalled(
            &e,
            &["--sig-proxy=false"],
            &quiet.each_ref().map(|s| s.as_str()),
            &[libc::SIGTERM],
        );
        assert_eq!(
            code,
            if who == Who::Me { -1 } else { 143 },
            "{who:?}: {err}"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while sleepers(&marker) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(sleepers(&marker), 0, "{who:?}: the process outlived strata");
    }
}

#[test]
fn a_terminal_of_the_sandboxs_own_devpts_with_console_and_term() {
    require!(
        Path::new("/usr/bin/script").exists(),
        "script (util-linux) is not installed: no terminal to test -t with"
    );
    for who in runners() {
        let e = require!(Env::new("devpts", who));
        let show = "tty; [ -c /dev/console ] && echo console; echo TERM=$TERM";
        // The terminal is /dev/pts/0 of the sandbox's devpts (ttyname resolves it), bound
        // over /dev/console; TERM is the caller's.
        let (code, out) = on_a_terminal(
            &e,
            "export TERM=vt220",
            &["--network", "none", "-t", "bb:1", "sh", "-c", show],
            &[],
        );
        assert_eq!(
            (code, out.as_str()),
            (0, "/dev/pts/0\nconsole\nTERM=vt220\n"),
            "{who:?}"
        );
        // xterm when the caller has none; -e and the image's ENV win.
        let (_, out) = on_a_terminal(
            &e,
            "unset TERM",
            &["--network", "none", "-t", "bb:1", "sh", "-c", "echo $TERM"],
            &[],
        );
        assert_eq!(out, "xterm\n", "{who:?}");
        let (_, out) = on_a_terminal(
            &e,
            "export TERM=vt220",
            &[
                "--network",
                "none",
                "-t",
                "-e",
                "TERM=dumb",
                "bb:1",
                "sh",
                "-c",
                "echo $TERM",
            ],
            &[],
        );
        assert_eq!(out, "dumb\n", "{who:?}");
        let ctx = e.dir.join("term-ctx");
        let o = cmd(
            who,
            "sh",
            &[
                "-c",
                &format!(
                    "mkdir -p {0} && printf 'FROM bb:1\\nENV TERM=linux\\n' > {0}/Dockerfile",
                    ctx.display()
                ),
            ],
        )
        .output()
        .unwrap();
        assert!(o.status.success());
        let o = e.strata(&["build", "-q", "-t", "bbterm", ctx.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (_, out) = on_a_terminal(
            &e,
            "export TERM=vt220",
            &[
                "--network",
                "none",
                "-t",
                "bbterm",
                "sh",
                "-c",
                "echo $TERM",
            ],
            &[],
        );
        assert_eq!(out, "linux\n", "{who:?}");
        // Without -t there is no terminal, no console and no TERM.
        let (_, out, _) = e.sh(
            &["--network", "none"],
            "tty; [ -e /dev/console ] || echo no-console; echo TERM=$TERM",
        );
        assert_eq!(out, "not a tty\nno-console\nTERM=\n", "{who:?}");
        if who.many_ids() {
            // A non-root user owns its terminal, so it can open it by name.
            let (code, out) = on_a_terminal(
                &e,
                "true",
                &[
                    "--network",
                    "none",
                    "-t",
                    "--user",
                    "nobody",
                    "bb:1",
                    "sh",
                    "-c",
                    "stat -c %u $(tty); echo mine > $(tty)",
                ],
                &[],
            );
            assert_eq!((code, out.as_str()), (0, "65534\nmine\n"), "{who:?}");
        }
    }
}

/// The python base image of `scripts/test-deps.sh` loaded into `e`'s store as `python`.
fn load_python(e: &Env) -> bool {
    let layout = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-images/oci/python");
    if !layout.join("index.json").exists() {
        support::skip("target/test-images/oci/python is missing (scripts/test-deps.sh makes it)");
        return false;
    }
    let o = e.strata(&["load", "-i", layout.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    true
}

#[test]
fn python_resolves_its_terminal_and_shuts_down_gracefully_on_sigterm() {
    for who in runners().into_iter().filter(|w| *w != Who::NoSub) {
        let e = require!(Env::new("python", who));
        if !load_python(&e) {
            return;
        }
        // A server's shutdown: SIGTERM's handler finishes the work in hand, then exits 0.
        // ("ready" by os.write: a handler that prints while print() still holds stdout's
        // buffer raises "reentrant call".)
        let app = "import os, signal, sys, time\n\
                   def stop(sig, frame):\n    print('draining', flush=True); time.sleep(0.3); print('bye', flush=True); sys.exit(0)\n\
                   signal.signal(signal.SIGTERM, stop)\nos.write(1, b'ready\\n')\n\
                   while True: time.sleep(0.1)\n";
        let (code, out, err, _) =
            signalled(&e, &[], &["python", "python3", "-c", app], &[libc::SIGTERM]);
        assert_eq!(
            (code, out.as_str()),
            (0, "draining\nbye\n"),
            "{who:?}: {err}"
        );
        if Path::new("/usr/bin/script").exists() {
            let (code, out) = on_a_terminal(
                &e,
                "true",
                &[
                    "--network",
                    "none",
                    "-t",
                    "python",
                    "python3",
                    "-c",
                    "import os, sys; print(os.ttyname(0), os.ttyname(2), sys.stdout.isatty())",
                ],
                &[],
            );
            assert_eq!(
                (code, out.as_str()),
                (0, "/dev/pts/0 /dev/pts/0 True\n"),
                "{who:?}"
            );
        }
    }
}
