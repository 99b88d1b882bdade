//! BuildKit's Dockerfile integration tests (moby/buildkit `frontend/dockerfile/dockerfile_*_test.go`)
//! as data: every case in `tests/buildkit-cases/*.cases` is a Dockerfile, a context, the flags
//! of one or more builds and what each build must give, written from the assertions of the Go
//! test it names (`from`). The cases run on a busybox base made here from Debian's
//! busybox-static (tests/common), share one store and run in parallel; `make test` runs this
//! file as root and again as the unprivileged user strata-test.
//!
//! The format (one case after another; `#` starts a comment line):
//!
//! ```text
//! case NAME                 a case; NAME is unique in its file ("FILE/NAME" in reports)
//! from testGoFunction       the upstream test(s) it is ported from (required)
//! differs WHY               strata deliberately differs from BuildKit here (README lists it);
//!                           the expectations are strata's
//! needs TOOL                skip (said, never counted as passed) when TOOL is not on PATH
//! own-store                 run in a store of its own (for cache mounts with fixed ids)
//! dockerfile [NAME]         the Dockerfile (default name `Dockerfile`), as a `|` block
//! file PATH [mode=OCTAL] "TEXT" | block     a context file (a block's lines joined with \n,
//!                           no newline added at the end: add an empty `|` line for one)
//! dir PATH [mode=OCTAL]     symlink PATH TARGET     rm PATH      socket PATH
//! www PATH "TEXT" | block   a file served at @HTTP@/PATH by a server on 127.0.0.1
//! archive PATH [www] [gzip] a tar in the context (or served), its entries a block of lines:
//!                           `file NAME MODE TEXT`, `dir NAME MODE`, `symlink NAME TARGET`,
//!                           `hardlink NAME TARGET` (TEXT with the escapes of a "string")
//! env K=V                   in strata's environment (for --secret env=)
//! strata ARGS...            another strata command on the store (save, tag), which must work
//! build [FLAGS...]          a build of the context (flags as shell words); with `-t NAME`
//!                           it stores the image under NAME instead of writing the output
//! ```
//!
//! What the last build must give:
//!
//! ```text
//! fails "TEXT"              it fails, its output containing TEXT (without: it must succeed)
//! log "TEXT"  nolog "TEXT"  its output contains / does not contain TEXT
//! cached "STEP"  ran "STEP" every step whose name contains STEP came from the cache / ran
//! same-id  new-id           the image id is the previous build's / another
//! out PATH = "TEXT"         the root filesystem (--output type=tar) has file PATH with TEXT
//! out PATH ~ "TEXT"         ... a file PATH containing TEXT
//! out PATH missing          ... no PATH
//! out PATH file|dir|link [-> TARGET] [mode=OCTAL] [owner=UID:GID] [mtime=SECONDS]
//! config /POINTER = JSON    the image config's `config` object at the JSON pointer
//! config /POINTER has JSON  ... is an array holding JSON
//! config /POINTER absent
//! image /POINTER = JSON     the same on the whole image config (history, os, ...)
//! ```
//!
//! In every text, `@CTX@` is the context directory, `@DIR@` a directory of the case's own,
//! `@CASE@` a word unique to the case and the run (for cases that need a first build to
//! miss in the shared store), `@HTTP@` the URL of the case's files on the loopback server,
//! `@ECHO@` the port of a server on the host's 127.0.0.1 that answers "foo".
//!
//! `STRATA_CASES=WORD` runs only the cases whose "FILE/NAME" contains WORD;
//! `STRATA_CASE_JOBS=N` sets how many run at once (default 4).

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

// ---- the case files ------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Case {
    file: String,
    name: String,
    line: usize,
    from: Vec<String>,
    differs: Option<String>,
    needs: Vec<String>,
    /// Runs in a store of its own (cache mounts with fixed ids, prune).
    own_store: bool,
    ops: Vec<(usize, Op)>,
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        path: String,
        data: String,
        mode: Option<u32>,
    },
    Dir {
        path: String,
        mode: Option<u32>,
    },
    Symlink {
        path: String,
        target: String,
    },
    Socket(String),
    Remove(String),
    Www {
        path: String,
        data: String,
    },
    Env(String, String),
    /// A tar archive (gzip-compressed when `gzip`) at `path` in the context or, with `www`,
    /// on the file server; its entries are lines of the block.
    Archive {
        path: String,
        www: bool,
        gzip: bool,
        entries: String,
    },
    Build(Vec<String>),
    /// Another strata command on the case's store (save, tag, ...), which must succeed.
    Strata(Vec<String>),
    Expect(Expect),
}

#[derive(Debug, Clone)]
enum Expect {
    Fails(String),
    Log(String),
    NoLog(String),
    Cached(String),
    Ran(String),
    /// The image id is the previous build's (`same-id`), or not (`new-id`).
    SameId(bool),
    Out(String, OutCheck),
    Config {
        whole: bool,
        pointer: String,
        check: JsonCheck,
    },
}

