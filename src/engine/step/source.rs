//! What a step reads from outside its own stage: the build context (or a named context
//! directory), another stage's result, or an image; and the digests of exactly that, for the
//! keys of COPY, ADD and RUN's bind mounts.

use std::path::{Path, PathBuf};

use crate::engine::error::{BuildError, Cancelled, Error};
use crate::engine::hooks::copy;
use crate::engine::state::StageView;
use crate::engine::{NamedContext, StageResult};

/// Where a `--from` points.
pub(in crate::engine) enum FromRef {
    Stage(std::sync::Arc<StageResult>),
    Context(PathBuf),
}

/// The key input for what `sources` read from `from` (the build context when `None`): the
/// content of a context directory, or a stage's or image's layers; and the context files
/// that changed since the last build.
pub(in crate::engine) fn digest(
    st: StageView<'_, '_, '_>,
    from: Option<&str>,
    sources: &[String],
    excludes: &[String],
    parents: bool,
) -> Result<(String, Vec<String>), BuildError> {
    let opts = st.b().opts;
    match from {
        None => context_digest(st, &opts.context, &opts.ignore, sources, excludes, parents),
        Some(f) => match source_ref(st, f)? {
            FromRef::Stage(r) => Ok((r.content_id(), Vec::new())),
            FromRef::Context(p) => context_digest(st, &p, &[], sources, excludes, parents),
        },
    }
}

/// The digest of exactly what `sources` read from a context directory (path, kind, mode,
/// owner, content), with the files that changed since the last build.
pub(in crate::engine) fn context_digest(
    st: StageView<'_, '_, '_>,
    root: &Path,
    ignore: &[String],
    sources: &[String],
    excludes: &[String],
    parents: bool,
) -> Result<(String, Vec<String>), BuildError> {
    let resolved = copy::resolve_sources(root, sources, parents)?;
    let mut entries = Vec::new();
    let mut names = Vec::new();
    let ignored =
        crate::context::ignore::Matcher::new(ignore).map_err(|cause| Error::BadIgnore { cause })?;
    for r in &resolved {
        if !r.path.is_empty() && !r.is_dir {
            // A single file excluded by .dockerignore is not there for the build.
            if ignored.excluded(&r.path) {
                return Err(Error::Excluded {
                    path: r.path.clone(),
                }
                .into());
            }
        }
        // path, name, and the kept path below a --parents pivot ("-" when none).
        names.push(format!(
            "{}:{}:{}",
            r.path,
            r.name,
            r.keep
                .as_deref()
                .map_or("-".to_string(), |k| format!("+{k}"))
        ));
        entries.extend(copy::source_entries(root, r, ignore, excludes)?);
    }
    let mut cache = st.b().checksums.lock().unwrap_or_else(|e| e.into_inner());
    let (d, stats) = crate::context::checksum::digest(root, &entries, &mut cache)?;
    // What to say when the step misses: the files whose content changed, and new ones when an
    // earlier build saw some of the others (a first build is "not in the cache", not "20,000
    // files changed", nor ".dockerignore (new)" because an earlier step of this build hashed
    // requirements.txt).
    let mut why = stats.changed;
    if stats.recorded > 0 {
        why.extend(stats.added.into_iter().map(|a| format!("{a} (new)")));
    }
    Ok((format!("{d} {}", names.join(" ")), why))
}

