//! `strata run` and `strata doctor`. The hooks the sandbox child runs inside the user namespace
//! live in the library (`strata::engine::exec`), shared with `strata build`.

use std::path::Path;

use anyhow::{bail, Context};
use strata::engine::exec::{self, exe, remove_tree, sandbox_err, snapshots};
use strata::engine::hooks;
use strata::oci::{ContainerConfig, Digest};
use strata::sandbox::{self, idmap, Bind, HookSpec, Network, Rootfs, Spec};
use strata::store::Store;

#[derive(Debug, clap::Args)]
#[command(override_usage = "strata run [OPTIONS] IMAGE [COMMAND [ARG]...]")]
pub struct RunArgs {
    /// Remove the container's writable layer when it exits (always done; accepted for docker
    /// compatibility).
    #[arg(long)]
    rm: bool,
    /// Set an environment variable (K=V, or K to take the value from this environment).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Network: default (a network namespace of its own with outbound access, no route to the
    /// host's loopback), none (an empty network namespace) or host (the host's network).
    #[arg(long, default_value = "default", value_parser = ["default", "none", "host"])]
    network: String,
    /// Bind-mount a host path: HOST:CONTAINER[:ro].
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    volumes: Vec<String>,
    /// Run as this user (name, uid, name:group or uid:gid) instead of the image's USER.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory instead of the image's WORKDIR.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Publish a port of the process on the host: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp]
    /// (through the run's own network; on 127.0.0.1 unless an address is given).
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CTR")]
    publish: Vec<String>,
    /// Give the process a terminal (a pseudo-terminal of the sandbox's own /dev/pts, with
    /// strata's window size and job control; TERM from strata's environment, xterm when unset,
    /// unless the image or -e sets it); with -i, what is typed goes to it.
    #[arg(short = 't', long)]
    tty: bool,
    /// Pass SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1 and SIGUSR2 that strata receives on to
    /// the process, as docker's --sig-proxy; with false, such a signal ends strata and kills
    /// the process.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    sig_proxy: bool,
    /// Seconds a process may take to end after the first SIGINT, SIGTERM or SIGQUIT it was
    /// passed before it is killed (a second SIGINT, or a second SIGTERM, kills it at once); -1 waits as
    /// long as it takes.
    #[arg(
        long,
        default_value_t = 10,
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    stop_timeout: i64,
    /// Keep standard input open: the process reads strata's stdin (`echo 'print(6*7)' |
    /// strata run -i app python -`). Without it the process gets /dev/null, as a RUN step.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Run this program instead of the image's ENTRYPOINT, and without its CMD (as `docker run
    /// --entrypoint`); an empty string runs the command alone.
    #[arg(long, value_name = "PROGRAM")]
    entrypoint: Option<String>,
    /// A line of /etc/hosts: HOST:IP (repeatable).
    #[arg(long = "add-host", value_name = "HOST:IP", value_parser = super::parse_add_host)]
    add_hosts: Vec<(String, String)>,
    /// A resource limit: NAME=SOFT[:HARD] as docker's (nofile=1024:4096; -1 is unlimited).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]", value_parser = strata::sandbox::Rlimit::parse)]
    ulimits: Vec<strata::sandbox::Rlimit>,
    /// The size of /dev/shm (default 64m).
    #[arg(long = "shm-size", value_name = "SIZE", value_parser = super::parse_shm_size)]
    shm_size: Option<u64>,
    /// The platform's image of an image index (os/arch[/variant]; default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Save the container's changes as a new image (one layer on top), like `docker commit`.
    #[arg(long, value_name = "NAME[:TAG]")]
    commit: Option<String>,
    /// The image, then the command and its arguments, replacing the image's CMD (ENTRYPOINT
    /// stays). Everything after IMAGE is the container's, flags included: `strata run app
    /// --version` passes --version to the app.
    #[arg(
        value_names = ["IMAGE", "COMMAND"],
        required = true,
        num_args = 1..,
        trailing_var_arg = true
    )]
    image_and_command: Vec<String>,
}

impl RunArgs {
    fn image(&self) -> &str {
        &self.image_and_command[0]
    }

    fn command(&self) -> &[String] {
        &self.image_and_command[1..]
    }
}

