//! The build engine: runs a [`Plan`] against a context and the store, step by step, with the
//! step cache, and writes the result.
//!
//! - [`build`]: the entry point: the shared context of a build ([`Build`]), then its outputs.
//! - `schedule`: stage threads, each as soon as the stages it needs are done, at most `jobs`
//!   at a time; the first failure stops the others at their next step.
//! - `stage`: the loop of one stage, instruction by instruction; `step`: one module per kind
//!   of step (what it reads, its pure cache key, its execution).
//! - [`copy`]: COPY and ADD, run inside the user namespace; [`fetch`]: ADD's URL and git
//!   sources.
//! - [`cache`]: step keys and the store's key → result records.
//! - [`exec`]: the hooks the sandbox child runs, and helpers around them.
//! - [`report`]: the events a build emits (the command line draws them).

pub mod cache;
pub mod debug;
pub mod error;
pub mod exec;
mod fetch;
pub mod hooks;
pub mod interrupt;
pub mod load;
mod options;
mod platforms;
pub mod report;
mod schedule;
pub mod size;
mod stage;
mod state;
mod step;
pub mod supply;

pub use options::*;
pub use platforms::build_platforms;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::context::checksum;
use crate::layer::Compression;
use crate::oci::{Descriptor, Digest, ImageConfig};
use crate::plan::Plan;
use crate::registry::ImageSource;
use crate::sandbox::idmap;
use crate::store::{ImageRef, SaveFormat, Store};
use error::{BuildError, Doing as _, Error};

/// The instruction a build failed at: what the error's causes happened in. Displays as
/// `Dockerfile:4 RUN …`; the CLI shows the lines of `span` with a marker, as for parse errors.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line} {instruction}")]
pub struct StepFailed {
    pub file: String,
    pub line: usize,
    pub instruction: String,
    pub span: crate::dockerfile::Span,
    pub source_text: Option<crate::dockerfile::Source>,
}

/// What a finished stage leaves for the stages after it.
#[derive(Debug, Clone)]
pub struct StageResult {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    pub key: Digest,
    /// Directories known to exist (created by COPY or WORKDIR steps).
    pub dirs: Vec<String>,
    /// Some step of the stage (or of the stages it is built on) ran instead of being cached.
    pub ran: bool,
}

impl StageResult {
    /// What the stage's filesystem is: its layers' diffIDs. A stage source in a step's key is
    /// this, so the step follows the content, not the instructions that made it.
    pub fn content_id(&self) -> String {
        let ids: Vec<&str> = self
            .config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| d.as_str())
            .collect();
        format!("layers {}", ids.join(","))
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image as stored (for the size report).
    pub image: crate::store::ImageRecord,
    pub image_id: Digest,
    pub manifest_digest: Digest,
    pub steps: usize,
    pub cached: usize,
    /// Each base image resolved, as (reference, digest).
    pub bases: Vec<(String, Digest)>,
    /// With several target platforms: the image index stored under the tags (`image` is then
    /// the first platform's image, `images` every platform's).
    pub index: Option<Descriptor>,
    pub images: Vec<crate::store::ImageRecord>,
    /// One platform's build of several ([`Part::Platform`]): what its attestations say, made
    /// when the index is ([`platforms`]); `None` when none was asked (or it was attached).
    pub attest: Option<supply::Facts>,
    /// What the cache gave (`strata.cache` of `--metadata-file`).
    pub cache: CacheSummary,
}

/// What the cache gave a build: its steps, those cached (from the store or an imported
/// cache), those from an imported cache, and the steps that ran.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CacheSummary {
    pub steps: usize,
    pub cached: usize,
    pub imported: usize,
    pub ran: Vec<String>,
}

/// How much of a build one run of the engine does.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    /// All of it: the image stored under its tags, and its outputs.
    Whole,
    /// One platform's image of a multi-platform build: stored without a name, no outputs (the
    /// index is made and delivered when every platform is built, [`platforms`]). The flag is
    /// shared by the platforms' builds: the first to fail sets it and the others cancel.
    Platform(Arc<std::sync::atomic::AtomicBool>),
}

