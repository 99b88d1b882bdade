//! The line parser: Dockerfile text to a syntax tree, with BuildKit's exact line rules.
//!
//! This layer knows physical lines, parser directives, comments, continuations, heredoc bodies,
//! builder flags and how each keyword splits its arguments. It knows nothing of what an
//! instruction means: unknown keywords are kept (and rejected by [`super::instructions`]), no
//! variable is expanded. Every node records the byte span of all the physical lines it consumed.

use super::diagnostic::Diagnostic;
use super::source::{Source, Span};

/// Longest physical line accepted, as in BuildKit.
pub const MAX_LINE_LEN: usize = 65535;

/// A parsed Dockerfile: directives, instructions in order, and parser warnings.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    pub source: Source,
    /// The escape character: `\` or `` ` ``.
    pub escape: char,
    pub directives: Vec<Directive>,
    pub nodes: Vec<Node>,
    pub warnings: Vec<ParseWarning>,
}

/// A parser directive (`# syntax=…`, `# escape=…`, `# check=…`) from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lowercased name.
    pub name: String,
    pub value: String,
    pub line: usize,
    pub span: Span,
}

/// A warning found while parsing lines (an empty continuation line).
#[derive(Debug, Clone)]
pub struct ParseWarning {
    pub rule: &'static str,
    pub message: String,
    pub detail: String,
    pub span: Span,
}

/// A builder flag as written before the arguments (`--mount=type=cache,target=/x`), with quotes
/// and escape characters removed as BuildKit does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub text: String,
    pub span: Span,
}

/// A heredoc attached to RUN, COPY or ADD (or to an ONBUILD holding one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word with quotes removed.
    pub name: String,
    /// The raw body: every line with its newline, leading tabs kept even when `chomp`.
    pub content: String,
    /// False when any part of the terminator word was quoted.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body (and from the terminator line).
    pub chomp: bool,
    /// The file descriptor before `<<` (`3<<EOF`), 0 when absent.
    pub fd: u32,
}

impl Heredoc {
    /// The body with leading tabs removed from every line when `chomp` is set.
    pub fn chomped(&self) -> String {
        if self.chomp {
            chomp_tabs(&self.content)
        } else {
            self.content.clone()
        }
    }
}

/// Remove leading tabs from every line.
pub fn chomp_tabs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

/// One instruction of the syntax tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// The keyword as written (`run`, `RUN`, `Copy`, or an unknown word).
    pub keyword: String,
    pub keyword_span: Span,
    pub flags: Vec<Flag>,
    /// Argument nodes, split the way BuildKit splits them for this keyword (see the dump).
    pub args: Vec<String>,
    /// The arguments came from a JSON array (exec form).
    pub json: bool,
    /// ONBUILD's trigger instruction.
    pub trigger: Option<Box<Node>>,
    pub heredocs: Vec<Heredoc>,
    /// The logical line after continuations are joined.
    pub original: String,
    /// The argument text after the flags, trimmed.
    pub rest: String,
    pub rest_span: Span,
    /// All the physical lines the instruction consumed, heredoc bodies included.
    pub span: Span,
    pub start_line: usize,
    pub end_line: usize,
    /// The comment lines directly above (text after `#`, trimmed), for descriptions and
    /// per-instruction `# check=` comments.
    pub comments: Vec<String>,
}

impl Node {
    /// The keyword in upper case, as instruction names are compared.
    pub fn name(&self) -> String {
        self.keyword.to_ascii_uppercase()
    }

    /// The flag names used (`mount` for `--mount=…`).
    pub fn flag_names(&self) -> Vec<String> {
        self.flags
            .iter()
            .map(|f| {
                let t = f.text.trim_start_matches("--");
                t.split('=').next().unwrap_or(t).to_string()
            })
            .collect()
    }
}

/// Maps offsets in a logical (joined) line back to byte offsets in the source.
#[derive(Debug, Clone, Default)]
struct LineMap {
    /// (offset in the logical line, offset in the source), ascending.
    segments: Vec<(usize, usize)>,
    end: usize,
}

impl LineMap {
    fn push(&mut self, logical: usize, src: usize) {
        self.segments.push((logical, src));
    }