#[derive(Debug, Clone)]
enum OutCheck {
    Eq(String),
    Contains(String),
    Missing,
    Attrs {
        kind: Kind,
        target: Option<String>,
        mode: Option<u32>,
        owner: Option<(u64, u64)>,
        mtime: Option<u64>,
    },
}

#[derive(Debug, Clone)]
enum JsonCheck {
    Eq(Value),
    Has(Value),
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Link,
    Other,
}

/// A `"…"` string with Rust's escapes (\n \t \\ \" \0 \xHH); returns it and the rest.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let s = s.trim_start();
    let Some(body) = s.strip_prefix('"') else {
        return Err(format!("expected a \"quoted string\" at `{s}`"));
    };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next().map(|x| x.1) {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('x') => {
                    let h: String = [chars.next(), chars.next()]
                        .iter()
                        .flatten()
                        .map(|x| x.1)
                        .collect();
                    let v = u8::from_str_radix(&h, 16).map_err(|_| format!("bad \\x{h}"))?;
                    out.push(v as char);
                }
                other => return Err(format!("unknown escape \\{other:?}")),
            },
            c => out.push(c),
        }
    }
    Err("unterminated string".into())
}

/// Shell-like words: whitespace-separated, with '…' and "…" quoting.
fn words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                any = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                any = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.push(chars.next().unwrap_or('\\')),
                        Some(c) => cur.push(c),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            c if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                any = true;
                cur.push(c);
            }
        }
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

fn octal(w: &str) -> Result<u32, String> {
    u32::from_str_radix(w, 8).map_err(|_| format!("bad octal mode {w}"))
}

