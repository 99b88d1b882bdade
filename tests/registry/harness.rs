//! The real parts the registry tests run against, all on 127.0.0.1 and all stopped on drop:
//! Debian's `docker-registry` (distribution 2.8) with its own config and storage, a token
//! server signing ES256 tokens the registry verifies through `rootcertbundle`, and a
//! fault-injecting HTTP proxy.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A listener's accept loop on a thread of its own, each connection handed to `handle`, until
/// it is dropped (a flag, then one connection that wakes the loop) or, with `deadline`, that long
/// after it started.
struct Acceptor {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    fn start(
        l: TcpListener,
        deadline: Option<Duration>,
        mut handle: impl FnMut(TcpStream) + Send + 'static,
    ) -> Acceptor {
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            for c in l.incoming() {
                if s2.load(Ordering::SeqCst) || deadline.is_some_and(|d| started.elapsed() > d) {
                    break;
                }
                if let Ok(c) = c {
                    handle(c);
                }
            }
        });
        Acceptor {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A bcrypt hash of "s3cret-pw" for alice (distribution's htpasswd takes bcrypt only).
pub const HTPASSWD: &str = "alice:$2b$12$wY3mRI4ji5kPpqXiMwQ5OegeUL4tzLfk4LOM5JKOZHp9P0GLzceA6\n";
pub const USER: &str = "alice";
pub const PASSWORD: &str = "s3cret-pw";
/// The refresh token the token server accepts for alice (an `identitytoken`).
pub const REFRESH: &str = "alice-refresh-token-0123";

pub enum Auth {
    Anonymous,
    Htpasswd,
    Token(u16),
}

pub struct Registry {
    pub port: u16,
    child: Child,
}

impl Registry {
    pub fn start(dir: &Path, auth: Auth) -> Registry {
        Registry::start_with(dir, auth, "")
    }

    /// With more of the `http:` section (indented two spaces), such as `tls:`.
    pub fn start_with(dir: &Path, auth: Auth, http_extra: &str) -> Registry {
        let port = free_port();
        fs_err::create_dir_all(dir.join("data")).unwrap();
        let auth_yaml = match auth {
            Auth::Anonymous => String::new(),
            Auth::Htpasswd => {
                fs_err::write(dir.join("htpasswd"), HTPASSWD).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
            Auth::Token(tport) => format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: strata-test\n    issuer: strata-test-issuer\n    rootcertbundle: {}\n",
                dir.join("token-cert.pem").display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: strata-test-secret\n{http_extra}{auth_yaml}",
            dir.join("data").display()
        );
        fs_err::write(dir.join("config.yml"), config).unwrap();
        let log = fs_err::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap().into_parts().0)
            .stderr(log.into_parts().0)
            .spawn()
            .expect("starting docker-registry");
        let r = Registry { port, child };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "the registry did not start: {}",
                fs_err::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The key and certificate the token server signs with (made by openssl for each test).
pub struct Signer {
    key: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
}

impl Signer {
    /// Write `token-cert.pem` into `dir` (the registry's rootcertbundle).
    pub fn new(dir: &Path) -> Signer {
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=strata-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let p8 = Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(p8.status.success());
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        assert!(der.status.success());
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &p8.stdout,
            &rng,
        )
        .unwrap();
        Signer {
            key,
            cert_der: der.stdout,
        }
    }

    fn jwt(&self, access: &serde_json::Value, life: u64) -> String {
        let b64u = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)]});
        let claims = serde_json::json!({"iss": "strata-test-issuer", "sub": USER, "aud": "strata-test",
            "exp": now + life, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", rand_id()), "access": access});
        let input = format!(
            "{}.{}",
            b64u(header.to_string().as_bytes()),
            b64u(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", b64u(sig.as_ref()))
    }
}

fn rand_id() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst) as u64
}

/// A token server: `GET /token?service&scope…` with Basic alice, or `POST /token` with
/// `grant_type=refresh_token` and alice's refresh token; anything else is 401. It counts the
/// tokens it issued.
pub struct TokenServer {
    pub port: u16,
    pub issued: Arc<AtomicUsize>,
    _acceptor: Acceptor,
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn params(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

/// One HTTP/1.1 request: (request line, headers, body).
type Request = (String, Vec<(String, String)>, Vec<u8>);

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((line.trim_end().to_string(), headers, body))
}

impl TokenServer {
    pub fn start(signer: Signer) -> TokenServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let issued = Arc::new(AtomicUsize::new(0));
        let i2 = issued.clone();
        let acceptor = Acceptor::start(l, None, move |c| {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let Some((line, headers, body)) = read_request(&mut r) else {
                return;
            };
            let mut parts = line.split(' ');
            let method = parts.next().unwrap_or("");
            let target = parts.next().unwrap_or("");
            let query = target.split_once('?').map(|x| x.1).unwrap_or("");
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
            );
            let (authorized, ps) = if method == "POST" {
                let ps = params(&String::from_utf8_lossy(&body));
                let ok = ps
                    .iter()
                    .any(|(k, v)| k == "grant_type" && v == "refresh_token")
                    && ps.iter().any(|(k, v)| k == "refresh_token" && v == REFRESH);
                (ok, ps)
            } else {
                let ok = headers
                    .iter()
                    .any(|(k, v)| k == "authorization" && *v == basic);
                (ok, params(query))
            };
            let mut c = c;
            if !authorized {
                let _ = c.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
            // Scopes: one per `scope` parameter, or space-separated in one (POST form).
            let mut access = Vec::new();
            for (k, v) in &ps {
                if k != "scope" {
                    continue;
                }
                for s in v.split(' ') {
                    let f: Vec<&str> = s.splitn(3, ':').collect();
                    if f.len() == 3 {
                        access.push(serde_json::json!({"type": f[0], "name": f[1],
                                "actions": f[2].split(',').collect::<Vec<_>>()}));
                    }
                }
            }
            let token = signer.jwt(&serde_json::Value::Array(access), 300);
            i2.fetch_add(1, Ordering::SeqCst);
            let body =
                serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                    .to_string();
            let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        });
        TokenServer {
            port,
            issued,
            _acceptor: acceptor,
        }
    }
}

/// What the proxy does to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and headers) instead of forwarding.
    Status(u16, Vec<(String, String)>),
    /// Forward, then send only the first N bytes of the answer and cut the connection.
    CutAfter(usize),
    /// Forward, then flip one byte in the middle of the body.
    Corrupt,
    /// Forward after this delay.
    Delay(Duration),
    /// Forward, then send the answer's head at once and its body one byte per interval (a
    /// registry, or a link, that trickles).
    Trickle(Duration),
    /// Read the request, then send nothing for this long (a registry that never answers).
    Silent(Duration),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    pub path_contains: String,
    /// How many more times it fires.
    pub times: usize,
    pub fault: Fault,
}

