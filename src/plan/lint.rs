//! Lint rules that need the plan's scopes: UndefinedVar, UndefinedArgInFrom and
//! InvalidDefaultArgInFrom.

use super::{Base, Plan, StageScope};
use crate::dockerfile::lint::Warning;
use crate::dockerfile::shell::Lexer;
use crate::dockerfile::{did_you_mean, Instruction};

/// Gives the environment of an image by reference, when it is known.
pub type BaseEnv<'a> = &'a dyn Fn(&str) -> Option<Vec<(String, String)>>;

/// Scope-aware rules. `base_env` gives the environment of an image by reference when it is
/// known (from the store); for stages whose base environment is unknown, UndefinedVar is not
/// checked, since the image may define the variable.
pub fn lint_plan(plan: &Plan, base_env: BaseEnv<'_>) -> Vec<Warning> {
    let mut out = Vec::new();
    let lexer = Lexer::new(plan.escape);
    let declared: Vec<String> = plan
        .options
        .platform_args()
        .into_iter()
        .map(|(k, _)| k)
        .chain(plan.meta_args.iter().map(|m| m.name.clone()))
        .collect();

    // FROM lines.
    let defaults_only: Vec<(String, String)> = {
        let mut env = plan.options.platform_args();
        let lx = Lexer::new(plan.escape);
        for m in &plan.meta_args {
            // The default as written, ignoring build args.
            let _ = &lx;
            if let Some(v) = &m.value {
                if !plan.options.build_args.contains_key(&m.name) {
                    env.push((m.name.clone(), v.clone()));
                }
            }
        }
        env
    };
    for st in &plan.stages {
        let Instruction::From(f) = &st.from.instruction else {
            continue;
        };
        if let Ok((image, m)) = lexer.process_word_with_matches(&f.image, &defaults_only) {
            for name in &m.unmatched {
                if !declared.contains(name) {
                    let mut w = Warning::new(
                        "UndefinedArgInFrom",
                        format!("FROM argument '{name}' is not declared"),
                        st.from.span,
                    );
                    if let Some(s) = did_you_mean(name, declared.iter().map(String::as_str)) {
                        w = w.with_hint(format!("did you mean {s}?"));
                    }
                    out.push(w);
                }
            }
            let overridden = m
                .matched
                .iter()
                .chain(m.unmatched.iter())
                .any(|n| plan.options.build_args.contains_key(n));
            if f.image.contains('$')
                && !overridden
                && (image.is_empty()
                    || image.ends_with(':')
                    || image.ends_with('@')
                    || image.starts_with(':'))
            {
                out.push(Warning::new(
                    "InvalidDefaultArgInFrom",
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        f.image
                    ),
                    st.from.span,
                ));
            }
        }
    }

    // --from names that are almost a stage's.
    for st in &plan.stages {
        for e in &st.externals {
            if let Some(s) = plan.stage_typo(&e.name) {
                out.push(
                    Warning::new(
                        "StageNameTypo",
                        format!(
                            "'{}' is not a stage: it would be pulled as an image",
                            e.name
                        ),
                        e.span,
                    )
                    .with_hint(format!("did you mean the stage {s}?")),
                );
            }
        }
    }

    // Instructions inside stages; every walk of this pass shares one expansion budget.
    let budget = crate::dockerfile::shell::Budget::default();
    for st in &plan.stages {
        let Some(env) = stage_base_env(plan, st.index, base_env, 0, &budget) else {
            continue;
        };
        let mut scope = StageScope::new(&plan.meta_args, &plan.options)
            .with_env(env)
            .with_budget(budget.clone());
        for c in &st.commands {
            let Ok(ex) = super::expand_instruction(&c.instruction, &scope, &lexer) else {
                continue;
            };
            for name in &ex.unmatched {
                if plan.options.build_args.contains_key(name) && !scope.is_declared(name) {
                    continue;
                }
                let known: Vec<String> = scope.lookup_env().into_iter().map(|(k, _)| k).collect();
                let mut w = Warning::new(
                    "UndefinedVar",
                    format!("Usage of undefined variable '${name}'"),
                    c.span,
                );
                if let Some(s) = did_you_mean(name, known.iter().map(String::as_str)) {
                    w = w.with_hint(format!("did you mean ${s}?"));
                }
                out.push(w);
            }
            scope.apply(&ex.instruction);
        }
    }
    out
}

/// The environment a stage starts with, when it can be known.
fn stage_base_env(
    plan: &Plan,
    idx: usize,
    base_env: BaseEnv<'_>,
    depth: usize,
    budget: &crate::dockerfile::shell::Budget,
) -> Option<Vec<(String, String)>> {
    if depth > plan.stages.len() {
        return None;
    }
    let st = &plan.stages[idx];
    match &st.base {
        Base::Scratch => Some(vec![("PATH".into(), crate::oci::DEFAULT_PATH.into())]),
        Base::Image(r) => base_env(r),
        Base::Context(_) => None,
        Base::Stage(b) => {
            let mut env = stage_base_env(plan, *b, base_env, depth + 1, budget)?;
            let lexer = Lexer::new(plan.escape);
            let mut scope = StageScope::new(&plan.meta_args, &plan.options)
                .with_env(std::mem::take(&mut env))
                .with_budget(budget.clone());
            for c in &plan.stages[*b].commands {
                if let Ok(ex) = super::expand_instruction(&c.instruction, &scope, &lexer) {
                    scope.apply(&ex.instruction);
                }
            }
            Some(scope.env)
        }
    }
}
