//! Running binaries of other platforms: QEMU's user-mode emulators registered with
//! binfmt_misc inside strata's own user namespace, so nothing is registered on the host.
//!
//! Since Linux 6.7 binfmt_misc can be mounted in a user namespace: the mount is an instance
//! of that namespace, its handlers apply to every process in it and in the namespaces below
//! it, and the host (and every other namespace) never sees them. Three consequences shape this
//! module:
//!
//! - A handler lives as long as its instance is mounted somewhere in the namespace: unmounting
//!   the last mount (or ending the last mount namespace holding one) removes it. The caller
//!   keeps the mount for as long as steps run (the session process's own mount namespace);
//!   [`Registered`] also holds a descriptor on it.
//! - Once a user namespace mounts an instance of its own, the host's handlers no longer apply
//!   in it. Handlers the host registered are therefore copied into strata's instance
//!   ([`How::Host`]) next to strata's own.
//! - Handlers are registered with the `F` flag: the kernel opens the interpreter at
//!   registration, so it is found outside the image (which needs no QEMU inside) and in no
//!   mount namespace of a step. `C` (which implies `O`) gives a setuid binary its owner's
//!   credentials, so `su` and `sudo` in an emulated image behave as natively (tonistiigi/binfmt,
//!   BuildKit's installer, registers `CF` too). `P` keeps `argv[0]` (the kernel passes it as an
//!   extra argument and says so in `AT_FLAGS`, which QEMU reads from 6.0 on): without it a
//!   program started as `exec -a NAME` or a login shell's `-sh` sees its path instead. It is
//!   set only for a QEMU that reads the flag, since an older one would take `argv[0]` for the
//!   program's first argument.
//!
//! On older kernels (or where a seccomp profile or LSM refuses the mount) the handlers the host
//! registered are used as they are: with `F` they work like strata's own; without it the kernel
//! looks the interpreter up inside the image at each exec, which then has to contain it.
//!
//! The magic and mask of each handler follow QEMU's `scripts/qemu-binfmt-conf.sh` (and the
//! files Debian's qemu-user-static installs under /usr/lib/binfmt.d): the ELF identification
//! (class, byte order, version; any OS ABI), an executable or shared-object type and the
//! machine. They are derived here from those three facts ([`Emulator::magic`]).
//!
//! The host's own platform is never registered (every native binary would go to QEMU), and
//! neither is anything on the host: [`probe`] tries registration in a forked child's fresh
//! user and mount namespaces, which end with it.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::oci::Platform;

/// `statfs` type of a binfmt_misc mount.
const BINFMTFS_MAGIC: u64 = 0x4249_4e4d;

/// The kernel that can mount binfmt_misc in a user namespace.
pub const USERNS_BINFMT_SINCE: (u32, u32) = (6, 7);

/// The QEMU that reads the `P` flag from `AT_FLAGS` (QEMU commit 6e1c0d7b, "linux-user:
/// Support the preserve-argv0 flag of binfmt").
const PRESERVE_ARGV0_SINCE: (u32, u32) = (6, 0);

/// The environment variable naming a directory of QEMU binaries (searched instead of PATH).
pub const QEMU_DIR_ENV: &str = "STRATA_QEMU_DIR";
/// `STRATA_EMULATION=host`: register nothing of strata's own, use the handlers of the
/// binfmt_misc instance strata starts under (the host's, or an enclosing namespace's), as on
/// a kernel before 6.7. For an administrator who registered another QEMU on purpose.
pub const EMULATION_ENV: &str = "STRATA_EMULATION";

/// ELF byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

/// A platform QEMU can emulate here: the platforms it covers, the emulator, and what tells its
/// binaries apart (the ELF class, byte order and machine of their header).
#[derive(Debug, PartialEq, Eq)]
pub struct Emulator {
    /// OCI architecture (normal form).
    pub arch: &'static str,
    /// The variant of the row's platform, if it names one.
    pub variant: Option<&'static str>,
    /// The variants it runs besides none.
    pub variants: &'static [&'static str],
    /// QEMU's name for the target: `qemu-<target>-static` or `qemu-<target>`.
    pub target: &'static str,
    /// What `uname -m` prints under it.
    pub uname: &'static str,
    /// `strata doctor`'s name for the platforms of this row.
    pub label: &'static str,
    elf64: bool,
    endian: Endian,
    /// `e_machine`.
    machine: u16,
}

/// Every platform strata can emulate (and, for its own architecture, runs natively).
pub const EMULATORS: &[Emulator] = &[
    Emulator {
        arch: "amd64",
        variant: None,
        // QEMU 7.2's x86-64 emulation has AVX2 (v3), not AVX-512 (v4).
        variants: &["v2", "v3"],
        target: "x86_64",
        uname: "x86_64",
        label: "platform linux/amd64",
        elf64: true,
        endian: Endian::Little,
        machine: 62, // EM_X86_64
    },
    Emulator {
        arch: "arm64",
        variant: None,
        variants: &[],
        target: "aarch64",
        uname: "aarch64",
        label: "platform linux/arm64",
        elf64: true,
        endian: Endian::Little,
        machine: 183, // EM_AARCH64
    },
    Emulator {
        arch: "arm",
        variant: Some("v7"),
        // qemu-arm's default CPU runs every 32-bit ARM architecture up to v8's AArch32.
        variants: &["v5", "v6", "v7"],
        target: "arm",
        uname: "armv7l",
        label: "platform linux/arm/v7 (and v6, v5)",
        elf64: false,
        endian: Endian::Little,
        machine: 40, // EM_ARM
    },
    Emulator {
        arch: "riscv64",
        variant: None,
        variants: &[],
        target: "riscv64",
        uname: "riscv64",
        label: "platform linux/riscv64",
        elf64: true,
        endian: Endian::Little,
        machine: 243, // EM_RISCV
    },
    Emulator {
        arch: "ppc64le",
        variant: None,
        variants: &[],
        target: "ppc64le",
        uname: "ppc64le",
        label: "platform linux/ppc64le",
        elf64: true,
        endian: Endian::Little,
        machine: 21, // EM_PPC64
    },
    Emulator {
        arch: "s390x",
        variant: None,
        variants: &[],
        target: "s390x",
        uname: "s390x",
        label: "platform linux/s390x",
        elf64: true,
        endian: Endian::Big,
        machine: 22, // EM_S390
    },
    Emulator {
        arch: "386",
        variant: None,
        variants: &[],
        target: "i386",
        uname: "i686",
        label: "platform linux/386",
        elf64: false,
        endian: Endian::Little,
        machine: 3, // EM_386
    },
];

