//! The store checked by tools nobody here wrote: skopeo and umoci read what strata writes, and
//! strata loads what skopeo writes. Every scenario runs as the user running the tests and, when
//! that is root, again as the unprivileged user `strata-test` (made by scripts/test-deps.sh);
//! so in the unprivileged pass of `make test` (scripts/test-as-user.sh) those scenarios have
//! no runners and the test records itself not applicable.
//! Also: a process killed with SIGKILL at any point leaves a store that works, and several
//! processes can write one store at once.
//!
//! Needs skopeo, umoci and busybox-static (Debian packages). Where one is missing the test says
//! SKIPPED and why; with STRATA_REQUIRE_TOOLS=1 (set by CI) it fails instead.

#[macro_use]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TEST_USER: &str = "strata-test";

/// Is `tool` installed? When not, the test is skipped ([`support::skip`]: a failure under CI).
fn have(tool: &str) -> bool {
    let ok = support::have(tool);
    if !ok {
        support::skip(&format!(
            "{tool} is not installed (Debian package; scripts/test-deps.sh installs it)"
        ));
    }
    ok
}

/// Who to run as: ourselves, plus the unprivileged user when we are root.
fn runners() -> Vec<Option<&'static str>> {
    if support::root_pass_ran_as(TEST_USER) {
        support::not_applicable(&format!("the root pass ran this as {TEST_USER} already"));
        return Vec::new();
    }
    let mut v = vec![None];
    if rustix::process::geteuid().is_root() {
        let exists = Command::new("id")
            .arg(TEST_USER)
            .output()
            .is_ok_and(|o| o.status.success());
        if exists {
            v.push(Some(TEST_USER));
        } else if std::env::var("STRATA_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("user {TEST_USER} does not exist (scripts/test-deps.sh creates it)");
        } else {
            support::skip(&format!(
                "no user {TEST_USER}, so the rootless runs are left out"
            ));
        }
    }
    v
}

fn run(user: Option<&str>, prog: &str, args: &[&str]) -> Output {
    let mut c = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", prog]);
            c
        }
        None => Command::new(prog),
    };
    c.args(args).env_remove("STRATA_ROOT");
    c.output().unwrap_or_else(|e| panic!("running {prog}: {e}"))
}

