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
    a.push("run `strata doctor` for a full report".into());
    a
}

/// Every check `strata doctor` prints.
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
