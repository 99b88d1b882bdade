//! The image's packages from its layers' evidence: the layers stacked as overlayfs stacks them
//! (a whiteout hides a path and what is below it, an opaque directory what is below it in the
//! layers under it), then each package named with the layer that added it.

use std::collections::BTreeMap;

use super::{
    license, purl, ApkPackage, DebPackage, Ecosystem, GoBinary, Inventory, LayerPackages, LayerRef,
    NpmPackage, OsRelease, OsReleaseEntry, Package, PythonDist,
};

/// The evidence visible through a stack of layers, by path.
#[derive(Default)]
struct Stack<'a> {
    dpkg: BTreeMap<&'a str, &'a Vec<DebPackage>>,
    copyright: BTreeMap<&'a str, &'a Vec<String>>,
    dpkg_files: BTreeMap<&'a str, &'a Vec<String>>,
    apk: BTreeMap<&'a str, &'a Vec<ApkPackage>>,
    python: BTreeMap<&'a str, &'a PythonDist>,
    npm: BTreeMap<&'a str, &'a NpmPackage>,
    go: BTreeMap<&'a str, &'a GoBinary>,
    os_release: BTreeMap<&'a str, &'a OsReleaseEntry>,
}

/// Remove from `m` the paths below `dir`, and `dir` itself when `and_dir`.
fn hide<T>(m: &mut BTreeMap<&str, T>, dir: &str, and_dir: bool) {
    if dir.is_empty() {
        // The root: everything is below it.
        m.clear();
        return;
    }
    let prefix = format!("{dir}/");
    let gone: Vec<&str> = m
        .range::<str, _>((std::ops::Bound::Included(dir), std::ops::Bound::Unbounded))
        .take_while(|(k, _)| **k == dir || k.starts_with(&prefix))
        .map(|(k, _)| *k)
        .filter(|k| and_dir || *k != dir)
        .collect();
    for k in gone {
        m.remove(k);
    }
}

impl<'a> Stack<'a> {
    fn hide(&mut self, path: &str, and_dir: bool) {
        hide(&mut self.dpkg, path, and_dir);
        hide(&mut self.copyright, path, and_dir);
        hide(&mut self.dpkg_files, path, and_dir);
        hide(&mut self.apk, path, and_dir);
        hide(&mut self.python, path, and_dir);
        hide(&mut self.npm, path, and_dir);
        hide(&mut self.go, path, and_dir);
        hide(&mut self.os_release, path, and_dir);
    }

    /// Put `layer` on top.
    fn push(&mut self, layer: &'a LayerPackages) {
        for d in &layer.opaque {
            self.hide(d, false);
        }
        for d in &layer.deleted {
            self.hide(d, true);
            // A distribution is gone with its metadata file.
            if let Some(dir) = d
                .strip_suffix("/METADATA")
                .or_else(|| d.strip_suffix("/PKG-INFO"))
            {
                self.python.remove(dir);
            }
        }
        fn put<'a, T>(to: &mut BTreeMap<&'a str, &'a T>, from: &'a BTreeMap<String, T>) {
            for (k, v) in from {
                to.insert(k.as_str(), v);
            }
        }
        put(&mut self.dpkg, &layer.dpkg);
        put(&mut self.copyright, &layer.copyright);
        put(&mut self.dpkg_files, &layer.dpkg_files);
        put(&mut self.apk, &layer.apk);
        put(&mut self.python, &layer.python);
        put(&mut self.npm, &layer.npm);
        put(&mut self.go, &layer.go);
        put(&mut self.os_release, &layer.os_release);
    }

    /// What each package is now: its identity and its version.
    fn versions(&self) -> BTreeMap<Key<'a>, String> {
        let mut out = BTreeMap::new();
        for (path, pkgs) in &self.dpkg {
            for p in pkgs.iter() {
                out.insert(
                    (Ecosystem::Deb, *path, p.name.as_str(), p.arch.as_str()),
                    p.version.clone(),
                );
            }
        }
        for (path, pkgs) in &self.apk {
            for p in pkgs.iter() {
                out.insert(
                    (Ecosystem::Apk, *path, p.name.as_str(), p.arch.as_str()),
                    p.version.clone(),
                );
            }
        }
        for (path, d) in &self.python {
            out.insert(
                (Ecosystem::Python, *path, d.name.as_str(), ""),
                d.version.clone(),
            );
        }
        for (path, p) in &self.npm {
            out.insert(
                (Ecosystem::Npm, *path, p.name.as_str(), ""),
                p.version.clone(),
            );
        }
        for (path, b) in &self.go {
            for m in go_modules(b) {
                out.insert((Ecosystem::Go, *path, m.0, ""), m.1);
            }
        }
        out
    }

    /// The distribution os-release names (`etc/os-release`, through its symlink, else
    /// `usr/lib/os-release`).
    fn distro(&self) -> Option<OsRelease> {
        let mut path = "etc/os-release".to_string();
        for _ in 0..4 {
            match self.os_release.get(path.as_str()) {
                Some(OsReleaseEntry::File(o)) => return Some(o.clone()),
                Some(OsReleaseEntry::Symlink(t)) => {
                    path = if t.starts_with('/') {
                        crate::layer::rel_path(t).to_string()
                    } else {
                        let mut parts: Vec<&str> = path.split('/').collect();
                        parts.pop();
                        for c in t.split('/') {
                            match c {
                                "" | "." => {}
                                ".." => {
                                    parts.pop();
                                }
                                c => parts.push(c),
                            }
                        }
                        parts.join("/")
                    };
                }
                None => break,
            }
        }
        match self.os_release.get("usr/lib/os-release") {
            Some(OsReleaseEntry::File(o)) => Some(o.clone()),
            _ => None,
        }
    }
}

