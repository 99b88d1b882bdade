use super::*;
use crate::dockerfile::{load, Source};

fn plan_of(text: &str, opts: Options) -> Result<Plan, Diagnostic> {
    let src = Source::new("Dockerfile", text);
    let (df, cmds) = load(&src)?;
    plan(&df, cmds, opts)
}

fn with_args(args: &[(&str, &str)]) -> Options {
    Options {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Options::default()
    }
}

#[test]
fn global_args_expand_in_from_and_build_args_override() {
    let text = "ARG tag=1.0\nARG img=busy$a2\nFROM busybox:${tag} AS a\nFROM ${img}box\n";
    let p = plan_of(text, Options::default()).unwrap();
    assert_eq!(p.stages[0].base, Base::Image("busybox:1.0".into()));
    assert_eq!(p.stages[1].base, Base::Image("busybox".into()));
    let p = plan_of(text, with_args(&[("tag", "2.0")])).unwrap();
    assert_eq!(p.stages[0].base, Base::Image("busybox:2.0".into()));
}

#[test]
fn from_scope_has_prefix_trimming() {
    let p = plan_of(
        "ARG image=idlebox\nFROM busy${image#idle}\n",
        Options::default(),
    )
    .unwrap();
    assert_eq!(p.stages[0].base, Base::Image("busybox".into()));
}

#[test]
fn empty_base_is_an_error() {
    let e = plan_of("ARG BLANK\nFROM ${BLANK}\n", Options::default()).unwrap_err();
    assert!(e.message.contains("should not be blank"), "{}", e.message);
    let e = plan_of("FROM \"\"\n", Options::default());
    assert!(e.is_err());
}

#[test]
fn mandatory_meta_arg_fails_unless_provided() {
    let text = "ARG VAR\nARG A=${VAR:?\"need VAR\"}\nFROM x\n";
    let e = plan_of(text, Options::default()).unwrap_err();
    assert!(e.message.contains("VAR: need VAR"), "{}", e.message);
    assert!(plan_of(text, with_args(&[("VAR", "1")])).is_ok());
    assert!(plan_of(text, with_args(&[("A", "given")])).is_ok());
}

#[test]
fn only_args_no_stages() {
    let e = plan_of("ARG a=1\n", Options::default()).unwrap_err();
    assert_eq!(e.message, "dockerfile contains no stages to build");
}

#[test]
fn nothing_but_arg_before_from() {
    let e = plan_of("RUN x\nFROM a\n", Options::default()).unwrap_err();
    assert!(e.message.contains("before the first FROM"));
}

