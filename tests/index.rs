//! Image indexes in the store through the binary: a name for an amd64 and an arm64 image
//! (made from a host busybox and the arm64 busybox test base, combined by loading an OCI
//! layout whose index.json names an image index), listed with its platforms by `images`, each
//! platform's image found by `inspect`/`history`/`run --platform`, saved whole as OCI and
//! refused as a docker-archive without `--platform`, loaded back, removed. As the user running
//! the tests and, when that is root, again as the unprivileged user `strata-test`.

#[macro_use]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// A scratch directory the runner owns, removed at the end.
fn scratch(name: &str, user: Option<&str>) -> PathBuf {
    let base = std::env::temp_dir().join(format!("strata-index-{}", std::process::id()));
    fs_err::create_dir_all(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    support::removed_at_the_end(&base);
    let d = base.join(format!("{name}-{}", user.unwrap_or("self")));
    let _ = std::fs::remove_dir_all(&d);
    ok(user, "mkdir", &["-p", d.to_str().unwrap()]);
    d
}

fn sha256_hex(b: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .unwrap();
    support::text(&out.stdout)[..64].to_string()
}

/// Rewrite the OCI layout at `dir` (two single images, as `strata save` wrote them) so that
/// its index.json names one image index over both as `name`. Written by `user`.
fn make_index_layout(dir: &Path, name: &str, user: Option<&str>) {
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dir.join("index.json")).unwrap()).unwrap();
    let mut manifests = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        let mut m = m.clone();
        m.as_object_mut().unwrap().remove("annotations");
        assert!(m["platform"].is_object(), "{m}");
        manifests.push(m);
    }
    assert_eq!(manifests.len(), 2, "{index}");
    let inner = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let ib = serde_json::to_vec(&inner).unwrap();
    let hex = sha256_hex(&ib);
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": ib.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }],
    });
    let tmp = dir.with_extension("json-tmp");
    fs_err::write(&tmp, &ib).unwrap();
    let blob = dir.join("blobs/sha256").join(&hex);
    ok(user, "cp", &[tmp.to_str().unwrap(), blob.to_str().unwrap()]);
    fs_err::write(&tmp, serde_json::to_vec(&top).unwrap()).unwrap();
    let idx = dir.join("index.json");
    ok(user, "cp", &[tmp.to_str().unwrap(), idx.to_str().unwrap()]);
    fs_err::remove_file(&tmp).unwrap();
}