    fn to_src(&self, pos: usize) -> usize {
        let i = match self.segments.binary_search_by(|(l, _)| l.cmp(&pos)) {
            Ok(i) => i,
            Err(0) => return self.segments.first().map(|s| s.1).unwrap_or(0),
            Err(i) => i - 1,
        };
        let (l, s) = self.segments[i];
        s + (pos - l)
    }

    fn span(&self, start: usize, end: usize) -> Span {
        if start == end {
            let s = self.to_src(start);
            return Span::new(s, s);
        }
        // The end maps through the last character, so a range ending on a joined line does
        // not spill onto the next.
        Span::new(self.to_src(start), self.to_src(end - 1) + 1).clamp(self.end)
    }
}

impl Span {
    fn clamp(self, max: usize) -> Span {
        Span::new(self.start.min(max), self.end.min(max))
    }
}

struct Line {
    start: usize,
    /// End of the content, before `\r` and `\n`.
    end: usize,
    /// End including the newline.
    end_nl: usize,
}

fn split_lines(text: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let nl = text[start..].find('\n').map(|i| start + i);
        let end_nl = nl.map(|i| i + 1).unwrap_or(bytes.len());
        let mut end = nl.unwrap_or(bytes.len());
        while end > start && (bytes[end - 1] == b'\r' || bytes[end - 1] == b'\n') {
            end -= 1;
        }
        lines.push(Line { start, end, end_nl });
        start = end_nl;
    }
    lines
}

fn trim_left_ws(s: &str) -> &str {
    s.trim_start()
}

fn is_comment(line: &str) -> bool {
    trim_left_ws(line).starts_with('#')
}

/// BuildKit's `[\t\v\f\r ]`.
fn is_split_ws(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

struct DirectiveScanner {
    done: bool,
    seen: Vec<String>,
}

impl DirectiveScanner {
    /// `^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$`
    fn match_directive(line: &str) -> Option<(String, String)> {
        let rest = line.strip_prefix('#')?;
        let rest = rest.trim_start_matches([' ', '\t']);
        let key_len = rest
            .char_indices()
            .take_while(|(i, c)| {
                if *i == 0 {
                    c.is_ascii_alphabetic()
                } else {
                    c.is_ascii_alphanumeric()
                }
            })
            .count();
        if key_len == 0 {
            return None;
        }
        let key = &rest[..key_len];
        let rest = rest[key_len..].trim_start_matches([' ', '\t']);
        let rest = rest.strip_prefix('=')?;
        let value = rest.trim_matches([' ', '\t']);
        if value.is_empty() {
            return None;
        }
        Some((key.to_ascii_lowercase(), value.to_string()))
    }
}

/// Scan the leading lines of `text` for parser directives the way [`parse`] does, without
/// parsing instructions. Returns (name, value) pairs in order.
pub fn scan_directives(text: &str) -> Result<Vec<(String, String)>, Diagnostic> {
    let src = Source::new("", text);
    let mut p = Parser::new(&src);
    for i in 0..p.lines.len() {
        if p.scanner.done {
            break;
        }
        let (raw, start) = p.line_str(i);
        let t = trim_left_ws(raw);
        p.possible_directive(t, i, Span::new(start, start + raw.len()))?;
    }
    Ok(p.directives
        .into_iter()
        .map(|d| (d.name, d.value))
        .collect())
}

/// Parse a Dockerfile. Errors carry the source.
pub fn parse(source: &Source) -> Result<Dockerfile, Diagnostic> {
    // A NUL byte is never text: refuse it at its line rather than let it reach a word, a
    // path or a process argument (where it would be cut or rejected far from its cause).
    if let Some(at) = source.text().find('\0') {
        return Err(
            Diagnostic::new("NUL byte in the Dockerfile", Span::new(at, at + 1))
                .with_hint(
                    "a Dockerfile is text; is this a binary file, or UTF-16 (save it as UTF-8)?",
                )
                .with_source(source),
        );
    }
    Parser::new(source).run().map_err(|e| e.with_source(source))
}

struct Parser<'a> {
    src: &'a Source,
    text: &'a str,
    lines: Vec<Line>,
    escape: char,
    directives: Vec<Directive>,
    scanner: DirectiveScanner,
}

