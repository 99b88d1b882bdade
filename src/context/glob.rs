//! The one glob matcher of strata: `.dockerignore` patterns, COPY `--exclude` and COPY/ADD
//! source wildcards all go through [`Glob`].
//!
//! A pattern is checked with Go's `filepath.Match` rules (well-formed classes, no trailing lone
//! `\`) and translated to an anchored regular expression the way Docker's pattern matcher
//! (moby/patternmatcher) does: `*` and `?` stop at `/`, `**` spans directories (`**/` also
//! matches nothing), `[...]` classes with `^` negation, `\` escapes. The regex engine matches in
//! time linear in the name, whatever the pattern. For one path component (a COPY source
//! wildcard) this is Go's `filepath.Match`, which BuildKit uses there.

use regex::Regex;

/// What is malformed in a pattern (Go's `filepath.Match` words).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GlobError {
    #[error("bad character class")]
    BadClass,
    #[error("trailing backslash in character class")]
    ClassTrailingBackslash,
    #[error("unterminated character class")]
    UnterminatedClass,
    #[error("trailing backslash")]
    TrailingBackslash,
    /// The translated expression does not compile (too large).
    #[error(transparent)]
    Regex(Box<regex::Error>),
}

/// A compiled pattern, matched against a whole slash-separated path (or one component).
#[derive(Debug, Clone)]
pub struct Glob(Matcher);

#[derive(Debug, Clone)]
enum Matcher {
    /// A pattern with no wildcard, class or escape matches itself only: compared as a
    /// string, no regex compiled (a `.dockerignore` of plain names is the common case, and
    /// compiling costs more than the no-op rebuild of a small context spends elsewhere).
    Literal(String),
    Regex(Regex),
}

impl Glob {
    /// Compile `pattern`; the error says what is malformed.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        validate(pattern)?;
        if !pattern.contains(['*', '?', '[', '\\']) {
            return Ok(Glob(Matcher::Literal(pattern.to_string())));
        }
        let re = Regex::new(&to_regex(pattern)).map_err(|e| GlobError::Regex(Box::new(e)))?;
        Ok(Glob(Matcher::Regex(re)))
    }

    pub fn is_match(&self, path: &str) -> bool {
        match &self.0 {
            Matcher::Literal(l) => l == path,
            Matcher::Regex(re) => re.is_match(path),
        }
    }
}

/// One class element as Go's `filepath.Match` reads it: not `-` or `]` first, `\` escapes,
/// something must follow.
fn class_char(chars: &[char], i: usize) -> Result<usize, GlobError> {
    match chars.get(i) {
        None | Some('-') | Some(']') => return Err(GlobError::BadClass),
        _ => {}
    }
    let mut j = i;
    if chars[j] == '\\' {
        j += 1;
        if j >= chars.len() {
            return Err(GlobError::ClassTrailingBackslash);
        }
    }
    j += 1;
    if j >= chars.len() {
        return Err(GlobError::UnterminatedClass);
    }
    Ok(j)
}

/// Check a pattern as Go's `filepath.Match` would: well-formed classes, no trailing lone `\`.
fn validate(p: &str) -> Result<(), GlobError> {
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err(GlobError::TrailingBackslash);
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut nrange = 0;
                loop {
                    if chars.get(i) == Some(&']') && nrange > 0 {
                        i += 1;
                        break;
                    }
                    i = class_char(&chars, i)?;
                    if chars.get(i) == Some(&'-') {
                        i = class_char(&chars, i + 1)?;
                    }
                    nrange += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The anchored regular expression for one (cleaned) pattern.
fn to_regex(p: &str) -> String {
    let chars: Vec<char> = p.chars().collect();
    let mut re = String::from("^");
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_class {
            // Inside a class, as Go reads it: `]` closes it (never first: `validate`), `^`
            // first negates, `-` makes a range, `\` escapes, anything else is itself.
            match c {
                ']' => {
                    in_class = false;
                    re.push(']');
                }
                '^' if re.ends_with('[') => re.push('^'),
                '-' => re.push('-'),
                '\\' if i + 1 < chars.len() => {
                    re.push_str(&regex::escape(&chars[i + 1].to_string()));
                    i += 1;
                }
                c => re.push_str(&regex::escape(&c.to_string())),
            }
            i += 1;
            continue;
        }
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    re.push_str(".*");
                } else {
                    re.push_str("(.*/)?");
                }
                continue;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                in_class = true;
                re.push('[');
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' | '^' | ']' => {
                re.push('\\');
                re.push(c);
            }
            '\\' => {
                if let Some(&n) = chars.get(i + 1) {
                    re.push_str(&regex::escape(&n.to_string()));
                    i += 2;
                    continue;
                }
                re.push_str("\\\\");
            }
            c => re.push(c),
        }
        i += 1;
    }
    re.push('$');
    re
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Glob::new(p).unwrap().is_match(n)
    }

    #[test]
    fn one_component_is_go_filepath_match() {
        for (p, n, want) in [
            ("*.go", "a.go", true),
            ("*.go", "a.rs", false),
            ("f*.go", "foo.go", true),
            ("?", "a", true),
            ("?", "ab", false),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("[^a-c]x", "dx", true),
            // Go negates a class with `^` only: `[!a-c]` is `!` or a to c.
            ("[!a-c]x", "dx", false),
            ("[!a-c]x", "!x", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("*", ".hidden", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("a.c", "abc", false),
            ("(x)|y", "(x)|y", true),
            // Outside a class `^` is itself, with or without a wildcard beside it.
            ("a^b", "a^b", true),
            ("a^*", "a^b", true),
            ("a^*", "ab", false),
            // In a class, `*`, `?`, `[` and `^` (not first) are themselves.
            ("[*?]x", "*x", true),
            ("[*?]x", "?x", true),
            ("[*?]x", "ax", false),
            ("[a^]", "^", true),
            ("[[]", "[", true),
            ("[\\]]", "]", true),
            // A plain name is compared, not compiled: still whole-path and exact.
            (".git", ".git", true),
            (".git", "x.git", false),
            (".git", ".gitignore", false),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
        ] {
            assert_eq!(m(p, n), want, "{p} vs {n}");
        }
        for bad in ["[", "[a-", "a\\", "[]"] {
            assert!(Glob::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn double_star_spans_directories_and_star_does_not() {
        assert!(m("a/*/c", "a/b/c"));
        assert!(!m("a/*", "a/b/c"));
        assert!(m("**/c", "c"));
        assert!(m("**/c", "a/b/c"));
        assert!(m("a**/b", "ab"));
        assert!(m("a**/b", "a/x/y/b"));
        assert!(m("a/**", "a/b/c"));
    }

    #[test]
    fn matching_time_does_not_explode() {
        // A backtracking matcher takes exponential time on this; the regex engine does not.
        let p = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let name = "a".repeat(5000);
        assert!(!m(p, &name));
    }
}
