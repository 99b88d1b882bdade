//! What this machine allows, and how to fix what is missing (`strata doctor`).

// System files are read best-effort (a missing /etc/subuid means no ranges) and writes name
// their path in the error, so std::fs is allowed in this file.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

use super::idmap;

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// A failed optional check limits what works (USER, chown) without stopping builds.
    pub optional: bool,
    pub detail: String,
    pub fix: Option<String>,
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The sysctl and policy checks that decide whether unprivileged user namespaces work.
pub fn userns_checks() -> Vec<Check> {
    let mut v = Vec::new();
    let max = read("/proc/sys/user/max_user_namespaces");
    v.push(Check {
        name: "user.max_user_namespaces",
        ok: max.as_deref().is_none_or(|m| m != "0"),
        optional: false,
        detail: max.clone().unwrap_or_else(|| "not present".into()),
        fix: Some("sudo sysctl -w user.max_user_namespaces=15000".into()),
    });
    if let Some(c) = read("/proc/sys/kernel/unprivileged_userns_clone") {
        v.push(Check {
            name: "kernel.unprivileged_userns_clone",
            ok: c == "1",
            optional: false,
            detail: c,
            fix: Some("sudo sysctl -w kernel.unprivileged_userns_clone=1".into()),
        });
    }
    if let Some(c) = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") {
        v.push(Check {
            name: "kernel.apparmor_restrict_unprivileged_userns (Ubuntu 24.04+)",
            ok: c == "0",
            optional: false,
            detail: c,
            fix: Some("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile allowing userns for strata)".into()),
        });
    }
    v
}

/// Advice to show with a sandbox that could not be created.
pub fn advice() -> Vec<String> {
    let mut a: Vec<String> = userns_checks()
        .into_iter()
        .filter(|c| !c.ok)
        .filter_map(|c| c.fix.map(|f| format!("{} is {}: {f}", c.name, c.detail)))
        .collect();
    a.extend(userns_fixes(environment().container));
    a.push("run `strata doctor` for a full report".into());
    a
}

/// The container strata runs in, as far as it can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Kubernetes,
    Docker,
    Podman,
    /// Some other container (a cgroup or an init that says so).
    Other,
}

/// Where strata runs: a CI system, a container, and the seccomp filter it is under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub ci: Option<String>,
    pub container: Option<Container>,
    /// `Seccomp:` of /proc/self/status: 0 none, 2 a filter.
    pub seccomp: Option<String>,
}

/// Where strata runs. Read from files where it can be (the sandbox's session process has no
/// environment variables), from the CI systems' variables otherwise.
pub fn environment() -> Environment {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let ci = if var("GITHUB_ACTIONS").as_deref() == Some("true") {
        Some(match var("ImageOS") {
            Some(os) => format!("GitHub Actions ({os} runner)"),
            None => "GitHub Actions".to_string(),
        })
    } else if var("GITLAB_CI").is_some() {
        Some(match var("CI_RUNNER_EXECUTABLE_ARCH") {
            Some(a) => format!("GitLab CI ({a})"),
            None => "GitLab CI".to_string(),
        })
    } else if var("CI").is_some() {
        Some("a CI runner (CI is set)".to_string())
    } else {
        None
    };
    let cgroup = read("/proc/1/cgroup").unwrap_or_default();
    let container = if var("KUBERNETES_SERVICE_HOST").is_some()
        || Path::new("/var/run/secrets/kubernetes.io/serviceaccount").exists()
        || cgroup.contains("kubepods")
    {
        Some(Container::Kubernetes)
    } else if Path::new("/run/.containerenv").exists() {
        Some(Container::Podman)
    } else if Path::new("/.dockerenv").exists() || cgroup.contains("/docker") {
        Some(Container::Docker)
    } else if var("container").is_some() || cgroup.contains("/lxc") {
        Some(Container::Other)
    } else {
        None
    };
    let seccomp = read("/proc/self/status").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim().to_string()))
    });
    Environment {
        ci,
        container,
        seccomp,
    }
}

impl std::fmt::Display for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match self.container {
            Some(Container::Kubernetes) => "a Kubernetes pod",
            Some(Container::Docker) => "a Docker container",
            Some(Container::Podman) => "a Podman container",
            Some(Container::Other) => "a container",
            None => "a host (no container found)",
        };
        write!(f, "{place}")?;
        if let Some(ci) = &self.ci {
            write!(f, ", {ci}")?;
        }
        match self.seccomp.as_deref() {
            Some("0") => write!(f, ", no seccomp filter"),
            Some("2") => write!(f, ", under a seccomp filter"),
            _ => Ok(()),
        }
    }
}

