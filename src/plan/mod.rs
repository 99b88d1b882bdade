//! The build plan: stages, their dependencies, and the ARG scoping that FROM lines see.
//!
//! Input: typed instructions ([`crate::dockerfile::Command`]) and the build options that shape
//! the graph (build args, target, platform). Output: a [`Plan`] with every stage, the base each
//! stage builds on, the stages each one needs, and the ordered list of stages that the target
//! needs, deps first. Errors for unknown stages and cycles name the stage and the line.
//! Pure: no IO.

pub mod check;
mod expand;
pub mod lint;
pub mod lint_python;

pub use expand::{expand_instruction, Expanded, StageScope};

use std::collections::BTreeMap;

use crate::dockerfile::shell::{Lexer, Lookup};
use crate::dockerfile::{
    did_you_mean, ArgDecl, Command, Diagnostic, Dockerfile, Instruction, MountSpec, Span,
};

pub use crate::oci::Platform;

/// Build args that every build has without an ARG line in RUN's environment.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What shapes a plan.
#[derive(Debug, Clone)]
pub struct Options {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub target_platform: Platform,
    pub build_platform: Platform,
    /// Names given with `--build-context`: they replace a stage or image of the same name.
    pub named_contexts: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Platform::host(),
            build_platform: Platform::host(),
            named_contexts: Vec::new(),
        }
    }
}

impl Options {
    /// TARGETPLATFORM, BUILDPLATFORM and friends.
    pub fn platform_args(&self) -> Vec<(String, String)> {
        let t = &self.target_platform;
        let b = &self.build_platform;
        vec![
            ("TARGETPLATFORM".into(), t.to_string()),
            ("TARGETOS".into(), t.os.clone()),
            ("TARGETARCH".into(), t.architecture.clone()),
            (
                "TARGETVARIANT".into(),
                t.variant.clone().unwrap_or_default(),
            ),
            ("BUILDPLATFORM".into(), b.to_string()),
            ("BUILDOS".into(), b.os.clone()),
            ("BUILDARCH".into(), b.architecture.clone()),
            ("BUILDVARIANT".into(), b.variant.clone().unwrap_or_default()),
        ]
    }
}

/// What a stage builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// An empty filesystem.
    Scratch,
    /// An earlier (or later) stage of this Dockerfile.
    Stage(usize),
    /// An image reference (global ARGs expanded).
    Image(String),
    /// A `--build-context` of that name.
    Context(String),
}

/// Why one stage needs another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub stage: usize,
    pub kind: DepKind,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepKind {
    From,
    CopyFrom,
    MountFrom,
}

/// A source outside the Dockerfile that a stage reads with `--from` (an image or a named
/// context), with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub index: usize,
    /// `AS name` as written.
    pub name: Option<String>,
    pub from: Command,
    pub base: Base,
    /// `--platform`, expanded.
    pub platform: Option<String>,
    pub commands: Vec<Command>,
    pub deps: Vec<Dependency>,
    pub externals: Vec<ExternalRef>,
    /// From a `# name description` comment above the FROM.
    pub description: Option<String>,
}

impl Stage {
    /// The name used in progress output: the stage name or `stage-N`.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// A global ARG (before the first FROM) and its resolved value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaArg {
    pub name: String,
    pub value: Option<String>,
    pub description: Option<String>,
    pub span: Span,
}

/// The working directory `WORKDIR path` records in the image's config, after `workdir`, as
/// BuildKit's NormalizeWorkdir makes it: an absolute path as written (`/app/` stays `/app/`),
/// a relative one joined to the current one and cleaned, an empty one the current one.
pub fn workdir_config(workdir: &str, path: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    if path.is_empty() {
        return if workdir.is_empty() {
            "/".to_string()
        } else {
            workdir.to_string()
        };
    }
    in_workdir(workdir, path)
}

/// `path` as a step in `workdir` sees it: an absolute path, lexically cleaned (WORKDIR's rule).
pub fn in_workdir(workdir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", workdir.trim_end_matches('/'))
    };
    crate::fsx::clean(&joined)
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub escape: char,
    pub meta_args: Vec<MetaArg>,
    pub stages: Vec<Stage>,
    /// The stage that is built.
    pub target: usize,
    /// Every stage the target needs (itself included), each after the stages it needs.
    pub order: Vec<usize>,
    pub options: Options,
}

