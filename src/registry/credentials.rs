//! Credentials, found the way podman, buildah, skopeo and docker find them.
//!
//! Files, in order (the first that has an entry for the registry wins):
//! `$REGISTRY_AUTH_FILE`, `${XDG_RUNTIME_DIR}/containers/auth.json`,
//! `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`, `$DOCKER_CONFIG/config.json` (or
//! `~/.docker/config.json`), `~/.dockercfg`. In each: `credHelpers[host]`, then `auths` keys
//! (namespaced keys such as `reg.example.com/team` match longest first; Docker Hub's aliases
//! are one registry), then `credsStore`. Helpers are `docker-credential-NAME get|store|erase`;
//! "credentials not found" from a helper means anonymous, not a failure.
//!
//! A secret is never printed: `Credential`'s Debug hides it, and errors name only the source.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::Error;

/// What a registry is given.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`, or a helper's `<token>` user).
    IdentityToken {
        token: String,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Secret::IdentityToken { .. } => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

/// A credential and where it came from (for "denied" errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub secret: Secret,
    pub source: String,
}

fn env_path(k: &str) -> Option<PathBuf> {
    std::env::var_os(k)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The files to read, in order.
pub fn auth_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = env_path("REGISTRY_AUTH_FILE") {
        v.push(p);
    }
    if let Some(r) = env_path("XDG_RUNTIME_DIR") {
        v.push(r.join("containers/auth.json"));
    }
    let home = env_path("HOME");
    if let Some(c) =
        env_path("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config")))
    {
        v.push(c.join("containers/auth.json"));
    }
    match env_path("DOCKER_CONFIG") {
        Some(d) => v.push(d.join("config.json")),
        None => {
            if let Some(h) = &home {
                v.push(h.join(".docker/config.json"));
            }
        }
    }
    if let Some(h) = &home {
        v.push(h.join(".dockercfg"));
    }
    v
}

/// The file `strata login` writes: `$REGISTRY_AUTH_FILE`, else the containers primary file
/// (`${XDG_RUNTIME_DIR}/containers/auth.json`, or `~/.config/containers/auth.json` where there is
/// no runtime directory).
pub fn login_file() -> Option<PathBuf> {
    env_path("REGISTRY_AUTH_FILE")
        .or_else(|| env_path("XDG_RUNTIME_DIR").map(|r| r.join("containers/auth.json")))
        .or_else(|| {
            env_path("XDG_CONFIG_HOME")
                .or_else(|| env_path("HOME").map(|h| h.join(".config")))
                .map(|c| c.join("containers/auth.json"))
        })
}

/// The `credHelpers` entry of a config file for `host`, under any spelling of its key.
fn cred_helper(v: &Value, host: &str) -> Option<String> {
    v.get("credHelpers")?
        .as_object()?
        .iter()
        .find(|(k, _)| normalise_key(k) == host)
        .and_then(|(_, h)| h.as_str().map(str::to_string))
}

/// Strip a scheme and a trailing path of "v1/"/"v2/" from a key, as docker does; Docker Hub's
/// spellings become `docker.io`.
pub fn normalise_key(k: &str) -> String {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        other => other.to_string(),
    }
}

fn read_json(p: &Path) -> Result<Option<Value>, Error> {
    let bytes = match fs_err::read(p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Credentials(format!("{}: {e}", p.display())));
        }
    };
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Credentials(format!("{}: not valid JSON: {e}", p.display())))?;
    Ok(Some(v))
}

/// Find the credential for `host` and repository `repo` (path on that host).
pub fn lookup(host: &str, repo: &str) -> Result<Option<Credential>, Error> {
    lookup_in(&auth_files(), host, repo)
}

