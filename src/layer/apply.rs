//! Apply a layer tar onto a directory, safely.
//!
//! Nothing outside the target is ever written, however the tar is built: entry paths are cleaned
//! and `..` that would climb out is an error; absolute paths are taken relative to the target;
//! every parent directory is resolved inside the target (a symlink on the way is followed as if
//! the target were `/`, never out of it); the last component is never followed; hard links must
//! point inside the target. OCI whiteouts remove what they name; an opaque marker empties its
//! directory of everything lower layers put there. Device nodes that cannot be made (rootless)
//! are skipped and reported; owners that cannot be set are left as they are and reported.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::fsx::{resolve_links, resolve_parent_in_root};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("layer entry \"{entry}\": {reason}")]
    Entry { entry: String, reason: String },
    #[error("reading the layer: {0}")]
    Read(io::Error),
}

fn entry_err(entry: &Path, reason: impl ToString) -> ApplyError {
    ApplyError::Entry {
        entry: entry.display().to_string(),
        reason: reason.to_string(),
    }
}

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Set owners from the tar (needs root, or ids mapped in a user namespace).
    pub chown: bool,
    /// Record whiteouts the way overlayfs reads them in a lower dir (a 0/0 character device,
    /// and `user.overlay.opaque=y` on opaque dirs, for a `userxattr` mount) instead of deleting:
    /// for a layer unpacked on its own as a snapshot.
    pub overlay_whiteouts: bool,
}

/// What had to be left out or changed, for a warning.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    pub entries: u64,
    pub skipped_devices: Vec<String>,
    pub owners_not_set: u64,
    pub xattrs_not_set: u64,
}

/// Clean an entry name: no `.`, no empty parts, leading `/` dropped; `None` if `..` climbs out.
pub fn clean_entry_path(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// What `candidate` (relative) is in a stack of layer dirs, `root` (the layer being applied)
/// over `lower` (top first), the way overlayfs merges them: the top-most dir that has the
/// path decides; a whiteout there (a 0/0 character device) means it is not there, and an
/// opaque directory above it hides what the dirs below have. Returns the target when it is a
/// symlink.
fn stack_link(root: &Path, lower: &[PathBuf], candidate: &Path) -> io::Result<Option<PathBuf>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dirs = || std::iter::once(root).chain(lower.iter().map(PathBuf::as_path));
    let last = lower.len();
    for (i, dir) in dirs().enumerate() {
        let p = dir.join(candidate);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return std::fs::read_link(&p).map(Some).map_err(|e| {
                    if e.kind() == io::ErrorKind::InvalidInput {
                        io::Error::other(format!(
                            "{} changed during the build",
                            candidate.display()
                        ))
                    } else {
                        e
                    }
                })
            }
            Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => return Ok(None),
            Ok(_) => return Ok(None),
            Err(_) if i == last => {}
            Err(_) => {
                // An opaque directory on the way, in this dir, hides the dirs below.
                let mut a = candidate.parent();
                while let Some(anc) = a.filter(|a| !a.as_os_str().is_empty()) {
                    let opaque =
                        rustix::fs::lgetxattr(dir.join(anc), c"user.overlay.opaque", &mut [0u8; 1])
                            .is_ok_and(|n| n == 1);
                    if opaque {
                        return Ok(None);
                    }
                    a = anc.parent();
                }
            }
        }
    }
    Ok(None)
}

/// [`resolve_in_root`] through a stack of layer dirs: `root` over `lower` (top first), each
/// component as the stack shows it ([`stack_link`]). With no `lower`, `resolve_in_root`.
pub fn resolve_in_stack(root: &Path, lower: &[PathBuf], rel: &Path) -> io::Result<PathBuf> {
    resolve_links(rel, 0, &|candidate: &Path| {
        stack_link(root, lower, candidate)
    })
}

/// [`resolve_parent_in_root`] through a stack of layer dirs ([`resolve_in_stack`]).
fn resolve_parent_in_stack(root: &Path, lower: &[PathBuf], rel: &Path) -> io::Result<PathBuf> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    let mut resolved = resolve_in_stack(root, lower, parent)?;
    if let Some(name) = rel.file_name() {
        resolved.push(name);
    }
    Ok(root.join(resolved))
}

