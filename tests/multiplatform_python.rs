//! Two-platform Python builds (issue 29), as root and as the unprivileged `strata-test`, with
//! nothing registered on the host: `python:3.11-slim` is an image index served by Debian's
//! docker-registry on 127.0.0.1 (a docker.io mirror in registries.conf) over the lab's python
//! base (amd64) and the arm64 one of scripts/make-foreign-bases.sh, combined there by `strata
//! manifest create`. The arm64 RUN steps run under QEMU registered in strata's own user
//! namespace and install real wheels from PyPI (through this lab's TLS proxy: the bases hold
//! the host's extra CAs). Checked: `uname -m` in each platform's RUN step, numpy's extension
//! module an aarch64 ELF in the arm64 image and an x86-64 one in the amd64 image, `strata run
//! --platform linux/arm64` importing numpy, and examples/python-multiplatform's cross route
//! (Dockerfile.cross) built and run on both platforms. The emulated route of the example
//! (pip's venv and install under QEMU, several minutes here) is measured by
//! benches/python-multiplatform.sh, not built here.
//!
//! Without Linux 6.7, QEMU, docker-registry, skopeo or the bases the tests say SKIPPED (a
//! failure under CI).

#[macro_use]
mod support;

#[allow(dead_code)]
#[path = "registry/harness.rs"]
mod harness;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::{Auth, Registry};
use strata::sandbox::binfmt;
use support::text;

fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-images/oci")
}

