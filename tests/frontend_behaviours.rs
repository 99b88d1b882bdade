//! The front-end behaviours of ../shared/conformance/buildkit-behaviours.md (sections "Parsing,
//! directives, comments", "FROM, stages, targets", "ARG and build arguments" and "Heredocs"),
//! each checked by a test written for strata. Behaviours whose second half happens when a step
//! runs are tested here for what the front end decides (the plan, the typed instruction, the
//! expansion); tests/BEHAVIOURS.md maps every line to its test and says what the build engine
//! still has to do.

use strata::dockerfile::shell::Lexer;
use strata::dockerfile::{self, lint, CommandLine, Diagnostic, Instruction, Source};
use strata::plan::{self, Base, Options, Plan, Platform};

fn src(text: &str) -> Source {
    Source::new("Dockerfile", text)
}

fn load(text: &str) -> Result<Vec<dockerfile::Command>, Diagnostic> {
    dockerfile::load(&src(text)).map(|(_, c)| c)
}

fn plan_with(text: &str, opts: Options) -> Result<Plan, Diagnostic> {
    let (df, cmds) = dockerfile::load(&src(text))?;
    plan::plan(&df, cmds, opts)
}

fn plan_of(text: &str) -> Result<Plan, Diagnostic> {
    plan_with(text, Options::default())
}

fn args(pairs: &[(&str, &str)]) -> Options {
    Options {
        build_args: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Options::default()
    }
}

/// Walk the target stage and return every expanded instruction with the scope after it.
fn walk(p: &Plan, stage: usize) -> Vec<(Instruction, Vec<(String, String)>)> {
    let lexer = Lexer::new(p.escape);
    let mut scope = p.scope();
    let mut out = Vec::new();
    for c in &p.stages[stage].commands {
        let ex = plan::expand_instruction(&c.instruction, &scope, &lexer).unwrap();
        scope.apply(&ex.instruction);
        out.push((ex.instruction, scope.lookup_env()));
    }
    out
}

fn env_after(p: &Plan, stage: usize) -> Vec<(String, String)> {
    walk(p, stage).pop().map(|(_, e)| e).unwrap_or_default()
}

fn lint_rules(text: &str) -> Vec<&'static str> {
    let (df, cmds) = dockerfile::load(&src(text)).unwrap();
    lint::lint_syntax(&df, &cmds)
        .into_iter()
        .map(|w| w.rule)
        .collect()
}

// ---- Parsing, directives, comments -------------------------------------------------------

#[test]
fn keywords_are_case_insensitive() {
    let c = load("from busybox\ncopy a b\nrun echo hi\n").unwrap();
    assert_eq!(
        c.iter().map(|c| c.instruction.name()).collect::<Vec<_>>(),
        ["FROM", "COPY", "RUN"]
    );
}

#[test]
fn unknown_instruction_errors_with_did_you_mean() {
    let e = load("FROM a\nFNTRYPOINT [\"x\"]\n").unwrap_err();
    assert_eq!(e.message, "unknown instruction: FNTRYPOINT");
    assert_eq!(e.hint.as_deref(), Some("did you mean ENTRYPOINT?"));
}

#[test]
fn unknown_instruction_keeps_its_case_in_the_error() {
    assert_eq!(
        load("FROM a\nFOO bar\n").unwrap_err().message,
        "unknown instruction: FOO"
    );
    assert_eq!(
        load("FROM a\nfoo bar\n").unwrap_err().message,
        "unknown instruction: foo"
    );
}

#[test]
fn only_global_args_means_no_stages() {
    assert_eq!(
        plan_of("ARG a=1\nARG b\n").unwrap_err().message,
        "dockerfile contains no stages to build"
    );
}

#[test]
fn empty_and_comment_only_files_fail() {
    assert_eq!(load("").unwrap_err().message, "file with no instructions");
    assert_eq!(
        load("# just a comment\n\n   # another\n")
            .unwrap_err()
            .message,
        "file with no instructions"
    );
}

