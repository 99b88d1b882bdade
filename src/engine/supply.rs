//! Supply chain: the SBOM of a stored image, made from its layers' package lists
//! ([`crate::sbom`]), each layer scanned once and its list kept in the store beside the
//! layer's facts (`facts/<hex>.pkgs`), so a rebuild that changes the app layer scans that
//! layer only. With `--sbom`/`--provenance`, the build's attestations ([`attach`]): in-toto
//! statements in an attestation manifest beside the image, in an index under the image's
//! names, as BuildKit stores them ([`crate::sbom::attest`]).

use std::io::{BufReader, Seek, SeekFrom};

use crate::engine::error::{BuildError, Doing as _};
use crate::engine::Build;
use crate::oci::{Descriptor, Digest, Index, Platform};
use crate::sbom::attest::{self, Attestation, BuildFacts, ProvenanceMode, SlsaVersion};
use crate::sbom::{self, ImageInfo, Inventory, LayerPackages, LayerRef};
use crate::store::{ImageRecord, Store};

/// The SBOM formats `strata sbom` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    SpdxJson,
    CycloneDxJson,
}

impl SbomFormat {
    pub fn parse(s: &str) -> Option<SbomFormat> {
        match s {
            "spdx-json" | "spdx" => Some(SbomFormat::SpdxJson),
            "cyclonedx-json" | "cyclonedx" => Some(SbomFormat::CycloneDxJson),
            _ => None,
        }
    }
}

/// The packages of the layer blob `layer`: from the store's cache, else scanned from the blob
/// (an uncompressed blob by seeking past what is no evidence) and kept.
pub fn layer_packages(store: &Store, layer: &Descriptor) -> Result<LayerPackages, BuildError> {
    let cached = store.layer_packages_file(&layer.digest);
    if let Ok(p) = LayerPackages::load(&cached) {
        return Ok(p);
    }
    let what = || format!("reading the packages of layer {}", layer.digest);
    let mut f = store.open_blob(&layer.digest)?;
    let mut head = [0u8; 4];
    let n = std::io::Read::read(&mut f, &mut head).doing_with(what)?;
    f.seek(SeekFrom::Start(0)).doing_with(what)?;
    let found = if crate::layer::sniff(&head[..n]) == crate::layer::Compression::None {
        let mut scanner = sbom::Scanner::new(sbom::ScanOptions::default());
        let mut archive = tar::Archive::new(BufReader::with_capacity(256 << 10, f));
        for e in archive.entries_with_seek().doing_with(what)? {
            scanner.add(&mut e.doing_with(what)?).doing_with(what)?;
        }
        scanner.finish()
    } else {
        let r = crate::layer::decompress(f).doing_with(what)?;
        sbom::scan_layer(r).doing_with(what)?
    };
    // Best effort: without the cache the next SBOM scans the layer again.
    let _ = store.put_layer_packages(&layer.digest, &found);
    Ok(found)
}

/// The layers of `image`, bottom first, as the SBOM names them: diffID, blob digest and the
/// history entry (the instruction) that made each.
pub fn layer_refs(image: &ImageRecord) -> Vec<LayerRef> {
    refs_of(&image.config, &image.manifest.layers)
}

/// The layers `layers` of the image whose config is `config`, as [`layer_refs`] names them.
fn refs_of(config: &crate::oci::ImageConfig, layers: &[Descriptor]) -> Vec<LayerRef> {
    let mut made_by = config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.created_by.clone().unwrap_or_default());
    layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(l, d)| LayerRef {
            diff_id: d.clone(),
            digest: Some(l.digest.clone()),
            created_by: made_by.next().unwrap_or_default(),
        })
        .collect()
}

/// The packages of `image` once its layers are stacked.
pub fn inventory(store: &Store, image: &ImageRecord) -> Result<Inventory, BuildError> {
    let refs = layer_refs(image);
    let found = image
        .manifest
        .layers
        .iter()
        .map(|l| layer_packages(store, l))
        .collect::<Result<Vec<_>, _>>()?;
    let layers: Vec<(LayerRef, &LayerPackages)> = refs.into_iter().zip(found.iter()).collect();
    Ok(sbom::merge(&layers))
}

