//! COPY and ADD: what they read (local files through the context's checksums, or ADD's URL and
//! git sources fetched first, whose digests are then known), and on a miss the copy job run in
//! the user namespace (`engine/hooks/copy.rs`), which writes the layer.

use std::path::PathBuf;

use crate::engine::error::{BuildError, Error};

use super::source::{self, FromRef};
use crate::dockerfile;
use crate::engine::cache::key::Inputs;
use crate::engine::cache::LayerRec;
use crate::engine::exec::remove_tree;
use crate::engine::fetch;
use crate::engine::hooks::copy::{CopyJob, CopyResult, Inline, Source};
use crate::engine::state::{lowers, step_dir, StageView};

/// ADD's downloads or clone for its step: the scratch dir, removed when the step is done with
/// it, and what it holds.
pub(in crate::engine) struct Fetch {
    dir: PathBuf,
    got: fetch::Fetched,
}

impl Drop for Fetch {
    fn drop(&mut self) {
        let _ = fs_err::remove_dir_all(&self.dir);
    }
}

/// What the COPY or ADD `c` reads. ADD's remote sources are fetched here (their digests are
/// only known once downloaded) into a scratch dir, returned for [`execute`].
pub(in crate::engine) fn inputs(
    st: StageView<'_, '_, '_>,
    c: &dockerfile::Copy,
    is_add: bool,
) -> Result<(Inputs, Option<Fetch>), BuildError> {
    let mut inputs = Inputs::default();
    let remote: Vec<String> = c
        .sources
        .iter()
        .filter(|s| fetch::is_remote(s))
        .cloned()
        .collect();
    if !remote.is_empty() {
        if !is_add {
            return Err(Error::UrlInCopy.into());
        }
        if remote.len() != c.sources.len() || c.from.is_some() {
            return Err(Error::MixedAddSources.into());
        }
        let dir = step_dir(st.b(), "fetch")?;
        let git = remote.iter().filter(|s| fetch::is_git(s)).count();
        let fetched = match (git, remote.as_slice()) {
            (0, _) => fetch::http(&remote, &dir, c.checksum.as_deref()),
            (1, [one]) => fetch::git_repo(one, &dir, c.keep_git_dir, c.checksum.as_deref()),
            _ => Err(Error::TwoGitSources.into()),
        };
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                let _ = fs_err::remove_dir_all(&dir);
                return Err(e);
            }
        };
        inputs.digests.extend(fetched.digests.iter().cloned());
        st.b()
            .fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(fetched.digests.iter().cloned());
        return Ok((inputs, Some(Fetch { dir, got: fetched })));
    }
    if c.checksum.is_some() {
        return Err(Error::ChecksumForLocal.into());
    }
    let (d, changed) = source::digest(st, c.from.as_deref(), &c.sources, &c.excludes, c.parents)?;
    inputs.digests.push(d);
    inputs.changed = changed;
    // Heredocs whose bodies expand (ARG and ENV values) are known by what they expand to.
    let inline = inline_files(st, c)?;
    if inline.iter().zip(&c.inline).any(|(x, i)| x.data != i.data) {
        let text: Vec<&str> = inline.iter().map(|x| x.data.as_str()).collect();
        let d = crate::oci::Digest::of(serde_json::to_string(&text)?.as_bytes());
        inputs.digests.push(format!("heredocs {d}"));
    }
    Ok((inputs, None))
}

/// The heredoc files of a COPY or ADD, bodies expanded as BuildKit's ExpandRaw does it
/// (unless the delimiter is quoted): variables and `\` escapes (always `\`, whatever the
/// escape directive), quotes left as they are.
fn inline_files(st: StageView<'_, '_, '_>, c: &dockerfile::Copy) -> Result<Vec<Inline>, Error> {
    let raw = crate::dockerfile::shell::Lexer {
        skip_quotes: true,
        ..crate::dockerfile::shell::Lexer::new('\\')
    };
    let mut inline = Vec::new();
    for i in &c.inline {
        let data = if i.expand {
            raw.process_word(&i.data, st.scope())
                .map_err(|cause| Error::Heredoc {
                    path: i.path.clone(),
                    cause,
                })?
        } else {
            i.data.clone()
        };
        inline.push(Inline {
            name: i.path.clone(),
            data,
        });
    }
    Ok(inline)
}

fn dest_path(st: StageView<'_, '_, '_>, dest: &str) -> String {
    if dest.starts_with('/') {
        return dest.to_string();
    }
    let wd = st.workdir();
    let sep = if wd.ends_with('/') { "" } else { "/" };
    if dest.is_empty() {
        format!("{wd}{sep}")
    } else {
        format!("{wd}{sep}{dest}")
    }
}

pub(in crate::engine) fn execute(
    st: StageView<'_, '_, '_>,
    c: &dockerfile::Copy,
    is_add: bool,
    fetched: Option<&Fetch>,
) -> Result<(Option<LayerRec>, Vec<String>), BuildError> {
    let remote = fetched.map(|f| &f.got);
    let source = match &c.from {
        None if remote.is_some() => Source::Context {
            root: remote.as_ref().map(|f| f.root.clone()).unwrap_or_default(),
            ignore: Vec::new(),
        },
        None => Source::Context {
            root: st.b().opts.context.clone(),
            ignore: st.b().opts.ignore.clone(),
        },
        Some(f) => match source::source_ref(st, f)? {
            FromRef::Stage(r) => Source::Layers(lowers(st.b(), &r.config, &r.layers)?),
            FromRef::Context(p) => Source::Context {
                root: p,
                ignore: Vec::new(),
            },
        },
    };
    let inline = inline_files(st, c)?;
    let dir = step_dir(st.b(), if is_add { "add" } else { "copy" })?;
    let base = super::new_job(
        st,
        &dir,
        source,
        c.link,
        if is_add { "ADD" } else { "COPY" },
    )?;
    let job = CopyJob {
        sources: match &remote {
            Some(f) => f.sources.clone(),
            None => c.sources.clone(),
        },
        inline,
        dest: dest_path(st, &c.dest),
        chown: c.chown.clone(),
        chmod: c.chmod.clone(),
        excludes: c.excludes.clone(),
        parents: c.parents,
        // Local archives unpack unless --unpack=false; downloads only with --unpack=true.
        unpack: is_add
            && match &remote {
                Some(_) => c.unpack == Some(true),
                None => c.unpack != Some(false),
            },
        ..base
    };
    let r = super::run_copy(st, job);
    let _ = remove_tree(&dir, &st.b().maps);
    match r? {
        CopyResult::Layer { layer, dirs, .. } => Ok((Some(layer), dirs)),
        CopyResult::Error(message) => Err(Error::Copy { message }.into()),
    }
}