/// Parse one case file.
fn parse_file(file: &str, text: &str) -> Result<Vec<Case>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cases: Vec<Case> = Vec::new();
    let mut i = 0;
    // A `|` block starting at line `i`: its lines, and the index after it.
    let block = |i: usize| -> (String, usize) {
        let mut j = i;
        let mut v = Vec::new();
        while j < lines.len() && lines[j].starts_with('|') {
            let l = &lines[j][1..];
            v.push(l.strip_prefix(' ').unwrap_or(l));
            j += 1;
        }
        (v.join("\n"), j)
    };
    while i < lines.len() {
        let n = i + 1;
        let line = lines[i].trim_end();
        let err = |m: String| format!("{file}:{n}: {m}");
        if line.trim().is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        if line.starts_with('|') {
            return Err(err("a `|` line outside a block".into()));
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        if word == "case" {
            if cases.iter().any(|c| c.name == rest) {
                return Err(err(format!("case {rest} twice")));
            }
            cases.push(Case {
                file: file.to_string(),
                name: rest.to_string(),
                line: n,
                from: Vec::new(),
                differs: None,
                needs: Vec::new(),
                own_store: false,
                ops: Vec::new(),
            });
            i += 1;
            continue;
        }
        let Some(case) = cases.last_mut() else {
            return Err(err("a line before the first `case`".into()));
        };
        // Text from a quoted string on the line, or from the block below it.
        let mut text_or_block = |after: &str| -> Result<String, String> {
            if after.trim().is_empty() {
                let (b, j) = block(i + 1);
                i = j - 1;
                Ok(b)
            } else {
                Ok(quoted(after).map_err(&err)?.0)
            }
        };
        let op = match word {
            "from" => {
                case.from
                    .extend(rest.split_whitespace().map(str::to_string));
                None
            }
            "differs" => {
                case.differs = Some(rest.to_string());
                None
            }
            "needs" => {
                case.needs.push(rest.to_string());
                None
            }
            "own-store" => {
                case.own_store = true;
                None
            }
            "dockerfile" => {
                let name = if rest.is_empty() { "Dockerfile" } else { rest };
                let mut data = text_or_block("")?;
                data.push('\n');
                Some(Op::Write {
                    path: name.to_string(),
                    data,
                    mode: None,
                })
            }
            "file" | "www" => {
                let (path, mut after) = rest.split_once(' ').unwrap_or((rest, ""));
                let mut mode = None;
                if let Some(m) = after.trim_start().strip_prefix("mode=") {
                    let (m, a) = m.split_once(' ').unwrap_or((m, ""));
                    mode = Some(octal(m).map_err(&err)?);
                    after = a;
                }
                let data = text_or_block(after)?;
                Some(if word == "www" {
                    Op::Www {
                        path: path.to_string(),
                        data,
                    }
                } else {
                    Op::Write {
                        path: path.to_string(),
                        data,
                        mode,
                    }
                })
            }
            "dir" => {
                let (path, after) = rest.split_once(' ').unwrap_or((rest, ""));
                let mode = match after.trim().strip_prefix("mode=") {
                    Some(m) => Some(octal(m).map_err(&err)?),
                    None => None,
                };
                Some(Op::Dir {
                    path: path.to_string(),
                    mode,
                })
            }
            "symlink" => {
                let (path, target) = rest
                    .split_once(' ')
                    .ok_or_else(|| err("symlink PATH TARGET".into()))?;
                Some(Op::Symlink {
                    path: path.to_string(),
                    target: target.trim().to_string(),
                })
            }
            "socket" => Some(Op::Socket(rest.to_string())),
            "rm" => Some(Op::Remove(rest.to_string())),
            "env" => {
                let (k, v) = rest.split_once('=').ok_or_else(|| err("env K=V".into()))?;
                Some(Op::Env(k.to_string(), v.to_string()))
            }
            "archive" => {
                let ws: Vec<&str> = rest.split_whitespace().collect();
                let www = ws.contains(&"www");
                let gzip = ws.contains(&"gzip");
                let path = ws
                    .iter()
                    .find(|w| !matches!(**w, "www" | "gzip"))
                    .ok_or_else(|| err("archive PATH [www] [gzip]".into()))?
                    .to_string();
                let entries = text_or_block("")?;
                Some(Op::Archive {
                    path,
                    www,
                    gzip,
                    entries,
                })
            }
            "build" => Some(Op::Build(words(rest).map_err(&err)?)),
            "strata" => Some(Op::Strata(words(rest).map_err(&err)?)),
            "same-id" => Some(Op::Expect(Expect::SameId(true))),
            "new-id" => Some(Op::Expect(Expect::SameId(false))),
            "fails" | "log" | "nolog" | "cached" | "ran" => {
                let t = quoted(rest).map_err(&err)?.0;
                Some(Op::Expect(match word {
                    "fails" => Expect::Fails(t),
                    "log" => Expect::Log(t),
                    "nolog" => Expect::NoLog(t),
                    "cached" => Expect::Cached(t),
                    _ => Expect::Ran(t),
                }))
            }
            "out" => {
                let (path, after) = rest
                    .split_once(' ')
                    .ok_or_else(|| err("out PATH CHECK".into()))?;
                let after = after.trim();
                let check = if let Some(a) = after.strip_prefix("= ") {
                    OutCheck::Eq(quoted(a).map_err(&err)?.0)
                } else if let Some(a) = after.strip_prefix("~ ") {
                    OutCheck::Contains(quoted(a).map_err(&err)?.0)
                } else if after == "missing" {
                    OutCheck::Missing
                } else {
                    let ws: Vec<&str> = after.split_whitespace().collect();
                    let kind = match ws.first().copied() {
                        Some("file") => Kind::File,
                        Some("dir") => Kind::Dir,
                        Some("link") => Kind::Link,
                        Some("other") => Kind::Other,
                        _ => return Err(err(format!("unknown out check `{after}`"))),
                    };
                    let (mut target, mut mode, mut owner, mut mtime) = (None, None, None, None);
                    let mut k = 1;
                    while k < ws.len() {
                        if ws[k] == "->" {
                            target = ws.get(k + 1).map(|s| s.to_string());
                            k += 2;
                            continue;
                        }
                        if let Some(m) = ws[k].strip_prefix("mode=") {
                            mode = Some(octal(m).map_err(&err)?);
                        } else if let Some(t) = ws[k].strip_prefix("mtime=") {
                            mtime = Some(t.parse().map_err(|_| err("bad mtime".into()))?);
                        } else if let Some(o) = ws[k].strip_prefix("owner=") {
                            let (u, g) = o
                                .split_once(':')
                                .ok_or_else(|| err("owner=UID:GID".into()))?;
                            owner = Some((
                                u.parse().map_err(|_| err("bad uid".into()))?,
                                g.parse().map_err(|_| err("bad gid".into()))?,
                            ));
                        } else {
                            return Err(err(format!("unknown attribute {}", ws[k])));
                        }
                        k += 1;
                    }
                    OutCheck::Attrs {
                        kind,
                        target,
                        mode,
                        owner,
                        mtime,
                    }
                };
                Some(Op::Expect(Expect::Out(path.to_string(), check)))
            }
            "config" | "image" => {
                let (pointer, after) = rest
                    .split_once(' ')
                    .ok_or_else(|| err("config /POINTER CHECK".into()))?;
                let after = after.trim();
                let json = |a: &str| {
                    serde_json::from_str::<Value>(a)
                        .map_err(|e| err(format!("bad JSON `{a}`: {e}")))
                };
                let check = if let Some(a) = after.strip_prefix("= ") {
                    JsonCheck::Eq(json(a)?)
                } else if let Some(a) = after.strip_prefix("has ") {
                    JsonCheck::Has(json(a)?)
                } else if after == "absent" {
                    JsonCheck::Absent
                } else {
                    return Err(err(format!("unknown config check `{after}`")));
                };
                Some(Op::Expect(Expect::Config {
                    whole: word == "image",
                    pointer: pointer.to_string(),
                    check,
                }))
            }
            other => return Err(err(format!("unknown directive `{other}`"))),
        };
        if let Some(op) = op {
            case.ops.push((n, op));
        }
        i += 1;
    }
    for c in &cases {
        if c.from.is_empty() {
            return Err(format!(
                "{file}:{}: case {} names no upstream test",
                c.line, c.name
            ));
        }
        if !c.ops.iter().any(|(_, o)| matches!(o, Op::Build(_))) {
            return Err(format!("{file}:{}: case {} has no build", c.line, c.name));
        }
        if let Some((n, _)) = c.ops.iter().find(|(_, o)| matches!(o, Op::Expect(_))) {
            let first_build = c
                .ops
                .iter()
                .position(|(_, o)| matches!(o, Op::Build(_)))
                .unwrap_or(usize::MAX);
            let first_expect = c
                .ops
                .iter()
                .position(|(_, o)| matches!(o, Op::Expect(_)))
                .unwrap_or(0);
            if first_expect < first_build {
                return Err(format!("{file}:{n}: an expectation before the first build"));
            }
        }
    }
    Ok(cases)
}

