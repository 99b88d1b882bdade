//! Attestations as BuildKit makes and stores them, so that registries and tools that read
//! buildx's read strata's: in-toto Statements (v1) about an image manifest, an SBOM
//! (predicate `https://spdx.dev/Document`) and SLSA provenance (v0.2 or v1), each a layer
//! (`application/vnd.in-toto+json`, annotated `in-toto.io/predicate-type`) of an *attestation
//! manifest*, which the image index lists after the image with platform `unknown/unknown` and
//! the annotations `vnd.docker.reference.type: attestation-manifest` and
//! `vnd.docker.reference.digest: <the image manifest's digest>` (BuildKit's
//! docs/attestations/attestation-storage.md).
//!
//! Pure: facts in, canonical JSON bytes out. The provenance is made from [`BuildFacts`] only,
//! which holds no secret: a build's secrets never reach it (build arguments are not secrets, as
//! for BuildKit; `--secret` values and files are not build facts at all).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::oci::{self, canonical_json, media, Descriptor, Digest, Manifest, Platform};

/// The in-toto Statement type.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The predicate type of an SPDX SBOM.
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
/// The predicate type of a CycloneDX SBOM.
pub const CYCLONEDX_PREDICATE: &str = "https://cyclonedx.org/bom";
pub const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
/// The media type of an attestation layer.
pub const IN_TOTO_LAYER: &str = "application/vnd.in-toto+json";
/// The layer annotation naming its predicate type.
pub const PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// The index-descriptor annotations of an attestation manifest.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// What strata's provenance names as its build type (a URN: strata has no web address to
/// name; the README's Supply chain section documents the predicate).
pub const BUILD_TYPE: &str = "urn:strata:build-type:dockerfile:v1";
/// The key of strata's own metadata in the provenance.
pub const METADATA_KEY: &str = "urn:strata:metadata";

/// `unknown/unknown`: the platform of an attestation manifest, so that no runtime picks it.
pub fn unknown_platform() -> Platform {
    Platform {
        architecture: "unknown".into(),
        os: "unknown".into(),
        os_version: None,
        variant: None,
    }
}

/// Is `d` (an index entry) an attestation manifest?
pub fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.get(REFERENCE_TYPE).map(String::as_str) == Some(ATTESTATION_MANIFEST)
}

/// An in-toto Statement v1 about the image manifest `subject`, named by `names` (purls of
/// the image's tags; `_` when it has none, as BuildKit).
pub fn statement(
    subject: &Digest,
    names: &[String],
    predicate_type: &str,
    predicate: Value,
) -> Vec<u8> {
    let names: Vec<&str> = if names.is_empty() {
        vec!["_"]
    } else {
        names.iter().map(String::as_str).collect()
    };
    let subjects: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "digest": {"sha256": subject.hex()}}))
        .collect();
    oci::canonical_value_json(&json!({
        "_type": STATEMENT_V1,
        "subject": subjects,
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
}

/// The purl BuildKit names an image by: `pkg:docker/NAME@TAG?platform=OS%2FARCH`.
pub fn image_purl(reference: &str, platform: Option<&Platform>) -> String {
    let (name, tag) = match oci::Reference::parse(reference) {
        Ok(r) => (r.name(), r.tag().to_string()),
        Err(_) => (reference.to_string(), String::new()),
    };
    let mut segments: Vec<&str> = name.split('/').collect();
    let last = segments.pop().unwrap_or_default();
    let platform = platform.map(|p| p.to_string()).unwrap_or_default();
    super::purl::make(
        "docker",
        &segments,
        last,
        Some(&tag),
        &[("platform", platform.as_str())],
    )
}

/// One blob of an attestation manifest: a statement and its predicate type.
pub struct Attestation {
    pub predicate_type: String,
    pub statement: Vec<u8>,
}

/// The blobs of an attestation manifest for `subject`: the config, the layers (one per
/// statement) and the manifest itself, each as (descriptor, bytes), and the descriptor the
/// index lists it with.
pub struct AttestationManifest {
    pub blobs: Vec<(Descriptor, Vec<u8>)>,
    pub manifest: Vec<u8>,
    pub descriptor: Descriptor,
}

/// The attestation manifest of `attestations` about the image manifest `subject`.
pub fn attestation_manifest(subject: &Digest, attestations: &[Attestation]) -> AttestationManifest {
    let mut blobs = Vec::new();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for a in attestations {
        let d = Digest::of(&a.statement);
        let mut desc = Descriptor::new(IN_TOTO_LAYER, d.clone(), a.statement.len() as u64);
        desc.annotations
            .insert(PREDICATE_ANNOTATION.into(), a.predicate_type.clone());
        diff_ids.push(d.to_string());
        layers.push(desc.clone());
        blobs.push((desc, a.statement.clone()));
    }
    // A small config, only there for compatibility (BuildKit's own has these fields).
    let config = oci::canonical_value_json(&json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }));
    let config_desc = Descriptor::new(media::OCI_CONFIG, Digest::of(&config), config.len() as u64);
    blobs.push((config_desc.clone(), config));
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config: config_desc,
        layers,
        annotations: BTreeMap::new(),
    };
    let bytes = canonical_json(&manifest);
    let mut descriptor =
        Descriptor::new(media::OCI_MANIFEST, Digest::of(&bytes), bytes.len() as u64);
    descriptor.platform = Some(unknown_platform());
    descriptor
        .annotations
        .insert(REFERENCE_TYPE.into(), ATTESTATION_MANIFEST.into());
    descriptor
        .annotations
        .insert(REFERENCE_DIGEST.into(), subject.to_string());
    AttestationManifest {
        blobs,
        manifest: bytes,
        descriptor,
    }
}

