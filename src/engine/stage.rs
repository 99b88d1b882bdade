//! One stage, instruction by instruction: the base, ONBUILD triggers, then each command with
//! its cache key, a cache lookup, and on a miss the work (sandboxed RUN, COPY/ADD in the user
//! namespace, a WORKDIR directory) and a record of what it produced.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail, Context as _};

use super::cache::{self, KeyInput, LayerRec, Record};
use super::copy::{self, CopyJob, CopyResult, Inline, Source};
use super::exec::{self, hook_ok, remove_tree, sandbox_err};
use super::{Build, NamedContext, SecretSource, StageResult};
use crate::dockerfile::shell::{env_from_list, Lexer};
use crate::dockerfile::{
    self, instructions::parse_port, Command, CommandLine, Healthcheck, Instruction, MountKind,
    MountSpec, Sharing,
};
use crate::oci::{Digest, History, ImageConfig};
use crate::plan::{expand_instruction, Base, Platform, StageScope};
use crate::sandbox::{self, Bind, BindSource, Network, Rootfs, Spec};

use crate::oci::DEFAULT_PATH;
const COMMENT: &str = "strata.dockerfile.v0";

/// Marks an error that only says "another stage failed first".
#[derive(Debug, thiserror::Error)]
#[error("cancelled: another stage failed")]
pub struct Cancelled;

struct St<'b, 'a> {
    b: &'b Build<'a>,
    index: usize,
    name: String,
    lexer: Lexer,
    config: ImageConfig,
    layers: Vec<crate::oci::Descriptor>,
    key: Digest,
    scope: StageScope,
    dirs: Vec<String>,
    /// CMD was set in this stage (so ENTRYPOINT does not reset it).
    cmd_set: bool,
    no_cache: bool,
    /// Why the previous step missed, carried to the next ones.
    earlier_miss: bool,
    /// `--pull` found the base image moved: the first step misses for that reason.
    base_moved: Option<String>,
    total: usize,
    n: usize,
    /// ADD's downloads or clone for the current step (the scratch dir, what it holds).
    fetched: Option<(PathBuf, super::fetch::Fetched)>,
    /// Where each name is in the config's Env, and for how many entries that was computed:
    /// ENV updates in constant time (a Dockerfile of 20,000 ENV lines stays linear).
    env_pos: (std::collections::HashMap<String, usize>, usize),
}