impl<'a> Parser<'a> {
    fn new(src: &'a Source) -> Self {
        let text = src.text();
        Parser {
            src,
            text,
            lines: split_lines(text),
            escape: '\\',
            directives: Vec::new(),
            scanner: DirectiveScanner {
                done: false,
                seen: Vec::new(),
            },
        }
    }

    fn line_str(&self, i: usize) -> (&'a str, usize) {
        let l = &self.lines[i];
        let mut start = l.start;
        if i == 0 && self.text[start..].starts_with('\u{feff}') {
            start += '\u{feff}'.len_utf8();
        }
        let start = start.min(l.end);
        (&self.text[start..l.end], start)
    }

    fn line_span(&self, first: usize, last: usize) -> Span {
        let s = self
            .lines
            .get(first)
            .map(|l| l.start)
            .unwrap_or(self.text.len());
        let e = self
            .lines
            .get(last)
            .map(|l| l.end)
            .unwrap_or(self.text.len());
        Span::new(s, e)
    }

    fn check_len(&self, i: usize) -> Result<(), Diagnostic> {
        let l = &self.lines[i];
        if l.end - l.start > MAX_LINE_LEN {
            return Err(Diagnostic::new(
                format!("dockerfile line greater than max allowed size of {MAX_LINE_LEN}"),
                Span::new(l.start, l.start),
            ));
        }
        Ok(())
    }

    /// Feed a line (leading whitespace already trimmed) to the directive scanner.
    fn possible_directive(&mut self, line: &str, idx: usize, span: Span) -> Result<(), Diagnostic> {
        if self.scanner.done {
            return Ok(());
        }
        let Some((key, value)) = DirectiveScanner::match_directive(line) else {
            self.scanner.done = true;
            return Ok(());
        };
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.scanner.done = true;
            return Ok(());
        }
        if self.scanner.seen.contains(&key) {
            return Err(Diagnostic::new(
                format!("only one {key} parser directive can be used"),
                span,
            ));
        }
        self.scanner.seen.push(key.clone());
        if key == "escape" {
            match value.as_str() {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                _ => {
                    return Err(Diagnostic::new(
                        format!("invalid escape token '{value}' does not match ` or \\"),
                        span,
                    )
                    .with_hint("use `# escape=\\` (the default) or `# escape=``"))
                }
            }
        }
        self.directives.push(Directive {
            name: key,
            value,
            line: idx + 1,
            span,
        });
        Ok(())
    }

    /// If `line` ends with the escape character (and trailing blanks) that is not itself
    /// escaped, return the line without them.
    fn trim_continuation<'s>(&self, line: &'s str) -> Option<&'s str> {
        let t = line.trim_end_matches([' ', '\t']);
        let e = self.escape;
        let body = t.strip_suffix(e)?;
        if body.ends_with(e) {
            return None;
        }
        Some(body)
    }

    fn run(mut self) -> Result<Dockerfile, Diagnostic> {
        let mut nodes = Vec::new();
        let mut warnings = Vec::new();
        let mut comments: Vec<String> = Vec::new();
        let mut i = 0;
        let n = self.lines.len();
        while i < n {
            self.check_len(i)?;
            let (raw, raw_start) = self.line_str(i);
            let first = i;
            i += 1;
            if is_comment(raw) {
                let c = trim_left_ws(raw)[1..].trim();
                if c.is_empty() {
                    comments.clear();
                } else {
                    comments.push(c.to_string());
                }
            }
            let trimmed = trim_left_ws(raw);
            let lead = raw.len() - trimmed.len();
            let content_start = raw_start + lead;
            self.possible_directive(
                trimmed,
                first,
                Span::new(content_start, raw_start + raw.len()),
            )?;
            let content = if is_comment(trimmed) { "" } else { trimmed };

            let mut map = LineMap::default();
            let mut line = String::with_capacity(content.len() + 64);
            map.push(0, content_start);
            let mut continued = match self.trim_continuation(content) {
                Some(body) => {
                    line.push_str(body);
                    true
                }
                None => {
                    line.push_str(content);
                    false
                }
            };
            if !continued && line.is_empty() {
                continue;
            }
            let mut empty_continuation = false;
            let mut last = first;
            while continued && i < n {
                self.check_len(i)?;
                let (raw, raw_start) = self.line_str(i);
                last = i;
                i += 1;
                if is_comment(raw) {
                    continue;
                }
                if trim_left_ws(raw).is_empty() {
                    empty_continuation = true;
                    continue;
                }
                map.push(line.len(), raw_start);
                match self.trim_continuation(raw) {
                    Some(body) => line.push_str(body),
                    None => {
                        line.push_str(raw);
                        continued = false;
                    }
                }
            }
            map.end = self.text.len();
            let logical_span = self.line_span(first, last);
            if empty_continuation {
                warnings.push(ParseWarning {
                    rule: "NoEmptyContinuation",
                    message: format!("Empty continuation line found in: {line}"),
                    detail: "Empty continuation lines will become errors in a future release"
                        .to_string(),
                    span: logical_span,
                });
            }

            let mut node = node_from_line(&line, 0, &map, self.escape).map_err(|e| {
                if e.span == Span::default() {
                    Diagnostic {
                        span: logical_span,
                        ..e
                    }
                } else {
                    e
                }
            })?;
            node.comments = std::mem::take(&mut comments);

            if can_contain_heredoc(&node) && line.contains("<<") {
                let docs = heredocs_from_line(&line)
                    .map_err(|m| Diagnostic::new(m.to_string(), logical_span))?;
                for mut doc in docs {
                    let mut terminated = false;
                    let mut content = String::new();
                    while i < n {
                        let l = &self.lines[i];
                        let body_line = &self.text[l.start..l.end_nl];
                        last = i;
                        i += 1;
                        let mut candidate = &self.text[l.start..l.end];
                        if doc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        content.push_str(body_line);
                    }
                    if !terminated {
                        return Err(Diagnostic::new(
                            "unterminated heredoc",
                            self.line_span(first, last),
                        )
                        .with_hint(format!(
                            "end the heredoc with a line that is exactly `{}`",
                            doc.name
                        )));
                    }
                    doc.content = content;
                    node.heredocs.push(doc);
                }
            }
            node.span = self.line_span(first, last);
            node.start_line = first + 1;
            node.end_line = last + 1;
            nodes.push(node);
        }

        if nodes.is_empty() {
            return Err(Diagnostic::new(
                "file with no instructions",
                Span::new(0, self.text.len().min(1)),
            )
            .with_hint("a Dockerfile needs at least a FROM instruction"));
        }
        let _ = self.src;
        Ok(Dockerfile {
            source: self.src.clone(),
            escape: self.escape,
            directives: self.directives,
            nodes,
            warnings,
        })
    }
}

