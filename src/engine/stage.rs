//! One stage: its base, the ONBUILD triggers of the base, then each instruction in turn:
//! expanded, keyed, looked up in the cache, and on a miss executed by the step module of its
//! kind (`step/`), its record applied to the stage's config and layers. A RUN step's layer is
//! applied late: the steps after it go ahead while it is written ([`Pending`], [`St::settle`]).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail, Context as _};

use super::cache::{self, LayerRec, Record};
use super::exec;
use super::report::Event;
use super::step;
use super::{Build, NamedContext, StageResult};
use crate::dockerfile::shell::{env_from_list, Lexer};
use crate::dockerfile::{self, Command, Instruction, RunOptions};
use crate::oci::{Digest, History, ImageConfig};
use crate::plan::{expand_instruction, Base, DepKind, Platform, StageScope};

use crate::oci::DEFAULT_PATH;
const COMMENT: &str = "strata.dockerfile.v0";

pub(super) use super::error::Cancelled;

/// A stage being built: its config and layers so far, the key of its last step, and what the
/// step modules need to know about the steps before.
pub(super) struct St<'b, 'a> {
    pub b: &'b Build<'a>,
    pub index: usize,
    name: String,
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
    earlier_miss: bool,
    /// `--pull` found the base image moved: the first step misses for that reason.
    base_moved: Option<String>,
    /// Step numbers as BuildKit gives them: FROM an image is step 1, then each RUN, COPY,
    /// ADD and WORKDIR (the other instructions have no step).
    total: usize,
    n: usize,
    /// Whether the command being run is an ONBUILD trigger of the base.
    onbuild: bool,
    /// ADD's downloads or clone for the current step (the scratch dir, what it holds).
    pub fetched: Option<(PathBuf, super::fetch::Fetched)>,
    /// Where each name is in the config's Env, and for how many entries that was computed:
    /// ENV updates in constant time (a Dockerfile of 20,000 ENV lines stays linear).
    pub env_pos: (std::collections::HashMap<String, usize>, usize),
    /// The stage's layers not yet in `layers`, in order: a RUN step's still being written
    /// (the steps after it go ahead on its upper dir), and those applied after it. COPY and
    /// ADD, a RUN step that fails and the stage's end settle them ([`St::settle`]).
    pub pending: Vec<Pending>,
}

