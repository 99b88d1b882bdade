//! Binaries of other platforms run under QEMU registered with binfmt_misc in a user namespace
//! of the test's own (`strata::sandbox::binfmt`), as root and as the unprivileged `strata-test`:
//! Debian's busybox-static for arm64, arm/v7, ppc64le, s390x, 386 and riscv64 print their
//! machine, the host's handlers are copied where a namespace mounts its own instance, and the
//! host's binfmt_misc is the same before and after (nothing is ever registered on it). In the
//! unprivileged pass of `make test` (scripts/test-as-user.sh) the tests that loop over
//! [`runners`] have none: the root pass ran them as strata-test.
//!
//! The images come from scripts/make-foreign-bases.sh (run by scripts/test-deps.sh into
//! target/test-images); QEMU from Debian's qemu-user-static. Where either, a test user or
//! Linux 6.7 is missing the test says SKIPPED; with STRATA_REQUIRE_TOOLS=1 (CI) it fails.
//!
//! The namespaces: util-linux's `unshare --user --map-root-user --mount` runs this test binary
//! again (its `#[ignore]`d entry `child`, told what to do by environment variables), which
//! calls the library the way strata's sandbox session will.

#[macro_use]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use strata::oci::Platform;
use strata::sandbox::binfmt::{self, How, Machine};

/// The foreign busybox images: (layout name, platform, what `uname -m` prints under QEMU).
/// 386 prints i686 only when emulated: natively a 32-bit process on an x86-64 kernel reads
/// x86_64.
const BUSYBOXES: &[(&str, &str, &str)] = &[
    ("busybox-arm64", "linux/arm64", "aarch64"),
    ("busybox-armv7", "linux/arm/v7", "armv7l"),
    ("busybox-ppc64le", "linux/ppc64le", "ppc64le"),
    ("busybox-s390x", "linux/s390x", "s390x"),
    ("busybox-386", "linux/386", "i686"),
    ("busybox-riscv64", "linux/riscv64", "riscv64"),
];

fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-images/oci")
}

/// What this machine needs for these tests, or why it cannot run them.
fn ready() -> bool {
    let kernel = binfmt::kernel_release();
    if binfmt::parse_kernel_version(&kernel).is_none_or(|v| v < binfmt::USERNS_BINFMT_SINCE) {
        support::skip(&format!(
            "Linux {kernel} cannot mount binfmt_misc in a user namespace (6.7 can)"
        ));
        return false;
    }
    if binfmt::host_platform().architecture != "amd64" {
        support::skip("these tests expect an x86-64 host (their foreign images include arm64)");
        return false;
    }
    let m = Machine::detect();
    for (_, platform, _) in BUSYBOXES {
        if let Err(e) = m.how(&Platform::parse_specifier(platform, &m.platform).unwrap()) {
            if matches!(e, binfmt::Error::NoQemu { .. }) {
                support::skip(&format!(
                    "{e}: apt-get install --no-install-recommends qemu-user-static"
                ));
                return false;
            }
        }
    }
    for (name, _, _) in BUSYBOXES {
        if !images().join(name).join("index.json").exists() {
            support::skip(&format!(
                "{} is missing: scripts/make-foreign-bases.sh target/test-images makes it",
                images().join(name).display()
            ));
            return false;
        }
    }
    true
}

/// A directory every test user can use, removed when the test ends.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strata-binfmt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    fs_err::create_dir_all(&d).unwrap();
    fs_err::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    support::removed_at_the_end(&d);
    d
}

/// The layout's single layer unpacked into `dir/NAME` (tar, as the user running the tests).
fn unpack(name: &str, dir: &Path) -> PathBuf {
    let layout = images().join(name);
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs_err::read(blob(m)).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let root = dir.join(name);
    fs_err::create_dir_all(&root).unwrap();
    let o = Command::new("tar")
        .arg("-xzf")
        .arg(blob(layer))
        .arg("-C")
        .arg(&root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    root
}

/// The test binary, where strata-test can run it.
fn exe_copy(dir: &Path) -> PathBuf {
    let dest = dir.join("binfmt-test");
    if !dest.exists() {
        fs_err::copy(std::env::current_exe().unwrap(), &dest).unwrap();
        fs_err::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dest
}

/// The host's binfmt_misc as the tests may see it: its entries, its status, and how many
/// binfmt_misc mounts this mount namespace has.
fn host_binfmt() -> (Vec<String>, String, usize) {
    let dir = Path::new("/proc/sys/fs/binfmt_misc");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let status = fs_err::read_to_string(dir.join("status")).unwrap_or_default();
    let mounts = fs_err::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" binfmt_misc "))
        .count();
    (names, status, mounts)
}