/// What these tests need, or why they cannot run (said).
fn ready() -> bool {
    let kernel = binfmt::kernel_release();
    if binfmt::parse_kernel_version(&kernel).is_none_or(|v| v < binfmt::USERNS_BINFMT_SINCE) {
        support::skip(&format!(
            "Linux {kernel} cannot mount binfmt_misc in a user namespace (6.7 can)"
        ));
        return false;
    }
    if binfmt::host_platform().architecture != "amd64" {
        support::skip("these tests expect an x86-64 host (their other platform is arm64)");
        return false;
    }
    for (tool, pkg) in [
        ("qemu-aarch64-static", "qemu-user-static"),
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
    ] {
        if !support::have(tool) {
            support::skip(&format!(
                "no {tool}: apt-get install --no-install-recommends {pkg}"
            ));
            return false;
        }
    }
    for name in ["python", "python-arm64"] {
        if !images().join(name).join("index.json").exists() {
            support::skip(&format!(
                "{} is missing: scripts/test-deps.sh makes it (scripts/make-foreign-bases.sh for python-arm64)",
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

/// A test's directory (every user's to use), its registry serving `python:3.11-slim` for both
/// platforms as docker.io's, and a store per runner; the stores are pruned (as their user),
/// the registry stopped and the directory removed on drop.
struct Env {
    dir: PathBuf,
    conf: PathBuf,
    stores: Vec<(Option<&'static str>, PathBuf)>,
    _registry: Registry,
}

impl Env {
    fn new(name: &str) -> Env {
        let dir = std::env::temp_dir().join(format!("strata-mppy-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fs_err::create_dir_all(dir.join("home")).unwrap();
        fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let registry = Registry::start(&dir.join("reg"), Auth::Anonymous);
        let h = registry.host();
        let conf = dir.join("registries.conf");
        fs_err::write(
            &conf,
            format!(
                "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"{h}\"\ninsecure = true\n"
            ),
        )
        .unwrap();
        let mut env = Env {
            dir,
            conf,
            stores: Vec::new(),
            _registry: registry,
        };
        // Each platform's base under a tag of its own, then one index over both, as Docker
        // Hub serves python:3.11-slim.
        for (layout, arch) in [("python", "amd64"), ("python-arm64", "arm64")] {
            let o = Command::new("skopeo")
                .args(["copy", "-q", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:latest", images().join(layout).display()))
                .arg(format!("docker://{h}/library/python:3.11-slim-{arch}"))
                .env("HOME", env.dir.join("home"))
                .env_remove("XDG_RUNTIME_DIR")
                .output()
                .unwrap();
            ok(&o, &format!("skopeo copy of {layout}"));
        }
        let o = env.strata(
            None,
            &[
                "manifest",
                "create",
                "-t",
                &format!("{h}/library/python:3.11-slim"),
                &format!("{h}/library/python:3.11-slim-amd64"),
                &format!("{h}/library/python:3.11-slim-arm64"),
            ],
        );
        ok(&o, "manifest create of python:3.11-slim");
        env
    }

    /// `strata ARGS` as `who`, on who's store, with the mirror's registries.conf.
    fn strata(&mut self, who: Option<&'static str>, args: &[&str]) -> Output {
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
        c.env_remove("STRATA_ROOT")
            .env_remove(binfmt::QEMU_DIR_ENV)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("XDG_RUNTIME_DIR")
            .env("CONTAINERS_REGISTRIES_CONF", &self.conf)
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"));
        c.current_dir("/tmp").output().unwrap()
    }

    /// A context directory `name` every user can read, holding these files.
    fn ctx(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let c = self.dir.join(name);
        for (p, data) in files {
            let f = c.join(p);
            fs_err::create_dir_all(f.parent().unwrap()).unwrap();
            fs_err::write(&f, data).unwrap();
        }
        readable(&c);
        c
    }

    /// A directory `name` that `who` can write (an output destination).
    fn out_dir(&self, who: Option<&'static str>, name: &str) -> PathBuf {
        let d = self.dir.join(format!("{name}-{}", who.unwrap_or("me")));
        fs_err::create_dir_all(&d).unwrap();
        fs_err::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        d
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (who, _) in std::mem::take(&mut self.stores) {
            let _ = self.strata(who, &["prune", "--all"]);
        }
        let _ = Command::new("chmod")
            .args(["-R", "u+rwX"])
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn readable(p: &Path) {
    let o = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(p)
        .output()
        .unwrap();
    ok(&o, "chmod");
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// `e_machine` of the ELF file `f` (EM_X86_64 62, EM_AARCH64 183), after checking that it is
/// a 64-bit little-endian ELF.
fn elf_machine(f: &Path) -> u16 {
    let b = fs_err::read(f).unwrap();
    assert!(
        b.len() > 20 && b.starts_with(b"\x7fELF"),
        "{} is no ELF",
        f.display()
    );
    assert_eq!(
        (b[4], b[5]),
        (2, 1),
        "{}: not ELF64 little-endian",
        f.display()
    );
    u16::from_le_bytes([b[18], b[19]])
}

/// numpy's core extension module under `site` (one file, named for its platform).
fn numpy_core_so(site: &Path) -> PathBuf {
    let core = site.join("numpy/_core");
    let found: Vec<PathBuf> = fs_err::read_dir(&core)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("_multiarray_umath.") && n.ends_with(".so"))
        })
        .collect();
    assert_eq!(found.len(), 1, "{}: {found:?}", core.display());
    found.into_iter().next().unwrap()
}

/// Each platform's RUN steps: `uname -m`, then pip installing six (pure Python) and numpy (a
/// binary wheel) from PyPI; arm64's under QEMU. `--no-compile` and `--target` keep the
/// emulated step short (no venv made by ensurepip, no bytecode compiled under QEMU).
const PIP_EACH_PLATFORM: &str = "\
FROM python:3.11-slim
ARG TARGETPLATFORM
RUN echo \"machine: $(uname -m) for $TARGETPLATFORM\" | tee /machine
RUN python3 -m pip install --disable-pip-version-check --no-compile --progress-bar off \\
      --target /opt/deps six==1.17.0 numpy==2.2.6
ENV PYTHONPATH=/opt/deps
";

#[test]
fn pip_installs_binary_wheels_in_each_platform_rootless_under_qemu() {
    require!(ready(), "see above");
    let before = host_handlers();
    let mut env = Env::new("pip");
    let ctx = env.ctx("pip", &[("Dockerfile", PIP_EACH_PLATFORM)]);
    for who in support::runners() {
        let out = env.out_dir(who, "pip-out");
        let o = env.strata(
            who,
            &[
                "build",
                "--progress",
                "plain",
                "--platform",
                "linux/amd64,linux/arm64",
                "-t",
                "deps:1",
                ctx.to_str().unwrap(),
            ],
        );
        let progress = text(&o.stderr);
        assert!(o.status.success(), "{who:?}: the build failed:\n{progress}");
        // The same build into a directory per platform: every step from the cache.
        let o = env.strata(
            who,
            &[
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "--output",
                &format!("type=local,dest={}", out.display()),
                ctx.to_str().unwrap(),
            ],
        );
        let again = text(&o.stderr);
        assert!(o.status.success(), "{who:?}: the export failed:\n{again}");
        assert!(again.contains("(4 steps, 4 cached)"), "{who:?}: {again}");
        // Each platform's RUN step saw its own machine, and pip picked its own wheel.
        for (machine, platform) in [("x86_64", "linux/amd64"), ("aarch64", "linux/arm64")] {
            let line = format!("machine: {machine} for {platform}");
            assert!(
                progress.contains(&line),
                "{who:?}: no `{line}`:\n{progress}"
            );
            let wheel = format!("numpy-2.2.6-cp311-cp311-manylinux_2_17_{machine}");
            assert!(
                progress.contains(&wheel),
                "{who:?}: no {wheel}:\n{progress}"
            );
            let dir = out.join(platform.replace('/', "_"));
            assert_eq!(
                fs_err::read_to_string(dir.join("machine")).unwrap(),
                format!("{line}\n"),
                "{who:?}"
            );
            assert!(
                dir.join("opt/deps/six.py").is_file(),
                "{who:?}: six is not in {}",
                dir.display()
            );
        }
        // numpy's extension module is the target's machine code.
        let amd = numpy_core_so(&out.join("linux_amd64/opt/deps"));
        let arm = numpy_core_so(&out.join("linux_arm64/opt/deps"));
        assert_eq!(elf_machine(&amd), 62, "{who:?}: {}", amd.display());
        assert_eq!(elf_machine(&arm), 183, "{who:?}: {}", arm.display());
        // The stored index runs each platform, arm64's under QEMU, and numpy computes there.
        let probe = "import numpy, platform, six; print(platform.machine(), numpy.__version__, six.__version__, int(numpy.arange(101).sum()))";
        for (platform, machine) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
            let o = env.strata(
                who,
                &[
                    "run",
                    "--network",
                    "none",
                    "--platform",
                    platform,
                    "deps:1",
                    "python3",
                    "-c",
                    probe,
                ],
            );
            assert_eq!(
                ok(&o, &format!("{who:?}: run --platform {platform}")),
                format!("{machine} 2.2.6 1.17.0 5050\n"),
                "{who:?}"
            );
        }
    }
    assert_eq!(host_handlers(), before, "the host's binfmt_misc changed");
}

/// examples/python-multiplatform built the cross way (Dockerfile.cross: the target's wheels
/// fetched and unpacked in a `$BUILDPLATFORM` builder): the app runs on both platforms as its
/// user, the venv holds the target's numpy and no pip, and a one-line code change reruns no
/// builder step.
#[test]
fn the_example_s_cross_route_runs_on_both_platforms() {
    require!(ready(), "see above");
    let before = host_handlers();
    let mut env = Env::new("cross");
    for who in support::runners() {
        let c = env.dir.join(format!("example-{}", who.unwrap_or("me")));
        let o = Command::new("cp")
            .arg("-r")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python-multiplatform"))
            .arg(&c)
            .output()
            .unwrap();
        ok(&o, "copying the example");
        readable(&c);
        let build = |env: &mut Env| -> String {
            let o = env.strata(
                who,
                &[
                    "build",
                    "--progress",
                    "plain",
                    "--platform",
                    "linux/amd64,linux/arm64",
                    "-f",
                    c.join("Dockerfile.cross").to_str().unwrap(),
                    "-t",
                    "hello-mp",
                    c.to_str().unwrap(),
                ],
            );
            let progress = text(&o.stderr);
            assert!(o.status.success(), "{who:?}: the build failed:\n{progress}");
            progress
        };
        let progress = build(&mut env);
        // The builder never ran under QEMU: its steps are the build platform's.
        for machine in ["x86_64", "aarch64"] {
            let wheel =
                format!("Saved /tmp/wheels/numpy-2.2.6-cp311-cp311-manylinux_2_17_{machine}");
            assert!(
                progress.contains(&wheel),
                "{who:?}: no `{wheel}`:\n{progress}"
            );
        }
        for (platform, machine) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
            let o = env.strata(
                who,
                &[
                    "run",
                    "--network",
                    "none",
                    "--platform",
                    platform,
                    "hello-mp",
                ],
            );
            let out = ok(&o, &format!("{who:?}: run --platform {platform}"));
            assert!(
                out.starts_with(&format!(
                    "hello from {machine}: Python 3.11.2, numpy 2.2.6, six 1.17.0, total 5050, running as app"
                )),
                "{who:?}: {out}"
            );
            let o = env.strata(
                who,
                &[
                    "run",
                    "--network",
                    "none",
                    "--platform",
                    platform,
                    "hello-mp",
                    "sh",
                    "-c",
                    "ls /opt/venv/bin | grep -c '^pip' || true",
                ],
            );
            assert_eq!(ok(&o, "pip in the venv"), "0\n", "{who:?} {platform}");
        }
        // A one-line change of the app's code: only the runtime stage's last step reruns.
        let f = c.join("hello_mp/__main__.py");
        let code = fs_err::read_to_string(&f).unwrap();
        fs_err::write(&f, format!("{code}\n# one more line\n")).unwrap();
        let progress = build(&mut env);
        for l in progress.lines().filter(|l| l.contains("cache miss")) {
            let n = l.split(' ').next().unwrap();
            let title = progress
                .lines()
                .find(|t| t.starts_with(&format!("{n} [")))
                .unwrap_or(l);
            assert!(
                title.contains("COPY hello_mp/"),
                "{who:?}: a code change reran `{title}`:\n{progress}"
            );
        }
        assert_eq!(
            progress
                .lines()
                .filter(|l| l.contains("cache miss"))
                .count(),
            2,
            "{who:?}: one COPY per platform should rerun:\n{progress}"
        );
    }
    assert_eq!(host_handlers(), before, "the host's binfmt_misc changed");
}