pub(in crate::engine) fn source_ref(
    st: StageView<'_, '_, '_>,
    f: &str,
) -> Result<FromRef, BuildError> {
    let plan = st.b().plan;
    // A named context replaces the stage of the same name (the plan never builds that stage,
    // so waiting for it would wait forever).
    let named = st
        .b()
        .opts
        .named_contexts
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(f))
        .map(|(_, v)| v);
    match named {
        Some(NamedContext::Dir(p)) => return Ok(FromRef::Context(p.clone())),
        Some(NamedContext::Image(r)) => return image_ref(st, r),
        Some(NamedContext::OciLayout(p, _)) => {
            let loaded = st.b().store.load(p)?;
            let img = loaded
                .first()
                .ok_or_else(|| Error::EmptyLayout { layout: p.clone() })?;
            return image_ref(st, &img.config_digest.to_string());
        }
        None => {}
    }
    let idx = plan
        .stage_by_name(f)
        .map(|s| s.index)
        .or_else(|| f.parse::<usize>().ok().filter(|i| *i < plan.stages.len()));
    if let Some(i) = idx {
        if i == st.index() {
            return Err(Error::FromItself {
                name: f.to_string(),
            }
            .into());
        }
        let r = st.b().stage_result(i).ok_or(Cancelled)?;
        return Ok(FromRef::Stage(r));
    }
    if let Some(s) = plan.stage_typo(f) {
        return Err(Error::NoSuchStage {
            name: f.to_string(),
            suggestion: s.to_string(),
        }
        .into());
    }
    image_ref(st, f)
}

/// The digest of what a bind mount of `src` from the stage (or image) `r` shows: its files'
/// content, kinds, modes and owners, not how the stage made them (BuildKit keys such a mount
/// by its content). Read once per stage filesystem and path, in the user namespace (the files
/// may belong to subordinate ids), and kept in the store's facts as a cache.
pub(in crate::engine) fn stage_subtree(
    st: StageView<'_, '_, '_>,
    r: &StageResult,
    src: &str,
) -> Result<String, BuildError> {
    let b = st.b();
    let clean = crate::fsx::clean(&format!("/{src}"));
    let id = crate::oci::Digest::of(format!("{} {clean}", r.content_id()).as_bytes());
    let memo = b
        .store
        .facts_dir()
        .join(format!("subtree-{}", &id.hex()[..32]));
    if let Ok(d) = fs_err::read_to_string(&memo) {
        if d.len() == 64 {
            return Ok(d);
        }
    }
    let lowers = crate::engine::state::lowers(b, &r.config, &r.layers)?;
    let work = crate::engine::state::step_dir(b, "digest")?;
    let out = work.join("digest");
    let result = crate::engine::hooks::hook_done(
        &b.exe,
        crate::engine::hooks::Hook::TreeDigest {
            lowers,
            sub: clean.clone(),
            work: work.clone(),
            out: out.clone(),
        },
        &b.maps,
        &format!("reading {clean} of a stage for the step's key"),
    )
    .and_then(|()| Ok(fs_err::read_to_string(&out)?));
    let _ = crate::engine::exec::remove_tree(&work, &b.maps);
    let d = result?;
    fs_err::create_dir_all(b.store.facts_dir())?;
    let tmp = memo.with_extension(format!("tmp{}", std::process::id()));
    fs_err::write(&tmp, &d)?;
    fs_err::rename(&tmp, &memo)?;
    Ok(d)
}

/// Did a step of the stage `f` (by name or index) run rather than come from the cache?
pub(in crate::engine) fn missed(st: StageView<'_, '_, '_>, f: &str) -> bool {
    let plan = st.b().plan;
    // A named context of that name stands for it: no stage of the plan ran.
    if st
        .b()
        .opts
        .named_contexts
        .keys()
        .any(|k| k.eq_ignore_ascii_case(f))
    {
        return false;
    }
    plan.stage_by_name(f)
        .map(|s| s.index)
        .or_else(|| f.parse::<usize>().ok())
        .and_then(|i| st.b().stage_result(i))
        .is_some_and(|r| r.ran)
}

fn image_ref(st: StageView<'_, '_, '_>, r: &str) -> Result<FromRef, BuildError> {
    if let Some(x) = st
        .b()
        .externals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(r)
    {
        return Ok(FromRef::Stage(x.clone()));
    }
    let img = st.image(r)?;
    let res = std::sync::Arc::new(StageResult {
        config: img.record.config.clone(),
        layers: img.record.manifest.layers.clone(),
        key: img.record.config_digest.clone(),
        dirs: Vec::new(),
        ran: false,
    });
    st.b()
        .externals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(r.to_string(), res.clone());
    Ok(FromRef::Stage(res))
}
