//! Platforms as people write them (`linux/arm64`, `arm64`, `linux/arm/v7`, `aarch64`) and their
//! normal form, as containerd's `platforms` package defines both (BuildKit and buildx parse
//! `--platform` with it, then normalise): `aarch64` is `arm64` and its `v8` variant is left
//! out, `armhf` is `arm/v7`, `armel` is `arm/v6`, a bare `arm` is `arm/v7`, `x86_64` and
//! `x86-64` are `amd64` (variant `v1` left out), `i386` is `386`. A lone word is an operating
//! system (`linux`: this machine's architecture) or else an architecture (`arm64`: Linux).

use std::fmt;

use super::Platform;

/// A platform string that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("an empty platform: write os/arch[/variant], for example linux/arm64")]
    Empty,
    #[error("platform {spec:?}: {part:?} is not a valid part (letters, digits, `_`, `.` and `-`)")]
    BadPart { spec: String, part: String },
    #[error("platform {spec:?}: unknown operating system or architecture (for example linux, arm64 or linux/arm/v7)")]
    Unknown { spec: String },
    #[error("platform {spec:?}: more parts than os/arch/variant")]
    TooManyParts { spec: String },
}

/// Architectures Go names (GOARCH), which image indexes use.
const KNOWN_ARCHES: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

/// Operating systems Go names (GOOS).
const KNOWN_OSES: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

/// The normal form of an architecture and its variant.
pub fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.map(str::to_ascii_lowercase).unwrap_or_default();
    let (arch, variant): (&str, String) = match arch.as_str() {
        "i386" => ("386", String::new()),
        "x86_64" | "x86-64" | "amd64" => (
            "amd64",
            if variant == "v1" {
                String::new()
            } else {
                variant
            },
        ),
        "aarch64" | "arm64" => (
            "arm64",
            match variant.as_str() {
                "8" | "v8" => String::new(),
                _ => variant,
            },
        ),
        "armhf" => ("arm", "v7".into()),
        "armel" => ("arm", "v6".into()),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            },
        ),
        other => (other, variant),
    };
    (arch.to_string(), (!variant.is_empty()).then_some(variant))
}

fn valid_part(p: &str) -> bool {
    !p.is_empty()
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Platform {
    /// The platform this binary was built for, in OCI terms.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        let variant = (arch == "arm64").then(|| "v8".to_string());
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            os_version: None,
            variant,
        }
    }

    /// `os/arch[/variant]` exactly as written, not normalised (a Dockerfile's `FROM
    /// --platform=`, compared with what an image's config says); see [`Platform::parse_specifier`]
    /// for what users type on the command line.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut it = s.split('/');
        let os = it.next().filter(|s| !s.is_empty())?.to_string();
        let architecture = it.next().filter(|s| !s.is_empty())?.to_string();
        let variant = it.next().map(str::to_string);
        if it.next().is_some() {
            return None;
        }
        Some(Platform {
            architecture,
            os,
            os_version: None,
            variant,
        })
    }

    /// A platform from `os`, `arch`, `os/arch` or `os/arch/variant`, in normal form (see the
    /// module's documentation). A lone operating system gets this machine's architecture
    /// (`machine`, the platform strata runs on).
    pub fn parse_specifier(spec: &str, machine: &Platform) -> Result<Platform, PlatformError> {
        let spec_s = spec.to_string();
        if spec.is_empty() {
            return Err(PlatformError::Empty);
        }
        let parts: Vec<&str> = spec.split('/').collect();
        if parts.len() > 3 {
            return Err(PlatformError::TooManyParts { spec: spec_s });
        }
        if let Some(bad) = parts.iter().find(|p| !valid_part(p)) {
            return Err(PlatformError::BadPart {
                part: bad.to_string(),
                spec: spec_s,
            });
        }
        let os = |s: &str| match s.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            other => other.to_string(),
        };
        let p = match parts.as_slice() {
            [one] => {
                let as_os = os(one);
                if KNOWN_OSES.contains(&as_os.as_str()) {
                    Platform {
                        os: as_os,
                        ..machine.clone()
                    }
                } else {
                    let (arch, variant) = normalize_arch(one, None);
                    if !KNOWN_ARCHES.contains(&arch.as_str()) {
                        return Err(PlatformError::Unknown { spec: spec_s });
                    }
                    Platform {
                        architecture: arch,
                        os: "linux".into(),
                        os_version: None,
                        variant,
                    }
                }
            }
            [o, a] => Platform {
                architecture: a.to_string(),
                os: os(o),
                os_version: None,
                variant: None,
            },
            [o, a, v] => Platform {
                architecture: a.to_string(),
                os: os(o),
                os_version: None,
                variant: Some(v.to_string()),
            },
            _ => unreachable!("split yields one to three parts here"),
        };
        Ok(p.normalized())
    }

    /// Whether its operating system and architecture are ones Go (and so image indexes) name.
    pub fn is_known(&self) -> bool {
        KNOWN_OSES.contains(&self.os.as_str()) && KNOWN_ARCHES.contains(&self.architecture.as_str())
    }

    /// The name buildx gives this platform's directory in a `local` or `tar` output of several
    /// platforms: `linux_arm64`, `linux_arm_v7`.
    pub fn dir_name(&self) -> String {
        let mut s = format!("{}_{}", self.os, self.architecture);
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            s.push('_');
            s.push_str(v);
        }
        s
    }

    /// This platform in normal form (lower case, `aarch64` → `arm64`, `arm` → `arm/v7`, …).
    pub fn normalized(&self) -> Platform {
        let (architecture, variant) = normalize_arch(&self.architecture, self.variant.as_deref());
        Platform {
            architecture,
            os: match self.os.to_ascii_lowercase().as_str() {
                "macos" => "darwin".into(),
                o => o.into(),
            },
            os_version: self.os_version.clone(),
            variant,
        }
    }

    /// The platform of a Linux machine whose `uname -m` is `machine` (`x86_64`, `aarch64`,
    /// `armv7l`, `i686`, `ppc64le`, `s390x`, `riscv64`, …), in normal form.
    pub fn of_linux_machine(machine: &str) -> Platform {
        let (arch, variant) = match machine {
            "i386" | "i486" | "i586" | "i686" => ("386".to_string(), None),
            m if m.starts_with("armv") => {
                // armv5tel, armv6l, armv7l, armv8l (a 32-bit userland on an arm64 kernel)
                let digits: String = m[4..].chars().take_while(char::is_ascii_digit).collect();
                normalize_arch("arm", Some(&digits))
            }
            "ppc64le" | "ppc64el" => ("ppc64le".to_string(), None),
            m => normalize_arch(m, None),
        };
        Platform {
            architecture: arch,
            os: "linux".into(),
            os_version: None,
            variant,
        }
    }
}

