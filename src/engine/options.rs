//! A build's options, and buildx's option strings as types: `--output` ([`Output`]),
//! `--build-context` ([`BuildContext`], [`NamedContext`]), `--secret` ([`Secret`]),
//! `--compression`, `--cache-to` and `--cache-from` (`FromStr` for [`Compression`],
//! [`CacheTo`] and [`CacheFrom`]). Each is parsed once, by `str::parse`, with an error that
//! names the option and carries the value.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;

use super::cache::remote::{CacheFrom, CacheOptionError, CacheTo};
use super::load;
use crate::dockerfile::instructions::parse_bool;
use crate::layer::Compression;
use crate::oci::Platform;
use crate::registry::PullPolicy;
use crate::sandbox::Network;
use crate::store::ImageRef;

/// A `--secret`: where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// A `--secret id=ID[,src=PATH|,env=VAR]`: without a source, the environment variable ID when
/// it is set, else the file ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub id: String,
    pub source: SecretSource,
}

/// A `--secret` value refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("invalid --secret \"{value}\": expected key=value pairs")]
    NotKeyValue { value: String },
    #[error("--secret {value}: id= is required")]
    NoId { value: String },
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Secret, SecretError> {
        let kv = s
            .split(',')
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                    .ok_or_else(|| SecretError::NotKeyValue {
                        value: s.to_string(),
                    })
            })
            .collect::<Result<HashMap<String, String>, _>>()?;
        let id = kv.get("id").cloned().ok_or_else(|| SecretError::NoId {
            value: s.to_string(),
        })?;
        let source = if let Some(e) = kv.get("env") {
            SecretSource::Env(e.clone())
        } else if let Some(p) = kv.get("src").or(kv.get("source")) {
            SecretSource::File(PathBuf::from(p))
        } else if std::env::var(&id).is_ok() {
            SecretSource::Env(id.clone())
        } else {
            SecretSource::File(PathBuf::from(&id))
        };
        Ok(Secret { id, source })
    }
}

/// Where the result goes besides (or instead of) the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An OCI layout: a tar (`tar=true`, the default) or a directory.
    Oci { dest: PathBuf, tar: bool },
    /// A docker-archive (`docker load`).
    Docker { dest: PathBuf },
    /// A tar of the root filesystem.
    Tar { dest: PathBuf },
    /// The root filesystem as a directory.
    Local { dest: PathBuf },
    /// Push to a registry (`type=registry`, or `type=image,push=true`): to `name=` if given,
    /// else to every `-t` name.
    Registry { name: Option<String> },
}

/// What is wrong in an `--output` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputProblem {
    #[error("invalid output option \"{part}\": expected key=value")]
    NotKeyValue { part: String },
    #[error("invalid {key} value \"{value}\"")]
    Bool { key: &'static str, value: String },
    #[error("unknown output option \"{option}\"")]
    Unknown { option: String },
    #[error("type=image without push=true is the store: use -t NAME")]
    ImageWithoutPush,
    #[error("--output needs dest=PATH")]
    NoDest,
    #[error("unsupported output type \"{kind}\": use oci, docker, tar, local, registry or image,push=true")]
    Kind { kind: String },
}

/// An `--output` value refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--output {value}: {problem}")]
pub struct OutputError {
    pub value: String,
    pub problem: OutputProblem,
}

impl FromStr for Output {
    type Err = OutputError;

    fn from_str(s: &str) -> Result<Output, OutputError> {
        Output::parse(s).map_err(|problem| OutputError {
            value: s.to_string(),
            problem,
        })
    }
}