impl Plan {
    /// The ARGs visible to FROM lines: declared global ARGs plus the platform args.
    pub fn from_scope(&self) -> Vec<(String, String)> {
        let mut env = self.options.platform_args();
        for m in &self.meta_args {
            if let Some(v) = &m.value {
                env.push((m.name.clone(), v.clone()));
            }
        }
        env
    }

    /// The value a stage sees for `ARG name` re-declared without a default.
    pub fn meta_value(&self, name: &str) -> Option<&str> {
        self.meta_args
            .iter()
            .rev()
            .find(|m| m.name == name)
            .and_then(|m| m.value.as_deref())
    }

    /// A fresh ARG/ENV scope for a stage of this plan: global ARG values, build args, the
    /// automatic platform args and TARGETSTAGE (the target's name, or `default` when the last
    /// stage is unnamed and targeted implicitly).
    pub fn scope(&self) -> StageScope {
        let target = match (&self.options.target, &self.stages[self.target].name) {
            (_, Some(n)) => n.to_ascii_lowercase(),
            (Some(t), None) => t.clone(),
            (None, None) => "default".to_string(),
        };
        StageScope::new(&self.meta_args, &self.options).with_target_stage(&target)
    }

    /// When `name` (a `--from` that is not a stage) looks like a misspelt stage name, that
    /// stage's name: `COPY --from=biulder` would otherwise pull an image called biulder. Only
    /// bare names count: a reference with a registry, a tag or a digest means an image.
    pub fn stage_typo(&self, name: &str) -> Option<&str> {
        if name.contains(['/', ':', '@', '.'])
            || self.stage_by_name(name).is_some()
            || name.parse::<usize>().is_ok()
            || self
                .options
                .named_contexts
                .iter()
                .any(|c| c.eq_ignore_ascii_case(name))
        {
            return None;
        }
        did_you_mean(name, self.stages.iter().filter_map(|s| s.name.as_deref()))
    }

    pub fn stage_by_name(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }
}

/// Build the plan for typed commands of a parsed Dockerfile.
pub fn plan(df: &Dockerfile, commands: Vec<Command>, options: Options) -> Result<Plan, Diagnostic> {
    Planner { df, options }
        .run(commands)
        .map_err(|e| e.with_source(&df.source))
}

struct Planner<'a> {
    df: &'a Dockerfile,
    options: Options,
}

/// The description of `name` from the comments above a FROM or ARG: the rest of the comment
/// line whose first word is the name (`# base builds the toolchain`).
pub fn description_for(comments: &[String], name: &str) -> Option<String> {
    comments.iter().find_map(|c| {
        let rest = c.strip_prefix(name)?;
        (rest.is_empty() || rest.starts_with(char::is_whitespace)).then(|| rest.trim().to_string())
    })
}

