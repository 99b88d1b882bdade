//! Typed instructions: one type per instruction, flags and arguments validated.
//!
//! This layer turns each syntax [`Node`] into an [`Instruction`]. Words stay as written (quotes
//! included) because expansion depends on the environment at build time; values that can be
//! checked without it (flag names, booleans, mount options, durations, ports, signals, chmod
//! modes) are checked here, and checked again after expansion where they contain a `$`.

use super::diagnostic::{did_you_mean, Diagnostic};
pub use super::flags::{
    ChecksumError, Chmod, ChmodError, Chown, ChownError, MountError, PortError, RunOptionsError,
    SignalError,
};
use super::parser::{Dockerfile, Flag, Heredoc, Node};
use super::source::Span;

/// Every instruction keyword, upper case.
pub const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A typed instruction with where it came from.
#[derive(Debug, Clone)]
pub struct Command {
    pub instruction: Instruction,
    /// The keyword as written.
    pub keyword: String,
    pub keyword_span: Span,
    pub span: Span,
    pub start_line: usize,
    pub end_line: usize,
    /// The instruction's text after continuations are joined (for history and progress).
    pub original: String,
    /// Comment lines directly above.
    pub comments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Instruction {
    From(From),
    Arg(Vec<ArgDecl>),
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Maintainer(String),
    Expose(Vec<String>),
    Copy(Copy),
    Add(Copy),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Onbuild(Onbuild),
    StopSignal(String),
    Healthcheck(Healthcheck),
}

impl Instruction {
    pub fn name(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Arg(_) => "ARG",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct From {
    /// The image reference as written (may contain `$` for global ARGs).
    pub image: String,
    /// `AS name`, as written.
    pub stage_name: Option<String>,
    pub platform: Option<String>,
    /// The `AS` keyword as written (for the FromAsCasing lint).
    pub as_keyword: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArgDecl {
    pub name: String,
    /// The default as written (quotes included), if any.
    pub default: Option<String>,
}

/// A name and a value as written (quotes included), from ENV or LABEL.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Written as `KEY value` rather than `KEY=value`.
    pub legacy: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommandLine {
    /// JSON form: argv as is.
    Exec(Vec<String>),
    /// Shell form: the text, run with the current SHELL.
    Shell(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub command: CommandLine,
    /// Heredoc bodies, to be made available as files (RUN <<EOF).
    pub heredocs: Vec<Heredoc>,
    /// `--mount` values as written, each checked with [`MountSpec::parse`].
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
    pub devices: Vec<String>,
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    /// Source paths or URLs as written.
    pub sources: Vec<String>,
    /// Inline sources from heredocs.
    pub inline: Vec<InlineSource>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub unpack: Option<bool>,
    /// The arguments were a JSON array.
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InlineSource {
    /// The file name (the heredoc terminator).
    pub path: String,
    /// The body, chomped when `<<-` was used.
    pub data: String,
    /// Variables in the body are expanded (the terminator was not quoted).
    pub expand: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Onbuild {
    /// The trigger text as stored in the image config.
    pub expression: String,
    pub trigger: Box<Instruction>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Healthcheck {
    None,
    Check {
        /// `["CMD", argv...]` or `["CMD-SHELL", text]`, as the image config stores it.
        test: Vec<String>,
        interval_ns: Option<u64>,
        timeout_ns: Option<u64>,
        start_period_ns: Option<u64>,
        start_interval_ns: Option<u64>,
        retries: Option<u64>,
    },
}

/// RUN `--mount` option, fully parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountSpec {
    pub kind: MountKind,
    pub target: Option<String>,
    pub source: Option<String>,
    pub from: Option<String>,
    pub readonly: Option<bool>,
    pub id: Option<String>,
    pub sharing: Sharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub required: bool,
    pub env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountKind {
    #[default]
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunNetwork {
    /// The build's default (its `--network`, else the step's own network).
    Default,
    None,
    Host,
}

impl RunNetwork {
    pub fn parse(v: &str) -> Option<RunNetwork> {
        Some(match v {
            "default" => RunNetwork::Default,
            "none" => RunNetwork::None,
            "host" => RunNetwork::Host,
            _ => return None,
        })
    }
}

/// A RUN step's options as types, read from its expanded flags once: what the engine uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunOptions {
    pub mounts: Vec<MountSpec>,
    pub network: Option<RunNetwork>,
}

impl Run {
    /// The typed options of an expanded RUN (no `$` left to expand).
    pub fn options(&self) -> Result<RunOptions, RunOptionsError> {
        let mut mounts = Vec::with_capacity(self.mounts.len());
        for m in &self.mounts {
            mounts.push(
                MountSpec::parse(m, false).map_err(|error| RunOptionsError::Mount {
                    mount: m.clone(),
                    error,
                })?,
            );
        }
        // BuildKit refuses it without the security.insecure entitlement, which strata never
        // grants: every step runs unprivileged.
        if self.security.as_deref() == Some("insecure") {
            return Err(RunOptionsError::Insecure);
        }
        let network = match self.network.as_deref() {
            None => None,
            Some(v) => Some(
                RunNetwork::parse(v).ok_or_else(|| RunOptionsError::Network {
                    network: v.to_string(),
                })?,
            ),
        };
        Ok(RunOptions { mounts, network })
    }
}

/// Parse a `--mount` value. With `lenient`, values that still contain `$` (to be expanded
/// later) are not checked.
impl MountSpec {
    pub fn parse(value: &str, lenient: bool) -> Result<MountSpec, MountError> {
        let mut m = MountSpec::default();
        let fields = split_csv(value)?;
        let skip = |v: &str| lenient && v.contains('$');
        let mut kind_set = false;
        for field in &fields {
            let (key, val) = match field.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v)),
                None => (field.trim().to_ascii_lowercase(), None),
            };
            let need = |v: Option<&str>| -> Result<String, MountError> {
                v.map(str::to_string)
                    .ok_or_else(|| MountError::NotKeyValue {
                        field: field.clone(),
                    })
            };
            match key.as_str() {
                "type" => {
                    let v = need(val)?;
                    kind_set = true;
                    if skip(&v) {
                        continue;
                    }
                    m.kind = parse_mount_kind(&v)?;
                }
                "target" | "dst" | "destination" => m.target = Some(need(val)?),
                "source" | "src" => m.source = Some(need(val)?),
                "from" => {
                    // As BuildKit (parseMount with no expander): a stage is named as written;
                    // `$` anywhere but at the end is refused, ARG or ENV alike.
                    let v = need(val)?;
                    if v.find('$').is_some_and(|i| i + 1 != v.len()) {
                        return Err(MountError::FromExpansion { from: v });
                    }
                    m.from = Some(v);
                }
                "readonly" | "ro" => m.readonly = Some(parse_bool_opt(&key, val, lenient)?),
                "readwrite" | "rw" => m.readonly = Some(!parse_bool_opt(&key, val, lenient)?),
                "required" => m.required = parse_bool_opt(&key, val, lenient)?,
                "id" => m.id = Some(need(val)?),
                "env" => m.env = Some(need(val)?),
                "sharing" => {
                    let v = need(val)?;
                    if skip(&v) {
                        continue;
                    }
                    m.sharing = parse_sharing(&v)?;
                }
                "mode" => {
                    let v = need(val)?;
                    if skip(&v) {
                        continue;
                    }
                    m.mode = Some(
                        u32::from_str_radix(&v, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| MountError::Mode { value: v.clone() })?,
                    );
                }
                "uid" | "gid" => {
                    let v = need(val)?;
                    if skip(&v) {
                        continue;
                    }
                    let n: u32 = v.parse().map_err(|_| MountError::Id {
                        key: key.clone(),
                        value: v.clone(),
                    })?;
                    if key == "uid" {
                        m.uid = Some(n);
                    } else {
                        m.gid = Some(n);
                    }
                }
                "size" => {
                    let v = need(val)?;
                    if skip(&v) {
                        continue;
                    }
                    m.size =
                        Some(parse_size(&v).ok_or_else(|| MountError::Size { value: v.clone() })?);
                }
                "bind-propagation" | "bind-nonrecursive" | "consistency" | "tmpfs-mode" => {}
                other => {
                    let known = [
                        "type", "target", "source", "from", "readonly", "rw", "id", "sharing",
                        "mode", "uid", "gid", "size", "required", "env",
                    ];
                    return Err(MountError::UnknownKey {
                        key: other.to_string(),
                        field: field.clone(),
                        suggestion: did_you_mean(other, known).map(str::to_string),
                    });
                }
            }
        }
        let _ = kind_set;
        m.check()?;
        Ok(m)
    }

    /// What no mount may be whatever its fields: a target of `/`, a secret with nothing to
    /// name it, sharing off a cache or a size off a tmpfs.
    fn check(&self) -> Result<(), MountError> {
        // An empty target is the working directory (resolved when the step runs); `/` itself
        // can never be a mount target.
        if let Some(t) = &self.target {
            if !t.contains('$')
                && t.starts_with('/')
                && t.split('/').all(|c| c.is_empty() || c == ".")
            {
                return Err(MountError::TargetRoot { target: t.clone() });
            }
        }
        if self.kind == MountKind::Secret
            && self.id.is_none()
            && self.source.is_none()
            && self.target.is_none()
            && self.env.is_none()
        {
            return Err(MountError::SecretUnnamed);
        }
        if self.kind != MountKind::Cache && (self.sharing != Sharing::Shared) {
            return Err(MountError::SharingNotCache {
                kind: self.kind_name(),
            });
        }
        if self.kind != MountKind::Tmpfs && self.size.is_some() {
            return Err(MountError::SizeNotTmpfs {
                kind: self.kind_name(),
            });
        }
        Ok(())
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            MountKind::Bind => "bind",
            MountKind::Cache => "cache",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Secret => "secret",
            MountKind::Ssh => "ssh",
        }
    }
}

fn parse_mount_kind(v: &str) -> Result<MountKind, MountError> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "bind" => MountKind::Bind,
        "cache" => MountKind::Cache,
        "tmpfs" => MountKind::Tmpfs,
        "secret" => MountKind::Secret,
        "ssh" => MountKind::Ssh,
        other => {
            let kinds = ["bind", "cache", "tmpfs", "secret", "ssh"];
            return Err(MountError::Kind {
                kind: other.to_string(),
                suggestion: did_you_mean(other, kinds).map(str::to_string),
            });
        }
    })
}

fn parse_sharing(v: &str) -> Result<Sharing, MountError> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "shared" => Sharing::Shared,
        "private" => Sharing::Private,
        "locked" => Sharing::Locked,
        other => {
            return Err(MountError::Sharing {
                value: other.to_string(),
            })
        }
    })
}