/// For an unprivileged applier: directories whose mode lacks owner rwx (from this or an earlier
/// layer) are opened up while entries are written below them, and put back at the end.
struct Unlocker {
    enabled: bool,
    seen: HashSet<PathBuf>,
    restore: Vec<(PathBuf, u32)>,
}

impl Unlocker {
    /// Give the owner rwx on `dir` and every directory between `root` and it.
    fn ensure(&mut self, root: &Path, dir: &Path) {
        if !self.enabled {
            return;
        }
        let mut chain = Vec::new();
        let mut d = Some(dir);
        while let Some(x) = d.filter(|x| x.starts_with(root) && *x != root) {
            chain.push(x.to_path_buf());
            d = x.parent();
        }
        for d in chain.into_iter().rev() {
            if !self.seen.insert(d.clone()) {
                continue;
            }
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            if let Ok(m) = std::fs::symlink_metadata(&d) {
                if m.is_dir() && m.mode() & 0o700 != 0o700 {
                    let mode = m.mode() & 0o7777;
                    if std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode | 0o700))
                        .is_ok()
                    {
                        self.restore.push((d, mode));
                    }
                }
            }
        }
    }

    /// Before removing a tree: every directory in it writable by its owner.
    fn open_tree(&mut self, p: &Path) {
        if !self.enabled {
            return;
        }
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if let Ok(m) = std::fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = std::fs::set_permissions(
                    p,
                    std::fs::Permissions::from_mode((m.mode() & 0o7777) | 0o700),
                );
                if let Ok(rd) = std::fs::read_dir(p) {
                    for e in rd.flatten() {
                        self.open_tree(&e.path());
                    }
                }
            }
        }
    }
}

fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Make sure the directory `rel_dir` exists, following symlinks in it inside `root` (a parent
/// that is a symlink to a directory is used, as Docker does; it is never replaced). Over
/// `lower` layer dirs (a snapshot), the symlinks are the stack's, and a directory made here
/// that a lower layer has takes its mode and owner, as overlayfs' copy-up would.
fn mkdir_all_in_root(
    root: &Path,
    lower: &[PathBuf],
    rel_dir: &Path,
    unlock: &mut Unlocker,
) -> io::Result<()> {
    let rel = resolve_in_stack(root, lower, rel_dir)?;
    let resolved = root.join(&rel);
    // The deepest directory that exists must let us create what is missing below it.
    let mut existing = resolved.as_path();
    while !existing.exists() && existing != root {
        existing = existing.parent().unwrap_or(root);
    }
    unlock.ensure(root, existing);
    match std::fs::symlink_metadata(&resolved) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            // A file (or a dangling symlink after resolution) where a directory must be.
            std::fs::remove_file(&resolved)?;
        }
        Err(_) => {}
    }
    if lower.is_empty() {
        return std::fs::create_dir_all(&resolved);
    }
    let mut at = PathBuf::new();
    for c in rel.components() {
        at.push(c);
        let here = root.join(&at);
        if here.is_dir() {
            continue;
        }
        std::fs::create_dir(&here)?;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if let Some(m) = lower
            .iter()
            .find_map(|l| std::fs::symlink_metadata(l.join(&at)).ok())
            .filter(|m| m.is_dir())
        {
            let _ = std::os::unix::fs::lchown(&here, Some(m.uid()), Some(m.gid()));
            std::fs::set_permissions(
                &here,
                std::fs::Permissions::from_mode((m.mode() & 0o7777) | 0o700),
            )?;
            if m.mode() & 0o700 != 0o700 {
                unlock.restore.push((here.clone(), m.mode() & 0o7777));
            }
        }
    }
    Ok(())
}

/// Apply an uncompressed tar stream onto `root`.
pub fn apply_layer<R: Read>(
    tar: R,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    apply_layer_over(tar, root, opts, &[])
}

