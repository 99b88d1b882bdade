//! Builds for several target platforms (`--platform linux/amd64,linux/arm64`), as buildx's:
//! the plan built once per platform, the platforms in parallel within `--jobs`, then one image
//! index over their images, stored under the tags ([`index_of`]) and written where the
//! outputs say ([`deliver`]).
//!
//! A stage that does not depend on the target platform (a `FROM --platform=$BUILDPLATFORM`
//! builder that uses no TARGET* argument) has the same base and the same step keys in every
//! platform's build: the first build to reach one of its steps runs it under the store's step
//! lock, and the others wait on that lock and take the step from the cache, so it runs once.
//! Where the base image or the platform differs, so do the keys (a stage's platform is part of
//! every key, see `cache::key`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use super::error::{BuildError, Doing as _, Error};
use super::{
    build, build_part, exec, hooks, report, supply, Annotations, BuildOptions, Built, Output, Part,
};
use crate::oci::{media, Descriptor, Platform};
use crate::plan::Plan;
use crate::sandbox::idmap;
use crate::store::{ImageRecord, ImageRef, Store};

/// Build `plans`, one per target platform (each with its `target_platform`): with one, exactly
/// [`build`]; with several, an image index over one image per platform.
pub fn build_platforms(
    store: &Store,
    plans: &[Plan],
    opts: &BuildOptions,
    report: Arc<dyn report::Reporter>,
) -> Result<Built, BuildError> {
    let platforms: Vec<Platform> = plans
        .iter()
        .map(|p| p.options.target_platform.clone())
        .collect();
    opts.annotations
        .check(&platforms, plans.len() > 1 || opts.attest.any())?;
    match plans {
        [] => Err(Error::Internal("a build for no platform".into()).into()),
        [one] => build(store, one, opts, report),
        several => build_several(store, several, opts, report),
    }
}

fn build_several(
    store: &Store,
    plans: &[Plan],
    opts: &BuildOptions,
    report: Arc<dyn report::Reporter>,
) -> Result<Built, BuildError> {
    let platforms: Vec<Platform> = plans
        .iter()
        .map(|p| p.options.target_platform.clone())
        .collect();
    let listed = platforms
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    refuse(opts, &listed)?;
    // Each platform's build stores its image, unnamed; the index gets the names.
    let part = BuildOptions {
        tags: Vec::new(),
        outputs: Vec::new(),
        push: false,
        load: None,
        metadata_file: None,
        iidfile: None,
        jobs: (opts.jobs / plans.len()).max(1),
        ..opts.clone()
    };
    let step_ids = AtomicUsize::new(1);
    let failed = Arc::new(AtomicBool::new(false));
    let results: Vec<Result<Built, BuildError>> = std::thread::scope(|s| {
        let running: Vec<_> = plans
            .iter()
            .map(|plan| {
                let (part, report, step_ids) = (&part, report.clone(), &step_ids);
                let linked = Part::Platform(failed.clone());
                s.spawn(move || build_part(store, plan, part, report, step_ids, linked))
            })
            .collect();
        running
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Internal("a platform's build panicked".into()).into())
                })
            })
            .collect()
    });
    // The failure of the platform that failed first, not the others' cancellation.
    let cancelled = |e: &BuildError| {
        super::error::chain(e).any(|c| c.downcast_ref::<super::error::Cancelled>().is_some())
    };
    let first = results
        .iter()
        .position(|r| r.as_ref().is_err_and(|e| !cancelled(e)));
    let mut results: Vec<_> = results.into_iter().map(Some).collect();
    if let Some(i) = first {
        if let Some(Err(e)) = results[i].take() {
            return Err(e).doing_with(|| format!("building for {}", platforms[i]));
        }
    }
    let mut images = Vec::new();
    let mut facts = Vec::new();
    let mut caches = Vec::new();
    let (mut steps, mut cached) = (0, 0);
    let mut bases: Vec<(String, crate::oci::Digest)> = Vec::new();
    for (r, p) in results.into_iter().flatten().zip(&platforms) {
        let built = r.doing_with(|| format!("building for {p}"))?;
        steps += built.steps;
        cached += built.cached;
        for base in built.bases {
            if !bases.contains(&base) {
                bases.push(base);
            }
        }
        facts.extend(built.attest.map(|f| f.within(&platforms)));
        images.push(built.image);
        caches.push(built.cache);
    }
    // The whole build's: every platform's steps (a step the platforms share ran in one).
    let cache = super::CacheSummary {
        steps,
        cached,
        imported: caches.iter().map(|c| c.imported).sum(),
        ran: caches.iter().flat_map(|c| c.ran.iter().cloned()).collect(),
    };
    let names = if opts.outputs.is_empty() {
        opts.tags.clone()
    } else {
        Vec::new()
    };
    let clock = std::time::Instant::now();
    let (index, attested) = index_of(store, &images, &facts, &names, &opts.annotations)?;
    if !attested.is_empty() {
        let said = format!(
            "attestations: {} of index {} ({:.3} s)",
            attested
                .iter()
                .zip(&platforms)
                .map(|(a, p)| format!("{p}: {a}"))
                .collect::<Vec<_>>()
                .join("; "),
            index.digest.short(),
            clock.elapsed().as_secs_f64()
        );
        report.event(report::Event::Note(&said));
    }
    let attest = Attest {
        images: &images,
        facts: &facts,
    };
    let built = Delivered {
        platforms: &platforms,
        bases: &bases,
        cache: &cache,
        caches: &caches,
    };
    deliver(store, opts, &report, &index, &attest, &built)?;
    let mut summary = format!(
        "built image index {} for {listed} ({steps} steps, {cached} cached)",
        index.digest
    );
    if !names.is_empty() {
        let n: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        summary.push_str(&format!(" as {}", n.join(", ")));
    }
    report.event(report::Event::Finished { summary: &summary });
    Ok(Built {
        image: images[0].clone(),
        image_id: images[0].config_digest.clone(),
        manifest_digest: index.digest.clone(),
        steps,
        cached,
        bases,
        index: Some(index),
        images,
        attest: None,
        cache,
    })
}

