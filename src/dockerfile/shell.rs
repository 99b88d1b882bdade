//! Variable expansion with Docker's semantics (BuildKit's shell lexer).
//!
//! `$VAR`, `${VAR}`, the `:-  -  :+  +  :?  ?` modifiers, `#  ##  %  %%` prefix and suffix removal
//! and `/  //` replacement with shell patterns, single and double quotes and the escape
//! character. Expansion is pure: the caller passes the variables an instruction sees.

use std::collections::BTreeSet;

/// The most one word may expand to (a variable's value included): a Dockerfile cannot make a
/// build allocate without bound (a chain of self-doubling ARGs is stopped at its 21st line).
pub const MAX_EXPANSION: usize = 1 << 20;
/// The longest value the pattern modifiers (`#`, `%`, `/`) work on: shell patterns with `*`
/// take time quadratic in the value's length.
pub const MAX_PATTERN_SUBJECT: usize = 16 << 10;
/// The most all the words of one walk through a Dockerfile (a build, a lint pass) may grow by
/// expansion, beyond the text they are written as: the per-word limit alone let 1,500
/// `LABEL lN=$a10` lines (25 KB, each word just under 1 MiB) make a build take 7.5 GB and a
/// 1.5 GB config. Real Dockerfiles expand by kilobytes.
pub const MAX_TOTAL_EXPANSION: usize = 16 << 20;

/// What the words of one walk have grown by so far, shared by the scopes (and threads) of that
/// walk; see [`MAX_TOTAL_EXPANSION`].
#[derive(Debug, Clone, Default)]
pub struct Budget(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Budget {
    /// Count a word written as `written` bytes that expanded to `expanded`; an error once the
    /// walk's words have grown past the limit.
    pub fn charge(&self, written: usize, expanded: usize) -> Result<(), ShellError> {
        let grown = expanded.saturating_sub(written);
        if grown == 0 {
            return Ok(());
        }
        let before = self
            .0
            .fetch_add(grown, std::sync::atomic::Ordering::Relaxed);
        if before.saturating_add(grown) > MAX_TOTAL_EXPANSION {
            return Err(ShellError(format!(
                "the words of this Dockerfile expand to more than {} MiB beyond what is written, the limit for a whole build (this word adds {grown} bytes; a large variable used on many lines?)",
                MAX_TOTAL_EXPANSION >> 20
            )));
        }
        Ok(())
    }

    /// The bytes the words have grown by so far.
    pub fn used(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Expand `w` against `env` as [`Lexer::process_word_with_matches`] does, counted; once the
    /// budget is spent, every word with a `$` is an error before any expansion work.
    pub fn process_word(
        &self,
        lexer: &Lexer,
        w: &str,
        env: &dyn Lookup,
    ) -> Result<(String, Matches), ShellError> {
        if self.used() > MAX_TOTAL_EXPANSION && w.contains('$') {
            return Err(ShellError(format!(
                "the words of this Dockerfile expand to more than {} MiB beyond what is written, the limit for a whole build",
                MAX_TOTAL_EXPANSION >> 20
            )));
        }
        let (v, m) = lexer.process_word_with_matches(w, env)?;
        self.charge(w.len(), v.len())?;
        Ok((v, m))
    }
}

/// Variables visible to an expansion.
pub trait Lookup {
    fn lookup(&self, name: &str) -> Option<&str>;
}

/// An ordered environment where the last entry for a name wins (`NAME=value` semantics).
impl Lookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Lookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl Lookup for std::collections::BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// An environment with no variables.
pub struct NoVars;

impl Lookup for NoVars {
    fn lookup(&self, _: &str) -> Option<&str> {
        None
    }
}

/// Parse a `NAME=value` list the way Docker does: an entry without `=` defines an empty value.
pub fn env_from_list<S: AsRef<str>>(list: &[S]) -> Vec<(String, String)> {
    list.iter()
        .map(|e| {
            let e = e.as_ref();
            match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.to_string(), String::new()),
            }
        })
        .collect()
}