pub fn lookup_in(files: &[PathBuf], host: &str, repo: &str) -> Result<Option<Credential>, Error> {
    for f in files {
        let Some(v) = read_json(f)? else { continue };
        let is_dockercfg = f.file_name().is_some_and(|n| n == ".dockercfg");
        // ~/.dockercfg is the old format: the auths map at the top level.
        let auths = if is_dockercfg {
            v.as_object().cloned()
        } else {
            v.get("auths").and_then(|a| a.as_object()).cloned()
        };
        if let Some(helper) = cred_helper(&v, host) {
            if let Some(c) = helper_get(&helper, host)? {
                return Ok(Some(c));
            }
        }
        if let Some(auths) = &auths {
            if let Some(c) = from_auths(auths, host, repo, f)? {
                return Ok(Some(c));
            }
        }
        if let Some(store) = v.get("credsStore").and_then(|s| s.as_str()) {
            if let Some(c) = helper_get(store, host)? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// The longest matching key of `auths`: `host/ns/repo` before `host/ns` before `host`.
fn from_auths(
    auths: &Map<String, Value>,
    host: &str,
    repo: &str,
    file: &Path,
) -> Result<Option<Credential>, Error> {
    let full = format!("{host}/{repo}");
    let mut best: Option<(usize, &Value, &String)> = None;
    for (k, v) in auths {
        let nk = normalise_key(k);
        let matches =
            nk == host || (full.starts_with(&nk) && full.as_bytes().get(nk.len()) == Some(&b'/'));
        if matches && best.is_none_or(|(l, _, _)| nk.len() > l) {
            best = Some((nk.len(), v, k));
        }
    }
    let Some((_, v, key)) = best else {
        return Ok(None);
    };
    let source = format!("{} (key \"{key}\")", file.display());
    if let Some(t) = v
        .get("identitytoken")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(Credential {
            secret: Secret::IdentityToken {
                token: t.to_string(),
            },
            source,
        }));
    }
    if let Some(a) = v
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|_| Error::Credentials(format!("{source}: \"auth\" is not base64")))?;
        let text = String::from_utf8(raw)
            .map_err(|_| Error::Credentials(format!("{source}: \"auth\" is not UTF-8")))?;
        let (u, p) = text.split_once(':').ok_or_else(|| {
            Error::Credentials(format!("{source}: \"auth\" is not base64 of user:password"))
        })?;
        return Ok(Some(Credential {
            secret: Secret::Basic {
                username: u.to_string(),
                password: p.to_string(),
            },
            source,
        }));
    }
    if let (Some(u), Some(p)) = (
        v.get("username").and_then(|u| u.as_str()),
        v.get("password").and_then(|p| p.as_str()),
    ) {
        return Ok(Some(Credential {
            secret: Secret::Basic {
                username: u.into(),
                password: p.into(),
            },
            source,
        }));
    }
    Ok(None)
}

fn helper_name(name: &str) -> String {
    format!("docker-credential-{name}")
}

/// Run `docker-credential-NAME get` for `host`.
fn helper_get(name: &str, host: &str) -> Result<Option<Credential>, Error> {
    if name == "containers-auth.json" {
        return Ok(None);
    }
    let exe = helper_name(name);
    let server = if host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    };
    let out = run_helper(&exe, "get", server.as_bytes())?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if msg.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(Error::Credentials(format!(
            "{exe} get {server} failed ({}): {}",
            out.status,
            msg.trim()
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Credentials(format!("{exe} get {server}: not JSON: {e}")))?;
    let user = v.get("Username").and_then(|u| u.as_str()).unwrap_or("");
    let secret = v.get("Secret").and_then(|u| u.as_str()).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    let secret = if user == "<token>" {
        Secret::IdentityToken {
            token: secret.into(),
        }
    } else {
        Secret::Basic {
            username: user.into(),
            password: secret.into(),
        }
    };
    Ok(Some(Credential {
        secret,
        source: format!("credential helper {exe}"),
    }))
}

fn run_helper(exe: &str, verb: &str, input: &[u8]) -> Result<std::process::Output, Error> {
    let mut child = Command::new(exe)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Credentials(format!(
                "running the credential helper {exe}: {e} (is it installed and on PATH?)"
            ))
        })?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(input);
    }
    child
        .wait_with_output()
        .map_err(|e| Error::Credentials(format!("{exe} {verb}: {e}")))
}

/// The helper configured for `host` in the file `strata login` writes, if any.
fn helper_for(file: &Path, host: &str) -> Result<Option<String>, Error> {
    let Some(v) = read_json(file)? else {
        return Ok(None);
    };
    Ok(cred_helper(&v, host).or_else(|| {
        v.get("credsStore")
            .and_then(|s| s.as_str())
            .map(str::to_string)
    }))
}

