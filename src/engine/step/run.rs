//! RUN: what a step reads besides its instruction (its network, the sources of its bind
//! mounts), and on a miss the command in the sandbox on an overlay of the layers below, with
//! its mounts (bind, cache, tmpfs, secret, ssh), then its changes as a layer, written on a
//! thread while the next steps run on its upper dir ([`Commit`]). A failure keeps the step for
//! `strata debug` and, with `--debug` on a terminal, opens a shell in it.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};

use super::source::{self, FromRef};
use crate::dockerfile::{
    self, Command, CommandLine, MountKind, MountSpec, RunNetwork, RunOptions, Sharing,
};
use crate::engine::cache::key::Inputs;
use crate::engine::cache::LayerRec;
use crate::engine::error::Cancelled;
use crate::engine::error::Error;
use crate::engine::exec::{self, hook_ok, remove_tree, sandbox_err};
use crate::engine::report::Event;
use crate::engine::state::{first_line, lowers, step_dir, Commit, Ran, StageState};
use crate::engine::{Build, SecretSource};
use crate::sandbox::{self, Bind, BindSource, Network, Rootfs, Spec};

/// What a RUN step's mounts hold while it runs: cache mount locks, and the in-memory files of
/// its secrets.
#[derive(Default)]
struct Held {
    locks: Vec<fs_err::File>,
    memory: Vec<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// What the RUN step reads: its effective network (a setting of its key) and the content of
/// its bind mounts' sources.
pub(in crate::engine) fn inputs(st: &StageState<'_, '_>, o: &RunOptions) -> anyhow::Result<Inputs> {
    let mut inputs = Inputs {
        settings: vec![format!(
            "network={}",
            crate::engine::cache::key::network(&network(st, o)?)
        )],
        ..Default::default()
    };
    // BUILDKIT_SANDBOX_HOSTNAME changes what the step sees (as it changes BuildKit's key).
    if let Some(h) =
        st.b.plan
            .options
            .build_args
            .get("BUILDKIT_SANDBOX_HOSTNAME")
    {
        inputs.settings.push(format!("hostname={h}"));
    }
    // What --add-host, --ulimit and --shm-size change in the step (as BuildKit keys its
    // ExecOp's extra hosts, limits and shm size); nothing when they are not given, so other
    // builds keep their keys.
    let opts = st.b.opts;
    for (h, ip) in &opts.extra_hosts {
        inputs.settings.push(format!("add-host={h}:{ip}"));
    }
    for l in &opts.ulimits {
        inputs.settings.push(format!("ulimit={}", l.describe()));
    }
    if let Some(n) = opts.shm_size {
        inputs.settings.push(format!("shm-size={n}"));
    }
    for m in o.mounts.iter().filter(|m| m.kind == MountKind::Bind) {
        let src = m.source.clone().unwrap_or_else(|| ".".into());
        let (d, changed) = source::digest(st, m.from.as_deref(), &[src], &[], false)?;
        inputs.digests.push(d);
        inputs.changed.extend(changed);
    }
    Ok(inputs)
}

/// The inputs of a RUN step that bind-mounts another stage (or an image), with those mounts
/// known by the content of what they show rather than by the layers of the stage: the key
/// BuildKit would give it, so it stays cached when that stage is rebuilt with the same files
/// there. None when the step mounts no stage. Computed only after a miss of the usual key
/// (which needs no file of the stage: an imported cache's layers stay where they are).
pub(in crate::engine) fn content_inputs(
    st: &StageState<'_, '_>,
    o: &RunOptions,
) -> anyhow::Result<Option<Inputs>> {
    let mut inputs = inputs(st, o)?;
    let mut any = false;
    let binds = o.mounts.iter().filter(|m| m.kind == MountKind::Bind);
    for (i, m) in binds.enumerate() {
        let Some(f) = m.from.as_deref() else { continue };
        if let FromRef::Stage(r) = source::source_ref(st, f)? {
            let src = m.source.clone().unwrap_or_else(|| ".".into());
            inputs.digests[i] = format!("content {}", source::stage_subtree(st, &r, &src)?);
            any = true;
        }
    }
    Ok(any.then_some(inputs))
}

/// The network a RUN step gets: its `--network`, else the build's.
fn network(st: &StageState<'_, '_>, o: &RunOptions) -> anyhow::Result<Network> {
    Ok(match o.network {
        None | Some(RunNetwork::Default) => st.b.opts.network,
        Some(RunNetwork::None) => Network::None,
        Some(RunNetwork::Host) if st.b.opts.allow_host_network => Network::Host,
        Some(RunNetwork::Host) => return Err(Error::HostNetworkNotAllowed.into()),
    })
}

/// The proxy variables a RUN step gets from the build args, in both spellings, as BuildKit's
/// ExecOp sets them (proxyEnvFromBuildArgs, proxyEnvList): each of http_proxy, https_proxy,
/// ftp_proxy, no_proxy and all_proxy given in either case (or both: the lower-case one wins,
/// as in BuildKit's sorted walk) becomes `HTTP_PROXY=v` and `http_proxy=v`; an empty value
/// sets neither.
fn proxy_env(build_args: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for lower in [
        "http_proxy",
        "https_proxy",
        "ftp_proxy",
        "no_proxy",
        "all_proxy",
    ] {
        // BTreeMap order is byte order: upper case first, so the last match is BuildKit's.
        let v = build_args
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(lower))
            .map(|(_, v)| v)
            .next_back();
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.push((lower.to_ascii_uppercase(), v.clone()));
            out.push((lower.to_string(), v.clone()));
        }
    }
    out
}