fn load_cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/buildkit-cases");
    let mut files: Vec<PathBuf> = fs_err::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cases"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for f in files {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let text = fs_err::read_to_string(&f).unwrap();
        all.extend(parse_file(&name, &text).unwrap_or_else(|e| panic!("{e}")));
    }
    all
}

// ---- running a case -----------------------------------------------------------------------

/// What one entry of the output tar is.
#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    data: Vec<u8>,
    link: Option<String>,
}

fn norm(p: &str) -> String {
    p.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

fn read_tar(path: &Path) -> Result<BTreeMap<String, Entry>, String> {
    let f = fs_err::File::open(path).map_err(|e| e.to_string())?;
    let mut a = tar::Archive::new(f);
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    for e in a.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        let h = e.header().clone();
        let p = norm(&e.path().map_err(|e| e.to_string())?.to_string_lossy());
        let t = h.entry_type();
        let link = e
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.to_string_lossy().into_owned());
        let (kind, data) = if t.is_dir() {
            (Kind::Dir, Vec::new())
        } else if t.is_symlink() {
            (Kind::Link, Vec::new())
        } else if t.is_hard_link() {
            let target = norm(link.as_deref().unwrap_or(""));
            let d = out.get(&target).map(|x| x.data.clone()).unwrap_or_default();
            (Kind::File, d)
        } else if t.is_file() {
            let mut d = Vec::new();
            std::io::Read::read_to_end(&mut (&mut e).take(4 << 20), &mut d)
                .map_err(|e| e.to_string())?;
            (Kind::File, d)
        } else {
            (Kind::Other, Vec::new())
        };
        out.insert(
            p,
            Entry {
                kind,
                mode: h.mode().unwrap_or(0) & 0o7777,
                uid: h.uid().unwrap_or(0),
                gid: h.gid().unwrap_or(0),
                mtime: h.mtime().unwrap_or(0),
                data,
                link: if t.is_symlink() { link } else { None },
            },
        );
    }
    Ok(out)
}

use std::io::Read as _;

/// A tar (gzip-compressed when asked) of the entries described one per line.
fn make_archive(spec: &str, gzip: bool) -> Result<Vec<u8>, String> {
    let mut b = tar::Builder::new(Vec::new());
    for line in spec.lines().filter(|l| !l.trim().is_empty()) {
        let (kind, rest) = line.split_once(' ').ok_or(format!("bad entry {line:?}"))?;
        let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        match kind {
            "file" => {
                let (mode, text) = rest.split_once(' ').unwrap_or((rest, "\"\""));
                let data = quoted(text)?.0;
                h.set_mode(octal(mode)?);
                h.set_size(data.len() as u64);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, name, data.as_bytes())
            }
            "dir" => {
                h.set_mode(octal(rest.trim())?);
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, name, &[][..])
            }
            "symlink" | "hardlink" => {
                h.set_mode(if kind == "symlink" { 0o777 } else { 0o644 });
                h.set_size(0);
                h.set_entry_type(if kind == "symlink" {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                b.append_link(&mut h, name, rest.trim())
            }
            other => return Err(format!("unknown entry kind {other}")),
        }
        .map_err(|e| e.to_string())?;
    }
    let bytes = b.into_inner().map_err(|e| e.to_string())?;
    if !gzip {
        return Ok(bytes);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &bytes).map_err(|e| e.to_string())?;
    gz.finish().map_err(|e| e.to_string())
}

struct Env<'a> {
    strata: &'a str,
    store: PathBuf,
    root: PathBuf,
    http: String,
    /// The port of a TCP server on 127.0.0.1 that says "foo" to whoever connects.
    echo: u16,
}

/// One build's outcome.
struct Outcome {
    ok: bool,
    log: String,
    tar: Option<BTreeMap<String, Entry>>,
    iid: Option<String>,
    config: Option<Value>,
}

