//! The build cache shared between machines: `--cache-to` exports the steps of a build (and,
//! with `mounts=true`, the content of its cache mounts) to a registry or an OCI layout;
//! `--cache-from` imports them, lazily.
//!
//! The format is an OCI image manifest whose config has the media type [`CONFIG_MEDIA_TYPE`]
//! ([`CacheConfig`]: for each step key its record and the index of its layer in the manifest's
//! layers; for each cache mount id its layer) and whose layers are the cached blobs themselves,
//! so a registry's garbage collection keeps them and they are pushed and pulled as any layer.
//! The config is one blob of any size (nothing holds a cache in an annotation or an index).
//!
//! Import reads one manifest and one config per source. A layer is downloaded only when it is
//! needed: a step runs on top of it, a later step copies from it, or it is a layer of the final
//! image. A step of a builder stage whose output only feeds cached steps is never downloaded.
//!
//! Export merges with what the destination holds (the new records win), drops the records
//! used least recently past `max-size` bytes of layers, and writes blobs before the manifest
//! and the manifest before the tag (or `index.json`), so a kill at any moment leaves the old
//! cache or the new one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::engine::cache::{self, Applied, LayerRec, Record};
use crate::engine::error::{self, BuildError, Doing as _, RemoteCacheError};
use crate::engine::size::human;
use crate::engine::Build;
use crate::layer::Compression;
use crate::oci::layout::Layout;
use crate::oci::{self, media, Descriptor, Digest, Manifest};
use crate::registry::artifact::Repo;
use crate::registry::Reference;
use crate::store::Store;

/// The media type of a cache manifest's config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.strata.cache.config.v1+json";
/// The key of the cache records in an image config (`--cache-to type=inline`).
pub const INLINE_KEY: &str = "strata.cache.v1";
/// What an export keeps when `max-size` is not given: the layers of its records.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 30;
/// What `mounts=true` exports when `mounts-max-size` is not given: the cache mounts' tars.
pub const DEFAULT_MOUNTS_MAX_SIZE: u64 = 4 << 30;

/// Where `--cache-to` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheTo {
    Registry {
        reference: Reference,
        opts: ExportOptions,
    },
    /// An OCI layout directory; the cache manifest is tagged `tag` in its index.
    Local {
        dest: PathBuf,
        tag: String,
        opts: ExportOptions,
    },
    /// The records of the final image's steps in the image's own config.
    Inline,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// `mode=max`: every step of every stage (`min`: the steps of the final image).
    pub max: bool,
    /// `mounts=true`: the content of the build's cache mounts, by id.
    pub mounts: bool,
    /// `ignore-error=true`: a failed export is a warning.
    pub ignore_error: bool,
    pub compression: Compression,
    pub max_size: u64,
    pub mounts_max_size: u64,
}

/// Where `--cache-from` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFrom {
    Registry { reference: Reference },
    Local { src: PathBuf, tag: String },
}

/// A `--cache-to` / `--cache-from` value strata cannot use; the message names the option
/// (`what`) and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheOptionError {
    #[error("invalid cache option \"{part}\": expected key=value")]
    NotKeyValue { part: String },
    #[error("cache option \"{key}\" given twice")]
    Twice { key: String },
    #[error("invalid {key} value \"{value}\": expected true or false")]
    NotBool { key: String, value: String },
    #[error("{what} type=registry needs ref=REGISTRY/REPOSITORY[:TAG]")]
    NoRef { what: &'static str },
    #[error("{what} ref={given}: {cause}")]
    BadRef {
        what: &'static str,
        given: String,
        cause: crate::oci::reference::ReferenceError,
    },
    #[error("{what} ref={reference}: name a tag, not a digest (the cache is updated in place)")]
    DigestRef {
        what: &'static str,
        reference: Reference,
    },
    #[error("{what}: unknown option \"{key}\" (known: {known})")]
    Unknown {
        what: &'static str,
        key: String,
        known: String,
    },
    #[error("{what}: mode={value}: expected min or max")]
    Mode { what: &'static str, value: String },
    #[error("{what}: compression={value}: expected gzip, zstd or uncompressed")]
    Compression { what: &'static str, value: String },
    #[error("{what}: {key}={value}: expected a size such as 10GB")]
    Size {
        what: &'static str,
        key: String,
        value: String,
    },
    /// `type=local` without its directory (`needs` is `dest=DIR` or `src=DIR`).
    #[error("{what} type=local needs {needs}")]
    LocalNeeds {
        what: &'static str,
        needs: &'static str,
    },
    #[error("{what}: unsupported type \"{kind}\": use {choices}")]
    Type {
        what: &'static str,
        kind: String,
        choices: &'static str,
    },
}

/// `key=value,…` into pairs, the type first; a bare value is `type=registry,ref=VALUE`.
fn pairs(s: &str) -> Result<(String, BTreeMap<String, String>), CacheOptionError> {
    if !s.contains('=') {
        let mut m = BTreeMap::new();
        m.insert("ref".to_string(), s.to_string());
        return Ok(("registry".into(), m));
    }
    let mut m = BTreeMap::new();
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| CacheOptionError::NotKeyValue {
                part: part.to_string(),
            })?;
        if m.insert(k.trim().to_string(), v.trim().to_string())
            .is_some()
        {
            return Err(CacheOptionError::Twice { key: k.to_string() });
        }
    }
    let t = m.remove("type").unwrap_or_else(|| "registry".into());
    Ok((t, m))
}

fn flag(m: &mut BTreeMap<String, String>, k: &str) -> Result<bool, CacheOptionError> {
    match m.remove(k) {
        None => Ok(false),
        Some(v) => crate::dockerfile::instructions::parse_bool(&v).ok_or_else(|| {
            CacheOptionError::NotBool {
                key: k.to_string(),
                value: v,
            }
        }),
    }
}

fn reference(
    m: &mut BTreeMap<String, String>,
    what: &'static str,
) -> Result<Reference, CacheOptionError> {
    let r = m.remove("ref").ok_or(CacheOptionError::NoRef { what })?;
    let reference = Reference::parse(&r).map_err(|cause| CacheOptionError::BadRef {
        what,
        given: r.clone(),
        cause,
    })?;
    if reference.digest().is_some() {
        return Err(CacheOptionError::DigestRef { what, reference });
    }
    Ok(reference)
}

fn no_more(
    m: BTreeMap<String, String>,
    what: &'static str,
    known: &str,
) -> Result<(), CacheOptionError> {
    match m.into_keys().next() {
        None => Ok(()),
        Some(key) => Err(CacheOptionError::Unknown {
            what,
            key,
            known: known.to_string(),
        }),
    }
}

