//! The views of a build's events ([`strata::engine::report`]): a tty view (a line per running step with its time and the tail of its
//! output, folding into a summary), `plain` (every line prefixed by its step, BuildKit style:
//! `#5 [build 2/3] RUN make`, `#5 0.42 output`, `#5 DONE 1.2s`), `json` (one event per line), or
//! quiet.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata::engine::report::{Event, Reporter};
use strata::oci::Digest;
use strata::registry::{BlobOutcome, Observer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tty,
    Plain,
    Json,
    Quiet,
}

impl Mode {
    /// `auto`, `tty`, `plain`, `json`; `auto` is tty when stderr is a terminal.
    pub fn parse(s: &str, quiet: bool) -> Option<Mode> {
        if quiet {
            return Some(Mode::Quiet);
        }
        Some(match s {
            "auto" => {
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    Mode::Tty
                } else {
                    Mode::Plain
                }
            }
            "tty" => Mode::Tty,
            "plain" => Mode::Plain,
            "json" => Mode::Json,
            "quiet" => Mode::Quiet,
            _ => return None,
        })
    }
}

struct StepView {
    name: String,
    /// Why the cache missed (the tty view shows it with the step's time).
    missed: Option<String>,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
    /// The whole log (capped), shown in full when the step fails.
    log: Vec<String>,
    log_bytes: usize,
}

pub struct Progress {
    mode: Mode,
    start: Instant,
    multi: Option<indicatif::MultiProgress>,
    steps: Mutex<HashMap<usize, StepView>>,
    /// A bar per blob being pulled or pushed (tty view).
    blobs: Mutex<HashMap<Digest, indicatif::ProgressBar>>,
    out: Mutex<std::io::Stderr>,
}

/// Keep at most this much of a step's output for the failure report.
const LOG_CAP: usize = 4 << 20;

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let multi = (mode == Mode::Tty).then(|| {
            indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
        });
        Progress {
            mode,
            start: Instant::now(),
            multi,
            steps: Mutex::new(HashMap::new()),
            blobs: Mutex::new(HashMap::new()),
            out: Mutex::new(std::io::stderr()),
        }
    }

    fn line(&self, s: &str) {
        if let Some(m) = &self.multi {
            let _ = m.println(s);
            return;
        }
        let mut o = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(o, "{s}");
    }

    /// A JSON event, with `at`: the seconds since the build started (a timeline for tools).
    fn json(&self, mut v: serde_json::Value) {
        if let serde_json::Value::Object(m) = &mut v {
            m.insert(
                "at".into(),
                serde_json::json!(self.start.elapsed().as_secs_f64()),
            );
        }
        self.line(&v.to_string());
    }

    pub fn note(&self, msg: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => self.json(serde_json::json!({"event": "note", "message": msg})),
            _ => self.line(msg),
        }
    }

    fn start(&self, id: usize, name: &str) {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(indicatif::ProgressBar::new_spinner());
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {prefix} {elapsed:>4}\n    {wide_msg:.dim}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.set_prefix(name.to_string());
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            StepView {
                name: name.to_string(),
                missed: None,
                started: Instant::now(),
                bar,
                log: Vec::new(),
                log_bytes: 0,
            },
        );
        match self.mode {
            Mode::Plain => self.line(&format!("#{id} {name}")),
            Mode::Json => {
                self.json(serde_json::json!({"event": "start", "step": id, "name": name}))
            }
            _ => {}
        }
    }

    /// A line of a step's output.
    fn log(&self, id: usize, text: &str) {
        let t = {
            let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
            let Some(s) = steps.get_mut(&id) else { return };
            if s.log_bytes < LOG_CAP {
                s.log_bytes += text.len();
                s.log.push(text.to_string());
            }
            if let Some(b) = &s.bar {
                b.set_message(text.to_string());
            }
            s.started.elapsed()
        };
        match self.mode {
            Mode::Plain => self.line(&format!("#{id} {:.3} {text}", t.as_secs_f64())),
            Mode::Json => self.json(serde_json::json!({"event": "log", "step": id, "line": text})),
            _ => {}
        }
    }

    fn end(&self, id: usize) -> Option<StepView> {
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    fn cached(&self, id: usize) {
        let s = self.end(id);
        match self.mode {
            Mode::Plain => self.line(&format!("#{id} CACHED")),
            Mode::Json => self.json(serde_json::json!({"event": "cached", "step": id})),
            Mode::Tty => {
                if let Some(s) = s {
                    if let Some(b) = s.bar {
                        b.finish_and_clear();
                    }
                    self.line(&format!("  CACHED {}", s.name));
                }
            }
            Mode::Quiet => {}
        }
    }

    /// A step that ran; `why` says why the cache missed.
    fn miss(&self, id: usize, why: &str) {
        match self.mode {
            Mode::Plain => self.line(&format!("#{id} cache miss: {why}")),
            Mode::Json => {
                self.json(serde_json::json!({"event": "miss", "step": id, "reason": why}))
            }
            Mode::Tty => {
                if let Some(s) = self
                    .steps
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&id)
                {
                    if let Some(b) = &s.bar {
                        b.set_message(format!("cache miss: {why}"));
                    }
                    s.missed = Some(why.to_string());
                }
            }
            Mode::Quiet => {}
        }
    }

    fn done(&self, id: usize) {
        let s = self.end(id);
        let t = s.as_ref().map(|s| s.started.elapsed()).unwrap_or_default();
        match self.mode {
            Mode::Plain => self.line(&format!("#{id} DONE {:.1}s", t.as_secs_f64())),
            Mode::Json => self
                .json(serde_json::json!({"event": "done", "step": id, "seconds": t.as_secs_f64()})),
            Mode::Tty => {
                if let Some(s) = s {
                    if let Some(b) = s.bar {
                        b.finish_and_clear();
                    }
                    match &s.missed {
                        Some(why) => self.line(&format!(
                            "  {:>5.1}s {} (cache miss: {why})",
                            t.as_secs_f64(),
                            s.name
                        )),
                        None => self.line(&format!("  {:>5.1}s {}", t.as_secs_f64(), s.name)),
                    }
                }
            }
            Mode::Quiet => {}
        }
    }

    /// A failed step: its whole log is printed (in every mode but json, where the lines were
    /// already sent), then the error.
    fn failed(&self, id: usize, error: &str) {
        let s = self.end(id);
        if let Some(b) = s.as_ref().and_then(|s| s.bar.as_ref()) {
            b.finish_and_clear();
        }
        match self.mode {
            Mode::Json => {
                self.json(serde_json::json!({"event": "error", "step": id, "error": error}))
            }
            Mode::Plain => self.line(&format!("#{id} ERROR: {error}")),
            Mode::Tty | Mode::Quiet => {
                if let Some(s) = s {
                    self.line(&format!("  FAILED {}", s.name));
                    for l in &s.log {
                        self.line(&format!("    {l}"));
                    }
                }
            }
        }
    }

    /// Drop a step that was started but stopped because another failed.
    fn cancelled(&self, id: usize) {
        if let Some(s) = self.end(id) {
            if let Some(b) = s.bar {
                b.finish_and_clear();
            }
            if self.mode == Mode::Plain {
                self.line(&format!("#{id} CANCELED"));
            }
        }
    }

    pub fn finish(&self, summary: &str) {
        let t = self.start.elapsed();
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => self.json(
                serde_json::json!({"event": "finished", "seconds": t.as_secs_f64(), "summary": summary}),
            ),
            _ => self.line(&format!("{summary} in {:.2}s", t.as_secs_f64())),
        }
    }
}

