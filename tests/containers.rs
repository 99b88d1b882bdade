//! strata inside the containers CI jobs run in: as a non-root user in a rootless Podman
//! container (Podman's default seccomp profile), and in a root Docker container (Docker's
//! default seccomp profile), with what each needs. The image is the Debian-made one of
//! scripts/test-deps.sh with strata's binary bound in; the build inside is of a busybox image
//! loaded from an OCI layout (no network in the containers).
//!
//! What this shows (and the README's "CI and Kubernetes" section says):
//! - rootless Podman, defaults: user namespaces work, but a RUN step's own /proc cannot be
//!   mounted (Podman masks paths of the container's /proc): `strata doctor` fails naming
//!   `--security-opt unmask=/proc/*`; with it, or with `STRATA_PROC=host`, builds work, and a
//!   step cannot read strata's environment through the container's /proc.
//! - Docker, defaults: its seccomp profile refuses user namespaces: doctor names Podman's
//!   profile. With `--security-opt seccomp=/usr/share/containers/seccomp.json`, /proc is the
//!   next wall, as in Podman: `--security-opt systempaths=unconfined` or `STRATA_PROC=host`.
//!   While the store is on the container's overlay root, RUN steps copy snapshots; on a tmpfs
//!   or a volume they use overlays.
//!
//! `make test` runs this file as root (Docker, and Podman as strata-test); in its unprivileged
//! pass (scripts/test-as-user.sh) both tests are not applicable: starting dockerd needs root,
//! and the root pass already ran Podman as strata-test.