/// Shared state of one build.
pub(crate) struct Build<'a> {
    pub store: &'a Store,
    pub opts: &'a BuildOptions,
    pub plan: &'a Plan,
    pub maps: idmap::IdMaps,
    pub exe: PathBuf,
    pub report: Arc<dyn report::Reporter>,
    /// Where base images come from (the store, or a registry).
    pub source: ImageSource<'a>,
    /// Each base image resolved, as (reference, digest), in the order the stages asked.
    pub bases: Mutex<Vec<(String, Digest)>>,
    pub checksums: Mutex<checksum::Cache>,
    /// Stage results, job slots and the first failure.
    pub schedule: &'a schedule::Schedule,
    /// The next step's id, counted across the attempts of a build (see [`build`]).
    pub step_ids: &'a AtomicUsize,
    pub steps: AtomicUsize,
    pub cached: AtomicUsize,
    /// Named contexts and images resolved to snapshots, by name.
    pub externals: Mutex<HashMap<String, Arc<StageResult>>>,
    /// The caches of `--cache-from`.
    pub imported: cache::remote::Imported,
    /// Every step with a layer as applied (cached or run), for `--cache-to`.
    pub applied: Mutex<Vec<cache::Applied>>,
    /// What stage names are prefixed with in the progress (`linux/arm64 `) in a build of
    /// several platforms; empty otherwise.
    pub label: String,
    /// The steps that ran (not cached), as shown in the progress, for `--metadata-file`.
    pub ran: Mutex<Vec<String>>,
    /// The ids of the cache mounts the build used, for `--cache-to …,mounts=true`.
    pub mounts_used: Mutex<std::collections::BTreeSet<String>>,
    /// What the words of every stage's instructions have grown by in expansion
    /// ([`crate::dockerfile::shell::MAX_TOTAL_EXPANSION`] for the whole build).
    pub budget: crate::dockerfile::shell::Budget,
    /// ADD's remote sources as fetched (`URL DIGEST MTIME`, `git URL COMMIT SUBDIR`), for
    /// the provenance.
    pub fetched: Mutex<Vec<String>>,
    /// The index that holds the image and its attestations ([`supply::attach`]).
    pub attached: Mutex<Option<supply::Attached>>,
}

impl Build<'_> {
    /// The index of the image and its attestations, when the build made any.
    pub fn attached_index(&self) -> Option<Descriptor> {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|a| a.index.clone())
    }

    /// A line for the user that belongs to no step.
    pub fn note(&self, msg: &str) {
        self.report.event(report::Event::Note(msg));
    }

    /// Wait for stage `i`; `None` when it failed or was cancelled.
    pub fn stage_result(&self, i: usize) -> Option<Arc<StageResult>> {
        if self.schedule.claim(i) {
            // A stage the plan did not schedule (named by an ONBUILD trigger of a base
            // image): built here, by the step that needs it.
            let r = stage::run(self, i);
            self.schedule.finish(i, r);
        }
        self.schedule.result(i)
    }
}

/// The checksum cache file for a context directory.
fn checksum_cache_path(store: &Store, context: &Path) -> PathBuf {
    let id = Digest::of(context.as_os_str().as_encoded_bytes());
    store
        .root()
        .join("v1/context")
        .join(format!("{}.tsv", &id.hex()[..32]))
}

/// Run the build of `plan` and write its outputs; `report` receives its events.
///
/// A layer of a `--cache-from` cache that turns out to be missing, damaged or not what its
/// record says ([`cache::remote::BadImport`], found when the layer is first needed, possibly steps
/// after its record was used) makes the build start again without that cache, with a
/// warning: the steps the first attempt ran are in the local cache by then, so only the steps
/// that took that cache's word run again.
pub fn build(
    store: &Store,
    plan: &Plan,
    opts: &BuildOptions,
    report: Arc<dyn report::Reporter>,
) -> Result<Built, error::BuildError> {
    build_part(store, plan, opts, report, &AtomicUsize::new(1), Part::Whole)
}

