//! `strata build --platform linux/amd64,linux/arm64`: one build per target platform and an
//! image index as the result, as buildx's. The bases: busybox:latest made from this machine's
//! busybox-static (tagged busybox-amd64 too) and Debian's arm64 busybox-static from
//! target/test-images/oci/busybox-arm64 (scripts/make-foreign-bases.sh), each under a tag of
//! its own, so the Dockerfiles pick theirs with `FROM busybox-${TARGETARCH}`. `make test` runs
//! this file as root and again as strata-test (scripts/test-as-user.sh). Without busybox-static
//! or the arm64 image the tests say SKIPPED (and fail under STRATA_REQUIRE_TOOLS=1, as in CI).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use support::store;
use support::text;

const STORE: store::Options = store::Options {
    kind: "multi",
    bin: store::Bin::Copied,
    cache_limit: store::CacheLimit::Inherited,
    ctx: store::CtxFiles::WithParents,
};

fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-images/oci")
}

/// A store with busybox-amd64 (this machine's busybox) and busybox-arm64; None (skipped) on
/// another machine than x86-64 or without the arm64 image.
struct M(store::Store);

impl std::ops::Deref for M {
    type Target = store::Store;
    fn deref(&self) -> &store::Store {
        &self.0
    }
}

impl M {
    fn new(name: &str) -> Option<M> {
        if std::env::consts::ARCH != "x86_64" {
            support::not_applicable(
                "these tests expect an x86-64 host (their other platform is arm64)",
            );
            return None;
        }
        let arm64 = images().join("busybox-arm64");
        if !arm64.join("index.json").exists() {
            support::skip("target/test-images/oci/busybox-arm64 is missing: scripts/make-foreign-bases.sh target/test-images makes it");
            return None;
        }
        let s = store::Store::new(&STORE, name).map(M)?;
        let o = s.strata(&["tag", "busybox:latest", "busybox-amd64:latest"]);
        assert!(o.status.success(), "tag: {}", text(&o.stderr));
        let o = s.strata(&["load", "-i", arm64.to_str().unwrap()]);
        assert!(o.status.success(), "load: {}", text(&o.stderr));
        // The layout names its image busybox-arm64:latest.
        assert!(
            text(&o.stdout).contains("busybox-arm64:latest"),
            "load said: {}",
            text(&o.stdout)
        );
        Some(s)
    }
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs_err::read(p).unwrap()).unwrap()
}

