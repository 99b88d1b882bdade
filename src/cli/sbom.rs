//! `strata sbom IMAGE`: the image's SBOM, made from its layers (each layer's packages cached in
//! the store), every package naming the layer and the instruction that added it.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use strata::engine::supply::{self, SbomFormat};
use strata::store::Store;

#[derive(Debug, clap::Args)]
pub struct SbomArgs {
    /// An image: NAME[:TAG], or an id (config digest or a prefix of it).
    image: String,
    /// spdx-json (SPDX 2.3) or cyclonedx-json (CycloneDX 1.6).
    #[arg(long, default_value = "spdx-json", value_parser = ["spdx-json", "cyclonedx-json"])]
    format: String,
    /// Write the document to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn sbom(store: &Store, a: SbomArgs) -> anyhow::Result<i32> {
    let format = SbomFormat::parse(&a.format).ok_or_else(|| anyhow!("--format {}", a.format))?;
    let image = store.resolve(&a.image)?;
    // Dated as the image is, so the same image gives the same document.
    let created = image
        .config
        .created
        .as_deref()
        .and_then(super::store_cmds::parse_rfc3339)
        .unwrap_or(0);
    let name = image
        .names
        .first()
        .map(|n| n.to_string())
        .unwrap_or_else(|| a.image.clone());
    let doc = supply::document(store, &image, &name, created, format)
        .with_context(|| format!("the SBOM of {}", a.image))?;
    write(&doc, a.output.as_ref())
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
