//! Which layer paths are package evidence, and the bounded readers and parsers of each kind.

use std::io::{self, Read};

use super::{
    limits, ApkPackage, DebPackage, GoBinary, NpmPackage, OsRelease, PythonDist, RecordFile,
    RecordInfo, ScanOptions,
};
use crate::oci::Digest;

mod erased {
    /// The length of a value's JSON, through a trait object.
    pub(super) trait Weigh {
        fn json_len(&self) -> usize;
    }

    impl<T: serde::Serialize> Weigh for T {
        fn json_len(&self) -> usize {
            serde_json::to_vec(self).map_or(0, |v| v.len())
        }
    }
}

/// The kinds of evidence file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum What {
    DpkgStatus,
    Copyright,
    DpkgList,
    Apk,
    PyMetadata { egg_file: bool },
    PyRecord,
    PyInstaller,
    Npm,
    OsRelease,
}

/// What a file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Parsed {
    Dpkg(Vec<DebPackage>),
    Copyright(Vec<String>),
    DpkgList(Vec<String>),
    Apk(Vec<ApkPackage>),
    PyMeta {
        meta: PyMeta,
        egg_file: bool,
    },
    PyRecord(RecordInfo, Vec<RecordFile>),
    PyInstaller(String),
    Npm(NpmPackage),
    Go(Box<GoBinary>),
    OsRelease(OsRelease),
    /// Over the bound given: not read.
    TooLarge(u64),
    /// A Go binary of Go 1.17 or older: its build info is behind pointers into data a
    /// one-pass scan has already passed.
    OldGo,
}

impl Parsed {
    /// How many packages it counts for against [`limits::PACKAGES`].
    pub(super) fn packages(&self) -> usize {
        match self {
            Parsed::Dpkg(p) => p.len(),
            Parsed::Apk(p) => p.len(),
            Parsed::PyMeta { .. } | Parsed::Npm(_) | Parsed::Go(_) => 1,
            _ => 0,
        }
    }

    /// About how many bytes keeping it takes (its strings), for [`limits::KEPT`].
    pub(super) fn weight(&self) -> usize {
        let json = |v: &dyn erased::Weigh| v.json_len();
        match self {
            Parsed::Dpkg(p) => json(p),
            Parsed::Copyright(l) | Parsed::DpkgList(l) => json(l),
            Parsed::Apk(p) => json(p),
            Parsed::PyMeta { meta, .. } => {
                let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
                opt(&meta.name)
                    + opt(&meta.version)
                    + opt(&meta.license)
                    + opt(&meta.license_expression)
                    + meta.classifiers.iter().map(String::len).sum::<usize>()
                    + 64
            }
            Parsed::PyRecord(_, files) => json(files) + 96,
            Parsed::PyInstaller(s) => s.len(),
            Parsed::Npm(p) => json(p),
            Parsed::Go(b) => json(b.as_ref()),
            Parsed::OsRelease(o) => json(o),
            Parsed::TooLarge(_) | Parsed::OldGo => 0,
        }
    }

    /// Whether a hard link to the file later in the tar should be taken as the same evidence.
    pub(super) fn linkable(&self) -> bool {
        !matches!(self, Parsed::TooLarge(_) | Parsed::OldGo)
    }
}

/// A Python METADATA's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PyMeta {
    name: Option<String>,
    version: Option<String>,
    license_expression: Option<String>,
    license: Option<String>,
    classifiers: Vec<String>,
}

/// The parts of one dist-info directory, as its files go by.
#[derive(Debug, Default)]
pub(super) struct PartialDist {
    meta: Option<PyMeta>,
    egg: bool,
    record: Option<(RecordInfo, Vec<RecordFile>)>,
    installer: Option<String>,
}

impl PartialDist {
    pub(super) fn add(&mut self, p: Parsed) {
        match p {
            Parsed::PyMeta { meta, egg_file } => {
                self.meta = Some(meta);
                self.egg |= egg_file;
            }
            Parsed::PyRecord(info, files) => self.record = Some((info, files)),
            Parsed::PyInstaller(i) => self.installer = Some(i),
            _ => {}
        }
    }

