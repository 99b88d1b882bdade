//! Foreign platforms run under QEMU in strata's own user namespace (`strata run --platform`),
//! as root and as the unprivileged `strata-test`, with nothing registered on the host: the
//! sandbox session mounts a binfmt_misc instance of its own and registers Debian's
//! qemu-user-static there with the F flag (see `strata::sandbox::emulation`). The images are
//! the foreign bases of scripts/make-foreign-bases.sh (target/test-images/oci), loaded into a
//! store of the test's own. The errors (no QEMU, a platform string that is not one) are checked
//! as the user reads them; a platform strata cannot emulate and an old kernel are unit tests of
//! `sandbox::emulation` (no image here is of such a platform). The fallback to the host's
//! handlers runs for real in a user namespace of the test's own standing for the host (no test
//! may register on the host itself).
//!
//! Where Linux 6.7, QEMU, the images or the test user are missing the test says SKIPPED (a
//! failure under CI).

#[macro_use]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata::sandbox::binfmt;

/// (layout, platform, what `uname -m` prints under QEMU).
const IMAGES: &[(&str, &str, &str)] = &[
    ("busybox-arm64", "linux/arm64", "aarch64"),
    ("busybox-riscv64", "linux/riscv64", "riscv64"),
    ("debian-arm64", "linux/arm64", "aarch64"),
];

fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-images/oci")
}

