//! A machine where user namespaces cannot be created: the build fails with the reason and the
//! fix, never a bare error, and `strata doctor` says the same. The test makes such a machine
//! without touching the host: inside a user namespace of its own (`unshare --user
//! --map-root-user`, util-linux) it sets that namespace's `user.max_user_namespaces` to 0.

use std::process::Command;

#[macro_use]
mod support;

fn in_blocked_userns(args: &str) -> std::process::Output {
    Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "sh",
            "-c",
            &format!("echo 0 > /proc/sys/user/max_user_namespaces && exec {args}"),
        ])
        .output()
        .unwrap()
}

#[test]
fn blocked_user_namespaces_give_advice() {
    let probe = in_blocked_userns("true");
    require!(
        probe.status.success(),
        "cannot make a user namespace to run the test in: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let dir = std::env::temp_dir().join(format!("strata-blocked-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _gone = RemoveOnDrop(dir.clone());
    fs_err::create_dir_all(dir.join("rootfs/bin")).unwrap();
    fs_err::write(dir.join("rootfs/bin/x"), "x").unwrap();
    let root = dir.join("store");
    let strata = env!("CARGO_BIN_EXE_strata");
    let ok = Command::new(strata)
        .args([
            "--root",
            root.to_str().unwrap(),
            "import",
            dir.join("rootfs").to_str().unwrap(),
            "b:1",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = in_blocked_userns(&format!(
        "{strata} --root {} run b:1 /bin/x",
        root.display()
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    // This machine cannot run the sandbox: exit code 4, not a failed command's 1.
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("cannot create the sandbox") && err.contains("unshare(CLONE_NEWUSER)"),
        "{err}"
    );
    assert!(
        err.contains(
            "hint: user.max_user_namespaces is 0: sudo sysctl -w user.max_user_namespaces=15000"
        ),
        "{err}"
    );
    let doctor = in_blocked_userns(&format!("{strata} doctor"));
    let doc = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doc.contains("FAIL user.max_user_namespaces: 0")
            && doc.contains("fix: sudo sysctl -w user.max_user_namespaces=15000"),
        "{doc}"
    );
    assert!(!doctor.status.success());
}

/// Removes the test's directory (its store too) when the test ends, passed or failed.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