pub(in crate::engine) fn execute(
    st: &mut StageState<'_, '_>,
    id: usize,
    cmd: &Command,
    r: &dockerfile::Run,
    o: &RunOptions,
) -> anyhow::Result<Ran> {
    let b = st.b;
    let lower = st.lowers_now()?;
    let step = step_dir(b, "run")?;
    let result = run_in(st, id, cmd, r, o, lower, &step);
    if let Ok(Ran::Committing(_)) = result {
        // The commit owns the scratch dir now.
        return result;
    }
    let cleanup = remove_tree(&step, &b.maps);
    let out = result?;
    cleanup?;
    Ok(out)
}

fn run_in(
    st: &mut StageState<'_, '_>,
    id: usize,
    cmd: &Command,
    r: &dockerfile::Run,
    o: &RunOptions,
    lower: Vec<PathBuf>,
    step: &Path,
) -> anyhow::Result<Ran> {
    let b = st.b;
    let net = network(st, o)?;
    // The step's hostname: BuildKit's BUILDKIT_SANDBOX_HOSTNAME build arg, else strata's.
    let hostname = b
        .plan
        .options
        .build_args
        .get("BUILDKIT_SANDBOX_HOSTNAME")
        .filter(|h| !h.is_empty())
        .cloned()
        .unwrap_or_else(|| "strata".to_string());
    let root = exec::step_root(step, lower, &hostname, net)?;
    exec::add_hosts(&root, &b.opts.extra_hosts)?;
    let mut env = st.env_list();
    let args = st.visible_args();
    for (k, v) in &args {
        env.push(format!("{k}={v}"));
    }
    // The predefined proxy ARGs reach every RUN step without an ARG line, as in BuildKit
    // (its ExecOp ProxyEnv): not in the cache key, the image's config or its history, so a
    // CI runner's proxy neither busts the cache nor leaks a password into the image. A
    // declared one is an ordinary ARG (above).
    for (name, v) in proxy_env(&b.plan.options.build_args) {
        let set = |e: &String| e.split('=').next() == Some(name.as_str());
        if !args.iter().any(|(k, _)| *k == name) && !env.iter().any(set) {
            env.push(format!("{name}={v}"));
        }
    }
    if let Some(e) = b.opts.epoch {
        if !env.iter().any(|x| x.starts_with("SOURCE_DATE_EPOCH=")) {
            env.push(format!("SOURCE_DATE_EPOCH={e}"));
        }
    }
    let mut binds = Vec::new();
    let mut held = Held::default();
    for (i, m) in o.mounts.iter().enumerate() {
        mount(st, m, step, i, &mut binds, &mut env, &mut held)?;
    }
    let argv = match &r.command {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => {
            let mut argv = st.shell();
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
    // What the error of a failed step shows: the command, cut short past 2 KiB (a heredoc of
    // megabytes is not repeated in the error).
    let shown = {
        let all = argv.join(" ");
        match all.char_indices().nth(2048) {
            Some((i, _)) => format!("{} … ({} more bytes)", &all[..i], all.len() - i),
            None => all,
        }
    };
    // A script longer than Linux passes in one argument (a long heredoc: `sh -c` would fail
    // with E2BIG, as under BuildKit) runs from a file the shell sources, as it would have run
    // it with -c; a file of any size.
    let argv = match (&r.command, argv.last()) {
        (CommandLine::Shell(_), Some(script)) if script.len() >= sandbox::MAX_ARG_LEN => {
            let file = step.join("script");
            fs_err::write(&file, script)?;
            let target = "/dev/.strata-run-script".to_string();
            binds.push(Bind {
                host: file,
                target: target.clone(),
                readonly: true,
                source: BindSource::Host,
            });
            let mut a = argv;
            a.pop();
            a.push(format!(". {target}"));
            a
        }
        _ => argv,
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
        user: st.user(),
        workdir: st.workdir(),
        network: net,
        hostname,
        etc_files: root.etc_files,
        binds,
        memory_files: std::mem::take(&mut held.memory),
        stdin: false,
        tty: false,
        tty_size: None,
        rlimits: b.opts.ulimits.clone(),
        shm_size: b.opts.shm_size,
        ports: None,
        maps: b.maps.clone(),
    };
    let (reader, writer) = std::io::pipe()?;
    let writer2 = writer.try_clone()?;
    let report = &*b.report;
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
                        report.event(Event::Log {
                            step: id,
                            line: text.trim_end_matches(['\n', '\r']),
                        });
                    }
                }
            }
        });
        // The child is killed if the build fails while it runs (or failed just before).
        let tracked = std::sync::Mutex::new(None);
        let started = |pid: u32| {
            *tracked.lock().unwrap_or_else(|e| e.into_inner()) = Some(b.schedule.track(pid));
        };
        let (w1, w2) = (writer.try_clone()?, writer2.try_clone()?);
        let mut r = sandbox::run_observed(&b.exe, &spec, writer.into(), writer2.into(), &started);
        if let Err(e) = &r {
            if matches!(spec.rootfs, Rootfs::Overlay { .. }) && sandbox::overlay_refused(e) {
                report.event(Event::Log { step: id, line: &format!("overlayfs cannot be mounted in a user namespace here ({e}); using copied snapshots, which is slower") });
                spec.rootfs = Rootfs::copy_in(step, spec.rootfs.lower().to_vec())?;
                r = sandbox::run_observed(&b.exe, &spec, w1.into(), w2.into(), &started);
            }
        }
        drop(tracked);
        r
    });
    if b.schedule.failed() {
        return Err(Cancelled.into());
    }
    let finished = finished.map_err(sandbox_err)?;
    if let Some(command) = finished.command {
        report.event(Event::Ran { step: id, command });
    }
    if finished.outcome.code() != 0 {
        if !st.pending.is_empty() {
            // The layers below are committed first: a kept failure (and --debug's shell)
            // mounts their snapshots, not upper dirs that are about to move.
            st.settle()?;
            if let Rootfs::Overlay { lower, .. } = &mut spec.rootfs {
                *lower = lowers(b, &st.config, &st.layers)?;
            }
        }
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
        if b.opts.debug && terminal {
            debug_shell(st, id, &spec)?;
        }
        drop(held);
        // Kept for `strata debug` (best effort: the build's failure is what matters), unless
        // it had a secret or an SSH socket, or the store's disk is full (its files would hold
        // the space: a command that failed for want of it wrote all it could).
        let secret = crate::engine::debug::not_kept_because(&o.mounts, &spec);
        let full = b.store.is_full();
        let kept = if full {
            Err(anyhow!("the store's filesystem is full"))
        } else {
            crate::engine::debug::keep(
                b.store,
                step,
                crate::engine::debug::Failure {
                    spec: spec.clone(),
                    shell: st
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
                &o.mounts,
                &b.maps,
            )
        };
        if let (Err(e), None) = (&kept, secret) {
            b.report.event(Event::Log {
                step: id,
                line: &format!("not kept for strata debug: {e:#}"),
            });
        }
        let hint = match (b.opts.debug, terminal, kept.is_ok()) {
            _ if full => Some(crate::engine::error::NO_SPACE),
            (true, true, _) => None,
            (false, _, false) if secret.is_some() => Some(
                "strata build --debug opens a shell where this command failed (a step with a secret or an SSH socket is not kept for `strata debug` afterwards: what it wrote may hold the secret)",
            ),
            (false, _, true) => Some(
                "`strata debug` opens a shell where this command failed (or build with --debug)",
            ),
            (false, _, false) => {
                Some("strata build --debug opens a shell where this command failed")
            }
            (true, false, true) => Some(
                "--debug opens its shell when standard input is a terminal; `strata debug` opens it from one now",
            ),
            (true, false, false) => {
                Some("--debug opens its shell when standard input is a terminal")
            }
        };
        return Err(Error::CommandFailed {
            argv: shown,
            code: finished.outcome.code(),
            hint,
        }
        .into());
    }
    drop(held);
    let tar = step.join("layer.tar");
    if let (Rootfs::Overlay { lower, .. }, None) = (&spec.rootfs, b.opts.epoch) {
        // The upper dir, once the sandbox's mount points are out of it, is what the next
        // step mounts; the layer is written from it on a thread meanwhile (not with
        // SOURCE_DATE_EPOCH, whose layer has clamped times that the next step must see).
        exec::forget_created(&root.upper, &finished.created, lower, &b.maps)?;
        let diff = Spec {
            binds: Vec::new(),
            memory_files: Vec::new(),
            ..spec.clone()
        };
        let (step_dir, maps, store) = (step.to_path_buf(), b.maps.clone(), b.store.clone());
        let compression = b.opts.compression;
        let job = std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                layer_of(
                    &diff,
                    &step_dir,
                    &[],
                    &tar,
                    &maps,
                    None,
                    &store,
                    compression,
                )
            })
            .context("starting the thread that writes a RUN step's layer")?;
        return Ok(Ran::Committing(Commit::new(
            root.upper.clone(),
            step.to_path_buf(),
            b,
            job,
        )));
    }
    Ok(Ran::Done(layer_of(
        &spec,
        step,
        &finished.created,
        &tar,
        &b.maps,
        b.opts.epoch,
        b.store,
        b.opts.compression,
    )?))
}

