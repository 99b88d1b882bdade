//! The state of a stage being built ([`StageState`]: its config and layers so far, the key of
//! its last step, the directories known to exist, and the RUN layers still being written) and
//! the two narrow handles a step gets of it: [`StageView`] (read-only: the config, layers,
//! key, scope, known dirs and the build, with the key of a step, a cache lookup and the lower
//! dirs to mount), for what a step reads, and [`StageCx`] (what a step's execution may change:
//! the config, scope and key, its history entry, a record applied, the pending layers settled).
//! Also what every step shares: the scratch dir of a step, the snapshots and path indexes of
//! the layers below, image resolution. The stage loop (`stage.rs`) owns a `StageState`; the
//! step modules see it only through a view or a context and import nothing from the loop.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::error::{BuildError, Doing as _};

use super::cache::key::{self, Inputs, KeyScope};
use super::cache::{self, LayerRec, Record};
use super::exec::{self, remove_tree};
use super::report::Event;
use super::Build;
use crate::dockerfile::shell::Lexer;
use crate::dockerfile::{Command, Instruction};
use crate::oci::{Digest, History, ImageConfig};
use crate::plan::StageScope;

const COMMENT: &str = "strata.dockerfile.v0";

/// A stage being built: its config and layers so far, the key of its last step, and what the
/// step modules need to know about the steps before.
pub(in crate::engine) struct StageState<'b, 'a> {
    pub b: &'b Build<'a>,
    pub index: usize,
    pub name: String,
    pub lexer: Lexer,
    pub config: ImageConfig,
    pub layers: Vec<crate::oci::Descriptor>,
    pub key: Digest,
    pub scope: StageScope,
    pub dirs: Vec<String>,
    /// CMD was set in this stage (so ENTRYPOINT does not reset it).
    pub cmd_set: bool,
    /// `--no-cache` (or `--no-cache-filter`) names this stage: nothing is looked up, and its
    /// cache mounts start empty.
    pub no_cache: bool,
    /// Why the previous step missed, carried to the next ones.
    pub earlier_miss: bool,
    /// `--pull` found the base image moved: the first step misses for that reason.
    pub base_moved: Option<String>,
    /// Step numbers as BuildKit gives them: FROM an image is step 1, then each RUN, COPY,
    /// ADD and WORKDIR (the other instructions have no step).
    pub total: usize,
    pub n: usize,
    /// Whether the command being run is an ONBUILD trigger of the base.
    pub onbuild: bool,
    /// Where each name is in the config's Env, and for how many entries that was computed:
    /// ENV updates in constant time (a Dockerfile of 20,000 ENV lines stays linear).
    pub env_pos: EnvIndex,
    /// The stage's layers not yet in `layers`, in order: a RUN step's still being written
    /// (the steps after it go ahead on its upper dir), and those applied after it. COPY and
    /// ADD, a RUN step that fails and the stage's end settle them ([`StageState::settle`]).
    pub pending: Vec<Pending>,
    /// Where the stage's images come from.
    pub resolve: Resolve,
    /// The platform the stage is built for when it is not this machine's: its RUN steps run
    /// emulated ([`crate::sandbox::Spec::platform`]).
    pub foreign: Option<crate::oci::Platform>,
}

/// Where each name is in a config's Env, and for how many entries of it that was computed.
pub(super) type EnvIndex = (std::collections::HashMap<String, usize>, usize);

/// A layer of the stage that is not in its `layers` yet.
pub(super) enum Pending {
    /// A RUN step's layer being written: recorded in the cache under `key` when done (the
    /// step's lock held until then), its history entry (index `history`) marked empty if
    /// the step changed nothing. `what` names the step for an error.
    Run {
        commit: Box<Commit>,
        key: Digest,
        /// Also recorded under this key, and later steps chain from it (a RUN bind-mounting
        /// a stage, known by the mounted content: cache::Record::chain).
        alias: Option<Digest>,
        created: String,
        history: usize,
        lock: Option<crate::store::Lock>,
        what: String,
    },
    /// A layer applied after a pending RUN step's: it goes on top once that one is in.
    Applied(LayerRec),
}

pub(super) fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    if l.chars().count() > 100 {
        format!("{}…", l.chars().take(100).collect::<String>())
    } else {
        l.to_string()
    }
}

/// How a stage turns an image reference into an image in the store (FROM, COPY --from, a
/// bind mount's from=): [`from_source`], or a fake in the stage loop's tests.
pub(super) type Resolve = fn(
    &Build,
    &str,
    Option<&crate::oci::Platform>,
) -> Result<crate::registry::Resolved, BuildError>;