/// [`build`], or the part of it `part` says; step ids come from `step_ids`.
fn build_part(
    store: &Store,
    plan: &Plan,
    opts: &BuildOptions,
    report: Arc<dyn report::Reporter>,
    step_ids: &AtomicUsize,
    part: Part,
) -> Result<Built, error::BuildError> {
    let mut skip = Vec::new();
    let mut forgotten = Vec::new();
    loop {
        match attempt(
            store,
            plan,
            opts,
            report.clone(),
            &skip,
            step_ids,
            part.clone(),
        ) {
            Err(e) => {
                let bad = error::chain(&e)
                    .find_map(|c| c.downcast_ref::<cache::remote::BadImport>())
                    .filter(|b| {
                        (b.cache_from < opts.cache_from.len() && !skip.contains(&b.cache_from))
                            || (b.cache_from == cache::remote::REMEMBERED
                                && !forgotten.contains(&b.digest))
                    });
                let Some(bad) = bad else {
                    return Err(e);
                };
                if bad.cache_from == cache::remote::REMEMBERED {
                    // A step kept from an earlier --cache-from: its records go, and their steps
                    // run.
                    cache::remote::forget_remote_layer(store, &bad.digest);
                    report.event(report::Event::Note(&format!(
                        "warning: {bad}; the build starts again without the steps kept with it"
                    )));
                    forgotten.push(bad.digest.clone());
                    continue;
                }
                report.event(report::Event::Note(&format!(
                    "warning: {bad}; the build starts again without the cache {}",
                    bad.name
                )));
                skip.push(bad.cache_from);
            }
            done => return done,
        }
    }
}

/// One attempt at [`build`], without the `--cache-from` sources at the indices `skip`.
fn attempt(
    store: &Store,
    plan: &Plan,
    opts: &BuildOptions,
    report: Arc<dyn report::Reporter>,
    skip: &[usize],
    step_ids: &AtomicUsize,
    part: Part,
) -> Result<Built, BuildError> {
    let _writer = store.writer_lock()?;
    let started = crate::oci::now_secs();
    let cpath = checksum_cache_path(store, &opts.context);
    fs_err::create_dir_all(cpath.parent().unwrap_or(Path::new(".")))?;
    let platform = plan.options.target_platform.clone();
    let label = match part {
        Part::Whole => String::new(),
        Part::Platform(_) => format!("{platform} "),
    };
    let peers = match &part {
        Part::Whole => None,
        Part::Platform(p) => Some(p.clone()),
    };
    let schedule = schedule::Schedule::new(opts.jobs).linked(peers);
    let mut b = Build {
        store,
        opts,
        plan,
        maps: idmap::for_current_user(),
        exe: exec::exe()?,
        source: ImageSource::new(store, opts.pull, platform, report.clone()),
        bases: Mutex::new(Vec::new()),
        report,
        checksums: Mutex::new(checksum::Cache::load(&cpath)),
        schedule: &schedule,
        step_ids,
        steps: AtomicUsize::new(0),
        cached: AtomicUsize::new(0),
        externals: Mutex::new(HashMap::new()),
        imported: Default::default(),
        applied: Mutex::new(Vec::new()),
        label,
        ran: Mutex::new(Vec::new()),
        mounts_used: Mutex::new(Default::default()),
        budget: Default::default(),
        fetched: Mutex::new(Vec::new()),
        attached: Mutex::new(None),
    };
    if !opts.cache_from.is_empty() {
        b.imported = cache::remote::Imported::load(&b, &opts.cache_from, skip);
    }
    let b = b;
    if crate::sandbox::use_copies() {
        b.note(
            "note: RUN steps use copied snapshots (STRATA_SNAPSHOTTER=copy), which is slower than overlayfs",
        );
    }
    exec::clean_leftovers(store, &b.maps);
    schedule.run(plan, &|i| stage::run(&b, i));
    let saved = b.checksums.lock().unwrap_or_else(|e| e.into_inner()).save();
    if let Err(e) = saved {
        b.note(&format!("warning: saving the context checksum cache: {e}"));
    }
    if let Some(e) = schedule.take_error() {
        return Err(e);
    }
    let Some(result) = b.stage_result(plan.target) else {
        return Err(Error::TargetUnfinished.into());
    };
    let mut config = image_config(&b, &result);
    let names = if opts.outputs.is_empty() && matches!(part, Part::Whole) {
        opts.tags.clone()
    } else {
        Vec::new()
    };
    let annotations = annotations(&b);
    // Layers that hit in an imported cache come now, and only those of the final image.
    for (l, d) in result.layers.iter().zip(&config.rootfs.diff_ids) {
        b.imported.fetch(&b, &l.digest, d)?;
    }
    if opts.cache_to.contains(&cache::remote::CacheTo::Inline) {
        let v = cache::remote::inline(&b, &config.rootfs.diff_ids);
        config.extra.insert(cache::remote::INLINE_KEY.into(), v);
    }
    // The imported steps are the store's own from now on (their layers fetched on use).
    cache::remote::remember(&b);
    let img = store.add_image_annotated(&config, &result.layers, &names, annotations)?;
    if matches!(part, Part::Platform(_)) {
        // Before the literal: its temporaries hold the bases' lock, which the facts take.
        let attest = supply::facts(&b, started);
        // Each platform exports its own steps as soon as it is built, one after another into
        // the same destination: a step of a stage the platforms share has one key, one record.
        cache::remote::export_all(&b)?;
        let cache = cache_summary(&b);
        return Ok(Built {
            image_id: img.config_digest.clone(),
            manifest_digest: img.manifest_digest.clone(),
            steps: b.steps.load(Ordering::SeqCst),
            cached: b.cached.load(Ordering::SeqCst),
            bases: b.bases.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            index: None,
            images: vec![img.clone()],
            attest,
            image: img,
            cache,
        });
    }
    let attached = supply::attach(&b, &img, &names, started)?;
    *b.attached.lock().unwrap_or_else(|e| e.into_inner()) = attached;
    deliver(&b, &img)?;
    Ok(finished(&b, &img, &names))
}

