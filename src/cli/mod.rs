//! The command line: clap types, one file per subcommand, and rendering of errors and
//! warnings. Nothing else in the crate imports this module.

mod build;
mod check;
mod forward;
mod manifest;
mod parse;
mod progress;
mod registry_cmds;
pub mod render;
pub mod run;
mod sbom;
mod store_cmds;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// strata builds OCI images from Dockerfiles, with no daemon and no root.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
pub struct Cli {
    /// The image store (default: $STRATA_ROOT, else $XDG_DATA_HOME/strata, else
    /// ~/.local/share/strata).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Build an image from a Dockerfile and a context.
    Build(Box<build::BuildArgs>),
    /// Parse a Dockerfile; print its outline, or BuildKit's syntax-tree dump with --dump.
    Parse(parse::ParseArgs),
    /// Check a Dockerfile: parse, type and plan it, and report lint warnings.
    Check(check::CheckArgs),
    /// List images in the store.
    Images(store_cmds::ImagesArgs),
    /// Show an image's config and manifest as JSON.
    Inspect(store_cmds::ImageArg),
    /// Show an image's history: one line per instruction, with layer sizes.
    History(store_cmds::ImageArg),
    /// Give an image another name.
    Tag(store_cmds::TagArgs),
    /// Remove image names.
    Rmi(store_cmds::RmiArgs),
    /// Remove unreferenced blobs, snapshots and leftovers; print the bytes freed.
    Prune(store_cmds::PruneArgs),
    /// Show the store's disk use, and what a prune frees.
    ///
    /// blobs: every blob in the store, which the next three lines add up to: those of images
    /// (their manifests, configs and layers), those of the build cache only (layers of cached
    /// steps that no image has: a plain prune keeps them), and unreferenced ones (a prune
    /// removes them). snapshots: layers unpacked for RUN steps and `strata run` (remade from
    /// their blobs when needed; `prune --all` removes them all), of which unreferenced: of
    /// layers neither an image nor the cache has. build cache: the bytes of the layers its
    /// steps refer to (shared with images, so already in the blobs), and its steps; steps
    /// kept from a `--cache-from` whose layers stayed remote take no space. cache mounts: the
    /// RUN --mount=type=cache directories. temporary: leftovers of interrupted writes, the
    /// failed step kept for `strata debug`, records of the cache whose layer is gone.
    /// reclaimable: what a plain `strata prune` frees now (unreferenced blobs and snapshots,
    /// temporary), as long as the build cache is within its limit.
    Df(store_cmds::DfArgs),
    /// Check every blob and reference in the store.
    Fsck,
    /// Make a one-layer image from a root filesystem directory or a tar.
    Import(store_cmds::ImportArgs),
    /// Write images to an oci-archive, docker-archive or OCI layout directory.
    Save(store_cmds::SaveArgs),
    /// Load images from an OCI layout, oci-archive or docker-archive.
    Load(store_cmds::LoadArgs),
    /// Unpack an image's root filesystem into a directory (layers applied in order).
    Unpack(store_cmds::UnpackArgs),
    /// Run a command in an image, in the rootless sandbox; passes its exit code through.
    Run(run::RunArgs),
    /// Open a shell (or run a command) in the last failed RUN step, as the command left it.
    Debug(run::DebugArgs),
    /// Check that this machine can run builds rootless, and say how to fix what is missing.
    Doctor,
    /// Pull an image from its registry into the store (mirrors and credentials as configured).
    Pull(registry_cmds::PullArgs),
    /// Push an image of the store to a registry.
    Push(registry_cmds::PushArgs),
    /// Image indexes in a registry: `create` combines images pushed by digest (one per
    /// platform, from a CI matrix) into one tag; `inspect` prints a manifest or index.
    Manifest(manifest::ManifestArgs),
    /// Log in to a registry: check the credentials and save them in the containers auth file.
    Login(registry_cmds::LoginArgs),
    /// Remove a registry's saved credentials.
    Logout(registry_cmds::LogoutArgs),
    /// Print an image's SBOM (SPDX 2.3 or CycloneDX JSON): each package with the layer and
    /// the instruction that added it.
    Sbom(sbom::SbomArgs),
    /// Print the SLSA provenance statement attached to an image by `build --provenance`.
    Provenance(sbom::ProvenanceArgs),
}

impl Commands {
    /// Does the command talk to registries (or fetch ADD sources)?
    pub fn uses_network(&self) -> bool {
        matches!(
            self,
            Commands::Build(_)
                | Commands::Run(_)
                | Commands::Pull(_)
                | Commands::Push(_)
                | Commands::Manifest(_)
                | Commands::Login(_)
                | Commands::Logout(_)
        )
    }
}

