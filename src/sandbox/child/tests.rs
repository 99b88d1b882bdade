//! The child's set-up and hardening against the recording [`Recorder`]: the exact sequence of
//! calls, and what a refused call reports. No namespace is made and nothing is mounted; the
//! files the set-up creates land in a temporary directory that stands for the root.

use std::path::PathBuf;

use super::identity::{harden, Refused};
use super::kernelfs::{kernel_fs, MASKED_PATHS, READONLY_PATHS};
use super::mounts::mount_binds;
use super::pid1::start;
use super::rootfs::{pivot, root_fs};
use crate::sandbox::sys::fake::{Call, Recorder};
use crate::sandbox::sys::Exec;
use crate::sandbox::{idmap, seccomp, user, Bind, BindSource, Network, Rootfs, SetupError, Spec};

/// Docker's capability set as capset's first word (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,
/// SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE,
/// SETFCAP); none above 31.
const DOCKER_CAPS: [u32; 2] = [0xa804_25fb, 0];

/// A directory standing for the root, removed when dropped.
struct Root(PathBuf);

impl Root {
    fn new(name: &str) -> Root {
        let p = std::env::temp_dir().join(format!("strata-sys-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Root(p)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spec(root: &Root) -> Spec {
    Spec {
        rootfs: Rootfs::Overlay {
            lower: vec!["/l/1".into(), "/l/0".into()],
            upper: "/s/u".into(),
            work: "/s/w".into(),
            merged: root.0.clone(),
        },
        argv: vec!["sh".into(), "-c".into(), "true".into()],
        env: Vec::new(),
        user: String::new(),
        workdir: String::new(),
        network: Network::Private,
        hostname: "box".into(),
        etc_files: Vec::new(),
        binds: Vec::new(),
        maps: idmap::IdMaps {
            uid: Vec::new(),
            gid: Vec::new(),
            root_only: false,
            use_helpers: false,
        },
        ports: None,
        tty: false,
        tty_size: None,
        rlimits: Vec::new(),
        shm_size: None,
        stdin: false,
        platform: None,
        memory_files: Vec::new(),
    }
}

fn mnt(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> Call {
    Call::Mount {
        source: source.into(),
        target: target.into(),
        fstype: fstype.into(),
        flags,
        data: data.into(),
    }
}

fn ids() -> user::Ids {
    user::Ids {
        uid: 1000,
        gid: 1001,
        groups: vec![1001, 27],
        home: None,
    }
}

fn exec() -> Exec {
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    Exec::new(
        c("/bin/sh"),
        vec![c("sh"), c("-c"), c("true")],
        vec![c("PATH=/bin")],
    )
}

#[test]
fn a_run_step_s_process_is_hardened_in_order_then_execed_with_nothing_inherited() {
    let sys = Recorder::new();
    let filters = seccomp::docker_default().unwrap();
    let got = start(
        &sys,
        false,
        &ids(),
        &filters,
        &[2, 9, 21],
        c"/work",
        &exec(),
    );
    assert_eq!(got, Ok(rustix::io::Errno::NOEXEC));
    let drop = |cap| Call::Prctl {
        option: libc::PR_CAPBSET_DROP,
        arg2: cap,
    };
    assert_eq!(
        sys.calls(),
        vec![
            Call::Setgroups(vec![1001, 27]),
            // While the process still holds CAP_SYS_ADMIN: no no_new_privs is needed, and none
            // is set (setuid binaries keep working, as under Docker).
            Call::SeccompLoad,
            // While it still holds CAP_SETPCAP.
            drop(2),
            drop(9),
            drop(21),
            Call::Prctl {
                option: libc::PR_CAP_AMBIENT,
                arg2: libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            },
            Call::Capset {
                effective: DOCKER_CAPS,
                permitted: DOCKER_CAPS,
                inheritable: [0, 0],
            },
            // gid first: after setresuid a non-root user could no longer change it.
            Call::Setresgid(1001),
            Call::Setresuid(1000),
            Call::Chdir("/work".into()),
            // Right before exec: nothing but 0, 1 and 2 reaches the process.
            Call::CloseRange(3),
            Call::Execve {
                prog: "/bin/sh".into(),
                argv: vec!["sh".into(), "-c".into(), "true".into()],
            },
        ]
    );
    assert!(!sys.calls().iter().any(|c| matches!(
        c,
        Call::Prctl {
            option: libc::PR_SET_NO_NEW_PRIVS,
            ..
        }
    )));
}

#[test]
fn only_root_mapped_sets_no_groups() {
    let sys = Recorder::new();
    let filters = seccomp::docker_default().unwrap();
    let root = user::Ids {
        uid: 0,
        gid: 0,
        groups: vec![0],
        home: None,
    };
    harden(&sys, true, &root, &filters, &[], c"/").unwrap();
    assert_eq!(sys.calls()[0], Call::SeccompLoad);
}

#[test]
fn a_refused_hardening_step_stops_before_the_rest_and_the_exec() {
    let filters = seccomp::docker_default().unwrap();
    type Pick = fn(&Call) -> bool;
    let cases: [(Pick, Refused, &[u8]); 5] = [
        (|c| matches!(c, Call::Setgroups(_)), Refused::Groups, b""),
        (
            |c| matches!(c, Call::SeccompLoad),
            Refused::Seccomp,
            b"strata: installing the seccomp filter failed\n",
        ),
        (
            |c| matches!(c, Call::Prctl { arg2: 9, .. }),
            Refused::Capabilities,
            b"strata: dropping capabilities failed\n",
        ),
        (|c| matches!(c, Call::Setresuid(_)), Refused::Ids, b""),
        (|c| matches!(c, Call::Chdir(_)), Refused::Workdir, b""),
    ];
    for (pick, refused, message) in cases {
        let sys = Recorder::new();
        sys.fail(libc::EPERM, pick);
        let got = start(
            &sys,
            false,
            &ids(),
            &filters,
            &[2, 9, 21],
            c"/work",
            &exec(),
        );
        assert_eq!(got, Err(refused));
        assert_eq!(refused.message(), message);
        let calls = sys.calls();
        assert!(pick(calls.last().unwrap()), "{refused:?}: {calls:?}");
        assert!(!calls
            .iter()
            .any(|c| matches!(c, Call::CloseRange(_) | Call::Execve { .. })));
    }
}

/// The mounts of the root's /proc, /dev and /sys, Docker's masked and read-only paths
/// included, in order.
fn kernel_fs_calls(r: &str) -> Vec<Call> {
    let (nosuid, nodev, noexec) = (libc::MS_NOSUID, libc::MS_NODEV, libc::MS_NOEXEC);
    let bind = libc::MS_BIND;
    let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    let mut want = vec![
        mnt(
            "proc",
            &format!("{r}/proc"),
            "proc",
            nosuid | nodev | noexec,
            "",
        ),
        mnt(
            "tmpfs",
            &format!("{r}/dev"),
            "tmpfs",
            nosuid | noexec,
            "mode=755,size=65536k",
        ),
    ];
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        want.push(mnt(
            &format!("/dev/{d}"),
            &format!("{r}/dev/{d}"),
            "",
            bind,
            "",
        ));
    }
    want.extend([
        mnt(
            "devpts",
            &format!("{r}/dev/pts"),
            "devpts",
            nosuid | noexec,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        mnt(
            "shm",
            &format!("{r}/dev/shm"),
            "tmpfs",
            nosuid | nodev | noexec,
            "mode=1777,size=65536k",
        ),
        mnt("/sys", &format!("{r}/sys"), "", bind | libc::MS_REC, ""),
        mnt(
            "",
            &format!("{r}/sys"),
            "",
            ro | nosuid | nodev | noexec,
            "",
        ),
    ]);
    for p in MASKED_PATHS {
        let t = format!("{r}{p}");
        if p.ends_with("kcore") || p.ends_with("keys") || p.ends_with("_list") {
            want.push(mnt("/dev/null", &t, "", bind, ""));
        } else {
            want.push(mnt(
                "tmpfs",
                &t,
                "tmpfs",
                libc::MS_RDONLY | nosuid | nodev | noexec,
                "size=0,mode=0555",
            ));
        }
    }
    for p in READONLY_PATHS {
        let t = format!("{r}{p}");
        want.push(mnt(&t, &t, "", bind | libc::MS_REC, ""));
        want.push(mnt("", &t, "", ro, ""));
    }
    want
}

#[test]
fn a_run_step_s_root_is_made_in_order_with_docker_s_masked_and_read_only_paths() {
    let root = Root::new("root");
    let r = root.path();
    // The image's /proc and /sys entries the masks apply to (a real /proc has them).
    for p in MASKED_PATHS.iter().chain(READONLY_PATHS) {
        let t = format!("{r}{p}");
        std::fs::create_dir_all(std::path::Path::new(&t).parent().unwrap()).unwrap();
        if p.ends_with("kcore") || p.ends_with("keys") || p.ends_with("_list") {
            std::fs::write(&t, b"").unwrap();
        } else {
            std::fs::create_dir(&t).unwrap();
        }
    }
    let spec = spec(&root);
    let sys = Recorder::new();
    assert_eq!(root_fs(&sys, &spec).unwrap(), r);
    let mut created = Vec::new();
    kernel_fs(&sys, &spec, &r, &mut created).unwrap();
    pivot(&sys, &r, &spec.hostname).unwrap();

    let mut want = vec![
        // The host's mounts private first: nothing the root does propagates out.
        mnt("", "/", "", libc::MS_REC | libc::MS_PRIVATE, ""),
        Call::Overlay {
            target: root.0.clone(),
            lowers: vec!["/l/1".into(), "/l/0".into()],
            writable: true,
        },
    ];
    want.extend(kernel_fs_calls(&r));
    want.extend([
        // pivot_root(".", ".") from inside the root, then the old root detached.
        Call::Chdir(r.clone()),
        Call::PivotRoot {
            new_root: ".".into(),
            put_old: ".".into(),
        },
        Call::Umount2 {
            target: ".".into(),
            flags: libc::MNT_DETACH,
        },
        Call::Chdir("/".into()),
        Call::Sethostname("box".into()),
    ]);
    assert_eq!(sys.calls(), want);
    // The mount points the root lacked, left out of the layer.
    assert_eq!(created, vec!["/dev"]);
}

#[test]
fn a_refused_mount_names_its_fstype_target_data_and_errno() {
    let root = Root::new("refused");
    let r = root.path();
    let spec = spec(&root);
    let sys = Recorder::new();
    sys.fail(
        libc::EACCES,
        |c| matches!(c, Call::Mount { fstype, .. } if fstype == "tmpfs"),
    );
    let e = kernel_fs(&sys, &spec, &r, &mut Vec::new()).unwrap_err();
    assert_eq!(
        e,
        SetupError::Mount {
            fstype: "tmpfs".into(),
            from: "tmpfs".into(),
            target: format!("{r}/dev"),
            data: "mode=755,size=65536k".into(),
            errno: libc::EACCES,
        }
    );
    assert_eq!(e.errno(), Some(libc::EACCES));

    // A new proc refused is its own variant (the container case, with its own advice).
    let sys = Recorder::new();
    sys.fail(
        libc::EPERM,
        |c| matches!(c, Call::Mount { fstype, .. } if fstype == "proc"),
    );
    let e = kernel_fs(&sys, &spec, &r, &mut Vec::new()).unwrap_err();
    assert_eq!(
        e,
        SetupError::Proc {
            target: format!("{r}/proc"),
            errno: libc::EPERM,
        }
    );

    // pivot_root and the overlay.
    let sys = Recorder::new();
    sys.fail(libc::EINVAL, |c| matches!(c, Call::PivotRoot { .. }));
    let e = pivot(&sys, &r, "box").unwrap_err();
    assert_eq!(
        e,
        SetupError::Syscall {
            call: "pivot_root".into(),
            errno: libc::EINVAL,
        }
    );
    assert!(!sys
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Umount2 { .. })));
    let sys = Recorder::new();
    sys.fail(libc::EINVAL, |c| matches!(c, Call::Overlay { .. }));
    assert!(root_fs(&sys, &spec).unwrap_err().is_overlay_refused());
}

#[test]
fn the_step_s_etc_files_tmpfs_and_binds_are_mounted_in_order_read_only_by_a_remount() {
    let root = Root::new("binds");
    let host = Root::new("host");
    let r = root.path();
    let h = host.path();
    std::fs::write(format!("{h}/resolv.conf"), b"nameserver 10.0.2.3\n").unwrap();
    std::fs::create_dir(format!("{h}/src")).unwrap();
    let mut spec = spec(&root);
    spec.etc_files = vec![("resolv.conf".into(), format!("{h}/resolv.conf").into())];
    spec.binds = vec![
        Bind {
            host: PathBuf::new(),
            target: "/t".into(),
            readonly: false,
            source: BindSource::Tmpfs { size: Some(1024) },
        },
        Bind {
            host: format!("{h}/src").into(),
            target: "/work/src".into(),
            readonly: true,
            source: BindSource::Host,
        },
        Bind {
            host: format!("{h}/src").into(),
            target: "/cache".into(),
            readonly: false,
            source: BindSource::Cache { follow_user: true },
        },
    ];
    let sys = Recorder::new();
    let mut created = Vec::new();
    let hand_to_user = mount_binds(&sys, &spec, &r, &mut created).unwrap();
    let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    let rec = libc::MS_BIND | libc::MS_REC;
    assert_eq!(
        sys.calls(),
        vec![
            mnt(
                &format!("{h}/resolv.conf"),
                &format!("{r}/etc/resolv.conf"),
                "",
                libc::MS_BIND,
                ""
            ),
            mnt("", &format!("{r}/etc/resolv.conf"), "", ro, ""),
            mnt(
                "tmpfs",
                &format!("{r}/t"),
                "tmpfs",
                libc::MS_NOSUID | libc::MS_NODEV,
                "mode=1777,size=1024"
            ),
            mnt(&format!("{h}/src"), &format!("{r}/work/src"), "", rec, ""),
            mnt("", &format!("{r}/work/src"), "", ro, ""),
            mnt(&format!("{h}/src"), &format!("{r}/cache"), "", rec, ""),
        ]
    );
    // Mount points the image lacked, for the layer to leave out; the cache for the user.
    assert_eq!(
        created,
        vec![
            "/etc",
            "/etc/resolv.conf",
            "/t",
            "/work",
            "/work/src",
            "/cache"
        ]
    );
    assert_eq!(hand_to_user, vec!["/cache"]);
}

fn registration(platform: &str, name: &str) -> crate::sandbox::binfmt::Registration {
    crate::sandbox::binfmt::Registration {
        platform: platform.into(),
        name: name.into(),
        interpreter: PathBuf::from(format!("/usr/bin/{name}-static")),
        line: format!(":{name}:M::x::/usr/bin/{name}-static:POCF").into_bytes(),
    }
}

#[test]
fn the_session_mounts_its_binfmt_instance_once_in_a_mount_namespace_of_its_own() {
    use crate::sandbox::protocol::SessionReply;
    let sys = Recorder::new();
    let mut b = super::Binfmt::default();
    let arm = [registration("linux/arm64", "qemu-aarch64")];
    let rv = [registration("linux/riscv64", "qemu-riscv64")];
    assert_eq!(b.register(&sys, &arm), SessionReply::Emulating);
    assert_eq!(b.register(&sys, &rv), SessionReply::Emulating);
    assert_eq!(
        sys.calls(),
        vec![
            Call::Unshare(libc::CLONE_NEWNS),
            Call::BinfmtInstance,
            Call::BinfmtRegister(vec!["qemu-aarch64".into()]),
            Call::BinfmtRegister(vec!["qemu-riscv64".into()]),
        ]
    );
}

#[test]
fn a_refused_binfmt_instance_is_said_once_and_remembered() {
    use crate::sandbox::protocol::SessionReply;
    let sys = Recorder::new();
    sys.fail(libc::EPERM, |c| *c == Call::BinfmtInstance);
    let mut b = super::Binfmt::default();
    let arm = [registration("linux/arm64", "qemu-aarch64")];
    let SessionReply::NoInstance(e) = b.register(&sys, &arm) else {
        panic!("not refused")
    };
    assert_eq!(e.errno(), Some(libc::EPERM));
    assert!(
        e.to_string()
            .starts_with("cannot run linux/arm64 binaries: mounting binfmt_misc"),
        "{e}"
    );
    assert!(matches!(
        b.register(&sys, &arm),
        SessionReply::NoInstance(_)
    ));
    // Asked once: the refusal is the session's answer from then on.
    assert_eq!(
        sys.calls(),
        vec![Call::Unshare(libc::CLONE_NEWNS), Call::BinfmtInstance]
    );
    // A failed registration in a working instance is a failure, not a missing instance.
    let sys = Recorder::new();
    sys.fail(libc::EEXIST, |c| matches!(c, Call::BinfmtRegister(_)));
    let mut b = super::Binfmt::default();
    let SessionReply::Failed(e) = b.register(&sys, &arm) else {
        panic!("not failed")
    };
    assert!(
        e.to_string().starts_with(
            "cannot run linux/arm64 binaries: registering /usr/bin/qemu-aarch64-static with binfmt_misc"
        ),
        "{e}"
    );
}
