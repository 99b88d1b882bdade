//! strata's lint rules for Python images (documented in the README's "Lint rules"): the
//! mistakes that make a Python image slow to rebuild, fat or run as root, as the recipes people
//! copy make them. They run only on a Dockerfile that builds a Python image (a base image named
//! python…, or a RUN that runs pip, uv, poetry, pdm, pipenv or makes a venv), and the rules
//! about what a layer carries only look at the stages that ship (the target and the stages it is
//! built FROM): a builder stage's pip cache never reaches the image.
//!
//! RUN commands are read as simple commands (split at `&&`, `||`, `;`, `|`, newlines and
//! parentheses), which is what these recipes are written as; a rule that cannot tell stays
//! silent rather than nag.

use super::{Base, Plan, StageScope};
use crate::dockerfile::instructions::{CommandLine, MountKind, RunOptions};
use crate::dockerfile::lint::Warning;
use crate::dockerfile::shell::Lexer;
use crate::dockerfile::{Instruction, Span};

use super::lint::BaseEnv;

/// What a finished stage leaves to a stage built FROM it, or copied from.
#[derive(Debug, Clone, Default)]
struct Facts {
    /// The last USER (None: the base image's default).
    user: Option<String>,
    workdir: String,
    env: Vec<(String, String)>,
    /// Virtual environments made in the stage (absolute paths).
    venvs: Vec<String>,
}

/// One simple command of a RUN: its words, after leading `VAR=value` assignments and `sudo`,
/// `env`, `exec`, `time` and `nice`, and those assignments.
#[derive(Debug, Default, PartialEq)]
struct Simple {
    words: Vec<String>,
    assigns: Vec<(String, String)>,
}

impl Simple {
    fn arg(&self, i: usize) -> &str {
        self.words.get(i).map(String::as_str).unwrap_or("")
    }
    fn has(&self, w: &str) -> bool {
        self.words.iter().any(|x| x == w)
    }
    fn has_prefix(&self, p: &str) -> bool {
        self.words.iter().any(|x| x.starts_with(p))
    }
    fn program(&self) -> &str {
        let p = self.arg(0);
        p.rsplit('/').next().unwrap_or(p)
    }
}

/// Split a RUN's text into simple commands.
fn simple_commands(text: &str) -> Vec<Simple> {
    let text = text.replace("\\\n", " ");
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    let flush = |cur: &mut String, out: &mut Vec<Simple>| {
        let s = words_of(cur);
        if !s.words.is_empty() {
            out.push(s);
        }
        cur.clear();
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.push(c);
            }
            (None, ';' | '\n' | '(' | ')' | '|' | '&' | '`') => flush(&mut cur, &mut out),
            (None, '$') if chars.peek() == Some(&'(') => {
                chars.next();
                flush(&mut cur, &mut out);
            }
            (None, c) => cur.push(c),
        }
    }
    flush(&mut cur, &mut out);
    out
}

fn words_of(s: &str) -> Simple {
    let mut words: Vec<String> = Vec::new();
    let mut w = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => w.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !w.is_empty() {
                    words.push(std::mem::take(&mut w));
                }
                any = false;
            }
            (None, c) => w.push(c),
        }
    }
    if any || !w.is_empty() {
        words.push(w);
    }
    let mut assigns = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        let is_assign = word.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
        });
        if is_assign {
            let (k, v) = word.split_once('=').unwrap_or_default();
            assigns.push((k.to_string(), v.to_string()));
        } else if !matches!(
            word.as_str(),
            "sudo" | "env" | "exec" | "time" | "nice" | "command"
        ) {
            break;
        }
        i += 1;
    }
    Simple {
        words: words[i..].to_vec(),
        assigns,
    }
}

