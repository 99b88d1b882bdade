//! `strata check [-f FILE] [--error-on-warnings]`

use super::render::INPUT;
use std::path::PathBuf;

use strata::dockerfile::lint;
use strata::plan;

use super::render;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Print what a lint rule means and what to do about it (as `rustc --explain`), and exit.
    #[arg(long, value_name = "RULE")]
    explain: Option<String>,
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

/// The environment of a base image in `store` (store only: check never pulls), so that
/// UndefinedVar tells a variable the image defines from a typo; `None` for an image the store
/// does not have.
pub fn base_env(
    store: Option<&strata::store::Store>,
) -> impl Fn(&str) -> Option<Vec<(String, String)>> + '_ {
    let source = store.map(|s| {
        strata::registry::ImageSource::new(
            s,
            strata::registry::PullPolicy::Never,
            strata::oci::Platform::host(),
            std::sync::Arc::new(strata::registry::Quiet),
        )
    });
    move |image: &str| {
        let img = source.as_ref()?.image(image).ok()?.record;
        let mut env = strata::dockerfile::shell::env_from_list(
            &img.config.config.and_then(|c| c.env).unwrap_or_default(),
        );
        // As a build does: an image without PATH gets the default one.
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), strata::oci::DEFAULT_PATH.into()));
        }
        Some(env)
    }
}

/// Each warning with its rule, location, lines and where it is explained, then the count.
pub fn print_warnings(src: &strata::dockerfile::Source, warnings: &[lint::Warning]) {
    for w in warnings {
        eprint!(
            "{}",
            render::warning(src, w.rule, &w.message, w.span, w.hint.as_deref())
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

/// `strata check --explain RULE`: the rule's text, as `rustc --explain`.
fn explain(name: &str) -> anyhow::Result<i32> {
    let rule = lint::RULES
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(name));
    let (Some(rule), Some(text)) = (
        rule,
        rule.and_then(|r| strata::dockerfile::lint_docs::explanation(r.name)),
    ) else {
        let names: Vec<&str> = lint::RULES.iter().map(|r| r.name).collect();
        let hint = strata::dockerfile::did_you_mean(name, names.iter().copied())
            .map(|n| format!(" (did you mean {n}?)"))
            .unwrap_or_default();
        eprintln!(
            "error: no lint rule {name}{hint}; the rules are: {}",
            names.join(", ")
        );
        return Ok(INPUT);
    };
    println!("{}: {}\n", rule.name, rule.description);
    println!("{text}\n");
    if rule.docs == lint::Docs::BuildKit {
        println!(
            "One of BuildKit's rules; Docker documents it at {}",
            rule.url()
        );
    }
    println!(
        "Turn it off with `# check=skip={0}` in the Dockerfile, or `--build-arg BUILDKIT_DOCKERFILE_CHECK=skip={0}`.",
        rule.name
    );
    Ok(0)
}

pub fn run(a: CheckArgs, root: Option<std::path::PathBuf>) -> anyhow::Result<i32> {
    if let Some(rule) = &a.explain {
        return explain(rule);
    }
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
    // Base images in the local store give their environment; without a store, the stages on
    // them are not checked for UndefinedVar.
    let store = root
        .or_else(strata::store::default_root)
        .filter(|r| r.join("v1/oci/index.json").exists())
        .and_then(|r| strata::store::Store::open(r).ok());
    let checked = match plan::check::check(&src, options, &base_env(store.as_ref())) {
        Ok(c) => c,
        Err(plan::check::CheckError::Dockerfile(d)) => {
            eprint!("{}", render::diagnostic(&d));
            return Ok(INPUT);
        }
        Err(plan::check::CheckError::Config(e)) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let warnings = checked.warnings;
    match a.format {
        Format::Human => print_warnings(&src, &warnings),
        Format::Json => {
            let items: Vec<serde_json::Value> = warnings
                .iter()
                .map(|w| {
                    let p = src.position(w.span.start);
                    let rule = lint::rule(w.rule);
                    serde_json::json!({
                        "rule": w.rule, "message": w.message, "hint": w.hint,
                        "url": rule.filter(|r| r.docs == lint::Docs::BuildKit).map(|r| r.url()),
                        "explain": format!("strata check --explain {}", w.rule),
                        "file": src.name(), "line": p.line, "column": p.column,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
    }
    let fail = !warnings.is_empty() && (a.error_on_warnings || checked.error);
    Ok(if fail { 1 } else { 0 })
}