pub fn run(store: &Store, a: RunArgs) -> anyhow::Result<i32> {
    // First, before any thread exists: the forwarded signals are blocked in every thread and
    // taken by the forwarder's.
    let forward = if a.sig_proxy {
        Some(super::forward::Forwarder::install(
            u64::try_from(a.stop_timeout)
                .ok()
                .map(std::time::Duration::from_secs),
        )?)
    } else {
        None
    };
    let maps = idmap::for_current_user();
    // The sandbox's user namespace is made while the image is resolved.
    sandbox::prepare(&exe()?, &maps);
    // Keep prune away from this run's step directory and snapshots while it runs.
    let _writer = store.writer_lock()?;
    // The store's image, or pulled from its registry as `docker run` does.
    let progress = std::sync::Arc::new(super::progress::Progress::new(
        super::progress::Mode::parse("auto", false).unwrap_or(super::progress::Mode::Plain),
    ));
    let img = strata::registry::ImageSource::new(
        store,
        strata::registry::PullPolicy::Missing,
        super::store_cmds::platform_arg(a.platform.as_deref())?
            .unwrap_or_else(strata::oci::Platform::host),
        progress,
    )
    .image(a.image())?
    .record;
    let lowers = snapshots(
        store,
        &exe()?,
        &img.config.rootfs.diff_ids,
        &img.manifest.layers,
        &maps,
    )?;
    let cfg = img.config.config.clone().unwrap_or_default();
    let argv = argv(&a, &cfg)?;
    let hostname = img.id().short().to_string();
    let env = environment(&a, &cfg, &hostname);
    let binds = volumes(&a)?;

    let step = store
        .tmp_dir()
        .join(format!("run-{}-{}", strata::store::owner_tag(), hostname));
    let network = match a.network.as_str() {
        "none" => Network::None,
        "host" => Network::Host,
        _ => Network::Private,
    };
    let ports = ports(&a, network)?;
    let root = exec::step_root(
        &step,
        lowers.into_iter().rev().collect(),
        &hostname,
        network,
    )?;
    exec::add_hosts(&root, &a.add_hosts)?;
    let copies = sandbox::use_copies();
    let overlay = Rootfs::Overlay {
        lower: root.lower.clone(),
        upper: root.upper,
        work: root.work,
        merged: root.merged,
    };
    if copies {
        eprintln!("note: using copied snapshots (STRATA_SNAPSHOTTER=copy), which is slower than overlayfs");
    }
    let mut spec = Spec {
        rootfs: if copies {
            Rootfs::copy_in(&step, root.lower.clone())?
        } else {
            overlay
        },
        argv,
        env,
        user: a.user.clone().or(cfg.user.clone()).unwrap_or_default(),
        workdir: a
            .workdir
            .clone()
            .or(cfg.working_dir.clone())
            .unwrap_or_else(|| "/".into()),
        network,
        hostname,
        etc_files: root.etc_files,
        binds,
        maps: maps.clone(),
        memory_files: Vec::new(),
        stdin: a.interactive,
        platform: None,
        tty: a.tty,
        tty_size: None,
        rlimits: a.ulimits.clone(),
        shm_size: a.shm_size,
        ports: (!ports.is_empty()).then(|| sandbox::net::Forwards {
            socket: step.join("slirp.sock"),
            ports,
        }),
    };
    let _ = a.rm;
    let exe = exe()?;
    let pid1 = |pid: u32| {
        if let Some(f) = &forward {
            f.started(pid)
        }
    };
    let launch = |spec: &Spec| {
        if a.tty {
            sandbox::run_on_console(&exe, spec, a.interactive, &pid1)
        } else {
            sandbox::run_forwarding(
                &exe,
                spec,
                sandbox::inherit(1)?,
                sandbox::inherit(2)?,
                &pid1,
            )
        }
    };
    let mut result = launch(&spec);
    if let Err(e) = &result {
        if matches!(spec.rootfs, Rootfs::Overlay { .. }) && sandbox::overlay_refused(e) {
            eprintln!("note: overlayfs cannot be mounted in a user namespace here ({e}); using copied snapshots, which is slower");
            spec.rootfs = Rootfs::copy_in(&step, spec.rootfs.lower().to_vec())?;
            result = launch(&spec);
        }
    }
    if let Some(f) = &forward {
        f.ended();
    }
    let committed = match (&result, &a.commit) {
        (Ok(f), Some(name)) => Some(commit(store, &img, &spec, &step, &f.created, name, &maps)),
        _ => None,
    };
    let cleanup = remove_tree(&step, &maps);
    let finished = result.map_err(sandbox_err)?;
    if let Some(c) = committed {
        println!("{}", c?);
    }
    cleanup?;
    Ok(finished.outcome.code())
}

