//! Lint rules as data: each rule has a name and a description, and a check produces
//! [`Warning`]s (rule, message, span). Nothing is printed here; `strata check` renders them.
//!
//! The syntax-level rules live here; the rules that need ARG/ENV scopes are in
//! [`crate::plan::lint`].

use super::instructions::{parse_port, Command, Instruction};
use super::parser::Dockerfile;
use super::source::Span;

/// A lint rule in BuildKit's format: its name, what it checks, and where it is documented.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    pub description: &'static str,
    pub docs: Docs,
}

/// Who documents a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Docs {
    /// One of BuildKit's rules, documented by Docker.
    BuildKit,
    /// One of strata's own, explained by `strata check --explain` and in the README's "Lint
    /// rules" section.
    Strata,
}

impl Rule {
    /// The rule's documentation: Docker's page for BuildKit's rules, `strata check --explain`
    /// for strata's (the README's "Lint rules" section says the same).
    pub fn url(&self) -> String {
        match self.docs {
            Docs::BuildKit => {
                // A word starts at an upper-case letter after a lower-case one, or at the
                // last capital of an acronym (`JSONArgs` is `json-args`).
                let mut kebab = String::new();
                let c: Vec<char> = self.name.chars().collect();
                for (i, ch) in c.iter().enumerate() {
                    let starts = i > 0
                        && ch.is_ascii_uppercase()
                        && (c[i - 1].is_ascii_lowercase()
                            || c.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
                    if starts {
                        kebab.push('-');
                    }
                    kebab.push(ch.to_ascii_lowercase());
                }
                format!("https://docs.docker.com/go/dockerfile/rule/{kebab}/")
            }
            Docs::Strata => format!("strata check --explain {}", self.name),
        }
    }
}

/// The rule named `name`.
pub fn rule(name: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.name == name)
}

pub const RULES: &[Rule] = &[
    Rule { name: "AptListsInLayer", description: "Python images: apt-get update in a shipped stage leaves /var/lib/apt/lists in the layer", docs: Docs::Strata },
    Rule { name: "AptRecommendsInstalled", description: "Python images: apt-get install in a shipped stage without --no-install-recommends installs packages nothing asked for", docs: Docs::Strata },
    Rule { name: "CacheMountTargetUnused", description: "Python images: a pip or uv cache mount that is not where the step's user's tool keeps its cache", docs: Docs::Strata },
    Rule { name: "ConsistentInstructionCasing", description: "All instructions should use the same casing (upper or lower)", docs: Docs::BuildKit },
    Rule { name: "CopyAllBeforeDependencies", description: "Python images: the whole context is copied before the dependencies are installed, so every code change reinstalls them", docs: Docs::Strata },
    Rule { name: "CopyIgnoredFile", description: "Attempting to COPY a file that is excluded by .dockerignore", docs: Docs::BuildKit },
    Rule { name: "DuplicateStageName", description: "Stage names should be unique", docs: Docs::BuildKit },
    Rule { name: "ExposeInvalidFormat", description: "IP address and host-port mapping should not be used in EXPOSE", docs: Docs::BuildKit },
    Rule { name: "ExposeProtoCasing", description: "Protocol in EXPOSE should be lowercase", docs: Docs::BuildKit },
    Rule { name: "FinalStageRunsAsRoot", description: "Python images: the final stage runs as root", docs: Docs::Strata },
    Rule { name: "FromAsCasing", description: "The 'as' keyword should match the case of the 'from' keyword", docs: Docs::BuildKit },
    Rule { name: "FromPlatformFlagConstDisallowed", description: "FROM --platform flag should not use a constant value", docs: Docs::BuildKit },
    Rule { name: "InvalidDefaultArgInFrom", description: "Default value for global ARG results in an empty or invalid base image name", docs: Docs::BuildKit },
    Rule { name: "JSONArgsRecommended", description: "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals", docs: Docs::BuildKit },
    Rule { name: "LegacyKeyValueFormat", description: "Legacy key/value format with whitespace separator should not be used", docs: Docs::BuildKit },
    Rule { name: "MaintainerDeprecated", description: "The MAINTAINER instruction is deprecated, use a label instead to define an image author", docs: Docs::BuildKit },
    Rule { name: "MultipleInstructionsDisallowed", description: "Multiple instructions of the same type should not be used in the same stage", docs: Docs::BuildKit },
    Rule { name: "NoEmptyContinuation", description: "Empty continuation lines will become errors in a future release", docs: Docs::BuildKit },
    Rule { name: "PackageCacheInLayer", description: "Python images: pip or uv in a shipped stage without a cache mount or --no-cache-dir leaves its cache in the layer", docs: Docs::Strata },
    Rule { name: "RedundantTargetPlatform", description: "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior", docs: Docs::BuildKit },
    Rule { name: "ReservedStageName", description: "Reserved words should not be used as stage names", docs: Docs::BuildKit },
    Rule { name: "SecretsUsedInArgOrEnv", description: "Sensitive data should not be used in the ARG or ENV commands", docs: Docs::BuildKit },
    Rule { name: "StageNameCasing", description: "Stage names should be lowercase", docs: Docs::BuildKit },
    Rule { name: "StageNameTypo", description: "A --from that is not a stage but is close to a stage's name is pulled as an image (strata's rule)", docs: Docs::Strata },
    Rule { name: "UndefinedArgInFrom", description: "FROM command must use declared ARGs", docs: Docs::BuildKit },
    Rule { name: "UndefinedVar", description: "Variables should be defined before their use", docs: Docs::BuildKit },
    Rule { name: "VenvCopiedToAnotherPath", description: "Python images: a virtual environment copied from another stage to a different path (its scripts name the old one)", docs: Docs::Strata },
    Rule { name: "WorkdirRelativePath", description: "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes", docs: Docs::BuildKit },
];

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub rule: &'static str,
    pub message: String,
    #[serde(skip)]
    pub span: Span,
    pub hint: Option<String>,
}