/// This test binary's `child` entry in new user and mount namespaces (util-linux's unshare,
/// the caller's uid mapped to root), as `user`, with `vars`.
fn in_namespaces(user: Option<&str>, dir: &Path, vars: &[(&str, String)]) -> Output {
    let exe = exe_copy(dir);
    let mut c = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "env"]);
            c
        }
        None => Command::new("env"),
    };
    c.arg(format!(
        "PATH={}",
        std::env::var("PATH").unwrap_or_default()
    ));
    c.arg(format!("TMPDIR={}", dir.display()));
    for (k, v) in vars {
        c.arg(format!("{k}={v}"));
    }
    c.args(["unshare", "--user", "--map-root-user", "--mount", "--"])
        .arg(exe)
        .args([
            "--exact",
            "child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir(dir)
        .stdin(Stdio::null());
    c.output().unwrap()
}

/// `KEY=VALUE` lines the child printed.
fn results(o: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        // libtest prints "test child ... " before the first line.
        .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn result<'a>(r: &'a [(String, String)], key: &str) -> Option<&'a str> {
    r.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The child: does what STRATA_BINFMT_ROLE says, inside the namespaces `in_namespaces` made,
/// and prints `RESULT key=value` lines.
#[test]
#[ignore = "run by the other tests inside new namespaces"]
fn child() {
    let role = std::env::var("STRATA_BINFMT_ROLE").unwrap_or_default();
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let say = |k: &str, v: &str| println!("RESULT {k}={}", v.replace('\n', "\\n"));
    let run = |prog: &Path, arg0: Option<&str>, args: &[&str]| -> String {
        let mut c = Command::new(prog);
        if let Some(a) = arg0 {
            std::os::unix::process::CommandExt::arg0(&mut c, a);
        }
        match c.args(args).stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Ok(o) => format!(
                "exit {:?}: {}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("error {}", e.raw_os_error().unwrap_or(0)),
        }
    };
    let machine = Machine::detect();
    let platforms: Vec<Platform> = var("STRATA_BINFMT_PLATFORMS")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Platform::parse_specifier(s, &machine.platform).unwrap())
        .collect();
    let roots: Vec<PathBuf> = var("STRATA_BINFMT_ROOTS")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    let mount_point = PathBuf::from(var("STRATA_BINFMT_MOUNT"));
    match role.as_str() {
        // Register every platform's QEMU, twice (the second adds nothing), and run each
        // busybox; then unmount, after which the handlers are gone.
        "register" => {
            let hows: Vec<How> = platforms
                .iter()
                .map(|p| machine.how(p).unwrap())
                .chain([How::Native])
                .collect();
            for h in &hows {
                if let How::Namespace { emulator, qemu } = h {
                    say(
                        &format!("qemu {}", emulator.target),
                        &format!(
                            "{} {:?} {}",
                            qemu.path.display(),
                            qemu.version,
                            qemu.flags()
                        ),
                    );
                }
            }
            let r = binfmt::register(&mount_point, &hows).unwrap();
            say("added", &r.added.join(","));
            let again = binfmt::register(&mount_point, &hows).unwrap();
            say("added_again", &again.added.join(","));
            for (p, root) in platforms.iter().zip(&roots) {
                let bb = root.join("bin/busybox");
                say(&format!("uname {p}"), &run(&bb, None, &["uname", "-m"]));
                // argv[0] reaches the program (the P flag).
                say(&format!("arg0 {p}"), &run(&bb, Some("uname"), &["-m"]));
            }
            // Detached from every mount point, the instance lives while a descriptor on it
            // is open (Registered holds one), and its handlers with it.
            drop(again);
            rustix::mount::unmount(&mount_point, rustix::mount::UnmountFlags::DETACH).unwrap();
            let bb = roots[0].join("bin/busybox");
            say("detached_pinned", &run(&bb, None, &["uname", "-m"]));
            drop(r);
            say("after_unmount", &run(&bb, None, &["uname", "-m"]));
        }
        // Act as a host: register arm64 here, then let a nested namespace (the role
        // "nested") find the handler and use it.
        "host" => {
            let p = &platforms[0];
            binfmt::register(&mount_point, &[machine.how(p).unwrap()]).unwrap();
            let exe = std::env::current_exe().unwrap();
            let o = Command::new("unshare")
                .args(["--user", "--map-root-user", "--mount", "--"])
                .arg(exe)
                .args([
                    "--exact",
                    "child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("STRATA_BINFMT_ROLE", "nested")
                .env("STRATA_BINFMT_HOST", &mount_point)
                .env("STRATA_BINFMT_MOUNT", var("STRATA_BINFMT_MOUNT2"))
                .stdin(Stdio::null())
                .output()
                .unwrap();
            print!("{}", String::from_utf8_lossy(&o.stdout));
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
        }
        "nested" => {
            let bb = roots[0].join("bin/busybox");
            // The handler of the namespace above applies here, as the host's would.
            say("inherited", &run(&bb, None, &["uname", "-m"]));
            let m = Machine {
                host_handlers: binfmt::handlers_in(Path::new(&var("STRATA_BINFMT_HOST"))),
                // No QEMU of strata's: the host's handler is the only way.
                qemu: binfmt::QemuSearch {
                    dir: Some(PathBuf::from("/nonexistent-qemu-dir")),
                    path: None,
                },
                ..Machine::detect()
            };
            let how = m.how(&platforms[0]).unwrap();
            say(
                "how",
                match &how {
                    How::Host { .. } => "host",
                    How::Namespace { .. } => "namespace",
                    How::Native => "native",
                },
            );
            // An instance of its own hides the handlers above it ...
            let empty = binfmt::register(&mount_point, &[]).unwrap();
            say("own_instance_empty", &run(&bb, None, &["uname", "-m"]));
            // ... so the host's is copied into it.
            let r = binfmt::register(&mount_point, &[how]).unwrap();
            say("copied", &r.added.join(","));
            say("own_instance_copy", &run(&bb, None, &["uname", "-m"]));
            drop((empty, r));
        }
        // The arm64 python base (Debian's python3 on debootstrap's arm64 minbase) runs in a
        // chroot, its interpreter and libraries all arm64.
        "python" => {
            binfmt::register(&mount_point, &[machine.how(&platforms[0]).unwrap()]).unwrap();
            let o = Command::new("chroot")
                .arg(&roots[0])
                .args([
                    "/usr/bin/python3",
                    "-c",
                    "import platform, ssl, venv, ensurepip, sys; print(platform.machine(), sys.version_info[:2])",
                ])
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            say(
                "python",
                &format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout).trim(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            );
        }
        other => panic!("unknown role {other:?}"),
    }
}

#[test]
fn foreign_busyboxes_run_under_qemu_registered_in_a_user_namespace_only() {
    if !ready() {
        return;
    }
    let before = host_binfmt();
    for user in support::runners() {
        let dir = scratch(&format!("register-{}", user.unwrap_or("me")));
        let roots: Vec<PathBuf> = BUSYBOXES.iter().map(|(n, _, _)| unpack(n, &dir)).collect();
        let mount = dir.join("binfmt");
        fs_err::create_dir(&mount).unwrap();
        fs_err::set_permissions(&mount, std::fs::Permissions::from_mode(0o777)).unwrap();
        let join = |v: Vec<String>| v.join(",");
        let o = in_namespaces(
            user,
            &dir,
            &[
                ("STRATA_BINFMT_ROLE", "register".into()),
                (
                    "STRATA_BINFMT_PLATFORMS",
                    join(BUSYBOXES.iter().map(|b| b.1.to_string()).collect()),
                ),
                (
                    "STRATA_BINFMT_ROOTS",
                    join(roots.iter().map(|r| r.display().to_string()).collect()),
                ),
                ("STRATA_BINFMT_MOUNT", mount.display().to_string()),
            ],
        );
        let r = results(&o);
        let log = format!(
            "{user:?}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{log}");
        // Every foreign platform once (the host's own is never registered), then nothing.
        assert_eq!(
            result(&r, "added"),
            Some("qemu-aarch64,qemu-arm,qemu-ppc64le,qemu-s390x,qemu-i386,qemu-riscv64"),
            "{log}"
        );
        assert_eq!(result(&r, "added_again"), Some(""), "{log}");
        for (_, platform, machine) in BUSYBOXES {
            assert_eq!(
                result(&r, &format!("uname {platform}")),
                Some(*machine),
                "{log}"
            );
            assert_eq!(
                result(&r, &format!("arg0 {platform}")),
                Some(*machine),
                "{log}"
            );
        }
        assert_eq!(result(&r, "detached_pinned"), Some("aarch64"), "{log}");
        // The handlers lived as long as the instance did.
        assert_eq!(
            result(&r, "after_unmount"),
            Some(format!("error {}", libc::ENOEXEC).as_str()),
            "{log}"
        );
        // Outside the namespace nothing runs them: the host registered nothing.
        if !before.0.iter().any(|n| n.contains("aarch64")) {
            let e = Command::new(roots[0].join("bin/busybox"))
                .args(["uname", "-m"])
                .output()
                .unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOEXEC), "{e}");
        }
        assert_eq!(
            host_binfmt(),
            before,
            "{user:?}: the host's binfmt_misc changed"
        );
    }
}

