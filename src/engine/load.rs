//! `build --load`: the built image into a running docker daemon, through its API socket (`POST
//! /images/load` with a docker-archive, what `docker load` sends), or into podman's storage
//! (`podman load` as the calling user), as buildx's `--load` hands an image to docker.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub use crate::engine::error::LoadError;
use crate::engine::error::{BuildError, Doing as _};
use crate::store::{ImageRecord, ImageRef, SaveFormat, Store};

/// Where `--load` puts the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadTarget {
    /// Docker if its socket answers, else podman if it is installed.
    Auto,
    Docker,
    Podman,
}

impl LoadTarget {
    pub fn parse(s: &str) -> Result<LoadTarget, LoadError> {
        match s {
            "" | "true" | "auto" => Ok(LoadTarget::Auto),
            "docker" => Ok(LoadTarget::Docker),
            "podman" => Ok(LoadTarget::Podman),
            other => Err(LoadError::BadTarget {
                given: other.to_string(),
            }),
        }
    }
}

/// The docker daemon's socket: `$DOCKER_HOST` when it is `unix://PATH`, else
/// `/var/run/docker.sock`.
pub fn docker_socket() -> Result<PathBuf, LoadError> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => match h.strip_prefix("unix://") {
            Some(p) => Ok(PathBuf::from(p)),
            None => Err(LoadError::DockerHost { host: h.clone() }),
        },
        _ => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

/// Whether a program is on PATH.
fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// Load `img` (named `names`) into `target`; returns what the daemon or podman said
/// (`Loaded image: app:latest`).
pub fn load(
    store: &Store,
    img: &ImageRecord,
    names: &[ImageRef],
    target: &LoadTarget,
) -> Result<Vec<String>, BuildError> {
    let target = match target {
        LoadTarget::Auto => {
            let docker = docker_socket()
                .ok()
                .filter(|s| UnixStream::connect(s).is_ok());
            if docker.is_some() {
                LoadTarget::Docker
            } else if on_path("podman") {
                LoadTarget::Podman
            } else {
                return Err(LoadError::NoTarget {
                    socket: docker_socket()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|e| e.to_string()),
                }
                .into());
            }
        }
        t => t.clone(),
    };
    let archive = store
        .tmp_dir()
        .join(format!("load-{}.tar", std::process::id()));
    store
        .save(
            &[(img.clone(), names.to_vec())],
            &archive,
            SaveFormat::DockerArchive,
        )
        .doing("writing the image as a docker-archive for --load")?;
    let r = match target {
        LoadTarget::Podman => podman_load(&archive),
        _ => {
            let sock = docker_socket()?;
            docker_load(&sock, &archive)
        }
    };
    let _ = std::fs::remove_file(&archive);
    r
}

fn podman_load(archive: &Path) -> Result<Vec<String>, BuildError> {
    let o = std::process::Command::new("podman")
        .arg("load")
        .arg("-i")
        .arg(archive)
        .stdin(std::process::Stdio::null())
        .output()
        .doing("--load: running podman load")?;
    if !o.status.success() {
        return Err(LoadError::Podman {
            status: o.status.to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        }
        .into());
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("podman: {}", l.trim()))
        .collect())
}

/// `POST /images/load` on the docker API at `sock`, the archive as the body.
fn docker_load(sock: &Path, archive: &Path) -> Result<Vec<String>, BuildError> {
    let what = || format!("--load: the docker daemon at {}", sock.display());
    let daemon = |said: String| LoadError::Daemon {
        socket: sock.to_path_buf(),
        said,
    };
    let mut conn = UnixStream::connect(sock).doing_with(|| {
        format!(
            "{}: cannot connect (is dockerd running, and may this user use its socket?)",
            what()
        )
    })?;
    let mut body = fs_err::File::open(archive)?;
    let len = body.metadata()?.len();
    write!(
        conn,
        "POST /images/load HTTP/1.1\r\nHost: docker\r\nUser-Agent: strata\r\nContent-Type: application/x-tar\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .doing_with(what)?;
    std::io::copy(&mut body, &mut conn).doing_with(what)?;
    conn.flush().doing_with(what)?;
    let mut r = BufReader::new(conn);
    let mut status = String::new();
    r.read_line(&mut status).doing_with(what)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| daemon(format!("not an HTTP answer: {status:?}")))?;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).doing_with(what)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut raw = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).doing_with(what)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| daemon(format!("a bad chunk size {size:?}")))?;
            if n == 0 {
                break;
            }
            let mut chunk = vec![0u8; n];
            r.read_exact(&mut chunk).doing_with(what)?;
            raw.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).doing_with(what)?;
        }
    } else {
        // Bounded: the answer is a few lines of JSON.
        r.take(16 << 20).read_to_end(&mut raw).doing_with(what)?;
    }
    let text = String::from_utf8_lossy(&raw);
    if code != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        return Err(daemon(format!("HTTP {code}: {message}")).into());
    }
    let mut said = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|_| daemon(format!("an answer that is not JSON: {line}")))?;
        if let Some(e) = v["errorDetail"]["message"].as_str().or(v["error"].as_str()) {
            return Err(daemon(e.to_string()).into());
        }
        if let Some(s) = v["stream"].as_str() {
            let s = s.trim();
            if !s.is_empty() {
                said.push(format!("docker: {s}"));
            }
        }
    }
    Ok(said)
}
