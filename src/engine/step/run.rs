//! RUN: what a step reads besides its instruction (its network, the sources of its bind
//! mounts), and on a miss the command in the sandbox on an overlay of the layers below, with
//! its mounts (bind, cache, tmpfs, secret, ssh), then its changes as a layer, written on a
//! thread while the next steps run on its upper dir ([`Commit`]). A failure keeps the step for
//! `strata debug` and, with `--debug` on a terminal, opens a shell in it.

use std::io::BufRead;
use std::path::{Path, PathBuf};

pub(in crate::engine) use super::mounts::cache_mount_ids;
use super::mounts::{self, Held};
use super::source::{self, FromRef};
use crate::dockerfile::{self, Command, CommandLine, MountKind, RunNetwork, RunOptions};
use crate::engine::cache::key::Inputs;
use crate::engine::cache::LayerRec;
use crate::engine::error::{BuildError, Cancelled, Doing as _, Error};
use crate::engine::exec::{self, remove_tree};
use crate::engine::report::Event;
use crate::engine::state::{first_line, lowers, step_dir, Commit, Ran, StageCx, StageView};
use crate::engine::Build;
use crate::sandbox::{self, Bind, BindSource, Network, Rootfs, Spec};

/// What the RUN step reads: its effective network (a setting of its key) and the content of
/// its bind mounts' sources.
pub(in crate::engine) fn inputs(
    st: StageView<'_, '_, '_>,
    o: &RunOptions,
) -> Result<Inputs, BuildError> {
    let mut inputs = Inputs {
        settings: vec![format!(
            "network={}",
            crate::engine::cache::key::network(&network(st, o)?)
        )],
        ..Default::default()
    };
    // BUILDKIT_SANDBOX_HOSTNAME changes what the step sees (as it changes BuildKit's key).
    if let Some(h) = st
        .b()
        .plan
        .options
        .build_args
        .get("BUILDKIT_SANDBOX_HOSTNAME")
    {
        inputs.settings.push(format!("hostname={h}"));
    }
    // What --add-host, --ulimit and --shm-size change in the step (as BuildKit keys its
    // ExecOp's extra hosts, limits and shm size); nothing when they are not given, so other
    // builds keep their keys.
    let opts = st.b().opts;
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
    st: StageView<'_, '_, '_>,
    o: &RunOptions,
) -> Result<Option<Inputs>, BuildError> {
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
fn network(st: StageView<'_, '_, '_>, o: &RunOptions) -> Result<Network, BuildError> {
    Ok(match o.network {
        None | Some(RunNetwork::Default) => st.b().opts.network,
        Some(RunNetwork::None) => Network::None,
        Some(RunNetwork::Host) if st.b().opts.allow_host_network => Network::Host,
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
    cx: &mut StageCx<'_, '_, '_>,
    r: &dockerfile::Run,
    o: &RunOptions,
) -> Result<Ran, BuildError> {
    let b = cx.b();
    let lower = cx.view().lowers_now()?;
    let step = step_dir(b, "run")?;
    let result = run_in(cx, r, o, lower, &step);
    if let Ok(Ran::Committing(_)) = result {
        // The commit owns the scratch dir now.
        return result;
    }
    let cleanup = remove_tree(&step, &b.maps);
    let out = result?;
    cleanup?;
    Ok(out)
}

/// Run the step in its scratch dir `step` on the layers `lower`: its mounts, command and
/// environment in the sandbox, then its layer (or its failure, kept for `strata debug`).
fn run_in(
    cx: &mut StageCx<'_, '_, '_>,
    r: &dockerfile::Run,
    o: &RunOptions,
    lower: Vec<PathBuf>,
    step: &Path,
) -> Result<Ran, BuildError> {
    let (b, id, cmd) = (cx.b(), cx.start(), cx.cmd());
    let st = cx.view();
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
    let mut env = environment(st);
    let mut binds = Vec::new();
    let mut held = Held::default();
    for (i, m) in o.mounts.iter().enumerate() {
        mounts::mount(st, m, step, i, &mut binds, &mut env, &mut held)?;
    }
    let argv = command_line(st, r, step, &mut binds)?;
    let shown = shown(&argv);
    let argv = long_script(r, argv, step, &mut binds)?;
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
        platform: st.foreign(),
        tty: false,
        tty_size: None,
        rlimits: b.opts.ulimits.clone(),
        shm_size: b.opts.shm_size,
        ports: None,
        maps: b.maps.clone(),
    };
    let finished = run_logged(b, id, step, &mut spec)?;
    if b.schedule.failed() {
        return Err(Cancelled.into());
    }
    let finished = finished.map_err(BuildError::from)?;
    if let Some(command) = finished.command {
        b.report.event(Event::Ran { step: id, command });
    }
    let code = finished.outcome.code();
    if code != 0 {
        if st.has_pending() {
            // The layers below are committed first: a kept failure (and --debug's shell)
            // mounts their snapshots, not upper dirs that are about to move.
            cx.settle()?;
            if let Rootfs::Overlay { lower, .. } = &mut spec.rootfs {
                *lower = lowers(b, cx.view().config(), cx.view().layers())?;
            }
        }
        let st = cx.view();
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
        if b.opts.debug && terminal {
            debug_shell(st, id, &spec)?;
        }
        drop(held);
        let failed = Failed {
            id,
            cmd,
            o,
            shown,
            code,
            terminal,
        };
        return Err(keep_failed(st, step, &spec, failed).into());
    }
    drop(held);
    commit(b, step, &spec, &root.upper, &finished.created)
}

/// The environment of a RUN step: the stage's ENV, the ARGs it sees, the proxy variables of
/// the build args and SOURCE_DATE_EPOCH.
fn environment(st: StageView<'_, '_, '_>) -> Vec<String> {
    let b = st.b();
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
    env
}

/// The argv of a RUN step: its exec form as is, its shell form after the SHELL, with its
/// heredocs; a single heredoc with a `#!` line runs as a file, bound into the sandbox.
fn command_line(
    st: StageView<'_, '_, '_>,
    r: &dockerfile::Run,
    step: &Path,
    binds: &mut Vec<Bind>,
) -> Result<Vec<String>, BuildError> {
    let s = match &r.command {
        CommandLine::Exec(v) => return Ok(v.clone()),
        CommandLine::Shell(s) => s,
    };
    let mut argv = st.shell();
    let single = r.heredocs.len() == 1
        && s.trim()
            .trim_start_matches("<<")
            .trim_start_matches('-')
            .trim_matches(['"', '\''])
            == r.heredocs[0].name;
    if !single {
        let mut text = s.clone();
        for h in &r.heredocs {
            text.push('\n');
            text.push_str(&h.content);
            text.push_str(&h.name);
        }
        argv.push(text);
        return Ok(argv);
    }
    let body = if r.heredocs[0].chomp {
        r.heredocs[0].chomped()
    } else {
        r.heredocs[0].content.clone()
    };
    if !body.starts_with("#!") {
        argv.push(body);
        return Ok(argv);
    }
    // A script with its own interpreter: run the file.
    let script = step.join("heredoc");
    fs_err::write(&script, &body)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let target = format!("/dev/.strata-heredoc-{}", r.heredocs[0].name);
    binds.push(Bind {
        host: script,
        target: target.clone(),
        readonly: true,
        source: BindSource::Host,
    });
    Ok(vec![target])
}

/// What the error of a failed step shows: the command, cut short past 2 KiB (a heredoc of
/// megabytes is not repeated in the error).
fn shown(argv: &[String]) -> String {
    let all = argv.join(" ");
    match all.char_indices().nth(2048) {
        Some((i, _)) => format!("{} … ({} more bytes)", &all[..i], all.len() - i),
        None => all,
    }
}

/// A script longer than Linux passes in one argument (a long heredoc: `sh -c` would fail
/// with E2BIG, as under BuildKit) runs from a file the shell sources, as it would have run
/// it with -c; a file of any size.
fn long_script(
    r: &dockerfile::Run,
    argv: Vec<String>,
    step: &Path,
    binds: &mut Vec<Bind>,
) -> Result<Vec<String>, BuildError> {
    match (&r.command, argv.last()) {
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
            Ok(a)
        }
        _ => Ok(argv),
    }
}

/// Run `spec` in the sandbox, its output lines reported as the step's log, the child tracked
/// so that a failing build kills it; on a refused overlay, again on copied snapshots. The
/// outer error is the pipe's; the inner one the sandbox's.
fn run_logged(
    b: &Build,
    id: usize,
    step: &Path,
    spec: &mut Spec,
) -> Result<Result<sandbox::Finished, sandbox::Error>, BuildError> {
    let (reader, writer) = std::io::pipe()?;
    let writer2 = writer.try_clone()?;
    let report = &*b.report;
    Ok(std::thread::scope(|s| {
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
        let mut r = sandbox::run_observed(&b.exe, spec, writer.into(), writer2.into(), &started);
        if let Err(e) = &r {
            if matches!(spec.rootfs, Rootfs::Overlay { .. }) && sandbox::overlay_refused(e) {
                report.event(Event::Log { step: id, line: &format!("overlayfs cannot be mounted in a user namespace here ({e}); using copied snapshots, which is slower") });
                spec.rootfs = Rootfs::copy_in(step, spec.rootfs.lower().to_vec())?;
                r = sandbox::run_observed(&b.exe, spec, w1.into(), w2.into(), &started);
            }
        }
        drop(tracked);
        r
    }))
}

/// Why a failed step was not kept for `strata debug`.
#[derive(Debug, thiserror::Error)]
enum NotKept {
    #[error("the store's filesystem is full")]
    Full,
    #[error(transparent)]
    Keep(BuildError),
}

/// A RUN command that exited with a code other than 0.
struct Failed<'a> {
    id: usize,
    cmd: &'a Command,
    o: &'a RunOptions,
    /// The command as its error shows it.
    shown: String,
    code: i32,
    /// Whether standard input is a terminal (where --debug opens its shell).
    terminal: bool,
}