fn can_contain_heredoc(node: &Node) -> bool {
    let node = match (&node.trigger, node.name().as_str()) {
        (Some(t), "ONBUILD") => t.as_ref(),
        _ => node,
    };
    matches!(node.name().as_str(), "RUN" | "COPY" | "ADD") && !node.json
}

/// Build a node from a logical line (or from the text of an ONBUILD trigger, at `base`).
fn node_from_line(
    line: &str,
    base: usize,
    map: &LineMap,
    escape: char,
) -> Result<Node, Diagnostic> {
    let lead = line.len() - line.trim_start().len();
    let trimmed = line.trim();
    let kw_len = trimmed.find(is_split_ws).unwrap_or(trimmed.len());
    let keyword = &trimmed[..kw_len];
    let kw_start = base + lead;
    let keyword_span = map.span(kw_start, kw_start + kw_len);
    let mut flags = Vec::new();
    let mut rest_start = kw_start + kw_len;
    let mut rest_text = "";
    if kw_len < trimmed.len() {
        let after = &trimmed[kw_len..];
        let skip = after.len() - after.trim_start_matches(is_split_ws).len();
        let args_text = &after[skip..];
        let args_base = kw_start + kw_len + skip;
        let (consumed, raw_flags) = if args_text.trim_start().starts_with("--") {
            extract_flags(args_text, escape)
        } else {
            (0, Vec::new())
        };
        for (s, e, text) in raw_flags {
            flags.push(Flag {
                text,
                span: map.span(args_base + s, args_base + e),
            });
        }
        let r = &args_text[consumed..];
        let r_lead = r.len() - r.trim_start().len();
        rest_text = r.trim();
        rest_start = args_base + consumed + r_lead;
    }
    let rest_span = map.span(rest_start, rest_start + rest_text.len());
    let mut node = Node {
        keyword: keyword.to_string(),
        keyword_span,
        flags,
        args: Vec::new(),
        json: false,
        trigger: None,
        heredocs: Vec::new(),
        original: line.to_string(),
        rest: rest_text.to_string(),
        rest_span,
        span: map.span(kw_start, base + line.len()),
        start_line: 0,
        end_line: 0,
        comments: Vec::new(),
    };
    let err = |m: String| Diagnostic::new(m, rest_span);
    match keyword.to_ascii_lowercase().as_str() {
        "run" | "cmd" | "entrypoint" | "shell" => {
            if !rest_text.is_empty() {
                match parse_json_array(rest_text) {
                    JsonArray::Strings(v) => {
                        node.args = v;
                        node.json = true;
                    }
                    JsonArray::NotStrings => return Err(err(not_string_array())),
                    JsonArray::NotJson => node.args = vec![rest_text.to_string()],
                }
            }
        }
        "add" | "copy" | "volume" => match parse_json_array(rest_text) {
            JsonArray::Strings(v) => {
                node.args = v;
                node.json = true;
            }
            JsonArray::NotStrings => return Err(err(not_string_array())),
            JsonArray::NotJson => node.args = split_ws(rest_text),
        },
        "from" | "expose" => node.args = split_ws(rest_text),
        "user" | "workdir" | "maintainer" | "stopsignal" => {
            if !rest_text.is_empty() {
                node.args = vec![rest_text.to_string()];
            }
        }
        "arg" => node.args = parse_words(rest_text, escape),
        "env" | "label" => {
            node.args = parse_name_val(rest_text, &keyword.to_ascii_uppercase(), escape)
                .map_err(|e| err(e.to_string()))?
        }
        "healthcheck" => {
            let sep = rest_text
                .find(char::is_whitespace)
                .unwrap_or(rest_text.len());
            if sep > 0 {
                node.args.push(rest_text[..sep].to_string());
                let cmd = rest_text[sep..].trim_start();
                if !cmd.is_empty() {
                    match parse_json_array(cmd) {
                        JsonArray::Strings(v) => {
                            node.args.extend(v);
                            node.json = true;
                        }
                        JsonArray::NotStrings => return Err(err(not_string_array())),
                        JsonArray::NotJson => node.args.push(cmd.to_string()),
                    }
                }
            }
        }
        "onbuild" => {
            if !rest_text.is_empty() {
                let inner = node_from_line(rest_text, rest_start, map, escape)?;
                node.trigger = Some(Box::new(inner));
            }
        }
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

fn not_string_array() -> String {
    "when using JSON array syntax, arrays must be comprised of strings only".to_string()
}

enum JsonArray {
    Strings(Vec<String>),
    NotStrings,
    NotJson,
}

/// BuildKit's "maybe JSON": a strict JSON array of strings, or not JSON at all.
fn parse_json_array(text: &str) -> JsonArray {
    let t = text.trim_start();
    if !t.starts_with('[') {
        return JsonArray::NotJson;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(t) {
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return JsonArray::NotStrings,
                }
            }
            JsonArray::Strings(out)
        }
        Err(_) => JsonArray::NotJson,
    }
}