fn ok(user: Option<&str>, prog: &str, args: &[&str]) -> String {
    let o = run(user, prog, args);
    assert!(
        o.status.success(),
        "{prog} {args:?} as {user:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `umoci unpack --rootless --image IMAGE BUNDLE` as `user`, which must succeed.
fn umoci_unpack(user: Option<&str>, image: &str, bundle: &str) {
    ok(
        user,
        "umoci",
        &["unpack", "--rootless", "--image", image, bundle],
    );
}

fn strata() -> &'static str {
    support::strata_bin()
}

/// A scratch directory the runner can write (world-writable parent for the test user).
fn scratch(name: &str, user: Option<&str>) -> PathBuf {
    let base = std::env::temp_dir().join(format!("strata-tools-{}", std::process::id()));
    fs_err::create_dir_all(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let d = base.join(format!("{name}-{}", user.unwrap_or("self")));
    let _ = std::fs::remove_dir_all(&d);
    ok(user, "mkdir", &["-p", d.to_str().unwrap()]);
    d
}

/// A busybox root filesystem from Debian's busybox-static, made by the runner.
fn busybox_rootfs(dir: &Path, user: Option<&str>) -> PathBuf {
    let rootfs = dir.join("rootfs");
    let script = format!(
        "set -e; r={r}; mkdir -p $r/bin $r/etc $r/tmp; cp /bin/busybox $r/bin/busybox; \
         for a in sh ls cat echo true; do ln -s busybox $r/bin/$a; done; \
         printf 'root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:/:/bin/false\\n' > $r/etc/passwd; \
         printf 'root:x:0:\\nnobody:x:65534:\\n' > $r/etc/group; chmod 1777 $r/tmp",
        r = rootfs.display()
    );
    ok(user, "sh", &["-c", &script]);
    rootfs
}

/// A scratch dir with a store (as the test's own user) holding busybox as `name`.
fn busybox_store(dir: &str, name: &str) -> (PathBuf, String) {
    let d = scratch(dir, None);
    let root = d.join("store").display().to_string();
    ok(
        None,
        strata(),
        &[
            "--root",
            &root,
            "import",
            busybox_rootfs(&d, None).to_str().unwrap(),
            name,
        ],
    );
    (d, root)
}

#[test]
fn skopeo_and_umoci_read_what_strata_writes() {
    if !(have("skopeo") && have("umoci") && Path::new("/bin/busybox").exists()) {
        if !Path::new("/bin/busybox").exists() {
            support::skip("/bin/busybox (busybox-static) is not installed");
        }
        return;
    }
    for user in runners() {
        let d = scratch("read", user);
        let root = d.join("store");
        let root_s = root.to_str().unwrap();
        let rootfs = busybox_rootfs(&d, user);
        ok(
            user,
            strata(),
            &["--root", root_s, "import", rootfs.to_str().unwrap(), "bb:1"],
        );
        let json: serde_json::Value = serde_json::from_str(&ok(
            user,
            strata(),
            &["--root", root_s, "images", "--format", "json"],
        ))
        .unwrap();
        let digest = json[0]["digest"].as_str().unwrap().to_string();

        // The store itself is an OCI layout.
        let layout = format!("oci:{root_s}/v1/oci:bb:1");
        let inspect: serde_json::Value =
            serde_json::from_str(&ok(user, "skopeo", &["inspect", &layout])).unwrap();
        assert_eq!(
            inspect["Digest"].as_str(),
            Some(digest.as_str()),
            "as {user:?}"
        );
        let cfg: serde_json::Value =
            serde_json::from_str(&ok(user, "skopeo", &["inspect", "--config", &layout])).unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
        let bundle = d.join("bundle");
        umoci_unpack(
            user,
            &format!("{root_s}/v1/oci:bb:1"),
            bundle.to_str().unwrap(),
        );
        assert!(bundle.join("rootfs/bin/busybox").exists());
        assert_eq!(
            std::fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(),
            Path::new("busybox")
        );

        // Every save format, read back by skopeo (and umoci for the OCI ones).
        let oci_tar = d.join("bb-oci.tar");
        let docker_tar = d.join("bb-docker.tar");
        let oci_dir = d.join("bb-dir");
        for (format, dest) in [
            ("oci-archive", &oci_tar),
            ("docker-archive", &docker_tar),
            ("oci-dir", &oci_dir),
        ] {
            ok(
                user,
                strata(),
                &[
                    "--root",
                    root_s,
                    "save",
                    "bb:1",
                    "--format",
                    format,
                    "-o",
                    dest.to_str().unwrap(),
                ],
            );
        }
        for src in [
            format!("oci-archive:{}", oci_tar.display()),
            format!("oci:{}:1", oci_dir.display()),
        ] {
            let i: serde_json::Value =
                serde_json::from_str(&ok(user, "skopeo", &["inspect", &src])).unwrap();
            assert_eq!(i["Digest"].as_str(), Some(digest.as_str()), "{src}");
        }
        let di: serde_json::Value = serde_json::from_str(&ok(
            user,
            "skopeo",
            &[
                "inspect",
                &format!("docker-archive:{}", docker_tar.display()),
            ],
        ))
        .unwrap();
        assert_eq!(di["Layers"].as_array().unwrap().len(), 1);
        let copied = d.join("from-docker");
        ok(
            user,
            "skopeo",
            &[
                "copy",
                "-q",
                &format!("docker-archive:{}", docker_tar.display()),
                &format!("oci:{}:x", copied.display()),
            ],
        );
        umoci_unpack(
            user,
            &format!("{}:x", copied.display()),
            d.join("bundle2").to_str().unwrap(),
        );
        assert!(d.join("bundle2/rootfs/bin/busybox").exists());
        umoci_unpack(
            user,
            &format!("{}:1", oci_dir.display()),
            d.join("bundle3").to_str().unwrap(),
        );

        // And strata loads what skopeo writes.
        let sk_docker = d.join("sk-docker.tar");
        let sk_oci = d.join("sk-oci.tar");
        ok(
            user,
            "skopeo",
            &[
                "copy",
                "-q",
                &layout,
                &format!("docker-archive:{}:skd:2", sk_docker.display()),
            ],
        );
        ok(
            user,
            "skopeo",
            &[
                "copy",
                "-q",
                &layout,
                &format!("oci-archive:{}:sko:3", sk_oci.display()),
            ],
        );
        let root2 = d.join("store2");
        let r2 = root2.to_str().unwrap();
        assert!(ok(
            user,
            strata(),
            &["--root", r2, "load", "-i", sk_docker.to_str().unwrap()]
        )
        .contains("Loaded image: skd:2"));
        assert!(ok(
            user,
            strata(),
            &["--root", r2, "load", "-i", sk_oci.to_str().unwrap()]
        )
        .contains("Loaded image: sko:3"));
        let listed = ok(user, strata(), &["--root", r2, "images"]);
        assert!(listed.contains("skd") && listed.contains("sko"), "{listed}");
        assert!(ok(user, strata(), &["--root", r2, "fsck"]).contains(": 0 problems"));
        // Unpacking as this user: files, links and (for root) owners.
        let un = d.join("unpacked");
        ok(
            user,
            strata(),
            &["--root", r2, "unpack", "skd:2", un.to_str().unwrap()],
        );
        assert!(un.join("bin/busybox").exists());
    }
}

#[test]
fn sigkill_at_any_moment_leaves_a_working_store() {
    require!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox (busybox-static) is not installed"
    );
    let d = scratch("kill", None);
    let root = d.join("store");
    let root_s = root.to_str().unwrap();
    // 48 MiB of incompressible data spread over files, so an import takes a while.
    let big = d.join("big");
    fs_err::create_dir_all(&big).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..12 {
        let mut buf = vec![0u8; 4 << 20];
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        fs_err::write(big.join(format!("f{i}")), &buf).unwrap();
    }
    ok(
        None,
        strata(),
        &[
            "--root",
            root_s,
            "import",
            busybox_rootfs(&d, None).to_str().unwrap(),
            "small:1",
        ],
    );
    let mut killed = 0;
    for delay_ms in [5u64, 20, 60, 120, 250, 400, 700] {
        let mut child = Command::new(strata())
            .args([
                "--root",
                root_s,
                "import",
                big.to_str().unwrap(),
                &format!("big:{delay_ms}"),
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if !status.success() {
            killed += 1;
        }
        // The store is usable as is: fsck finds no problem, images lists, a new write works.
        let fsck = run(None, strata(), &["--root", root_s, "fsck"]);
        assert!(
            fsck.status.success(),
            "after a kill at {delay_ms} ms: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        assert!(ok(None, strata(), &["--root", root_s, "images"]).contains("small"));
    }
    assert!(
        killed >= 3,
        "only {killed} imports were killed before they finished; the data set is too small"
    );
    ok(
        None,
        strata(),
        &[
            "--root",
            root_s,
            "import",
            big.to_str().unwrap(),
            "big:done",
        ],
    );
    ok(None, strata(), &["--root", root_s, "prune"]);
    let fsck = ok(None, strata(), &["--root", root_s, "fsck"]);
    assert!(
        fsck.contains(": 0 problems") && !fsck.contains("leftover"),
        "{fsck}"
    );
}

#[test]
fn processes_writing_one_store_at_once() {
    require!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox (busybox-static) is not installed"
    );
    let d = scratch("conc", None);
    let root = d.join("store");
    let root_s = root.to_str().unwrap().to_string();
    let rootfs = busybox_rootfs(&d, None);
    ok(
        None,
        strata(),
        &[
            "--root",
            &root_s,
            "import",
            rootfs.to_str().unwrap(),
            "base:1",
        ],
    );
    let mut children = Vec::new();
    for i in 0..6 {
        children.push(
            Command::new(strata())
                .args(["--root", &root_s, "tag", "base:1", &format!("tag{i}:x")])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        children.push(
            Command::new(strata())
                .args([
                    "--root",
                    &root_s,
                    "import",
                    rootfs.to_str().unwrap(),
                    &format!("imp{i}:y"),
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        children.push(
            Command::new(strata())
                .args(["--root", &root_s, "prune"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let json: serde_json::Value = serde_json::from_str(&ok(
        None,
        strata(),
        &["--root", &root_s, "images", "--format", "json"],
    ))
    .unwrap();
    let names: Vec<String> = json
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            i["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
        })
        .collect();
    for i in 0..6 {
        assert!(
            names.contains(&format!("tag{i}:x")) && names.contains(&format!("imp{i}:y")),
            "{names:?}"
        );
    }
    assert!(ok(None, strata(), &["--root", &root_s, "fsck"]).contains(": 0 problems"));
}

#[test]
fn podman_loads_what_strata_saves() {
    require!(have("podman"), "podman is not installed");
    require!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox (busybox-static) is not installed"
    );
    if !rustix::process::geteuid().is_root() {
        support::not_applicable(
            "podman's rootless storage needs subuid ranges for this user; run as root",
        );
        return;
    }
    let (d, root) = busybox_store("podman", "pm:7");
    let r = root.as_str();
    let docker = d.join("pm-docker.tar");
    let oci = d.join("pm-oci.tar");
    ok(
        None,
        strata(),
        &[
            "--root",
            r,
            "save",
            "pm:7",
            "--format",
            "docker-archive",
            "-o",
            docker.to_str().unwrap(),
        ],
    );
    ok(
        None,
        strata(),
        &["--root", r, "save", "pm:7", "-o", oci.to_str().unwrap()],
    );
    let pm = |args: &[&str]| {
        let mut a = vec![
            "--root",
            d.join("pr").to_str().unwrap().to_string().leak(),
            "--runroot",
            d.join("rr").to_str().unwrap().to_string().leak(),
            "--storage-driver",
            "vfs",
        ];
        a.extend_from_slice(args);
        ok(None, "podman", &a)
    };
    assert!(pm(&["load", "-i", docker.to_str().unwrap()]).contains("Loaded image: localhost/pm:7"));
    assert!(
        pm(&["load", "-i", oci.to_str().unwrap()]).contains("Loaded image: docker.io/library/pm:7")
    );
    let id = ok(None, strata(), &["--root", r, "images", "--format", "json"]);
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let short = &id[0]["id"].as_str().unwrap()[7..19];
    assert!(
        pm(&["images"]).contains(short),
        "podman sees the same image id"
    );
}

#[test]
fn device_nodes_are_skipped_with_a_warning_rootless() {
    not_applicable!(
        rustix::process::geteuid().is_root(),
        "making the device node for the test image needs root"
    );
    let user = require!(runners().into_iter().flatten().next());
    let d = scratch("dev", None);
    let tree = d.join("tree");
    fs_err::create_dir_all(tree.join("dev")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        tree.join("dev/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    fs_err::write(tree.join("file"), "f").unwrap();
    let archive = d.join("dev.tar");
    let root = d.join("store");
    ok(
        None,
        strata(),
        &[
            "--root",
            root.to_str().unwrap(),
            "import",
            tree.to_str().unwrap(),
            "dev:1",
        ],
    );
    ok(
        None,
        strata(),
        &[
            "--root",
            root.to_str().unwrap(),
            "save",
            "dev:1",
            "-o",
            archive.to_str().unwrap(),
        ],
    );
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ud = scratch("dev-user", Some(user));
    let ustore = ud.join("store");
    ok(
        Some(user),
        strata(),
        &[
            "--root",
            ustore.to_str().unwrap(),
            "load",
            "-i",
            archive.to_str().unwrap(),
        ],
    );
    let out = run(
        Some(user),
        strata(),
        &[
            "--root",
            ustore.to_str().unwrap(),
            "unpack",
            "dev:1",
            ud.join("u").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: 1 device node(s) skipped") && err.contains("dev/null"),
        "{err}"
    );
    assert!(ud.join("u/file").exists() && !ud.join("u/dev/null").exists());
}

#[test]
fn docker_loads_and_runs_a_strata_docker_archive() {
    require!(
        have("dockerd") && have("docker"),
        "docker (docker.io) is not installed"
    );
    require!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox (busybox-static) is not installed"
    );
    not_applicable!(rustix::process::geteuid().is_root(), "dockerd needs root");
    let (d, root) = busybox_store("docker", "dk:5");
    let r = root.as_str();
    let archive = d.join("dk.tar");
    ok(
        None,
        strata(),
        &[
            "--root",
            r,
            "save",
            "dk:5",
            "--format",
            "docker-archive",
            "-o",
            archive.to_str().unwrap(),
        ],
    );
    let Some(dockerd) = support::Dockerd::start(&d.join("dockerd")) else {
        panic!(
            "dockerd did not start: {}",
            fs_err::read_to_string(d.join("dockerd/dockerd.log")).unwrap_or_default()
        );
    };
    let out = dockerd.docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Loaded image: dk:5"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&ok(
        None,
        strata(),
        &["--root", r, "images", "--format", "json"],
    ))
    .unwrap();
    let id = json[0]["id"].as_str().unwrap();
    let inspect = dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", "dk:5"]);
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        id,
        "docker sees the same image id"
    );
}

#[test]
fn unprivileged_unpack_of_read_only_directories() {
    let users = runners();
    let Some(user) = users.iter().flatten().next().copied() else {
        support::not_applicable("needs root to run as the unprivileged test user");
        return;
    };
    let d = scratch("rodirs", Some(user));
    // A layer whose directories give their owner no write (and one no search) permission, with
    // entries below them, as images often have (/usr/share/... 0555, /root 0500).
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        for (path, mode, body) in [
            ("ro/", 0o555, None),
            ("ro/f", 0o644, Some("f")),
            ("ro/x/", 0o500, None),
            ("ro/x/g", 0o600, Some("g")),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_path(path).unwrap();
            h.set_mode(mode);
            h.set_entry_type(if body.is_none() {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_size(body.map_or(0, |b| b.len() as u64));
            h.set_cksum();
            b.append(&h, body.unwrap_or("").as_bytes()).unwrap();
        }
        b.finish().unwrap();
    }
    let tarfile = d.join("ro.tar");
    fs_err::write(&tarfile, &tar).unwrap();
    std::fs::set_permissions(&tarfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let root = d.join("store");
    let r = root.to_str().unwrap();
    ok(
        Some(user),
        strata(),
        &["--root", r, "import", tarfile.to_str().unwrap(), "ro:1"],
    );
    let out = d.join("out");
    ok(
        Some(user),
        strata(),
        &["--root", r, "unpack", "ro:1", out.to_str().unwrap()],
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs_err::read_to_string(out.join("ro/x/g")).unwrap(), "g");
    assert_eq!(
        std::fs::metadata(out.join("ro")).unwrap().mode() & 0o7777,
        0o555
    );
    assert_eq!(
        std::fs::metadata(out.join("ro/x")).unwrap().mode() & 0o7777,
        0o500
    );
}

/// A layer tar holding one file.
fn one_file_layer(name: &str, data: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, name, data.as_bytes()).unwrap();
    b.into_inner().unwrap()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

/// What `docker save a:1 b:1` writes (docker 20.10) when b is built FROM a: one directory per
/// layer with VERSION, json and layer.tar, the layer the two share written once and reached
/// from b's directory by a symlink `layer.tar -> ../<id>/layer.tar`, a config per image,
/// manifest.json and repositories. `b_second` is the content of b's own layer as written
/// (its config promises the diffID of "/b" holding "b").
fn docker_save_of_two(path: &Path, b_second: &[u8]) {
    let base = one_file_layer("a", "a\n");
    let own = one_file_layer("b", "b\n");
    let (d_base, d_own) = (sha256_hex(&base), sha256_hex(&own));
    let config = |diffs: &[&str]| {
        serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diffs.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>()},
        })
        .to_string()
    };
    let conf_a = config(&[&d_base]);
    let conf_b = config(&[&d_base, &d_own]);
    let (id_a, id_b) = (sha256_hex(conf_a.as_bytes()), sha256_hex(conf_b.as_bytes()));
    // Layer directory ids as docker makes them (chain-like ids; any hex name will do).
    let (l1, l2, l3) = (
        sha256_hex(b"layer one"),
        sha256_hex(b"layer two"),
        sha256_hex(b"layer three"),
    );
    let manifest = serde_json::json!([
        {"Config": format!("{id_a}.json"), "RepoTags": ["a:1"], "Layers": [format!("{l1}/layer.tar")]},
        {"Config": format!("{id_b}.json"), "RepoTags": ["b:1"], "Layers": [format!("{l2}/layer.tar"), format!("{l3}/layer.tar")], "Parent": format!("sha256:{id_a}")},
    ])
    .to_string();
    let mut t = tar::Builder::new(Vec::new());
    let file = |t: &mut tar::Builder<Vec<u8>>, p: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        t.append_data(&mut h, p, data).unwrap();
    };
    for (dir, layer) in [(&l3, Some(b_second)), (&l1, Some(&base[..])), (&l2, None)] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        t.append_data(&mut h, format!("{dir}/"), &[][..]).unwrap();
        file(&mut t, &format!("{dir}/VERSION"), b"1.0");
        file(
            &mut t,
            &format!("{dir}/json"),
            format!("{{\"id\":\"{dir}\"}}").as_bytes(),
        );
        match layer {
            Some(data) => file(&mut t, &format!("{dir}/layer.tar"), data),
            None => {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                t.append_link(
                    &mut h,
                    format!("{dir}/layer.tar"),
                    format!("../{l1}/layer.tar"),
                )
                .unwrap();
            }
        }
    }
    file(&mut t, &format!("{id_a}.json"), conf_a.as_bytes());
    file(&mut t, &format!("{id_b}.json"), conf_b.as_bytes());
    file(&mut t, "manifest.json", manifest.as_bytes());
    file(&mut t, "repositories", b"{}");
    fs_err::write(path, t.into_inner().unwrap()).unwrap();
}

#[test]
fn docker_saves_of_images_sharing_a_layer_load_whole_or_not_at_all() {
    for user in runners() {
        let d = scratch("docker-save", user);
        let r = d.join("store").display().to_string();
        let names = |r: &str| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_str(&ok(
                user,
                strata(),
                &["--root", r, "images", "--format", "json"],
            ))
            .unwrap();
            let mut n: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
                .map(|n| n.as_str().unwrap().to_string())
                .collect();
            n.sort();
            n
        };
        // b's own layer is not what its config promises: nothing is loaded, not even a.
        let bad = d.join("bad.tar");
        docker_save_of_two(&bad, &one_file_layer("b", "not b\n"));
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = run(
            user,
            strata(),
            &["--root", &r, "load", "-i", bad.to_str().unwrap()],
        );
        assert!(!o.status.success(), "a broken archive loaded");
        assert_eq!(
            names(&r),
            Vec::<String>::new(),
            "a failed load named images"
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("diffID"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // The archive as docker writes it: both images, b's first layer through the link.
        let good = d.join("good.tar");
        docker_save_of_two(&good, &one_file_layer("b", "b\n"));
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = ok(
            user,
            strata(),
            &["--root", &r, "load", "-i", good.to_str().unwrap()],
        );
        assert!(out.contains("a:1") && out.contains("b:1"), "{out}");
        assert!(
            names(&r).iter().any(|n| n.contains("a:1")),
            "{:?}",
            names(&r)
        );
        assert!(
            names(&r).iter().any(|n| n.contains("b:1")),
            "{:?}",
            names(&r)
        );
        let un = d.join("unpacked");
        ok(
            user,
            strata(),
            &["--root", &r, "unpack", "b:1", un.to_str().unwrap()],
        );
        assert_eq!(fs_err::read_to_string(un.join("a")).unwrap(), "a\n");
        assert_eq!(fs_err::read_to_string(un.join("b")).unwrap(), "b\n");
        ok(user, strata(), &["--root", &r, "prune", "--all"]);
    }
}