/// What a RUN step's mounts hold while it runs: cache mount locks, and the in-memory files of
/// its secrets.
#[derive(Default)]
struct Held {
    locks: Vec<fs_err::File>,
    memory: Vec<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// The location `Dockerfile:LINE` of a command.
fn loc(b: &Build, c: &Command) -> String {
    format!("{}:{}", b.opts.dockerfile_name, c.start_line)
}

fn first_line(s: &str) -> String {
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
    let mut st = St {
        b,
        index: i,
        name,
        lexer: Lexer::new(b.plan.escape),
        config,
        layers,
        key,
        scope: b.plan.scope().with_env(base_env),
        dirs,
        cmd_set: false,
        no_cache,
        earlier_miss: false,
        base_moved: moved,
        total: all.len(),
        n: 0,
        fetched: None,
        env_pos: Default::default(),
    };
    for cmd in all {
        if b.failed.load(Ordering::SeqCst) {
            return Err(Cancelled.into());
        }
        st.n += 1;
        st.command(cmd).with_context(|| super::StepFailed {
            file: b.opts.dockerfile_name.clone(),
            line: cmd.start_line,
            instruction: first_line(&cmd.original),
            span: cmd.span,
            source_text: b.opts.dockerfile.clone(),
        })?;
    }
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
        architecture: p.arch.clone(),
        os: p.os.clone(),
        os_version: None,
        variant: p.variant.clone(),
        config: Some(Default::default()),
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
    let want_oci: Option<crate::oci::Platform> = want.clone().map(Into::into);
    let from_image = |r: &str| -> anyhow::Result<BaseState> {
        let res = image_for(b, r, want_oci.as_ref()).with_context(|| loc(b, &stage.from))?;
        let img = &res.record;
        if let Some(w) = &want {
            if img.config.os != w.os || img.config.architecture != w.arch {
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
fn image(b: &Build, r: &str) -> anyhow::Result<crate::registry::Resolved> {
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
fn lowers(
    b: &Build,
    config: &ImageConfig,
    layers: &[crate::oci::Descriptor],
) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = exec::snapshots(b.store, &b.exe, &config.rootfs.diff_ids, layers, &b.maps)?;
    out.reverse();
    Ok(exec::unique_top_first(out))
}

/// A unique scratch directory for a step.
fn step_dir(b: &Build, what: &str) -> anyhow::Result<PathBuf> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let d = b.store.tmp_dir().join(format!(
        "{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    fs_err::create_dir_all(&d)?;
    Ok(d)
}

fn rfc(secs: i64) -> String {
    crate::oci::rfc3339(secs)
}

impl St<'_, '_> {
    fn cfg(&mut self) -> &mut crate::oci::ContainerConfig {
        self.config.config.get_or_insert_with(Default::default)
    }

    fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn user(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default()
    }

    fn env_list(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }

    /// Build args and ARGs with a value that the step sees (ENV wins over ARG).
    fn visible_args(&self) -> Vec<(String, String)> {
        let env = self.env_list();
        self.scope
            .args
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .filter(|(k, _)| !env.iter().any(|e| e.split('=').next() == Some(k)))
            .collect()
    }

    fn history(&mut self, cmd: &Command, created: &str, empty: bool) {
        self.config.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(created_by(cmd)),
            author: None,
            comment: Some(COMMENT.into()),
            empty_layer: empty,
        });
    }

    fn now(&self) -> i64 {
        self.b.opts.epoch.unwrap_or_else(crate::oci::now_secs)
    }

    fn command(&mut self, cmd: &Command) -> anyhow::Result<()> {
        let ex = expand_instruction(&cmd.instruction, &self.scope, &self.lexer)
            .map_err(|e| anyhow!("{e}"))?;
        let ins = ex.instruction;
        let label = format!(
            "[{} {}/{}] {}",
            self.name,
            self.n,
            self.total,
            first_line(&cmd.original)
        );
        match &ins {
            Instruction::Run(_) | Instruction::Copy(_) | Instruction::Add(_) => {
                return self.layer_step(cmd, &ins, &label);
            }
            Instruction::Workdir(w) => {
                let wd = resolve_workdir(&self.workdir(), w);
                self.cfg().working_dir = Some(wd.clone());
                return self.workdir_step(cmd, &wd, &label);
            }
            _ => {}
        }
        // Metadata: change the config, record a history entry (its time from the cache).
        match &ins {
            Instruction::Arg(_) => self.scope.apply(&ins),
            Instruction::Env(kvs) => {
                self.scope.apply(&ins);
                let mut pos = std::mem::take(&mut self.env_pos);
                let env = self.cfg().env.get_or_insert_with(Vec::new);
                if pos.1 != env.len() {
                    // First ENV of the stage (or the config changed): index it, first entry of
                    // each name as the update rule below always did.
                    pos.0.clear();
                    for (i, e) in env.iter().enumerate() {
                        let name = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
                        pos.0.entry(name.to_string()).or_insert(i);
                    }
                }
                for kv in kvs {
                    let item = format!("{}={}", kv.key, kv.value);
                    match pos.0.get(&kv.key) {
                        Some(&i) => env[i] = item,
                        None => {
                            pos.0.insert(kv.key.clone(), env.len());
                            env.push(item);
                        }
                    }
                }
                pos.1 = env.len();
                self.env_pos = pos;
            }
            Instruction::Label(kvs) => {
                let l = self.cfg().labels.get_or_insert_with(BTreeMap::new);
                for kv in kvs {
                    l.insert(kv.key.clone(), kv.value.clone());
                }
            }
            Instruction::Maintainer(m) => self.config.author = Some(m.clone()),
            Instruction::Expose(ports) => {
                let mut keys = Vec::new();
                for p in ports {
                    let spec = parse_port(p).map_err(|e| anyhow!("EXPOSE {p}: {e}"))?;
                    for n in spec.start..=spec.end {
                        keys.push(format!("{n}/{}", spec.proto.to_ascii_lowercase()));
                    }
                }
                let e = self.cfg().exposed_ports.get_or_insert_with(BTreeMap::new);
                for k in keys {
                    e.insert(k, serde_json::json!({}));
                }
            }
            Instruction::Volume(v) => {
                let vols = self.cfg().volumes.get_or_insert_with(BTreeMap::new);
                for p in v {
                    if p.trim().is_empty() {
                        bail!("VOLUME specified can not be an empty string");
                    }
                    vols.insert(p.clone(), serde_json::json!({}));
                }
            }
            Instruction::User(u) => self.cfg().user = Some(u.clone()),
            Instruction::Cmd(c) => {
                let argv = self.command_line(c);
                self.cfg().cmd = Some(argv);
                self.cmd_set = true;
            }
            Instruction::Entrypoint(c) => {
                let argv = self.command_line(c);
                let cmd_set = self.cmd_set;
                let cfg = self.cfg();
                cfg.entrypoint = Some(argv);
                if !cmd_set {
                    cfg.cmd = None;
                }
            }
            Instruction::Shell(s) => self.cfg().shell = Some(s.clone()),
            Instruction::StopSignal(s) => self.cfg().stop_signal = Some(s.clone()),
            Instruction::Healthcheck(h) => {
                let v = match h {
                    Healthcheck::None => serde_json::json!({"Test": ["NONE"]}),
                    Healthcheck::Check {
                        test,
                        interval_ns,
                        timeout_ns,
                        start_period_ns,
                        start_interval_ns,
                        retries,
                    } => {
                        let mut m = serde_json::Map::new();
                        m.insert("Test".into(), serde_json::json!(test));
                        for (k, v) in [
                            ("Interval", interval_ns),
                            ("Timeout", timeout_ns),
                            ("StartPeriod", start_period_ns),
                            ("StartInterval", start_interval_ns),
                            ("Retries", retries),
                        ] {
                            if let Some(v) = v {
                                m.insert(k.into(), serde_json::json!(v));
                            }
                        }
                        serde_json::Value::Object(m)
                    }
                };
                self.cfg().healthcheck = Some(v);
            }
            Instruction::Onbuild(o) => {
                self.cfg()
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(o.expression.clone());
            }
            Instruction::From(_) => bail!("FROM inside a stage"),
            _ => {}
        }
        // A metadata step takes no time: its history entry has the time of the entry before it
        // (the base image's, or the last step with a layer, which the cache keeps), so a
        // rebuild gives the same history without a cache record per ENV line. Only the first
        // step of a stage with no history at all (FROM scratch) records its time.
        let key = self.key_for(&ins, &[], &[]);
        let before = self.config.history.last().and_then(|h| h.created.clone());
        let created = match (self.b.opts.epoch, before) {
            (Some(e), _) => rfc(e),
            (None, Some(c)) => c,
            (None, None) => match self.lookup(&key) {
                Some(r) => r.created,
                None => {
                    let r = Record {
                        layer: None,
                        created: rfc(self.now()),
                        dirs: Vec::new(),
                    };
                    cache::put(self.b.store, &key, &r)?;
                    r.created
                }
            },
        };
        self.key = key;
        self.history(cmd, &created, true);
        Ok(())
    }

    fn command_line(&self, c: &CommandLine) -> Vec<String> {
        match c {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }

    fn key_for(&self, ins: &Instruction, inputs: &[String], extra: &[String]) -> Digest {
        self.key_with_parent(self.key.as_str(), ins, inputs, extra)
    }

    fn key_with_parent(
        &self,
        parent: &str,
        ins: &Instruction,
        inputs: &[String],
        extra: &[String],
    ) -> Digest {
        // The environment is not hashed: the parent key and the expanded instruction determine
        // it. ARGs reach only a RUN step's environment.
        let args = if matches!(ins, Instruction::Run(_)) {
            self.visible_args()
        } else {
            Vec::new()
        };
        let mut settings = vec![
            format!("user={}", self.user()),
            format!("workdir={}", self.workdir()),
            format!(
                "shell={}",
                serde_json::to_string(&self.shell()).unwrap_or_default()
            ),
            format!("platform={}/{}", self.config.os, self.config.architecture),
        ];
        settings.extend(extra.iter().cloned());
        KeyInput {
            version: cache::KEY_VERSION,
            parent,
            instruction: super::key::instruction(ins),
            args: &args,
            inputs,
            settings: &settings,
        }
        .key()
    }

    fn lookup(&self, key: &Digest) -> Option<Record> {
        if self.no_cache {
            return None;
        }
        cache::get(self.b.store, key)
    }

    fn push_layer(&mut self, l: &LayerRec) {
        self.layers.push(l.descriptor());
        self.config.rootfs.diff_ids.push(l.diff_id.clone());
    }

    /// Apply a step's record: its layer, known dirs and history.
    fn apply(&mut self, cmd: &Command, key: Digest, rec: &Record) {
        if let Some(l) = &rec.layer {
            self.push_layer(l);
        }
        for d in &rec.dirs {
            if !self.dirs.contains(d) {
                self.dirs.push(d.clone());
            }
        }
        self.key = key;
        self.history(cmd, &rec.created, rec.layer.is_none());
    }

    fn workdir_step(&mut self, cmd: &Command, wd: &str, label: &str) -> anyhow::Result<()> {
        let key = self.key_for(&Instruction::Workdir(wd.to_string()), &[], &[]);
        if let Some(rec) = self.lookup(&key) {
            if rec.layer.is_some() {
                // A WORKDIR that made a directory is a step when it runs: it is one (cached)
                // when it does not, so a no-op rebuild counts the steps its build counted.
                let id = self.b.step_ids.fetch_add(1, Ordering::SeqCst);
                self.b.progress.start(id, label);
                self.b.steps.fetch_add(1, Ordering::SeqCst);
                self.b.cached.fetch_add(1, Ordering::SeqCst);
                self.b.progress.cached(id);
            }
            self.apply(cmd, key, &rec);
            return Ok(());
        }
        let known = wd == "/" || self.dirs.iter().any(|d| d == wd);
        let exists = known || {
            let lowers = lowers(self.b, &self.config, &self.layers)?;
            exists_in_layers(&lowers, wd)
        };
        let created = rfc(self.now());
        let rec = if exists {
            Record {
                layer: None,
                created,
                dirs: vec![wd.to_string()],
            }
        } else {
            // Create it, owned by the current USER, with a COPY-like job of no sources.
            let id = self.b.step_ids.fetch_add(1, Ordering::SeqCst);
            self.b.progress.start(id, label);
            self.b.steps.fetch_add(1, Ordering::SeqCst);
            let layer = self.mkdir_layer(wd)?;
            self.b.progress.done(id);
            Record {
                layer: Some(layer),
                created,
                dirs: vec![wd.to_string()],
            }
        };
        cache::put(self.b.store, &key, &rec)?;
        self.apply(cmd, key, &rec);
        Ok(())
    }

    /// A layer holding directory `wd` (and missing parents), owned by the USER.
    fn mkdir_layer(&mut self, wd: &str) -> anyhow::Result<LayerRec> {
        let user = self.user();
        let owner = if user.is_empty() { None } else { Some(user) };
        let job_dir = step_dir(self.b, "workdir")?;
        // A job with no sources makes just the destination directory.
        let result = self
            .new_job(&job_dir, Source::Layers(Vec::new()), false, "WORKDIR")
            .and_then(|base| {
                self.run_copy(CopyJob {
                    dest: format!("{}/", wd.trim_end_matches('/')),
                    chown: owner,
                    ..base
                })
            });
        let _ = remove_tree(&job_dir, &self.b.maps);
        match result? {
            CopyResult::Layer { layer, .. } => Ok(layer),
            CopyResult::Error(e) => bail!("WORKDIR {wd}: {e}"),
        }
    }

    /// A copy job working in the scratch dir `dir`, with nothing to copy yet: the destination
    /// is the layers below unless `link`, times and compression are the build's.
    fn new_job(
        &self,
        dir: &Path,
        source: Source,
        link: bool,
        what: &str,
    ) -> anyhow::Result<CopyJob> {
        Ok(CopyJob {
            source,
            dest_lowers: if link {
                Vec::new()
            } else {
                lowers(self.b, &self.config, &self.layers)?
            },
            sources: Vec::new(),
            inline: Vec::new(),
            dest: String::new(),
            chown: None,
            chmod: None,
            excludes: Vec::new(),
            parents: false,
            unpack: false,
            epoch: self.b.opts.epoch,
            now: self.now(),
            work: dir.join("work"),
            out: dir.join("layer.blob"),
            compression: self.b.opts.compression,
            result: dir.join("result.json"),
            what: what.to_string(),
        })
    }

    fn run_copy(&mut self, job: CopyJob) -> anyhow::Result<CopyResult> {
        fs_err::create_dir_all(&job.work)?;
        let spec = job.work.with_file_name("job.json");
        fs_err::write(&spec, serde_json::to_vec(&job)?)?;
        hook_ok(
            &self.b.exe,
            exec::Hook::Copy { job: spec.clone() },
            &self.b.maps,
            &format!("{} in the user namespace", job.what),
        )?;
        let res: CopyResult = serde_json::from_slice(&fs_err::read(&job.result)?)
            .with_context(|| format!("reading {}", job.result.display()))?;
        if let CopyResult::Layer { layer, .. } = &res {
            // The hook wrote (and synced) the blob in the store's tmp dir: move it into place.
            self.b.store.adopt_blob(&job.out, &layer.digest)?;
        }
        Ok(res)
    }

    /// RUN, COPY and ADD: key, lookup, and on a miss the work.
    fn layer_step(&mut self, cmd: &Command, ins: &Instruction, label: &str) -> anyhow::Result<()> {
        let b = self.b;
        let id = b.step_ids.fetch_add(1, Ordering::SeqCst);
        b.progress.start(id, label);
        b.steps.fetch_add(1, Ordering::SeqCst);
        let r = self.layer_step_inner(id, cmd, ins);
        if let Some((dir, _)) = self.fetched.take() {
            let _ = fs_err::remove_dir_all(dir);
        }
        match &r {
            Ok(true) => {
                b.cached.fetch_add(1, Ordering::SeqCst);
                b.progress.cached(id);
            }
            Ok(false) => b.progress.done(id),
            Err(e) if e.downcast_ref::<Cancelled>().is_some() => b.progress.cancelled(id),
            Err(e) => b.progress.failed(id, &format!("{e:#}")),
        }
        r.map(|_| ())
    }

    /// Returns whether the step was cached.
    fn layer_step_inner(
        &mut self,
        id: usize,
        cmd: &Command,
        ins: &Instruction,
    ) -> anyhow::Result<bool> {
        let (inputs, why_changed, extra) = self.inputs(ins)?;
        let key = self.key_for(ins, &inputs, &extra);
        if let Some(rec) = self.lookup(&key) {
            self.apply(cmd, key, &rec);
            return Ok(true);
        }
        // One process builds a step; the others that reach it at the same time wait for it and
        // take its result from the cache.
        let _building = if self.no_cache {
            None
        } else {
            let lock = self.b.store.step_lock(&key)?;
            if let Some(rec) = self.lookup(&key) {
                self.apply(cmd, key, &rec);
                return Ok(true);
            }
            Some(lock)
        };
        // COPY --link: the layer does not depend on what is below, so it is also recorded
        // under a key without the parent, and reused when only the layers below changed.
        let link_key = match ins {
            Instruction::Copy(c) | Instruction::Add(c) if c.link => {
                Some(self.key_with_parent("link", ins, &inputs, &extra))
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
        } else if let Some(w) = why_changed {
            w
        } else if let Some(f) = from_of(ins).filter(|f| self.source_missed(f)) {
            format!("the source stage {f} changed")
        } else if let Some(m) = self.base_moved.take() {
            m
        } else if self.earlier_miss {
            "an earlier step changed".to_string()
        } else {
            "not in the cache".to_string()
        };
        self.b.progress.miss(id, &why);
        self.earlier_miss = true;
        let created = rfc(self.now());
        let (layer, dirs) = match ins {
            Instruction::Run(r) => (self.run_step(id, cmd, r)?, Vec::new()),
            Instruction::Copy(c) => self.copy_step(c, false)?,
            Instruction::Add(c) => self.copy_step(c, true)?,
            _ => unreachable!("layer_step is only called for RUN, COPY and ADD"),
        };
        // What was copied (or bound into the RUN step) must be what the key hashed: read the
        // local sources' digests again (a stat per file when nothing changed) and refuse the
        // result when a file changed, appeared or was swapped while the step read it.
        if self.fetched.is_none() {
            let (again, changed, _) = self.inputs(ins)?;
            if again != inputs {
                let files = changed.map(|w| format!(" ({w})")).unwrap_or_default();
                bail!(
                    "the build context changed while this step read it{files}; nothing was cached\n  hint: run the build again once the files are stable; files written during builds belong in .dockerignore"
                );
            }
        }
        let rec = Record {
            layer,
            created,
            dirs,
        };
        cache::put(self.b.store, &key, &rec)?;
        if let Some(k) = &link_key {
            cache::put(self.b.store, k, &rec)?;
        }
        self.apply(cmd, key, &rec);
        Ok(false)
    }

    /// What a step reads, as digests for its key; why it changed (when files changed); and
    /// extra settings (network, mounts' sources).
    #[allow(clippy::type_complexity)]
    fn inputs(
        &mut self,
        ins: &Instruction,
    ) -> anyhow::Result<(Vec<String>, Option<String>, Vec<String>)> {
        let mut inputs = Vec::new();
        let mut changed: Vec<String> = Vec::new();
        let mut extra = Vec::new();
        match ins {
            Instruction::Copy(c) | Instruction::Add(c) => {
                let is_add = matches!(ins, Instruction::Add(_));
                let remote: Vec<String> = c
                    .sources
                    .iter()
                    .filter(|s| super::fetch::is_remote(s))
                    .cloned()
                    .collect();
                if !remote.is_empty() {
                    if !is_add {
                        bail!("source can't be a URL for COPY");
                    }
                    if remote.len() != c.sources.len() || c.from.is_some() {
                        bail!("ADD: mixing URL or git sources with local files (or --from) in one ADD is not supported; use one ADD per kind of source");
                    }
                    let dir = step_dir(self.b, "fetch")?;
                    let git = remote.iter().filter(|s| super::fetch::is_git(s)).count();
                    let fetched = match (git, remote.as_slice()) {
                        (0, _) => super::fetch::http(&remote, &dir, c.checksum.as_deref()),
                        (1, [one]) => {
                            super::fetch::git_repo(one, &dir, c.keep_git_dir, c.checksum.as_deref())
                        }
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
                    inputs.extend(fetched.digests.iter().cloned());
                    self.fetched = Some((dir, fetched));
                    return Ok((inputs, None, extra));
                }
                if c.checksum.is_some() {
                    bail!("checksum requires HTTP(S) or Git sources");
                }
                let (d, ch) =
                    self.source_digest(c.from.as_deref(), &c.sources, &c.excludes, c.parents)?;
                inputs.push(d);
                changed.extend(ch);
            }
            Instruction::Run(r) => {
                extra.push(format!(
                    "network={}",
                    super::key::network(&self.network(r)?)
                ));
                for m in &r.mounts {
                    let spec =
                        MountSpec::parse(m, false).map_err(|e| anyhow!("--mount {m}: {e}"))?;
                    if spec.kind == MountKind::Bind {
                        let src = spec.source.clone().unwrap_or_else(|| ".".into());
                        let (d, ch) =
                            self.source_digest(spec.from.as_deref(), &[src], &[], false)?;
                        inputs.push(d);
                        changed.extend(ch);
                    }
                }
            }
            _ => {}
        }
        let why = (!changed.is_empty()).then(|| {
            let n = changed.len();
            let shown: Vec<&str> = changed.iter().take(5).map(|s| s.as_str()).collect();
            format!(
                "{n} file{} changed: {}{}",
                if n == 1 { "" } else { "s" },
                shown.join(", "),
                if n > 5 { ", …" } else { "" }
            )
        });
        Ok((inputs, why, extra))
    }

    /// The key input for what `sources` read from `from` (the build context when `None`): the
    /// content of a context directory, or a stage's or image's layers; and the context files
    /// that changed since the last build.
    fn source_digest(
        &mut self,
        from: Option<&str>,
        sources: &[String],
        excludes: &[String],
        parents: bool,
    ) -> anyhow::Result<(String, Vec<String>)> {
        let opts = self.b.opts;
        match from {
            None => self.context_digest(&opts.context, &opts.ignore, sources, excludes, parents),
            Some(f) => match self.source_ref(f)? {
                FromRef::Stage(r) => Ok((r.content_id(), Vec::new())),
                FromRef::Context(p) => self.context_digest(&p, &[], sources, excludes, parents),
            },
        }
    }

    /// The digest of exactly what `sources` read from a context directory (path, kind, mode,
    /// owner, content), with the files that changed since the last build.
    fn context_digest(
        &self,
        root: &Path,
        ignore: &[String],
        sources: &[String],
        excludes: &[String],
        parents: bool,
    ) -> anyhow::Result<(String, Vec<String>)> {
        let resolved = copy::resolve_sources(root, sources, parents).map_err(|e| anyhow!("{e}"))?;
        let mut entries = Vec::new();
        let mut names = Vec::new();
        let ignored = crate::context::ignore::Matcher::new(ignore).map_err(|e| anyhow!("{e}"))?;
        for r in &resolved {
            if !r.path.is_empty() && !r.is_dir {
                // A single file excluded by .dockerignore is not there for the build.
                if ignored.excluded(&r.path) {
                    bail!("\"/{}\": not found (excluded by .dockerignore)", r.path);
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
            entries.extend(
                copy::source_entries(root, r, ignore, excludes).map_err(|e| anyhow!("{e}"))?,
            );
        }
        let mut cache = self.b.checksums.lock().unwrap_or_else(|e| e.into_inner());
        let (d, stats) = crate::context::checksum::digest(root, &entries, &mut cache)?;
        // What to say when the step misses: the files whose content changed, and new ones
        // unless every file is new (a first build is "not in the cache", not "20,000 files
        // changed").
        let mut why = stats.changed;
        if stats.reused + stats.hashed > stats.added.len() {
            why.extend(stats.added.into_iter().map(|a| format!("{a} (new)")));
        }
        Ok((format!("{d} {}", names.join(" ")), why))
    }

    fn source_ref(&mut self, f: &str) -> anyhow::Result<FromRef> {
        let plan = self.b.plan;
        let idx = plan
            .stage_by_name(f)
            .map(|s| s.index)
            .or_else(|| f.parse::<usize>().ok().filter(|i| *i < plan.stages.len()));
        if let Some(i) = idx {
            if i == self.index {
                bail!("--from={f} names this stage itself");
            }
            let r = self.b.stage_result(i).ok_or(Cancelled)?;
            return Ok(FromRef::Stage(r));
        }
        match self.b.opts.named_contexts.get(f) {
            Some(NamedContext::Dir(p)) => return Ok(FromRef::Context(p.clone())),
            Some(NamedContext::Image(r)) => return self.image_ref(r),
            Some(NamedContext::OciLayout(p, _)) => {
                let loaded = self.b.store.load(p)?;
                let img = loaded
                    .first()
                    .ok_or_else(|| anyhow!("{}: no image in the layout", p.display()))?;
                return self.image_ref(&img.config_digest.to_string());
            }
            None => {}
        }
        if let Some(s) = plan.stage_typo(f) {
            bail!(
                "--from={f}: there is no stage {f}\n  hint: did you mean the stage {s}? (an image of that name is written with its registry or tag, docker.io/library/{f}:latest)"
            );
        }
        self.image_ref(f)
    }

    /// Did a step of the stage `f` (by name or index) run rather than come from the cache?
    fn source_missed(&self, f: &str) -> bool {
        let plan = self.b.plan;
        plan.stage_by_name(f)
            .map(|s| s.index)
            .or_else(|| f.parse::<usize>().ok())
            .and_then(|i| self.b.stage_result(i))
            .is_some_and(|r| r.ran)
    }

    fn image_ref(&mut self, r: &str) -> anyhow::Result<FromRef> {
        if let Some(x) = self
            .b
            .externals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(r)
        {
            return Ok(FromRef::Stage(x.clone()));
        }
        let img = image(self.b, r)?;
        let res = std::sync::Arc::new(StageResult {
            config: img.record.config.clone(),
            layers: img.record.manifest.layers.clone(),
            key: img.record.config_digest.clone(),
            dirs: Vec::new(),
            ran: false,
        });
        self.b
            .externals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r.to_string(), res.clone());
        Ok(FromRef::Stage(res))
    }

    fn network(&self, r: &dockerfile::Run) -> anyhow::Result<Network> {
        Ok(match r.network.as_deref() {
            None | Some("default") => self.b.opts.network,
            Some("none") => Network::None,
            Some("host") if self.b.opts.allow_host_network => Network::Host,
            Some("host") => bail!(
                "RUN --network=host gives the step the host's network, loopback included: allow it on the command line with `--allow network.host` (as buildx's entitlement)"
            ),
            Some(other) => bail!("unsupported network mode \"{other}\": use default, none or host"),
        })
    }

    fn dest_path(&self, dest: &str) -> String {
        if dest.starts_with('/') {
            return dest.to_string();
        }
        let wd = self.workdir();
        let sep = if wd.ends_with('/') { "" } else { "/" };
        if dest.is_empty() {
            format!("{wd}{sep}")
        } else {
            format!("{wd}{sep}{dest}")
        }
    }

    fn copy_step(
        &mut self,
        c: &dockerfile::Copy,
        is_add: bool,
    ) -> anyhow::Result<(Option<LayerRec>, Vec<String>)> {
        let remote = self.fetched.as_ref().map(|(_, f)| f.clone());
        let source = match &c.from {
            None if remote.is_some() => Source::Context {
                root: remote.as_ref().map(|f| f.root.clone()).unwrap_or_default(),
                ignore: Vec::new(),
            },
            None => Source::Context {
                root: self.b.opts.context.clone(),
                ignore: self.b.opts.ignore.clone(),
            },
            Some(f) => match self.source_ref(f)? {
                FromRef::Stage(r) => Source::Layers(lowers(self.b, &r.config, &r.layers)?),
                FromRef::Context(p) => Source::Context {
                    root: p,
                    ignore: Vec::new(),
                },
            },
        };
        let env = &self.scope;
        let inline = c
            .inline
            .iter()
            .map(|i| {
                let data = if i.expand {
                    self.lexer
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
        let dir = step_dir(self.b, if is_add { "add" } else { "copy" })?;
        let base = self.new_job(&dir, source, c.link, if is_add { "ADD" } else { "COPY" })?;
        let job = CopyJob {
            sources: match &remote {
                Some(f) => f.sources.clone(),
                None => c.sources.clone(),
            },
            inline,
            dest: self.dest_path(&c.dest),
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
        let r = self.run_copy(job);
        let _ = remove_tree(&dir, &self.b.maps);
        match r? {
            CopyResult::Layer { layer, dirs, .. } => Ok((Some(layer), dirs)),
            CopyResult::Error(e) => bail!("{e}"),
        }
    }

    fn run_step(
        &mut self,
        id: usize,
        cmd: &Command,
        r: &dockerfile::Run,
    ) -> anyhow::Result<Option<LayerRec>> {
        let b = self.b;
        let lower = lowers(b, &self.config, &self.layers)?;
        let step = step_dir(b, "run")?;
        let result = self.run_in(id, cmd, r, lower, &step);
        let cleanup = remove_tree(&step, &b.maps);
        let out = result?;
        cleanup?;
        Ok(out)
    }

    fn run_in(
        &mut self,
        id: usize,
        cmd: &Command,
        r: &dockerfile::Run,
        lower: Vec<PathBuf>,
        step: &Path,
    ) -> anyhow::Result<Option<LayerRec>> {
        let b = self.b;
        let root = exec::step_root(step, lower, "strata", self.network(r)?)?;
        let mut env = self.env_list();
        let args = self.visible_args();
        for (k, v) in &args {
            env.push(format!("{k}={v}"));
        }
        // The predefined proxy ARGs reach every RUN step without an ARG line, as in BuildKit
        // (its ExecOp ProxyEnv): not in the cache key, the image's config or its history, so a
        // CI runner's proxy neither busts the cache nor leaks a password into the image. A
        // declared one is an ordinary ARG (above).
        for name in crate::plan::PROXY_ARGS {
            let set = |e: &String| e.split('=').next() == Some(name);
            if let Some(v) = b.plan.options.build_args.get(*name) {
                if !args.iter().any(|(k, _)| k == name) && !env.iter().any(set) {
                    env.push(format!("{name}={v}"));
                }
            }
        }
        if let Some(e) = b.opts.epoch {
            if !env.iter().any(|x| x.starts_with("SOURCE_DATE_EPOCH=")) {
                env.push(format!("SOURCE_DATE_EPOCH={e}"));
            }
        }
        let mut binds = Vec::new();
        let mut held = Held::default();
        for (i, m) in r.mounts.iter().enumerate() {
            let spec = MountSpec::parse(m, false).map_err(|e| anyhow!("--mount {m}: {e}"))?;
            self.mount(&spec, step, i, &mut binds, &mut env, &mut held)?;
        }
        let argv = match &r.command {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut argv = self.shell();
                let single = r.heredocs.len() == 1
                    && s.trim()
                        .trim_start_matches("<<")
                        .trim_start_matches('-')
                        .trim_matches(['"', '\''])
                        == r.heredocs[0].name;
                if single {
                    let body = if r.heredocs[0].chomp {
                        r.heredocs[0].chomped()
                    } else {
                        r.heredocs[0].content.clone()
                    };
                    if let Some(line) = body.strip_prefix("#!") {
                        // A script with its own interpreter: run the file.
                        let script = step.join("heredoc");
                        fs_err::write(&script, &body)?;
                        std::fs::set_permissions(
                            &script,
                            std::os::unix::fs::PermissionsExt::from_mode(0o755),
                        )?;
                        let target = format!("/dev/.strata-heredoc-{}", r.heredocs[0].name);
                        let _ = line;
                        binds.push(Bind {
                            host: script,
                            target: target.clone(),
                            readonly: true,
                            source: BindSource::Host,
                        });
                        argv = vec![target];
                    } else {
                        argv.push(body);
                    }
                } else {
                    let mut text = s.clone();
                    for h in &r.heredocs {
                        text.push('\n');
                        text.push_str(&h.content);
                        text.push_str(&h.name);
                    }
                    argv.push(text);
                }
                argv
            }
        };
        // Overlay, or copies where overlayfs was refused (the sandbox decides, and says so).
        let rootfs = if sandbox::use_copies() {
            Rootfs::copy_in(step, root.lower)?
        } else {
            Rootfs::Overlay {
                lower: root.lower,
                upper: root.upper.clone(),
                work: root.work,
                merged: root.merged,
            }
        };
        let mut spec = Spec {
            rootfs,
            argv: argv.clone(),
            env,
            user: self.user(),
            workdir: self.workdir(),
            network: self.network(r)?,
            hostname: "strata".into(),
            etc_files: root.etc_files,
            binds,
            memory_files: std::mem::take(&mut held.memory),
            stdin: false,
            tty: false,
            ports: None,
            maps: b.maps.clone(),
        };
        let (reader, writer) = std::io::pipe()?;
        let writer2 = writer.try_clone()?;
        let progress = &b.progress;
        let finished = std::thread::scope(|s| {
            s.spawn(move || {
                let mut r = std::io::BufReader::new(reader);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&line);
                            progress.log(id, text.trim_end_matches(['\n', '\r']));
                        }
                    }
                }
            });
            let mine = std::sync::atomic::AtomicU32::new(0);
            let started = |pid: u32| {
                mine.store(pid, Ordering::SeqCst);
                b.running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(pid);
                // A failure elsewhere may have come just before this step started.
                if b.failed.load(Ordering::SeqCst) {
                    let _ = rustix::process::kill_process(
                        rustix::process::Pid::from_raw(pid as i32)
                            .expect("a child pid is positive"),
                        rustix::process::Signal::KILL,
                    );
                }
            };
            let (w1, w2) = (writer.try_clone()?, writer2.try_clone()?);
            let mut r =
                sandbox::run_observed(&b.exe, &spec, writer.into(), writer2.into(), &started);
            if let Err(e) = &r {
                if matches!(spec.rootfs, Rootfs::Overlay { .. }) && sandbox::overlay_refused(e) {
                    progress.log(id, &format!("overlayfs cannot be mounted in a user namespace here ({e}); using copied snapshots, which is slower"));
                    spec.rootfs = Rootfs::copy_in(step, spec.rootfs.lower().to_vec())?;
                    r = sandbox::run_observed(&b.exe, &spec, w1.into(), w2.into(), &started);
                }
            }
            b.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|p| *p != mine.load(Ordering::SeqCst));
            r
        });
        if b.failed.load(Ordering::SeqCst) {
            return Err(Cancelled.into());
        }
        let finished = finished.map_err(sandbox_err)?;
        if finished.outcome.code() != 0 {
            let failed = format!(
                "process \"{}\" did not complete successfully: exit code: {}",
                argv.join(" "),
                finished.outcome.code()
            );
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
            if b.opts.debug && terminal {
                self.debug_shell(id, &spec)?;
            }
            drop(held);
            // Kept for `strata debug` (best effort: the build's failure is what matters), unless
            // it had a secret.
            let secret = super::debug::not_kept_because(&spec);
            let kept = super::debug::keep(
                b.store,
                step,
                super::debug::Failure {
                    spec: spec.clone(),
                    shell: self
                        .shell()
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| "/bin/sh".into()),
                    step: format!(
                        "{}:{} {}",
                        b.opts.dockerfile_name,
                        cmd.start_line,
                        first_line(&cmd.original)
                    ),
                    exit_code: finished.outcome.code(),
                    when: crate::oci::now_secs(),
                },
                &b.maps,
            );
            if let (Err(e), None) = (&kept, secret) {
                b.progress
                    .log(id, &format!("not kept for strata debug: {e:#}"));
            }
            let hint = match (b.opts.debug, terminal, kept.is_ok()) {
                (true, true, _) => "",
                (false, _, false) if secret.is_some() => {
                    "\n  hint: strata build --debug opens a shell where this command failed (a step with a secret is not kept for `strata debug` afterwards: what it wrote may hold the secret)"
                }
                (false, _, true) => {
                    "\n  hint: `strata debug` opens a shell where this command failed (or build with --debug)"
                }
                (false, _, false) => {
                    "\n  hint: strata build --debug opens a shell where this command failed"
                }
                (true, false, true) => {
                    "\n  hint: --debug opens its shell when standard input is a terminal; `strata debug` opens it from one now"
                }
                (true, false, false) => {
                    "\n  hint: --debug opens its shell when standard input is a terminal"
                }
            };
            bail!("{failed}{hint}");
        }
        drop(held);
        let tar = step.join("layer.tar");
        exec::diff_to_tar(&spec, step, &finished.created, &tar, &b.maps, b.opts.epoch)?;
        let size = fs_err::metadata(&tar)?.len();
        if size <= 1024 {
            // Nothing changed: no layer (history marks it empty).
            return Ok(None);
        }
        let info: LayerRec = b.store.put_layer_file(&tar, b.opts.compression)?.into();
        // The upper dir is this layer's content: keep it as the snapshot, saving an unpack
        // (not with SOURCE_DATE_EPOCH, where the layer's times were clamped and the upper
        // dir's were not).
        if b.opts.epoch.is_none() && matches!(spec.rootfs, Rootfs::Overlay { .. }) {
            let _ = b.store.adopt_snapshot(&info.diff_id, &root.upper);
        }
        Ok(Some(info))
    }

    /// Set up one RUN --mount.
    /// `--debug`: an interactive shell (the SHELL's program) in the failed step's sandbox as
    /// the command left it: the same root with its changes, mounts, environment, user and
    /// working directory, on a pseudo-terminal of its own.
    fn debug_shell(&self, id: usize, failed: &Spec) -> anyhow::Result<()> {
        use crate::sandbox::terminal;
        let shell = self
            .shell()
            .into_iter()
            .next()
            .unwrap_or_else(|| "/bin/sh".into());
        self.b.progress.log(
            id,
            &format!("--debug: {shell} in the failed step; exit it to end the build"),
        );
        let spec = Spec {
            argv: vec![shell],
            stdin: true,
            tty: true,
            ..failed.clone()
        };
        let (master, slave) = terminal::open()?;
        let raw = terminal::Raw::enter();
        let out = terminal::relay(master, true)?;
        let r = sandbox::run_on_terminal(&self.b.exe, &spec, &slave);
        drop(slave);
        let _ = out.join();
        drop(raw);
        r.map_err(sandbox_err)?;
        Ok(())
    }

    fn mount(
        &mut self,
        m: &MountSpec,
        step: &Path,
        i: usize,
        binds: &mut Vec<Bind>,
        env: &mut Vec<String>,
        held: &mut Held,
    ) -> anyhow::Result<()> {
        let b = self.b;
        let target = |t: &Option<String>| -> anyhow::Result<String> {
            let t = t.clone().ok_or_else(|| anyhow!("--mount needs target="))?;
            Ok(if t.starts_with('/') {
                t
            } else {
                format!("{}/{t}", self.workdir().trim_end_matches('/'))
            })
        };
        match m.kind {
            MountKind::Bind => {
                let t = target(&m.target)?;
                let src = m.source.clone().unwrap_or_default();
                let readonly = m.readonly.unwrap_or(true);
                match &m.from {
                    None => {
                        let root = b.opts.context.clone();
                        binds.push(self.host_bind(&root, &src, t, readonly, step, i)?);
                    }
                    Some(f) => match self.source_ref(f)? {
                        FromRef::Context(root) => {
                            binds.push(self.host_bind(&root, &src, t, readonly, step, i)?);
                        }
                        FromRef::Stage(r) => {
                            let l = lowers(b, &r.config, &r.layers)?;
                            let scratch = step.join(format!("mount{i}"));
                            fs_err::create_dir_all(&scratch)?;
                            let lower = if l.is_empty() {
                                let e = scratch.join("empty");
                                fs_err::create_dir_all(&e)?;
                                vec![e]
                            } else {
                                l
                            };
                            binds.push(Bind {
                                host: scratch,
                                target: t,
                                readonly,
                                source: BindSource::Layers { lower, sub: src },
                            });
                        }
                    },
                }
            }
            MountKind::Cache => {
                let t = target(&m.target)?;
                let id = m.id.clone().unwrap_or_else(|| t.clone());
                let dir = b
                    .store
                    .root()
                    .join("v1/cache-mounts")
                    .join(&Digest::of(id.as_bytes()).hex()[..32]);
                fs_err::create_dir_all(dir.parent().unwrap_or(Path::new(".")))?;
                if !dir.exists() {
                    make_cache_dir(b, &dir, m, &format!("creating cache mount {id}"))?;
                }
                let mut host = dir.clone();
                if m.sharing != Sharing::Shared {
                    // locked: one step at a time; private: a step that finds the cache in use
                    // gets a fresh, throwaway one.
                    let f = fs_err::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(dir.with_extension("lock"))?;
                    let op = if m.sharing == Sharing::Locked {
                        rustix::fs::FlockOperation::LockExclusive
                    } else {
                        rustix::fs::FlockOperation::NonBlockingLockExclusive
                    };
                    match rustix::fs::flock(&f, op) {
                        Ok(()) => held.locks.push(f),
                        Err(rustix::io::Errno::WOULDBLOCK) => {
                            host = step.join(format!("private-cache{i}"));
                            let what = format!("creating a private cache mount {id}");
                            make_cache_dir(b, &host, m, &what)?;
                        }
                        Err(e) => bail!("locking cache mount {id}: {e}"),
                    }
                }
                binds.push(Bind {
                    host,
                    target: t,
                    readonly: m.readonly.unwrap_or(false),
                    source: BindSource::Host,
                });
            }
            MountKind::Tmpfs => {
                binds.push(Bind {
                    host: PathBuf::new(),
                    target: target(&m.target)?,
                    readonly: false,
                    source: BindSource::Tmpfs { size: m.size },
                });
            }
            MountKind::Secret => {
                let id =
                    m.id.clone()
                        .or_else(|| {
                            m.target
                                .as_deref()
                                .map(|t| t.rsplit('/').next().unwrap_or(t).to_string())
                        })
                        .ok_or_else(|| anyhow!("secret mount needs id= or target="))?;
                let value = match b.opts.secrets.get(&id) {
                    Some(SecretSource::File(p)) => {
                        Some(fs_err::read(p).with_context(|| format!("reading secret {id}"))?)
                    }
                    Some(SecretSource::Env(v)) => Some(
                        std::env::var(v)
                            .map_err(|_| {
                                anyhow!("secret {id}: environment variable {v} is not set")
                            })?
                            .into_bytes(),
                    ),
                    None => None,
                };
                let Some(value) = value else {
                    if m.required {
                        bail!("secret {id}: not found\n  hint: pass it with --secret id={id},src=FILE or --secret id={id},env=VAR");
                    }
                    return Ok(());
                };
                if let Some(var) = &m.env {
                    env.push(format!("{var}={}", String::from_utf8_lossy(&value)));
                    if m.target.is_none() {
                        return Ok(());
                    }
                }
                let t = m
                    .target
                    .clone()
                    .unwrap_or_else(|| format!("/run/secrets/{id}"));
                // The file exists only in memory (a memfd the sandbox bind-mounts read-only):
                // never on disk, so no kill at any instant leaves a copy; never in the upper
                // dir, so never in a layer.
                let f = sandbox::memory_file(&value, m.mode.unwrap_or(0o400))
                    .with_context(|| format!("secret {id}: an in-memory file"))?;
                binds.push(Bind {
                    host: step.join(format!("secret{i}")),
                    target: t,
                    readonly: true,
                    source: BindSource::Memory {
                        index: held.memory.len(),
                    },
                });
                held.memory.push(f);
            }
            MountKind::Ssh => {
                let id = m.id.clone().unwrap_or_else(|| "default".into());
                let sock = match b.opts.ssh.get(&id) {
                    Some(p) => p.clone(),
                    None if m.required => {
                        bail!("ssh agent {id}: not given\n  hint: pass --ssh {id}=SOCKET (or --ssh default to use $SSH_AUTH_SOCK)")
                    }
                    None => return Ok(()),
                };
                let t = m
                    .target
                    .clone()
                    .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{i}"));
                env.push(format!("SSH_AUTH_SOCK={t}"));
                binds.push(Bind {
                    host: sock,
                    target: t,
                    readonly: false,
                    source: BindSource::Host,
                });
            }
        }
        Ok(())
    }

    /// A bind of a context path: read-only as is; read-write on a throwaway copy.
    /// A bind of `src` from the context directory `root`. The sandbox resolves the source
    /// inside the root (symlinks followed as if it were `/`), opens it beneath the root with no
    /// symlink followed and binds that descriptor, in its own mount namespace: a component
    /// swapped for a symlink meanwhile cannot redirect the mount outside the context.
    #[allow(clippy::too_many_arguments)]
    fn host_bind(
        &self,
        root: &Path,
        src: &str,
        target: String,
        readonly: bool,
        step: &Path,
        i: usize,
    ) -> anyhow::Result<Bind> {
        // Checked here too, for an error that names the source before any sandbox starts.
        let p = in_root(root, src)?;
        let rel = p.strip_prefix(root).unwrap_or(Path::new("")).to_path_buf();
        let sub = rel.display().to_string();
        if readonly {
            return Ok(Bind {
                host: root.to_path_buf(),
                target,
                readonly: true,
                source: BindSource::Context { sub },
            });
        }
        let scratch = step.join(format!("mount{i}"));
        fs_err::create_dir_all(&scratch)?;
        if p.is_dir() {
            // Read-write: an overlay with the context as its lower dir; writes are discarded.
            return Ok(Bind {
                host: scratch,
                target,
                readonly: false,
                source: BindSource::Layers {
                    lower: vec![root.to_path_buf()],
                    sub,
                },
            });
        }
        // A read-write file: a copy in the step's scratch space, read from beneath the root.
        let copy = scratch.join("file");
        let mut from = crate::context::open_beneath(root, &rel)
            .map_err(|e| anyhow!("mount source \"{src}\": {e}"))?;
        let mut to = fs_err::File::create(&copy)?;
        std::io::copy(&mut from, &mut to)?;
        to.set_permissions(from.metadata()?.permissions())?;
        Ok(Bind {
            host: copy,
            target,
            readonly: false,
            source: BindSource::Host,
        })
    }
}

/// A cache mount's directory at `dir`, owned and moded as the mount asks, made inside the user
/// namespace (the owner may be a subordinate id).
fn make_cache_dir(b: &Build, dir: &Path, m: &MountSpec, what: &str) -> anyhow::Result<()> {
    let make = exec::Hook::MakeCache {
        path: dir.to_path_buf(),
        uid: m.uid.unwrap_or(0),
        gid: m.gid.unwrap_or(0),
        mode: m.mode.unwrap_or(0o755),
    };
    hook_ok(&b.exe, make, &b.maps, what)
}

/// The `--from` of a COPY or ADD.
fn from_of(ins: &Instruction) -> Option<&str> {
    match ins {
        Instruction::Copy(c) | Instruction::Add(c) => c.from.as_deref(),
        _ => None,
    }
}

enum FromRef {
    Stage(std::sync::Arc<StageResult>),
    Context(PathBuf),
}

/// A path inside `root`, symlinks resolved as if `root` were `/`.
fn in_root(root: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let clean = crate::context::ignore::clean(&format!("/{rel}"));
    let r =
        crate::layer::apply::resolve_in_root(root, Path::new(clean.trim_start_matches('/')), 0)?;
    let p = root.join(r);
    if std::fs::symlink_metadata(&p).is_err() {
        bail!("mount source \"{rel}\": not found in {}", root.display());
    }
    Ok(p)
}

fn resolve_workdir(current: &str, w: &str) -> String {
    let joined = if w.starts_with('/') {
        w.to_string()
    } else {
        format!("{}/{w}", current.trim_end_matches('/'))
    };
    crate::context::ignore::clean(&joined)
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

fn created_by(cmd: &Command) -> String {
    let text = cmd.original.trim();
    match &cmd.instruction {
        Instruction::Run(_) => format!("{text} # strata"),
        Instruction::Copy(_) | Instruction::Add(_) => format!("{text} # strata"),
        _ => text.to_string(),
    }
}
