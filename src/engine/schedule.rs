//! Which stage runs when: a thread per stage the target needs, each starting once its base
//! stage (`FROM` another stage) is done, at most `jobs` of them working at a time; a step that
//! reads another stage (`COPY --from`, `RUN --mount=from=`) waits for it there, giving its job
//! slot back while it waits, so the steps before it run alongside that stage as in BuildKit's
//! graph of steps. The first failure (or Ctrl-C) cancels the rest, killing the sandboxes that
//! are running.
//!
//! The stages' results, the job slots, the first error and the running sandboxes live here,
//! not in the build's shared context ([`super::Build`]), which only reads them.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::error::{BuildError, Cancelled};
use super::StageResult;
use crate::plan::{DepKind, Plan};

thread_local! {
    /// Whether this thread (a stage's) holds a job slot now: waiting for another stage's
    /// result gives it back.
    static HOLDING: Cell<bool> = const { Cell::new(false) };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct Schedule {
    /// Each stage's result once it is known; `None` when it failed or was cancelled.
    results: Mutex<HashMap<usize, Option<Arc<StageResult>>>>,
    ready: Condvar,
    failed: AtomicBool,
    /// The first error, with the step it came from.
    error: Mutex<Option<BuildError>>,
    slots: Mutex<usize>,
    slot_free: Condvar,
    /// Sandbox children running now (killed when the build fails).
    running: Mutex<Vec<u32>>,
    /// The stages that run, or were claimed to run (see [`Schedule::claim`]).
    claimed: Mutex<std::collections::HashSet<usize>>,
    /// Shared with the schedules of the other platforms of a multi-platform build: set when
    /// one fails, and then every other cancels (see [`Schedule::linked`]).
    peers: Option<Arc<AtomicBool>>,
}

/// A job slot, given back when dropped.
struct Slot<'s>(&'s Schedule);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.slots) += 1;
        self.0.slot_free.notify_one();
    }
}

/// A running sandbox child, forgotten when dropped.
pub(crate) struct Tracked<'s> {
    schedule: &'s Schedule,
    pid: u32,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        lock(&self.schedule.running).retain(|p| *p != self.pid);
    }
}