/// What a build of several platforms does not do (yet): each is refused before anything is
/// built. `--cache-to` and `--cache-from` are each platform's build's: its steps are exported
/// when it is built (see `cache::remote::export_all`; `type=inline`: in its image's config),
/// and imported as a single platform's (from an index, its platform's image).
fn refuse(opts: &BuildOptions, platforms: &str) -> Result<(), BuildError> {
    let docker = |what: &str| Error::DockerExporterMultiPlatform {
        what: what.to_string(),
        platforms: platforms.to_string(),
    };
    if opts.load.is_some() {
        return Err(docker("--load").into());
    }
    for o in &opts.outputs {
        match o {
            Output::Docker { .. } => return Err(docker("--output type=docker").into()),
            Output::Registry { name: None } if opts.tags.is_empty() => {
                return Err(Error::RegistryOutputWithoutName.into())
            }
            _ => {}
        }
    }
    if opts.push && opts.tags.is_empty() {
        return Err(Error::PushWithoutName.into());
    }
    Ok(())
}

/// The image index of a multi-platform build over each platform's image (in `--platform`'s
/// order), stored and named `names`: the one place the build assembles its index. With the
/// facts of each platform's build (`--sbom`, `--provenance`), each image's attestation
/// manifest follows the images, as BuildKit's ([`supply::index_with_attestations`]); the
/// second value says what was attested. The index and each manifest's descriptor in it have
/// their `--annotation`s (`index:`, `manifest-descriptor:`).
fn index_of(
    store: &Store,
    images: &[ImageRecord],
    facts: &[supply::Facts],
    names: &[ImageRef],
    annotations: &Annotations,
) -> Result<(Descriptor, Vec<String>), BuildError> {
    if !facts.is_empty() {
        let pairs = attested_pairs(images, facts)?;
        return supply::index_with_attestations(store, &pairs, names, None, annotations);
    }
    let mut manifests = Vec::new();
    for img in images {
        let mut d = manifest_descriptor(store, img)?;
        d.annotations = annotations.descriptor_of(&image_platform(img));
        manifests.push(d);
    }
    Ok((
        store.put_index(&manifests, annotations.index.clone(), names)?,
        Vec::new(),
    ))
}

/// Each platform's image with the facts of its build (every platform's build has them when
/// one has: they come from the same options).
fn attested_pairs<'a>(
    images: &'a [ImageRecord],
    facts: &'a [supply::Facts],
) -> Result<Vec<(&'a ImageRecord, &'a supply::Facts)>, BuildError> {
    if images.len() != facts.len() {
        return Err(Error::Internal(format!(
            "{} platforms' images but {} platforms' attestation facts",
            images.len(),
            facts.len()
        ))
        .into());
    }
    Ok(images.iter().zip(facts).collect())
}

/// Each platform's image and, with `--sbom`/`--provenance`, the facts of its build.
struct Attest<'a> {
    images: &'a [ImageRecord],
    facts: &'a [supply::Facts],
}

/// The descriptor of a stored image's manifest, with its platform.
fn manifest_descriptor(store: &Store, img: &ImageRecord) -> Result<Descriptor, BuildError> {
    let path = store.blob_path(&img.manifest_digest);
    let size = fs_err::metadata(&path)?.len();
    let mut d = Descriptor::new(media::OCI_MANIFEST, img.manifest_digest.clone(), size);
    d.platform = Some(image_platform(img));
    Ok(d)
}

