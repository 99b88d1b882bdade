//! `strata check`'s whole pass, shared with `strata build` (its `--check`, and the summary of
//! warnings after a build): parse, the syntax rules, plan, the scope-aware and Python rules,
//! then the check configuration (`# check=skip=…;error=…`, or the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg, which wins) and the `# check=skip=` comments above
//! single instructions. Pure: base images' environments come through `base_env`.

use super::lint::BaseEnv;
use super::{plan, Options};
use crate::dockerfile::lint::{self, CheckConfig, Warning};
use crate::dockerfile::{self, Diagnostic, Source, Span};

/// What the pass found.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The warnings left after the configuration's skips, in file order.
    pub warnings: Vec<Warning>,
    /// `error=true`: warnings are errors (a build with them fails).
    pub error: bool,
}

/// Why the pass could not finish.
#[derive(Debug, Clone)]
pub enum CheckError {
    /// The Dockerfile does not parse or plan.
    Dockerfile(Diagnostic),
    /// The check configuration is not valid.
    Config(crate::dockerfile::lint::CheckConfigError),
}

/// Run every lint rule over `src` planned with `options`.
pub fn check(src: &Source, options: Options, base_env: BaseEnv<'_>) -> Result<Checked, CheckError> {
    let (df, cmds) = dockerfile::load(src).map_err(CheckError::Dockerfile)?;
    let mut warnings = lint::lint_syntax(&df, &cmds);
    // `# check=skip=Rule` comments directly above an instruction apply to it alone: keep each
    // instruction's span with the rules its comments skip.
    // The check directive at the top of the file is not a comment of the first instruction.
    let directive = df
        .directives
        .iter()
        .find(|d| d.name == "check")
        .map(|d| format!("check={}", d.value));
    let local_skips: Vec<(Span, CheckConfig)> = cmds
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
                        .and_then(|v| CheckConfig::parse(v).ok())
                })
                .map(move |cc| (c.span, cc))
        })
        .collect();
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
    let p = plan(&df, cmds, options).map_err(CheckError::Dockerfile)?;
    warnings.extend(super::lint::lint_plan(&p, base_env));
    warnings.extend(super::lint_python::lint_python(&p, base_env));
    let config = config_text
        .as_deref()
        .map(CheckConfig::parse)
        .transpose()
        .map_err(CheckError::Config)?
        .unwrap_or_default();
    warnings.retain(|w| !config.skips(w.rule));
    warnings.retain(|w| {
        !local_skips.iter().any(|(span, cc)| {
            span.start <= w.span.start && w.span.start <= span.end && cc.skips(w.rule)
        })
    });
    warnings.sort_by_key(|w| w.span.start);
    Ok(Checked {
        warnings,
        error: config.error,
    })
}