/// Store a login: to the configured helper, else into `file` (`auths[host].auth`), written
/// atomically with mode 0600. Returns where it went.
pub fn store(file: &Path, host: &str, username: &str, password: &str) -> Result<String, Error> {
    if let Some(h) = helper_for(file, host)? {
        let exe = helper_name(&h);
        let body = serde_json::json!({"ServerURL": host, "Username": username, "Secret": password});
        let out = run_helper(&exe, "store", body.to_string().as_bytes())?;
        if !out.status.success() {
            return Err(Error::Credentials(format!(
                "{exe} store failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        return Ok(format!("credential helper {exe}"));
    }
    let mut v = read_json(file)?.unwrap_or_else(|| serde_json::json!({}));
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Error::Credentials(format!("{}: not a JSON object", file.display())))?;
    let auths = obj
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| {
            Error::Credentials(format!("{}: \"auths\" is not an object", file.display()))
        })?;
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    auths.insert(host.to_string(), serde_json::json!({ "auth": enc }));
    write_private(file, &serde_json::to_vec_pretty(&v).unwrap_or_default())?;
    Ok(file.display().to_string())
}

/// Remove a login from the helper or the file. Returns whether anything was removed.
pub fn erase(file: &Path, host: &str) -> Result<bool, Error> {
    if let Some(h) = helper_for(file, host)? {
        let exe = helper_name(&h);
        let out = run_helper(&exe, "erase", host.as_bytes())?;
        return Ok(out.status.success());
    }
    let Some(mut v) = read_json(file)? else {
        return Ok(false);
    };
    let mut removed = false;
    if let Some(auths) = v.get_mut("auths").and_then(|a| a.as_object_mut()) {
        let keys: Vec<String> = auths
            .keys()
            .filter(|k| normalise_key(k) == host)
            .cloned()
            .collect();
        for k in keys {
            auths.remove(&k);
            removed = true;
        }
    }
    if removed {
        write_private(file, &serde_json::to_vec_pretty(&v).unwrap_or_default())?;
    }
    Ok(removed)
}

fn write_private(file: &Path, bytes: &[u8]) -> Result<(), Error> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| Error::Credentials(format!("{}: {e}", file.display()));
    let dir = file.parent().unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(".auth.json.{}.tmp", std::process::id()));
    let mut f = fs_err::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs_err::rename(&tmp, file).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "strata-cred-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs_err::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn files_in_order_namespaced_keys_and_hub_aliases() {
        let d = tmp();
        let a = d.join("auth.json");
        let b = d.join("config.json");
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        fs_err::write(
            &a,
            serde_json::json!({"auths": {
                "reg.test/team": {"auth": enc("team:t")},
                "reg.test": {"auth": enc("all:a")},
            }})
            .to_string(),
        )
        .unwrap();
        fs_err::write(
            &b,
            serde_json::json!({"auths": {
                "https://index.docker.io/v1/": {"auth": enc("hub:h")},
                "other.test": {"identitytoken": "refresh-me"},
            }})
            .to_string(),
        )
        .unwrap();
        let files = [a.clone(), b.clone()];
        let user = |host: &str, repo: &str| match lookup_in(&files, host, repo).unwrap() {
            Some(Credential {
                secret: Secret::Basic { username, .. },
                ..
            }) => username,
            Some(Credential {
                secret: Secret::IdentityToken { token },
                ..
            }) => format!("token:{token}"),
            None => "anonymous".into(),
        };
        assert_eq!(user("reg.test", "team/app"), "team");
        assert_eq!(user("reg.test", "teamx/app"), "all");
        assert_eq!(user("docker.io", "library/python"), "hub");
        assert_eq!(user("other.test", "x"), "token:refresh-me");
        assert_eq!(user("nowhere.test", "x"), "anonymous");
        // The source names the file, and Debug never shows the password.
        let c = lookup_in(&files, "reg.test", "x").unwrap().unwrap();
        assert!(c.source.contains("auth.json"), "{}", c.source);
        assert!(!format!("{c:?}").contains(":a"), "{c:?}");
        // login writes and logout erases, keeping other entries.
        store(&a, "new.test:5000", "u", "p").unwrap();
        assert_eq!(user("new.test:5000", "x"), "u");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs_err::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(erase(&a, "new.test:5000").unwrap());
        assert_eq!(user("new.test:5000", "x"), "anonymous");
        assert_eq!(user("reg.test", "x"), "all");
        fs_err::remove_dir_all(&d).unwrap();
    }
}