impl CacheTo {
    /// `type=registry,ref=R[,mode=min|max][,mounts=true][,compression=gzip|zstd|uncompressed]
    /// [,ignore-error=true][,max-size=10GB][,mounts-max-size=4GB]`, `type=local,dest=DIR[,tag=T]…`,
    /// `type=inline`.
    pub fn parse(s: &str) -> Result<CacheTo, CacheOptionError> {
        let what = "--cache-to";
        let (t, mut m) = pairs(s)?;
        if t == "inline" {
            no_more(m, what, "none for type=inline")?;
            return Ok(CacheTo::Inline);
        }
        let max = match m.remove("mode").as_deref() {
            None | Some("min") => false,
            Some("max") => true,
            Some(o) => {
                return Err(CacheOptionError::Mode {
                    what,
                    value: o.to_string(),
                })
            }
        };
        let compression = match m.remove("compression").as_deref() {
            None | Some("gzip") => Compression::GZIP,
            Some("zstd") => Compression::ZSTD,
            Some("uncompressed") => Compression::None,
            Some(o) => {
                return Err(CacheOptionError::Compression {
                    what,
                    value: o.to_string(),
                })
            }
        };
        let size = |m: &mut BTreeMap<String, String>, k: &str, d: u64| match m.remove(k) {
            None => Ok(d),
            Some(v) => crate::dockerfile::instructions::parse_size(&v).ok_or_else(|| {
                CacheOptionError::Size {
                    what,
                    key: k.to_string(),
                    value: v,
                }
            }),
        };
        let opts = ExportOptions {
            max,
            mounts: flag(&mut m, "mounts")?,
            ignore_error: flag(&mut m, "ignore-error")?,
            compression,
            max_size: size(&mut m, "max-size", DEFAULT_MAX_SIZE)?,
            mounts_max_size: size(&mut m, "mounts-max-size", DEFAULT_MOUNTS_MAX_SIZE)?,
        };
        // buildx's options that change nothing here.
        m.remove("oci-mediatypes");
        m.remove("image-manifest");
        m.remove("compression-level");
        let known = "mode, mounts, compression, ignore-error, max-size, mounts-max-size";
        match t.as_str() {
            "registry" => {
                let reference = reference(&mut m, what)?;
                no_more(m, what, &format!("ref, {known}"))?;
                Ok(CacheTo::Registry { reference, opts })
            }
            "local" => {
                let dest = m.remove("dest").ok_or(CacheOptionError::LocalNeeds {
                    what,
                    needs: "dest=DIR",
                })?;
                let tag = m.remove("tag").unwrap_or_else(|| "latest".into());
                no_more(m, what, &format!("dest, tag, {known}"))?;
                Ok(CacheTo::Local {
                    dest: dest.into(),
                    tag,
                    opts,
                })
            }
            o => Err(CacheOptionError::Type {
                what,
                kind: o.to_string(),
                choices: "registry, local or inline",
            }),
        }
    }

    fn opts(&self) -> Option<&ExportOptions> {
        match self {
            CacheTo::Registry { opts, .. } | CacheTo::Local { opts, .. } => Some(opts),
            CacheTo::Inline => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            CacheTo::Registry { reference, .. } => reference.to_string(),
            CacheTo::Local { dest, tag, .. } => format!("{}:{tag}", dest.display()),
            CacheTo::Inline => "the image (inline)".into(),
        }
    }
}

impl CacheFrom {
    /// `type=registry,ref=R`, a bare `R`, or `type=local,src=DIR[,tag=T]`.
    pub fn parse(s: &str) -> Result<CacheFrom, CacheOptionError> {
        let what = "--cache-from";
        let (t, mut m) = pairs(s)?;
        match t.as_str() {
            "registry" => {
                let reference = reference(&mut m, what)?;
                no_more(m, what, "ref")?;
                Ok(CacheFrom::Registry { reference })
            }
            "local" => {
                let src = m.remove("src").ok_or(CacheOptionError::LocalNeeds {
                    what,
                    needs: "src=DIR",
                })?;
                let tag = m.remove("tag").unwrap_or_else(|| "latest".into());
                m.remove("digest");
                no_more(m, what, "src, tag")?;
                Ok(CacheFrom::Local {
                    src: src.into(),
                    tag,
                })
            }
            o => Err(CacheOptionError::Type {
                what,
                kind: o.to_string(),
                choices: "registry or local (an image with an inline cache is type=registry)",
            }),
        }
    }

    /// The option as buildx writes it: `type=registry,ref=R` or `type=local,src=DIR,tag=T`.
    pub fn spec(&self) -> String {
        match self {
            CacheFrom::Registry { reference } => format!("type=registry,ref={reference}"),
            CacheFrom::Local { src, tag } => {
                format!("type=local,src={},tag={tag}", src.display())
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            CacheFrom::Registry { reference } => reference.to_string(),
            CacheFrom::Local { src, tag } => format!("{}:{tag}", src.display()),
        }
    }
}

/// The config of a cache manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheConfig {
    /// [`cache::KEY_VERSION`] of the keys: a cache of another version is not read.
    pub key_version: u32,
    /// The diffID of each layer of the manifest, in its order.
    pub diff_ids: Vec<Digest>,
    pub records: Vec<RecordEntry>,
    #[serde(default)]
    pub mounts: Vec<MountEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordEntry {
    pub key: Digest,
    /// Index into the manifest's layers (none for a step with an empty diff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    pub created: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<String>,
    /// The key later steps chain from, when not `key` (cache::Record::chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Digest>,
    /// Seconds since the epoch of the last export that used it (eviction order).
    pub used: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountEntry {
    pub id: String,
    pub layer: usize,
    pub used: i64,
}

/// The records of an image config (`type=inline`), whose layers are the image's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InlineCache {
    key_version: u32,
    records: Vec<RecordEntry>,
}

/// A source of cached blobs.
enum Source {
    Registry(Repo),
    Local(PathBuf),
}

/// A blob a source has: its descriptor (the diffID a step uses it as comes with its record).
#[derive(Clone)]
struct RemoteBlob {
    source: usize,
    desc: Descriptor,
}

/// Where a layer of an imported cache lives, as kept in the store with the step's record
/// ([`remember`]): a later build without `--cache-from` still hits the step, and fetches the
/// layer from there only if something needs its files.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seeded {
    /// A registry repository (the cache's reference).
    Registry(String),
    /// An OCI layout directory.
    Local(PathBuf),
}

/// The source of a [`BadImport`] that is a remembered record's layer ([`Imported::remembered`]),
/// not one of the build's `--cache-from`.
pub const REMEMBERED: usize = usize::MAX - 1;

/// Whether `e` is a cancelled transfer (Ctrl-C or another stage's failure), not a bad layer.
fn cancelled(e: &BuildError) -> bool {
    error::chain(e).any(|c| {
        matches!(
            c.downcast_ref::<crate::registry::Error>(),
            Some(crate::registry::Error::Cancelled)
        )
    })
}

/// Forget the remembered records whose layer is `digest` (it failed its check), so the next
/// attempt runs their steps. Returns how many there were.
pub fn forget_remote_layer(store: &Store, digest: &Digest) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(remote_dir(store))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(bytes) = fs_err::read(e.path()) else {
            continue;
        };
        let Ok(r) = serde_json::from_slice::<RemoteRecord>(&bytes) else {
            continue;
        };
        if r.record.layer.as_ref().is_some_and(|l| &l.digest == digest)
            && std::fs::remove_file(e.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// A step record of an imported cache whose layer stayed remote, as kept in
/// `v1/cache-remote/<key>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RemoteRecord {
    record: Record,
    from: Seeded,
}

fn remote_dir(store: &Store) -> PathBuf {
    store.root().join("v1/cache-remote")
}

