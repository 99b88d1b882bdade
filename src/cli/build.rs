//! `strata build`: the flags of `docker buildx build` where they overlap.

use super::render::INPUT;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::progress;
use anyhow::{anyhow, bail, Context};
use strata::dockerfile;
use strata::engine::{
    self, BuildContext, BuildOptions, NamedContext, Output, Secret, SecretSource,
};
use strata::oci::Platform;
use strata::plan;
use strata::sandbox::Network;
use strata::store::{ImageRef, Store};

use super::render;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Name (and optionally tag) the image: NAME[:TAG]; repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Build this stage (and what it needs) instead of the last one.
    #[arg(long)]
    target: Option<String>,
    /// Set a build-time variable; `K` alone takes the value from the environment.
    #[arg(long = "build-arg", value_name = "K[=V]", value_parser = super::parse_build_arg)]
    build_args: Vec<(String, Option<String>)>,
    /// Do not use the cache for any step.
    #[arg(long)]
    no_cache: bool,
    /// Do not use the cache for these stages (repeatable, or comma-separated).
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    no_cache_filter: Vec<String>,
    /// Set a label on the image: K=V; repeatable.
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// Network of RUN steps: default (a network namespace of their own with outbound access,
    /// no route to the host's loopback), none, or host (needs --allow network.host).
    #[arg(long, default_value = "default", value_parser = ["default", "none", "host"])]
    network: String,
    /// Entitlements: network.host lets RUN steps use the host's network.
    #[arg(long = "allow", value_name = "network.host", value_delimiter = ',')]
    allow: Vec<String>,
    /// A secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR.
    #[arg(long = "secret", value_name = "id=ID,src=PATH|env=VAR")]
    secrets: Vec<String>,
    /// An SSH agent socket for RUN --mount=type=ssh: default (uses $SSH_AUTH_SOCK) or ID=SOCKET.
    #[arg(long = "ssh", value_name = "default|ID=SOCKET")]
    ssh: Vec<String>,
    /// Write the image id (config digest) to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Write the result instead of storing it: type=oci|docker|tar|local,dest=PATH, or push it:
    /// type=registry[,name=REF] (also type=image,push=true).
    #[arg(short = 'o', long = "output", value_name = "type=TYPE,dest=PATH")]
    outputs: Vec<String>,
    /// Progress output: auto, tty, plain or json.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tty", "plain", "json", "quiet"])]
    progress: String,
    /// When a RUN step fails and standard input is a terminal, open a shell in its filesystem
    /// as the command left it (its mounts, environment, user and working directory); exiting
    /// the shell ends the build with the step's failure. Progress is plain while it runs.
    #[arg(long)]
    debug: bool,
    /// Print only the image id.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Stages built at the same time (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// A named context for FROM, COPY --from and RUN --mount from=:
    /// NAME=PATH, NAME=oci-layout://PATH or NAME=docker-image://REF.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    /// Layer compression in the store: none (the default: a rebuild never waits for a
    /// compressor), gzip or zstd, optionally with a level (gzip:6, zstd:3).
    #[arg(long, default_value = "none")]
    compression: String,
    /// Always ask the registry for a newer version of each base image (one HEAD per base;
    /// nothing is downloaded when the store has the same digest).
    #[arg(long)]
    pull: bool,
    /// Push the image to every -t name after the build (the same as --output type=registry).
    #[arg(long)]
    push: bool,
    /// Write buildx's JSON about the result (image and config digest, names, bases) here.
    #[arg(long = "metadata-file", value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// Export the build cache: type=registry,ref=REF[,mode=min|max][,mounts=true]
    /// [,compression=gzip|zstd|uncompressed][,ignore-error=true][,max-size=10GB]
    /// [,mounts-max-size=4GB], type=local,dest=DIR[,tag=T][,…] or type=inline. Repeatable.
    #[arg(long = "cache-to", value_name = "type=TYPE,…")]
    cache_to: Vec<String>,
    /// Import a build cache: type=registry,ref=REF (or just REF), type=local,src=DIR[,tag=T].
    /// Repeatable; the first that has a step wins (a branch's cache, then main's).
    #[arg(long = "cache-from", value_name = "type=TYPE,…")]
    cache_from: Vec<String>,
    /// Run `strata check`'s rules instead of building: print the warnings, exit 1 if there
    /// are any (buildx's --check).
    #[arg(long)]
    check: bool,
    /// The platforms to build for: OS/ARCH[/VARIANT], comma-separated or repeated
    /// (linux/amd64,linux/arm64); `local` is this machine's, the default. Several make an
    /// image index with one image per platform.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_delimiter = ',')]
    platform: Vec<String>,
    /// After the build, load the image into a docker daemon (through its API socket:
    /// $DOCKER_HOST as unix://PATH, else /var/run/docker.sock) or into podman's storage
    /// (`podman load`): --load alone takes docker when its socket answers, else podman;
    /// --load=docker or --load=podman chooses.
    #[arg(long, value_name = "docker|podman", num_args = 0..=1, require_equals = true, default_missing_value = "auto")]
    load: Option<String>,
    /// A line of RUN steps' /etc/hosts: HOST:IP (repeatable).
    #[arg(long = "add-host", value_name = "HOST:IP", value_parser = super::parse_add_host)]
    add_hosts: Vec<(String, String)>,
    /// A resource limit of RUN steps: NAME=SOFT[:HARD] as docker's (nofile=1024:4096; -1 is
    /// unlimited). A hard limit above strata's own cannot be given in a user namespace.
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]", value_parser = strata::sandbox::Rlimit::parse)]
    ulimits: Vec<strata::sandbox::Rlimit>,
    /// The size of RUN steps' /dev/shm (default 64m).
    #[arg(long = "shm-size", value_name = "SIZE", value_parser = super::parse_shm_size)]
    shm_size: Option<u64>,
    /// An annotation, as buildx's (repeatable): KEY=VALUE or manifest:KEY=VALUE (each image's
    /// manifest), manifest[linux/arm64]:KEY=VALUE (that platform's only), and for a
    /// multi-platform build index:KEY=VALUE (the image index), manifest-descriptor[[P]]:KEY=VALUE
    /// (a manifest's descriptor in the index), index-descriptor:KEY=VALUE (the index's
    /// descriptor in an OCI layout's index.json).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Attestations: type=sbom[,disabled=true] or type=provenance[,mode=min|max]
    /// [,version=v0.2|v1]; repeatable. Made only when asked.
    #[arg(long = "attest", value_name = "type=TYPE,…")]
    attest: Vec<String>,
    /// An SBOM attestation (SPDX, made from the image's layers): --sbom or --sbom=true;
    /// --sbom=false turns it off.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    sbom: Option<String>,
    /// A SLSA provenance attestation: --provenance (mode=min), --provenance=mode=max,
    /// version=v1 for SLSA v1 (v0.2 by default); --provenance=false turns it off.
    #[arg(long, value_name = "BOOL|mode=…", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    provenance: Option<String>,
    /// The build context: a directory, or `-` for a tar on standard input.
    context: String,
}