/// `$NAME` and `${NAME}` of `env` in `s` (the shell would; the Dockerfile does not).
fn subst(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(b) = after.strip_prefix('{') {
            match b.find('}') {
                Some(j) => (&b[..j], j + 2),
                None => ("", 0),
            }
        } else {
            let n = after
                .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        let v = env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        out.push_str(v.unwrap_or(""));
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

fn is_python_program(p: &str) -> bool {
    p == "python"
        || p.strip_prefix("python")
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

fn is_pip_program(p: &str) -> bool {
    p == "pip"
        || p.strip_prefix("pip")
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// The package tool a simple command runs, when it installs something: `pip` or `uv`.
fn installer(s: &Simple) -> Option<&'static str> {
    let p = s.program();
    if is_pip_program(p) && s.has("install") {
        return Some("pip");
    }
    if is_python_program(p) && s.arg(1) == "-m" && is_pip_program(s.arg(2)) && s.has("install") {
        return Some("pip");
    }
    if p == "uv" {
        let sub = (s.arg(1), s.arg(2));
        if matches!(sub.0, "sync" | "add")
            || (sub.0 == "pip" && matches!(sub.1, "install" | "sync"))
            || (sub.0 == "tool" && sub.1 == "install")
        {
            return Some("uv");
        }
    }
    None
}

/// A command that installs a project's dependencies (not only the project itself).
fn installs_dependencies(s: &Simple) -> bool {
    let p = s.program();
    match installer(s) {
        Some("pip") => {
            let requirements =
                s.has("-r") || s.has("--requirement") || s.has_prefix("-r") && !s.has("--root");
            let local = s
                .words
                .iter()
                .any(|w| w == "." || w.starts_with("./") || w == "-e" || w == "--editable");
            requirements || (local && !s.has("--no-deps"))
        }
        Some("uv") => {
            s.arg(1) == "sync"
                || (s.arg(1) == "pip"
                    && (s.has("-r") || s.has("--requirement") || s.arg(2) == "sync"))
        }
        _ => {
            matches!(p, "poetry" | "pdm" | "pipenv") && matches!(s.arg(1), "install" | "sync")
                || p == "pip-sync"
        }
    }
}

/// The virtual environment a simple command makes, if any (relative to the workdir).
fn venv_made(s: &Simple, env: &[(String, String)]) -> Option<String> {
    let p = s.program();
    let first_path = |from: usize| {
        s.words[from.min(s.words.len())..]
            .iter()
            .find(|w| !w.starts_with('-'))
            .cloned()
    };
    if is_python_program(p) && s.arg(1) == "-m" && matches!(s.arg(2), "venv" | "virtualenv") {
        return first_path(3);
    }
    if p == "virtualenv" {
        return first_path(1);
    }
    if p == "uv" && s.arg(1) == "venv" {
        return Some(first_path(2).unwrap_or_else(|| ".venv".into()));
    }
    if p == "uv" && s.arg(1) == "sync" {
        let set = env
            .iter()
            .rev()
            .find(|(k, _)| k == "UV_PROJECT_ENVIRONMENT");
        return Some(
            set.map(|(_, v)| v.clone())
                .unwrap_or_else(|| ".venv".into()),
        );
    }
    None
}

fn uses_python_tooling(s: &Simple) -> bool {
    installer(s).is_some()
        || matches!(
            s.program(),
            "poetry" | "pdm" | "pipenv" | "pip-sync" | "virtualenv"
        )
        || (is_python_program(s.program()) && s.arg(1) == "-m" && s.arg(2) == "venv")
}

fn python_base(image: &str) -> bool {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let (repo, tag) = last.split_once(':').unwrap_or((last, ""));
    repo.starts_with("python") || tag.contains("python")
}

fn is_root(user: Option<&str>) -> bool {
    match user {
        None => true,
        Some(u) => {
            let name = u.split(':').next().unwrap_or(u);
            name.is_empty() || name == "root" || name == "0"
        }
    }
}

fn env_get<'e>(
    env: &'e [(String, String)],
    extra: &'e [(String, String)],
    k: &str,
) -> Option<&'e str> {
    extra
        .iter()
        .rev()
        .chain(env.iter().rev())
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

/// Where `tool` keeps its cache for the step, when that can be known for sure; else the path
/// prefix it can certainly not be under (root's home for another user, and the reverse).
enum CacheDir {
    Exactly(String),
    NotUnder(&'static str, String),
}

fn cache_dir(
    tool: &str,
    user: Option<&str>,
    env: &[(String, String)],
    extra: &[(String, String)],
) -> CacheDir {
    let own = if tool == "pip" {
        "PIP_CACHE_DIR"
    } else {
        "UV_CACHE_DIR"
    };
    if let Some(d) = env_get(env, extra, own) {
        return CacheDir::Exactly(crate::fsx::clean(d));
    }
    if let Some(x) = env_get(env, extra, "XDG_CACHE_HOME") {
        return CacheDir::Exactly(crate::fsx::clean(&format!("{x}/{tool}")));
    }
    if let Some(h) = env_get(env, extra, "HOME") {
        return CacheDir::Exactly(crate::fsx::clean(&format!("{h}/.cache/{tool}")));
    }
    if is_root(user) {
        CacheDir::NotUnder("/home/", format!("/root/.cache/{tool}"))
    } else {
        let name = user
            .unwrap_or_default()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        let home = if name.chars().all(|c| c.is_ascii_digit()) {
            "the user's home".to_string()
        } else {
            format!("/home/{name}")
        };
        CacheDir::NotUnder("/root/", format!("{home}/.cache/{tool}"))
    }
}

/// The Python-image rules over a plan.
pub fn lint_python(plan: &Plan, base_env: BaseEnv<'_>) -> Vec<Warning> {
    let lexer = Lexer::new(plan.escape);
    let shipped = shipped_stages(plan);
    let mut out = Vec::new();
    let mut facts: Vec<Facts> = Vec::with_capacity(plan.stages.len());
    let budget = crate::dockerfile::shell::Budget::default();
    // Stages whose image is a Python one (a python base, or Python tooling run in the stage or
    // the stages it is built FROM): only such a final stage is told not to run as root (a
    // static binary FROM scratch, say, is not an app image of this kind).
    let mut python_stage = vec![false; plan.stages.len()];
    for st in &plan.stages {
        python_stage[st.index] = match &st.base {
            Base::Image(r) => python_base(r),
            Base::Stage(j) => python_stage.get(*j).copied().unwrap_or(false),
            _ => false,
        };
        let mut f = start_facts(&st.base, &facts, base_env);
        let mut scope = StageScope::new(&plan.meta_args, &plan.options)
            .with_env(f.env.clone())
            .with_budget(budget.clone());
        let ship = shipped[st.index];
        // The first COPY of the whole context, and whether dependencies were installed yet.
        let mut copy_all: Option<Span> = None;
        let mut deps_installed = false;
        let mut onbuild_user = false;
        for c in &st.commands {
            let (ins, run) = match super::expand_instruction(&c.instruction, &scope, &lexer) {
                Ok(ex) => (ex.instruction, ex.run),
                Err(_) => continue,
            };
            match &ins {
                Instruction::User(u) => f.user = Some(u.clone()),
                // A parent image whose children switch user (`ONBUILD USER app`).
                Instruction::Onbuild(o) if matches!(&*o.trigger, Instruction::User(u) if !is_root(Some(u))) =>
                {
                    onbuild_user = true;
                }
                Instruction::Workdir(w) => f.workdir = super::in_workdir(&f.workdir, w),
                Instruction::Copy(cp) | Instruction::Add(cp) => match &cp.from {
                    None => {
                        let whole = cp.sources.iter().any(|s| matches!(s.as_str(), "." | "./"));
                        if whole && copy_all.is_none() && !deps_installed {
                            copy_all = Some(c.span);
                        }
                    }
                    Some(from) => {
                        lint_copy_from(&mut out, plan, st.index, &facts, &f, cp, from, c.span)
                    }
                },
                Instruction::Run(r) => {
                    let mut text = match &r.command {
                        CommandLine::Shell(s) => s.clone(),
                        CommandLine::Exec(v) => v.join(" "),
                    };
                    for h in &r.heredocs {
                        text.push('\n');
                        text.push_str(&h.content);
                    }
                    let opts = run.clone().unwrap_or_else(|| RunOptions {
                        mounts: Vec::new(),
                        network: None,
                    });
                    let env = scope.lookup_env();
                    let cmds = simple_commands(&text);
                    lint_run(&mut out, c.span, &cmds, &opts, &f, &env, ship, &text);
                    for s in &cmds {
                        python_stage[st.index] |= uses_python_tooling(s);
                        if installs_dependencies(s) {
                            if let (Some(span), false) = (copy_all, deps_installed) {
                                out.push(
                                    Warning::new(
                                        "CopyAllBeforeDependencies",
                                        "the whole context is copied before the dependencies are installed: every code change reinstalls them",
                                        span,
                                    )
                                    .with_hint("copy the dependency files first (requirements.txt, or pyproject.toml and the lock file), install them, then copy the rest"),
                                );
                            }
                            deps_installed = true;
                        }
                        if let Some(v) = venv_made(s, &env) {
                            let v = super::in_workdir(&f.workdir, &subst(&v, &env));
                            if !f.venvs.contains(&v) {
                                f.venvs.push(v);
                            }
                        }
                    }
                }
                _ => {}
            }
            scope.apply(&ins);
        }
        f.env = scope.lookup_env();
        if st.index == plan.target
            && python_stage[st.index]
            && is_root(f.user.as_deref())
            && !onbuild_user
        {
            out.push(
                Warning::new(
                    "FinalStageRunsAsRoot",
                    "the final stage runs as root (no USER, or USER root): the app, and anything that takes it over, can change every file of the image",
                    st.from.span,
                )
                .with_hint("make a user (`RUN useradd --create-home --uid 10001 app`) and end the stage with `USER app`"),
            );
        }
        facts.push(f);
    }
    // A Python image is built when any stage is one.
    if python_stage.contains(&true) {
        out
    } else {
        Vec::new()
    }
}

/// The stages the target ships: the target and the stages it is built FROM, in a line.
fn shipped_stages(plan: &Plan) -> Vec<bool> {
    let mut shipped = vec![false; plan.stages.len()];
    let mut at = Some(plan.target);
    while let Some(i) = at.filter(|&i| i < shipped.len() && !shipped[i]) {
        shipped[i] = true;
        at = match plan.stages[i].base {
            Base::Stage(j) => Some(j),
            _ => None,
        };
    }
    shipped
}

/// What a stage starts from: its parent stage's facts, or a base image's environment.
fn start_facts(base: &Base, facts: &[Facts], base_env: BaseEnv<'_>) -> Facts {
    match base {
        Base::Stage(j) if *j < facts.len() => facts[*j].clone(),
        Base::Image(r) => Facts {
            workdir: "/".into(),
            env: base_env(r).unwrap_or_default(),
            ..Facts::default()
        },
        _ => Facts {
            workdir: "/".into(),
            ..Facts::default()
        },
    }
}

/// `COPY --from=<stage>` of a virtual environment that stage made, to another path.
#[allow(clippy::too_many_arguments)]
fn lint_copy_from(
    out: &mut Vec<Warning>,
    plan: &Plan,
    stage: usize,
    facts: &[Facts],
    f: &Facts,
    cp: &crate::dockerfile::instructions::Copy,
    from: &str,
    span: Span,
) {
    let src_stage = plan
        .stage_by_name(from)
        .map(|s| s.index)
        .or_else(|| from.parse::<usize>().ok().filter(|&i| i < stage));
    let Some(j) = src_stage.filter(|&j| j < facts.len()) else {
        return;
    };
    let dest = super::in_workdir(&f.workdir, &cp.dest);
    for s in &cp.sources {
        let src = crate::fsx::clean(&format!("/{s}"));
        if facts[j].venvs.contains(&src) && dest != src {
            out.push(
                Warning::new(
                    "VenvCopiedToAnotherPath",
                    format!("the virtual environment {src} is copied to {dest}: its scripts (pip, the console entry points) start with #!{src}/bin/python, which is not there"),
                    span,
                )
                .with_hint(format!("copy it to the same path (`COPY --from={from} {src} {src}`), or make it at {dest} in the build stage")),
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn lint_run(
    out: &mut Vec<Warning>,
    span: Span,
    cmds: &[Simple],
    opts: &RunOptions,
    f: &Facts,
    env: &[(String, String)],
    ship: bool,
    text: &str,
) {
    let caches: Vec<&str> = opts
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Cache)
        .filter_map(|m| m.target.as_deref())
        .collect();
    let mut cache_warned = false;
    let mut apt_recommends = false;
    let mut apt_lists = false;
    for s in cmds {
        if let Some(tool) = installer(s) {
            let (flag, var) = if tool == "pip" {
                ("--no-cache-dir", "PIP_NO_CACHE_DIR")
            } else {
                ("--no-cache", "UV_NO_CACHE")
            };
            let off = s.has(flag)
                || (tool == "uv" && s.has("-n"))
                || env_get(env, &s.assigns, var).is_some_and(|v| !matches!(v, "" | "0" | "false"));
            if ship && !off && caches.is_empty() && !cache_warned {
                cache_warned = true;
                out.push(
                    Warning::new(
                        "PackageCacheInLayer",
                        format!("{tool} keeps its download cache in this layer of the image"),
                        span,
                    )
                    .with_hint(format!(
                        "mount a cache where {tool} keeps it (`RUN --mount=type=cache,target=<the user's home>/.cache/{tool} …`), or pass {flag}"
                    )),
                );
            }
            let want = cache_dir(tool, f.user.as_deref(), env, &s.assigns);
            for t in caches.iter().map(|t| crate::fsx::clean(t)) {
                if t.rsplit('/').next() != Some(tool) || off {
                    continue;
                }
                let wrong = match &want {
                    CacheDir::Exactly(d) => &t != d,
                    CacheDir::NotUnder(p, _) => t.starts_with(p),
                };
                if wrong && !cache_warned {
                    cache_warned = true;
                    let (d, who) = match &want {
                        CacheDir::Exactly(d) => {
                            (d.clone(), "as the step's environment says".to_string())
                        }
                        CacheDir::NotUnder(_, d) => (
                            d.clone(),
                            match f.user.as_deref().filter(|u| !is_root(Some(u))) {
                                Some(u) => format!("for USER {u}"),
                                None => "for root".to_string(),
                            },
                        ),
                    };
                    out.push(
                        Warning::new(
                            "CacheMountTargetUnused",
                            format!("the cache mount on {t} is not where {tool} looks {who} ({d}): the cache is never used and {tool} fills the layer instead"),
                            span,
                        )
                        .with_hint(format!("mount the cache on {d}")),
                    );
                }
            }
        }
        let apt = matches!(s.program(), "apt-get" | "apt");
        if ship
            && apt
            && s.has("install")
            && !s.has("--no-install-recommends")
            && !text.contains("Install-Recommends")
        {
            apt_recommends = true;
        }
        if ship && apt && s.has("update") {
            let removed = text.contains("/var/lib/apt/lists") && text.contains("rm ");
            let mounted = opts.mounts.iter().any(|m| {
                matches!(m.kind, MountKind::Cache | MountKind::Tmpfs)
                    && m.target.as_deref().is_some_and(|t| {
                        matches!(
                            crate::fsx::clean(t).as_str(),
                            "/var/lib/apt" | "/var/lib/apt/lists"
                        )
                    })
            });
            apt_lists |= !removed && !mounted;
        }
    }
    if apt_recommends {
        out.push(
            Warning::new(
                "AptRecommendsInstalled",
                "apt-get install without --no-install-recommends also installs the packages the requested ones only recommend",
                span,
            )
            .with_hint("apt-get install -y --no-install-recommends …"),
        );
    }
    if apt_lists {
        out.push(
            Warning::new(
                "AptListsInLayer",
                "apt-get update leaves the package lists (/var/lib/apt/lists, tens of MB) in this layer",
                span,
            )
            .with_hint("end the RUN with `rm -rf /var/lib/apt/lists/*`, or mount caches on /var/cache/apt and /var/lib/apt (sharing=locked)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<Vec<String>> {
        simple_commands(s).into_iter().map(|c| c.words).collect()
    }

    #[test]
    fn simple_commands_split_at_operators_and_keep_quotes_together() {
        assert_eq!(
            words("apt-get update && apt-get install -y 'a b' ; (cd /x && PIP_NO_CACHE_DIR=1 sudo pip install -r r.txt) | tee $(date)"),
            vec![
                vec!["apt-get", "update"],
                vec!["apt-get", "install", "-y", "a b"],
                vec!["cd", "/x"],
                vec!["pip", "install", "-r", "r.txt"],
                vec!["tee"],
                vec!["date"],
            ]
        );
        let s = &simple_commands("FOO=1 env BAR=2 pip3.12 install x")[0];
        assert_eq!(
            s.assigns,
            vec![("FOO".into(), "1".into()), ("BAR".into(), "2".into())]
        );
        assert_eq!(installer(s), Some("pip"));
    }

    #[test]
    fn installers_and_dependency_installs() {
        let one = |s: &str| simple_commands(s).remove(0);
        assert_eq!(installer(&one("python3 -m pip install x")), Some("pip"));
        assert_eq!(installer(&one("/opt/venv/bin/pip install x")), Some("pip"));
        assert_eq!(installer(&one("uv pip install x")), Some("uv"));
        assert_eq!(installer(&one("uv sync --locked")), Some("uv"));
        assert_eq!(installer(&one("pip download x")), None);
        assert!(installs_dependencies(&one(
            "pip install -r requirements.txt"
        )));
        assert!(installs_dependencies(&one("pip install .")));
        assert!(!installs_dependencies(&one("pip install --no-deps .")));
        assert!(installs_dependencies(&one(
            "uv sync --locked --no-install-project"
        )));
        assert!(installs_dependencies(&one("poetry install --only main")));
        assert!(!installs_dependencies(&one("pip install uv")));
        let env = vec![("VIRTUAL_ENV".to_string(), "/opt/venv".to_string())];
        assert_eq!(
            venv_made(&one("python3 -m venv --copies $VIRTUAL_ENV"), &env).map(|v| subst(&v, &env)),
            Some("/opt/venv".into())
        );
        assert_eq!(venv_made(&one("uv sync"), &[]), Some(".venv".into()));
    }

    #[test]
    fn python_bases() {
        assert!(python_base("python:3.12-slim"));
        assert!(python_base("docker.io/library/python@sha256:abc"));
        assert!(python_base("ghcr.io/astral-sh/uv:python3.12-bookworm-slim"));
        assert!(!python_base("debian:bookworm"));
        assert!(!python_base("registry:5000/pythonless/debian"));
    }
}