/// The command: the image's ENTRYPOINT (or --entrypoint, which drops the image's CMD, as
/// Docker) and the given command or the image's CMD.
fn argv(a: &RunArgs, cfg: &ContainerConfig) -> anyhow::Result<Vec<String>> {
    let (entrypoint, default_cmd) = match &a.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (
            cfg.entrypoint.clone().unwrap_or_default(),
            cfg.cmd.clone().unwrap_or_default(),
        ),
    };
    let mut argv = entrypoint;
    if a.command().is_empty() {
        argv.extend(default_cmd);
    } else {
        argv.extend(a.command().iter().cloned());
    }
    if argv.is_empty() {
        bail!(
            "image {} has no ENTRYPOINT or CMD: give a command (strata run {} sh)",
            a.image(),
            a.image()
        );
    }
    Ok(argv)
}

/// The image's environment with a PATH, the -e values over it, TERM for a terminal and the
/// HOSTNAME.
fn environment(a: &RunArgs, cfg: &ContainerConfig, hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = cfg.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", strata::oci::DEFAULT_PATH));
    }
    for e in &a.env {
        let kv = match e.split_once('=') {
            Some(_) => e.clone(),
            None => format!("{e}={}", std::env::var(e).unwrap_or_default()),
        };
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    // A terminal's TERM, as docker sets it: the caller's, xterm when unset.
    if a.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        let term = std::env::var("TERM")
            .ok()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "xterm".into());
        env.push(format!("TERM={term}"));
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    env
}

/// -v HOST:CONTAINER[:ro|rw] as binds, the host path made absolute.
fn volumes(a: &RunArgs) -> anyhow::Result<Vec<Bind>> {
    let mut binds = Vec::new();
    for v in &a.volumes {
        let parts: Vec<&str> = v.split(':').collect();
        let (host, target, ro) = match parts.as_slice() {
            [h, t] => (*h, *t, false),
            [h, t, "ro"] => (*h, *t, true),
            [h, t, "rw"] => (*h, *t, false),
            _ => bail!("invalid volume \"{v}\": expected HOST:CONTAINER[:ro]"),
        };
        let host = std::fs::canonicalize(host)
            .with_context(|| format!("volume \"{v}\": host path {host}"))?;
        if !target.starts_with('/') {
            bail!("invalid volume \"{v}\": the container path must be absolute");
        }
        binds.push(Bind {
            host,
            target: target.to_string(),
            readonly: ro,
            source: Default::default(),
        });
    }
    Ok(binds)
}