impl Warning {
    pub fn new(rule: &'static str, message: impl Into<String>, span: Span) -> Warning {
        debug_assert!(RULES.iter().any(|r| r.name == rule), "unknown rule {rule}");
        Warning {
            rule,
            message: message.into(),
            span,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Warning {
        self.hint = Some(hint.into());
        self
    }
}

/// How linting is configured: `# check=skip=A,B;error=true` or the BUILDKIT_DOCKERFILE_CHECK
/// build arg (which wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: Vec<String>,
    pub error: bool,
}

impl CheckConfig {
    pub fn parse(value: &str) -> Result<CheckConfig, CheckConfigError> {
        let mut c = CheckConfig::default();
        for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| CheckConfigError::NotKeyValue {
                    option: part.to_string(),
                })?;
            match k.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for r in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if r.eq_ignore_ascii_case("all") {
                            c.skip_all = true;
                        } else {
                            c.skip.push(r.to_string());
                        }
                    }
                }
                "error" => {
                    c.error = super::instructions::parse_bool(v.trim()).ok_or_else(|| {
                        CheckConfigError::Error {
                            value: v.to_string(),
                        }
                    })?
                }
                "experimental" => {}
                other => {
                    return Err(CheckConfigError::Unknown {
                        option: other.to_string(),
                    })
                }
            }
        }
        Ok(c)
    }

    pub fn skips(&self, rule: &str) -> bool {
        self.skip_all || self.skip.iter().any(|s| s.eq_ignore_ascii_case(rule))
    }
}

/// Rule tokens that suggest a secret, and those that clear the suspicion.
const SECRET_TOKENS: &[&str] = &[
    "apikey",
    "auth",
    "credential",
    "credentials",
    "key",
    "password",
    "pword",
    "passwd",
    "secret",
    "token",
];

pub fn looks_secret(name: &str) -> bool {
    let tokens: Vec<String> = name.split('_').map(str::to_ascii_lowercase).collect();
    tokens.iter().any(|t| SECRET_TOKENS.contains(&t.as_str()))
        && !tokens.iter().any(|t| t == "public")
}

fn casing(s: &str) -> Option<bool> {
    if s == s.to_ascii_uppercase() {
        Some(true)
    } else if s == s.to_ascii_lowercase() {
        Some(false)
    } else {
        None
    }
}