/// An HTTP proxy in front of a registry that applies scripted faults and logs requests.
pub struct FaultProxy {
    pub port: u16,
    pub rules: Arc<Mutex<Vec<Rule>>>,
    pub log: Arc<Mutex<Vec<String>>>,
    _acceptor: Acceptor,
}

impl FaultProxy {
    pub fn start(upstream: u16) -> FaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::new(Mutex::new(Vec::new()));
        let log: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let (r2, l2) = (rules.clone(), log.clone());
        let acceptor = Acceptor::start(l, Some(Duration::from_secs(600)), move |c| {
            let (r3, l3) = (r2.clone(), l2.clone());
            std::thread::spawn(move || serve(c, upstream, &r3, &l3));
        });
        FaultProxy {
            port,
            rules,
            log,
            _acceptor: acceptor,
        }
    }

    pub fn add(&self, method: &'static str, path_contains: &str, times: usize, fault: Fault) {
        self.rules.lock().unwrap().push(Rule {
            method,
            path_contains: path_contains.to_string(),
            times,
            fault,
        });
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(c: TcpStream, upstream: u16, rules: &Mutex<Vec<Rule>>, log: &Mutex<Vec<String>>) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let mut r = BufReader::new(c.try_clone().unwrap());
    // One request per connection: the answer says Connection: close.
    let Some((line, headers, body)) = read_request(&mut r) else {
        return;
    };
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let range = headers
        .iter()
        .find(|(k, _)| k == "range")
        .map(|(_, v)| format!(" range={v}"))
        .unwrap_or_default();
    log.lock().unwrap().push(format!("{method} {path}{range}"));
    if method == "CONNECT" {
        // A forward proxy's tunnel (HTTPS_PROXY): whatever host was asked for, the upstream.
        tunnel(c, r, upstream);
        return;
    }
    let fault = {
        let mut rs = rules.lock().unwrap();
        rs.iter_mut()
            .find(|x| x.times > 0 && x.method == method && path.contains(&x.path_contains))
            .map(|x| {
                x.times -= 1;
                x.fault.clone()
            })
    };
    let mut c = c;
    if let Some(Fault::Status(code, hs)) = &fault {
        let mut head =
            format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n");
        for (k, v) in hs {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = c.write_all(head.as_bytes());
        return;
    }
    if let Some(Fault::Delay(d)) = &fault {
        std::thread::sleep(*d);
    }
    if let Some(Fault::Silent(d)) = &fault {
        // Wait as long as asked, or until the client gives up and closes.
        let _ = c.set_read_timeout(Some(*d));
        let mut b = [0u8; 1];
        let _ = c.read(&mut b);
        return;
    }
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let mut req = format!("{line}\r\n");
    for (k, v) in &headers {
        if k == "connection" {
            continue;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("connection: close\r\n\r\n");
    let _ = up.write_all(req.as_bytes());
    let _ = up.write_all(&body);
    let mut resp = Vec::new();
    let _ = up.read_to_end(&mut resp);
    match fault {
        Some(Fault::CutAfter(n)) => {
            let head_end = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 4)
                .unwrap_or(0);
            let _ = c.write_all(&resp[..(head_end + n).min(resp.len())]);
            let _ = c.flush();
            let _ = c.shutdown(Shutdown::Both);
        }
        Some(Fault::Trickle(every)) => {
            let head_end = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 4)
                .unwrap_or(0);
            if c.write_all(&resp[..head_end]).is_err() {
                return;
            }
            for b in &resp[head_end..] {
                std::thread::sleep(every);
                // The client gave up: stop.
                if c.write_all(std::slice::from_ref(b)).is_err() {
                    return;
                }
            }
        }
        Some(Fault::Corrupt) => {
            let head_end = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 4)
                .unwrap_or(0);
            if resp.len() > head_end {
                let mid = head_end + (resp.len() - head_end) / 2;
                resp[mid] ^= 0xff;
            }
            let _ = c.write_all(&resp);
        }
        _ => {
            let _ = c.write_all(&resp);
        }
    }
}