pub fn run(store: &Store, a: BuildArgs) -> anyhow::Result<i32> {
    // Ctrl-C and SIGTERM cancel the build cleanly (exit 130 / 143), see engine::interrupt.
    strata::engine::interrupt::install();
    // Flags that say what strata does not do (yet), before anything is read.
    let platforms = target_platforms(&a.platform)?;
    let attest = attestations(&a)?;
    annotations(&a.annotations)?.check(&platforms, platforms.len() > 1 || attest.any())?;
    if a.file.as_deref() == Some(Path::new("-")) && a.context == "-" {
        bail!("the Dockerfile and the context cannot both come from standard input");
    }
    // A tar context on stdin: unpack it into the store's tmp dir for the build.
    let mut unpacked = None;
    let context = if a.context == "-" {
        let dir = store
            .tmp_dir()
            .join(format!("context-{}", strata::store::owner_tag()));
        fs_err::create_dir_all(&dir)?;
        let r = strata::layer::decompress(std::io::stdin().lock())
            .context("reading the context tar from standard input")?;
        strata::layer::apply_layer(r, &dir, &Default::default())
            .context("unpacking the context tar from standard input")?;
        unpacked = Some(dir.clone());
        dir
    } else {
        let p = PathBuf::from(&a.context);
        if !p.is_dir() {
            return Err(engine::error::Error::NoContext {
                given: a.context.clone(),
            }
            .into());
        }
        fs_err::canonicalize(&p)?
    };
    let result = build(store, &a, &context);
    if let Some(d) = unpacked {
        strata::store::make_writable(&d);
        let _ = std::fs::remove_dir_all(&d);
    }
    result
}