/// The target stage's config as the image has it: `--label`s added, its time set.
fn image_config(b: &Build, result: &StageResult) -> ImageConfig {
    let opts = b.opts;
    let mut config = result.config.clone();
    if !opts.labels.is_empty() {
        let c = config.config.get_or_insert_with(Default::default);
        let l = c.labels.get_or_insert_with(Default::default);
        for (k, v) in &opts.labels {
            l.insert(k.clone(), v.clone());
        }
    }
    config.created = match opts.epoch {
        Some(e) => Some(crate::oci::rfc3339(e)),
        None => config
            .history
            .last()
            .and_then(|h| h.created.clone())
            .or_else(|| Some(crate::oci::rfc3339(crate::oci::now_secs()))),
    };
    config
}

/// The image's annotations: its base (as BuildKit records it), then the `--annotation`s of
/// its manifest (of every platform, then of its own).
fn annotations(b: &Build) -> BTreeMap<String, String> {
    let opts = b.opts;
    let mut annotations = BTreeMap::new();
    if let Some((r, d)) = target_base(b) {
        annotations.insert("org.opencontainers.image.base.name".to_string(), r);
        annotations.insert(
            "org.opencontainers.image.base.digest".to_string(),
            d.to_string(),
        );
    }
    annotations.extend(
        opts.annotations
            .manifest_of(&b.plan.options.target_platform),
    );
    annotations
}

/// Write the built image `img` where the options say: `--output`s, `--push`, `--load`,
/// `--cache-to`, `--metadata-file`, `--iidfile`.
fn deliver(b: &Build, img: &crate::store::ImageRecord) -> Result<(), BuildError> {
    let (opts, store) = (b.opts, b.store);
    let mut pushed = Vec::new();
    for o in &opts.outputs {
        pushed.extend(write_output(b, store, img, o)?);
    }
    if opts.push {
        if opts.tags.is_empty() {
            return Err(Error::PushWithoutName.into());
        }
        for t in &opts.tags {
            pushed.push(push_to(b, store, img, t)?);
        }
    }
    if let Some(t) = &opts.load {
        for said in load::load(store, img, &opts.tags, t)? {
            b.note(&said);
        }
    }
    cache::remote::export_all(b)?;
    if let Some(f) = &opts.metadata_file {
        write_metadata(b, img, &pushed, f)?;
    }
    if let Some(f) = &opts.iidfile {
        fs_err::write(f, img.config_digest.to_string())
            .doing_with(|| format!("writing --iidfile {}", f.display()))?;
    }
    Ok(())
}

