//! uid/gid maps for the user namespace: root inside is the calling user; with subordinate ranges
//! in /etc/subuid and /etc/subgid (and newuidmap/newgidmap installed), ids 1..N map to them.
//! Real root maps the whole id space onto itself, so running as root goes through the same path.

// System files are read best-effort (a missing /etc/subuid means no ranges) and writes name
// their path in the error, so std::fs is allowed in this file.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::path::Path;
use std::process::Command;

/// One line of a map: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Range {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMaps {
    pub uid: Vec<Range>,
    pub gid: Vec<Range>,
    /// Only root is mapped: other ids do not exist inside.
    pub root_only: bool,
    /// The maps are written with newuidmap/newgidmap (setuid helpers).
    pub use_helpers: bool,
}

/// The first range for `user` (name or uid) in a subuid/subgid file.
pub fn subordinate_range(file: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    file.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != name && who != id.to_string() {
            return None;
        }
        Some((start.parse().ok()?, count.parse().ok()?)).filter(|(_, c)| *c > 0)
    })
}

/// The name of `uid` in this machine's /etc/passwd (what /etc/subuid and /etc/subgid list).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    name_of(&passwd, uid)
}

fn name_of(passwd: &str, uid: u32) -> Option<String> {
    crate::fsx::passwd::Passwd(passwd)
        .by_uid(uid)
        .map(|u| u.name.to_string())
}

/// Where Debian's uidmap package puts the setuid helpers (run by path: no PATH search, and no
/// other program of the same name earlier in PATH).
const NEWUIDMAP: &str = "/usr/bin/newuidmap";
const NEWGIDMAP: &str = "/usr/bin/newgidmap";

pub fn helpers_installed() -> bool {
    [NEWUIDMAP, NEWGIDMAP].iter().all(|p| Path::new(p).exists())
}

/// The maps for the current user.
pub fn for_current_user() -> IdMaps {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    if uid == 0 {
        // Root maps every id that exists where it runs: all of them on the host, only those
        // of its own maps inside a user namespace (root of a rootless container, or of an
        // `unshare -r`), where a map naming any other id is refused.
        let own = |f: &str| {
            std::fs::read_to_string(format!("/proc/self/{f}"))
                .ok()
                .map(|t| existing_ids(&t))
                .filter(|r| !r.is_empty())
        };
        let (uid, gid) = match (own("uid_map"), own("gid_map")) {
            (Some(u), Some(g)) => (u, g),
            _ => {
                let all = vec![Range {
                    inside: 0,
                    outside: 0,
                    count: u32::MAX,
                }];
                (all.clone(), all)
            }
        };
        let root_only = uid.iter().map(|r| u64::from(r.count)).sum::<u64>() == 1;
        return IdMaps {
            uid,
            gid,
            root_only,
            use_helpers: false,
        };
    }
    let name = user_name(uid).unwrap_or_default();
    let sub_u = std::fs::read_to_string("/etc/subuid")
        .ok()
        .and_then(|f| subordinate_range(&f, &name, uid));
    let sub_g = std::fs::read_to_string("/etc/subgid")
        .ok()
        .and_then(|f| subordinate_range(&f, &name, uid));
    match (sub_u, sub_g) {
        (Some((us, uc)), Some((gs, gc))) if helpers_installed() => IdMaps {
            uid: vec![
                Range {
                    inside: 0,
                    outside: uid,
                    count: 1,
                },
                Range {
                    inside: 1,
                    outside: us,
                    count: uc,
                },
            ],
            gid: vec![
                Range {
                    inside: 0,
                    outside: gid,
                    count: 1,
                },
                Range {
                    inside: 1,
                    outside: gs,
                    count: gc,
                },
            ],
            root_only: false,
            use_helpers: true,
        },
        _ => IdMaps {
            uid: vec![Range {
                inside: 0,
                outside: uid,
                count: 1,
            }],
            gid: vec![Range {
                inside: 0,
                outside: gid,
                count: 1,
            }],
            root_only: true,
            use_helpers: false,
        },
    }
}

/// The ids that exist in this user namespace, from its `/proc/self/uid_map` text
/// (`inside outside count` lines), each mapped to itself: the map root writes for a child.
fn existing_ids(map: &str) -> Vec<Range> {
    map.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(str::parse::<u32>);
            let (inside, _outside, count) = (f.next()?.ok()?, f.next()?.ok()?, f.next()?.ok()?);
            (count > 0).then_some(Range {
                inside,
                outside: inside,
                count,
            })
        })
        .collect()
}

