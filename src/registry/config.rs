//! Registry policy as the daemonless ecosystem writes it: containers-registries.conf(5) v2
//! (the system or the user file, then `registries.conf.d/*.conf` drop-ins in name order) and the
//! `certs.d` directories of CA and client certificates.
//!
//! What is read: `[[registry]]` tables chosen by the longest `prefix` (or `location`) match, with
//! `location` rewrites, `insecure`, `blocked` and `[[registry.mirror]]` (`location`, `insecure`,
//! `pull-from-mirror`); `[aliases]` for short names; `short-name-mode`. Mirrors apply to pulls
//! only, tried in order before the primary. Short names resolve with Docker's rules (to
//! docker.io) unless an alias says otherwise; `short-name-mode = "enforcing"` refuses a short
//! name that has no alias (there is no prompt in a builder).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Error;
use crate::oci::reference::{is_short_name, Reference};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileV2 {
    #[serde(default)]
    short_name_mode: Option<String>,
    #[serde(default)]
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<RegistryTable>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    /// The v1 format's table; its presence is an error with a pointer to v2.
    #[serde(default)]
    registries: Option<toml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RegistryTable {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror: Vec<MirrorTable>,
    #[serde(default)]
    mirror_by_digest_only: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MirrorTable {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: Option<String>,
}

/// A `[[registry]]` entry, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRule {
    /// What it applies to: `host[:port][/path…]` or `*.example.com`.
    pub prefix: String,
    /// Where it sends requests instead (same as prefix when not rewritten).
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    pub mirrors: Vec<Mirror>,
    /// The file it came from, for errors.
    pub file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub location: String,
    pub insecure: bool,
    /// `all` (default), `digest-only` or `tag-only`.
    pub pull_from: String,
}

/// One place to pull from, in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    pub reference: Reference,
    pub insecure: bool,
    pub mirror: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ShortNameMode {
    /// Docker's rule: a short name is on docker.io (the default).
    #[default]
    Docker,
    /// A short name must have an alias.
    Enforcing,
}

/// The policy in force: registries.conf rules, aliases, short-name mode and where certs.d lives.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub rules: Vec<RegistryRule>,
    pub aliases: BTreeMap<String, (String, PathBuf)>,
    pub short_name_mode: ShortNameMode,
    pub files: Vec<PathBuf>,
    pub certs_dirs: Vec<PathBuf>,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))
}

impl Policy {
    /// The files containers/image reads: `$CONTAINERS_REGISTRIES_CONF` alone when set; else
    /// the user's `~/.config/containers/registries.conf` if it exists, or the system's
    /// `/etc/containers/registries.conf`; then the drop-ins of `registries.conf.d` (system,
    /// then the user's) in name order, later files overriding earlier ones.
    pub fn load() -> Result<Policy, Error> {
        let mut files = Vec::new();
        if let Some(p) = std::env::var_os("CONTAINERS_REGISTRIES_CONF").filter(|v| !v.is_empty()) {
            files.push(PathBuf::from(p));
        } else {
            let user = config_home().map(|c| c.join("containers/registries.conf"));
            match user.filter(|u| u.exists()) {
                Some(u) => files.push(u),
                None => files.push(PathBuf::from("/etc/containers/registries.conf")),
            }
            let mut dropin_dirs = vec![PathBuf::from("/etc/containers/registries.conf.d")];
            if let Some(c) = config_home() {
                dropin_dirs.push(c.join("containers/registries.conf.d"));
            }
            for d in dropin_dirs {
                let Ok(rd) = fs_err::read_dir(&d) else {
                    continue;
                };
                let mut v: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                    .collect();
                v.sort();
                files.extend(v);
            }
        }
        let mut policy = Policy::default();
        for f in files.iter().filter(|f| f.exists()) {
            let text = fs_err::read_to_string(f).map_err(|e| Error::Config {
                path: f.clone(),
                message: e.to_string(),
            })?;
            policy.merge(&text, f)?;
            policy.files.push(f.clone());
        }
        policy.certs_dirs = certs_dirs();
        Ok(policy)
    }

