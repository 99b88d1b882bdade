//! Software bills of materials, made from an image's layers without running anything: which
//! packages each layer's tar holds, the image's package list once the layers are stacked (with
//! the layer and the instruction that added each package), and that list as SPDX 2.3 or
//! CycloneDX 1.6 JSON. Pure: reads tar streams and values, writes values; no store, no engine.
//!
//! The flow, and what to cache:
//!
//! ```text
//! layer tar ─► scan_layer ─► LayerPackages (small, serde; cache it beside the layer's facts)
//! [(LayerRef, &LayerPackages)] bottom first ─► merge ─► Inventory { distro, packages }
//! Inventory + ImageInfo ─► spdx::document / cyclonedx::document ─► canonical JSON bytes
//! ```
//!
//! [`scan_layer`] reads the tar once, front to back, with every read bounded (see
//! [`limits`]): a hostile layer costs at most a few tens of MiB and time linear in its size,
//! and never panics. What it finds, by path (relative, no leading `/`, as [`crate::layer`]
//! spells paths):
//!
//! - Debian and Ubuntu: `var/lib/dpkg/status` (packages whose status is not `not-installed` or
//!   `config-files`), distroless's `var/lib/dpkg/status.d/*`, the DEP-5 `License:` names of
//!   `usr/share/doc/NAME/copyright` (machine-readable files only), and with
//!   [`ScanOptions::files`] each package's `var/lib/dpkg/info/NAME.list`.
//! - Alpine: `lib/apk/db/installed` (`P:`, `V:`, `A:`, `L:`, `o:`; files with the option).
//! - Python: every `*.dist-info` (`METADATA`'s headers, `INSTALLER`, `RECORD`'s file count and
//!   digest, its entries with the option) and legacy `*.egg-info` (a `PKG-INFO` in a directory,
//!   or a file of that form), wherever they are: system site-packages, venvs, `--target`
//!   directories. uv's cache (`archive-v0`) only serves hard links (uv links the installed
//!   files to it); what it holds is not installed.
//! - npm: `package.json` of each package in a `node_modules` tree (`node_modules/NAME`,
//!   `node_modules/@SCOPE/NAME`, nested `node_modules` of those); a `package.json` elsewhere in
//!   a package (tests, fixtures) is not a package.
//! - Go: the build info that Go 1.18 and later embed in every binary (the `\xff Go buildinf:`
//!   blob: toolchain version, main module, dependencies with versions and sums, replacements,
//!   build settings), read from ELF files' writable segments as the tar streams by. Binaries of
//!   Go 1.17 and older keep their build info behind pointers into read-only data that a
//!   one-pass scan has already passed: they are not listed (a note in
//!   [`LayerPackages::notes`] names them).
//! - `etc/os-release` and `usr/lib/os-release`, which name the distribution in package URLs.
//! - Whiteouts and opaque directories, so that [`merge`] drops what a later layer removed.
//!
//! RPM databases are not read: no pure-Rust crate reads rpmdb (`rpmdb.sqlite` needs SQLite,
//! the older Berkeley DB and ndb formats have no reader at all), and an image with one gets no
//! RPM packages in its SBOM.
//!
//! [`merge`] stacks the layers as overlayfs does and names, for each package, the lowest layer
//! from which it has been present with the same version without a break: a package that
//! `apt-get install` lists again in every later rewrite of dpkg's status keeps the layer that
//! first installed it, and an upgrade moves it to the layer of the upgrade.

pub mod attest;
pub mod cyclonedx;
mod golang;
pub mod license;
mod merge;
mod parse;
pub mod purl;
pub mod spdx;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::layer::TarPath;
use crate::oci::Digest;

pub use merge::merge;