/// An image from the build's image source: the store, pulled from its registry when missing
/// (or moved, with `--pull`).
pub(super) fn from_source(
    b: &Build,
    r: &str,
    platform: Option<&crate::oci::Platform>,
) -> Result<crate::registry::Resolved, BuildError> {
    b.source.image_for(r, platform).doing_with(|| {
        if b.opts.pull == crate::registry::PullPolicy::Always {
            format!("base image \"{r}\": checking its registry (--pull) failed")
        } else {
            format!("base image \"{r}\" is not in the local store, and pulling it failed")
        }
    })
}

/// The image `r` (for `platform`, else the build's) as `resolve` finds it, recorded among the
/// build's base images.
pub(super) fn image_for(
    b: &Build,
    resolve: Resolve,
    r: &str,
    platform: Option<&crate::oci::Platform>,
) -> Result<crate::registry::Resolved, BuildError> {
    let res = resolve(b, r, platform)?;
    let mut bases = b.bases.lock().unwrap_or_else(|e| e.into_inner());
    if !bases.iter().any(|(x, _)| x == r) {
        bases.push((r.to_string(), res.digest.clone()));
    }
    Ok(res)
}

/// Snapshots (top first) of `layers`, unpacked inside the user namespace on first use.
pub(super) fn lowers(
    b: &Build,
    config: &ImageConfig,
    layers: &[crate::oci::Descriptor],
) -> Result<Vec<PathBuf>, BuildError> {
    // A layer that hit in an imported cache is fetched now that something needs its files.
    for (d, l) in config.rootfs.diff_ids.iter().zip(layers) {
        if !b.store.snapshot_path(d).exists() {
            b.imported.fetch(b, &l.digest, d)?;
        }
    }
    let mut out = exec::snapshots(b.store, &b.exe, &config.rootfs.diff_ids, layers, &b.maps)?;
    out.reverse();
    Ok(exec::unique_top_first(out))
}

/// The path index of each of `layers` (bottom first), from the store's facts or read once
/// from the blob (fetched from an imported cache when only it has the layer); nothing is
/// unpacked.
pub(super) fn layer_paths(
    b: &Build,
    config: &ImageConfig,
    layers: &[crate::oci::Descriptor],
) -> Result<Vec<PathBuf>, BuildError> {
    let mut out = Vec::new();
    for (d, l) in config.rootfs.diff_ids.iter().zip(layers) {
        let p = b.store.layer_paths_file(&l.digest);
        if !p.exists() {
            b.imported.fetch(b, &l.digest, d)?;
            // By the tar headers only when the blob is uncompressed (COPY's commit reads the
            // same way).
            let blob = b.store.open_blob(&l.digest)?;
            let (_, paths) = crate::layer::facts::read_blob_with_paths(blob)
                .doing_with(|| format!("reading the paths of layer {d}"))?;
            b.store.put_layer_paths(&l.digest, &paths)?;
        }
        out.push(p);
    }
    Ok(out)
}

/// A unique scratch directory for a step.
pub(super) fn step_dir(b: &Build, what: &str) -> Result<PathBuf, BuildError> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let d = b.store.tmp_dir().join(format!(
        "{what}-{}-{}",
        crate::store::owner_tag(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    fs_err::create_dir_all(&d)?;
    Ok(d)
}

pub(super) fn rfc(secs: i64) -> String {
    crate::oci::rfc3339(secs)
}

/// What a step reads of its stage, and no more: the config, layers, key, scope and known
/// directories so far, the build (its options, store and reporter), and what follows from
/// them (the key of a step, a cache lookup, the lower dirs to mount). A step's
/// [`inputs`](super::step::Step::inputs) get only this.
#[derive(Clone, Copy)]
pub(in crate::engine) struct StageView<'s, 'b, 'a>(&'s StageState<'b, 'a>);

impl<'b, 'a> StageState<'b, 'a> {
    /// The read-only view of the stage a step gets.
    pub(super) fn view(&self) -> StageView<'_, 'b, 'a> {
        StageView(self)
    }

    fn cfg(&mut self) -> &mut crate::oci::ContainerConfig {
        self.config.config.get_or_insert_with(Default::default)
    }

    pub(super) fn history(&mut self, cmd: &Command, created: &str, empty: bool) {
        self.config.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(created_by(cmd)),
            author: None,
            comment: Some(COMMENT.into()),
            empty_layer: empty,
        });
    }
}

impl<'s, 'b, 'a> StageView<'s, 'b, 'a> {
    /// The build: its options, plan, store, reporter and shared state.
    pub(super) fn b(&self) -> &'b Build<'a> {
        self.0.b
    }

