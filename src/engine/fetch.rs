//! ADD's remote sources: HTTP(S) files (with `--checksum`) and git repositories, fetched into a
//! scratch directory that the COPY machinery then reads like a context. The content digest (or
//! the commit) goes into the step's key, so a changed download reruns the step.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::engine::error::BuildError;
pub use crate::engine::error::FetchError;
use crate::oci::Digest;

/// Is `s` a git source as ADD understands it (BuildKit's forms)?
pub fn is_git(s: &str) -> bool {
    let base = s.split(['#', '?']).next().unwrap_or(s);
    s.starts_with("git@")
        || s.starts_with("git://")
        || s.starts_with("ssh://")
        || ((s.starts_with("https://") || s.starts_with("http://"))
            && (base.ends_with(".git") || base.contains(".git/")))
        || s.starts_with("github.com/")
}

pub fn is_remote(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || is_git(s)
}

/// What a fetch left for the copy: a root directory and the sources below it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub root: PathBuf,
    pub sources: Vec<String>,
    /// For the key: content digests and commits.
    pub digests: Vec<String>,
}

/// The file name ADD gives a URL's download: the last path segment, or `__unnamed__`.
pub fn url_file_name(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let path = no_query
        .split_once("://")
        .map(|(_, rest)| rest.split_once('/').map(|(_, p)| p).unwrap_or(""))
        .unwrap_or("");
    match path.rsplit('/').next() {
        Some(n) if !n.is_empty() && n != "." && n != ".." => n.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

/// Check a downloaded file against `--checksum` (sha256 from the digest taken while it was
/// written; sha384 and sha512 by reading it again).
fn check_checksum(
    expected: &str,
    path: &Path,
    actual: &Digest,
    url: &str,
) -> Result<(), BuildError> {
    use crate::dockerfile::instructions::{parse_checksum, Checksum, ChecksumAlg};
    let (alg, hex) = match parse_checksum(expected).map_err(FetchError::BadChecksum)? {
        Checksum::Digest { alg, hex } => (alg, hex),
        Checksum::Commit(_) => {
            return Err(FetchError::CommitForFile {
                expected: expected.to_string(),
                url: url.to_string(),
            }
            .into())
        }
    };
    let got = match alg {
        ChecksumAlg::Sha256 => actual.hex().to_string(),
        ChecksumAlg::Sha384 | ChecksumAlg::Sha512 => {
            let ring_alg = if alg == ChecksumAlg::Sha384 {
                &ring::digest::SHA384
            } else {
                &ring::digest::SHA512
            };
            let mut ctx = ring::digest::Context::new(ring_alg);
            let mut f = fs_err::File::open(path)?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf)?;
                if n == 0 {
                    break;
                }
                ctx.update(&buf[..n]);
            }
            hex::encode(ctx.finish().as_ref())
        }
    };
    if got != hex {
        return Err(FetchError::Mismatch {
            url: url.to_string(),
            expected: expected.to_string(),
            alg: alg.name(),
            got,
        }
        .into());
    }
    Ok(())
}

/// Download `urls` into `dir`.
pub fn http(urls: &[String], dir: &Path, checksum: Option<&str>) -> Result<Fetched, BuildError> {
    let client = reqwest::blocking::Client::builder()
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(FetchError::Client)?;
    let mut out = Fetched {
        root: dir.to_path_buf(),
        sources: Vec::new(),
        digests: Vec::new(),
    };
    for (i, url) in urls.iter().enumerate() {
        // One subdirectory per URL, so two URLs with the same file name do not collide.
        let sub = dir.join(i.to_string());
        fs_err::create_dir_all(&sub)?;
        let name = url_file_name(url);
        let path = sub.join(&name);
        let download = |source| FetchError::Download {
            url: url.clone(),
            source,
        };
        let mut resp = client.get(url).send().map_err(download)?;
        if !resp.status().is_success() {
            return Err(FetchError::Status {
                url: url.clone(),
                status: resp.status(),
            }
            .into());
        }
        let modified = resp
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(httpdate);
        let f = fs_err::File::create(&path)?;
        let mut w = crate::oci::HashingWriter::new(std::io::BufWriter::new(f));
        resp.copy_to(&mut w).map_err(download)?;
        let (bw, digest, _) = w.finish();
        bw.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        if let Some(c) = checksum {
            check_checksum(c, &path, &digest, url)?;
        }
        // Docker gives a downloaded file mode 0600 (unless --chmod says otherwise).
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        if let Some(t) = modified {
            let ts = rustix::fs::Timespec {
                tv_sec: t,
                tv_nsec: 0,
            };
            let _ = rustix::fs::utimensat(
                rustix::fs::CWD,
                &path,
                &rustix::fs::Timestamps {
                    last_access: ts,
                    last_modification: ts,
                },
                rustix::fs::AtFlags::empty(),
            );
        }
        out.sources.push(format!("{i}/{name}"));
        out.digests
            .push(format!("{url} {digest} {}", modified.unwrap_or(0)));
    }
    Ok(out)
}