/// The bounds of a scan: what a layer may make strata read and keep.
pub mod limits {
    /// dpkg's status and apk's installed database, read whole.
    pub const DATABASE: u64 = 64 << 20;
    /// The headers of a Python METADATA (read up to here; the description after them is
    /// skipped), a package.json, a copyright file, a RECORD, a dpkg file list.
    pub const METADATA: u64 = 4 << 20;
    /// os-release, INSTALLER.
    pub const SMALL: u64 = 64 << 10;
    /// The start of an ELF file read for its headers.
    pub const ELF_HEAD: usize = 64 << 10;
    /// The bytes of an ELF file's writable segments searched for Go's build info.
    pub const ELF_DATA: u64 = 32 << 20;
    /// Packages, distributions and binaries kept from one layer, all kinds together.
    pub const PACKAGES: usize = 200_000;
    /// Files kept per package with [`super::ScanOptions::files`].
    pub const FILES: usize = 100_000;
    /// Bytes of evidence kept from one layer (names, versions, file lists, whiteout paths; the
    /// copies kept for hard links counted again).
    pub const KEPT: usize = 64 << 20;
    /// Whiteouts and opaque directories kept from one layer.
    pub const WHITEOUTS: usize = 200_000;
    /// The longest field value kept (names, versions, licenses); longer ones are cut.
    pub const FIELD: usize = 1024;
    /// Notes of what a scan left out.
    pub const NOTES: usize = 100;
}

/// How much a scan keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// Keep each package's file list (dpkg's `.list` files, apk's `R:` lines, Python's RECORD
    /// entries). Off by default: the lists are most of the bytes and no document uses them.
    pub files: bool,
}

/// The package evidence of one layer. Every map is keyed by the path of its evidence (the
/// database file, the dist-info directory, the package.json, the binary), relative, so that
/// [`merge`] can apply the whiteouts of the layers above.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerPackages {
    /// dpkg status files (`var/lib/dpkg/status`, `var/lib/dpkg/status.d/NAME`) and their
    /// installed packages.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dpkg: BTreeMap<String, Vec<DebPackage>>,
    /// `usr/share/doc/NAME/copyright` files in DEP-5 form: their `License:` names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub copyright: BTreeMap<String, Vec<String>>,
    /// `var/lib/dpkg/info/NAME.list` files (with [`ScanOptions::files`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dpkg_files: BTreeMap<String, Vec<String>>,
    /// apk databases (`lib/apk/db/installed`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub apk: BTreeMap<String, Vec<ApkPackage>>,
    /// Python distributions by their `.dist-info` or `.egg-info` path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub python: BTreeMap<String, PythonDist>,
    /// npm packages by the path of their package.json.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub npm: BTreeMap<String, NpmPackage>,
    /// Go binaries by path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub go: BTreeMap<String, GoBinary>,
    /// `etc/os-release` and `usr/lib/os-release`, as files or as symlinks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub os_release: BTreeMap<String, OsReleaseEntry>,
    /// Paths this layer deletes (whiteouts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
    /// Directories this layer makes opaque.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opaque: Vec<String>,
    /// What the scan left out and why (a file over its size bound, the package cap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One installed package of a dpkg status file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The source package, when it is not named like the binary one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The source package's version, when it differs from the binary one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
}

/// One package of apk's installed database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApkPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The origin (source) package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// A Python distribution's installed metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonDist {
    pub name: String,
    pub version: String,
    /// PEP 639's `License-Expression` (SPDX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_expression: Option<String>,
    /// The `License` field when it is a name (one short line), not the license's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// `License ::` trove classifiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub license_classifiers: Vec<String>,
    /// What installed it (`pip`, `uv`, …), from INSTALLER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<String>,
    /// RECORD: how many files it lists and its own digest (which pins every file's hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordInfo>,
    /// RECORD's entries, as paths from the image's root (with [`ScanOptions::files`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<RecordFile>,
    /// Legacy `.egg-info` metadata rather than a `.dist-info`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub egg: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordInfo {
    pub files: u64,
    pub digest: Digest,
}

/// One RECORD line: a path (from the image's root) and the hash RECORD gives for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordFile {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// An npm package's package.json.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NpmPackage {
    pub name: String,
    pub version: String,
    /// `license`, or the types of the legacy `licenses` list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<String>,
}

/// A Go binary's build information.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoBinary {
    /// The toolchain that built it (`go1.19.8`).
    pub go_version: String,
    /// The main package's import path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The main module (absent for a binary built outside module mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main: Option<GoModule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<GoModule>,
    /// Build settings (`-trimpath`, `CGO_ENABLED`, `vcs.revision`, …) in their order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoModule {
    pub path: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<String>,
    /// What `replace` put in its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<Box<GoModule>>,
}