impl Planner<'_> {
    fn run(self, commands: Vec<Command>) -> Result<Plan, Diagnostic> {
        let lexer = Lexer::new(self.df.escape);
        let mut iter = commands.into_iter().peekable();

        // Global scope: only ARG before the first FROM. `from_scope` is what FROM lines and
        // later global ARG defaults see.
        let mut from_scope = self.options.platform_args();
        let mut meta_args: Vec<MetaArg> = Vec::new();
        while let Some(cmd) = iter.next_if(|c| !matches!(c.instruction, Instruction::From(_))) {
            self.global_arg(&lexer, &cmd, &mut from_scope, &mut meta_args)?;
        }
        if iter.peek().is_none() {
            let span = meta_args.last().map(|m| m.span).unwrap_or_default();
            return Err(
                Diagnostic::new("dockerfile contains no stages to build", span)
                    .with_hint("add a FROM line to start a stage"),
            );
        }

        let mut stages: Vec<Stage> = Vec::new();
        for cmd in iter {
            if let Instruction::From(f) = &cmd.instruction {
                let stage = Self::stage_from(&lexer, &from_scope, &cmd, f, stages.len())?;
                stages.push(stage);
            } else if let Some(stage) = stages.last_mut() {
                stage.commands.push(cmd);
            }
        }

        self.resolve_bases(&mut stages);
        for i in 0..stages.len() {
            self.resolve_refs(&mut stages, i)?;
        }
        let target = self.target(&stages)?;
        let order = topo_order(&stages, target)?;
        Ok(Plan {
            escape: self.df.escape,
            meta_args,
            stages,
            target,
            order,
            options: self.options,
        })
    }

    /// One instruction of the global scope (before the first FROM): only ARG is allowed; each
    /// declared name joins `from_scope` when it has a value.
    fn global_arg(
        &self,
        lexer: &Lexer,
        cmd: &Command,
        from_scope: &mut Vec<(String, String)>,
        meta_args: &mut Vec<MetaArg>,
    ) -> Result<(), Diagnostic> {
        let Instruction::Arg(decls) = &cmd.instruction else {
            return Err(Diagnostic::new(
                format!(
                    "{} is not allowed before the first FROM",
                    cmd.instruction.name()
                ),
                cmd.keyword_span,
            )
            .with_hint(
                "only ARG may come before the first FROM; start a stage with FROM <image>",
            ));
        };
        for ArgDecl { name, default } in decls {
            let value = match self.options.build_args.get(name) {
                Some(v) => Some(v.clone()),
                None => match default {
                    Some(d) => Some(
                        lexer
                            .process_word(d, &*from_scope)
                            .map_err(|e| Diagnostic::new(format!("ARG {name}: {e}"), cmd.span))?,
                    ),
                    None => None,
                },
            };
            let description = description_for(&cmd.comments, name);
            if let Some(v) = &value {
                from_scope.push((name.clone(), v.clone()));
            }
            meta_args.push(MetaArg {
                name: name.clone(),
                value,
                description,
                span: cmd.span,
            });
        }
        Ok(())
    }

    /// A new stage from its FROM line, the image and platform expanded with the global scope.
    fn stage_from(
        lexer: &Lexer,
        from_scope: &dyn Lookup,
        cmd: &Command,
        f: &crate::dockerfile::instructions::From,
        index: usize,
    ) -> Result<Stage, Diagnostic> {
        let description = f
            .stage_name
            .as_ref()
            .and_then(|n| description_for(&cmd.comments, n));
        let image = lexer
            .process_word(&f.image, from_scope)
            .map_err(|e| Diagnostic::new(format!("FROM {}: {e}", f.image), cmd.span))?;
        if image.is_empty() {
            return Err(Diagnostic::new(
                format!("base name ({}) should not be blank", f.image),
                cmd.span,
            )
            .with_hint(
                "an ARG used in FROM must be declared before the first FROM and have a value",
            ));
        }
        let platform = match &f.platform {
            Some(p) => Some(
                lexer
                    .process_word(p, from_scope)
                    .map_err(|e| Diagnostic::new(format!("FROM --platform={p}: {e}"), cmd.span))?,
            ),
            None => None,
        };
        Ok(Stage {
            index,
            name: f.stage_name.clone(),
            from: cmd.clone(),
            base: Base::Image(image),
            platform,
            commands: Vec::new(),
            deps: Vec::new(),
            externals: Vec::new(),
            description,
        })
    }

    fn is_named_context(&self, name: &str) -> bool {
        self.options
            .named_contexts
            .iter()
            .any(|c| c.eq_ignore_ascii_case(name))
    }

    /// Resolve bases now that every stage name is known.
    fn resolve_bases(&self, stages: &mut [Stage]) {
        for i in 0..stages.len() {
            let Base::Image(image) = stages[i].base.clone() else {
                continue;
            };
            let span = stages[i].from.span;
            if self.is_named_context(&image) {
                stages[i].base = Base::Context(image);
            } else if image.eq_ignore_ascii_case("scratch") {
                // Reserved: a stage named scratch (a lint warning) does not replace it.
                stages[i].base = Base::Scratch;
            } else if let Some(j) = find_stage(stages, &image) {
                stages[i].base = Base::Stage(j);
                stages[i].deps.push(Dependency {
                    stage: j,
                    kind: DepKind::From,
                    span,
                });
            }
        }
    }

    /// --from references in COPY and RUN --mount of stage `i`, including ONBUILD triggers of
    /// a base stage: each becomes a dependency or an external reference.
    fn resolve_refs(&self, stages: &mut [Stage], i: usize) -> Result<(), Diagnostic> {
        for (name, kind, span) in from_refs(stages, i)? {
            if self.is_named_context(&name) {
                stages[i].externals.push(ExternalRef { name, span });
                continue;
            }
            let target = if let Ok(n) = name.parse::<usize>() {
                if n >= stages.len() {
                    return Err(Diagnostic::new(
                        format!(
                            "invalid stage index {n}: there are only {} stages",
                            stages.len()
                        ),
                        span,
                    ));
                }
                Some(n)
            } else {
                find_stage(stages, &name)
            };
            match target {
                Some(j) if j == i => {
                    return Err(Diagnostic::new(
                        format!(
                            "circular dependency detected on stage: {}",
                            stages[i].display_name()
                        ),
                        span,
                    ))
                }
                Some(j) if j > i => return Err(defined_later(stages, i, j, kind, span)),
                Some(j) => stages[i].deps.push(Dependency {
                    stage: j,
                    kind,
                    span,
                }),
                None => stages[i].externals.push(ExternalRef { name, span }),
            }
        }
        Ok(())
    }

    fn target(&self, stages: &[Stage]) -> Result<usize, Diagnostic> {
        Ok(match &self.options.target {
            None => stages.len() - 1,
            Some(t) => find_stage(stages, t).ok_or_else(|| {
                let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
                let mut d =
                    Diagnostic::unlocated(format!("target stage \"{t}\" could not be found"));
                if let Some(s) = did_you_mean(t, names.iter().copied()) {
                    d = d.with_hint(format!("did you mean {s}?"));
                } else if !names.is_empty() {
                    d = d.with_hint(format!("stages are: {}", names.join(", ")));
                }
                d
            })?,
        })
    }
}

