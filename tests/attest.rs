//! SBOM and provenance attestations through the binary: `strata build --sbom
//! --provenance=mode=max` on the Debian and python test bases stores an index with the image
//! and its attestation manifest (as BuildKit stores it); the SBOM lists exactly what
//! `dpkg-query -W` and `pip list` report inside the image (run by `strata run`) and validates
//! with spdx-tools (`pyspdxtools -i`, from target/sbom-fixtures); the provenance names the base
//! image's digest and the build's arguments, and a `--secret`'s value is in no blob of the
//! store; `--output type=oci` writes the index with the attestations (read back by skopeo);
//! `--push` to Debian's docker-registry on 127.0.0.1 sends the index, skopeo copies it whole,
//! and a pull into another store prints the very SBOM and provenance that were pushed. The Python
//! example (examples/python-app: pip from PyPI in a builder stage's venv, copied into the
//! runtime stage) is checked against `pip list` in the image and cyclonedx-bom's `cyclonedx-py environment`; the CycloneDX
//! documents of it and of the Debian image against CycloneDX's strict schema.
//! A build for linux/amd64 and linux/arm64 (the debian and debian-arm64 bases) stores, writes
//! and pushes one index with each platform's image and attestation manifest, each platform's
//! SBOM listing its own architecture's packages.
//! `--sbom=scan-stage=…` (and BuildKit's BUILDKIT_SBOM_SCAN_STAGE argument) adds a builder
//! stage's Python distribution, named with its stage, which the plain SBOM does not list.
//! As the user running the tests and, when that is root, again as the unprivileged
//! `strata-test`.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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
    c.args(args)
        .env_remove("STRATA_ROOT")
        .env_remove("SOURCE_DATE_EPOCH")
        .current_dir("/tmp")
        .stdin(std::process::Stdio::null());
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

/// A test's directory for `user` (owned by it), with a store in it; on drop the store is
/// pruned by its owner and the directory removed.
struct Scratch {
    dir: PathBuf,
    user: Option<&'static str>,
}