/// The SBOM of `image` in `format`, named `name`, dated `created` (seconds since the epoch).
pub fn document(
    store: &Store,
    image: &ImageRecord,
    name: &str,
    created: i64,
    format: SbomFormat,
) -> Result<Vec<u8>, BuildError> {
    let inv = inventory(store, image)?;
    let info = ImageInfo {
        name: name.to_string(),
        digest: image.manifest_digest.clone(),
        created,
    };
    Ok(match format {
        SbomFormat::SpdxJson => sbom::spdx::to_bytes(&inv, &info),
        SbomFormat::CycloneDxJson => sbom::cyclonedx::to_bytes(&inv, &info),
    })
}

/// The attestations a build makes (`--sbom`, `--provenance`, `--attest`): none unless asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attest {
    /// An SPDX SBOM of the final image.
    pub sbom: bool,
    /// SLSA provenance, in this version and mode.
    pub provenance: Option<(SlsaVersion, ProvenanceMode)>,
    /// `--sbom=scan-stage=VALUE`: which builder stages the SBOM adds, as BuildKit's
    /// `BUILDKIT_SBOM_SCAN_STAGE` (`true`, `false`, or stage names separated by commas);
    /// `None` leaves it to that build argument and the stages' `ARG`s ([`scanned_stages`]).
    pub scan_stages: Option<String>,
}

impl Attest {
    pub fn any(&self) -> bool {
        self.sbom || self.provenance.is_some()
    }
}

/// The image's platform as its config says it.
fn config_platform(image: &ImageRecord) -> Platform {
    Platform {
        architecture: image.config.architecture.clone(),
        os: image.config.os.clone(),
        os_version: None,
        variant: image.config.variant.clone(),
    }
}

/// The date an image's documents carry: its config's `created` (so the same image gives the
/// same SBOM, built or scanned later), else the epoch.
pub fn image_time(image: &ImageRecord) -> i64 {
    image
        .config
        .created
        .as_deref()
        .and_then(parse_rfc3339)
        .unwrap_or(0)
}

/// The name documents give `image`: its first name, else `fallback`.
pub fn image_name(image: &ImageRecord, names: &[crate::store::ImageRef], fallback: &str) -> String {
    names
        .first()
        .or(image.names.first())
        .map(|n| n.to_string())
        .unwrap_or_else(|| fallback.to_string())
}

/// What a build says in its attestations, gathered while the build's state is at hand, so
/// that the statements can be made later about any manifest of its image (the stored one, the
/// one a push sends) and, in a build of several platforms, once every platform is built.
/// Holds no secret (see [`BuildFacts`]).
#[derive(Debug, Clone)]
pub struct Facts {
    want: Attest,
    build: BuildFacts,
    /// The names the statements give their subject (the build's tags).
    tags: Vec<crate::store::ImageRef>,
    /// The platform the build was for, as asked (`linux/arm64`, where the base image's config
    /// may say `linux/arm64/v8`): the provenance's and the subject names' platform.
    platform: Platform,
    /// The packages of the builder stages the SBOM adds, by stage name ([`scanned_stages`]).
    stages: Vec<(String, Inventory)>,
}

impl Facts {
    /// The facts of one platform's build within a build of `platforms`: its provenance's
    /// request parameters name them all, as the build was asked.
    pub(in crate::engine) fn within(mut self, platforms: &[Platform]) -> Facts {
        self.build.platforms = platforms.iter().map(|p| p.to_string()).collect();
        self
    }
}

/// What the build `b` (started at `started`) says in its attestations; `None` when none was
/// asked.
pub(in crate::engine) fn facts(b: &Build, started: i64) -> Option<Facts> {
    if !b.opts.attest.any() {
        return None;
    }
    let stages = if b.opts.attest.sbom {
        stage_inventories(b)
    } else {
        Vec::new()
    };
    Some(Facts {
        stages,
        want: b.opts.attest.clone(),
        build: build_facts(b, started),
        tags: b.opts.tags.clone(),
        platform: b.plan.options.target_platform.clone(),
    })
}

/// BuildKit's `isEnabledForStage`: `value` is a boolean, or stage names separated by commas.
fn enabled_for_stage(stage: &str, value: &str) -> bool {
    let v = value.trim().trim_matches(['"', '\'']);
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => true,
        "0" | "f" | "false" | "" => false,
        _ => v.split(',').any(|s| s.trim() == stage),
    }
}