/// The caches of `--cache-from`, read once at the start of a build; layers come on demand.
///
/// Nothing an imported cache says about a layer is taken on trust: a layer it brings is
/// checked against its digest, its size and the diffID the step's record gives it as it is
/// copied or downloaded (the registry's path and a local layout's alike), and a record whose
/// layer the store already holds is checked against that blob when it is used. A layer that
/// fails is a [`BadImport`]: the build starts again without that cache (the steps it ran are
/// in the local cache by then), so a cache that is damaged or lies costs time, never a wrong
/// image or a store `strata fsck` finds fault with.
#[derive(Default)]
pub struct Imported {
    /// Each source's name, what it is, and its index among the build's `--cache-from`.
    sources: Vec<(String, Source, usize)>,
    /// Where each source is, as [`Seeded`] (in the order of `sources`).
    seeded: Vec<Seeded>,
    records: HashMap<Digest, Record>,
    blobs: HashMap<Digest, RemoteBlob>,
    mounts: HashMap<String, LayerRec>,
    /// Keys that hit here rather than in the local cache.
    hits: Mutex<BTreeSet<Digest>>,
    /// Layers of steps an earlier build imported and this one hit in the store's remote
    /// records ([`Imported::remembered`]): where each can be fetched from.
    remembered: Mutex<HashMap<Digest, (Seeded, LayerRec)>>,
    /// (blob, diffID) pairs this import gave out, which the store's blobs must bear out.
    claimed: Mutex<BTreeSet<(Digest, Digest)>>,
    /// Pairs checked against their bytes in this build.
    verified: Mutex<BTreeSet<(Digest, Digest)>>,
}

/// A layer of an imported cache that could not be used: the build starts again without it.
pub use crate::engine::error::BadImport;

/// A manifest and its cache content, read from a registry or a layout.
struct Loaded {
    layers: Vec<Descriptor>,
    config: CacheConfig,
}

/// The cache in `manifest` (a cache manifest, or an image whose config carries inline records),
/// with `config` the bytes of its config blob.
fn parse_cache(manifest: &Manifest, config: &[u8], what: &str) -> Result<Loaded, BuildError> {
    if manifest.config.media_type == CONFIG_MEDIA_TYPE {
        let c: CacheConfig =
            serde_json::from_slice(config).map_err(|source| RemoteCacheError::BadConfig {
                what: what.to_string(),
                source,
            })?;
        if c.diff_ids.len() != manifest.layers.len() {
            return Err(RemoteCacheError::DiffIdCount {
                what: what.to_string(),
                diff_ids: c.diff_ids.len(),
                layers: manifest.layers.len(),
            }
            .into());
        }
        return Ok(Loaded {
            layers: manifest.layers.clone(),
            config: c,
        });
    }
    let img: oci::ImageConfig = oci::parse_json(config, what)?;
    let Some(v) = img.extra.get(INLINE_KEY) else {
        return Err(RemoteCacheError::NoInline {
            what: what.to_string(),
        }
        .into());
    };
    let inline: InlineCache =
        serde_json::from_value(v.clone()).map_err(|source| RemoteCacheError::BadInline {
            what: what.to_string(),
            source,
        })?;
    if img.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(RemoteCacheError::LayersDisagree {
            what: what.to_string(),
        }
        .into());
    }
    Ok(Loaded {
        layers: manifest.layers.clone(),
        config: CacheConfig {
            key_version: inline.key_version,
            diff_ids: img.rootfs.diff_ids.clone(),
            records: inline.records,
            mounts: Vec::new(),
        },
    })
}

/// The image of `index` for `platform`: an image index whose images carry inline caches (a
/// multi-platform build's with `--cache-to type=inline`) gives each platform's build its own.
fn platform_image<'a>(
    index: &'a oci::Index,
    platform: &oci::Platform,
    what: &str,
) -> Result<&'a Descriptor, BuildError> {
    crate::store::platform_manifest(index, platform).ok_or_else(|| {
        RemoteCacheError::NoPlatformInIndex {
            what: what.to_string(),
            platform: platform.to_string(),
            has: crate::store::platform_list(&crate::store::index_platforms(index)),
        }
        .into()
    })
}

/// What the cache at `repo` holds now (`None`: nothing there yet); of an image index, its
/// image for `platform`.
fn load_registry(
    reg: &crate::registry::Registry,
    store: &Store,
    repo: &Repo,
    platform: &oci::Platform,
) -> Result<Option<Loaded>, BuildError> {
    let Some((mut mt, mut bytes, _)) = repo.manifest(reg)? else {
        return Ok(None);
    };
    let what = repo.user_ref.to_string();
    if media::is_index(&mt) {
        let index: oci::Index = oci::parse_json(&bytes, &what)?;
        let d = platform_image(&index, platform, &what)?;
        (mt, bytes, _) = repo.manifest_at(reg, d.digest.as_str())?;
    }
    if !media::is_manifest(&mt) {
        return Err(RemoteCacheError::NotManifest {
            what,
            media_type: mt,
        }
        .into());
    }
    let m: Manifest = oci::parse_json(&bytes, &what)?;
    let config = repo.json_blob(reg, store, &m.config)?;
    parse_cache(&m, &config, &what).map(Some)
}

/// [`load_registry`] of a layout's image tagged `tag`.
fn load_local(
    dir: &Path,
    tag: &str,
    platform: &oci::Platform,
) -> Result<Option<Loaded>, BuildError> {
    let layout = Layout::at(dir);
    let Some(mut d) = layout.tagged(tag)? else {
        return Ok(None);
    };
    let what = format!("{}:{tag}", dir.display());
    if media::is_index(&d.media_type) {
        let index: oci::Index = oci::parse_json(&layout.read_blob(&d, 8 << 20)?, &what)?;
        d = platform_image(&index, platform, &what)?.clone();
    }
    let m: Manifest = oci::parse_json(&layout.read_blob(&d, 8 << 20)?, &what)?;
    let config = layout.read_blob(&m.config, 64 << 20)?;
    parse_cache(&m, &config, &what).map(Some)
}

impl Imported {
    /// Read every `--cache-from` source but those at the indices `skip` (found bad by an
    /// earlier attempt of this build). A source that cannot be read is a warning, as in
    /// BuildKit: the build goes on without it.
    pub(crate) fn load(b: &Build, from: &[CacheFrom], skip: &[usize]) -> Imported {
        let mut out = Imported::default();
        let platform = &b.plan.options.target_platform;
        for (index, f) in from.iter().enumerate() {
            let name = f.describe();
            if skip.contains(&index) {
                continue;
            }
            let got = match f {
                CacheFrom::Registry { reference } => b
                    .source
                    .registry()
                    .map_err(BuildError::from)
                    .and_then(|reg| {
                        let repo = reg.repo(reference)?;
                        let l = load_registry(reg, b.store, &repo, platform)?;
                        Ok((l, Source::Registry(repo)))
                    }),
                CacheFrom::Local { src, tag } => {
                    load_local(src, tag, platform).map(|l| (l, Source::Local(src.clone())))
                }
            };
            match got {
                Ok((None, _)) => b.note(&format!("cache {name}: nothing there yet")),
                Ok((Some(l), src)) if l.config.key_version != cache::KEY_VERSION => {
                    drop(src);
                    b.note(&format!(
                        "cache {name}: made by a strata with cache key version {} (this one has {}); not used",
                        l.config.key_version,
                        cache::KEY_VERSION
                    ))
                }
                Ok((Some(l), src)) => {
                    let i = out.sources.len();
                    out.add(i, &l);
                    out.seeded.push(match f {
                        CacheFrom::Registry { reference } => {
                            Seeded::Registry(reference.to_string())
                        }
                        CacheFrom::Local { src, .. } => Seeded::Local(src.clone()),
                    });
                    b.note(&format!(
                        "cache {name}: {} steps, {} cache mounts",
                        l.config.records.len(),
                        l.config.mounts.len()
                    ));
                    out.sources.push((name, src, index));
                }
                Err(e) => b.note(&format!(
                    "warning: importing the cache {name} failed; building without it: {}",
                    error::with_causes(&e)
                )),
            }
        }
        out
    }

