//! WORKDIR: sets the config's working directory; a directory no layer below has is made as a
//! layer (owned by the USER, as Docker does), one that exists is only recorded.

use std::path::PathBuf;

use crate::engine::error::{BuildError, Error};

use crate::dockerfile::Instruction;
use crate::engine::cache::key::Inputs;
use crate::engine::cache::{self, LayerRec, Record};
use crate::engine::exec::remove_tree;
use crate::engine::hooks::copy::{CopyJob, CopyResult, Source};
use crate::engine::report::Event;
use crate::engine::state::{rfc, step_dir, StageCx, StageView};

/// WORKDIR `w` (expanded): the config's working directory, and a layer with the directory
/// when no layer below has it.
pub(in crate::engine) fn execute(st: &mut StageCx<'_, '_, '_>, w: &str) -> Result<(), BuildError> {
    // The config keeps the path as BuildKit records it (`/app/` stays `/app/`); the directory
    // made is the cleaned path.
    let recorded = crate::plan::workdir_config(&st.view().workdir(), w);
    let wd = &crate::plan::in_workdir("/", &recorded);
    st.cfg().working_dir = Some(recorded.clone());
    let b = st.b();
    let key = st
        .view()
        .key_for(&Instruction::Workdir(recorded), &Inputs::default());
    if let Some(rec) = st.view().lookup(&key) {
        if rec.layer.is_some() {
            // A WORKDIR that made a directory is a step when it runs: it is one (cached)
            // when it does not, so a no-op rebuild counts the steps its build counted.
            let id = st.start();
            b.cached.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            b.report.event(Event::Cached { step: id });
        }
        st.apply(key, &rec);
        return Ok(());
    }
    let view = st.view();
    let known = wd == "/" || view.dirs().iter().any(|d| d == wd);
    let exists = known
        || if super::by_paths(view) {
            let files = crate::engine::state::layer_paths(b, view.config(), view.layers())?;
            crate::layer::paths::Merged::load(&files)?.kind(wd)
                == Some(&crate::layer::paths::Kind::Dir)
        } else {
            exists_in_layers(&view.lowers_now()?, wd)
        };
    let created = rfc(view.now());
    let rec = if exists {
        Record {
            layer: None,
            created,
            dirs: vec![wd.to_string()],
            chain: None,
        }
    } else {
        // Create it, owned by the current USER, with a COPY-like job of no sources.
        let id = st.start();
        let layer = mkdir_layer(st.view(), wd)?;
        b.report.event(Event::Done { step: id });
        Record {
            layer: Some(layer),
            created,
            dirs: vec![wd.to_string()],
            chain: None,
        }
    };
    cache::put(b.store, &key, &rec)?;
    st.apply(key, &rec);
    Ok(())
}

/// A layer holding directory `wd` (and missing parents), owned by the USER.
fn mkdir_layer(st: StageView<'_, '_, '_>, wd: &str) -> Result<LayerRec, BuildError> {
    let user = st.user();
    let owner = if user.is_empty() { None } else { Some(user) };
    let job_dir = step_dir(st.b(), "workdir")?;
    // A job with no sources makes just the destination directory.
    let result = super::new_job(st, &job_dir, Source::Layers(Vec::new()), false, "WORKDIR")
        .and_then(|base| {
            super::run_copy(
                st,
                CopyJob {
                    dest: format!("{}/", wd.trim_end_matches('/')),
                    chown: owner,
                    ..base
                },
            )
        });
    let _ = remove_tree(&job_dir, &st.b().maps);
    match result? {
        CopyResult::Layer { layer, .. } => Ok(layer),
        CopyResult::Error(message) => Err(Error::Workdir {
            dir: wd.to_string(),
            message,
        }
        .into()),
    }
}

/// Does a directory exist at `abs` in the union of `lowers` (top first)? Overlay whiteouts
/// (0/0 character devices) hide what is below them.
fn exists_in_layers(lowers: &[PathBuf], abs: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let rel = abs.trim_start_matches('/');
    for l in lowers {
        match std::fs::symlink_metadata(l.join(rel)) {
            Ok(m) if m.file_type().is_char_device() => return false,
            Ok(m) => return m.is_dir(),
            Err(_) => {}
        }
    }
    false
}