/// A layer of the stage that is not in its `layers` yet.
pub(super) enum Pending {
    /// A RUN step's layer being written: recorded in the cache under `key` when done (the
    /// step's lock held until then), its history entry (index `history`) marked empty if
    /// the step changed nothing. `what` names the step for an error.
    Run {
        commit: Box<step::run::Commit>,
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

/// The location `Dockerfile:LINE` of a command.
fn loc(b: &Build, c: &Command) -> String {
    format!("{}:{}", b.opts.dockerfile_name, c.start_line)
}

pub(super) fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    if l.chars().count() > 100 {
        format!("{}…", l.chars().take(100).collect::<String>())
    } else {
        l.to_string()
    }
}

pub(crate) fn run(b: &Build, i: usize) -> anyhow::Result<StageResult> {
    let stage = &b.plan.stages[i];
    let name = stage.display_name();
    let (mut config, layers, key, dirs, moved) = base(b, i)?;
    // A stage built on a stage that ran has changed too.
    let base_ran = match stage.base {
        Base::Stage(j) => b.stage_result(j).is_some_and(|r| r.ran),
        _ => false,
    };
    let c = config.config.get_or_insert_with(Default::default);
    let env = c.env.get_or_insert_with(Vec::new);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    let base_env = env_from_list(env);
    // ONBUILD triggers of the base run first, once: the stage's own config drops them.
    let triggers: Vec<String> = c.on_build.take().unwrap_or_default();
    let mut trigger_cmds = Vec::new();
    for t in &triggers {
        let src = dockerfile::Source::new(format!("ONBUILD trigger of {name}"), t.clone());
        let (_, cmds) = dockerfile::load(&src).map_err(|d| {
            anyhow!(
                "ONBUILD trigger \"{t}\" of the base of stage {name}: {}",
                d.message
            )
        })?;
        trigger_cmds.extend(cmds);
    }
    let no_cache = b.opts.no_cache
        || stage.name.as_deref().is_some_and(|n| {
            b.opts
                .no_cache_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(n))
        })
        || b.opts.no_cache_filter.iter().any(|f| f == &i.to_string());
    let all: Vec<&Command> = trigger_cmds.iter().chain(stage.commands.iter()).collect();
    let numbered = |c: &Command| {
        matches!(
            c.instruction,
            Instruction::Run(_)
                | Instruction::Copy(_)
                | Instruction::Add(_)
                | Instruction::Workdir(_)
        )
    };
    let from_step = usize::from(matches!(stage.base, Base::Image(_) | Base::Context(_)));
    let mut st = St {
        b,
        index: i,
        name,
        lexer: Lexer::new(b.plan.escape),
        config,
        layers,
        key,
        scope: b
            .plan
            .scope()
            .with_env(base_env)
            .with_budget(b.budget.clone()),
        dirs,
        cmd_set: false,
        no_cache,
        earlier_miss: false,
        base_moved: moved,
        total: from_step + all.iter().filter(|c| numbered(c)).count(),
        n: from_step,
        onbuild: false,
        fetched: None,
        env_pos: Default::default(),
        pending: Vec::new(),
    };
    let mut steps = || -> anyhow::Result<()> {
        for (k, cmd) in all.iter().enumerate() {
            if b.schedule.failed() {
                return Err(Cancelled.into());
            }
            if numbered(cmd) {
                st.n += 1;
            }
            st.onbuild = k < trigger_cmds.len();
            st.command(cmd).with_context(|| super::StepFailed {
                file: b.opts.dockerfile_name.clone(),
                line: cmd.start_line,
                instruction: first_line(&cmd.original),
                span: cmd.span,
                source_text: b.opts.dockerfile.clone(),
            })?;
        }
        Ok(())
    };
    let ran = steps();
    // The layers still being written are waited for, and recorded in the cache even when a
    // later step failed (its rebuild starts from them, as BuildKit's does).
    let settled = st.settle();
    ran?;
    settled?;
    Ok(StageResult {
        config: st.config,
        layers: st.layers,
        key: st.key,
        dirs: st.dirs,
        ran: st.earlier_miss || base_ran,
    })
}

fn scratch_config(p: &Platform) -> ImageConfig {
    ImageConfig {
        created: None,
        author: None,
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        os_version: None,
        variant: p.variant.clone(),
        // As BuildKit's empty image: the working directory is `/` (PATH is added as for
        // every image without one).
        config: Some(crate::oci::ContainerConfig {
            working_dir: Some("/".into()),
            ..Default::default()
        }),
        rootfs: Default::default(),
        history: Vec::new(),
        extra: Default::default(),
    }
}

/// A stage's starting point: config, layers, key, known directories, and why its steps must
/// miss when its base image moved (`--pull`).
type BaseState = (
    ImageConfig,
    Vec<crate::oci::Descriptor>,
    Digest,
    Vec<String>,
    Option<String>,
);