fn build(store: &Store, a: &BuildArgs, context: &Path) -> anyhow::Result<i32> {
    let file = dockerfile_path(a, context)?;
    let src = super::read_dockerfile(&file)?;
    let ignore = read_ignore(&file, context)?;
    let build_args = build_args(a);
    let named = named_contexts(a)?;
    let options = plan::Options {
        build_args: build_args.clone(),
        target: a.target.clone(),
        named_contexts: named.keys().cloned().collect(),
        ..plan::Options::default()
    };
    // One plan per target platform: FROM lines and the platform ARGs differ between them.
    let platforms = target_platforms(&a.platform)?;
    let plans = match dockerfile::load(&src).and_then(|(df, cmds)| {
        platforms
            .iter()
            .map(|t| {
                let o = plan::Options {
                    target_platform: t.clone(),
                    ..options.clone()
                };
                plan::plan(&df, cmds.clone(), o)
            })
            .collect::<Result<Vec<_>, _>>()
    }) {
        Ok(p) => p,
        Err(d) => {
            eprint!("{}", render::diagnostic(&d));
            return Ok(INPUT);
        }
    };
    let p = &plans[0];
    // `strata check`'s rules, with the base images' environments the store has: `--check`
    // stops here, `# check=error=true` fails on a warning, and otherwise the build ends with
    // their count, as buildx.
    let checked = match plan::check::check(&src, options, &super::check::base_env(Some(store))) {
        Ok(c) => c,
        Err(plan::check::CheckError::Dockerfile(d)) => {
            eprint!("{}", render::diagnostic(&d));
            return Ok(INPUT);
        }
        Err(plan::check::CheckError::Config(e)) => bail!("the check configuration: {e}"),
    };
    if a.check {
        super::check::print_warnings(&src, &checked.warnings);
        return Ok(if checked.warnings.is_empty() { 0 } else { 1 });
    }
    let (opts, mode) = build_options(a, context, &src, ignore, named, &build_args)?;
    let view = std::sync::Arc::new(progress::Progress::new(mode));
    if !announce_warnings(&view, &src, &checked) {
        return Ok(INPUT);
    }
    let built = engine::build_platforms(store, &plans, &opts, view.clone())?;
    if built.cached < built.steps {
        collect_cache(store, &view);
    }
    // The size report: the layers and what makes the image fat. A failure to read it is a
    // warning, never the build's failure.
    let multi_stage = p.stages.len() > 1;
    if mode != progress::Mode::Quiet && built.images.len() > 1 {
        // A multi-platform build: each platform's image, as `strata images` counts it.
        match engine::size::platform_reports(store, &built.images, multi_stage) {
            Ok(r) if mode == progress::Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "size-report", "platforms": r})
            ),
            Ok(r) => eprint!("{}", engine::size::render_platforms(&r)),
            Err(e) => eprintln!(
                "warning: no size report: {}",
                engine::error::with_causes(&e)
            ),
        }
    } else if mode != progress::Mode::Quiet {
        match engine::size::report(store, &built.image, multi_stage) {
            Ok(r) if mode == progress::Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "size-report", "report": r})
            ),
            Ok(r) => eprint!("{}", engine::size::render(&r)),
            Err(e) => eprintln!(
                "warning: no size report: {}",
                engine::error::with_causes(&e)
            ),
        }
    }
    lint_summary(&src, &checked.warnings, mode);
    if a.quiet {
        println!("{}", built.image_id);
    }
    Ok(0)
}