impl Emulator {
    /// The platform of this row.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.arch.into(),
            os: "linux".into(),
            os_version: None,
            variant: self.variant.map(str::to_string),
        }
    }

    /// Whether this row runs `p` (normalised first).
    pub fn runs(&self, p: &Platform) -> bool {
        let p = p.normalized();
        p.os == "linux"
            && p.architecture == self.arch
            && match &p.variant {
                None => true,
                Some(v) => self.variants.contains(&v.as_str()),
            }
    }

    /// The first 20 bytes of the binaries it runs (an ELF header's identification, type and
    /// machine) and the mask of the bits that decide: class, byte order and version exactly,
    /// any OS ABI (SYSV or GNU/Linux), an executable or a shared object (`ET_EXEC`/`ET_DYN`
    /// differ in the lowest bit), and the machine.
    pub fn magic(&self) -> ([u8; 20], [u8; 20]) {
        let mut magic = [0u8; 20];
        let mut mask = [0xffu8; 20];
        magic[..4].copy_from_slice(b"\x7fELF");
        magic[4] = if self.elf64 { 2 } else { 1 };
        magic[5] = match self.endian {
            Endian::Little => 1,
            Endian::Big => 2,
        };
        magic[6] = 1; // EV_CURRENT
        mask[7] = 0; // EI_OSABI
        let (ty, machine) = match self.endian {
            Endian::Little => (2u16.to_le_bytes(), self.machine.to_le_bytes()),
            Endian::Big => (2u16.to_be_bytes(), self.machine.to_be_bytes()),
        };
        magic[16..18].copy_from_slice(&ty);
        magic[18..20].copy_from_slice(&machine);
        // ET_EXEC (2) or ET_DYN (3): the lowest bit of e_type is free.
        match self.endian {
            Endian::Little => mask[16] = 0xfe,
            Endian::Big => mask[17] = 0xfe,
        }
        (magic, mask)
    }

    /// Does an ELF file starting with `header` belong to this row?
    pub fn matches_header(&self, header: &[u8]) -> bool {
        let (magic, mask) = self.magic();
        header.len() >= magic.len()
            && header
                .iter()
                .zip(magic.iter().zip(mask.iter()))
                .all(|(h, (m, k))| h & k == *m)
    }

    /// The entry's name in binfmt_misc.
    pub fn entry_name(&self) -> String {
        format!("qemu-{}", self.target)
    }

    /// The line written to binfmt_misc's `register` file for `interpreter` with `flags`:
    /// `:NAME:M:0:MAGIC:MASK:INTERPRETER:FLAGS`, magic and mask as `\xNN` text, which the
    /// kernel decodes (raw bytes would end the line at the first NUL or colon).
    pub fn register_line(&self, interpreter: &Path, flags: &str) -> Result<Vec<u8>, Error> {
        let (magic, mask) = self.magic();
        register_line(&self.entry_name(), 0, &magic, &mask, interpreter, flags)
    }
}

fn register_line(
    name: &str,
    offset: u32,
    magic: &[u8],
    mask: &[u8],
    interpreter: &Path,
    flags: &str,
) -> Result<Vec<u8>, Error> {
    let bytes = interpreter.as_os_str().as_bytes();
    if bytes.contains(&b':') || bytes.contains(&b'\n') || bytes.contains(&0) || bytes.len() > 255 {
        return Err(Error::BadInterpreter {
            path: interpreter.to_path_buf(),
        });
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("\\x{x:02x}")).collect::<String>();
    let mut line = format!(":{name}:M:{offset}:{}:{}:", hex(magic), hex(mask)).into_bytes();
    line.extend_from_slice(bytes);
    line.push(b':');
    line.extend_from_slice(flags.as_bytes());
    Ok(line)
}

/// The row that runs `p`, if strata can emulate it.
pub fn emulator_for(p: &Platform) -> Option<&'static Emulator> {
    EMULATORS.iter().find(|e| e.runs(p))
}

/// What went wrong, with the platform it was for; [`Error::fix`] says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{platform}: strata cannot emulate this platform (it can emulate {known})")]
    Unsupported { platform: String, known: String },
    #[error("{platform}: no {binary} (looked in {looked})")]
    NoQemu {
        platform: String,
        binary: String,
        looked: String,
    },
    #[error("{platform}: Linux {kernel} cannot mount binfmt_misc in a user namespace (6.7 can), and the host has no handler registered for it")]
    KernelTooOld { platform: String, kernel: String },
    #[error("{platform}: {EMULATION_ENV}=host uses only the host's binfmt_misc handlers, and the host has none registered for it")]
    HostOnly { platform: String },
    #[error("mounting binfmt_misc at {} (Linux {kernel}): {source}", path.display())]
    Mount {
        path: PathBuf,
        kernel: String,
        #[source]
        source: io::Error,
    },
    #[error("{platform}: registering {} with binfmt_misc: {source}", interpreter.display())]
    Register {
        platform: String,
        interpreter: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: binfmt_misc cannot take an interpreter path with ':', a newline or over 255 bytes", path.display())]
    BadInterpreter { path: PathBuf },
    #[error("refusing to register with binfmt_misc outside a user namespace: it would change the host's handlers")]
    HostNamespace,
    #[error("a user namespace to register emulators in ({step}): {source}")]
    Namespace {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

fn duplicate_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(n) => io::Error::from_raw_os_error(n),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

impl Error {
    /// The same error again (one failure of the namespace is every platform's).
    fn duplicate(&self) -> Error {
        match self {
            Error::Unsupported { platform, known } => Error::Unsupported {
                platform: platform.clone(),
                known: known.clone(),
            },
            Error::NoQemu {
                platform,
                binary,
                looked,
            } => Error::NoQemu {
                platform: platform.clone(),
                binary: binary.clone(),
                looked: looked.clone(),
            },
            Error::KernelTooOld { platform, kernel } => Error::KernelTooOld {
                platform: platform.clone(),
                kernel: kernel.clone(),
            },
            Error::HostOnly { platform } => Error::HostOnly {
                platform: platform.clone(),
            },
            Error::Mount {
                path,
                kernel,
                source,
            } => Error::Mount {
                path: path.clone(),
                kernel: kernel.clone(),
                source: duplicate_io(source),
            },
            Error::Register {
                platform,
                interpreter,
                source,
            } => Error::Register {
                platform: platform.clone(),
                interpreter: interpreter.clone(),
                source: duplicate_io(source),
            },
            Error::BadInterpreter { path } => Error::BadInterpreter { path: path.clone() },
            Error::Namespace { step, source } => Error::Namespace {
                step,
                source: duplicate_io(source),
            },
            Error::HostNamespace => Error::HostNamespace,
        }
    }

    /// What fixes it, where something does.
    pub fn fix(&self) -> Option<String> {
        match self {
            Error::NoQemu { .. } => Some(format!(
                "install QEMU's static user-mode emulators (Debian and Ubuntu: sudo apt-get install --no-install-recommends qemu-user-static; binfmt-support is not needed, strata registers them in its own user namespace), or set {QEMU_DIR_ENV} to a directory holding them"
            )),
            Error::KernelTooOld { .. } => Some(
                "Linux 6.7 or newer lets strata register QEMU itself; on this kernel an administrator can register it on the host, with the F flag: sudo apt-get install qemu-user-static binfmt-support (Debian's handlers have F), or docker run --privileged --rm tonistiigi/binfmt --install all".into(),
            ),
            Error::HostOnly { .. } => Some(format!(
                "unset {EMULATION_ENV} to let strata register QEMU in its own user namespace, or have an administrator register it on the host with the F flag (sudo apt-get install qemu-user-static binfmt-support)"
            )),
            Error::Mount { source, .. } if source.raw_os_error() == Some(libc::EPERM) => Some(
                "binfmt_misc was refused in strata's user namespace: a seccomp profile or security module that denies mount() (a container's default profile) does this; allow it, or have the host register QEMU with the F flag".into(),
            ),
            Error::Namespace { .. } => {
                Some("user namespaces are needed for emulation as for RUN steps: see the user-namespace checks of strata doctor".into())
            }
            _ => None,
        }
    }
}

/// Where QEMU binaries are looked for: a configured directory only ([`QEMU_DIR_ENV`]), or
/// else PATH.
#[derive(Debug, Clone, Default)]
pub struct QemuSearch {
    pub dir: Option<PathBuf>,
    pub path: Option<OsString>,
}

/// A QEMU user-mode emulator found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qemu {
    pub path: PathBuf,
    /// `(major, minor)` from `--version`, when it says.
    pub version: Option<(u32, u32)>,
}

impl Qemu {
    /// The flags strata registers it with.
    pub fn flags(&self) -> &'static str {
        match self.version {
            Some(v) if v >= PRESERVE_ARGV0_SINCE => "POCF",
            _ => "OCF",
        }
    }
}

