//! RUN's `--mount`s, one function per kind as BuildKit's `convert_runmount` (bind, cache,
//! tmpfs, secret, ssh): each turns a [`MountSpec`] into the sandbox's [`Bind`]s, the
//! environment variables it sets (a secret's `env=`, `SSH_AUTH_SOCK`) and what must be held
//! while the step runs ([`Held`]: cache locks, secrets' in-memory files).

use std::path::{Path, PathBuf};

use super::source::{self, FromRef};
use crate::dockerfile::{MountKind, MountSpec, RunOptions, Sharing};
use crate::engine::error::{BuildError, Doing as _, Error};
use crate::engine::hooks::{self, hook_done};
use crate::engine::state::{lowers, StageView};
use crate::engine::{Build, SecretSource};
use crate::sandbox::{self, Bind, BindSource};

pub use crate::engine::error::MountError;

/// What a RUN step's mounts hold while it runs: cache mount locks, and the in-memory files of
/// its secrets.
#[derive(Default)]
pub(super) struct Held {
    pub(super) locks: Vec<fs_err::File>,
    pub(super) memory: Vec<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// A mount's target, relative ones against WORKDIR.
fn mount_target(st: StageView<'_, '_, '_>, t: &Option<String>) -> Result<String, MountError> {
    let t = t.clone().ok_or(MountError::NoTarget)?;
    Ok(if t.starts_with('/') {
        t
    } else {
        format!("{}/{t}", st.workdir().trim_end_matches('/'))
    })
}

/// The cache a cache mount uses: its `id=` (else its target) and, when it gives `uid=`, `gid=`
/// or `mode=`, those too. BuildKit keys a cache by its id and the mount's base, which with
/// those options is the directory they make (`setCacheUIDGID`): a mount with them never gets
/// the cache a plain mount (or one with other options) of the same id made, with its owner
/// and mode, but its own, made as asked.
fn cache_id(m: &MountSpec, target: &str) -> String {
    let id = m.id.clone().unwrap_or_else(|| target.to_string());
    if m.uid.is_none() && m.gid.is_none() && m.mode.is_none() {
        return id;
    }
    let mut opts = Vec::new();
    if let Some(u) = m.uid {
        opts.push(format!("uid={u}"));
    }
    if let Some(g) = m.gid {
        opts.push(format!("gid={g}"));
    }
    if let Some(mode) = m.mode {
        opts.push(format!("mode={mode:o}"));
    }
    format!("{id}#{}", opts.join(","))
}

/// The ids of the cache mounts of a RUN step, whether it runs or is cached: what
/// `--cache-to …,mounts=true` exports is every cache mount the build's steps declare.
pub(in crate::engine) fn cache_mount_ids(st: StageView<'_, '_, '_>, o: &RunOptions) -> Vec<String> {
    o.mounts
        .iter()
        .filter(|m| m.kind == MountKind::Cache)
        .filter_map(|m| Some(cache_id(m, &mount_target(st, &m.target).ok()?)))
        .collect()
}

/// A bind of a context path: read-only as is; read-write on a throwaway copy.
/// A bind of `src` from the context directory `root`. The sandbox resolves the source
/// inside the root (symlinks followed as if it were `/`), opens it beneath the root with no
/// symlink followed and binds that descriptor, in its own mount namespace: a component
/// swapped for a symlink meanwhile cannot redirect the mount outside the context.
#[allow(clippy::too_many_arguments)]
fn host_bind(
    root: &Path,
    src: &str,
    target: String,
    readonly: bool,
    step: &Path,
    i: usize,
) -> Result<Bind, BuildError> {
    // Checked here too, for an error that names the source before any sandbox starts.
    let p = in_root(root, src)?;
    let rel = p.strip_prefix(root).unwrap_or(Path::new("")).to_path_buf();
    let sub = rel.display().to_string();
    if readonly {
        return Ok(Bind {
            host: root.to_path_buf(),
            target,
            readonly: true,
            source: BindSource::Context { sub },
        });
    }
    let scratch = step.join(format!("mount{i}"));
    fs_err::create_dir_all(&scratch)?;
    if p.is_dir() {
        // Read-write: an overlay with the context as its lower dir; writes are discarded.
        return Ok(Bind {
            host: scratch,
            target,
            readonly: false,
            source: BindSource::Layers {
                lower: vec![root.to_path_buf()],
                sub,
            },
        });
    }
    // A read-write file: a copy in the step's scratch space, read from beneath the root.
    let copy = scratch.join("file");
    let mut from = crate::fsx::open_beneath(root, &rel).map_err(|cause| MountError::Source {
        rel: src.to_string(),
        cause,
    })?;
    let mut to = fs_err::File::create(&copy)?;
    std::io::copy(&mut from, &mut to)?;
    to.set_permissions(from.metadata()?.permissions())?;
    Ok(Bind {
        host: copy,
        target,
        readonly: false,
        source: BindSource::Host,
    })
}

/// A cache mount's directory at `dir`, owned and moded as the mount asks, made inside the user
/// namespace (the owner may be a subordinate id).
fn make_cache_dir(b: &Build, dir: &Path, m: &MountSpec, what: &str) -> Result<(), BuildError> {
    let make = hooks::Hook::MakeCache {
        path: dir.to_path_buf(),
        uid: m.uid.unwrap_or(0),
        gid: m.gid.unwrap_or(0),
        mode: m.mode.unwrap_or(0o755),
    };
    hook_done(&b.exe, make, &b.maps, what)
}

/// A path inside `root`, symlinks resolved as if `root` were `/`.
fn in_root(root: &Path, rel: &str) -> Result<PathBuf, BuildError> {
    let clean = crate::fsx::clean(&format!("/{rel}"));
    let r = crate::fsx::resolve_in_root(root, Path::new(clean.trim_start_matches('/')), 0)?;
    let p = root.join(r);
    if std::fs::symlink_metadata(&p).is_err() {
        return Err(MountError::NotFound {
            rel: rel.to_string(),
            root: root.to_path_buf(),
        }
        .into());
    }
    Ok(p)
}

/// Set up one RUN --mount: its binds go to `binds`, the variables it sets to `env`, what it
/// holds while the step runs to `held`.
pub(super) fn mount(
    st: StageView<'_, '_, '_>,
    m: &MountSpec,
    step: &Path,
    i: usize,
    binds: &mut Vec<Bind>,
    env: &mut Vec<String>,
    held: &mut Held,
) -> Result<(), BuildError> {
    match m.kind {
        MountKind::Bind => binds.push(bind(st, m, step, i)?),
        MountKind::Cache => binds.push(cache(st, m, step, i, held)?),
        MountKind::Tmpfs => binds.push(tmpfs(st, m)?),
        MountKind::Secret => binds.extend(secret(st.b(), m, step, i, env, held)?),
        MountKind::Ssh => binds.extend(ssh(st.b(), m, i, env)?),
    }
    Ok(())
}

/// `type=bind`: a path of the context (or of a named context), else of a stage or an image
/// (`from=`), seen through an overlay of its layers.
fn bind(
    st: StageView<'_, '_, '_>,
    m: &MountSpec,
    step: &Path,
    i: usize,
) -> Result<Bind, BuildError> {
    let b = st.b();
    let t = mount_target(st, &m.target)?;
    let src = m.source.clone().unwrap_or_default();
    let readonly = m.readonly.unwrap_or(true);
    let Some(f) = &m.from else {
        let root = b.opts.context.clone();
        return host_bind(&root, &src, t, readonly, step, i);
    };
    match source::source_ref(st, f)? {
        FromRef::Context(root) => host_bind(&root, &src, t, readonly, step, i),
        FromRef::Stage(r) => {
            let l = lowers(b, &r.config, &r.layers)?;
            let scratch = step.join(format!("mount{i}"));
            fs_err::create_dir_all(&scratch)?;
            let lower = if l.is_empty() {
                let e = scratch.join("empty");
                fs_err::create_dir_all(&e)?;
                vec![e]
            } else {
                l
            };
            Ok(Bind {
                host: scratch,
                target: t,
                readonly,
                source: BindSource::Layers { lower, sub: src },
            })
        }
    }
}

/// `type=cache`: the store's directory for the cache's id (seeded from an imported cache when
/// there is one), locked as `sharing=` asks; an empty throwaway one under `--no-cache`.
fn cache(
    st: StageView<'_, '_, '_>,
    m: &MountSpec,
    step: &Path,
    i: usize,
    held: &mut Held,
) -> Result<Bind, BuildError> {
    let b = st.b();
    let t = mount_target(st, &m.target)?;
    let id = cache_id(m, &t);
    let dir = crate::engine::cache::cache_mount_dir(b.store, &id);
    fs_err::create_dir_all(dir.parent().unwrap_or(Path::new(".")))?;
    let mut host = dir.clone();
    if st.no_cache() {
        // As BuildKit: a step built without the cache gets an empty cache mount of its
        // own, thrown away after the step; the kept one is left as it was.
        host = step.join(format!("no-cache{i}"));
        make_cache_dir(b, &host, m, &format!("creating an empty cache mount {id}"))?;
    } else if !dir.exists() && !crate::engine::cache::remote::seed_mount(b, &id, &dir)? {
        make_cache_dir(b, &dir, m, &format!("creating cache mount {id}"))?;
    }
    if m.sharing != Sharing::Shared && !st.no_cache() {
        // locked: one step at a time; private: a step that finds the cache in use
        // gets a fresh, throwaway one.
        let f = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.with_extension("lock"))?;
        let op = if m.sharing == Sharing::Locked {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::NonBlockingLockExclusive
        };
        match rustix::fs::flock(&f, op) {
            Ok(()) => held.locks.push(f),
            Err(rustix::io::Errno::WOULDBLOCK) => {
                host = step.join(format!("private-cache{i}"));
                let what = format!("creating a private cache mount {id}");
                make_cache_dir(b, &host, m, &what)?;
            }
            Err(errno) => return Err(MountError::Lock { id, errno }.into()),
        }
    }
    // `source=`: a directory of the cache, resolved inside it (a symlink there cannot
    // lead out of it), as BuildKit mounts a cache's subpath.
    let sub = m
        .source
        .as_deref()
        .map(|s| crate::fsx::clean(&format!("/{s}")))
        .filter(|s| s != "/");
    Ok(Bind {
        host,
        target: t,
        readonly: m.readonly.unwrap_or(false),
        source: match sub {
            Some(sub) => BindSource::Context { sub },
            // No uid/gid: the cache is the step user's (BuildKit keeps it root's).
            None => BindSource::Cache {
                follow_user: m.uid.is_none() && m.gid.is_none(),
            },
        },
    })
}

