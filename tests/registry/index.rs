//! Image indexes and registries: `strata push` of a name that points at an index sends every
//! platform's image and then the index; `strata pull` of it takes one platform (the host's, or
//! `--platform`), and a platform pulled later joins the ones pulled before under the name;
//! `strata manifest create` combines images that two stores (two CI runners, one
//! per platform) pushed by digest into one tag, checked with skopeo.

use std::path::{Path, PathBuf};

use super::harness::{Auth, Registry};
use super::{digest_in, fails, ok, T};

/// The arm64 busybox base the test set-up makes (`make test-deps`).
fn arm64_base() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-images/oci/busybox-arm64");
    if p.join("index.json").exists() {
        Some(p)
    } else {
        super::support::skip(
            "the arm64 busybox base is missing (target/test-images/oci/busybox-arm64; make test-deps)",
        );
        None
    }
}

/// Store `store` with `host:1` (the host's busybox, its layer stored uncompressed: a push
/// compresses it, so its manifest changes on the way) and `busybox-arm64:latest`.
fn two_images(t: &T, store: &str, arm: &Path) {
    t.busybox_layout();
    let rootfs = t.dir.join("bb-rootfs");
    ok(
        &t.strata(
            store,
            &[
                "import",
                rootfs.to_str().unwrap(),
                "host:1",
                "--compression",
                "none",
            ],
        ),
        "import",
    );
    ok(
        &t.strata(store, &["load", "-i", arm.to_str().unwrap()]),
        "load arm64",
    );
}

/// Make `name` in `store` an index over `host:1` and `busybox-arm64`: saved as an OCI layout,
/// its index.json rewritten to name one image index over both, loaded back.
fn make_index(t: &T, store: &str, name: &str) {
    make_index_of(t, store, name, &["host:1", "busybox-arm64"]);
}

/// [`make_index`] over the images `images` of `store`.
fn make_index_of(t: &T, store: &str, name: &str, images: &[&str]) {
    let layout = t.dir.join(format!("{store}-{}", images.len()));
    let mut args = vec![
        "save",
        "--format",
        "oci-dir",
        "-o",
        layout.to_str().unwrap(),
    ];
    args.extend(images);
    ok(&t.strata(store, &args), "save");
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests: Vec<serde_json::Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.as_object_mut().unwrap().remove("annotations");
            m
        })
        .collect();
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let hex = sha256(&inner);
    fs_err::write(layout.join("blobs/sha256").join(&hex), &inner).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": inner.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }],
    });
    fs_err::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    ok(
        &t.strata(store, &["load", "-i", layout.to_str().unwrap()]),
        "load index",
    );
}

fn sha256(b: &[u8]) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b).unwrap();
    super::text(&c.wait_with_output().unwrap().stdout)[..64].to_string()
}

/// skopeo's view of `r` for an architecture: `skopeo inspect --override-arch ARCH`.
fn skopeo_arch(t: &T, r: &str, arch: &str) -> serde_json::Value {
    let o = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--override-arch", arch])
        .arg(format!("docker://{r}"))
        .env("HOME", t.dir.join("home"))
        .output()
        .unwrap();
    serde_json::from_str(&ok(&o, "skopeo inspect --override-arch")).unwrap()
}

