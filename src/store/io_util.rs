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
    format!("{prefix}-{}-{n}-{t:08x}", std::process::id())
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

/// Remove the entries of `dir` named `PREFIX…-PID-…` whose process is gone: what a killed
/// strata left behind. Best effort.
pub fn remove_dead_leftovers(dir: &Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').find_map(|f| f.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
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

/// Replace `dest` with `bytes` atomically.
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut t = TempFile::new(tmp_dir)?;
    t.with(|f| f.write_all(bytes))?;
    t.persist(dest)
}