#[test]
fn the_hosts_handlers_apply_below_it_and_are_copied_into_an_own_instance() {
    if !ready() {
        return;
    }
    let before = host_binfmt();
    for user in support::runners() {
        let dir = scratch(&format!("host-{}", user.unwrap_or("me")));
        let root = unpack("busybox-arm64", &dir);
        let mounts: Vec<PathBuf> = ["host", "own"]
            .iter()
            .map(|m| {
                let p = dir.join(m);
                fs_err::create_dir(&p).unwrap();
                fs_err::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
                p
            })
            .collect();
        let o = in_namespaces(
            user,
            &dir,
            &[
                ("STRATA_BINFMT_ROLE", "host".into()),
                ("STRATA_BINFMT_PLATFORMS", "linux/arm64".into()),
                ("STRATA_BINFMT_ROOTS", root.display().to_string()),
                ("STRATA_BINFMT_MOUNT", mounts[0].display().to_string()),
                ("STRATA_BINFMT_MOUNT2", mounts[1].display().to_string()),
            ],
        );
        let r = results(&o);
        let log = format!(
            "{user:?}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{log}");
        assert_eq!(result(&r, "inherited"), Some("aarch64"), "{log}");
        assert_eq!(result(&r, "how"), Some("host"), "{log}");
        assert_eq!(
            result(&r, "own_instance_empty"),
            Some(format!("error {}", libc::ENOEXEC).as_str()),
            "{log}"
        );
        assert_eq!(result(&r, "copied"), Some("qemu-aarch64"), "{log}");
        assert_eq!(result(&r, "own_instance_copy"), Some("aarch64"), "{log}");
        assert_eq!(
            host_binfmt(),
            before,
            "{user:?}: the host's binfmt_misc changed"
        );
    }
}