/// A package's identity: ecosystem, evidence path, name (module path for Go), architecture.
type Key<'a> = (Ecosystem, &'a str, &'a str, &'a str);

/// The modules a Go binary lists (main, dependencies, the standard library), each with what
/// identifies its version: module path and version (with the replacement's, when there is one).
fn go_modules(b: &GoBinary) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    let ident = |m: &super::GoModule| match &m.replace {
        Some(r) => format!("{} => {} {}", m.version, r.path, r.version),
        None => m.version.clone(),
    };
    if let Some(m) = &b.main {
        // A main module built from a checkout is `(devel)` every time: its revision tells
        // builds apart.
        let rev: Vec<&str> = b
            .settings
            .iter()
            .filter(|(k, _)| k == "vcs.revision" || k == "vcs.modified")
            .map(|(_, v)| v.as_str())
            .collect();
        out.push((m.path.as_str(), format!("{} {}", ident(m), rev.join(" "))));
    }
    for d in &b.deps {
        out.push((d.path.as_str(), ident(d)));
    }
    out.push(("stdlib", b.go_version.clone()));
    out
}

/// The version Go's toolchain string names (`go1.19.8` → `1.19.8`), when it is a release.
fn stdlib_version(go: &str) -> Option<String> {
    let v = go.strip_prefix("go")?;
    let v = v.split_whitespace().next()?;
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')).then(|| v.to_string())
}

/// Distributions whose packages are Debian's.
fn deb_namespace(distro: Option<&OsRelease>) -> &str {
    match distro.and_then(|d| d.id.as_deref()) {
        Some(id @ ("debian" | "ubuntu" | "raspbian" | "linuxmint" | "kali" | "devuan")) => id,
        _ => "debian",
    }
}

fn apk_namespace(distro: Option<&OsRelease>) -> &str {
    match distro.and_then(|d| d.id.as_deref()) {
        Some(id @ ("alpine" | "wolfi" | "chainguard" | "postmarketos")) => id,
        _ => "alpine",
    }
}

/// What tells packages apart, in the order they are listed.
fn identity(p: &Package) -> (Ecosystem, &str, Option<&str>, &str, Option<&str>) {
    (
        p.ecosystem,
        &p.name,
        p.version.as_deref(),
        &p.location,
        p.arch.as_deref(),
    )
}