/// A blob of an OCI layout, as JSON.
fn blob(layout: &Path, digest: &str) -> serde_json::Value {
    json(
        &layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
}

/// COPY-only steps: the image of each platform is its own base plus the same file; a heredoc
/// COPY writes the platform ARGs each build saw.
const COPY_ONLY: &str = "\
ARG TARGETARCH
FROM busybox-${TARGETARCH}
ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDARCH
COPY hello.txt /hello.txt
COPY <<EOF /platform.txt
$TARGETPLATFORM $TARGETOS $TARGETARCH [$TARGETVARIANT] $BUILDPLATFORM $BUILDARCH
EOF
";

#[test]
fn two_platforms_of_copy_steps_make_an_index_with_both() {
    let Some(s) = M::new("copy-index") else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", COPY_ONLY), ("hello.txt", "hello\n")],
    );
    let out = s.dir.join("oci");
    let err = s.ok(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--platform",
            "arm64",
            "-t",
            "multi:1",
            "--output",
            &format!("type=oci,tar=false,dest={}", out.display()),
            "--metadata-file",
            s.dir.join("meta.json").to_str().unwrap(),
        ],
    );
    assert!(err.contains("built image index sha256:"), "{err}");
    assert!(err.contains("for linux/amd64, linux/arm64"), "{err}");
    // The layout's one entry is the index, named as tagged.
    let top = json(&out.join("index.json"));
    let entries = top["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{top}");
    assert_eq!(
        entries[0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        entries[0]["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    let index_digest = entries[0]["digest"].as_str().unwrap().to_string();
    let index = blob(&out, &index_digest);
    let ms = index["manifests"].as_array().unwrap();
    let platforms: Vec<String> = ms
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for (m, arch) in ms.iter().zip(["amd64", "arm64"]) {
        let manifest = blob(&out, m["digest"].as_str().unwrap());
        let config = blob(&out, manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(config["architecture"], arch);
        // Every layer is in the layout.
        for l in manifest["layers"].as_array().unwrap() {
            let d = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
            assert!(out.join("blobs/sha256").join(d).exists(), "{l}");
        }
    }
    // --metadata-file records the index.
    let meta = json(&s.dir.join("meta.json"));
    assert_eq!(meta["containerimage.digest"], index_digest.as_str());
    assert_eq!(meta["strata.platforms"].as_array().unwrap().len(), 2);
    // skopeo reads the layout, each platform by its architecture.
    if support::have("skopeo") {
        for (arch, want) in [("amd64", "amd64"), ("arm64", "arm64")] {
            let o = std::process::Command::new("skopeo")
                .args(["--override-arch", arch, "inspect", "--config"])
                .arg(format!("oci:{}:1", out.display()))
                .output()
                .unwrap();
            assert!(o.status.success(), "skopeo: {}", text(&o.stderr));
            let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(c["architecture"], want);
        }
    }
}

#[test]
fn each_platform_sees_its_target_args_and_the_build_platform() {
    let Some(s) = M::new("args") else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", COPY_ONLY), ("hello.txt", "hello\n")],
    );
    let out = s.dir.join("out");
    s.ok(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
    );
    let read = |p: &str| fs_err::read_to_string(out.join(p)).unwrap();
    assert_eq!(
        read("linux_amd64/platform.txt"),
        "linux/amd64 linux amd64 [] linux/amd64 amd64\n"
    );
    assert_eq!(
        read("linux_arm64/platform.txt"),
        "linux/arm64 linux arm64 [] linux/amd64 amd64\n"
    );
    assert_eq!(read("linux_arm64/hello.txt"), "hello\n");
    // Each directory holds its platform's busybox.
    let elf_machine = |p: &str| {
        let b = fs_err::read(out.join(p)).unwrap();
        u16::from_le_bytes([b[18], b[19]])
    };
    assert_eq!(elf_machine("linux_amd64/bin/busybox"), 62, "x86-64");
    assert_eq!(elf_machine("linux_arm64/bin/busybox"), 183, "aarch64");
    // type=tar: one tar with both directories.
    let tar = s.dir.join("fs.tar");
    s.ok(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!("type=tar,dest={}", tar.display()),
        ],
    );
    let o = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let names = text(&o.stdout);
    for want in ["linux_amd64/platform.txt", "linux_arm64/platform.txt"] {
        assert!(
            names.lines().any(|l| l.trim_start_matches("./") == want),
            "{want} not in the tar: {names}"
        );
    }
}

/// The cross-compilation shape: a builder on the build platform that does not use the target
/// (run once for both), one that does (run once per target, natively), and a target stage of
/// COPY steps only.
const CROSS: &str = "\
ARG TARGETARCH
FROM --platform=$BUILDPLATFORM busybox-amd64 AS tools
RUN echo tools-ran-$((40+2)) && echo tool > /tool
FROM --platform=$BUILDPLATFORM busybox-amd64 AS cross
ARG TARGETARCH
RUN echo cross-ran-$((40+2)) for $TARGETARCH && uname -m > /built-on && echo $TARGETARCH > /built-for
FROM busybox-${TARGETARCH}
COPY --from=tools /tool /tool
COPY --from=cross /built-on /built-for /
";

#[test]
fn a_build_platform_stage_runs_once_for_both_targets() {
    let Some(s) = M::new("shared") else {
        return;
    };
    let ctx = s.ctx("ctx", &[("Dockerfile", CROSS)]);
    let out = s.dir.join("out");
    let err = s.ok(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "cross:1",
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
    );
    let output_lines = |needle: &str| {
        err.lines()
            .filter(|l| l.contains(needle) && !l.contains("RUN "))
            .count()
    };
    assert_eq!(output_lines("tools-ran-42"), 1, "{err}");
    assert_eq!(output_lines("cross-ran-42 for amd64"), 1, "{err}");
    assert_eq!(output_lines("cross-ran-42 for arm64"), 1, "{err}");
    // Progress names each stage's platform.
    assert!(err.contains("[linux/arm64 stage-2"), "{err}");
    for (dir, arch) in [("linux_amd64", "amd64"), ("linux_arm64", "arm64")] {
        let read = |p: &str| fs_err::read_to_string(out.join(dir).join(p)).unwrap();
        assert_eq!(read("tool"), "tool\n");
        assert_eq!(read("built-on"), "x86_64\n");
        assert_eq!(read("built-for"), format!("{arch}\n"));
    }
    // Again: every step cached.
    let again = s.ok(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!("type=oci,dest={}", s.dir.join("again.tar").display()),
        ],
    );
    assert_eq!(
        again
            .lines()
            .filter(|l| l.contains("ran-42") && !l.contains("RUN "))
            .count(),
        0,
        "{again}"
    );
}

#[test]
fn the_index_is_stored_under_the_tag() {
    let Some(s) = M::new("stored") else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", COPY_ONLY), ("hello.txt", "hello\n")],
    );
    s.ok(
        &ctx,
        &["--platform", "linux/amd64,linux/arm64", "-t", "multi:2"],
    );
    // The store's own index names the image index.
    let top = json(&Path::new(&s.root).join("v1/oci/index.json"));
    let entry = top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|n| n.ends_with("multi:2"))
        })
        .unwrap_or_else(|| panic!("multi:2 not in {top}"));
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
}

/// `skopeo inspect --raw` of `reference` (a transport:reference), as JSON.
fn skopeo_raw(reference: &str) -> serde_json::Value {
    skopeo_json(&["inspect", "--raw", reference])
}

/// What `skopeo ARGS` prints (it must succeed).
fn skopeo_out(args: &[&str]) -> Vec<u8> {
    let o = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo {args:?}: {}", text(&o.stderr));
    o.stdout
}

/// What `skopeo ARGS` prints, as JSON.
fn skopeo_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&skopeo_out(args))
        .unwrap_or_else(|e| panic!("skopeo {args:?} printed no JSON ({e})"))
}

