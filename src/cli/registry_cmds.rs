//! `pull`, `push`, `login` and `logout`.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use super::progress::{Mode, Progress};
use anyhow::{anyhow, bail, Context};
use strata::oci::Platform;
use strata::registry::credentials::{self, Credential, Secret};
use strata::registry::push::PushOptions;
use strata::registry::{ImageSource, PullPolicy, Reference, Registry};
use strata::store::Store;

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The image: NAME[:TAG], NAME@DIGEST or NAME:TAG@DIGEST (short names are on docker.io).
    image: String,
    /// The platform to pick from a multi-platform image (default: this machine's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Progress output: auto, tty, plain, json or quiet.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tty", "plain", "json", "quiet"])]
    progress: String,
    /// Print only the digest.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The image in the store (name or id).
    image: String,
    /// Where to push it (default: the image's name): REGISTRY/REPOSITORY[:TAG].
    dest: Option<String>,
    /// How uncompressed layers are sent: gzip (default), zstd, or none; with a level as gzip:6.
    #[arg(long, default_value = "gzip")]
    compression: String,
    /// Progress output: auto, tty, plain, json or quiet.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tty", "plain", "json", "quiet"])]
    progress: String,
    /// Print only the digest.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Upload blobs in chunks of this many bytes (PATCH) instead of one PUT each.
    #[arg(long, value_name = "BYTES")]
    chunk_size: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The registry host: docker.io, ghcr.io, localhost:5000, …
    registry: String,
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// The password (visible in the process list: prefer --password-stdin).
    #[arg(short = 'p', long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The registry host.
    registry: String,
}

fn progress(mode: &str, quiet: bool) -> anyhow::Result<Arc<Progress>> {
    let m = Mode::parse(mode, quiet).ok_or_else(|| anyhow!("invalid --progress {mode}"))?;
    Ok(Arc::new(Progress::new(m)))
}

fn platform(p: Option<&str>) -> anyhow::Result<Platform> {
    let Some(p) = p else {
        return Ok(Platform::host());
    };
    Ok(Platform::parse_specifier(p, &Platform::host())?)
}

pub fn pull(store: &Store, a: PullArgs) -> anyhow::Result<i32> {
    let p = progress(&a.progress, a.quiet)?;
    let src = ImageSource::new(
        store,
        PullPolicy::Always,
        platform(a.platform.as_deref())?,
        p.clone(),
    );
    let r = src.image(&a.image)?;
    if a.quiet {
        println!("{}", r.digest);
    } else {
        let what = if r.pulled { "pulled" } else { "up to date:" };
        p.finish(&format!(
            "{what} {} ({}, image id {})",
            r.reference
                .as_ref()
                .map(|x| x.to_string())
                .unwrap_or_else(|| a.image.clone()),
            r.digest,
            r.record.config_digest
        ));
    }
    Ok(0)
}

pub fn push(store: &Store, a: PushArgs) -> anyhow::Result<i32> {
    let p = progress(&a.progress, a.quiet)?;
    let compression = strata::layer::Compression::parse(&a.compression).ok_or_else(|| {
        anyhow!(
            "invalid --compression {}: gzip, zstd or none",
            a.compression
        )
    })?;
    let opts = PushOptions {
        compression,
        chunk_size: a.chunk_size,
    };
    // A name of an image index: every platform's image, then the index under the tag.
    if let Some((desc, _)) = store.find_index(&a.image)? {
        let dest = match &a.dest {
            Some(d) => Reference::parse(d)?,
            None => desc
                .annotations
                .get(strata::oci::REF_NAME)
                .and_then(|n| Reference::parse(n).ok())
                .ok_or_else(|| anyhow!("{} has no name: give the destination", a.image))?,
        };
        let reg = Registry::from_environment()?.with_observer(p.clone());
        let pushed = reg
            .push_index(store, &desc, &dest, &opts)
            .with_context(|| format!("pushing {} to {dest}", a.image))?;
        if a.quiet {
            println!("{}", pushed.digest);
        } else {
            p.finish(&pushed.to_string());
        }
        return Ok(0);
    }
    let img = store.resolve(&a.image)?;
    let dest = match &a.dest {
        Some(d) => Reference::parse(d)?,
        None => img
            .names
            .iter()
            .find(|n| a.image.contains(n.name().as_str()) || n.to_string() == a.image)
            .or(img.names.first())
            .cloned()
            .ok_or_else(|| anyhow!("{} has no name: give the destination", a.image))?,
    };
    let reg = Registry::from_environment()?.with_observer(p.clone());
    let pushed = reg
        .push(store, &img, &dest, &opts)
        .with_context(|| format!("pushing {} to {dest}", a.image))?;
    if a.quiet {
        println!("{}", pushed.digest);
    } else {
        p.finish(&pushed.to_string());
    }
    Ok(0)
}

/// The registry host a login is for (`docker.io` for Docker Hub's spellings).
fn login_host(s: &str) -> anyhow::Result<String> {
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let host = credentials::normalise_key(s.split('/').next().unwrap_or(s));
    // Validate through the reference grammar.
    Reference::parse(&format!("{host}/x")).map_err(|e| anyhow!("invalid registry \"{s}\": {e}"))?;
    Ok(host.to_string())
}

fn read_secret(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("no terminal to ask for the {prompt}: use --password-stdin");
    }
    eprint!("{prompt}: ");
    let _ = std::io::stderr().flush();
    // Echo off while the password is typed.
    let fd = rustix::stdio::stdin();
    let old = rustix::termios::tcgetattr(fd).ok();
    if let Some(o) = &old {
        let mut t = o.clone();
        t.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &t);
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(o) = &old {
        let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, o);
    }
    eprintln!();
    r.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn login(a: LoginArgs) -> anyhow::Result<i32> {
    let host = login_host(&a.registry)?;
    let username = match a.username {
        Some(u) => u,
        None => {
            if !std::io::stdin().is_terminal() {
                bail!("give the user name with -u USER");
            }
            eprint!("Username: ");
            let _ = std::io::stderr().flush();
            let mut u = String::new();
            std::io::stdin().lock().read_line(&mut u)?;
            u.trim().to_string()
        }
    };
    let password = if a.password_stdin {
        let mut p = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut p)
            .context("reading the password from standard input")?;
        p.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = a.password {
        p
    } else {
        read_secret("Password")?
    };
    if username.is_empty() || password.is_empty() {
        bail!("the user name and the password must not be empty");
    }
    // Check the credential against the registry before keeping it.
    let reg = Registry::from_environment()?;
    reg.force_credential(
        &host,
        Credential {
            secret: Secret::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            source: "the credentials given to login".into(),
        },
    );
    reg.check_login(&host)
        .with_context(|| format!("logging in to {host}"))?;
    let file = credentials::login_file()
        .ok_or_else(|| anyhow!("no place for the credentials: set REGISTRY_AUTH_FILE or HOME"))?;
    let wrote = credentials::store(&file, &host, &username, &password)?;
    println!("Login Succeeded ({host}, saved in {wrote})");
    Ok(0)
}

pub fn logout(a: LogoutArgs) -> anyhow::Result<i32> {
    let host = login_host(&a.registry)?;
    let file = credentials::login_file()
        .ok_or_else(|| anyhow!("no credentials file: set REGISTRY_AUTH_FILE or HOME"))?;
    if credentials::erase(&file, &host)? {
        println!("Removed login credentials for {host}");
        Ok(0)
    } else {
        eprintln!("Not logged in to {host} (in {})", file.display());
        Ok(1)
    }
}