/// `os/arch[/variant]`, as `--platform` takes it.
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amd64() -> Platform {
        Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            os_version: None,
            variant: None,
        }
    }

    fn parse(s: &str) -> String {
        match Platform::parse_specifier(s, &amd64()) {
            Ok(p) => p.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn specifiers_parse_to_their_normal_form() {
        for (input, want) in [
            ("linux/arm64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/aarch64", "linux/arm64"),
            ("arm64", "linux/arm64"),
            ("aarch64", "linux/arm64"),
            ("linux/arm64/v9", "linux/arm64/v9"),
            ("linux/arm/v7", "linux/arm/v7"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/arm/5", "linux/arm/v5"),
            ("armhf", "linux/arm/v7"),
            ("armel", "linux/arm/v6"),
            ("linux/armhf", "linux/arm/v7"),
            ("x86_64", "linux/amd64"),
            ("linux/x86-64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("i386", "linux/386"),
            ("linux/i386", "linux/386"),
            ("linux/386", "linux/386"),
            ("riscv64", "linux/riscv64"),
            ("linux/ppc64le", "linux/ppc64le"),
            ("s390x", "linux/s390x"),
            ("Linux/ARM64", "linux/arm64"),
            // A lone operating system takes this machine's architecture.
            ("linux", "linux/amd64"),
            ("macos/arm64", "darwin/arm64"),
            ("windows/amd64", "windows/amd64"),
        ] {
            assert_eq!(parse(input), want, "{input}");
        }
    }

    #[test]
    fn bad_specifiers_are_refused_with_the_part_named() {
        assert_eq!(
            Platform::parse_specifier("", &amd64()),
            Err(PlatformError::Empty)
        );
        assert_eq!(
            Platform::parse_specifier("linux/arm64/v8/x", &amd64()),
            Err(PlatformError::TooManyParts {
                spec: "linux/arm64/v8/x".into()
            })
        );
        assert_eq!(
            Platform::parse_specifier("linux//v7", &amd64()),
            Err(PlatformError::BadPart {
                spec: "linux//v7".into(),
                part: "".into()
            })
        );
        assert_eq!(
            Platform::parse_specifier("linux/arm 64", &amd64()),
            Err(PlatformError::BadPart {
                spec: "linux/arm 64".into(),
                part: "arm 64".into()
            })
        );
        assert_eq!(
            Platform::parse_specifier("pdp11", &amd64()),
            Err(PlatformError::Unknown {
                spec: "pdp11".into()
            })
        );
        assert!(parse("linux/arm 64").contains("\"arm 64\" is not a valid part"));
    }

    #[test]
    fn machines_map_to_platforms() {
        for (machine, want) in [
            ("x86_64", "linux/amd64"),
            ("aarch64", "linux/arm64"),
            ("armv7l", "linux/arm/v7"),
            ("armv6l", "linux/arm/v6"),
            ("armv8l", "linux/arm/v8"),
            ("i686", "linux/386"),
            ("ppc64le", "linux/ppc64le"),
            ("s390x", "linux/s390x"),
            ("riscv64", "linux/riscv64"),
        ] {
            assert_eq!(
                Platform::of_linux_machine(machine).to_string(),
                want,
                "{machine}"
            );
        }
    }

    #[test]
    fn normalizing_keeps_the_os_version() {
        let p = Platform {
            architecture: "AArch64".into(),
            os: "linux".into(),
            os_version: Some("x".into()),
            variant: Some("V8".into()),
        };
        let n = p.normalized();
        assert_eq!(n.to_string(), "linux/arm64");
        assert_eq!(n.os_version.as_deref(), Some("x"));
        assert_eq!(n.normalized(), n);
    }
}