/// The name of BuildKit's build argument that scans builder stages.
pub const SCAN_STAGE_ARG: &str = "BUILDKIT_SBOM_SCAN_STAGE";

/// The builder stages of `plan` whose packages the SBOM adds, as BuildKit chooses them: of the
/// stages the target is built from (the plan's order, the target left out), those that
/// `--sbom=scan-stage=…` (else `--build-arg BUILDKIT_SBOM_SCAN_STAGE=…`, else a global `ARG
/// BUILDKIT_SBOM_SCAN_STAGE=…`) enables, and those that declare `ARG
/// BUILDKIT_SBOM_SCAN_STAGE=true` (or name themselves in it); a build argument overrides a
/// stage's default as it does for any ARG.
pub fn scanned_stages(plan: &crate::plan::Plan, flag: Option<&str>) -> Vec<usize> {
    use crate::dockerfile::Instruction;
    let given = plan
        .options
        .build_args
        .get(SCAN_STAGE_ARG)
        .map(String::as_str);
    let global = flag.or(given).or(plan.meta_value(SCAN_STAGE_ARG));
    plan.order
        .iter()
        .copied()
        .filter(|&i| i != plan.target)
        .filter(|&i| {
            let st = &plan.stages[i];
            let name = st.display_name();
            if global.is_some_and(|v| enabled_for_stage(&name, v)) {
                return true;
            }
            st.commands.iter().any(|c| match &c.instruction {
                Instruction::Arg(decls) => decls.iter().any(|d| {
                    d.name == SCAN_STAGE_ARG
                        && given
                            .or(d.default.as_deref())
                            .or(plan.meta_value(SCAN_STAGE_ARG))
                            .is_some_and(|v| enabled_for_stage(&name, v))
                }),
                _ => false,
            })
        })
        .collect()
}

/// The packages of the builder stages [`scanned_stages`] chooses, by stage name, each named
/// with the layer and instruction of the stage that added it. A stage whose layers are not all
/// in the store (an imported cache's, fetched only for the final image) is left out, with a
/// note.
fn stage_inventories(b: &Build) -> Vec<(String, Inventory)> {
    let mut out = Vec::new();
    for i in scanned_stages(b.plan, b.opts.attest.scan_stages.as_deref()) {
        let name = b.plan.stages[i].display_name();
        let Some(result) = b.stage_result(i) else {
            continue;
        };
        match stage_inventory(b.store, &result) {
            Ok(inv) => out.push((name, inv)),
            Err(e) => b.note(&format!(
                "warning: the SBOM leaves out the packages of stage {name}: {e}"
            )),
        }
    }
    out
}

/// The packages of a stage's filesystem, each named with its layer and instruction.
fn stage_inventory(
    store: &Store,
    result: &crate::engine::StageResult,
) -> Result<Inventory, BuildError> {
    let refs = refs_of(&result.config, &result.layers);
    let found = result
        .layers
        .iter()
        .map(|l| layer_packages(store, l))
        .collect::<Result<Vec<_>, _>>()?;
    let layers: Vec<(LayerRef, &LayerPackages)> = refs.into_iter().zip(found.iter()).collect();
    Ok(sbom::merge(&layers))
}

/// Add to the image's inventory the packages of builder stages it does not have itself (by
/// purl; a package two stages have is added once), each naming its stage.
fn add_stage_packages(inv: &mut Inventory, stages: &[(String, Inventory)]) {
    let mut seen: std::collections::BTreeSet<String> =
        inv.packages.iter().map(|p| p.purl.clone()).collect();
    for (name, stage) in stages {
        for p in &stage.packages {
            if seen.insert(p.purl.clone()) {
                let mut p = p.clone();
                p.stage = Some(name.clone());
                inv.packages.push(p);
            }
        }
    }
}

