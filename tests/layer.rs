//! Layer writer and applier: deterministic output, PAX and hard links, whiteouts, and tars built
//! to escape the target directory.

#[macro_use]
mod support;

use std::io::{Cursor, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata::layer::{self, apply_layer, ApplyOptions, Compression, WriteOptions};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strata-layer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    fs_err::create_dir_all(&d).unwrap();
    support::removed_at_the_end(&d);
    d
}

fn tar_of(dir: &Path, opts: &WriteOptions) -> Vec<u8> {
    layer::write_tree(dir, Vec::new(), opts).unwrap()
}

fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, u64, u64, u64, Option<String>)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().display().to_string(),
                h.entry_type(),
                h.uid().unwrap(),
                h.mtime().unwrap(),
                h.mode().unwrap() as u64,
                e.link_name().unwrap().map(|l| l.display().to_string()),
            )
        })
        .collect()
}

fn sample_tree(name: &str) -> PathBuf {
    let d = tmpdir(name);
    fs_err::create_dir_all(d.join("b/dir")).unwrap();
    fs_err::write(d.join("a.txt"), "hello").unwrap();
    fs_err::write(d.join("b/dir/file"), "x".repeat(10_000)).unwrap();
    std::os::unix::fs::symlink("../a.txt", d.join("b/link")).unwrap();
    std::fs::hard_link(d.join("a.txt"), d.join("b/hard")).unwrap();
    let long = "n".repeat(150);
    fs_err::create_dir_all(d.join(&long).join(&long)).unwrap();
    fs_err::write(d.join(&long).join(&long).join("deep"), "deep").unwrap();
    fs_err::write(d.join("suid"), "s").unwrap();
    std::fs::set_permissions(d.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    d
}

#[test]
fn same_tree_gives_the_same_bytes_and_entries_are_sorted() {
    let d = sample_tree("det");
    let opts = WriteOptions {
        source_date_epoch: Some(1_000),
        overlay_whiteouts: false,
    };
    let t1 = tar_of(&d, &opts);
    // Touch every file: with the clamp, the bytes do not change.
    for f in ["a.txt", "b/dir/file"] {
        let p = d.join(f);
        let c = fs_err::read(&p).unwrap();
        fs_err::write(&p, c).unwrap();
    }
    let t2 = tar_of(&d, &opts);
    assert_eq!(t1, t2);
    let names: Vec<String> = entries(&t1).into_iter().map(|e| e.0).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names[0], "a.txt");
    assert!(names
        .iter()
        .all(|n| !n.starts_with("./") && !n.starts_with('/')));
    assert!(entries(&t1).iter().all(|e| e.3 <= 1_000), "mtimes clamped");
}