/// [`apply_layer`] for a layer unpacked on its own as a snapshot (`opts.overlay_whiteouts`)
/// over the snapshots of the layers below it, `lower` (top first): an entry whose parent path
/// the layer does not make itself is placed as containerd's applier places it on the whole
/// root, through the lower layers' symlinks (`link/.wh.x`, with `link -> real` below, removes
/// `real/x`; it does not turn `link` into a directory).
pub fn apply_layer_over<R: Read>(
    tar: R,
    root: &Path,
    opts: &ApplyOptions,
    lower: &[PathBuf],
) -> Result<ApplyReport, ApplyError> {
    let lower: &[PathBuf] = if opts.overlay_whiteouts { lower } else { &[] };
    let is_root = rustix::process::geteuid().is_root();
    let mut applier = Applier {
        root,
        lower,
        opts,
        report: ApplyReport::default(),
        created: HashSet::new(),
        dir_times: Vec::new(),
        is_root,
        unlock: Unlocker {
            enabled: !is_root,
            seen: HashSet::new(),
            restore: Vec::new(),
        },
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(ApplyError::Read)? {
        let mut entry = entry.map_err(ApplyError::Read)?;
        applier.entry(&mut entry)?;
    }
    applier.finish()
}

/// What placing an entry's node did.
enum Placed {
    /// A node the entry's owner, mode, xattrs and time go on.
    Node,
    /// A hard link: it shares its target's inode, which keeps its own.
    HardLink,
    /// Nothing (a device an unprivileged applier cannot make, a header entry).
    Nothing,
}

/// The state of one layer's application onto `root`.
struct Applier<'a> {
    root: &'a Path,
    lower: &'a [PathBuf],
    opts: &'a ApplyOptions,
    report: ApplyReport,
    /// Paths this layer made (an opaque marker later in the layer keeps them).
    created: HashSet<PathBuf>,
    /// Directories get their mode and times last: a mode without write or search permission
    /// would stop an unprivileged applier from creating the entries below.
    dir_times: Vec<(PathBuf, i64, u32)>,
    is_root: bool,
    unlock: Unlocker,
}