fn parse_bool_opt(key: &str, v: Option<&str>, lenient: bool) -> Result<bool, MountError> {
    match v {
        None => Ok(true),
        Some(v) if lenient && v.contains('$') => Ok(true),
        Some(v) => parse_bool(v).ok_or_else(|| MountError::Bool {
            key: key.to_string(),
            value: v.to_string(),
        }),
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Split a comma-separated option list; fields may be double-quoted (CSV rules).
fn split_csv(s: &str) -> Result<Vec<String>, MountError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if at_start && c == '"' {
            loop {
                match chars.next() {
                    None => {
                        return Err(MountError::Quote {
                            value: s.to_string(),
                        })
                    }
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cur.push('"');
                    }
                    Some('"') => break,
                    Some(c) => cur.push(c),
                }
            }
            at_start = false;
            continue;
        }
        if c == ',' {
            out.push(std::mem::take(&mut cur));
            at_start = true;
            continue;
        }
        at_start = false;
        cur.push(c);
    }
    out.push(cur);
    Ok(out.into_iter().filter(|f| !f.is_empty()).collect())
}

/// Byte sizes as Docker reads them (`64m`, `1g`, `512k`, `100`), binary units.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    let v = n * mult as f64;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += num * mult;
    }
    (total.is_finite() && total < u64::MAX as f64).then_some(total as u64)
}