    /// The distribution, when its metadata was there; name and version fall back on the
    /// directory's name (`NAME-VERSION.dist-info`).
    pub(super) fn finish(self, dir: &str) -> Option<PythonDist> {
        let meta = self.meta?;
        let base = dir.rsplit('/').next().unwrap_or(dir);
        let egg = self.egg || base.ends_with(".egg-info");
        let stem = base
            .strip_suffix(".dist-info")
            .or_else(|| base.strip_suffix(".egg-info"))
            .unwrap_or(base);
        let (dir_name, dir_version) = match stem.split_once('-') {
            Some((n, v)) => (n, v.split('-').next().unwrap_or(v)),
            None => (stem, ""),
        };
        let name = meta.name.unwrap_or_else(|| dir_name.to_string());
        let version = meta.version.unwrap_or_else(|| dir_version.to_string());
        if name.is_empty() {
            return None;
        }
        let (record, files) = match self.record {
            Some((info, files)) => (Some(info), files),
            None => (None, Vec::new()),
        };
        Some(PythonDist {
            name,
            version,
            license_expression: meta.license_expression,
            license: meta.license,
            license_classifiers: meta.classifiers,
            installer: self.installer,
            record,
            files,
            egg,
        })
    }
}

/// A field value as kept: at most [`limits::FIELD`] bytes, on a character boundary.
pub(super) fn cut(s: &str) -> String {
    let s = s.trim();
    if s.len() <= limits::FIELD {
        return s.to_string();
    }
    let mut end = limits::FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Whether `dir` is in uv's cache (whose unpacked wheels installed files are linked to).
pub(super) fn in_uv_cache(dir: &str) -> bool {
    dir.split('/').any(|c| c == "archive-v0")
}

/// Whether `path` is a package's own package.json in a node_modules tree:
/// `[…/]node_modules/(@scope/)?name(/node_modules/(@scope/)?name)*/package.json`.
fn is_npm_manifest(path: &str) -> bool {
    let Some(dir) = path.strip_suffix("/package.json") else {
        return false;
    };
    let parts: Vec<&str> = dir.split('/').collect();
    let Some(mut i) = parts.iter().position(|c| *c == "node_modules") else {
        return false;
    };
    // From the first node_modules on: node_modules, a package (one name or @scope/name),
    // and so on, ending right after a package.
    loop {
        if i == parts.len() {
            return true;
        }
        if parts[i] != "node_modules" {
            return false;
        }
        let ok = |c: Option<&&str>| c.is_some_and(|c| !c.is_empty() && !c.starts_with('.'));
        if !ok(parts.get(i + 1)) {
            return false;
        }
        if parts[i + 1].starts_with('@') {
            if !ok(parts.get(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 2;
        }
    }
}

/// What kind of evidence `path` (relative) is, if any.
pub(super) fn classify(path: &str, opts: ScanOptions) -> Option<What> {
    match path {
        "var/lib/dpkg/status" => return Some(What::DpkgStatus),
        "lib/apk/db/installed" => return Some(What::Apk),
        "etc/os-release" | "usr/lib/os-release" => return Some(What::OsRelease),
        _ => {}
    }
    if let Some(name) = path.strip_prefix("var/lib/dpkg/status.d/") {
        if !name.contains('/') && !name.ends_with(".md5sums") && !name.starts_with('.') {
            return Some(What::DpkgStatus);
        }
        return None;
    }
    if let Some(rest) = path.strip_prefix("usr/share/doc/") {
        if rest.ends_with("/copyright") && rest.matches('/').count() == 1 {
            return Some(What::Copyright);
        }
        return None;
    }
    if opts.files {
        if let Some(name) = path.strip_prefix("var/lib/dpkg/info/") {
            if name.ends_with(".list") && !name.contains('/') {
                return Some(What::DpkgList);
            }
        }
    }
    let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
    if dir.ends_with(".dist-info") {
        return match file {
            "METADATA" => Some(What::PyMetadata { egg_file: false }),
            "RECORD" => Some(What::PyRecord),
            "INSTALLER" => Some(What::PyInstaller),
            _ => None,
        };
    }
    if dir.ends_with(".egg-info") {
        return (file == "PKG-INFO").then_some(What::PyMetadata { egg_file: false });
    }
    if file.ends_with(".egg-info") && file.len() > ".egg-info".len() {
        return Some(What::PyMetadata { egg_file: true });
    }
    if file == "package.json" && is_npm_manifest(path) {
        return Some(What::Npm);
    }
    None
}

/// Read at most `limit` bytes of `r` (the rest is left for the tar reader to skip).
fn read_up_to(r: &mut impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Read and parse the evidence file `path` of kind `what` and `size` bytes.
pub(super) fn read(
    what: What,
    path: &str,
    size: u64,
    r: &mut impl Read,
    opts: ScanOptions,
) -> io::Result<Option<Parsed>> {
    let bound = match what {
        What::DpkgStatus | What::Apk => limits::DATABASE,
        What::OsRelease | What::PyInstaller => limits::SMALL,
        _ => limits::METADATA,
    };
    // A METADATA's headers come first: a long description after them does not matter.
    if size > bound && !matches!(what, What::PyMetadata { .. }) {
        return Ok(Some(Parsed::TooLarge(bound)));
    }
    let bytes = read_up_to(r, bound)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(match what {
        What::DpkgStatus => Some(Parsed::Dpkg(dpkg_status(&text))),
        What::Copyright => dep5_licenses(&text).map(Parsed::Copyright),
        What::DpkgList => Some(Parsed::DpkgList(
            text.lines()
                .filter(|l| !l.is_empty() && *l != "/.")
                .take(limits::FILES)
                .map(cut)
                .collect(),
        )),
        What::Apk => Some(Parsed::Apk(apk_installed(&text, opts))),
        What::PyMetadata { egg_file } => Some(Parsed::PyMeta {
            meta: python_metadata(&text),
            egg_file,
        }),
        What::PyRecord => {
            let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            let (count, files) = python_record(&text, dir, opts);
            Some(Parsed::PyRecord(
                RecordInfo {
                    files: count,
                    digest: Digest::of(&bytes),
                },
                files,
            ))
        }
        What::PyInstaller => {
            let i = text.lines().next().unwrap_or("").trim();
            (!i.is_empty()).then(|| Parsed::PyInstaller(cut(i)))
        }
        What::Npm => npm_package(&bytes).map(Parsed::Npm),
        What::OsRelease => Some(Parsed::OsRelease(os_release(&text))),
    })
}

/// The stanzas of an RFC 822-like file (dpkg's status, DEP-5): each a list of (field, first
/// line of the value); continuation lines (starting with a space or a tab) are dropped.
fn stanzas(text: &str) -> Vec<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(&str, &str)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim(), v.trim()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn field<'a>(stanza: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    stanza
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .filter(|v| !v.is_empty())
}

/// The installed packages of a dpkg status file (or of one `status.d` file, which has no
/// `Status:` field: what is there is installed).
pub(super) fn dpkg_status(text: &str) -> Vec<DebPackage> {
    let mut out = Vec::new();
    for s in stanzas(text) {
        let (Some(name), Some(version)) = (field(&s, "Package"), field(&s, "Version")) else {
            continue;
        };
        if let Some(status) = field(&s, "Status") {
            // "want flag state": a removed package keeping its conffiles, or one purged, is not
            // installed.
            let state = status.split_whitespace().nth(2).unwrap_or("");
            if matches!(state, "not-installed" | "config-files") {
                continue;
            }
        }
        let (source, source_version) = match field(&s, "Source") {
            Some(src) => match src.split_once(' ') {
                Some((n, v)) => {
                    let v = v
                        .trim()
                        .trim_start_matches('(')
                        .trim_end_matches(')')
                        .trim();
                    (n.trim(), Some(v).filter(|v| !v.is_empty() && *v != version))
                }
                None => (src, None),
            },
            None => (name, None),
        };
        out.push(DebPackage {
            name: cut(name),
            version: cut(version),
            arch: cut(field(&s, "Architecture").unwrap_or("")),
            source: (source != name).then(|| cut(source)),
            source_version: source_version.map(cut),
        });
    }
    out
}

/// The license names of a machine-readable (DEP-5) copyright file, in order, without
/// repeats; None when the file is not in that format.
pub(super) fn dep5_licenses(text: &str) -> Option<Vec<String>> {
    let first = text.lines().find(|l| !l.trim().is_empty())?;
    let (k, v) = first.split_once(':')?;
    if !k.trim().eq_ignore_ascii_case("Format")
        || !v.contains("debian.org/doc/packaging-manuals/copyright-format/")
    {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for s in stanzas(text) {
        for (k, v) in s {
            if k.eq_ignore_ascii_case("License") && !v.is_empty() {
                let v = cut(v);
                if !out.contains(&v) && out.len() < 64 {
                    out.push(v);
                }
            }
        }
    }
    Some(out)
}

/// The packages of apk's installed database.
pub(super) fn apk_installed(text: &str, opts: ScanOptions) -> Vec<ApkPackage> {
    let mut out = Vec::new();
    let mut cur = ApkPackage::default();
    let mut dir = String::new();
    let flush = |cur: &mut ApkPackage, out: &mut Vec<ApkPackage>| {
        let p = std::mem::take(cur);
        if !p.name.is_empty() && !p.version.is_empty() {
            out.push(p);
        }
    };
    for line in text.lines() {
        if line.is_empty() {
            flush(&mut cur, &mut out);
            dir.clear();
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k {
            "P" => cur.name = cut(v),
            "V" => cur.version = cut(v),
            "A" => cur.arch = cut(v),
            "L" => cur.license = Some(cut(v)).filter(|l| !l.is_empty()),
            "o" => cur.origin = Some(cut(v)).filter(|o| !o.is_empty()),
            "F" if opts.files => dir = cut(v),
            "R" if opts.files && cur.files.len() < limits::FILES => {
                cur.files.push(if dir.is_empty() {
                    cut(v)
                } else {
                    cut(&format!("{dir}/{v}"))
                })
            }
            _ => {}
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// The headers of a METADATA or PKG-INFO (an email message: fields until the first blank
/// line, continuation lines indented).
pub(super) fn python_metadata(text: &str) -> PyMeta {
    let mut m = PyMeta::default();
    let mut last: Option<&str> = None;
    let mut license_lines = 0usize;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            // A continued License field is the license's text, not its name.
            if last == Some("license") {
                license_lines += 1;
            }
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            last = None;
            continue;
        };
        let key = k.trim().to_ascii_lowercase();
        let v = v.trim();
        match key.as_str() {
            "name" if m.name.is_none() => m.name = Some(cut(v)),
            "version" if m.version.is_none() => m.version = Some(cut(v)),
            "license-expression" if !v.is_empty() => m.license_expression = Some(cut(v)),
            "license" if !v.is_empty() && !v.eq_ignore_ascii_case("UNKNOWN") => {
                m.license = Some(v.to_string())
            }
            "classifier" if v.starts_with("License ::") && m.classifiers.len() < 32 => {
                m.classifiers.push(cut(v))
            }
            _ => {}
        }
        last = if key == "license" {
            Some("license")
        } else {
            None
        };
    }
    // A License field that is the license's text (long, or continued over lines) names none.
    if license_lines > 0 || m.license.as_ref().is_some_and(|l| l.len() > 100) {
        m.license = None;
    }
    m
}

/// One CSV field of a RECORD line, and the rest of the line.
fn csv_field(line: &str) -> (String, &str) {
    if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if let Some((_, '"')) = chars.peek() {
                    out.push('"');
                    chars.next();
                    continue;
                }
                let after = &rest[i + 1..];
                return (out, after.strip_prefix(',').unwrap_or(after));
            }
            out.push(c);
        }
        return (out, "");
    }
    match line.split_once(',') {
        Some((f, rest)) => (f.to_string(), rest),
        None => (line.to_string(), ""),
    }
}

/// `rel` (from the directory `base`) as a path from the image's root: `..` and `.` resolved,
/// never above the root; absolute paths taken as they are.
fn join_rel(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = if rel.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|c| !c.is_empty()).collect()
    };
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// A RECORD: how many files it lists, and (with the option) the files, from the image's root.
pub(super) fn python_record(
    text: &str,
    dist_dir: &str,
    opts: ScanOptions,
) -> (u64, Vec<RecordFile>) {
    let site = dist_dir.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let mut count = 0u64;
    let mut files = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        count += 1;
        if opts.files && files.len() < limits::FILES {
            let (path, rest) = csv_field(line);
            let (hash, _) = csv_field(rest);
            files.push(RecordFile {
                path: cut(&join_rel(site, &path)),
                hash: Some(cut(&hash)).filter(|h| !h.is_empty()),
            });
        }
    }
    (count, files)
}

/// The name, version and licenses of a package.json; None when it names no package.
pub(super) fn npm_package(bytes: &[u8]) -> Option<NpmPackage> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        name: Option<serde_json::Value>,
        version: Option<serde_json::Value>,
        license: Option<serde_json::Value>,
        licenses: Option<serde_json::Value>,
    }
    let m: Manifest = serde_json::from_slice(bytes).ok()?;
    let name = m.name?.as_str().map(cut)?;
    let version = m.version?.as_str().map(cut)?;
    if name.is_empty() || version.is_empty() {
        return None;
    }
    let mut licenses = Vec::new();
    let mut take = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => licenses.push(cut(s)),
        serde_json::Value::Object(o) => {
            if let Some(serde_json::Value::String(t)) = o.get("type") {
                licenses.push(cut(t));
            }
        }
        _ => {}
    };
    if let Some(l) = &m.license {
        take(l);
    }
    if let Some(serde_json::Value::Array(ls)) = &m.licenses {
        for l in ls.iter().take(16) {
            take(l);
        }
    } else if let Some(l) = &m.licenses {
        take(l);
    }
    Some(NpmPackage {
        name,
        version,
        licenses,
    })
}