    /// Merge one file's content (later files override entries with the same prefix).
    pub fn merge(&mut self, text: &str, path: &Path) -> Result<(), Error> {
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let f: FileV2 = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if f.registries.is_some() {
            return Err(bad("this is the v1 format ([registries.search] …), which is no longer supported: write [[registry]] tables (containers-registries.conf(5))".into()));
        }
        match f.short_name_mode.as_deref() {
            None => {}
            Some("enforcing") => self.short_name_mode = ShortNameMode::Enforcing,
            Some("permissive") | Some("disabled") => self.short_name_mode = ShortNameMode::Docker,
            Some(other) => {
                return Err(bad(format!(
                    "short-name-mode \"{other}\" is not enforcing, permissive or disabled"
                )))
            }
        }
        let _ = f.unqualified_search_registries;
        for (k, v) in f.aliases {
            self.aliases.insert(k, (v, path.to_path_buf()));
        }
        for t in f.registry {
            let prefix = t
                .prefix
                .clone()
                .or_else(|| t.location.clone())
                .ok_or_else(
                    || bad("a [[registry]] table has neither prefix nor location".into()),
                )?;
            let location = t.location.clone().unwrap_or_else(|| prefix.clone());
            let prefix = normalise_prefix(&prefix);
            let mirrors = t
                .mirror
                .iter()
                .map(|m| Mirror {
                    location: m.location.clone(),
                    insecure: m.insecure,
                    pull_from: m.pull_from_mirror.clone().unwrap_or_else(|| {
                        if t.mirror_by_digest_only {
                            "digest-only".into()
                        } else {
                            "all".into()
                        }
                    }),
                })
                .collect();
            self.rules.retain(|r| r.prefix != prefix);
            self.rules.push(RegistryRule {
                prefix,
                location,
                insecure: t.insecure,
                blocked: t.blocked,
                mirrors,
                file: path.to_path_buf(),
            });
        }
        Ok(())
    }

    /// Parse what the user typed, applying `[aliases]` and short-name-mode.
    pub fn parse_reference(&self, input: &str) -> Result<Reference, Error> {
        if is_short_name(input) {
            let (name, rest) = split_name(input);
            if let Some((target, _file)) = self.aliases.get(name) {
                return Ok(Reference::parse(&format!("{target}{rest}"))?);
            }
            if self.short_name_mode == ShortNameMode::Enforcing {
                return Err(Error::ShortName {
                    name: input.to_string(),
                    files: self.files.clone(),
                });
            }
        }
        Ok(Reference::parse(input)?)
    }

    /// The rule with the longest prefix matching `r`, if any.
    pub fn rule_for(&self, r: &Reference) -> Option<&RegistryRule> {
        let q = r.qualified();
        self.rules
            .iter()
            .filter(|rule| prefix_matches(&rule.prefix, &q, r.domain()))
            .max_by_key(|rule| rule.prefix.len())
    }

    /// Is the registry host of `r` marked insecure (plain HTTP or unverified TLS allowed)?
    pub fn insecure(&self, r: &Reference) -> bool {
        self.rule_for(r).is_some_and(|x| x.insecure)
    }

    /// Where to pull `r` from, in order: the mirrors, then the (possibly rewritten) primary.
    pub fn pull_sources(&self, r: &Reference) -> Result<Vec<PullSource>, Error> {
        let Some(rule) = self.rule_for(r) else {
            return Ok(vec![PullSource {
                reference: r.clone(),
                insecure: false,
                mirror: false,
            }]);
        };
        if rule.blocked {
            return Err(Error::Blocked {
                reference: r.to_string(),
                file: rule.file.clone(),
            });
        }
        let mut out = Vec::new();
        let by_digest = r.digest().is_some();
        for m in &rule.mirrors {
            let ok = match m.pull_from.as_str() {
                "digest-only" => by_digest,
                "tag-only" => !by_digest,
                _ => true,
            };
            if ok {
                out.push(PullSource {
                    reference: rewrite(r, &rule.prefix, &m.location)?,
                    insecure: m.insecure,
                    mirror: true,
                });
            }
        }
        out.push(PullSource {
            reference: rewrite(r, &rule.prefix, &rule.location)?,
            insecure: rule.insecure,
            mirror: false,
        });
        Ok(out)
    }

