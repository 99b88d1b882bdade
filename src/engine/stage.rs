//! One stage: its base, the ONBUILD triggers of the base, then each instruction in turn:
//! expanded, keyed, looked up in the cache, and on a miss executed by the step module of its
//! kind (`step/`), its record applied to the stage's config and layers. A RUN step's layer is
//! applied late: the steps after it go ahead while it is written ([`Pending`], [`St::settle`]).

use std::sync::atomic::Ordering;

use super::cache::key::{self, Inputs};
use super::cache::{self, Record};
use super::error::{BuildError, Cancelled, Doing as _, Error};
use super::report::Event;
use super::state::{
    first_line, from_source, image_for, rfc, start_step, Pending, Ran, Resolve, StageCx, StageState,
};
use super::step::{self, Outcome};
use super::{Build, NamedContext, StageResult};
use crate::dockerfile::shell::{env_from_list, Lexer};
use crate::dockerfile::{self, Command, Instruction};
use crate::oci::{Digest, ImageConfig};
use crate::plan::{expand_instruction, Base, DepKind, Platform};

use crate::oci::DEFAULT_PATH;

/// The location `Dockerfile:LINE` of a command.
fn loc(b: &Build, c: &Command) -> String {
    format!("{}:{}", b.opts.dockerfile_name, c.start_line)
}

pub(crate) fn run(b: &Build, i: usize) -> Result<StageResult, BuildError> {
    run_with(b, i, from_source)
}