/// The image's packages from its layers, bottom first, each with the layer it names. A
/// package is named with the lowest layer from which it has been present, with the version it
/// has at the top, in every layer up to the top (a dpkg status rewritten by a later `apt-get`
/// keeps its packages' layers; an upgrade is the upgrading layer's).
pub fn merge(layers: &[(LayerRef, &LayerPackages)]) -> Inventory {
    let mut stack = Stack::default();
    let mut prev: BTreeMap<Key, String> = BTreeMap::new();
    let mut first: BTreeMap<Key, usize> = BTreeMap::new();
    for (i, (_, l)) in layers.iter().enumerate() {
        stack.push(l);
        let now = stack.versions();
        let mut next_first = BTreeMap::new();
        for (k, v) in &now {
            let since = match (prev.get(k), first.get(k)) {
                (Some(was), Some(f)) if was == v => *f,
                _ => i,
            };
            next_first.insert(*k, since);
        }
        prev = now;
        first = next_first;
    }
    let distro = stack.distro();
    let layer_of = |k: &Key| -> LayerRef {
        let i = first.get(k).copied().unwrap_or(0);
        layers[i].0.clone()
    };
    let mut packages = Vec::new();
    let deb_ns = deb_namespace(distro.as_ref());
    let apk_ns = apk_namespace(distro.as_ref());
    let distro_version = distro.as_ref().and_then(|d| d.version_id.as_deref());
    deb_packages(&stack, deb_ns, distro_version, &layer_of, &mut packages);
    for (path, pkgs) in &stack.apk {
        for p in pkgs.iter() {
            let key = (Ecosystem::Apk, *path, p.name.as_str(), p.arch.as_str());
            packages.push(Package {
                ecosystem: Ecosystem::Apk,
                name: p.name.clone(),
                version: Some(p.version.clone()),
                arch: Some(p.arch.clone()).filter(|a| !a.is_empty()),
                source: p.origin.clone().filter(|o| *o != p.name),
                license: p.license.as_deref().and_then(license::from_spdx),
                purl: purl::apk(apk_ns, &p.name, &p.version, &p.arch, distro_version),
                location: format!("/{path}"),
                layer: layer_of(&key),
                installer: None,
                stage: None,
                checksum: None,
                record: None,
                files: p.files.iter().map(|f| format!("/{f}")).collect(),
            });
        }
    }
    for (path, d) in &stack.python {
        let key = (Ecosystem::Python, *path, d.name.as_str(), "");
        packages.push(Package {
            ecosystem: Ecosystem::Python,
            name: d.name.clone(),
            version: Some(d.version.clone()),
            arch: None,
            source: None,
            license: license::from_python(
                d.license_expression.as_deref(),
                d.license.as_deref(),
                &d.license_classifiers,
            ),
            purl: purl::pypi(&d.name, &d.version),
            location: format!("/{path}"),
            layer: layer_of(&key),
            installer: d.installer.clone(),
            stage: None,
            checksum: None,
            record: d.record.clone(),
            files: d.files.iter().map(|f| format!("/{}", f.path)).collect(),
        });
    }
    for (path, p) in &stack.npm {
        let key = (Ecosystem::Npm, *path, p.name.as_str(), "");
        packages.push(Package {
            ecosystem: Ecosystem::Npm,
            name: p.name.clone(),
            version: Some(p.version.clone()),
            arch: None,
            source: None,
            license: license::from_npm(&p.licenses),
            purl: purl::npm(&p.name, &p.version),
            location: format!("/{path}"),
            layer: layer_of(&key),
            installer: None,
            stage: None,
            checksum: None,
            record: None,
            files: Vec::new(),
        });
    }
    go_packages(&stack, &layer_of, &mut packages);
    packages.sort_by(|a, b| identity(a).cmp(&identity(b)));
    // One package per identity (two dependencies of a Go binary replaced by the same module
    // are one module; documents need unique ids).
    packages.dedup_by(|a, b| identity(a) == identity(b));
    Inventory { distro, packages }
}

/// The dpkg packages of the stack, each with its files and its copyright's license.
fn deb_packages<'a>(
    stack: &Stack<'a>,
    deb_ns: &str,
    distro_version: Option<&str>,
    layer_of: &dyn Fn(&Key<'_>) -> LayerRef,
    packages: &mut Vec<Package>,
) {
    for (path, pkgs) in &stack.dpkg {
        for p in pkgs.iter() {
            let key = (Ecosystem::Deb, *path, p.name.as_str(), p.arch.as_str());
            let upstream = p.source.as_ref().map(|s| match &p.source_version {
                Some(v) => format!("{s}@{v}"),
                None => s.clone(),
            });
            let copyright = format!("usr/share/doc/{}/copyright", p.name);
            let list = [
                format!("var/lib/dpkg/info/{}:{}.list", p.name, p.arch),
                format!("var/lib/dpkg/info/{}.list", p.name),
            ];
            let files = list
                .iter()
                .find_map(|l| stack.dpkg_files.get(l.as_str()))
                .map(|f| {
                    f.iter()
                        .map(|p| format!("/{}", p.trim_start_matches('/')))
                        .collect()
                })
                .unwrap_or_default();
            packages.push(Package {
                ecosystem: Ecosystem::Deb,
                name: p.name.clone(),
                version: Some(p.version.clone()),
                arch: Some(p.arch.clone()).filter(|a| !a.is_empty()),
                source: p.source.clone(),
                license: stack
                    .copyright
                    .get(copyright.as_str())
                    .and_then(|names| license::from_debian(names)),
                purl: purl::deb(
                    deb_ns,
                    &p.name,
                    &p.version,
                    &p.arch,
                    distro_version,
                    upstream.as_deref(),
                ),
                location: format!("/{path}"),
                layer: layer_of(&key),
                installer: None,
                stage: None,
                checksum: None,
                record: None,
                files,
            });
        }
    }
}

