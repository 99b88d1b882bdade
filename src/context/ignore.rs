//! `.dockerignore` with Docker's semantics, not gitignore's: patterns are root-anchored and
//! matched against the whole path (no basename matching), `**` spans directories, `!` makes an
//! exception, the last applicable pattern wins, and a pattern that matches a parent directory
//! excludes everything below it.
//!
//! Each pattern is a [`Glob`]: an anchored regular expression made the way Docker's pattern
//! matcher makes it, so the corner cases (classes, escapes, `a**/b`) behave the same.

use super::glob::Glob;
use crate::fsx::clean;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("illegal exclusion pattern: \"!\"")]
    LoneBang,
    #[error("syntax error in pattern \"{pattern}\": {reason}")]
    BadPattern {
        pattern: String,
        reason: super::glob::GlobError,
    },
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern without its `!`.
    text: String,
    exclusion: bool,
    re: Glob,
}

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// Compile patterns in `.dockerignore` order.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, Error> {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let p = clean(p);
            let (exclusion, body) = match p.strip_prefix('!') {
                Some("") => return Err(Error::LoneBang),
                Some(b) => (true, b.to_string()),
                None => (false, p.clone()),
            };
            let re = Glob::new(&body).map_err(|reason| Error::BadPattern {
                pattern: body.clone(),
                reason,
            })?;
            out.push(Pattern {
                text: body,
                exclusion,
                re,
            });
        }
        Ok(Matcher { patterns: out })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Could a pattern (an exception when `exceptions`, else an ordinary one) match something
    /// strictly below the directory `dir`? Decides whether a walk must enter a directory that
    /// is itself excluded, or not (yet) included.
    pub fn could_match_below(&self, dir: &str, exceptions: bool) -> bool {
        let dsegs: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
        self.patterns
            .iter()
            .filter(|p| p.exclusion == exceptions)
            .any(|p| {
                if p.text.contains("**") {
                    return true;
                }
                let psegs: Vec<&str> = p.text.split('/').collect();
                psegs.len() > dsegs.len()
                    && dsegs
                        .iter()
                        .zip(&psegs)
                        .all(|(d, pat)| Glob::new(pat).is_ok_and(|g| g.is_match(d)))
            })
    }

    /// Is `path` (slash-separated, relative to the context root) excluded? The path itself
    /// and each of its parent directories are tried against every pattern.
    pub fn excluded(&self, path: &str) -> bool {
        // Go's path.Dir: everything before the last slash ("a/b/" has the parent "a/b").
        let parent = match path.rsplit_once('/') {
            Some((d, _)) if !d.is_empty() => {
                Some(d.trim_end_matches('/')).filter(|d| !d.is_empty())
            }
            _ => None,
        };
        // Each parent, as Docker joins the first 1, 2, … components of it: the prefixes of
        // `parent` up to each slash, and `parent` itself (slices, no path built per pattern).
        let parents: Vec<&str> = parent
            .map(|d| {
                d.match_indices('/')
                    .map(|(k, _)| &d[..k])
                    .chain(std::iter::once(d))
                    .collect()
            })
            .unwrap_or_default();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let hit = p.re.is_match(path) || parents.iter().any(|d| p.re.is_match(d));
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

/// Read a `.dockerignore` file's text into patterns: BOM stripped, `#` lines (column 0)
/// skipped, lines trimmed, empty ones dropped, paths cleaned and one leading `/` removed,
/// `! path` read as `!path`.
pub fn read_patterns(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let bang = p.starts_with('!');
        if bang {
            p = p[1..].trim();
        }
        if !p.is_empty() {
            let mut c = clean(p);
            if let Some(stripped) = c.strip_prefix('/') {
                c = if stripped.is_empty() {
                    "/".to_string()
                } else {
                    stripped.to_string()
                };
            }
            out.push(if bang { format!("!{c}") } else { c });
        } else {
            out.push(if bang { "!".to_string() } else { String::new() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &[&str]) -> Matcher {
        Matcher::new(p).unwrap()
    }

    #[test]
    fn docker_not_gitignore() {
        assert!(!m(&["*.go"]).excluded("a/b.go"), "no basename matching");
        assert!(m(&["**/*.go"]).excluded("a/b.go"));
        assert!(
            m(&["docs"]).excluded("docs/a/b"),
            "a matching parent excludes"
        );
        assert!(!m(&["docs", "!docs/README.md"]).excluded("docs/README.md"));
        assert!(m(&["!x", "*.go"]).excluded("x.go"));
        assert!(!m(&["dir/**"]).excluded("dir"));
        assert!(m(&["a**/*.txt"]).excluded("a/dir/dir/file.txt"));
        assert_eq!(Matcher::new(&["!"]).unwrap_err(), Error::LoneBang);
        assert!(Matcher::new(&["["]).is_err());
    }

    #[test]
    fn go_clean() {
        for (i, o) in [
            ("a//b/", "a/b"),
            ("./a/../b", "b"),
            ("/../a", "/a"),
            ("", "."),
            ("..", ".."),
            ("a/..", "."),
        ] {
            assert_eq!(clean(i), o, "{i}");
        }
    }
}