/// The Dockerfile: -f as given (relative to the context when it is not found as given), else
/// the context's Dockerfile (or dockerfile when only that exists).
fn dockerfile_path(a: &BuildArgs, context: &Path) -> anyhow::Result<PathBuf> {
    let file = match &a.file {
        Some(f) if f.as_os_str() == "-" => f.clone(),
        Some(f) if f.is_relative() && !f.exists() && context.join(f).exists() => context.join(f),
        Some(f) => f.clone(),
        None => {
            let upper = context.join("Dockerfile");
            let lower = context.join("dockerfile");
            if !upper.exists() && lower.exists() {
                lower
            } else {
                upper
            }
        }
    };
    if file.as_os_str() != "-" && !file.exists() {
        return Err(engine::error::Error::NoDockerfile {
            path: file,
            given: a.file.is_some(),
        }
        .into());
    }
    Ok(file)
}

/// The .dockerignore patterns: <Dockerfile>.dockerignore next to the Dockerfile wins over the
/// context's; they are checked here, before anything is built.
fn read_ignore(file: &Path, context: &Path) -> anyhow::Result<Vec<String>> {
    let ignore_text = {
        let specific = PathBuf::from(format!("{}.dockerignore", file.display()));
        if file.as_os_str() != "-" && specific.exists() {
            fs_err::read_to_string(&specific)?
        } else {
            fs_err::read_to_string(context.join(".dockerignore")).unwrap_or_default()
        }
    };
    let ignore = strata::context::ignore::read_patterns(&ignore_text);
    strata::context::ignore::Matcher::new(&ignore).map_err(|e| anyhow!(".dockerignore: {e}"))?;
    Ok(ignore)
}

/// --build-arg values; `K` alone takes the environment's value, and is left out without one.
fn build_args(a: &BuildArgs) -> BTreeMap<String, String> {
    let mut build_args = BTreeMap::new();
    for (k, v) in &a.build_args {
        let v = match v {
            Some(v) => Some(v.clone()),
            None => std::env::var(k).ok(),
        };
        if let Some(v) = v {
            build_args.insert(k.clone(), v);
        }
    }
    build_args
}

/// --build-context NAME=VALUE, a directory made absolute.
fn named_contexts(a: &BuildArgs) -> anyhow::Result<HashMap<String, NamedContext>> {
    let mut named = HashMap::new();
    for c in &a.build_contexts {
        let BuildContext { name: k, context } = c.parse()?;
        let nc = match context {
            NamedContext::Dir(p) => NamedContext::Dir(
                fs_err::canonicalize(&p)
                    .with_context(|| format!("--build-context {k}: {}", p.display()))?,
            ),
            other => other,
        };
        named.insert(k, nc);
    }
    Ok(named)
}

