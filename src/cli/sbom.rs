//! `strata sbom IMAGE` and `strata provenance IMAGE`: the image's SBOM (the one attached by
//! `strata build --sbom` when it has one, else made from its layers, each layer's packages
//! cached in the store), and its attached provenance statement.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use strata::engine::supply::{self, SbomFormat};
use strata::oci::Platform;
use strata::sbom::attest;
use strata::store::{ImageRecord, Store};

#[derive(Debug, clap::Args)]
pub struct SbomArgs {
    /// An image: NAME[:TAG], or an id (config digest or a prefix of it).
    image: String,
    /// spdx-json (SPDX 2.3) or cyclonedx-json (CycloneDX 1.6).
    #[arg(long, default_value = "spdx-json", value_parser = ["spdx-json", "cyclonedx-json"])]
    format: String,
    /// The image of this platform, when IMAGE names an index (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Write the document to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ProvenanceArgs {
    /// An image built with --provenance: NAME[:TAG] or an index digest.
    image: String,
    /// The image of this platform, when IMAGE names an index (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Write the statement to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

fn resolve(store: &Store, image: &str, platform: Option<&str>) -> anyhow::Result<ImageRecord> {
    let platform = platform
        .map(|p| {
            Platform::parse(p).ok_or_else(|| {
                anyhow!("invalid --platform \"{p}\": use OS/ARCH[/VARIANT], as linux/amd64")
            })
        })
        .transpose()?;
    Ok(store.resolve_platform(image, platform.as_ref())?)
}

pub fn sbom(store: &Store, a: SbomArgs) -> anyhow::Result<i32> {
    let format = SbomFormat::parse(&a.format).ok_or_else(|| anyhow!("--format {}", a.format))?;
    let image = resolve(store, &a.image, a.platform.as_deref())?;
    // The SBOM the build attached (the predicate of its statement), as it was made.
    if format == SbomFormat::SpdxJson {
        let found = supply::attached(store, &a.image, &image, &[attest::SPDX_PREDICATE])?;
        if let Some((_, statement)) = found.first() {
            let v: serde_json::Value = serde_json::from_slice(statement)
                .with_context(|| format!("the SBOM statement attached to {}", a.image))?;
            let predicate = v
                .get("predicate")
                .ok_or_else(|| anyhow!("the SBOM statement of {} has no predicate", a.image))?;
            return write(&strata::oci::canonical_json(predicate), a.output.as_ref());
        }
    }
    let name = supply::image_name(&image, &[], &a.image);
    let doc = supply::document(store, &image, &name, supply::image_time(&image), format)
        .with_context(|| format!("the SBOM of {}", a.image))?;
    write(&doc, a.output.as_ref())
}

pub fn provenance(store: &Store, a: ProvenanceArgs) -> anyhow::Result<i32> {
    let image = resolve(store, &a.image, a.platform.as_deref())?;
    let found = supply::attached(
        store,
        &a.image,
        &image,
        &[attest::SLSA_V02, attest::SLSA_V1],
    )?;
    let Some((_, statement)) = found.first() else {
        bail!(
            "{} has no provenance attestation: build it with --provenance (or --attest type=provenance)",
            a.image
        );
    };
    write(statement, a.output.as_ref())
}

/// `bytes` to FILE, or to standard output with a final newline.
fn write(bytes: &[u8], to: Option<&PathBuf>) -> anyhow::Result<i32> {
    match to {
        Some(f) => fs_err::write(f, bytes)?,
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(0)
}
