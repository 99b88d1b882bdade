//! Atomic file replacement: write a temp file in the store, fsync it, rename it over the
//! destination, fsync the directory.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{at, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A uniquely named file in the store's tmp dir; removed on drop unless persisted.
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{t:08x}", owner_tag())
}

/// The state and start time (clock ticks after boot) of process `pid`, from /proc/PID/stat:
/// fields 3 and 22, counted after the command name (which may hold spaces and parentheses).
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = s.get(s.rfind(')')? + 1..)?.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    let start = f.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// What names this process in the names of the temp entries it makes: `PID-sSTART`, its pid
/// and its start time, so that a sweep can tell it from a later process given the same pid.
pub fn owner_tag() -> String {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let pid = std::process::id();
        match proc_stat(pid) {
            Some((_, start)) => format!("{pid}-s{start}"),
            None => pid.to_string(),
        }
    })
    .clone()
}

/// Whether the process that made the temp entry `name` (`WHAT-PID-sSTART-…`, or `WHAT-PID-…`
/// from an older strata) is gone: no process has that pid, or it is a zombie (killed, not yet
/// reaped: its parent may be gone, and PID 1 of a container may never reap it), or the process
/// with that pid now started at another time (the pid was reused). `None` when the name holds
/// no pid. This process's own entries are never gone.
pub fn owner_gone(name: &str) -> Option<bool> {
    let mut fields = name.split('-');
    let pid: u32 = fields.find_map(|f| {
        (!f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
            .then(|| f.parse().ok())
            .flatten()
    })?;
    let start: Option<u64> = fields
        .next()
        .and_then(|f| f.strip_prefix('s'))
        .and_then(|f| f.parse().ok());
    if pid == std::process::id() && start.is_none_or(|s| owner_tag() == format!("{pid}-s{s}")) {
        return Some(false);
    }
    Some(match proc_stat(pid) {
        None => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        Some(('Z' | 'X', _)) => true,
        Some((_, now)) => start.is_some_and(|s| s != now),
    })
}

/// Copy `from` to a new file `to`: a reflink (FICLONE) where the filesystem can share the
/// data copy-on-write, else a plain copy. Never a hard link.
pub fn clone_or_copy(from: &Path, to: &Path) -> Result<()> {
    let src = at(from, File::open(from))?;
    let dst = at(
        to,
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to),
    )?;
    // SAFETY: FICLONE takes the source descriptor as its argument; both are open.
    let cloned = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&dst),
            libc::FICLONE as _,
            std::os::fd::AsRawFd::as_raw_fd(&src),
        )
    } == 0;
    if !cloned {
        let mut src = src;
        let mut dst = dst;
        at(to, std::io::copy(&mut src, &mut dst))?;
        at(to, dst.sync_all())?;
    }
    Ok(())
}

/// Remove the entries of `dir` named `PREFIX…-PID-…` whose process is gone ([`owner_gone`]):
/// what a killed strata left behind. Best effort.
pub fn remove_dead_leftovers(dir: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        if owner_gone(rest) == Some(true) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl TempFile {
    pub fn new(dir: &Path) -> Result<TempFile> {
        let path = dir.join(unique_name("blob"));
        let file = at(
            &path,
            std::fs::OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .open(&path),
        )?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run an IO operation on the file; errors name the temp file.
    pub fn with<T>(&mut self, f: impl FnOnce(&mut File) -> std::io::Result<T>) -> Result<T> {
        let r = f(self
            .file
            .as_mut()
            .expect("temp file is open until persisted"));
        at(&self.path, r)
    }

    pub fn file_mut(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("temp file is open until persisted")
    }

    /// fsync, rename to `dest`, fsync the destination directory.
    pub fn persist(mut self, dest: &Path) -> Result<()> {
        let f = self.file.take().expect("persist once");
        at(&self.path, f.sync_all())?;
        drop(f);
        at(dest, std::fs::rename(&self.path, dest))?;
        sync_dir(dest.parent().unwrap_or(Path::new(".")));
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs_err::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Replace `dest` with `bytes` by a rename, without waiting for the disk: for caches whose
/// reader checks what it reads and rebuilds it when it is missing or torn (a crash may leave
/// either, never another file's bytes).
pub fn write_cache(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut t = TempFile::new(tmp_dir)?;
    t.with(|f| f.write_all(bytes))?;
    let f = t.file.take().expect("a new temp file is open");
    drop(f);
    at(dest, std::fs::rename(&t.path, dest))
}

/// Replace `dest` with `bytes` atomically.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut t = TempFile::new(tmp_dir)?;
    t.with(|f| f.write_all(bytes))?;
    t.persist(dest)
}