#[test]
fn syntax_directive_forms_are_detected() {
    assert_eq!(
        dockerfile::detect_syntax("# syntax=docker/dockerfile:1\nFROM a")
            .unwrap()
            .reference,
        "docker/dockerfile:1"
    );
    assert_eq!(
        dockerfile::detect_syntax("// syntax=x/y\nFROM a")
            .unwrap()
            .reference,
        "x/y"
    );
    assert_eq!(
        dockerfile::detect_syntax("{\"syntax\": \"j/k\"}")
            .unwrap()
            .reference,
        "j/k"
    );
    let d = dockerfile::detect_syntax("#!/usr/bin/env strata\n# syntax=s/t\nFROM a").unwrap();
    assert_eq!((d.reference.as_str(), d.line), ("s/t", 2));
}

#[test]
fn bogus_syntax_directive_fails_at_line_one() {
    let e = load("#syntax=foobar\nFROM a\n").unwrap_err();
    assert!(e.message.contains("foobar"), "{}", e.message);
    assert_eq!(e.position().unwrap().line, 1);
    assert!(load("# syntax=docker/dockerfile:1.7-labs\nFROM a\n").is_ok());
}

#[test]
fn backtick_escape_directive() {
    let c = load("# escape=`\nFROM a\nRUN dir c:\\ `\n  && echo\n").unwrap();
    assert_eq!(
        c[1].instruction,
        Instruction::Run(match &c[1].instruction {
            Instruction::Run(r) => strata::dockerfile::Run {
                command: CommandLine::Shell("dir c:\\   && echo".into()),
                ..r.clone()
            },
            _ => unreachable!(),
        })
    );
    let e = load("# escape=x\nFROM a\n").unwrap_err();
    assert!(e.message.contains("invalid escape token"));
}

#[test]
fn directives_only_at_the_top() {
    // After a comment the escape directive is an ordinary comment: `\` still continues lines.
    let c = load("# hello\n# escape=`\nFROM a\nRUN a \\\n b\n").unwrap();
    assert!(
        matches!(&c[1].instruction, Instruction::Run(r) if r.command == CommandLine::Shell("a  b".into()))
    );
    let c = load("\n# escape=`\nFROM a\nRUN a \\\n b\n").unwrap();
    assert_eq!(c.len(), 2);
}

#[test]
fn directive_once_and_case_insensitive() {
    let e = load("# escape=\\\n# ESCAPE=`\nFROM a\n").unwrap_err();
    assert_eq!(e.message, "only one escape parser directive can be used");
    let df = dockerfile::parse(&src("# EScape=`\nFROM a\n")).unwrap();
    assert_eq!(df.escape, '`');
}

#[test]
fn bom_is_ignored() {
    let c = load("\u{feff}FROM a\nRUN x\n").unwrap();
    assert_eq!(c[0].keyword, "FROM");
}

#[test]
fn continuation_drops_comment_and_blank_lines() {
    let c = load("FROM a\nRUN echo a \\\n# comment\n\n  && echo b\n").unwrap();
    assert!(
        matches!(&c[1].instruction, Instruction::Run(r) if r.command == CommandLine::Shell("echo a   && echo b".into()))
    );
}

#[test]
fn blank_line_in_continuation_warns_not_errors() {
    assert_eq!(
        lint_rules("FROM a\nRUN a \\\n\n b\n"),
        vec!["NoEmptyContinuation"]
    );
}

#[test]
fn overlong_line_is_an_error() {
    let text = format!("FROM a\nLABEL x={}\n", "y".repeat(70_000));
    assert!(load(&text)
        .unwrap_err()
        .message
        .contains("max allowed size of 65535"));
}

#[test]
fn error_in_continued_instruction_spans_all_its_lines() {
    let e = load("FROM a\nCOPY \\\n  onlyone\n").unwrap_err();
    let srcf = e.file.as_ref().unwrap();
    assert_eq!(srcf.position(e.span.start).line, 2);
    assert_eq!(srcf.position(e.span.end - 1).line, 3);
}

