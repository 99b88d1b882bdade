//! One session with the registries a command talks to: an HTTP client per host (its CAs and
//! client certificate from certs.d), the scheme (HTTPS; plain HTTP only for loopback hosts and
//! hosts marked insecure, as Docker allows), the auth challenge learnt from `GET /v2/`, Bearer
//! tokens cached per scope set (refreshed when they expire or a 401 comes back mid-run), and
//! retries: transport errors, 408, 429 (honouring `Retry-After`) and 5xx are tried again with
//! backoff; other answers go back to the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use super::config::{host_certs, Policy};
use super::credentials::{self, Credential, Secret};
use super::{Error, Observer, Quiet, Result};

/// How long a registry may keep strata waiting, and how slowly it may send: a request whose
/// answer does not start within `stall`, or whose body moves less than `min_rate` bytes a
/// second over any `stall` (one byte every 5 s kept a pull silent for more than 400 s), is
/// abandoned with an error that names the registry and the request. Set for slow links with
/// `STRATA_REGISTRY_TIMEOUT` (seconds, default 30) and `STRATA_REGISTRY_MIN_RATE` (bytes a
/// second, default 1024; 0 turns the rate check off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub stall: Duration,
    pub min_rate: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            stall: Duration::from_secs(30),
            min_rate: 1024,
        }
    }
}

impl Timeouts {
    /// The defaults, with `STRATA_REGISTRY_TIMEOUT` and `STRATA_REGISTRY_MIN_RATE` applied.
    pub fn from_env() -> Result<Timeouts> {
        let mut t = Timeouts::default();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let bad = |name: &str, v: &str, what: &str| Error::Config {
            path: format!("${name}").into(),
            message: format!("\"{v}\" is not {what}"),
        };
        if let Some(v) = var("STRATA_REGISTRY_TIMEOUT") {
            let secs: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s < 1e9)
                .ok_or_else(|| bad("STRATA_REGISTRY_TIMEOUT", &v, "a number of seconds over 0"))?;
            t.stall = Duration::from_secs_f64(secs);
        }
        if let Some(v) = var("STRATA_REGISTRY_MIN_RATE") {
            t.min_rate = v
                .trim()
                .parse()
                .map_err(|_| bad("STRATA_REGISTRY_MIN_RATE", &v, "a number of bytes a second"))?;
        }
        Ok(t)
    }

    /// The settings in words, for errors.
    fn describe(&self) -> String {
        format!(
            "STRATA_REGISTRY_TIMEOUT={}, STRATA_REGISTRY_MIN_RATE={}",
            self.stall.as_secs_f64(),
            self.min_rate
        )
    }
}

/// A response body read under [`Timeouts`]: each read waits at most `stall` (the client's own
/// timeout), and over every `stall` the body must move at least `min_rate` bytes a second.
/// Either failure is an error of kind `TimedOut` that says what stalled.
pub(crate) struct Paced<R> {
    inner: R,
    t: Timeouts,
    window: Instant,
    in_window: u64,
    /// When the last bytes came.
    last: Instant,
}

impl<R> Paced<R> {
    pub(crate) fn new(inner: R, t: Timeouts) -> Paced<R> {
        let now = Instant::now();
        Paced {
            inner,
            t,
            window: now,
            in_window: 0,
            last: now,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            // The client's timeout: nothing came for `stall`.
            Err(e) if self.last.elapsed() >= self.t.stall.mul_f64(0.9) || is_timeout(&e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the body stalled: nothing for {:.0?} ({e})", self.t.stall),
                ))
            }
            Err(e) => return Err(e),
        };
        if n > 0 {
            self.last = Instant::now();
        }
        self.in_window += n as u64;
        let elapsed = self.window.elapsed();
        if n > 0 && elapsed >= self.t.stall {
            let want = (self.t.min_rate as f64 * elapsed.as_secs_f64()) as u64;
            if self.in_window < want {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the body stalled: {} bytes in {:.1?}, under the minimum of {} bytes a second",
                        self.in_window, elapsed, self.t.min_rate
                    ),
                ));
            }
            self.window = Instant::now();
            self.in_window = 0;
        }
        Ok(n)
    }
}