/// Parse an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) into seconds since the epoch.
fn httpdate(s: &str) -> Option<i64> {
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.len() != 6 {
        return None;
    }
    let day: i64 = f[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == f[2])? as i64
        + 1;
    let year: i64 = f[3].parse().ok()?;
    let hms: Vec<i64> = f[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

fn git(dir: &Path, args: &[&str]) -> Result<String, FetchError> {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(FetchError::NoGit)?;
    if !o.status.success() {
        return Err(FetchError::Git {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Clone `src` (`URL[#REF[:SUBDIR]]`) into `dir`; with `keep_git_dir` the `.git` stays.
pub fn git_repo(
    src: &str,
    dir: &Path,
    keep_git_dir: bool,
    checksum: Option<&str>,
) -> Result<Fetched, BuildError> {
    let (url, fragment) = match src.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (src, None),
    };
    let (reference, subdir) = match fragment {
        Some(f) => match f.split_once(':') {
            Some((r, s)) => (Some(r).filter(|r| !r.is_empty()), Some(s)),
            None => (Some(f).filter(|r| !r.is_empty()), None),
        },
        None => (None, None),
    };
    let url = if url.starts_with("github.com/") {
        format!("https://{url}")
    } else {
        url.to_string()
    };
    let repo = dir.join("repo");
    fs_err::create_dir_all(dir)?;
    git(
        dir,
        &["clone", "--quiet", "--recurse-submodules", &url, "repo"],
    )?;
    if let Some(r) = reference {
        git(&repo, &["checkout", "--quiet", r]).map_err(|e| FetchError::NoRef {
            url: url.clone(),
            reference: r.to_string(),
            cause: Box::new(e),
        })?;
        git(
            &repo,
            &["submodule", "--quiet", "update", "--init", "--recursive"],
        )?;
    }
    let commit = git(&repo, &["rev-parse", "HEAD"])?;
    if let Some(c) = checksum {
        use crate::dockerfile::instructions::{parse_checksum, Checksum};
        match parse_checksum(c).map_err(FetchError::BadChecksum)? {
            Checksum::Commit(p) if commit.starts_with(&p) => {}
            Checksum::Commit(_) => {
                return Err(FetchError::CommitMismatch {
                    url,
                    checksum: c.to_string(),
                    commit,
                }
                .into())
            }
            Checksum::Digest { .. } => {
                return Err(FetchError::DigestForGit {
                    checksum: c.to_string(),
                    url,
                }
                .into())
            }
        }
    }
    if !keep_git_dir {
        fs_err::remove_dir_all(repo.join(".git"))?;
    }
    let root = match subdir {
        Some(s) => repo.join(s.trim_start_matches('/')),
        None => repo,
    };
    if !root.is_dir() {
        return Err(FetchError::NoSubdir {
            url,
            subdir: subdir.unwrap_or("").to_string(),
        }
        .into());
    }
    Ok(Fetched {
        root,
        sources: vec![".".into()],
        digests: vec![format!("git {url} {commit} {}", subdir.unwrap_or(""))],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_dates_and_git_forms() {
        assert_eq!(
            url_file_name("https://example.com/a/b.tar.gz?x=1"),
            "b.tar.gz"
        );
        assert_eq!(url_file_name("https://example.com/"), "__unnamed__");
        assert_eq!(url_file_name("https://example.com"), "__unnamed__");
        assert_eq!(httpdate("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784111777));
        assert!(is_git("https://github.com/moby/buildkit.git#v0.10.1"));
        assert!(is_git("git@github.com:moby/buildkit.git"));
        assert!(is_git("http://127.0.0.1:8000/repo.git#main:sub"));
        assert!(!is_git("https://example.com/file.tar.gz"));
    }

    #[test]
    fn checksums_in_every_algorithm_the_front_end_accepts() {
        let dir = std::env::temp_dir().join(format!("strata-fetch-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        let f = dir.join("x");
        fs_err::write(&f, b"x").unwrap();
        let d = Digest::of(b"x");
        // `printf x | sha384sum`, `printf x | sha512sum`.
        let sha384 = "sha384:d752c2c51fba0e29aa190570a9d4253e44077a058d3297fa3a5630d5bd012622f97c28acaed313b5c83bb990caa7da85";
        let sha512 = "sha512:a4abd4448c49562d828115d13a1fccea927f52b4d5459297f8b43e42da89238bc13626e43dcb38ddb082488927ec904fb42057443983e88585179d50551afe62";
        for good in [d.to_string().as_str(), sha384, sha512] {
            check_checksum(good, &f, &d, "u").unwrap();
            // The front end accepts what the download checks.
            crate::dockerfile::instructions::parse_checksum(good).unwrap();
        }
        let wrong512 = format!("sha512:{}", "0".repeat(128));
        for (bad, says) in [
            ("md5:abc", "unsupported"),
            ("sha256:00", "expected 64 hex digits"),
            (wrong512.as_str(), "digest mismatch"),
            ("abcdef1", "commit hash is for git"),
        ] {
            let e = check_checksum(bad, &f, &d, "u").unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        fs_err::remove_dir_all(&dir).unwrap();
    }
}