/// What these tests need, or why they cannot run.
fn ready(layouts: &[&str]) -> bool {
    let kernel = binfmt::kernel_release();
    if binfmt::parse_kernel_version(&kernel).is_none_or(|v| v < binfmt::USERNS_BINFMT_SINCE) {
        support::skip(&format!(
            "Linux {kernel} cannot mount binfmt_misc in a user namespace (6.7 can)"
        ));
        return false;
    }
    if binfmt::host_platform().architecture != "amd64" {
        support::skip(
            "these tests expect an x86-64 host (their foreign images are arm64 and riscv64)",
        );
        return false;
    }
    for q in ["qemu-aarch64-static", "qemu-riscv64-static"] {
        if !support::have(q) {
            support::skip(&format!(
                "no {q}: apt-get install --no-install-recommends qemu-user-static"
            ));
            return false;
        }
    }
    for name in layouts {
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

/// The host's binfmt_misc handlers (names), to show that nothing was registered on it.
fn host_handlers() -> Vec<String> {
    let mut v: Vec<String> = binfmt::host_handlers()
        .into_iter()
        .map(|h| h.name)
        .collect();
    v.sort();
    v
}

/// A test's directory, every user's to use, with a store per runner; the stores are pruned
/// (as their user) and the directory removed when it is dropped.
struct Env {
    dir: PathBuf,
    stores: Vec<(Option<&'static str>, PathBuf)>,
}

impl Env {
    fn new(name: &str) -> Env {
        let dir = std::env::temp_dir().join(format!("strata-emu-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir).unwrap();
        fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        Env {
            dir,
            stores: Vec::new(),
        }
    }

    /// `strata ARGS` as `who` with `env` set, on who's store.
    fn strata(&mut self, who: Option<&'static str>, env: &[(&str, &str)], args: &[&str]) -> Output {
        let store = self.dir.join(format!("store-{}", who.unwrap_or("me")));
        if !self.stores.iter().any(|(_, s)| *s == store) {
            self.stores.push((who, store.clone()));
        }
        let mut c = match who {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", support::strata_bin()]);
                c
            }
            None => Command::new(support::strata_bin()),
        };
        c.arg("--root").arg(&store).args(args);
        c.env_remove("STRATA_ROOT").env_remove(binfmt::QEMU_DIR_ENV);
        for (k, v) in env {
            c.env(k, v);
        }
        c.current_dir("/tmp").output().unwrap()
    }

    /// The layout `name` copied where every user reads it, then loaded into who's store as
    /// `name:latest`.
    fn load(&mut self, who: Option<&'static str>, name: &str) {
        let copy = self.dir.join("layouts").join(name);
        if !copy.exists() {
            fs_err::create_dir_all(copy.parent().unwrap()).unwrap();
            let o = Command::new("cp")
                .arg("-r")
                .arg(images().join(name))
                .arg(&copy)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", support::text(&o.stderr));
            Command::new("chmod")
                .args(["-R", "a+rX"])
                .arg(self.dir.join("layouts"))
                .status()
                .unwrap();
        }
        let o = self.strata(who, &[], &["load", "-i", copy.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "load {name}: {}",
            support::text(&o.stderr)
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (who, _) in std::mem::take(&mut self.stores) {
            let _ = self.strata(who, &[], &["prune", "--all"]);
        }
        let _ = Command::new("chmod")
            .args(["-R", "u+rwX"])
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn run_platform_runs_a_foreign_image_under_qemu_in_strata_s_own_namespace() {
    let layouts: Vec<&str> = IMAGES.iter().map(|(l, _, _)| *l).collect();
    require!(ready(&layouts), "see above");
    let before = host_handlers();
    let mut env = Env::new("run");
    for who in support::runners() {
        for (layout, platform, machine) in IMAGES {
            env.load(who, layout);
            let o = env.strata(
                who,
                &[],
                &[
                    "run",
                    "--network",
                    "none",
                    "--platform",
                    platform,
                    layout,
                    "uname",
                    "-m",
                ],
            );
            assert!(
                o.status.success(),
                "{who:?} {layout}: {}",
                support::text(&o.stderr)
            );
            assert_eq!(
                support::text(&o.stdout),
                format!("{machine}\n"),
                "{who:?} {layout}"
            );
        }
        // Without --platform the image's own platform is run, emulated as well (as docker).
        let o = env.strata(
            who,
            &[],
            &["run", "--network", "none", "busybox-arm64", "uname", "-m"],
        );
        assert_eq!(
            support::text(&o.stdout),
            "aarch64\n",
            "{who:?}: {}",
            support::text(&o.stderr)
        );
        // A Debian userland: its dynamic loader and libc are arm64's too.
        let o = env.strata(
            who,
            &[],
            &[
                "run",
                "--network",
                "none",
                "--platform",
                "linux/arm64",
                "debian-arm64",
                "sh",
                "-c",
                "dpkg --print-architecture; test -e /usr/bin/qemu-aarch64-static || echo no qemu inside",
            ],
        );
        assert_eq!(
            support::text(&o.stdout),
            "arm64\nno qemu inside\n",
            "{who:?}: {}",
            support::text(&o.stderr)
        );
    }
    assert_eq!(host_handlers(), before, "the host's binfmt_misc changed");
}

#[test]
fn a_platform_without_qemu_or_a_malformed_one_is_a_clear_error() {
    require!(ready(&["busybox-arm64"]), "see above");
    let mut env = Env::new("errors");
    let empty = env.dir.join("no-qemu");
    fs_err::create_dir_all(&empty).unwrap();
    for who in support::runners() {
        env.load(who, "busybox-arm64");
        // QEMU looked for in an empty directory only.
        let o = env.strata(
            who,
            &[(binfmt::QEMU_DIR_ENV, empty.to_str().unwrap())],
            &[
                "run",
                "--network",
                "none",
                "--platform",
                "linux/arm64",
                "busybox-arm64",
                "true",
            ],
        );
        let err = support::text(&o.stderr);
        assert!(!o.status.success(), "{who:?}: {err}");
        assert!(
            err.contains(&format!(
                "cannot run linux/arm64 binaries: no qemu-aarch64-static (looked in STRATA_QEMU_DIR={})",
                empty.display()
            )),
            "{who:?}: {err}"
        );
        assert!(
            err.contains("hint: install QEMU's static user-mode emulators (Debian and Ubuntu: sudo apt-get install --no-install-recommends qemu-user-static"),
            "{who:?}: {err}"
        );
        // Not a platform at all.
        let o = env.strata(
            who,
            &[],
            &[
                "run",
                "--platform",
                "linux/arm64/v8/x",
                "busybox-arm64",
                "true",
            ],
        );
        let err = support::text(&o.stderr);
        assert!(!o.status.success(), "{who:?}: {err}");
        assert!(
            err.contains("platform \"linux/arm64/v8/x\": more parts than os/arch/variant"),
            "{who:?}: {err}"
        );
    }
}

/// The fallback to handlers strata did not register (a kernel before 6.7, a seccomp profile
/// that refuses the mount, or `STRATA_EMULATION=host`), for real and without touching the host:
/// the test makes a user namespace that stands for the host, mounts a binfmt_misc instance of
/// its own over /proc/sys/fs/binfmt_misc there and registers QEMU in it; strata, started inside
/// with STRATA_EMULATION=host, registers nothing and its steps run through that handler (the
/// kernel looks binfmt_misc up from the nearest enclosing namespace that mounted one). With the
/// handler removed, the error names the platform and the fix; without the variable, strata
/// (root of that namespace, with only root mapped) registers QEMU itself one namespace down.
#[test]
fn foreign_binaries_run_through_the_host_s_handler_when_strata_registers_none() {
    require!(ready(&["busybox-arm64"]), "see above");
    require!(support::have("unshare"), "no unshare (util-linux)");
    let before = host_handlers();
    let qemu = which("qemu-aarch64-static");
    // QEMU's aarch64 magic and mask, as sandbox::binfmt derives them; F: opened now.
    let e = binfmt::emulator_for(
        &strata::oci::Platform::parse_specifier("linux/arm64", &strata::oci::Platform::host())
            .unwrap(),
    )
    .unwrap();
    let line = String::from_utf8(e.register_line(&qemu, "OCF").unwrap()).unwrap();
    let mut env = Env::new("host-handler");
    for who in support::runners() {
        env.load(who, "busybox-arm64");
        let store = env.dir.join(format!("store-{}", who.unwrap_or("me")));
        let script = r#"
            set -u
            mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || exit 90
            printf '%s' "$LINE" > /proc/sys/fs/binfmt_misc/register || exit 91
            run() { "$S" --root "$R" run --network none --platform linux/arm64 busybox-arm64 uname -m; }
            echo "host: $(STRATA_EMULATION=host run 2>&1)"
            echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64
            echo "none: $(STRATA_EMULATION=host run 2>&1)"
            echo "own: $(run 2>&1)"
            ls /proc/sys/fs/binfmt_misc | tr '\n' ' '
        "#;
        let mut c = match who {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", "unshare"]);
                c
            }
            None => Command::new("unshare"),
        };
        let o = c
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", script])
            .env("LINE", &line)
            .env("S", support::strata_bin())
            .env("R", &store)
            .env_remove("STRATA_EMULATION")
            .env_remove(binfmt::QEMU_DIR_ENV)
            .current_dir("/tmp")
            .output()
            .unwrap();
        let out = support::text(&o.stdout);
        assert!(
            o.status.success(),
            "{who:?}: {out}{}",
            support::text(&o.stderr)
        );
        assert!(out.contains("host: aarch64\n"), "{who:?}: {out}");
        assert!(
            out.contains("none: error: cannot create the sandbox: cannot run linux/arm64 binaries: STRATA_EMULATION=host uses only the host's binfmt_misc handlers, and the host has none registered for it"),
            "{who:?}: {out}"
        );
        assert!(
            out.contains("hint: unset STRATA_EMULATION to let strata register QEMU in its own user namespace"),
            "{who:?}: {out}"
        );
        assert!(out.contains("own: aarch64\n"), "{who:?}: {out}");
        // strata's own registration stayed in its namespace: the test's instance has none.
        assert!(out.ends_with("register status "), "{who:?}: {out}");
    }
    assert_eq!(host_handlers(), before, "the host's binfmt_misc changed");
}

/// `name` on PATH.
fn which(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}