impl QemuSearch {
    /// From STRATA_QEMU_DIR and PATH.
    pub fn from_env() -> QemuSearch {
        QemuSearch {
            dir: std::env::var_os(QEMU_DIR_ENV)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            path: std::env::var_os("PATH"),
        }
    }

    fn dirs(&self) -> Vec<PathBuf> {
        match (&self.dir, &self.path) {
            (Some(d), _) => vec![d.clone()],
            (None, Some(p)) => std::env::split_paths(p).collect(),
            (None, None) => Vec::new(),
        }
    }

    /// The binary for `e`: `qemu-<target>-static`, else `qemu-<target>`, in the first directory
    /// that has one. Its version is asked (`--version`) to choose the flags.
    pub fn find(&self, e: &Emulator, platform: &Platform) -> Result<Qemu, Error> {
        let names = [
            format!("qemu-{}-static", e.target),
            format!("qemu-{}", e.target),
        ];
        let dirs = self.dirs();
        for d in &dirs {
            for n in &names {
                let p = d.join(n);
                if is_executable(&p) {
                    return Ok(Qemu {
                        version: qemu_version(&p),
                        path: p,
                    });
                }
            }
        }
        let looked = match &self.dir {
            Some(d) => format!("{QEMU_DIR_ENV}={}", d.display()),
            None if dirs.is_empty() => "PATH, which is empty".to_string(),
            None => "PATH".to_string(),
        };
        Err(Error::NoQemu {
            platform: platform.to_string(),
            binary: names[0].clone(),
            looked,
        })
    }
}

fn is_executable(p: &Path) -> bool {
    fs_err::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `(major, minor)` of a QEMU binary, from the first line of `--version`
/// (`qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`).
pub fn qemu_version(path: &Path) -> Option<(u32, u32)> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    parse_qemu_version(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_qemu_version(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().next()?;
    let v = line
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// `(major, minor)` of a kernel release string (`6.18.44-fc-v1147`, `5.15.0-91-generic`).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// `uname -r` and `uname -m`.
fn uname() -> (String, String) {
    // SAFETY: utsname is plain data; uname fills it with NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (String::new(), String::new());
    }
    let s = |f: &[libc::c_char]| {
        // SAFETY: uname terminates each field with NUL within its length.
        unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    (s(&u.release), s(&u.machine))
}

/// This kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    uname().0
}

/// The platform of this machine: its kernel's architecture (`uname -m`), in normal form.
pub fn host_platform() -> Platform {
    Platform::of_linux_machine(&uname().1)
}

/// A handler in a binfmt_misc instance (the host's `/proc/sys/fs/binfmt_misc/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: PathBuf,
    pub flags: String,
    pub offset: u32,
    pub magic: Vec<u8>,
    pub mask: Vec<u8>,
}

impl Handler {
    /// A handler from its file's text; `None` for an extension handler (`extension .exe`) or
    /// text that is not a handler.
    pub fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut h = Handler {
            name: name.to_string(),
            enabled: false,
            interpreter: PathBuf::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in text.lines() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "enabled" => h.enabled = true,
                "disabled" => h.enabled = false,
                "interpreter" => h.interpreter = PathBuf::from(v),
                "flags:" => h.flags = v.trim().to_string(),
                "offset" => h.offset = v.trim().parse().ok()?,
                "magic" => h.magic = hex::decode(v.trim()).ok()?,
                "mask" => h.mask = hex::decode(v.trim()).ok()?,
                _ => {}
            }
        }
        (!h.magic.is_empty()).then_some(h)
    }

    /// Does it take the binaries of `e`? (Tried on the header `e` describes: it must match
    /// this handler's magic under its mask at its offset.)
    pub fn runs(&self, e: &Emulator) -> bool {
        let (sample, _) = e.magic();
        let at = self.offset as usize;
        let Some(window) = sample.get(at..at + self.magic.len()) else {
            return false;
        };
        window.iter().enumerate().all(|(i, b)| {
            let m = self.mask.get(i).copied().unwrap_or(0xff);
            b & m == self.magic[i] & m
        })
    }

    /// Whether the kernel opened its interpreter at registration (`F`), so that it runs in a
    /// root without it.
    pub fn fixed(&self) -> bool {
        self.flags.contains('F')
    }

    /// Its registration line, with `F` added (for a copy in strata's own instance, where the
    /// interpreter is opened at once, from the host's filesystem).
    pub fn register_line(&self) -> Result<Vec<u8>, Error> {
        let mut flags: String = self.flags.chars().filter(|c| "POCF".contains(*c)).collect();
        if !flags.contains('F') {
            flags.push('F');
        }
        register_line(
            &self.name,
            self.offset,
            &self.magic,
            &self.mask,
            &self.interpreter,
            &flags,
        )
    }
}

/// The handlers of the binfmt_misc instance mounted at `dir` (read only; none when nothing is
/// mounted there or it is unreadable).
pub fn handlers_in(dir: &Path) -> Vec<Handler> {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<Handler> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "register" || name == "status" {
                return None;
            }
            let text = fs_err::read_to_string(e.path()).ok()?;
            Handler::parse(&name, &text)
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// The host's handlers (`/proc/sys/fs/binfmt_misc`), when its instance is enabled.
pub fn host_handlers() -> Vec<Handler> {
    let dir = Path::new("/proc/sys/fs/binfmt_misc");
    let enabled = fs_err::read_to_string(dir.join("status")).is_ok_and(|s| s.trim() == "enabled");
    if enabled {
        handlers_in(dir)
    } else {
        Vec::new()
    }
}

/// How this machine runs a platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// It is this machine's own.
    Native,
    /// QEMU, registered by strata in its own user namespace.
    Namespace {
        emulator: &'static Emulator,
        qemu: Qemu,
    },
    /// A handler the host registered: copied into strata's own instance where strata mounts
    /// one, used as it is where it cannot (then without `F` the image needs the interpreter).
    Host {
        emulator: &'static Emulator,
        handler: Handler,
    },
}

impl How {
    /// The entry name and registration line strata writes for it, if any.
    fn line(&self) -> Option<Result<(String, Vec<u8>), Error>> {
        match self {
            How::Native => None,
            How::Namespace { emulator, qemu } => Some(
                emulator
                    .register_line(&qemu.path, qemu.flags())
                    .map(|l| (emulator.entry_name(), l)),
            ),
            How::Host { handler, .. } => {
                Some(handler.register_line().map(|l| (handler.name.clone(), l)))
            }
        }
    }