    /// Where to push `r`: its rewritten location (mirrors are for pulls only).
    pub fn push_target(&self, r: &Reference) -> Result<PullSource, Error> {
        match self.rule_for(r) {
            None => Ok(PullSource {
                reference: r.clone(),
                insecure: false,
                mirror: false,
            }),
            Some(rule) if rule.blocked => Err(Error::Blocked {
                reference: r.to_string(),
                file: rule.file.clone(),
            }),
            Some(rule) => Ok(PullSource {
                reference: rewrite(r, &rule.prefix, &rule.location)?,
                insecure: rule.insecure,
                mirror: false,
            }),
        }
    }
}

/// `python:3` → ("python", ":3"); `org/app@sha256:…` → ("org/app", "@sha256:…").
fn split_name(s: &str) -> (&str, &str) {
    let end = s.find(['@', ':']).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// `docker.io/python` is written `docker.io/library/python` in prefixes; keep what was written
/// otherwise.
fn normalise_prefix(p: &str) -> String {
    match p.strip_prefix("docker.io/") {
        Some(rest) if !rest.contains('/') && !rest.is_empty() => {
            format!("docker.io/library/{rest}")
        }
        _ => p.to_string(),
    }
}

/// containers/image's prefix match: a wildcard `*.example.com` matches hosts under it;
/// otherwise the prefix must match whole path components (or a tag/digest boundary).
fn prefix_matches(prefix: &str, qualified: &str, domain: &str) -> bool {
    if let Some(suffix) = prefix.strip_prefix("*.") {
        let host = domain.split(':').next().unwrap_or(domain);
        return host.ends_with(&format!(".{suffix}"));
    }
    match qualified.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with(['/', ':', '@']),
        None => false,
    }
}

/// Replace the matched prefix of `r` by `location`.
fn rewrite(r: &Reference, prefix: &str, location: &str) -> Result<Reference, Error> {
    if prefix.starts_with("*.") {
        // Wildcards cannot be rewritten (as in containers/image): only the host changes.
        return Ok(r.relocated(location, r.path()));
    }
    let q = r.qualified();
    let rest = q.strip_prefix(prefix).unwrap_or(&q);
    let text = format!("{location}{rest}");
    // A location without a registry host (docker.io implied) must keep its registry explicit.
    let parsed = Reference::parse(&text).map_err(|e| Error::Config {
        path: PathBuf::from("registries.conf"),
        message: format!("rewriting {r} with {prefix} → {location}: {e}"),
    })?;
    Ok(parsed)
}

/// certs.d directories in the order containers/image and Docker read them.
pub fn certs_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(c) = config_home() {
        v.push(c.join("containers/certs.d"));
    }
    v.push(PathBuf::from("/etc/containers/certs.d"));
    v.push(PathBuf::from("/etc/docker/certs.d"));
    v
}

/// The TLS material of one registry host: extra CAs (`*.crt`) and a client certificate
/// (`NAME.cert` with `NAME.key`).
#[derive(Debug, Default, Clone)]
pub struct HostCerts {
    pub cas: Vec<(PathBuf, Vec<u8>)>,
    pub client: Option<(PathBuf, Vec<u8>)>,
    pub dirs: Vec<PathBuf>,
}