fn kill(pid: u32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

impl Schedule {
    pub fn new(jobs: usize) -> Schedule {
        Schedule {
            results: Mutex::new(HashMap::new()),
            ready: Condvar::new(),
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            slots: Mutex::new(jobs.max(1)),
            slot_free: Condvar::new(),
            running: Mutex::new(Vec::new()),
            claimed: Mutex::new(Default::default()),
            peers: None,
        }
    }

    /// This schedule fails with [`Cancelled`] when `peers` is set, and sets it when it fails.
    pub fn linked(mut self, peers: Option<Arc<AtomicBool>>) -> Schedule {
        self.peers = peers;
        self
    }

    /// Whether a linked schedule failed (this one not yet).
    fn peer_failed(&self) -> bool {
        self.peers
            .as_ref()
            .is_some_and(|p| p.load(Ordering::SeqCst))
            && !self.failed()
    }

    /// Claim stage `i` for the calling thread when nothing runs it: a stage the plan did not
    /// schedule (an ONBUILD trigger of a base image, known only once the image is read, can
    /// name one) is then run by the step that needs it, instead of being waited for forever.
    pub fn claim(&self, i: usize) -> bool {
        lock(&self.claimed).insert(i)
    }

    /// The result of a stage run through [`Schedule::claim`].
    pub fn finish(&self, i: usize, r: Result<StageResult, BuildError>) {
        match r {
            Ok(res) => self.set_result(i, Some(Arc::new(res))),
            Err(e) => {
                self.fail(e);
                self.set_result(i, None);
            }
        }
    }

    /// Wait for stage `i`; `None` when it failed or was cancelled. A stage thread gives its
    /// job slot back while it waits (the stage it waits for may need it) and takes one again
    /// before it goes on.
    pub fn result(&self, i: usize) -> Option<Arc<StageResult>> {
        let mut r = lock(&self.results);
        if let Some(v) = r.get(&i) {
            return v.clone();
        }
        let holding = HOLDING.with(|h| h.replace(false));
        if holding {
            *lock(&self.slots) += 1;
            self.slot_free.notify_one();
        }
        let v = loop {
            if let Some(v) = r.get(&i) {
                break v.clone();
            }
            // A failed or interrupted build never gives the result: stop waiting.
            if self.failed() {
                break None;
            }
            r = self.ready.wait(r).unwrap_or_else(|e| e.into_inner());
        };
        drop(r);
        if holding {
            std::mem::forget(self.slot());
            HOLDING.with(|h| h.set(true));
        }
        v
    }

    fn set_result(&self, i: usize, v: Option<Arc<StageResult>>) {
        lock(&self.results).insert(i, v);
        self.ready.notify_all();
    }

    fn slot(&self) -> Slot<'_> {
        let mut s = lock(&self.slots);
        while *s == 0 {
            s = self.slot_free.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        *s -= 1;
        Slot(self)
    }

    /// Has the build failed (or been interrupted)? Stages stop at their next step.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Fail the build with `e` (only the first error is kept) and kill the running sandboxes.
    pub fn fail(&self, e: BuildError) {
        self.failed.store(true, Ordering::SeqCst);
        if let Some(p) = &self.peers {
            p.store(true, Ordering::SeqCst);
        }
        // The first error is the build's (set before the kills below, whose victims report
        // only that they were cancelled).
        lock(&self.error).get_or_insert(e);
        for pid in lock(&self.running).iter() {
            kill(*pid);
        }
        // Steps waiting for another stage's result wake up and see the failure.
        drop(lock(&self.results));
        self.ready.notify_all();
    }

    /// The build's first error, if it failed.
    pub fn take_error(&self) -> Option<BuildError> {
        lock(&self.error).take()
    }

    /// Note a sandbox child as running until the returned guard drops; a failure that came
    /// just before it started kills it at once.
    pub fn track(&self, pid: u32) -> Tracked<'_> {
        lock(&self.running).push(pid);
        if self.failed() {
            kill(pid);
        }
        Tracked {
            schedule: self,
            pid,
        }
    }

    /// Run the stages of `plan.order`, each with `stage`, on threads, as their inputs allow;
    /// a stage that panicked takes the build down with it once every thread is joined.
    pub fn run(
        &self,
        plan: &Plan,
        stage: &(dyn Fn(usize) -> Result<StageResult, BuildError> + Sync),
    ) {
        // Set when every stage is done; the watcher waits on it, so the build's end never
        // waits for the watcher's next poll.
        let done = (Mutex::new(false), Condvar::new());
        std::thread::scope(|s| {
            // Ctrl-C or SIGTERM: cancel like a failed step (running steps killed, their
            // scratch directories removed on the way out).
            let done = &done;
            std::thread::Builder::new()
                .name("interrupt".into())
                .spawn_scoped(s, move || {
                    let mut finished = lock(&done.0);
                    while !*finished {
                        if let Some(i) = super::interrupt::requested() {
                            drop(finished);
                            self.fail(i.into());
                            return;
                        }
                        if self.peer_failed() {
                            drop(finished);
                            self.fail(Cancelled.into());
                            return;
                        }
                        finished = done
                            .1
                            .wait_timeout(finished, std::time::Duration::from_millis(20))
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                })
                .expect("spawning the interrupt watcher");
            lock(&self.claimed).extend(plan.order.iter().copied());
            let mut threads = Vec::new();
            for &i in &plan.order {
                let h = std::thread::Builder::new()
                    .name(format!("stage-{i}"))
                    .spawn_scoped(s, move || {
                        // Wait for the base stage before taking a job slot; the stages a
                        // step reads are waited for by that step (see `result`).
                        let base_ok = plan.stages[i]
                            .deps
                            .iter()
                            .filter(|d| d.kind == DepKind::From)
                            .all(|d| self.result(d.stage).is_some());
                        if !base_ok || self.failed() {
                            self.set_result(i, None);
                            return;
                        }
                        let slot = self.slot();
                        HOLDING.with(|h| h.set(true));
                        let r = stage(i);
                        HOLDING.with(|h| h.set(false));
                        drop(slot);
                        match r {
                            Ok(res) => self.set_result(i, Some(Arc::new(res))),
                            Err(e) => {
                                self.fail(e);
                                self.set_result(i, None);
                            }
                        }
                    })
                    .expect("spawning a stage thread");
                threads.push(h);
            }
            // Joined here (not at the end of the scope) so the watcher learns the build is over.
            let mut panicked = None;
            for h in threads {
                if let Err(p) = h.join() {
                    panicked.get_or_insert(p);
                }
            }
            *lock(&done.0) = true;
            done.1.notify_all();
            if let Some(p) = panicked {
                std::panic::resume_unwind(p);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::error::Error;

    #[test]
    fn the_first_error_is_kept() {
        let s = Schedule::new(1);
        assert!(!s.failed());
        s.fail(Error::Internal("first".into()).into());
        s.fail(Error::Internal("second".into()).into());
        assert!(s.failed());
        assert_eq!(s.take_error().unwrap().to_string(), "internal error: first");
    }

    #[test]
    fn tracked_children_are_forgotten_when_done() {
        let s = Schedule::new(1);
        {
            let _t = s.track(u32::MAX / 2);
            assert_eq!(lock(&s.running).len(), 1);
        }
        assert!(lock(&s.running).is_empty());
    }

    #[test]
    fn a_stage_waiting_for_another_gives_its_slot_back() {
        let s = Schedule::new(1);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|sc| {
            let waiter = sc.spawn(|| {
                let _slot = s.slot();
                HOLDING.with(|h| h.set(true));
                tx.send(()).unwrap();
                let r = s.result(7);
                // It holds a slot again when it goes on.
                let after = *lock(&s.slots);
                HOLDING.with(|h| h.set(false));
                (r.is_none(), after)
            });
            rx.recv().unwrap();
            // The only slot comes back while the waiter waits (the stage it waits for takes it).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while *lock(&s.slots) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the waiting stage kept its slot"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let other = s.slot();
            s.set_result(7, None);
            drop(other);
            assert_eq!(waiter.join().unwrap(), (true, 0));
        });
        assert_eq!(*lock(&s.slots), 1);
    }

    #[test]
    fn slots_limit_the_stages_at_work() {
        let s = Schedule::new(2);
        let a = s.slot();
        let _b = s.slot();
        assert_eq!(*lock(&s.slots), 0);
        drop(a);
        assert_eq!(*lock(&s.slots), 1);
    }
}