impl Output {
    /// Parse `type=oci|docker|tar|local,dest=PATH[,tar=false]` (a bare path means local).
    pub fn parse(s: &str) -> Result<Output, OutputProblem> {
        let mut kind = None;
        let mut dest = None;
        let mut tar = true;
        let mut push = false;
        let mut name = None;
        if !s.contains('=') {
            return Ok(Output::Local {
                dest: PathBuf::from(s),
            });
        }
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| OutputProblem::NotKeyValue {
                    part: part.to_string(),
                })?;
            let bool_of = |key: &'static str| {
                parse_bool(v).ok_or_else(|| OutputProblem::Bool {
                    key,
                    value: v.to_string(),
                })
            };
            match k {
                "type" => kind = Some(v.to_string()),
                "dest" => dest = Some(PathBuf::from(v)),
                "tar" => tar = bool_of("tar")?,
                "push" => push = bool_of("push")?,
                "name" => name = Some(v.to_string()),
                "compression" | "oci-mediatypes" => {}
                other => {
                    return Err(OutputProblem::Unknown {
                        option: other.to_string(),
                    })
                }
            }
        }
        match kind.as_deref() {
            Some("registry") => return Ok(Output::Registry { name }),
            Some("image") if push => return Ok(Output::Registry { name }),
            Some("image") => return Err(OutputProblem::ImageWithoutPush),
            _ => {}
        }
        let dest = dest.ok_or(OutputProblem::NoDest)?;
        match kind.as_deref() {
            Some("oci") => Ok(Output::Oci { dest, tar }),
            Some("docker") => Ok(Output::Docker { dest }),
            Some("tar") => Ok(Output::Tar { dest }),
            Some("local") | None => Ok(Output::Local { dest }),
            Some(other) => Err(OutputProblem::Kind {
                kind: other.to_string(),
            }),
        }
    }
}

/// A `--build-context NAME=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory.
    Dir(PathBuf),
    /// An OCI layout directory (`oci-layout://PATH[:TAG]`).
    OciLayout(PathBuf, Option<String>),
    /// An image (`docker-image://REF`), taken from the store.
    Image(String),
}

impl NamedContext {
    pub fn parse(v: &str) -> NamedContext {
        if let Some(r) = v.strip_prefix("docker-image://") {
            NamedContext::Image(r.to_string())
        } else if let Some(p) = v.strip_prefix("oci-layout://") {
            match p.rsplit_once(':') {
                Some((path, tag)) if !tag.contains('/') => {
                    NamedContext::OciLayout(PathBuf::from(path), Some(tag.to_string()))
                }
                _ => NamedContext::OciLayout(PathBuf::from(p), None),
            }
        } else {
            NamedContext::Dir(PathBuf::from(v))
        }
    }
}

/// A whole `--build-context NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContext {
    pub name: String,
    pub context: NamedContext,
}

/// A `--build-context` value without its `=`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --build-context \"{value}\": expected NAME=VALUE")]
pub struct BuildContextError {
    pub value: String,
}

impl FromStr for BuildContext {
    type Err = BuildContextError;

    fn from_str(s: &str) -> Result<BuildContext, BuildContextError> {
        let (name, v) = s.split_once('=').ok_or_else(|| BuildContextError {
            value: s.to_string(),
        })?;
        Ok(BuildContext {
            name: name.to_string(),
            context: NamedContext::parse(v),
        })
    }
}

/// A `--compression` value refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --compression {value}: use gzip, zstd or none, optionally with a level (gzip:1..9, zstd:1..22)")]
pub struct CompressionError {
    pub value: String,
}

/// `--compression`: `gzip`, `zstd`, `none`, or with a level (`gzip:6`, `zstd:3`).
impl FromStr for Compression {
    type Err = CompressionError;

    fn from_str(s: &str) -> Result<Compression, CompressionError> {
        Compression::parse(s).ok_or_else(|| CompressionError {
            value: s.to_string(),
        })
    }
}

/// `--cache-to` and `--cache-from` values parse in the cache module, whose
/// [`CacheOptionError`] names the option, key and value.
impl FromStr for CacheTo {
    type Err = CacheOptionError;

    fn from_str(s: &str) -> Result<CacheTo, CacheOptionError> {
        CacheTo::parse(s)
    }
}

impl FromStr for CacheFrom {
    type Err = CacheOptionError;

