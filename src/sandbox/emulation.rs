//! Steps of a foreign platform, strata's side: which way each platform runs in the session
//! (natively, QEMU registered in the session's own binfmt_misc instance, or the host's
//! handlers as they are), decided once per session and platform and remembered.
//!
//! The session (see [`super::session`]) owns the user namespace every step runs in, so the
//! binfmt_misc instance strata registers QEMU in belongs to it: on the first step of a foreign
//! platform strata asks the session to mount an instance (once, in a mount namespace of its
//! own, detached: [`binfmt::mount_detached`]) and to register the platform's handler with the
//! `F` flag, so the kernel opens QEMU from the host's filesystem at registration and the image
//! never needs it. Every later step of that platform only forks. Where the kernel refuses the
//! instance (before Linux 6.7, or a seccomp profile that denies the mount), nothing of strata's
//! is mounted and the host's handlers apply as they are: strata uses them when the host has
//! one for the platform, and otherwise fails with [`SetupError::Emulation`], which names the
//! platform, what is missing and the fix.

use std::collections::BTreeMap;

use super::binfmt::{self, How, Machine, Registration};
use super::SetupError;
use crate::oci::Platform;

/// How a platform's steps run in this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The machine's own.
    Native,
    /// Through a handler registered in the session's own binfmt_misc instance (strata's QEMU,
    /// or a copy of the host's handler).
    Namespace,
    /// Through the host's handler, as the host registered it (no instance of strata's).
    Host,
}

/// Why the session did not register a platform's handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The session could not have a binfmt_misc instance of its own: nothing is mounted, so
    /// the host's handlers apply as they are.
    NoInstance(SetupError),
    /// The instance exists but the registration failed.
    Failed(SetupError),
}

/// The routes decided in one session, by platform (normal form).
#[derive(Debug, Default)]
pub struct Cache {
    routes: BTreeMap<String, Route>,
    /// Set once the session could not mount an instance: later platforms do not ask again.
    no_instance: Option<SetupError>,
}

impl Cache {
    /// The route of `p` in this session: remembered, or decided now with `machine`, asking the
    /// session to register through `register` where a handler is needed.
    pub fn ensure(
        &mut self,
        machine: &dyn Fn() -> Machine,
        p: &Platform,
        register: &mut dyn FnMut(&[Registration]) -> Result<(), Refusal>,
    ) -> Result<Route, SetupError> {
        let key = p.normalized().to_string();
        if let Some(r) = self.routes.get(&key) {
            return Ok(*r);
        }
        let m = machine();
        let route = self.decide(&m, p, register)?;
        self.routes.insert(key, route);
        Ok(route)
    }

    fn decide(
        &mut self,
        m: &Machine,
        p: &Platform,
        register: &mut dyn FnMut(&[Registration]) -> Result<(), Refusal>,
    ) -> Result<Route, SetupError> {
        let how = m.how(p).map_err(|e| error(&p.to_string(), &e))?;
        if how == How::Native {
            return Ok(Route::Native);
        }
        // Before 6.7 `how` is the host's handler (or an error above): used as it is.
        if !m.userns_binfmt() {
            return Ok(Route::Host);
        }
        if let Some(e) = &self.no_instance {
            return host_or(m, p, e);
        }
        let reg = match how.registration() {
            Some(r) => r.map_err(|e| error(&p.to_string(), &e))?,
            None => return Ok(Route::Native),
        };
        match register(&[reg]) {
            Ok(()) => Ok(Route::Namespace),
            Err(Refusal::Failed(e)) => Err(e),
            Err(Refusal::NoInstance(e)) => {
                self.no_instance = Some(e.clone());
                host_or(m, p, &e)
            }
        }
    }
}