/// The `--annotation` kinds of buildx: the manifests (all, or one platform's), the index, a
/// manifest's descriptor in the index, the index's descriptor in the layout's index.json.
const ANNOTATIONS: [&str; 12] = [
    "--annotation",
    "org.example.all=every",
    "--annotation",
    "manifest[linux/arm64]:org.example.arm=only-arm64",
    "--annotation",
    "index:org.example.index=the-index",
    "--annotation",
    "manifest-descriptor:org.example.desc=each",
    "--annotation",
    "manifest-descriptor[linux/amd64]:org.example.desc-amd=amd64",
    "--annotation",
    "index-descriptor:org.example.top=in-index-json",
];

#[test]
fn annotations_go_where_buildx_puts_them() {
    let Some(s) = M::new("annotations") else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", COPY_ONLY), ("hello.txt", "hello\n")],
    );
    let out = s.dir.join("oci");
    let mut args = vec![
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        "annotated:1",
        "--output",
    ];
    let dest = format!("type=oci,tar=false,dest={}", out.display());
    args.push(&dest);
    args.extend(ANNOTATIONS);
    s.ok(&ctx, &args);
    // index.json's entry: the index-descriptor annotation beside the name.
    let top = json(&out.join("index.json"));
    let entry = &top["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.example.top"], "in-index-json",
        "{top}"
    );
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    let index = blob(&out, entry["digest"].as_str().unwrap());
    let check = |index: &serde_json::Value, manifest: &dyn Fn(&str) -> serde_json::Value| {
        assert_eq!(
            index["annotations"]["org.example.index"], "the-index",
            "{index}"
        );
        assert!(
            index["annotations"].get("org.example.top").is_none(),
            "{index}"
        );
        let ms = index["manifests"].as_array().unwrap();
        assert_eq!(ms.len(), 2, "{index}");
        for d in ms {
            let arch = d["platform"]["architecture"].as_str().unwrap();
            let a = &d["annotations"];
            assert_eq!(a["org.example.desc"], "each", "{index}");
            assert_eq!(
                a.get("org.example.desc-amd").is_some(),
                arch == "amd64",
                "{index}"
            );
            let m = manifest(d["digest"].as_str().unwrap());
            let a = &m["annotations"];
            assert_eq!(a["org.example.all"], "every", "{arch}: {m}");
            assert_eq!(
                a.get("org.example.arm").is_some(),
                arch == "arm64",
                "{arch}: {m}"
            );
            // The base, as BuildKit records it, stays.
            assert!(
                a["org.opencontainers.image.base.name"]
                    .as_str()
                    .is_some_and(|n| n.contains(&format!("busybox-{arch}"))),
                "{arch}: {m}"
            );
        }
    };
    check(&index, &|d| blob(&out, d));
    if !support::have("skopeo") {
        support::skip("skopeo is not installed: the annotations are not read back with it");
        return;
    }
    // skopeo reads the same from the layout...
    let raw = skopeo_raw(&format!("oci:{}:1", out.display()));
    check(&raw, &|d| blob(&out, d));
    // ...and from the store, where the build without --output names the index.
    s.ok(
        &ctx,
        &[
            &["--platform", "linux/amd64,linux/arm64", "-t", "annotated:2"][..],
            &ANNOTATIONS,
        ]
        .concat(),
    );
    let store = Path::new(&s.root).join("v1/oci");
    let top = json(&store.join("index.json"));
    let name = top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .find(|n| n.ends_with("annotated:2"))
        .unwrap_or_else(|| panic!("annotated:2 not in {top}"))
        .to_string();
    let raw = skopeo_raw(&format!("oci:{}:{name}", store.display()));
    check(&raw, &|d| blob(&store, d));
}