/// The syntax-level rules over a whole file.
pub fn lint_syntax(df: &Dockerfile, commands: &[Command]) -> Vec<Warning> {
    let mut out = Vec::new();
    for w in &df.warnings {
        if w.rule == "NoEmptyContinuation" {
            // As BuildKit's linter reports it: at the instruction's last line.
            let text = df.source.text();
            let end = w.span.end.min(text.len());
            let last = text[w.span.start.min(end)..end]
                .trim_end_matches('\n')
                .rfind('\n')
                .map_or(w.span.start, |i| w.span.start + i + 1);
            out.push(Warning::new(
                w.rule,
                "Empty continuation line",
                Span::new(last, end),
            ));
            continue;
        }
        out.push(Warning::new(w.rule, w.message.clone(), w.span));
    }

    // Casing: the majority wins.
    let uppers = commands
        .iter()
        .filter(|c| casing(&c.keyword) == Some(true))
        .count();
    let lowers = commands
        .iter()
        .filter(|c| casing(&c.keyword) == Some(false))
        .count();
    let majority_upper = uppers >= lowers;
    for c in commands {
        if casing(&c.keyword) != Some(majority_upper) {
            let want = if majority_upper {
                "uppercase"
            } else {
                "lowercase"
            };
            out.push(Warning::new(
                "ConsistentInstructionCasing",
                format!(
                    "Command '{}' should match the case of the command majority ({want})",
                    c.keyword
                ),
                c.keyword_span,
            ));
        }
    }

    let mut stage_names: Vec<(String, Span)> = Vec::new();
    let mut stage_cmds: Vec<&Command> = Vec::new();
    // Whether each stage so far (by name) ends with a SHELL set: a stage built FROM it
    // inherits it (JSONArgsRecommended then has nothing to say).
    let mut shells: Vec<(Option<String>, bool)> = Vec::new();
    let mut inherited = false;
    let mut started = false;
    for c in commands {
        match &c.instruction {
            Instruction::From(f) => {
                if started {
                    let set = lint_stage(&stage_cmds, inherited, &mut out);
                    let name = stage_names.last().map(|(n, _)| n.clone());
                    shells.push((name, set));
                }
                started = true;
                // stage_names gets this stage's name below: align the bookkeeping.
                if f.stage_name.is_none() {
                    stage_names.push((String::new(), c.span));
                }
                inherited = shells
                    .iter()
                    .rev()
                    .find(|(n, _)| {
                        n.as_deref()
                            .is_some_and(|n| !n.is_empty() && n.eq_ignore_ascii_case(&f.image))
                    })
                    .is_some_and(|(_, set)| *set);
                stage_cmds.clear();
                if let Some(name) = &f.stage_name {
                    if name.to_ascii_lowercase() != *name {
                        out.push(Warning::new(
                            "StageNameCasing",
                            format!("Stage name '{name}' should be lowercase"),
                            c.span,
                        ));
                    }
                    if let Some((_, first)) = stage_names
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    {
                        let line = df.source.position(first.start).line;
                        out.push(
                            Warning::new(
                                "DuplicateStageName",
                                format!(
                                    "Duplicate stage name \"{name}\", stage names should be unique"
                                ),
                                c.span,
                            )
                            .with_hint(format!("the name is first used on line {line}")),
                        );
                    }
                    if ["scratch", "context"]
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(name))
                    {
                        out.push(Warning::new(
                            "ReservedStageName",
                            format!("Stage name should not use the same name as reserved stage \"{name}\""),
                            c.span,
                        ));
                    }
                    stage_names.push((name.clone(), c.span));
                    if let (Some(as_kw), Some(from_up)) = (&f.as_keyword, casing(&c.keyword)) {
                        if casing(as_kw).is_some_and(|a| a != from_up) {
                            out.push(Warning::new(
                                "FromAsCasing",
                                format!(
                                    "'{as_kw}' and '{}' keywords' casing do not match",
                                    c.keyword
                                ),
                                c.span,
                            ));
                        }
                    }
                }
                if let Some(p) = &f.platform {
                    let t = p.trim();
                    if t == "$TARGETPLATFORM" || t == "${TARGETPLATFORM}" {
                        out.push(Warning::new(
                            "RedundantTargetPlatform",
                            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
                            c.span,
                        ));
                    } else if !p.contains('$') {
                        out.push(
                            Warning::new("FromPlatformFlagConstDisallowed", format!("FROM --platform flag should not use constant value \"{p}\""), c.span)
                                .with_hint("use --platform=$BUILDPLATFORM or leave it out and pass --platform to the build"),
                        );
                    }
                }
            }
            _ => stage_cmds.push(c),
        }
        lint_instruction(c, &c.instruction, &mut out);
    }
    lint_stage(&stage_cmds, inherited, &mut out);
    out.sort_by_key(|w| w.span.start);
    out
}