    fn from_str(s: &str) -> Result<CacheFrom, CacheOptionError> {
        CacheFrom::parse(s)
    }
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The context directory (a tar on stdin is unpacked to a directory by the caller).
    pub context: PathBuf,
    /// The name shown in messages for the Dockerfile.
    pub dockerfile_name: String,
    /// The Dockerfile's text, for errors that show the failing lines ([`StepFailed`]).
    pub dockerfile: Option<crate::dockerfile::Source>,
    /// `.dockerignore` patterns in force.
    pub ignore: Vec<String>,
    pub tags: Vec<ImageRef>,
    pub no_cache: bool,
    /// `--debug`: a shell in a failed RUN step's filesystem, when stdin is a terminal.
    pub debug: bool,
    pub no_cache_filter: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The network of RUN steps without `--network`: their own (the default), none or host.
    pub network: Network,
    /// `--allow network.host`: RUN --network=host (and `--network host`) may be used.
    pub allow_host_network: bool,
    pub secrets: HashMap<String, SecretSource>,
    /// `--ssh ID=SOCKET` (`default` → $SSH_AUTH_SOCK).
    pub ssh: HashMap<String, PathBuf>,
    pub iidfile: Option<PathBuf>,
    pub outputs: Vec<Output>,
    pub jobs: usize,
    pub named_contexts: HashMap<String, NamedContext>,
    pub compression: Compression,
    /// SOURCE_DATE_EPOCH (from the environment or a build arg).
    pub epoch: Option<i64>,
    /// When to ask a registry for base images (`--pull` is `Always`).
    pub pull: PullPolicy,
    /// `--push`: push the image to every `-t` name after the build.
    pub push: bool,
    /// `--metadata-file`: buildx's JSON about the result.
    pub metadata_file: Option<PathBuf>,
    /// `--cache-to`: where the build's cache is exported after it.
    pub cache_to: Vec<CacheTo>,
    /// `--cache-from`: caches imported before it, in order (the first that has a step wins).
    pub cache_from: Vec<CacheFrom>,
    /// `--add-host HOST:IP`: lines of RUN steps' /etc/hosts.
    pub extra_hosts: Vec<(String, String)>,
    /// `--ulimit`: resource limits of RUN steps.
    pub ulimits: Vec<crate::sandbox::Rlimit>,
    /// `--shm-size`: the size of RUN steps' /dev/shm.
    pub shm_size: Option<u64>,
    /// `--annotation`s, by where they go.
    pub annotations: Annotations,
    /// `--load`: the image into a docker daemon or podman's storage after the build.
    pub load: Option<load::LoadTarget>,
    /// `--sbom`, `--provenance`, `--attest`: the attestations to attach.
    pub attest: crate::engine::supply::Attest,
}

/// `--annotation`s by where BuildKit's image and oci exporters put them (buildx's
/// `[KIND[\[PLATFORM\]]:]KEY=VALUE`). The index kinds need an index: a multi-platform build's
/// (checked with the build's platforms, [`Annotations::check`]).
#[derive(Clone, Debug, Default)]
pub struct Annotations {
    /// `KEY=VALUE`, `manifest:…`, `manifest[PLATFORM]:…`: the image manifest of every
    /// platform (`None`) or of one.
    pub manifest: Vec<(Option<Platform>, String, String)>,
    /// `manifest-descriptor[\[PLATFORM\]]:…`: the manifest's descriptor in the index.
    pub manifest_descriptor: Vec<(Option<Platform>, String, String)>,
    /// `index:…`: the image index.
    pub index: BTreeMap<String, String>,
    /// `index-descriptor:…`: the index's descriptor in an OCI layout's index.json.
    pub index_descriptor: BTreeMap<String, String>,
}

