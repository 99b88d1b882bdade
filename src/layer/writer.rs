//! A deterministic tar of a directory tree.
//!
//! Entries are sorted by name bytes; headers carry numeric ids only, no user or group names, no
//! access or change times; mtimes are clamped to SOURCE_DATE_EPOCH when one is given. PAX
//! records carry long names and link targets, big sizes and ids, and extended attributes (file
//! capabilities are the `security.capability` xattr). Hard links within the tree stay hard
//! links. Overlay whiteouts in an upper dir (0/0 character devices, `user.overlay.whiteout`
//! files, opaque-dir xattrs) become OCI whiteouts (`.wh.name`, `.wh..wh..opq`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Clamp every mtime to at most this (seconds since the epoch).
    pub source_date_epoch: Option<i64>,
    /// Turn overlay whiteouts and opaque markers into OCI whiteouts (for a RUN step's upper dir).
    pub overlay_whiteouts: bool,
}

const WH_PREFIX: &str = ".wh.";
const WH_OPAQUE: &str = ".wh..wh..opq";

/// Write a tar of everything below `root` (not `root` itself) into `out`.
pub fn write_tree<W: Write>(root: &Path, out: W, opts: &WriteOptions) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let mut w = TreeWriter {
        b: &mut b,
        opts,
        links: HashMap::new(),
    };
    w.dir(root, Path::new(""))?;
    b.into_inner()
}

struct TreeWriter<'a, W: Write> {
    b: &'a mut tar::Builder<W>,
    opts: &'a WriteOptions,
    /// (dev, ino) of multiply-linked files already written, and their path in the tar.
    links: HashMap<(u64, u64), PathBuf>,
}

fn with_path<T>(path: &Path, r: io::Result<T>) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The names of the extended attributes of `path` (not following a symlink) into `buf`:
/// through `listxattrat(2)` relative to its directory `at` when the kernel has it (Linux
/// 6.13: one name looked up instead of the whole path, for every entry of a tree), else
/// `llistxattr(2)`.
fn list_xattrs(
    at: Option<(&std::os::fd::OwnedFd, &OsStr)>,
    path: &Path,
    buf: &mut [u8],
) -> rustix::io::Result<usize> {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    // listxattrat: the same number on every architecture (added after the tables merged).
    const SYS_LISTXATTRAT: libc::c_long = 465;
    static MISSING: AtomicBool = AtomicBool::new(false);
    if let Some((dir, name)) = at {
        if !MISSING.load(Ordering::Relaxed) {
            let cname =
                std::ffi::CString::new(name.as_bytes()).map_err(|_| rustix::io::Errno::INVAL)?;
            // SAFETY: a plain syscall with a valid descriptor, a NUL-terminated name and a
            // buffer of the length given; the kernel writes at most that many bytes.
            let r = unsafe {
                libc::syscall(
                    SYS_LISTXATTRAT,
                    dir.as_raw_fd(),
                    cname.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = rustix::io::Errno::from_raw_os_error(
                io::Error::last_os_error().raw_os_error().unwrap_or(0),
            );
            // An older kernel, or a seccomp filter that does not know the call.
            if e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM {
                MISSING.store(true, Ordering::Relaxed);
            } else {
                return Err(e);
            }
        }
    }
    rustix::fs::llistxattr(path, buf)
}

fn xattrs(
    at: Option<(&std::os::fd::OwnedFd, &OsStr)>,
    path: &Path,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match list_xattrs(at, path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
        let mut val = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, cname.as_c_str(), &mut val) {
                Ok(l) => break l,
                Err(rustix::io::Errno::RANGE) => val.resize(val.len() * 4, 0),
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(e.into()),
            }
        };
        if len != usize::MAX {
            val.truncate(len);
            out.push((name.to_vec(), val));
        }
    }
    out.sort();
    Ok(out)
}

fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn xattr_is(xs: &[(Vec<u8>, Vec<u8>)], names: &[&[u8]], value: &[u8]) -> bool {
    xs.iter()
        .any(|(n, v)| names.contains(&n.as_slice()) && v.as_slice() == value)
}

impl<W: Write> TreeWriter<'_, W> {
    fn dir(&mut self, abs: &Path, rel: &Path) -> io::Result<()> {
        // DirEntry::metadata stats relative to the open directory (fstatat), without looking
        // the whole path up again for every entry of a large tree.
        let mut entries: Vec<(std::ffi::OsString, PathBuf, std::fs::Metadata)> =
            fs_err::read_dir(abs)?
                .map(|e| {
                    e.and_then(|e| {
                        let m = with_path(&e.path(), e.metadata())?;
                        Ok((e.file_name(), e.path(), m))
                    })
                })
                .collect::<io::Result<_>>()?;
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        // The directory, for the entries' extended attributes by name (None: by full path).
        let dfd = rustix::fs::open(
            abs,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok();
        for (name, path, m) in entries {
            let at = dfd.as_ref().map(|d| (d, name.as_os_str()));
            self.entry(&path, &rel.join(&name), &name, m, at)?;
        }
        Ok(())
    }

    fn mtime(&self, m: &std::fs::Metadata) -> u64 {
        let t = m.mtime().max(0);
        match self.opts.source_date_epoch {
            Some(e) if t > e => e.max(0) as u64,
            _ => t as u64,
        }
    }

    fn header(&self, m: &std::fs::Metadata, kind: EntryType) -> Header {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(m.mode() & 0o7777);
        h.set_mtime(self.mtime(m));
        h.set_size(0);
        h
    }

    /// Append one entry with PAX records for whatever ustar cannot hold.
    #[allow(clippy::too_many_arguments)]
    fn append<R: io::Read>(
        &mut self,
        mut h: Header,
        path: &Path,
        link: Option<&Path>,
        uid: u64,
        gid: u64,
        size: u64,
        xs: &[(Vec<u8>, Vec<u8>)],
        data: R,
    ) -> io::Result<()> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut p = path.as_os_str().as_bytes().to_vec();
        if h.entry_type() == EntryType::Directory {
            p.push(b'/');
        }
        let p = PathBuf::from(OsStr::from_bytes(&p));
        if h.set_path(&p).is_err() {
            pax.push(("path".into(), p.as_os_str().as_bytes().to_vec()));
            let short = &p.as_os_str().as_bytes()[..p.as_os_str().len().min(99)];
            h.as_old_mut().name = [0; 100];
            h.as_old_mut().name[..short.len()].copy_from_slice(short);
        }
        if let Some(l) = link {
            if h.set_link_name(l).is_err() {
                pax.push(("linkpath".into(), l.as_os_str().as_bytes().to_vec()));
                let short = &l.as_os_str().as_bytes()[..l.as_os_str().len().min(99)];
                h.as_old_mut().linkname = [0; 100];
                h.as_old_mut().linkname[..short.len()].copy_from_slice(short);
            }
        }
        const MAX_OCTAL_ID: u64 = 0o7777777;
        const MAX_OCTAL_SIZE: u64 = 0o77777777777;
        if uid > MAX_OCTAL_ID {
            pax.push(("uid".into(), uid.to_string().into_bytes()));
        }
        if gid > MAX_OCTAL_ID {
            pax.push(("gid".into(), gid.to_string().into_bytes()));
        }
        h.set_uid(uid.min(MAX_OCTAL_ID));
        h.set_gid(gid.min(MAX_OCTAL_ID));
        if size > MAX_OCTAL_SIZE {
            pax.push(("size".into(), size.to_string().into_bytes()));
            h.set_size(0);
        } else {
            h.set_size(size);
        }
        for (n, v) in xs {
            if !is_overlay_xattr(n) {
                let mut key = b"SCHILY.xattr.".to_vec();
                key.extend_from_slice(n);
                pax.push((String::from_utf8_lossy(&key).into_owned(), v.clone()));
            }
        }
        if !pax.is_empty() {
            self.b
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        h.set_cksum();
        if size > MAX_OCTAL_SIZE {
            // The tar crate reads the size from the header: write the data ourselves.
            let mut hh = h.clone();
            hh.set_size(size);
            hh.set_cksum();
            return self.b.append(&hh, data);
        }
        self.b.append(&h, data)
    }

    fn entry(
        &mut self,
        abs: &Path,
        rel: &Path,
        name: &OsStr,
        m: std::fs::Metadata,
        at: Option<(&std::os::fd::OwnedFd, &OsStr)>,
    ) -> io::Result<()> {
        let ft = m.file_type();
        let xs = if ft.is_symlink() {
            Vec::new()
        } else {
            with_path(abs, xattrs(at, abs))?
        };
        let (uid, gid) = (u64::from(m.uid()), u64::from(m.gid()));

        if self.opts.overlay_whiteouts {
            let is_whiteout = (ft.is_char_device() && m.rdev() == 0)
                || (ft.is_file()
                    && m.len() == 0
                    && xs.iter().any(|(n, _)| {
                        n == b"user.overlay.whiteout" || n == b"trusted.overlay.whiteout"
                    }));
            if is_whiteout {
                let mut wh = rel.parent().unwrap_or(Path::new("")).to_path_buf();
                let mut n = std::ffi::OsString::from(WH_PREFIX);
                n.push(name);
                wh.push(n);
                let h = self.header(&m, EntryType::Regular);
                return self.append(h, &wh, None, 0, 0, 0, &[], io::empty());
            }
        }

        if ft.is_dir() {
            let h = self.header(&m, EntryType::Directory);
            self.append(h, rel, None, uid, gid, 0, &xs, io::empty())?;
            if self.opts.overlay_whiteouts
                && xattr_is(
                    &xs,
                    &[b"trusted.overlay.opaque", b"user.overlay.opaque"],
                    b"y",
                )
            {
                let h = self.header(&m, EntryType::Regular);
                self.append(h, &rel.join(WH_OPAQUE), None, 0, 0, 0, &[], io::empty())?;
            }
            return self.dir(abs, rel);
        }
        if ft.is_symlink() {
            let target = with_path(abs, std::fs::read_link(abs))?;
            let h = self.header(&m, EntryType::Symlink);
            return self.append(h, rel, Some(&target), uid, gid, 0, &[], io::empty());
        }
        if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = self.links.get(&key).cloned() {
                    let h = self.header(&m, EntryType::Link);
                    return self.append(h, rel, Some(&first), uid, gid, 0, &xs, io::empty());
                }
                self.links.insert(key, rel.to_path_buf());
            }
            let h = self.header(&m, EntryType::Regular);
            if m.len() == 0 {
                // Nothing to read: no open, no read, no close.
                return with_path(
                    abs,
                    self.append(h, rel, None, uid, gid, 0, &xs, io::empty()),
                );
            }
            // A buffer sized to the file (at most 1 MiB): big files copy in few calls, small ones
            // do not pay for a large allocation.
            let cap = (m.len() as usize).clamp(8 << 10, 1 << 20);
            let f = std::io::BufReader::with_capacity(cap, fs_err::File::open(abs)?);
            return with_path(abs, self.append(h, rel, None, uid, gid, m.len(), &xs, f));
        }
        let kind = if ft.is_char_device() {
            EntryType::Char
        } else if ft.is_block_device() {
            EntryType::Block
        } else if ft.is_fifo() {
            EntryType::Fifo
        } else {
            // Sockets have no place in an image.
            return Ok(());
        };
        let mut h = self.header(&m, kind);
        let rdev = m.rdev();
        h.set_device_major(rustix::fs::major(rdev))?;
        h.set_device_minor(rustix::fs::minor(rdev))?;
        self.append(h, rel, None, uid, gid, 0, &xs, io::empty())
    }
}