/// An os-release path: the file's fields, or where its symlink points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OsReleaseEntry {
    File(OsRelease),
    Symlink(String),
}

/// The fields of os-release that name a distribution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_codename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
}

/// A layer of the image, as the SBOM names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LayerRef {
    /// The sha256 of the layer's tar.
    pub diff_id: Digest,
    /// The digest of the layer blob, when it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// The instruction (history `created_by`) that made the layer.
    pub created_by: String,
}

/// The kinds of package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Deb,
    Apk,
    Python,
    Npm,
    Go,
}

impl Ecosystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Python => "python",
            Ecosystem::Npm => "npm",
            Ecosystem::Go => "go",
        }
    }
}

/// A declared license as an SPDX expression, where what is not an SPDX identifier is a
/// `LicenseRef-…` whose text (the name as found) is in `refs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    pub expression: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refs: BTreeMap<String, String>,
}

/// One package of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    /// Absent for a Go main module built from a checkout (`(devel)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// dpkg's source package, apk's origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<License>,
    pub purl: String,
    /// Where the evidence is, from the image's root: `/var/lib/dpkg/status`, a dist-info
    /// directory, a package.json, a binary.
    pub location: String,
    /// The layer that added the package (see [`merge`]).
    pub layer: LayerRef,
    /// The builder stage whose filesystem holds the package, for a package of a stage the
    /// image was built from that the image itself does not have (`--sbom=scan-stage=true`,
    /// BuildKit's `BUILDKIT_SBOM_SCAN_STAGE`); `None` for the image's own packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Python's INSTALLER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<String>,
    /// A Go module's go.sum hash (`h1:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Python's RECORD summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordInfo>,
    /// Files, where the scan kept them ([`ScanOptions::files`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// The image's packages, and the distribution its os-release names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distro: Option<OsRelease>,
    pub packages: Vec<Package>,
}

/// What a document says about the image itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// A name for the image (`app:latest`).
    pub name: String,
    /// The image's digest (its manifest's, or its config's): the document's identity.
    pub digest: Digest,
    /// When the document was made, in seconds since the epoch (SOURCE_DATE_EPOCH for
    /// reproducible builds).
    pub created: i64,
}

/// Errors of reading saved scan results.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the saved packages of a layer at {path}: {source}")]
    Load {
        path: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The packages of the layer `tar` (uncompressed), with [`ScanOptions::default`].
pub fn scan_layer(tar: impl Read) -> io::Result<LayerPackages> {
    scan_layer_with(tar, ScanOptions::default())
}

/// The packages of the layer `tar` (uncompressed).
pub fn scan_layer_with(tar: impl Read, opts: ScanOptions) -> io::Result<LayerPackages> {
    let mut scanner = Scanner::new(opts);
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        scanner.add(&mut entry?)?;
    }
    Ok(scanner.finish())
}

impl LayerPackages {
    /// The serialized form to cache (canonical JSON).
    pub fn to_json(&self) -> Vec<u8> {
        crate::oci::canonical_json(self)
    }

    /// Packages saved at `file` by [`LayerPackages::to_json`].
    pub fn load(file: &Path) -> Result<LayerPackages, Error> {
        let bytes = fs_err::read(file)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Load {
            path: file.display().to_string(),
            source,
        })
    }

    /// How many packages, distributions and binaries the layer holds.
    pub fn count(&self) -> usize {
        self.dpkg.values().map(Vec::len).sum::<usize>()
            + self.apk.values().map(Vec::len).sum::<usize>()
            + self.python.len()
            + self.npm.len()
            + self.go.len()
    }
}

/// A one-pass scan of a layer's tar entries, for a caller that reads the tar for other
/// reasons too (the layer's facts): feed it every entry in order, then [`Scanner::finish`].
pub struct Scanner {
    opts: ScanOptions,
    out: LayerPackages,
    /// Python metadata files by directory, put together at the end.
    dists: BTreeMap<String, parse::PartialDist>,
    /// Parsed evidence files by path, for hard links to them later in the tar.
    linkable: BTreeMap<String, parse::Parsed>,
    kept: usize,
    /// Bytes kept, against [`limits::KEPT`].
    bytes: usize,
}