#[test]
fn an_index_in_the_store_lists_resolves_saves_and_loads_per_platform() {
    let arm = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-images/oci/busybox-arm64");
    require!(
        arm.join("index.json").exists(),
        "the arm64 busybox base (target/test-images/oci/busybox-arm64; make test-deps)"
    );
    require!(
        Path::new("/bin/busybox").exists(),
        "busybox-static (Debian package) for the host image"
    );
    for user in support::runners() {
        let d = scratch("e2e", user);
        let root = d.join("store").display().to_string();
        let s = |args: &[&str]| {
            run(
                user,
                support::strata_bin(),
                &[&["--root", root.as_str()][..], args].concat(),
            )
        };
        let so = |args: &[&str]| {
            ok(
                user,
                support::strata_bin(),
                &[&["--root", root.as_str()][..], args].concat(),
            )
        };
        // The host's image: busybox-static in a root filesystem of its own.
        let rootfs = d.join("rootfs");
        ok(
            user,
            "sh",
            &[
                "-c",
                &format!(
                    "set -e; mkdir -p {r}/bin {r}/tmp; cp /bin/busybox {r}/bin/; ln -s busybox {r}/bin/sh; ln -s busybox {r}/bin/uname",
                    r = rootfs.display()
                ),
            ],
        );
        so(&["import", rootfs.to_str().unwrap(), "host:1"]);
        so(&["load", "-i", arm.to_str().unwrap()]);
        let layout = d.join("two");
        so(&[
            "save",
            "--format",
            "oci-dir",
            "-o",
            layout.to_str().unwrap(),
            "host:1",
            "busybox-arm64",
        ]);
        make_index_layout(&layout, "multi:1", user);
        let loaded = so(&["load", "-i", layout.to_str().unwrap()]);
        assert!(loaded.contains("Loaded image: multi:1"), "{loaded}");
        so(&["rmi", "host:1", "busybox-arm64"]);

        let images = so(&["images"]);
        let line = images
            .lines()
            .find(|l| l.starts_with("multi "))
            .unwrap_or_else(|| panic!("{images}"));
        assert!(line.ends_with("linux/amd64,linux/arm64/v8"), "{images}");
        assert!(
            images.lines().next().unwrap().ends_with("PLATFORMS"),
            "{images}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&so(&["images", "--format", "json"])).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
        assert_eq!(
            json[0]["platforms"],
            serde_json::json!(["linux/amd64", "linux/arm64/v8"])
        );

        // Each platform's image; without --platform the host's.
        let inspect = |extra: &[&str]| -> serde_json::Value {
            serde_json::from_str(&so(&[&["inspect", "multi:1"][..], extra].concat())).unwrap()
        };
        assert_eq!(
            inspect(&["--platform", "linux/arm64"])["Config"]["architecture"],
            "arm64"
        );
        assert_eq!(
            inspect(&["--platform", "aarch64"])["Platform"],
            "linux/arm64/v8"
        );
        assert_eq!(inspect(&[])["Config"]["architecture"], "amd64");
        let bad = s(&["inspect", "multi:1", "--platform", "linux/riscv64"]);
        let err = support::text(&bad.stderr);
        assert!(
            !bad.status.success()
                && err.contains("linux/riscv64")
                && err.contains("linux/amd64,linux/arm64/v8"),
            "{err}"
        );
        let hist = so(&["history", "multi:1", "--platform", "linux/arm64"]);
        assert!(!hist.contains("strata import"), "{hist}");
        assert!(so(&["history", "multi:1"]).contains("strata import rootfs"));

        // `run` of the index name: the host's image; a platform it lacks is named.
        let m = so(&["run", "multi:1", "uname", "-m"]);
        assert_eq!(m.trim(), "x86_64");
        let bad = s(&["run", "--platform", "linux/s390x", "multi:1", "true"]);
        let err = support::text(&bad.stderr);
        assert!(
            !bad.status.success() && err.contains("linux/amd64,linux/arm64/v8"),
            "{err}"
        );

        // A docker-archive holds one platform; an OCI archive the whole index.
        let dock = d.join("d.tar");
        let bad = s(&[
            "save",
            "--format",
            "docker-archive",
            "-o",
            dock.to_str().unwrap(),
            "multi:1",
        ]);
        let err = support::text(&bad.stderr);
        assert!(!bad.status.success() && err.contains("--platform"), "{err}");
        assert!(!dock.exists());
        so(&[
            "save",
            "--format",
            "docker-archive",
            "--platform",
            "linux/arm64",
            "-o",
            dock.to_str().unwrap(),
            "multi:1",
        ]);
        let oci = d.join("o.tar");
        so(&["save", "-o", oci.to_str().unwrap(), "multi:1"]);
        let root2 = d.join("store2").display().to_string();
        ok(
            user,
            support::strata_bin(),
            &["--root", &root2, "load", "-i", oci.to_str().unwrap()],
        );
        let images2 = ok(user, support::strata_bin(), &["--root", &root2, "images"]);
        assert!(images2.contains("linux/amd64,linux/arm64/v8"), "{images2}");
        let i2: serde_json::Value = serde_json::from_str(&ok(
            user,
            support::strata_bin(),
            &[
                "--root",
                &root2,
                "inspect",
                "multi:1",
                "--platform",
                "linux/arm64",
            ],
        ))
        .unwrap();
        assert_eq!(i2["Config"]["architecture"], "arm64");

        // Removed, then pruned: nothing left.
        assert_eq!(so(&["rmi", "multi:1"]), "Untagged: multi:1\n");
        so(&["prune"]);
        assert!(so(&["images", "--format", "json"]).trim() == "[]");
        let fsck = so(&["fsck"]);
        assert!(fsck.contains("0 problems"), "{fsck}");
    }
}