/// The fields of os-release that name the distribution.
pub(super) fn os_release(text: &str) -> OsRelease {
    let mut o = OsRelease::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        let v = Some(cut(v)).filter(|v| !v.is_empty());
        match k.trim() {
            "ID" => o.id = v,
            "VERSION_ID" => o.version_id = v,
            "VERSION_CODENAME" => o.version_codename = v,
            "PRETTY_NAME" => o.pretty_name = v,
            _ => {}
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_manifests_are_packages_in_node_modules_only() {
        for yes in [
            "node_modules/ms/package.json",
            "app/node_modules/@types/node/package.json",
            "usr/lib/node_modules/npm/node_modules/debug/node_modules/ms/package.json",
        ] {
            assert!(is_npm_manifest(yes), "{yes}");
        }
        for no in [
            "app/package.json",
            "node_modules/package.json",
            "node_modules/ms/lib/package.json",
            "node_modules/resolve/test/resolver/node_modules/x/package.json",
            "node_modules/@scope/package.json",
            "node_modules/.bin/package.json",
            "node_modules/ms/node_modules/package.json",
        ] {
            assert!(!is_npm_manifest(no), "{no}");
        }
    }

    #[test]
    fn dpkg_stanzas_keep_installed_packages_and_their_sources() {
        let text = "Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\nSource: a-src (1.0-0)\nDescription: x\n long text: with colon\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 2\n\nPackage: b\nStatus: install ok installed\nVersion: 3\nArchitecture: all\nSource: b\n";
        let p = dpkg_status(text);
        assert_eq!(
            p,
            vec![
                DebPackage {
                    name: "a".into(),
                    version: "1.0-1".into(),
                    arch: "amd64".into(),
                    source: Some("a-src".into()),
                    source_version: Some("1.0-0".into()),
                },
                DebPackage {
                    name: "b".into(),
                    version: "3".into(),
                    arch: "all".into(),
                    source: None,
                    source_version: None,
                },
            ]
        );
    }

    #[test]
    fn dep5_needs_its_format_line() {
        let dep5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\nFiles: *\nCopyright: me\nLicense: GPL-2+\n\nFiles: debian/*\nLicense: GPL-2+\n\nLicense: GPL-2+\n This program is free\n .\n more\n\nFiles: lib/*\nLicense: Expat\n";
        assert_eq!(
            dep5_licenses(dep5),
            Some(vec!["GPL-2+".to_string(), "Expat".to_string()])
        );
        assert_eq!(dep5_licenses("This is the Debian package of x.\n"), None);
    }

    #[test]
    fn metadata_headers_stop_at_the_body_and_skip_license_text() {
        let m = python_metadata(
            "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\nClassifier: License :: OSI Approved :: MIT License\nClassifier: Programming Language :: Python\n\nName: not-this\n",
        );
        assert_eq!(m.name.as_deref(), Some("six"));
        assert_eq!(m.version.as_deref(), Some("1.16.0"));
        assert_eq!(m.license.as_deref(), Some("MIT"));
        assert_eq!(
            m.classifiers,
            vec!["License :: OSI Approved :: MIT License"]
        );
        let m = python_metadata("Name: x\nVersion: 1\nLicense: Copyright (c) me\n        Permission is hereby granted\nLicense-Expression: MIT OR Apache-2.0\n");
        assert_eq!(m.license, None);
        assert_eq!(m.license_expression.as_deref(), Some("MIT OR Apache-2.0"));
    }

    #[test]
    fn record_paths_are_from_the_root() {
        let (n, files) = python_record(
            "six.py,sha256=abc,100\n\"we,ird.py\",,\n../../../bin/tool,sha256=def,5\nsix-1.dist-info/RECORD,,\n",
            "opt/venv/lib/python3.11/site-packages/six-1.dist-info",
            ScanOptions { files: true },
        );
        assert_eq!(n, 4);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "opt/venv/lib/python3.11/site-packages/six.py",
                "opt/venv/lib/python3.11/site-packages/we,ird.py",
                "opt/venv/bin/tool",
                "opt/venv/lib/python3.11/site-packages/six-1.dist-info/RECORD",
            ]
        );
        assert_eq!(files[0].hash.as_deref(), Some("sha256=abc"));
        assert_eq!(files[1].hash, None);
    }

    #[test]
    fn npm_licenses_in_their_three_spellings() {
        let p = npm_package(br#"{"name":"a","version":"1.0.0","license":"MIT"}"#).unwrap();
        assert_eq!(p.licenses, vec!["MIT"]);
        let p = npm_package(br#"{"name":"a","version":"1","license":{"type":"ISC"}}"#).unwrap();
        assert_eq!(p.licenses, vec!["ISC"]);
        let p = npm_package(
            br#"{"name":"a","version":"1","licenses":[{"type":"MIT"},{"type":"Apache-2.0"}]}"#,
        )
        .unwrap();
        assert_eq!(p.licenses, vec!["MIT", "Apache-2.0"]);
        assert_eq!(npm_package(br#"{"name":"a"}"#), None);
        assert_eq!(npm_package(br#"{"name":1,"version":"1"}"#), None);
        assert_eq!(npm_package(b"not json"), None);
    }

    #[test]
    fn apk_database() {
        let p = apk_installed(
            "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\nF:lib\nR:ld-musl-x86_64.so.1\nR:libc.musl-x86_64.so.1\n\nP:busybox\nV:1.36.1-r15\nA:x86_64\nL:GPL-2.0-only\n",
            ScanOptions { files: true },
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "musl");
        assert_eq!(p[0].license.as_deref(), Some("MIT"));
        assert_eq!(
            p[0].files,
            vec!["lib/ld-musl-x86_64.so.1", "lib/libc.musl-x86_64.so.1"]
        );
        assert_eq!(p[1].version, "1.36.1-r15");
    }
}
