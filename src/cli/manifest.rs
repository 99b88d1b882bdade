//! `strata manifest create` and `strata manifest inspect`: image indexes in a registry made
//! from images already there (as `docker buildx imagetools create` / `inspect`). `create`
//! pushes the index itself: there is no separate `manifest push` step, as with buildx (and
//! unlike podman's local manifest lists, which strata's store keeps as image indexes made by
//! `build --platform`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use strata::registry::{Reference, Registry};
use strata::store::Store;

use super::progress::{Mode, Progress};

#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    #[command(subcommand)]
    command: ManifestCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ManifestCommand {
    /// Combine images of a registry into one image index and push it under a tag: each SOURCE
    /// (REF@DIGEST or REF:TAG on the same registry) is an image, whose platform its config
    /// says, or an index, whose entries are taken as they are. The index is pushed by
    /// `create` itself (no `manifest push` step, as buildx imagetools create).
    Create(CreateArgs),
    /// Print the manifest or index a reference names, as the registry sends it.
    Inspect(InspectArgs),
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// The index's name in the registry: REGISTRY/REPOSITORY:TAG.
    #[arg(short = 't', long = "tag", value_name = "REF")]
    tag: String,
    /// The images (or indexes) to combine.
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<String>,
    /// An annotation of the index, KEY=VALUE (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Print the index as JSON instead of pushing it.
    #[arg(long)]
    dry_run: bool,
    /// Progress output: auto, tty, plain, json or quiet.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tty", "plain", "json", "quiet"])]
    progress: String,
    /// Print only the index's digest.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// REGISTRY/REPOSITORY[:TAG|@DIGEST].
    reference: String,
}

pub fn run(store: &Store, a: ManifestArgs) -> anyhow::Result<i32> {
    match a.command {
        ManifestCommand::Create(c) => create(store, c),
        ManifestCommand::Inspect(i) => inspect(i),
    }
}

fn create(store: &Store, a: CreateArgs) -> anyhow::Result<i32> {
    let dest = Reference::parse(&a.tag)?;
    let sources = a
        .sources
        .iter()
        .map(|s| Reference::parse(s).with_context(|| format!("source {s}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut annotations = BTreeMap::new();
    for kv in &a.annotations {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                annotations.insert(k.to_string(), v.to_string());
            }
            _ => bail!("invalid --annotation \"{kv}\": expected KEY=VALUE"),
        }
    }
    let mode = Mode::parse(&a.progress, a.quiet)
        .ok_or_else(|| anyhow!("invalid --progress {}", a.progress))?;
    let p = Arc::new(Progress::new(mode));
    let reg = Registry::from_environment()?.with_observer(p.clone());
    let combined = reg
        .combine(store, &sources, &dest, annotations)
        .with_context(|| format!("making the index {dest}"))?;
    if a.dry_run {
        let v: serde_json::Value = serde_json::from_slice(&combined.bytes)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let pushed = reg
        .push_combined(store, &combined, &dest)
        .with_context(|| format!("pushing the index {dest}"))?;
    if a.quiet {
        println!("{}", pushed.digest);
    } else {
        p.finish(&format!(
            "pushed {}@{} (an index of {} manifests)",
            dest,
            pushed.digest,
            combined.index.manifests.len()
        ));
    }
    Ok(0)
}

fn inspect(a: InspectArgs) -> anyhow::Result<i32> {
    let r = Reference::parse(&a.reference)?;
    let reg = Registry::from_environment()?;
    let (_, bytes, _) = reg.raw_manifest(&r)?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
        Err(_) => println!("{}", String::from_utf8_lossy(&bytes)),
    }
    Ok(0)
}