#[test]
fn target_prunes_and_orders() {
    let text = "FROM scratch AS base\nFROM busybox AS broken\nRUN false\nFROM base AS build\nCOPY --from=BASE / /\nFROM build\n";
    let p = plan_of(text, Options::default()).unwrap();
    assert_eq!(p.target, 3);
    assert_eq!(p.order, vec![0, 2, 3]);
    assert_eq!(p.stages[0].base, Base::Scratch);
    let p = plan_of(
        text,
        Options {
            target: Some("Broken".into()),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(p.order, vec![1]);
}

#[test]
fn unknown_target_suggests() {
    let e = plan_of(
        "FROM a AS build\nFROM b\n",
        Options {
            target: Some("bulid".into()),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(e.message.contains("\"bulid\" could not be found"));
    assert_eq!(e.hint.as_deref(), Some("did you mean build?"));
}

#[test]
fn copy_from_later_stage_fails_and_cycles_are_found() {
    let e = plan_of(
        "FROM a AS one\nCOPY --from=two / /\nFROM b AS two\n",
        Options::default(),
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("needs to be defined before current stage"),
        "{}",
        e.message
    );
    let e = plan_of("FROM a AS one\nCOPY --from=one / /\n", Options::default()).unwrap_err();
    assert_eq!(e.message, "circular dependency detected on stage: one");
    let e = plan_of("FROM two AS one\nFROM one AS two\n", Options::default()).unwrap_err();
    assert!(
        e.message
            .starts_with("circular dependency detected on stage:"),
        "{}",
        e.message
    );
}

#[test]
fn numeric_from_and_implicit_images() {
    let p = plan_of(
        "FROM a\nFROM b\nCOPY --from=0 /x /x\nCOPY --from=busybox /bin/sh /sh\n",
        Options::default(),
    )
    .unwrap();
    assert_eq!(p.stages[1].deps[0].stage, 0);
    assert_eq!(p.stages[1].externals[0].name, "busybox");
    assert_eq!(p.order, vec![0, 1]);
}

#[test]
fn stage_wins_over_image_of_same_name() {
    let p = plan_of(
        "FROM scratch AS busybox\nFROM busybox\n",
        Options::default(),
    )
    .unwrap();
    assert_eq!(p.stages[1].base, Base::Stage(0));
}

#[test]
fn mount_from_names_a_stage_as_written() {
    let text = "FROM a AS src\nFROM b\nRUN --mount=from=src,target=/s true\n";
    let p = plan_of(text, Options::default()).unwrap();
    assert_eq!(
        p.stages[1].deps[0],
        Dependency {
            stage: 0,
            kind: DepKind::MountFrom,
            span: p.stages[1].deps[0].span
        }
    );
    // A variable is refused when the Dockerfile is read, ARG or ENV alike (BuildKit's
    // parseMount): BuildKit never expands `from`.
    for decl in ["ARG S=src", "ENV S=src"] {
        let text = format!("FROM a AS src\nFROM b\n{decl}\nRUN --mount=from=$S,target=/s true\n");
        let e = plan_of(&text, Options::default()).unwrap_err();
        assert!(
            e.message
                .contains("'from' doesn't support variable expansion, define alias stage instead"),
            "{}",
            e.message
        );
    }
}

#[test]
fn onbuild_copy_from_creates_dependency() {
    let text = "FROM a AS other\nFROM b AS base\nONBUILD COPY --from=other /x /x\nFROM base\n";
    let p = plan_of(text, Options::default()).unwrap();
    assert!(p.stages[2]
        .deps
        .iter()
        .any(|d| d.stage == 0 && d.kind == DepKind::CopyFrom));
    assert_eq!(p.order, vec![1, 0, 2]);
}

#[test]
fn named_context_replaces_stage_or_image() {
    let opts = Options {
        named_contexts: vec!["base".into()],
        ..Options::default()
    };
    let p = plan_of("FROM x AS base\nRUN false\nFROM base\n", opts).unwrap();
    assert_eq!(p.stages[1].base, Base::Context("base".into()));
    assert_eq!(p.order, vec![1]);
}

#[test]
fn stage_arg_scoping() {
    let text = "ARG G=global\nFROM x\nRUN echo\nARG G\nARG L=${G}-local\nENV E=$L a=1 b=$a\n";
    let p = plan_of(text, Options::default()).unwrap();
    let lexer = Lexer::new('\\');
    let mut scope = StageScope::new(&p.meta_args, &p.options);
    let mut seen = Vec::new();
    for c in &p.stages[0].commands {
        let ex = expand_instruction(&c.instruction, &scope, &lexer).unwrap();
        if let Instruction::Env(kvs) = &ex.instruction {
            seen = kvs
                .iter()
                .map(|k| (k.key.clone(), k.value.clone()))
                .collect();
        }
        scope.apply(&ex.instruction);
    }
    // ENV a=1 b=$a on one line sees the old (unset) a.
    assert_eq!(
        seen,
        vec![
            ("E".into(), "global-local".into()),
            ("a".into(), "1".into()),
            ("b".into(), "".into())
        ]
    );
}

#[test]
fn global_arg_invisible_until_redeclared() {
    let text = "ARG V=1\nFROM x\nWORKDIR /a$V\nARG V\nWORKDIR /b$V\n";
    let p = plan_of(text, Options::default()).unwrap();
    let lexer = Lexer::new('\\');
    let mut scope = StageScope::new(&p.meta_args, &p.options);
    let mut dirs = Vec::new();
    for c in &p.stages[0].commands {
        let ex = expand_instruction(&c.instruction, &scope, &lexer).unwrap();
        if let Instruction::Workdir(w) = &ex.instruction {
            dirs.push(w.clone());
        }
        scope.apply(&ex.instruction);
    }
    assert_eq!(dirs, vec!["/a", "/b1"]);
}

#[test]
fn platform_args_in_from() {
    let o = Options {
        target_platform: Platform::parse("linux/arm64/v8").unwrap(),
        ..Options::default()
    };
    let p = plan_of("FROM build-${TARGETARCH}\n", o).unwrap();
    assert_eq!(p.stages[0].base, Base::Image("build-arm64".into()));
}

#[test]
fn descriptions_from_comments() {
    let text = "# foo sets foo\nARG foo=bar\n\n# base defines first stage\nFROM busybox AS base\n";
    let p = plan_of(text, Options::default()).unwrap();
    assert_eq!(p.meta_args[0].description.as_deref(), Some("sets foo"));
    assert_eq!(
        p.stages[0].description.as_deref(),
        Some("defines first stage")
    );
}

#[test]
fn scope_lint_rules() {
    let text = "ARG VERSION=1\nFROM img:${VERSON}\nFROM scratch\nENV A=1\nWORKDIR /x/$B\n";
    let p = plan_of(text, Options::default()).unwrap();
    let w = lint::lint_plan(&p, &|_| None);
    let rules: Vec<&str> = w.iter().map(|w| w.rule).collect();
    assert_eq!(
        rules,
        vec![
            "UndefinedArgInFrom",
            "InvalidDefaultArgInFrom",
            "UndefinedVar"
        ]
    );
    assert_eq!(w[0].hint.as_deref(), Some("did you mean VERSION?"));
}

#[test]
fn expansion_is_bounded_in_total_across_a_walk_and_its_stages() {
    use crate::dockerfile::shell::{Budget, MAX_TOTAL_EXPANSION};
    // 1,500 LABEL lines each just under the per-word limit: the walk stops at the line that
    // takes the growth past the total, and every word with a `$` after it fails at once.
    let mut text = String::from("FROM x\nARG a0=");
    text.push_str(&"x".repeat(1000));
    text.push('\n');
    for i in 1..=10 {
        text.push_str(&format!("ARG a{i}=$a{p}$a{p}\n", p = i - 1));
    }
    for n in 0..1500 {
        text.push_str(&format!("LABEL l{n}=$a10\n"));
    }
    text.push_str("FROM x\nARG b=$a10\n");
    let p = plan_of(&text, Options::default()).unwrap();
    let lexer = Lexer::new('\\');
    let budget = Budget::default();
    let mut scope = StageScope::new(&p.meta_args, &p.options).with_budget(budget.clone());
    let mut failed_at = None;
    for (i, c) in p.stages[0].commands.iter().enumerate() {
        match expand_instruction(&c.instruction, &scope, &lexer) {
            Ok(ex) => scope.apply(&ex.instruction),
            Err(e) => {
                assert!(e.0.contains("16 MiB"), "{e}");
                failed_at = Some(i);
                break;
            }
        }
    }
    // 11 ARGs grow by about 2 MiB, then each label by 1,023,996 bytes.
    assert_eq!(failed_at, Some(11 + 14), "{}", budget.used());
    assert!(budget.used() <= MAX_TOTAL_EXPANSION + (1 << 20));
    // Another stage of the same walk shares the spent budget: a word with a `$` fails at once.
    let e = expand_instruction(
        &p.stages[1].commands[0].instruction,
        &StageScope::new(&p.meta_args, &p.options).with_budget(budget),
        &lexer,
    );
    assert!(e.is_err());
    // A walk of its own starts with the whole budget.
    let fresh = StageScope::new(&p.meta_args, &p.options);
    assert!(expand_instruction(&p.stages[0].commands[0].instruction, &fresh, &lexer).is_ok());
}