/// `type=tmpfs`: an empty tmpfs of `size=`.
fn tmpfs(st: StageView<'_, '_, '_>, m: &MountSpec) -> Result<Bind, BuildError> {
    Ok(Bind {
        host: PathBuf::new(),
        target: mount_target(st, &m.target)?,
        readonly: false,
        source: BindSource::Tmpfs { size: m.size },
    })
}

/// `type=secret`: the secret's value as a file in memory, and in `env=`'s variable when it
/// names one; nothing when the build has no such secret and the mount does not require it.
fn secret(
    b: &Build,
    m: &MountSpec,
    step: &Path,
    i: usize,
    env: &mut Vec<String>,
    held: &mut Held,
) -> Result<Option<Bind>, BuildError> {
    // As BuildKit's dispatchSecret: `source=` names the secret over `id=`.
    let id = m
        .source
        .clone()
        .or_else(|| m.id.clone())
        .or_else(|| {
            m.target
                .as_deref()
                .map(|t| t.rsplit('/').next().unwrap_or(t).to_string())
        })
        .ok_or(MountError::NoSecretId)?;
    let value = match b.opts.secrets.get(&id) {
        Some(SecretSource::File(p)) => {
            Some(fs_err::read(p).doing_with(|| format!("reading secret {id}"))?)
        }
        Some(SecretSource::Env(v)) => Some(
            std::env::var(v)
                .map_err(|_| MountError::SecretEnvUnset {
                    id: id.clone(),
                    var: v.clone(),
                })?
                .into_bytes(),
        ),
        None => None,
    };
    let Some(value) = value else {
        if m.required {
            return Err(Error::MissingSecret { id }.into());
        }
        return Ok(None);
    };
    if let Some(var) = &m.env {
        env.push(format!("{var}={}", String::from_utf8_lossy(&value)));
        if m.target.is_none() {
            return Ok(None);
        }
    }
    let t = m
        .target
        .clone()
        .unwrap_or_else(|| format!("/run/secrets/{id}"));
    // The file exists only in memory (a memfd the sandbox bind-mounts read-only):
    // never on disk, so no kill at any instant leaves a copy; never in the upper
    // dir, so never in a layer.
    let f = sandbox::memory_file(&value, m.mode.unwrap_or(0o400))
        .doing_with(|| format!("secret {id}: an in-memory file"))?;
    let bind = Bind {
        host: step.join(format!("secret{i}")),
        target: t,
        readonly: true,
        source: BindSource::Memory {
            index: held.memory.len(),
            uid: m.uid.unwrap_or(0),
            gid: m.gid.unwrap_or(0),
        },
    };
    held.memory.push(f);
    Ok(Some(bind))
}

/// `type=ssh`: the agent socket given with `--ssh` for the mount's id, and `SSH_AUTH_SOCK`
/// naming it; nothing when it was not given and the mount does not require it.
fn ssh(
    b: &Build,
    m: &MountSpec,
    i: usize,
    env: &mut Vec<String>,
) -> Result<Option<Bind>, BuildError> {
    let id = m.id.clone().unwrap_or_else(|| "default".into());
    let sock = match b.opts.ssh.get(&id) {
        Some(p) => p.clone(),
        None if m.required => return Err(Error::MissingSsh { id }.into()),
        None => return Ok(None),
    };
    let t = m
        .target
        .clone()
        .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{i}"));
    env.push(format!("SSH_AUTH_SOCK={t}"));
    Ok(Some(Bind {
        host: sock,
        target: t,
        readonly: false,
        source: BindSource::Host,
    }))
}