/// Signal names and numbers accepted by STOPSIGNAL.
pub fn check_signal(s: &str) -> Result<(), SignalError> {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    ];
    if let Ok(n) = s.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(())
        } else {
            Err(SignalError {
                signal: s.to_string(),
            })
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if NAMES.contains(&name) {
        return Ok(());
    }
    if let Some(rt) = name
        .strip_prefix("RTMIN")
        .or_else(|| name.strip_prefix("RTMAX"))
    {
        let ok = rt.is_empty()
            || rt
                .strip_prefix(['+', '-'])
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n <= 15);
        if ok {
            return Ok(());
        }
    }
    Err(SignalError {
        signal: s.to_string(),
    })
}

/// A parsed EXPOSE entry: the container port(s) and protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub start: u16,
    pub end: u16,
    pub proto: String,
    /// An IP or host port mapping was given (only the container port is kept).
    pub had_mapping: bool,
}

/// Parse `[ip:][hostPort:]containerPort[-end][/proto]`.
pub fn parse_port(s: &str) -> Result<PortSpec, PortError> {
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p),
        None => (s, "tcp"),
    };
    let proto_l = proto.to_ascii_lowercase();
    if !matches!(proto_l.as_str(), "tcp" | "udp" | "sctp") {
        return Err(PortError::Proto {
            proto: proto.to_string(),
        });
    }
    let (container, had_mapping) = if let Some(rest) = spec.strip_prefix('[') {
        // [ipv6]:host:container
        let (ip, after) = rest.split_once(']').ok_or_else(|| PortError::IpIn {
            spec: s.to_string(),
        })?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| PortError::Ip { ip: ip.to_string() })?;
        let after = after.strip_prefix(':').ok_or_else(|| PortError::Format {
            spec: s.to_string(),
        })?;
        (after.rsplit(':').next().unwrap_or(""), true)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            1 => (parts[0], false),
            2 => (parts[1], true),
            3 => {
                if !parts[0].is_empty() && parts[0].parse::<std::net::IpAddr>().is_err() {
                    return Err(PortError::Ip {
                        ip: parts[0].to_string(),
                    });
                }
                (parts[2], true)
            }
            _ => {
                return Err(PortError::Format {
                    spec: s.to_string(),
                })
            }
        }
    };
    if container.is_empty() {
        return Err(PortError::NoPort {
            spec: s.to_string(),
        });
    }
    let (a, b) = match container.split_once('-') {
        Some((a, b)) => (a, b),
        None => (container, container),
    };
    let p = |x: &str| {
        x.parse::<u16>().map_err(|_| PortError::ContainerPort {
            port: container.to_string(),
        })
    };
    let (start, end) = (p(a)?, p(b)?);
    if end < start {
        return Err(PortError::Range {
            port: container.to_string(),
        });
    }
    Ok(PortSpec {
        start,
        end,
        proto: proto_l,
        had_mapping,
    })
}

/// Which flags an instruction accepts: (name, kind).
#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Str,
    Bool,
    Repeat,
}

fn allowed_flags(keyword: &str) -> &'static [(&'static str, FlagKind)] {
    use FlagKind::*;
    match keyword {
        "FROM" => &[("platform", Str)],
        "RUN" => &[
            ("mount", Repeat),
            ("network", Str),
            ("security", Str),
            ("device", Repeat),
        ],
        "COPY" => &[
            ("from", Str),
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", Repeat),
        ],
        "ADD" => &[
            ("chown", Str),
            ("chmod", Str),
            ("link", Bool),
            ("exclude", Repeat),
            ("checksum", Str),
            ("keep-git-dir", Bool),
            ("unpack", Bool),
        ],
        "HEALTHCHECK" => &[
            ("interval", Str),
            ("timeout", Str),
            ("start-period", Str),
            ("start-interval", Str),
            ("retries", Str),
        ],
        _ => &[],
    }
}