/// An expansion failed: a syntax error in `${…}` or a `${VAR:?message}` that fired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShellError(pub String);

/// Which variable names an expansion looked up and found, and which it did not find.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matches {
    pub matched: BTreeSet<String>,
    pub unmatched: BTreeSet<String>,
}

/// How to expand.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    pub escape: char,
    /// Leave unset variables as written (`$X`, `${X:-y}`) instead of expanding them to empty.
    pub skip_unset: bool,
    /// Treat quotes as ordinary characters (heredoc bodies: the quotes belong to the script).
    pub skip_quotes: bool,
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            skip_unset: false,
            skip_quotes: false,
        }
    }

    /// Text with nothing to expand, unquote or unescape comes out unchanged.
    fn is_plain(&self, input: &str) -> bool {
        !input.contains(['$', '\'', '"', self.escape])
    }

    /// Expand as one word: quotes removed, no field splitting.
    pub fn process_word(&self, input: &str, env: &dyn Lookup) -> Result<String, ShellError> {
        self.process_word_with_matches(input, env).map(|(w, _)| w)
    }

    pub fn process_word_with_matches(
        &self,
        input: &str,
        env: &dyn Lookup,
    ) -> Result<(String, Matches), ShellError> {
        if self.is_plain(input) {
            return Ok((input.to_string(), Matches::default()));
        }
        let mut sw = ShellWord::new(self, input, env);
        let (word, _) = sw.process_stop_on(None, false)?;
        Ok((word, sw.matches))
    }

    /// Expand and split into words on unquoted whitespace, including whitespace that an
    /// unquoted variable expands to.
    pub fn process_words(&self, input: &str, env: &dyn Lookup) -> Result<Vec<String>, ShellError> {
        if self.is_plain(input) {
            return Ok(input.split_whitespace().map(str::to_string).collect());
        }
        let mut sw = ShellWord::new(self, input, env);
        let (_, words) = sw.process_stop_on(None, false)?;
        Ok(words)
    }
}

struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct ShellWord<'a> {
    lx: &'a Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Lookup,
    matches: Matches,
    /// Bytes of variable values substituted so far.
    produced: usize,
}

/// Names that are never set in a build: positional and special parameters.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

