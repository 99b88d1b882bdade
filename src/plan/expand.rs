//! What each instruction sees: the ARG and ENV scope of a stage, and the expansion of the
//! words Docker expands (ENV, LABEL, ARG defaults, COPY/ADD paths and flags, EXPOSE, VOLUME,
//! USER, WORKDIR, STOPSIGNAL, RUN --mount/--network). RUN, CMD, ENTRYPOINT, SHELL and
//! HEALTHCHECK commands are left to the shell at run time.

use std::collections::{BTreeMap, BTreeSet};

use super::{MetaArg, Options};
use crate::dockerfile::shell::{Budget, Lexer, Lookup, ShellError};
use crate::dockerfile::{ArgDecl, Copy, Instruction, KeyValue, Run, RunOptions};

/// The variables in scope at one point of a stage.
#[derive(Debug, Clone)]
pub struct StageScope {
    meta: Vec<(String, Option<String>)>,
    build_args: BTreeMap<String, String>,
    platform: Vec<(String, String)>,
    /// ARGs declared in this stage so far, with their values (None: declared, no value).
    pub args: Vec<(String, Option<String>)>,
    /// The environment: the base image's, then ENV instructions.
    pub env: Vec<(String, String)>,
    /// Where each name of `env` is (its last entry): lookups and updates in constant time.
    env_index: std::collections::HashMap<String, usize>,
    /// What the words expanded against this scope (and the scopes sharing it) have grown by.
    pub budget: Budget,
}

impl StageScope {
    pub fn new(meta: &[MetaArg], options: &Options) -> StageScope {
        StageScope {
            meta: meta
                .iter()
                .map(|m| (m.name.clone(), m.value.clone()))
                .collect(),
            build_args: options.build_args.clone(),
            platform: options.platform_args(),
            args: Vec::new(),
            env: Vec::new(),
            env_index: Default::default(),
            budget: Budget::default(),
        }
    }

    /// Count this scope's expansions in `budget` (shared by every stage of a build).
    pub fn with_budget(mut self, budget: Budget) -> StageScope {
        self.budget = budget;
        self
    }

    /// Set TARGETSTAGE, the name of the stage being built (see [`super::Plan::scope`]).
    pub fn with_target_stage(mut self, name: &str) -> StageScope {
        self.platform.push(("TARGETSTAGE".into(), name.to_string()));
        self
    }

    /// Start from a base image's (or base stage's) environment.
    pub fn with_env(mut self, env: Vec<(String, String)>) -> StageScope {
        self.env_index = env
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        self.env = env;
        self
    }

    /// Set an ENV variable in place, or append it (image config Env semantics).
    fn set_env_var(&mut self, k: String, v: String) {
        match self.env_index.get(&k) {
            Some(&i) => self.env[i].1 = v,
            None => {
                self.env_index.insert(k.clone(), self.env.len());
                self.env.push((k, v));
            }
        }
    }

    /// ARGs (with a value) then ENV: ENV wins over an ARG of the same name.
    pub fn lookup_env(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .args
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        v.extend(self.env.iter().cloned());
        v
    }

    /// Is `name` declared as an ARG in this stage (with or without a value)?
    pub fn is_declared(&self, name: &str) -> bool {
        self.args.iter().any(|(k, _)| k == name)
    }

    /// The value an ARG gets when declared here: the build arg, else the default (expanded),
    /// else the global ARG's value, else the automatic platform value.
    fn arg_value(&self, decl: &ArgDecl, lexer: &Lexer) -> Result<Option<String>, ShellError> {
        if let Some(v) = self.build_args.get(&decl.name) {
            return Ok(Some(v.clone()));
        }
        if let Some(d) = &decl.default {
            return self
                .budget
                .process_word(lexer, d, self)
                .map(|(v, _)| Some(v));
        }
        if let Some((_, v)) = self.meta.iter().rev().find(|(k, _)| *k == decl.name) {
            return Ok(v.clone());
        }
        Ok(self
            .platform
            .iter()
            .find(|(k, _)| *k == decl.name)
            .map(|(_, v)| v.clone()))
    }

    /// Declare ARGs (errors in defaults leave the ARG without a value; [`expand_instruction`]
    /// reports them).
    pub fn declare(&mut self, decls: &[ArgDecl], lexer: &Lexer) {
        for d in decls {
            let v = self.arg_value(d, lexer).ok().flatten();
            self.set_arg(&d.name, v);
        }
    }

    /// Record an ARG's value. Re-declaring with no value keeps the value it already has.
    fn set_arg(&mut self, name: &str, value: Option<String>) {
        let previous = self.args.iter().position(|(k, _)| k == name);
        let value = match (value, previous) {
            (None, Some(i)) => self.args[i].1.clone(),
            (v, _) => v,
        };
        self.args.retain(|(k, _)| k != name);
        self.args.push((name.to_string(), value));
    }

    /// Apply ENV lines (values as written; all are expanded against the scope before the line).
    pub fn set_env(&mut self, kvs: &[KeyValue], lexer: &Lexer) {
        let mut updates = Vec::new();
        for kv in kvs {
            let k = self
                .budget
                .process_word(lexer, &kv.key, self)
                .map_or_else(|_| kv.key.clone(), |(k, _)| k);
            let v = self
                .budget
                .process_word(lexer, &kv.value, self)
                .map_or_else(|_| kv.value.clone(), |(v, _)| v);
            updates.push((k, v));
        }
        for (k, v) in updates {
            self.set_env_var(k, v);
        }
    }