fn subst(s: &str, vars: &[(&str, String)]) -> String {
    let mut s = s.to_string();
    for (k, v) in vars {
        s = s.replace(k, v);
    }
    s
}

/// Steps of a plain progress log: (name, cached).
fn steps(log: &str) -> Vec<(String, bool)> {
    let mut names: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for l in log.lines() {
        let Some(rest) = l.strip_prefix('#') else {
            continue;
        };
        let (id, what) = rest.split_once(' ').unwrap_or((rest, ""));
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if what.starts_with('[') {
            names.insert(id.to_string(), (what.to_string(), false));
        } else if what == "CACHED" {
            if let Some(n) = names.get_mut(id) {
                n.1 = true;
            }
        }
    }
    names.into_values().collect()
}

fn run_build(
    env: &Env,
    dir: &Path,
    ctx: &Path,
    n: usize,
    args: &[String],
    vars: &[(String, String)],
) -> Outcome {
    let out = dir.join(format!("out{n}.tar"));
    let iid = dir.join(format!("iid{n}"));
    let mut cmd = Command::new(env.strata);
    cmd.arg("--root")
        .arg(&env.store)
        .args(["build", "--progress", "plain"]);
    // A build that names its image (-t) stores it, for a later case step's FROM: no output
    // tar then (an --output replaces the store as destination).
    let tagged = args.iter().any(|a| a == "-t" || a == "--tag");
    if !tagged {
        cmd.arg("--output")
            .arg(format!("type=tar,dest={}", out.display()));
    }
    cmd.arg("--iidfile")
        .arg(&iid)
        .args(args)
        .arg(ctx)
        .env_remove("STRATA_ROOT")
        .env_remove("SOURCE_DATE_EPOCH")
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    // A build that hangs is killed (by its pid) after two minutes.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let watchdog = std::thread::spawn(move || {
        let t0 = Instant::now();
        while !d2.load(Ordering::SeqCst) {
            if t0.elapsed() > Duration::from_secs(120) {
                // SAFETY: SIGKILL to the child we spawned, by its pid.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let o = child.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let ok = o.status.success();
    let tar = if ok && !tagged {
        read_tar(&out).ok()
    } else {
        None
    };
    let iid = fs_err::read_to_string(&iid)
        .ok()
        .map(|s| s.trim().to_string());
    Outcome {
        ok,
        log,
        tar,
        iid,
        config: None,
    }
}

fn config_of(env: &Env, iid: &str) -> Result<Value, String> {
    let o = Command::new(env.strata)
        .arg("--root")
        .arg(&env.store)
        .args(["inspect", iid])
        .env_remove("STRATA_ROOT")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "inspect {iid}: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
    Ok(v["Config"].clone())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(25);
    lines[from..].join("\n")
}

fn check(
    env: &Env,
    o: &mut Outcome,
    prev_id: Option<&str>,
    e: &Expect,
    vars: &[(&str, String)],
) -> Result<(), String> {
    let s = |t: &String| subst(t, vars);
    match e {
        Expect::SameId(same) => {
            let (a, b) = (prev_id.ok_or("no earlier build")?, o.iid.as_deref());
            if (Some(a) == b) != *same {
                return Err(format!(
                    "the image id is {b:?}, the previous build's {a}: {}",
                    if *same { "not the same" } else { "the same" }
                ));
            }
        }
        Expect::Fails(t) => {
            let t = s(t);
            if !o.log.contains(&t) {
                return Err(format!("the failure does not say {t:?}"));
            }
        }
        Expect::Log(t) => {
            let t = s(t);
            if !o.log.contains(&t) {
                return Err(format!("the output does not contain {t:?}"));
            }
        }
        Expect::NoLog(t) => {
            let t = s(t);
            if o.log.contains(&t) {
                return Err(format!("the output contains {t:?}"));
            }
        }
        Expect::Cached(t) | Expect::Ran(t) => {
            let want_cached = matches!(e, Expect::Cached(_));
            let t = s(t);
            let found: Vec<(String, bool)> = steps(&o.log)
                .into_iter()
                .filter(|(n, _)| n.contains(&t))
                .collect();
            if found.is_empty() {
                return Err(format!("no step named like {t:?}"));
            }
            for (n, c) in found {
                if c != want_cached {
                    return Err(format!(
                        "step {n:?} {}",
                        if c { "came from the cache" } else { "ran" }
                    ));
                }
            }
        }
        Expect::Out(path, c) => {
            let tar = o.tar.as_ref().ok_or("no output tar")?;
            let p = norm(&s(path));
            let got = tar.get(&p);
            match (c, got) {
                (OutCheck::Missing, None) => {}
                (OutCheck::Missing, Some(_)) => return Err(format!("/{p} exists")),
                (_, None) => return Err(format!("/{p} is not in the output")),
                (OutCheck::Eq(t), Some(g)) => {
                    let t = s(t);
                    if g.kind != Kind::File || g.data != t.as_bytes() {
                        return Err(format!(
                            "/{p} holds {:?}, not {t:?}",
                            String::from_utf8_lossy(&g.data)
                        ));
                    }
                }
                (OutCheck::Contains(t), Some(g)) => {
                    let t = s(t);
                    if !String::from_utf8_lossy(&g.data).contains(&t) {
                        return Err(format!(
                            "/{p} holds {:?}, without {t:?}",
                            String::from_utf8_lossy(&g.data)
                        ));
                    }
                }
                (
                    OutCheck::Attrs {
                        kind,
                        target,
                        mode,
                        owner,
                        mtime,
                    },
                    Some(g),
                ) => {
                    if let Some(t) = mtime {
                        if g.mtime != *t {
                            return Err(format!("/{p} has mtime {}, not {t}", g.mtime));
                        }
                    }
                    if g.kind != *kind {
                        return Err(format!("/{p} is a {:?}, not a {kind:?}", g.kind));
                    }
                    if let Some(t) = target {
                        if g.link.as_deref() != Some(t.as_str()) {
                            return Err(format!("/{p} points to {:?}, not {t}", g.link));
                        }
                    }
                    if let Some(m) = mode {
                        if g.mode != *m {
                            return Err(format!("/{p} has mode {:04o}, not {m:04o}", g.mode));
                        }
                    }
                    if let Some((u, gg)) = owner {
                        if (g.uid, g.gid) != (*u, *gg) {
                            return Err(format!(
                                "/{p} is owned by {}:{}, not {u}:{gg}",
                                g.uid, g.gid
                            ));
                        }
                    }
                }
            }
        }
        Expect::Config {
            whole,
            pointer,
            check,
        } => {
            if o.config.is_none() {
                let iid = o.iid.clone().ok_or("no image id")?;
                o.config = Some(config_of(env, &iid)?);
            }
            let c = o.config.as_ref().unwrap_or(&Value::Null);
            let root = if *whole {
                c.clone()
            } else {
                c["config"].clone()
            };
            let v = root.pointer(pointer).cloned().unwrap_or(Value::Null);
            let subst_json = |j: &Value| -> Value {
                serde_json::from_str(&s(&j.to_string())).unwrap_or(Value::Null)
            };
            match check {
                JsonCheck::Eq(want) => {
                    let want = subst_json(want);
                    if v != want {
                        return Err(format!("config {pointer} is {v}, not {want}"));
                    }
                }
                JsonCheck::Has(want) => {
                    let want = subst_json(want);
                    if !v.as_array().is_some_and(|a| a.contains(&want)) {
                        return Err(format!("config {pointer} is {v}, without {want}"));
                    }
                }
                JsonCheck::Absent => {
                    if !v.is_null() {
                        return Err(format!("config {pointer} is {v}, not absent"));
                    }
                }
            }
        }
    }
    Ok(())
}

enum Verdict {
    Passed,
    Failed(String),
    Skipped(String),
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn run_case(env: &Env, c: &Case, index: usize) -> Verdict {
    for t in &c.needs {
        if !on_path(t) {
            return Verdict::Skipped(format!("{t} is not installed"));
        }
    }
    let dir = env.root.join(format!("case{index}"));
    let ctx = dir.join("ctx");
    fs_err::create_dir_all(&ctx).unwrap();
    let own;
    let env = if c.own_store {
        let store = dir.join("store");
        let o = Command::new(env.strata)
            .arg("--root")
            .arg(&store)
            .arg("import")
            .arg(env.root.join("rootfs"))
            .arg("busybox:latest")
            .output()
            .unwrap();
        if !o.status.success() {
            return Verdict::Failed(format!("import: {}", String::from_utf8_lossy(&o.stderr)));
        }
        own = Env {
            strata: env.strata,
            store,
            root: env.root.clone(),
            http: env.http.clone(),
            echo: env.echo,
        };
        &own
    } else {
        env
    };
    let v = run_steps(env, c, index, &dir, &ctx);
    if c.own_store {
        // Pruned here: what it holds may belong to subordinate ids.
        let _ = Command::new(env.strata)
            .arg("--root")
            .arg(&env.store)
            .args(["prune", "--all"])
            .output();
    }
    v
}

/// The ops of case `c`, in order, in its directory `dir` with its context `ctx`.
fn run_steps(env: &Env, c: &Case, index: usize, dir: &Path, ctx: &Path) -> Verdict {
    let www = env.root.join("www").join(format!("case{index}"));
    let token = format!("{}-{}-{}", c.file, c.name, std::process::id());
    let vars: Vec<(&str, String)> = vec![
        ("@CTX@", ctx.display().to_string()),
        ("@DIR@", dir.display().to_string()),
        ("@CASE@", token),
        ("@HTTP@", format!("{}/case{index}", env.http)),
        ("@ECHO@", env.echo.to_string()),
    ];
    let mut proc_env: Vec<(String, String)> = Vec::new();
    let mut last: Option<Outcome> = None;
    let mut prev_id: Option<String> = None;
    let mut expects_failure = false;
    let mut builds = 0;
    let fail = |n: usize, m: String, o: &Option<Outcome>| {
        let log = o.as_ref().map(|o| tail(&o.log)).unwrap_or_default();
        Verdict::Failed(format!("line {n}: {m}\n--- build output (end):\n{log}"))
    };
    // A build's success is checked when the next build starts or the case ends.
    let settle = |last: &Option<Outcome>, expects_failure: bool| -> Option<String> {
        let o = last.as_ref()?;
        match (o.ok, expects_failure) {
            (true, true) => Some("the build succeeded".into()),
            (false, false) => Some("the build failed".into()),
            _ => None,
        }
    };
    let mut build_line = 0;
    for (n, op) in &c.ops {
        let p = |s: &str| ctx.join(subst(s, &vars).trim_start_matches('/'));
        match op {
            Op::Write { path, data, mode } => {
                let f = p(path);
                fs_err::create_dir_all(f.parent().unwrap()).unwrap();
                let _ = std::fs::remove_file(&f);
                fs_err::write(&f, subst(data, &vars)).unwrap();
                if let Some(m) = mode {
                    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(*m))
                        .unwrap();
                }
            }
            Op::Dir { path, mode } => {
                let d = p(path);
                fs_err::create_dir_all(&d).unwrap();
                if let Some(m) = mode {
                    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(*m))
                        .unwrap();
                }
            }
            Op::Symlink { path, target } => {
                let l = p(path);
                fs_err::create_dir_all(l.parent().unwrap()).unwrap();
                let _ = std::fs::remove_file(&l);
                std::os::unix::fs::symlink(subst(target, &vars), &l).unwrap();
            }
            Op::Socket(path) => {
                let s = p(path);
                fs_err::create_dir_all(s.parent().unwrap()).unwrap();
                // Bound and dropped: the socket file stays.
                drop(std::os::unix::net::UnixListener::bind(&s).unwrap());
            }
            Op::Remove(path) => {
                let t = p(path);
                let _ = std::fs::remove_file(&t).or_else(|_| std::fs::remove_dir_all(&t));
            }
            Op::Www { path, data } => {
                let f = www.join(path);
                fs_err::create_dir_all(f.parent().unwrap()).unwrap();
                fs_err::write(&f, subst(data, &vars)).unwrap();
            }
            Op::Env(k, v) => proc_env.push((k.clone(), subst(v, &vars))),
            Op::Archive {
                path,
                www: served,
                gzip,
                entries,
            } => {
                let at = if *served { www.join(path) } else { p(path) };
                fs_err::create_dir_all(at.parent().unwrap()).unwrap();
                match make_archive(&subst(entries, &vars), *gzip) {
                    Ok(bytes) => fs_err::write(&at, bytes).unwrap(),
                    Err(e) => return fail(*n, format!("archive {path}: {e}"), &last),
                }
            }
            Op::Strata(args) => {
                let args: Vec<String> = args.iter().map(|a| subst(a, &vars)).collect();
                let o = Command::new(env.strata)
                    .arg("--root")
                    .arg(&env.store)
                    .args(&args)
                    .env_remove("STRATA_ROOT")
                    .current_dir(dir)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                if !o.status.success() {
                    return fail(
                        *n,
                        format!(
                            "strata {}: {}",
                            args.join(" "),
                            String::from_utf8_lossy(&o.stderr)
                        ),
                        &last,
                    );
                }
            }
            Op::Build(args) => {
                if let Some(m) = settle(&last, expects_failure) {
                    return fail(build_line, m, &last);
                }
                let args: Vec<String> = args.iter().map(|a| subst(a, &vars)).collect();
                prev_id = last.as_ref().and_then(|o| o.iid.clone());
                builds += 1;
                build_line = *n;
                last = Some(run_build(env, dir, ctx, builds, &args, &proc_env));
                expects_failure = false;
            }
            Op::Expect(e) => {
                if matches!(e, Expect::Fails(_)) {
                    expects_failure = true;
                }
                let o = last.as_mut().expect("checked when parsed");
                if let Err(m) = check(env, o, prev_id.as_deref(), e, &vars) {
                    return fail(*n, m, &last);
                }
            }
        }
    }
    if let Some(m) = settle(&last, expects_failure) {
        return fail(build_line, m, &last);
    }
    Verdict::Passed
}

// ---- the suite ----------------------------------------------------------------------------

#[test]
fn buildkit_dockerfile_tests() {
    let cases = load_cases();
    let filter = std::env::var("STRATA_CASES").ok();
    assert!(
        filter.is_some() || cases.len() >= 200,
        "{} cases: the corpus shrank",
        cases.len()
    );
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| {
            filter
                .as_deref()
                .is_none_or(|f| format!("{}/{}", c.file, c.name).contains(f))
        })
        .collect();
    let root = std::env::temp_dir().join(format!("strata-bkcases-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    fs_err::create_dir_all(root.join("www")).unwrap();
    support::removed_at_the_end(&root);
    if support::busybox_rootfs(&root.join("rootfs")).is_none() {
        if std::env::var("STRATA_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("/bin/busybox (busybox-static) is not installed (run scripts/test-deps.sh)");
        }
        support::skip("/bin/busybox (busybox-static) is not installed");
        return;
    }
    // The users and groups of Docker Hub's busybox image, which the upstream tests name.
    fs_err::write(
        root.join("rootfs/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nbin:x:2:2:bin:/bin:/bin/false\nsys:x:3:3:sys:/dev:/bin/false\nsync:x:4:100:sync:/bin:/bin/sync\nmail:x:8:8:mail:/var/spool/mail:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\noperator:x:37:37:Operator:/var:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
    )
    .unwrap();
    fs_err::write(
        root.join("rootfs/etc/group"),
        "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\ndisk:x:6:\nlp:x:7:\nmail:x:8:\nkmem:x:9:\nwheel:x:10:root\ncdrom:x:11:\ndialout:x:18:\nfloppy:x:19:\nvideo:x:28:\naudio:x:29:\ntape:x:32:\nwww-data:x:33:\noperator:x:37:\nutmp:x:43:\nplugdev:x:46:\nstaff:x:50:\nlock:x:54:\nnetdev:x:82:\nusers:x:100:\nnobody:x:65534:\n",
    )
    .unwrap();
    for d in ["home", "var/www", "usr/sbin"] {
        fs_err::create_dir_all(root.join("rootfs").join(d)).unwrap();
    }
    // The applets busybox installs outside /bin (/usr/bin/env, ...), as in that image.
    let full = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for p in String::from_utf8_lossy(&full.stdout).lines() {
        let at = root.join("rootfs").join(p);
        if !p.starts_with("bin/") && std::fs::symlink_metadata(&at).is_err() {
            fs_err::create_dir_all(at.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink("/bin/busybox", &at).unwrap();
        }
    }
    let strata = support::strata_bin();
    let store = root.join("store");
    let o = Command::new(strata)
        .arg("--root")
        .arg(&store)
        .arg("import")
        .arg(root.join("rootfs"))
        .arg("busybox:latest")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "import: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let port = support::serve(root.join("www"));
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in echo.incoming().flatten() {
            let _ = std::io::Write::write_all(&mut &c, b"foo\n");
        }
    });
    let env = Env {
        strata,
        store: store.clone(),
        root: root.clone(),
        http: format!("http://127.0.0.1:{port}"),
        echo: echo_port,
    };
    let jobs: usize = std::env::var("STRATA_CASE_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(4);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Verdict, Duration)>> = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(c) = cases.get(i) else { break };
                let t = Instant::now();
                let v = run_case(&env, c, i);
                results.lock().unwrap().push((i, v, t.elapsed()));
            });
        }
    });
    let wall = t0.elapsed();
    let _ = Command::new(strata)
        .arg("--root")
        .arg(&store)
        .args(["prune", "--all"])
        .output();
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let (mut passed, mut skipped, mut differs) = (0, 0, 0);
    let mut failures = Vec::new();
    for (i, v, _) in &results {
        let c = &cases[*i];
        match v {
            Verdict::Passed => {
                passed += 1;
                if c.differs.is_some() {
                    differs += 1;
                }
            }
            Verdict::Skipped(why) => {
                skipped += 1;
                eprintln!(
                    "SKIPPED: {}/{} ({}): {why}",
                    c.file,
                    c.name,
                    c.from.join(", ")
                );
            }
            Verdict::Failed(m) => failures.push(format!(
                "FAILED {}/{} (tests/buildkit-cases/{}.cases:{}, from {}):\n{m}\n",
                c.file,
                c.name,
                c.file,
                c.line,
                c.from.join(", ")
            )),
        }
    }
    let mut slow: Vec<&(usize, Verdict, Duration)> = results.iter().collect();
    slow.sort_by_key(|r| std::cmp::Reverse(r.2));
    for (i, _, d) in slow.iter().take(5) {
        eprintln!(
            "slow: {}/{} {:.1}s",
            cases[*i].file,
            cases[*i].name,
            d.as_secs_f64()
        );
    }
    for f in &failures {
        eprintln!("{f}");
    }
    let upstream: std::collections::BTreeSet<&String> =
        cases.iter().flat_map(|c| c.from.iter()).collect();
    eprintln!(
        "| buildkit Dockerfile integration tests (cases from {} Go tests{}) | {passed}/{} ({differs} check a documented difference; {skipped} skipped) | in {:.0} s, {jobs} at a time |",
        upstream.len(),
        if filter.is_some() { ", filtered" } else { "" },
        cases.len(),
        wall.as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed",
        failures.len(),
        cases.len()
    );
}