impl Reporter for Progress {
    fn event(&self, e: Event<'_>) {
        match e {
            Event::Note(m) => self.note(m),
            Event::Started { step, name } => self.start(step, name),
            Event::Missed { step, reason } => self.miss(step, reason),
            Event::Log { step, line } => self.log(step, line),
            Event::Ran { step, command } if self.mode == Mode::Json => self.json(
                serde_json::json!({"event": "ran", "step": step, "seconds": command.as_secs_f64()}),
            ),
            Event::Ran { .. } => {}
            Event::Cached { step } => self.cached(step),
            Event::Done { step } => self.done(step),
            Event::Failed { step, error } => self.failed(step, error),
            Event::Cancelled { step } => self.cancelled(step),
            Event::Finished { summary } => self.finish(summary),
        }
    }
}

/// Registry events: a bar per blob (bytes and rate) in the tty view, a line per blob in plain,
/// an event per blob in json.
impl Observer for Progress {
    fn cancelled(&self) -> bool {
        strata::engine::interrupt::requested().is_some()
    }

    fn resolved(&self, reference: &str, digest: &Digest, source: &str) {
        match self.mode {
            Mode::Json => self.json(serde_json::json!({"event": "resolved", "ref": reference, "digest": digest.to_string(), "source": source})),
            Mode::Quiet => {}
            _ => self.line(&format!("resolve {reference} → {digest} ({source})")),
        }
    }

    fn current(&self, reference: &str, digest: &Digest) {
        match self.mode {
            Mode::Json => self.json(serde_json::json!({"event": "current", "ref": reference, "digest": digest.to_string()})),
            Mode::Quiet => {}
            _ => self.line(&format!("{reference}: up to date ({digest})")),
        }
    }

    fn moved(&self, reference: &str, from: &Digest, to: &Digest) {
        match self.mode {
            Mode::Json => self.json(serde_json::json!({"event": "moved", "ref": reference, "from": from.to_string(), "to": to.to_string()})),
            Mode::Quiet => {}
            _ => self.line(&format!("{reference} moved from {from} to {to}")),
        }
    }

    fn blob_start(&self, digest: &Digest, size: u64, push: bool) {
        let verb = if push { "push" } else { "pull" };
        match self.mode {
            Mode::Tty => {
                if let Some(m) = &self.multi {
                    let b = m.add(indicatif::ProgressBar::new(size));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_prefix(format!("{verb} {}", digest.short()));
                    self.blobs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(digest.clone(), b);
                }
            }
            Mode::Plain => self.line(&format!("{verb} {} {size} bytes", digest.short())),
            Mode::Json => self.json(serde_json::json!({"event": "blob-start", "digest": digest.to_string(), "size": size, "push": push})),
            Mode::Quiet => {}
        }
    }

    fn blob_progress(&self, digest: &Digest, done: u64) {
        if let Some(b) = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            b.set_position(done);
        }
    }

    fn blob_done(&self, digest: &Digest, outcome: BlobOutcome) {
        if let Some(b) = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest)
        {
            b.finish_and_clear();
        }
        match self.mode {
            Mode::Plain => self.line(&format!("blob {} {}", digest.short(), outcome.as_str())),
            Mode::Json => self.json(serde_json::json!({"event": "blob-done", "digest": digest.to_string(), "outcome": outcome.as_str()})),
            _ => {}
        }
    }

    fn retry(&self, what: &str, why: &str) {
        self.note(&format!("retrying {what}: {why}"));
    }

    fn note(&self, msg: &str) {
        Progress::note(self, msg);
    }
}