fn tunnel(mut c: TcpStream, mut r: BufReader<TcpStream>, upstream: u16) {
    let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        let _ = c.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if c.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (Ok(mut up_w), Ok(mut c_w)) = (up.try_clone(), c.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || {
        let mut up_r = up;
        let _ = std::io::copy(&mut up_r, &mut c_w);
        let _ = c_w.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut r, &mut up_w);
    let _ = up_w.shutdown(Shutdown::Write);
    let _ = back.join();
}

/// A registry name that no resolver knows: only a forward proxy can reach it.
pub const PROXIED_NAME: &str = "registry.strata.test";

/// A CA, a server certificate for 127.0.0.1 and [`PROXIED_NAME`] and a client certificate, made by openssl in `dir`:
/// ca.crt, server.crt/.key, client.cert/.key.
pub fn make_tls(dir: &Path) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    run(&[&["genpkey"][..], &ec, &["-out", "ca.key"]].concat());
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-days",
        "1",
        "-subj",
        "/CN=strata-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        "ca.crt",
    ]);
    for (name, eku, ext) in [
        ("server", "serverAuth", "crt"),
        ("client", "clientAuth", "cert"),
    ] {
        run(&[&["genpkey"][..], &ec, &["-out", &format!("{name}.key")]].concat());
        run(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN=strata-test-{name}"),
            "-out",
            &format!("{name}.csr"),
        ]);
        fs_err::write(
            dir.join(format!("{name}.ext")),
            format!(
                "basicConstraints=CA:FALSE\nextendedKeyUsage={eku}\nsubjectAltName=IP:127.0.0.1,DNS:{PROXIED_NAME}\n"
            ),
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.{ext}"),
        ]);
    }
}