/// The host's handler for `p` when it has one; else why the session's instance was refused.
fn host_or(m: &Machine, p: &Platform, refused: &SetupError) -> Result<Route, SetupError> {
    if m.host_handler(p).is_some() {
        return Ok(Route::Host);
    }
    let (message, errno) = match refused {
        SetupError::Emulation { message, errno, .. } => (message.clone(), *errno),
        e => (e.to_string(), e.errno()),
    };
    Err(SetupError::Emulation {
        platform: p.to_string(),
        message: format!("{message}; and the host has no binfmt_misc handler registered for it"),
        errno,
        fix: Some(HOST_FIX.into()),
    })
}

/// What an administrator does where strata cannot register QEMU itself.
pub const HOST_FIX: &str = "Linux 6.7 or newer lets strata register QEMU in its own user namespace, with nothing on the host; otherwise an administrator registers QEMU on the host with the F flag: sudo apt-get install qemu-user-static (Debian's handlers have F; systemd-binfmt or binfmt-support loads them), or docker run --privileged --rm tonistiigi/binfmt --install all";

/// [`binfmt::Error`] for `platform` as the sandbox's typed error.
pub fn error(platform: &str, e: &binfmt::Error) -> SetupError {
    let platform = platform.to_string();
    let text = e.to_string();
    let message = text
        .strip_prefix(&format!("{platform}: "))
        .unwrap_or(&text)
        .to_string();
    let errno = match e {
        binfmt::Error::Mount { source, .. }
        | binfmt::Error::Register { source, .. }
        | binfmt::Error::Namespace { source, .. } => source.raw_os_error(),
        _ => None,
    };
    let fix = match e {
        binfmt::Error::KernelTooOld { .. } => Some(HOST_FIX.to_string()),
        _ => e.fix(),
    };
    SetupError::Emulation {
        platform,
        message,
        errno,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    fn arm64() -> Platform {
        Platform::parse_specifier("linux/arm64", &Platform::host()).unwrap()
    }

    /// A machine of `kernel` whose QEMU is looked for in `dir` only.
    fn machine(kernel: &str, dir: &Path, host: Vec<binfmt::Handler>) -> Machine {
        Machine {
            platform: Platform::of_linux_machine("x86_64"),
            kernel: kernel.into(),
            host_handlers: host,
            qemu: binfmt::QemuSearch {
                dir: Some(dir.to_path_buf()),
                path: None,
            },
            host_only: false,
        }
    }

    /// A directory with a stand-in `qemu-aarch64-static` that prints QEMU's version line.
    fn qemu_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("strata-emu-{}-{name}", std::process::id()));
        let _ = fs_err::remove_dir_all(&d);
        fs_err::create_dir_all(&d).unwrap();
        let q = d.join("qemu-aarch64-static");
        fs_err::write(&q, "#!/bin/sh\necho 'qemu-aarch64 version 7.2.22'\n").unwrap();
        fs_err::set_permissions(&q, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    fn host_arm64_handler() -> binfmt::Handler {
        binfmt::Handler::parse(
            "qemu-aarch64",
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n",
        )
        .unwrap()
    }

    #[test]
    fn a_platform_is_registered_once_per_session_and_native_never() {
        let d = qemu_dir("once");
        let m = || machine("6.18.0", &d, Vec::new());
        let mut cache = Cache::default();
        let mut asked = Vec::new();
        let mut register = |r: &[Registration]| {
            asked.push(r.to_vec());
            Ok(())
        };
        assert_eq!(
            cache.ensure(&m, &arm64(), &mut register),
            Ok(Route::Namespace)
        );
        // A second step of the same platform (written another way) reuses the registration.
        let again = Platform::parse_specifier("linux/aarch64", &Platform::host()).unwrap();
        assert_eq!(
            cache.ensure(&m, &again, &mut register),
            Ok(Route::Namespace)
        );
        let amd64 = Platform::parse_specifier("linux/amd64", &Platform::host()).unwrap();
        assert_eq!(cache.ensure(&m, &amd64, &mut register), Ok(Route::Native));
        assert_eq!(asked.len(), 1, "{asked:?}");
        let r = &asked[0][0];
        assert_eq!(r.platform, "linux/arm64");
        assert_eq!(r.name, "qemu-aarch64");
        assert_eq!(r.interpreter, d.join("qemu-aarch64-static"));
        // The F flag (QEMU opened at registration), with P for a QEMU that reads it.
        assert!(
            r.line.ends_with(b":POCF"),
            "{}",
            String::from_utf8_lossy(&r.line)
        );
        fs_err::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_refused_instance_falls_back_to_the_host_s_handler_or_says_what_to_do() {
        let d = qemu_dir("refused");
        let refused = SetupError::Emulation {
            platform: "linux/arm64".into(),
            message: "mounting binfmt_misc: Operation not permitted (os error 1)".into(),
            errno: Some(libc::EPERM),
            fix: None,
        };
        let mut calls = 0;
        let mut register = |_: &[Registration]| {
            calls += 1;
            Err(Refusal::NoInstance(refused.clone()))
        };
        // With the host's handler: used as it is.
        let with_host = || machine("6.18.0", &d, vec![host_arm64_handler()]);
        let mut cache = Cache::default();
        assert_eq!(
            cache.ensure(&with_host, &arm64(), &mut register),
            Ok(Route::Host)
        );
        // Without: the typed error naming the platform and the host's fix.
        let bare = || machine("6.18.0", &d, Vec::new());
        let mut cache = Cache::default();
        let e = cache.ensure(&bare, &arm64(), &mut register).unwrap_err();
        let SetupError::Emulation {
            platform, errno, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(
            (platform.as_str(), *errno),
            ("linux/arm64", Some(libc::EPERM))
        );
        assert!(
            e.to_string()
                .starts_with("cannot run linux/arm64 binaries: mounting binfmt_misc"),
            "{e}"
        );
        assert!(
            e.advice()[0].contains("tonistiigi/binfmt"),
            "{:?}",
            e.advice()
        );
        // The refusal is remembered: a second platform does not ask again.
        let riscv = Platform::parse_specifier("linux/riscv64", &Platform::host()).unwrap();
        assert!(cache.ensure(&bare, &riscv, &mut register).is_err());
        assert_eq!(calls, 2);
        fs_err::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn no_qemu_an_old_kernel_and_an_unknown_platform_are_typed_errors() {
        let empty = std::env::temp_dir().join(format!("strata-emu-{}-empty", std::process::id()));
        fs_err::create_dir_all(&empty).unwrap();
        let mut register = |_: &[Registration]| -> Result<(), Refusal> { panic!("not asked") };
        let e = Cache::default()
            .ensure(
                &|| machine("6.18.0", &empty, Vec::new()),
                &arm64(),
                &mut register,
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot run linux/arm64 binaries: no qemu-aarch64-static (looked in STRATA_QEMU_DIR="),
            "{e}"
        );
        assert!(
            e.advice()[0].contains("qemu-user-static"),
            "{:?}",
            e.advice()
        );
        let e = Cache::default()
            .ensure(
                &|| machine("6.1.0", &empty, Vec::new()),
                &arm64(),
                &mut register,
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("Linux 6.1.0 cannot mount binfmt_misc"),
            "{e}"
        );
        assert!(
            e.advice()[0].contains("tonistiigi/binfmt --install"),
            "{:?}",
            e.advice()
        );
        // Before 6.7 the host's handler is used as it is, without asking the session.
        assert_eq!(
            Cache::default().ensure(
                &|| machine("6.1.0", &empty, vec![host_arm64_handler()]),
                &arm64(),
                &mut register
            ),
            Ok(Route::Host)
        );
        let mips = Platform::parse("linux/mips64").unwrap();
        let e = Cache::default()
            .ensure(
                &|| machine("6.18.0", &empty, Vec::new()),
                &mips,
                &mut register,
            )
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "cannot run linux/mips64 binaries: strata cannot emulate this platform"
            ),
            "{e}"
        );
        fs_err::remove_dir_all(&empty).unwrap();
    }
}
