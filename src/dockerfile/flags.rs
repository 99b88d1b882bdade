//! The errors of instruction flags and option values checked without a build (`--mount`,
//! RUN's options, `--chmod`, STOPSIGNAL, EXPOSE, `--checksum`), each carrying the value it
//! refuses. Their messages are BuildKit's where BuildKit has one.

/// ` (did you mean X?)` after a message, or nothing.
fn did_you_mean(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

/// A `--mount` value refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("unterminated quote in \"{value}\"")]
    Quote { value: String },
    #[error("invalid field '{field}' must be a key=value pair")]
    NotKeyValue { field: String },
    #[error("'from' doesn't support variable expansion, define alias stage instead")]
    FromExpansion { from: String },
    #[error("invalid mode \"{value}\": expected an octal number such as 0755")]
    Mode { value: String },
    #[error("invalid {key} \"{value}\": expected a number")]
    Id { key: String, value: String },
    #[error("invalid size \"{value}\": expected bytes such as 64m or 1g")]
    Size { value: String },
    #[error("unexpected key '{key}' in '{field}'{}", did_you_mean(.suggestion))]
    UnknownKey {
        key: String,
        field: String,
        suggestion: Option<String>,
    },
    #[error("unsupported mount type \"{kind}\" (expected bind, cache, tmpfs, secret or ssh){}", did_you_mean(.suggestion))]
    Kind {
        kind: String,
        suggestion: Option<String>,
    },
    #[error("unsupported sharing value \"{value}\" (expected shared, private or locked)")]
    Sharing { value: String },
    #[error("invalid value for {key}: \"{value}\" (expected true or false)")]
    Bool { key: String, value: String },
    #[error("invalid mount target \"{target}\": cannot mount over /")]
    TargetRoot { target: String },
    #[error("mount type=secret requires an id, a target or an env")]
    SecretUnnamed,
    #[error("sharing is only for type=cache, not type={kind}")]
    SharingNotCache { kind: &'static str },
    #[error("size is only for type=tmpfs, not type={kind}")]
    SizeNotTmpfs { kind: &'static str },
}

/// The options of an expanded RUN refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunOptionsError {
    #[error("--mount {mount}: {error}")]
    Mount { mount: String, error: MountError },
    #[error("RUN --security=insecure: entitlement security.insecure is not allowed (strata runs every step unprivileged and never grants it)")]
    Insecure,
    #[error("unsupported network mode \"{network}\": use default, none or host")]
    Network { network: String },
}

/// A STOPSIGNAL value that names no signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signal: {signal}")]
pub struct SignalError {
    pub signal: String,
}

/// An EXPOSE entry refused (Docker's nat.ParsePortSpec messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("invalid proto: {proto}")]
    Proto { proto: String },
    #[error("invalid IP address in {spec}")]
    IpIn { spec: String },
    #[error("invalid IP address: {ip}")]
    Ip { ip: String },
    #[error("invalid port format: {spec}")]
    Format { spec: String },
    #[error("no port specified: {spec}<empty>")]
    NoPort { spec: String },
    #[error("invalid containerPort: {port}")]
    ContainerPort { port: String },
    #[error("invalid port range: {port}")]
    Range { port: String },
}

/// A `--chmod` value refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChmodError {
    /// BuildKit's message for a value that starts as a number.
    #[error(
        "invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777"
    )]
    Octal { value: String },
    #[error(
        "invalid chmod \"{value}\": expected an octal mode (0755) or symbolic clauses (u+x,go-w)"
    )]
    Clause { value: String },
    #[error("invalid chmod \"{value}\": unknown permission in \"{clause}\"")]
    Permission { value: String, clause: String },
}

/// A `--chmod` value, checked: octal (`755`, `0644`) or symbolic clauses as chmod(1) and
/// BuildKit take them (`u+x,go-w`, `a=rX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    /// Comma-separated clauses `[ugoa]*([+-=][rwxXst]*)+`, as written.
    Symbolic(String),
}

impl std::str::FromStr for Chmod {
    type Err = ChmodError;

    fn from_str(v: &str) -> Result<Chmod, ChmodError> {
        // A value that starts as a number is octal, with BuildKit's message when it is not one.
        if v.starts_with(|c: char| c.is_ascii_digit()) {
            return match u32::from_str_radix(v, 8) {
                Ok(m) if m <= 0o7777 => Ok(Chmod::Octal(m)),
                _ => Err(ChmodError::Octal {
                    value: v.to_string(),
                }),
            };
        }
        for clause in v.split(',') {
            let who_len = clause.chars().take_while(|c| "ugoa".contains(*c)).count();
            let ops = &clause[who_len..];
            if ops.is_empty() || !ops.starts_with(['+', '-', '=']) {
                return Err(ChmodError::Clause {
                    value: v.to_string(),
                });
            }
            if !ops.chars().all(|c| "+-=rwxXst".contains(c)) {
                return Err(ChmodError::Permission {
                    value: v.to_string(),
                    clause: clause.to_string(),
                });
            }
        }
        Ok(Chmod::Symbolic(v.to_string()))
    }
}