    /// What strata's session registers for it, if anything.
    pub fn registration(&self) -> Option<Result<Registration, Error>> {
        let platform = match self {
            How::Native => return None,
            How::Namespace { emulator, .. } | How::Host { emulator, .. } => {
                emulator.platform().to_string()
            }
        };
        let interpreter = self.interpreter();
        self.line().map(|r| {
            r.map(|(name, line)| Registration {
                platform,
                name,
                interpreter,
                line,
            })
        })
    }

    /// The interpreter it runs binaries with (empty for [`How::Native`]).
    pub fn interpreter(&self) -> PathBuf {
        match self {
            How::Native => PathBuf::new(),
            How::Namespace { qemu, .. } => qemu.path.clone(),
            How::Host { handler, .. } => handler.interpreter.clone(),
        }
    }
}

/// What strata knows of this machine to decide how each platform runs.
#[derive(Debug, Clone)]
pub struct Machine {
    pub platform: Platform,
    pub kernel: String,
    pub host_handlers: Vec<Handler>,
    pub qemu: QemuSearch,
    /// [`EMULATION_ENV`]`=host`: strata mounts no instance of its own.
    pub host_only: bool,
}

impl Machine {
    pub fn detect() -> Machine {
        Machine {
            platform: host_platform(),
            kernel: kernel_release(),
            host_handlers: host_handlers(),
            qemu: QemuSearch::from_env(),
            host_only: std::env::var(EMULATION_ENV).is_ok_and(|v| v == "host"),
        }
    }

    /// Does strata mount a binfmt_misc instance of its own (Linux 6.7+, unless
    /// [`EMULATION_ENV`]`=host`)? Where not, the host's handlers are used as they are.
    pub fn userns_binfmt(&self) -> bool {
        !self.host_only
            && parse_kernel_version(&self.kernel).is_some_and(|v| v >= USERNS_BINFMT_SINCE)
    }

    /// Does this machine run `p` itself? Only its own architecture: 32-bit x86 and ARM
    /// binaries on 64-bit kernels are emulated too, because the sandbox's seccomp filter
    /// admits only the native system-call ABI.
    pub fn native(&self, p: &Platform) -> bool {
        let p = p.normalized();
        let me = self.platform.normalized();
        p.os == me.os
            && p.architecture == me.architecture
            && match (me.architecture.as_str(), &p.variant, &me.variant) {
                // An ARMv7 machine runs v5, v6 and v7 binaries.
                ("arm", Some(want), Some(have)) => want <= have,
                _ => true,
            }
    }

    /// The host's enabled handler for `p`'s binaries, as a [`How`] (used as it is where strata
    /// cannot mount an instance of its own).
    pub fn host_handler(&self, p: &Platform) -> Option<How> {
        let emulator = emulator_for(p)?;
        self.host_handlers
            .iter()
            .find(|h| h.enabled && h.runs(emulator))
            .map(|h| How::Host {
                emulator,
                handler: h.clone(),
            })
    }