/// The layer of the step `spec` ran in its scratch dir `step`, written to `tar` and moved
/// into the store; None when the step changed nothing (its history entry is marked empty).
#[allow(clippy::too_many_arguments)]
fn layer_of(
    spec: &Spec,
    step: &Path,
    created: &[String],
    tar: &Path,
    maps: &crate::sandbox::idmap::IdMaps,
    epoch: Option<i64>,
    store: &crate::store::Store,
    compression: crate::layer::Compression,
) -> anyhow::Result<Option<LayerRec>> {
    exec::diff_to_tar(spec, step, created, tar, maps, epoch)?;
    if fs_err::metadata(tar)?.len() <= 1024 {
        return Ok(None);
    }
    let known = exec::diff_digest(tar);
    Ok(Some(
        store.put_layer_file_hashed(tar, compression, known)?.into(),
    ))
}

/// `--debug`: an interactive shell (the SHELL's program) in the failed step's sandbox as
/// the command left it: the same root with its changes, mounts, environment, user and
/// working directory, on a pseudo-terminal of its own.
fn debug_shell(st: &StageState<'_, '_>, id: usize, failed: &Spec) -> anyhow::Result<()> {
    let shell = st
        .shell()
        .into_iter()
        .next()
        .unwrap_or_else(|| "/bin/sh".into());
    st.b.report.event(Event::Log {
        step: id,
        line: &format!("--debug: {shell} in the failed step; exit it to end the build"),
    });
    let spec = Spec {
        argv: vec![shell],
        stdin: true,
        tty: true,
        ..failed.clone()
    };
    sandbox::run_on_console(&st.b.exe, &spec, true, &|_| {}).map_err(sandbox_err)?;
    Ok(())
}