/// Whether an IO error from a response body is the client's timeout.
fn is_timeout(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut || chain(e).to_ascii_lowercase().contains("timed out")
}

/// How often and how long to try again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // go-containerregistry tries 3 times with 1 s ×3 backoff; a builder on a CI runner is
        // better served by a couple more, shorter tries.
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(250),
            max_wait: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ms = self.base.as_millis() as u64 * (1u64 << attempt.min(6));
        // Up to 10 % jitter, from the clock's nanoseconds (no RNG needed for this).
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0)
            % (ms / 10 + 1);
        Duration::from_millis(ms + jitter).min(self.max_wait)
    }
}

/// The auth scheme a registry asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parse `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` (or `Basic realm=…`).
pub fn parse_challenge(h: &str) -> Option<(Challenge, HashMap<String, String>)> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        let key = rest[ks..i].trim().to_ascii_lowercase();
        i += 1;
        let val = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = Vec::new();
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                v.push(b[i]);
                i += 1;
            }
            i += 1;
            String::from_utf8_lossy(&v).into_owned()
        } else {
            let vs = i.min(b.len());
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            rest[vs..i.min(b.len())].trim().to_string()
        };
        if !key.is_empty() {
            params.insert(key, val);
        }
    }
    let c = match scheme.to_ascii_lowercase().as_str() {
        "basic" => Challenge::Basic,
        "bearer" => Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
        },
        _ => return None,
    };
    Some((c, params))
}

struct Token {
    value: String,
    expires: Instant,
}

/// One registry host.
pub(crate) struct Host {
    /// As in references: `docker.io`, `localhost:5000`.
    pub name: String,
    /// Where requests go: `https://registry-1.docker.io`, `http://127.0.0.1:5000`.
    base: Mutex<Option<String>>,
    plain_http_ok: bool,
    http: Client,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, Token>>,
    creds: Mutex<HashMap<String, Option<Credential>>>,
    certs_dirs: String,
}

/// A registry session: hosts, tokens, policy. Cheap to share across threads.
pub struct Registry {
    pub policy: Policy,
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    pub(crate) observer: Arc<dyn Observer + Send>,
    /// Credentials given on the command line (login's check) for one host.
    forced: Mutex<HashMap<String, Credential>>,
}

