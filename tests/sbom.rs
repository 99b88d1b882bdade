//! SBOMs from real layers, checked against the package managers' own answers: the Debian
//! python base image's dpkg packages against `dpkg-query -W`, a pip venv against `pip list`
//! and cyclonedx-bom's `cyclonedx-py environment`, a uv `--target` directory against
//! `pip list --path`, a node_modules tree against `npm ls`, Go binaries (one built here,
//! Debian's docker-registry and skopeo) against `go version -m`; the documents against
//! spdx-tools (`pyspdxtools -i`) and CycloneDX's JSON schema.
//!
//! The inputs come from the registries through their own clients (scripts/sbom-fixtures.sh,
//! run by scripts/test-deps.sh, into target/sbom-fixtures) and from the python base image of
//! target/test-images. Without them a test says SKIPPED; with STRATA_REQUIRE_TOOLS=1 (CI) it
//! fails.

#[macro_use]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata::layer;
use strata::oci::Digest;
use strata::sbom::{self, Ecosystem, ImageInfo, Inventory, LayerPackages, LayerRef};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> Option<PathBuf> {
    let d = repo().join("target/sbom-fixtures");
    if d.join(".stamp").exists() {
        Some(d)
    } else {
        support::skip(&format!(
            "{} is missing: scripts/sbom-fixtures.sh (run by scripts/test-deps.sh) makes it",
            d.display()
        ));
        None
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strata-sbom-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    fs_err::create_dir_all(&d).unwrap();
    support::removed_at_the_end(&d);
    d
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A layer blob of an OCI layout: its file, diffID and the history entry that made it.
struct Blob {
    path: PathBuf,
    diff_id: Digest,
    created_by: String,
}

/// The layers of the image `name` of target/test-images (made by scripts/test-deps.sh).
fn test_image(name: &str) -> Option<Vec<Blob>> {
    let layout = repo().join("target/test-images/oci").join(name);
    if !layout.join("index.json").exists() {
        support::skip(&format!(
            "{} is missing: scripts/test-deps.sh makes it with ../shared/lab/make-base-images.sh",
            layout.display()
        ));
        return None;
    }
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs_err::read(p).unwrap()).unwrap()
    };
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = json(&blob(manifest["config"]["digest"].as_str().unwrap()));
    let history: Vec<String> = config["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["empty_layer"] != serde_json::json!(true))
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    Some(
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, l)| Blob {
                path: blob(l["digest"].as_str().unwrap()),
                diff_id: diff_ids[i].as_str().unwrap().parse().unwrap(),
                created_by: history.get(i).cloned().unwrap_or_default(),
            })
            .collect(),
    )
}

fn scan_blob(b: &Blob) -> LayerPackages {
    let tar = layer::decompress(fs_err::File::open(&b.path).unwrap()).unwrap();
    sbom::scan_layer(tar).unwrap()
}

/// The layer tar of the tree below `root`, and what it holds.
fn scan_dir(root: &Path) -> (Digest, LayerPackages) {
    let tar = layer::write_tree(root, Vec::new(), &layer::WriteOptions::default()).unwrap();
    (Digest::of(&tar), sbom::scan_layer(&tar[..]).unwrap())
}

fn layer_ref(diff_id: &Digest, created_by: &str) -> LayerRef {
    LayerRef {
        diff_id: diff_id.clone(),
        digest: None,
        created_by: created_by.to_string(),
    }
}

/// The bytes of the file at `want` (relative) in the layer blob `b`.
fn file_in_layer(b: &Blob, want: &str) -> Option<Vec<u8>> {
    let tar = layer::decompress(fs_err::File::open(&b.path).unwrap()).unwrap();
    let mut a = tar::Archive::new(tar);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if layer::rel_path(&e.path().unwrap().to_string_lossy()) == want {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return Some(v);
        }
    }
    None
}

/// (name, version, arch) of what `dpkg-query -W` lists as installed from the status file
/// `status`.
fn dpkg_query(status: &[u8], dir: &Path) -> BTreeSet<(String, String, String)> {
    fs_err::create_dir_all(dir).unwrap();
    fs_err::write(dir.join("status"), status).unwrap();
    let out = run(Command::new("dpkg-query")
        .arg(format!("--admindir={}", dir.display()))
        .args([
            "-W",
            "-f",
            "${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Status}\\n",
        ]));
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4 && !matches!(f[3], "not-installed" | "config-files"))
                .then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