/// A PEP 503 package index on `ip` (127.0.0.1 in the tests: test traffic stays on loopback),
/// serving wheels with the caching headers PyPI sends (`Cache-Control: max-age`, `ETag`,
/// `Date`), which this lab's proxy strips from PyPI's own answers. A RUN step reaches a loopback
/// index only on the host's network (`--network host --allow network.host`). It counts each
/// wheel's downloads.
pub struct PackageIndex {
    pub url: String,
    addr: std::net::SocketAddr,
    downloads: Arc<Mutex<Vec<String>>>,
    _acceptor: Acceptor,
}

/// A wheel's project as a simple index names it (PEP 503 normalised).
fn project_of(wheel: &str) -> String {
    let name = wheel.split('-').next().unwrap_or(wheel);
    name.to_ascii_lowercase().replace(['_', '.'], "-")
}

/// `t` as an HTTP date (RFC 9110 IMF-fixdate), which a cache needs beside `max-age`.
fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

impl PackageIndex {
    /// Serve `wheels` (file name, sha256 in hex, bytes) on `ip`, on a free port.
    pub fn start(ip: std::net::IpAddr, wheels: Vec<(String, String, Vec<u8>)>) -> PackageIndex {
        let l = TcpListener::bind((ip, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let downloads = Arc::new(Mutex::new(Vec::new()));
        let d2 = downloads.clone();
        let acceptor = Acceptor::start(l, None, move |mut c| {
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let mut r = BufReader::new(c.try_clone().unwrap());
            let Some((line, _, _)) = read_request(&mut r) else {
                return;
            };
            let target = line.split(' ').nth(1).unwrap_or("");
            let (kind, body, etag) = if let Some(p) = target
                .strip_prefix("/simple/")
                .map(|p| p.trim_end_matches('/'))
            {
                let links: String = wheels
                    .iter()
                    .filter(|(w, _, _)| project_of(w) == p)
                    .map(|(w, h, _)| format!("<a href=\"/files/{w}#sha256={h}\">{w}</a>\n"))
                    .collect();
                if links.is_empty() {
                    ("", Vec::new(), String::new())
                } else {
                    let page = format!("<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n");
                    let etag = format!("{:x}", page.len());
                    ("text/html", page.into_bytes(), etag)
                }
            } else if let Some((w, h, b)) = target
                .strip_prefix("/files/")
                .and_then(|f| wheels.iter().find(|(w, _, _)| w == f))
            {
                d2.lock().unwrap().push(w.clone());
                ("application/octet-stream", b.clone(), h.clone())
            } else {
                ("", Vec::new(), String::new())
            };
            let head = if kind.is_empty() {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                         Cache-Control: max-age=600, public\r\nETag: \"{etag}\"\r\nDate: {}\r\n\
                         Connection: close\r\n\r\n",
                    body.len(),
                    http_date(std::time::SystemTime::now())
                )
            };
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&body);
        });
        PackageIndex {
            url: format!("http://{addr}/simple"),
            addr,
            downloads,
            _acceptor: acceptor,
        }
    }

    /// How many times `wheel` was downloaded.
    pub fn downloads(&self, wheel: &str) -> usize {
        self.downloads
            .lock()
            .unwrap()
            .iter()
            .filter(|w| *w == wheel)
            .count()
    }

    /// The index's host and port, as pip's `--trusted-host` takes it (plain HTTP).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

#[test]
fn http_dates_are_imf_fixdates() {
    let at = |s| http_date(std::time::UNIX_EPOCH + Duration::from_secs(s));
    assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(at(1_798_761_599), "Thu, 31 Dec 2026 23:59:59 GMT");
}