fn is_loopback(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The detail of a transport error, its causes included (reqwest's own text is terse).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A failure that trying again will not fix soon (the name does not resolve).
fn is_permanent(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("dns error") || d.contains("failed to lookup address")
}

fn is_tls(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("certificate") || d.contains("tls") || d.contains("handshake")
}

impl Registry {
    pub fn new(policy: Policy) -> Registry {
        Registry {
            policy,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            hosts: Mutex::new(HashMap::new()),
            observer: Arc::new(Quiet),
            forced: Mutex::new(HashMap::new()),
        }
    }

    /// A session with the machine's registries.conf and the timeouts of the environment.
    pub fn from_environment() -> Result<Registry> {
        let mut r = Registry::new(Policy::load()?);
        r.timeouts = Timeouts::from_env()?;
        Ok(r)
    }

    pub fn with_observer(mut self, o: Arc<dyn Observer + Send>) -> Registry {
        self.observer = o;
        self
    }

    /// Use this credential for `host` instead of looking one up (login checks it this way).
    pub fn force_credential(&self, host: &str, c: Credential) {
        self.forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string(), c);
    }

    pub(crate) fn host(&self, name: &str, insecure: bool) -> Result<Arc<Host>> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = hosts.get(name) {
            return Ok(h.clone());
        }
        let certs = host_certs(&self.policy.certs_dirs, name)?;
        let mut b = reqwest::ClientBuilder::new()
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.timeouts.stall.min(Duration::from_secs(30)));
        for (p, pem) in &certs.cas {
            let cs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::Config {
                path: p.clone(),
                message: format!("not a PEM certificate: {e}"),
            })?;
            for c in cs {
                b = b.add_root_certificate(c);
            }
        }
        if let Some((p, pem)) = &certs.client {
            let id = reqwest::Identity::from_pem(pem).map_err(|e| Error::Config {
                path: p.clone(),
                message: format!("not a PEM certificate and key: {e}"),
            })?;
            b = b.identity(id);
        }
        if insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        // HTTPS_PROXY/NO_PROXY apply (reqwest reads them), except to loopback registries, which
        // a proxy cannot reach (Go's ProxyFromEnvironment never proxies them either).
        if is_loopback(name) {
            b = b.no_proxy();
        }
        // The blocking client's timeout bounds each wait (for the answer, and each read of a
        // body): a stalled connection fails instead of hanging; long bodies are fine, as long
        // as they keep moving (`Paced`).
        let http = reqwest::blocking::ClientBuilder::from(b)
            .timeout(self.timeouts.stall)
            .build()
            .map_err(|e| Error::Unreachable {
                host: name.to_string(),
                detail: format!("setting up the HTTP client: {}", chain(&e)),
            })?;
        let h = Arc::new(Host {
            name: name.to_string(),
            base: Mutex::new(None),
            plain_http_ok: insecure || is_loopback(name),
            http,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            creds: Mutex::new(HashMap::new()),
            certs_dirs: certs
                .dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
        hosts.insert(name.to_string(), h.clone());
        Ok(h)
    }

    fn credential(&self, host: &Host, repo: &str) -> Result<Option<Credential>> {
        if let Some(c) = self
            .forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host.name)
        {
            return Ok(Some(c.clone()));
        }
        let mut m = host.creds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(repo) {
            return Ok(c.clone());
        }
        let c = credentials::lookup(&host.name, repo)?;
        m.insert(repo.to_string(), c.clone());
        Ok(c)
    }

    fn transport_error(&self, host: &Host, what: &str, e: &reqwest::Error) -> Error {
        let detail = chain(e);
        if e.is_timeout() {
            return Error::Stalled {
                host: host.name.clone(),
                what: what.to_string(),
                detail: format!(
                    "no answer within {:.0?} ({})",
                    self.timeouts.stall,
                    self.timeouts.describe()
                ),
            };
        }
        if e.is_redirect() {
            return Error::TooManyRedirects {
                host: host.name.clone(),
                what: what.to_string(),
                detail,
            };
        }
        if is_tls(&detail) {
            Error::Tls {
                host: host.name.clone(),
                detail,
                dirs: host.certs_dirs.clone(),
            }
        } else if ["connection closed", "broken pipe", "connection reset"]
            .iter()
            .any(|m| detail.contains(m))
            && e.url().is_some_and(|u| u.scheme() == "https")
        {
            // A TLS server that wants a client certificate closes the connection after the
            // handshake; the client sees the close, or (when it was already writing, HTTP/2
            // especially) a broken pipe or a reset, depending on timing.
            Error::ClosedAfterHandshake {
                host: host.name.clone(),
                detail,
                dirs: host.certs_dirs.clone(),
            }
        } else {
            Error::Unreachable {
                host: host.name.clone(),
                detail,
            }
        }
    }

    /// Whether the registry at `location` (`host[:port][/path]`) answers `GET /v2/` as a
    /// registry, over HTTPS or (loopback and insecure ones) plain HTTP: the base URL it
    /// answered at, or why not (`strata doctor`).
    pub fn probe(&self, location: &str, insecure: bool) -> Result<String> {
        let name = location.split('/').next().unwrap_or(location);
        let host = self.host(name, insecure || self.policy_insecure(name))?;
        self.base(&host)
    }

    fn policy_insecure(&self, name: &str) -> bool {
        super::Reference::parse(&format!("{name}/x")).is_ok_and(|r| self.policy.insecure(&r))
    }

    /// The error for a body that could not be read: a stall (see [`Paced`]) names the
    /// registry, the request and the settings; anything else is the connection's failure.
    pub(crate) fn body_error(&self, host: &Host, what: &str, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::TimedOut {
            Error::Stalled {
                host: host.name.clone(),
                what: what.to_string(),
                detail: format!("{e} ({})", self.timeouts.describe()),
            }
        } else {
            Error::Unreachable {
                host: host.name.clone(),
                detail: format!("{what}: {e}"),
            }
        }
    }

    /// The base URL of `host`, learning its scheme and auth challenge from `GET /v2/` once.
    pub(crate) fn base(&self, host: &Host) -> Result<String> {
        if let Some(b) = host.base.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(b);
        }
        let api = if host.name == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            host.name.clone()
        };
        // HTTPS first; plain HTTP only for loopback and insecure hosts, and only when it
        // answers like a registry (200 or 401): a TLS registry with an unknown CA must say so.
        let https = self.ping(host, &format!("https://{api}"), !host.plain_http_ok);
        let (base, resp) = match https {
            Ok(r) => (format!("https://{api}"), r),
            Err(e) if host.plain_http_ok => {
                let base = format!("http://{api}");
                match self.ping(host, &base, true) {
                    Ok(r) if r.status().is_success() || r.status() == StatusCode::UNAUTHORIZED => {
                        (base, r)
                    }
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let ch = match resp.status() {
            StatusCode::UNAUTHORIZED => resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge)
                .map(|(c, _)| c)
                .unwrap_or(Challenge::None),
            _ => Challenge::None,
        };
        *host.challenge.lock().unwrap_or_else(|e| e.into_inner()) = Some(ch);
        *host.base.lock().unwrap_or_else(|e| e.into_inner()) = Some(base.clone());
        Ok(base)
    }

    /// `GET BASE/v2/`, retried on transport errors when `retry` (not on TLS failures).
    fn ping(&self, host: &Host, base: &str, retry: bool) -> Result<Response> {
        let url = format!("{base}/v2/");
        self.retrying(host, &format!("GET {url}"), retry, false, &mut || {
            Ok(host.http.get(&url))
        })
    }

    /// Send what `mk` builds until it is answered. Transport errors are tried again when
    /// `retry_transport` (but not TLS failures or names that do not resolve), and 408, 429 and
    /// 5xx answers when `retry_status`, with backoff or the answer's `Retry-After`. Every other
    /// answer goes back to the caller.
    fn retrying(
        &self,
        host: &Host,
        what: &str,
        retry_transport: bool,
        retry_status: bool,
        mk: &mut dyn FnMut() -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let mut attempt = 0;
        loop {
            match mk()?.send() {
                Err(e) => {
                    attempt += 1;
                    let err = self.transport_error(host, what, &e);
                    // A stall is not tried again: the registry had its time (waiting again
                    // would multiply it), and a redirect loop loops again.
                    if !retry_transport
                        || attempt >= self.retry.attempts
                        || matches!(
                            err,
                            Error::Tls { .. }
                                | Error::Stalled { .. }
                                | Error::TooManyRedirects { .. }
                        )
                        || is_permanent(&chain(&e))
                    {
                        return Err(err);
                    }
                    self.observer.retry(what, &chain(&e));
                    std::thread::sleep(self.retry.backoff(attempt));
                }
                Ok(r)
                    if retry_status
                        && retryable(r.status())
                        && attempt + 1 < self.retry.attempts =>
                {
                    attempt += 1;
                    let wait = retry_after(r.headers()).unwrap_or(self.retry.backoff(attempt));
                    self.observer
                        .retry(what, &format!("HTTP {}", r.status().as_u16()));
                    std::thread::sleep(wait.min(self.retry.max_wait));
                }
                Ok(r) => return Ok(r),
            }
        }
    }

    /// A Bearer token for `scopes` (from the cache while it is fresh).
    fn token(
        &self,
        host: &Host,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        repo: &str,
        reference: &str,
    ) -> Result<String> {
        let key = scopes.join(" ");
        if let Some(t) = host
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|t| t.expires > Instant::now())
        {
            return Ok(t.value.clone());
        }
        let cred = self.credential(host, repo)?;
        let tried = cred
            .as_ref()
            .map(|c| c.source.clone())
            .unwrap_or_else(|| "none (anonymous)".into());
        let resp = self.retrying(
            host,
            &format!("token from {realm}"),
            true,
            true,
            &mut || {
                Ok(match cred.as_ref().map(|c| &c.secret) {
                    Some(Secret::IdentityToken { token }) => {
                        let mut form = vec![
                            ("grant_type", "refresh_token".to_string()),
                            ("refresh_token", token.clone()),
                            ("client_id", "strata".to_string()),
                            ("scope", scopes.join(" ")),
                        ];
                        if let Some(s) = service {
                            form.push(("service", s.to_string()));
                        }
                        host.http.post(realm).form(&form)
                    }
                    other => {
                        let mut q: Vec<(&str, &str)> = Vec::new();
                        if let Some(s) = service {
                            q.push(("service", s));
                        }
                        for s in scopes {
                            q.push(("scope", s));
                        }
                        let rb = host.http.get(realm).query(&q);
                        match other {
                            Some(Secret::Basic { username, password }) => {
                                rb.basic_auth(username, Some(password))
                            }
                            _ => rb,
                        }
                    }
                })
            },
        )?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Denied {
                reference: reference.to_string(),
                registry: host.name.clone(),
                detail: format!(
                    "the token service {realm} answered HTTP {}",
                    status.as_u16()
                ),
                tried,
            });
        }
        if !status.is_success() {
            return Err(Error::Http {
                method: "GET".into(),
                url: realm.to_string(),
                status: status.as_u16(),
                body: snippet(resp),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        // A token answer is small; read at most 1 MiB of it.
        let mut body = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(Paced::new(resp, self.timeouts), 1 << 20),
            &mut body,
        )
        .map_err(|e| self.body_error(host, &format!("token from {realm}"), e))?;
        let t: TokenReply = serde_json::from_slice(&body).map_err(|e| {
            Error::Protocol(format!("the token service {realm} sent no JSON token: {e}"))
        })?;
        let value = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::Protocol(format!("the token service {realm} sent an empty token"))
            })?;
        // The spec's default lifetime is 60 s; renew 10 s early.
        let life = t.expires_in.unwrap_or(60).max(20);
        host.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key,
                Token {
                    value: value.clone(),
                    expires: Instant::now() + Duration::from_secs(life - 10),
                },
            );
        Ok(value)
    }

    fn authorize(
        &self,
        host: &Host,
        rb: RequestBuilder,
        scopes: &[String],
        repo: &str,
        reference: &str,
    ) -> Result<RequestBuilder> {
        let ch = host
            .challenge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or(Challenge::None);
        Ok(match ch {
            Challenge::None => rb,
            Challenge::Basic => match self.credential(host, repo)?.map(|c| c.secret) {
                Some(Secret::Basic { username, password }) => {
                    rb.basic_auth(username, Some(password))
                }
                _ => rb,
            },
            Challenge::Bearer { realm, service } => {
                let t = self.token(host, &realm, service.as_deref(), scopes, repo, reference)?;
                rb.header(AUTHORIZATION, format!("Bearer {t}"))
            }
        })
    }

    /// Send a request made by `mk(client, base_url)` with auth and retries. `scopes` are the
    /// token scopes it needs; `repo` picks the credential; `reference` names it in errors.
    pub(crate) fn send(
        &self,
        host: &Host,
        what: &str,
        scopes: &[String],
        repo: &str,
        reference: &str,
        mk: &dyn Fn(&Client, &str) -> RequestBuilder,
    ) -> Result<Response> {
        self.send_with(host, what, scopes, repo, reference, true, mk)
    }

    /// [`Registry::send`]; with `retry_status` false, a 408/429/5xx answer goes back to the
    /// caller instead of being tried again (an upload session is not replayed: the caller
    /// starts a new one).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_with(
        &self,
        host: &Host,
        what: &str,
        scopes: &[String],
        repo: &str,
        reference: &str,
        retry_status: bool,
        mk: &dyn Fn(&Client, &str) -> RequestBuilder,
    ) -> Result<Response> {
        let base = self.base(host)?;
        let mut reauthed = false;
        loop {
            let r = self.retrying(host, what, true, retry_status, &mut || {
                self.authorize(host, mk(&host.http, &base), scopes, repo, reference)
            })?;
            match r.status() {
                StatusCode::UNAUTHORIZED if !reauthed => {
                    // A new or changed challenge, or an expired token: learn it, drop the
                    // cached tokens, try once more.
                    reauthed = true;
                    if let Some((c, _)) = r
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge)
                    {
                        *host.challenge.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
                    }
                    host.tokens
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clear();
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    let tried = self
                        .credential(host, repo)?
                        .map(|c| c.source)
                        .unwrap_or_else(|| "none (anonymous)".into());
                    let detail = r
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_challenge)
                        .and_then(|(_, p)| p.get("error").cloned())
                        .unwrap_or_else(|| format!("HTTP {}", r.status().as_u16()));
                    return Err(Error::Denied {
                        reference: reference.to_string(),
                        registry: host.name.clone(),
                        detail: format!("{what}: {detail}"),
                        tried,
                    });
                }
                _ => return Ok(r),
            }
        }
    }
}