#[test]
fn probing_registers_in_a_throwaway_namespace_and_reports_each_failure() {
    if !ready() {
        return;
    }
    let before = host_binfmt();
    let m = Machine::detect();
    let arm64 =
        binfmt::emulator_for(&Platform::parse_specifier("arm64", &m.platform).unwrap()).unwrap();
    let good = arm64
        .register_line(Path::new("/usr/bin/qemu-aarch64-static"), "POCF")
        .unwrap();
    let missing = arm64
        .register_line(Path::new("/nonexistent/qemu-aarch64-static"), "POCF")
        .unwrap();
    let r = binfmt::probe(&[
        ("qemu-aarch64".into(), good.clone()),
        ("qemu-aarch64".into(), good),
        ("x".into(), missing),
    ])
    .unwrap();
    let codes: Vec<Option<i32>> = r
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.raw_os_error().unwrap_or(-1)))
        .collect();
    // The second registration of one name is refused; a missing interpreter is found at
    // once (the F flag opens it).
    assert_eq!(codes, vec![None, Some(libc::EEXIST), Some(libc::ENOENT)]);
    // What doctor shows: amd64 native, the others emulated in strata's namespace.
    let all = binfmt::available_platforms();
    for s in &all {
        match s.platform.architecture.as_str() {
            "amd64" => assert_eq!(s.how.as_ref().ok(), Some(&How::Native), "{s:?}"),
            _ => assert!(
                matches!(s.how, Ok(How::Namespace { .. })),
                "{}: {:?}",
                s.platform,
                s.how
            ),
        }
    }
    assert_eq!(host_binfmt(), before, "the host's binfmt_misc changed");
}