impl Chmod {
    /// The mode of an entry whose mode is `mode` (a directory when `is_dir`: `X` applies).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let spec = match self {
            Chmod::Octal(n) => return *n,
            Chmod::Symbolic(s) => s,
        };
        let mut m = mode & 0o7777;
        for clause in spec.split(',') {
            let who_end = clause
                .find(|c: char| !matches!(c, 'u' | 'g' | 'o' | 'a'))
                .unwrap_or(clause.len());
            let who = &clause[..who_end];
            let mut rest = &clause[who_end..];
            let mask = if who.is_empty() || who.contains('a') {
                0o7777
            } else {
                let mut k = 0;
                if who.contains('u') {
                    k |= 0o4700;
                }
                if who.contains('g') {
                    k |= 0o2070;
                }
                if who.contains('o') {
                    k |= 0o1007;
                }
                k
            };
            // Parsing checked that each clause is operators, each followed by permissions.
            while let Some(op) = rest.chars().next() {
                let perm_end = rest[1..]
                    .find(['+', '-', '='])
                    .map(|i| i + 1)
                    .unwrap_or(rest.len());
                let perms = &rest[1..perm_end];
                rest = &rest[perm_end..];
                let mut bits = 0u32;
                for p in perms.chars() {
                    bits |= match p {
                        'r' => 0o444,
                        'w' => 0o222,
                        'x' => 0o111,
                        'X' if is_dir || m & 0o111 != 0 => 0o111,
                        's' => 0o6000,
                        't' => 0o1000,
                        _ => 0,
                    };
                }
                let bits = bits & mask;
                match op {
                    '+' => m |= bits,
                    '-' => m &= !bits,
                    _ => m = (m & !mask) | bits,
                }
            }
        }
        m
    }

    /// The mode itself when it is octal (directories a COPY creates take it).
    pub fn octal(&self) -> Option<u32> {
        match self {
            Chmod::Octal(n) => Some(*n),
            Chmod::Symbolic(_) => None,
        }
    }
}

/// A `--chown` value refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --chown \"{value}\": expected user[:group]")]
pub struct ChownError {
    pub value: String,
}

/// A `--chown` value: a user and an optional group, each a name or a number (resolved in the
/// image's /etc/passwd and /etc/group when the step runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chown {
    pub user: String,
    pub group: Option<String>,
}

impl std::str::FromStr for Chown {
    type Err = ChownError;

    fn from_str(v: &str) -> Result<Chown, ChownError> {
        if v.is_empty() || v.starts_with(':') || v.ends_with(':') {
            return Err(ChownError {
                value: v.to_string(),
            });
        }
        Ok(Chown::split(v))
    }
}

impl Chown {
    /// `user[:group]` split at its first colon, unchecked (an expanded value: an empty user
    /// is root, as Docker takes it).
    pub fn split(v: &str) -> Chown {
        match v.split_once(':') {
            Some((u, g)) => Chown {
                user: u.to_string(),
                group: Some(g.to_string()),
            },
            None => Chown {
                user: v.to_string(),
                group: None,
            },
        }
    }
}

/// A `--checksum` value refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error("invalid checksum \"{value}\": unsupported digest algorithm {algorithm} (sha256, sha384 or sha512)")]
    Algorithm { value: String, algorithm: String },
    #[error("invalid checksum \"{value}\": expected {len} hex digits after {algorithm}:")]
    Length {
        value: String,
        algorithm: String,
        len: usize,
    },
    #[error("invalid checksum \"{value}\": expected sha256:<hex> (or sha384, sha512) or a hex commit hash")]
    Form { value: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_octal_and_symbolic() {
        let c = |s: &str| s.parse::<Chmod>().unwrap();
        assert_eq!(c("0644").apply(0o755, false), 0o644);
        assert_eq!(c("777").apply(0o600, false), 0o777);
        assert_eq!(c("go-w").apply(0o777, false), 0o755);
        assert_eq!(c("u=rw,g=r,o=r").apply(0o777, false), 0o644);
        assert_eq!(c("a+X").apply(0o644, true), 0o755);
        assert_eq!(c("a+X").apply(0o644, false), 0o644);
        assert_eq!(c("u+rw,g+r,o-x,o+w").apply(0o751, false), 0o752);
        assert_eq!(c("0755").octal(), Some(0o755));
        assert_eq!(c("u+x").octal(), None);
        for bad in ["64a", "10000", "", "ux", "u+q", "u+x,"] {
            assert!(bad.parse::<Chmod>().is_err(), "{bad}");
        }
        assert_eq!(
            "999".parse::<Chmod>().unwrap_err().to_string(),
            "invalid chmod parameter: '999'. it should be octal string and between 0 and 07777"
        );
    }
}