/// What lets a container create user namespaces, for the container strata is in.
pub fn userns_fixes(c: Option<Container>) -> Vec<String> {
    match c {
        Some(Container::Docker) => vec![
            "Docker's default seccomp profile refuses unshare(CLONE_NEWUSER): run the container with --security-opt seccomp=/usr/share/containers/seccomp.json (Podman's default profile, from containers-common, which allows user namespaces) or seccomp=unconfined; on an AppArmor host also --security-opt apparmor=unconfined".into(),
        ],
        Some(Container::Kubernetes) => vec![
            "the runtime's default seccomp profile refuses unshare(CLONE_NEWUSER): set the container's securityContext.seccompProfile to {type: Localhost, localhostProfile: strata-seccomp.json} (Podman's default profile, copied to the node) or {type: Unconfined}, and on AppArmor nodes appArmorProfile {type: Unconfined}; see examples/ci/kubernetes/".into(),
        ],
        Some(Container::Podman) => vec![
            "Podman's default seccomp profile allows user namespaces: check the container's --security-opt seccomp=… and the host's user.max_user_namespaces".into(),
        ],
        _ => Vec::new(),
    }
}

/// What lets a RUN step mount its own /proc, for the container strata is in.
pub fn proc_fixes() -> Vec<String> {
    let c = environment().container;
    let mut v = vec!["a new /proc cannot be mounted where the container's /proc has masked paths (read-only or hidden entries the container runtime bound over it)".to_string()];
    v.push(
        match c {
            Some(Container::Podman) => "run the container with --security-opt unmask=/proc/*",
            Some(Container::Docker) => {
                "run the container with --security-opt systempaths=unconfined"
            }
            Some(Container::Kubernetes) => {
                "set the container's securityContext.procMount: Unmasked (it needs the pod's hostUsers: false)"
            }
            _ => "podman: --security-opt unmask=/proc/*; docker: --security-opt systempaths=unconfined; Kubernetes: securityContext.procMount: Unmasked",
        }
        .to_string(),
    );
    v.push("or set STRATA_PROC=host: RUN steps then get the container's /proc instead of their own (they see its processes; strata hides its own from them)".into());
    v
}

/// The checks `strata doctor` prints before the platform lines ([`super::binfmt::doctor_checks`]).
pub fn all_checks() -> Vec<Check> {
    let mut v = Vec::new();
    let kernel = read("/proc/sys/kernel/osrelease").unwrap_or_default();
    let (maj, min) = {
        let mut it = kernel
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    };
    v.push(Check {
        name: "kernel",
        ok: (maj, min) >= (5, 11),
        optional: false,
        detail: kernel.clone(),
        fix: Some(
            "overlayfs in a user namespace needs Linux 5.11 or newer; upgrade the kernel".into(),
        ),
    });
    v.extend(userns_checks());
    let uid = rustix::process::getuid().as_raw();
    if uid != 0 {
        let maps = idmap::for_current_user();
        v.push(Check {
            name: "subordinate ids (/etc/subuid, /etc/subgid)",
            ok: !maps.root_only,
            optional: true,
            detail: if maps.root_only { "none: only root is mapped, so USER, chown and apt's _apt do not work".into() } else { format!("uids {}; gids {}", idmap::describe(&maps.uid), idmap::describe(&maps.gid)) },
            fix: Some(format!("sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $(id -un {uid}) (and apt-get install uidmap)")),
        });
        v.push(Check {
            name: "newuidmap/newgidmap",
            ok: idmap::helpers_installed(),
            optional: true,
            detail: if idmap::helpers_installed() {
                "installed".into()
            } else {
                "missing".into()
            },
            fix: Some("sudo apt-get install uidmap".into()),
        });
    }
    let net = super::net::unavailable();
    v.push(Check {
        name: "slirp4netns and /dev/net/tun (the network of RUN steps)",
        ok: net.is_none(),
        optional: true,
        detail: match &net {
            None => "RUN steps get a network of their own with outbound access".into(),
            Some((why, _)) => {
                format!("{why}: only --network none (or --network host --allow network.host) works")
            }
        },
        fix: net.map(|(_, fix)| fix),
    });
    v.push(Check {
        name: "overlay filesystem",
        optional: false,
        ok: read("/proc/filesystems").is_some_and(|f| f.contains("overlay"))
            || Path::new("/sys/module/overlay").exists(),
        detail: "needed for RUN snapshots".into(),
        fix: Some("sudo modprobe overlay".into()),
    });
    v
}