/// A mount's target, relative ones against WORKDIR.
fn mount_target(st: &StageState<'_, '_>, t: &Option<String>) -> anyhow::Result<String> {
    let t = t.clone().ok_or_else(|| anyhow!("--mount needs target="))?;
    Ok(if t.starts_with('/') {
        t
    } else {
        format!("{}/{t}", st.workdir().trim_end_matches('/'))
    })
}

/// The cache a cache mount uses: its `id=` (else its target) and, when it gives `uid=`, `gid=`
/// or `mode=`, those too. BuildKit keys a cache by its id and the mount's base, which with
/// those options is the directory they make (`setCacheUIDGID`): a mount with them never gets
/// the cache a plain mount (or one with other options) of the same id made, with its owner
/// and mode, but its own, made as asked.
fn cache_id(m: &MountSpec, target: &str) -> String {
    let id = m.id.clone().unwrap_or_else(|| target.to_string());
    if m.uid.is_none() && m.gid.is_none() && m.mode.is_none() {
        return id;
    }
    let mut opts = Vec::new();
    if let Some(u) = m.uid {
        opts.push(format!("uid={u}"));
    }
    if let Some(g) = m.gid {
        opts.push(format!("gid={g}"));
    }
    if let Some(mode) = m.mode {
        opts.push(format!("mode={mode:o}"));
    }
    format!("{id}#{}", opts.join(","))
}