    fn add(&mut self, source: usize, l: &Loaded) {
        let rec = |i: usize| -> Option<LayerRec> {
            let d = l.layers.get(i)?;
            Some(LayerRec {
                diff_id: l.config.diff_ids.get(i)?.clone(),
                digest: d.digest.clone(),
                size: d.size,
                media_type: d.media_type.clone(),
            })
        };
        for (i, d) in l.layers.iter().enumerate() {
            if l.config.diff_ids.get(i).is_some() {
                self.blobs.entry(d.digest.clone()).or_insert(RemoteBlob {
                    source,
                    desc: d.clone(),
                });
            }
        }
        for r in &l.config.records {
            let layer = match r.layer {
                Some(i) => match rec(i) {
                    Some(x) => Some(x),
                    None => continue,
                },
                None => None,
            };
            // The first source that has a key wins (a branch's cache before main's).
            self.records.entry(r.key.clone()).or_insert(Record {
                layer,
                created: r.created.clone(),
                dirs: r.dirs.clone(),
                chain: r.chain.clone(),
            });
        }
        for m in &l.config.mounts {
            if let Some(x) = rec(m.layer) {
                self.mounts.entry(m.id.clone()).or_insert(x);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The record of `key` that an earlier build imported and kept with where its layer is
    /// (`v1/cache-remote`): a hit whose layer is fetched from there when it is needed
    /// ([`Imported::fetch`]).
    ///
    /// Its layer is taken on no more trust than an import's: checked against its digest, size
    /// and diffID when it is fetched, or against the store's blob when that is there. One that
    /// fails is a [`BadImport`] of the source [`REMEMBERED`]: the build forgets the records of
    /// that layer and starts again.
    pub fn remembered(&self, store: &Store, key: &Digest) -> Option<Record> {
        let bytes = fs_err::read(remote_dir(store).join(key.hex())).ok()?;
        let r: RemoteRecord = serde_json::from_slice(&bytes).ok()?;
        if let Some(l) = &r.record.layer {
            self.claim(l);
            if !store.has_blob(&l.digest) {
                self.remembered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(l.digest.clone(), (r.from.clone(), l.clone()));
            }
        }
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        Some(r.record)
    }

    /// Where blob `d` of an imported or remembered step can be fetched from.
    fn seeded_from(&self, d: &Digest) -> Option<Seeded> {
        match self.blobs.get(d) {
            Some(b) => self.seeded.get(b.source).cloned(),
            None => self
                .remembered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(d)
                .map(|(s, _)| s.clone()),
        }
    }

    /// The imported record of `key`; its layer is fetched when it is needed
    /// ([`Imported::fetch`]). When the store already holds the layer's blob, the record's
    /// diffID for it is checked now: a record that does not bear out is a miss (said), and the
    /// step runs.
    pub(crate) fn get(&self, b: &Build, key: &Digest) -> Option<Record> {
        let r = self.records.get(key)?.clone();
        if let Some(l) = &r.layer {
            if b.store.has_blob(&l.digest) {
                if let Err(e) = self.check_present(b, &l.digest, &l.diff_id) {
                    b.note(&format!(
                        "warning: {e}; the step {} runs instead",
                        key.short()
                    ));
                    return None;
                }
            } else {
                self.claim(l);
            }
        }
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        Some(r)
    }

    fn claim(&self, l: &LayerRec) {
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((l.digest.clone(), l.diff_id.clone()));
    }

    fn is_verified(&self, digest: &Digest, diff_id: &Digest) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(digest.clone(), diff_id.clone()))
    }

    fn set_verified(&self, digest: &Digest, diff_id: &Digest) {
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((digest.clone(), diff_id.clone()));
    }

    /// The name and `--cache-from` index of the source that has blob `d` ([`REMEMBERED`] for
    /// a layer of a remembered record).
    fn source_of(&self, d: &Digest) -> Option<(String, usize)> {
        if let Some(rb) = self.blobs.get(d) {
            let (name, _, index) = self.sources.get(rb.source)?;
            return Some((name.clone(), *index));
        }
        let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        remembered
            .get(d)
            .map(|(from, _)| (from.describe(), REMEMBERED))
    }

    /// Check that the store's blob `digest` is the layer `diff_id` (read, inflated and hashed;
    /// once per pair and build).
    fn check_present(&self, b: &Build, digest: &Digest, diff_id: &Digest) -> Result<(), BadImport> {
        if self.is_verified(digest, diff_id) {
            return Ok(());
        }
        let (name, source) = self
            .source_of(digest)
            .unwrap_or_else(|| ("--cache-from".into(), usize::MAX));
        let bad = |reason: String| BadImport {
            cache_from: source,
            name: name.clone(),
            digest: digest.clone(),
            reason,
        };
        let actual = b
            .store
            .open_blob(digest)
            .map_err(|e| bad(e.to_string()))
            .and_then(|f| {
                let r = crate::layer::decompress(std::io::BufReader::new(f))
                    .map_err(|e| bad(format!("not a readable layer: {e}")))?;
                let mut h = oci::HashingReader::new(r);
                std::io::copy(&mut h, &mut std::io::sink())
                    .map_err(|e| bad(format!("not a readable layer: {e}")))?;
                Ok(h.finish().0)
            })?;
        if &actual != diff_id {
            return Err(bad(format!(
                "its record gives it the diffID {diff_id}, but its content is {actual}"
            )));
        }
        self.set_verified(digest, diff_id);
        Ok(())
    }

    pub fn hit_here(&self, key: &Digest) -> bool {
        self.hits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    /// Whether a source has blob `d`.
    pub fn has(&self, d: &Digest) -> bool {
        self.blobs.contains_key(d)
            || self
                .remembered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(d)
    }

    /// The registry repository blob `d` would come from.
    fn location_of(&self, d: &Digest) -> Option<String> {
        let b = self.blobs.get(d)?;
        match &self.sources.get(b.source)?.1 {
            Source::Registry(r) => Some(r.location()),
            Source::Local(_) => None,
        }
    }

    /// Bring blob `digest`, which the build uses as the layer `diff_id`, into the store from
    /// the source that has it, checked on the way against its digest, its size and `diff_id`
    /// (a registry's layer and a local layout's alike). A blob the store holds is checked when
    /// an imported record gave it that diffID; otherwise (the build's own records) it is
    /// used as it is. A failure is a [`BadImport`] (the caller's build starts again without
    /// that cache), except a cancellation.
    pub(crate) fn fetch(
        &self,
        b: &Build,
        digest: &Digest,
        diff_id: &Digest,
    ) -> Result<(), BuildError> {
        if self.is_verified(digest, diff_id) {
            return Ok(());
        }
        if b.store.has_blob(digest) {
            let claimed = self
                .claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(digest.clone(), diff_id.clone()));
            if claimed {
                self.check_present(b, digest, diff_id)?;
            }
            return Ok(());
        }
        let Some(rb) = self.blobs.get(digest) else {
            let remembered = self
                .remembered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(digest)
                .cloned();
            let Some((from, l)) = remembered else {
                return Err(RemoteCacheError::NotImported {
                    digest: digest.clone(),
                }
                .into());
            };
            return match fetch_seeded(b, &from, &l) {
                Ok(()) => {
                    self.set_verified(digest, diff_id);
                    Ok(())
                }
                Err(e) if cancelled(&e) => Err(e),
                Err(e) => Err(BadImport {
                    cache_from: REMEMBERED,
                    name: format!(
                        "{}, where an earlier --cache-from found it",
                        from.describe()
                    ),
                    digest: digest.clone(),
                    reason: error::with_causes(&e),
                }
                .into()),
            };
        };
        let (name, src, index) = &self.sources[rb.source];
        let r = match src {
            Source::Registry(repo) => b
                .source
                .registry()
                .map_err(BuildError::from)
                .and_then(|reg| Ok(repo.layer(reg, b.store, &rb.desc, diff_id)?)),
            Source::Local(dir) => Layout::at(dir)
                .open_blob(digest)
                .map_err(BuildError::from)
                .and_then(|f| copy_layer_checked(b.store, f, &rb.desc, diff_id)),
        };
        match r {
            Ok(()) => {
                self.set_verified(digest, diff_id);
                Ok(())
            }
            Err(e) if cancelled(&e) => Err(e),
            Err(e) => Err(BadImport {
                cache_from: *index,
                name: name.clone(),
                digest: digest.clone(),
                reason: error::with_causes(&e),
            }
            .into()),
        }
    }

    /// The imported content of cache mount `id`, if a source has it.
    pub fn mount(&self, id: &str) -> Option<&LayerRec> {
        let l = self.mounts.get(id)?;
        self.claim(l);
        Some(l)
    }
}

impl Seeded {
    fn describe(&self) -> String {
        match self {
            Seeded::Registry(r) => r.clone(),
            Seeded::Local(d) => d.display().to_string(),
        }
    }
}

/// Fetch layer `l` from `from` into the store, verified as an import's layers are.
fn fetch_seeded(b: &Build, from: &Seeded, l: &LayerRec) -> Result<(), BuildError> {
    let desc = l.descriptor();
    match from {
        Seeded::Registry(r) => {
            let reference = Reference::parse(r)?;
            let reg = b.source.registry()?;
            let repo = reg.repo(&reference)?;
            Ok(repo.layer(reg, b.store, &desc, &l.diff_id)?)
        }
        Seeded::Local(dir) => {
            let f = Layout::at(dir).open_blob(&l.digest)?;
            copy_layer_checked(b.store, f, &desc, &l.diff_id)
        }
    }
}

/// Keep the steps this build hit in an imported cache as the store's own: those whose layer
/// is here (or that have none) in the local cache, the others with where their layer is
/// (`v1/cache-remote`), so that a later build without `--cache-from` hits them too and fetches
/// a layer only when something needs its files. Best effort.
pub(crate) fn remember(b: &Build) {
    let applied = b.applied.lock().unwrap_or_else(|e| e.into_inner());
    let dir = remote_dir(b.store);
    for a in applied.iter() {
        if !b.imported.hit_here(&a.key) {
            continue;
        }
        let remote = dir.join(a.key.hex());
        let here = a
            .record
            .layer
            .as_ref()
            .is_none_or(|l| b.store.has_blob(&l.digest));
        if here {
            if cache::put(b.store, &a.key, &a.record).is_ok() {
                let _ = std::fs::remove_file(&remote);
            }
            continue;
        }
        let Some(from) = a
            .record
            .layer
            .as_ref()
            .and_then(|l| b.imported.seeded_from(&l.digest))
        else {
            continue;
        };
        let rec = RemoteRecord {
            record: a.record.clone(),
            from,
        };
        let _ = (|| -> Result<(), BuildError> {
            fs_err::create_dir_all(&dir)?;
            crate::store::write_atomic(&b.store.tmp_dir(), &remote, &serde_json::to_vec(&rec)?)?;
            Ok(())
        })();
    }
}

/// Remove the remote records (`prune --cache`).
pub fn forget_remote(store: &Store) -> usize {
    let dir = remote_dir(store);
    let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    n
}

/// How many steps are kept with a remote layer.
pub fn remote_records(store: &Store) -> usize {
    std::fs::read_dir(remote_dir(store))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Copy the layer blob `desc` from `r` (a local layout's file) into the store, checked as a
/// registry's layer is: its digest and size as it is copied, and its content, inflated on a
/// thread of its own in the same pass, against `diff_id`. Nothing is stored unless all hold.
fn copy_layer_checked(
    store: &Store,
    mut r: impl std::io::Read,
    desc: &Descriptor,
    diff_id: &Digest,
) -> Result<(), BuildError> {
    use std::io::Write;
    let mut tmp = store.temp_file()?;
    let mut hasher = oci::Sha256::new();
    let mut tee = crate::layer::DiffIdTee::new()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut have = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        have += n as u64;
        if have > desc.size {
            return Err(RemoteCacheError::TooLong { size: desc.size }.into());
        }
        hasher.update(&buf[..n]);
        tee.feed(&buf[..n]);
        tmp.file_mut().write_all(&buf[..n])?;
    }
    let actual = hasher.finish();
    if actual != desc.digest || have != desc.size {
        return Err(RemoteCacheError::WrongDigest {
            have,
            size: desc.size,
            actual,
            digest: desc.digest.clone(),
        }
        .into());
    }
    let paths = match tee.finish() {
        Ok((actual, _, paths)) if &actual == diff_id => paths,
        Ok((actual, len, _)) => {
            return Err(RemoteCacheError::WrongDiffId {
                len,
                actual,
                diff_id: diff_id.clone(),
            }
            .into())
        }
        Err(cause) => return Err(RemoteCacheError::Unreadable { cause }.into()),
    };
    store.commit_blob(tmp, &desc.digest)?;
    if let Some(p) = paths {
        let _ = store.put_layer_paths(&desc.digest, &p);
    }
    Ok(())
}

/// The stages whose steps make the final image: the target and the stages it is built FROM.
pub(crate) fn final_stages(b: &Build) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut i = b.plan.target;
    loop {
        out.insert(i);
        match &b.plan.stages[i].base {
            crate::plan::Base::Stage(j) => i = *j,
            _ => return out,
        }
    }
}

/// The steps to export: those of the final image (`max`: of every stage), each key once.
fn selected(b: &Build, max: bool) -> Vec<Applied> {
    let keep = final_stages(b);
    let mut seen = BTreeSet::new();
    b.applied
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|a| max || keep.contains(&a.stage))
        .filter(|a| seen.insert(a.key.clone()))
        .cloned()
        .collect()
}

