//! What the engine tells whoever watches a build. The engine emits [`Event`]s through a
//! [`Reporter`]; it never prints. The views (a tty display, BuildKit-style plain lines, json
//! events) live in the command line, which chooses one.

use crate::registry::Observer;

/// A step's number in the build (`#5` in the plain view), unique across stages.
pub type StepId = usize;

/// One thing that happened in a build. Registry transfers (pull and push bytes) come through
/// the [`Observer`] half of the reporter.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A line for the user that belongs to no step (a warning, an output written).
    Note(&'a str),
    /// A step began: `name` is `[stage n/total] INSTRUCTION`.
    Started { step: StepId, name: &'a str },
    /// The step's cache key missed, and why (files changed, an earlier step ran, …).
    Missed { step: StepId, reason: &'a str },
    /// A line of a step's output (a RUN command's stdout and stderr, or a note about it).
    Log { step: StepId, line: &'a str },
    /// A RUN step's command ended: it ran for `command` in the sandbox, from its start there
    /// to its exit. The rest of the step's time is strata's (the sandbox's set-up, the layer).
    Ran {
        step: StepId,
        command: std::time::Duration,
    },
    /// The step's result came from the cache.
    Cached { step: StepId },
    /// The step ran and finished.
    Done { step: StepId },
    /// The step failed: `error` is the whole chain of causes.
    Failed { step: StepId, error: &'a str },
    /// The step stopped because another stage failed first.
    Cancelled { step: StepId },
    /// The build finished: `summary` names the image and the step counts.
    Finished { summary: &'a str },
}

/// Receives a build's events (from several stage threads at once) and the registry's.
pub trait Reporter: Observer + Send + Sync {
    fn event(&self, e: Event<'_>);
}

/// A reporter that drops everything (library callers that want no output).
pub struct Silent;

impl Observer for Silent {
    fn cancelled(&self) -> bool {
        super::interrupt::requested().is_some()
    }
}

impl Reporter for Silent {
    fn event(&self, _: Event<'_>) {}
}