/// What the build knows about itself, for its provenance (no secret is a build fact).
fn build_facts(b: &Build, started: i64) -> BuildFacts {
    let (opts, plan) = (b.opts, b.plan);
    let text = opts
        .dockerfile
        .as_ref()
        .map(|s| s.text().to_string())
        .unwrap_or_default();
    // The Dockerfile's path in the context when it is there (BuildKit names it so).
    let path = std::path::Path::new(&opts.dockerfile_name);
    let path = path
        .strip_prefix(&opts.context)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned();
    let mut steps = Vec::new();
    for &i in &plan.order {
        let st = &plan.stages[i];
        let name = st.display_name();
        steps.push(format!("[{name}] {}", st.from.original));
        for c in &st.commands {
            steps.push(format!("[{name}] {}", c.original));
        }
    }
    let fetched = b.fetched.lock().unwrap_or_else(|e| e.into_inner());
    let bases = b.bases.lock().unwrap_or_else(|e| e.into_inner());
    let platform = plan.options.target_platform.to_string();
    BuildFacts {
        dockerfile_path: path,
        dockerfile_digest: opts
            .dockerfile
            .as_ref()
            .map(|s| Digest::of(s.text().as_bytes())),
        dockerfile_text: text,
        args: plan.options.build_args.clone(),
        target: plan.options.target.clone(),
        platforms: vec![platform.clone()],
        bases: bases.clone(),
        sources: fetched
            .iter()
            .filter_map(|r| attest::fetched_material(r))
            .collect(),
        git: attest::git_checkout(&opts.context),
        steps,
        cache_sources: opts.cache_from.iter().map(|c| c.spec()).collect(),
        started,
        finished: crate::oci::now_secs(),
        invocation_id: Digest::of(
            format!("{started} {} {platform}", std::process::id()).as_bytes(),
        )
        .hex()[..32]
            .to_string(),
        builder_platform: Platform::host().to_string(),
    }
}

/// The index a build's attestations are kept in, when the build started, and what they say.
#[derive(Debug, Clone)]
pub struct Attached {
    pub index: Descriptor,
    pub started: i64,
    pub facts: Facts,
}

/// The attestations `f` asks for about the image manifest `subject` (whose packages are those
/// of `img`: the same layers, maybe compressed otherwise), and what they are.
fn statements(
    store: &Store,
    f: &Facts,
    img: &ImageRecord,
    subject: &Digest,
) -> Result<(Vec<Attestation>, Vec<String>), BuildError> {
    let platform = &f.platform;
    let subject_names: Vec<String> = f
        .tags
        .iter()
        .map(|t| attest::image_purl(&t.to_string(), Some(platform)))
        .collect();
    let mut made = Vec::new();
    let mut said = Vec::new();
    if f.want.sbom {
        let mut inv = inventory(store, img)?;
        let own = inv.packages.len();
        add_stage_packages(&mut inv, &f.stages);
        if inv.packages.len() == own {
            said.push(format!("sbom ({own} packages)"));
        } else {
            said.push(format!(
                "sbom ({own} packages, {} more from builder stages)",
                inv.packages.len() - own
            ));
        }
        let info = ImageInfo {
            name: image_name(img, &f.tags, "strata-build"),
            digest: subject.clone(),
            created: image_time(img),
        };
        let predicate = sbom::spdx::document(&inv, &info);
        made.push(Attestation {
            predicate_type: attest::SPDX_PREDICATE.into(),
            statement: attest::statement(
                subject,
                &subject_names,
                attest::SPDX_PREDICATE,
                predicate,
            ),
        });
    }
    if let Some((version, mode)) = f.want.provenance {
        let predicate = f.build.provenance(version, mode, Some(platform));
        said.push(format!(
            "provenance ({}, mode={})",
            version.predicate_type(),
            if mode == ProvenanceMode::Max {
                "max"
            } else {
                "min"
            }
        ));
        made.push(Attestation {
            predicate_type: version.predicate_type().into(),
            statement: attest::statement(
                subject,
                &subject_names,
                version.predicate_type(),
                predicate,
            ),
        });
    }
    Ok((made, said))
}

/// The index entry of a stored image's manifest, with its platform.
fn image_descriptor(store: &Store, img: &ImageRecord) -> Result<Descriptor, BuildError> {
    let size = fs_err::metadata(store.blob_path(&img.manifest_digest))?.len();
    let mut d = Descriptor::new(
        img.manifest
            .media_type
            .as_deref()
            .unwrap_or(crate::oci::media::OCI_MANIFEST),
        img.manifest_digest.clone(),
        size,
    );
    d.platform = Some(config_platform(img));
    Ok(d)
}