/// Say the build is done (`names`: what it tagged) and what it built.
fn finished(b: &Build, img: &crate::store::ImageRecord, names: &[ImageRef]) -> Built {
    let steps = b.steps.load(Ordering::SeqCst);
    let cached = b.cached.load(Ordering::SeqCst);
    let summary = format!(
        "built {} ({steps} steps, {cached} cached){}",
        img.config_digest,
        if names.is_empty() {
            String::new()
        } else {
            format!(
                " as {}",
                names
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    b.report
        .event(report::Event::Finished { summary: &summary });
    Built {
        image: img.clone(),
        image_id: img.config_digest.clone(),
        manifest_digest: img.manifest_digest.clone(),
        steps,
        cached,
        bases: b.bases.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        index: None,
        images: vec![img.clone()],
        attest: None,
        cache: cache_summary(b),
    }
}

/// The reference and digest of the target stage's base image, when it is an image.
fn target_base(b: &Build) -> Option<(String, Digest)> {
    let mut i = b.plan.target;
    loop {
        match &b.plan.stages[i].base {
            crate::plan::Base::Stage(j) => i = *j,
            crate::plan::Base::Image(r) => {
                let bases = b.bases.lock().unwrap_or_else(|e| e.into_inner());
                return bases.iter().find(|(x, _)| x == r).cloned();
            }
            _ => return None,
        }
    }
}

/// Push the built image to `to`; returns (reference, digest).
fn push_to(
    b: &Build,
    store: &Store,
    img: &crate::store::ImageRecord,
    to: &ImageRef,
) -> Result<(String, Digest), BuildError> {
    // The session that resolved the bases: its policy and tokens serve the push too.
    let reg = b.source.registry()?;
    let compression = match b.opts.compression {
        Compression::None => Compression::GZIP,
        c => c,
    };
    let opts = crate::registry::push::PushOptions {
        compression,
        chunk_size: None,
    };
    let p = if b.attached_index().is_some() {
        // With its attestations: an index, whose statements name the manifest pushed.
        let index = supply::index_for_push(b, img, compression)?;
        reg.push_index(store, &index, to, &opts)
    } else {
        reg.push(store, img, to, &opts)
    }
    .doing_with(|| format!("pushing {to}"))?;
    b.note(&p.to_string());
    Ok((to.to_string(), p.digest))
}

/// The steps with a layer, how many were cached, how many of those came from `--cache-from`,
/// and the ones that ran, for `--metadata-file`.
fn cache_summary(b: &Build) -> CacheSummary {
    let applied = b.applied.lock().unwrap_or_else(|e| e.into_inner());
    let imported = applied
        .iter()
        .filter(|a| b.imported.hit_here(&a.key))
        .count();
    let ran = b.ran.lock().unwrap_or_else(|e| e.into_inner()).clone();
    CacheSummary {
        steps: b.steps.load(Ordering::SeqCst),
        cached: b.cached.load(Ordering::SeqCst),
        imported,
        ran,
    }
}

/// buildx's `--metadata-file`, with strata's base-image record.
fn write_metadata(
    b: &Build,
    img: &crate::store::ImageRecord,
    pushed: &[(String, Digest)],
    f: &Path,
) -> Result<(), BuildError> {
    let digest = pushed
        .first()
        .map(|(_, d)| d.clone())
        .unwrap_or_else(|| img.manifest_digest.clone());
    let names: Vec<String> = b.opts.tags.iter().map(|t| t.qualified()).collect();
    let bases: Vec<serde_json::Value> = b
        .bases
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(r, d)| serde_json::json!({"ref": r, "digest": d.to_string()}))
        .collect();
    let v = serde_json::json!({
        "containerimage.digest": digest.to_string(),
        "containerimage.config.digest": img.config_digest.to_string(),
        "containerimage.descriptor": {
            "mediaType": crate::oci::media::OCI_MANIFEST,
            "digest": digest.to_string(),
        },
        "image.name": names.join(","),
        "strata.pushed": pushed.iter().map(|(r, d)| format!("{r}@{d}")).collect::<Vec<_>>(),
        "strata.base-images": bases,
        "strata.cache": serde_json::to_value(cache_summary(b))?,
    });
    fs_err::write(f, serde_json::to_vec_pretty(&v)?)
        .doing_with(|| format!("writing --metadata-file {}", f.display()))?;
    Ok(())
}

fn write_output(
    b: &Build,
    store: &Store,
    img: &crate::store::ImageRecord,
    o: &Output,
) -> Result<Vec<(String, Digest)>, BuildError> {
    if let Output::Registry { name } = o {
        let targets = match name {
            Some(n) => vec![ImageRef::parse(n).doing_with(|| format!("--output name={n}"))?],
            None if b.opts.tags.is_empty() => return Err(Error::RegistryOutputWithoutName.into()),
            None => b.opts.tags.clone(),
        };
        return targets.iter().map(|t| push_to(b, store, img, t)).collect();
    }
    let names = if b.opts.tags.is_empty() {
        vec![ImageRef::parse("strata-build:latest")?]
    } else {
        b.opts.tags.clone()
    };
    match o {
        Output::Oci { dest, tar } => match b.attached_index() {
            // With attestations: the index that holds the image and them.
            Some(index) => {
                let top = &b.opts.annotations.index_descriptor;
                supply::save_index_oci(store, &index, &names, top, dest, *tar)?
            }
            _ => {
                let f = if *tar {
                    SaveFormat::OciArchive
                } else {
                    SaveFormat::OciDir
                };
                store.save(&[(img.clone(), names)], dest, f)?;
            }
        },
        Output::Docker { dest } => {
            store.save(&[(img.clone(), names)], dest, SaveFormat::DockerArchive)?;
        }
        Output::Local { dest } | Output::Tar { dest } => {
            let local = matches!(o, Output::Local { .. });
            let dir = if local {
                if dest.exists()
                    && fs_err::read_dir(dest)
                        .map(|mut d| d.next().is_some())
                        .unwrap_or(false)
                {
                    return Err(Error::OutputNotEmpty { dest: dest.clone() }.into());
                }
                dest.clone()
            } else {
                store
                    .tmp_dir()
                    .join(format!("rootfs-{}", std::process::id()))
            };
            if local {
                store.unpack(img, &dir)?;
            } else {
                // Unpacked and read in the user namespace: the tar has the image's owners
                // (as BuildKit's, rootless too), not the unprivileged user's.
                let layers = img
                    .manifest
                    .layers
                    .iter()
                    .zip(&img.config.rootfs.diff_ids)
                    .map(|(l, d)| (store.blob_path(&l.digest), d.clone()))
                    .collect();
                let flatten = hooks::Hook::Flatten {
                    layers,
                    dir: dir.clone(),
                    out: std::path::absolute(dest)?,
                };
                let r =
                    hooks::hook_done(&b.exe, flatten, &b.maps, "writing the root filesystem tar");
                let cleanup = exec::remove_tree(&dir, &b.maps);
                r?;
                cleanup?;
            }
        }
        Output::Registry { .. } => {}
    }
    b.note(&format!("wrote {}", describe(o)));
    Ok(Vec::new())
}

fn describe(o: &Output) -> String {
    match o {
        Output::Oci { dest, tar: true } => format!("OCI archive {}", dest.display()),
        Output::Oci { dest, tar: false } => format!("OCI layout {}", dest.display()),
        Output::Docker { dest } => format!("docker archive {}", dest.display()),
        Output::Tar { dest } => format!("root filesystem tar {}", dest.display()),
        Output::Local { dest } => format!("root filesystem in {}", dest.display()),
        Output::Registry { name } => format!("registry {}", name.as_deref().unwrap_or("tags")),
    }
}