    /// The image `r`, for the build's platform (COPY --from, a bind mount's from=).
    pub(super) fn image(&self, r: &str) -> Result<crate::registry::Resolved, BuildError> {
        image_for(self.0.b, self.0.resolve, r, None)
    }

    /// The stage's platform when it is not this machine's (see [`StageState::foreign`]).
    pub(super) fn foreign(&self) -> Option<crate::oci::Platform> {
        self.0.foreign.clone()
    }

    /// The stage's index in the plan.
    pub(super) fn index(&self) -> usize {
        self.0.index
    }

    pub(super) fn config(&self) -> &'s ImageConfig {
        &self.0.config
    }

    pub(super) fn layers(&self) -> &'s [crate::oci::Descriptor] {
        &self.0.layers
    }

    /// The stage's ARGs and ENV as the next instruction sees them.
    pub(super) fn scope(&self) -> &'s StageScope {
        &self.0.scope
    }

    /// The directories known to exist in the stage's layers.
    pub(super) fn dirs(&self) -> &'s [String] {
        &self.0.dirs
    }

    /// `--no-cache` (or `--no-cache-filter`) names this stage: nothing is looked up, and its
    /// cache mounts start empty.
    pub(super) fn no_cache(&self) -> bool {
        self.0.no_cache
    }

    /// Whether layers of the stage are still being written (a RUN step's, and those applied
    /// after it).
    pub(super) fn has_pending(&self) -> bool {
        !self.0.pending.is_empty()
    }

    pub(super) fn workdir(&self) -> String {
        self.0
            .config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    pub(super) fn shell(&self) -> Vec<String> {
        self.0
            .config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    pub(super) fn user(&self) -> String {
        self.0
            .config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default()
    }

    pub(super) fn env_list(&self) -> Vec<String> {
        self.0
            .config
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }

    /// Build args and ARGs with a value that the step sees (ENV wins over ARG).
    pub(super) fn visible_args(&self) -> Vec<(String, String)> {
        let env = self.env_list();
        self.0
            .scope
            .args
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .filter(|(k, _)| !env.iter().any(|e| e.split('=').next() == Some(k)))
            .collect()
    }

    pub(super) fn now(&self) -> i64 {
        self.0.b.opts.epoch.unwrap_or_else(crate::oci::now_secs)
    }

    /// The scope of a key: the step before (`parent`) and the stage's settings now.
    pub(super) fn key_scope<'k>(&self, parent: &'k str) -> KeyScope<'k> {
        KeyScope {
            parent,
            user: self.user(),
            workdir: self.workdir(),
            shell: self.shell(),
            platform: format!("{}/{}", self.0.config.os, self.0.config.architecture),
            args: self.visible_args(),
            epoch: self.0.b.opts.epoch,
        }
    }

    /// The key of `ins` as the next step of this stage.
    pub(super) fn key_for(&self, ins: &Instruction, inputs: &Inputs) -> Digest {
        key::key(&self.key_scope(self.0.key.as_str()), ins, inputs)
    }

    /// The record of `key`: the local cache first, then the caches of `--cache-from`, then
    /// the steps an earlier build imported whose layers stayed remote.
    pub(super) fn lookup(&self, key: &Digest) -> Option<Record> {
        let b = self.0.b;
        if self.0.no_cache {
            return None;
        }
        cache::get(b.store, key)
            .or_else(|| b.imported.get(b, key))
            .or_else(|| b.imported.remembered(b.store, key))
    }

    /// The lower dirs (top first) a step mounts now: the snapshots of `layers`, under the
    /// pending layers (a RUN step's upper dir while its layer is written).
    pub(super) fn lowers_now(&self) -> Result<Vec<PathBuf>, BuildError> {
        let mut out = lowers(self.0.b, &self.0.config, &self.0.layers)?;
        for p in &self.0.pending {
            let top = match p {
                Pending::Run { commit, .. } => commit.upper.clone(),
                Pending::Applied(l) => {
                    let mut config = self.0.config.clone();
                    config.rootfs.diff_ids = vec![l.diff_id.clone()];
                    lowers(self.0.b, &config, &[l.descriptor()])?.remove(0)
                }
            };
            out.insert(0, top);
        }
        Ok(exec::unique_top_first(out))
    }
}

/// A step's number in the progress: the next one, shown as started with its `label`.
pub(super) fn start_step(b: &Build, label: &str) -> usize {
    let id = b.step_ids.fetch_add(1, Ordering::SeqCst);
    b.report.event(Event::Started {
        step: id,
        name: label,
    });
    b.steps.fetch_add(1, Ordering::SeqCst);
    id
}