fn base(b: &Build, i: usize) -> anyhow::Result<BaseState> {
    let stage = &b.plan.stages[i];
    let want = match &stage.platform {
        Some(p) => Some(
            Platform::parse(p)
                .ok_or_else(|| anyhow!("{}: invalid --platform \"{p}\"", loc(b, &stage.from)))?,
        ),
        None => None,
    };
    let from_image = |r: &str| -> anyhow::Result<BaseState> {
        let res = image_for(b, r, want.as_ref()).with_context(|| loc(b, &stage.from))?;
        let img = &res.record;
        if let Some(w) = &want {
            if img.config.os != w.os || img.config.architecture != w.architecture {
                bail!(
                    "{}: base image {r} is {}/{}, not the {w} that --platform asks for (strata does not emulate other platforms)",
                    loc(b, &stage.from),
                    img.config.os,
                    img.config.architecture
                );
            }
        }
        Ok((
            img.config.clone(),
            img.manifest.layers.clone(),
            img.config_digest.clone(),
            Vec::new(),
            res.moved_from
                .as_ref()
                .map(|from| format!("the base {r} moved from {} to {}", from, res.digest)),
        ))
    };
    match &stage.base {
        Base::Scratch => {
            let p = want.unwrap_or_else(|| b.plan.options.target_platform.clone());
            Ok((
                scratch_config(&p),
                Vec::new(),
                Digest::of(format!("scratch {p}").as_bytes()),
                Vec::new(),
                None,
            ))
        }
        Base::Stage(j) => {
            let r = b.stage_result(*j).ok_or(Cancelled)?;
            // The key of a stage's steps follows what it produced, not only how: a stage that
            // reran (--no-cache-filter) with different output changes everything built on it.
            let key = Digest::of(format!("{} {}", r.key, r.content_id()).as_bytes());
            Ok((r.config.clone(), r.layers.clone(), key, r.dirs.clone(), None))
        }
        Base::Image(r) => from_image(r),
        Base::Context(name) => match b.opts.named_contexts.get(name) {
            Some(NamedContext::Image(r)) => from_image(r),
            Some(NamedContext::OciLayout(p, tag)) => {
                let loaded = b
                    .store
                    .load(p)
                    .with_context(|| format!("loading the OCI layout {}", p.display()))?;
                let img = match tag {
                    Some(t) => loaded
                        .into_iter()
                        .find(|i| i.names.iter().any(|n| n.tag() == t))
                        .ok_or_else(|| anyhow!("{}: no image tagged {t}", p.display()))?,
                    None => loaded
                        .into_iter()
                        .next()
                        .ok_or_else(|| anyhow!("{}: no image in the layout", p.display()))?,
                };
                from_image(&img.config_digest.to_string())
            }
            Some(NamedContext::Dir(p)) => bail!(
                "{}: FROM {name}: the build context {name} is a directory ({}); FROM needs an image (docker-image://REF or oci-layout://PATH)",
                loc(b, &stage.from),
                p.display()
            ),
            None => bail!("{}: no build context named {name}", loc(b, &stage.from)),
        },
    }
}

/// An image from the store, pulled from its registry when missing (or moved, with `--pull`).
pub(super) fn image(b: &Build, r: &str) -> anyhow::Result<crate::registry::Resolved> {
    image_for(b, r, None)
}

/// [`image`] for a platform other than the build's (`FROM --platform`).
fn image_for(
    b: &Build,
    r: &str,
    platform: Option<&crate::oci::Platform>,
) -> anyhow::Result<crate::registry::Resolved> {
    let res = b.source.image_for(r, platform).with_context(|| {
        if b.opts.pull == crate::registry::PullPolicy::Always {
            format!("base image \"{r}\": checking its registry (--pull) failed")
        } else {
            format!("base image \"{r}\" is not in the local store, and pulling it failed")
        }
    })?;
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
) -> anyhow::Result<Vec<PathBuf>> {
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
) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (d, l) in config.rootfs.diff_ids.iter().zip(layers) {
        let p = b.store.layer_paths_file(&l.digest);
        if !p.exists() {
            b.imported.fetch(b, &l.digest, d)?;
            // By the tar headers only when the blob is uncompressed (COPY's commit reads the
            // same way).
            let blob = b.store.open_blob(&l.digest)?;
            let (_, paths) = crate::layer::facts::read_blob_with_paths(blob)
                .with_context(|| format!("reading the paths of layer {d}"))?;
            b.store.put_layer_paths(&l.digest, &paths)?;
        }
        out.push(p);
    }
    Ok(out)
}