/// The platforms of the raw index at `r`, as skopeo reads it.
fn raw_platforms(t: &T, r: &str) -> (serde_json::Value, Vec<String>) {
    let raw: serde_json::Value = serde_json::from_str(&t.skopeo_inspect(r, true, None)).unwrap();
    let p = raw["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("not an index: {raw}"))
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    (raw, p)
}

#[test]
fn an_index_is_pushed_whole_and_pulled_per_platform() {
    let t = require!(T::new("index-push"));
    let arm = require!(arm64_base());
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let h = reg.host();
    two_images(&t, "s", &arm);
    make_index(&t, "s", "multi:1");
    let dest = format!("{h}/team/multi:1");
    let o = t.strata("s", &["push", "multi:1", &dest, "--progress", "plain"]);
    let pushed = ok(&o, "push of an index");
    let err = super::text(&o.stderr);
    assert!(err.contains("pushed") || pushed.contains("pushed"), "{err}");
    let (raw, platforms) = raw_platforms(&t, &dest);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(platforms, vec!["linux/amd64", "linux/arm64"], "{raw}");
    assert_eq!(skopeo_arch(&t, &dest, "arm64")["Architecture"], "arm64");
    assert_eq!(skopeo_arch(&t, &dest, "amd64")["Architecture"], "amd64");
    // The amd64 layer went gzip-compressed: the index sent lists the manifest as sent, so it
    // is not the store's index.
    let local: serde_json::Value = serde_json::from_str(&ok(
        &t.strata("s", &["images", "--format", "json"]),
        "images",
    ))
    .unwrap();
    let row = local
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["names"] == serde_json::json!(["multi:1"]))
        .unwrap_or_else(|| panic!("{local}"));
    assert_eq!(
        row["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64/v8"])
    );
    assert_ne!(row["digest"], raw_digest(&t, &dest));
    let amd: serde_json::Value = serde_json::from_str(&t.skopeo_inspect(
        &format!(
            "{h}/team/multi@{}",
            raw["manifests"][0]["digest"].as_str().unwrap()
        ),
        true,
        None,
    ))
    .unwrap();
    assert_eq!(
        amd["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    // A second push sends the same index, and no blob again.
    let o = t.strata("s", &["push", "multi:1", &dest, "--progress", "plain"]);
    ok(&o, "second push");
    let again = super::text(&o.stderr);
    assert!(again.contains("0 blobs uploaded"), "{again}");

    // A local name that is the registry's reference: pushed (the index's name is the
    // destination), then `pull` finds the registry's index current and keeps the local one.
    ok(&t.strata("s", &["tag", "multi:1", &dest]), "tag");
    ok(
        &t.strata("s", &["push", &dest, "--progress", "plain"]),
        "push by name",
    );
    let o = t.strata("s", &["pull", &dest, "--progress", "plain"]);
    let said = ok(&o, "pull of what was pushed") + &super::text(&o.stderr);
    assert!(said.contains("up to date"), "{said}");
    let local: serde_json::Value = serde_json::from_str(&ok(
        &t.strata("s", &["images", "--format", "json"]),
        "images",
    ))
    .unwrap();
    assert!(
        local.as_array().unwrap().iter().any(|r| r["names"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(dest.clone()))
            && r["platforms"].as_array().unwrap().len() == 2),
        "{local}"
    );

    // A pull keeps one platform: the host's by default, or --platform's.
    let o = t.strata("p", &["pull", &dest, "--progress", "plain"]);
    ok(&o, "pull");
    let i: serde_json::Value =
        serde_json::from_str(&ok(&t.strata("p", &["inspect", &dest]), "inspect")).unwrap();
    assert_eq!(i["Config"]["architecture"], "amd64");
    ok(
        &t.strata(
            "p2",
            &[
                "pull",
                "--platform",
                "linux/arm64",
                &dest,
                "--progress",
                "plain",
            ],
        ),
        "pull --platform",
    );
    let i: serde_json::Value =
        serde_json::from_str(&ok(&t.strata("p2", &["inspect", &dest]), "inspect")).unwrap();
    assert_eq!(i["Config"]["architecture"], "arm64");
    let e = fails(
        &t.strata("p3", &["pull", "--platform", "linux/s390x", &dest]),
        "pull of a platform the index lacks",
    );
    assert!(
        e.contains("linux/amd64") && e.contains("linux/arm64"),
        "{e}"
    );
}

/// The digest skopeo computes for what `r` names.
fn raw_digest(t: &T, r: &str) -> String {
    format!(
        "sha256:{}",
        sha256(t.skopeo_inspect(r, true, None).as_bytes())
    )
}

#[test]
fn manifest_create_combines_two_runners_images_pushed_by_digest() {
    let t = require!(T::new("index-create"));
    let arm = require!(arm64_base());
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let h = reg.host();
    // Runner 1 (amd64) and runner 2 (arm64), each with a store of its own, push by digest
    // (a throwaway tag; the digest is what they hand on). The arm64 one to a repository of its
    // own, so that `create` mounts its blobs across.
    t.busybox_layout();
    let rootfs = t.dir.join("bb-rootfs");
    ok(
        &t.strata("r1", &["import", rootfs.to_str().unwrap(), "app"]),
        "import",
    );
    let d1 = digest_in(&ok(
        &t.strata(
            "r1",
            &["push", "-q", "app", &format!("{h}/team/app:ci-amd64")],
        ),
        "push amd64",
    ));
    ok(
        &t.strata("r2", &["load", "-i", arm.to_str().unwrap()]),
        "load arm64",
    );
    let d2 = digest_in(&ok(
        &t.strata(
            "r2",
            &[
                "push",
                "-q",
                "busybox-arm64",
                &format!("{h}/team/app-arm64:ci"),
            ],
        ),
        "push arm64",
    ));
    let s1 = format!("{h}/team/app@{d1}");
    let s2 = format!("{h}/team/app-arm64@{d2}");
    let dest = format!("{h}/team/app:1.0");
    // --dry-run: the index, nothing pushed.
    let dry: serde_json::Value = serde_json::from_str(&ok(
        &t.strata(
            "m",
            &[
                "manifest",
                "create",
                "--dry-run",
                "-t",
                &dest,
                &s1,
                &s2,
                "--annotation",
                "org.opencontainers.image.source=https://example.com/app",
            ],
        ),
        "manifest create --dry-run",
    ))
    .unwrap();
    assert_eq!(dry["manifests"].as_array().unwrap().len(), 2, "{dry}");
    assert_eq!(dry["manifests"][1]["platform"]["architecture"], "arm64");
    assert_eq!(
        dry["annotations"]["org.opencontainers.image.source"],
        "https://example.com/app"
    );
    fails(
        &t.strata("m", &["manifest", "inspect", &dest]),
        "inspect before create",
    );
    let out = ok(
        &t.strata(
            "m",
            &[
                "manifest",
                "create",
                "-q",
                "-t",
                &dest,
                &s1,
                &s2,
                "--annotation",
                "org.opencontainers.image.source=https://example.com/app",
            ],
        ),
        "manifest create",
    );
    let digest = digest_in(&out);
    let (raw, platforms) = raw_platforms(&t, &dest);
    assert_eq!(platforms, vec!["linux/amd64", "linux/arm64"], "{raw}");
    assert_eq!(raw_digest(&t, &dest), digest);
    assert_eq!(skopeo_arch(&t, &dest, "arm64")["Architecture"], "arm64");
    assert_eq!(skopeo_arch(&t, &dest, "amd64")["Architecture"], "amd64");
    let shown: serde_json::Value = serde_json::from_str(&ok(
        &t.strata("m", &["manifest", "inspect", &dest]),
        "manifest inspect",
    ))
    .unwrap();
    assert_eq!(shown, raw);
    // A pull of the tag on an arm64 machine gets the arm64 image.
    ok(
        &t.strata(
            "p",
            &[
                "pull",
                "--platform",
                "linux/arm64",
                &dest,
                "--progress",
                "plain",
            ],
        ),
        "pull arm64",
    );
    let i: serde_json::Value =
        serde_json::from_str(&ok(&t.strata("p", &["inspect", &dest]), "inspect")).unwrap();
    assert_eq!(i["Config"]["architecture"], "arm64");
    // An index as a source is taken whole, here into another repository (its manifests and
    // blobs mounted across); two images for one platform are refused.
    let other = format!("{h}/other/app:latest");
    ok(
        &t.strata("m", &["manifest", "create", "-t", &other, &dest]),
        "create from an index",
    );
    assert_eq!(raw_platforms(&t, &other).1.len(), 2);
    assert_eq!(skopeo_arch(&t, &other, "arm64")["Architecture"], "arm64");
    let e = fails(
        &t.strata(
            "m",
            &[
                "manifest",
                "create",
                "-t",
                &format!("{h}/team/app:bad"),
                &s1,
                &format!("{h}/team/app:ci-amd64"),
            ],
        ),
        "two images for one platform",
    );
    assert!(e.contains("linux/amd64"), "{e}");
    let e = fails(
        &t.strata(
            "m",
            &["manifest", "create", "-t", &format!("{h}/team/app:x"), "localhost:1/other@sha256:0000000000000000000000000000000000000000000000000000000000000000"],
        ),
        "a source on another registry",
    );
    assert!(e.contains("must be on its registry"), "{e}");
}

/// `e_machine` of the ELF file `f` (EM_X86_64 62, EM_AARCH64 183).
fn elf_machine(f: &Path) -> u16 {
    let b = fs_err::read(f).unwrap();
    assert!(b.starts_with(b"\x7fELF") && b.len() > 20, "{}", f.display());
    u16::from_le_bytes([b[18], b[19]])
}

/// A two-platform build whose `FROM --platform=$BUILDPLATFORM` stage and target stage take the
/// same base from a registry index, in a store that has neither: the builder stage pulls the
/// build platform's image first, and the arm64 target's stage must then get arm64's (it got
/// the amd64 image under the name, and the build failed: "has no linux/arm64 image").
#[test]
fn a_base_pulled_for_the_build_platform_is_pulled_again_for_the_target() {
    let t = require!(T::new("index-buildplatform"));
    let arm = require!(arm64_base());
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let h = reg.host();
    two_images(&t, "s", &arm);
    make_index(&t, "s", "multi:1");
    let base = format!("{h}/team/multi:1");
    ok(
        &t.strata("s", &["push", "multi:1", &base]),
        "push of the index",
    );
    let ctx = t.context(
        "bp",
        &format!(
            "FROM --platform=$BUILDPLATFORM {base} AS tools\nRUN uname -m > /built-on\nFROM {base}\nCOPY --from=tools /built-on /built-on\n"
        ),
    );
    let out = t.dir.join("bp-out");
    let o = t.strata(
        "fresh",
        &[
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!("type=local,dest={}", out.display()),
            ctx.to_str().unwrap(),
        ],
    );
    ok(&o, "the two-platform build from the registry's index");
    // Both platforms stay under the name (an index of the two, as the registry's).
    let row = row_named(&t, "fresh", &base).expect("the base in `images`");
    assert_eq!(
        row["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64/v8"]),
        "{row}"
    );
    for (dir, machine) in [("linux_amd64", 62), ("linux_arm64", 183)] {
        let d = out.join(dir);
        // The tools stage ran natively for both targets; each target's base is its own.
        assert_eq!(
            fs_err::read_to_string(d.join("built-on")).unwrap(),
            "x86_64\n"
        );
        assert_eq!(elf_machine(&d.join("bin/busybox")), machine, "{dir}");
    }
}