/// The SLSA provenance versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlsaVersion {
    /// v0.2: BuildKit's default.
    #[default]
    V02,
    V1,
}

impl SlsaVersion {
    pub fn predicate_type(self) -> &'static str {
        match self {
            SlsaVersion::V02 => SLSA_V02,
            SlsaVersion::V1 => SLSA_V1,
        }
    }
}

/// How much the provenance tells: `min` (what was asked and what was used) or `max` (also the
/// Dockerfile's text and the steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProvenanceMode {
    #[default]
    Min,
    Max,
}

/// Something the build used, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Material {
    pub uri: String,
    /// Algorithm → hex (`sha256`, or `sha1` for a git commit).
    pub digest: BTreeMap<String, String>,
}

impl Material {
    pub fn new(uri: impl Into<String>, alg: &str, hex: &str) -> Material {
        Material {
            uri: uri.into(),
            digest: BTreeMap::from([(alg.to_string(), hex.to_string())]),
        }
    }
}

/// The context's git checkout: its remote and commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitCheckout {
    pub remote: Option<String>,
    pub commit: String,
}

/// What a build knows about itself, for its provenance. Holds no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildFacts {
    /// The Dockerfile's path as given (relative to the context when it is in it).
    pub dockerfile_path: String,
    pub dockerfile_digest: Option<Digest>,
    /// Its text (shown with `mode=max` only).
    pub dockerfile_text: String,
    /// Build arguments as given (`--build-arg`).
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platforms: Vec<String>,
    /// Base images: reference, the digest actually used (the manifest's), its platform.
    pub bases: Vec<(String, Digest)>,
    /// ADD's remote sources (URLs and git repositories) with their digests.
    pub sources: Vec<Material>,
    pub git: Option<GitCheckout>,
    /// The instructions of the stages built, as `[stage-N] INSTRUCTION` (`mode=max`).
    pub steps: Vec<String>,
    /// The build caches read (`--cache-from`, as `type=registry,ref=R` or
    /// `type=local,src=DIR,tag=T`): the request's `cache-from`.
    pub cache_sources: Vec<String>,
    /// Seconds since the epoch.
    pub started: i64,
    pub finished: i64,
    /// A unique id of this build.
    pub invocation_id: String,
    /// The platform the build ran on (`linux/amd64`).
    pub builder_platform: String,
}

/// strata's builder id, with its version.
pub fn builder_id() -> String {
    format!("urn:strata:builder:v{}", env!("CARGO_PKG_VERSION"))
}