impl Scanner {
    pub fn new(opts: ScanOptions) -> Scanner {
        Scanner {
            opts,
            out: LayerPackages::default(),
            dists: BTreeMap::new(),
            linkable: BTreeMap::new(),
            kept: 0,
            bytes: 0,
        }
    }

    fn note(&mut self, what: String) {
        if self.out.notes.len() < limits::NOTES && !self.out.notes.contains(&what) {
            self.out.notes.push(what);
        }
    }

    /// Take in one entry of the layer's tar, in order.
    pub fn add<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> io::Result<()> {
        let raw = entry.path()?.to_string_lossy().into_owned();
        let path = match TarPath::of(&raw) {
            TarPath::Root => return Ok(()),
            TarPath::Deleted(p) => {
                if self.out.deleted.len() + self.out.opaque.len() >= limits::WHITEOUTS {
                    self.note("whiteouts: over the limit, the rest left out".into());
                } else if self.weigh(p.len()) {
                    self.out.deleted.push(p);
                }
                return Ok(());
            }
            TarPath::Opaque(d) => {
                if self.out.deleted.len() + self.out.opaque.len() >= limits::WHITEOUTS {
                    self.note("whiteouts: over the limit, the rest left out".into());
                } else if self.weigh(d.len()) {
                    self.out.opaque.push(d);
                }
                return Ok(());
            }
            TarPath::Entry(p) => p,
        };
        let kind = entry.header().entry_type();
        let what = parse::classify(&path, self.opts);
        if kind.is_symlink() {
            if let Some(parse::What::OsRelease) = what {
                let target = entry
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.out
                    .os_release
                    .insert(path, OsReleaseEntry::Symlink(parse::cut(&target)));
            }
            return Ok(());
        }
        if kind.is_hard_link() {
            let target = entry
                .link_name()?
                .map(|l| crate::layer::rel_path(&l.to_string_lossy()).to_string())
                .unwrap_or_default();
            if let Some(parsed) = self.linkable.get(&target).cloned() {
                let _ = self.take(path, parsed);
            }
            return Ok(());
        }
        if !kind.is_file() && kind != tar::EntryType::Continuous {
            return Ok(());
        }
        // The entry's size as PAX records and GNU sparse maps give it, not the header's field.
        let size = entry.size();
        let parsed = match what {
            Some(w) => parse::read(w, &path, size, entry, self.opts)?,
            None if size >= 64 => golang::scan(entry, size)?,
            None => None,
        };
        match parsed {
            Some(parse::Parsed::OldGo) => {
                self.note(format!(
                    "{path}: a Go binary of go1.17 or older, whose build info a one-pass scan cannot read"
                ));
            }
            Some(parse::Parsed::TooLarge(limit)) => {
                self.note(format!(
                    "{path}: {size} bytes, over the {limit}-byte bound: not read"
                ));
            }
            Some(p) => {
                // Kept for a hard link later in the tar only when it was kept at all, and
                // weighed again.
                let copy = p.linkable().then(|| p.clone());
                if self.take(path.clone(), p) {
                    if let Some(copy) = copy {
                        if self.weigh(copy.weight() + path.len()) {
                            self.linkable.insert(path, copy);
                        }
                    }
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Count `n` more bytes kept, if the layer's budget allows (noted once when it does not).
    fn weigh(&mut self, n: usize) -> bool {
        if self.bytes + n > limits::KEPT {
            if self.bytes <= limits::KEPT {
                self.bytes = limits::KEPT + 1;
                self.note(format!(
                    "over the limit of {} bytes of evidence per layer: the rest left out",
                    limits::KEPT
                ));
            }
            return false;
        }
        self.bytes += n;
        true
    }

    /// Record what the file at `path` held; false when a bound left it out.
    fn take(&mut self, path: String, parsed: parse::Parsed) -> bool {
        use parse::Parsed as P;
        let n = parsed.packages();
        if n > 0 && self.kept + n > limits::PACKAGES {
            self.note(format!(
                "{path}: over the limit of {} packages per layer: left out",
                limits::PACKAGES
            ));
            return false;
        }
        if !self.weigh(parsed.weight() + path.len()) {
            return false;
        }
        self.kept += n;
        match parsed {
            P::Dpkg(pkgs) => {
                self.out.dpkg.insert(path, pkgs);
            }
            P::Copyright(l) => {
                self.out.copyright.insert(path, l);
            }
            P::DpkgList(files) => {
                self.out.dpkg_files.insert(path, files);
            }
            P::Apk(pkgs) => {
                self.out.apk.insert(path, pkgs);
            }
            P::Npm(p) => {
                self.out.npm.insert(path, p);
            }
            P::Go(b) => {
                self.out.go.insert(path, *b);
            }
            P::OsRelease(o) => {
                self.out.os_release.insert(path, OsReleaseEntry::File(o));
            }
            P::PyMeta { .. } | P::PyRecord(..) | P::PyInstaller(_) => {
                let (dir, _) = path.rsplit_once('/').unwrap_or(("", &path));
                let dir = if matches!(parsed, P::PyMeta { egg_file: true, .. }) {
                    path.clone()
                } else {
                    dir.to_string()
                };
                self.dists.entry(dir).or_default().add(parsed);
            }
            P::TooLarge(_) | P::OldGo => {}
        }
        true
    }

    /// What the layer holds.
    pub fn finish(mut self) -> LayerPackages {
        for (dir, partial) in std::mem::take(&mut self.dists) {
            if parse::in_uv_cache(&dir) {
                continue;
            }
            if let Some(dist) = partial.finish(&dir) {
                self.out.python.insert(dir, dist);
            }
        }
        self.out
    }
}

/// A [`Scanner`] riding a pass that already reads a layer's tar ([`crate::layer::DiffIdTee`]'s,
/// as a pull inflates and hashes each layer): its packages are in [`ScanResult::take`] once
/// every entry went by, else (a stream that is not a whole tar, an entry it could not read)
/// none.
pub struct SharedScan {
    scanner: Option<Scanner>,
    found: std::sync::Arc<std::sync::Mutex<Option<LayerPackages>>>,
}

/// The reading end of a [`SharedScan`].
#[derive(Clone, Default)]
pub struct ScanResult(std::sync::Arc<std::sync::Mutex<Option<LayerPackages>>>);

impl ScanResult {
    /// The packages, when the scan saw the whole tar.
    pub fn take(&self) -> Option<LayerPackages> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl SharedScan {
    /// A scan with `opts` and where its result will be.
    pub fn new(opts: ScanOptions) -> (SharedScan, ScanResult) {
        let r = ScanResult::default();
        (
            SharedScan {
                scanner: Some(Scanner::new(opts)),
                found: r.0.clone(),
            },
            r,
        )
    }
}

impl crate::layer::EntrySink for SharedScan {
    fn add(&mut self, entry: &mut tar::Entry<'_, crate::layer::TeeTar>) -> io::Result<()> {
        match &mut self.scanner {
            Some(s) => s.add(entry),
            None => Ok(()),
        }
    }

    fn end(&mut self) {
        if let Some(s) = self.scanner.take() {
            *self.found.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.finish());
        }
    }
}

impl Package {
    /// An identifier of the package, unique in its image and the same in every document made
    /// of it: ecosystem, name (letters, digits, `.`, `-`) and a hash of what tells it apart.
    pub fn id(&self) -> String {
        let mut name = String::new();
        for c in self.name.chars().take(64) {
            name.push(if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            });
        }
        let key = format!(
            "{}\0{}\0{}\0{}\0{}",
            self.ecosystem.as_str(),
            self.name,
            self.version.as_deref().unwrap_or(""),
            self.arch.as_deref().unwrap_or(""),
            self.location
        );
        let hash = Digest::of(key.as_bytes());
        format!("{}-{name}-{}", self.ecosystem.as_str(), &hash.hex()[..16])
    }
}

/// The name strata's documents give as their tool.
fn tool() -> String {
    format!("strata-{}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A layer with one piece of every kind of evidence.
    fn sample() -> Vec<u8> {
        let elf = golang::tests::elf_with(
            &golang::tests::blob(
                "go1.21.0",
                "path\tx\nmod\tx\t(devel)\t\ndep\ty\tv1.0.0\th1:q=\n",
            ),
            0x1000,
        );
        tar_of(&[
            ("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
            ("var/lib/dpkg/status", b"Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n"),
            ("var/lib/dpkg/status.d/b", b"Package: b\nVersion: 2\nArchitecture: all\n"),
            ("usr/share/doc/a/copyright", b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: GPL-2+\n"),
            ("lib/apk/db/installed", b"P:musl\nV:1.2\nA:x86_64\nL:MIT\n\n"),
            ("opt/venv/lib/python3.11/site-packages/six-1.dist-info/METADATA", b"Name: six\nVersion: 1\n\nbody"),
            ("opt/venv/lib/python3.11/site-packages/six-1.dist-info/RECORD", b"six.py,sha256=x,1\n"),
            ("opt/venv/lib/python3.11/site-packages/six-1.dist-info/INSTALLER", b"pip\n"),
            ("app/node_modules/ms/package.json", br#"{"name":"ms","version":"2.1.3","license":"MIT"}"#),
            ("usr/bin/prog", &elf),
            ("var/.wh.gone", b""),
            ("srv/.wh..wh..opq", b""),
        ])
    }

    #[test]
    fn one_pass_finds_every_kind_of_evidence() {
        let l = scan_layer(&sample()[..]).unwrap();
        assert_eq!(l.dpkg.len(), 2);
        assert_eq!(l.copyright["usr/share/doc/a/copyright"], vec!["GPL-2+"]);
        assert_eq!(l.apk["lib/apk/db/installed"][0].name, "musl");
        let d = &l.python["opt/venv/lib/python3.11/site-packages/six-1.dist-info"];
        assert_eq!(
            (d.name.as_str(), d.installer.as_deref()),
            ("six", Some("pip"))
        );
        assert_eq!(d.record.as_ref().unwrap().files, 1);
        assert_eq!(l.npm["app/node_modules/ms/package.json"].version, "2.1.3");
        assert_eq!(l.go["usr/bin/prog"].deps[0].path, "y");
        assert_eq!(
            (l.deleted.clone(), l.opaque.clone()),
            (vec!["var/gone".to_string()], vec!["srv".to_string()])
        );
        assert_eq!(l.count(), 6);
        // The cached form reads back as it was.
        let back: LayerPackages = serde_json::from_slice(&l.to_json()).unwrap();
        assert_eq!(back, l);
        let inv = merge(&[(
            LayerRef {
                diff_id: Digest::of(b"x"),
                digest: None,
                created_by: "RUN x".into(),
            },
            &l,
        )]);
        assert_eq!(inv.packages.len(), 8, "{:#?}", inv.packages);
    }

    #[test]
    fn a_scan_riding_the_diffid_pass_finds_what_a_scan_of_the_tar_finds() {
        // The pass reads etc/passwd's data for the layer's paths before the scan sees it.
        let mut files = vec![(
            "etc/passwd",
            &b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"[..],
        )];
        let s = sample();
        let mut a = tar::Archive::new(&s[..]);
        let mut kept = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            kept.push((e.path().unwrap().display().to_string(), body));
        }
        files.extend(kept.iter().map(|(p, b)| (p.as_str(), &b[..])));
        let t = tar_of(&files);
        let (blob, _) =
            crate::layer::compress_tar(&t[..], Vec::new(), crate::layer::Compression::GZIP)
                .unwrap();
        let (scan, found) = SharedScan::new(ScanOptions::default());
        let mut tee = crate::layer::DiffIdTee::with_sink(Some(Box::new(scan))).unwrap();
        for piece in blob.chunks(4096) {
            tee.feed(piece);
        }
        let (_, _, paths) = tee.finish().unwrap();
        assert!(paths.unwrap().etc.contains_key("etc/passwd"));
        let found = found.take().expect("the scan saw the whole tar");
        assert_eq!(found, scan_layer(&t[..]).unwrap());
        assert_eq!(found.count(), 6);
    }

    #[test]
    fn hard_links_to_evidence_are_evidence() {
        // uv links a venv's files to its cache: the tar holds the cache's copy as the file and
        // the venv's as a link to it.
        let mut b = tar::Builder::new(Vec::new());
        let meta = b"Name: attrs\nVersion: 25.3.0\n";
        let cache = "root/.cache/uv/archive-v0/abc/attrs-25.3.0.dist-info/METADATA";
        let mut h = tar::Header::new_gnu();
        h.set_size(meta.len() as u64);
        b.append_data(&mut h, cache, &meta[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(
            &mut h,
            "opt/venv/lib/python3.12/site-packages/attrs-25.3.0.dist-info/METADATA",
            cache,
        )
        .unwrap();
        let l = scan_layer(&b.into_inner().unwrap()[..]).unwrap();
        let found: Vec<&String> = l.python.keys().collect();
        assert_eq!(
            found,
            vec!["opt/venv/lib/python3.12/site-packages/attrs-25.3.0.dist-info"],
            "the cache's copy is not installed"
        );
    }

    #[test]
    fn hostile_layers_cost_bounded_work_and_never_panic() {
        // Over a bound: noted, not read.
        let big = vec![b'x'; (limits::METADATA + 1) as usize];
        let l = scan_layer(&tar_of(&[("node_modules/a/package.json", &big)])[..]).unwrap();
        assert!(l.npm.is_empty());
        assert!(
            l.notes[0].contains("over the 4194304-byte bound"),
            "{:?}",
            l.notes
        );
        // Very long fields are cut; nesting past serde_json's depth limit is no package.
        let long = format!("Package: {}\nVersion: 1\n", "p".repeat(1 << 20));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let l = scan_layer(
            &tar_of(&[
                ("var/lib/dpkg/status", long.as_bytes()),
                ("node_modules/a/package.json", deep.as_bytes()),
            ])[..],
        )
        .unwrap();
        assert_eq!(l.dpkg["var/lib/dpkg/status"][0].name.len(), limits::FIELD);
        assert!(l.npm.is_empty());
        // The layer's budget of kept bytes: what comes after it is spent is left out, noted
        // once (a layer of a million small evidence files costs no more than the budget).
        let mut sc = Scanner::new(ScanOptions::default());
        sc.bytes = limits::KEPT - 100;
        let t = tar_of(&[
            ("a/node_modules/x/package.json", br#"{"name":"x","version":"1"}"#),
            ("b/node_modules/y/package.json", br#"{"name":"y","version":"1"}"#),
            ("usr/share/doc/z/copyright", b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nLicense: MIT\n"),
            ("x/.wh.y", b""),
        ]);
        for e in tar::Archive::new(&t[..]).entries().unwrap() {
            sc.add(&mut e.unwrap()).unwrap();
        }
        let l = sc.finish();
        assert_eq!(l.npm.len(), 1, "{:?}", l.npm);
        assert!(l.copyright.is_empty() && l.deleted.is_empty());
        assert_eq!(l.notes.len(), 1, "{:?}", l.notes);
        // Bytes flipped and cut anywhere: a result or an error, never a panic (the fuzz
        // target sbom does this at length).
        let good = sample();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2000 {
            let mut t = good.clone();
            for _ in 0..1 + next() % 8 {
                let i = (next() % t.len() as u64) as usize;
                t[i] = next() as u8;
            }
            if round % 3 == 0 {
                t.truncate((next() % t.len() as u64) as usize);
            }
            if let Ok(l) = scan_layer_with(&t[..], ScanOptions { files: true }) {
                let r = LayerRef {
                    diff_id: Digest::of(&t),
                    digest: None,
                    created_by: String::new(),
                };
                let inv = merge(&[(r.clone(), &l), (r, &l)]);
                let image = ImageInfo {
                    name: "x".into(),
                    digest: Digest::of(b"y"),
                    created: 0,
                };
                let _ = spdx::to_bytes(&inv, &image);
                let _ = cyclonedx::to_bytes(&inv, &image);
            }
        }
    }
}
