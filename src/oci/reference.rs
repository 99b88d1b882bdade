//! Image references with Docker's grammar and normalisation (distribution/reference):
//! `python:3.12-slim` is `docker.io/library/python:3.12-slim`, `ghcr.io/org/img:tag`,
//! `localhost:5000/x`, `name@sha256:…`, `name:tag@sha256:…`.
//!
//! One type for every place a reference is typed: `-t`, tags in the store, `FROM`,
//! `--build-context docker-image://`, `pull` and `push`. It is displayed the way users type it
//! (the "familiar" form: `python:3.12-slim`, not `docker.io/library/python:3.12-slim`), which is
//! also the name the store keeps.

use std::fmt;
use std::str::FromStr;

use crate::oci::Digest;

/// Docker Hub's canonical domain and the repository prefix of its official images.
pub const DOCKER_HUB: &str = "docker.io";
const OFFICIAL_PREFIX: &str = "library/";
/// distribution/reference's limit on a repository name's length (domain included).
const NAME_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference \"{input}\": {why}")]
pub struct ReferenceError {
    pub input: String,
    pub why: String,
}

/// A parsed, normalised reference. A reference with neither tag nor digest gets `latest`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn is_alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A domain: host labels (letters, digits, '-' inside) joined by '.', or `[ipv6]`, with an
/// optional `:port`.
fn valid_domain(s: &str) -> bool {
    let valid_port =
        |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit());
    if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, tail)) = rest.split_once(']') else {
            return false;
        };
        let v6_ok = !v6.is_empty() && v6.bytes().all(|c| c.is_ascii_hexdigit() || c == b':');
        return v6_ok && (tail.is_empty() || tail.strip_prefix(':').is_some_and(valid_port));
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if port.is_some_and(|p| !valid_port(p)) {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Reference {
    /// Parse with Docker's rules. The first path component is a registry domain when it has a
    /// '.' or ':' or is `localhost` (or has upper case letters); otherwise the registry is
    /// Docker Hub, and a one-component name is an official image (`library/`).
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |why: &str| ReferenceError {
            input: input.to_string(),
            why: why.to_string(),
        };
        if input.is_empty() {
            return Err(err("it is empty"));
        }
        if input.len() > 4096 {
            return Err(err("it is longer than 4096 bytes"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let d: Digest = d.parse().map_err(|_| {
                    err("the part after '@' is not a digest (sha256: and 64 hex digits)")
                })?;
                (r, Some(d))
            }
            None => (input, None),
        };
        // The tag is after the last ':' that follows the last '/' (a port is not a tag).
        let slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(err(
                    "a tag is 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
                ));
            }
        }
        if name.is_empty() {
            return Err(err("the repository name is empty"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if !valid_domain(&domain) {
            return Err(err(&format!("\"{domain}\" is not a valid registry host")));
        }
        let domain = if domain == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            domain
        };
        if path.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(err("repository names must be lowercase"));
        }
        if !path.split('/').all(valid_component) {
            return Err(err("a repository name is lowercase letters and digits, separated by '.', '_', '__', '-' or '/' (for example myapp or registry:5000/team/app)"));
        }
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path
        };
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(err(&format!(
                "the repository name is longer than {NAME_MAX} characters"
            )));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// A reference from its parts (already valid).
    pub fn from_parts(domain: &str, path: &str, tag: Option<&str>, digest: Option<Digest>) -> Self {
        Reference {
            domain: domain.to_string(),
            path: path.to_string(),
            tag: tag.map(str::to_string),
            digest,
        }
    }

    /// The registry host (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path on its registry (`library/python`, `org/img`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The repository as users type it: `python`, `ghcr.io/org/img`, `localhost:5000/x`.
    pub fn name(&self) -> String {
        if self.domain == DOCKER_HUB {
            self.path
                .strip_prefix(OFFICIAL_PREFIX)
                .unwrap_or(&self.path)
                .to_string()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The fully qualified repository: `docker.io/library/python`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag (`latest` when the reference had neither tag nor digest; empty for a digest-only
    /// reference).
    pub fn tag(&self) -> &str {
        self.tag.as_deref().unwrap_or("")
    }

    pub fn has_tag(&self) -> bool {
        self.tag.is_some()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository pinned to `digest` (the tag kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository and tag on another registry/path (a mirror or a rewrite).
    pub fn relocated(&self, domain: &str, path: &str) -> Reference {
        Reference {
            domain: domain.to_string(),
            path: path.to_string(),
            ..self.clone()
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned, else the tag.
    pub fn manifest_selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// Fully qualified, as registries.conf prefixes are written: `docker.io/library/python:3`.
    pub fn qualified(&self) -> String {
        let mut s = self.full_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Does `s` name a repository without a registry (`python`, `org/app`): a short name, which
/// registries.conf aliases and short-name-mode apply to?
pub fn is_short_name(s: &str) -> bool {
    let name = s.split('@').next().unwrap_or(s);
    match name.split_once('/') {
        Some((first, _)) => {
            !(first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|c| c.is_ascii_uppercase()))
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_like_docker() {
        let cases = [
            (
                "python",
                "docker.io",
                "library/python",
                "latest",
                "python:latest",
            ),
            (
                "python:3.12-slim",
                "docker.io",
                "library/python",
                "3.12-slim",
                "python:3.12-slim",
            ),
            (
                "docker.io/python:3",
                "docker.io",
                "library/python",
                "3",
                "python:3",
            ),
            (
                "docker.io/library/python",
                "docker.io",
                "library/python",
                "latest",
                "python:latest",
            ),
            (
                "index.docker.io/org/app:v1",
                "docker.io",
                "org/app",
                "v1",
                "org/app:v1",
            ),
            (
                "org/app",
                "docker.io",
                "org/app",
                "latest",
                "org/app:latest",
            ),
            (
                "ghcr.io/astral-sh/uv:0.5",
                "ghcr.io",
                "astral-sh/uv",
                "0.5",
                "ghcr.io/astral-sh/uv:0.5",
            ),
            (
                "localhost:5000/x",
                "localhost:5000",
                "x",
                "latest",
                "localhost:5000/x:latest",
            ),
            ("localhost/x:y", "localhost", "x", "y", "localhost/x:y"),
            (
                "127.0.0.1:5000/a/b/c:t",
                "127.0.0.1:5000",
                "a/b/c",
                "t",
                "127.0.0.1:5000/a/b/c:t",
            ),
            ("[::1]:5000/x:t", "[::1]:5000", "x", "t", "[::1]:5000/x:t"),
            (
                "my-reg.example.com/a__b/c-d/e.f:_t",
                "my-reg.example.com",
                "a__b/c-d/e.f",
                "_t",
                "my-reg.example.com/a__b/c-d/e.f:_t",
            ),
        ];
        for (input, domain, path, tag, shown) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (r.domain(), r.path(), r.tag()),
                (domain, path, tag),
                "{input}"
            );
            assert_eq!(r.to_string(), shown, "{input}");
            assert_eq!(
                Reference::parse(&r.to_string()).unwrap(),
                r,
                "{input} round trip"
            );
        }
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("python@{D}")).unwrap();
        assert_eq!(r.tag(), "");
        assert_eq!(r.digest().unwrap().as_str(), D);
        assert_eq!(r.manifest_selector(), D);
        assert_eq!(r.to_string(), format!("python@{D}"));
        let r = Reference::parse(&format!("python:3.12@{D}")).unwrap();
        assert_eq!((r.tag(), r.manifest_selector().as_str()), ("3.12", D));
        assert_eq!(r.qualified(), format!("docker.io/library/python:3.12@{D}"));
    }

    #[test]
    fn rejects_what_docker_rejects() {
        let long = format!("a/{}", "b".repeat(300));
        let bad = [
            "",
            "../../x",
            "Python",
            "org/App",
            "a//b",
            "/a",
            "a/",
            "a:",
            "a:-x",
            "a:.x",
            &format!("a:{}", "t".repeat(129)),
            "a@sha256:abc",
            "a@md5:0123",
            "a b",
            "a-",
            "-a",
            "a..b",
            "a___b",
            "host:port/x",
            long.as_str(),
            "a:b:c",
        ];
        for b in bad {
            assert!(Reference::parse(b).is_err(), "{b:?} should be rejected");
        }
        let e = Reference::parse("Python").unwrap_err();
        assert!(e.to_string().contains("lowercase"), "{e}");
    }

    #[test]
    fn short_names() {
        assert!(is_short_name("python:3"));
        assert!(is_short_name("org/app"));
        assert!(!is_short_name("docker.io/python"));
        assert!(!is_short_name("localhost/x"));
        assert!(!is_short_name("reg:5000/x"));
    }
}