fn lint_instruction(c: &Command, ins: &Instruction, out: &mut Vec<Warning>) {
    match ins {
        Instruction::Maintainer(_) => out.push(
            Warning::new(
                "MaintainerDeprecated",
                "Maintainer instruction is deprecated in favor of using label",
                c.span,
            )
            .with_hint("use LABEL org.opencontainers.image.authors=\"...\""),
        ),
        Instruction::Env(kvs) | Instruction::Label(kvs) => {
            let name = ins.name();
            if kvs.iter().any(|kv| kv.legacy) {
                out.push(Warning::new(
                    "LegacyKeyValueFormat",
                    format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"),
                    c.span,
                ));
            }
            if matches!(ins, Instruction::Env(_)) {
                for kv in kvs {
                    if looks_secret(&kv.key) {
                        out.push(Warning::new(
                            "SecretsUsedInArgOrEnv",
                            format!("Do not use ARG or ENV instructions for sensitive data (ENV \"{}\")", kv.key),
                            c.span,
                        ).with_hint("pass secrets with RUN --mount=type=secret instead"));
                    }
                }
            }
        }
        Instruction::Arg(decls) => {
            for d in decls {
                if looks_secret(&d.name) {
                    out.push(Warning::new(
                        "SecretsUsedInArgOrEnv",
                        format!("Do not use ARG or ENV instructions for sensitive data (ARG \"{}\")", d.name),
                        c.span,
                    ).with_hint("pass secrets with RUN --mount=type=secret instead"));
                }
            }
        }
        Instruction::Expose(ports) => {
            for p in ports.iter().filter(|p| !p.contains('$')) {
                if let Some((_, proto)) = p.rsplit_once('/') {
                    if proto != proto.to_ascii_lowercase() {
                        out.push(Warning::new(
                            "ExposeProtoCasing",
                            format!(
                                "Defined protocol '{p}' in EXPOSE instruction should be lowercase"
                            ),
                            c.span,
                        ));
                    }
                }
                if parse_port(p).is_ok_and(|s| s.had_mapping) {
                    out.push(Warning::new(
                        "ExposeInvalidFormat",
                        format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{p}'"),
                        c.span,
                    ));
                }
            }
        }
        Instruction::Onbuild(o) => lint_instruction(c, &o.trigger, out),
        _ => {}
    }
}

