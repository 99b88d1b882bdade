//! COPY and ADD: what they read (local files through the context's checksums, or ADD's URL and
//! git sources fetched first, whose digests are then known), and on a miss the copy job run in
//! the user namespace (`engine/copy.rs`), which writes the layer.

use anyhow::{anyhow, bail};

use super::source::{self, FromRef};
use super::Inputs;
use crate::dockerfile;
use crate::engine::cache::LayerRec;
use crate::engine::copy::{CopyJob, CopyResult, Inline, Source};
use crate::engine::exec::remove_tree;
use crate::engine::fetch;
use crate::engine::stage::{lowers, step_dir, St};

/// What the COPY or ADD `c` reads. ADD's remote sources are fetched here (their digests are
/// only known once downloaded) into a scratch dir that `st.fetched` holds for [`execute`].
pub(in crate::engine) fn inputs(
    st: &mut St<'_, '_>,
    c: &dockerfile::Copy,
    is_add: bool,
) -> anyhow::Result<Inputs> {
    let mut inputs = Inputs::default();
    let remote: Vec<String> = c
        .sources
        .iter()
        .filter(|s| fetch::is_remote(s))
        .cloned()
        .collect();
    if !remote.is_empty() {
        if !is_add {
            bail!("source can't be a URL for COPY");
        }
        if remote.len() != c.sources.len() || c.from.is_some() {
            bail!("ADD: mixing URL or git sources with local files (or --from) in one ADD is not supported; use one ADD per kind of source");
        }
        let dir = step_dir(st.b, "fetch")?;
        let git = remote.iter().filter(|s| fetch::is_git(s)).count();
        let fetched = match (git, remote.as_slice()) {
            (0, _) => fetch::http(&remote, &dir, c.checksum.as_deref()),
            (1, [one]) => fetch::git_repo(one, &dir, c.keep_git_dir, c.checksum.as_deref()),
            _ => Err(anyhow!(
                "ADD: one git repository per ADD, not mixed with other sources"
            )),
        };
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => {
                let _ = fs_err::remove_dir_all(&dir);
                return Err(e);
            }
        };
        inputs.digests.extend(fetched.digests.iter().cloned());
        st.fetched = Some((dir, fetched));
        return Ok(inputs);
    }
    if c.checksum.is_some() {
        bail!("checksum requires HTTP(S) or Git sources");
    }
    let (d, changed) = source::digest(st, c.from.as_deref(), &c.sources, &c.excludes, c.parents)?;
    inputs.digests.push(d);
    inputs.changed = changed;
    Ok(inputs)
}

fn dest_path(st: &St<'_, '_>, dest: &str) -> String {
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
    st: &mut St<'_, '_>,
    c: &dockerfile::Copy,
    is_add: bool,
) -> anyhow::Result<(Option<LayerRec>, Vec<String>)> {
    let remote = st.fetched.as_ref().map(|(_, f)| f.clone());
    let source = match &c.from {
        None if remote.is_some() => Source::Context {
            root: remote.as_ref().map(|f| f.root.clone()).unwrap_or_default(),
            ignore: Vec::new(),
        },
        None => Source::Context {
            root: st.b.opts.context.clone(),
            ignore: st.b.opts.ignore.clone(),
        },
        Some(f) => match source::source_ref(st, f)? {
            FromRef::Stage(r) => Source::Layers(lowers(st.b, &r.config, &r.layers)?),
            FromRef::Context(p) => Source::Context {
                root: p,
                ignore: Vec::new(),
            },
        },
    };
    let env = &st.scope;
    let inline = c
        .inline
        .iter()
        .map(|i| {
            let data = if i.expand {
                st.lexer
                    .process_word(&i.data, env)
                    .unwrap_or_else(|_| i.data.clone())
            } else {
                i.data.clone()
            };
            Inline {
                name: i.path.clone(),
                data,
            }
        })
        .collect();
    let dir = step_dir(st.b, if is_add { "add" } else { "copy" })?;
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
    let _ = remove_tree(&dir, &st.b.maps);
    match r? {
        CopyResult::Layer { layer, dirs, .. } => Ok((Some(layer), dirs)),
        CopyResult::Error(e) => bail!("{e}"),
    }
}