fn split_ws(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    text.split(is_split_ws)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Read builder flags (`--name=value` words) from the start of `line`. Returns how many bytes
/// were consumed and each flag as (start, end, text).
fn extract_flags(line: &str, escape: char) -> (usize, Vec<(usize, usize, String)>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut flags = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut word_start = 0;
    let mut blank_ok = false;
    let mut k = 0;
    loop {
        let at_end = k >= chars.len();
        let (pos, ch) = if at_end { (line.len(), '\0') } else { chars[k] };
        if phase == Phase::Spaces {
            if at_end {
                return (line.len(), flags);
            }
            if ch.is_whitespace() {
                k += 1;
                continue;
            }
            let next_dash = chars.get(k + 1).map(|c| c.1) == Some('-');
            if ch != '-' || !next_dash {
                return (pos, flags);
            }
            phase = Phase::Word;
            word_start = pos;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                flags.push((word_start, line.len(), word));
            }
            return (line.len(), flags);
        }
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    if word == "--" {
                        return (pos, flags);
                    }
                    if blank_ok || !word.is_empty() {
                        flags.push((word_start, pos, std::mem::take(&mut word)));
                    }
                    word.clear();
                    blank_ok = false;
                    phase = Phase::Spaces;
                    k += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                    k += 1;
                    continue;
                }
                if ch == escape {
                    if k + 1 == chars.len() {
                        k += 1;
                        continue;
                    }
                    k += 1;
                    word.push(chars[k].1);
                    k += 1;
                    continue;
                }
                word.push(ch);
                k += 1;
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                    k += 1;
                    continue;
                }
                if ch == escape {
                    if k + 1 == chars.len() {
                        phase = Phase::Word;
                        k += 1;
                        continue;
                    }
                    k += 1;
                    word.push(chars[k].1);
                    k += 1;
                    continue;
                }
                word.push(ch);
                k += 1;
            }
            Phase::Spaces => unreachable!("handled above"),
        }
    }
}