/// The platform an image's config says.
fn image_platform(img: &ImageRecord) -> Platform {
    Platform {
        architecture: img.config.architecture.clone(),
        os: img.config.os.clone(),
        os_version: None,
        variant: img.config.variant.clone(),
    }
}

/// What the build made besides the images, for `--metadata-file`: in `--platform`'s order,
/// the platforms and what the cache gave each; the bases; what the cache gave the whole.
struct Delivered<'a> {
    platforms: &'a [Platform],
    bases: &'a [(String, crate::oci::Digest)],
    cache: &'a super::CacheSummary,
    caches: &'a [super::CacheSummary],
}

/// Write the index where the options say: `--output`s (`type=registry` pushes it, as
/// `--push`), `--push`, `--metadata-file`, `--iidfile` (the others are refused by [`refuse`]).
fn deliver(
    store: &Store,
    opts: &BuildOptions,
    report: &Arc<dyn report::Reporter>,
    index: &Descriptor,
    attest: &Attest,
    built: &Delivered,
) -> Result<(), BuildError> {
    let (images, platforms) = (attest.images, built.platforms);
    let note = |m: &str| report.event(report::Event::Note(m));
    let names = if opts.tags.is_empty() {
        vec![ImageRef::parse("strata-build:latest")?]
    } else {
        opts.tags.clone()
    };
    for o in &opts.outputs {
        match o {
            Output::Oci { dest, tar } => {
                let top = &opts.annotations.index_descriptor;
                write_oci(store, index, images, &names, top, dest, *tar)?;
                note(&format!("wrote {}", super::describe(o)));
            }
            Output::Local { dest } => {
                if dest.exists()
                    && fs_err::read_dir(dest)
                        .map(|mut d| d.next().is_some())
                        .unwrap_or(false)
                {
                    return Err(Error::OutputNotEmpty { dest: dest.clone() }.into());
                }
                for (img, p) in images.iter().zip(platforms) {
                    store.unpack(img, &dest.join(p.dir_name()))?;
                }
                note(&format!(
                    "wrote root filesystems in {} (one directory per platform)",
                    dest.display()
                ));
            }
            Output::Tar { dest } => {
                write_tar(store, images, platforms, dest)?;
                note(&format!(
                    "wrote root filesystems tar {} (one directory per platform)",
                    dest.display()
                ));
            }
            Output::Docker { .. } | Output::Registry { .. } => {}
        }
    }
    // `--push` and `--output type=registry` (to its name=, else the tags) push the same way.
    let mut to_push: Vec<ImageRef> = Vec::new();
    for o in &opts.outputs {
        if let Output::Registry { name } = o {
            match name {
                Some(n) => {
                    to_push.push(ImageRef::parse(n).doing_with(|| format!("--output name={n}"))?)
                }
                None => to_push.extend(opts.tags.iter().cloned()),
            }
        }
    }
    if opts.push {
        to_push.extend(opts.tags.iter().cloned());
    }
    let mut seen = std::collections::BTreeSet::new();
    to_push.retain(|t| seen.insert(t.to_string()));
    let mut pushed = Vec::new();
    if !to_push.is_empty() {
        let reg = crate::registry::Registry::from_environment()?.with_observer(report.clone());
        let compression = match opts.compression {
            crate::layer::Compression::None => crate::layer::Compression::GZIP,
            c => c,
        };
        // With attestations: their statements about the manifests the push sends.
        let sent = if attest.facts.is_empty() {
            index.clone()
        } else {
            let pairs = attested_pairs(images, attest.facts)?;
            supply::index_with_attestations(
                store,
                &pairs,
                &[],
                Some(compression),
                &opts.annotations,
            )?
            .0
        };
        for t in &to_push {
            let p = reg
                .push_index(
                    store,
                    &sent,
                    t,
                    &crate::registry::push::PushOptions {
                        compression,
                        chunk_size: None,
                    },
                )
                .doing_with(|| format!("pushing {t}"))?;
            note(&p.to_string());
            pushed.push((t.to_string(), p.digest, p.size));
        }
    }
    if let Some(f) = &opts.metadata_file {
        // The index the registry has when pushed (layers compressed on the way change it).
        let (digest, size) = pushed
            .first()
            .map(|(_, d, n)| (d, *n))
            .unwrap_or((&index.digest, index.size));
        let v = serde_json::json!({
            "strata.pushed": pushed.iter().map(|(r, d, _)| format!("{r}@{d}")).collect::<Vec<_>>(),
            "containerimage.digest": digest.to_string(),
            "containerimage.descriptor": {
                "mediaType": media::OCI_INDEX,
                "digest": digest.to_string(),
                "size": size,
            },
            "image.name": opts.tags.iter().map(|t| t.qualified()).collect::<Vec<_>>().join(","),
            "strata.platforms": images.iter().zip(platforms).zip(built.caches).map(|((img, p), c)| serde_json::json!({
                "platform": p.to_string(),
                "digest": img.manifest_digest.to_string(),
                "config.digest": img.config_digest.to_string(),
                "cache": c,
            })).collect::<Vec<_>>(),
            "strata.cache": built.cache,
            "strata.base-images": built.bases.iter().map(|(r, d)| serde_json::json!({"ref": r, "digest": d.to_string()})).collect::<Vec<_>>(),
        });
        fs_err::write(f, serde_json::to_vec_pretty(&v)?)
            .doing_with(|| format!("writing --metadata-file {}", f.display()))?;
    }
    if let Some(f) = &opts.iidfile {
        fs_err::write(f, index.digest.to_string())
            .doing_with(|| format!("writing --iidfile {}", f.display()))?;
    }
    Ok(())
}

