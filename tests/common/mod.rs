//! Helpers shared by the integration tests that run strata as other users.

use std::os::unix::fs::PermissionsExt;

/// The binary under test, copied where the unprivileged users can run it (the checkout may be
/// in a directory they cannot enter).
pub fn strata_bin() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("strata-bin-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dest = dir.join("strata");
        // A directory left by an earlier process with the same pid holds an old binary.
        let fresh = dest.exists()
            && fs_err::read(&dest).ok() == fs_err::read(env!("CARGO_BIN_EXE_strata")).ok();
        if !fresh {
            let tmp = dir
                .join(format!("strata.{:?}", std::thread::current().id()).replace(['(', ')'], ""));
            fs_err::copy(env!("CARGO_BIN_EXE_strata"), &tmp).unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            fs_err::rename(&tmp, &dest).unwrap();
        }
        dest.display().to_string()
    })
}