#[test]
fn annotations_that_need_an_index_or_a_platform_of_the_build_are_refused() {
    let Some(s) = M::new("annotations-refused") else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", COPY_ONLY), ("hello.txt", "hello\n")],
    );
    for (args, says) in [
        (
            &["--platform", "linux/amd64", "--annotation", "index:a=b"][..],
            "index annotations not supported for single platform export",
        ),
        (
            &[
                "--platform",
                "linux/arm64",
                "--annotation",
                "index-descriptor:a=b",
            ],
            "index annotations not supported for single platform export",
        ),
        (
            &[
                "--platform",
                "linux/arm64",
                "--annotation",
                "manifest-descriptor:a=b",
            ],
            "a single-platform build has no index to hold its manifest's descriptor",
        ),
        (
            &[
                "--platform",
                "linux/amd64,linux/arm64",
                "--annotation",
                "manifest[linux/riscv64]:a=b",
            ],
            "no platform linux/riscv64 in this build (--platform linux/amd64, linux/arm64)",
        ),
        (
            &["--annotation", "index[linux/arm64]:a=b"],
            "an index annotation is not for one platform",
        ),
    ] {
        let (code, err) = s.fails_with(&ctx, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // One platform's manifest annotation, named for it, is its manifest's.
    let out = s.dir.join("one");
    s.ok(
        &ctx,
        &[
            "--platform",
            "linux/arm64",
            "--annotation",
            "manifest[linux/arm64]:org.example.arm=yes",
            "--output",
            &format!("type=oci,tar=false,dest={}", out.display()),
        ],
    );
    let top = json(&out.join("index.json"));
    let m = blob(&out, top["manifests"][0]["digest"].as_str().unwrap());
    assert_eq!(m["annotations"]["org.example.arm"], "yes", "{m}");
    // One platform with an attestation is an index (BuildKit's too): the index kinds go on it.
    let out = s.dir.join("attested");
    s.ok(
        &ctx,
        &[
            "--platform",
            "linux/arm64",
            "--provenance=true",
            "--annotation",
            "index:org.example.index=one",
            "--annotation",
            "index-descriptor:org.example.top=entry",
            "--annotation",
            "manifest-descriptor:org.example.desc=image",
            "--output",
            &format!("type=oci,tar=false,dest={}", out.display()),
        ],
    );
    let top = json(&out.join("index.json"));
    let entry = &top["manifests"][0];
    assert_eq!(entry["annotations"]["org.example.top"], "entry", "{top}");
    let index = blob(&out, entry["digest"].as_str().unwrap());
    assert_eq!(index["annotations"]["org.example.index"], "one", "{index}");
    let ms = index["manifests"].as_array().unwrap();
    assert_eq!(
        ms.len(),
        2,
        "the image and its attestation manifest: {index}"
    );
    assert_eq!(ms[0]["annotations"]["org.example.desc"], "image", "{index}");
    assert!(
        ms[1]["annotations"].get("org.example.desc").is_none(),
        "{index}"
    );
}

#[test]
fn the_size_report_has_each_platforms_image() {
    let Some(s) = M::new("size") else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", COPY_ONLY), ("hello.txt", "hello\n")],
    );
    let err = s.ok(
        &ctx,
        &["--platform", "linux/amd64,linux/arm64", "-t", "sized:1"],
    );
    let table: Vec<&str> = err
        .lines()
        .skip_while(|l| *l != "size of each platform's image:")
        .collect();
    assert!(!table.is_empty(), "no size report in:\n{err}");
    assert!(
        table[1]
            .split_whitespace()
            .eq(["PLATFORM", "CONTENT", "PUSH", "LAYERS"]),
        "{err}"
    );
    let row = |name: &str| -> Vec<String> {
        table
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{err}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let (amd, arm, all) = (row("linux/amd64"), row("linux/arm64"), row("together"));
    // Each image: its base's layer and the two COPY layers; the sum is the index's.
    assert_eq!(amd[3], "3", "{err}");
    assert_eq!(arm[3], "3", "{err}");
    assert_eq!(all[3], "6", "{err}");
    // The content differs (each platform's own busybox), and the sum is what `strata images`
    // shows for the index.
    assert_ne!(amd[1], arm[1], "{err}");
    let o = s.strata(&["images", "--format", "json"]);
    assert!(o.status.success(), "images: {}", text(&o.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let index = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().is_some_and(|n| n.ends_with("sized:1")))
        })
        .unwrap_or_else(|| panic!("sized:1 not in {rows}"));
    assert_eq!(index["platforms"].as_array().unwrap().len(), 2, "{index}");
    assert_eq!(
        all[1],
        strata::engine::size::human(index["size"].as_u64().unwrap()),
        "{err}"
    );
    // Not the single-platform layer table.
    assert!(!err.contains("LAYER    CONTENT"), "{err}");
}

#[test]
fn outputs_of_one_image_are_refused_with_several_platforms() {
    let Some(s) = M::new("docker") else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", COPY_ONLY), ("hello.txt", "hello\n")],
    );
    let dest = s.dir.join("img.tar");
    let err = s.fails(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!("type=docker,dest={}", dest.display()),
        ],
    );
    assert!(
        err.contains(
            "docker exporter does not support multiple platforms (linux/amd64, linux/arm64)"
        ),
        "{err}"
    );
    assert!(err.contains("type=oci"), "{err}");
    assert!(!dest.exists());
    let err = s.fails(&ctx, &["--platform", "linux/amd64,linux/arm64", "--load"]);
    assert!(
        err.contains("--load: docker exporter does not support multiple platforms"),
        "{err}"
    );
}

#[test]
fn unknown_platforms_and_bases_without_the_platform_are_named() {
    let Some(s) = M::new("errors") else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", COPY_ONLY), ("hello.txt", "hello\n")],
    );
    let err = s.fails(&ctx, &["--platform", "linux/amd64,linux/sparkle"]);
    assert!(err.contains("unknown platform linux/sparkle"), "{err}");
    let err = s.fails(&ctx, &["--platform", "linux//arm64"]);
    assert!(err.contains("invalid --platform \"linux//arm64\""), "{err}");
    // busybox:latest is amd64 only.
    let only = s.ctx(
        "only",
        &[("Dockerfile", "FROM busybox\nCOPY Dockerfile /\n")],
    );
    let err = s.fails(&only, &["--platform", "linux/amd64,linux/arm64"]);
    assert!(
        err.contains("base image busybox has no linux/arm64 image (the one found is linux/amd64)"),
        "{err}"
    );
}