/// Ranges as a person reads them: `0 → 1001 (1 id), 1–65536 → 100000–165535 (65,536 ids)`.
pub fn describe(ranges: &[Range]) -> String {
    let group = |n: u64| {
        let s = n.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    let span = |start: u32, count: u32| {
        if count == 1 {
            start.to_string()
        } else {
            format!("{start}–{}", u64::from(start) + u64::from(count) - 1)
        }
    };
    ranges
        .iter()
        .map(|r| {
            format!(
                "{} → {} ({} id{})",
                span(r.inside, r.count),
                span(r.outside, r.count),
                group(r.count.into()),
                if r.count == 1 { "" } else { "s" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn map_text(ranges: &[Range]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// Write the maps of process `pid` (which has just unshared its user namespace).
pub fn apply(maps: &IdMaps, pid: u32) -> io::Result<()> {
    if maps.use_helpers {
        // The two setuid helpers are independent (one writes uid_map, the other gid_map): run
        // them at once, which takes one helper's start-up off every rootless step.
        let mut running = Vec::new();
        for (tool, ranges) in [(NEWUIDMAP, &maps.uid), (NEWGIDMAP, &maps.gid)] {
            let mut args = vec![pid.to_string()];
            for r in ranges {
                args.extend([
                    r.inside.to_string(),
                    r.outside.to_string(),
                    r.count.to_string(),
                ]);
            }
            let child = Command::new(tool)
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn();
            running.push((tool, args, child));
        }
        let mut first_err = None;
        for (tool, args, child) in running {
            let r = child.and_then(|c| c.wait_with_output());
            let e = match r {
                Ok(out) if out.status.success() => continue,
                Ok(out) => io::Error::other(format!(
                    "{tool} {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => e,
            };
            first_err.get_or_insert(e);
        }
        return first_err.map_or(Ok(()), Err);
    }
    let proc = format!("/proc/{pid}");
    if maps.root_only {
        // An unprivileged process may map only itself, and only with setgroups denied.
        std::fs::write(format!("{proc}/setgroups"), "deny")
            .map_err(|e| io::Error::new(e.kind(), format!("{proc}/setgroups: {e}")))?;
    }
    std::fs::write(format!("{proc}/uid_map"), map_text(&maps.uid))
        .map_err(|e| io::Error::new(e.kind(), format!("{proc}/uid_map: {e}")))?;
    std::fs::write(format!("{proc}/gid_map"), map_text(&maps.gid))
        .map_err(|e| io::Error::new(e.kind(), format!("{proc}/gid_map: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_in_a_user_namespace_maps_only_the_ids_that_exist_there() {
        // The host's: every id.
        assert_eq!(
            existing_ids("         0          0 4294967295\n"),
            vec![Range {
                inside: 0,
                outside: 0,
                count: u32::MAX
            }]
        );
        // `unshare -r` as root or a user: root alone.
        assert_eq!(
            existing_ids("         0       1001          1\n"),
            vec![Range {
                inside: 0,
                outside: 0,
                count: 1
            }]
        );
        // A rootless container: root and 65536 subordinate ids.
        assert_eq!(
            existing_ids("0 1000 1\n1 100000 65536\n"),
            vec![
                Range {
                    inside: 0,
                    outside: 0,
                    count: 1
                },
                Range {
                    inside: 1,
                    outside: 1,
                    count: 65536
                }
            ]
        );
        assert!(existing_ids("garbage\n").is_empty());
    }

    #[test]
    fn ranges_read_as_a_person_would() {
        let r = |inside, outside, count| Range {
            inside,
            outside,
            count,
        };
        assert_eq!(
            describe(&[r(0, 1001, 1), r(1, 100000, 65536)]),
            "0 → 1001 (1 id), 1–65536 → 100000–165535 (65,536 ids)"
        );
        assert_eq!(
            describe(&[r(0, 0, u32::MAX)]),
            "0–4294967294 → 0–4294967294 (4,294,967,295 ids)"
        );
    }

    #[test]
    fn the_users_name_is_read_from_passwd_by_uid() {
        let p = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n";
        assert_eq!(name_of(p, 0).as_deref(), Some("root"));
        // The first entry of a uid, as /etc/subuid is looked up by it.
        assert_eq!(name_of(p, 1000).as_deref(), Some("alice"));
        assert_eq!(name_of(p, 1001), None);
        assert_eq!(name_of("", 0), None);
    }

    #[test]
    fn subordinate_ranges_by_name_or_id() {
        let f = "alice:100000:65536\n1001:200000:1000\nbob:0:0\n";
        assert_eq!(subordinate_range(f, "alice", 1000), Some((100000, 65536)));
        assert_eq!(subordinate_range(f, "carol", 1001), Some((200000, 1000)));
        assert_eq!(subordinate_range(f, "bob", 1002), None);
        assert_eq!(
            map_text(&[Range {
                inside: 0,
                outside: 1000,
                count: 1
            }]),
            "0 1000 1\n"
        );
    }
}