/// The stage names stage `i` refers to with COPY --from and RUN --mount from=, its own and
/// those of its base stage's ONBUILD triggers, in order.
fn from_refs(stages: &[Stage], i: usize) -> Result<Vec<(String, DepKind, Span)>, Diagnostic> {
    let mut refs: Vec<(String, DepKind, Span)> = Vec::new();
    let mut triggers: Vec<(&Instruction, Span)> = Vec::new();
    if let Base::Stage(b) = stages[i].base {
        for c in &stages[b].commands {
            if let Instruction::Onbuild(o) = &c.instruction {
                triggers.push((o.trigger.as_ref(), c.span));
            }
        }
    }
    let own = stages[i].commands.iter().map(|c| (&c.instruction, c.span));
    for (ins, span) in triggers.iter().copied().chain(own) {
        match ins {
            Instruction::Copy(c) => {
                if let Some(f) = &c.from {
                    refs.push((f.clone(), DepKind::CopyFrom, span));
                }
            }
            Instruction::Run(r) => {
                for m in &r.mounts {
                    // Typing checked the mount, and refused a `$` in its `from` (as
                    // BuildKit does): the stage is named as written.
                    if !m.to_ascii_lowercase().contains("from") {
                        continue;
                    }
                    let spec = MountSpec::parse(m, true)
                        .map_err(|e| Diagnostic::new(format!("invalid --mount: {e}"), span))?;
                    if let Some(f) = spec.from {
                        refs.push((f, DepKind::MountFrom, span));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(refs)
}

/// Stage `i` refers to stage `j` defined after it: BuildKit's words, for COPY --from and RUN
/// --mount from=.
fn defined_later(stages: &[Stage], i: usize, j: usize, kind: DepKind, span: Span) -> Diagnostic {
    let msg = if kind == DepKind::MountFrom {
        format!(
            "cannot mount from stage \"{}\", stage needs to be defined before current command (stage {} needs to be defined before current stage {})",
            stages[j].display_name(),
            stages[j].display_name(),
            stages[i].display_name()
        )
    } else {
        format!(
            "cannot copy from stage \"{}\", it needs to be defined before current stage \"{}\"",
            stages[j].display_name(),
            stages[i].display_name()
        )
    };
    Diagnostic::new(msg, span).with_hint(format!(
        "move the stage `{}` above line {}",
        stages[j].display_name(),
        stages[i].from.start_line
    ))
}

fn find_stage(stages: &[Stage], name: &str) -> Option<usize> {
    stages.iter().position(|s| {
        s.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    })
}

/// Depth-first from the target: every needed stage after the stages it needs.
fn topo_order(stages: &[Stage], target: usize) -> Result<Vec<usize>, Diagnostic> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        None,
        Active,
        Done,
    }
    let mut marks = vec![Mark::None; stages.len()];
    let mut order = Vec::new();
    // Iterative DFS: (stage, next dep index).
    let mut stack = vec![(target, 0usize)];
    marks[target] = Mark::Active;
    while let Some((s, k)) = stack.pop() {
        if k < stages[s].deps.len() {
            stack.push((s, k + 1));
            let dep = &stages[s].deps[k];
            match marks[dep.stage] {
                Mark::None => {
                    marks[dep.stage] = Mark::Active;
                    stack.push((dep.stage, 0));
                }
                Mark::Active => {
                    return Err(Diagnostic::new(
                        format!(
                            "circular dependency detected on stage: {}",
                            stages[dep.stage].display_name()
                        ),
                        dep.span,
                    ))
                }
                Mark::Done => {}
            }
        } else {
            marks[s] = Mark::Done;
            order.push(s);
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests;
