//! Errors and warnings of the front end, located by byte spans.
//!
//! A [`Diagnostic`] is created where the problem is found, with the span of the offending text;
//! the [`Source`] is attached once, at the public entry points ([`crate::dockerfile::parse`] and
//! friends), so every error can be rendered as `file:line:col` with the lines and a marker.

use std::fmt;

use super::source::{Position, Source, Span};

/// One front-end error: what is wrong, where, and how to fix it when we can tell.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Diagnostic {
    pub message: String,
    pub span: Span,
    pub hint: Option<String>,
    /// The file this diagnostic points into; set by the public entry points.
    pub file: Option<Source>,
    /// False for problems about the file as a whole (an unknown `--target`): no line is shown.
    pub located: bool,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, span: Span) -> Self {
        Diagnostic {
            message: message.into(),
            span,
            hint: None,
            file: None,
            located: true,
        }
    }

    /// A diagnostic about the whole file rather than a place in it.
    pub fn unlocated(message: impl Into<String>) -> Self {
        Diagnostic {
            located: false,
            ..Diagnostic::new(message, Span::default())
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_source(mut self, source: &Source) -> Self {
        if self.file.is_none() {
            self.file = Some(source.clone());
        }
        self
    }

    /// Where the diagnostic starts, if a source is attached.
    pub fn position(&self) -> Option<Position> {
        self.file.as_ref().map(|s| s.position(self.span.start))
    }

    /// `file:line:col`, or nothing without a source.
    pub fn location(&self) -> Option<String> {
        let src = self.file.as_ref()?;
        if !self.located {
            return Some(src.name().to_string());
        }
        let p = src.position(self.span.start);
        Some(format!("{}:{}:{}", src.name(), p.line, p.column))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location() {
            Some(loc) => write!(f, "{loc}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The closest candidate to `word` (case-insensitive), if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&w, &c.to_ascii_lowercase());
        if score >= 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_find_typos_only() {
        let cands = ["ENTRYPOINT", "EXPOSE", "ENV", "RUN"];
        assert_eq!(did_you_mean("FNTRYPOINT", cands), Some("ENTRYPOINT"));
        assert_eq!(did_you_mean("bulid", ["build", "base"]), Some("build"));
        assert_eq!(did_you_mean("zzzzzz", cands), None);
    }

    #[test]
    fn display_names_file_line_col() {
        let src = Source::new("Dockerfile", "FROM a\nRUNN x\n");
        let d = Diagnostic::new("unknown instruction: RUNN", Span::new(7, 11)).with_source(&src);
        assert_eq!(d.to_string(), "Dockerfile:2:1: unknown instruction: RUNN");
    }
}