/// The inline cache of the final image's steps: records whose layers are the image's own.
pub(crate) fn inline(b: &Build, diff_ids: &[Digest]) -> serde_json::Value {
    let now = oci::now_secs();
    let records = selected(b, false)
        .into_iter()
        .filter_map(|a| {
            let layer = match &a.record.layer {
                Some(l) => Some(diff_ids.iter().position(|d| d == &l.diff_id)?),
                None => None,
            };
            Some(RecordEntry {
                key: a.key,
                layer,
                created: a.record.created,
                dirs: a.record.dirs,
                chain: a.record.chain,
                used: now,
            })
        })
        .collect();
    serde_json::to_value(InlineCache {
        key_version: cache::KEY_VERSION,
        records,
    })
    .unwrap_or_default()
}

/// A layer going into an export: its descriptor there, diffID, and whether the destination
/// already has it (then it is neither read nor sent).
#[derive(Clone)]
struct Out {
    desc: Descriptor,
    diff_id: Digest,
    there: bool,
}

/// What an export wrote.
pub struct Exported {
    pub records: usize,
    pub mounts: usize,
    pub layers: usize,
    pub bytes: u64,
    pub dropped: usize,
    pub digest: Digest,
}

/// Write the build's cache to every `--cache-to` (inline is done with the image). A failure
/// is an error unless the destination says `ignore-error=true`.
///
/// The platforms of a multi-platform build each export their steps into the same destinations:
/// one at a time (each merges with what the one before wrote, and a layout's unused blobs are
/// removed after a write, which must not meet another write in the middle).
pub(crate) fn export_all(b: &Build) -> Result<(), BuildError> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    if b.opts.cache_to.iter().all(|t| t.opts().is_none()) {
        return Ok(());
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for to in &b.opts.cache_to {
        let Some(opts) = to.opts() else { continue };
        let started = std::time::Instant::now();
        match export(b, to, opts) {
            Ok(e) => b.note(&format!(
                "exported {} {}: {} steps, {} cache mounts, {} layers ({}){} as {} in {:.1}s",
                if b.label.is_empty() {
                    "the cache to".to_string()
                } else {
                    // One platform's steps, merged with the others' there.
                    format!("the {}steps to the cache", b.label)
                },
                to.describe(),
                e.records,
                e.mounts,
                e.layers,
                human(e.bytes),
                if e.dropped > 0 {
                    format!(", {} oldest steps dropped past max-size", e.dropped)
                } else {
                    String::new()
                },
                e.digest.short(),
                started.elapsed().as_secs_f64()
            )),
            Err(e) if opts.ignore_error => b.note(&format!(
                "warning: exporting the cache to {} failed (ignore-error=true): {}",
                to.describe(),
                error::with_causes(&e)
            )),
            Err(e) => return Err(e.doing(format!("exporting the cache to {}", to.describe()))),
        }
    }
    Ok(())
}