/// Parse the command line, or print clap's error and exit. An unknown flag gets clap's error
/// without its tip "to pass '--flag' as a value, use '-- --flag'": strata's commands take no
/// value that starts with a dash before their positionals, so the tip only misleads (someone
/// who typed buildx's `--load` is told to pass it as the build context).
pub fn parse() -> Cli {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    Cli::try_parse().unwrap_or_else(|mut e| {
        if e.kind() == ErrorKind::UnknownArgument {
            if let Some(ContextValue::StyledStrs(tips)) = e.remove(ContextKind::Suggested) {
                let kept: Vec<_> = tips
                    .into_iter()
                    .filter(|t| !t.to_string().contains("as a value, use '--"))
                    .collect();
                if !kept.is_empty() {
                    e.insert(ContextKind::Suggested, ContextValue::StyledStrs(kept));
                }
            }
        }
        e.exit()
    })
}

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let store = || -> anyhow::Result<strata::store::Store> {
        let root = cli
            .root
            .clone()
            .or_else(strata::store::default_root)
            .ok_or_else(|| {
                anyhow::anyhow!("no store location: set --root, STRATA_ROOT, XDG_DATA_HOME or HOME")
            })?;
        Ok(strata::store::Store::open(root)?)
    };
    match cli.command {
        Commands::Build(a) => build::run(&store()?, *a),
        Commands::Parse(a) => parse::run(a),
        Commands::Check(a) => check::run(a, cli.root.clone()),
        Commands::Images(a) => store_cmds::images(&store()?, a),
        Commands::Inspect(a) => store_cmds::inspect(&store()?, a),
        Commands::History(a) => store_cmds::history(&store()?, a),
        Commands::Tag(a) => store_cmds::tag(&store()?, a),
        Commands::Rmi(a) => store_cmds::rmi(&store()?, a),
        Commands::Prune(a) => store_cmds::prune(&store()?, a),
        Commands::Df(a) => store_cmds::df(&store()?, a),
        Commands::Fsck => store_cmds::fsck(&store()?),
        Commands::Import(a) => store_cmds::import(&store()?, a),
        Commands::Save(a) => store_cmds::save(&store()?, a),
        Commands::Load(a) => store_cmds::load(&store()?, a),
        Commands::Unpack(a) => store_cmds::unpack(&store()?, a),
        Commands::Run(a) => run::run(&store()?, a),
        Commands::Debug(a) => run::debug(&store()?, a),
        Commands::Doctor => run::doctor(),
        Commands::Pull(a) => registry_cmds::pull(&store()?, a),
        Commands::Push(a) => registry_cmds::push(&store()?, a),
        Commands::Manifest(a) => manifest::run(&store()?, a),
        Commands::Login(a) => registry_cmds::login(a),
        Commands::Logout(a) => registry_cmds::logout(a),
        Commands::Sbom(a) => sbom::sbom(&store()?, a),
        Commands::Provenance(a) => sbom::provenance(&store()?, a),
    }
}

/// Read a Dockerfile from a path, or from standard input for `-`.
pub fn read_dockerfile(path: &PathBuf) -> anyhow::Result<strata::dockerfile::Source> {
    use anyhow::Context;
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("reading the Dockerfile from standard input")?;
        return Ok(strata::dockerfile::Source::from_bytes("<stdin>", &buf));
    }
    let bytes = fs_err::read(path)?;
    Ok(strata::dockerfile::Source::from_bytes(
        path.display().to_string(),
        &bytes,
    ))
}

/// `--add-host HOST:IP` (or `HOST=IP`, as buildx also takes it): a line of /etc/hosts.
pub fn parse_add_host(s: &str) -> Result<(String, String), String> {
    let (host, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| format!("invalid --add-host \"{s}\": expected HOST:IP"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!(
            "invalid --add-host \"{s}\": the host name is empty or has spaces"
        ));
    }
    if ip == "host-gateway" {
        return Err(format!(
            "--add-host {s}: host-gateway is not supported: a step's own network reaches the host only as its outbound address (give that address), or use --network host"
        ));
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<std::net::IpAddr>()
        .map_err(|_| format!("invalid --add-host \"{s}\": {ip} is not an IP address"))?;
    Ok((host.to_string(), ip.to_string()))
}

/// `--shm-size SIZE` (`64m`, `1g`, bytes).
pub fn parse_shm_size(s: &str) -> Result<u64, String> {
    strata::dockerfile::instructions::parse_size(s)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid --shm-size \"{s}\": expected a size such as 64m or 1g"))
}

/// Parse `K=V` (or `K`, taking the value from the environment, as docker does).
pub fn parse_build_arg(s: &str) -> Result<(String, Option<String>), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("invalid build arg \"{s}\": the name is empty")),
        Some((k, v)) => Ok((k.to_string(), Some(v.to_string()))),
        None if s.is_empty() => Err("invalid build arg: empty".into()),
        None => Ok((s.to_string(), None)),
    }
}