/// The engine's options from the flags (checked in the order buildx checks them), and the
/// progress mode.
fn build_options(
    a: &BuildArgs,
    context: &Path,
    src: &dockerfile::Source,
    ignore: Vec<String>,
    named: HashMap<String, NamedContext>,
    build_args: &BTreeMap<String, String>,
) -> anyhow::Result<(BuildOptions, progress::Mode)> {
    let epoch = match build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
    {
        Some(v) if !v.is_empty() => Some(
            v.parse::<i64>()
                .map_err(|_| anyhow!("invalid SOURCE_DATE_EPOCH: {v}"))?,
        ),
        _ => None,
    };
    let secrets = secrets(a)?;
    let ssh = ssh_sockets(a)?;
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let outputs = a
        .outputs
        .iter()
        .map(|o| o.parse::<Output>())
        .collect::<Result<Vec<_>, _>>()?;
    let tags = a
        .tags
        .iter()
        .map(|t| ImageRef::parse(t).map_err(|e| anyhow!("-t {t}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut mode = progress::Mode::parse(&a.progress, a.quiet)
        .ok_or_else(|| anyhow!("invalid --progress {}", a.progress))?;
    if a.debug && mode == progress::Mode::Tty {
        // A redrawn display and a shell cannot share the terminal.
        mode = progress::Mode::Plain;
    }
    let allow_host_network = allow_host_network(a)?;
    let annotations = annotations(&a.annotations)?;
    let load = a
        .load
        .as_deref()
        .map(engine::load::LoadTarget::parse)
        .transpose()
        .map_err(|e| engine::error::Error::BadFlag {
            message: e.to_string(),
        })?;
    let opts = BuildOptions {
        context: context.to_path_buf(),
        dockerfile_name: src.name().to_string(),
        dockerfile: Some(src.clone()),
        debug: a.debug,
        ignore,
        tags,
        no_cache: a.no_cache,
        no_cache_filter: a.no_cache_filter.clone(),
        labels,
        network: match a.network.as_str() {
            "none" => Network::None,
            "host" => Network::Host,
            _ => Network::Private,
        },
        allow_host_network,
        secrets,
        ssh,
        iidfile: a.iidfile.clone(),
        outputs,
        jobs: a.jobs.unwrap_or_else(strata::cores),
        named_contexts: named,
        compression: a.compression.parse()?,
        epoch,
        pull: if a.pull {
            strata::registry::PullPolicy::Always
        } else {
            strata::registry::PullPolicy::Missing
        },
        push: a.push,
        metadata_file: a.metadata_file.clone(),
        cache_to: a
            .cache_to
            .iter()
            .map(|c| c.parse())
            .collect::<Result<Vec<_>, _>>()?,
        cache_from: a
            .cache_from
            .iter()
            .map(|c| c.parse())
            .collect::<Result<Vec<_>, _>>()?,
        extra_hosts: a.add_hosts.clone(),
        ulimits: a.ulimits.clone(),
        shm_size: a.shm_size,
        annotations,
        load,
        attest: attestations(a)?,
    };
    Ok((opts, mode))
}

/// --secret id=ID,src=PATH|env=VAR, each parsed by [`Secret`].
fn secrets(a: &BuildArgs) -> anyhow::Result<HashMap<String, SecretSource>> {
    let mut secrets = HashMap::new();
    for s in &a.secrets {
        let Secret { id, source } = s.parse()?;
        secrets.insert(id, source);
    }
    Ok(secrets)
}

/// --ssh default|ID=SOCKET; an ID alone is $SSH_AUTH_SOCK.
fn ssh_sockets(a: &BuildArgs) -> anyhow::Result<HashMap<String, PathBuf>> {
    let mut ssh = HashMap::new();
    for s in &a.ssh {
        let (id, path) = match s.split_once('=') {
            Some((i, p)) => (i.to_string(), PathBuf::from(p)),
            None => (
                s.clone(),
                PathBuf::from(std::env::var("SSH_AUTH_SOCK").map_err(|_| {
                    anyhow!("--ssh {s}: SSH_AUTH_SOCK is not set (give ID=SOCKET)")
                })?),
            ),
        };
        ssh.insert(id, path);
    }
    Ok(ssh)
}

/// --allow: the entitlements; true when network.host is allowed (and --network host needs it).
fn allow_host_network(a: &BuildArgs) -> anyhow::Result<bool> {
    let mut allow_host_network = false;
    for e in &a.allow {
        match e.as_str() {
            "network.host" => allow_host_network = true,
            "security.insecure" => bail!(
                "--allow security.insecure: strata runs every step unprivileged (RUN --security=insecure is not supported)"
            ),
            other => bail!("--allow {other}: unknown entitlement (strata knows network.host)"),
        }
    }
    if a.network == "host" && !allow_host_network {
        bail!("--network host gives RUN steps the host's network, loopback included: add `--allow network.host` to say so (as buildx's entitlement)");
    }
    Ok(allow_host_network)
}

/// The rules' warnings are shown as the build starts, as BuildKit shows them, and summed up
/// at its end; with the check directive's error=true (or BUILDKIT_DOCKERFILE_CHECK) any of
/// them fails the build before it starts: false then, the error printed.
fn announce_warnings(
    view: &progress::Progress,
    src: &dockerfile::Source,
    checked: &plan::check::Checked,
) -> bool {
    for w in &checked.warnings {
        // A suggestion is part of the line, as in BuildKit's "(did you mean …?)".
        let suggestion = w
            .hint
            .as_deref()
            .filter(|h| h.starts_with("did you mean"))
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        view.note(&format!(
            "warning: {}: {}{suggestion} ({}:{})",
            w.rule,
            w.message,
            src.name(),
            src.position(w.span.start).line
        ));
    }
    if checked.error && !checked.warnings.is_empty() {
        let mut rules: Vec<&str> = checked.warnings.iter().map(|w| w.rule).collect();
        rules.dedup();
        let d = dockerfile::Diagnostic::new(
            format!("lint violation found for rules: {}", rules.join(", ")),
            checked.warnings[0].span,
        )
        .with_hint(
            "`check=error=true` makes every warning an error: fix them, or skip a rule with `# check=skip=RULE`",
        )
        .with_source(src);
        eprint!("{}", render::diagnostic(&d));
        return false;
    }
    true
}

/// `--platform`: the target platforms, in normal form, each once, in the order given (`local`
/// is this machine's); none given: this machine's. This machine's platform is given as
/// [`Platform::host`] says it, so a build for it alone is the build it always was.
fn target_platforms(given: &[String]) -> anyhow::Result<Vec<Platform>> {
    let host = Platform::host();
    let mut out: Vec<Platform> = Vec::new();
    for p in given.iter().map(|p| p.trim()) {
        let parsed = if p == "local" {
            host.normalized()
        } else {
            Platform::parse_specifier(p, &host).map_err(|e| engine::error::Error::BadFlag {
                message: format!("invalid --platform \"{p}\": {e}"),
            })?
        };
        if !parsed.is_known() {
            return Err(engine::error::Error::BadFlag {
                message: format!(
                    "--platform {p}: unknown platform {parsed} (write os/arch[/variant] with Go's names, as linux/amd64, linux/arm64 or linux/arm/v7)"
                ),
            }
            .into());
        }
        let parsed = if parsed == host.normalized() {
            host.clone()
        } else {
            parsed
        };
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    if out.is_empty() {
        out.push(host);
    }
    Ok(out)
}

/// `--attest type=sbom|provenance[,…]`, `--sbom[=…]`, `--provenance[=…]`, as buildx spells
/// them: attestations are made only when asked (buildx adds a min provenance to every push by
/// default; strata does not, so that nothing about a build leaves it unasked).
fn attestations(a: &BuildArgs) -> anyhow::Result<engine::supply::Attest> {
    use strata::sbom::attest::{ProvenanceMode, SlsaVersion};
    let bad = |m: String| anyhow::Error::from(engine::error::Error::BadFlag { message: m });
    let mut out = engine::supply::Attest::default();
    // (flag, type, value): --sbom X is --attest type=sbom,X.
    let mut asked: Vec<(&str, String, String)> = Vec::new();
    for v in &a.attest {
        let mut ty = None;
        let mut rest = Vec::new();
        for kv in v.split(',') {
            match kv.split_once('=') {
                Some(("type", t)) => ty = Some(t.to_string()),
                _ => rest.push(kv),
            }
        }
        let ty =
            ty.ok_or_else(|| bad(format!("--attest {v}: give type=sbom or type=provenance")))?;
        asked.push(("--attest", ty, rest.join(",")));
    }
    if let Some(v) = &a.sbom {
        asked.push(("--sbom", "sbom".into(), v.clone()));
    }
    if let Some(v) = &a.provenance {
        asked.push(("--provenance", "provenance".into(), v.clone()));
    }
    for (flag, ty, value) in asked {
        let mut on = true;
        let mut mode = ProvenanceMode::Min;
        let mut version = SlsaVersion::V02;
        let mut scan_stages = None;
        for kv in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or(("", kv));
            match (ty.as_str(), k, v.to_ascii_lowercase().as_str()) {
                (_, "", "true" | "1") => on = true,
                (_, "", "false" | "0") => on = false,
                (_, "disabled", "true") => on = false,
                (_, "disabled", "false") => on = true,
                ("provenance", "mode", "min") => mode = ProvenanceMode::Min,
                ("provenance", "mode", "max") => mode = ProvenanceMode::Max,
                ("provenance", "version", "v0.2") => version = SlsaVersion::V02,
                ("provenance", "version", "v1") => version = SlsaVersion::V1,
                ("sbom", "generator", _) => {
                    return Err(bad(format!(
                        "{flag} {value}: strata makes the SBOM itself from the image's layers; it runs no scanner image (leave generator= out)"
                    )))
                }
                // BuildKit's BUILDKIT_SBOM_SCAN_STAGE: true, false or stage names (which
                // contain no comma, so one name per option here).
                ("sbom", "scan-stage" | "scan-stages", _) => {
                    let v = v.trim();
                    scan_stages = Some(match scan_stages.take() {
                        Some(before) if !matches!(v, "true" | "false" | "1" | "0") => {
                            format!("{before},{v}")
                        }
                        _ => v.to_string(),
                    });
                }
                ("sbom", "scan-context", _) => {
                    return Err(bad(format!(
                        "{flag} {value}: strata does not scan the build context (BUILDKIT_SBOM_SCAN_CONTEXT); the SBOM covers the image and, with scan-stage=true, its builder stages"
                    )))
                }
                ("sbom" | "provenance", _, _) => {
                    return Err(bad(format!(
                        "{flag} {value}: unknown option {kv} (sbom: true|false, scan-stage=true|false|STAGE; provenance: true|false, mode=min|max, version=v0.2|v1; both: disabled=true)"
                    )))
                }
                _ => {
                    return Err(bad(format!(
                        "{flag} type={ty}: unknown attestation type (sbom or provenance)"
                    )))
                }
            }
        }
        match ty.as_str() {
            "sbom" => {
                out.sbom = on;
                if scan_stages.is_some() {
                    out.scan_stages = scan_stages;
                }
            }
            "provenance" if on => out.provenance = Some((version, mode)),
            "provenance" => out.provenance = None,
            other => {
                return Err(bad(format!(
                    "{flag} type={other}: unknown attestation type (sbom or provenance)"
                )))
            }
        }
    }
    Ok(out)
}

/// The `--annotation`s, by kind (see `engine::Annotations::add`).
fn annotations(given: &[String]) -> anyhow::Result<engine::Annotations> {
    let mut out = engine::Annotations::default();
    let host = Platform::host();
    for an in given {
        out.add(an, &host)?;
    }
    Ok(out)
}

/// After a build, the lint warnings in one line each, as buildx ends a build.
fn lint_summary(
    src: &strata::dockerfile::Source,
    warnings: &[strata::dockerfile::lint::Warning],
    mode: progress::Mode,
) {
    if warnings.is_empty() {
        return;
    }
    let at = |w: &strata::dockerfile::lint::Warning| src.position(w.span.start).line;
    match mode {
        progress::Mode::Quiet => {}
        progress::Mode::Json => {
            let items: Vec<serde_json::Value> = warnings
                .iter()
                .map(|w| serde_json::json!({"rule": w.rule, "message": w.message, "file": src.name(), "line": at(w)}))
                .collect();
            eprintln!(
                "{}",
                serde_json::json!({"event": "lint", "warnings": items})
            );
        }
        _ => {
            let n = warnings.len();
            eprintln!(
                "{n} warning{} found (use strata check for details):",
                if n == 1 { "" } else { "s" }
            );
            for w in warnings {
                eprintln!(" - {}: {} ({}:{})", w.rule, w.message, src.name(), at(w));
            }
        }
    }
}

/// Keep the build cache within its limit after a build that added to it (as BuildKit's
/// garbage collector does): a failure is a warning, never the build's.
fn collect_cache(store: &strata::store::Store, view: &progress::Progress) {
    use strata::engine::cache;
    let say = |msg: String| view.note(&msg);
    let limit = match cache::limit() {
        Ok(l) => l,
        Err(e) => return say(format!("warning: {e}; the build cache was not collected")),
    };
    let maps = strata::sandbox::idmap::for_current_user();
    let remove = |p: &Path| strata::engine::exec::remove_store_tree(p, &maps);
    match cache::collect(store, limit, &remove) {
        Ok(Some(c)) => say(format!(
            "build cache over its limit ({}): {} step{} dropped, {} freed, {} kept",
            engine::size::human(limit),
            c.dropped,
            if c.dropped == 1 { "" } else { "s" },
            engine::size::human(c.freed),
            engine::size::human(c.kept)
        )),
        Ok(None) => {}
        Err(e) => say(format!("warning: collecting the build cache: {e}")),
    }
}