    /// How `p` runs here, or why it cannot (without trying: see [`probe`]).
    pub fn how(&self, p: &Platform) -> Result<How, Error> {
        if self.native(p) {
            return Ok(How::Native);
        }
        let Some(emulator) = emulator_for(p) else {
            return Err(Error::Unsupported {
                platform: p.to_string(),
                known: EMULATORS
                    .iter()
                    .map(|e| e.platform().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let host = self
            .host_handlers
            .iter()
            .find(|h| h.enabled && h.runs(emulator));
        if self.userns_binfmt() {
            match self.qemu.find(emulator, p) {
                Ok(qemu) => Ok(How::Namespace { emulator, qemu }),
                Err(e) => match host {
                    Some(h) => Ok(How::Host {
                        emulator,
                        handler: h.clone(),
                    }),
                    None => Err(e),
                },
            }
        } else {
            match host {
                Some(h) => Ok(How::Host {
                    emulator,
                    handler: h.clone(),
                }),
                None if self.host_only => Err(Error::HostOnly {
                    platform: p.to_string(),
                }),
                None => Err(Error::KernelTooOld {
                    platform: p.to_string(),
                    kernel: self.kernel.clone(),
                }),
            }
        }
    }
}

/// The binfmt_misc instance strata mounted, and what it registered there.
#[derive(Debug)]
pub struct Registered {
    pub mount_point: PathBuf,
    /// The entries written now (those already there were left as they were).
    pub added: Vec<String>,
    /// A descriptor on the instance: it (and its handlers) stays while this is open, even if
    /// the mount is detached.
    _pin: OwnedFd,
}

/// In a user namespace that owns the current mount namespace (strata's session; refused in
/// the initial user namespace, where the instance is the host's), mount this
/// namespace's binfmt_misc instance at `mount_point` (an existing, private directory; nothing
/// is done if an instance is mounted there already) and register what `hows` need. Idempotent:
/// an entry of the same name is left as it is. The handlers last as long as the instance stays
/// mounted (see the module's documentation).
pub fn register(mount_point: &Path, hows: &[How]) -> Result<Registered, Error> {
    if in_initial_user_namespace() {
        return Err(Error::HostNamespace);
    }
    let mounted = rustix::fs::statfs(mount_point).is_ok_and(|s| s.f_type as u64 == BINFMTFS_MAGIC);
    if !mounted {
        rustix::mount::mount(
            "binfmt_misc",
            mount_point,
            "binfmt_misc",
            rustix::mount::MountFlags::NOSUID
                | rustix::mount::MountFlags::NODEV
                | rustix::mount::MountFlags::NOEXEC,
            None::<&std::ffi::CStr>,
        )
        .map_err(|e| Error::Mount {
            path: mount_point.to_path_buf(),
            kernel: kernel_release(),
            source: e.into(),
        })?;
    }
    let pin = rustix::fs::open(
        mount_point,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::Mount {
        path: mount_point.to_path_buf(),
        kernel: kernel_release(),
        source: e.into(),
    })?;
    let regs = hows
        .iter()
        .filter_map(How::registration)
        .collect::<Result<Vec<_>, _>>()?;
    let added = register_at(mount_point, &regs)?;
    Ok(Registered {
        mount_point: mount_point.to_path_buf(),
        added,
        _pin: pin,
    })
}

/// The inode number of the initial user namespace (`PROC_USER_INIT_INO`), fixed by the
/// kernel.
const INITIAL_USER_NS_INO: u64 = 0xEFFF_FFFD;

/// Is this process in the machine's initial user namespace? There a binfmt_misc mount is the
/// host's instance. Decided by the namespace's inode, which the kernel fixes for the initial
/// one: a map is no proof, since a root-run session's namespace maps every id onto itself
/// like the initial one. Where `/proc/self/ns/user` cannot be read, by the map.
pub fn in_initial_user_namespace() -> bool {
    match rustix::fs::stat("/proc/self/ns/user") {
        Ok(st) => st.st_ino == INITIAL_USER_NS_INO,
        Err(_) => fs_err::read_to_string("/proc/self/uid_map").map_or(true, |m| {
            m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
        }),
    }
}

/// A fresh binfmt_misc instance of this user namespace, mounted nowhere (fsopen, fsmount):
/// the descriptor is its root, and the instance with its handlers lives as long as the
/// descriptor is open. Needs a mount namespace owned by this user namespace, and Linux 6.7.
/// Refused in the initial user namespace (the instance there is the host's).
pub fn mount_detached() -> Result<OwnedFd, Error> {
    if in_initial_user_namespace() {
        return Err(Error::HostNamespace);
    }
    let mount_err = |e: rustix::io::Errno| Error::Mount {
        path: PathBuf::from("(a detached mount)"),
        kernel: kernel_release(),
        source: e.into(),
    };
    let fs = rustix::mount::fsopen("binfmt_misc", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(mount_err)?;
    rustix::mount::fsconfig_create(&fs).map_err(mount_err)?;
    rustix::mount::fsmount(
        &fs,
        rustix::mount::FsMountFlags::FSMOUNT_CLOEXEC,
        rustix::mount::MountAttrFlags::MOUNT_ATTR_NOSUID
            | rustix::mount::MountAttrFlags::MOUNT_ATTR_NODEV
            | rustix::mount::MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .map_err(mount_err)
}

/// One handler to register, as strata's session receives it: the platform it is for, the
/// entry's name, the interpreter and the registration line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    pub platform: String,
    pub name: String,
    pub interpreter: PathBuf,
    pub line: Vec<u8>,
}

/// Register `regs` in the binfmt_misc instance whose root is `dir` (a mount point, or
/// `/proc/self/fd/N` of [`mount_detached`]'s descriptor). An entry of the same name is left as
/// it is. Returns the names written now.
pub fn register_at(dir: &Path, regs: &[Registration]) -> Result<Vec<String>, Error> {
    if in_initial_user_namespace() {
        return Err(Error::HostNamespace);
    }
    let mut added = Vec::new();
    for r in regs {
        if dir.join(&r.name).exists() || added.contains(&r.name) {
            continue;
        }
        write_register(&dir.join("register"), &r.line).map_err(|source| Error::Register {
            platform: r.platform.clone(),
            interpreter: r.interpreter.clone(),
            source,
        })?;
        added.push(r.name.clone());
    }
    Ok(added)
}

/// One write(2) of the whole line: binfmt_misc parses each write as one registration.
fn write_register(register: &Path, line: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = fs_err::OpenOptions::new().write(true).open(register)?;
    let n = f.write(line)?;
    if n != line.len() {
        return Err(io::Error::other(format!(
            "{}: short write ({n} of {} bytes)",
            register.display(),
            line.len()
        )));
    }
    Ok(())
}

/// Try registering `lines` (entry name, registration line) in a forked child's fresh user
/// and mount namespaces (its uid and gid mapped to root), which end with it: nothing is
/// registered anywhere else. Returns each line's outcome, in order.
///
/// The child runs only system calls on memory prepared before the fork, so this is safe to
/// call from a process with threads.
pub fn probe(lines: &[(String, Vec<u8>)]) -> Result<Vec<io::Result<()>>, Error> {
    let ns = |step: &'static str| move |source: io::Error| Error::Namespace { step, source };
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("strata-binfmt-{}-{n}", std::process::id()));
    fs_err::create_dir(&dir).map_err(ns("a mount point"))?;
    let r = probe_at(&dir, lines);
    let _ = fs_err::remove_dir(&dir);
    r
}

fn probe_at(dir: &Path, lines: &[(String, Vec<u8>)]) -> Result<Vec<io::Result<()>>, Error> {
    let ns = |step: &'static str| move |source: io::Error| Error::Namespace { step, source };
    let c = |p: &OsStr| CString::new(p.as_bytes()).map_err(|e| io::Error::other(e.to_string()));
    let dir_c = c(dir.as_os_str()).map_err(ns("a mount point"))?;
    let register_c = c(dir.join("register").as_os_str()).map_err(ns("a mount point"))?;
    let root_c = CString::new("/").expect("no NUL");
    let fstype = CString::new("binfmt_misc").expect("no NUL");
    let setgroups = CString::new("/proc/self/setgroups").expect("no NUL");
    let uid_map_path = CString::new("/proc/self/uid_map").expect("no NUL");
    let gid_map_path = CString::new("/proc/self/gid_map").expect("no NUL");
    let uid_map = format!("0 {} 1\n", rustix::process::geteuid().as_raw());
    let gid_map = format!("0 {} 1\n", rustix::process::getegid().as_raw());
    // [unshare, maps, mount, line 0, line 1, ...]: 0 or an errno.
    let mut results = vec![0i32; 3 + lines.len()];
    let (rd, wr) = super::pipe().map_err(ns("a pipe"))?;

    // SAFETY: the child makes only async-signal-safe system calls on memory allocated above
    // (no allocation, no locks) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ns("fork")(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: as above; every pointer is into a live allocation made before the fork.
        unsafe {
            let errno = || *libc::__errno_location();
            let write_file = |path: &CString, data: &[u8]| -> i32 {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return errno();
                }
                let n = libc::write(fd, data.as_ptr().cast(), data.len());
                let e = if n < 0 {
                    errno()
                } else if n as usize != data.len() {
                    libc::EIO
                } else {
                    0
                };
                libc::close(fd);
                e
            };
            'run: {
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                    results[0] = errno();
                    break 'run;
                }
                let e = write_file(&setgroups, b"deny");
                if e != 0 && e != libc::ENOENT {
                    results[1] = e;
                    break 'run;
                }
                for (p, m) in [(&uid_map_path, &uid_map), (&gid_map_path, &gid_map)] {
                    let e = write_file(p, m.as_bytes());
                    if e != 0 {
                        results[1] = e;
                        break 'run;
                    }
                }
                // Nothing of this namespace propagates anywhere.
                if libc::mount(
                    std::ptr::null(),
                    root_c.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    results[2] = errno();
                    break 'run;
                }
                if libc::mount(
                    fstype.as_ptr(),
                    dir_c.as_ptr(),
                    fstype.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ) != 0
                {
                    results[2] = errno();
                    break 'run;
                }
                for (i, (_, line)) in lines.iter().enumerate() {
                    results[3 + i] = write_file(&register_c, line);
                }
            }
            let bytes = std::slice::from_raw_parts(
                results.as_ptr().cast::<u8>(),
                results.len() * std::mem::size_of::<i32>(),
            );
            libc::write(wr.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
    }
    drop(wr);
    let mut buf = Vec::new();
    // SAFETY: rd is our pipe's read end; the File takes it over.
    let mut f = unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(rd)) };
    let read = f.read_to_end(&mut buf);
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    read.map_err(ns("reading the child's report"))?;
    if buf.len() != results.len() * 4 {
        return Err(ns("the child's report")(io::Error::other(format!(
            "the child ended without a report (wait status {status})"
        ))));
    }
    let got: Vec<i32> = buf
        .chunks_exact(4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let err = |e: i32| io::Error::from_raw_os_error(e);
    if got[0] != 0 {
        return Err(Error::Namespace {
            step: "unshare",
            source: err(got[0]),
        });
    }
    if got[1] != 0 {
        return Err(Error::Namespace {
            step: "uid and gid maps",
            source: err(got[1]),
        });
    }
    if got[2] != 0 {
        return Err(Error::Mount {
            path: dir.to_path_buf(),
            kernel: kernel_release(),
            source: err(got[2]),
        });
    }
    Ok(got[3..]
        .iter()
        .map(|&e| if e == 0 { Ok(()) } else { Err(err(e)) })
        .collect())
}

/// How a platform runs on this machine, tried.
#[derive(Debug)]
pub struct Support {
    pub platform: Platform,
    pub label: &'static str,
    pub how: Result<How, Error>,
    /// Why strata cannot register in its own user namespace here, when it cannot (then a
    /// [`How::Host`] is the host's handler used as it is, not a copy in strata's instance).
    pub no_instance: Option<String>,
}

/// Every platform of [`EMULATORS`] and how this machine runs it: natively, emulated in
/// strata's user namespace (registration tried in a throw-away namespace, see [`probe`]),
/// through a handler the host registered, or not (with the error, whose [`Error::fix`] says
/// what to do).
pub fn available_platforms() -> Vec<Support> {
    available_on(&Machine::detect())
}

pub fn available_on(m: &Machine) -> Vec<Support> {
    let mut out: Vec<Support> = EMULATORS
        .iter()
        .map(|e| {
            let platform = e.platform();
            Support {
                how: m.how(&platform),
                label: e.label,
                platform,
                no_instance: None,
            }
        })
        .collect();
    if !m.userns_binfmt() {
        let why = if m.host_only {
            format!("{EMULATION_ENV}=host: strata registers nothing of its own")
        } else {
            format!(
                "Linux {} cannot mount binfmt_misc in a user namespace (6.7 can)",
                m.kernel
            )
        };
        for s in &mut out {
            s.no_instance = Some(why.clone());
        }
        return out;
    }
    // Try what strata would register, all at once, as a session would.
    let mut lines = Vec::new();
    let mut owner = Vec::new();
    for (i, s) in out.iter_mut().enumerate() {
        if let Ok(how) = &s.how {
            match how.line() {
                Some(Ok(l)) => {
                    lines.push(l);
                    owner.push(i);
                }
                Some(Err(e)) => s.how = Err(e),
                None => {}
            }
        }
    }
    if lines.is_empty() {
        return out;
    }
    match probe(&lines) {
        Ok(results) => {
            for (r, i) in results.into_iter().zip(owner) {
                if let Err(source) = r {
                    let s = &mut out[i];
                    let interpreter = s.how.as_ref().map(How::interpreter).unwrap_or_default();
                    s.how = Err(Error::Register {
                        platform: s.platform.to_string(),
                        interpreter,
                        source,
                    });
                }
            }
        }
        Err(e) => {
            // strata cannot register: what the host registered still works, as it is.
            for i in owner {
                let s = &mut out[i];
                let emulator = emulator_for(&s.platform);
                let host = m
                    .host_handlers
                    .iter()
                    .find(|h| h.enabled && emulator.is_some_and(|e| h.runs(e)));
                s.no_instance = Some(e.to_string());
                s.how = match (host, emulator) {
                    (Some(h), Some(emulator)) => Ok(How::Host {
                        emulator,
                        handler: h.clone(),
                    }),
                    _ => Err(e.duplicate()),
                };
            }
        }
    }
    out
}

/// `strata doctor`'s lines: one per row of [`EMULATORS`], saying how the platform runs now:
/// natively, QEMU registered in strata's user namespace, the host's handler (copied into
/// strata's namespace, or used as it is and why), or not at all and why, with the fix.
pub fn doctor_checks() -> Vec<super::probe::Check> {
    doctor_lines(available_platforms())
}

fn doctor_lines(supports: Vec<Support>) -> Vec<super::probe::Check> {
    supports
        .into_iter()
        .map(|s| {
            let as_is = match &s.no_instance {
                Some(why) => format!(", used as it is ({why})"),
                None => ", copied into strata's user namespace".to_string(),
            };
            let (ok, detail, fix) = match &s.how {
                Ok(How::Native) => (true, "native".to_string(), None),
                Ok(How::Namespace { qemu, .. }) => (
                    true,
                    format!(
                        "emulated in strata's user namespace ({}{}, flags {})",
                        qemu.path.display(),
                        qemu.version
                            .map(|(a, b)| format!(" {a}.{b}"))
                            .unwrap_or_default(),
                        qemu.flags()
                    ),
                    None,
                ),
                // A copy in strata's own instance is registered with F.
                Ok(How::Host { handler, .. }) if handler.fixed() || s.no_instance.is_none() => (
                    true,
                    format!(
                        "through the host's binfmt_misc handler {} ({}){as_is}",
                        handler.name,
                        handler.interpreter.display()
                    ),
                    None,
                ),
                Ok(How::Host { handler, .. }) => (
                    false,
                    format!(
                        "through the host's binfmt_misc handler {}, registered without the F flag: images must contain {}{as_is}",
                        handler.name,
                        handler.interpreter.display()
                    ),
                    Some("re-register it with the F flag (Debian: apt-get install qemu-user-static binfmt-support), or use Linux 6.7+, where strata registers QEMU itself".to_string()),
                ),
                Err(e) => (false, format!("unavailable: {e}"), e.fix()),
            };
            super::probe::Check {
                name: s.label,
                ok,
                optional: true,
                detail,
                fix,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse_specifier(s, &Platform::of_linux_machine("x86_64")).unwrap()
    }

    fn text(b: &[u8]) -> String {
        b.iter().map(|x| format!("\\x{x:02x}")).collect()
    }

    #[test]
    fn magic_and_mask_match_qemus_for_arm64_arm_riscv64_and_s390x() {
        // As QEMU's scripts/qemu-binfmt-conf.sh has them (and Debian's /usr/lib/binfmt.d).
        let aarch64 = emulator_for(&p("linux/arm64")).unwrap().magic();
        assert_eq!(
            text(&aarch64.0),
            r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
        );
        assert_eq!(
            text(&aarch64.1),
            r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
        );
        let arm = emulator_for(&p("linux/arm/v7")).unwrap().magic();
        assert_eq!(
            text(&arm.0),
            r"\x7f\x45\x4c\x46\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00"
        );
        assert_eq!(text(&arm.1), text(&aarch64.1));
        let riscv = emulator_for(&p("linux/riscv64")).unwrap().magic();
        assert_eq!(&text(&riscv.0)[64..], r"\x02\x00\xf3\x00");
        let s390x = emulator_for(&p("linux/s390x")).unwrap().magic();
        assert_eq!(
            text(&s390x.0),
            r"\x7f\x45\x4c\x46\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16"
        );
        assert_eq!(
            text(&s390x.1),
            r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff"
        );
    }

    /// An ELF header as a linker writes it.
    fn header(class64: bool, big: bool, ty: u16, machine: u16, osabi: u8) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F'];
        h.push(if class64 { 2 } else { 1 });
        h.push(if big { 2 } else { 1 });
        h.push(1);
        h.push(osabi);
        h.extend([0u8; 8]);
        let enc = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        h.extend(enc(ty));
        h.extend(enc(machine));
        h.extend([0u8; 44]);
        h
    }

    #[test]
    fn each_row_takes_its_executables_and_shared_objects_and_nothing_else() {
        // (class64, big endian, machine) of real binaries of each row.
        let real = [
            ("amd64", true, false, 62),
            ("arm64", true, false, 183),
            ("arm", false, false, 40),
            ("riscv64", true, false, 243),
            ("ppc64le", true, false, 21),
            ("s390x", true, true, 22),
            ("386", false, false, 3),
        ];
        assert_eq!(real.len(), EMULATORS.len());
        for e in EMULATORS {
            for (arch, c64, big, machine) in real {
                for (ty, osabi) in [(2, 0), (3, 0), (3, 3), (1, 0), (4, 0)] {
                    let h = header(c64, big, ty, machine, osabi);
                    let want = arch == e.arch && (ty == 2 || ty == 3);
                    assert_eq!(
                        e.matches_header(&h),
                        want,
                        "{} on {arch} type {ty} osabi {osabi}",
                        e.arch
                    );
                }
            }
            // The other byte order or class of the same machine is not it.
            let (magic, _) = e.magic();
            let mut other = magic.to_vec();
            other[5] ^= 3;
            assert!(!e.matches_header(&other), "{}", e.arch);
            other[5] ^= 3;
            other[4] ^= 3;
            assert!(!e.matches_header(&other), "{}", e.arch);
            assert!(!e.matches_header(&magic[..19]), "short header");
        }
    }

    #[test]
    fn platforms_find_their_row() {
        for (spec, target) in [
            ("linux/arm64", "aarch64"),
            ("linux/arm64/v8", "aarch64"),
            ("aarch64", "aarch64"),
            ("linux/arm/v7", "arm"),
            ("linux/arm/v6", "arm"),
            ("armhf", "arm"),
            ("linux/arm", "arm"),
            ("linux/riscv64", "riscv64"),
            ("linux/ppc64le", "ppc64le"),
            ("linux/s390x", "s390x"),
            ("linux/386", "i386"),
            ("i386", "i386"),
            ("linux/amd64", "x86_64"),
            ("linux/amd64/v2", "x86_64"),
        ] {
            assert_eq!(
                emulator_for(&p(spec)).map(|e| e.target),
                Some(target),
                "{spec}"
            );
        }
        for spec in [
            "linux/mips64le",
            "windows/amd64",
            "linux/arm/v9",
            "linux/arm64/v9",
            "linux/amd64/v4",
        ] {
            assert_eq!(emulator_for(&p(spec)).map(|e| e.target), None, "{spec}");
        }
        // Every row's own platform finds that row.
        for e in EMULATORS {
            assert_eq!(emulator_for(&e.platform()), Some(e));
        }
    }

    #[test]
    fn registration_lines_are_escaped_text_with_the_flags() {
        let e = emulator_for(&p("linux/arm64")).unwrap();
        let line = e
            .register_line(Path::new("/usr/bin/qemu-aarch64-static"), "POCF")
            .unwrap();
        let line = String::from_utf8(line).unwrap();
        assert_eq!(
            line,
            r":qemu-aarch64:M:0:\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:POCF"
        );
        assert!(!line.contains('\0'));
        for bad in ["/opt/a:b/qemu", "/opt/a\nb"] {
            assert!(matches!(
                e.register_line(Path::new(bad), "F"),
                Err(Error::BadInterpreter { .. })
            ));
        }
    }

    #[test]
    fn qemu_and_kernel_versions_parse() {
        assert_eq!(
            parse_qemu_version(
                "qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"
            ),
            Some((7, 2))
        );
        assert_eq!(parse_qemu_version("qemu-arm version 5.2.0\n"), Some((5, 2)));
        assert_eq!(parse_qemu_version("something else"), None);
        assert_eq!(parse_qemu_version(""), None);
        let q = |v| Qemu {
            path: PathBuf::from("/q"),
            version: v,
        };
        assert_eq!(q(Some((7, 2))).flags(), "POCF");
        assert_eq!(q(Some((6, 0))).flags(), "POCF");
        assert_eq!(q(Some((5, 2))).flags(), "OCF");
        assert_eq!(q(None).flags(), "OCF");
        assert_eq!(parse_kernel_version("6.18.44-fc-v1147"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_kernel_version("6.7"), Some((6, 7)));
        assert_eq!(parse_kernel_version("x"), None);
    }

    const DEBIAN_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn host_handlers_parse_and_match_by_magic() {
        let h = Handler::parse("qemu-aarch64", DEBIAN_AARCH64).unwrap();
        assert!(h.enabled && h.fixed());
        assert_eq!(h.flags, "POF");
        assert_eq!(
            h.interpreter,
            Path::new("/usr/libexec/qemu-binfmt/aarch64-binfmt-P")
        );
        let arm64 = emulator_for(&p("linux/arm64")).unwrap();
        assert!(h.runs(arm64));
        for e in EMULATORS.iter().filter(|e| e.arch != "arm64") {
            assert!(!h.runs(e), "{}", e.arch);
        }
        // A copy for strata's own instance keeps the name and the magic, with F.
        let line = String::from_utf8(h.register_line().unwrap()).unwrap();
        assert!(line.starts_with(":qemu-aarch64:M:0:\\x7f\\x45"), "{line}");
        assert!(
            line.ends_with(":/usr/libexec/qemu-binfmt/aarch64-binfmt-P:POF"),
            "{line}"
        );
        let unfixed = Handler::parse("x", &DEBIAN_AARCH64.replace("POF", "P")).unwrap();
        assert!(!unfixed.fixed());
        assert!(String::from_utf8(unfixed.register_line().unwrap())
            .unwrap()
            .ends_with(":PF"));
        // Extension handlers and junk are not handlers.
        assert!(Handler::parse(
            "x",
            "enabled\ninterpreter /bin/wine\nflags: \nextension .exe\n"
        )
        .is_none());
        assert!(Handler::parse("x", "magic zz\n").is_none());
        assert!(
            !Handler::parse("x", &DEBIAN_AARCH64.replace("enabled", "disabled"))
                .unwrap()
                .enabled
        );
    }

    /// A scratch directory removed when the test ends, failed or not.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let d =
                std::env::temp_dir().join(format!("strata-binfmt-{name}-{}", std::process::id()));
            fs_err::create_dir_all(&d).unwrap();
            Scratch(d)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs_err::remove_dir_all(&self.0);
        }
    }

    fn machine(arch: &str, kernel: &str, qemu_dir: Option<&Path>, host: Vec<Handler>) -> Machine {
        Machine {
            platform: Platform::of_linux_machine(arch),
            kernel: kernel.into(),
            host_handlers: host,
            qemu: QemuSearch {
                dir: Some(
                    qemu_dir
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| PathBuf::from("/nonexistent-strata-qemu")),
                ),
                path: None,
            },
            host_only: false,
        }
    }