#[macro_use]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::{have, text};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The test's directory (readable by strata-test, who runs Podman), removed on drop.
struct Lab {
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Podman's storage holds files of strata-test's subordinate ids: only root or Podman's
        // own user namespace can remove them.
        let storage = self.dir.join("podman/storage");
        if storage.exists() && !is_root() {
            let _ = Command::new("podman")
                .arg("--root")
                .arg(&storage)
                .arg("--runroot")
                .arg(self.dir.join("podman/run"))
                .args(["--storage-driver", "vfs", "unshare", "rm", "-rf"])
                .arg(&storage)
                .env("XDG_RUNTIME_DIR", self.dir.join("podman/xdg"))
                .env("HOME", self.dir.join("podman"))
                .output();
        }
        let _ = Command::new("chmod")
            .args(["-R", "u+rwX"])
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const SCRIPT: &str = r#"#!/bin/sh
export STRATA_ROOT=/tmp/store HOME=/tmp
strata load -i /lab/busybox >/dev/null || { echo "load failed"; exit 10; }
strata doctor > /tmp/doctor.txt 2>&1
echo "doctor=$?"
cat /tmp/doctor.txt
env STRATA_TEST_SECRET=do-not-read strata build --network none --progress plain -t app /lab/ctx 2>&1
echo "build=$?"
"#;

const DOCKERFILE: &str = r#"FROM busybox
RUN --mount=type=cache,target=/c sh -c 'echo ran > /c/x; cat /proc/self/status | grep "^Seccomp:"; n=0; for p in /proc/[0-9]*; do if tr "\0" "\n" < $p/environ 2>/dev/null | grep -q STRATA_TEST_SECRET; then n=$((n+1)); fi; done; echo "environments with the secret: $n"'
"#;

impl Lab {
    /// The lab: the debian image's layout, a busybox layout, the build context and the script.
    fn new(name: &str) -> Option<Lab> {
        let debian = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-images/oci/debian");
        if !debian.join("index.json").exists() {
            support::skip(&format!(
                "{} is missing: scripts/test-deps.sh makes it",
                debian.display()
            ));
            return None;
        }
        if !Path::new("/bin/busybox").exists() {
            support::skip("/bin/busybox (busybox-static) is not installed");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("strata-ctr-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let lab = Lab { dir };
        let d = &lab.dir;
        let r = d.join("bb");
        for s in ["bin", "etc", "tmp"] {
            fs_err::create_dir_all(r.join(s)).unwrap();
        }
        fs_err::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        for a in ["sh", "cat", "grep", "tr", "echo"] {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
        }
        fs_err::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let store = d.join("store");
        let s = store.to_str().unwrap();
        let strata = |args: &[&str]| {
            let o = Command::new(support::strata_bin())
                .arg("--root")
                .arg(s)
                .args(args)
                .env_remove("STRATA_ROOT")
                .output()
                .unwrap();
            assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        };
        strata(&["import", r.to_str().unwrap(), "busybox:latest"]);
        strata(&[
            "save",
            "busybox:latest",
            "-o",
            d.join("lab/busybox").to_str().unwrap(),
            "--format",
            "oci-dir",
        ]);
        let _ = Command::new("chmod")
            .args(["-R", "u+rwX"])
            .arg(&store)
            .output();
        let _ = std::fs::remove_dir_all(&store);
        fs_err::create_dir_all(d.join("lab/ctx")).unwrap();
        fs_err::write(d.join("lab/ctx/Dockerfile"), DOCKERFILE).unwrap();
        fs_err::write(d.join("lab/inner.sh"), SCRIPT).unwrap();
        fs_err::copy(support::strata_bin(), d.join("lab/strata")).unwrap();
        let _ = Command::new("chmod")
            .args(["-R", "a+rX,a+x"])
            .arg(d.join("lab"))
            .output();
        let _ = Command::new("chmod").args(["a+rx"]).arg(d).output();
        Some(lab)
    }

    fn debian() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-images/oci/debian")
    }

    /// The container's volumes: the lab read-only and strata's binary on PATH.
    fn volumes(&self) -> Vec<String> {
        vec![
            "-v".into(),
            format!("{}:/lab:ro", self.dir.join("lab").display()),
            "-v".into(),
            format!(
                "{}:/usr/local/bin/strata:ro",
                self.dir.join("lab/strata").display()
            ),
        ]
    }
}

/// What the script printed, and the exit codes it reported.
struct Inside {
    out: String,
    doctor: i32,
    build: i32,
}

fn inside(o: &Output) -> Inside {
    let out = text(&o.stdout) + &text(&o.stderr);
    let code = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {k} in the output:\n{out}"))
    };
    Inside {
        doctor: code("doctor="),
        build: code("build="),
        out,
    }
}

/// `podman run` as strata-test (rootless; run through runuser when the test is root), with
/// Podman's storage, runtime and temporary dirs in the lab.
fn podman(lab: &Lab, extra: &[&str]) -> Output {
    let home = lab.dir.join("podman");
    let xdg = home.join("xdg");
    fs_err::create_dir_all(&xdg).unwrap();
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    if is_root() {
        let o = Command::new("chown")
            .args(["-R", "strata-test:strata-test"])
            .arg(&home)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "strata-test", "--", "podman"]);
        c
    } else {
        Command::new("podman")
    };
    c.arg("--root")
        .arg(home.join("storage"))
        .arg("--runroot")
        .arg(home.join("run"))
        .arg("--tmpdir")
        .arg(home.join("tmp"))
        .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
        // runc, not Debian's default crun: crun 1.8 refuses every container on a host whose
        // cgroups are in hybrid mode with a controller left on the v2 hierarchy (this kind of
        // machine: hugetlb), and moving it is a change to the host the tests do not make.
        .args(["--runtime", "runc"])
        .args(["run", "--rm", "--network=none", "--user", "1000:1000"])
        .args(lab.volumes())
        .args(extra)
        .arg(format!("oci:{}:latest", Lab::debian().display()))
        .arg("/lab/inner.sh")
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &xdg)
        .env("TMPDIR", home.join("tmp"))
        .current_dir(&home)
        .stdin(Stdio::null());
    c.output().unwrap()
}

#[test]
fn in_a_rootless_podman_container() {
    require!(
        (have("podman") && have("runuser")),
        "podman is not installed (package podman)"
    );
    not_applicable!(
        !support::root_pass_ran_as("strata-test"),
        "the root pass ran Podman as strata-test already (through runuser, with the same storage, HOME, XDG_RUNTIME_DIR and TMPDIR)"
    );
    let lab = require!(Lab::new("podman"));
    // Podman's defaults: the user namespace is fine, a new /proc is not.
    let r = inside(&podman(&lab, &[]));
    assert_eq!(r.doctor, 1, "{}", r.out);
    assert!(
        r.out.contains("environment: a Podman container")
            && r.out.contains("FAIL /proc of a new PID namespace")
            && r.out.contains("--security-opt unmask=/proc/*"),
        "{}",
        r.out
    );
    assert_ne!(r.build, 0, "{}", r.out);
    assert!(
        r.out
            .contains("hint: run the container with --security-opt unmask=/proc/*"),
        "{}",
        r.out
    );
    // STRATA_PROC=host: the container's /proc; strata's own entries stay unreadable.
    let r = inside(&podman(&lab, &["-e", "STRATA_PROC=host"]));
    assert_eq!((r.doctor, r.build), (0, 0), "{}", r.out);
    assert!(
        r.out.contains("WARN /proc of a new PID namespace"),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("environments with the secret: 0"),
        "{}",
        r.out
    );
    assert!(r.out.contains("Seccomp:\t2"), "{}", r.out);
    // The container's /proc unmasked: the step's own /proc.
    let r = inside(&podman(&lab, &["--security-opt", "unmask=/proc/*"]));
    assert_eq!((r.doctor, r.build), (0, 0), "{}", r.out);
    assert!(
        r.out.contains("ok   /proc of a new PID namespace"),
        "{}",
        r.out
    );
}