/// The ids of the cache mounts of a RUN step, whether it runs or is cached: what
/// `--cache-to …,mounts=true` exports is every cache mount the build's steps declare.
pub(in crate::engine) fn cache_mount_ids(st: &StageState<'_, '_>, o: &RunOptions) -> Vec<String> {
    o.mounts
        .iter()
        .filter(|m| m.kind == MountKind::Cache)
        .filter_map(|m| Some(cache_id(m, &mount_target(st, &m.target).ok()?)))
        .collect()
}

/// Set up one RUN --mount.
fn mount(
    st: &mut StageState<'_, '_>,
    m: &MountSpec,
    step: &Path,
    i: usize,
    binds: &mut Vec<Bind>,
    env: &mut Vec<String>,
    held: &mut Held,
) -> anyhow::Result<()> {
    let b = st.b;
    let target = |t: &Option<String>| mount_target(st, t);
    match m.kind {
        MountKind::Bind => {
            let t = target(&m.target)?;
            let src = m.source.clone().unwrap_or_default();
            let readonly = m.readonly.unwrap_or(true);
            match &m.from {
                None => {
                    let root = b.opts.context.clone();
                    binds.push(host_bind(&root, &src, t, readonly, step, i)?);
                }
                Some(f) => match source::source_ref(st, f)? {
                    FromRef::Context(root) => {
                        binds.push(host_bind(&root, &src, t, readonly, step, i)?);
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
            let id = cache_id(m, &t);
            let dir = crate::engine::cache::cache_mount_dir(b.store, &id);
            fs_err::create_dir_all(dir.parent().unwrap_or(Path::new(".")))?;
            let mut host = dir.clone();
            if st.no_cache {
                // As BuildKit: a step built without the cache gets an empty cache mount of its
                // own, thrown away after the step; the kept one is left as it was.
                host = step.join(format!("no-cache{i}"));
                make_cache_dir(b, &host, m, &format!("creating an empty cache mount {id}"))?;
            } else {
                if !dir.exists() && !crate::engine::cache::remote::seed_mount(b, &id, &dir)? {
                    make_cache_dir(b, &dir, m, &format!("creating cache mount {id}"))?;
                }
            }
            if m.sharing != Sharing::Shared && !st.no_cache {
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
            // `source=`: a directory of the cache, resolved inside it (a symlink there cannot
            // lead out of it), as BuildKit mounts a cache's subpath.
            let sub = m
                .source
                .as_deref()
                .map(|s| crate::fsx::clean(&format!("/{s}")))
                .filter(|s| s != "/");
            binds.push(Bind {
                host,
                target: t,
                readonly: m.readonly.unwrap_or(false),
                source: match sub {
                    Some(sub) => BindSource::Context { sub },
                    // No uid/gid: the cache is the step user's (BuildKit keeps it root's).
                    None => BindSource::Cache {
                        follow_user: m.uid.is_none() && m.gid.is_none(),
                    },
                },
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
            // As BuildKit's dispatchSecret: `source=` names the secret over `id=`.
            let id = m
                .source
                .clone()
                .or_else(|| m.id.clone())
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
                        .map_err(|_| anyhow!("secret {id}: environment variable {v} is not set"))?
                        .into_bytes(),
                ),
                None => None,
            };
            let Some(value) = value else {
                if m.required {
                    return Err(Error::MissingSecret { id }.into());
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
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                },
            });
            held.memory.push(f);
        }
        MountKind::Ssh => {
            let id = m.id.clone().unwrap_or_else(|| "default".into());
            let sock = match b.opts.ssh.get(&id) {
                Some(p) => p.clone(),
                None if m.required => return Err(Error::MissingSsh { id }.into()),
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
    let mut from =
        crate::fsx::open_beneath(root, &rel).map_err(|e| anyhow!("mount source \"{src}\": {e}"))?;
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

/// A path inside `root`, symlinks resolved as if `root` were `/`.
fn in_root(root: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let clean = crate::fsx::clean(&format!("/{rel}"));
    let r = crate::fsx::resolve_in_root(root, Path::new(clean.trim_start_matches('/')), 0)?;
    let p = root.join(r);
    if std::fs::symlink_metadata(&p).is_err() {
        bail!("mount source \"{rel}\": not found in {}", root.display());
    }
    Ok(p)
}