    #[test]
    fn the_route_for_each_platform() {
        let scratch = Scratch::new("unit");
        let dir = scratch.0.clone();
        // A stand-in emulator: a script that prints a QEMU version.
        let q = dir.join("qemu-aarch64-static");
        fs_err::write(&q, "#!/bin/sh\necho 'qemu-aarch64 version 7.2.0'\n").unwrap();
        fs_err::set_permissions(&q, std::fs::Permissions::from_mode(0o755)).unwrap();
        let host_arm64 = Handler::parse("qemu-aarch64", DEBIAN_AARCH64).unwrap();

        let m = machine("x86_64", "6.18.44", Some(&dir), vec![]);
        assert_eq!(m.how(&p("linux/amd64")).unwrap(), How::Native);
        assert_eq!(m.how(&p("linux/amd64/v3")).unwrap(), How::Native);
        match m.how(&p("linux/arm64")).unwrap() {
            How::Namespace { emulator, qemu } => {
                assert_eq!(emulator.target, "aarch64");
                assert_eq!(qemu.path, q);
                assert_eq!(qemu.version, Some((7, 2)));
            }
            other => panic!("{other:?}"),
        }
        // 386 on amd64 is emulated (the seccomp filter admits only the 64-bit ABI).
        let e = m.how(&p("linux/386")).unwrap_err();
        assert!(matches!(e, Error::NoQemu { .. }), "{e}");
        assert!(
            e.to_string().contains("linux/386: no qemu-i386-static"),
            "{e}"
        );
        assert!(e.to_string().contains("STRATA_QEMU_DIR="), "{e}");
        assert!(e.fix().unwrap().contains("qemu-user-static"));
        let e = m.how(&p("linux/mips64le")).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("linux/arm64"), "{e}");

