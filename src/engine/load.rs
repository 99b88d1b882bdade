//! `build --load`: the built image into a running docker daemon, through its API socket (`POST
//! /images/load` with a docker-archive, what `docker load` sends), or into podman's storage
//! (`podman load` as the calling user), as buildx's `--load` hands an image to docker.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};

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
    pub fn parse(s: &str) -> Result<LoadTarget, String> {
        match s {
            "" | "true" | "auto" => Ok(LoadTarget::Auto),
            "docker" => Ok(LoadTarget::Docker),
            "podman" => Ok(LoadTarget::Podman),
            other => Err(format!(
                "--load={other}: expected docker or podman (--load alone: docker when its socket answers, else podman)"
            )),
        }
    }
}

/// The docker daemon's socket: `$DOCKER_HOST` when it is `unix://PATH`, else
/// `/var/run/docker.sock`.
pub fn docker_socket() -> Result<PathBuf, String> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => match h.strip_prefix("unix://") {
            Some(p) => Ok(PathBuf::from(p)),
            None => Err(format!(
                "DOCKER_HOST={h}: --load talks to a docker daemon through a unix socket (unix://PATH)"
            )),
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
) -> anyhow::Result<Vec<String>> {
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
                bail!(
                    "--load: no docker daemon answers at {} and podman is not installed: start docker (or set DOCKER_HOST=unix://PATH), install podman, or write an archive with --output type=docker,dest=FILE",
                    docker_socket().map(|p| p.display().to_string()).unwrap_or_else(|e| e)
                )
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
        .context("writing the image as a docker-archive for --load")?;
    let r = match target {
        LoadTarget::Podman => podman_load(&archive),
        _ => {
            let sock = docker_socket().map_err(|e| anyhow!(e))?;
            docker_load(&sock, &archive)
        }
    };
    let _ = std::fs::remove_file(&archive);
    r
}

fn podman_load(archive: &Path) -> anyhow::Result<Vec<String>> {
    let o = std::process::Command::new("podman")
        .arg("load")
        .arg("-i")
        .arg(archive)
        .stdin(std::process::Stdio::null())
        .output()
        .context("--load: running podman load")?;
    if !o.status.success() {
        bail!(
            "--load: podman load failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("podman: {}", l.trim()))
        .collect())
}

/// `POST /images/load` on the docker API at `sock`, the archive as the body.
fn docker_load(sock: &Path, archive: &Path) -> anyhow::Result<Vec<String>> {
    let what = || format!("--load: the docker daemon at {}", sock.display());
    let mut conn = UnixStream::connect(sock).with_context(|| {
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
    .with_context(what)?;
    std::io::copy(&mut body, &mut conn).with_context(what)?;
    conn.flush().with_context(what)?;
    let mut r = BufReader::new(conn);
    let mut status = String::new();
    r.read_line(&mut status).with_context(what)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("{}: not an HTTP answer: {status:?}", what()))?;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).with_context(what)? == 0 || h == "\r\n" || h == "\n" {
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
            r.read_line(&mut size).with_context(what)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| anyhow!("{}: a bad chunk size {size:?}", what()))?;
            if n == 0 {
                break;
            }
            let mut chunk = vec![0u8; n];
            r.read_exact(&mut chunk).with_context(what)?;
            raw.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).with_context(what)?;
        }
    } else {
        // Bounded: the answer is a few lines of JSON.
        r.take(16 << 20).read_to_end(&mut raw).with_context(what)?;
    }
    let text = String::from_utf8_lossy(&raw);
    if code != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        bail!("{}: HTTP {code}: {message}", what());
    }
    let mut said = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|_| anyhow!("{}: an answer that is not JSON: {line}", what()))?;
        if let Some(e) = v["errorDetail"]["message"].as_str().or(v["error"].as_str()) {
            bail!("{}: {e}", what());
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