fn debs(inv: &Inventory) -> BTreeSet<(String, String, String)> {
    inv.packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Deb)
        .map(|p| {
            (
                p.name.clone(),
                p.version.clone().unwrap(),
                p.arch.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn debian_packages_are_what_dpkg_query_lists() {
    if Command::new("dpkg-query")
        .arg("--version")
        .output()
        .is_err()
    {
        support::skip("dpkg-query is not installed");
        return;
    }
    let python = require!(test_image("python"));
    let t = tmpdir("dpkg");
    let top = python.last().unwrap();
    let layers: Vec<LayerPackages> = python.iter().map(scan_blob).collect();
    let refs: Vec<(LayerRef, &LayerPackages)> = python
        .iter()
        .zip(&layers)
        .map(|(b, l)| (layer_ref(&b.diff_id, &b.created_by), l))
        .collect();
    let inv = sbom::merge(&refs);
    let status = file_in_layer(top, "var/lib/dpkg/status").unwrap();
    let want = dpkg_query(&status, &t.join("admin"));
    assert!(want.len() > 100, "{} packages", want.len());
    assert_eq!(debs(&inv), want);
    let distro = inv.distro.as_ref().unwrap();
    assert_eq!(distro.id.as_deref(), Some("debian"));
    for p in inv
        .packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Deb)
    {
        assert!(
            p.purl.starts_with("pkg:deb/debian/") && p.purl.contains("distro=debian-12"),
            "{}",
            p.purl
        );
        assert_eq!(p.location, "/var/lib/dpkg/status");
    }
    // A license exactly for the packages whose copyright file is machine-readable (DEP-5).
    let mut dep5 = BTreeSet::new();
    let tar = layer::decompress(fs_err::File::open(&top.path).unwrap()).unwrap();
    for e in tar::Archive::new(tar).entries().unwrap() {
        let mut e = e.unwrap();
        let path = layer::rel_path(&e.path().unwrap().to_string_lossy()).to_string();
        let Some(name) = path
            .strip_prefix("usr/share/doc/")
            .and_then(|r| r.strip_suffix("/copyright"))
            .map(str::to_string)
        else {
            continue;
        };
        if !e.header().entry_type().is_file() {
            continue;
        }
        let mut text = String::new();
        let _ = e.read_to_string(&mut text);
        if text.trim_start().starts_with("Format:") && text.contains("copyright-format/1.0") {
            dep5.insert(name);
        }
    }
    let licensed: BTreeSet<String> = inv
        .packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Deb && p.license.is_some())
        .map(|p| p.name.clone())
        .collect();
    let installed: BTreeSet<String> = want.iter().map(|w| w.0.clone()).collect();
    let dep5: BTreeSet<String> = dep5.intersection(&installed).cloned().collect();
    assert!(!dep5.is_empty());
    assert_eq!(licensed, dep5);
    // Names percent-encoded as packageurl-python spells them.
    let cxx = inv
        .packages
        .iter()
        .find(|p| p.name == "libstdc++6")
        .unwrap();
    assert!(
        cxx.purl.starts_with("pkg:deb/debian/libstdc%2B%2B6@"),
        "{}",
        cxx.purl
    );
    eprintln!(
        "dpkg: {} packages, {} with a DEP-5 license",
        want.len(),
        licensed.len()
    );
}

#[test]
fn each_debian_package_names_the_layer_that_installed_it() {
    if Command::new("dpkg-query")
        .arg("--version")
        .output()
        .is_err()
    {
        support::skip("dpkg-query is not installed");
        return;
    }
    let (Some(debian), Some(python)) = (test_image("debian"), test_image("python")) else {
        return;
    };
    let t = tmpdir("layers");
    // The debian rootfs, then the python one made from it by apt-get install python3 (its
    // status rewritten with every package): a real two-step apt history.
    let (base, apt) = (&debian[0], &python[0]);
    let base_status = file_in_layer(base, "var/lib/dpkg/status").unwrap();
    let apt_status = file_in_layer(apt, "var/lib/dpkg/status").unwrap();
    let before = dpkg_query(&base_status, &t.join("a"));
    let after = dpkg_query(&apt_status, &t.join("b"));
    // A third layer: `apt-get purge python3-pip`, as dpkg would leave its status (the stanza
    // gone) and the package's files whited out.
    let purged: String = String::from_utf8(apt_status.clone())
        .unwrap()
        .split("\n\n")
        .filter(|s| !s.starts_with("Package: python3-pip\n"))
        .collect::<Vec<_>>()
        .join("\n\n");
    assert!(
        purged.len() < apt_status.len(),
        "python3-pip is in the status"
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(purged.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "var/lib/dpkg/status", purged.as_bytes())
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    b.append_data(&mut h, "usr/share/doc/.wh.python3-pip", &[][..])
        .unwrap();
    let purge_tar = b.into_inner().unwrap();
    let purge = sbom::scan_layer(&purge_tar[..]).unwrap();
    assert_eq!(purge.deleted, vec!["usr/share/doc/python3-pip"]);
    let (l0, l1) = (scan_blob(base), scan_blob(apt));
    let refs = [
        layer_ref(&base.diff_id, "debootstrap"),
        layer_ref(
            &apt.diff_id,
            "RUN apt-get install python3 python3-venv python3-pip",
        ),
        layer_ref(&Digest::of(&purge_tar), "RUN apt-get purge python3-pip"),
    ];
    let inv = sbom::merge(&[
        (refs[0].clone(), &l0),
        (refs[1].clone(), &l1),
        (refs[2].clone(), &purge),
    ]);
    let mut from_base = 0;
    let mut from_apt = 0;
    for p in inv
        .packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Deb)
    {
        let key = (
            p.name.clone(),
            p.version.clone().unwrap(),
            p.arch.clone().unwrap_or_default(),
        );
        assert!(after.contains(&key), "{key:?} is not installed");
        let want = if before.contains(&key) {
            from_base += 1;
            &refs[0]
        } else {
            from_apt += 1;
            &refs[1]
        };
        assert_eq!(&p.layer, want, "{key:?}");
    }
    let names: BTreeSet<&str> = inv.packages.iter().map(|p| p.name.as_str()).collect();
    assert!(!names.contains("python3-pip"), "purged by the top layer");
    assert_eq!(debs(&inv).len(), after.len() - 1);
    assert!(from_base > 50 && from_apt > 10, "{from_base} {from_apt}");
}

/// Name as pip compares them (PEP 503).
fn canonical(name: &str) -> String {
    let mut out = String::new();
    for c in name.to_ascii_lowercase().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The (canonical name, version) of the Python packages found directly in `site`.
fn dists_in(inv: &Inventory, site: &str) -> BTreeSet<(String, String)> {
    inv.packages
        .iter()
        .filter(|p| p.ecosystem == Ecosystem::Python)
        .filter(|p| Path::new(&p.location).parent() == Some(Path::new(site)))
        .map(|p| (canonical(&p.name), p.version.clone().unwrap()))
        .collect()
}

fn pip_list(python: &Path, extra: &[&str]) -> BTreeSet<(String, String)> {
    let out = run(Command::new(python)
        .args(["-m", "pip", "list", "--format", "json"])
        .args(extra)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                canonical(p["name"].as_str().unwrap()),
                p["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_venv_is_what_pip_list_and_cyclonedx_py_report() {
    let fx = require!(fixtures());
    let root = fx.join("pip-root");
    let (diff_id, l) = scan_dir(&root);
    let inv = sbom::merge(&[(layer_ref(&diff_id, "RUN pip install"), &l)]);
    let site = "/opt/venv/lib/python3.11/site-packages";
    let mine = dists_in(&inv, site);
    let venv_python = root.join("opt/venv/bin/python");
    let pip = pip_list(&venv_python, &[]);
    assert!(pip.len() >= 5, "{pip:?}");
    assert_eq!(mine, pip);
    // cyclonedx-bom's own scan of the same venv.
    let out = run(Command::new(fx.join("tools/bin/cyclonedx-py"))
        .args(["environment", "--of", "JSON", "-o", "-"])
        .arg(&venv_python));
    let bom: serde_json::Value = serde_json::from_str(&out).unwrap();
    let theirs: BTreeSet<(String, String)> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                canonical(c["name"].as_str().unwrap()),
                c["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(mine, theirs);
    let six = inv.packages.iter().find(|p| p.name == "six").unwrap();
    assert_eq!(six.installer.as_deref(), Some("pip"));
    assert_eq!(six.license.as_ref().unwrap().expression, "MIT");
    assert_eq!(six.purl, "pkg:pypi/six@1.17.0");
    assert_eq!(six.location, format!("{site}/six-1.17.0.dist-info"));
    // RECORD: as many files as it lists, and its digest.
    let record = fs_err::read(
        root.join("opt/venv/lib/python3.11/site-packages/six-1.17.0.dist-info/RECORD"),
    )
    .unwrap();
    let r = six.record.as_ref().unwrap();
    assert_eq!(r.digest, Digest::of(&record));
    assert_eq!(
        r.files as usize,
        record
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    );
    let ms = inv
        .packages
        .iter()
        .find(|p| p.name == "MarkupSafe")
        .unwrap();
    assert_eq!(ms.purl, "pkg:pypi/markupsafe@3.0.2");
    // With the file lists: every RECORD entry, from the root.
    let tar = layer::write_tree(&root, Vec::new(), &layer::WriteOptions::default()).unwrap();
    let full = sbom::scan_layer_with(&tar[..], sbom::ScanOptions { files: true }).unwrap();
    let six_files = &full.python[&format!("{}/six-1.17.0.dist-info", &site[1..])].files;
    assert!(six_files
        .iter()
        .any(|f| f.path == "opt/venv/lib/python3.11/site-packages/six.py"
            && f.hash.as_deref().is_some_and(|h| h.starts_with("sha256="))));
}

#[test]
fn a_uv_target_directory_is_what_pip_list_reports() {
    let fx = require!(fixtures());
    let root = fx.join("uv-root");
    let (diff_id, l) = scan_dir(&root);
    let inv = sbom::merge(&[(layer_ref(&diff_id, "RUN uv pip install --target"), &l)]);
    let mine = dists_in(&inv, "/srv/deps");
    let theirs = pip_list(
        &fx.join("tools/bin/python"),
        &["--path", &root.join("srv/deps").display().to_string()],
    );
    assert_eq!(mine, theirs);
    assert_eq!(mine.len(), 2);
    for p in &inv.packages {
        assert_eq!(p.installer.as_deref(), Some("uv"), "{}", p.name);
    }
    // attrs 25 declares PEP 639's License-Expression.
    let attrs = inv.packages.iter().find(|p| p.name == "attrs").unwrap();
    assert_eq!(attrs.license.as_ref().unwrap().expression, "MIT");
}

/// (name, version, path) of every package `npm ls --all --long --json` lists.
fn npm_ls(v: &serde_json::Value, out: &mut BTreeSet<(String, String, String)>) {
    if let Some(deps) = v["dependencies"].as_object() {
        for (name, d) in deps {
            out.insert((
                name.clone(),
                d["version"].as_str().unwrap().to_string(),
                d["path"].as_str().unwrap().to_string(),
            ));
            npm_ls(d, out);
        }
    }
}

#[test]
fn node_modules_is_what_npm_ls_reports() {
    let fx = require!(fixtures());
    if Command::new("npm").arg("--version").output().is_err() {
        support::skip("npm is not installed");
        return;
    }
    let root = fx.join("npm-root");
    let (diff_id, l) = scan_dir(&root);
    let inv = sbom::merge(&[(layer_ref(&diff_id, "RUN npm install"), &l)]);
    let mine: BTreeSet<(String, String, String)> = inv
        .packages
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.version.clone().unwrap(),
                format!(
                    "{}{}",
                    root.display(),
                    p.location.trim_end_matches("/package.json")
                ),
            )
        })
        .collect();
    let out = run(Command::new("npm")
        .args(["ls", "--all", "--long", "--json"])
        .current_dir(root.join("app"))
        .env("npm_config_cache", tmpdir("npm").join("cache")));
    let mut theirs = BTreeSet::new();
    npm_ls(&serde_json::from_str(&out).unwrap(), &mut theirs);
    assert_eq!(mine, theirs);
    assert_eq!(mine.len(), 4, "debug, its own ms, ms and a scoped package");
    let scoped = inv
        .packages
        .iter()
        .find(|p| p.name == "@sindresorhus/is")
        .unwrap();
    assert_eq!(scoped.purl, "pkg:npm/%40sindresorhus/is@4.6.0");
    assert_eq!(scoped.license.as_ref().unwrap().expression, "MIT");
}

/// A layer holding the file `src` at `at`.
fn layer_with_file(src: &Path, at: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_path_with_name(src, at).unwrap();
    b.into_inner().unwrap()
}

/// The lines of `go version -m` as strata's scan gives them.
fn go_lines(b: &sbom::GoBinary) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = &b.path {
        out.push(format!("path\t{p}"));
    }
    let module = |word: &str, m: &sbom::GoModule, out: &mut Vec<String>| {
        let mut l = format!("{word}\t{}\t{}", m.path, m.version);
        if let Some(s) = &m.sum {
            l.push('\t');
            l.push_str(s);
        }
        out.push(l);
    };
    let mods = b
        .main
        .iter()
        .map(|m| ("mod", m))
        .chain(b.deps.iter().map(|d| ("dep", d)));
    for (word, m) in mods {
        module(word, m, &mut out);
        if let Some(r) = &m.replace {
            module("=>", r, &mut out);
        }
    }
    for (k, v) in &b.settings {
        out.push(format!("build\t{k}={v}"));
    }
    out
}

#[test]
fn go_build_info_is_what_go_version_m_prints() {
    if Command::new("go").arg("version").output().is_err() {
        support::skip("go (Debian's golang-go) is not installed");
        return;
    }
    let fx = require!(fixtures());
    let mut binaries = vec![fx.join("go-root/usr/local/bin/hello")];
    // Debian's Go programs, linked by gcc (the build info lies deep in the data segment).
    for p in ["/usr/bin/docker-registry", "/usr/bin/skopeo"] {
        if Path::new(p).exists() {
            binaries.push(PathBuf::from(p));
        }
    }
    assert!(binaries[0].exists(), "the Go fixture was not built");
    for bin in &binaries {
        let tar = layer_with_file(bin, "usr/bin/prog");
        let l = sbom::scan_layer(&tar[..]).unwrap();
        let b =
            l.go.get("usr/bin/prog")
                .unwrap_or_else(|| panic!("{}: no Go build info found", bin.display()));
        let out = run(Command::new("go").args(["version", "-m"]).arg(bin));
        let mut lines = out.lines();
        let first = lines.next().unwrap();
        assert_eq!(first, format!("{}: {}", bin.display(), b.go_version));
        let theirs: Vec<String> = lines
            .map(|l| {
                l.trim_start_matches('\t')
                    .trim_end_matches('\t')
                    .to_string()
            })
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(go_lines(b), theirs, "{}", bin.display());
    }
    // The packages of the fixture: the main module (devel: no version), the dependency under
    // its own name (it was replaced by a directory) and the standard library.
    let tar = layer_with_file(&binaries[0], "usr/local/bin/hello");
    let l = sbom::scan_layer(&tar[..]).unwrap();
    let inv = sbom::merge(&[(layer_ref(&Digest::of(&tar), "COPY --from=build"), &l)]);
    let got: Vec<(&str, Option<&str>, &str)> = inv
        .packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_deref(), p.purl.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "example.com/greet",
                Some("v1.2.3"),
                "pkg:golang/example.com/greet@v1.2.3"
            ),
            ("example.com/hello", None, "pkg:golang/example.com/hello"),
            ("stdlib", Some("1.19.8"), "pkg:golang/stdlib@1.19.8"),
        ]
    );
}