#[test]
fn doctor_lists_each_platform_and_how_it_runs() {
    if !ready() {
        return;
    }
    let before = host_binfmt();
    for user in support::runners() {
        let dir = scratch(&format!("doctor-{}", user.unwrap_or("me")));
        let empty = dir.join("no-qemu");
        fs_err::create_dir(&empty).unwrap();
        let doctor = |qemu_dir: Option<&Path>| {
            let mut c = match user {
                Some(u) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", u, "--", support::strata_bin()]);
                    c
                }
                None => Command::new(support::strata_bin()),
            };
            c.arg("doctor")
                .env_remove("STRATA_QEMU_DIR")
                .env("TMPDIR", &dir)
                .current_dir(&dir);
            if let Some(d) = qemu_dir {
                c.env("STRATA_QEMU_DIR", d);
            }
            let o = c.output().unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let out = doctor(None);
        for line in [
            "ok   platform linux/amd64: native",
            "ok   platform linux/arm64: emulated in strata's user namespace (/usr/bin/qemu-aarch64-static ",
            "ok   platform linux/arm/v7 (and v6, v5): emulated in strata's user namespace (/usr/bin/qemu-arm-static ",
            "ok   platform linux/386: emulated in strata's user namespace (/usr/bin/qemu-i386-static ",
        ] {
            assert!(out.contains(line), "{user:?}: no {line:?} in\n{out}");
        }
        // Without QEMU: each foreign platform says what is missing and the fix.
        let out = doctor(Some(&empty));
        let want = format!(
            "WARN platform linux/arm64: unavailable: linux/arm64: no qemu-aarch64-static (looked in STRATA_QEMU_DIR={})",
            empty.display()
        );
        assert!(out.contains(&want), "{user:?}: no {want:?} in\n{out}");
        assert!(
            out.contains("     fix: install QEMU's static user-mode emulators"),
            "{user:?}: {out}"
        );
        assert!(out.contains("ok   platform linux/amd64: native"), "{out}");
    }
    assert_eq!(host_binfmt(), before, "the host's binfmt_misc changed");
}

#[test]
fn the_arm64_python_base_runs_under_emulation() {
    if !ready() {
        return;
    }
    require!(images().join("python-arm64/index.json").exists(), "target/test-images/oci/python-arm64 is missing: scripts/make-foreign-bases.sh target/test-images makes it (Linux 6.7+)");
    let users = support::runners();
    if users.is_empty() {
        return;
    }
    let before = host_binfmt();
    let dir = scratch("python");
    let root = unpack("python-arm64", &dir);
    let mount = dir.join("binfmt");
    fs_err::create_dir(&mount).unwrap();
    fs_err::set_permissions(&mount, std::fs::Permissions::from_mode(0o777)).unwrap();
    for user in users {
        let o = in_namespaces(
            user,
            &dir,
            &[
                ("STRATA_BINFMT_ROLE", "python".into()),
                ("STRATA_BINFMT_PLATFORMS", "linux/arm64".into()),
                ("STRATA_BINFMT_ROOTS", root.display().to_string()),
                ("STRATA_BINFMT_MOUNT", mount.display().to_string()),
            ],
        );
        let r = results(&o);
        let log = format!(
            "{user:?}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(result(&r, "python"), Some("aarch64 (3, 11)"), "{log}");
    }
    assert_eq!(host_binfmt(), before, "the host's binfmt_misc changed");
}