/// BuildKit's word splitter for ARG, ENV and LABEL: splits on unquoted whitespace, keeps quotes
/// and escapes in the words.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq, Clone, Copy)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut phase = Phase::Spaces;
    let mut blank_ok = false;
    let mut k = 0;
    loop {
        let at_end = k >= chars.len();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if chars[k].is_whitespace() {
                k += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        let ch = chars[k];
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    k += 1;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if k + 1 == chars.len() {
                        k += 1;
                        continue;
                    }
                    word.push(ch);
                    k += 1;
                    word.push(chars[k]);
                    k += 1;
                    continue;
                }
                word.push(ch);
                k += 1;
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                }
                if ch == escape && q != '\'' {
                    if k + 1 == chars.len() {
                        phase = Phase::Word;
                        k += 1;
                        continue;
                    }
                    word.push(ch);
                    k += 1;
                    word.push(chars[k]);
                    k += 1;
                    continue;
                }
                word.push(ch);
                k += 1;
            }
            Phase::Spaces => unreachable!("handled above"),
        }
    }
    words
}

/// ENV and LABEL arguments as (key, value, separator) triples, flattened.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, SyntaxError> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    if !words[0].contains('=') {
        let mut parts = rest.splitn(2, is_split_ws);
        let k = parts.next().unwrap_or("");
        let v = parts.next().map(|v| v.trim_start_matches(is_split_ws));
        return match v {
            Some(v) => Ok(vec![k.to_string(), v.to_string(), String::new()]),
            None => Err(SyntaxError::TwoArguments {
                keyword: key.to_string(),
            }),
        };
    }
    let mut out = Vec::with_capacity(words.len() * 3);
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(SyntaxError::NoEquals { word: w });
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