/// Stage `i` of the build, its images found by `resolve`.
fn run_with(b: &Build, i: usize, resolve: Resolve) -> Result<StageResult, BuildError> {
    let stage = &b.plan.stages[i];
    let name = stage.display_name();
    let (mut config, layers, key, dirs, moved) = base(b, i, resolve)?;
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
        let (_, cmds) = dockerfile::load(&src).map_err(|d| Error::BadTrigger {
            trigger: t.clone(),
            stage: name.clone(),
            message: d.message,
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
    let foreign = {
        let p = stage_platform(b, i)?.unwrap_or_else(|| b.plan.options.target_platform.clone());
        (p.normalized() != Platform::host().normalized()).then_some(p)
    };
    let mut st = StageState {
        b,
        index: i,
        name: format!("{}{name}", b.label),
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
        env_pos: Default::default(),
        pending: Vec::new(),
        resolve,
        foreign,
    };
    let mut steps = || -> Result<(), BuildError> {
        for (k, cmd) in all.iter().enumerate() {
            if b.schedule.failed() {
                return Err(Cancelled.into());
            }
            if numbered(cmd) {
                st.n += 1;
            }
            st.onbuild = k < trigger_cmds.len();
            st.command(cmd).map_err(|e| {
                e.in_step(super::StepFailed {
                    file: b.opts.dockerfile_name.clone(),
                    line: cmd.start_line,
                    instruction: first_line(&cmd.original),
                    span: cmd.span,
                    source_text: b.opts.dockerfile.clone(),
                })
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

/// The platform `FROM --platform=` asks stage `i` for, if it does.
fn stage_platform(b: &Build, i: usize) -> Result<Option<Platform>, BuildError> {
    let stage = &b.plan.stages[i];
    Ok(match &stage.platform {
        Some(p) => Some(Platform::parse(p).ok_or_else(|| Error::BadPlatform {
            at: loc(b, &stage.from),
            platform: p.clone(),
        })?),
        None => None,
    })
}

fn base(b: &Build, i: usize, resolve: Resolve) -> Result<BaseState, BuildError> {
    let stage = &b.plan.stages[i];
    let want = stage_platform(b, i)?;
    // A build for another platform than this machine's takes each base for that platform:
    // an image of another is an error, not a stage that fails at its first RUN.
    let target = &b.plan.options.target_platform;
    let foreign_target = target.normalized() != Platform::host().normalized();
    let from_image = |r: &str| -> Result<BaseState, BuildError> {
        let res = image_for(b, resolve, r, want.as_ref()).doing_with(|| loc(b, &stage.from))?;
        let img = &res.record;
        if let Some(w) = &want {
            if img.config.os != w.os || img.config.architecture != w.architecture {
                return Err(Error::WrongPlatform {
                    at: loc(b, &stage.from),
                    image: r.to_string(),
                    os: img.config.os.clone(),
                    architecture: img.config.architecture.clone(),
                    want: w.to_string(),
                }
                .into());
            }
        } else if foreign_target {
            let found = Platform {
                architecture: img.config.architecture.clone(),
                os: img.config.os.clone(),
                os_version: None,
                variant: img.config.variant.clone(),
            }
            .normalized();
            let t = target.normalized();
            if found.os != t.os || found.architecture != t.architecture {
                return Err(Error::BaseLacksPlatform {
                    at: loc(b, &stage.from),
                    image: r.to_string(),
                    found: found.to_string(),
                    want: t.to_string(),
                }
                .into());
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
            Ok((
                r.config.clone(),
                r.layers.clone(),
                key,
                r.dirs.clone(),
                None,
            ))
        }
        Base::Image(r) => from_image(r),
        Base::Context(name) => match b.opts.named_contexts.get(name) {
            Some(NamedContext::Image(r)) => from_image(r),
            Some(NamedContext::OciLayout(p, tag)) => {
                let loaded = b
                    .store
                    .load(p)
                    .doing_with(|| format!("loading the OCI layout {}", p.display()))?;
                let img = match tag {
                    Some(t) => loaded
                        .into_iter()
                        .find(|i| i.names.iter().any(|n| n.tag() == t))
                        .ok_or_else(|| Error::NoTaggedImage {
                            layout: p.clone(),
                            tag: t.clone(),
                        })?,
                    None => loaded
                        .into_iter()
                        .next()
                        .ok_or_else(|| Error::EmptyLayout { layout: p.clone() })?,
                };
                from_image(&img.config_digest.to_string())
            }
            Some(NamedContext::Dir(p)) => Err(Error::ContextIsDir {
                at: loc(b, &stage.from),
                name: name.clone(),
                dir: p.clone(),
            }
            .into()),
            None => Err(Error::NoNamedContext {
                at: loc(b, &stage.from),
                name: name.clone(),
            }
            .into()),
        },
    }
}

/// The keys a step with a layer is recorded under, and its step lock while it is built.
struct Keys {
    key: Digest,
    /// A RUN that bind-mounts a stage, known by what it mounts: later steps chain from it.
    content: Option<Digest>,
    /// COPY --link's, without the parent.
    link: Option<Digest>,
    lock: Option<crate::store::Lock>,
}

impl StageState<'_, '_> {
    /// One instruction: expand it, then the step of its kind.
    fn command(&mut self, cmd: &Command) -> Result<(), BuildError> {
        let ex = expand_instruction(&cmd.instruction, &self.scope, &self.lexer)
            .map_err(|cause| Error::Expand { cause })?;
        let label = format!(
            "[{} {:>w$}/{}] {}{}",
            self.name,
            self.n,
            self.total,
            if self.onbuild { "ONBUILD " } else { "" },
            first_line(&cmd.original),
            w = self.total.to_string().len()
        );
        let step = step::Step::new(&ex)?;
        if step.has_layer() {
            self.layer_step(cmd, &ex.instruction, step, &label)
        } else {
            step.execute(&mut StageCx::new(self, cmd, &label, None))
                .map(|_| ())
        }
    }

    /// RUN, COPY and ADD: key, lookup, and on a miss the work.
    fn layer_step(
        &mut self,
        cmd: &Command,
        ins: &Instruction,
        step: step::Step<'_>,
        label: &str,
    ) -> Result<(), BuildError> {
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
        let id = start_step(b, label);
        // ADD's fetched sources are removed with the step.
        let r = self.layer_step_inner(id, cmd, ins, step, label);
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
            Err(e) if e.is_cancelled() => b.report.event(Event::Cancelled { step: id }),
            Err(e) => b.report.event(Event::Failed {
                step: id,
                error: &super::error::with_causes(e),
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
        mut step: step::Step<'_>,
        label: &str,
    ) -> Result<bool, BuildError> {
        let run = step.run_options();
        if !matches!(ins, Instruction::Run(_)) {
            // COPY and ADD read the layers below by their paths or snapshots, whichever is
            // cheaper: with every layer in place.
            self.settle()?;
        }
        let inputs = step.inputs(self.view())?;
        let key = self.view().key_for(ins, &inputs);
        if let (Some(o), false) = (run, self.no_cache) {
            let ids = step::run::cache_mount_ids(self.view(), o);
            self.b
                .mounts_used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(ids);
        }
        if let Some(rec) = self.view().lookup(&key) {
            self.apply(cmd, key, &rec);
            return Ok(true);
        }
        // One process builds a step; the others that reach it at the same time wait for it and
        // take its result from the cache.
        let building = if self.no_cache {
            None
        } else {
            let lock = self.b.store.step_lock(&key)?;
            if let Some(rec) = self.view().lookup(&key) {
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
                step::run::content_inputs(self.view(), o)?.map(|i| self.view().key_for(ins, &i))
            }
            _ => None,
        };
        if let Some(c) = &content_key {
            if let Some(rec) = self.view().lookup(c) {
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
                Some(key::key(&self.view().key_scope("link"), ins, &inputs))
            }
            _ => None,
        };
        if let Some(rec) = link_key.as_ref().and_then(|k| self.view().lookup(k)) {
            let rec = Record {
                created: rfc(self.view().now()),
                ..rec
            };
            cache::put(self.b.store, &key, &rec)?;
            self.apply(cmd, key, &rec);
            return Ok(true);
        }
        let why = self.miss_reason(ins, &inputs);
        self.b.report.event(Event::Missed {
            step: id,
            reason: &why,
        });
        self.earlier_miss = true;
        let created = rfc(self.view().now());
        // What was copied (or bound into the RUN step) must be what the key hashed: the local
        // sources are read again after the step (ADD's fetched ones are what was fetched).
        let mut again = (!step.fetched()).then(|| step.fresh());
        let (ran, dirs) = match step.execute(&mut StageCx::new(self, cmd, label, Some(id)))? {
            Outcome::Layer { ran, dirs } => (ran, dirs),
            Outcome::Applied => {
                return Err(
                    Error::Internal(format!("{} is not a step with a layer", ins.name())).into(),
                )
            }
        };
        // Read the local sources' digests again (a stat per file when nothing changed) and
        // refuse the result when a file changed, appeared or was swapped while the step read
        // it.
        if let Some(again) = &mut again {
            let again = again.inputs(self.view())?;
            if again.digests != inputs.digests {
                let files = again
                    .why_changed()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                return Err(Error::ContextChanged { files }.into());
            }
        }
        let keys = Keys {
            key,
            content: content_key,
            link: link_key,
            lock: building,
        };
        self.record(cmd, keys, created, ran, dirs)?;
        Ok(false)
    }

    /// A step that ran: its record under each of its `keys` and applied, or, while its layer
    /// is being written, applied but for the layer and pending until settled.
    fn record(
        &mut self,
        cmd: &Command,
        keys: Keys,
        created: String,
        ran: Ran,
        dirs: Vec<String>,
    ) -> Result<(), BuildError> {
        let Keys {
            key,
            content: content_key,
            link: link_key,
            lock: building,
        } = keys;
        let layer = match ran {
            Ran::Done(layer) => layer,
            Ran::Committing(commit) => {
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
                return Ok(());
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
        Ok(())
    }

    /// Why a step missed, for the progress: `--no-cache`, the files that changed, its source
    /// stage, the base image moved (`--pull`, told once), an earlier step, or none of these.
    fn miss_reason(&mut self, ins: &Instruction, inputs: &Inputs) -> String {
        if self.no_cache {
            "--no-cache".to_string()
        } else if let Some(w) = inputs.why_changed() {
            w
        } else if let Some(f) = step::from_of(ins).filter(|f| step::source::missed(self.view(), f))
        {
            format!("the source stage {f} changed")
        } else if let Some(m) = self.base_moved.take() {
            m
        } else if self.earlier_miss {
            "an earlier step changed".to_string()
        } else {
            "not in the cache".to_string()
        }
    }
}

/// The stage loop without the whole program: a store in a temporary directory, base images
/// from a fake image source, and steps that need no sandbox (ENV, LABEL, WORKDIR of a known
/// directory, USER, CMD).
#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::engine::cache::Applied;
    use crate::engine::{report, schedule, BuildOptions};
    use crate::oci::History;
    use crate::registry::{ImageSource, PullPolicy, Resolved};
    use crate::store::Store;

    /// A store in a temporary directory, removed with it.
    struct TmpStore(PathBuf, Store);

    impl TmpStore {
        fn new(name: &str) -> TmpStore {
            let dir =
                std::env::temp_dir().join(format!("strata-stage-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let store = Store::open(&dir).unwrap();
            TmpStore(dir, store)
        }
    }

    impl Drop for TmpStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const BASE_TIME: &str = "2020-01-01T00:00:00Z";

    /// The fake image source: every reference is one image with no layers, a PATH and one
    /// history entry, put in the store.
    fn fake_base(b: &Build, _: &str, _: Option<&Platform>) -> Result<Resolved, BuildError> {
        let mut config = scratch_config(&b.plan.options.target_platform);
        config.config = Some(crate::oci::ContainerConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into()]),
            ..Default::default()
        });
        config.history.push(History {
            created: Some(BASE_TIME.into()),
            created_by: Some("the fake base".into()),
            author: None,
            comment: None,
            empty_layer: true,
        });
        let record = b.store.add_image(&config, &[], &[])?;
        Ok(Resolved {
            digest: record.manifest_digest.clone(),
            record,
            reference: None,
            pulled: false,
            moved_from: None,
        })
    }

    fn options(context: PathBuf) -> BuildOptions {
        BuildOptions {
            context,
            dockerfile_name: "Dockerfile".into(),
            dockerfile: None,
            ignore: Vec::new(),
            tags: Vec::new(),
            no_cache: false,
            debug: false,
            no_cache_filter: Vec::new(),
            labels: Default::default(),
            network: crate::sandbox::Network::Private,
            allow_host_network: false,
            secrets: Default::default(),
            ssh: Default::default(),
            iidfile: None,
            outputs: Vec::new(),
            jobs: 1,
            named_contexts: Default::default(),
            compression: crate::layer::Compression::None,
            epoch: None,
            pull: PullPolicy::Missing,
            push: false,
            metadata_file: None,
            cache_to: Vec::new(),
            cache_from: Vec::new(),
            extra_hosts: Vec::new(),
            ulimits: Vec::new(),
            shm_size: None,
            annotations: Default::default(),
            load: None,
            attest: Default::default(),
        }
    }

    /// What one build of the first stage of a Dockerfile left.
    struct Built {
        result: StageResult,
        bases: Vec<(String, Digest)>,
        applied: Vec<Applied>,
    }

    /// Stage 0 of `dockerfile` built on `store` as a build runs it, its images from the fake.
    fn build(store: &TmpStore, dockerfile: &str) -> Built {
        let src = dockerfile::Source::new("Dockerfile", dockerfile);
        let (df, cmds) = dockerfile::load(&src).unwrap();
        let plan = crate::plan::plan(&df, cmds, Default::default()).unwrap();
        let opts = options(store.0.clone());
        let schedule = schedule::Schedule::new(1);
        let step_ids = AtomicUsize::new(1);
        let report: Arc<dyn report::Reporter> = Arc::new(report::Silent);
        let b = Build {
            store: &store.1,
            opts: &opts,
            plan: &plan,
            maps: crate::sandbox::idmap::for_current_user(),
            exe: PathBuf::new(),
            source: ImageSource::new(
                &store.1,
                opts.pull,
                plan.options.target_platform.clone(),
                report.clone(),
            ),
            report,
            bases: Mutex::new(Vec::new()),
            checksums: Mutex::new(crate::context::checksum::Cache::load(
                &store.0.join("no-checksums"),
            )),
            schedule: &schedule,
            step_ids: &step_ids,
            steps: AtomicUsize::new(0),
            cached: AtomicUsize::new(0),
            externals: Mutex::new(Default::default()),
            imported: Default::default(),
            applied: Mutex::new(Vec::new()),
            label: String::new(),
            ran: Mutex::new(Vec::new()),
            mounts_used: Mutex::new(Default::default()),
            budget: Default::default(),
            fetched: Default::default(),
            attached: Default::default(),
        };
        let result = run_with(&b, 0, fake_base).unwrap();
        Built {
            result,
            bases: b.bases.into_inner().unwrap(),
            applied: b.applied.into_inner().unwrap(),
        }
    }

    const DOCKERFILE: &str = "FROM base:1\nENV A=1 B=two\nLABEL org.example.x=yes\n\
        WORKDIR /\nUSER 1000\nCMD [\"serve\"]\n";

    #[test]
    fn config_steps_make_the_config_and_keys() {
        let store = TmpStore::new("config");
        let one = build(&store, DOCKERFILE);
        let r = &one.result;
        let c = r.config.config.as_ref().unwrap();
        assert_eq!(
            c.env.as_deref().unwrap(),
            ["PATH=/usr/bin:/bin", "A=1", "B=two"]
        );
        assert_eq!(c.labels.as_ref().unwrap()["org.example.x"], "yes");
        assert_eq!(c.working_dir.as_deref(), Some("/"));
        assert_eq!(c.user.as_deref(), Some("1000"));
        assert_eq!(c.cmd.as_deref().unwrap(), ["serve"]);
        // The base's entry, then one empty entry per instruction; a metadata step takes the
        // time of the entry before it.
        let h = &r.config.history;
        assert_eq!(h.len(), 6);
        assert!(h.iter().all(|e| e.empty_layer));
        assert_eq!(h[1].created.as_deref(), Some(BASE_TIME));
        assert_eq!(h[2].created_by.as_deref(), Some("LABEL org.example.x=yes"));
        assert!(r.layers.is_empty() && !r.ran);
        assert_eq!(r.dirs, ["/"]);
        assert_eq!(one.bases.len(), 1);
        assert_eq!(one.bases[0].0, "base:1");
        // Only WORKDIR is a record (a directory known to exist, no layer).
        assert_eq!(one.applied.len(), 1);
        assert_eq!(one.applied[0].record.dirs, ["/"]);
        assert!(one.applied[0].record.layer.is_none());
        // The same instructions on the same base give the same key; another value, another.
        assert_eq!(build(&store, DOCKERFILE).result.key, r.key);
        let other = build(&store, &DOCKERFILE.replace("A=1", "A=2"));
        assert_ne!(other.result.key, r.key);
        assert_ne!(other.applied[0].key, one.applied[0].key);
    }

    #[test]
    fn a_second_run_takes_the_step_from_the_cache() {
        let store = TmpStore::new("again");
        let one = build(&store, DOCKERFILE);
        let workdir = &one.applied[0];
        assert_eq!(
            crate::engine::cache::get(&store.1, &workdir.key).map(|r| r.created),
            Some(workdir.record.created.clone())
        );
        // The record the second run finds is the one it uses: its time is what the cache
        // says, not the clock's.
        let marked = Record {
            created: "2001-09-09T01:46:40Z".into(),
            ..workdir.record.clone()
        };
        crate::engine::cache::put(&store.1, &workdir.key, &marked).unwrap();
        let two = build(&store, DOCKERFILE);
        assert_eq!(two.result.key, one.result.key);
        assert_eq!(two.applied[0].key, workdir.key);
        assert_eq!(
            two.result.config.history[3].created.as_deref(),
            Some("2001-09-09T01:46:40Z")
        );
        assert!(!two.result.ran);
    }
}