impl BuildFacts {
    /// Every material: base images, ADD sources, the context's commit.
    fn materials(&self, platform: Option<&Platform>) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        for (r, d) in &self.bases {
            out.push(json!({"uri": image_purl(r, platform), "digest": {"sha256": d.hex()}}));
        }
        for m in &self.sources {
            out.push(json!({"uri": m.uri, "digest": m.digest}));
        }
        if let Some(g) = &self.git {
            if let Some(remote) = &g.remote {
                out.push(json!({"uri": remote, "digest": {"sha1": g.commit}}));
            }
        }
        out
    }

    fn config_source(&self) -> Value {
        let mut c = Map::new();
        if let Some(g) = &self.git {
            if let Some(r) = &g.remote {
                c.insert("uri".into(), json!(format!("{r}#{}", g.commit)));
            }
        }
        if let Some(d) = &self.dockerfile_digest {
            c.insert("digest".into(), json!({"sha256": d.hex()}));
        }
        c.insert("entryPoint".into(), json!(self.dockerfile_path));
        Value::Object(c)
    }

    /// BuildKit's request parameters: `build-arg:NAME`, `target`, platforms.
    fn parameters(&self) -> Value {
        let mut args = Map::new();
        for (k, v) in &self.args {
            args.insert(format!("build-arg:{k}"), json!(v));
        }
        if let Some(t) = &self.target {
            args.insert("target".into(), json!(t));
        }
        if !self.platforms.is_empty() {
            args.insert("platform".into(), json!(self.platforms.join(",")));
        }
        let mut p = json!({
            "frontend": "dockerfile.v0",
            "args": args,
            "locals": [{"name": "context"}, {"name": "dockerfile"}],
        });
        if !self.cache_sources.is_empty() {
            p["cache-from"] = json!(self.cache_sources);
        }
        p
    }

    /// What `mode=max` adds: the Dockerfile's text and the steps.
    fn build_config(&self) -> Value {
        json!({
            "dockerfile": {
                "filename": self.dockerfile_path,
                "language": "Dockerfile",
                "data": self.dockerfile_text,
            },
            "steps": self.steps,
        })
    }

    fn vcs(&self) -> Option<Value> {
        let g = self.git.as_ref()?;
        let mut v = Map::new();
        v.insert("revision".into(), json!(g.commit));
        if let Some(r) = &g.remote {
            v.insert("source".into(), json!(r));
        }
        Some(Value::Object(v))
    }

    /// The provenance predicate for the image of `platform`.
    pub fn provenance(
        &self,
        version: SlsaVersion,
        mode: ProvenanceMode,
        platform: Option<&Platform>,
    ) -> Value {
        let started = oci::rfc3339(self.started);
        let finished = oci::rfc3339(self.finished);
        let env_platform = platform
            .map(|p| p.to_string())
            .unwrap_or_else(|| self.builder_platform.clone());
        let mut strata_meta = Map::new();
        if let Some(v) = self.vcs() {
            strata_meta.insert("vcs".into(), v);
        }
        strata_meta.insert(
            "mode".into(),
            json!(if mode == ProvenanceMode::Max {
                "max"
            } else {
                "min"
            }),
        );
        match version {
            SlsaVersion::V02 => {
                let mut p = json!({
                    "builder": {"id": builder_id()},
                    "buildType": BUILD_TYPE,
                    "materials": self.materials(platform),
                    "invocation": {
                        "configSource": self.config_source(),
                        "parameters": self.parameters(),
                        "environment": {"platform": env_platform},
                    },
                    "metadata": {
                        "buildInvocationID": self.invocation_id,
                        "buildStartedOn": started,
                        "buildFinishedOn": finished,
                        "completeness": {
                            "parameters": mode == ProvenanceMode::Max,
                            "environment": true,
                            "materials": false,
                        },
                        "reproducible": false,
                        METADATA_KEY: strata_meta,
                    },
                });
                if mode == ProvenanceMode::Max {
                    p["buildConfig"] = self.build_config();
                }
                p
            }
            SlsaVersion::V1 => {
                let mut external = Map::new();
                external.insert("configSource".into(), self.config_source());
                external.insert("request".into(), self.parameters());
                let mut internal = Map::new();
                internal.insert("builderPlatform".into(), json!(self.builder_platform));
                if mode == ProvenanceMode::Max {
                    internal.insert("buildConfig".into(), self.build_config());
                }
                json!({
                    "buildDefinition": {
                        "buildType": BUILD_TYPE,
                        "externalParameters": external,
                        "internalParameters": internal,
                        "resolvedDependencies": self.materials(platform),
                    },
                    "runDetails": {
                        "builder": {"id": builder_id(), "version": {"strata": env!("CARGO_PKG_VERSION")}},
                        "metadata": {
                            "invocationID": self.invocation_id,
                            "startedOn": started,
                            "finishedOn": finished,
                            METADATA_KEY: strata_meta,
                        },
                    },
                })
            }
        }
    }
}