/// The `images --format json` row whose names include `name`.
fn row_named(t: &T, store: &str, name: &str) -> Option<serde_json::Value> {
    let all: serde_json::Value = serde_json::from_str(&ok(
        &t.strata(store, &["images", "--format", "json"]),
        "images",
    ))
    .unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["names"]
                .as_array()
                .is_some_and(|n| n.contains(&serde_json::json!(name)))
        })
        .cloned()
}

/// Pulling a second platform of a name keeps the first (as docker with the containerd store
/// and podman do): the name is then an index of both, each platform resolves to its own image,
/// a two-platform build from it asks the registry nothing, `--pull` still asks, and `rmi`
/// removes both. Requests are counted on a logging proxy in front of the registry.
#[test]
fn pulling_a_second_platform_keeps_both() {
    let t = require!(T::new("index-two-pulls"));
    let arm = require!(arm64_base());
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    two_images(&t, "s", &arm);
    make_index(&t, "s", "multi:1");
    ok(
        &t.strata(
            "s",
            &["push", "multi:1", &format!("{}/team/multi:1", reg.host())],
        ),
        "push of the index",
    );
    let proxy = super::harness::FaultProxy::start(reg.port);
    let r = format!("127.0.0.1:{}/team/multi:1", proxy.port);
    let registry_digest = raw_digest(&t, &r);
    for p in ["linux/amd64", "linux/arm64"] {
        ok(
            &t.strata("p", &["pull", "--platform", p, &r, "--progress", "plain"]),
            &format!("pull --platform {p}"),
        );
    }
    let row = row_named(&t, "p", &r).expect("the pulled name in `images`");
    assert_eq!(
        row["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64/v8"]),
        "{row}"
    );
    // Both platforms of the registry's index were pulled: the name is the registry's index.
    assert_eq!(row["digest"], registry_digest, "{row}");
    for (p, arch, machine) in [
        ("linux/amd64", "amd64", "x86_64"),
        ("linux/arm64", "arm64", "aarch64"),
    ] {
        let i: serde_json::Value = serde_json::from_str(&ok(
            &t.strata("p", &["inspect", "--platform", p, &r]),
            "inspect --platform",
        ))
        .unwrap();
        assert_eq!(i["Config"]["architecture"], arch, "{i}");
        assert_eq!(i["Index"]["Digest"], registry_digest, "{i}");
        assert_eq!(i["Index"]["Registry"], true, "{i}");
        let h = ok(
            &t.strata("p", &["history", "--platform", p, &r]),
            "history --platform",
        );
        assert!(!h.is_empty());
        let out = ok(
            &t.strata("p", &["run", "--platform", p, &r, "uname", "-m"]),
            &format!("run --platform {p}"),
        );
        assert_eq!(out.trim(), machine);
    }
    // A second pull of either platform finds it current; prune keeps both while named.
    ok(&t.strata("p", &["prune"]), "prune");
    let report = ok(&t.strata("p", &["fsck"]), "fsck");
    assert!(report.contains(" 0 problems"), "{report}");
    for p in ["linux/amd64", "linux/arm64"] {
        let o = t.strata("p", &["pull", "--platform", p, &r, "--progress", "plain"]);
        let said = ok(&o, "pull again") + &super::text(&o.stderr);
        assert!(said.contains("up to date"), "{said}");
    }
    // A two-platform build from the name: no request to the registry at all.
    let ctx = t.context("two", &format!("FROM {r}\nCOPY f /f\n"));
    fs_err::write(ctx.join("f"), "x").unwrap();
    proxy.log.lock().unwrap().clear();
    let out = t.dir.join("two-out");
    ok(
        &t.strata(
            "p",
            &[
                "build",
                "--progress",
                "plain",
                "--platform",
                "linux/amd64,linux/arm64",
                "--output",
                &format!("type=local,dest={}", out.display()),
                ctx.to_str().unwrap(),
            ],
        ),
        "two-platform build from the pulled name",
    );
    assert_eq!(proxy.requests(), Vec::<String>::new());
    assert_eq!(elf_machine(&out.join("linux_amd64/bin/busybox")), 62);
    assert_eq!(elf_machine(&out.join("linux_arm64/bin/busybox")), 183);
    // --pull asks the registry (one HEAD per platform's resolution), and downloads nothing.
    ok(
        &t.strata(
            "p",
            &[
                "build",
                "--pull",
                "--progress",
                "plain",
                "--platform",
                "linux/amd64,linux/arm64",
                ctx.to_str().unwrap(),
            ],
        ),
        "the build with --pull",
    );
    let asked = proxy.requests();
    assert!(
        asked
            .iter()
            .any(|q| q.starts_with("HEAD ") && q.contains("/manifests/")),
        "{asked:?}"
    );
    assert!(!asked.iter().any(|q| q.contains("/blobs/")), "{asked:?}");
    // Two pulls at once, one per platform, into a fresh store: neither platform is lost. And a
    // pinned reference (`REPO@DIGEST`) gathers its platforms the same way.
    let pinned = format!("127.0.0.1:{}/team/multi@{registry_digest}", proxy.port);
    for want in [&r, &pinned] {
        let store = if want == &r { "c" } else { "d" };
        let children: Vec<_> = ["linux/amd64", "linux/arm64"]
            .into_iter()
            .map(|p| {
                t.cmd_in(&t.store(store), &["pull", "-q", "--platform", p, want])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            ok(&c.wait_with_output().unwrap(), "a pull beside another");
        }
        let row = row_named(&t, store, want).expect("the pulled name in `images`");
        assert_eq!(row["platforms"].as_array().unwrap().len(), 2, "{row}");
        assert_eq!(row["digest"], registry_digest, "{row}");
    }
    // rmi removes the name, both platforms with it.
    ok(&t.strata("p", &["rmi", &r]), "rmi");
    assert!(row_named(&t, "p", &r).is_none());
    fails(
        &t.strata("p", &["inspect", "--platform", "linux/arm64", &r]),
        "inspect after rmi",
    );
}