/// -p: the ports published through the run's own network (none with another network).
fn ports(a: &RunArgs, network: Network) -> anyhow::Result<Vec<sandbox::net::PortForward>> {
    let ports = a
        .publish
        .iter()
        .map(|p| sandbox::net::PortForward::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !ports.is_empty() && network != Network::Private {
        bail!(
            "-p publishes a port of the run's own network: not with --network {}",
            a.network
        );
    }
    Ok(ports)
}

/// Whether `path` (or the nearest directory of it that exists) is on an overlay filesystem.
fn on_overlay(path: &Path) -> bool {
    let mut p = path;
    loop {
        if let Ok(st) = rustix::fs::statfs(p) {
            return st.f_type == 0x794c7630;
        }
        match p.parent() {
            Some(q) => p = q,
            None => return false,
        }
    }
}

pub fn doctor() -> anyhow::Result<i32> {
    let mut bad = 0;
    let env = sandbox::probe::environment();
    println!("ok   environment: {env}");
    for c in sandbox::probe::all_checks()
        .into_iter()
        .chain(sandbox::binfmt::doctor_checks())
    {
        let mark = match (c.ok, c.optional) {
            (true, _) => "ok  ",
            (false, true) => "WARN",
            (false, false) => "FAIL",
        };
        println!("{mark} {}: {}", c.name, c.detail);
        if !c.ok {
            if !c.optional {
                bad += 1;
            }
            if let Some(f) = c.fix {
                println!("     fix: {f}");
            }
        }
    }
    // The real thing: a user namespace with the maps strata would use, and an overlay in it.
    let maps = idmap::for_current_user();
    let tmp = std::env::temp_dir().join(format!("strata-doctor-{}", std::process::id()));
    let ov = HookSpec {
        task: serde_json::to_value(hooks::Hook::OverlayTest { dir: tmp.clone() })?,
        maps: maps.clone(),
    };
    match sandbox::run_hook(&exe()?, &ov) {
        Ok(sandbox::Outcome::Exited(0)) => {
            println!("ok   overlay in a user namespace: mounted (userxattr)")
        }
        Ok(o) => {
            bad += 1;
            println!("FAIL overlay in a user namespace: ended with {o:?}");
        }
        Err(e) => {
            // Builds still work: RUN steps then copy their snapshots (slower).
            println!("WARN overlay in a user namespace: {e}; RUN steps will copy snapshots instead (slower)");
            let store = strata::store::default_root().unwrap_or_default();
            if on_overlay(&store) {
                println!("     fix: the store ({}) is on an overlay (a container's root): overlayfs cannot write on one; put STRATA_ROOT on a volume or a tmpfs (docker run -v strata:/store -e STRATA_ROOT=/store, or --tmpfs /store:exec)", store.display());
            } else {
                println!("     fix: Linux 5.11+ mounts overlayfs in user namespaces; a filesystem that refuses it as an upper layer (NFS, some FUSE) needs STRATA_ROOT elsewhere");
            }
        }
    }
    let _ = remove_tree(&tmp, &maps);
    let h = HookSpec {
        task: serde_json::to_value(hooks::Hook::Noop)?,
        maps: maps.clone(),
    };
    match sandbox::run_hook(&exe()?, &h) {
        Ok(sandbox::Outcome::Exited(0)) => {
            println!(
                "ok   user namespace: created, uids {}",
                idmap::describe(&maps.uid)
            )
        }
        Ok(o) => {
            bad += 1;
            println!("FAIL user namespace: the test ended with {o:?}");
        }
        Err(e) => {
            bad += 1;
            println!("FAIL user namespace: {e}");
            for a in e.advice() {
                println!("     fix: {a}");
            }
        }
    }
    // A RUN step's own /proc: refused in a container whose /proc has masked paths.
    let tmp = std::env::temp_dir().join(format!("strata-doctor-proc-{}", std::process::id()));
    let pt = HookSpec {
        task: serde_json::to_value(hooks::Hook::ProcTest { dir: tmp.clone() })?,
        maps: maps.clone(),
    };
    let proc_host = std::env::var("STRATA_PROC").as_deref() == Ok("host");
    match sandbox::run_hook(&exe()?, &pt) {
        Ok(sandbox::Outcome::Exited(0)) => {
            println!("ok   /proc of a new PID namespace: mounted")
        }
        Ok(o) => {
            bad += 1;
            println!("FAIL /proc of a new PID namespace: the test ended with {o:?}");
        }
        Err(e) if proc_host => println!(
            "WARN /proc of a new PID namespace: {e}; STRATA_PROC=host: RUN steps get the container's /proc"
        ),
        Err(e) => {
            bad += 1;
            println!("FAIL /proc of a new PID namespace: {e}");
            for f in sandbox::probe::proc_fixes() {
                println!("     fix: {f}");
            }
        }
    }
    let _ = std::fs::remove_dir(&tmp);
    registries();
    println!(
        "{}",
        if bad == 0 {
            "strata can build here."
        } else {
            "strata cannot build here until the failures above are fixed."
        }
    );
    Ok(if bad == 0 { 0 } else { 1 })
}
/// The registries registries.conf names (each `[[registry]]` location and its mirrors): does
/// each answer `GET /v2/`? A registry that does not is a warning (builds from local images
/// still work), with what to do next. Only those named there are tried: doctor sends nothing
/// anywhere else (Docker Hub included) on its own.
fn registries() {
    let reg = match strata::registry::Registry::from_environment() {
        Ok(r) => r,
        Err(e) => {
            println!("WARN registries.conf: {e}");
            return;
        }
    };
    let mut reg = reg;
    reg.retry.attempts = 1;
    reg.timeouts.stall = std::time::Duration::from_secs(5);
    let mut places: Vec<(String, bool, String)> = Vec::new();
    for r in &reg.policy.rules {
        if r.blocked {
            continue;
        }
        for m in &r.mirrors {
            places.push((
                m.location.clone(),
                m.insecure,
                format!("mirror of {}", r.prefix),
            ));
        }
        places.push((
            r.location.clone(),
            r.insecure,
            if r.location == r.prefix {
                "registry".to_string()
            } else {
                format!("registry for {}", r.prefix)
            },
        ));
    }
    if places.is_empty() {
        println!(
            "ok   registries: registries.conf names none (a pull goes to the registry its reference names; `strata pull` says whether it answers)"
        );
        return;
    }
    for (location, insecure, what) in places {
        match reg.probe(&location, insecure) {
            Ok(base) => println!("ok   {what} {location}: answers at {base}/v2/"),
            Err(e) => {
                println!("WARN {what} {location}: {e}");
                println!(
                    "     fix: check the address and the network (HTTPS_PROXY); until it answers, pulls through it fail: images saved elsewhere load with `strata load -i FILE`"
                );
            }
        }
    }
}

/// The upper dir as a layer on top of `img`, named `name`.
fn commit(
    store: &Store,
    img: &strata::store::ImageRecord,
    spec: &Spec,
    step: &Path,
    created: &[String],
    name: &str,
    maps: &idmap::IdMaps,
) -> anyhow::Result<Digest> {
    let name = strata::store::ImageRef::parse(name)?;
    let tar = step.join("layer.tar");
    exec::diff_to_tar(spec, step, created, &tar, maps, None)?;
    let info = store.put_layer_file(&tar, strata::layer::Compression::GZIP)?;
    let mut config = img.config.clone();
    config.rootfs.diff_ids.push(info.diff_id.clone());
    let now = strata::oci::rfc3339(strata::oci::now_secs());
    config.created = Some(now.clone());
    config.history.push(strata::oci::History {
        created: Some(now),
        created_by: Some(format!("strata run {}", spec.argv.join(" "))),
        comment: Some("strata run --commit".into()),
        ..Default::default()
    });
    let mut layers = img.manifest.layers.clone();
    layers.push(strata::oci::Descriptor::new(
        info.media_type,
        info.digest,
        info.size,
    ));
    Ok(store.add_image(&config, &layers, &[name])?.config_digest)
}

#[derive(Debug, clap::Args)]
pub struct DebugArgs {
    /// Run this command in the failed step instead of an interactive shell (no terminal
    /// needed): `strata debug -- cat /tmp/build.log`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `strata debug`: a shell (or a command) in the last failed RUN step, as the command left it,
/// with its mounts, environment, user and working directory.
pub fn debug(store: &Store, a: DebugArgs) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    use strata::sandbox::BindSource;
    // Keep prune away from the kept step and the snapshots below it.
    let _writer = store.writer_lock()?;
    let Some((_, failure)) = strata::engine::debug::last(store)? else {
        bail!("no failed RUN step is kept in this store: `strata debug` opens a shell in the last one that failed (prune removes it)");
    };
    let mut spec = failure.spec;
    let lower = spec.rootfs.lower().to_vec();
    if let Some(gone) = lower.iter().find(|l| !l.exists()) {
        bail!(
            "the layers {} ran on were pruned since it failed ({} is gone): build again to fail again",
            failure.step,
            gone.display()
        );
    }
    let interactive = a.command.is_empty();
    if interactive && !std::io::stdin().is_terminal() {
        bail!(
            "strata debug opens an interactive shell ({}) in {}, and standard input is not a terminal: run it from one, or give a command: strata debug -- ls -l /",
            failure.shell,
            failure.step
        );
    }
    eprintln!(
        "strata debug: {} (exit code {}, {}); {}",
        failure.step,
        failure.exit_code,
        super::store_cmds::ago_secs(strata::oci::now_secs() - failure.when),
        if interactive {
            format!(
                "{} in its filesystem as it left it; exit to leave",
                failure.shell
            )
        } else {
            "running the command in its filesystem as it left it".into()
        }
    );
    // A mount whose host side is gone since (an SSH agent's socket, a pruned cache mount) is
    // left out, and said so.
    spec.binds.retain(|b| {
        let there =
            !matches!(b.source, BindSource::Host | BindSource::Cache { .. }) || b.host.exists();
        if !there {
            eprintln!(
                "note: {} is not mounted: {} is gone since the build",
                b.target,
                b.host.display()
            );
        }
        there
    });
    let exe = exe()?;
    let finished = if interactive {
        spec.argv = vec![failure.shell.clone()];
        spec.stdin = true;
        spec.tty = true;
        sandbox::run_on_console(&exe, &spec, true, &|_| {})
    } else {
        spec.argv = a.command.clone();
        spec.stdin = true;
        spec.tty = false;
        sandbox::run(&exe, &spec, sandbox::inherit(1)?, sandbox::inherit(2)?)
    };
    Ok(finished.map_err(sandbox_err)?.outcome.code())
}