    /// Apply an already expanded instruction's effect on the scope (ARG and ENV).
    pub fn apply(&mut self, expanded: &Instruction) {
        match expanded {
            Instruction::Arg(decls) => {
                for d in decls {
                    let v = match self.build_args.get(&d.name) {
                        Some(b) => Some(b.clone()),
                        None => match &d.default {
                            Some(v) => Some(v.clone()),
                            None => self
                                .meta
                                .iter()
                                .rev()
                                .find(|(k, _)| *k == d.name)
                                .and_then(|(_, v)| v.clone())
                                .or_else(|| {
                                    self.platform
                                        .iter()
                                        .find(|(k, _)| *k == d.name)
                                        .map(|(_, v)| v.clone())
                                }),
                        },
                    };
                    self.set_arg(&d.name, v);
                }
            }
            Instruction::Env(kvs) => {
                for kv in kvs {
                    self.set_env_var(kv.key.clone(), kv.value.clone());
                }
            }
            _ => {}
        }
    }
}

/// An instruction with its words expanded, and the variable names it used that were unset.
#[derive(Debug, Clone)]
pub struct Expanded {
    pub instruction: Instruction,
    pub unmatched: BTreeSet<String>,
    /// A RUN's mounts and network as types, read once from the expanded flags.
    pub run: Option<RunOptions>,
}

struct Ex<'a> {
    lexer: &'a Lexer,
    env: &'a StageScope,
    unmatched: BTreeSet<String>,
}

impl Ex<'_> {
    fn word(&mut self, w: &str) -> Result<String, ShellError> {
        let (v, m) = self.env.budget.process_word(self.lexer, w, self.env)?;
        self.unmatched.extend(m.unmatched);
        Ok(v)
    }

    fn words(&mut self, w: &str) -> Result<Vec<String>, ShellError> {
        let (_, m) = self.env.budget.process_word(self.lexer, w, self.env)?;
        self.unmatched.extend(m.unmatched);
        self.lexer.process_words(w, self.env)
    }

    fn opt(&mut self, w: &Option<String>) -> Result<Option<String>, ShellError> {
        w.as_deref().map(|s| self.word(s)).transpose()
    }

    fn kvs(&mut self, kvs: &[KeyValue]) -> Result<Vec<KeyValue>, ShellError> {
        kvs.iter()
            .map(|kv| {
                Ok(KeyValue {
                    key: self.word(&kv.key)?,
                    value: self.word(&kv.value)?,
                    legacy: kv.legacy,
                })
            })
            .collect()
    }
}

/// Expand the words of `ins` that Docker expands, against the scope before it.
pub fn expand_instruction(
    ins: &Instruction,
    scope: &StageScope,
    lexer: &Lexer,
) -> Result<Expanded, ShellError> {
    let mut ex = Ex {
        lexer,
        env: scope,
        unmatched: BTreeSet::new(),
    };
    let out = match ins {
        Instruction::Env(kvs) => Instruction::Env(ex.kvs(kvs)?),
        Instruction::Label(kvs) => Instruction::Label(ex.kvs(kvs)?),
        Instruction::Arg(decls) => Instruction::Arg(
            decls
                .iter()
                .map(|d| {
                    // A build arg replaces the default, which is then never evaluated.
                    let default = if scope.build_args.contains_key(&d.name) {
                        d.default.clone()
                    } else {
                        ex.opt(&d.default)?
                    };
                    Ok(ArgDecl {
                        name: d.name.clone(),
                        default,
                    })
                })
                .collect::<Result<_, ShellError>>()?,
        ),
        Instruction::Copy(c) => Instruction::Copy(expand_copy(&mut ex, c)?),
        Instruction::Add(c) => Instruction::Add(expand_copy(&mut ex, c)?),
        Instruction::Expose(ports) => {
            let mut out = Vec::new();
            for p in ports {
                out.extend(ex.words(p)?);
            }
            Instruction::Expose(out)
        }
        Instruction::Volume(v) => {
            Instruction::Volume(v.iter().map(|w| ex.word(w)).collect::<Result<_, _>>()?)
        }
        Instruction::User(u) => Instruction::User(ex.word(u)?),
        Instruction::Workdir(w) => Instruction::Workdir(ex.word(w)?),
        Instruction::StopSignal(s) => Instruction::StopSignal(ex.word(s)?),
        Instruction::Run(r) => Instruction::Run(Run {
            mounts: r
                .mounts
                .iter()
                .map(|m| ex.word(m))
                .collect::<Result<_, _>>()?,
            network: ex.opt(&r.network)?,
            security: ex.opt(&r.security)?,
            ..r.clone()
        }),
        other => other.clone(),
    };
    let run = match &out {
        Instruction::Run(r) => Some(r.options().map_err(|e| ShellError(e.to_string()))?),
        _ => None,
    };
    Ok(Expanded {
        instruction: out,
        unmatched: ex.unmatched,
        run,
    })
}

fn expand_copy(ex: &mut Ex<'_>, c: &Copy) -> Result<Copy, ShellError> {
    Ok(Copy {
        sources: c
            .sources
            .iter()
            .map(|s| ex.word(s))
            .collect::<Result<_, _>>()?,
        dest: ex.word(&c.dest)?,
        chown: ex.opt(&c.chown)?,
        chmod: ex.opt(&c.chmod)?,
        checksum: ex.opt(&c.checksum)?,
        excludes: c
            .excludes
            .iter()
            .map(|s| ex.word(s))
            .collect::<Result<_, _>>()?,
        ..c.clone()
    })
}

/// What an instruction's words see: ENV (the base image's, then the stage's) over ARGs with a
/// value. Looked up in place: expanding an instruction copies nothing, so a long Dockerfile
/// costs time linear in its lines.
impl Lookup for StageScope {
    fn lookup(&self, name: &str) -> Option<&str> {
        if let Some(&i) = self.env_index.get(name) {
            return Some(&self.env[i].1);
        }
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }
}