pub fn host_certs(dirs: &[PathBuf], host: &str) -> Result<HostCerts, Error> {
    let mut out = HostCerts::default();
    for d in dirs {
        let dir = d.join(host);
        out.dirs.push(dir.clone());
        let Ok(rd) = fs_err::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            let read = |p: &Path| {
                fs_err::read(p).map_err(|e| Error::Config {
                    path: p.to_path_buf(),
                    message: e.to_string(),
                })
            };
            match p.extension().and_then(|e| e.to_str()) {
                Some("crt") => out.cas.push((p.clone(), read(&p)?)),
                Some("cert") => {
                    let key = p.with_extension("key");
                    if !key.exists() {
                        return Err(Error::Config {
                            path: p.clone(),
                            message: format!(
                                "a client certificate needs its key beside it ({})",
                                key.display()
                            ),
                        });
                    }
                    let mut pem = read(&p)?;
                    pem.push(b'\n');
                    pem.extend(read(&key)?);
                    out.client = Some((p.clone(), pem));
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        let mut p = Policy::default();
        p.merge(text, Path::new("/test/registries.conf")).unwrap();
        p
    }

    #[test]
    fn mirrors_then_primary() {
        let p = policy(
            r#"
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5000/hub"
insecure = true
[[registry.mirror]]
location = "mirror.example.com"
pull-from-mirror = "digest-only"
"#,
        );
        let r = Reference::parse("python:3.11-slim").unwrap();
        let s = p.pull_sources(&r).unwrap();
        let shown: Vec<String> = s.iter().map(|x| x.reference.qualified()).collect();
        assert_eq!(
            shown,
            [
                "127.0.0.1:5000/hub/library/python:3.11-slim",
                "docker.io/library/python:3.11-slim"
            ]
        );
        assert!(s[0].insecure && s[0].mirror && !s[1].mirror);
        let d = Reference::parse(
            "python@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        assert_eq!(p.pull_sources(&d).unwrap().len(), 3);
        // Pushes ignore mirrors.
        assert_eq!(p.push_target(&r).unwrap().reference, r);
    }

    #[test]
    fn longest_prefix_rewrite_blocked_wildcard() {
        let p = policy(
            r#"
[[registry]]
prefix = "example.com/foo"
location = "internal.example.com/bar"
[[registry]]
prefix = "example.com"
blocked = true
[[registry]]
location = "*.insecure.test"
insecure = true
"#,
        );
        let r = Reference::parse("example.com/foo/app:1").unwrap();
        assert_eq!(
            p.pull_sources(&r).unwrap()[0].reference.qualified(),
            "internal.example.com/bar/app:1"
        );
        // A component boundary: example.com/foobar is not under example.com/foo.
        let e = p
            .pull_sources(&Reference::parse("example.com/foobar").unwrap())
            .unwrap_err();
        assert!(matches!(e, Error::Blocked { .. }), "{e}");
        assert!(e.to_string().contains("/test/registries.conf"), "{e}");
        assert!(p.insecure(&Reference::parse("a.insecure.test/x").unwrap()));
        assert!(!p.insecure(&Reference::parse("insecure.test.evil/x").unwrap()));
    }

    #[test]
    fn aliases_and_short_name_mode() {
        let p = policy(
            r#"
short-name-mode = "enforcing"
[aliases]
"py" = "quay.io/python/python"
"#,
        );
        assert_eq!(
            p.parse_reference("py:3").unwrap().qualified(),
            "quay.io/python/python:3"
        );
        let e = p.parse_reference("python:3").unwrap_err();
        assert!(e.to_string().contains("short name"), "{e}");
        assert!(p.parse_reference("docker.io/library/python:3").is_ok());
        let loose = policy("");
        assert_eq!(
            loose.parse_reference("python:3").unwrap().qualified(),
            "docker.io/library/python:3"
        );
    }

    #[test]
    fn v1_and_bad_toml_are_errors_naming_the_file() {
        let mut p = Policy::default();
        let e = p
            .merge(
                "[registries.search]\nregistries = []\n",
                Path::new("/x.conf"),
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("/x.conf") && e.to_string().contains("v1"),
            "{e}"
        );
        let e = p.merge("[[registry]\n", Path::new("/y.conf")).unwrap_err();
        assert!(e.to_string().contains("/y.conf"), "{e}");
    }
}