/// Split a line into shell words the way BuildKit's heredoc detection does: quotes and escapes
/// kept raw, `$` left alone, and a `<<` operator glued to the word after it.
fn heredoc_line_words(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k];
        if c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
            k += 1;
            continue;
        }
        in_word = true;
        match c {
            '\\' => {
                word.push(c);
                if let Some(&n) = chars.get(k + 1) {
                    word.push(n);
                    k += 1;
                }
                k += 1;
            }
            '\'' | '"' => {
                word.push(c);
                k += 1;
                while k < chars.len() && chars[k] != c {
                    if c == '"' && chars[k] == '\\' && k + 1 < chars.len() {
                        word.push(chars[k]);
                        k += 1;
                    }
                    word.push(chars[k]);
                    k += 1;
                }
                if k < chars.len() {
                    word.push(c);
                    k += 1;
                }
            }
            '<' if chars.get(k + 1) == Some(&'<') => {
                word.push_str("<<");
                k += 2;
                if chars.get(k) == Some(&'-') {
                    word.push('-');
                    k += 1;
                }
                while k < chars.len() && chars[k].is_whitespace() {
                    word.push(chars[k]);
                    k += 1;
                }
            }
            _ => {
                word.push(c);
                k += 1;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Find the heredocs that a RUN, COPY or ADD line opens.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, SyntaxError> {
    let mut docs = Vec::new();
    for w in heredoc_line_words(line) {
        if let Some(doc) = parse_heredoc_word(&w)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Classify one word: `^(\d*)<<(-?)\s*([^<]*)$` where the remainder is one shell word.
pub fn parse_heredoc_word(word: &str) -> Result<Option<Heredoc>, SyntaxError> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let rest = after.trim_start();
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let fd: u32 = if digits == 0 {
        0
    } else {
        word[..digits].parse().unwrap_or(u32::MAX)
    };
    let (name, quoted, count) = unquote_single_word(rest)?;
    if count != 1 {
        return Ok(None);
    }
    Ok(Some(Heredoc {
        name,
        content: String::new(),
        expand: !quoted,
        chomp,
        fd,
    }))
}

/// Shell-unquote `s` (no variable expansion). Returns the first word, whether any quoting was
/// used, and how many words there were.
fn unquote_single_word(s: &str) -> Result<(String, bool, usize), SyntaxError> {
    let chars: Vec<char> = s.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k];
        if c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
            k += 1;
            continue;
        }
        in_word = true;
        match c {
            '\\' => {
                if let Some(&n) = chars.get(k + 1) {
                    word.push(n);
                    k += 1;
                }
                k += 1;
            }
            '\'' => {
                quoted = true;
                k += 1;
                let start = k;
                while k < chars.len() && chars[k] != '\'' {
                    k += 1;
                }
                if k >= chars.len() {
                    return Err(SyntaxError::Unterminated { quote: "single" });
                }
                word.extend(&chars[start..k]);
                k += 1;
            }
            '"' => {
                quoted = true;
                k += 1;
                loop {
                    let Some(&d) = chars.get(k) else {
                        return Err(SyntaxError::Unterminated { quote: "double" });
                    };
                    k += 1;
                    if d == '"' {
                        break;
                    }
                    if d == '\\' {
                        if let Some(&n) = chars.get(k) {
                            if matches!(n, '"' | '$' | '\\') {
                                word.push(n);
                                k += 1;
                                continue;
                            }
                        }
                    }
                    word.push(d);
                }
            }
            _ => {
                word.push(c);
                k += 1;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    let n = words.len();
    Ok((words.into_iter().next().unwrap_or_default(), quoted, n))
}

/// Go's `strconv.Quote`, which the BuildKit dump format uses.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            ' ' => out.push(' '),
            c if go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint` minus ASCII space (handled by the caller): letters, marks, numbers,
/// punctuation and symbols. Approximated with the categories Rust exposes.
fn go_printable(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_graphic();
    }
    if c.is_whitespace() || c.is_control() {
        return false;
    }
    // Format characters, surrogates and private use and unassigned code points are not printable.
    let u = c as u32;
    let format = matches!(u, 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff | 0xfff9..=0xfffb
        | 0x110bd | 0x1d173..=0x1d17a | 0xe0001 | 0xe0020..=0xe007f);
    let private = matches!(u, 0xe000..=0xf8ff | 0xf0000..=0xffffd | 0x100000..=0x10fffd);
    let nonchar = (u & 0xfffe) == 0xfffe || (0xfdd0..=0xfdef).contains(&u);
    !(format || private || nonchar)
}

/// The BuildKit parser's AST dump (the `result` files of its test data), without the final
/// newline.
pub fn dump(df: &Dockerfile) -> String {
    let mut out = String::new();
    for n in &df.nodes {
        out.push('(');
        out.push_str(&dump_node(n));
        out.push_str(")\n");
    }
    out.trim().to_string()
}

fn dump_node(n: &Node) -> String {
    let mut s = n.keyword.to_lowercase();
    if !n.flags.is_empty() {
        let q: Vec<String> = n.flags.iter().map(|f| go_quote(&f.text)).collect();
        s.push_str(&format!(" [{}]", q.join(" ")));
    }
    if let Some(t) = &n.trigger {
        s.push_str(&format!(" ({})", dump_node(t)));
    }
    for a in &n.args {
        s.push(' ');
        s.push_str(&go_quote(a));
    }
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Dockerfile {
        parse(&Source::new("Dockerfile", text)).unwrap()
    }

    #[test]
    fn continuation_joins_without_separator_and_keeps_indent() {
        let df = p("RUN echo hello\\\n  world\nRUN echo good\\\nbye\n");
        assert_eq!(df.nodes[0].args, vec!["echo hello  world"]);
        assert_eq!(df.nodes[1].args, vec!["echo goodbye"]);
        assert_eq!((df.nodes[0].start_line, df.nodes[0].end_line), (1, 2));
    }

    #[test]
    fn escaped_escape_does_not_continue() {
        let df = p("RUN echo \\\\\nRUN x\n");
        assert_eq!(df.nodes.len(), 2);
    }

    #[test]
    fn flags_drop_quotes_and_stop_at_double_dash() {
        let df = p("COPY --chown=\"a b\" -- --x /y\n");
        assert_eq!(df.nodes[0].flags[0].text, "--chown=a b");
        assert_eq!(df.nodes[0].args, vec!["--x", "/y"]);
    }

    #[test]
    fn flag_spans_point_into_the_source() {
        let src = "FROM a\nRUN \\\n  --mount=type=cache,target=/x true\n";
        let df = p(src);
        let f = &df.nodes[1].flags[0];
        assert_eq!(
            &src[f.span.start..f.span.end],
            "--mount=type=cache,target=/x"
        );
    }

    #[test]
    fn heredoc_bodies_are_raw_and_ordered() {
        let df = p("COPY <<X <<Y /dest\nY\nX\nX\nY\n");
        let h = &df.nodes[0].heredocs;
        assert_eq!((h[0].name.as_str(), h[0].content.as_str()), ("X", "Y\n"));
        assert_eq!((h[1].name.as_str(), h[1].content.as_str()), ("Y", "X\n"));
    }

    #[test]
    fn heredoc_in_onbuild_and_fd() {
        let df = p("ONBUILD RUN 3<<IN cat <&3\nhi\nIN\n");
        assert_eq!(df.nodes[0].heredocs[0].fd, 3);
        assert_eq!(df.nodes[0].heredocs[0].content, "hi\n");
    }

    #[test]
    fn unterminated_heredoc_is_an_error() {
        let e = parse(&Source::new("Dockerfile", "FROM a\nRUN <<EOF\necho\n")).unwrap_err();
        assert!(e.message.contains("unterminated heredoc"));
        assert_eq!(e.position().unwrap().line, 2);
    }

    #[test]
    fn go_quote_matches_strconv() {
        assert_eq!(go_quote("a\"b\\c\n\u{0}\u{7f}"), r#""a\"b\\c\n\x00\x7f""#);
        assert_eq!(go_quote("♥한"), "\"♥한\"");
        assert_eq!(go_quote("\u{a0}"), "\"\\u00a0\"");
    }

    #[test]
    fn nul_bytes_are_an_error_at_their_line_and_a_final_backslash_is_dropped() {
        let e = parse(&Source::new("Dockerfile", "FROM scratch\nENV A=1\0x\n")).unwrap_err();
        assert!(e.message.contains("NUL byte"), "{}", e.message);
        assert_eq!(e.position().map(|p| (p.line, p.column)), Some((2, 8)));
        // As BuildKit: a continuation at the end of the file ends the instruction.
        let df = p("FROM scratch\nRUN echo a \\");
        assert_eq!(df.nodes[1].args, vec!["echo a"]);
        let df = p("FROM scratch\nRUN echo a \\\n");
        assert_eq!(df.nodes[1].args, vec!["echo a"]);
    }

    #[test]
    fn crlf_and_bom() {
        let df = p("\u{feff}# escape=`\r\nFROM a\r\nRUN x `\r\n  y\r\n");
        assert_eq!(df.escape, '`');
        assert_eq!(df.nodes[1].args, vec!["x   y"]);
    }
}

/// A line's arguments that do not parse (ENV and LABEL pairs, heredoc words), before a span
/// is attached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// ENV or LABEL in the old `KEY value` form without a value.
    #[error("{keyword} must have two arguments")]
    TwoArguments { keyword: String },
    #[error("Syntax error - can't find = in {word:?}. Must be of the form: name=value")]
    NoEquals { word: String },
    /// `quote` is "single" or "double".
    #[error("unexpected end of statement while looking for matching {quote}-quote")]
    Unterminated { quote: &'static str },
}