/// Flag values of one instruction, after checking names, duplicates and booleans.
struct Flags {
    values: Vec<(String, String, Span)>,
}

impl Flags {
    fn parse(keyword: &str, flags: &[Flag]) -> Result<Flags, Diagnostic> {
        let allowed = allowed_flags(keyword);
        let mut values: Vec<(String, String, Span)> = Vec::new();
        for f in flags {
            let body = f.text.strip_prefix("--").unwrap_or(&f.text);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some((_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let mut d = Diagnostic::new(format!("unknown flag: --{name}"), f.span);
                let names = allowed.iter().map(|(n, _)| *n);
                if let Some(s) = did_you_mean(name, names) {
                    d = d.with_hint(format!("did you mean --{s}?"));
                } else if allowed.is_empty() {
                    d = d.with_hint(format!("{keyword} takes no flags"));
                } else {
                    let list: Vec<String> = allowed.iter().map(|(n, _)| format!("--{n}")).collect();
                    d = d.with_hint(format!("{keyword} accepts {}", list.join(", ")));
                }
                return Err(d);
            };
            if *kind != FlagKind::Repeat && values.iter().any(|(n, _, _)| n == name) {
                return Err(Diagnostic::new(
                    format!("duplicate flag specified: --{name}"),
                    f.span,
                ));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) => {
                    if parse_bool(v).is_none() {
                        return Err(Diagnostic::new(
                            format!("expecting boolean value for flag {name}, not: {v}"),
                            f.span,
                        ));
                    }
                    v.to_string()
                }
                (_, None) => {
                    return Err(Diagnostic::new(
                        format!("missing a value on flag: --{name}"),
                        f.span,
                    )
                    .with_hint(format!("write it as --{name}=VALUE")))
                }
                (_, Some(v)) => v.to_string(),
            };
            values.push((name.to_string(), value, f.span));
        }
        Ok(Flags { values })
    }

    fn get(&self, name: &str) -> Option<(&str, Span)> {
        self.values
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, s)| (v.as_str(), *s))
    }

    fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|(v, _)| v.to_string())
    }

    fn bool(&self, name: &str) -> bool {
        self.get(name)
            .and_then(|(v, _)| parse_bool(v))
            .unwrap_or(false)
    }

    fn all(&self, name: &str) -> Vec<(String, Span)> {
        self.values
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, v, s)| (v.clone(), *s))
            .collect()
    }
}

/// Type every instruction of a parsed Dockerfile.
pub fn type_all(df: &Dockerfile) -> Result<Vec<Command>, Diagnostic> {
    df.nodes
        .iter()
        .map(|n| type_node(n).map_err(|e| e.with_source(&df.source)))
        .collect()
}

/// Type one syntax node.
pub fn type_node(node: &Node) -> Result<Command, Diagnostic> {
    let instruction = type_instruction(node)?;
    Ok(Command {
        instruction,
        keyword: node.keyword.clone(),
        keyword_span: node.keyword_span,
        span: node.span,
        start_line: node.start_line,
        end_line: node.end_line,
        original: node.original.clone(),
        comments: node.comments.clone(),
    })
}

fn type_instruction(node: &Node) -> Result<Instruction, Diagnostic> {
    let kw = node.name();
    if !KEYWORDS.contains(&kw.as_str()) {
        let mut d = Diagnostic::new(
            format!("unknown instruction: {}", node.keyword),
            node.keyword_span,
        );
        if let Some(s) = did_you_mean(&kw, KEYWORDS.iter().copied()) {
            d = d.with_hint(format!("did you mean {s}?"));
        }
        return Err(d);
    }
    let flags = Flags::parse(&kw, &node.flags)?;
    let t = Typing {
        node,
        kw: &kw,
        flags: &flags,
        at: node.rest_span,
        whole: node.keyword_span.join(node.rest_span),
    };
    let args = &node.args;
    Ok(match kw.as_str() {
        "FROM" => t.from()?,
        "ARG" => t.arg()?,
        "RUN" => t.run()?,
        "CMD" => Instruction::Cmd(command_line(node)),
        "ENTRYPOINT" => Instruction::Entrypoint(command_line(node)),
        "SHELL" => t.shell()?,
        "ENV" | "LABEL" => t.env_or_label()?,
        "MAINTAINER" => Instruction::Maintainer(t.exactly_one()?),
        "EXPOSE" => t.expose()?,
        "COPY" | "ADD" => Instruction::from_copy(&kw, node, &flags, t.at, t.whole)?,
        "VOLUME" => {
            t.at_least_one()?;
            if args.iter().any(|a| a.trim().is_empty()) {
                return Err(t.err("VOLUME specified can not be an empty string".into()));
            }
            Instruction::Volume(args.clone())
        }
        "USER" => Instruction::User(t.exactly_one()?),
        "WORKDIR" => Instruction::Workdir(t.exactly_one()?),
        "STOPSIGNAL" => t.stopsignal()?,
        "ONBUILD" => t.onbuild()?,
        "HEALTHCHECK" => t.healthcheck()?,
        _ => unreachable!("keyword checked against KEYWORDS"),
    })
}

