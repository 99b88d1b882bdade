//! Rendering of diagnostics and lint warnings with source snippets:
//!
//! ```text
//! error: unknown instruction: FNTRYPOINT
//!  --> Dockerfile:2:1
//!   |
//! 2 | FNTRYPOINT ["x"]
//!   | ^^^^^^^^^^
//!   = hint: did you mean ENTRYPOINT?
//! ```

use std::fmt::Write;

use strata::dockerfile::{Diagnostic, Source, Span};

/// Most source lines shown for one span.
const MAX_LINES: usize = 8;

pub fn diagnostic(d: &Diagnostic) -> String {
    let mut out = format!("error: {}\n", d.message);
    match &d.file {
        Some(src) if d.located => snippet(&mut out, src, d.span),
        Some(src) => {
            let _ = writeln!(out, " --> {}", src.name());
        }
        None => {}
    }
    if let Some(h) = &d.hint {
        let _ = writeln!(out, "  = hint: {h}");
    }
    out
}

pub fn warning(src: &Source, rule: &str, message: &str, span: Span, hint: Option<&str>) -> String {
    let mut out = format!("warning: {rule}: {message}\n");
    snippet(&mut out, src, span);
    if let Some(h) = hint {
        let _ = writeln!(out, "  = hint: {h}");
    }
    if let Some(r) = strata::dockerfile::lint::rule(rule) {
        let _ = match r.docs {
            strata::dockerfile::lint::Docs::BuildKit => writeln!(
                out,
                "  = docs: strata check --explain {rule}, or {}",
                r.url()
            ),
            strata::dockerfile::lint::Docs::Strata => {
                writeln!(out, "  = docs: strata check --explain {rule}")
            }
        };
    }
    out
}

fn floor(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The widest a line of a snippet is shown: a Dockerfile line may be 64 KiB long.
const MAX_COLS: usize = 240;

/// ` --> file:line:col` and the lines of `span` with `^` under the spanned text.
pub fn snippet(out: &mut String, src: &Source, span: Span) {
    let text = src.text();
    let start = src.position(span.start);
    let end_off = if span.end > span.start {
        span.end - 1
    } else {
        span.start
    };
    let end = src.position(end_off);
    let _ = writeln!(out, " --> {}:{}:{}", src.name(), start.line, start.column);
    let width = end.line.to_string().len();
    let pad = " ".repeat(width);
    let _ = writeln!(out, "{pad} |");
    let last = end.line.min(start.line + MAX_LINES - 1);
    for line in start.line..=last {
        let lt = src.line_text(line);
        let ls = src.line_start(line);
        let shown = lt.replace('\t', "    ");
        match shown.char_indices().nth(MAX_COLS) {
            Some((i, _)) => {
                let _ = writeln!(out, "{line:>width$} | {}…", &shown[..i]);
            }
            None => {
                let _ = writeln!(out, "{line:>width$} | {shown}");
            }
        }
        // The part of this line inside the span.
        let from = if line == start.line {
            floor(text, span.start).saturating_sub(ls)
        } else {
            lt.len() - lt.trim_start().len()
        };
        let to = if line == end.line {
            floor(text, span.end.max(span.start + 1))
                .saturating_sub(ls)
                .min(lt.len())
        } else {
            lt.len()
        };
        let from = floor(lt, from.min(lt.len()));
        let to = floor(lt, to);
        let col = lt[..from].replace('\t', "    ").chars().count();
        let n = lt[from..to.max(from)]
            .replace('\t', "    ")
            .chars()
            .count()
            .max(1);
        // A line cut short keeps its marker within what is shown.
        let col = col.min(MAX_COLS);
        let n = n.min(MAX_COLS + 1 - col);
        let _ = writeln!(out, "{pad} | {}{}", " ".repeat(col), "^".repeat(n));
    }
    if last < end.line {
        let _ = writeln!(out, "{pad} | ... ({} more lines)", end.line - last);
    }
}

/// The exit code of a Dockerfile that does not parse or plan (and of any wrong input).
pub const INPUT: i32 = strata::engine::error::Class::Input.exit_code();

/// Any error strata returns, as shown on stderr, and the exit code of its class: a failure in
/// a Dockerfile instruction as [`step_failure`] shows it, anything else as `error:` and its
/// causes; then the hints of its typed causes.
pub fn error(e: &anyhow::Error) -> (String, i32) {
    let explained = strata::engine::error::explain(e.as_ref());
    let code = explained.class.exit_code();
    if let Some(shown) = step_failure(e, &explained.hints) {
        return (shown, code);
    }
    let mut out = format!("error: {e}\n");
    for cause in e.chain().skip(1) {
        let _ = writeln!(out, "Caused by: {cause}");
    }
    for h in &explained.hints {
        let _ = writeln!(out, "  hint: {h}");
    }
    (out, code)
}

/// A build error that happened in a Dockerfile instruction, shown as a parse error is: the
/// instruction's lines with a marker, then what went wrong (the causes, innermost last) and
/// `hints`. `None` when the error did not come from a step, or the text is unknown.
pub fn step_failure(e: &anyhow::Error, hints: &[String]) -> Option<String> {
    // A context of anyhow's (downcast the error itself) or a typed step of the engine's; then
    // its place in the chain.
    let step = e
        .downcast_ref::<strata::engine::StepFailed>()
        .or_else(|| strata::engine::error::failed_step(e.as_ref()))?;
    let src = step.source_text.as_ref()?;
    let shown = step.to_string();
    let mut causes = Vec::new();
    let mut after = false;
    for c in e.chain() {
        if !after && c.to_string() == shown {
            after = true;
            continue;
        }
        if !after {
            continue;
        }
        causes.push(c.to_string());
    }
    let headline = causes.last().cloned().unwrap_or_else(|| step.to_string());
    let mut out = format!("error: {headline}\n");
    snippet(&mut out, src, step.span);
    for c in causes.iter().rev().skip(1) {
        let _ = writeln!(out, "  = while: {c}");
    }
    for h in hints {
        let _ = writeln!(out, "  = hint: {h}");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_marker_under_span() {
        let src = Source::new("Dockerfile", "FROM a\nFNTRYPOINT x\n");
        let d = Diagnostic::new("unknown instruction: FNTRYPOINT", Span::new(7, 17))
            .with_hint("did you mean ENTRYPOINT?")
            .with_source(&src);
        let r = diagnostic(&d);
        assert_eq!(
            r,
            "error: unknown instruction: FNTRYPOINT\n --> Dockerfile:2:1\n  |\n2 | FNTRYPOINT x\n  | ^^^^^^^^^^\n  = hint: did you mean ENTRYPOINT?\n"
        );
    }

    #[test]
    fn multi_line_spans_show_every_line() {
        let src = Source::new("Dockerfile", "FROM a\nCOPY \\\n  x\n");
        let d = Diagnostic::new("bad", Span::new(7, 17)).with_source(&src);
        let r = diagnostic(&d);
        assert!(r.contains("2 | COPY \\\n"), "{r}");
        assert!(r.contains("3 |   x\n"), "{r}");
    }
}
