use super::*;
use crate::layer::Compression;
use crate::oci::{ImageConfig, Platform};

/// A directory removed when the test's thread ends (libtest runs each test on its own thread,
/// and thread-local destructors run after a panic too), so `cargo test` leaves nothing behind.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        make_writable(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

thread_local! {
    static CLEANUP: std::cell::RefCell<Vec<Cleanup>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strata-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    CLEANUP.with(|c| c.borrow_mut().push(Cleanup(d.clone())));
    d
}

fn tree(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let d = tmp(&format!("tree-{name}"));
    for (p, c) in files {
        let f = d.join(p);
        fs_err::create_dir_all(f.parent().unwrap()).unwrap();
        fs_err::write(f, c).unwrap();
    }
    d
}

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

#[test]
fn open_lays_out_a_versioned_oci_layout() {
    let root = tmp("open");
    let s = Store::open(&root).unwrap();
    assert!(root.join("CACHEDIR.TAG").exists());
    assert!(s.layout_dir().join("oci-layout").exists());
    assert_eq!(s.index().unwrap().manifests.len(), 0);
    Store::open(&root).unwrap();
}

#[test]
fn refs_parse_and_normalize() {
    assert_eq!(r("busybox").to_string(), "busybox:latest");
    assert_eq!(
        r("docker.io/library/python:3.12").to_string(),
        "python:3.12"
    );
    assert_eq!(
        r("localhost:5000/team/app:v1").name(),
        "localhost:5000/team/app"
    );
    assert_eq!(r("localhost:5000/team/app").tag(), "latest");
    for bad in ["", "UPPER", "a:", "a:-x", "a b", "x@sha256:00"] {
        assert!(ImageRef::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn blobs_are_verified_when_written() {
    let s = Store::open(tmp("verify")).unwrap();
    let wrong = Digest::of(b"other");
    let e = s
        .put_blob_from(&b"data"[..], Some((&wrong, None)), "test blob")
        .unwrap_err();
    assert!(
        e.to_string().contains("digest mismatch for test blob"),
        "{e}"
    );
    assert!(!s.has_blob(&wrong) && !s.has_blob(&Digest::of(b"data")));
    assert_eq!(
        std::fs::read_dir(s.tmp_dir()).unwrap().count(),
        0,
        "no temp file left"
    );
}

#[test]
fn a_layer_hashed_by_its_writer_moves_in_unread_and_its_size_is_checked() {
    let s = Store::open(tmp("hashed")).unwrap();
    let tar = |name: &str| {
        let p = s.tmp_dir().join(name);
        let dir = tree(name, &[("f", "content")]);
        let f = fs_err::File::create(&p).unwrap();
        let opts = crate::layer::WriteOptions {
            source_date_epoch: Some(0),
            ..Default::default()
        };
        crate::layer::write_tree(&dir, f, &opts).unwrap();
        p
    };
    let p = tar("a.tar");
    let bytes = fs_err::read(&p).unwrap();
    let len = bytes.len() as u64;
    // A size that is not the file's is refused, and the file stays where it was.
    let e = s
        .put_layer_file_hashed(&p, Compression::None, Some((Digest::of(&bytes), len + 1)))
        .unwrap_err();
    assert!(e.to_string().contains("where its writer counted"), "{e}");
    assert!(p.exists() && !s.has_blob(&Digest::of(&bytes)));
    // The writer's digest is the blob's name and the layer's diffID, as a read would give.
    let info = s
        .put_layer_file_hashed(&p, Compression::None, Some((Digest::of(&bytes), len)))
        .unwrap();
    assert_eq!(info.digest, Digest::of(&bytes));
    assert_eq!(info.diff_id, info.digest);
    assert_eq!((info.size, info.uncompressed_size), (len, len));
    assert_eq!(fs_err::read(s.blob_path(&info.digest)).unwrap(), bytes);
    let read = s.put_layer_file(&tar("b.tar"), Compression::None).unwrap();
    assert_eq!(read.digest, info.digest);
}

#[test]
fn import_tag_resolve_remove() {
    let s = Store::open(tmp("itr")).unwrap();
    let t = tree(
        "itr",
        &[("bin/hello", "hi"), ("etc/os-release", "ID=test\n")],
    );
    let img = s
        .import(&t, &r("hello:1"), Compression::GZIP, Some(0))
        .unwrap();
    assert_eq!(img.config.rootfs.diff_ids.len(), 1);
    assert_eq!(img.config.created.as_deref(), Some("1970-01-01T00:00:00Z"));
    s.tag("hello:1", &r("hello:latest")).unwrap();
    assert_eq!(s.resolve("hello").unwrap().id(), img.id());
    assert_eq!(s.resolve(&img.id().hex()[..8]).unwrap().id(), img.id());
    assert_eq!(s.resolve(img.id().as_str()).unwrap().names.len(), 2);
    assert!(matches!(s.resolve("nope"), Err(Error::NotFound(_))));
    assert_eq!(s.remove("hello:1").unwrap(), vec!["hello:1"]);
    assert_eq!(s.resolve("hello").unwrap().names, vec![r("hello:latest")]);
    s.remove(img.id().as_str()).unwrap();
    assert!(s.images().unwrap().is_empty());
}

#[test]
fn import_is_reproducible_with_an_epoch() {
    let t = tree("repro", &[("a", "1"), ("b/c", "2")]);
    let a = Store::open(tmp("repro-a"))
        .unwrap()
        .import(&t, &r("x"), Compression::GZIP, Some(1_700_000_000))
        .unwrap();
    let b = Store::open(tmp("repro-b"))
        .unwrap()
        .import(&t, &r("x"), Compression::GZIP, Some(1_700_000_000))
        .unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest);
}

#[test]
fn prune_frees_only_unreferenced_blobs() {
    let s = Store::open(tmp("prune")).unwrap();
    let keep = s
        .import(
            &tree("keep", &[("k", "keep")]),
            &r("keep"),
            Compression::GZIP,
            Some(0),
        )
        .unwrap();
    let drop = s
        .import(
            &tree("drop", &[("d", "drop me")]),
            &r("drop"),
            Compression::GZIP,
            Some(0),
        )
        .unwrap();
    s.remove("drop").unwrap();
    let freed = s.prune(false).unwrap();
    assert!(freed > 0);
    assert!(s.has_blob(&keep.manifest.layers[0].digest));
    assert!(!s.has_blob(&drop.manifest.layers[0].digest));
    assert_eq!(s.prune(false).unwrap(), 0);
    assert!(s.fsck().unwrap().problems.is_empty());
}

#[test]
fn fsck_finds_corrupt_and_missing_blobs() {
    let s = Store::open(tmp("fsck")).unwrap();
    let img = s
        .import(
            &tree("fsck", &[("f", "content")]),
            &r("f"),
            Compression::None,
            Some(0),
        )
        .unwrap();
    assert!(s.fsck().unwrap().problems.is_empty());
    let layer = s.blob_path(&img.manifest.layers[0].digest);
    let mut bytes = fs_err::read(&layer).unwrap();
    bytes[600] ^= 0xff;
    fs_err::write(&layer, &bytes).unwrap();
    let rep = s.fsck().unwrap();
    assert!(
        rep.problems.iter().any(|p| p.0.contains("is corrupt")),
        "{:?}",
        rep.problems
    );
    fs_err::remove_file(s.blob_path(&img.config_digest)).unwrap();
    let rep = s.fsck().unwrap();
    assert!(
        rep.problems
            .iter()
            .any(|p| p.0.contains("f:latest: config")),
        "{:?}",
        rep.problems
    );
}

#[test]
fn concurrent_writers_lose_no_tag() {
    let root = tmp("conc");
    let s = Store::open(&root).unwrap();
    s.import(
        &tree("conc", &[("x", "y")]),
        &r("base"),
        Compression::GZIP,
        Some(0),
    )
    .unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let root = root.clone();
            std::thread::spawn(move || {
                let s = Store::open(&root).unwrap();
                for j in 0..5 {
                    s.tag("base", &ImageRef::parse(&format!("t{i}:{j}")).unwrap())
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(s.resolve("base").unwrap().names.len(), 41);
}

#[test]
fn snapshots_are_unpacked_once() {
    let s = Store::open(tmp("snap")).unwrap();
    let img = s
        .import(
            &tree(
                "snap",
                &[("usr/bin/tool", "#!/bin/sh\n"), ("etc/conf", "c")],
            ),
            &r("snap"),
            Compression::ZSTD,
            Some(0),
        )
        .unwrap();
    let diff = &img.config.rootfs.diff_ids[0];
    let (p, first) = s.snapshot(diff).unwrap();
    assert!(first.is_some());
    assert_eq!(fs_err::read_to_string(p.join("etc/conf")).unwrap(), "c");
    let (p2, second) = s.snapshot(diff).unwrap();
    assert_eq!((p2, second.is_none()), (p, true));
    // prune keeps it while the image exists; --all removes it.
    s.prune(false).unwrap();
    assert!(s.snapshot_path(diff).exists());
    s.prune(true).unwrap();
    assert!(!s.snapshot_path(diff).exists());
}

#[test]
fn save_and_load_round_trip_every_format() {
    let src = Store::open(tmp("rt-src")).unwrap();
    let img = src
        .import(
            &tree("rt", &[("a", "1"), ("d/b", "2")]),
            &r("app:1.0"),
            Compression::GZIP,
            Some(0),
        )
        .unwrap();
    for (fmt, name) in [
        (SaveFormat::OciArchive, "a.tar"),
        (SaveFormat::DockerArchive, "d.tar"),
        (SaveFormat::OciDir, "dir"),
    ] {
        let out = tmp(&format!("rt-out-{name}"));
        fs_err::create_dir_all(&out).unwrap();
        let dest = out.join(name);
        src.save(&[(img.clone(), vec![r("app:1.0")])], &dest, fmt)
            .unwrap();
        let dst = Store::open(tmp(&format!("rt-dst-{name}"))).unwrap();
        let loaded = dst.load(&dest).unwrap();
        assert_eq!(loaded.len(), 1, "{fmt:?}");
        assert_eq!(loaded[0].names, vec![r("app:1.0")], "{fmt:?}");
        assert_eq!(
            loaded[0].config_digest, img.config_digest,
            "{fmt:?}: the config is kept byte for byte"
        );
        if fmt != SaveFormat::DockerArchive {
            assert_eq!(loaded[0].manifest_digest, img.manifest_digest, "{fmt:?}");
        }
        assert!(dst.fsck().unwrap().problems.is_empty());
        if fmt == SaveFormat::OciDir {
            // No inode is shared with the store: scribbling on the export leaves it whole.
            use std::os::unix::fs::MetadataExt;
            let blob = &img.manifest.layers[0].digest;
            let exported = dest.join("blobs/sha256").join(blob.hex());
            let (a, b) = (
                fs_err::metadata(&exported).unwrap(),
                fs_err::metadata(src.blob_path(blob)).unwrap(),
            );
            assert_ne!((a.dev(), a.ino()), (b.dev(), b.ino()), "a hard link");
            let mut f = fs_err::OpenOptions::new()
                .append(true)
                .open(&exported)
                .unwrap();
            std::io::Write::write_all(&mut f, b"scribble").unwrap();
            assert!(src.fsck().unwrap().problems.is_empty());
            // A copy that a killed save left behind (a dead pid) goes at the next save.
            let stale = dest.join("blobs/sha256/.copy-999999999-0-0");
            fs_err::write(&stale, b"x").unwrap();
            fs_err::remove_file(&exported).unwrap();
            src.save(&[(img.clone(), vec![r("app:1.0")])], &dest, fmt)
                .unwrap();
            assert!(!stale.exists());
        }
    }
}

#[test]
fn load_keeps_a_whole_index_or_else_the_host_platform_s_image() {
    let src = Store::open(tmp("mp-src")).unwrap();
    let host = src
        .import(
            &tree("mp-h", &[("p", "host")]),
            &r("h"),
            Compression::GZIP,
            Some(0),
        )
        .unwrap();
    let mut other_cfg: ImageConfig = host.config.clone();
    other_cfg.architecture = "s390x".into();
    let other = src
        .add_image(&other_cfg, &host.manifest.layers, &[r("o")])
        .unwrap();
    // An OCI layout whose index.json points at an image index with both.
    let out = tmp("mp-out");
    src.save(
        &[(host.clone(), vec![]), (other.clone(), vec![])],
        &out,
        SaveFormat::OciDir,
    )
    .unwrap();
    let mut idx = oci::Index::default();
    for (img, arch) in [
        (&other, "s390x"),
        (&host, Platform::host().architecture.as_str()),
    ] {
        let mut d = oci::Descriptor::new(
            media::OCI_MANIFEST,
            img.manifest_digest.clone(),
            fs_err::metadata(src.blob_path(&img.manifest_digest))
                .unwrap()
                .len(),
        );
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            ..Default::default()
        });
        idx.manifests.push(d);
    }
    let ib = canonical_json(&idx);
    let id = Digest::of(&ib);
    fs_err::write(out.join("blobs/sha256").join(id.hex()), &ib).unwrap();
    let mut top = oci::Index::default();
    let mut d = oci::Descriptor::new(media::OCI_INDEX, id, ib.len() as u64);
    d.annotations.insert(REF_NAME.into(), "multi:1".into());
    top.manifests.push(d);
    fs_err::write(out.join("index.json"), canonical_json(&top)).unwrap();
    let dst = Store::open(tmp("mp-dst")).unwrap();
    let loaded = dst.load(&out).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].config.architecture, Platform::host().architecture);
    assert_eq!(loaded[0].names, vec![r("multi:1")]);
    // The layout holds all of the index: it is kept whole.
    assert!(dst.find_index("multi:1").unwrap().is_some());
    let s390x = Platform {
        architecture: "s390x".into(),
        os: "linux".into(),
        ..Default::default()
    };
    assert_eq!(
        dst.resolve_platform("multi:1", Some(&s390x))
            .unwrap()
            .config
            .architecture,
        "s390x"
    );
    // Without the other platform's config (a layout of one platform's blobs, as skopeo copies
    // one): the host's image only.
    fs_err::remove_file(out.join("blobs/sha256").join(other.config_digest.hex())).unwrap();
    let one = Store::open(tmp("mp-one")).unwrap();
    let loaded = one.load(&out).unwrap();
    assert_eq!(loaded[0].config.architecture, Platform::host().architecture);
    assert!(one.find_index("multi:1").unwrap().is_none());
    assert_eq!(one.resolve("multi:1").unwrap().names, vec![r("multi:1")]);
}

#[test]
fn load_rejects_tampered_archives() {
    let src = Store::open(tmp("tamper-src")).unwrap();
    let img = src
        .import(
            &tree("tamper", &[("a", "original")]),
            &r("t"),
            Compression::None,
            Some(0),
        )
        .unwrap();
    let out = tmp("tamper-out");
    src.save(&[(img.clone(), vec![r("t")])], &out, SaveFormat::OciDir)
        .unwrap();
    let layer = out
        .join("blobs/sha256")
        .join(img.manifest.layers[0].digest.hex());
    let mut b = fs_err::read(&layer).unwrap();
    let pos = b.windows(8).position(|w| w == b"original").unwrap();
    b[pos] = b'X';
    fs_err::write(&layer, b).unwrap();
    let dst = Store::open(tmp("tamper-dst")).unwrap();
    let e = dst.load(&out).unwrap_err();
    assert!(e.to_string().contains("digest mismatch"), "{e}");
    assert!(dst.images().unwrap().is_empty());
}

#[test]
fn an_oci_layout_with_several_refs_loads_all() {
    let src = Store::open(tmp("refs-src")).unwrap();
    let a = src
        .import(
            &tree("refs-a", &[("a", "1")]),
            &r("one:1"),
            Compression::GZIP,
            Some(0),
        )
        .unwrap();
    let b = src
        .import(
            &tree("refs-b", &[("b", "2")]),
            &r("two:2"),
            Compression::ZSTD,
            Some(0),
        )
        .unwrap();
    let out = tmp("refs-out");
    src.save(
        &[(a, vec![r("one:1")]), (b, vec![r("two:2")])],
        &out,
        SaveFormat::OciDir,
    )
    .unwrap();
    let dst = Store::open(tmp("refs-dst")).unwrap();
    let names: Vec<String> = dst
        .load(&out)
        .unwrap()
        .iter()
        .flat_map(|i| i.names.iter().map(|n| n.to_string()))
        .collect();
    assert_eq!(names, vec!["one:1", "two:2"]);
}

#[test]
fn import_refuses_what_is_not_a_tar_and_stores_nothing() {
    let s = Store::open(tmp("import-junk")).unwrap();
    let dir = tmp("import-junk-files");
    fs_err::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.txt");
    fs_err::write(&text, "not a tar\n").unwrap();
    let junk = dir.join("junk.bin");
    fs_err::write(
        &junk,
        (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for f in [&text, &junk] {
        let e = s
            .import(f, &r("x:1"), Compression::GZIP, Some(0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a tar archive") && e.contains(&f.display().to_string()),
            "{e}"
        );
        assert!(!e.contains(char::REPLACEMENT_CHARACTER), "{e}");
    }
    assert!(s.images().unwrap().is_empty());
    let blobs = std::fs::read_dir(s.layout_dir().join("blobs/sha256"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "nothing stored");
}

#[test]
fn per_key_locks_remove_their_files_and_stale_ones_are_swept() {
    let s = Store::open(tmp("locks")).unwrap();
    let locks = s.root().join("v1/locks");
    let count = || {
        std::fs::read_dir(&locks)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.starts_with("step-") || n.starts_with("blob-") || n.starts_with("snapshot-")
            })
            .count()
    };
    let key = Digest::of(b"step");
    {
        let _held = s.step_lock(&key).unwrap();
        assert_eq!(count(), 1);
        // Held: the sweep leaves it.
        assert_eq!(s.remove_stale_locks(), 0);
        assert_eq!(count(), 1);
    }
    assert_eq!(count(), 0, "a released per-key lock removes its file");

    // A waiter that opened the file before the holder removed it must not believe it holds the
    // lock on the orphaned inode: it starts again on the path, so two holders never coexist.
    let first = s.blob_lock(&key).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = Store::open(s.root()).unwrap();
    let k2 = key.clone();
    let waiter = std::thread::spawn(move || {
        let _l = s2.blob_lock(&k2).unwrap();
        tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(rx.try_recv().is_err(), "the waiter waits");
    drop(first);
    rx.recv().unwrap();
    // The waiter holds the lock on the file the path names now.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(locks.join(format!("blob-{}.lock", key.hex())))
        .unwrap();
    assert!(
        f.try_lock().is_err(),
        "the waiter's lock is on the live file"
    );
    waiter.join().unwrap();

    // A killed holder leaves its file behind (a file nobody holds): the sweep removes it, and
    // leaves gc.lock and index.lock.
    for n in ["step-aa.lock", "blob-bb.lock", "snapshot-cc.lock"] {
        std::fs::write(locks.join(n), "").unwrap();
    }
    assert_eq!(count(), 3);
    assert_eq!(s.remove_stale_locks(), 3);
    assert_eq!(count(), 0);
    assert!(locks.join("index.lock").exists());
    s.prune(false).unwrap();
    assert!(locks.join("gc.lock").exists());
}

#[test]
fn a_store_is_made_private_and_an_open_one_repaired() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let d = tmp("private");
    let root = d.join("a/store");
    Store::open(&root).unwrap();
    assert_eq!(mode(&root), 0o700, "a root strata creates");
    assert_eq!(mode(&root.join("v1")), 0o700);
    // An older strata made both 0755; the root (which may be a directory the user chose) is
    // left, v1 (which holds everything) is closed again.
    for p in [&root, &root.join("v1")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Store::open(&root).unwrap();
    assert_eq!(mode(&root), 0o755);
    assert_eq!(mode(&root.join("v1")), 0o700);
    // Through a symlink (a store moved to another disk).
    let link = d.join("link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    std::fs::set_permissions(root.join("v1"), std::fs::Permissions::from_mode(0o750)).unwrap();
    Store::open(&link).unwrap();
    assert_eq!(mode(&root.join("v1")), 0o700);
}

#[test]
fn a_temp_entry_s_owner_is_gone_when_dead_a_zombie_or_another_process() {
    let me = std::process::id();
    let tag = owner_tag();
    let start: u64 = tag.split_once("-s").unwrap().1.parse().unwrap();
    assert_eq!(
        owner_gone(&format!("run-{tag}-3")),
        Some(false),
        "this process"
    );
    assert_eq!(
        owner_gone(&format!("run-{me}-7")),
        Some(false),
        "an older name of ours"
    );
    assert_eq!(owner_gone("no-pid-here"), None);
    // Our pid with another start time: a process that had the pid before us.
    assert_eq!(
        owner_gone(&format!("run-{me}-s{}-3", start + 1)),
        Some(true),
        "pid reuse"
    );
    // A live process other than us: ours' parent (cargo's test runner or a shell).
    let parent = rustix::process::getppid().unwrap().as_raw_nonzero().get() as u32;
    let parent_start = std::fs::read_to_string(format!("/proc/{parent}/stat"))
        .unwrap()
        .rsplit_once(')')
        .unwrap()
        .1
        .split_ascii_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    assert_eq!(
        owner_gone(&format!("blob-{parent}-s{parent_start}-0-1")),
        Some(false)
    );
    assert_eq!(owner_gone(&format!("blob-{parent}-0-1")), Some(false));
    assert_eq!(owner_gone(&format!("blob-{parent}-s1-0-1")), Some(true));
    // A zombie: a child that exited and is not reaped yet.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .rsplit_once(')')
        .unwrap()
        .1
        .trim_start()
        .starts_with('Z')
    {
        assert!(std::time::Instant::now() < deadline, "no zombie");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(owner_gone(&format!("step-{pid}-4")), Some(true), "zombie");
    child.wait().unwrap();
    assert_eq!(owner_gone(&format!("step-{pid}-4")), Some(true), "reaped");
}

#[test]
fn a_config_over_the_limit_is_refused_naming_what_makes_it_large() {
    let s = Store::open(tmp("bigconfig")).unwrap();
    let mut cfg = ImageConfig::default();
    let labels = cfg
        .config
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    labels.insert("small".into(), "x".into());
    labels.insert("huge".into(), "y".repeat(crate::oci::MAX_CONFIG));
    let e = s.add_image(&cfg, &[], &[r("big")]).unwrap_err().to_string();
    assert!(
        e.contains("over the 32 MiB limit") && e.contains("LABEL huge"),
        "{e}"
    );
    assert!(s.images().unwrap().is_empty());
    // Nothing was written: no blob.
    let blobs = s.layout_dir().join("blobs/sha256");
    assert_eq!(std::fs::read_dir(blobs).unwrap().count(), 0);
}

/// A tar of one entry named `name` (as written, `..` included) of kind `kind`, linking to
/// `link` for a hard link.
fn raw_tar(name: &str, kind: tar::EntryType, link: &str) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name.as_bytes());
        g.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(if kind == tar::EntryType::Regular {
        4
    } else {
        0
    });
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    if kind == tar::EntryType::Regular {
        let mut block = vec![0u8; 512];
        block[..4].copy_from_slice(b"evil");
        out.extend(block);
    }
    out.extend(vec![0u8; 1024]);
    out
}

#[test]
fn import_refuses_a_tar_whose_entries_climb_out() {
    let s = Store::open(tmp("import-escape")).unwrap();
    let dir = tmp("import-escape-files");
    fs_err::create_dir_all(&dir).unwrap();
    for (i, (name, kind, link, named)) in [
        ("../evil", tar::EntryType::Regular, "", "../evil"),
        ("a/../../evil", tar::EntryType::Regular, "", "a/../../evil"),
        ("/../etc/evil", tar::EntryType::Regular, "", "/../etc/evil"),
        (
            "ok",
            tar::EntryType::Link,
            "../../etc/passwd",
            "../../etc/passwd",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let f = dir.join(format!("t{i}.tar"));
        fs_err::write(&f, raw_tar(name, kind, link)).unwrap();
        let e = s
            .import(&f, &r("x:1"), Compression::None, Some(0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(named) && e.contains("climbs out") && e.contains(&f.display().to_string()),
            "{name}: {e}"
        );
    }
    assert!(s.images().unwrap().is_empty());
    let blobs = std::fs::read_dir(s.layout_dir().join("blobs/sha256"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "nothing stored");
    // An absolute path that stays inside, and `..` that stays inside, are imported.
    let f = dir.join("inside.tar");
    fs_err::write(&f, raw_tar("/a/../etc/fine", tar::EntryType::Regular, "")).unwrap();
    s.import(&f, &r("x:1"), Compression::None, Some(0)).unwrap();
}