impl Scratch {
    fn new(name: &str, user: Option<&'static str>) -> Scratch {
        let base = std::env::temp_dir().join(format!("strata-attest-{}", std::process::id()));
        fs_err::create_dir_all(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let dir = base.join(format!("{name}-{}", user.unwrap_or("self")));
        let _ = std::fs::remove_dir_all(&dir);
        ok(user, "mkdir", &["-p", dir.to_str().unwrap()]);
        Scratch { dir, user }
    }

    fn root(&self) -> String {
        self.dir.join("store").display().to_string()
    }

    /// `strata --root STORE ARGS`, as the scratch's user.
    fn strata(&self, args: &[&str]) -> Output {
        let root = self.root();
        let mut all = vec!["--root", root.as_str()];
        all.extend_from_slice(args);
        run(self.user, support::strata_bin(), &all)
    }

    fn strata_ok(&self, args: &[&str]) -> String {
        let o = self.strata(args);
        assert!(
            o.status.success(),
            "strata {args:?} as {:?} failed: {}\n{}",
            self.user,
            support::text(&o.stdout),
            support::text(&o.stderr)
        );
        support::text(&o.stdout)
    }

    /// A file written by the scratch's user.
    fn write(&self, rel: &str, data: &str) -> PathBuf {
        let p = self.dir.join(rel);
        if let Some(parent) = p.parent() {
            ok(self.user, "mkdir", &["-p", parent.to_str().unwrap()]);
        }
        // Named for this scratch too: the tests run at the same time.
        let tmp = std::env::temp_dir().join(format!(
            "strata-attest-{}-{}-{}",
            std::process::id(),
            self.dir.file_name().unwrap().to_string_lossy(),
            rel.replace('/', "_")
        ));
        fs_err::write(&tmp, data).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        ok(
            self.user,
            "cp",
            &[tmp.to_str().unwrap(), p.to_str().unwrap()],
        );
        let _ = std::fs::remove_file(&tmp);
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.strata(&["prune", "--all"]);
        let _ = run(
            self.user,
            "chmod",
            &["-R", "u+rwX", self.dir.to_str().unwrap()],
        );
        let _ = run(self.user, "rm", &["-rf", self.dir.to_str().unwrap()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The OCI layout of a test base (scripts/test-deps.sh makes them), or a skip.
fn base(name: &str) -> Option<PathBuf> {
    let d = repo().join("target/test-images/oci").join(name);
    if d.join("index.json").exists() {
        Some(d)
    } else {
        support::skip(&format!(
            "{} is missing: scripts/test-deps.sh makes it",
            d.display()
        ));
        None
    }
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The store's entry (index.json) named `name`.
fn entry(root: &str, name: &str) -> Value {
    let idx = json(&fs_err::read_to_string(Path::new(root).join("v1/oci/index.json")).unwrap());
    idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|n| n.ends_with(name))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no entry {name} in {idx}"))
}

fn blob(root: &str, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    fs_err::read(Path::new(root).join("v1/oci/blobs/sha256").join(hex)).unwrap()
}

/// The packages of an SPDX document whose purl starts with `prefix`: (name, version).
fn spdx_packages(doc: &Value, prefix: &str) -> BTreeSet<(String, String)> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["externalRefs"].as_array().is_some_and(|r| {
                r.iter().any(|r| {
                    r["referenceLocator"]
                        .as_str()
                        .is_some_and(|l| l.starts_with(prefix))
                })
            })
        })
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["versionInfo"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// spdx-tools' verdict on an SPDX file (from target/sbom-fixtures, made by test-deps.sh).
fn check_spdx(file: &Path) {
    let tool = repo().join("target/sbom-fixtures/tools/bin/pyspdxtools");
    if !tool.exists() {
        support::skip(&format!(
            "{} is missing: scripts/sbom-fixtures.sh (run by scripts/test-deps.sh) makes it",
            tool.display()
        ));
        return;
    }
    let o = Command::new(&tool).arg("-i").arg(file).output().unwrap();
    let said = format!("{}{}", support::text(&o.stdout), support::text(&o.stderr));
    assert!(
        o.status.success() && !said.to_lowercase().contains("invalid"),
        "pyspdxtools on {}: {said}",
        file.display()
    );
}

/// CycloneDX's own strict schema validator (cyclonedx-python-lib, from target/sbom-fixtures) on
/// a CycloneDX file.
fn check_cyclonedx(file: &Path) {
    let python = repo().join("target/sbom-fixtures/tools/bin/python");
    if !python.exists() {
        support::skip(&format!(
            "{} is missing: scripts/sbom-fixtures.sh (run by scripts/test-deps.sh) makes it",
            python.display()
        ));
        return;
    }
    let check = "import sys\nfrom cyclonedx.schema import SchemaVersion\nfrom cyclonedx.validation.json import JsonStrictValidator\nerr = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nif err:\n    print(err); sys.exit(1)\nprint('valid')\n";
    let o = Command::new(&python)
        .args(["-c", check])
        .arg(file)
        .output()
        .unwrap();
    let said = format!("{}{}", support::text(&o.stdout), support::text(&o.stderr));
    assert!(
        o.status.success() && said.trim() == "valid",
        "CycloneDX's schema on {}: {said}",
        file.display()
    );
}

const SECRET: &str = "s3cr3t-value-never-attested-7f1c";

#[test]
fn debian_build_attests_its_dpkg_packages_and_provenance_without_secrets() {
    let Some(debian) = base("debian") else { return };
    for who in support::runners() {
        let s = Scratch::new("debian", who);
        s.strata_ok(&["load", "-i", debian.to_str().unwrap()]);
        let ctx = s.dir.join("ctx");
        s.write(
            "ctx/Dockerfile",
            "FROM debian:latest\nARG GREETING=hi\nRUN --mount=type=secret,id=tok test -s /run/secrets/tok && echo $GREETING > /hello\n",
        );
        let tok = s.write("tok", SECRET);
        let out_tar = s.dir.join("out.tar");
        let built = s.strata(&[
            "build",
            "--progress",
            "plain",
            "--sbom",
            "--provenance=mode=max",
            "--secret",
            &format!("id=tok,src={}", tok.display()),
            "--build-arg",
            "GREETING=yo",
            "-t",
            "app:1",
            ctx.to_str().unwrap(),
        ]);
        assert!(built.status.success(), "{}", support::text(&built.stderr));
        assert!(
            support::text(&built.stderr).contains("attestations: sbom ("),
            "{}",
            support::text(&built.stderr)
        );
        // The tag names an index: the image (its platform) and the attestation manifest.
        let root = s.root();
        let e = entry(&root, "app:1");
        assert_eq!(e["mediaType"], "application/vnd.oci.image.index.v1+json");
        let index = json(&String::from_utf8(blob(&root, e["digest"].as_str().unwrap())).unwrap());
        let m = index["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2, "{index}");
        assert_eq!(m[0]["platform"]["os"], "linux");
        assert_eq!(m[1]["platform"]["os"], "unknown");
        assert_eq!(m[1]["platform"]["architecture"], "unknown");
        assert_eq!(
            m[1]["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        assert_eq!(
            m[1]["annotations"]["vnd.docker.reference.digest"],
            m[0]["digest"]
        );
        let am = json(&String::from_utf8(blob(&root, m[1]["digest"].as_str().unwrap())).unwrap());
        assert_eq!(
            am["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        let types: Vec<&str> = am["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
                l["annotations"]["in-toto.io/predicate-type"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            types,
            [
                "https://spdx.dev/Document",
                "https://slsa.dev/provenance/v0.2"
            ]
        );
        // run and inspect of the tag still find the image (not the attestation manifest).
        assert_eq!(s.strata_ok(&["run", "app:1", "cat", "/hello"]).trim(), "yo");
        let inspect = json(&s.strata_ok(&["inspect", "app:1"]));
        assert_eq!(inspect["Config"]["architecture"], "amd64");

        // The SBOM: every dpkg package dpkg-query lists in the image, and nothing else.
        let sbom_text = s.strata_ok(&["sbom", "app:1"]);
        let doc = json(&sbom_text);
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        let listed = s.strata_ok(&[
            "run",
            "app:1",
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${Version}\\n",
        ]);
        let dpkg: BTreeSet<(String, String)> = listed
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert!(dpkg.len() > 50, "{listed}");
        assert_eq!(spdx_packages(&doc, "pkg:deb/"), dpkg);
        // Each package names the layer and instruction that added it.
        assert!(sbom_text.contains("make-base-images.sh debian"));
        let f = s.dir.join("sbom.spdx.json");
        fs_err::write(&f, &sbom_text).unwrap();
        check_spdx(&f);
        // A scan of the image (CycloneDX is made on request, not attached) finds the same.
        let cdx_text = s.strata_ok(&["sbom", "--format", "cyclonedx-json", "app:1"]);
        let cdx_file = s.write("sbom.cdx.json", &cdx_text);
        check_cyclonedx(&cdx_file);
        let cdx = json(&cdx_text);
        let scanned: BTreeSet<(String, String)> = cdx["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["purl"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("pkg:deb/"))
            })
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(scanned, dpkg);

        // Provenance: the base by the digest that was used, the arguments, max's Dockerfile.
        let prov = json(&s.strata_ok(&["provenance", "app:1"]));
        assert_eq!(prov["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v0.2");
        assert_eq!(
            prov["subject"][0]["digest"]["sha256"],
            m[0]["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap()
        );
        let base_digest = json(&fs_err::read_to_string(debian.join("index.json")).unwrap())
            ["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let p = &prov["predicate"];
        assert_eq!(
            p["materials"][0]["digest"]["sha256"],
            base_digest.strip_prefix("sha256:").unwrap()
        );
        assert_eq!(
            p["invocation"]["parameters"]["args"]["build-arg:GREETING"],
            "yo"
        );
        assert!(p["buildConfig"]["dockerfile"]["data"]
            .as_str()
            .unwrap()
            .contains("ARG GREETING=hi"));

        // --output type=oci (an oci-archive): the index with its attestations.
        s.strata_ok(&[
            "build",
            "-q",
            "--attest",
            "type=sbom",
            "--attest",
            "type=provenance,mode=min,version=v1",
            "--secret",
            &format!("id=tok,src={}", tok.display()),
            "--output",
            &format!("type=oci,dest={}", out_tar.display()),
            "-t",
            "app:2",
            ctx.to_str().unwrap(),
        ]);
        if support::have("skopeo") {
            let raw = ok(
                None,
                "skopeo",
                &[
                    "inspect",
                    "--raw",
                    &format!("oci-archive:{}:app:2", out_tar.display()),
                ],
            );
            let idx = json(&raw);
            assert_eq!(
                idx["manifests"][1]["annotations"]["vnd.docker.reference.type"],
                "attestation-manifest",
                "{raw}"
            );
        } else {
            support::skip("skopeo is not installed: the oci-archive is not read back");
        }

        // No secret anywhere: not in any blob of the store, not in what the commands print.
        let blobs = Path::new(&root).join("v1/oci/blobs/sha256");
        for b in fs_err::read_dir(&blobs).unwrap() {
            let b = b.unwrap().path();
            let bytes = fs_err::read(&b).unwrap();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "the secret is in {}",
                b.display()
            );
        }
        let tar = fs_err::read(&out_tar).unwrap();
        assert!(!tar.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
        assert!(!sbom_text.contains(SECRET));
        assert!(!s.strata_ok(&["provenance", "app:1"]).contains(SECRET));
    }
}

#[test]
fn python_build_attests_what_pip_lists() {
    let Some(python) = base("python") else { return };
    for who in support::runners() {
        let s = Scratch::new("python", who);
        s.strata_ok(&["load", "-i", python.to_str().unwrap()]);
        let ctx = s.dir.join("ctx");
        s.write("ctx/Dockerfile", "FROM python:latest\nCOPY app.py /app/\n");
        s.write("ctx/app.py", "print('hi')\n");
        s.strata_ok(&[
            "build",
            "-q",
            "--sbom=true",
            "-t",
            "py:1",
            ctx.to_str().unwrap(),
        ]);
        let doc = json(&s.strata_ok(&["sbom", "py:1"]));
        let pip = json(&s.strata_ok(&[
            "run", "py:1", "python3", "-m", "pip", "list", "--format", "json",
        ]));
        let listed: BTreeSet<(String, String)> = pip
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(!listed.is_empty());
        assert_eq!(spdx_packages(&doc, "pkg:pypi/"), listed);
        // The image without attestations: no provenance to print, a scanned SBOM all the same.
        let o = s.strata(&["provenance", "python:latest"]);
        assert!(!o.status.success());
        assert!(support::text(&o.stderr).contains("has no provenance attestation"));
        let scanned = json(&s.strata_ok(&["sbom", "--format", "cyclonedx-json", "python:latest"]));
        assert_eq!(scanned["bomFormat"], "CycloneDX");
        // The scan cache: one package list per layer, beside the layer's facts.
        let facts = Path::new(&s.root()).join("v1/facts");
        let pkgs = fs_err::read_dir(&facts)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".pkgs")
            })
            .count();
        assert_eq!(pkgs, 2, "the base layer and the COPY layer");
    }
}

#[test]
fn attestation_flags_are_parsed_as_buildx_and_unknown_ones_refused() {
    let s = Scratch::new("flags", None);
    let ctx = s.dir.join("ctx");
    s.write("ctx/Dockerfile", "FROM scratch\n");
    for (flag, says) in [
        ("--attest=type=bogus", "unknown attestation type"),
        ("--sbom=generator=docker/scanner", "runs no scanner image"),
        ("--provenance=mode=huge", "unknown option mode=huge"),
        ("--attest=mode=max", "give type=sbom or type=provenance"),
        (
            "--sbom=scan-context=true",
            "does not scan the build context",
        ),
    ] {
        let o = s.strata(&["build", "-q", flag, ctx.to_str().unwrap()]);
        assert!(!o.status.success(), "{flag}");
        assert!(
            support::text(&o.stderr).contains(says),
            "{flag}: {}",
            support::text(&o.stderr)
        );
    }
}

/// Debian's docker-registry on a free port of 127.0.0.1, stopped (by its pid) and its storage
/// removed on drop.
struct Registry {
    child: std::process::Child,
    dir: PathBuf,
    port: u16,
}

impl Registry {
    fn start() -> Option<Registry> {
        if !support::have("docker-registry") {
            support::skip("docker-registry is not installed: apt-get install docker-registry");
            return None;
        }
        // One directory per registry: the tests run at the same time, each with its own.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("strata-attest-reg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("config.yml");
        fs_err::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let r = Registry { child, dir, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(r);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("docker-registry did not answer on 127.0.0.1:{port}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn attestations_survive_push_copy_and_pull() {
    let Some(debian) = base("debian") else { return };
    let Some(reg) = Registry::start() else { return };
    require!(support::have("skopeo"), "skopeo is not installed");
    for who in support::runners() {
        let s = Scratch::new("push", who);
        s.strata_ok(&["load", "-i", debian.to_str().unwrap()]);
        let ctx = s.dir.join("ctx");
        s.write(
            "ctx/Dockerfile",
            "FROM debian:latest\nRUN echo pushed > /note\n",
        );
        let user = who.unwrap_or("self");
        let name = format!("127.0.0.1:{}/attest-{user}:1", reg.port);
        s.strata_ok(&[
            "build",
            "-q",
            "--sbom",
            "--provenance=mode=max,version=v1",
            "-t",
            &name,
            "--push",
            ctx.to_str().unwrap(),
        ]);
        // The registry has the index with the attestation manifest, about the pushed image.
        let raw = ok(
            None,
            "skopeo",
            &[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://{name}"),
            ],
        );
        let idx = json(&raw);
        let m = idx["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2, "{raw}");
        assert_eq!(
            m[1]["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        assert_eq!(
            m[1]["annotations"]["vnd.docker.reference.digest"],
            m[0]["digest"]
        );
        // skopeo copies the index with it.
        let copy = format!("127.0.0.1:{}/attest-copy-{user}:1", reg.port);
        ok(
            None,
            "skopeo",
            &[
                "copy",
                "-q",
                "--all",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                &format!("docker://{name}"),
                &format!("docker://{copy}"),
            ],
        );
        let copied = json(&ok(
            None,
            "skopeo",
            &[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://{copy}"),
            ],
        ));
        assert_eq!(copied, idx);
        // Pulled into another store: the SBOM printed is the one pushed (the statement's
        // predicate, whose subject is the pushed manifest), and the provenance too.
        let p = Scratch::new("pulled", who);
        p.strata_ok(&["pull", &copy]);
        let sbom = json(&p.strata_ok(&["sbom", &copy]));
        let prov = json(&p.strata_ok(&["provenance", &copy]));
        assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v1");
        let pushed_digest = m[0]["digest"].as_str().unwrap();
        assert_eq!(
            prov["subject"][0]["digest"]["sha256"],
            pushed_digest.strip_prefix("sha256:").unwrap()
        );
        assert_eq!(sbom["packages"][0]["versionInfo"], pushed_digest);
        let am = json(&ok(
            None,
            "skopeo",
            &[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!(
                    "docker://127.0.0.1:{}/attest-copy-{user}@{}",
                    reg.port,
                    m[1]["digest"].as_str().unwrap()
                ),
            ],
        ));
        let sbom_layer = am["layers"][0]["digest"].as_str().unwrap();
        let statement = blob(&p.root(), sbom_layer);
        let pushed: Value = serde_json::from_slice(&statement).unwrap();
        assert_eq!(pushed["predicate"], sbom);
        // The pull scanned each layer's packages as it inflated it (facts/<hex>.pkgs): the
        // Debian base's dpkg list is there, and an SBOM made from them is the one made by
        // scanning the blobs again.
        let manifest = json(&String::from_utf8(blob(&p.root(), pushed_digest)).unwrap());
        let pkgs: Vec<PathBuf> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let hex = l["digest"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("sha256:")
                    .unwrap();
                Path::new(&p.root()).join(format!("v1/facts/{hex}.pkgs"))
            })
            .collect();
        let base_pkgs = json(&fs_err::read_to_string(&pkgs[0]).unwrap());
        assert!(
            base_pkgs["dpkg"]["var/lib/dpkg/status"]
                .as_array()
                .is_some_and(|a| a.len() > 50),
            "{base_pkgs}"
        );
        let from_pull = p.strata_ok(&["sbom", "--format", "cyclonedx-json", &copy]);
        for f in &pkgs {
            ok(p.user, "rm", &[f.to_str().unwrap()]);
        }
        let rescanned = p.strata_ok(&["sbom", "--format", "cyclonedx-json", &copy]);
        assert_eq!(json(&from_pull), json(&rescanned));
        assert!(pkgs.iter().all(|f| f.exists()), "cached again");
        // The pulled image runs.
        assert_eq!(
            p.strata_ok(&["run", &copy, "cat", "/note"]).trim(),
            "pushed"
        );
    }
}

/// The issue's check on the Python example itself (examples/python-app: a builder stage whose
/// venv pip fills from PyPI, a runtime stage with the venv copied in, a non-root user): the
/// venv's packages in the SBOM are what `pip list` reports inside the image's venv and what
/// cyclonedx-bom's own `cyclonedx-py environment` finds in it (the image exported, its venv
/// read by the host's python 3.11, the base's); both documents validate (pyspdxtools,
/// CycloneDX's strict schema).
#[test]
fn the_python_example_s_sbom_agrees_with_pip_list_and_cyclonedx_py() {
    let Some(python) = base("python") else { return };
    let tools = repo().join("target/sbom-fixtures/tools/bin");
    require!(
        tools.join("cyclonedx-py").exists(),
        "target/sbom-fixtures/tools is missing: scripts/sbom-fixtures.sh (run by scripts/test-deps.sh) makes it"
    );
    for who in support::runners() {
        let s = Scratch::new("venv", who);
        s.strata_ok(&["load", "-i", python.to_str().unwrap()]);
        s.strata_ok(&["tag", "python:latest", "python:3.11-slim"]);
        let ctx = s.dir.join("ctx");
        let example = repo().join("examples/python-app");
        ok(
            who,
            "cp",
            &["-r", example.to_str().unwrap(), ctx.to_str().unwrap()],
        );
        let out = s.dir.join("rootfs");
        s.strata_ok(&[
            "build",
            "-q",
            "--sbom=true",
            "-t",
            "venv:1",
            ctx.to_str().unwrap(),
        ]);
        s.strata_ok(&[
            "build",
            "-q",
            "--output",
            &format!("type=local,dest={}", out.display()),
            ctx.to_str().unwrap(),
        ]);
        // The venv's packages in the SBOM (their location is under /opt/venv).
        let doc = json(&s.strata_ok(&["sbom", "venv:1"]));
        let in_venv: BTreeSet<(String, String)> = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["annotations"].as_array().is_some_and(|a| {
                    a.iter().any(|a| {
                        a["comment"]
                            .as_str()
                            .and_then(|c| serde_json::from_str::<Value>(c).ok())
                            .is_some_and(|n| {
                                n["location"]
                                    .as_str()
                                    .is_some_and(|l| l.starts_with("/opt/venv/"))
                            })
                    })
                })
            })
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_lowercase(),
                    p["versionInfo"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let pairs = |v: &Value| -> BTreeSet<(String, String)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_lowercase(),
                        p["version"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let pip = pairs(&json(&s.strata_ok(&[
            "run",
            "venv:1",
            "/opt/venv/bin/pip",
            "list",
            "--format",
            "json",
            "--disable-pip-version-check",
        ])));
        assert!(pip.contains(&("six".into(), "1.16.0".into())), "{pip:?}");
        assert_eq!(in_venv, pip, "{who:?}: the SBOM's venv against pip list");
        // cyclonedx-bom's own scan of the exported venv.
        let bom = json(&ok(
            None,
            tools.join("cyclonedx-py").to_str().unwrap(),
            &[
                "environment",
                "--of",
                "JSON",
                "-o",
                "-",
                out.join("opt/venv").to_str().unwrap(),
            ],
        ));
        let theirs: BTreeSet<(String, String)> = bom["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_lowercase(),
                    c["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            in_venv, theirs,
            "{who:?}: the SBOM's venv against cyclonedx-py"
        );
        // Both formats validate with their own tools.
        let spdx_file = s.write("sbom.spdx.json", &s.strata_ok(&["sbom", "venv:1"]));
        check_spdx(&spdx_file);
        let cdx_file = s.write(
            "sbom.cdx.json",
            &s.strata_ok(&["sbom", "--format", "cyclonedx-json", "venv:1"]),
        );
        check_cyclonedx(&cdx_file);
    }
}

/// The dpkg architectures of an SPDX document's `pkg:deb/` packages (their purls' `arch=`).
fn deb_arches(doc: &Value) -> BTreeSet<String> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            p["externalRefs"].as_array()?.iter().find_map(|r| {
                let l = r["referenceLocator"].as_str()?;
                if !l.starts_with("pkg:deb/") {
                    return None;
                }
                let arch = l
                    .split(['?', '&'])
                    .find_map(|kv| kv.strip_prefix("arch="))?;
                Some(arch.to_string())
            })
        })
        .collect()
}

/// The index `raw` as BuildKit stores a multi-platform build with attestations: two images,
/// then their attestation manifests, each about its platform's image. Returns the images'
/// digests (amd64, arm64) and the attestation manifests' (the same order).
fn two_platforms_attested(raw: &str) -> ([String; 2], [String; 2]) {
    let idx = json(raw);
    let m = idx["manifests"].as_array().unwrap();
    assert_eq!(m.len(), 4, "{raw}");
    assert_eq!(m[0]["platform"]["architecture"], "amd64", "{raw}");
    assert_eq!(m[1]["platform"]["architecture"], "arm64", "{raw}");
    for (i, a) in [(0, 2), (1, 3)] {
        assert_eq!(m[a]["platform"]["os"], "unknown", "{raw}");
        assert_eq!(m[a]["platform"]["architecture"], "unknown", "{raw}");
        assert_eq!(
            m[a]["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        assert_eq!(
            m[a]["annotations"]["vnd.docker.reference.digest"], m[i]["digest"],
            "{raw}"
        );
    }
    let d = |i: usize| m[i]["digest"].as_str().unwrap().to_string();
    ([d(0), d(1)], [d(2), d(3)])
}

#[test]
fn a_multi_platform_build_attests_each_platform() {
    let Some(debian) = base("debian") else { return };
    let Some(debian_arm64) = base("debian-arm64") else {
        return;
    };
    if std::env::consts::ARCH != "x86_64" {
        support::not_applicable("this test expects an x86-64 host (its other platform is arm64)");
        return;
    }
    let Some(reg) = Registry::start() else { return };
    require!(support::have("skopeo"), "skopeo is not installed");
    for who in support::runners() {
        let s = Scratch::new("multi", who);
        s.strata_ok(&["load", "-i", debian.to_str().unwrap()]);
        s.strata_ok(&["load", "-i", debian_arm64.to_str().unwrap()]);
        s.strata_ok(&["tag", "debian:latest", "debian-amd64:latest"]);
        let ctx = s.dir.join("ctx");
        s.write(
            "ctx/Dockerfile",
            "FROM debian-${TARGETARCH}:latest\nARG TARGETARCH\nCOPY note /note\n",
        );
        s.write("ctx/note", "two platforms\n");
        let built = s.strata(&[
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "--sbom=true",
            "--provenance=mode=max",
            "-t",
            "multi:1",
            ctx.to_str().unwrap(),
        ]);
        let said = support::text(&built.stderr);
        assert!(built.status.success(), "{said}");
        assert!(said.contains("attestations: linux/amd64: sbom ("), "{said}");
        let root = s.root();
        let e = entry(&root, "multi:1");
        let raw = String::from_utf8(blob(&root, e["digest"].as_str().unwrap())).unwrap();
        let (images, _) = two_platforms_attested(&raw);

        // Each platform's SBOM lists its own packages, about its own image.
        for (arch, image) in [("amd64", &images[0]), ("arm64", &images[1])] {
            let platform = format!("linux/{arch}");
            let doc = json(&s.strata_ok(&["sbom", "--platform", &platform, "multi:1"]));
            assert_eq!(doc["packages"][0]["versionInfo"], image.as_str());
            let arches = deb_arches(&doc);
            assert!(arches.contains(arch), "{platform}: {arches:?}");
            let other = if arch == "amd64" { "arm64" } else { "amd64" };
            assert!(!arches.contains(other), "{platform}: {arches:?}");
            let prov = json(&s.strata_ok(&["provenance", "--platform", &platform, "multi:1"]));
            assert_eq!(
                prov["subject"][0]["digest"]["sha256"],
                image.strip_prefix("sha256:").unwrap()
            );
            let p = &prov["predicate"];
            assert_eq!(p["invocation"]["environment"]["platform"], platform);
            assert_eq!(
                p["invocation"]["parameters"]["args"]["platform"],
                "linux/amd64,linux/arm64"
            );
            assert!(p["buildConfig"]["dockerfile"]["data"]
                .as_str()
                .unwrap()
                .contains("COPY note /note"));
        }
        // The image of either platform still runs by the tag (arm64's needs emulation: not
        // run here).
        assert_eq!(
            s.strata_ok(&["run", "multi:1", "cat", "/note"]).trim(),
            "two platforms"
        );

        // --output type=oci: the layout holds the index with all four manifests.
        let layout = s.dir.join("layout");
        s.strata_ok(&[
            "build",
            "-q",
            "--platform",
            "linux/amd64,linux/arm64",
            "--sbom=true",
            "--provenance=mode=max",
            "--output",
            &format!("type=oci,dest={},tar=false", layout.display()),
            "-t",
            "multi:2",
            ctx.to_str().unwrap(),
        ]);
        let raw = ok(
            None,
            "skopeo",
            &["inspect", "--raw", &format!("oci:{}:2", layout.display())],
        );
        let (_, ams) = two_platforms_attested(&raw);
        let copied = s.dir.join("copied");
        ok(
            None,
            "skopeo",
            &[
                "copy",
                "-q",
                "--all",
                &format!("oci:{}:2", layout.display()),
                &format!("oci:{}:2", copied.display()),
            ],
        );
        assert!(copied
            .join("blobs/sha256")
            .join(ams[1].strip_prefix("sha256:").unwrap())
            .exists());

        // --push: the registry has the index with the attestations, about the manifests it
        // has; skopeo copies it whole; a pull of arm64 prints the very SBOM pushed.
        let user = who.unwrap_or("self");
        let name = format!("127.0.0.1:{}/multi-{user}:1", reg.port);
        s.strata_ok(&[
            "build",
            "-q",
            "--platform",
            "linux/amd64,linux/arm64",
            "--sbom=true",
            "--provenance=mode=max",
            "-t",
            &name,
            "--push",
            ctx.to_str().unwrap(),
        ]);
        let inspect = |r: &str| {
            ok(
                None,
                "skopeo",
                &[
                    "inspect",
                    "--tls-verify=false",
                    "--raw",
                    &format!("docker://{r}"),
                ],
            )
        };
        let raw = inspect(&name);
        let (pushed, ams) = two_platforms_attested(&raw);
        let repo = format!("127.0.0.1:{}/multi-{user}", reg.port);
        let mut statements = Vec::new();
        for am in &ams {
            let am = json(&inspect(&format!("{repo}@{am}")));
            let layers = am["layers"].as_array().unwrap();
            assert_eq!(layers.len(), 2, "{am}");
            statements.push(layers[0]["digest"].as_str().unwrap().to_string());
        }
        let copy = format!("127.0.0.1:{}/multi-copy-{user}:1", reg.port);
        ok(
            None,
            "skopeo",
            &[
                "copy",
                "-q",
                "--all",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                &format!("docker://{name}"),
                &format!("docker://{copy}"),
            ],
        );
        assert_eq!(json(&inspect(&copy)), json(&raw));
        // Pulled into another store, one per platform: each SBOM printed is the one pushed,
        // and each statement names the manifest the registry has.
        for (i, arch) in ["amd64", "arm64"].into_iter().enumerate() {
            let p = Scratch::new(&format!("multi-pulled-{arch}"), who);
            let platform = format!("linux/{arch}");
            p.strata_ok(&["pull", "--platform", &platform, &copy]);
            let sbom = json(&p.strata_ok(&["sbom", "--platform", &platform, &copy]));
            let digest = pushed[i].strip_prefix("sha256:").unwrap();
            assert_eq!(sbom["packages"][0]["versionInfo"], pushed[i].as_str());
            assert!(deb_arches(&sbom).contains(arch), "{platform}");
            let statement: Value =
                serde_json::from_slice(&blob(&p.root(), &statements[i])).unwrap();
            assert_eq!(statement["predicate"], sbom);
            assert_eq!(statement["subject"][0]["digest"]["sha256"], digest);
            let prov = json(&p.strata_ok(&["provenance", "--platform", &platform, &copy]));
            assert_eq!(prov["subject"][0]["digest"]["sha256"], digest);
            assert_eq!(
                prov["predicate"]["invocation"]["environment"]["platform"],
                platform
            );
        }
    }
}

/// The SPDX package named `name`, if the document lists it.
fn spdx_package<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
}

#[test]
fn scan_stage_adds_the_builder_stages_packages() {
    let Some(debian) = base("debian") else { return };
    for who in support::runners() {
        let s = Scratch::new("stages", who);
        s.strata_ok(&["load", "-i", debian.to_str().unwrap()]);
        // The builder installs a Python distribution the final image does not get.
        let install = "RUN mkdir -p /usr/lib/python3/dist-packages/toolz-0.12.1.dist-info && printf 'Metadata-Version: 2.1\\nName: toolz\\nVersion: 0.12.1\\n' > /usr/lib/python3/dist-packages/toolz-0.12.1.dist-info/METADATA && echo built > /out\n";
        let final_stage = "FROM debian:latest\nCOPY --from=builder /out /out\n";
        s.write(
            "plain/Dockerfile",
            &format!("FROM debian:latest AS builder\n{install}{final_stage}"),
        );
        s.write(
            "arg/Dockerfile",
            &format!(
                "FROM debian:latest AS builder\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n{install}{final_stage}"
            ),
        );
        let sbom_of = |ctx: &str, flags: &[&str], tag: &str| -> Value {
            let ctx = s.dir.join(ctx);
            let mut args = vec!["build", "-q"];
            args.extend_from_slice(flags);
            args.extend_from_slice(&["-t", tag, ctx.to_str().unwrap()]);
            s.strata_ok(&args);
            json(&s.strata_ok(&["sbom", tag]))
        };
        // Without scan-stage: the final image's packages only.
        let doc = sbom_of("plain", &["--sbom=true"], "st:1");
        assert!(spdx_package(&doc, "toolz").is_none(), "{doc}");
        // With it: the builder's package, named with its stage and instruction, as a build
        // dependency of the image (not contained in it).
        let doc = sbom_of("plain", &["--sbom=scan-stage=true"], "st:2");
        let toolz = spdx_package(&doc, "toolz").unwrap_or_else(|| panic!("{doc}"));
        assert_eq!(toolz["versionInfo"], "0.12.1");
        let note = json(toolz["annotations"][0]["comment"].as_str().unwrap());
        assert_eq!(note["stage"], "builder");
        assert!(
            note["created_by"]
                .as_str()
                .unwrap()
                .contains("toolz-0.12.1.dist-info"),
            "{note}"
        );
        let id = toolz["SPDXID"].as_str().unwrap();
        assert!(doc["relationships"].as_array().unwrap().iter().any(|r| {
            r["spdxElementId"] == id
                && r["relationshipType"] == "BUILD_DEPENDENCY_OF"
                && r["relatedSpdxElement"] == "SPDXRef-Image"
        }));
        let f = s.dir.join("stages.spdx.json");
        fs_err::write(&f, serde_json::to_vec(&doc).unwrap()).unwrap();
        check_spdx(&f);
        // A stage named in the value is scanned; another name is not.
        let doc = sbom_of("plain", &["--sbom=scan-stage=builder"], "st:3");
        assert!(spdx_package(&doc, "toolz").is_some(), "{doc}");
        let doc = sbom_of("plain", &["--sbom=scan-stage=other"], "st:4");
        assert!(spdx_package(&doc, "toolz").is_none(), "{doc}");
        // BuildKit's build argument, and the stage's own ARG (which a build argument
        // overrides).
        let doc = sbom_of(
            "plain",
            &["--sbom", "--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=true"],
            "st:5",
        );
        assert!(spdx_package(&doc, "toolz").is_some(), "{doc}");
        let doc = sbom_of("arg", &["--sbom"], "st:6");
        assert!(spdx_package(&doc, "toolz").is_some(), "{doc}");
        let doc = sbom_of(
            "arg",
            &["--sbom", "--build-arg", "BUILDKIT_SBOM_SCAN_STAGE=false"],
            "st:7",
        );
        assert!(spdx_package(&doc, "toolz").is_none(), "{doc}");
        // The image itself is unchanged: the builder's files are not in it.
        let o = s.strata(&[
            "run",
            "st:2",
            "test",
            "-e",
            "/usr/lib/python3/dist-packages/toolz-0.12.1.dist-info",
        ]);
        assert!(!o.status.success());
    }
}