/// The error of a failed RUN step, with its hint, once the step is kept for `strata debug`
/// (best effort: the build's failure is what matters), unless it had a secret or an SSH
/// socket, or the store's disk is full (its files would hold the space: a command that failed
/// for want of it wrote all it could).
fn keep_failed(st: StageView<'_, '_, '_>, step: &Path, spec: &Spec, f: Failed<'_>) -> Error {
    let b = st.b();
    let secret = crate::engine::debug::not_kept_because(&f.o.mounts, spec);
    let full = b.store.is_full();
    let kept = if full {
        Err(NotKept::Full)
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
                    f.cmd.start_line,
                    first_line(&f.cmd.original)
                ),
                exit_code: f.code,
                when: crate::oci::now_secs(),
            },
            &f.o.mounts,
            &b.maps,
        )
        .map_err(NotKept::Keep)
    };
    if let (Err(e), None) = (&kept, secret) {
        b.report.event(Event::Log {
            step: f.id,
            line: &format!("not kept for strata debug: {e:#}"),
        });
    }
    let hint = match (b.opts.debug, f.terminal, kept.is_ok()) {
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
    Error::CommandFailed {
        argv: f.shown,
        code: f.code,
        hint,
    }
}

/// The layer of a step that ran: under an overlay (without SOURCE_DATE_EPOCH) written on a
/// thread while the next steps run on its upper dir, else here.
fn commit(
    b: &Build,
    step: &Path,
    spec: &Spec,
    upper: &Path,
    created: &[String],
) -> Result<Ran, BuildError> {
    let tar = step.join("layer.tar");
    if let (Rootfs::Overlay { lower, .. }, None) = (&spec.rootfs, b.opts.epoch) {
        // The upper dir, once the sandbox's mount points are out of it, is what the next
        // step mounts; the layer is written from it on a thread meanwhile (not with
        // SOURCE_DATE_EPOCH, whose layer has clamped times that the next step must see).
        exec::forget_created(upper, created, lower, &b.maps)?;
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
            .doing("starting the thread that writes a RUN step's layer")?;
        return Ok(Ran::Committing(Commit::new(
            upper.to_path_buf(),
            step.to_path_buf(),
            b,
            job,
        )));
    }
    Ok(Ran::Done(layer_of(
        spec,
        step,
        created,
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
) -> Result<Option<LayerRec>, BuildError> {
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
fn debug_shell(st: StageView<'_, '_, '_>, id: usize, failed: &Spec) -> Result<(), BuildError> {
    let shell = st
        .shell()
        .into_iter()
        .next()
        .unwrap_or_else(|| "/bin/sh".into());
    st.b().report.event(Event::Log {
        step: id,
        line: &format!("--debug: {shell} in the failed step; exit it to end the build"),
    });
    let spec = Spec {
        argv: vec![shell],
        stdin: true,
        tty: true,
        ..failed.clone()
    };
    sandbox::run_on_console(&st.b().exe, &spec, true, &|_| {}).map_err(BuildError::from)?;
    Ok(())
}