impl<'a> ShellWord<'a> {
    fn new(lx: &'a Lexer, input: &str, env: &'a dyn Lookup) -> Self {
        ShellWord {
            lx,
            chars: input.chars().collect(),
            pos: 0,
            env,
            matches: Matches::default(),
            produced: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Result<Option<String>, ShellError> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matches.matched.insert(name.to_string());
                self.produced += v.len();
                if self.produced > MAX_EXPANSION {
                    return Err(too_long(name));
                }
                Ok(Some(v.to_string()))
            }
            None => {
                self.matches.unmatched.insert(name.to_string());
                Ok(None)
            }
        }
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ShellError> {
        let mut result = String::new();
        let mut words = Words {
            word: String::new(),
            words: Vec::new(),
            in_word: false,
        };
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            let special = match ch {
                '$' => true,
                '\'' | '"' => !self.lx.skip_quotes,
                _ => false,
            };
            if special {
                let tmp = match ch {
                    '\'' => self.process_single_quote()?,
                    '"' => self.process_double_quote()?,
                    _ => self.process_dollar()?,
                };
                result.push_str(&tmp);
                if result.len() > MAX_EXPANSION {
                    return Err(too_long_word());
                }
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
                continue;
            }
            let mut ch = self.next().unwrap_or_default();
            if ch == self.lx.escape {
                if raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                match self.next() {
                    None => break,
                    Some(c) => ch = c,
                }
                words.add_raw_char(ch);
            } else {
                words.add_char(ch);
            }
            result.push(ch);
        }
        if let Some(s) = stop {
            return Err(ShellError(format!(
                "unexpected end of statement while looking for matching {s}"
            )));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, ShellError> {
        self.next();
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(ShellError(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    ))
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, ShellError> {
        self.next();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ShellError(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    ))
                }
                Some('"') => {
                    self.next();
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    out.push_str(&v);
                    if out.len() > MAX_EXPANSION {
                        return Err(too_long_word());
                    }
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.lx.escape {
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lx.escape => {
                                ch = c;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }

    fn process_dollar(&mut self) -> Result<String, ShellError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name)? {
                Some(v) => v,
                None if self.lx.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(ShellError("syntax error: missing '}'".into())),
            Some('{' | '}' | ':') => {
                return Err(ShellError("syntax error: bad substitution".into()))
            }
            _ => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err(ShellError("syntax error: missing '}'".into()));
        };
        let mut chs = ch.to_string();
        match ch {
            '}' => Ok(match self.get_env(&name)? {
                Some(v) => v,
                None if self.lx.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let null_is_unset = ch == ':';
                if null_is_unset {
                    ch = self.next().unwrap_or('\0');
                    chs.push(ch);
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(ShellError(format!(
                        "unsupported modifier ({chs}) in substitution"
                    )));
                }
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ShellError("syntax error: missing '}'".into()));
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name)?;
                if self.lx.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let set = value.is_some();
                let value = value.unwrap_or_default();
                let unset = !set || (null_is_unset && value.is_empty());
                match ch {
                    '-' => Ok(if unset { word } else { value }),
                    '+' => Ok(if unset { String::new() } else { word }),
                    '?' => {
                        if !set {
                            let m = if word.is_empty() {
                                "is not allowed to be unset".to_string()
                            } else {
                                word
                            };
                            return Err(ShellError(format!("{name}: {m}")));
                        }
                        if null_is_unset && value.is_empty() {
                            let m = if word.is_empty() {
                                "is not allowed to be empty".to_string()
                            } else {
                                word
                            };
                            return Err(ShellError(format!("{name}: {m}")));
                        }
                        Ok(value)
                    }
                    '%' | '#' => {
                        let (greedy, pat) = match word.strip_prefix(ch) {
                            Some(p) => (true, p.to_string()),
                            None => (false, word.clone()),
                        };
                        let pattern = Pattern::compile(&pat).map_err(|e| {
                            ShellError(format!("invalid pattern ({pat}) in substitution: {e}"))
                        })?;
                        pattern_subject(&name, &value)?;
                        Ok(if ch == '#' {
                            pattern.trim_prefix(&value, greedy)
                        } else {
                            pattern.trim_suffix(&value, greedy)
                        })
                    }
                    _ => Err(ShellError(format!(
                        "unsupported modifier ({chs}) in substitution"
                    ))),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let pat = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ShellError("syntax error: missing '/' in ${}".into()));
                        }
                        return Err(e);
                    }
                };
                let repl = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ShellError("syntax error: missing '}'".into()));
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name)?;
                let Some(value) = value else {
                    if self.lx.skip_unset {
                        return Ok(format!("${{{name}/{pat}/{repl}}}"));
                    }
                    return Ok(String::new());
                };
                let pattern = Pattern::compile(&pat).map_err(|e| {
                    ShellError(format!("invalid pattern ({pat}) in substitution: {e}"))
                })?;
                pattern_subject(&name, &value)?;
                let out = pattern.replace(&value, &repl, all);
                if out.len() > MAX_EXPANSION {
                    return Err(too_long(&name));
                }
                Ok(out)
            }
            _ => Err(ShellError(format!(
                "unsupported modifier ({chs}) in substitution"
            ))),
        }
    }
}

fn too_long(name: &str) -> ShellError {
    ShellError(format!(
        "expanding ${name} makes this word longer than {} MiB, the limit (a variable that doubles itself on every line?)",
        MAX_EXPANSION >> 20
    ))
}

fn too_long_word() -> ShellError {
    ShellError(format!(
        "this word expands to more than {} MiB, the limit",
        MAX_EXPANSION >> 20
    ))
}

fn pattern_subject(name: &str, value: &str) -> Result<(), ShellError> {
    if value.len() > MAX_PATTERN_SUBJECT {
        return Err(ShellError(format!(
            "${name} is {} bytes: pattern substitutions work on values up to {} KiB",
            value.len(),
            MAX_PATTERN_SUBJECT >> 10
        )));
    }
    Ok(())
}