        // No QEMU of strata's, but the host has a handler: copied into strata's instance.
        let m = machine("x86_64", "6.18.44", None, vec![host_arm64.clone()]);
        assert!(matches!(
            m.how(&p("linux/arm64")).unwrap(),
            How::Host { .. }
        ));
        // Before 6.7: the host's handler, or the kernel is named.
        let m = machine("x86_64", "6.6.1", Some(&dir), vec![host_arm64.clone()]);
        assert!(matches!(
            m.how(&p("linux/arm64")).unwrap(),
            How::Host { .. }
        ));
        let m = machine("x86_64", "5.15.0-91-generic", Some(&dir), vec![]);
        let e = m.how(&p("linux/arm64")).unwrap_err();
        assert!(matches!(e, Error::KernelTooOld { .. }), "{e}");
        assert!(e.to_string().contains("Linux 5.15.0-91-generic"), "{e}");
        assert!(e.fix().unwrap().contains("6.7"));
        // STRATA_EMULATION=host on a new kernel: the host's handler as it is, or a named error.
        let mut m = machine("x86_64", "6.18.44", Some(&dir), vec![host_arm64.clone()]);
        m.host_only = true;
        assert!(!m.userns_binfmt());
        assert!(matches!(
            m.how(&p("linux/arm64")).unwrap(),
            How::Host { .. }
        ));
        m.host_handlers.clear();
        let e = m.how(&p("linux/arm64")).unwrap_err();
        assert!(matches!(e, Error::HostOnly { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("linux/arm64: STRATA_EMULATION=host"),
            "{e}"
        );
        assert!(e.fix().unwrap().contains("unset STRATA_EMULATION"));

        // On an arm64 machine, amd64 is the foreign one and arm64 native.
        let m = machine("aarch64", "6.8.0", Some(&dir), vec![]);
        assert_eq!(m.how(&p("linux/arm64")).unwrap(), How::Native);
        assert!(matches!(
            m.how(&p("linux/amd64")).unwrap_err(),
            Error::NoQemu { .. }
        ));
        // An ARMv7 machine runs v6 natively, not v8 or arm64.
        let m = machine("armv7l", "6.8.0", Some(&dir), vec![]);
        assert_eq!(m.how(&p("linux/arm/v6")).unwrap(), How::Native);
        assert_eq!(m.how(&p("linux/arm/v7")).unwrap(), How::Native);
        assert!(matches!(
            m.how(&p("linux/arm64")).unwrap(),
            How::Namespace { .. }
        ));
    }

    #[test]
    fn qemu_is_looked_up_in_the_configured_dir_only_else_on_path() {
        let scratch = Scratch::new("path");
        let a = scratch.0.join("a");
        let b = scratch.0.join("b");
        fs_err::create_dir_all(&a).unwrap();
        fs_err::create_dir_all(&b).unwrap();
        let arm = emulator_for(&p("linux/arm/v7")).unwrap();
        // Not executable: skipped.
        fs_err::write(a.join("qemu-arm-static"), "").unwrap();
        fs_err::write(b.join("qemu-arm"), "#!/bin/sh\n").unwrap();
        fs_err::set_permissions(b.join("qemu-arm"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        let s = QemuSearch {
            dir: None,
            path: Some(path),
        };
        let found = s.find(arm, &p("linux/arm/v7")).unwrap();
        assert_eq!(found.path, b.join("qemu-arm"));
        assert_eq!(found.version, None);
        assert_eq!(found.flags(), "OCF");
        let s = QemuSearch {
            dir: Some(a.clone()),
            path: Some(b.clone().into_os_string()),
        };
        let e = s.find(arm, &p("linux/arm/v7")).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("STRATA_QEMU_DIR={}", a.display())),
            "{e}"
        );
    }

    #[test]
    fn nothing_is_registered_from_the_hosts_user_namespace() {
        // There register must refuse before it mounts anything.
        if !in_initial_user_namespace() {
            eprintln!("SKIPPED: these tests run in a user namespace (a container's), not the machine's own");
            return;
        }
        let scratch = Scratch::new("host-ns");
        let arm64 = emulator_for(&p("linux/arm64")).unwrap();
        let how = How::Namespace {
            emulator: arm64,
            qemu: Qemu {
                path: PathBuf::from("/usr/bin/qemu-aarch64-static"),
                version: Some((7, 2)),
            },
        };
        let e = register(&scratch.0, &[how]).unwrap_err();
        assert!(matches!(e, Error::HostNamespace), "{e}");
        assert!(
            rustix::fs::statfs(&scratch.0).is_ok_and(|s| s.f_type as u64 != BINFMTFS_MAGIC),
            "nothing was mounted"
        );
    }

    #[test]
    fn the_host_platform_is_one_the_table_knows() {
        let h = host_platform();
        assert_eq!(h.os, "linux");
        assert!(emulator_for(&h).is_some(), "{h}");
        assert!(Machine::detect().native(&h));
    }

    #[test]
    fn doctor_says_how_each_platform_runs_and_why_not() {
        let arm = emulator_for(&Platform::parse("linux/arm64").unwrap()).unwrap();
        let handler = Handler::parse(
            "qemu-aarch64",
            "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: OC\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n",
        )
        .unwrap();
        let host = How::Host {
            emulator: arm,
            handler,
        };
        let support = |no_instance: Option<&str>| Support {
            platform: arm.platform(),
            label: arm.label,
            how: Ok(host.clone()),
            no_instance: no_instance.map(str::to_string),
        };
        let lines = doctor_lines(vec![
            support(None),
            support(Some(
                "Linux 6.1.0 cannot mount binfmt_misc in a user namespace (6.7 can)",
            )),
            Support {
                platform: arm.platform(),
                label: arm.label,
                how: Err(Error::KernelTooOld {
                    platform: "linux/arm64".into(),
                    kernel: "6.1.0".into(),
                }),
                no_instance: None,
            },
        ]);
        assert!(lines[0].ok);
        assert_eq!(
            lines[0].detail,
            "through the host's binfmt_misc handler qemu-aarch64 (/usr/bin/qemu-aarch64), copied into strata's user namespace"
        );
        assert!(!lines[1].ok);
        assert_eq!(
            lines[1].detail,
            "through the host's binfmt_misc handler qemu-aarch64, registered without the F flag: images must contain /usr/bin/qemu-aarch64, used as it is (Linux 6.1.0 cannot mount binfmt_misc in a user namespace (6.7 can))"
        );
        assert!(!lines[2].ok);
        assert!(lines[2]
            .detail
            .starts_with("unavailable: linux/arm64: Linux 6.1.0 cannot mount"));
        assert!(lines[2]
            .fix
            .as_deref()
            .unwrap()
            .contains("tonistiigi/binfmt"));
    }
}