/// The image a push of `img` sends: its uncompressed layers compressed with `compression`
/// make another manifest (as the registry module's push writes it), kept in the store
/// unnamed; `img` itself when nothing changes.
fn wire_image(
    store: &Store,
    img: &ImageRecord,
    compression: crate::layer::Compression,
) -> Result<ImageRecord, BuildError> {
    use crate::oci::media;
    let mut layers = Vec::new();
    let mut changed = false;
    for l in &img.manifest.layers {
        if media::is_uncompressed_layer(&l.media_type)
            && compression != crate::layer::Compression::None
        {
            let mut c = store.compressed_layer(l, compression)?;
            if c.media_type == media::DOCKER_LAYER_GZIP {
                c.media_type = media::OCI_LAYER_GZIP.into();
            }
            layers.push(c);
            changed = true;
        } else {
            layers.push(l.clone());
        }
    }
    if !changed {
        return Ok(img.clone());
    }
    let mut config = img.manifest.config.clone();
    config.media_type = media::OCI_CONFIG.into();
    let m = crate::oci::Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config,
        layers,
        annotations: img.manifest.annotations.clone(),
    };
    let d = store.put_blob(&crate::oci::canonical_json(&m))?;
    Ok(store.image_of_manifest(&d)?)
}

/// The image index of `images` (each with the facts of its build) and their attestations, as
/// BuildKit writes it: every image (with its platform), then one attestation manifest per
/// image (platform `unknown/unknown`, `vnd.docker.reference.digest` naming the image's
/// manifest). Stored and named `names`. With `compression`, of the manifests a push sends
/// (the images' uncompressed layers compressed so), whose digests the statements name, so
/// that what the registry has is what they are about. Returns the index and, for the
/// progress, what was attested about each image (in `images`' order).
pub(in crate::engine) fn index_with_attestations(
    store: &Store,
    images: &[(&ImageRecord, &Facts)],
    names: &[crate::store::ImageRef],
    compression: Option<crate::layer::Compression>,
    annotations: &super::Annotations,
) -> Result<(Descriptor, Vec<String>), BuildError> {
    let mut manifests = Vec::new();
    let mut attestations = Vec::new();
    let mut said = Vec::new();
    for (img, f) in images {
        let subject = match compression {
            Some(c) => wire_image(store, img, c)?,
            None => (*img).clone(),
        };
        let (made, what) = statements(store, f, img, &subject.manifest_digest)?;
        let am = attest::attestation_manifest(&subject.manifest_digest, &made);
        for (_, bytes) in &am.blobs {
            store.put_blob(bytes)?;
        }
        store.put_blob(&am.manifest)?;
        said.push(format!(
            "{} in manifest {}",
            what.join(", "),
            am.descriptor.digest.short()
        ));
        let mut d = image_descriptor(store, &subject)?;
        if let Some(p) = &d.platform {
            d.annotations.extend(annotations.descriptor_of(p));
        }
        manifests.push(d);
        attestations.push(am.descriptor);
    }
    manifests.extend(attestations);
    let index = store.put_index(&manifests, annotations.index.clone(), names)?;
    Ok((index, said))
}

/// Attach the attestations the options ask for to the built image `img`: their statements,
/// the attestation manifest, and an index of the image (with its platform) and that manifest,
/// which `names` now point at. `None` when none was asked.
pub(in crate::engine) fn attach(
    b: &Build,
    img: &ImageRecord,
    names: &[crate::store::ImageRef],
    started: i64,
) -> Result<Option<Attached>, BuildError> {
    let Some(facts) = facts(b, started) else {
        return Ok(None);
    };
    let clock = std::time::Instant::now();
    let (index, said) =
        index_with_attestations(b.store, &[(img, &facts)], names, None, &b.opts.annotations)?;
    b.note(&format!(
        "attestations: {} of index {} ({:.3} s)",
        said.join("; "),
        index.digest.short(),
        clock.elapsed().as_secs_f64()
    ));
    Ok(Some(Attached {
        index,
        started,
        facts,
    }))
}