fn export(b: &Build, to: &CacheTo, opts: &ExportOptions) -> Result<Exported, BuildError> {
    let now = oci::now_secs();
    let reg_repo = match to {
        CacheTo::Registry { reference, .. } => {
            let reg = b.source.registry()?;
            Some((reg, reg.repo(reference)?))
        }
        _ => None,
    };
    // What the destination has now, to merge with. One that cannot be read (damaged, or not
    // a cache) is replaced, as BuildKit does, with a warning.
    let existing = match (to, &reg_repo) {
        (CacheTo::Registry { .. }, Some((reg, repo))) => {
            load_registry(reg, b.store, repo, &b.plan.options.target_platform)
        }
        (CacheTo::Local { dest, tag, .. }, _) => {
            load_local(dest, tag, &b.plan.options.target_platform)
        }
        _ => Ok(None),
    }
    .unwrap_or_else(|e| {
        b.note(&format!(
            "warning: the cache at {} cannot be read ({}); it is replaced, not merged",
            to.describe(),
            error::with_causes(&e)
        ));
        None
    })
    .filter(|l| l.config.key_version == cache::KEY_VERSION);
    // Whether the destination holds a blob the store does not (an imported layer never
    // fetched): the registry repository it came from, or the layout directory itself.
    let dest_location = reg_repo.as_ref().map(|(_, r)| r.location());
    let there = |d: &Digest| match to {
        CacheTo::Local { dest, .. } => Layout::at(dest).has_blob(d),
        _ => {
            dest_location.is_some() && b.imported.location_of(d).as_ref() == dest_location.as_ref()
        }
    };
    let mut merged = Merged::from_existing(existing.as_ref());
    merged.add_steps(b, opts, &there, now)?;
    if opts.mounts {
        merged.add_mounts(b, opts, &there, now)?;
    }
    let fitted = merged.fit(opts.max_size);
    let layers = &merged.layers;
    let config = CacheConfig {
        key_version: cache::KEY_VERSION,
        diff_ids: fitted
            .layers
            .iter()
            .map(|d| layers[d].diff_id.clone())
            .collect(),
        records: fitted.records,
        mounts: fitted.mounts,
    };
    let cbytes = oci::canonical_json(&config);
    let cdigest = b.store.put_blob(&cbytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config: Descriptor::new(CONFIG_MEDIA_TYPE, cdigest, cbytes.len() as u64),
        layers: fitted
            .layers
            .iter()
            .map(|d| layers[d].desc.clone())
            .collect(),
        annotations: Default::default(),
    };
    let mbytes = oci::canonical_json(&manifest);
    let to_send: Vec<Descriptor> = std::iter::once(manifest.config.clone())
        .chain(
            fitted
                .layers
                .iter()
                .filter(|d| !layers[*d].there)
                .map(|d| layers[d].desc.clone()),
        )
        .collect();
    let digest = match (to, &reg_repo) {
        (CacheTo::Registry { .. }, Some((reg, repo))) => {
            repo.put(reg, b.store, &to_send, media::OCI_MANIFEST, &mbytes)?
                .0
        }
        (CacheTo::Local { dest, tag, .. }, _) => {
            write_layout(b.store, dest, tag, &to_send, &mbytes)?
        }
        _ => {
            return Err(error::Error::Internal("inline cache in export".into()).into());
        }
    };
    Ok(Exported {
        records: config.records.len(),
        mounts: config.mounts.len(),
        layers: fitted.layers.len(),
        bytes: fitted.bytes,
        dropped: fitted.dropped,
        digest,
    })
}

/// What an export merges: the layers by digest, and the records and cache mounts that point
/// to them by digest (their index in the manifest is given once they are fitted).
#[derive(Default)]
struct Merged {
    layers: BTreeMap<Digest, Out>,
    /// key → (record entry with no index yet, its layer digest)
    records: BTreeMap<Digest, (RecordEntry, Option<Digest>)>,
    /// id → (when it was last used, its layer digest)
    mounts: BTreeMap<String, (i64, Digest)>,
}

/// The records and mounts an export keeps, and the layers they use in the manifest's order.
struct Fitted {
    layers: Vec<Digest>,
    records: Vec<RecordEntry>,
    mounts: Vec<MountEntry>,
    /// The size of the layers kept.
    bytes: u64,
    /// How many records and mounts were left out past max-size.
    dropped: usize,
}