#[test]
fn one_platform_builds_one_image_as_before() {
    let Some(s) = M::new("single") else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", COPY_ONLY), ("hello.txt", "hello\n")],
    );
    let out = s.dir.join("oci");
    let err = s.ok(
        &ctx,
        &[
            "--platform",
            "linux/amd64",
            "--output",
            &format!("type=oci,tar=false,dest={}", out.display()),
        ],
    );
    assert!(!err.contains("image index"), "{err}");
    let top = json(&out.join("index.json"));
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
}

#[test]
fn a_foreign_run_step_runs_emulated() {
    let Some(s) = M::new("emulated") else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[(
            "Dockerfile",
            "ARG TARGETARCH\nFROM busybox-${TARGETARCH}\nRUN uname -m > /machine\n",
        )],
    );
    let out = s.dir.join("out");
    s.ok(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
    );
    let read = |p: &str| fs_err::read_to_string(out.join(p)).unwrap();
    assert_eq!(read("linux_amd64/machine"), "x86_64\n");
    assert_eq!(read("linux_arm64/machine"), "aarch64\n");
}

#[test]
fn a_failing_platform_cancels_the_others() {
    let Some(s) = M::new("cancel") else {
        return;
    };
    // linux/arm64 fails at once (its base is amd64 only); linux/amd64 would sleep.
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", "FROM busybox-amd64\nRUN sleep 60\n")],
    );
    let start = std::time::Instant::now();
    let err = s.fails(&ctx, &["--platform", "linux/amd64,linux/arm64"]);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}: {err}",
        start.elapsed()
    );
    assert!(err.contains("building for linux/arm64"), "{err}");
    assert!(
        err.contains("base image busybox-amd64 has no linux/arm64 image"),
        "{err}"
    );
    assert!(!err.contains("cancelled"), "{err}");
}

/// Debian's docker-registry on 127.0.0.1 for one test, stopped (by its pid) when dropped.
struct Registry {
    child: std::process::Child,
    port: u16,
}