/// What a step's [`execute`](super::step::Step::execute) may change of its stage: the config
/// (and the ENV index and whether CMD was set that ENV, CMD and ENTRYPOINT keep), the scope,
/// the key, the history entry of its command, a record applied, the pending layers settled;
/// and its number in the progress, once it shows as started. It reads the rest through
/// [`StageCx::view`].
pub(in crate::engine) struct StageCx<'s, 'b, 'a> {
    st: &'s mut StageState<'b, 'a>,
    cmd: &'s Command,
    label: &'s str,
    id: Option<usize>,
}

impl<'s, 'b, 'a> StageCx<'s, 'b, 'a> {
    /// The context of the step of `cmd`, shown as `label`, started as step `id` when the
    /// loop showed it already.
    pub(super) fn new(
        st: &'s mut StageState<'b, 'a>,
        cmd: &'s Command,
        label: &'s str,
        id: Option<usize>,
    ) -> Self {
        StageCx { st, cmd, label, id }
    }

    pub(super) fn view(&self) -> StageView<'_, 'b, 'a> {
        self.st.view()
    }

    /// The build (as [`StageView::b`]).
    pub(super) fn b(&self) -> &'b Build<'a> {
        self.st.b
    }

    /// The command of the step.
    pub(super) fn cmd(&self) -> &'s Command {
        self.cmd
    }

    /// The step's number in the progress, started now unless it was.
    pub(super) fn start(&mut self) -> usize {
        match self.id {
            Some(id) => id,
            None => {
                let id = start_step(self.st.b, self.label);
                self.id = Some(id);
                id
            }
        }
    }

    pub(super) fn config_mut(&mut self) -> &mut ImageConfig {
        &mut self.st.config
    }

    /// The container config, made when the image has none.
    pub(super) fn cfg(&mut self) -> &mut crate::oci::ContainerConfig {
        self.st.cfg()
    }

    pub(super) fn scope_mut(&mut self) -> &mut StageScope {
        &mut self.st.scope
    }

    /// Where each name is in the config's Env, and for how many entries that was computed.
    pub(super) fn env_pos(&mut self) -> &mut EnvIndex {
        &mut self.st.env_pos
    }

    /// Whether CMD was set in this stage (so ENTRYPOINT does not reset it).
    pub(super) fn cmd_set(&mut self) -> &mut bool {
        &mut self.st.cmd_set
    }

    /// The key the next step chains from.
    pub(super) fn set_key(&mut self, key: Digest) {
        self.st.key = key;
    }

    /// The history entry of the step's command.
    pub(super) fn history(&mut self, created: &str, empty: bool) {
        self.st.history(self.cmd, created, empty);
    }

    /// Apply the step's record (as the loop does for a cached step).
    pub(super) fn apply(&mut self, key: Digest, rec: &Record) {
        self.st.apply(self.cmd, key, rec);
    }

    /// Put the layers still being written in the stage's layers ([`StageState::settle`]).
    pub(super) fn settle(&mut self) -> Result<(), BuildError> {
        self.st.settle()
    }
}

impl StageState<'_, '_> {
    fn push_layer(&mut self, l: &LayerRec) {
        if self.pending.is_empty() {
            self.push_layer_now(l);
        } else {
            self.pending.push(Pending::Applied(l.clone()));
        }
    }

    fn push_layer_now(&mut self, l: &LayerRec) {
        self.layers.push(l.descriptor());
        self.config.rootfs.diff_ids.push(l.diff_id.clone());
    }

    /// A step's record, for `--cache-to` and the build's summary.
    fn record_applied(&self, key: Digest, record: Record) {
        self.b
            .applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(super::cache::Applied {
                stage: self.index,
                key,
                record,
            });
    }

    /// Wait for the layers being written and put every pending layer in `layers`, in order;
    /// record the RUN steps among them in the cache. After an error the rest are only waited
    /// for (and their scratch dirs removed).
    pub(super) fn settle(&mut self) -> Result<(), BuildError> {
        let mut result = Ok(());
        for p in std::mem::take(&mut self.pending) {
            match p {
                _ if result.is_err() => {}
                Pending::Applied(l) => self.push_layer_now(&l),
                Pending::Run {
                    commit,
                    key,
                    alias,
                    created,
                    history,
                    lock,
                    what,
                } => {
                    result = commit
                        .finish()
                        .doing_with(|| format!("writing the layer of {what}"))
                        .and_then(|layer| self.committed(key, alias, layer, created, history));
                    drop(lock);
                }
            }
        }
        result
    }