/// The modules built into the stack's Go binaries: the main module, its dependencies (as
/// replaced) and the standard library.
fn go_packages<'a>(
    stack: &Stack<'a>,
    layer_of: &dyn Fn(&Key<'_>) -> LayerRef,
    packages: &mut Vec<Package>,
) {
    for (path, b) in &stack.go {
        let go_package = |name: &str, version: Option<String>, sum: Option<String>| Package {
            ecosystem: Ecosystem::Go,
            purl: if name == "stdlib" {
                purl::golang("stdlib", version.as_deref())
            } else {
                purl::golang(name, version.as_deref())
            },
            name: name.to_string(),
            version,
            arch: None,
            source: None,
            license: None,
            location: format!("/{path}"),
            layer: layer_of(&(Ecosystem::Go, *path, name, "")),
            installer: None,
            stage: None,
            checksum: sum,
            record: None,
            files: Vec::new(),
        };
        let used = |m: &super::GoModule| match &m.replace {
            // A replacement by another module is what was built in; one by a directory has no
            // version of its own, so the module keeps its name and version.
            Some(r)
                if !r.version.is_empty()
                    && r.version != "(devel)"
                    && !r.path.starts_with(['.', '/']) =>
            {
                (r.path.clone(), r.version.clone(), r.sum.clone())
            }
            _ => (m.path.clone(), m.version.clone(), m.sum.clone()),
        };
        if let Some(m) = &b.main {
            let version = Some(m.version.clone()).filter(|v| !v.is_empty() && v != "(devel)");
            let mut p = go_package(&m.path, version, m.sum.clone());
            p.layer = layer_of(&(Ecosystem::Go, *path, m.path.as_str(), ""));
            packages.push(p);
        }
        for d in &b.deps {
            let (name, version, sum) = used(d);
            let mut p = go_package(&name, Some(version).filter(|v| !v.is_empty()), sum);
            p.layer = layer_of(&(Ecosystem::Go, *path, d.path.as_str(), ""));
            packages.push(p);
        }
        if let Some(v) = stdlib_version(&b.go_version) {
            packages.push(go_package("stdlib", Some(v), None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn layer_ref(n: u8) -> LayerRef {
        LayerRef {
            diff_id: Digest::of(&[n]),
            digest: None,
            created_by: format!("step {n}"),
        }
    }

    fn deb(name: &str, version: &str) -> DebPackage {
        DebPackage {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            ..Default::default()
        }
    }

    fn dist(name: &str, version: &str) -> PythonDist {
        PythonDist {
            name: name.into(),
            version: version.into(),
            ..Default::default()
        }
    }

    fn found(inv: &Inventory) -> Vec<(String, String, String)> {
        inv.packages
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.version.clone().unwrap_or_default(),
                    p.layer.created_by.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn each_package_keeps_the_layer_that_added_it_until_it_changes() {
        let status = "var/lib/dpkg/status".to_string();
        let site = "opt/venv/lib/python3.11/site-packages";
        let mut base = LayerPackages::default();
        base.dpkg.insert(
            status.clone(),
            vec![deb("libc6", "2.36"), deb("curl", "7.88")],
        );
        // apt-get install python3: status rewritten, libc6 upgraded, curl kept.
        let mut apt = LayerPackages::default();
        apt.dpkg.insert(
            status.clone(),
            vec![
                deb("libc6", "2.37"),
                deb("curl", "7.88"),
                deb("python3", "3.11"),
            ],
        );
        let mut venv = LayerPackages::default();
        venv.python.insert(
            format!("{site}/six-1.16.0.dist-info"),
            dist("six", "1.16.0"),
        );
        venv.python
            .insert(format!("{site}/idna-3.7.dist-info"), dist("idna", "3.7"));
        // apt-get purge curl; the venv's files rewritten (chown -R) with one dist deleted.
        let mut top = LayerPackages::default();
        top.dpkg.insert(
            status.clone(),
            vec![deb("libc6", "2.37"), deb("python3", "3.11")],
        );
        top.python.insert(
            format!("{site}/six-1.16.0.dist-info"),
            dist("six", "1.16.0"),
        );
        top.deleted.push(format!("{site}/idna-3.7.dist-info"));
        let refs: Vec<LayerRef> = (0..4).map(layer_ref).collect();
        let inv = merge(&[
            (refs[0].clone(), &base),
            (refs[1].clone(), &apt),
            (refs[2].clone(), &venv),
            (refs[3].clone(), &top),
        ]);
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            found(&inv),
            vec![
                s("libc6", "2.37", "step 1"),
                s("python3", "3.11", "step 1"),
                s("six", "1.16.0", "step 2"),
            ]
        );
        // An opaque directory hides what is below it in lower layers only; a deleted METADATA
        // takes its distribution with it.
        let mut opaque = LayerPackages::default();
        opaque.opaque.push("opt/venv".into());
        opaque
            .python
            .insert(format!("{site}/idna-3.7.dist-info"), dist("idna", "3.7"));
        let mut meta_gone = LayerPackages::default();
        meta_gone.deleted.push("var/lib/dpkg".into());
        let inv = merge(&[
            (refs[0].clone(), &base),
            (refs[2].clone(), &venv),
            (refs[3].clone(), &opaque),
            (refs[1].clone(), &meta_gone),
        ]);
        // idna, rewritten by the opaque layer with the same version, was there all along.
        assert_eq!(found(&inv), vec![s("idna", "3.7", "step 2")]);
        let mut gone = LayerPackages::default();
        gone.deleted
            .push(format!("{site}/six-1.16.0.dist-info/METADATA"));
        let inv = merge(&[(refs[2].clone(), &venv), (refs[3].clone(), &gone)]);
        assert_eq!(found(&inv), vec![s("idna", "3.7", "step 2")]);
        assert_eq!(merge(&[]), Inventory::default());
    }

    #[test]
    fn go_modules_replaced_by_the_same_module_are_one_package() {
        let m = |p: &str, v: &str| super::super::GoModule {
            path: p.into(),
            version: v.into(),
            ..Default::default()
        };
        let mut a = m("example.com/a", "v1.0.0");
        a.replace = Some(Box::new(m("example.com/fork", "v2.0.0")));
        let mut b = m("example.com/b", "v1.0.0");
        b.replace = Some(Box::new(m("example.com/fork", "v2.0.0")));
        let mut l = LayerPackages::default();
        l.go.insert(
            "bin/x".into(),
            GoBinary {
                go_version: "go1.22.1".into(),
                deps: vec![a, b],
                ..Default::default()
            },
        );
        let inv = merge(&[(layer_ref(0), &l)]);
        let names: Vec<&str> = inv.packages.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "pkg:golang/example.com/fork@v2.0.0",
                "pkg:golang/stdlib@1.22.1"
            ]
        );
    }

    #[test]
    fn os_release_through_its_symlink_names_the_distribution() {
        let mut l = LayerPackages::default();
        l.os_release.insert(
            "etc/os-release".into(),
            OsReleaseEntry::Symlink("../usr/lib/os-release".into()),
        );
        l.os_release.insert(
            "usr/lib/os-release".into(),
            OsReleaseEntry::File(OsRelease {
                id: Some("ubuntu".into()),
                version_id: Some("24.04".into()),
                ..Default::default()
            }),
        );
        l.dpkg
            .insert("var/lib/dpkg/status".into(), vec![deb("bash", "5.2")]);
        let inv = merge(&[(layer_ref(0), &l)]);
        assert_eq!(inv.distro.unwrap().id.as_deref(), Some("ubuntu"));
        assert_eq!(
            inv.packages[0].purl,
            "pkg:deb/ubuntu/bash@5.2?arch=amd64&distro=ubuntu-24.04"
        );
    }
}