/// The index to push for `img` with its attestations: a push sends the image's layers
/// compressed with `compression`, which makes another manifest, so the statements are made
/// again about that manifest (the packages are the same layers' ones, from the cache). Kept
/// in the store, unnamed.
pub(in crate::engine) fn index_for_push(
    b: &Build,
    img: &ImageRecord,
    compression: crate::layer::Compression,
) -> Result<Descriptor, BuildError> {
    let attached = b.attached.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let facts = match attached {
        Some(a) => a.facts,
        None => match facts(b, crate::oci::now_secs()) {
            Some(f) => f,
            None => {
                return Err(crate::engine::error::Error::Internal(
                    "an index with attestations to push for a build that asked for none".into(),
                )
                .into())
            }
        },
    };
    let (index, _) = index_with_attestations(
        b.store,
        &[(img, &facts)],
        &[],
        Some(compression),
        &b.opts.annotations,
    )?;
    Ok(index)
}

/// The blobs of the attestation manifests of the stored index `index`: each manifest, its
/// config and its layers (the statements), for a copy of the index that must hold them.
pub(in crate::engine) fn attestation_blobs(
    store: &Store,
    index: &Digest,
) -> Result<Vec<Digest>, BuildError> {
    let idx = store.read_index(index)?;
    let mut out = Vec::new();
    for m in idx.manifests.iter().filter(|d| attest::is_attestation(d)) {
        let bytes = store.read_blob(&m.digest)?;
        let man: crate::oci::Manifest =
            crate::oci::parse_json(&bytes, &format!("attestation manifest {}", m.digest))?;
        out.push(m.digest.clone());
        out.push(man.config.digest.clone());
        out.extend(man.layers.iter().map(|l| l.digest.clone()));
    }
    Ok(out)
}

/// The attestation manifest of `image_manifest` in the index `index`, if it has one.
pub fn attestation_of<'a>(index: &'a Index, image_manifest: &Digest) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|d| {
        attest::is_attestation(d)
            && d.annotations
                .get(attest::REFERENCE_DIGEST)
                .map(String::as_str)
                == Some(image_manifest.as_str())
    })
}

/// The statements attached to `image` (the manifest `what` resolves to) whose predicate type
/// is one of `types`: (predicate type, statement bytes), in the attestation manifest's order.
pub fn attached(
    store: &Store,
    what: &str,
    image: &ImageRecord,
    types: &[&str],
) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
    let Some((_, index)) = store.find_index(what)? else {
        return Ok(Vec::new());
    };
    let Some(am) = attestation_of(&index, &image.manifest_digest) else {
        return Ok(Vec::new());
    };
    let bytes = store.read_blob(&am.digest)?;
    let manifest: crate::oci::Manifest =
        crate::oci::parse_json(&bytes, &format!("attestation manifest {}", am.digest))?;
    let mut out = Vec::new();
    for l in &manifest.layers {
        let Some(t) = l.annotations.get(attest::PREDICATE_ANNOTATION) else {
            continue;
        };
        if types.contains(&t.as_str()) {
            out.push((t.clone(), store.read_blob(&l.digest)?));
        }
    }
    Ok(out)
}

/// Write the index `index` (named `names`) with everything it reaches to `dest`, an OCI layout
/// directory or (`tar`) an oci-archive: `--output type=oci` of a build with attestations.
pub(in crate::engine) fn save_index_oci(
    store: &Store,
    index: &Descriptor,
    names: &[crate::store::ImageRef],
    top: &std::collections::BTreeMap<String, String>,
    dest: &std::path::Path,
    tar: bool,
) -> Result<(), BuildError> {
    if !tar {
        return save_index_oci_dir(store, index, names, top, dest);
    }
    let dir = store.tmp_dir().join(format!(
        "oci-{}-{}",
        std::process::id(),
        index.digest.short()
    ));
    let _ = fs_err::remove_dir_all(&dir);
    let r = (|| -> Result<(), BuildError> {
        save_index_oci_dir(store, index, names, top, &dir)?;
        let what = || format!("writing the oci-archive {}", dest.display());
        let part = dest.with_extension("strata-part");
        let f = fs_err::File::create(&part)?;
        let mut b = tar::Builder::new(std::io::BufWriter::new(f));
        b.mode(tar::HeaderMode::Deterministic);
        b.follow_symlinks(false);
        b.append_dir_all(".", &dir).doing_with(what)?;
        let w = b.into_inner().doing_with(what)?;
        w.into_inner()
            .map_err(|e| e.into_error())
            .doing_with(what)?
            .sync_all()
            .doing_with(what)?;
        fs_err::rename(&part, dest)?;
        Ok(())
    })();
    let _ = fs_err::remove_dir_all(&dir);
    r
}