#[test]
fn errors_name_file_line_and_column() {
    for (text, line) in [
        ("FROM a\nENV\n", 2),
        ("FROM a\nRUN --mont=x true\n", 2),
        ("FROM a\n\nCOPY --from=$X a b\n", 3),
        ("FROM a\nRUN x\nONBUILD ONBUILD RUN x\n", 3),
    ] {
        let e = load(text).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("Dockerfile:{line}:")),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn invalid_json_falls_back_to_shell_form() {
    let c = load("FROM a\nRUN [\"echo\",\"hello\"]this is invalid\nENTRYPOINT []random string\n")
        .unwrap();
    assert!(
        matches!(&c[1].instruction, Instruction::Run(r) if matches!(r.command, CommandLine::Shell(_)))
    );
    assert_eq!(
        c[2].instruction,
        Instruction::Entrypoint(CommandLine::Shell("[]random string".into()))
    );
    assert!(load("FROM a\nCMD [\"a\", 1]\n").is_err());
}

#[test]
fn doc_comments_describe_stages_and_args() {
    let p = plan_of(
        "# VERSION the release\nARG VERSION=1\n# build compiles everything\nFROM a AS build\n",
    )
    .unwrap();
    assert_eq!(p.meta_args[0].description.as_deref(), Some("the release"));
    assert_eq!(
        p.stages[0].description.as_deref(),
        Some("compiles everything")
    );
}

// ---- FROM, stages, targets ---------------------------------------------------------------

#[test]
fn stage_names_are_case_insensitive() {
    let p = plan_with(
        "FROM a AS Build\nFROM b\nCOPY --from=BUILD /x /x\n",
        Options {
            target: Some("build".into()),
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(p.target, 0);
    let p = plan_of("FROM a AS Build\nFROM build\n").unwrap();
    assert_eq!(p.stages[1].base, Base::Stage(0));
}

#[test]
fn unknown_target_suggests() {
    let e = plan_with(
        "FROM a AS build\nFROM b\n",
        Options {
            target: Some("bulid".into()),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.hint.as_deref(), Some("did you mean build?"));
}

#[test]
fn last_stage_is_default_and_unneeded_stages_are_pruned() {
    let p = plan_of("FROM a AS broken\nRUN false\nFROM b AS ok\nRUN true\n").unwrap();
    assert_eq!((p.target, p.order.clone()), (1, vec![1]));
}

#[test]
fn from_earlier_stage_is_a_stage_base() {
    let p = plan_of("FROM a AS base\nENV X=1\nFROM base\n").unwrap();
    assert_eq!(p.stages[1].base, Base::Stage(0));
    assert_eq!(p.order, vec![0, 1]);
}

#[test]
fn copy_from_unknown_name_is_an_image() {
    let p = plan_of("FROM a\nCOPY --from=busybox /bin/busybox /b\n").unwrap();
    assert_eq!(p.stages[0].externals[0].name, "busybox");
}

#[test]
fn stage_wins_over_image_of_same_name() {
    let p = plan_of("FROM scratch AS busybox\nFROM a\nCOPY --from=busybox /x /x\n").unwrap();
    assert_eq!(p.stages[1].deps[0].stage, 0);
    assert!(p.stages[1].externals.is_empty());
}

#[test]
fn copy_from_later_stage_fails() {
    let e = plan_of("FROM a\nCOPY --from=later /x /x\nFROM b AS later\n").unwrap_err();
    assert!(e
        .message
        .contains("needs to be defined before current stage"));
}

#[test]
fn self_and_cyclic_references_fail() {
    assert_eq!(
        plan_of("FROM a AS s\nCOPY --from=s /x /x\n")
            .unwrap_err()
            .message,
        "circular dependency detected on stage: s"
    );
    assert!(plan_of("FROM y AS x\nFROM x AS y\n")
        .unwrap_err()
        .message
        .starts_with("circular dependency detected on stage"));
}

#[test]
fn copy_from_numeric_index() {
    let p = plan_of("FROM a\nFROM b\nCOPY --from=0 /x /x\n").unwrap();
    assert_eq!(p.stages[1].deps[0].stage, 0);
    assert!(plan_of("FROM a\nCOPY --from=5 /x /x\n").is_err());
}

#[test]
fn copy_from_variable_is_rejected() {
    assert!(load("FROM a\nARG S\nCOPY --from=$S /x /x\n")
        .unwrap_err()
        .message
        .contains("variable expansion is not supported for --from"));
}

#[test]
fn from_expands_global_args() {
    let p = plan_of("ARG tag=1.36\nARG a2=box\nARG image=idlebox\nFROM busybox:${tag}\nFROM busy$a2\nFROM busy${image#idle}\n").unwrap();
    let bases: Vec<Base> = p.stages.iter().map(|s| s.base.clone()).collect();
    assert_eq!(
        bases,
        vec![
            Base::Image("busybox:1.36".into()),
            Base::Image("busybox".into()),
            Base::Image("busybox".into())
        ]
    );
}

#[test]
fn from_stage_named_by_platform() {
    let o = Options {
        target_platform: Platform::parse("linux/arm64").unwrap(),
        ..Options::default()
    };
    let p = plan_with(
        "FROM a AS build-linux\nFROM b AS build-windows\nFROM build-${TARGETOS}\n",
        o,
    )
    .unwrap();
    assert_eq!(p.stages[2].base, Base::Stage(0));
}

#[test]
fn empty_base_name_errors() {
    assert!(plan_of("FROM \"\"\n").is_err());
    assert!(plan_of("ARG BLANK\nFROM ${BLANK}\n")
        .unwrap_err()
        .message
        .contains("should not be blank"));
}

#[test]
fn from_platform_expands_build_platform() {
    let o = Options {
        build_platform: Platform::parse("linux/amd64").unwrap(),
        ..Options::default()
    };
    let p = plan_with("FROM --platform=$BUILDPLATFORM a\n", o).unwrap();
    assert_eq!(p.stages[0].platform.as_deref(), Some("linux/amd64"));
}

#[test]
fn from_scratch_is_an_empty_base() {
    assert_eq!(
        plan_of("FROM scratch\n").unwrap().stages[0].base,
        Base::Scratch
    );
    assert_eq!(
        plan_of("FROM SCRATCH\n").unwrap().stages[0].base,
        Base::Scratch
    );
}

#[test]
fn named_context_replaces_stage_image_and_from_references() {
    let o = Options {
        named_contexts: vec!["base".into(), "tools".into()],
        ..Options::default()
    };
    let p = plan_with("FROM a AS base\nRUN false\nFROM base\nCOPY --from=tools /t /t\nRUN --mount=from=tools,target=/m true\n", o).unwrap();
    assert_eq!(p.stages[1].base, Base::Context("base".into()));
    assert_eq!(
        p.stages[1]
            .externals
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["tools", "tools"]
    );
    // The replaced stage's own instructions are not built.
    assert_eq!(p.order, vec![1]);
}

#[test]
fn unused_stages_are_never_resolved() {
    let p = plan_of("FROM a AS unused\nCOPY --from=does-not-matter /x /x\nFROM b\n").unwrap();
    assert_eq!(p.order, vec![1]);
}

#[test]
fn copy_from_stage_is_a_dependency_not_a_base() {
    let p = plan_of("FROM a AS sib\nLABEL x=1\nFROM b\nCOPY --from=sib / /\n").unwrap();
    assert_eq!(p.stages[1].base, Base::Image("b".into()));
    assert_eq!(p.order, vec![0, 1]);
}

#[test]
fn stage_base_chain_reaches_the_registry_image() {
    let p = plan_of("FROM python:3.12 AS a\nFROM a AS b\nFROM b\n").unwrap();
    let mut s = p.target;
    while let Base::Stage(b) = p.stages[s].base {
        s = b;
    }
    assert_eq!(p.stages[s].base, Base::Image("python:3.12".into()));
}

// ---- ARG and build arguments -------------------------------------------------------------

#[test]
fn global_arg_needs_redeclaration_in_stage() {
    let p = plan_of("ARG V=1\nFROM a\nENV before=${V}x\nARG V\nENV after=${V}x\n").unwrap();
    let env = env_after(&p, 0);
    assert!(
        env.contains(&("before".into(), "x".into()))
            && env.contains(&("after".into(), "1x".into())),
        "{env:?}"
    );
}

#[test]
fn build_args_override_defaults_globally_and_per_stage() {
    let p = plan_with(
        "ARG G=g\nFROM img:$G\nARG L=l\nENV out=$L\n",
        args(&[("G", "G2"), ("L", "L2")]),
    )
    .unwrap();
    assert_eq!(p.stages[0].base, Base::Image("img:G2".into()));
    assert!(env_after(&p, 0).contains(&("out".into(), "L2".into())));
}

#[test]
fn one_arg_line_declares_several_names() {
    let p = plan_of("FROM a\nARG a1=\"foo bar\" a2=box\nARG a3 a4=\"123 456\" a1\n").unwrap();
    let env = env_after(&p, 0);
    assert!(env.contains(&("a1".into(), "foo bar".into())));
    assert!(env.contains(&("a2".into(), "box".into())));
    assert!(env.contains(&("a4".into(), "123 456".into())));
    assert!(!env.iter().any(|(k, _)| k == "a3"));
}

#[test]
fn arg_defaults_reference_earlier_args() {
    let p = plan_of("ARG a2=box\nARG a3=\"$a2-foo\"\nFROM img-$a3\n").unwrap();
    assert_eq!(p.stages[0].base, Base::Image("img-box-foo".into()));
}

#[test]
fn mandatory_arg_default() {
    let text = "ARG VAR\nARG A=${VAR:?\"VAR is required\"}\nFROM a\n";
    let e = plan_of(text).unwrap_err();
    assert!(e.message.contains("VAR: VAR is required"), "{}", e.message);
    assert!(plan_with(text, args(&[("VAR", "x")])).is_ok());
    assert!(plan_with(text, args(&[("A", "direct")])).is_ok());
}

#[test]
fn undeclared_arg_is_absent_and_empty_arg_is_present() {
    let p = plan_of("FROM a\nARG FOO\nARG BAR=\n").unwrap();
    let env = env_after(&p, 0);
    assert!(!env.iter().any(|(k, _)| k == "FOO"));
    assert!(env.contains(&("BAR".into(), String::new())));
}

#[test]
fn proxy_args_are_predefined() {
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "FTP_PROXY",
        "ALL_PROXY",
    ] {
        assert!(plan::PROXY_ARGS.contains(&name), "{name}");
    }
}

#[test]
fn platform_args_after_declaration_and_overridable() {
    let o = Options {
        target_platform: Platform::parse("linux/arm/v7").unwrap(),
        build_args: [("TARGETOS".to_string(), "freebsd".to_string())].into(),
        ..Options::default()
    };
    let p = plan_with("FROM a\nENV before=$TARGETARCH\nARG TARGETARCH TARGETVARIANT TARGETOS\nENV arch=$TARGETARCH v=$TARGETVARIANT os=$TARGETOS\n", o).unwrap();
    let env = env_after(&p, 0);
    for kv in [
        ("before", ""),
        ("arch", "arm"),
        ("v", "v7"),
        ("os", "freebsd"),
    ] {
        assert!(
            env.contains(&(kv.0.into(), kv.1.into())),
            "{kv:?} in {env:?}"
        );
    }
}

#[test]
fn target_stage_arg() {
    let text = "FROM a AS first\nARG TARGETSTAGE\nENV t=$TARGETSTAGE\nFROM b\nENV before=$TARGETSTAGE\nARG TARGETSTAGE\nENV t=$TARGETSTAGE\n";
    let p = plan_of(text).unwrap();
    let env = env_after(&p, 1);
    assert!(
        env.contains(&("before".into(), "".into()))
            && env.contains(&("t".into(), "default".into())),
        "{env:?}"
    );
    let p = plan_with(
        text,
        Options {
            target: Some("first".into()),
            ..Options::default()
        },
    )
    .unwrap();
    assert!(env_after(&p, 0).contains(&("t".into(), "first".into())));
}

#[test]
fn arg_in_legacy_env_default_and_trimming() {
    let p = plan_of("FROM a\nARG my_arg\nARG v=1.2.3-beta\nENV my_arg \"my_arg=${my_arg:-def_val}\"\nENV short=${v%%-*} major=${v%%.*}\n").unwrap();
    let env = env_after(&p, 0);
    assert!(
        env.contains(&("my_arg".into(), "my_arg=def_val".into())),
        "{env:?}"
    );
    assert!(
        env.contains(&("short".into(), "1.2.3".into()))
            && env.contains(&("major".into(), "1".into()))
    );
}

#[test]
fn empty_build_arg_counts_as_unset_for_colon_default() {
    let p = plan_with("FROM a\nARG X\nENV y=${X:-fallback}\n", args(&[("X", "")])).unwrap();
    assert!(env_after(&p, 0).contains(&("y".into(), "fallback".into())));
}

#[test]
fn args_expand_in_mount_chown_chmod_checksum_and_add_sources() {
    let text = "FROM a\nARG T=cache D=/root/.cache U=1000 M=0755 SUM=sha256:0000000000000000000000000000000000000000000000000000000000000000 URL=https://example.com/f.tgz\n\
RUN --mount=type=$T,target=$D true\nCOPY --chown=$U --chmod=$M a /b\nADD --checksum=$SUM $URL /c\n";
    let p = plan_of(text).unwrap();
    let w = walk(&p, 0);
    let Instruction::Run(r) = &w[1].0 else {
        panic!()
    };
    let m = strata::dockerfile::MountSpec::parse(&r.mounts[0], false).unwrap();
    assert_eq!(
        (m.kind_name(), m.target.as_deref()),
        ("cache", Some("/root/.cache"))
    );
    let Instruction::Copy(c) = &w[2].0 else {
        panic!()
    };
    assert_eq!(
        (c.chown.as_deref(), c.chmod.as_deref()),
        (Some("1000"), Some("0755"))
    );
    let Instruction::Add(a) = &w[3].0 else {
        panic!()
    };
    assert_eq!(a.sources, vec!["https://example.com/f.tgz"]);
    assert!(a.checksum.as_deref().unwrap().starts_with("sha256:0000"));
}

#[test]
fn redeclared_arg_takes_last_value() {
    let p = plan_of("FROM a\nARG foo=bar\nARG foo=bar2\nENV x=$foo\n").unwrap();
    assert!(env_after(&p, 0).contains(&("x".into(), "bar2".into())));
}

#[test]
fn source_date_epoch_from_build_arg_or_global_default() {
    let p = plan_of("ARG SOURCE_DATE_EPOCH=1700000000\nFROM a\n").unwrap();
    assert_eq!(p.meta_value("SOURCE_DATE_EPOCH"), Some("1700000000"));
    let p = plan_with(
        "ARG SOURCE_DATE_EPOCH=1\nFROM a\n",
        args(&[("SOURCE_DATE_EPOCH", "42")]),
    )
    .unwrap();
    assert_eq!(p.meta_value("SOURCE_DATE_EPOCH"), Some("42"));
}

#[test]
fn sandbox_hostname_build_arg_reaches_the_plan() {
    let p = plan_with(
        "FROM a\n",
        args(&[("BUILDKIT_SANDBOX_HOSTNAME", "builder")]),
    )
    .unwrap();
    assert_eq!(
        p.options
            .build_args
            .get("BUILDKIT_SANDBOX_HOSTNAME")
            .map(String::as_str),
        Some("builder")
    );
}

// ---- Heredocs ----------------------------------------------------------------------------

fn run_of(text: &str) -> strata::dockerfile::Run {
    match load(text).unwrap().pop().unwrap().instruction {
        Instruction::Run(r) => r,
        other => panic!("{other:?}"),
    }
}

fn copy_of(text: &str) -> strata::dockerfile::Copy {
    match load(text).unwrap().pop().unwrap().instruction {
        Instruction::Copy(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn run_heredoc_is_a_script_for_the_shell() {
    let r = run_of("FROM a\nRUN <<EOF\necho one\necho two\nEOF\n");
    assert_eq!(r.command, CommandLine::Shell("<<EOF".into()));
    assert_eq!(r.heredocs[0].content, "echo one\necho two\n");
}

#[test]
fn heredoc_shebang_body_is_kept() {
    let r = run_of("FROM a\nRUN <<EOF\n#!/bin/awk -f\nBEGIN { print \"x\" }\nEOF\n");
    assert!(r.heredocs[0].content.starts_with("#!/bin/awk -f\n"));
}

#[test]
fn dash_heredoc_strips_tabs_plain_keeps_them() {
    let c = copy_of("FROM a\nCOPY <<-EOF /f\n\tindented\n\tEOF\n");
    assert_eq!(c.inline[0].data, "indented\n");
    let c = copy_of("FROM a\nCOPY <<EOF /f\n\tindented\nEOF\n");
    assert_eq!(c.inline[0].data, "\tindented\n");
    let r = run_of("FROM a\nRUN <<-EOF\n\techo x\nEOF\n");
    assert_eq!(r.heredocs[0].chomped(), "echo x\n");
}

#[test]
fn several_heredocs_pipes_and_continuations() {
    let r = run_of(
        "FROM a\nRUN <<EOF1 cat > /a && \\\n  cat <<EOF2 | tr a-z A-Z\none\nEOF1\ntwo\nEOF2\n",
    );
    assert_eq!(
        r.heredocs
            .iter()
            .map(|h| (h.name.as_str(), h.content.as_str()))
            .collect::<Vec<_>>(),
        [("EOF1", "one\n"), ("EOF2", "two\n")]
    );
}

#[test]
fn fd_heredocs() {
    let r =
        run_of("FROM a\nRUN 3<<IN1 4<<IN2 cat /proc/self/fd/3 /proc/self/fd/4\nx\nIN1\ny\nIN2\n");
    assert_eq!(r.heredocs.iter().map(|h| h.fd).collect::<Vec<_>>(), [3, 4]);
}

#[test]
fn heredoc_followed_by_words() {
    let r = run_of("FROM a\nRUN <<EOF sh > /out\necho hi\nEOF\n");
    assert_eq!(r.command, CommandLine::Shell("<<EOF sh > /out".into()));
}

#[test]
fn unquoted_copy_heredoc_expands_quoted_does_not() {
    let c = copy_of("FROM a\nCOPY <<EOF /f\n${name} \"q\"\nEOF\n");
    assert!(c.inline[0].expand);
    assert_eq!(c.inline[0].data, "${name} \"q\"\n");
    assert!(!copy_of("FROM a\nCOPY <<'EOF' /f\nx\nEOF\n").inline[0].expand);
    assert!(!copy_of("FROM a\nCOPY <<\"EOF\" /f\nx\nEOF\n").inline[0].expand);
}

#[test]
fn run_heredoc_is_not_expanded_by_the_frontend() {
    // The shell does the expanding when the step runs, so shell variables shadow ARGs.
    let p = plan_of("FROM a\nARG name=arg\nRUN <<EOF\nname=shell; echo $name\nEOF\n").unwrap();
    let w = walk(&p, 0);
    let Instruction::Run(r) = &w[1].0 else {
        panic!()
    };
    assert_eq!(r.heredocs[0].content, "name=shell; echo $name\n");
}

#[test]
fn copy_heredoc_keeps_backslashes_raw_for_the_engine() {
    let c = copy_of("FROM a\nCOPY <<EOF /f\na \\\nb \\\\ \\$x\nEOF\n");
    assert_eq!(c.inline[0].data, "a \\\nb \\\\ \\$x\n");
}

#[test]
fn copy_heredoc_files_named_after_terminators() {
    let c = copy_of("FROM a\nCOPY <<EOF <<EOF2 dir/\n1\nEOF\n2\nEOF2\n");
    assert_eq!(
        c.inline.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(),
        ["EOF", "EOF2"]
    );
    assert_eq!(c.dest, "dir/");
}

#[test]
fn copy_heredoc_with_chmod_and_chown() {
    let c = copy_of("FROM a\nCOPY --chmod=0755 --chown=1000:1000 <<EOF /run.sh\n#!/bin/sh\nEOF\n");
    assert_eq!(
        (c.chmod.as_deref(), c.chown.as_deref()),
        (Some("0755"), Some("1000:1000"))
    );
}

#[test]
fn heredoc_mixed_with_files() {
    let c = copy_of("FROM a\nCOPY <<EOF foo.txt /bar\ninline\nEOF\n");
    assert_eq!(c.sources, vec!["foo.txt"]);
    assert_eq!(c.inline.len(), 1);
}

#[test]
fn heredoc_destination_is_an_error() {
    assert!(load("FROM a\nCOPY foo <<EOF\nx\nEOF\n")
        .unwrap_err()
        .message
        .contains("COPY cannot accept a heredoc as a destination"));
}

#[test]
fn json_run_never_has_heredocs() {
    let r = run_of("FROM a\nRUN [\"<<EOF\"]\n");
    assert!(r.heredocs.is_empty());
    assert_eq!(r.command, CommandLine::Exec(vec!["<<EOF".into()]));
}

#[test]
fn onbuild_run_heredoc_keeps_body() {
    let c = load("FROM a\nONBUILD RUN <<EOF\necho from trigger\nEOF\n").unwrap();
    let Instruction::Onbuild(o) = &c[1].instruction else {
        panic!()
    };
    let Instruction::Run(r) = o.trigger.as_ref() else {
        panic!()
    };
    assert_eq!(r.heredocs[0].content, "echo from trigger\n");
}

#[test]
fn heredoc_with_mount_flag() {
    let r = run_of("FROM a\nRUN --mount=type=cache,target=/c <<EOF\necho\nEOF\n");
    assert_eq!(r.mounts.len(), 1);
    assert_eq!(r.heredocs.len(), 1);
}