impl Annotations {
    /// Add one `--annotation` (`machine` completes a platform given as an OS alone).
    pub fn add(&mut self, s: &str, machine: &Platform) -> Result<(), super::error::Error> {
        let bad = |m: String| super::error::Error::BadFlag { message: m };
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| bad(format!("invalid --annotation \"{s}\": expected KEY=VALUE")))?;
        // A kind is letters and dashes, with a platform in brackets: a key with a colon of
        // its own (`com.example:x`) is a manifest key.
        let (kind, key) = match k.split_once(':') {
            Some((kind, key))
                if kind.split('[').next().is_some_and(|w| {
                    !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                }) =>
            {
                (kind, key)
            }
            _ => ("manifest", k),
        };
        let (kind, platform) = match kind.split_once('[') {
            Some((kind, rest)) => {
                let p = rest.strip_suffix(']').ok_or_else(|| {
                    bad(format!(
                        "invalid --annotation \"{s}\": {kind}[PLATFORM] lacks its closing bracket"
                    ))
                })?;
                let p = Platform::parse_specifier(p, machine)
                    .map_err(|e| bad(format!("invalid --annotation \"{s}\": platform {p}: {e}")))?;
                (kind, Some(p))
            }
            None => (kind, None),
        };
        if key.is_empty() {
            return Err(bad(format!(
                "invalid --annotation \"{s}\": the key is empty"
            )));
        }
        let (key, v) = (key.to_string(), v.to_string());
        match (kind, platform) {
            ("manifest", p) => self.manifest.push((p, key, v)),
            ("manifest-descriptor", p) => self.manifest_descriptor.push((p, key, v)),
            ("index", None) => {
                self.index.insert(key, v);
            }
            ("index-descriptor", None) => {
                self.index_descriptor.insert(key, v);
            }
            ("index" | "index-descriptor", Some(p)) => {
                return Err(bad(format!(
                    "invalid --annotation \"{s}\": an {kind} annotation is not for one platform ({p}): the index holds them all"
                )))
            }
            (other, _) => {
                return Err(bad(format!(
                    "invalid --annotation \"{s}\": unknown kind {other} (manifest, index, manifest-descriptor, index-descriptor)"
                )))
            }
        }
        Ok(())
    }

    /// That the annotations fit a build for `platforms`: one named for a platform is for one
    /// of them, and the index kinds need an index (`indexed`: several platforms, or one with
    /// attestations, which BuildKit's exporter also makes an index), as BuildKit's exporter.
    pub fn check(&self, platforms: &[Platform], indexed: bool) -> Result<(), super::error::Error> {
        let bad = |m: String| super::error::Error::BadFlag { message: m };
        let listed = || {
            platforms
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (p, k, _) in self.manifest.iter().chain(&self.manifest_descriptor) {
            if let Some(p) = p {
                if !platforms.iter().any(|t| t.normalized() == p.normalized()) {
                    return Err(bad(format!(
                        "--annotation for {p} (key {k}): no platform {p} in this build (--platform {})",
                        listed()
                    )));
                }
            }
        }
        if !indexed {
            if let Some(k) = self.index.keys().chain(self.index_descriptor.keys()).next() {
                return Err(bad(format!(
                    "--annotation index:{k} (or index-descriptor:): index annotations not supported for single platform export (build for several platforms, --platform {},…, or attest with --sbom/--provenance, to make an index)",
                    listed()
                )));
            }
            if let Some((_, k, _)) = self.manifest_descriptor.first() {
                return Err(bad(format!(
                    "--annotation manifest-descriptor:{k}: a single-platform build has no index to hold its manifest's descriptor in strata: use manifest:{k}=… (the manifest itself), or build for several platforms (or with --sbom/--provenance)"
                )));
            }
        }
        Ok(())
    }

    /// The manifest annotations of `platform`'s image (those for every platform, then its own).
    pub fn manifest_of(&self, platform: &Platform) -> BTreeMap<String, String> {
        Self::of(&self.manifest, platform)
    }

    /// The annotations of `platform`'s manifest's descriptor in the index.
    pub fn descriptor_of(&self, platform: &Platform) -> BTreeMap<String, String> {
        Self::of(&self.manifest_descriptor, platform)
    }

    fn of(
        list: &[(Option<Platform>, String, String)],
        platform: &Platform,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (_, k, v) in list.iter().filter(|(p, _, _)| p.is_none()) {
            out.insert(k.clone(), v.clone());
        }
        for (p, k, v) in list.iter() {
            if p.as_ref()
                .is_some_and(|p| p.normalized() == platform.normalized())
            {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod annotation_tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<Annotations, crate::engine::error::Error> {
        let host = Platform::parse_specifier("linux/amd64", &Platform::host()).unwrap();
        let mut a = Annotations::default();
        for s in list {
            a.add(s, &host)?;
        }
        Ok(a)
    }

    #[test]
    fn kinds_and_platforms() {
        let a = parse(&[
            "a=1",
            "com.example:x=2",
            "manifest:b=3",
            "manifest[linux/arm64]:c=4",
            "index:d=5",
            "index-descriptor:e=6",
            "manifest-descriptor:f=7",
            "manifest-descriptor[linux/amd64]:g=8",
        ])
        .unwrap();
        let arm = Platform::parse_specifier("linux/arm64", &Platform::host()).unwrap();
        let amd = Platform::parse_specifier("linux/amd64", &Platform::host()).unwrap();
        let m = a.manifest_of(&arm);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m["com.example:x"], "2");
        assert_eq!(m["c"], "4");
        assert!(!a.manifest_of(&amd).contains_key("c"));
        assert_eq!(a.index["d"], "5");
        assert_eq!(a.index_descriptor["e"], "6");
        assert_eq!(a.descriptor_of(&amd).len(), 2);
        assert_eq!(a.descriptor_of(&arm).len(), 1);
        a.check(&[amd.clone(), arm.clone()], true).unwrap();
        let single = parse(&["a=1", "index:d=5"])
            .unwrap()
            .check(std::slice::from_ref(&amd), false)
            .unwrap_err()
            .to_string();
        assert!(
            single.contains("index annotations not supported for single platform export"),
            "{single}"
        );
    }

    #[test]
    fn refused() {
        for (given, says) in [
            ("novalue", "expected KEY=VALUE"),
            ("manifest:=x", "the key is empty"),
            ("bogus:k=v", "unknown kind bogus"),
            ("index[linux/arm64]:k=v", "not for one platform"),
            ("manifest[linux/arm64:k=v", "closing bracket"),
            ("manifest[a/b/c/d]:k=v", "platform a/b/c/d"),
        ] {
            let e = parse(&[given]).unwrap_err().to_string();
            assert!(e.contains(says), "{given}: {e}");
        }
        let host = Platform::parse_specifier("linux/amd64", &Platform::host()).unwrap();
        let a = parse(&["manifest[linux/riscv64]:k=v"]).unwrap();
        let e = a.check(&[host], false).unwrap_err().to_string();
        assert!(e.contains("no platform linux/riscv64 in this build"), "{e}");
    }
}

#[cfg(test)]
mod output_tests {
    use super::Output;

    #[test]
    fn registry_outputs_parse_like_buildx() {
        assert_eq!(
            Output::parse("type=registry").unwrap(),
            Output::Registry { name: None }
        );
        assert_eq!(
            Output::parse("type=image,push=true,name=reg.test/app:1").unwrap(),
            Output::Registry {
                name: Some("reg.test/app:1".into())
            }
        );
        assert!(Output::parse("type=image")
            .unwrap_err()
            .to_string()
            .contains("push=true"));
        assert!(Output::parse("type=image,push=maybe").is_err());
        assert_eq!(
            "type=tar".parse::<Output>().unwrap_err().to_string(),
            "--output type=tar: --output needs dest=PATH"
        );
        assert_eq!(
            "type=oci,tar=maybe,dest=x"
                .parse::<Output>()
                .unwrap_err()
                .to_string(),
            "--output type=oci,tar=maybe,dest=x: invalid tar value \"maybe\""
        );
    }

    #[test]
    fn option_strings_name_their_option() {
        use super::{BuildContext, NamedContext, Secret, SecretSource};
        let c: BuildContext = "base=docker-image://alpine:3".parse().unwrap();
        assert_eq!(c.name, "base");
        assert_eq!(c.context, NamedContext::Image("alpine:3".into()));
        assert_eq!(
            "base".parse::<BuildContext>().unwrap_err().to_string(),
            "invalid --build-context \"base\": expected NAME=VALUE"
        );
        let s: Secret = "id=tok,env=TOKEN".parse().unwrap();
        assert_eq!(s.source, SecretSource::Env("TOKEN".into()));
        assert_eq!(
            "src=x".parse::<Secret>().unwrap_err().to_string(),
            "--secret src=x: id= is required"
        );
        assert_eq!(
            "id".parse::<Secret>().unwrap_err().to_string(),
            "invalid --secret \"id\": expected key=value pairs"
        );
        assert!("zstd:23".parse::<crate::layer::Compression>().is_err());
    }
}
