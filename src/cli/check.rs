//! `strata check [-f FILE] [--error-on-warnings]`

use super::render::INPUT;
use std::path::PathBuf;

use strata::dockerfile::{self, lint};
use strata::plan;

use super::render;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The Dockerfile (`-` for standard input).
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    file: PathBuf,
    /// Exit with status 1 when there are warnings.
    #[arg(long)]
    error_on_warnings: bool,
    /// Set a build-time variable (as for `build`); `K` alone takes the value from the environment.
    #[arg(long = "build-arg", value_name = "K[=V]", value_parser = super::parse_build_arg)]
    build_args: Vec<(String, Option<String>)>,
    /// The stage to check the plan for (default: the last stage).
    #[arg(long)]
    target: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Human,
    Json,
}

/// The lint warnings of the Dockerfile `src` planned with `options` (BuildKit's rules, and
/// strata's Python rules with `python`), after the check directive or the
/// BUILDKIT_DOCKERFILE_CHECK build arg (and `# check=skip=` comments above an instruction)
/// skipped what they skip; in source order, with that check configuration. A base image in
/// `store` gives its environment to UndefinedVar. The outer error is the Dockerfile's, the
/// inner one a bad check configuration.
pub(super) type Linted = (Vec<lint::Warning>, lint::CheckConfig);

pub(super) fn lint_dockerfile(
    src: &dockerfile::Source,
    options: &plan::Options,
    store: Option<&strata::store::Store>,
    python: bool,
) -> Result<Result<Linted, String>, dockerfile::Diagnostic> {
    let (df, cmds) = dockerfile::load(src)?;
    let mut warnings = lint::lint_syntax(&df, &cmds);
    // `# check=skip=Rule` comments directly above an instruction apply to it alone: keep
    // each instruction's span with the rules its comments skip.
    // The check directive at the top of the file is not a comment of the first instruction.
    let directive = df
        .directives
        .iter()
        .find(|d| d.name == "check")
        .map(|d| format!("check={}", d.value));
    let local_skips: Vec<(strata::dockerfile::Span, lint::CheckConfig)> = cmds
        .iter()
        .enumerate()
        .flat_map(|(i, c)| {
            let directive = directive.clone();
            c.comments
                .iter()
                .filter(move |cm| {
                    i > 0 || directive.as_deref() != Some(cm.replace(' ', "").as_str())
                })
                .filter_map(|cm| {
                    cm.strip_prefix("check=")
                        .and_then(|v| lint::CheckConfig::parse(v).ok())
                })
                .map(move |cc| (c.span, cc))
        })
        .collect();
    let p = plan::plan(&df, cmds, options.clone())?;
    // Base images in the local store give their environment, so UndefinedVar can tell a
    // variable the image defines from a typo. Without a store, those stages are not checked.
    // Through the image seam, store only: checking never pulls.
    let source = store.map(|s| {
        strata::registry::ImageSource::new(
            s,
            strata::registry::PullPolicy::Never,
            strata::oci::Platform::host(),
            std::sync::Arc::new(strata::registry::Quiet),
        )
    });
    let base_env = |image: &str| -> Option<Vec<(String, String)>> {
        let img = source.as_ref()?.image(image).ok()?.record;
        let mut env = strata::dockerfile::shell::env_from_list(
            &img.config.config.and_then(|c| c.env).unwrap_or_default(),
        );
        // As a build does: an image without PATH gets the default one.
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), strata::oci::DEFAULT_PATH.into()));
        }
        Some(env)
    };
    warnings.extend(plan::lint::lint_plan(&p, &base_env));
    if python {
        warnings.extend(plan::lint_python::lint_python(&p, &base_env));
    }
    // The check directive, overridden by the BUILDKIT_DOCKERFILE_CHECK build arg.
    let config_text = options
        .build_args
        .get("BUILDKIT_DOCKERFILE_CHECK")
        .cloned()
        .or_else(|| {
            df.directives
                .iter()
                .find(|d| d.name == "check")
                .map(|d| d.value.clone())
        });
    let config = match config_text
        .as_deref()
        .map(lint::CheckConfig::parse)
        .transpose()
    {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return Ok(Err(e.to_string())),
    };
    warnings.retain(|w| !config.skips(w.rule));
    warnings.retain(|w| {
        !local_skips.iter().any(|(span, cc)| {
            span.start <= w.span.start && w.span.start <= span.end && cc.skips(w.rule)
        })
    });
    warnings.sort_by_key(|w| w.span.start);
    Ok(Ok((warnings, config)))
}

pub fn run(a: CheckArgs, root: Option<std::path::PathBuf>) -> anyhow::Result<i32> {
    let src = super::read_dockerfile(&a.file)?;
    let mut options = plan::Options {
        target: a.target.clone(),
        ..plan::Options::default()
    };
    for (k, v) in &a.build_args {
        let v = match v {
            Some(v) => Some(v.clone()),
            None => std::env::var(k).ok(),
        };
        if let Some(v) = v {
            options.build_args.insert(k.clone(), v);
        }
    }
    let store = root
        .or_else(strata::store::default_root)
        .filter(|r| r.join("v1/oci/index.json").exists())
        .and_then(|r| strata::store::Store::open(r).ok());
    let (warnings, config) = match lint_dockerfile(&src, &options, store.as_ref(), true) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
        Err(e) => {
            eprint!("{}", render::diagnostic(&e));
            return Ok(INPUT);
        }
    };

    match a.format {
        Format::Human => {
            for w in &warnings {
                eprint!(
                    "{}",
                    render::warning(&src, w.rule, &w.message, w.span, w.hint.as_deref())
                );
                eprintln!();
            }
            let n = warnings.len();
            eprintln!(
                "{}: {} warning{} found",
                src.name(),
                n,
                if n == 1 { "" } else { "s" }
            );
        }
        Format::Json => {
            let items: Vec<serde_json::Value> = warnings
                .iter()
                .map(|w| {
                    let p = src.position(w.span.start);
                    serde_json::json!({
                        "rule": w.rule, "message": w.message, "hint": w.hint,
                        "url": lint::rule(w.rule).map(|r| r.url()),
                        "file": src.name(), "line": p.line, "column": p.column,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
    }
    let fail = !warnings.is_empty() && (a.error_on_warnings || config.error);
    Ok(if fail { 1 } else { 0 })
}