    /// A pending RUN step's layer is written: in `layers` (or its history entry, `history`,
    /// marked empty), and the step in the cache.
    fn committed(
        &mut self,
        key: Digest,
        alias: Option<Digest>,
        layer: Option<LayerRec>,
        created: String,
        history: usize,
    ) -> Result<(), BuildError> {
        match &layer {
            Some(l) => self.push_layer_now(l),
            None => {
                if let Some(h) = self.config.history.get_mut(history) {
                    h.empty_layer = true;
                }
            }
        }
        let record = Record {
            layer,
            created,
            dirs: Vec::new(),
            chain: alias.clone(),
        };
        cache::put(self.b.store, &key, &record)?;
        if let Some(a) = &alias {
            cache::put(self.b.store, a, &record)?;
        }
        self.record_applied(key, record);
        Ok(())
    }

    /// Apply a step's record: its layer, known dirs and history.
    pub(super) fn apply(&mut self, cmd: &Command, key: Digest, rec: &Record) {
        if let Some(l) = &rec.layer {
            self.push_layer(l);
        }
        self.record_applied(key.clone(), rec.clone());
        for d in &rec.dirs {
            if !self.dirs.contains(d) {
                self.dirs.push(d.clone());
            }
        }
        self.key = rec.chain.clone().unwrap_or(key);
        self.history(cmd, &rec.created, rec.layer.is_none());
    }
}

fn created_by(cmd: &Command) -> String {
    let text = cmd.original.trim();
    match &cmd.instruction {
        Instruction::Run(_) => format!("{text} # strata"),
        Instruction::Copy(_) | Instruction::Add(_) => format!("{text} # strata"),
        _ => text.to_string(),
    }
}
/// What a RUN step that ran leaves behind.
pub(in crate::engine) enum Ran {
    /// Its layer (None: it changed nothing), written and hashed.
    Done(Option<LayerRec>),
    /// Its layer being written and hashed on a thread.
    Committing(Commit),
}

/// A RUN step's layer being written and hashed on a thread while the next steps run. Its
/// overlay upper dir is that layer's content and stays where it is until [`Commit::finish`]:
/// the next steps mount it as a lower dir meanwhile. BuildKit likewise runs the next step on
/// the snapshot and makes the blob later.
pub(in crate::engine) struct Commit {
    pub upper: PathBuf,
    /// The step's scratch dir (the upper dir is in it), removed when the commit ends.
    step: PathBuf,
    store: crate::store::Store,
    maps: crate::sandbox::idmap::IdMaps,
    /// Waits for the thread writing the layer.
    job: Option<Join>,
}

/// Waits for the thread writing a RUN step's layer and returns what it made.
type Join = Box<dyn FnOnce() -> Result<Option<LayerRec>, BuildError> + Send>;

impl Commit {
    /// The commit of the RUN step whose scratch dir is `step` (its upper dir `upper` in it),
    /// its layer made by `job` (of any error type the engine's errors take in).
    pub fn new<E: Into<BuildError> + Send + 'static>(
        upper: PathBuf,
        step: PathBuf,
        b: &Build,
        job: std::thread::JoinHandle<Result<Option<LayerRec>, E>>,
    ) -> Commit {
        let join = move || match job.join() {
            Ok(made) => made.map_err(Into::into),
            Err(_) => Err(super::error::Error::Internal(
                "the thread writing a RUN step's layer panicked".into(),
            )
            .into()),
        };
        Commit {
            upper,
            step,
            store: b.store.clone(),
            maps: b.maps.clone(),
            job: Some(Box::new(join)),
        }
    }

    /// The layer (None when the step changed nothing), with the upper dir kept as its
    /// snapshot and the scratch dir removed.
    pub fn finish(mut self) -> Result<Option<LayerRec>, BuildError> {
        let layer = self.join();
        if let Ok(Some(l)) = &layer {
            let _ = self.store.adopt_snapshot(&l.diff_id, &self.upper);
        }
        let cleanup = remove_tree(&self.step, &self.maps);
        let layer = layer?;
        cleanup?;
        Ok(layer)
    }

    fn join(&mut self) -> Result<Option<LayerRec>, BuildError> {
        match self.job.take() {
            Some(join) => join(),
            None => Ok(None),
        }
    }
}

impl Drop for Commit {
    /// A commit the build did not finish (it failed first): its thread is waited for and its
    /// scratch dir removed; nothing is recorded.
    fn drop(&mut self) {
        if self.job.is_some() {
            let _ = self.join();
            let _ = remove_tree(&self.step, &self.maps);
        }
    }
}