/// One instruction being typed: its node, keyword and flags, with the spans its errors point
/// at (`at`: the arguments, `whole`: keyword and arguments). One method per instruction kind.
struct Typing<'a> {
    node: &'a Node,
    kw: &'a str,
    flags: &'a Flags,
    at: Span,
    whole: Span,
}

impl Typing<'_> {
    fn err(&self, m: String) -> Diagnostic {
        Diagnostic::new(m, self.whole)
    }

    fn args(&self) -> &[String] {
        &self.node.args
    }

    fn exactly_one(&self) -> Result<String, Diagnostic> {
        let args = self.args();
        if args.len() != 1 {
            return Err(self.err(format!("{} requires exactly one argument", self.kw)));
        }
        Ok(args[0].clone())
    }

    fn at_least_one(&self) -> Result<(), Diagnostic> {
        if self.args().is_empty() && self.node.trigger.is_none() {
            return Err(self.err(format!("{} requires at least one argument", self.kw)));
        }
        Ok(())
    }

    fn from(&self) -> Result<Instruction, Diagnostic> {
        let args = self.args();
        let (image, stage_name, as_keyword) = match args.len() {
            1 => (args[0].clone(), None, None),
            3 if args[1].eq_ignore_ascii_case("as") => {
                let name = &args[2];
                if !is_valid_stage_name(name) {
                    return Err(Diagnostic::new(
                        format!("invalid name for build stage: \"{name}\", name can't start with a number or contain symbols"),
                        self.at,
                    ));
                }
                (args[0].clone(), Some(name.clone()), Some(args[1].clone()))
            }
            _ => {
                return Err(self
                    .err("FROM requires either one or three arguments".into())
                    .with_hint("write FROM <image> or FROM <image> AS <name>"))
            }
        };
        if image.is_empty() {
            return Err(self.err("FROM requires an image name".into()));
        }
        Ok(Instruction::From(From {
            image,
            stage_name,
            platform: self.flags.string("platform"),
            as_keyword,
        }))
    }

    fn arg(&self) -> Result<Instruction, Diagnostic> {
        let args = self.args();
        if args.is_empty() {
            return Err(self.err("ARG requires at least one argument".into()));
        }
        let mut decls = Vec::new();
        for w in args {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (w.clone(), None),
            };
            if name.is_empty() {
                return Err(Diagnostic::new("ARG names can not be blank", self.at));
            }
            decls.push(ArgDecl { name, default });
        }
        Ok(Instruction::Arg(decls))
    }

    fn run(&self) -> Result<Instruction, Diagnostic> {
        let node = self.node;
        let flags = self.flags;
        let command = command_line(node);
        if matches!(&command, CommandLine::Shell(s) if s.is_empty()) && node.heredocs.is_empty() {
            return Err(self.err("RUN requires at least one argument".into()));
        }
        let mut mounts = Vec::new();
        for (m, span) in flags.all("mount") {
            MountSpec::parse(&m, true)
                .map_err(|e| Diagnostic::new(format!("invalid --mount: {e}"), span))?;
            mounts.push(m);
        }
        let network = flags.get("network").map(|(v, span)| {
            if !v.contains('$') && RunNetwork::parse(v).is_none() {
                return Err(
                    Diagnostic::new(format!("unsupported network mode \"{v}\""), span)
                        .with_hint("use --network=default, --network=none or --network=host"),
                );
            }
            Ok(v.to_string())
        });
        let security = flags.get("security").map(|(v, span)| {
            if !v.contains('$') && !matches!(v, "sandbox" | "insecure") {
                return Err(
                    Diagnostic::new(format!("unsupported security mode \"{v}\""), span)
                        .with_hint("use --security=sandbox or --security=insecure"),
                );
            }
            Ok(v.to_string())
        });
        let heredocs = if matches!(command, CommandLine::Shell(_)) {
            node.heredocs.clone()
        } else {
            Vec::new()
        };
        Ok(Instruction::Run(Run {
            command,
            heredocs,
            mounts,
            network: network.transpose()?,
            security: security.transpose()?,
            devices: flags.all("device").into_iter().map(|(d, _)| d).collect(),
        }))
    }

    fn shell(&self) -> Result<Instruction, Diagnostic> {
        if !self.node.json {
            return Err(self
                .err("SHELL requires the arguments to be in JSON form".into())
                .with_hint("write SHELL [\"/bin/bash\", \"-c\"]"));
        }
        if self.args().is_empty() {
            return Err(self.err("SHELL requires at least one argument".into()));
        }
        Ok(Instruction::Shell(self.args().to_vec()))
    }

    fn env_or_label(&self) -> Result<Instruction, Diagnostic> {
        let kw = self.kw;
        self.at_least_one()?;
        let mut kvs = Vec::new();
        for t in self.args().chunks(3) {
            if t.len() != 3 {
                return Err(self.err(format!("Bad input to {kw}, too many arguments")));
            }
            if t[0].is_empty() {
                return Err(self.err(format!("{kw} names can not be blank")));
            }
            kvs.push(KeyValue {
                key: t[0].clone(),
                value: t[1].clone(),
                legacy: t[2].is_empty(),
            });
        }
        Ok(if kw == "ENV" {
            Instruction::Env(kvs)
        } else {
            Instruction::Label(kvs)
        })
    }

    fn expose(&self) -> Result<Instruction, Diagnostic> {
        self.at_least_one()?;
        for p in self.args() {
            if !p.contains('$') {
                parse_port(p).map_err(|e| Diagnostic::new(format!("EXPOSE {p}: {e}"), self.at))?;
            }
        }
        Ok(Instruction::Expose(self.args().to_vec()))
    }

    fn stopsignal(&self) -> Result<Instruction, Diagnostic> {
        let s = self.exactly_one()?;
        if !s.contains('$') {
            check_signal(&s).map_err(|e| {
                Diagnostic::new(e.to_string(), self.at)
                    .with_hint("use a name such as SIGTERM or SIGINT, or a number")
            })?;
        }
        Ok(Instruction::StopSignal(s))
    }

    fn onbuild(&self) -> Result<Instruction, Diagnostic> {
        let node = self.node;
        let Some(trigger) = &node.trigger else {
            return Err(self.err("ONBUILD requires at least one argument".into()));
        };
        let tk = trigger.name();
        match tk.as_str() {
            "ONBUILD" => {
                return Err(self.err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()))
            }
            "FROM" | "MAINTAINER" => {
                return Err(self.err(format!("{tk} isn't allowed as an ONBUILD trigger")))
            }
            _ => {}
        }
        let mut inner = (**trigger).clone();
        inner.heredocs = node.heredocs.clone();
        let typed = type_instruction(&inner)?;
        // As BuildKit stores it: the line, then each heredoc's body and delimiter, so the
        // child that runs the trigger parses it whole.
        let mut expression = node.rest.clone();
        for h in &node.heredocs {
            expression.push('\n');
            expression.push_str(&h.content);
            expression.push_str(&h.name);
        }
        Ok(Instruction::Onbuild(Onbuild {
            expression,
            trigger: Box::new(typed),
        }))
    }

    fn healthcheck(&self) -> Result<Instruction, Diagnostic> {
        let args = self.args();
        if args.is_empty() {
            return Err(self.err("HEALTHCHECK requires at least one argument".into()));
        }
        let typ = args[0].to_ascii_uppercase();
        match typ.as_str() {
            "NONE" => {
                if args.len() > 1 {
                    return Err(self.err("HEALTHCHECK NONE takes no arguments".into()));
                }
                if !self.node.flags.is_empty() {
                    return Err(self.err("HEALTHCHECK NONE does not support options".into()));
                }
                Ok(Instruction::Healthcheck(Healthcheck::None))
            }
            "CMD" => self.healthcheck_cmd(&args[1..]),
            other => Err(Diagnostic::new(
                format!("Unknown type \"{other}\" in HEALTHCHECK (try CMD)"),
                self.at,
            )
            .with_hint("write HEALTHCHECK CMD <command> or HEALTHCHECK NONE")),
        }
    }

    fn healthcheck_cmd(&self, cmd: &[String]) -> Result<Instruction, Diagnostic> {
        if cmd.is_empty() {
            return Err(self.err("Missing command after HEALTHCHECK CMD".into()));
        }
        let test = if self.node.json {
            let mut t = vec!["CMD".to_string()];
            t.extend(cmd.iter().cloned());
            t
        } else {
            vec!["CMD-SHELL".to_string(), cmd.join(" ")]
        };
        let retries = match self.flags.get("retries") {
            None => None,
            Some((v, span)) => Some(v.parse::<u64>().map_err(|_| {
                Diagnostic::new(
                    format!("invalid --retries \"{v}\": expected a whole number"),
                    span,
                )
            })?),
        };
        Ok(Instruction::Healthcheck(Healthcheck::Check {
            test,
            interval_ns: self.duration("interval")?,
            timeout_ns: self.duration("timeout")?,
            start_period_ns: self.duration("start-period")?,
            start_interval_ns: self.duration("start-interval")?,
            retries,
        }))
    }

    /// A HEALTHCHECK duration flag in nanoseconds: absent, 0, or at least 1ms.
    fn duration(&self, name: &str) -> Result<Option<u64>, Diagnostic> {
        let Some((v, span)) = self.flags.get(name) else {
            return Ok(None);
        };
        let d = parse_duration(v).ok_or_else(|| {
            Diagnostic::new(format!("invalid duration for --{name}: \"{v}\""), span)
                .with_hint("use a duration such as 30s, 1m30s or 500ms")
        })?;
        if d != 0 && d < 1_000_000 {
            return Err(Diagnostic::new(
                format!("Interval \"{name}\" cannot be less than 1ms"),
                span,
            ));
        }
        Ok(Some(d))
    }
}