/// The commit and remote of a git checkout at `dir` (its `.git` directory, read without running
/// git: `HEAD`, the ref it names as a loose file or in `packed-refs`, `config`'s
/// `remote "origin"` url). `None` when `dir` is not the top of a checkout or HEAD cannot be
/// resolved. A url with credentials (`https://user:token@host/…`) is given without them.
pub fn git_checkout(dir: &std::path::Path) -> Option<GitCheckout> {
    let git = dir.join(".git");
    let git = if git.is_file() {
        // A worktree or submodule: `gitdir: PATH`.
        let text = read_small(&git)?;
        let p = text.trim().strip_prefix("gitdir:")?.trim().to_string();
        let p = std::path::PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    } else if git.is_dir() {
        git
    } else {
        return None;
    };
    // A linked worktree keeps refs and config in the common dir.
    let common = read_small(&git.join("commondir"))
        .map(|c| git.join(c.trim()))
        .unwrap_or_else(|| git.clone());
    let head = read_small(&git.join("HEAD"))?;
    let head = head.trim();
    let commit = match head.strip_prefix("ref:") {
        Some(r) => {
            let r = r.trim();
            if r.contains("..") {
                return None;
            }
            read_small(&git.join(r))
                .or_else(|| read_small(&common.join(r)))
                .map(|s| s.trim().to_string())
                .or_else(|| {
                    read_small(&common.join("packed-refs"))?
                        .lines()
                        .find_map(|l| {
                            let (c, name) = l.split_once(' ')?;
                            (name.trim() == r).then(|| c.to_string())
                        })
                })?
        }
        None => head.to_string(),
    };
    if !(commit.len() == 40 || commit.len() == 64) || !commit.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let remote = read_small(&common.join("config")).and_then(|c| origin_url(&c));
    Some(GitCheckout { remote, commit })
}

/// A small file's text (at most 1 MiB read).
fn read_small(p: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut s = String::new();
    fs_err::File::open(p)
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// `[remote "origin"] url = …` of a git config, without credentials.
fn origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    for line in config.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_origin = l.replace(' ', "") == "[remote\"origin\"]";
            continue;
        }
        if in_origin {
            if let Some((k, v)) = l.split_once('=') {
                if k.trim() == "url" {
                    return Some(strip_credentials(v.trim()));
                }
            }
        }
    }
    None
}

/// `scheme://user:pass@host/…` → `scheme://host/…`.
fn strip_credentials(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://{host}/{path}");
        }
    }
    url.to_string()
}