impl Merged {
    /// What the destination holds already (its layers are there).
    fn from_existing(existing: Option<&Loaded>) -> Merged {
        let mut m = Merged::default();
        let Some(l) = existing else { return m };
        for (i, d) in l.layers.iter().enumerate() {
            m.layers.insert(
                d.digest.clone(),
                Out {
                    desc: d.clone(),
                    diff_id: l.config.diff_ids[i].clone(),
                    there: true,
                },
            );
        }
        for r in &l.config.records {
            let d = r
                .layer
                .and_then(|i| l.layers.get(i))
                .map(|d| d.digest.clone());
            m.records.insert(r.key.clone(), (r.clone(), d));
        }
        for mt in &l.config.mounts {
            if let Some(d) = l.layers.get(mt.layer) {
                m.mounts.insert(mt.id.clone(), (mt.used, d.digest.clone()));
            }
        }
        m
    }

    /// This build's steps, used `now`.
    fn add_steps(
        &mut self,
        b: &Build,
        opts: &ExportOptions,
        there: &dyn Fn(&Digest) -> bool,
        now: i64,
    ) -> Result<(), BuildError> {
        for a in selected(b, opts.max) {
            let d = match &a.record.layer {
                None => None,
                Some(l) => Some(add_layer(b, opts, there, &mut self.layers, l)?),
            };
            self.records.insert(
                a.key.clone(),
                (
                    RecordEntry {
                        key: a.key,
                        layer: None,
                        created: a.record.created,
                        dirs: a.record.dirs,
                        chain: a.record.chain,
                        used: now,
                    },
                    d,
                ),
            );
        }
        Ok(())
    }

    /// The cache mounts the build used, by id, while they fit in mounts-max-size.
    fn add_mounts(
        &mut self,
        b: &Build,
        opts: &ExportOptions,
        there: &dyn Fn(&Digest) -> bool,
        now: i64,
    ) -> Result<(), BuildError> {
        let used: Vec<String> = b
            .mounts_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut budget = opts.mounts_max_size;
        for id in used {
            match mount_layer(b, &id, opts.compression)? {
                None => {}
                Some((_, tar_size)) if tar_size > budget => b.note(&format!(
                    "cache mount {id} ({}) left out of the export: past mounts-max-size ({} left of {})",
                    human(tar_size),
                    human(budget),
                    human(opts.mounts_max_size)
                )),
                Some((info, tar_size)) => {
                    budget -= tar_size;
                    let rec = LayerRec::from(info);
                    let d = add_layer(b, opts, there, &mut self.layers, &rec)?;
                    self.mounts.insert(id, (now, d));
                }
            }
        }
        Ok(())
    }

    /// Newest first (then by key or id); keep records and mounts while their layers fit in
    /// `max_size`. A layer shared by several is counted and listed once.
    fn fit(&self, max_size: u64) -> Fitted {
        enum Item<'a> {
            Record(&'a RecordEntry, Option<&'a Digest>),
            Mount(&'a str, i64, &'a Digest),
        }
        let mut order: Vec<(i64, &str, Item)> = self
            .records
            .values()
            .map(|(r, d)| (r.used, r.key.as_str(), Item::Record(r, d.as_ref())))
            .chain(
                self.mounts
                    .iter()
                    .map(|(id, (u, d))| (*u, id.as_str(), Item::Mount(id, *u, d))),
            )
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let mut kept_layers: Vec<Digest> = Vec::new();
        let mut index: BTreeMap<Digest, usize> = BTreeMap::new();
        let mut total = 0u64;
        let mut out_records = Vec::new();
        let mut out_mounts = Vec::new();
        let mut dropped = 0;
        for (_, _, item) in order {
            let layer = match &item {
                Item::Record(_, d) => *d,
                Item::Mount(_, _, d) => Some(*d),
            };
            let add = match layer {
                Some(d) if !index.contains_key(d) => self.layers[d].desc.size,
                _ => 0,
            };
            if total + add > max_size {
                dropped += 1;
                continue;
            }
            total += add;
            let idx = layer.map(|d| {
                *index.entry(d.clone()).or_insert_with(|| {
                    kept_layers.push(d.clone());
                    kept_layers.len() - 1
                })
            });
            match item {
                Item::Record(r, _) => out_records.push(RecordEntry {
                    layer: idx,
                    ..r.clone()
                }),
                Item::Mount(id, used, _) => out_mounts.push(MountEntry {
                    id: id.to_string(),
                    layer: idx.unwrap_or(0),
                    used,
                }),
            }
        }
        out_records.sort_by(|a, b| a.key.cmp(&b.key));
        out_mounts.sort_by(|a, b| a.id.cmp(&b.id));
        Fitted {
            layers: kept_layers,
            records: out_records,
            mounts: out_mounts,
            bytes: total,
            dropped,
        }
    }
}

/// Make layer `l` ready to export: compressed as asked when the store holds it uncompressed,
/// fetched from an imported cache unless the destination has it already (`there`). Returns the digest it has in the export.
fn add_layer(
    b: &Build,
    opts: &ExportOptions,
    there: &dyn Fn(&Digest) -> bool,
    layers: &mut BTreeMap<Digest, Out>,
    l: &LayerRec,
) -> Result<Digest, BuildError> {
    if let Some(o) = layers.get(&l.digest) {
        return Ok(o.desc.digest.clone());
    }
    if !b.store.has_blob(&l.digest) {
        if there(&l.digest) {
            layers.insert(
                l.digest.clone(),
                Out {
                    desc: l.descriptor(),
                    diff_id: l.diff_id.clone(),
                    there: true,
                },
            );
            return Ok(l.digest.clone());
        }
        b.imported.fetch(b, &l.digest, &l.diff_id)?;
    }
    let mut desc = l.descriptor();
    let uncompressed =
        desc.media_type == media::OCI_LAYER || desc.media_type == media::DOCKER_LAYER_TAR;
    if uncompressed && opts.compression != Compression::None {
        desc = b.store.compressed_layer(&desc, opts.compression)?;
    }
    if desc.media_type == media::DOCKER_LAYER_GZIP {
        desc.media_type = media::OCI_LAYER_GZIP.into();
    }
    let d = desc.digest.clone();
    layers.insert(
        d.clone(),
        Out {
            desc,
            diff_id: l.diff_id.clone(),
            there: false,
        },
    );
    Ok(d)
}

/// The content of cache mount `id` as a layer in the store, and its tar's size (`None` when
/// the build left no such directory).
fn mount_layer(
    b: &Build,
    id: &str,
    compression: Compression,
) -> Result<Option<(crate::layer::LayerInfo, u64)>, BuildError> {
    let dir = crate::engine::cache::cache_mount_dir(b.store, id);
    if !dir.is_dir() {
        return Ok(None);
    }
    let tmp = crate::engine::state::step_dir(b, "mount-export")?;
    let tar = tmp.join("layer.tar");
    let r = (|| {
        crate::engine::hooks::hook_done(
            &b.exe,
            crate::engine::hooks::Hook::TarDir {
                dir: dir.clone(),
                out: tar.clone(),
            },
            &b.maps,
            &format!("reading cache mount {id}"),
        )?;
        let size = fs_err::metadata(&tar)?.len();
        let c = if compression == Compression::None {
            Compression::GZIP
        } else {
            compression
        };
        Ok((b.store.put_layer_file(&tar, c)?, size))
    })();
    let _ = fs_err::remove_dir_all(&tmp);
    r.map(Some)
}