impl Instruction {
    fn from_copy(
        kw: &str,
        node: &Node,
        flags: &Flags,
        at: Span,
        whole: Span,
    ) -> Result<Instruction, Diagnostic> {
        let args = &node.args;
        if args.len() < 2 {
            let msg = if args.is_empty() {
                format!("{kw} requires at least two arguments")
            } else {
                format!("{kw} requires at least two arguments, but only one was provided. Destination could not be determined")
            };
            return Err(
                Diagnostic::new(msg, whole).with_hint(format!("write {kw} <src>... <dest>"))
            );
        }
        let (srcs, dest) = args.split_at(args.len() - 1);
        let dest = dest[0].clone();
        let mut sources = Vec::new();
        let mut inline = Vec::new();
        let heredoc_of = |w: &str| -> Option<Heredoc> {
            if node.json {
                return None;
            }
            let h = super::parser::parse_heredoc_word(w).ok().flatten()?;
            node.heredocs.iter().find(|d| d.name == h.name).cloned()
        };
        if heredoc_of(&dest).is_some() {
            return Err(Diagnostic::new(
                format!("{kw} cannot accept a heredoc as a destination"),
                at,
            ));
        }
        for s in srcs {
            match heredoc_of(s) {
                Some(h) => inline.push(InlineSource {
                    path: h.name.clone(),
                    data: h.chomped(),
                    expand: h.expand,
                }),
                None => sources.push(s.clone()),
            }
        }
        let from = flags.get("from").map(|(v, span)| {
            if v.contains('$') {
                return Err(Diagnostic::new(
                    "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                    span,
                ));
            }
            if v.is_empty() {
                return Err(Diagnostic::new("--from requires a stage name, stage index or image", span));
            }
            Ok(v.to_string())
        });
        if let Some((v, span)) = flags.get("chmod") {
            if !v.contains('$') {
                v.parse::<Chmod>()
                    .map_err(|e| Diagnostic::new(e.to_string(), span))?;
            }
        }
        if let Some((v, span)) = flags.get("chown") {
            v.parse::<Chown>()
                .map_err(|e| Diagnostic::new(e.to_string(), span))?;
        }
        if let Some((v, span)) = flags.get("checksum") {
            if !v.contains('$') {
                parse_checksum(v).map_err(|e| Diagnostic::new(e.to_string(), span))?;
            }
        }
        Ok(Copy::wrap(
            kw,
            Copy {
                sources,
                inline,
                dest,
                from: from.transpose()?,
                chown: flags.string("chown"),
                chmod: flags.string("chmod"),
                link: flags.bool("link"),
                parents: flags.bool("parents"),
                excludes: flags.all("exclude").into_iter().map(|(v, _)| v).collect(),
                checksum: flags.string("checksum"),
                keep_git_dir: flags.bool("keep-git-dir"),
                unpack: flags.get("unpack").and_then(|(v, _)| parse_bool(v)),
                json: node.json,
            },
        ))
    }
}