/// ADD's fetch record (`URL sha256:HEX MTIME`, `git URL COMMIT SUBDIR`) as a material.
pub fn fetched_material(record: &str) -> Option<Material> {
    let f: Vec<&str> = record.split(' ').collect();
    match f.as_slice() {
        ["git", url, commit, ..] => Some(Material::new(strip_credentials(url), "sha1", commit)),
        [url, digest, ..] => {
            let (alg, hex) = digest.split_once(':')?;
            Some(Material::new(strip_credentials(url), alg, hex))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> BuildFacts {
        BuildFacts {
            dockerfile_path: "Dockerfile".into(),
            dockerfile_digest: Some(Digest::of(b"FROM debian\n")),
            dockerfile_text: "FROM debian\n".into(),
            args: BTreeMap::from([("A".to_string(), "1".to_string())]),
            target: Some("app".into()),
            platforms: vec!["linux/amd64".into()],
            bases: vec![("debian:12".into(), Digest::of(b"base"))],
            sources: vec![fetched_material("https://example.com/x.tgz sha256:abcd 0").unwrap()],
            git: Some(GitCheckout {
                remote: Some("https://example.com/r.git".into()),
                commit: "a".repeat(40),
            }),
            steps: vec!["[stage-0] RUN x".into()],
            cache_sources: vec!["type=registry,ref=registry.example/app:cache".into()],
            started: 0,
            finished: 60,
            invocation_id: "id".into(),
            builder_platform: "linux/amd64".into(),
        }
    }

    #[test]
    fn statement_is_in_toto_v1_about_the_manifest() {
        let m = Digest::of(b"manifest");
        let s: Value =
            serde_json::from_slice(&statement(&m, &[], SPDX_PREDICATE, json!({"x": 1}))).unwrap();
        assert_eq!(s["_type"], STATEMENT_V1);
        assert_eq!(s["predicateType"], SPDX_PREDICATE);
        assert_eq!(s["subject"][0]["name"], "_");
        assert_eq!(s["subject"][0]["digest"]["sha256"], m.hex());
    }

    #[test]
    fn attestation_manifest_is_stored_as_buildkit_stores_it() {
        let m = Digest::of(b"manifest");
        let st = statement(&m, &[], SLSA_V02, json!({}));
        let am = attestation_manifest(
            &m,
            &[Attestation {
                predicate_type: SLSA_V02.into(),
                statement: st.clone(),
            }],
        );
        let d = &am.descriptor;
        assert_eq!(d.platform, Some(unknown_platform()));
        assert_eq!(d.annotations[REFERENCE_TYPE], "attestation-manifest");
        assert_eq!(d.annotations[REFERENCE_DIGEST], m.to_string());
        assert!(is_attestation(d));
        assert_eq!(d.digest, Digest::of(&am.manifest));
        let man: Manifest = serde_json::from_slice(&am.manifest).unwrap();
        assert_eq!(man.config.media_type, media::OCI_CONFIG);
        assert_eq!(man.layers[0].media_type, IN_TOTO_LAYER);
        assert_eq!(man.layers[0].annotations[PREDICATE_ANNOTATION], SLSA_V02);
        assert_eq!(man.layers[0].digest, Digest::of(&st));
        // Every blob the manifest names is among the blobs, with its digest.
        for (desc, bytes) in &am.blobs {
            assert_eq!(desc.digest, Digest::of(bytes));
        }
        let config: Value = serde_json::from_slice(&am.blobs.last().unwrap().1).unwrap();
        assert_eq!(config["os"], "unknown");
    }

    #[test]
    fn provenance_names_what_was_used_and_max_adds_the_dockerfile() {
        let f = facts();
        let p = f.provenance(SlsaVersion::V02, ProvenanceMode::Min, None);
        let mats = p["materials"].as_array().unwrap();
        assert_eq!(mats[0]["uri"], "pkg:docker/debian@12");
        assert_eq!(mats[0]["digest"]["sha256"], Digest::of(b"base").hex());
        assert_eq!(mats[1]["uri"], "https://example.com/x.tgz");
        assert_eq!(mats[2]["digest"]["sha1"], "a".repeat(40));
        assert_eq!(p["invocation"]["parameters"]["args"]["build-arg:A"], "1");
        assert_eq!(p["invocation"]["parameters"]["args"]["target"], "app");
        assert_eq!(
            p["invocation"]["parameters"]["cache-from"][0],
            "type=registry,ref=registry.example/app:cache"
        );
        assert_eq!(
            p["invocation"]["configSource"]["digest"]["sha256"],
            Digest::of(b"FROM debian\n").hex()
        );
        assert_eq!(p["metadata"]["buildFinishedOn"], "1970-01-01T00:01:00Z");
        assert!(p.get("buildConfig").is_none(), "min has no Dockerfile text");
        let max = f.provenance(SlsaVersion::V02, ProvenanceMode::Max, None);
        assert_eq!(max["buildConfig"]["dockerfile"]["data"], "FROM debian\n");
        let v1 = f.provenance(SlsaVersion::V1, ProvenanceMode::Max, None);
        assert_eq!(
            v1["buildDefinition"]["resolvedDependencies"][0]["uri"],
            "pkg:docker/debian@12"
        );
        assert_eq!(
            v1["buildDefinition"]["internalParameters"]["buildConfig"]["steps"][0],
            "[stage-0] RUN x"
        );
        assert_eq!(
            v1["buildDefinition"]["externalParameters"]["request"]["cache-from"][0],
            "type=registry,ref=registry.example/app:cache"
        );
        let mut none = facts();
        none.cache_sources.clear();
        let p = none.provenance(SlsaVersion::V02, ProvenanceMode::Min, None);
        assert!(p["invocation"]["parameters"].get("cache-from").is_none());
        assert_eq!(
            v1["runDetails"]["metadata"]["startedOn"],
            "1970-01-01T00:00:00Z"
        );
        let plat = Platform::parse("linux/arm64").unwrap();
        let p = f.provenance(SlsaVersion::V02, ProvenanceMode::Min, Some(&plat));
        assert_eq!(
            p["materials"][0]["uri"],
            "pkg:docker/debian@12?platform=linux%2Farm64"
        );
    }

    #[test]
    fn git_checkouts_are_read_without_git() {
        let d = std::env::temp_dir().join(format!("strata-attest-git-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let g = d.join(".git");
        fs_err::create_dir_all(g.join("refs/heads")).unwrap();
        fs_err::write(g.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        fs_err::write(
            g.join("packed-refs"),
            format!("# pack-refs\n{} refs/heads/main\n", "b".repeat(40)),
        )
        .unwrap();
        fs_err::write(
            g.join("config"),
            "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = https://u:secret@example.com/r.git\n",
        )
        .unwrap();
        let c = git_checkout(&d).unwrap();
        assert_eq!(c.commit, "b".repeat(40));
        assert_eq!(c.remote.as_deref(), Some("https://example.com/r.git"));
        fs_err::write(g.join("refs/heads/main"), format!("{}\n", "c".repeat(40))).unwrap();
        assert_eq!(git_checkout(&d).unwrap().commit, "c".repeat(40));
        fs_err::remove_dir_all(&d).unwrap();
        assert_eq!(git_checkout(&d), None);
    }
}