#[test]
fn in_a_docker_container() {
    require!(
        (have("dockerd") && have("skopeo")),
        "dockerd or skopeo is not installed (packages docker.io, skopeo)"
    );
    if !is_root() {
        support::not_applicable(
            "starting dockerd needs root (the root run of `make test` does this)",
        );
        return;
    }
    let lab = require!(Lab::new("docker"));
    let Some(d) = support::Dockerd::start(&lab.dir.join("dockerd")) else {
        panic!(
            "dockerd did not start: {}",
            fs_err::read_to_string(lab.dir.join("dockerd/dockerd.log")).unwrap_or_default()
        );
    };
    let archive = lab.dir.join("debian.tar");
    let o = Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("oci:{}:latest", Lab::debian().display()))
        .arg(format!("docker-archive:{}:debian:lab", archive.display()))
        .env("HOME", &lab.dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = d.docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let run = |extra: &[&str]| {
        let mut a: Vec<String> = ["run", "--rm", "--network=none", "--user", "1000:1000"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(lab.volumes());
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(["debian:lab".to_string(), "/lab/inner.sh".to_string()]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        inside(&d.docker(&a))
    };
    // Docker's default profile: no user namespaces; doctor says which profile to use.
    let r = run(&[]);
    assert_eq!(r.doctor, 1, "{}", r.out);
    assert!(
        r.out
            .contains("environment: a Docker container, under a seccomp filter")
            && r.out.contains("seccomp=/usr/share/containers/seccomp.json"),
        "{}",
        r.out
    );
    assert_ne!(r.build, 0, "{}", r.out);
    // Podman's default profile (containers-common) allows user namespaces; the container's
    // /proc is masked as Podman's is.
    let podman_profile = "seccomp=/usr/share/containers/seccomp.json";
    let r = run(&["--security-opt", podman_profile]);
    assert_eq!(r.doctor, 1, "{}", r.out);
    assert!(
        r.out.contains("ok   user namespace")
            && r.out.contains("FAIL /proc of a new PID namespace")
            && r.out.contains("--security-opt systempaths=unconfined"),
        "{}",
        r.out
    );
    // Unmasked: builds work. The store on the container's root (an overlay) cannot hold
    // overlays: RUN steps copy their snapshots, and doctor says where the store should go.
    let unmasked = "systempaths=unconfined";
    let r = run(&["--security-opt", podman_profile, "--security-opt", unmasked]);
    assert_eq!((r.doctor, r.build), (0, 0), "{}", r.out);
    assert!(r.out.contains("Seccomp:\t2"), "{}", r.out);
    assert!(
        r.out.contains("RUN steps will copy snapshots") && r.out.contains("--tmpfs /store"),
        "{}",
        r.out
    );
    // With the store on a tmpfs: overlays.
    let r = run(&[
        "--security-opt",
        podman_profile,
        "--security-opt",
        unmasked,
        "--tmpfs",
        "/tmp:rw,exec,mode=1777",
    ]);
    assert_eq!((r.doctor, r.build), (0, 0), "{}", r.out);
    assert!(
        r.out.contains("ok   overlay in a user namespace"),
        "{}",
        r.out
    );
    // Or the container's /proc, masked as it is.
    let r = run(&["--security-opt", podman_profile, "-e", "STRATA_PROC=host"]);
    assert_eq!((r.doctor, r.build), (0, 0), "{}", r.out);
    assert!(
        r.out.contains("environments with the secret: 0"),
        "{}",
        r.out
    );
    let _ = d.docker(&["rmi", "-f", "debian:lab"]);
}