/// Two platforms pulled of a three-platform index: the name is an index the store made of the
/// two (`inspect` says so, and gives the registry's digest, which `--pull` compares); the third
/// pull completes it, and the name is then the registry's own index.
#[test]
fn a_partial_pull_is_a_local_index_until_every_platform_is_here() {
    let t = require!(T::new("index-partial"));
    let arm = require!(arm64_base());
    let riscv = arm.with_file_name("busybox-riscv64");
    if !riscv.join("index.json").exists() {
        super::support::skip("the riscv64 busybox base is missing (make test-deps)");
        return;
    }
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    two_images(&t, "s", &arm);
    ok(
        &t.strata("s", &["load", "-i", riscv.to_str().unwrap()]),
        "load riscv64",
    );
    // A tag of its own: the layout names each image by its tag (two `latest` would be one).
    ok(
        &t.strata("s", &["tag", "busybox-riscv64", "riscv:2"]),
        "tag",
    );
    make_index_of(&t, "s", "three:1", &["host:1", "busybox-arm64", "riscv:2"]);
    let r = format!("{}/team/three:1", reg.host());
    ok(
        &t.strata("s", &["push", "three:1", &r]),
        "push of the index",
    );
    let registry_digest = raw_digest(&t, &r);
    let index_of = |p: &str| -> serde_json::Value {
        let i: serde_json::Value = serde_json::from_str(&ok(
            &t.strata("p", &["inspect", "--platform", p, &r]),
            "inspect --platform",
        ))
        .unwrap();
        i["Index"].clone()
    };
    for p in ["linux/amd64", "linux/arm64"] {
        ok(
            &t.strata("p", &["pull", "--platform", p, &r]),
            &format!("pull --platform {p}"),
        );
    }
    let ix = index_of("linux/arm64");
    assert_eq!(ix["Registry"], false, "{ix}");
    assert_eq!(ix["RegistryDigest"], registry_digest, "{ix}");
    assert_ne!(ix["Digest"], registry_digest, "{ix}");
    assert_eq!(
        ix["Platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64/v8"]),
        "{ix}"
    );
    // The registry's index has not moved: `--pull` of a platform held finds it current.
    let o = t.strata(
        "p",
        &[
            "pull",
            "--platform",
            "linux/amd64",
            &r,
            "--progress",
            "plain",
        ],
    );
    let said = ok(&o, "pull again") + &super::text(&o.stderr);
    assert!(said.contains("up to date"), "{said}");
    // Prune keeps both while named; fsck finds nothing wrong.
    ok(&t.strata("p", &["prune"]), "prune");
    let report = ok(&t.strata("p", &["fsck"]), "fsck");
    assert!(report.contains(" 0 problems"), "{report}");
    assert_eq!(
        index_of("linux/amd64")["Platforms"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The last platform: the name is the registry's index now.
    ok(
        &t.strata("p", &["pull", "--platform", "linux/riscv64", &r]),
        "pull --platform linux/riscv64",
    );
    let ix = index_of("linux/riscv64");
    assert_eq!(ix["Registry"], true, "{ix}");
    assert_eq!(ix["Digest"], registry_digest, "{ix}");
    assert_eq!(ix["Platforms"].as_array().unwrap().len(), 3, "{ix}");
    // A tag is the same index; rmi of the pulled name leaves the tag; prune then keeps the
    // tag's images only.
    ok(&t.strata("p", &["tag", &r, "mine:1"]), "tag");
    ok(&t.strata("p", &["rmi", &r]), "rmi");
    assert!(row_named(&t, "p", &r).is_none());
    ok(&t.strata("p", &["prune"]), "prune");
    let row = row_named(&t, "p", "mine:1").expect("the tag in `images`");
    assert_eq!(row["platforms"].as_array().unwrap().len(), 3, "{row}");
    let report = ok(&t.strata("p", &["fsck"]), "fsck");
    assert!(report.contains(" 0 problems"), "{report}");
}

/// An index pushed with BuildKit-style attestation manifests (`--sbom --provenance`), pulled
/// one platform at a time into one store: the first pull made the name an index of the image
/// and its attestation, and the second failed ("has no linux/arm64 image"); now the second
/// joins the first, and once both are here the name is the registry's index, attestations and
/// all, each platform's SBOM the one pushed for it.
#[test]
fn an_attested_index_pulled_per_platform_keeps_both() {
    let t = require!(T::new("index-attested"));
    let arm = require!(arm64_base());
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    two_images(&t, "s", &arm);
    make_index(&t, "s", "multi:1");
    let ctx = t.context("att", "FROM multi:1\nCOPY f /f\n");
    fs_err::write(ctx.join("f"), "x").unwrap();
    let r = format!("{}/team/attested:1", reg.host());
    ok(
        &t.strata(
            "s",
            &[
                "build",
                "-q",
                "--platform",
                "linux/amd64,linux/arm64",
                "--sbom=true",
                "--provenance=mode=min",
                "-t",
                &r,
                "--push",
                ctx.to_str().unwrap(),
            ],
        ),
        "the attested two-platform build, pushed",
    );
    let (raw, platforms) = raw_platforms(&t, &r);
    assert_eq!(platforms.len(), 4, "{raw}");
    let registry_digest = raw_digest(&t, &r);
    for p in ["linux/amd64", "linux/arm64"] {
        ok(
            &t.strata("p", &["pull", "--platform", p, &r]),
            &format!("pull --platform {p}"),
        );
    }
    let row = row_named(&t, "p", &r).expect("the pulled name in `images`");
    assert_eq!(row["digest"], registry_digest, "{row}");
    assert_eq!(row["platforms"].as_array().unwrap().len(), 2, "{row}");
    for (i, p) in ["linux/amd64", "linux/arm64"].into_iter().enumerate() {
        let sbom: serde_json::Value = serde_json::from_str(&ok(
            &t.strata("p", &["sbom", "--platform", p, &r]),
            "sbom --platform",
        ))
        .unwrap();
        assert_eq!(
            sbom["packages"][0]["versionInfo"], raw["manifests"][i]["digest"],
            "{p}"
        );
    }
    ok(&t.strata("p", &["prune"]), "prune");
    let report = ok(&t.strata("p", &["fsck"]), "fsck");
    assert!(report.contains(" 0 problems"), "{report}");
}
