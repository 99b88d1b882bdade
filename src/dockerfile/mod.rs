//! The Dockerfile front end: text in, typed instructions out.
//!
//! Layers, each with its own tests: [`source`] (text and byte spans), [`parser`] (lines,
//! directives, continuations, heredocs, flags, BuildKit's argument splitting and AST dump),
//! [`shell`] (variable expansion), [`instructions`] (one type per instruction, flags checked)
//! and [`lint`] (rules as data). Pure: no filesystem, environment or async runtime; every error
//! is a [`Diagnostic`] with a span into the [`Source`].

pub mod diagnostic;
pub mod flags;
pub mod instructions;
pub mod lint;
pub mod lint_docs;
pub mod parser;
pub mod shell;
pub mod source;

pub use diagnostic::{did_you_mean, Diagnostic};
pub use instructions::{
    type_all, ArgDecl, Checksum, Chmod, Chown, Command, CommandLine, Copy, Healthcheck,
    InlineSource, Instruction, KeyValue, MountKind, MountSpec, Onbuild, Run, RunNetwork,
    RunOptions, Sharing,
};
pub use parser::{dump, go_quote, parse, Directive, Dockerfile, Flag, Heredoc, Node};
pub use source::{Position, Source, Span};

/// Parse and type a Dockerfile.
pub fn load(source: &Source) -> Result<(Dockerfile, Vec<Command>), Diagnostic> {
    let df = parse(source)?;
    check_syntax_directive(&df)?;
    let cmds = type_all(&df)?;
    Ok((df, cmds))
}

/// Where a `syntax` directive was found and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxDirective {
    /// The value up to the first space (the frontend reference).
    pub reference: String,
    /// The whole value.
    pub cmdline: String,
    pub line: usize,
}

/// Find the `syntax` directive as BuildKit does: `# syntax=` comments, then `// syntax=`
/// comments, then a whole-file JSON object with a string `syntax` member. A leading `#!` line
/// is skipped (it counts as line 1); a BOM is ignored.
pub fn detect_syntax(text: &str) -> Option<SyntaxDirective> {
    detect_directive(text, "syntax", true)
}

/// Find the `check` directive (`#` comments only).
pub fn detect_check(text: &str) -> Option<SyntaxDirective> {
    detect_directive(text, "check", false)
}

fn detect_directive(text: &str, key: &str, fallbacks: bool) -> Option<SyntaxDirective> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let prefixes: &[&str] = if fallbacks { &["#", "//"] } else { &["#"] };
    for prefix in prefixes {
        let mut line_no = 0;
        for (i, line) in text.lines().enumerate() {
            line_no = i + 1;
            let line = line.trim_start();
            if i == 0 && line.starts_with("#!") {
                continue;
            }
            let Some(rest) = line.strip_prefix(prefix) else {
                break;
            };
            let rest = rest.trim_start_matches([' ', '\t']);
            let Some((k, v)) = rest.split_once('=') else {
                break;
            };
            let k = k.trim_end_matches([' ', '\t']);
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
                break;
            }
            let v = v.trim_matches([' ', '\t']);
            if k.eq_ignore_ascii_case(key) && !v.is_empty() {
                let reference = v.split(' ').next().unwrap_or(v).to_string();
                return Some(SyntaxDirective {
                    reference,
                    cmdline: v.to_string(),
                    line: line_no,
                });
            }
        }
        let _ = line_no;
    }
    if fallbacks {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(text) {
            if let Some(serde_json::Value::String(s)) = m.get(key) {
                let reference = s.split(' ').next().unwrap_or(s).to_string();
                return Some(SyntaxDirective {
                    reference,
                    cmdline: s.clone(),
                    line: 1,
                });
            }
        }
    }
    None
}

/// strata's frontend is built in: it accepts `docker/dockerfile` references (any tag) and
/// rejects other frontends it cannot honour, pointing at the directive.
pub fn check_syntax_directive(df: &Dockerfile) -> Result<(), Diagnostic> {
    let Some(d) = df.directives.iter().find(|d| d.name == "syntax") else {
        return Ok(());
    };
    let reference = d.value.split(' ').next().unwrap_or("");
    let name = reference.split(['@', ':']).next().unwrap_or("");
    let name = name
        .trim_start_matches("docker.io/")
        .trim_start_matches("registry-1.docker.io/");
    if matches!(name, "docker/dockerfile" | "docker/dockerfile-upstream") {
        return Ok(());
    }
    Err(Diagnostic::new(format!("unsupported syntax frontend \"{reference}\""), d.span)
        .with_hint("strata has a built-in Dockerfile frontend; use `# syntax=docker/dockerfile:1` or remove the directive")
        .with_source(&df.source))
}