/// Seed the empty cache mount `id` at `dir` from an imported cache: its layer unpacked into a
/// directory beside it, renamed into place when complete. Returns false when no source has it.
pub(crate) fn seed_mount(b: &Build, id: &str, dir: &Path) -> Result<bool, BuildError> {
    let Some(l) = b.imported.mount(id).cloned() else {
        return Ok(false);
    };
    // An imported content that cannot be used (missing, damaged, not what its record says)
    // leaves the mount empty, as a cache without it would: a warning, not a failed step.
    if let Err(e) = b.imported.fetch(b, &l.digest, &l.diff_id) {
        b.note(&format!(
            "warning: cache mount {id}: the imported content cannot be used ({}); it starts empty",
            error::with_causes(&e)
        ));
        return Ok(false);
    }
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let tmp = dir.with_extension(format!("seed-{}-{n}", std::process::id()));
    if tmp.exists() {
        crate::engine::exec::remove_tree(&tmp, &b.maps)?;
    }
    fs_err::create_dir_all(&tmp)?;
    let unpack = crate::engine::hooks::Hook::Unpack {
        blob: b.store.blob_path(&l.digest),
        dest: tmp.clone(),
        diff_id: l.diff_id.clone(),
        lower: Vec::new(),
    };
    if let Err(e) = crate::engine::hooks::hook_done(
        &b.exe,
        unpack,
        &b.maps,
        &format!("seeding cache mount {id}"),
    ) {
        let _ = crate::engine::exec::remove_tree(&tmp, &b.maps);
        if b.schedule.failed() {
            return Err(e);
        }
        b.note(&format!(
            "warning: cache mount {id}: the imported content cannot be unpacked ({}); it starts empty",
            error::with_causes(&e)
        ));
        return Ok(false);
    }
    if let Err(e) = std::fs::rename(&tmp, dir) {
        // Another step seeded it at the same moment: theirs is as good.
        let _ = crate::engine::exec::remove_tree(&tmp, &b.maps);
        if !dir.is_dir() {
            return Err(e).doing(format!("seeding cache mount {id}"));
        }
        return Ok(true);
    }
    b.note(&format!(
        "cache mount {id}: seeded from the imported cache ({})",
        human(l.size)
    ));
    Ok(true)
}

/// Write blobs, then the manifest, then `index.json` (atomically, keeping its other entries),
/// then remove the blobs no manifest of the layout refers to any more (those a merge
/// dropped), so a directory a CI system caches does not grow past `max-size`.
fn write_layout(
    store: &Store,
    dest: &Path,
    tag: &str,
    blobs: &[Descriptor],
    manifest: &[u8],
) -> Result<Digest, BuildError> {
    let layout = Layout::create(dest)?;
    let put = |d: &Digest, from: &mut dyn std::io::Read| -> Result<(), BuildError> {
        let tmp = format!(".blob-{}-{}", crate::store::owner_tag(), d.hex());
        layout.put_blob(d, &tmp, |p| -> Result<(), BuildError> {
            let mut f = fs_err::File::create_new(p)?;
            std::io::copy(from, &mut f)?;
            f.sync_all()?;
            Ok(())
        })?;
        Ok(())
    };
    for d in blobs {
        let mut f = store.open_blob(&d.digest)?;
        put(&d.digest, &mut f)?;
    }
    let mdigest = Digest::of(manifest);
    put(&mdigest, &mut &manifest[..])?;
    let mut idx = layout.index()?.unwrap_or_default();
    let mut desc = Descriptor::new(media::OCI_MANIFEST, mdigest.clone(), manifest.len() as u64);
    desc.annotations.insert(oci::REF_NAME.into(), tag.into());
    oci::layout::set_entry(&mut idx, desc);
    layout.write_index(&idx)?;
    layout.remove_unused(&idx);
    Ok(mdigest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_options_parse_like_buildx() {
        let t =
            CacheTo::parse("type=registry,ref=reg.test/app:cache,mode=max,mounts=true").unwrap();
        let CacheTo::Registry { reference, opts } = t else {
            panic!("not a registry cache")
        };
        assert_eq!(reference.to_string(), "reg.test/app:cache");
        assert!(opts.max && opts.mounts && !opts.ignore_error);
        assert_eq!(opts.max_size, DEFAULT_MAX_SIZE);
        assert!(matches!(
            CacheTo::parse("type=local,dest=/c,max-size=1GB").unwrap(),
            CacheTo::Local {
                opts: ExportOptions {
                    max: false,
                    max_size: 1073741824,
                    ..
                },
                ..
            }
        ));
        assert_eq!(CacheTo::parse("type=inline").unwrap(), CacheTo::Inline);
        assert_eq!(
            CacheFrom::parse("reg.test/app:cache").unwrap(),
            CacheFrom::Registry {
                reference: Reference::parse("reg.test/app:cache").unwrap()
            }
        );
        for bad in [
            "type=registry",
            "type=registry,ref=reg.test/a,mode=medium",
            "type=registry,ref=reg.test/a,colour=blue",
            "type=registry,ref=reg.test/a@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "type=gha",
            "type=local",
            "type=registry,ref=reg.test/a,max-size=lots",
        ] {
            assert!(CacheTo::parse(bad).is_err(), "{bad}");
        }
        let e = CacheTo::parse("type=registry,ref=reg.test/a,colour=blue")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour") && e.contains("known"), "{e}");
        assert!(CacheFrom::parse("type=local").is_err());
        // Typed errors, with the texts they had as strings.
        assert_eq!(
            CacheFrom::parse("type=local").unwrap_err(),
            CacheOptionError::LocalNeeds {
                what: "--cache-from",
                needs: "src=DIR"
            }
        );
        for (bad, text) in [
            ("type=local", "--cache-to type=local needs dest=DIR"),
            (
                "type=gha",
                "--cache-to: unsupported type \"gha\": use registry, local or inline",
            ),
            (
                "type=registry,ref=r.test/a,mode=all",
                "--cache-to: mode=all: expected min or max",
            ),
            (
                "type=registry,ref=r.test/a,mounts=2",
                "invalid mounts value \"2\": expected true or false",
            ),
            (
                "type=registry,ref=r.test/a,max-size=lots",
                "--cache-to: max-size=lots: expected a size such as 10GB",
            ),
            ("a=1,a=2", "cache option \"a\" given twice"),
        ] {
            assert_eq!(CacheTo::parse(bad).unwrap_err().to_string(), text);
        }
        // Sizes as Docker reads them (the parser of RUN --mount=type=tmpfs,size=).
        let size = crate::dockerfile::instructions::parse_size;
        assert_eq!(size("512MiB"), Some(512 << 20));
        assert_eq!(size("2g"), Some(2 << 30));
        assert_eq!(size("1.5kb"), Some(1536));
        assert_eq!(size("x"), None);
    }
}
