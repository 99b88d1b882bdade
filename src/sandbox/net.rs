//! The private network of a RUN step: an empty network namespace given outbound access by
//! slirp4netns (Debian's `slirp4netns` package), a user-mode TCP/IP stack that needs no
//! privilege beyond the user namespace the step already has.
//!
//! Why slirp4netns and not pasta: both give rootless outbound access (research
//! rootless-network.md), but measured here pasta (Debian 12's) needs 42–50 ms to configure a
//! namespace and slirp4netns 17 ms, and a RUN step's network may cost at most 30 ms; it is also
//! what BuildKit's rootless mode (through rootlesskit) and rootless podman before 5.0 use.
//! slirp4netns runs in the foreground: it says when the namespace is ready on a pipe
//! (`--ready-fd`) and quits when another pipe closes (`--exit-fd`), so a strata killed with
//! SIGKILL leaves no network helper behind. `--disable-host-loopback` closes the path from the
//! gateway address (10.0.2.2) to the host's loopback: a step has no route to services bound to
//! the host's 127.0.0.1.

// /etc files are read best-effort, so std::fs is allowed here.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// slirp4netns's built-in DNS forwarder (to the host's resolvers, loopback ones included).
pub const DNS: &str = "10.0.2.3";
/// The step's gateway, which slirp4netns answers (never the host's loopback here).
pub const GATEWAY: &str = "10.0.2.2";

/// Where slirp4netns is, if it is installed.
pub fn slirp4netns() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("slirp4netns"))
        .find(|p| p.is_file())
}

/// Why a private network cannot be set up here, with the fix; None when it can.
pub fn unavailable() -> Option<(String, String)> {
    if slirp4netns().is_none() {
        return Some((
            "slirp4netns (the user-mode network of RUN steps) is not installed".into(),
            "sudo apt-get install slirp4netns (or build with --network none, or opt in to the host's network with --network host --allow network.host)".into(),
        ));
    }
    tun_problem()
}

fn tun_problem() -> Option<(String, String)> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => None,
        Err(e) => Some((
            format!("/dev/net/tun cannot be opened ({e}), and slirp4netns needs it for the network of RUN steps"),
            "sudo chmod 0666 /dev/net/tun (Debian's default mode, which udev sets; a container needs --device /dev/net/tun)".into(),
        )),
    }
}

/// The resolv.conf of a step with a private network: the host's search and options, with
/// slirp4netns's DNS forwarder as the only nameserver (a resolver on the host's loopback, such
/// as systemd-resolved's 127.0.0.53, is reached through it).
pub fn resolv_conf(host: &str) -> String {
    let mut out = format!("nameserver {DNS}\n");
    for l in host.lines() {
        let t = l.trim();
        if t.starts_with("search") || t.starts_with("domain") || t.starts_with("options") {
            out.push_str(t);
            out.push('\n');
        }
    }
    out
}

/// The arguments slirp4netns gets for the namespaces of process `pid`, with the ready pipe as
/// fd 3 and the exit pipe as fd 4. As root it enters the network namespace directly; an
/// unprivileged user's slirp4netns joins the step's user namespace first (its owner may).
fn args(pid: u32, as_root: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--ready-fd=3",
        "--exit-fd=4",
        "--netns-type=path",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !as_root {
        a.push(format!("--userns-path=/proc/{pid}/ns/user"));
    }
    a.extend([format!("/proc/{pid}/ns/net"), "tap0".into()]);
    a
}

/// A running slirp4netns; dropping it stops it.
pub struct Slirp {
    child: Option<Child>,
    exit: Option<OwnedFd>,
}

impl Drop for Slirp {
    fn drop(&mut self) {
        // Closing the exit pipe tells slirp4netns to quit (it takes ~10 ms to notice): reap it
        // on a thread of its own rather than make the step wait for that.
        self.exit = None;
        if let Some(mut c) = self.child.take() {
            let reap = move || {
                for _ in 0..400 {
                    if !matches!(c.try_wait(), Ok(None)) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                let _ = c.kill();
                let _ = c.wait();
            };
            if std::thread::Builder::new()
                .name("slirp-reap".into())
                .spawn(reap)
                .is_err()
            {
                // No thread: the process is reaped when strata exits.
            }
        }
    }
}

/// Configure the network namespace of `pid` (which owns it through its user namespace):
/// returns once the namespace has its interface, address and route.
pub fn start(pid: u32) -> Result<Slirp, (String, String)> {
    let Some(exe) = slirp4netns() else {
        return Err(unavailable().unwrap_or_default());
    };
    let io = |e: std::io::Error| (format!("starting slirp4netns: {e}"), String::new());
    let (ready_r, ready_w) = super::pipe().map_err(io)?;
    let (exit_r, exit_w) = super::pipe().map_err(io)?;
    let mut cmd = Command::new(&exe);
    cmd.args(args(pid, rustix::process::geteuid().is_root()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (ready_high, exit_high) = (
        super::high(&ready_w).map_err(io)?,
        super::high(&exit_r).map_err(io)?,
    );
    let (rw, er) = (ready_high.as_raw_fd(), exit_high.as_raw_fd());
    // SAFETY: only dup2, which is async-signal-safe, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::dup2(rw, 3) < 0 || libc::dup2(er, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| (format!("running {}: {e}", exe.display()), String::new()))?;
    drop((ready_w, ready_high, exit_r, exit_high));
    let mut slirp = Slirp {
        child: Some(child),
        exit: Some(exit_w),
    };
    let mut b = [0u8; 1];
    let ready = std::fs::File::from(ready_r).read(&mut b);
    if matches!(ready, Ok(1)) && b[0] == b'1' {
        return Ok(slirp);
    }
    // It ended before it was ready: say why.
    slirp.exit = None;
    let mut msg = String::new();
    if let Some(mut c) = slirp.child.take() {
        let _ = c.kill();
        if let Some(mut e) = c.stderr.take() {
            let _ = e.read_to_string(&mut msg);
        }
        let _ = c.wait();
    }
    let msg: Vec<&str> = msg.lines().filter(|l| !l.trim().is_empty()).collect();
    let fix = tun_problem()
        .map(|(_, f)| f)
        .unwrap_or_else(|| "run `strata doctor`; --network none builds without a network".into());
    Err((
        format!(
            "slirp4netns could not set up the step's network: {}",
            msg.last().copied().unwrap_or("no reason given")
        ),
        fix,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_keeps_search_and_options_and_uses_the_forwarder() {
        let host =
            "# generated\nnameserver 127.0.0.53\nsearch lan example\noptions edns0 trust-ad\n";
        assert_eq!(
            resolv_conf(host),
            format!("nameserver {DNS}\nsearch lan example\noptions edns0 trust-ad\n")
        );
        assert_eq!(resolv_conf(""), format!("nameserver {DNS}\n"));
    }

    #[test]
    fn never_the_hosts_loopback() {
        let user = args(42, false);
        assert!(user.contains(&"--disable-host-loopback".to_string()));
        assert!(user.contains(&"--userns-path=/proc/42/ns/user".to_string()));
        assert!(user.ends_with(&["/proc/42/ns/net".to_string(), "tap0".into()]));
        let root = args(42, true);
        assert!(root.contains(&"--disable-host-loopback".to_string()));
        assert!(!root.iter().any(|a| a.starts_with("--userns-path")));
    }
}