impl Applier<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let root = self.root;
        let raw = entry.path().map_err(ApplyError::Read)?.into_owned();
        let rel = clean_entry_path(&raw)
            .ok_or_else(|| entry_err(&raw, "path climbs out of the layer with `..`"))?;
        self.report.entries += 1;
        if rel.as_os_str().is_empty() {
            return Ok(()); // the root itself
        }
        let name = rel.file_name().unwrap_or_default().as_bytes().to_vec();
        if self.whiteout(&raw, &rel, &name)? {
            return Ok(());
        }
        let io_err = |e: io::Error| entry_err(&raw, e);

        if let Some(parent) = rel.parent() {
            mkdir_all_in_root(root, self.lower, parent, &mut self.unlock).map_err(io_err)?;
        }
        let abs = resolve_parent_in_stack(root, self.lower, &rel).map_err(io_err)?;
        self.unlock.ensure(root, abs.parent().unwrap_or(root));
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().map_err(io_err)? & 0o7777;
        let mtime = entry.header().mtime().unwrap_or(0) as i64;

        // Replace whatever is there, except a directory by a directory.
        let existing = std::fs::symlink_metadata(&abs).ok();
        let keep_dir =
            kind == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
        if existing.is_some() && !keep_dir {
            self.unlock.open_tree(&abs);
            remove_any(&abs).map_err(io_err)?;
        }

        match self.place(entry, &raw, &rel, &abs, keep_dir)? {
            Placed::Nothing => return Ok(()),
            Placed::HardLink => {
                self.created.insert(rel.clone());
                return Ok(());
            }
            Placed::Node => {}
        }
        self.created.insert(rel.clone());
        if kind == EntryType::Directory {
            self.dir_times.push((abs.clone(), mtime, mode));
        }
        self.set_attributes(entry, &raw, &abs, mode, mtime)
    }

    /// A whiteout entry (`.wh.name`, `.wh..wh..opq`) applied: an overlay whiteout or opaque
    /// marker over lower layers, or the removal on a whole root. False for any other entry.
    fn whiteout(&mut self, raw: &Path, rel: &Path, name: &[u8]) -> Result<bool, ApplyError> {
        let (root, lower) = (self.root, self.lower);
        let unlock = &mut self.unlock;
        let io_err = |e: io::Error| entry_err(raw, e);
        if self.opts.overlay_whiteouts && name.starts_with(b".wh.") {
            if let Some(parent) = rel.parent() {
                mkdir_all_in_root(root, lower, parent, unlock).map_err(io_err)?;
            }
            if name == b".wh..wh..opq" {
                let dir = root.join(
                    resolve_in_stack(root, lower, rel.parent().unwrap_or(Path::new("")))
                        .map_err(io_err)?,
                );
                rustix::fs::lsetxattr(
                    &dir,
                    c"user.overlay.opaque",
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(|e| entry_err(raw, format!("marking {} opaque: {e}", dir.display())))?;
            } else {
                let target = rel.with_file_name(OsStr::from_bytes(&name[4..]));
                let abs = resolve_parent_in_stack(root, lower, &target).map_err(io_err)?;
                unlock.ensure(root, abs.parent().unwrap_or(root));
                unlock.open_tree(&abs);
                remove_any(&abs).map_err(io_err)?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &abs,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    0,
                )
                .map_err(|e| {
                    entry_err(
                        raw,
                        format!("creating the overlay whiteout {}: {e}", abs.display()),
                    )
                })?;
            }
            return Ok(true);
        }
        if name == b".wh..wh..opq" {
            let dir_rel = rel.parent().unwrap_or(Path::new(""));
            let dir = resolve_parent_in_root(root, &dir_rel.join("x")).map_err(io_err)?;
            let dir = dir.parent().unwrap_or(root).to_path_buf();
            unlock.ensure(root, &dir);
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let child_rel = dir_rel.join(e.file_name());
                    if !self.created.contains(&child_rel) {
                        unlock.open_tree(&e.path());
                        remove_any(&e.path()).map_err(io_err)?;
                    }
                }
            }
            return Ok(true);
        }
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let target = rel.with_file_name(OsStr::from_bytes(hidden));
            let abs = resolve_parent_in_root(root, &target).map_err(io_err)?;
            unlock.ensure(root, abs.parent().unwrap_or(root));
            unlock.open_tree(&abs);
            remove_any(&abs).map_err(io_err)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Make the entry's node at `abs` (its parent exists, nothing is in the way but a
    /// directory kept for a directory).
    fn place<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &Path,
        rel: &Path,
        abs: &Path,
        keep_dir: bool,
    ) -> Result<Placed, ApplyError> {
        let io_err = |e: io::Error| entry_err(raw, e);
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Directory => {
                if !keep_dir {
                    std::fs::create_dir(abs).map_err(io_err)?;
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(abs)
                    .map_err(io_err)?;
                io::copy(entry, &mut f).map_err(io_err)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io_err)?
                    .ok_or_else(|| entry_err(raw, "symlink without a target"))?;
                std::os::unix::fs::symlink(&*target, abs).map_err(io_err)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(io_err)?
                    .ok_or_else(|| entry_err(raw, "hard link without a target"))?;
                self.hard_link(raw, &target, abs)?;
                return Ok(Placed::HardLink);
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let ft = match kind {
                    EntryType::Char => rustix::fs::FileType::CharacterDevice,
                    EntryType::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                let mode = entry.header().mode().map_err(io_err)? & 0o7777;
                let dev = rustix::fs::makedev(
                    entry.header().device_major().ok().flatten().unwrap_or(0),
                    entry.header().device_minor().ok().flatten().unwrap_or(0),
                );
                match rustix::fs::mknodat(
                    rustix::fs::CWD,
                    abs,
                    ft,
                    rustix::fs::Mode::from_raw_mode(mode),
                    dev,
                ) {
                    Ok(()) => {}
                    Err(rustix::io::Errno::PERM) if kind != EntryType::Fifo => {
                        self.report.skipped_devices.push(rel.display().to_string());
                        return Ok(Placed::Nothing);
                    }
                    Err(e) => return Err(entry_err(raw, io::Error::from(e))),
                }
            }
            EntryType::XHeader
            | EntryType::XGlobalHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => return Ok(Placed::Nothing),
            other => return Err(entry_err(raw, format!("unsupported entry type {other:?}"))),
        }
        Ok(Placed::Node)
    }

    /// A hard link at `abs` to `target`, a path of the layer's root (never a directory).
    fn hard_link(&self, raw: &Path, target: &Path, abs: &Path) -> Result<(), ApplyError> {
        let trel = clean_entry_path(target).ok_or_else(|| {
            entry_err(
                raw,
                format!(
                    "hard link target \"{}\" climbs out of the layer",
                    target.display()
                ),
            )
        })?;
        let tabs = resolve_parent_in_root(self.root, &trel).map_err(|e| entry_err(raw, e))?;
        let tm = std::fs::symlink_metadata(&tabs).map_err(|e| {
            entry_err(
                raw,
                format!("hard link target \"{}\": {e}", target.display()),
            )
        })?;
        if tm.is_dir() {
            return Err(entry_err(raw, "hard link to a directory"));
        }
        std::fs::hard_link(&tabs, abs).map_err(|e| entry_err(raw, e))
    }

    /// The entry's owner, mode, xattrs and time on the node just made (a directory's mode
    /// and time wait for [`Applier::finish`]).
    fn set_attributes<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &Path,
        abs: &Path,
        mode: u32,
        mtime: i64,
    ) -> Result<(), ApplyError> {
        let kind = entry.header().entry_type();
        let uid = entry.header().uid().unwrap_or(0);
        let gid = entry.header().gid().unwrap_or(0);
        if self.opts.chown || self.is_root {
            let r = std::os::unix::fs::lchown(abs, Some(uid as u32), Some(gid as u32));
            if r.is_err() {
                self.report.owners_not_set += 1;
            }
        } else if uid != u64::from(rustix::process::geteuid().as_raw()) {
            self.report.owners_not_set += 1;
        }
        if kind != EntryType::Symlink && kind != EntryType::Directory {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(abs, std::fs::Permissions::from_mode(mode))
                .map_err(|e| entry_err(raw, e))?;
        }
        // xattrs from PAX records, after chown and chmod: a chown clears security.capability.
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                let Ok(ckey) = std::ffi::CString::new(key) else {
                    continue;
                };
                if rustix::fs::lsetxattr(
                    abs,
                    ckey.as_c_str(),
                    ext.value_bytes(),
                    rustix::fs::XattrFlags::empty(),
                )
                .is_err()
                {
                    self.report.xattrs_not_set += 1;
                }
            }
        }
        if kind != EntryType::Directory {
            set_mtime(abs, mtime);
        }
        Ok(())
    }

    /// Put back what was opened up, then directory modes and times, deepest first (creating
    /// children changed the times).
    fn finish(self) -> Result<ApplyReport, ApplyError> {
        use std::os::unix::fs::PermissionsExt;
        for (d, mode) in self.unlock.restore.into_iter().rev() {
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode));
        }
        for (d, t, mode) in self.dir_times.into_iter().rev() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))
                .map_err(|e| entry_err(d.strip_prefix(self.root).unwrap_or(&d), e))?;
            set_mtime(&d, t);
        }
        Ok(self.report)
    }
}

fn set_mtime(p: &Path, secs: i64) {
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(
            clean_entry_path(Path::new("./a/./b/")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(
            clean_entry_path(Path::new("/etc/passwd")),
            Some(PathBuf::from("etc/passwd"))
        );
        assert_eq!(
            clean_entry_path(Path::new("a/../b")),
            Some(PathBuf::from("b"))
        );
        assert_eq!(clean_entry_path(Path::new("../x")), None);
        assert_eq!(clean_entry_path(Path::new("a/../../x")), None);
    }
}
