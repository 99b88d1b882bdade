//! Registries: pull, push, login, mirrors and faults, against Debian's `docker-registry` started
//! here on 127.0.0.1 (anonymous, htpasswd and token auth), with skopeo and umoci checking what
//! strata pushes and seeding what strata pulls. `make test` runs this file as root and again as
//! the unprivileged user strata-test. Without docker-registry, skopeo or busybox the tests say
//! SKIPPED (and fail under STRATA_REQUIRE_TOOLS=1, as in CI).

#[path = "../support/mod.rs"]
#[macro_use]
mod support;

mod cache;
mod harness;
mod index;
mod python;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use support::store::{Bin, StoreDir};
use support::{have, text};

use harness::{
    Auth, Fault, FaultProxy, PackageIndex, Registry, Signer, TokenServer, PASSWORD, REFRESH, USER,
};

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

fn fails(o: &Output, what: &str) -> String {
    assert!(
        !o.status.success(),
        "{what} should fail:\nstdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stderr)
}

/// One test's world: a directory with stores, a registries.conf and an auth file of its own,
/// so nothing of the machine's configuration is read ([`support::store::StoreDir`]: its stores
/// are pruned and it is removed when the test ends).
struct T {
    dir: PathBuf,
    conf: PathBuf,
    auth: PathBuf,
    path_prefix: Option<PathBuf>,
    stores: StoreDir,
}

impl T {
    fn new(name: &str) -> Option<T> {
        for (tool, pkg) in [
            ("docker-registry", "docker-registry"),
            ("skopeo", "skopeo"),
            ("openssl", "openssl"),
        ] {
            if !have(tool) {
                support::skip(&format!("{tool} is not installed (package {pkg})"));
                return None;
            }
        }
        if !Path::new("/bin/busybox").exists() {
            support::skip("/bin/busybox (busybox-static) is not installed");
            return None;
        }
        let stores = StoreDir::new("reg", name, Bin::Copied).without("XDG_RUNTIME_DIR");
        let dir = stores.path.clone();
        fs_err::create_dir_all(dir.join("home")).unwrap();
        let conf = dir.join("registries.conf");
        fs_err::write(&conf, "").unwrap();
        let auth = dir.join("auth.json");
        let stores = stores
            .with("HOME", dir.join("home"))
            .with("XDG_CONFIG_HOME", dir.join("home/.config"))
            .with("DOCKER_CONFIG", dir.join("docker"))
            .with("REGISTRY_AUTH_FILE", &auth)
            .with("CONTAINERS_REGISTRIES_CONF", &conf);
        Some(T {
            auth,
            conf,
            dir,
            path_prefix: None,
            stores,
        })
    }

    fn store(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn cmd_in(&self, root: &Path, args: &[&str]) -> Command {
        let mut c = self.stores.command(root);
        c.args(args);
        if let Some(p) = &self.path_prefix {
            let path = std::env::var("PATH").unwrap_or_default();
            c.env("PATH", format!("{}:{path}", p.display()));
        }
        c
    }

    fn strata_in(&self, root: &Path, args: &[&str]) -> Output {
        self.cmd_in(root, args).output().unwrap()
    }

    fn strata(&self, store: &str, args: &[&str]) -> Output {
        self.strata_in(&self.store(store), args)
    }

    /// An OCI layout (tag `latest`) of a busybox image with passwd, made by strata: the
    /// seed that skopeo copies into the registries.
    fn busybox_layout(&self) -> PathBuf {
        let layout = self.dir.join("bb-layout");
        if layout.exists() {
            return layout;
        }
        let r = self.dir.join("bb-rootfs");
        for d in ["bin", "etc", "tmp", "root"] {
            fs_err::create_dir_all(r.join(d)).unwrap();
        }
        fs_err::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        for a in ["sh", "echo", "cat", "ls", "true", "env", "id", "uname"] {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
        }
        fs_err::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs_err::write(r.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
        std::fs::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let seed = self.store("seed-store");
        ok(
            &self.strata_in(
                &seed,
                &[
                    "import",
                    r.to_str().unwrap(),
                    "busybox:latest",
                    "--compression",
                    "gzip",
                ],
            ),
            "import busybox",
        );
        ok(
            &self.strata_in(
                &seed,
                &[
                    "save",
                    "busybox:latest",
                    "-o",
                    layout.to_str().unwrap(),
                    "--format",
                    "oci-dir",
                ],
            ),
            "save busybox",
        );
        layout
    }

    /// `skopeo copy oci:LAYOUT:TAG docker://DEST` with extra flags.
    fn seed(&self, src: &str, dest: &str, extra: &[&str]) {
        let o = Command::new("skopeo")
            .args(["copy", "-q", "--dest-tls-verify=false"])
            .args(extra)
            .arg(src)
            .arg(format!("docker://{dest}"))
            .env("HOME", self.dir.join("home"))
            .env_remove("XDG_RUNTIME_DIR")
            .env("REGISTRY_AUTH_FILE", self.dir.join("skopeo-auth.json"))
            .output()
            .unwrap();
        ok(&o, &format!("skopeo copy {src} {dest}"));
    }

    fn seed_busybox(&self, dest: &str, extra: &[&str]) {
        let l = self.busybox_layout();
        self.seed(&format!("oci:{}:latest", l.display()), dest, extra);
    }

    fn skopeo_inspect(&self, r: &str, raw: bool, creds: Option<&str>) -> String {
        let mut c = Command::new("skopeo");
        c.args(["inspect", "--tls-verify=false"]);
        if raw {
            c.arg("--raw");
        }
        if let Some(cr) = creds {
            c.args(["--creds", cr]);
        }
        c.arg(format!("docker://{r}"))
            .env("HOME", self.dir.join("home"))
            .env("REGISTRY_AUTH_FILE", self.dir.join("skopeo-auth.json"));
        ok(&c.output().unwrap(), &format!("skopeo inspect {r}"))
    }

    /// The raw manifest tagged `tag` in the OCI layout `dir`, as skopeo reads it.
    fn skopeo_inspect_layout(&self, dir: &Path, tag: &str) -> serde_json::Value {
        let o = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:{tag}", dir.display()))
            .env("HOME", self.dir.join("home"))
            .output()
            .unwrap();
        serde_json::from_str(&ok(&o, "skopeo inspect oci:")).unwrap()
    }

    /// `strata build -t TAG --progress plain CTX` in store `store`.
    fn build(&self, store: &str, tag: &str, ctx: &Path) -> Output {
        self.strata(
            store,
            &[
                "build",
                "-t",
                tag,
                "--progress",
                "plain",
                ctx.to_str().unwrap(),
            ],
        )
    }

    /// A registries.conf that mirrors docker.io at `mirrors` (insecure: plain HTTP) and adds
    /// `more`.
    fn mirror_conf(&self, mirrors: &[String], more: &str) {
        let mut c =
            String::from("[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n");
        for m in mirrors {
            c.push_str(&format!(
                "[[registry.mirror]]\nlocation = \"{m}\"\ninsecure = true\n"
            ));
        }
        c.push_str(more);
        self.write_conf(&c);
    }

    fn write_conf(&self, text: &str) {
        fs_err::write(&self.conf, text).unwrap();
    }

    fn context(&self, name: &str, dockerfile: &str) -> PathBuf {
        let c = self.dir.join(name);
        fs_err::create_dir_all(&c).unwrap();
        fs_err::write(c.join("Dockerfile"), dockerfile).unwrap();
        c
    }

    /// Every file under `dir`, as bytes (to look for secrets).
    fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(p),
                    Ok(t) if t.is_file() => {
                        if let Ok(b) = fs_err::read(&p) {
                            out.push((p, b));
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }
}

fn digest_in(s: &str) -> String {
    let i = s.find("sha256:").expect("a digest in the output");
    s[i..i + 71].to_string()
}

#[test]
fn pull_run_and_a_second_pull_downloads_nothing() {
    let t = require!(T::new("pull"));
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let proxy = FaultProxy::start(reg.port);
    let r = format!("127.0.0.1:{}/library/busybox:1.0", proxy.port);
    t.seed_busybox(&format!("{}/library/busybox:1.0", reg.host()), &[]);
    let o = t.strata("s", &["pull", &r, "--progress", "plain"]);
    let err = text(&o.stderr);
    ok(&o, "pull");
    assert!(err.contains("downloaded"), "{err}");
    // The same as JSON events, one per line.
    let o = t.strata("sj", &["pull", &r, "--progress", "json"]);
    let events: Vec<serde_json::Value> = text(&o.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(
        kinds.contains(&"resolved")
            && kinds.contains(&"blob-start")
            && kinds.contains(&"blob-done"),
        "{kinds:?}"
    );
    assert!(err.contains(&format!("resolve {r} → sha256:")), "{err}");
    assert_eq!(
        ok(
            &t.strata("s", &["run", &r, "echo", "pulled-and-ran"]),
            "run"
        )
        .trim(),
        "pulled-and-ran"
    );
    let images = ok(&t.strata("s", &["images"]), "images");
    assert!(
        images.contains(&format!("127.0.0.1:{}/library/busybox", proxy.port)),
        "{images}"
    );
    // Again: one manifest HEAD (after the /v2/ ping), nothing downloaded.
    let before = proxy.requests().len();
    let o = t.strata("s", &["pull", &r, "--progress", "plain"]);
    ok(&o, "second pull");
    assert!(
        text(&o.stderr).contains("up to date"),
        "{}",
        text(&o.stderr)
    );
    let reqs: Vec<String> = proxy.requests()[before..].to_vec();
    assert_eq!(
        reqs.iter()
            .filter(|x| x.starts_with("HEAD ") && x.contains("/manifests/"))
            .count(),
        1,
        "{reqs:?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|x| x.starts_with("GET ") && x.contains("/blobs/")),
        "{reqs:?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|x| x.starts_with("GET ") && x.contains("/manifests/")),
        "{reqs:?}"
    );
    // Two processes pulling into one empty store at once: each blob is downloaded once.
    let before = proxy.requests().len();
    let mut kids: Vec<_> = (0..2)
        .map(|_| {
            t.cmd_in(&t.store("s2"), &["pull", &r, "-q"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = kids
        .drain(..)
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        ok(o, "concurrent pull");
    }
    assert_eq!(outs[0].stdout, outs[1].stdout);
    let reqs: Vec<String> = proxy.requests()[before..].to_vec();
    let blob_gets: Vec<&String> = reqs
        .iter()
        .filter(|x| x.starts_with("GET ") && x.contains("/blobs/"))
        .collect();
    assert_eq!(blob_gets.len(), 2, "config and layer once each: {reqs:?}");
    // A build in an empty store pulls its FROM.
    let ctx = t.context("ctx", &format!("FROM {r}\nRUN echo built > /built\n"));
    let o = t.build("s3", "app", &ctx);
    ok(&o, "build");
    assert_eq!(
        ok(&t.strata("s3", &["run", "app", "cat", "/built"]), "run app").trim(),
        "built"
    );
}

/// A copy of the busybox layout (in `dir`) with a second manifest whose config is the busybox
/// config changed by `edit`. Returns the copy, the busybox manifest's descriptor, and the new
/// manifest's digest and size.
fn edited_layout(
    t: &T,
    dir: &str,
    edit: impl Fn(&mut serde_json::Value),
) -> (PathBuf, serde_json::Value, String, usize) {
    let src = t.busybox_layout();
    let dst = t.dir.join(dir);
    let o = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    ok(&o, "cp layout");
    let blob = |d: &str| {
        dst.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = format!("sha256:{}", hex_sha256(bytes));
        fs_err::write(blob(&d), bytes).unwrap();
        (d, bytes.len())
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(dst.join("index.json")).unwrap()).unwrap();
    let m1 = index["manifests"][0].clone();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs_err::read(blob(m1["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(
        &fs_err::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    edit(&mut config);
    let (cd, cs) = put(config.to_string().as_bytes());
    let mut m2 = manifest.clone();
    m2["config"]["digest"] = cd.into();
    m2["config"]["size"] = cs.into();
    let (m2d, m2s) = put(m2.to_string().as_bytes());
    (dst, m1, m2d, m2s)
}

/// Write `index.json` of `layout` naming one manifest (or index) as `tag`.
fn tag_in_layout(layout: &Path, media_type: &str, digest: &str, size: usize, tag: &str) {
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": media_type, "digest": digest, "size": size,
         "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    fs_err::write(layout.join("index.json"), top.to_string()).unwrap();
}

/// An OCI layout holding an index with the busybox manifest for linux/amd64 and a copy of it
/// that says linux/arm64/v8, tagged `multi`.
fn multi_platform_layout(t: &T) -> PathBuf {
    let (dst, m1, m2d, m2s) = edited_layout(t, "multi-layout", |config| {
        config["architecture"] = "arm64".into();
        config["variant"] = "v8".into();
    });
    let idx = serde_json::json!({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m1["digest"], "size": m1["size"],
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m2d, "size": m2s,
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
    ]});
    let bytes = idx.to_string();
    let id = format!("sha256:{}", hex_sha256(bytes.as_bytes()));
    fs_err::write(dst.join("blobs/sha256").join(&id[7..]), &bytes).unwrap();
    tag_in_layout(
        &dst,
        "application/vnd.oci.image.index.v1+json",
        &id,
        bytes.len(),
        "multi",
    );
    dst
}

fn hex_sha256(b: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    d.as_ref().iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn docker_schema2_zstd_and_multi_platform_indexes() {
    let t = require!(T::new("formats"));
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let h = reg.host();
    t.seed_busybox(&format!("{h}/v2s2:1"), &["--format", "v2s2"]);
    // skopeo 1.9 does not recompress to zstd: strata stores the layer as zstd and skopeo
    // copies that layout as it is.
    t.busybox_layout();
    let zl = t.dir.join("zstd-layout");
    let zs = t.store("zstd-seed");
    ok(
        &t.strata_in(
            &zs,
            &[
                "import",
                t.dir.join("bb-rootfs").to_str().unwrap(),
                "bb:z",
                "--compression",
                "zstd",
            ],
        ),
        "import zstd",
    );
    ok(
        &t.strata_in(
            &zs,
            &[
                "save",
                "bb:z",
                "-o",
                zl.to_str().unwrap(),
                "--format",
                "oci-dir",
            ],
        ),
        "save zstd",
    );
    t.seed(
        &format!("oci:{}:z", zl.display()),
        &format!("{h}/zstd:1"),
        &[],
    );
    let raw = t.skopeo_inspect(&format!("{h}/v2s2:1"), true, None);
    assert!(
        raw.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{raw}"
    );
    let raw = t.skopeo_inspect(&format!("{h}/zstd:1"), true, None);
    assert!(raw.contains("tar+zstd"), "{raw}");
    for r in ["v2s2:1", "zstd:1"] {
        let full = format!("{h}/{r}");
        let o = t.strata("s", &["pull", &full, "-q"]);
        let d = ok(&o, &format!("pull {r}"));
        // The image keeps the registry's digest.
        let inspect: serde_json::Value =
            serde_json::from_str(&t.skopeo_inspect(&full, false, None)).unwrap();
        assert_eq!(d.trim(), inspect["Digest"].as_str().unwrap(), "{r}");
        assert_eq!(
            ok(&t.strata("s", &["run", &full, "echo", "ok"]), "run").trim(),
            "ok",
            "{r}"
        );
    }
    // The store stays consistent with Docker-typed manifests in it, and saves them for podman
    // and docker.
    let f = ok(&t.strata("s", &["fsck"]), "fsck");
    assert!(f.contains(" 0 problems"), "{f}");
    let out = t.dir.join("v2s2.tar");
    ok(
        &t.strata(
            "s",
            &[
                "save",
                &format!("{h}/v2s2:1"),
                "-o",
                out.to_str().unwrap(),
                "--format",
                "docker-archive",
            ],
        ),
        "save a pulled schema2 image",
    );
    ok(
        &t.strata("s-load", &["load", "-i", out.to_str().unwrap()]),
        "load it back",
    );
    // A multi-platform index: the host's manifest by default, another with --platform, and an
    // error that lists what there is.
    let layout = multi_platform_layout(&t);
    t.seed(
        &format!("oci:{}:multi", layout.display()),
        &format!("{h}/multi:1"),
        &["--all"],
    );
    let m = format!("{h}/multi:1");
    let arch = |store: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&t.strata(store, &["inspect", &m]), "inspect")).unwrap();
        let c = &v["Config"];
        match c["variant"].as_str() {
            Some(var) => format!("{}/{var}", c["architecture"].as_str().unwrap_or("")),
            None => c["architecture"].as_str().unwrap_or("").to_string(),
        }
    };
    ok(&t.strata("m1", &["pull", &m]), "pull multi");
    assert_eq!(arch("m1"), "amd64");
    ok(
        &t.strata("m2", &["pull", &m, "--platform", "linux/arm64/v8"]),
        "pull arm64",
    );
    assert_eq!(arch("m2"), "arm64/v8");
    let e = fails(
        &t.strata("m3", &["pull", &m, "--platform", "linux/s390x"]),
        "pull s390x",
    );
    assert!(
        e.contains("linux/s390x") && e.contains("linux/amd64") && e.contains("linux/arm64/v8"),
        "{e}"
    );
}

#[test]
fn digests_and_errors_a_person_can_act_on() {
    let t = require!(T::new("refs"));
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let h = reg.host();
    t.seed_busybox(&format!("{h}/team/bb:1"), &[]);
    let d = ok(
        &t.strata("s", &["pull", &format!("{h}/team/bb:1"), "-q"]),
        "pull",
    )
    .trim()
    .to_string();
    // By digest, and tag@digest, into other stores; the digest is checked.
    let o = t.strata("s2", &["pull", &format!("{h}/team/bb@{d}"), "-q"]);
    assert_eq!(ok(&o, "pull by digest").trim(), d);
    ok(
        &t.strata("s3", &["pull", &format!("{h}/team/bb:1@{d}")]),
        "pull tag@digest",
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    let dead = harness::free_port();
    let cases: [(String, Vec<String>); 6] = [
        (format!("{h}/team/bb@{wrong}"), vec!["not found".into()]),
        (
            format!("{h}/team/bb:nope"),
            vec![format!("{h}/team/bb:nope"), "not found".into()],
        ),
        (format!("{h}/nosuch/repo:1"), vec!["not found".into()]),
        (format!("{h}/Team/bb:1"), vec!["lowercase".into()]),
        ("../../x".into(), vec!["invalid reference".into()]),
        (
            format!("127.0.0.1:{dead}/x:1"),
            vec!["unreachable".into(), format!("127.0.0.1:{dead}")],
        ),
    ];
    for (r, wants) in &cases {
        let e = fails(&t.strata("s4", &["pull", r]), r);
        for w in wants {
            assert!(e.contains(w.as_str()), "{r}: {e}");
        }
    }
    // Nothing half-written: the failed pulls left no blob in the store they used.
    let blobs = std::fs::read_dir(t.store("s4").join("v1/oci/blobs/sha256"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0);
}

fn umoci_unpack(t: &T, layout_ref: &str, bundle: &Path) {
    let mut c = Command::new("umoci");
    c.arg("unpack");
    if rustix_uid() != 0 {
        c.arg("--rootless");
    }
    let o = c
        .arg("--image")
        .arg(layout_ref)
        .arg(bundle)
        .output()
        .unwrap();
    let _ = t;
    ok(&o, "umoci unpack");
}

fn rustix_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

/// `strata images --format json` of `store`: (names, size, stored) per image.
fn image_sizes(t: &T, store: &str) -> Vec<(serde_json::Value, u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(&ok(
        &t.strata(store, &["images", "--format", "json"]),
        "images",
    ))
    .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["names"].clone(),
                i["size"].as_u64().unwrap(),
                i["stored"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn sizes_are_the_content_and_what_a_push_sends_the_same_in_any_store() {
    let t = require!(T::new("sizes"));
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let h = reg.host();
    t.seed_busybox(&format!("{h}/library/busybox:1"), &[]);
    // A layer of text, which compresses, and random bytes, which do not (5 MB, 2 MB).
    let ctx = t.context(
        "ctx",
        &format!(
            "FROM {h}/library/busybox:1\nRUN i=0; while [ $i -lt 2000 ]; do busybox --list; i=$((i+1)); done > /text && head -c 2000000 /dev/urandom > /random\n"
        ),
    );
    ok(
        &t.strata("s", &["build", "-t", "big:1", ctx.to_str().unwrap()]),
        "build",
    );
    let history = |store: &str, image: &str| -> (String, String) {
        let o = t.strata(store, &["history", image]);
        (ok(&o, "history"), text(&o.stderr))
    };
    let (before, legend) = history("s", "big:1");
    let row = before
        .lines()
        .find(|l| l.contains("/random"))
        .unwrap()
        .to_string();
    // CREATED, CONTENT, PUSH: the estimate is marked.
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert!(cols[2].starts_with('≈'), "{before}");
    assert!(legend.contains("≈: estimated gzip size"), "{legend}");
    let dest = format!("{h}/team/big:v1");
    ok(&t.strata("s", &["push", "big:1", &dest]), "push");
    let m: serde_json::Value = serde_json::from_str(&t.skopeo_inspect(&dest, true, None)).unwrap();
    let sent = m["layers"][1]["size"].as_u64().unwrap();
    // After the push the figure is the sent blob's, exactly; the estimate was within 10 %.
    let (after, legend) = history("s", "big:1");
    let row = after
        .lines()
        .find(|l| l.contains("/random"))
        .unwrap()
        .to_string();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert!(!cols[2].starts_with('≈') && legend.is_empty(), "{after}");
    let mb = |s: &str| -> f64 {
        s.trim_start_matches('≈')
            .trim_end_matches("MB")
            .parse::<f64>()
            .unwrap()
            * 1e6
    };
    let estimate = mb(before
        .lines()
        .find(|l| l.contains("/random"))
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap());
    assert!(
        (estimate - sent as f64).abs() < 0.1 * sent as f64,
        "estimated {estimate}, sent {sent}: {before}"
    );
    assert!((mb(cols[2]) - sent as f64).abs() < 0.06e6, "{after} {sent}");
    // Pulled into another store (gzip layers there, uncompressed here): the same image id has
    // the same SIZE, the content of its files; only what each store keeps differs.
    ok(&t.strata("back", &["pull", "-q", &dest]), "pull");
    let here = image_sizes(&t, "s");
    let there = image_sizes(&t, "back");
    let big_here = here
        .iter()
        .find(|i| i.0 == serde_json::json!(["big:1"]))
        .unwrap();
    let big_there = there
        .iter()
        .find(|i| i.0 == serde_json::json!([dest]))
        .unwrap();
    assert_eq!(big_here.1, big_there.1, "{here:?} {there:?}");
    assert_ne!(big_here.2, big_there.2, "{here:?} {there:?}");
    assert!(big_here.1 > 7_000_000 && big_here.1 < 9_000_000, "{here:?}");
}

/// A loopback port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_unreachable_registry_says_what_to_do_and_doctor_tries_the_configured_ones() {
    let t = require!(T::new("unreach"));
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let dead = format!("127.0.0.1:{}", closed_port());
    // A mirror that answers for docker.io, and a registry that does not: nothing else is
    // tried (doctor sends nothing to a registry registries.conf does not name).
    t.write_conf(&format!(
        "[[registry]]\nprefix = \"docker.io\"\nlocation = \"{dead}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
        reg.host()
    ));
    let o = t.strata("s", &["doctor"]);
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!(
            "ok   mirror of docker.io {}: answers at http://{}/v2/",
            reg.host(),
            reg.host()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "WARN registry for docker.io {dead}: {dead}: unreachable"
        )) && out.contains("images saved elsewhere load with `strata load -i FILE`"),
        "{out}"
    );
    // A registry that does not answer is not a failure of the machine.
    assert_eq!(o.status.code(), Some(0), "{out}");
    // A pull from it: exit 3, and what to do next.
    let o = t.strata("s", &["pull", &format!("{dead}/app:1")]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("{dead}: unreachable"))
            && err.contains(&format!(
                "add one for {dead} to registries.conf (README: Registries)"
            ))
            && err.contains("`strata load -i FILE`"),
        "{err}"
    );
}

#[test]
fn push_round_trip_skopeo_umoci_and_mounts() {
    let t = require!(T::new("push"));
    require!(have("umoci"), "umoci is not installed");
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let h = reg.host();
    t.seed_busybox(&format!("{h}/library/busybox:1"), &[]);
    let ctx = t.context(
        "ctx",
        &format!("FROM {h}/library/busybox:1\nRUN echo pushed-content > /hello\n"),
    );
    ok(
        &t.strata("s", &["build", "-t", "app:1", ctx.to_str().unwrap()]),
        "build",
    );
    let dest = format!("{h}/team/app:v1");
    let o = t.strata("s", &["push", "app:1", &dest, "--progress", "plain"]);
    let err = text(&o.stderr);
    ok(&o, "push");
    let pushed = digest_in(&err[err.find("pushed").unwrap()..]);
    // The push names no local image (as podman and skopeo): the base and app:1 only.
    let images = ok(&t.strata("s", &["images", "--format", "json"]), "images");
    let images: serde_json::Value = serde_json::from_str(&images).unwrap();
    let names: Vec<serde_json::Value> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["names"].clone())
        .collect();
    assert_eq!(
        names,
        vec![
            serde_json::json!([format!("{h}/library/busybox:1")]),
            serde_json::json!(["app:1"])
        ],
        "{images}"
    );
    // Read back by skopeo: an OCI manifest with gzip layers and the same digest.
    let raw = t.skopeo_inspect(&dest, true, None);
    assert!(
        raw.contains("application/vnd.oci.image.manifest.v1+json"),
        "{raw}"
    );
    assert!(
        raw.contains("tar+gzip") && !raw.contains("v1.tar\""),
        "{raw}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&t.skopeo_inspect(&dest, false, None)).unwrap();
    assert_eq!(info["Digest"].as_str().unwrap(), pushed);
    // skopeo copies it out and umoci unpacks it: the RUN step's file is there.
    let out = t.dir.join("out");
    let o = Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{dest}"))
        .arg(format!("oci:{}:v1", out.display()))
        .env("HOME", t.dir.join("home"))
        .output()
        .unwrap();
    ok(&o, "skopeo copy out");
    let bundle = t.dir.join("bundle");
    umoci_unpack(&t, &format!("{}:v1", out.display()), &bundle);
    assert_eq!(
        fs_err::read_to_string(bundle.join("rootfs/hello")).unwrap(),
        "pushed-content\n"
    );
    // Pulled back into an empty store: same digest, and it runs.
    let d = ok(&t.strata("back", &["pull", &dest, "-q"]), "pull back");
    assert_eq!(d.trim(), pushed);
    assert_eq!(
        ok(&t.strata("back", &["run", &dest, "cat", "/hello"]), "run").trim(),
        "pushed-content"
    );
    // A second push sends nothing new; a push to another repository mounts.
    let o = t.strata("s", &["push", "app:1", &dest, "--progress", "plain"]);
    assert!(
        text(&o.stderr).contains("0 blobs uploaded"),
        "{}",
        text(&o.stderr)
    );
    let o = t.strata(
        "s",
        &[
            "push",
            "app:1",
            &format!("{h}/other/app:v1"),
            "--progress",
            "plain",
        ],
    );
    let err = text(&o.stderr);
    ok(&o, "push to another repository");
    assert!(
        err.contains("mounted") && err.contains("0 blobs uploaded"),
        "{err}"
    );
    // zstd on request: OCI zstd layers, which pull back and run.
    let z = format!("{h}/team/app:zstd");
    ok(
        &t.strata("s", &["push", "app:1", &z, "--compression", "zstd"]),
        "push zstd",
    );
    assert!(t.skopeo_inspect(&z, true, None).contains("tar+zstd"));
    assert_eq!(
        ok(
            &t.strata("zback", &["run", &z, "cat", "/hello"]),
            "run zstd"
        )
        .trim(),
        "pushed-content"
    );
    // Chunked uploads (PATCH) give the same image.
    let o = t.strata(
        "s",
        &[
            "push",
            "app:1",
            &format!("{h}/chunked/app:v1"),
            "--chunk-size",
            "65536",
            "-q",
        ],
    );
    assert_eq!(ok(&o, "chunked push").trim(), pushed);
    // A digest is not a push target.
    let e = fails(
        &t.strata("s", &["push", "app:1", &format!("{h}/x@{pushed}")]),
        "push to digest",
    );
    assert!(e.contains("push to a tag"), "{e}");
}

#[test]
fn build_push_metadata_and_pull_reports_a_moved_base() {
    let t = require!(T::new("buildpush"));
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let h = reg.host();
    let base = format!("{h}/base:1");
    t.seed_busybox(&base, &[]);
    let ctx = t.context("ctx", &format!("FROM {base}\nRUN echo one > /f\n"));
    let meta = t.dir.join("meta.json");
    let app = format!("{h}/app:latest");
    let o = t.strata(
        "s",
        &[
            "build",
            "--push",
            "-t",
            &app,
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
    );
    ok(&o, "build --push");
    let m: serde_json::Value = serde_json::from_slice(&fs_err::read(&meta).unwrap()).unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&t.skopeo_inspect(&app, false, None)).unwrap();
    assert_eq!(m["containerimage.digest"], info["Digest"], "{m}");
    let base_digest: serde_json::Value =
        serde_json::from_str(&t.skopeo_inspect(&base, false, None)).unwrap();
    assert_eq!(
        m["strata.base-images"][0]["ref"].as_str(),
        Some(base.as_str())
    );
    assert_eq!(m["strata.base-images"][0]["digest"], base_digest["Digest"]);
    // The base is recorded in the image's manifest, as BuildKit does.
    let raw = t.skopeo_inspect(&app, true, None);
    assert!(
        raw.contains("org.opencontainers.image.base.digest"),
        "{raw}"
    );
    // FROM a stage of that base: the base reported is still the registry image; COPY --from an
    // image that is not in the store pulls it.
    let chain = t.context(
        "chain",
        &format!("FROM {base} AS b\nRUN true\nFROM b\nCOPY --from={h}/base:1 /bin/busybox /bb\n"),
    );
    let meta2 = t.dir.join("meta2.json");
    ok(
        &t.strata(
            "s-chain",
            &[
                "build",
                "-t",
                "chain",
                "--metadata-file",
                meta2.to_str().unwrap(),
                chain.to_str().unwrap(),
            ],
        ),
        "build FROM a stage with COPY --from an image",
    );
    let m2: serde_json::Value = serde_json::from_slice(&fs_err::read(&meta2).unwrap()).unwrap();
    assert_eq!(
        m2["strata.base-images"][0]["digest"], base_digest["Digest"],
        "{m2}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&t.strata("s-chain", &["inspect", "chain"]), "inspect")).unwrap();
    assert_eq!(
        inspect["Manifest"]["annotations"]["org.opencontainers.image.base.name"].as_str(),
        Some(base.as_str()),
        "{inspect}"
    );
    // --output type=registry,name=… pushes too.
    let o = t.strata(
        "s",
        &[
            "build",
            "--output",
            &format!("type=registry,name={h}/app:2"),
            ctx.to_str().unwrap(),
        ],
    );
    ok(&o, "build --output type=registry");
    t.skopeo_inspect(&format!("{h}/app:2"), false, None);
    // The base moves: a plain build keeps the local copy; --pull sees the move and reruns.
    let other = t.context("other", &format!("FROM {base}\nRUN echo moved > /moved\n"));
    ok(
        &t.strata("s2", &["build", "-t", &base, other.to_str().unwrap()]),
        "build new base",
    );
    ok(&t.strata("s2", &["push", &base]), "push new base");
    let build_x = |extra: &[&str]| {
        let mut args = vec!["build", "--progress", "plain", "-t", "x"];
        args.extend_from_slice(extra);
        let c = ctx.to_str().unwrap();
        args.push(c);
        t.strata("s", &args)
    };
    let o = build_x(&[]);
    assert!(text(&o.stderr).contains("CACHED"), "{}", text(&o.stderr));
    let o = build_x(&["--pull"]);
    let err = text(&o.stderr);
    ok(&o, "build --pull");
    assert!(err.contains(&format!("{base} moved from sha256:")), "{err}");
    assert!(
        err.contains(&format!("cache miss: the base {base} moved from")),
        "{err}"
    );
    assert_eq!(
        ok(&t.strata("s", &["run", "x", "cat", "/moved"]), "run").trim(),
        "moved"
    );
    // --pull again with nothing moved: it says so, and every step is cached.
    let o = build_x(&["--pull"]);
    let err = text(&o.stderr);
    ok(&o, "build --pull, nothing moved");
    assert!(
        err.contains(&format!("{base}: up to date (sha256:")),
        "{err}"
    );
    assert!(!err.contains("cache miss"), "{err}");
    // --pull leaves images that are not references alone: an OCI-layout named context.
    let lctx = t.context("lctx", "FROM local-base\nRUN echo layout > /l\n");
    let layout = t.busybox_layout();
    ok(
        &t.strata(
            "s",
            &[
                "build",
                "--pull",
                "--build-context",
                &format!("local-base=oci-layout://{}:latest", layout.display()),
                "-t",
                "from-layout",
                lctx.to_str().unwrap(),
            ],
        ),
        "build --pull FROM an oci-layout context",
    );
    // --pull again: the same digest, nothing moves, the step is cached.
    let err = text(&build_x(&["--pull"]).stderr);
    assert!(
        !err.contains(" moved from ") && err.contains("CACHED"),
        "{err}"
    );
}

#[test]
fn basic_auth_login_logout_and_helpers() {
    let t = require!(T::new("basic"));
    let reg = Registry::start(&t.dir.join("reg"), Auth::Htpasswd);
    let h = reg.host();
    let r = format!("{h}/private/bb:1");
    t.seed_busybox(&r, &["--dest-creds", &format!("{USER}:{PASSWORD}")]);
    let o = t.strata("s", &["pull", &r]);
    let e = fails(&o, "anonymous pull");
    assert!(
        e.contains("access denied")
            && e.contains("none (anonymous)")
            && e.contains("\n  hint: `strata login "),
        "{e}"
    );
    // A registry's refusal has its own exit code (3), so a CI job can tell it from a failed
    // build.
    assert_eq!(o.status.code(), Some(3), "{e}");
    // A wrong password is refused and nothing is saved.
    let login = |t: &T, password: &str| -> Output {
        let mut c = t.cmd_in(
            &t.store("s"),
            &["login", "-u", USER, "--password-stdin", &h],
        );
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut k = c.spawn().unwrap();
        use std::io::Write;
        k.stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        k.wait_with_output().unwrap()
    };
    fails(&login(&t, "wrong"), "login with a wrong password");
    assert!(!t.auth.exists());
    let o = login(&t, PASSWORD);
    assert!(ok(&o, "login").contains("Login Succeeded"));
    assert_eq!(
        fs_err::metadata(&t.auth).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let o = t.strata("s", &["pull", &r, "--progress", "plain"]);
    ok(&o, "pull after login");
    // The password never reaches output, the store or the logs.
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(!all.contains(PASSWORD));
    for (p, b) in T::all_bytes(&t.store("s")) {
        assert!(
            !b.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
            "{} holds the password",
            p.display()
        );
    }
    // Push with the same login.
    ok(
        &t.strata("s", &["push", &r, &format!("{h}/private/copy:1")]),
        "push with basic auth",
    );
    ok(&t.strata("s", &["logout", &h]), "logout");
    let e = fails(&t.strata("s2", &["pull", &r]), "pull after logout");
    assert!(e.contains("access denied"), "{e}");
    // A docker config that names a credential helper: the helper is run and its answer used.
    let bin = t.dir.join("bin");
    fs_err::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-strata-test");
    fs_err::write(
        &helper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = store ]; then cat > {}; exit 0; fi\n[ \"$1\" = get ] || exit 1\nread server\necho \"$server\" > {}\nif [ \"$server\" = {h} ]; then printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"; else echo 'credentials not found in native keychain'; exit 1; fi\n",
            t.dir.join("helper-stored").display(),
            t.dir.join("helper-called").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    fs_err::create_dir_all(t.dir.join("docker")).unwrap();
    fs_err::write(
        t.dir.join("docker/config.json"),
        format!("{{\"credHelpers\": {{\"{h}\": \"strata-test\"}}}}"),
    )
    .unwrap();
    let mut t = t;
    t.path_prefix = Some(bin);
    ok(
        &t.strata("s3", &["pull", &r]),
        "pull with a credential helper",
    );
    assert_eq!(
        fs_err::read_to_string(t.dir.join("helper-called"))
            .unwrap()
            .trim(),
        h
    );
    // A login file that names a helper for the registry: login stores through it.
    fs_err::write(
        &t.auth,
        format!("{{\"credHelpers\": {{\"{h}\": \"strata-test\"}}}}"),
    )
    .unwrap();
    let o = login(&t, PASSWORD);
    assert!(ok(&o, "login through a helper").contains("docker-credential-strata-test"));
    let stored = fs_err::read_to_string(t.dir.join("helper-stored")).unwrap();
    assert!(
        stored.contains(&format!("\"ServerURL\":\"{h}\"")) && stored.contains(USER),
        "{stored}"
    );
    assert!(!fs_err::read_to_string(&t.auth).unwrap().contains(PASSWORD));
}

#[test]
fn token_auth_scopes_identity_tokens_and_expiry() {
    let t = require!(T::new("token"));
    let rdir = t.dir.join("reg");
    fs_err::create_dir_all(&rdir).unwrap();
    let tokens = TokenServer::start(Signer::new(&rdir));
    let reg = Registry::start(&rdir, Auth::Token(tokens.port));
    let h = reg.host();
    let r = format!("{h}/team/bb:1");
    t.seed_busybox(&r, &["--dest-creds", &format!("{USER}:{PASSWORD}")]);
    let e = fails(&t.strata("s", &["pull", &r]), "anonymous pull");
    assert!(e.contains("access denied"), "{e}");
    // login checks the credentials with the token service, then saves them.
    let e = fails(
        &t.strata("s", &["login", "-u", USER, "-p", "wrong", &h]),
        "login with a wrong password",
    );
    assert!(e.contains("access denied"), "{e}");
    ok(
        &t.strata("s", &["login", "-u", USER, "-p", PASSWORD, &h]),
        "login to a token registry",
    );
    let saved: serde_json::Value = serde_json::from_slice(&fs_err::read(&t.auth).unwrap()).unwrap();
    assert_eq!(
        saved["auths"][h.as_str()]["auth"].as_str(),
        Some(base64_std(&format!("{USER}:{PASSWORD}")).as_str())
    );
    let before = tokens.issued.load(Ordering::SeqCst);
    ok(&t.strata("s", &["pull", &r]), "pull with a token");
    assert!(tokens.issued.load(Ordering::SeqCst) > before);
    // A push to another repository mounts from the pulled one: the token covers both.
    let o = t.strata(
        "s",
        &[
            "push",
            &r,
            &format!("{h}/other/bb:1"),
            "--progress",
            "plain",
        ],
    );
    let err = text(&o.stderr);
    ok(&o, "push with a token");
    assert!(err.contains("mounted"), "{err}");
    // An identity token (OAuth2 refresh token) is exchanged at the token endpoint.
    fs_err::write(
        &t.auth,
        serde_json::json!({"auths": {h.clone(): {"identitytoken": REFRESH}}}).to_string(),
    )
    .unwrap();
    ok(
        &t.strata("s2", &["pull", &r]),
        "pull with an identity token",
    );
    // A token that expires mid-run: the registry answers 401 once; strata gets a new token.
    let proxy = FaultProxy::start(reg.port);
    let challenge = format!(
        "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"strata-test\",scope=\"repository:team/bb:pull\"",
        tokens.port
    );
    proxy.add(
        "GET",
        "/blobs/",
        1,
        Fault::Status(401, vec![("WWW-Authenticate".into(), challenge)]),
    );
    let before = tokens.issued.load(Ordering::SeqCst);
    let via = format!("127.0.0.1:{}/team/bb:1", proxy.port);
    fs_err::write(
        &t.auth,
        serde_json::json!({"auths": {format!("127.0.0.1:{}", proxy.port): {"auth": base64_std(&format!("{USER}:{PASSWORD}"))}}}).to_string(),
    )
    .unwrap();
    ok(&t.strata("s3", &["pull", &via]), "pull through an expiry");
    assert!(
        tokens.issued.load(Ordering::SeqCst) >= before + 2,
        "a second token after the 401"
    );
}

fn base64_std(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn faults_retries_resume_and_corruption() {
    let t = require!(T::new("faults"));
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    t.seed_busybox(&format!("{}/library/busybox:1", reg.host()), &[]);
    let proxy = FaultProxy::start(reg.port);
    let r = format!("127.0.0.1:{}/library/busybox:1", proxy.port);
    let raw: serde_json::Value = serde_json::from_str(&t.skopeo_inspect(
        &format!("{}/library/busybox:1", reg.host()),
        true,
        None,
    ))
    .unwrap();
    let layer = raw["layers"][0]["digest"].as_str().unwrap().to_string();
    // A 429 with Retry-After, 503 twice, a slow answer, and a connection cut 100 kB into the
    // layer.
    proxy.add(
        "GET",
        "/manifests/",
        1,
        Fault::Status(429, vec![("Retry-After".into(), "1".into())]),
    );
    proxy.add("GET", "/blobs/", 2, Fault::Status(503, vec![]));
    proxy.add("GET", &layer, 1, Fault::CutAfter(100_000));
    proxy.add(
        "GET",
        "/blobs/",
        1,
        Fault::Delay(std::time::Duration::from_millis(300)),
    );
    let o = t.strata("s", &["pull", &r, "--progress", "plain"]);
    let err = text(&o.stderr);
    ok(&o, "pull through faults");
    assert!(err.contains("retrying"), "{err}");
    assert!(
        proxy.requests().iter().any(|x| x.contains("range=bytes=")),
        "resumed with Range: {:?}",
        proxy.requests()
    );
    assert_eq!(
        ok(&t.strata("s", &["run", &r, "echo", "whole"]), "run").trim(),
        "whole"
    );
    // A corrupted byte: refused, and nothing of it is stored.
    proxy.add("GET", "/blobs/", 100, Fault::Corrupt);
    let e = fails(&t.strata("c", &["pull", &r]), "corrupted pull");
    assert!(
        e.contains("digest mismatch") && e.contains("nothing was stored"),
        "{e}"
    );
    let stored: Vec<String> = std::fs::read_dir(t.store("c").join("v1/oci/blobs/sha256"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(stored.is_empty(), "{stored:?}");
    let tmp_left = std::fs::read_dir(t.store("c").join("v1/tmp"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(tmp_left, 0);
    proxy.rules.lock().unwrap().clear();
    // A layer whose bytes match its digest but whose content is not the diffID its config
    // promises: refused at the download, before it is stored, not at its first unpack.
    let (bad, _, md, ms) = edited_layout(&t, "diffid-layout", |config| {
        config["rootfs"]["diff_ids"][0] = format!("sha256:{}", "0".repeat(64)).into();
    });
    tag_in_layout(
        &bad,
        "application/vnd.oci.image.manifest.v1+json",
        &md,
        ms,
        "bad",
    );
    t.seed(
        &format!("oci:{}:bad", bad.display()),
        &format!("{}/library/baddiff:1", reg.host()),
        &[],
    );
    let e = fails(
        &t.strata("d", &["pull", &format!("{}/library/baddiff:1", reg.host())]),
        "pull of a layer with the wrong diffID",
    );
    assert!(
        e.contains("diffID") && e.contains(&"0".repeat(64)) && e.contains("nothing was stored"),
        "{e}"
    );
    assert!(
        !t.store("d")
            .join("v1/oci/blobs/sha256")
            .join(layer.trim_start_matches("sha256:"))
            .exists(),
        "the refused layer is not a blob"
    );
    let images = ok(&t.strata("d", &["images"]), "images");
    assert!(!images.contains("baddiff"), "{images}");
    // A refused mount falls back to an upload, and a failed upload starts a fresh session.
    proxy.add("POST", "mount=", 2, Fault::Status(404, vec![]));
    proxy.add("PUT", "/blobs/uploads/", 1, Fault::Status(500, vec![]));
    let before = proxy.requests().len();
    let o = t.strata(
        "s",
        &[
            "push",
            &r,
            &format!("127.0.0.1:{}/copy/bb:1", proxy.port),
            "--progress",
            "plain",
            "--compression",
            "none",
        ],
    );
    let err = text(&o.stderr);
    ok(&o, "push through a refused mount and a failed upload");
    assert!(
        err.contains("uploading it") && err.contains("starting a new upload session"),
        "{err}"
    );
    assert!(err.contains("2 blobs uploaded"), "{err}");
    let reqs = proxy.requests()[before..].to_vec();
    let sessions = reqs
        .iter()
        .filter(|x| {
            x.starts_with("POST ") && x.contains("/copy/bb/blobs/uploads/") && !x.contains("mount=")
        })
        .count();
    assert_eq!(sessions, 3, "two blobs, one of them twice: {reqs:?}");
    t.skopeo_inspect(&format!("{}/copy/bb:1", reg.host()), false, None);
}

#[test]
fn a_stalling_registry_is_abandoned_in_bounded_time() {
    let t = require!(T::new("stall"));
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    t.seed_busybox(&format!("{}/library/busybox:1", reg.host()), &[]);
    let proxy = FaultProxy::start(reg.port);
    let host = format!("127.0.0.1:{}", proxy.port);
    let r = format!("{host}/library/busybox:1");
    // A short stall limit keeps the test fast; the defaults are 30 s and 1024 bytes a second.
    let pull = |store: &str| {
        let started = std::time::Instant::now();
        let o = t
            .cmd_in(&t.store(store), &["pull", &r])
            .env("STRATA_REGISTRY_TIMEOUT", "2")
            .env("STRATA_REGISTRY_MIN_RATE", "1024")
            .output()
            .unwrap();
        (o, started.elapsed())
    };
    let gets = |path: &str| {
        proxy
            .requests()
            .iter()
            .filter(|x| x.starts_with("GET ") && x.contains(path))
            .count()
    };
    // A manifest sent one byte every 0.4 s (the issue's: one every 5 s kept a pull silent for
    // over 400 s): abandoned once a window of 2 s moved less than 1024 bytes a second.
    proxy.add(
        "GET",
        "/manifests/",
        1,
        Fault::Trickle(std::time::Duration::from_millis(400)),
    );
    let (o, took) = pull("a");
    let e = fails(&o, "a trickling manifest");
    eprintln!("trickling manifest abandoned after {took:?}: {e}");
    assert!(took < std::time::Duration::from_secs(15), "{took:?}: {e}");
    assert!(
        e.contains(&host)
            && e.contains("GET manifest")
            && e.contains("stalled")
            && e.contains("under the minimum of 1024 bytes a second")
            && e.contains("STRATA_REGISTRY_TIMEOUT"),
        "{e}"
    );
    // A registry that never answers: one try, abandoned after the limit (was: 120 s a try,
    // then retries).
    let before = gets("/manifests/");
    proxy.add(
        "GET",
        "/manifests/",
        1,
        Fault::Silent(std::time::Duration::from_secs(120)),
    );
    let (o, took) = pull("b");
    let e = fails(&o, "a silent registry");
    eprintln!("silent registry abandoned after {took:?}: {e}");
    assert!(took < std::time::Duration::from_secs(15), "{took:?}: {e}");
    assert!(
        e.contains(&host) && e.contains("GET manifest") && e.contains("no answer within 2s"),
        "{e}"
    );
    assert_eq!(
        gets("/manifests/") - before,
        1,
        "a stall is not tried again"
    );
    // A layer that trickles: abandoned, named, and nothing of it stored.
    let raw: serde_json::Value = serde_json::from_str(&t.skopeo_inspect(
        &format!("{}/library/busybox:1", reg.host()),
        true,
        None,
    ))
    .unwrap();
    let layer = raw["layers"][0]["digest"].as_str().unwrap().to_string();
    proxy.add(
        "GET",
        &layer,
        1,
        Fault::Trickle(std::time::Duration::from_millis(400)),
    );
    let (o, took) = pull("c");
    let e = fails(&o, "a trickling layer");
    eprintln!("trickling layer abandoned after {took:?}: {e}");
    assert!(took < std::time::Duration::from_secs(15), "{took:?}: {e}");
    assert!(
        e.contains(&host) && e.contains(&format!("GET blob {layer}")) && e.contains("stalled"),
        "{e}"
    );
    let stored = std::fs::read_dir(t.store("c").join("v1/oci/blobs/sha256"))
        .map(|r| {
            r.flatten()
                .any(|e| layer.ends_with(&*e.file_name().to_string_lossy()))
        })
        .unwrap_or(false);
    assert!(!stored);
    // Redirects in a loop: said so, not "unreachable".
    proxy.add(
        "GET",
        "/manifests/",
        40,
        Fault::Status(
            307,
            vec![("Location".into(), "/v2/library/busybox/manifests/1".into())],
        ),
    );
    let (o, _) = pull("d");
    let e = fails(&o, "a redirect loop");
    assert!(
        e.contains("too many redirects") && !e.contains("unreachable"),
        "{e}"
    );
    proxy.rules.lock().unwrap().clear();
    // With the registry well again, the same settings pull.
    let (o, _) = pull("e");
    ok(&o, "a pull after the faults");
}

#[test]
fn registries_conf_mirrors_aliases_blocking_and_short_names() {
    let t = require!(T::new("mirrors"));
    let reg = Registry::start(&t.dir.join("reg"), Auth::Anonymous);
    let h = reg.host();
    // docker.io's busybox, served by the local registry as a mirror.
    t.seed_busybox(&format!("{h}/library/busybox:mirrored"), &[]);
    let dead = harness::free_port();
    t.mirror_conf(
        &[format!("127.0.0.1:{dead}"), h.clone()],
        &format!("\n[[registry]]\nprefix = \"{h}/blocked\"\nblocked = true\n\n[aliases]\n\"bb\" = \"{h}/library/busybox\"\n"),
    );
    let ctx = t.context("ctx", "FROM busybox:mirrored\nRUN echo from-mirror > /m\n");
    let o = t.build("s", "m", &ctx);
    let err = text(&o.stderr);
    ok(&o, "build from a mirror");
    assert!(
        err.contains(&format!("mirror 127.0.0.1:{dead} failed")),
        "{err}"
    );
    assert_eq!(
        ok(&t.strata("s", &["run", "m", "cat", "/m"]), "run").trim(),
        "from-mirror"
    );
    // The name in the store is the one in the Dockerfile.
    assert!(ok(&t.strata("s", &["images"]), "images").contains("busybox"));
    ok(&t.strata("s2", &["pull", "bb:mirrored"]), "pull an alias");
    let e = fails(
        &t.strata("s2", &["pull", &format!("{h}/blocked/x:1")]),
        "blocked",
    );
    assert!(
        e.contains("blocked by the registry policy") && e.contains(t.conf.to_str().unwrap()),
        "{e}"
    );
    // Without $CONTAINERS_REGISTRIES_CONF: the system file and the drop-ins, the user's
    // registries.conf.d included, are read.
    let dropins = t.dir.join("home/.config/containers/registries.conf.d");
    fs_err::create_dir_all(&dropins).unwrap();
    fs_err::write(
        dropins.join("50-strata-test.conf"),
        format!("[aliases]\n\"bb-dropin\" = \"{h}/library/busybox\"\n"),
    )
    .unwrap();
    let o = t
        .cmd_in(&t.store("s4"), &["pull", "bb-dropin:mirrored"])
        .env_remove("CONTAINERS_REGISTRIES_CONF")
        .output()
        .unwrap();
    ok(&o, "pull an alias of a user drop-in");
    t.write_conf("short-name-mode = \"enforcing\"\n");
    let e = fails(&t.strata("s3", &["pull", "python:3.11"]), "enforcing");
    assert!(
        e.contains("short name") && e.contains("docker.io/library/python"),
        "{e}"
    );
    t.write_conf("[[registry]\n");
    let e = fails(&t.strata("s3", &["pull", "python:3.11"]), "bad conf");
    assert!(e.contains(t.conf.to_str().unwrap()), "{e}");
}

/// The README's main command: the Python example, `FROM python:3.11-slim` with a short name,
/// built in an empty store through a registries.conf mirror for docker.io that serves the
/// Debian-made python image (scripts/test-deps.sh makes it into target/test-images).
#[test]
fn python_example_builds_from_a_docker_hub_mirror() {
    let Some((t, _reg)) = python::python_world("python") else {
        return;
    };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python-app");
    let o = t.build("s", "app", &example);
    ok(&o, "build the Python example");
    let out = ok(&t.strata("s", &["run", "app"]), "run the Python example");
    assert!(out.contains("hello from strata"), "{out}");
    let who = ok(&t.strata("s", &["run", "app", "id", "-u"]), "id");
    assert_eq!(who.trim(), "10001");
    // apt-get in a step with Docker's capabilities and its own network: it reaches the Debian
    // mirror through slirp4netns and drops to _apt for the downloads (it would warn
    // "unsandboxed" had that failed).
    let apt = ok(
        &t.strata(
            "s",
            &[
                "run",
                "python:3.11-slim",
                "sh",
                "-c",
                "apt-get update 2>&1; echo apt-rc=$?",
            ],
        ),
        "apt-get update",
    );
    assert!(
        apt.contains("apt-rc=0") && apt.contains("Reading package lists"),
        "{apt}"
    );
    assert!(!apt.contains("unsandboxed"), "{apt}");
}

#[test]
fn tls_with_certs_d_ca_and_client_certificates() {
    let t = require!(T::new("tls"));
    let tls = t.dir.join("tls");
    fs_err::create_dir_all(&tls).unwrap();
    harness::make_tls(&tls);
    let extra = format!(
        "  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
        tls.join("server.crt").display(),
        tls.join("server.key").display(),
        tls.join("ca.crt").display()
    );
    let reg = Registry::start_with(&t.dir.join("reg"), Auth::Anonymous, &extra);
    let h = reg.host();
    // skopeo's cert dir: the CA and the client certificate and key, nothing else.
    let sk = t.dir.join("skopeo-certs");
    fs_err::create_dir_all(&sk).unwrap();
    for f in ["ca.crt", "client.cert", "client.key"] {
        fs_err::copy(tls.join(f), sk.join(f)).unwrap();
    }
    let o = Command::new("skopeo")
        .args(["copy", "-q", "--dest-cert-dir"])
        .arg(&sk)
        .arg(format!("oci:{}:latest", t.busybox_layout().display()))
        .arg(format!("docker://{h}/tls/bb:1"))
        .env("HOME", t.dir.join("home"))
        .output()
        .unwrap();
    ok(&o, "skopeo copy over TLS");
    let r = format!("{h}/tls/bb:1");
    // An unknown CA: a TLS error that says where the CA goes.
    let e = fails(&t.strata("s", &["pull", &r]), "pull with an unknown CA");
    assert!(e.contains("TLS failure") && e.contains("certs.d"), "{e}");
    // The CA in certs.d, but no client certificate: the server refuses the handshake.
    let certs = t.dir.join("home/.config/containers/certs.d").join(&h);
    fs_err::create_dir_all(&certs).unwrap();
    fs_err::copy(tls.join("ca.crt"), certs.join("ca.crt")).unwrap();
    let e = fails(
        &t.strata("s", &["pull", &r]),
        "pull without a client certificate",
    );
    assert!(e.contains(&h) && e.contains("client certificate"), "{e}");
    // With the client certificate and key beside it: it works.
    fs_err::copy(tls.join("client.cert"), certs.join("client.cert")).unwrap();
    fs_err::copy(tls.join("client.key"), certs.join("client.key")).unwrap();
    ok(&t.strata("s", &["pull", &r]), "pull with certs.d");
    assert_eq!(
        ok(&t.strata("s", &["run", &r, "echo", "tls"]), "run").trim(),
        "tls"
    );
    ok(
        &t.strata("s", &["push", &r, &format!("{h}/tls/copy:1")]),
        "push over TLS",
    );
}

/// `strata` in store `store` with the proxy and trust-store variables cleared, then `env` set.
fn strata_env(t: &T, store: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = t.cmd_in(&t.store(store), args);
    for v in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn https_proxy_no_proxy_and_the_system_trust_store() {
    let t = require!(T::new("proxy"));
    let tls = t.dir.join("tls");
    fs_err::create_dir_all(&tls).unwrap();
    harness::make_tls(&tls);
    // TLS without client certificates: what a public registry looks like.
    let extra = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        tls.join("server.crt").display(),
        tls.join("server.key").display(),
    );
    let reg = Registry::start_with(&t.dir.join("reg"), Auth::Anonymous, &extra);
    let sk = t.dir.join("skopeo-certs");
    fs_err::create_dir_all(&sk).unwrap();
    fs_err::copy(tls.join("ca.crt"), sk.join("ca.crt")).unwrap();
    let o = Command::new("skopeo")
        .args(["copy", "-q", "--dest-cert-dir"])
        .arg(&sk)
        .arg(format!("oci:{}:latest", t.busybox_layout().display()))
        .arg(format!("docker://{}/proxied/bb:1", reg.host()))
        .env("HOME", t.dir.join("home"))
        .output()
        .unwrap();
    ok(&o, "skopeo copy over TLS");
    let ca = tls.join("ca.crt");
    let direct = format!("{}/proxied/bb:1", reg.host());
    // The system trust store (SSL_CERT_FILE replaces it, as for openssl): no certs.d needed;
    // without it the same pull is a TLS failure.
    let e = fails(
        &strata_env(&t, "s0", &["pull", &direct], &[]),
        "pull with the CA nowhere",
    );
    assert!(e.contains("TLS failure"), "{e}");
    ok(
        &strata_env(&t, "s1", &["pull", &direct], &[("SSL_CERT_FILE", &ca)]),
        "pull trusting the CA through SSL_CERT_FILE",
    );
    // A registry only a forward proxy can reach: HTTPS_PROXY tunnels to it with CONNECT and
    // the certificate is checked against the registry's name, end to end.
    let proxy = FaultProxy::start(reg.port);
    let proxy_url = PathBuf::from(format!("http://127.0.0.1:{}", proxy.port));
    let name = format!("{}:{}", harness::PROXIED_NAME, reg.port);
    let via = format!("{name}/proxied/bb:1");
    let d = ok(
        &strata_env(
            &t,
            "s2",
            &["pull", &via, "-q"],
            &[("SSL_CERT_FILE", &ca), ("HTTPS_PROXY", &proxy_url)],
        ),
        "pull through HTTPS_PROXY",
    );
    assert!(d.trim().starts_with("sha256:"), "{d}");
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r == &format!("CONNECT {name}")),
        "{:?}",
        proxy.requests()
    );
    assert_eq!(
        ok(
            &strata_env(&t, "s2", &["run", &via, "echo", "proxied"], &[]),
            "run"
        )
        .trim(),
        "proxied"
    );
    // NO_PROXY names it: strata goes direct, and the name does not resolve.
    let before = proxy.requests().len();
    let e = fails(
        &strata_env(
            &t,
            "s3",
            &["pull", &via],
            &[
                ("SSL_CERT_FILE", &ca),
                ("HTTPS_PROXY", &proxy_url),
                ("NO_PROXY", Path::new(harness::PROXIED_NAME)),
            ],
        ),
        "pull with NO_PROXY",
    );
    assert!(e.contains(harness::PROXIED_NAME), "{e}");
    assert_eq!(proxy.requests().len(), before, "{:?}", proxy.requests());
    // A loopback registry never goes through the proxy (as Go's ProxyFromEnvironment).
    ok(
        &strata_env(
            &t,
            "s4",
            &["pull", &direct],
            &[("SSL_CERT_FILE", &ca), ("HTTPS_PROXY", &proxy_url)],
        ),
        "pull of a loopback registry with HTTPS_PROXY set",
    );
    assert_eq!(proxy.requests().len(), before, "{:?}", proxy.requests());
}