impl Registry {
    /// Check that the credential in force for `host` is accepted (what `login` does before it
    /// saves one): `GET /v2/` with it must answer 200.
    pub fn check_login(&self, host: &str) -> Result<()> {
        let insecure = self
            .policy
            .insecure(&super::Reference::from_parts(host, "x", None, None));
        let h = self.host(host, insecure)?;
        let r = self.send(&h, "GET /v2/", &[], "", host, &|c, base| {
            c.get(format!("{base}/v2/"))
        })?;
        if r.status().is_success() {
            return Ok(());
        }
        Err(Error::Http {
            method: "GET".into(),
            url: format!("{host}/v2/"),
            status: r.status().as_u16(),
            body: snippet(r),
        })
    }
}

pub(crate) fn retryable(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 499 | 500 | 502 | 503 | 504 | 522)
}

/// `Retry-After` in seconds (an HTTP date is treated as one second).
pub(crate) fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    Some(Duration::from_secs(v.trim().parse::<u64>().unwrap_or(1)))
}

/// The start of an error body, for messages (bounded in size, and in time: 10 s, however
/// slowly it comes).
pub(crate) fn snippet(r: Response) -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    let started = Instant::now();
    let mut r = r.take(2048);
    let mut chunk = [0u8; 512];
    while started.elapsed() < Duration::from_secs(10) {
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let s = String::from_utf8_lossy(&buf).trim().to_string();
    // A registry error body: {"errors":[{"code":…,"message":…}]}.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&s) {
        if let Some(errs) = v.get("errors").and_then(|e| e.as_array()) {
            let parts: Vec<String> = errs
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.get("code").and_then(|c| c.as_str()).unwrap_or("?"),
                        e.get("message").and_then(|c| c.as_str()).unwrap_or("")
                    )
                })
                .collect();
            return parts.join("; ");
        }
    }
    s
}

/// base64 of `user:password`, as Basic auth and auth.json spell it.
pub fn basic_value(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (c, p) = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:5558/token",service="strata-test",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "http://127.0.0.1:5558/token".into(),
                service: Some("strata-test".into())
            }
        );
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        assert_eq!(p["error"], "insufficient_scope");
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#).unwrap().0,
            Challenge::Basic
        );
        assert!(parse_challenge("Negotiate abc").is_none());
        assert!(parse_challenge("Bearer service=x").is_none(), "no realm");
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "ghcr.io",
            "localhost.evil.test",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = RetryPolicy::default();
        assert!(r.backoff(1) < r.backoff(3));
        assert!(r.backoff(30) <= r.max_wait);
    }
}
