//! A test's directory of strata stores, removed when the test ends ([`StoreDir`]), and a store
//! in one with busybox:latest imported, with its build helpers ([`Store`]: tests/build.rs,
//! tests/multiplatform.rs, tests/progress.rs; the registry tests use [`StoreDir`] with stores
//! of their own). What differs between the test binaries is said in [`Options`], never left to
//! the fixture to guess.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Which binary the fixture runs.
#[derive(Clone, Copy, Debug)]
pub enum Bin {
    /// Where cargo built it ([`super::strata`]).
    Cargo,
    /// The copy the unprivileged users can run ([`super::strata_bin`]).
    Copied,
}

impl Bin {
    fn path(self) -> &'static str {
        match self {
            Bin::Cargo => super::strata(),
            Bin::Copied => super::strata_bin(),
        }
    }
}

/// The test's directory `$TMPDIR/strata-<kind>-<pid>-<name>`, holding the test's stores (any
/// directory in it with a `v1/oci`) and whatever else the test puts there. On drop, every store
/// in it is pruned (`prune --all`, as its trees may hold subordinate owners that only strata's
/// user namespace can remove), then the directory is made writable and removed.
pub struct StoreDir {
    /// The directory.
    pub path: PathBuf,
    bin: Bin,
    /// What strata's environment gets: `Some(value)` set, `None` removed.
    env: Vec<(&'static str, Option<OsString>)>,
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        for e in fs_err::read_dir(&self.path).into_iter().flatten().flatten() {
            if e.path().join("v1/oci").exists() {
                let _ = self.strata(&e.path(), &["prune", "--all"]);
            }
        }
        let _ = Command::new("chmod")
            .args(["-R", "u+rwX"])
            .arg(&self.path)
            .output();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl StoreDir {
    /// The directory for test `name` of the binary `kind` (one left by an earlier run with the
    /// same pid removed first; not created). Strata runs with STRATA_ROOT and SOURCE_DATE_EPOCH
    /// removed from its environment.
    pub fn new(kind: &str, name: &str, bin: Bin) -> StoreDir {
        let path =
            std::env::temp_dir().join(format!("strata-{kind}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        StoreDir {
            path,
            bin,
            env: vec![("STRATA_ROOT", None), ("SOURCE_DATE_EPOCH", None)],
        }
    }

    /// Strata runs with `var` removed from its environment.
    pub fn without(mut self, var: &'static str) -> StoreDir {
        self.env.push((var, None));
        self
    }

    /// Strata runs with `var` set to `value`.
    pub fn with(mut self, var: &'static str, value: impl Into<OsString>) -> StoreDir {
        self.env.push((var, Some(value.into())));
        self
    }

    /// `strata --root ROOT` with the directory's environment and stdin from /dev/null; the
    /// caller adds the arguments.
    pub fn command(&self, root: &Path) -> Command {
        let mut c = Command::new(self.bin.path());
        c.arg("--root").arg(root);
        for (var, value) in &self.env {
            match value {
                Some(v) => c.env(var, v),
                None => c.env_remove(var),
            };
        }
        c.stdin(Stdio::null());
        c
    }

    /// `strata --root ROOT ARGS`, run to its end.
    pub fn strata(&self, root: &Path, args: &[&str]) -> Output {
        self.command(root).args(args).output().unwrap()
    }
}

/// STRATA_CACHE_LIMIT of the test's environment, for the strata a [`Store`] runs.
#[derive(Clone, Copy, Debug)]
pub enum CacheLimit {
    /// Removed: the store's default limit (tests/progress.rs: its snapshots must not change
    /// with the caller's environment).
    Removed,
    /// Left as the caller has it (tests/build.rs).
    Inherited,
}

/// How [`Store::ctx`] writes a context's files.
#[derive(Clone, Copy, Debug)]
pub enum CtxFiles {
    /// Every file directly in the context directory (a name with a `/` fails).
    Flat,
    /// A file's parent directories created first (`sub/dir/file`).
    WithParents,
}

/// What one test binary's [`Store`]s are.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The `<kind>` of [`StoreDir::new`].
    pub kind: &'static str,
    pub bin: Bin,
    pub cache_limit: CacheLimit,
    pub ctx: CtxFiles,
}

/// A store (`<dir>/store`) with busybox:latest imported from [`super::busybox_rootfs`]
/// (`<dir>/rootfs`: root:x:0:0, app:x:1000:1000, nobody), in a [`StoreDir`].
pub struct Store {
    /// The test's directory.
    pub dir: PathBuf,
    /// The store, `<dir>/store`.
    pub root: String,
    ctx: CtxFiles,
    stores: StoreDir,
}

impl Store {
    /// The store for test `name`; None (the test skipped, see [`super::skip`]) without
    /// /bin/busybox.
    pub fn new(o: &Options, name: &str) -> Option<Store> {
        if !Path::new("/bin/busybox").exists() {
            super::skip("/bin/busybox (busybox-static) is not installed");
            return None;
        }
        let mut stores = StoreDir::new(o.kind, name, o.bin);
        if let CacheLimit::Removed = o.cache_limit {
            stores = stores.without("STRATA_CACHE_LIMIT");
        }
        let dir = stores.path.clone();
        let r = dir.join("rootfs");
        super::busybox_rootfs(&r)?;
        let s = Store {
            root: dir.join("store").display().to_string(),
            dir,
            ctx: o.ctx,
            stores,
        };
        let o = s.strata(&["import", r.to_str().unwrap(), "busybox:latest"]);
        assert!(o.status.success(), "import: {}", super::text(&o.stderr));
        Some(s)
    }

    /// `strata --root <store> ARGS`.
    pub fn strata(&self, args: &[&str]) -> Output {
        self.stores.strata(Path::new(&self.root), args)
    }

    /// `strata build --progress plain ARGS CTX`.
    pub fn build(&self, ctx: &Path, args: &[&str]) -> Output {
        let mut a = vec!["build", "--progress", "plain"];
        a.extend_from_slice(args);
        a.push(ctx.to_str().unwrap());
        self.strata(&a)
    }

    /// Build, assert success, return the progress output.
    pub fn ok(&self, ctx: &Path, args: &[&str]) -> String {
        let o = self.build(ctx, args);
        assert!(
            o.status.success(),
            "build of {} failed:\n{}",
            ctx.display(),
            super::text(&o.stderr)
        );
        super::text(&o.stderr)
    }

    /// Build, assert failure, return the error output.
    pub fn fails(&self, ctx: &Path, args: &[&str]) -> String {
        self.fails_with(ctx, args).1
    }

    /// A build that fails: its exit code and stderr.
    pub fn fails_with(&self, ctx: &Path, args: &[&str]) -> (Option<i32>, String) {
        let o = self.build(ctx, args);
        assert!(!o.status.success(), "build of {} succeeded", ctx.display());
        (o.status.code(), super::text(&o.stderr))
    }

    /// A context directory `name` (in the test's directory) holding these files, written as
    /// [`Options::ctx`] says.
    pub fn ctx(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let c = self.dir.join(name);
        match self.ctx {
            CtxFiles::Flat => {
                fs_err::create_dir_all(&c).unwrap();
                for (p, data) in files {
                    fs_err::write(c.join(p), data).unwrap();
                }
            }
            CtxFiles::WithParents => {
                for (p, data) in files {
                    let f = c.join(p);
                    fs_err::create_dir_all(f.parent().unwrap()).unwrap();
                    fs_err::write(&f, data).unwrap();
                }
                fs_err::create_dir_all(&c).unwrap();
            }
        }
        c
    }
}