impl Copy {
    /// `--chmod` of an expanded COPY or ADD (no `$` left), typed: what the engine applies.
    pub fn chmod_value(&self) -> Result<Option<Chmod>, ChmodError> {
        self.chmod.as_deref().map(str::parse).transpose()
    }

    /// `--chown` of an expanded COPY or ADD, as user and group.
    pub fn chown_value(&self) -> Option<Chown> {
        self.chown.as_deref().map(Chown::split)
    }

    /// `--checksum` of an expanded ADD, typed.
    pub fn checksum_value(&self) -> Result<Option<Checksum>, ChecksumError> {
        self.checksum.as_deref().map(str::parse).transpose()
    }

    fn wrap(kw: &str, c: Copy) -> Instruction {
        if kw == "ADD" {
            Instruction::Add(c)
        } else {
            Instruction::Copy(c)
        }
    }
}

/// The digest algorithms `ADD --checksum` accepts, as BuildKit (go-digest's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl std::str::FromStr for Checksum {
    type Err = ChecksumError;

    fn from_str(v: &str) -> Result<Checksum, ChecksumError> {
        parse_checksum(v)
    }
}

impl ChecksumAlg {
    /// The name before the colon.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlg::Sha256 => "sha256",
            ChecksumAlg::Sha384 => "sha384",
            ChecksumAlg::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            ChecksumAlg::Sha256 => 64,
            ChecksumAlg::Sha384 => 96,
            ChecksumAlg::Sha512 => 128,
        }
    }
}

/// An `ADD --checksum` value: a digest of the downloaded file, or (for a git source) a commit
/// hash or a prefix of at least 7 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    Digest { alg: ChecksumAlg, hex: String },
    Commit(String),
}

/// Parse `--checksum`: `sha256:<64 hex>`, `sha384:<96 hex>`, `sha512:<128 hex>`, or a hex
/// commit hash (SHA-1 or SHA-256, or a prefix of at least 7 digits). The one parser of the front end and of ADD's download.
pub fn parse_checksum(v: &str) -> Result<Checksum, ChecksumError> {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some((name, h)) = v.split_once(':') {
        let alg = match name {
            "sha256" => ChecksumAlg::Sha256,
            "sha384" => ChecksumAlg::Sha384,
            "sha512" => ChecksumAlg::Sha512,
            _ => {
                return Err(ChecksumError::Algorithm {
                    value: v.to_string(),
                    algorithm: name.to_string(),
                })
            }
        };
        let len = alg.hex_len();
        if h.len() != len || !hex(h) {
            return Err(ChecksumError::Length {
                value: v.to_string(),
                algorithm: name.to_string(),
                len,
            });
        }
        return Ok(Checksum::Digest {
            alg,
            hex: h.to_ascii_lowercase(),
        });
    }
    if hex(v) && ((7..=40).contains(&v.len()) || v.len() == 64) {
        return Ok(Checksum::Commit(v.to_ascii_lowercase()));
    }
    Err(ChecksumError::Form {
        value: v.to_string(),
    })
}

fn command_line(node: &Node) -> CommandLine {
    if node.json {
        CommandLine::Exec(node.args.clone())
    } else {
        CommandLine::Shell(node.args.first().cloned().unwrap_or_default())
    }
}