/// The rules over one stage's instructions; `shell_set` when its base stage set a SHELL.
/// Returns whether a SHELL is set at its end.
fn lint_stage(cmds: &[&Command], shell_set: bool, out: &mut Vec<Warning>) -> bool {
    let mut shell_set = shell_set;
    let mut absolute_workdir = false;
    for (i, c) in cmds.iter().enumerate() {
        match &c.instruction {
            Instruction::Shell(_) => shell_set = true,
            Instruction::Cmd(cl) | Instruction::Entrypoint(cl)
                if matches!(cl, super::instructions::CommandLine::Shell(_)) && !shell_set =>
            {
                let name = c.instruction.name();
                out.push(
                    Warning::new(
                        "JSONArgsRecommended",
                        format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
                        c.span,
                    )
                    .with_hint(format!("write {name} [\"executable\", \"arg\"]")),
                );
            }
            Instruction::Workdir(w) => {
                if w.starts_with('/') || w.starts_with('$') {
                    absolute_workdir = true;
                } else if !absolute_workdir {
                    out.push(Warning::new(
                        "WorkdirRelativePath",
                        format!("Relative workdir \"{w}\" can have unexpected results if the base image changes"),
                        c.span,
                    ));
                }
            }
            _ => {}
        }
        let name = c.instruction.name();
        if matches!(name, "CMD" | "ENTRYPOINT" | "HEALTHCHECK")
            && cmds[i + 1..].iter().any(|l| l.instruction.name() == name)
        {
            out.push(Warning::new(
                "MultipleInstructionsDisallowed",
                format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
                c.span,
            ));
        }
    }
    shell_set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::{parse, type_all, Source};

    fn rules(text: &str) -> Vec<&'static str> {
        let df = parse(&Source::new("Dockerfile", text)).unwrap();
        let cmds = type_all(&df).unwrap();
        lint_syntax(&df, &cmds)
            .into_iter()
            .map(|w| w.rule)
            .collect()
    }

    #[test]
    fn each_rule_fires() {
        assert_eq!(rules("FROM a\nCMD echo hi\n"), vec!["JSONArgsRecommended"]);
        assert_eq!(
            rules("FROM a\nSHELL [\"/bin/bash\",\"-c\"]\nCMD echo hi\n"),
            Vec::<&str>::new()
        );
        assert_eq!(rules("FROM a AS Build\n"), vec!["StageNameCasing"]);
        assert_eq!(rules("FROM a as b\n"), vec!["FromAsCasing"]);
        assert_eq!(
            rules("FROM a\nrun x\nRUN y\nRUN z\n"),
            vec!["ConsistentInstructionCasing"]
        );
        assert_eq!(
            rules("FROM a\nMAINTAINER me\n"),
            vec!["MaintainerDeprecated"]
        );
        assert_eq!(
            rules("FROM a AS b\nFROM c AS B\n"),
            vec!["StageNameCasing", "DuplicateStageName"]
        );
        assert_eq!(rules("FROM a AS scratch\n"), vec!["ReservedStageName"]);
        assert_eq!(
            rules("FROM --platform=linux/amd64 a\n"),
            vec!["FromPlatformFlagConstDisallowed"]
        );
        assert_eq!(
            rules("FROM --platform=$TARGETPLATFORM a\n"),
            vec!["RedundantTargetPlatform"]
        );
        assert_eq!(
            rules("FROM --platform=$BUILDPLATFORM a\n"),
            Vec::<&str>::new()
        );
        assert_eq!(rules("FROM a\nENV k v\n"), vec!["LegacyKeyValueFormat"]);
        assert_eq!(
            rules("FROM a\nARG API_KEY\nENV GITHUB_TOKEN=x PUBLIC_KEY=y\n"),
            vec!["SecretsUsedInArgOrEnv", "SecretsUsedInArgOrEnv"]
        );
        assert_eq!(
            rules("FROM a\nEXPOSE 80/TcP 127.0.0.1:80:80\n"),
            vec!["ExposeProtoCasing", "ExposeInvalidFormat"]
        );
        assert_eq!(
            rules("FROM a\nCMD [\"a\"]\nCMD [\"b\"]\n"),
            vec!["MultipleInstructionsDisallowed"]
        );
        assert_eq!(rules("FROM a\nWORKDIR app\n"), vec!["WorkdirRelativePath"]);
        assert_eq!(
            rules("FROM a\nWORKDIR /x\nWORKDIR app\n"),
            Vec::<&str>::new()
        );
        assert_eq!(
            rules("FROM a\nRUN a \\\n\n b\n"),
            vec!["NoEmptyContinuation"]
        );
    }

    #[test]
    fn check_config() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended,StageNameCasing;error=true").unwrap();
        assert!(c.error && c.skips("jsonargsrecommended") && !c.skips("UndefinedVar"));
        assert!(CheckConfig::parse("skip=all").unwrap().skips("X"));
        assert!(CheckConfig::parse("bogus=1").is_err());
    }
}

/// A `# check=` directive (or BUILDKIT_DOCKERFILE_CHECK) refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckConfigError {
    #[error("invalid check option \"{option}\": expected key=value")]
    NotKeyValue { option: String },
    #[error("invalid check option error=\"{value}\": expected true or false")]
    Error { value: String },
    #[error("unknown check option \"{option}\" (expected skip, error or experimental)")]
    Unknown { option: String },
}
