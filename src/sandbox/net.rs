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
use std::path::{Path, PathBuf};
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
fn args(pid: u32, as_root: bool, api: Option<&Path>) -> Vec<String> {
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
    if let Some(p) = api {
        a.push(format!("--api-socket={}", p.display()));
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
pub fn start(pid: u32, ports: Option<&Forwards>) -> Result<Slirp, (String, String)> {
    let Some(exe) = slirp4netns() else {
        return Err(unavailable().unwrap_or_default());
    };
    let io = |e: std::io::Error| (format!("starting slirp4netns: {e}"), String::new());
    let (ready_r, ready_w) = super::pipe().map_err(io)?;
    let (exit_r, exit_w) = super::pipe().map_err(io)?;
    let mut cmd = Command::new(&exe);
    cmd.args(args(
        pid,
        rustix::process::geteuid().is_root(),
        ports.map(|f| f.socket.as_path()),
    ))
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
        if let Some(f) = ports {
            for p in &f.ports {
                add_forward(&f.socket, p).map_err(|e| {
                    (
                        format!("publishing {}: {e}", p.spec()),
                        "pick a host port that is free (ss -ltn lists the ones in use)".into(),
                    )
                })?;
            }
        }
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

/// Ports of the host forwarded into the step's network (`strata run -p`), through the API
/// socket of its slirp4netns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Forwards {
    /// Where slirp4netns listens for API requests (in the run's scratch directory).
    pub socket: PathBuf,
    pub ports: Vec<PortForward>,
}

/// A `-p` value that is not `[IP:]HOST:CONTAINER[/tcp|/udp]`: the value, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port \"{given}\": {why} (expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp])")]
pub struct PortError {
    pub given: String,
    pub why: &'static str,
}

/// One `-p [IP:]HOST:CONTAINER[/tcp|/udp]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortForward {
    pub host_addr: String,
    pub host_port: u16,
    pub guest_port: u16,
    pub udp: bool,
}

impl PortForward {
    /// Parse docker's `-p` syntax. Without an address the port is published on the host's
    /// loopback only (docker publishes on every interface; strata is a builder's tool, so the
    /// server is for this machine unless an address says otherwise, `0.0.0.0:8080:80`).
    pub fn parse(v: &str) -> Result<PortForward, PortError> {
        let bad = |why: &'static str| PortError {
            given: v.to_string(),
            why,
        };
        let (spec, udp) = match v.rsplit_once('/') {
            Some((s, "tcp")) => (s, false),
            Some((s, "udp")) => (s, true),
            Some(_) => return Err(bad("the protocol is tcp or udp")),
            None => (v, false),
        };
        let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
        let (guest, host, addr) = match parts.as_slice() {
            [g, h] => (*g, *h, "127.0.0.1"),
            [g, h, a] => (*g, *h, a.trim_start_matches('[').trim_end_matches(']')),
            _ => return Err(bad("both ports are needed")),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|n| *n > 0);
        let (Some(host_port), Some(guest_port)) = (port(host), port(guest)) else {
            return Err(bad("ports are numbers from 1 to 65535"));
        };
        if addr.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("the address is an IP address"));
        }
        Ok(PortForward {
            host_addr: addr.to_string(),
            host_port,
            guest_port,
            udp,
        })
    }

    /// As written back: `127.0.0.1:8080:80/tcp`.
    pub fn spec(&self) -> String {
        format!(
            "{}:{}:{}/{}",
            self.host_addr,
            self.host_port,
            self.guest_port,
            if self.udp { "udp" } else { "tcp" }
        )
    }
}

/// Ask slirp4netns (through its API socket) to forward one port.
fn add_forward(socket: &Path, p: &PortForward) -> std::io::Result<()> {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    let req = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": if p.udp { "udp" } else { "tcp" },
            "host_addr": p.host_addr,
            "host_port": p.host_port,
            "guest_addr": "10.0.2.100",
            "guest_port": p.guest_port,
        }
    });
    s.write_all(req.to_string().as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    let v: serde_json::Value = serde_json::from_str(&reply)
        .map_err(|e| std::io::Error::other(format!("slirp4netns answered {reply:?}: {e}")))?;
    if v.get("return").is_some() {
        return Ok(());
    }
    let why = v["error"]["desc"].as_str().unwrap_or(reply.trim());
    Err(std::io::Error::other(why.to_string()))
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
    fn published_ports_parse_as_docker_writes_them() {
        let p = PortForward::parse("8080:80").unwrap();
        assert_eq!(p.spec(), "127.0.0.1:8080:80/tcp");
        assert_eq!(
            PortForward::parse("0.0.0.0:53:5353/udp").unwrap().spec(),
            "0.0.0.0:53:5353/udp"
        );
        assert_eq!(
            PortForward::parse("[::1]:8080:80").unwrap().host_addr,
            "::1"
        );
        for bad in [
            "80",
            "a:80",
            "8080:0",
            "8080:80/sctp",
            "host:8080:80",
            "70000:80",
        ] {
            let e = PortForward::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn never_the_hosts_loopback() {
        let user = args(42, false, None);
        assert!(user.contains(&"--disable-host-loopback".to_string()));
        assert!(user.contains(&"--userns-path=/proc/42/ns/user".to_string()));
        assert!(user.ends_with(&["/proc/42/ns/net".to_string(), "tap0".into()]));
        let root = args(42, true, None);
        assert!(root.contains(&"--disable-host-loopback".to_string()));
        assert!(!root.iter().any(|a| a.starts_with("--userns-path")));
    }
}