/// Check a shell pattern (`*`, `?`, and `\\` escaping a punctuation character) as used by the
/// `#`, `%` and `/` modifiers.
pub fn check_pattern(p: &str) -> Result<(), PatternError> {
    Pattern::compile(p).map(|_| ())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Star,
    One,
    Lit(char),
}

/// A shell pattern for `#`, `%` and `/`: `*`, `?`, and `\` escaping a punctuation character.
#[derive(Debug, Clone)]
struct Pattern(Vec<Tok>);

impl Pattern {
    fn compile(p: &str) -> Result<Pattern, PatternError> {
        let mut toks = Vec::new();
        let mut it = p.chars();
        while let Some(c) = it.next() {
            match c {
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::One),
                // An escaped punctuation character is literal (as a regular expression would take
                // it); an escaped letter or digit has no meaning and is an error.
                '\\' => match it.next() {
                    Some(e) if !e.is_alphanumeric() && !e.is_whitespace() => toks.push(Tok::Lit(e)),
                    Some(e) => return Err(PatternError::Escape { escaped: e }),
                    None => return Err(PatternError::TrailingBackslash),
                },
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Pattern(toks))
    }

    fn reversed(&self) -> Pattern {
        Pattern(self.0.iter().rev().copied().collect())
    }

    /// Ends `e` such that `s[start..e]` matches the whole pattern, ascending.
    fn match_ends(&self, s: &[char], start: usize) -> Vec<usize> {
        let toks = &self.0;
        // states[i]: pattern position i reachable; closure over stars.
        let close = |st: &mut Vec<bool>| {
            for i in 0..toks.len() {
                if st[i] && toks[i] == Tok::Star {
                    st[i + 1] = true;
                }
            }
        };
        let mut st = vec![false; toks.len() + 1];
        st[0] = true;
        close(&mut st);
        let mut ends = Vec::new();
        if st[toks.len()] {
            ends.push(start);
        }
        for (off, &c) in s[start..].iter().enumerate() {
            let mut nx = vec![false; toks.len() + 1];
            let mut any = false;
            for i in 0..toks.len() {
                if !st[i] {
                    continue;
                }
                match toks[i] {
                    Tok::Star => nx[i] = true,
                    Tok::One => nx[i + 1] = true,
                    Tok::Lit(l) if l == c => nx[i + 1] = true,
                    Tok::Lit(_) => {}
                }
            }
            close(&mut nx);
            for &b in &nx {
                any |= b;
            }
            if nx[toks.len()] {
                ends.push(start + off + 1);
            }
            if !any {
                break;
            }
            st = nx;
        }
        ends
    }

    fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let ends = self.match_ends(&chars, 0);
        let cut = if greedy { ends.last() } else { ends.first() };
        match cut {
            Some(&e) => chars[e..].iter().collect(),
            None => value.to_string(),
        }
    }

    fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let rev: String = value.chars().rev().collect();
        let out = self.reversed().trim_prefix(&rev, greedy);
        out.chars().rev().collect()
    }

    fn replace(&self, value: &str, repl: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut pos = 0;
        let mut last_match_end: Option<usize> = None;
        while pos <= chars.len() {
            let found = (pos..=chars.len()).find_map(|s| {
                let ends = self.match_ends(&chars, s);
                ends.last().map(|&e| (s, e))
            });
            let Some((s, e)) = found else { break };
            if s == e && last_match_end == Some(s) {
                // An empty match right after a match is ignored.
                if s < chars.len() {
                    out.push(chars[s]);
                }
                pos = s + 1;
                continue;
            }
            out.extend(&chars[pos..s]);
            out.push_str(repl);
            if out.len() > MAX_EXPANSION {
                // The caller refuses it; stop before a long replacement multiplies further.
                return out;
            }
            last_match_end = Some(e);
            if e == s {
                if s < chars.len() {
                    out.push(chars[s]);
                }
                pos = s + 1;
            } else {
                pos = e;
            }
            if !all {
                break;
            }
        }
        if pos <= chars.len() {
            out.extend(&chars[pos.min(chars.len())..]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion_is_bounded() {
        let lx = Lexer::new('\\');
        let half = "x".repeat(MAX_EXPANSION / 2 + 1);
        let e = env(&[("A", half.as_str())]);
        // One copy fits; two do not, and the error names the variable.
        assert_eq!(lx.process_word("$A", &e).unwrap().len(), half.len());
        let err = lx.process_word("$A$A", &e).unwrap_err();
        assert!(err.0.contains("$A") && err.0.contains("1 MiB"), "{}", err.0);
        assert!(lx.process_word("\"${A}${A}\"", &e).is_err());
        assert!(lx.process_words("$A $A", &e).is_err());
        // Pattern operations work on values up to 16 KiB (quadratic in the value otherwise).
        let big = "ab".repeat(MAX_PATTERN_SUBJECT);
        let e = env(&[("B", big.as_str()), ("S", "abcabc")]);
        let err = lx.process_word("${B//a/x}", &e).unwrap_err();
        assert!(
            err.0.contains("$B") && err.0.contains("16 KiB"),
            "{}",
            err.0
        );
        assert!(lx.process_word("${B%%b*}", &e).is_err());
        assert_eq!(lx.process_word("${S//b/-}", &e).unwrap(), "a-ca-c");
        // A replacement that multiplies a value past the limit stops (not 16 KiB × 64 KiB).
        let long = "y".repeat(64 << 10);
        let small = "z".repeat(MAX_PATTERN_SUBJECT);
        let e = env(&[("L", long.as_str()), ("Z", small.as_str())]);
        assert!(lx.process_word("${Z//z/$L}", &e).is_err());
    }

    #[test]
    fn modifiers() {
        let lx = Lexer::new('\\');
        let e = env(&[("A", "xxyy"), ("E", "")]);
        let w = |s: &str| lx.process_word(s, &e);
        assert_eq!(w("${A%%y*}").unwrap(), "xx");
        assert_eq!(w("${A%y*}").unwrap(), "xxy");
        assert_eq!(w("${A##*x}").unwrap(), "yy");
        assert_eq!(w("${E:-d}|${E-d}|${U-d}").unwrap(), "d||d");
        assert_eq!(w("${A/x/z}-${A//x/z}").unwrap(), "zxyy-zzyy");
        assert!(w("${E:?must be set}")
            .unwrap_err()
            .0
            .contains("E: must be set"));
        assert!(w("${A").is_err());
        assert!(w("${A=b}").is_err());
    }

    #[test]
    fn quotes_and_escapes() {
        let lx = Lexer::new('\\');
        let e = env(&[("X", "v")]);
        assert_eq!(
            lx.process_word(r#"'$X' "$X" \$X "a\tb""#, &e).unwrap(),
            r"$X v $X a\tb"
        );
        assert_eq!(lx.process_word("`$X", &e).unwrap(), "`v");
        let bt = Lexer::new('`');
        assert_eq!(bt.process_word("`$X", &e).unwrap(), "$X");
    }

    #[test]
    fn unquoted_expansion_splits_words() {
        let lx = Lexer::new('\\');
        let e = env(&[("S", "abc  def")]);
        assert_eq!(
            lx.process_words("hello${S}bye \"q $S\"", &e).unwrap(),
            vec!["helloabc", "defbye", "q abc  def"]
        );
    }

    #[test]
    fn skip_unset_keeps_text() {
        let lx = Lexer {
            skip_unset: true,
            ..Lexer::new('\\')
        };
        assert_eq!(
            lx.process_word("$A ${B} ${C:-x}", &NoVars).unwrap(),
            "$A ${B} ${C:-x}"
        );
    }
}

/// A shell pattern of `#`, `%` or `/` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A backslash before a letter, a digit or a space.
    #[error("invalid escape '\\{escaped}'")]
    Escape { escaped: char },
    #[error("trailing backslash")]
    TrailingBackslash,
}