#[test]
fn long_names_hardlinks_symlinks_and_modes_survive() {
    let d = sample_tree("pax");
    let t = tar_of(&d, &WriteOptions::default());
    let es = entries(&t);
    let long = "n".repeat(150);
    assert!(
        es.iter().any(|e| e.0 == format!("{long}/{long}/deep")),
        "PAX long path"
    );
    let hard = es
        .iter()
        .find(|e| e.0 == "b/hard" || e.0 == "a.txt")
        .unwrap();
    assert_eq!(hard.0, "a.txt", "the first name is the file");
    let link = es.iter().find(|e| e.0 == "b/hard").unwrap();
    assert_eq!(
        (link.1, link.5.as_deref()),
        (tar::EntryType::Link, Some("a.txt"))
    );
    let sym = es.iter().find(|e| e.0 == "b/link").unwrap();
    assert_eq!(
        (sym.1, sym.5.as_deref()),
        (tar::EntryType::Symlink, Some("../a.txt"))
    );
    assert_eq!(es.iter().find(|e| e.0 == "suid").unwrap().4, 0o4755);
    // And it applies back to the same tree.
    let out = tmpdir("pax-out");
    apply_layer(Cursor::new(&t), &out, &ApplyOptions::default()).unwrap();
    assert_eq!(
        fs_err::read_to_string(out.join(&long).join(&long).join("deep")).unwrap(),
        "deep"
    );
    let (m1, m2) = (
        std::fs::metadata(out.join("a.txt")).unwrap(),
        std::fs::metadata(out.join("b/hard")).unwrap(),
    );
    assert_eq!(m1.ino(), m2.ino(), "hard link kept");
    assert_eq!(
        std::fs::read_link(out.join("b/link")).unwrap(),
        Path::new("../a.txt")
    );
    assert_eq!(
        std::fs::metadata(out.join("suid"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
}

#[test]
fn xattrs_and_capabilities_go_into_pax_records() {
    let d = tmpdir("xattr");
    fs_err::write(d.join("f"), "x").unwrap();
    if rustix::fs::setxattr(
        d.join("f"),
        c"user.strata",
        b"v1",
        rustix::fs::XattrFlags::empty(),
    )
    .is_err()
    {
        support::not_applicable("the temp filesystem does not support user xattrs");
        return;
    }
    let t = tar_of(&d, &WriteOptions::default());
    let mut a = tar::Archive::new(&t[..]);
    let mut e = a.entries().unwrap().next().unwrap().unwrap();
    let exts: Vec<(String, Vec<u8>)> = e
        .pax_extensions()
        .unwrap()
        .unwrap()
        .map(|x| {
            let x = x.unwrap();
            (x.key().unwrap().to_string(), x.value_bytes().to_vec())
        })
        .collect();
    assert!(
        exts.contains(&("SCHILY.xattr.user.strata".to_string(), b"v1".to_vec())),
        "{exts:?}"
    );
    let out = tmpdir("xattr-out");
    apply_layer(Cursor::new(&t), &out, &ApplyOptions::default()).unwrap();
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(out.join("f"), c"user.strata", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"v1");
}

#[test]
fn overlay_whiteouts_become_oci_whiteouts() {
    let d = tmpdir("wh");
    fs_err::create_dir_all(d.join("opaque")).unwrap();
    fs_err::write(d.join("opaque/new"), "n").unwrap();
    fs_err::write(d.join("gone"), "").unwrap();
    // Rootless overlay (userxattr) marks whiteouts and opaque dirs with user.overlay.* xattrs.
    if rustix::fs::setxattr(
        d.join("gone"),
        c"user.overlay.whiteout",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .is_err()
    {
        support::not_applicable("the temp filesystem does not support user xattrs");
        return;
    }
    rustix::fs::setxattr(
        d.join("opaque"),
        c"user.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let t = tar_of(
        &d,
        &WriteOptions {
            overlay_whiteouts: true,
            ..Default::default()
        },
    );
    let names: Vec<String> = entries(&t).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        vec![".wh.gone", "opaque/", "opaque/.wh..wh..opq", "opaque/new"]
    );
    // No overlay xattr leaks into the tar.
    assert!(!t.windows(b"overlay".len()).any(|w| w == b"overlay"));
    if rustix::process::geteuid().is_root() {
        // The kernel's own whiteout: a 0/0 character device.
        let d2 = tmpdir("wh-dev");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d2.join("x"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        let names: Vec<String> = entries(&tar_of(
            &d2,
            &WriteOptions {
                overlay_whiteouts: true,
                ..Default::default()
            },
        ))
        .into_iter()
        .map(|e| e.0)
        .collect();
        assert_eq!(names, vec![".wh.x"]);
    } else {
        support::not_applicable("mknod of a 0/0 whiteout device needs root");
    }
}

#[test]
fn compression_round_trips_and_digests_are_consistent() {
    let d = sample_tree("comp");
    let plain = tar_of(&d, &WriteOptions::default());
    for c in [Compression::None, Compression::GZIP, Compression::ZSTD] {
        let (blob, info) = layer::compress_tar(&plain[..], Vec::new(), c).unwrap();
        assert_eq!(info.diff_id, strata::oci::Digest::of(&plain));
        let mut back = Vec::new();
        layer::decompress(&blob[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, plain);
    }
}

// ---- hostile tars ----------------------------------------------------------------------

/// A tar entry written byte by byte, so that names the tar crate would refuse can be made.
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    h.set_cksum();
    out.write_all(h.as_bytes()).unwrap();
    out.write_all(data).unwrap();
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    t.extend([0u8; 1024]);
    t
}

/// A target inside a sandbox dir with a sentinel file beside it that nothing may touch.
fn arena(name: &str) -> (PathBuf, PathBuf) {
    let base = tmpdir(name);
    let target = base.join("target");
    fs_err::create_dir_all(target.join("etc")).unwrap();
    fs_err::write(base.join("sentinel"), "untouched").unwrap();
    (base, target)
}

fn outside_untouched(base: &Path) {
    let names: Vec<String> = fs_err::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        vec!["sentinel", "target"],
        "nothing may appear beside the target"
    );
    assert_eq!(
        fs_err::read_to_string(base.join("sentinel")).unwrap(),
        "untouched"
    );
}

#[test]
fn dotdot_entry_is_an_error_naming_it() {
    let (base, target) = arena("dotdot");
    let mut t = Vec::new();
    raw_entry(&mut t, "../sentinel", tar::EntryType::Regular, "", b"pwned");
    let e = apply_layer(Cursor::new(finish(t)), &target, &ApplyOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("\"../sentinel\"") && e.to_string().contains(".."),
        "{e}"
    );
    outside_untouched(&base);
}

#[test]
fn absolute_paths_land_inside() {
    let (base, target) = arena("abs");
    let mut t = Vec::new();
    raw_entry(&mut t, "/abs/file", tar::EntryType::Regular, "", b"in");
    apply_layer(Cursor::new(finish(t)), &target, &ApplyOptions::default()).unwrap();
    assert_eq!(
        fs_err::read_to_string(target.join("abs/file")).unwrap(),
        "in"
    );
    outside_untouched(&base);
}

#[test]
fn writes_through_symlinks_stay_inside() {
    let (base, target) = arena("symlink");
    let sentinel = base.join("sentinel");
    let mut t = Vec::new();
    // An absolute link to the real sentinel, a relative one climbing out, then files through them.
    raw_entry(
        &mut t,
        "abs",
        tar::EntryType::Symlink,
        sentinel.parent().unwrap().to_str().unwrap(),
        b"",
    );
    raw_entry(
        &mut t,
        "abs/sentinel",
        tar::EntryType::Regular,
        "",
        b"pwned",
    );
    raw_entry(&mut t, "up", tar::EntryType::Symlink, "../../../../..", b"");
    raw_entry(&mut t, "up/sentinel", tar::EntryType::Regular, "", b"pwned");
    raw_entry(&mut t, "etcl", tar::EntryType::Symlink, "/etc", b"");
    raw_entry(
        &mut t,
        "etcl/passwd",
        tar::EntryType::Regular,
        "",
        b"root::0:0::/:/bin/sh\n",
    );
    apply_layer(Cursor::new(finish(t)), &target, &ApplyOptions::default()).unwrap();
    outside_untouched(&base);
    // What was written through the links is inside the target: the absolute link resolves
    // from the target's root, the climbing one stops at it.
    let inside_abs = target
        .join(base.strip_prefix("/").unwrap())
        .join("sentinel");
    assert_eq!(fs_err::read_to_string(inside_abs).unwrap(), "pwned");
    assert_eq!(
        fs_err::read_to_string(target.join("sentinel")).unwrap(),
        "pwned"
    );
    assert_eq!(
        fs_err::read_to_string(target.join("etc/passwd")).unwrap(),
        "root::0:0::/:/bin/sh\n"
    );
    assert_ne!(
        fs_err::read_to_string("/etc/passwd").unwrap(),
        "root::0:0::/:/bin/sh\n"
    );
}

#[test]
fn hardlinks_out_are_refused() {
    let (base, target) = arena("hardlink");
    let mut t = Vec::new();
    raw_entry(&mut t, "h", tar::EntryType::Link, "../sentinel", b"");
    let e = apply_layer(Cursor::new(finish(t)), &target, &ApplyOptions::default()).unwrap_err();
    assert!(e.to_string().contains("\"h\""), "{e}");
    // An absolute target resolves inside the target, where there is no such file.
    let mut t = Vec::new();
    raw_entry(
        &mut t,
        "h2",
        tar::EntryType::Link,
        base.join("sentinel").to_str().unwrap(),
        b"",
    );
    let e = apply_layer(Cursor::new(finish(t)), &target, &ApplyOptions::default()).unwrap_err();
    assert!(e.to_string().contains("\"h2\""), "{e}");
    outside_untouched(&base);
}

#[test]
fn symlink_where_a_directory_was() {
    let (base, target) = arena("dir2link");
    let mut l1 = Vec::new();
    raw_entry(&mut l1, "d/", tar::EntryType::Directory, "", b"");
    raw_entry(&mut l1, "d/f", tar::EntryType::Regular, "", b"lower");
    apply_layer(Cursor::new(finish(l1)), &target, &ApplyOptions::default()).unwrap();
    let mut l2 = Vec::new();
    raw_entry(&mut l2, "d", tar::EntryType::Symlink, "../..", b"");
    raw_entry(&mut l2, "d/sentinel", tar::EntryType::Regular, "", b"pwned");
    apply_layer(Cursor::new(finish(l2)), &target, &ApplyOptions::default()).unwrap();
    assert!(std::fs::symlink_metadata(target.join("d"))
        .unwrap()
        .file_type()
        .is_symlink());
    outside_untouched(&base);
}

#[test]
fn whiteouts_and_opaque_dirs_apply() {
    let (_base, target) = arena("whiteout");
    let mut l1 = Vec::new();
    for f in ["a/", "a/keep", "a/gone", "o/", "o/old1", "o/old2/"] {
        let kind = if f.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        };
        raw_entry(&mut l1, f, kind, "", b"");
    }
    apply_layer(Cursor::new(finish(l1)), &target, &ApplyOptions::default()).unwrap();
    let mut l2 = Vec::new();
    raw_entry(&mut l2, "a/.wh.gone", tar::EntryType::Regular, "", b"");
    raw_entry(&mut l2, "o/", tar::EntryType::Directory, "", b"");
    raw_entry(&mut l2, "o/.wh..wh..opq", tar::EntryType::Regular, "", b"");
    raw_entry(&mut l2, "o/new", tar::EntryType::Regular, "", b"n");
    apply_layer(Cursor::new(finish(l2)), &target, &ApplyOptions::default()).unwrap();
    let ls = |d: &str| {
        let mut v: Vec<String> = fs_err::read_dir(target.join(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ls("a"), vec!["keep"]);
    assert_eq!(ls("o"), vec!["new"]);
}

#[test]
fn device_nodes_are_made_or_skipped() {
    let (_base, target) = arena("dev");
    let mut t = Vec::new();
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..4].copy_from_slice(b"null");
    h.set_entry_type(tar::EntryType::Char);
    h.set_mode(0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_size(0);
    h.set_cksum();
    t.extend_from_slice(h.as_bytes());
    let r = apply_layer(Cursor::new(finish(t)), &target, &ApplyOptions::default()).unwrap();
    if rustix::process::geteuid().is_root() {
        assert!(r.skipped_devices.is_empty());
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &std::fs::symlink_metadata(target.join("null"))
                .unwrap()
                .file_type()
        ));
    } else {
        assert_eq!(r.skipped_devices, vec!["null"]);
        assert!(!target.join("null").exists());
    }
}

#[test]
fn truncated_tar_is_an_error_not_a_panic() {
    let (_base, target) = arena("trunc");
    let mut t = Vec::new();
    raw_entry(&mut t, "f", tar::EntryType::Regular, "", &[7u8; 5000]);
    t.truncate(1500);
    assert!(apply_layer(Cursor::new(t), &target, &ApplyOptions::default()).is_err());
}

/// Keeps the first bytes written and counts the rest.
struct Head {
    head: Vec<u8>,
    total: u64,
}

impl Write for Head {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = 8192usize.saturating_sub(self.head.len());
        self.head.extend_from_slice(&b[..room.min(b.len())]);
        self.total += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn files_over_8_gib_get_a_pax_size() {
    let d = tmpdir("big");
    let f = fs_err::File::create(d.join("huge")).unwrap();
    let size: u64 = (8 << 30) + 1;
    if f.set_len(size).is_err() {
        support::not_applicable("the temp filesystem cannot hold a sparse 8 GiB file");
        return;
    }
    drop(f);
    let out = layer::write_tree(
        &d,
        Head {
            head: Vec::new(),
            total: 0,
        },
        &WriteOptions::default(),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.head);
    assert!(text.contains(&format!("size={size}")), "no PAX size record");
    // header + PAX header + data padded to 512 + two zero blocks at the end.
    assert!(out.total > size && out.total < size + 8192);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn file_capabilities_are_kept() {
    not_applicable!(
        rustix::process::geteuid().is_root(),
        "setting security.capability needs root"
    );
    let d = tmpdir("caps");
    fs_err::write(d.join("ping"), "x").unwrap();
    // VFS_CAP_REVISION_2 with CAP_NET_RAW (13) permitted and effective.
    let mut cap = Vec::new();
    cap.extend_from_slice(&(0x0200_0001u32).to_le_bytes());
    cap.extend_from_slice(&(1u32 << 13).to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    cap.extend_from_slice(&0u32.to_le_bytes());
    rustix::fs::setxattr(
        d.join("ping"),
        c"security.capability",
        &cap,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let t = tar_of(&d, &WriteOptions::default());
    let out = tmpdir("caps-out");
    apply_layer(Cursor::new(&t), &out, &ApplyOptions::default()).unwrap();
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(out.join("ping"), c"security.capability", &mut buf).unwrap();
    assert_eq!(&buf[..n], &cap[..]);
}