/// `^[a-z][a-z0-9-_.]*$`, case-insensitively.
pub fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::{parse, Source};

    fn ty(text: &str) -> Result<Vec<Command>, Diagnostic> {
        let df = parse(&Source::new("Dockerfile", text))?;
        type_all(&df)
    }

    fn ins(text: &str) -> Instruction {
        ty(text).unwrap().pop().unwrap().instruction
    }

    #[test]
    fn unknown_flag_suggests() {
        let e = ty("FROM a\nRUN --mont=type=cache,target=/x true\n").unwrap_err();
        assert_eq!(e.message, "unknown flag: --mont");
        assert_eq!(e.hint.as_deref(), Some("did you mean --mount?"));
        assert_eq!(e.position().unwrap().line, 2);
    }

    #[test]
    fn mounts_validate() {
        assert!(ty(
            "RUN --mount=type=cache,target=/root/.cache,sharing=locked,uid=1000,mode=0700 x"
        )
        .is_ok());
        let e = ty("RUN --mount=type=cache,sharing=weird,target=/x true").unwrap_err();
        assert!(e.message.contains("sharing"), "{}", e.message);
        assert!(ty("RUN --mount=type=$T,target=/x true").is_ok());
        assert!(ty("RUN --mount=ro true").is_ok());
        let e = ty("RUN --mount=type=bind,target=/ true").unwrap_err();
        assert!(e.message.contains("invalid mount target"));
        let m = MountSpec::parse("type=secret,id=tok,env=TOKEN,required", false).unwrap();
        assert_eq!(
            (m.kind, m.required, m.env.as_deref()),
            (MountKind::Secret, true, Some("TOKEN"))
        );
        let m = MountSpec::parse("type=tmpfs,target=/t,size=128m", false).unwrap();
        assert_eq!(m.size, Some(128 << 20));
    }

    #[test]
    fn copy_flags_and_heredocs() {
        let Instruction::Copy(c) =
            ins("COPY --chmod=u+x,go-w --link --exclude=*.pyc --exclude=x <<EOF a /d/\nhi\nEOF\n")
        else {
            panic!()
        };
        assert!(c.link);
        assert_eq!(c.excludes, vec!["*.pyc", "x"]);
        assert_eq!(c.sources, vec!["a"]);
        assert_eq!(c.inline[0].data, "hi\n");
        assert!(ty("COPY --chmod=999 a b").is_err());
        assert!(ty("COPY --link=maybe a b")
            .unwrap_err()
            .message
            .contains("boolean"));
        assert!(ty("COPY --from=$X a b")
            .unwrap_err()
            .message
            .contains("variable expansion is not supported"));
        assert!(ty("ADD --checksum=sha256:abc a b").is_err());
        assert!(ty("COPY --checksum=sha256:abc a b")
            .unwrap_err()
            .message
            .contains("unknown flag"));
    }

    #[test]
    fn healthcheck_forms() {
        let Instruction::Healthcheck(Healthcheck::Check {
            test,
            interval_ns,
            retries,
            ..
        }) = ins("HEALTHCHECK --interval=1m30s --retries=3 CMD curl -f http://x/ || exit 1")
        else {
            panic!()
        };
        assert_eq!(test, vec!["CMD-SHELL", "curl -f http://x/ || exit 1"]);
        assert_eq!(interval_ns, Some(90_000_000_000));
        assert_eq!(retries, Some(3));
        assert!(ty("HEALTHCHECK --interval=50ns CMD x")
            .unwrap_err()
            .message
            .contains("cannot be less than 1ms"));
        assert!(ty("HEALTHCHECK --interval=0ms CMD x").is_ok());
        assert_eq!(
            ins("HEALTHCHECK NONE"),
            Instruction::Healthcheck(Healthcheck::None)
        );
    }

    #[test]
    fn expose_and_signals() {
        assert!(ty("EXPOSE 80 53/udp 1000-1002/tcp 127.0.0.1:80:80 [::1]:81:81").is_ok());
        assert!(ty("EXPOSE 80/xyz").is_err());
        assert!(ty("EXPOSE localhost:80:80").is_err());
        assert!(ty("EXPOSE 127.0.0.1::")
            .unwrap_err()
            .message
            .contains("no port specified"));
        assert!(ty("STOPSIGNAL SIGTERM").is_ok());
        assert!(ty("STOPSIGNAL 9").is_ok());
        assert!(ty("STOPSIGNAL SIGNOPE").is_err());
    }

    #[test]
    fn onbuild_rules() {
        let Instruction::Onbuild(o) = ins("ONBUILD RUN echo hi") else {
            panic!()
        };
        assert_eq!(o.expression, "RUN echo hi");
        assert!(ty("ONBUILD ONBUILD RUN x")
            .unwrap_err()
            .message
            .contains("Chaining ONBUILD"));
        assert!(ty("ONBUILD FROM x")
            .unwrap_err()
            .message
            .contains("isn't allowed as an ONBUILD trigger"));
    }

    #[test]
    fn unknown_instruction_suggests() {
        let e = ty("FROM a\nFNTRYPOINT x\n").unwrap_err();
        assert_eq!(e.message, "unknown instruction: FNTRYPOINT");
        assert_eq!(e.hint.as_deref(), Some("did you mean ENTRYPOINT?"));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("1h2m3.5s"), Some(3_723_500_000_000));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("12x"), None);
    }
}