impl Registry {
    fn start(dir: &Path) -> Option<Registry> {
        if !support::have("docker-registry") {
            support::skip("docker-registry is not installed (apt-get install docker-registry)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("registry.yml");
        fs_err::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("registry-data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Stopped by Drop from here on, the panic below included.
        let r = Registry { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(r);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("docker-registry did not listen on {port}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn push_sends_the_index_and_each_platform() {
    let Some(s) = M::new("push") else {
        return;
    };
    let Some(r) = Registry::start(&s.dir) else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", COPY_ONLY), ("hello.txt", "hello\n")],
    );
    let name = format!("127.0.0.1:{}/multi:1", r.port);
    let meta = s.dir.join("meta.json");
    let iid = s.dir.join("iid");
    s.ok(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &name,
            "--push",
            "--metadata-file",
            meta.to_str().unwrap(),
            "--annotation",
            "index:org.example.pushed=index",
            "--annotation",
            "manifest-descriptor[linux/arm64]:org.example.arm=descriptor",
            "--iidfile",
            iid.to_str().unwrap(),
        ],
    );
    // The cache summary: both platforms' steps, none cached in a fresh store.
    let m = json(&meta);
    let cache = &m["strata.cache"];
    assert_eq!(cache["steps"], 4, "{m}");
    assert_eq!(cache["cached"], 0, "{m}");
    assert_eq!(cache["imported"], 0, "{m}");
    assert_eq!(cache["ran"].as_array().unwrap().len(), 4, "{m}");
    for p in m["strata.platforms"].as_array().unwrap() {
        assert_eq!(p["cache"]["steps"], 2, "{m}");
    }
    if !support::have("skopeo") {
        support::skip("skopeo is not installed: the pushed index is not read back");
        return;
    }
    let raw = skopeo_out(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]);
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    // --metadata-file describes the index the registry has: its digest and size.
    let d = &m["containerimage.descriptor"];
    assert_eq!(d["size"], raw.len(), "{m}");
    assert_eq!(
        d["digest"],
        strata::oci::Digest::of(&raw).to_string(),
        "{m}"
    );
    assert_eq!(m["containerimage.digest"], d["digest"], "{m}");
    // The push compressed the layers: another index than the local one (--iidfile's), of
    // another size.
    let local = fs_err::read_to_string(&iid).unwrap();
    assert_ne!(d["digest"], local.as_str(), "{m}");
    // The annotations went with the index.
    assert_eq!(
        index["annotations"]["org.example.pushed"], "index",
        "{index}"
    );
    assert_eq!(
        index["manifests"][1]["annotations"]["org.example.arm"], "descriptor",
        "{index}"
    );
    assert!(
        index["manifests"][0]["annotations"]
            .get("org.example.arm")
            .is_none(),
        "{index}"
    );
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    let c = skopeo_json(&[
        "--override-arch",
        "arm64",
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]);
    assert_eq!(c["architecture"], "arm64");
    assert_eq!(m["strata.pushed"].as_array().unwrap().len(), 1);
}

#[test]
fn a_multi_platform_base_gives_each_platform_its_image() {
    let Some(s) = M::new("index-base") else {
        return;
    };
    let base = s.ctx(
        "base",
        &[(
            "Dockerfile",
            "ARG TARGETARCH\nFROM busybox-${TARGETARCH}\nARG TARGETARCH\nCOPY <<EOF /arch\n$TARGETARCH\nEOF\n",
        )],
    );
    s.ok(
        &base,
        &["--platform", "linux/amd64,linux/arm64", "-t", "base:multi"],
    );
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", "FROM base:multi\nCOPY Dockerfile /df\n")],
    );
    let out = s.dir.join("out");
    s.ok(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
    );
    for arch in ["amd64", "arm64"] {
        let got = fs_err::read_to_string(out.join(format!("linux_{arch}/arch"))).unwrap();
        assert_eq!(got, format!("{arch}\n"));
    }
    // A platform the base's index lacks is named.
    let err = s.fails(&ctx, &["--platform", "linux/amd64,linux/riscv64"]);
    assert!(err.contains("linux/riscv64"), "{err}");
    assert!(err.contains("base:multi"), "{err}");
}

/// A builder stage on the build platform that both targets share, and a RUN in the target
/// stage that runs for each (emulated for arm64): every RUN prints a line that counts it.
const CACHED: &str = "\
ARG TARGETARCH
FROM --platform=$BUILDPLATFORM busybox-amd64 AS tools
RUN echo tools-ran-$((40+2)) && echo tool > /tool
FROM busybox-${TARGETARCH}
ARG TARGETARCH
RUN echo target-ran-$((40+2)) for $TARGETARCH && uname -m > /machine
COPY --from=tools /tool /tool
";

/// The RUN steps that ran in a build (their output lines, not the step headers).
fn runs(progress: &str) -> Vec<&str> {
    progress
        .lines()
        .filter(|l| l.contains("ran-42") && !l.contains("RUN "))
        .collect()
}

/// (steps, cached) of the "built image index … (N steps, M cached)" line.
fn steps_cached(progress: &str) -> (usize, usize) {
    let line = progress
        .lines()
        .find(|l| l.contains("built image index"))
        .unwrap_or_else(|| panic!("no summary in {progress}"));
    let inner = line.rsplit_once('(').unwrap().1;
    let mut n = inner
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse::<usize>().unwrap());
    (n.next().unwrap(), n.next().unwrap())
}

/// Each platform's image id (its config's digest), from `--metadata-file`. (The store's
/// manifests may differ: a layer taken from a cache is the cache's gzip blob, a layer built
/// here is stored as it was written; once pushed, both are the same bytes.)
fn platform_ids(meta: &Path) -> Vec<(String, String)> {
    json(meta)["strata.platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["platform"].as_str().unwrap().to_string(),
                p["config.digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn cache_to_and_from_carry_every_platforms_steps() {
    let Some(s) = M::new("cache-to") else {
        return;
    };
    let reg = Registry::start(&s.dir);
    let ctx = s.ctx("ctx", &[("Dockerfile", CACHED)]);
    let cache = s.dir.join("cache");
    let cache_min = s.dir.join("cache-min");
    let meta = s.dir.join("meta.json");
    let mut args = vec![
        "--platform".to_string(),
        "linux/amd64,linux/arm64".into(),
        "--cache-to".into(),
        format!("type=local,dest={},mode=max", cache.display()),
        "--cache-to".into(),
        format!("type=local,dest={}", cache_min.display()),
        "--metadata-file".into(),
        meta.display().to_string(),
    ];
    let cache_ref = reg
        .as_ref()
        .map(|r| format!("127.0.0.1:{}/cache:multi", r.port));
    let image_ref = reg
        .as_ref()
        .map(|r| format!("127.0.0.1:{}/multi:out", r.port));
    if let (Some(c), Some(i)) = (&cache_ref, &image_ref) {
        args.extend([
            "--cache-to".into(),
            format!("type=registry,ref={c},mode=max"),
            "-t".into(),
            i.clone(),
            "--output".into(),
            "type=registry".into(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    let first = s.ok(&ctx, &args);
    let ran = runs(&first);
    assert_eq!(ran.len(), 3, "{first}");
    assert!(ran.iter().any(|l| l.contains("target-ran-42 for arm64")));
    for p in ["linux/amd64", "linux/arm64"] {
        assert!(
            first.contains(&format!(
                "exported the {p} steps to the cache {}",
                cache.display()
            )),
            "{first}"
        );
    }
    let built = platform_ids(&meta);
    assert_eq!(built.len(), 2);
    // One record per step key: the shared builder's RUN once, the target's RUN and COPY per
    // platform.
    let keys = |dir: &Path| -> Vec<String> {
        let top = json(&dir.join("index.json"));
        let m = blob(dir, top["manifests"][0]["digest"].as_str().unwrap());
        let config = blob(dir, m["config"]["digest"].as_str().unwrap());
        config["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_string())
            .collect()
    };
    let max = keys(&cache);
    assert_eq!(max.len(), 5, "{max:?}");
    let distinct: std::collections::BTreeSet<&String> = max.iter().collect();
    assert_eq!(distinct.len(), 5, "{max:?}");
    // mode=min: the steps of each platform's image (its RUN and COPY), not the builder's.
    let min = keys(&cache_min);
    assert_eq!(min.len(), 4, "{min:?}");
    assert!(min.iter().all(|k| max.contains(k)), "{min:?} {max:?}");
    // The fresh stores get this store's amd64 base (each store's busybox:latest is imported
    // from a rootfs made for it, with its own times).
    let base = s.dir.join("base-amd64");
    let o = s.strata(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        base.to_str().unwrap(),
        "busybox-amd64:latest",
    ]);
    assert!(o.status.success(), "save: {}", text(&o.stderr));
    // In a fresh store, from the layout (then the registry): every RUN of both platforms is a
    // hit, and the images are the same.
    let mut sources = vec![format!("type=local,src={}", cache.display())];
    sources.extend(cache_ref.iter().map(|c| format!("type=registry,ref={c}")));
    for (i, from) in sources.iter().enumerate() {
        let Some(fresh) = M::new(&format!("cache-from-{i}")) else {
            return;
        };
        let o = fresh.strata(&["load", "-i", base.to_str().unwrap()]);
        assert!(o.status.success(), "load: {}", text(&o.stderr));
        let ctx = fresh.ctx("ctx", &[("Dockerfile", CACHED)]);
        let meta2 = fresh.dir.join("meta.json");
        let mut args = vec![
            "--platform".to_string(),
            "linux/amd64,linux/arm64".into(),
            "--cache-from".into(),
            from.clone(),
            "--metadata-file".into(),
            meta2.display().to_string(),
        ];
        // Pushed too: the same index, to the digest.
        if let Some(r) = &reg {
            args.extend([
                "--output".into(),
                format!("type=registry,name=127.0.0.1:{}/multi:fresh{i}", r.port),
            ]);
        }
        let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        let again = fresh.ok(&ctx, &args);
        assert_eq!(runs(&again), Vec::<&str>::new(), "{from}: {again}");
        let (steps, cached) = steps_cached(&again);
        assert!(steps >= 5, "{again}");
        assert_eq!(steps, cached, "{from}: {again}");
        assert_eq!(platform_ids(&meta2), built, "{from}");
        if reg.is_some() {
            assert_eq!(
                json(&meta2)["containerimage.digest"],
                json(&meta)["containerimage.digest"],
                "{from}"
            );
        }
    }
    let Some(image) = image_ref else {
        return;
    };
    // --output type=registry pushed the index under the tag.
    if !support::have("skopeo") {
        support::skip("skopeo is not installed: the pushed index is not read back");
        return;
    }
    let index = skopeo_json(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]);
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
}

#[test]
fn a_nameless_registry_output_is_refused_with_several_platforms() {
    let Some(s) = M::new("nameless") else {
        return;
    };
    let ctx = s.ctx("ctx", &[("Dockerfile", CACHED)]);
    let err = s.fails(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--output",
            "type=registry",
        ],
    );
    assert!(err.contains("--output type=registry needs a name"), "{err}");
    // Refused before anything ran.
    assert!(!err.contains("ran-42"), "{err}");
}

/// A target stage whose RUN runs for each platform, no builder stage (an inline cache holds
/// the steps of the image only).
const INLINE: &str = "\
ARG TARGETARCH
FROM busybox-${TARGETARCH}
ARG TARGETARCH
RUN echo target-ran-$((40+2)) for $TARGETARCH && uname -m > /machine
COPY <<EOF /done
done
EOF
";

/// `--cache-to type=inline` puts each platform's records in its image's config; `--cache-from`
/// of the index (pushed, or in an OCI layout) gives each platform's build its own image's.
#[test]
fn an_inline_cache_of_each_platform_is_read_from_the_index() {
    let Some(s) = M::new("inline") else {
        return;
    };
    let Some(r) = Registry::start(&s.dir) else {
        return;
    };
    let ctx = s.ctx("ctx", &[("Dockerfile", INLINE)]);
    let name = format!("127.0.0.1:{}/multi:inline", r.port);
    let layout = s.dir.join("layout");
    let first = s.ok(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-to",
            "type=inline",
            "-t",
            &name,
            "--push",
            "--output",
            &format!("type=oci,tar=false,dest={}", layout.display()),
        ],
    );
    assert_eq!(runs(&first).len(), 2, "{first}");
    let base = s.dir.join("base-amd64");
    let o = s.strata(&[
        "save",
        "--format",
        "oci-dir",
        "-o",
        base.to_str().unwrap(),
        "busybox-amd64:latest",
    ]);
    assert!(o.status.success(), "save: {}", text(&o.stderr));
    let sources = [
        name.clone(),
        format!("type=local,src={},tag=inline", layout.display()),
    ];
    for (i, from) in sources.iter().enumerate() {
        let Some(fresh) = M::new(&format!("inline-from-{i}")) else {
            return;
        };
        let o = fresh.strata(&["load", "-i", base.to_str().unwrap()]);
        assert!(o.status.success(), "load: {}", text(&o.stderr));
        let ctx = fresh.ctx("ctx", &[("Dockerfile", INLINE)]);
        let again = fresh.ok(
            &ctx,
            &[
                "--platform",
                "linux/amd64,linux/arm64",
                "--cache-from",
                from,
            ],
        );
        assert_eq!(runs(&again), Vec::<&str>::new(), "{from}: {again}");
        let (steps, cached) = steps_cached(&again);
        assert_eq!((steps, cached), (4, 4), "{from}: {again}");
        // A platform the index lacks: the build goes on without the cache, and says why (then
        // fails here, as there is no riscv64 base).
        let riscv = fresh.build(&ctx, &["--platform", "linux/riscv64", "--cache-from", from]);
        let err = text(&riscv.stderr);
        assert!(
            err.contains(
                "is an image index without a linux/riscv64 image (it has linux/amd64,linux/arm64"
            ),
            "{from}: {err}"
        );
    }
}

/// Podman run as `user` (`None`: as the test's own user) with its storage (vfs), runtime and
/// temporary dirs in a directory of its own in $TMPDIR (short: Podman refuses a runroot longer
/// than 50 characters), nothing in the user's own storage. Dropped: the storage removed
/// (through `podman unshare` when rootless, whose files belong to subordinate ids), Podman's
/// rootless pause process stopped by its pid, the directory removed.
struct Podman {
    dir: PathBuf,
    user: Option<&'static str>,
}

impl Podman {
    fn new(user: Option<&'static str>) -> Podman {
        let dir = std::env::temp_dir().join(format!(
            "pm-{}-{}",
            std::process::id(),
            user.unwrap_or("self")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let xdg = dir.join("xdg");
        fs_err::create_dir_all(&xdg).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(u) = user {
            let o = std::process::Command::new("chown")
                .args(["-R", &format!("{u}:{u}")])
                .arg(&dir)
                .output()
                .unwrap();
            assert!(o.status.success(), "chown: {}", text(&o.stderr));
        }
        Podman { dir, user }
    }

    fn rootless(&self) -> bool {
        self.user.is_some() || !rustix::process::geteuid().is_root()
    }

    /// `podman ARGS` with the private storage.
    fn run(&self, args: &[&str]) -> Output {
        let mut c = match self.user {
            Some(u) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", u, "--", "podman"]);
                c
            }
            None => std::process::Command::new("podman"),
        };
        let d = &self.dir;
        c.arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .args(args)
            .env("HOME", d)
            .env("XDG_RUNTIME_DIR", d.join("xdg"))
            .env("TMPDIR", d.join("tmp"))
            .current_dir(d)
            .stdin(std::process::Stdio::null());
        c.output().unwrap()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if self.rootless() {
            let storage = self.dir.join("storage");
            let _ = self.run(&["unshare", "rm", "-rf", storage.to_str().unwrap()]);
            // Rootless Podman leaves a process that keeps its user namespace.
            let pause = fs_err::read_to_string(self.dir.join("tmp/pause.pid")).ok();
            if let Some(pid) = pause.and_then(|p| p.trim().parse::<i32>().ok()) {
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Podman reads a pushed two-platform index back: `podman pull --platform` of each platform
/// gives that platform's image, the one the index names. (`podman run --platform linux/arm64`
/// is not tried: Podman runs a foreign binary only through a QEMU handler registered in the
/// host's binfmt_misc, and the tests never register one on the host; strata's own emulation is
/// `strata run --platform`, tested in tests/binfmt.rs.)
#[test]
fn podman_pulls_each_platform_of_a_pushed_index() {
    if !support::have("podman") || !support::have("skopeo") {
        support::skip("podman or skopeo is not installed (apt-get install podman skopeo)");
        return;
    }
    let runners = support::runners();
    if runners.is_empty() {
        return;
    }
    let Some(s) = M::new("podman") else {
        return;
    };
    let Some(r) = Registry::start(&s.dir) else {
        return;
    };
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", COPY_ONLY), ("hello.txt", "hello\n")],
    );
    let name = format!("127.0.0.1:{}/multi:podman", r.port);
    s.ok(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &name,
            "--push",
        ],
    );
    let index = skopeo_json(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]);
    let pushed = |arch: &str| {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} in {index}"))["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for user in runners {
        let who = user.unwrap_or("caller");
        let p = Podman::new(user);
        for arch in ["arm64", "amd64"] {
            let o = p.run(&[
                "pull",
                "-q",
                "--tls-verify=false",
                "--platform",
                &format!("linux/{arch}"),
                &name,
            ]);
            assert!(
                o.status.success(),
                "podman pull as {who}: {}",
                text(&o.stderr)
            );
            let id = text(&o.stdout).trim().to_string();
            let o = p.run(&[
                "image",
                "inspect",
                "--format",
                "{{.Os}}/{{.Architecture}} {{.RepoDigests}}",
                &id,
            ]);
            assert!(
                o.status.success(),
                "podman image inspect as {who}: {}",
                text(&o.stderr)
            );
            let got = text(&o.stdout);
            assert!(
                got.starts_with(&format!("linux/{arch} ")),
                "as {who}: {got}"
            );
            assert!(
                got.contains(&format!("@{}", pushed(arch))),
                "as {who}: {got}"
            );
        }
    }
}