/// A unique scratch directory for a step.
pub(super) fn step_dir(b: &Build, what: &str) -> anyhow::Result<PathBuf> {
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

impl St<'_, '_> {
    pub(super) fn cfg(&mut self) -> &mut crate::oci::ContainerConfig {
        self.config.config.get_or_insert_with(Default::default)
    }

    pub(super) fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    pub(super) fn shell(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    pub(super) fn user(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default()
    }

    pub(super) fn env_list(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }

    /// Build args and ARGs with a value that the step sees (ENV wins over ARG).
    pub(super) fn visible_args(&self) -> Vec<(String, String)> {
        let env = self.env_list();
        self.scope
            .args
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .filter(|(k, _)| !env.iter().any(|e| e.split('=').next() == Some(k)))
            .collect()
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

    pub(super) fn now(&self) -> i64 {
        self.b.opts.epoch.unwrap_or_else(crate::oci::now_secs)
    }

    /// One instruction: expand it, then the step of its kind.
    fn command(&mut self, cmd: &Command) -> anyhow::Result<()> {
        let ex = expand_instruction(&cmd.instruction, &self.scope, &self.lexer)
            .map_err(|e| anyhow!("{e}"))?;
        let ins = ex.instruction;
        let label = format!(
            "[{} {:>w$}/{}] {}{}",
            self.name,
            self.n,
            self.total,
            if self.onbuild { "ONBUILD " } else { "" },
            first_line(&cmd.original),
            w = self.total.to_string().len()
        );
        match (&ins, &ex.run) {
            (Instruction::Run(_) | Instruction::Copy(_) | Instruction::Add(_), run) => {
                self.layer_step(cmd, &ins, run.as_ref(), &label)
            }
            (Instruction::Workdir(w), _) => step::workdir::execute(self, cmd, w, &label),
            (Instruction::From(_), _) => bail!("FROM inside a stage"),
            _ => step::meta::execute(self, cmd, &ins),
        }
    }

    /// The scope of a key: the step before (`parent`) and the stage's settings now.
    pub(super) fn key_scope<'k>(&self, parent: &'k str) -> step::KeyScope<'k> {
        step::KeyScope {
            parent,
            user: self.user(),
            workdir: self.workdir(),
            shell: self.shell(),
            platform: format!("{}/{}", self.config.os, self.config.architecture),
            args: self.visible_args(),
            epoch: self.b.opts.epoch,
        }
    }

    /// The key of `ins` as the next step of this stage.
    pub(super) fn key_for(&self, ins: &Instruction, inputs: &step::Inputs) -> Digest {
        step::key(&self.key_scope(self.key.as_str()), ins, inputs)
    }

    /// The record of `key`: the local cache first, then the caches of `--cache-from`, then
    /// the steps an earlier build imported whose layers stayed remote.
    pub(super) fn lookup(&self, key: &Digest) -> Option<Record> {
        if self.no_cache {
            return None;
        }
        cache::get(self.b.store, key)
            .or_else(|| self.b.imported.get(self.b, key))
            .or_else(|| self.b.imported.remembered(self.b.store, key))
    }

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
            .push(super::shared::Applied {
                stage: self.index,
                key,
                record,
            });
    }

    /// Wait for the layers being written and put every pending layer in `layers`, in order;
    /// record the RUN steps among them in the cache. After an error the rest are only waited
    /// for (and their scratch dirs removed).
    pub(super) fn settle(&mut self) -> anyhow::Result<()> {
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
                        .with_context(|| format!("writing the layer of {what}"))
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
    ) -> anyhow::Result<()> {
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

    /// The lower dirs (top first) a step mounts now: the snapshots of `layers`, under the
    /// pending layers (a RUN step's upper dir while its layer is written).
    pub(super) fn lowers_now(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut out = lowers(self.b, &self.config, &self.layers)?;
        for p in &self.pending {
            let top = match p {
                Pending::Run { commit, .. } => commit.upper.clone(),
                Pending::Applied(l) => {
                    let mut config = self.config.clone();
                    config.rootfs.diff_ids = vec![l.diff_id.clone()];
                    lowers(self.b, &config, &[l.descriptor()])?.remove(0)
                }
            };
            out.insert(0, top);
        }
        Ok(exec::unique_top_first(out))
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

    /// RUN, COPY and ADD: key, lookup, and on a miss the work.
    fn layer_step(
        &mut self,
        cmd: &Command,
        ins: &Instruction,
        run: Option<&RunOptions>,
        label: &str,
    ) -> anyhow::Result<()> {
        let b = self.b;
        // A step that reads another stage waits for it before it shows as started (its
        // stage's job slot is given back meanwhile); the steps before it ran alongside. The
        // layers still being written are settled first: a pending RUN step holds its step's
        // lock, which the other stage may need for the same step.
        let reads: Vec<usize> = b.plan.stages[self.index]
            .deps
            .iter()
            .filter(|d| d.kind != DepKind::From && d.span == cmd.span)
            .map(|d| d.stage)
            .collect();
        if !reads.is_empty() {
            self.settle()?;
        }
        for s in reads {
            if b.stage_result(s).is_none() {
                return Err(Cancelled.into());
            }
        }
        let id = b.step_ids.fetch_add(1, Ordering::SeqCst);
        b.report.event(Event::Started {
            step: id,
            name: label,
        });
        b.steps.fetch_add(1, Ordering::SeqCst);
        let r = self.layer_step_inner(id, cmd, ins, run);
        if let Some((dir, _)) = self.fetched.take() {
            let _ = fs_err::remove_dir_all(dir);
        }
        match &r {
            Ok(true) => {
                b.cached.fetch_add(1, Ordering::SeqCst);
                b.report.event(Event::Cached { step: id });
            }
            Ok(false) => {
                b.ran
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(label.to_string());
                b.report.event(Event::Done { step: id })
            }
            Err(e) if e.downcast_ref::<Cancelled>().is_some() => {
                b.report.event(Event::Cancelled { step: id })
            }
            Err(e) => b.report.event(Event::Failed {
                step: id,
                error: &format!("{e:#}"),
            }),
        }
        r.map(|_| ())
    }

    /// Returns whether the step was cached.
    fn layer_step_inner(
        &mut self,
        id: usize,
        cmd: &Command,
        ins: &Instruction,
        run: Option<&RunOptions>,
    ) -> anyhow::Result<bool> {
        if !matches!(ins, Instruction::Run(_)) {
            // COPY and ADD read the layers below by their paths or snapshots, whichever is
            // cheaper: with every layer in place.
            self.settle()?;
        }
        let inputs = self.inputs(ins, run)?;
        let key = self.key_for(ins, &inputs);
        if let (Some(o), false) = (run, self.no_cache) {
            let ids = step::run::cache_mount_ids(self, o);
            self.b
                .mounts_used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(ids);
        }
        if let Some(rec) = self.lookup(&key) {
            self.apply(cmd, key, &rec);
            return Ok(true);
        }
        // One process builds a step; the others that reach it at the same time wait for it and
        // take its result from the cache.
        let building = if self.no_cache {
            None
        } else {
            let lock = self.b.store.step_lock(&key)?;
            if let Some(rec) = self.lookup(&key) {
                self.apply(cmd, key, &rec);
                return Ok(true);
            }
            Some(lock)
        };
        // A RUN that bind-mounts another stage is also known by what it mounts: when the stage
        // was rebuilt with the same files there, the step is the one recorded under that key
        // (BuildKit keys such a mount by content). Read only now, after a miss.
        let content_key = match (ins, run) {
            (Instruction::Run(_), Some(o)) if !self.no_cache => {
                step::run::content_inputs(self, o)?.map(|i| self.key_for(ins, &i))
            }
            _ => None,
        };
        if let Some(c) = &content_key {
            if let Some(rec) = self.lookup(c) {
                let rec = Record {
                    chain: Some(rec.chain.clone().unwrap_or_else(|| c.clone())),
                    ..rec
                };
                cache::put(self.b.store, &key, &rec)?;
                self.apply(cmd, key, &rec);
                return Ok(true);
            }
        }
        // COPY --link: the layer does not depend on what is below, so it is also recorded
        // under a key without the parent, and reused when only the layers below changed.
        let link_key = match ins {
            Instruction::Copy(c) | Instruction::Add(c) if c.link => {
                Some(step::key(&self.key_scope("link"), ins, &inputs))
            }
            _ => None,
        };
        if let Some(rec) = link_key.as_ref().and_then(|k| self.lookup(k)) {
            let rec = Record {
                created: rfc(self.now()),
                ..rec
            };
            cache::put(self.b.store, &key, &rec)?;
            self.apply(cmd, key, &rec);
            return Ok(true);
        }
        let why = if self.no_cache {
            "--no-cache".to_string()
        } else if let Some(w) = inputs.why_changed() {
            w
        } else if let Some(f) = step::from_of(ins).filter(|f| step::source::missed(self, f)) {
            format!("the source stage {f} changed")
        } else if let Some(m) = self.base_moved.take() {
            m
        } else if self.earlier_miss {
            "an earlier step changed".to_string()
        } else {
            "not in the cache".to_string()
        };
        self.b.report.event(Event::Missed {
            step: id,
            reason: &why,
        });
        self.earlier_miss = true;
        let created = rfc(self.now());
        let (ran, dirs) = match (ins, run) {
            (Instruction::Run(r), Some(o)) => {
                (step::run::execute(self, id, cmd, r, o)?, Vec::new())
            }
            (Instruction::Copy(c), _) => {
                let (layer, dirs) = step::copy::execute(self, c, false)?;
                (step::run::Ran::Done(layer), dirs)
            }
            (Instruction::Add(c), _) => {
                let (layer, dirs) = step::copy::execute(self, c, true)?;
                (step::run::Ran::Done(layer), dirs)
            }
            _ => bail!("internal error: {} is not a step with a layer", ins.name()),
        };
        // What was copied (or bound into the RUN step) must be what the key hashed: read the
        // local sources' digests again (a stat per file when nothing changed) and refuse the
        // result when a file changed, appeared or was swapped while the step read it.
        if self.fetched.is_none() {
            let again = self.inputs(ins, run)?;
            if again.digests != inputs.digests {
                let files = again
                    .why_changed()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                return Err(super::error::Error::ContextChanged { files }.into());
            }
        }
        let layer = match ran {
            step::run::Ran::Done(layer) => layer,
            step::run::Ran::Committing(commit) => {
                // Applied now but for its layer, which goes in (and the step into the cache)
                // when the commit is settled.
                self.key = content_key.clone().unwrap_or_else(|| key.clone());
                self.pending.push(Pending::Run {
                    commit: Box::new(commit),
                    key,
                    alias: content_key,
                    created: created.clone(),
                    history: self.config.history.len(),
                    lock: building,
                    what: format!(
                        "{}:{} ({})",
                        self.b.opts.dockerfile_name,
                        cmd.start_line,
                        first_line(&cmd.original)
                    ),
                });
                self.history(cmd, &created, false);
                return Ok(false);
            }
        };
        let rec = Record {
            layer,
            created,
            dirs,
            chain: content_key.clone(),
        };
        cache::put(self.b.store, &key, &rec)?;
        for k in link_key.iter().chain(&content_key) {
            cache::put(self.b.store, k, &rec)?;
        }
        self.apply(cmd, key, &rec);
        Ok(false)
    }

    /// What a RUN, COPY or ADD step reads, for its key.
    fn inputs(
        &mut self,
        ins: &Instruction,
        run: Option<&RunOptions>,
    ) -> anyhow::Result<step::Inputs> {
        match (ins, run) {
            (Instruction::Run(_), Some(o)) => step::run::inputs(self, o),
            (Instruction::Copy(c), _) => step::copy::inputs(self, c, false),
            (Instruction::Add(c), _) => step::copy::inputs(self, c, true),
            _ => Ok(step::Inputs::default()),
        }
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