/// An OCI layout (a directory, or a tar of one with `tar`) holding the index, named `names`
/// (each entry of index.json with the `index-descriptor:` annotations `top`), and every blob
/// of its images.
fn write_oci(
    store: &Store,
    index: &Descriptor,
    images: &[ImageRecord],
    names: &[ImageRef],
    top_annotations: &BTreeMap<String, String>,
    dest: &Path,
    tar: bool,
) -> Result<(), BuildError> {
    let dir = if tar {
        store
            .tmp_dir()
            .join(format!("oci-index-{}", crate::store::owner_tag()))
    } else {
        dest.to_path_buf()
    };
    let written = (|| -> Result<(), BuildError> {
        let layout = crate::oci::layout::Layout::create(&dir)?;
        let mut blobs = vec![index.digest.clone()];
        for img in images {
            blobs.push(img.manifest_digest.clone());
            blobs.push(img.config_digest.clone());
            blobs.extend(img.manifest.layers.iter().map(|l| l.digest.clone()));
        }
        blobs.extend(supply::attestation_blobs(store, &index.digest)?);
        for d in &blobs {
            let from = store.blob_path(d);
            layout.put_blob(d, &format!(".copy-{}", d.hex()), |tmp| {
                fs_err::copy(&from, tmp)
                    .map(|_| ())
                    .map_err(BuildError::from)
            })?;
        }
        let mut top = layout.index()?.unwrap_or_default();
        for n in names {
            let mut d = index.clone();
            d.annotations = top_annotations.clone();
            d.annotations
                .insert(crate::oci::REF_NAME.into(), n.tag().to_string());
            d.annotations
                .insert("io.containerd.image.name".into(), n.qualified());
            crate::oci::layout::set_entry(&mut top, d);
        }
        layout.write_index(&top)?;
        if tar {
            let f = fs_err::File::create(dest)?;
            let mut b = ::tar::Builder::new(std::io::BufWriter::new(f));
            b.follow_symlinks(false);
            let what = || format!("writing the OCI archive {}", dest.display());
            for f in ["oci-layout", "index.json"] {
                b.append_path_with_name(dir.join(f), f).doing_with(what)?;
            }
            b.append_dir_all("blobs", dir.join("blobs"))
                .doing_with(what)?;
            b.into_inner()
                .doing_with(|| format!("writing the OCI archive {}", dest.display()))?;
        }
        Ok(())
    })();
    if tar {
        let _ = fs_err::remove_dir_all(&dir);
    }
    written
}

/// One tar of every platform's root filesystem, each in its directory (`linux_arm64/`), with
/// the images' owners: unpacked and read in the user namespace, as a single platform's.
fn write_tar(
    store: &Store,
    images: &[ImageRecord],
    platforms: &[Platform],
    dest: &Path,
) -> Result<(), BuildError> {
    let dir = store
        .tmp_dir()
        .join(format!("rootfs-{}", crate::store::owner_tag()));
    let maps = idmap::for_current_user();
    let trees = images
        .iter()
        .zip(platforms)
        .map(|(img, p)| {
            let layers = img
                .manifest
                .layers
                .iter()
                .zip(&img.config.rootfs.diff_ids)
                .map(|(l, d)| (store.blob_path(&l.digest), d.clone()))
                .collect();
            (p.dir_name(), layers)
        })
        .collect();
    let flatten = hooks::Hook::FlattenEach {
        trees,
        dir: dir.clone(),
        out: std::path::absolute(dest)?,
    };
    let r = hooks::hook_done(
        &exec::exe()?,
        flatten,
        &maps,
        "writing the root filesystems tar",
    );
    let cleanup = exec::remove_tree(&dir, &maps);
    r?;
    cleanup?;
    Ok(())
}
