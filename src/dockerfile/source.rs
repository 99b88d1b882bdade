//! Source text and byte spans.
//!
//! Every syntax node carries a [`Span`]: a byte range into the [`Source`] it came from. Lines and
//! columns are computed from spans only when an error or warning is rendered, at one place.

use std::sync::Arc;

/// A half-open byte range `start..end` into a [`Source`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span {
            start,
            end: end.max(start),
        }
    }

    /// The smallest span covering both.
    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// One Dockerfile's text and name. The text is what the parser saw: invalid UTF-8 has been
/// replaced (see [`Source::from_bytes`]), and spans index this text.
#[derive(Debug, Clone)]
pub struct Source {
    name: Arc<str>,
    text: Arc<str>,
    line_starts: Arc<[usize]>,
}

/// A 1-based line and column (column counted in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text: String = text.into();
        let mut line_starts = vec![0];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                line_starts.push(i + 1);
            }
        }
        Source {
            name: Arc::from(name.into()),
            text: Arc::from(text),
            line_starts: line_starts.into(),
        }
    }

    /// Docker accepts Dockerfiles that are not valid UTF-8 (old Latin-1 comments); invalid
    /// sequences become U+FFFD so that everything downstream works on `str`.
    pub fn from_bytes(name: impl Into<String>, bytes: &[u8]) -> Self {
        Source::new(name, String::from_utf8_lossy(bytes).into_owned())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Number of lines (a final line without a newline counts).
    pub fn line_count(&self) -> usize {
        let n = self.line_starts.len();
        if self.text.ends_with('\n') {
            n - 1
        } else {
            n
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line_idx = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line_idx];
        let column = self.text[start..floor_char_boundary(&self.text, offset)]
            .chars()
            .count()
            + 1;
        Position {
            line: line_idx + 1,
            column,
        }
    }

    /// The text of 1-based line `line`, without its line ending.
    pub fn line_text(&self, line: usize) -> &str {
        if line == 0 || line > self.line_starts.len() {
            return "";
        }
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    /// Byte offset where 1-based line `line` starts.
    pub fn line_start(&self, line: usize) -> usize {
        self.line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(self.text.len())
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_chars() {
        let s = Source::new("Dockerfile", "FROM a\nRUN é x\n");
        assert_eq!(s.position(0), Position { line: 1, column: 1 });
        assert_eq!(s.position(7), Position { line: 2, column: 1 });
        // "RUN é " is 7 bytes but 6 chars: 'x' is column 7.
        assert_eq!(s.position(14), Position { line: 2, column: 7 });
        assert_eq!(s.line_text(2), "RUN é x");
        assert_eq!(s.line_count(), 2);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        let s = Source::from_bytes("D", b"FROM a\n# caf\xe9\n");
        assert!(s.text().contains('\u{fffd}'));
    }
}