/// [`save_index_oci`] to a directory.
fn save_index_oci_dir(
    store: &Store,
    index: &Descriptor,
    names: &[crate::store::ImageRef],
    top_annotations: &std::collections::BTreeMap<String, String>,
    dest: &std::path::Path,
) -> Result<(), BuildError> {
    use crate::oci::layout::{self, Layout};
    let out = Layout::create(dest)?;
    let idx = store.read_index(&index.digest)?;
    let mut blobs = vec![index.digest.clone()];
    for m in &idx.manifests {
        blobs.push(m.digest.clone());
        let bytes = store.read_blob(&m.digest)?;
        let man: crate::oci::Manifest =
            crate::oci::parse_json(&bytes, &format!("manifest {}", m.digest))?;
        blobs.push(man.config.digest.clone());
        blobs.extend(man.layers.iter().map(|l| l.digest.clone()));
    }
    for d in &blobs {
        let from = store.blob_path(d);
        let tmp = format!(".copy-{}-{}", std::process::id(), d.hex());
        out.put_blob::<BuildError>(d, &tmp, |tmp| {
            fs_err::copy(&from, tmp)
                .map(|_| ())
                .map_err(BuildError::from)
        })?;
    }
    let mut top = out.index()?.unwrap_or_default();
    // The entries have the `index-descriptor:` annotations.
    let mut index = index.clone();
    index.annotations.extend(top_annotations.clone());
    if names.is_empty() {
        layout::set_entry(&mut top, index.clone());
    }
    for n in names {
        let mut d = index.clone();
        d.annotations
            .insert(crate::oci::REF_NAME.to_string(), n.to_string());
        layout::set_entry(&mut top, d);
    }
    out.write_index(&top)?;
    Ok(())
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac]Z` (an image config's `created`).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400 + h * 3600 + mi * 60 + se)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str, args: &[(&str, &str)]) -> crate::plan::Plan {
        let src = crate::dockerfile::Source::new("Dockerfile", text);
        let (df, cmds) = crate::dockerfile::load(&src).unwrap();
        let options = crate::plan::Options {
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        crate::plan::plan(&df, cmds, options).unwrap()
    }

    const TWO: &str = "FROM scratch AS deps\nCOPY a /a\nFROM scratch AS builder\nCOPY b /b\nFROM scratch\nCOPY --from=deps /a /a\nCOPY --from=builder /b /b\n";

    #[test]
    fn stage_values_are_booleans_or_names() {
        assert!(enabled_for_stage("builder", "true"));
        assert!(enabled_for_stage("builder", "\"1\""));
        assert!(!enabled_for_stage("builder", "false"));
        assert!(enabled_for_stage("builder", "deps,builder"));
        assert!(!enabled_for_stage("builder", "deps"));
    }

    #[test]
    fn scanned_stages_follow_the_flag_the_build_argument_and_the_stages_args() {
        let names = |p: &crate::plan::Plan, flag: Option<&str>| -> Vec<String> {
            scanned_stages(p, flag)
                .into_iter()
                .map(|i| p.stages[i].display_name())
                .collect()
        };
        let p = plan(TWO, &[]);
        assert!(names(&p, None).is_empty());
        assert_eq!(names(&p, Some("true")), ["deps", "builder"]);
        assert_eq!(names(&p, Some("builder")), ["builder"]);
        let p = plan(TWO, &[(SCAN_STAGE_ARG, "deps")]);
        assert_eq!(names(&p, None), ["deps"]);
        // A stage's own ARG, overridden by a build argument; a global ARG for all.
        let own = TWO.replace(
            "AS builder\n",
            "AS builder\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n",
        );
        assert_eq!(names(&plan(&own, &[]), None), ["builder"]);
        assert!(names(&plan(&own, &[(SCAN_STAGE_ARG, "false")]), None).is_empty());
        let global = format!("ARG BUILDKIT_SBOM_SCAN_STAGE=true\n{TWO}");
        assert_eq!(names(&plan(&global, &[]), None), ["deps", "builder"]);
        // Only the stages the target is built from: here the target (`other`, the last
        // stage) is built from none.
        let unrelated = format!("{TWO}FROM scratch AS other\nCOPY c /c\n");
        assert!(names(&plan(&unrelated, &[]), Some("true")).is_empty());
    }
}
