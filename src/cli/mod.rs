//! The command line: clap types, one file per subcommand, and rendering of errors and
//! warnings. Nothing else in the crate imports this module.

mod check;
mod parse;
pub mod render;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// strata builds OCI images from Dockerfiles, with no daemon and no root.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Parse a Dockerfile; print its outline, or BuildKit's syntax-tree dump with --dump.
    Parse(parse::ParseArgs),
    /// Check a Dockerfile: parse, type and plan it, and report lint warnings.
    Check(check::CheckArgs),
}

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Commands::Parse(a) => parse::run(a),
        Commands::Check(a) => check::run(a),
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

/// Parse `K=V` (or `K`, taking the value from the environment, as docker does).
pub fn parse_build_arg(s: &str) -> Result<(String, Option<String>), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("invalid build arg \"{s}\": the name is empty")),
        Some((k, v)) => Ok((k.to_string(), Some(v.to_string()))),
        None if s.is_empty() => Err("invalid build arg: empty".into()),
        None => Ok((s.to_string(), None)),
    }
}