/// An image of real layers: the python base, a venv, a uv target, node_modules, a Go binary.
fn sample_image(fx: &Path) -> Option<(Vec<LayerRef>, Vec<LayerPackages>)> {
    let base = test_image("python")?;
    let mut refs = Vec::new();
    let mut layers = Vec::new();
    for b in &base {
        refs.push(layer_ref(&b.diff_id, &b.created_by));
        layers.push(scan_blob(b));
    }
    for (dir, step) in [
        (
            "pip-root",
            "RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install six idna markupsafe",
        ),
        (
            "uv-root",
            "RUN uv pip install --target /srv/deps attrs packaging",
        ),
        ("npm-root", "RUN npm install debug ms @sindresorhus/is"),
        (
            "go-root",
            "COPY --from=build /out/hello /usr/local/bin/hello",
        ),
    ] {
        let (d, l) = scan_dir(&fx.join(dir));
        refs.push(layer_ref(&d, step));
        layers.push(l);
    }
    Some((refs, layers))
}

#[test]
fn documents_validate_with_spdx_tools_and_the_cyclonedx_schema() {
    let fx = require!(fixtures());
    let Some((refs, layers)) = sample_image(&fx) else {
        return;
    };
    let t = tmpdir("docs");
    let stack: Vec<(LayerRef, &LayerPackages)> = refs.iter().cloned().zip(layers.iter()).collect();
    let inv = sbom::merge(&stack);
    let eco: BTreeMap<Ecosystem, usize> = inv.packages.iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(p.ecosystem).or_default() += 1;
        m
    });
    assert_eq!(eco.len(), 4, "deb, python, npm and go packages: {eco:?}");
    let image = ImageInfo {
        name: "example/app:latest".into(),
        digest: Digest::of(b"manifest"),
        created: 1_700_000_000,
    };
    let spdx = sbom::spdx::to_bytes(&inv, &image);
    let cdx = sbom::cyclonedx::to_bytes(&inv, &image);
    // Deterministic; the creation time is the one given.
    assert_eq!(spdx, sbom::spdx::to_bytes(&inv, &image));
    assert_eq!(cdx, sbom::cyclonedx::to_bytes(&inv, &image));
    let text = String::from_utf8(spdx.clone()).unwrap();
    assert!(text.contains("\"created\":\"2023-11-14T22:13:20Z\""));
    fs_err::write(t.join("sbom.spdx.json"), &spdx).unwrap();
    fs_err::write(t.join("sbom.cdx.json"), &cdx).unwrap();
    let o = Command::new(fx.join("tools/bin/pyspdxtools"))
        .arg("-i")
        .arg(t.join("sbom.spdx.json"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && !said.to_lowercase().contains("invalid"),
        "pyspdxtools: {said}"
    );
    // CycloneDX's own schemas (shipped in cyclonedx-python-lib) and its strict validator.
    let check = "import sys\nfrom cyclonedx.schema import SchemaVersion\nfrom cyclonedx.validation.json import JsonStrictValidator\nerr = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nif err:\n    print(err); sys.exit(1)\nprint('valid')\n";
    let out = run(Command::new(fx.join("tools/bin/python"))
        .args(["-c", check])
        .arg(t.join("sbom.cdx.json")));
    assert_eq!(out.trim(), "valid");
    // Every package names its layer and instruction in both documents.
    let doc: serde_json::Value = serde_json::from_slice(&cdx).unwrap();
    let comps = doc["components"].as_array().unwrap();
    assert_eq!(
        comps.len(),
        inv.packages.len() + 1,
        "the packages and the OS"
    );
    let six = comps.iter().find(|c| c["name"] == "six").unwrap();
    let prop = |c: &serde_json::Value, n: &str| {
        c["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .map(|p| p["value"].as_str().unwrap().to_string())
    };
    assert_eq!(
        prop(six, "strata:layer:diff_id"),
        Some(refs[1].diff_id.to_string())
    );
    assert_eq!(
        prop(six, "strata:layer:created_by"),
        Some(refs[1].created_by.clone())
    );
    let doc: serde_json::Value = serde_json::from_slice(&spdx).unwrap();
    let pkg = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hello" || p["name"] == "example.com/hello")
        .unwrap();
    let note: serde_json::Value =
        serde_json::from_str(pkg["annotations"][0]["comment"].as_str().unwrap()).unwrap();
    assert_eq!(note["layer"], refs[4].diff_id.to_string());
    assert_eq!(note["location"], "/usr/local/bin/hello");
}
