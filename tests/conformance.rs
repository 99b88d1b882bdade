//! Conformance against BuildKit's parser and shell test data and real-world Dockerfiles.
//!
//! The corpora live outside the project, in `../shared/conformance` (or `$STRATA_CONFORMANCE_DIR`).
//! When they are absent each test prints that it was skipped and why; with
//! `STRATA_REQUIRE_CONFORMANCE=1` (set by CI) a missing corpus is a failure instead.

use std::path::{Path, PathBuf};

use serde_json::Value;
use strata::dockerfile::parser::{
    chomp_tabs, heredocs_from_line, parse_heredoc_word, parse_words, scan_directives,
};
use strata::dockerfile::shell::{check_pattern, env_from_list, Lexer, Lookup};
use strata::dockerfile::{
    self, detect_check, detect_syntax, dump, parse, type_all, CommandLine, Instruction, Source,
};

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("STRATA_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance"));
    if dir.join("buildkit").is_dir() {
        return Some(dir);
    }
    if std::env::var("STRATA_REQUIRE_CONFORMANCE").as_deref() == Ok("1") {
        panic!(
            "conformance corpus not found at {} and STRATA_REQUIRE_CONFORMANCE=1",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: conformance corpus not found at {} (set STRATA_CONFORMANCE_DIR)",
        dir.display()
    );
    None
}

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&fs_err::read(p).unwrap()).into_owned()
}

fn json(dir: &Path, rel: &str) -> Value {
    serde_json::from_str(&read(&dir.join(rel))).unwrap()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn src(text: &str) -> Source {
    Source::new("Dockerfile", text)
}

/// Score table printed at the end of each test.
struct Score {
    name: &'static str,
    pass: usize,
    total: usize,
    failures: Vec<String>,
}

impl Score {
    fn new(name: &'static str) -> Self {
        Score {
            name,
            pass: 0,
            total: 0,
            failures: Vec::new(),
        }
    }
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.total += 1;
        if ok {
            self.pass += 1;
        } else {
            self.failures.push(what());
        }
    }
    fn finish(self) {
        println!("conformance {}: {}/{}", self.name, self.pass, self.total);
        for f in &self.failures {
            println!("  FAIL {f}");
        }
        assert!(self.total > 0, "{}: no cases were run", self.name);
        assert!(
            self.failures.is_empty(),
            "{}: {} of {} cases failed:\n{}",
            self.name,
            self.failures.len(),
            self.total,
            self.failures.join("\n")
        );
    }
}

fn sorted_dirs(p: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs_err::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn buildkit_testfiles_dump_byte_identical() {
    let Some(dir) = corpus() else { return };
    let mut s = Score::new("parser/testfiles");
    for case in sorted_dirs(&dir.join("buildkit/parser/testfiles")) {
        let want = read(&case.join("result"));
        let got = parse(&Source::from_bytes(
            "Dockerfile",
            &fs_err::read(case.join("Dockerfile")).unwrap(),
        ))
        .map(|df| dump(&df) + "\n");
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        match got {
            Ok(g) => s.check(g == want, || {
                format!("{name}: dump differs\n--- want\n{want}--- got\n{g}")
            }),
            Err(e) => s.check(false, || format!("{name}: {e}")),
        }
    }
    assert_eq!(s.total, 33);
    s.finish();
}

#[test]
fn buildkit_negative_files_are_rejected() {
    let Some(dir) = corpus() else { return };
    let mut s = Score::new("parser/testfiles-negative");
    for case in sorted_dirs(&dir.join("buildkit/parser/testfiles-negative")) {
        let text = fs_err::read(case.join("Dockerfile")).unwrap();
        let r = parse(&Source::from_bytes("Dockerfile", &text));
        s.check(r.is_err(), || format!("{} parsed", case.display()));
    }
    assert_eq!(s.total, 4);
    s.finish();
}

#[test]
fn buildkit_testfile_line_ranges() {
    let Some(dir) = corpus() else { return };
    let misc = json(&dir, "buildkit/parser-extra/misc.json");
    let ln = &misc["line_numbers"];
    let df = parse(&src(&read(
        &dir.join("buildkit/parser/testfile-line/Dockerfile"),
    )))
    .unwrap();
    let mut s = Score::new("parser/testfile-line");
    let got: Vec<[usize; 2]> = df
        .nodes
        .iter()
        .map(|n| [n.start_line, n.end_line])
        .collect();
    let want: Vec<[usize; 2]> = serde_json::from_value(ln["children"].clone()).unwrap();
    s.check(got == want, || format!("children {got:?} != {want:?}"));
    let root = [got.first().unwrap()[0], got.last().unwrap()[1]];
    let want_root: [usize; 2] = serde_json::from_value(ln["root"].clone()).unwrap();
    s.check(root == want_root, || {
        format!("root {root:?} != {want_root:?}")
    });
    s.finish();
}

#[test]
fn buildkit_heredocs() {
    let Some(dir) = corpus() else { return };
    let h = json(&dir, "buildkit/parser-extra/heredocs.json");
    let mut s = Score::new("parser-extra/heredocs");

    let df = parse(&src(h["extract"]["dockerfile"].as_str().unwrap())).unwrap();
    for child in h["extract"]["children"].as_array().unwrap() {
        let i = child["index"].as_u64().unwrap() as usize;
        if child["heredocs"].is_null() {
            continue;
        }
        let want: Vec<(String, String, bool, bool, u64)> = child["heredocs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap().into(),
                    d["content"].as_str().unwrap().into(),
                    d["expand"].as_bool().unwrap(),
                    d["chomp"].as_bool().unwrap(),
                    d["fd"].as_u64().unwrap(),
                )
            })
            .collect();
        let got: Vec<(String, String, bool, bool, u64)> = df.nodes.get(i).map_or(vec![], |n| {
            n.heredocs
                .iter()
                .map(|d| {
                    (
                        d.name.clone(),
                        d.content.clone(),
                        d.expand,
                        d.chomp,
                        d.fd as u64,
                    )
                })
                .collect()
        });
        s.check(got == want, || {
            format!("extract child {i}: {got:?} != {want:?}")
        });
    }

    let j = &h["json_form_never_heredoc"];
    let df = parse(&src(j["dockerfile"].as_str().unwrap())).unwrap();
    for i in j["children_without_heredocs"].as_array().unwrap() {
        let i = i.as_u64().unwrap() as usize;
        s.check(df.nodes[i].heredocs.is_empty(), || {
            format!("json child {i} has heredocs")
        });
    }

    let w = &h["heredoc_word"];
    for v in strs(&w["valid_name_EOF"]) {
        let r = parse_heredoc_word(&v);
        s.check(matches!(&r, Ok(Some(d)) if d.name == "EOF"), || {
            format!("heredoc word {v:?}: {r:?}")
        });
    }
    for v in strs(&w["invalid"]) {
        let r = parse_heredoc_word(&v);
        s.check(r.is_err(), || {
            format!("heredoc word {v:?} should be invalid: {r:?}")
        });
    }
    for v in strs(&w["not_heredoc"]) {
        let r = parse_heredoc_word(&v);
        s.check(matches!(r, Ok(None)), || {
            format!("heredoc word {v:?} should not be a heredoc: {r:?}")
        });
    }

    for c in h["heredocs_from_line"]["cases"].as_array().unwrap() {
        let line = c["line"].as_str().unwrap();
        let got: Vec<String> = heredocs_from_line(line)
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        let want = strs(&c["names"]);
        s.check(got == want, || {
            format!("line {line:?}: {got:?} != {want:?}")
        });
    }

    for c in h["chomp"]["cases"].as_array().unwrap() {
        let got = chomp_tabs(c["input"].as_str().unwrap());
        s.check(got == c["output"].as_str().unwrap(), || {
            format!("chomp {c}: {got:?}")
        });
    }

    for c in h["copy_instruction"]["cases"].as_array().unwrap() {
        let text = c["dockerfile"].as_str().unwrap();
        let r = parse(&src(text)).and_then(|df| type_all(&df));
        if let Some(e) = c.get("error_contains") {
            s.check(
                matches!(&r, Err(d) if d.message.contains(e.as_str().unwrap())),
                || format!("{text:?}: {r:?}"),
            );
            continue;
        }
        let ok = match r.as_ref().map(|v| &v[0].instruction) {
            Ok(Instruction::Copy(cp)) => {
                let inline: Vec<(String, String, bool)> = cp
                    .inline
                    .iter()
                    .map(|i| (i.path.clone(), i.data.clone(), i.expand))
                    .collect();
                let want_inline: Vec<(String, String, bool)> = c["source_contents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| {
                        (
                            i["path"].as_str().unwrap().into(),
                            i["data"].as_str().unwrap().into(),
                            i["expand"].as_bool().unwrap(),
                        )
                    })
                    .collect();
                cp.dest == c["dest"].as_str().unwrap()
                    && cp.sources == strs(&c["source_paths"])
                    && inline == want_inline
            }
            _ => false,
        };
        s.check(ok, || format!("copy {text:?}: {r:?}"));
    }
    for c in h["copy_instruction"]["errors"].as_array().unwrap() {
        let text = c["dockerfile"].as_str().unwrap();
        let r = parse(&src(text)).and_then(|df| type_all(&df));
        let want = c["error_contains"].as_str().unwrap();
        s.check(matches!(&r, Err(d) if d.message.contains(want)), || {
            format!("{text:?}: {r:?}")
        });
    }

    for c in h["run_instruction"]["cases"].as_array().unwrap() {
        let text = c["dockerfile"].as_str().unwrap();
        let r = parse(&src(text)).and_then(|df| type_all(&df));
        let ok = match r.as_ref().map(|v| &v[0].instruction) {
            Ok(Instruction::Run(run)) => {
                let (prepend, cmdline) = match &run.command {
                    CommandLine::Exec(v) => (false, v.clone()),
                    CommandLine::Shell(t) => (true, vec![t.clone()]),
                };
                let files: Vec<(String, String, bool)> = run
                    .heredocs
                    .iter()
                    .map(|d| (d.name.clone(), d.content.clone(), d.chomp))
                    .collect();
                let want_files: Vec<(String, String, bool)> = c["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| {
                        (
                            f["name"].as_str().unwrap().into(),
                            f["data"].as_str().unwrap().into(),
                            f["chomp"].as_bool().unwrap(),
                        )
                    })
                    .collect();
                prepend == c["prepend_shell"].as_bool().unwrap()
                    && cmdline == strs(&c["cmdline"])
                    && files == want_files
            }
            _ => false,
        };
        s.check(ok, || format!("run {text:?}: {r:?}"));
    }
    s.finish();
}

#[test]
fn buildkit_directives() {
    let Some(dir) = corpus() else { return };
    let d = json(&dir, "buildkit/parser-extra/directives.json");
    let mut s = Score::new("parser-extra/directives");
    for c in d["parse_all"]["cases"].as_array().unwrap() {
        let got = scan_directives(c["input"].as_str().unwrap()).unwrap();
        let want: Vec<(String, String)> = c["directives"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
            .collect();
        s.check(got == want, || format!("parse_all {c}: {got:?}"));
    }
    for (key, f) in [
        ("detect_syntax", detect_syntax as fn(&str) -> _),
        ("parse_directive_check", detect_check),
    ] {
        for c in d[key]["cases"].as_array().unwrap() {
            let got = f(c["input"].as_str().unwrap());
            let mut ok = got.is_some() == c["found"].as_bool().unwrap();
            if let Some(g) = &got {
                if let Some(r) = c.get("ref") {
                    ok &= g.reference == r.as_str().unwrap();
                }
                if let Some(r) = c.get("cmdline") {
                    ok &= g.cmdline == r.as_str().unwrap();
                }
                if let Some(r) = c.get("line") {
                    ok &= g.line as u64 == r.as_u64().unwrap();
                }
            }
            s.check(ok, || format!("{key} {c}: {got:?}"));
        }
    }
    s.finish();
}

#[test]
fn buildkit_misc() {
    let Some(dir) = corpus() else { return };
    let m = json(&dir, "buildkit/parser-extra/misc.json");
    let mut s = Score::new("parser-extra/misc");
    for c in m["parse_words"]["cases"].as_array().unwrap() {
        let got = parse_words(c["input"].as_str().unwrap(), '\\');
        s.check(got == strs(&c["words"]), || {
            format!("parse_words {c}: {got:?}")
        });
    }
    let ja = &m["json_arrays"];
    for c in ja["valid"].as_array().unwrap() {
        let text = format!("CMD {}", c["input"].as_str().unwrap());
        let r = parse(&src(&text));
        let ok = matches!(&r, Ok(df) if df.nodes[0].json && df.nodes[0].args == strs(&c["values"]));
        s.check(ok, || format!("json {text:?}: {r:?}"));
    }
    for c in strs(&ja["not_string_array_error"]) {
        let text = format!("CMD {c}");
        s.check(parse(&src(&text)).is_err(), || {
            format!("json {text:?} should fail")
        });
    }
    for c in m["name_value"]["cases"].as_array().unwrap() {
        let text = format!(
            "{} {}",
            c["instruction"].as_str().unwrap(),
            c["args"].as_str().unwrap()
        );
        let r = parse(&src(&text));
        let ok = match (c.get("error_contains"), &r) {
            (Some(e), Err(d)) => d.message.contains(e.as_str().unwrap()),
            (None, Ok(df)) => df.nodes[0].args == strs(&c["nodes"]),
            _ => false,
        };
        s.check(ok, || format!("name_value {text:?}: {r:?}"));
    }
    let ec = &m["empty_continuation_warnings"];
    let df = parse(&src(ec["dockerfile"].as_str().unwrap())).unwrap();
    let want = ec["warnings"].as_array().unwrap();
    s.check(df.warnings.len() == want.len(), || {
        format!("{} warnings, want {}", df.warnings.len(), want.len())
    });
    for (w, want) in df.warnings.iter().zip(want) {
        for part in strs(&want["contains"]) {
            s.check(w.message.contains(&part), || {
                format!("warning {:?} lacks {part:?}", w.message)
            });
        }
        let detail = ec["warning_detail_contains"].as_str().unwrap();
        s.check(w.detail.contains(detail), || {
            format!("warning detail {:?}", w.detail)
        });
    }
    let lt = &m["line_too_long"];
    let text = lt["dockerfile_template"]
        .as_str()
        .unwrap()
        .replace("%s", &"a".repeat(65536));
    let r = parse(&src(&text));
    s.check(
        matches!(&r, Err(d) if d.message.contains(lt["error"].as_str().unwrap())),
        || format!("line too long: {:?}", r.err()),
    );

    for c in m["instruction_errors"]["cases"].as_array().unwrap() {
        let text = c["dockerfile"].as_str().unwrap();
        let r = parse(&src(text)).and_then(|df| type_all(&df));
        let ok = match (&r, c.get("error"), c.get("error_contains")) {
            (Err(d), Some(e), _) => d.message == e.as_str().unwrap(),
            (Err(d), None, Some(e)) => d.message.contains(e.as_str().unwrap()),
            _ => false,
        };
        s.check(ok, || {
            format!(
                "instruction error {text:?}: {:?}",
                r.err().map(|d| d.message)
            )
        });
    }

    for c in m["instruction_details"]["cases"].as_array().unwrap() {
        if let Some(df_text) = c.get("dockerfile").and_then(Value::as_str) {
            let df = parse(&src(df_text)).unwrap();
            if let Some(want) = c.get("health_test") {
                let t = type_all(&df).unwrap();
                let ok = matches!(&t[0].instruction, Instruction::Healthcheck(dockerfile::Healthcheck::Check { test, .. }) if *test == strs(want));
                s.check(ok, || {
                    format!("health_test {df_text:?}: {:?}", t[0].instruction)
                });
            }
            if let Some(want) = c.get("flags_used") {
                let got = df.nodes[0].flag_names();
                s.check(got == strs(want), || {
                    format!("flags_used {df_text:?}: {got:?}")
                });
            }
        } else if let Some(iv) = c.get("healthcheck_interval").and_then(Value::as_str) {
            let text = format!("HEALTHCHECK --interval={iv} CMD true");
            let r = parse(&src(&text)).and_then(|df| type_all(&df));
            let ok = match (c.get("ok"), c.get("error_contains")) {
                (Some(_), _) => r.is_ok(),
                (None, Some(e)) => matches!(&r, Err(d) if d.message.contains(e.as_str().unwrap())),
                _ => false,
            };
            s.check(ok, || format!("interval {iv}: {:?}", r.err()));
        }
    }

    let dc = &m["instruction_details"]["doc_comments"];
    let df = parse(&src(dc["dockerfile"].as_str().unwrap())).unwrap();
    let cmds = type_all(&df).unwrap();
    let exp = &dc["expect"];
    let p = strata::plan::plan(&df, cmds.clone(), strata::plan::Options::default()).unwrap();
    s.check(
        p.stages[0].description.as_deref() == exp["stage0_doc"].as_str(),
        || format!("stage doc {:?}", p.stages[0].description),
    );
    let ma = strs(&exp["meta_arg0"]);
    s.check(
        p.meta_args[0].name == ma[0]
            && p.meta_args[0].description.as_deref() == Some(ma[1].as_str()),
        || format!("meta arg {:?}", p.meta_args[0]),
    );
    let stage_args: Vec<Vec<(String, String)>> = p.stages[0]
        .commands
        .iter()
        .filter_map(|c| match &c.instruction {
            Instruction::Arg(decls) => Some(
                decls
                    .iter()
                    .map(|d| {
                        (
                            d.name.clone(),
                            strata::plan::description_for(&c.comments, &d.name).unwrap_or_default(),
                        )
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    let a0 = strs(&exp["stage0_cmd0_arg0"]);
    s.check(stage_args[0][0] == (a0[0].clone(), a0[1].clone()), || {
        format!("stage arg0 {:?}", stage_args[0])
    });
    let a1: Vec<(String, String)> = exp["stage0_cmd1_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let v = strs(p);
            (v[0].clone(), v[1].clone())
        })
        .collect();
    s.check(stage_args[1] == a1, || {
        format!("stage args1 {:?}", stage_args[1])
    });
    s.finish();
}

fn shell_env() -> Vec<(String, String)> {
    env_from_list(&["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="])
}

#[test]
fn buildkit_env_var_test() {
    let Some(dir) = corpus() else { return };
    let mut s = Score::new("shell/envVarTest");
    let lx = Lexer::new('\\');
    let env = shell_env();
    for line in read(&dir.join("buildkit/shell/envVarTest")).lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(f.len(), 3, "bad line {line:?}");
        if f[0] == "W" {
            continue; // Windows-only semantics (case-insensitive names)
        }
        let got = lx.process_word(f[1], &env);
        let ok = if f[2] == "error" {
            got.is_err()
        } else {
            got.as_deref() == Ok(f[2])
        };
        s.check(ok, || format!("{:?}: got {got:?}, want {:?}", f[1], f[2]));
    }
    s.finish();
}

#[test]
fn buildkit_words_test() {
    let Some(dir) = corpus() else { return };
    let mut s = Score::new("shell/wordsTest");
    let lx = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    for line in read(&dir.join("buildkit/shell/wordsTest")).lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            env.extend(env_from_list(&[rest.trim_start_matches(' ')]));
            continue;
        }
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 2, "bad line {line:?}");
        let want: Vec<String> = f[1].trim_start().split(',').map(str::to_string).collect();
        let got = lx
            .process_words(f[0].trim(), &env)
            .unwrap_or_else(|_| vec!["error".to_string()]);
        s.check(got == want, || {
            format!("{:?}: got {got:?}, want {want:?}", f[0])
        });
    }
    s.finish();
}

#[test]
fn buildkit_expansion_json() {
    let Some(dir) = corpus() else { return };
    let e = json(&dir, "buildkit/shell/expansion.json");
    let mut s = Score::new("shell/expansion.json");
    let lx = Lexer::new('\\');
    let env_of = |v: &Value| -> Vec<(String, String)> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    };
    for c in e["process_with_matches"]["cases"].as_array().unwrap() {
        let input = c["input"].as_str().unwrap();
        let r = lx.process_word_with_matches(input, &env_of(&c["env"]));
        let ok = if c.get("error").and_then(Value::as_bool) == Some(true) {
            r.is_err()
        } else {
            match &r {
                Ok((w, m)) => {
                    let matched: Vec<String> = m.matched.iter().cloned().collect();
                    let unmatched: Vec<String> = m.unmatched.iter().cloned().collect();
                    let mut wm = strs(&c["matched"]);
                    wm.sort();
                    let mut wu = strs(&c["unmatched"]);
                    wu.sort();
                    w == c["expected"].as_str().unwrap() && matched == wm && unmatched == wu
                }
                Err(_) => false,
            }
        };
        s.check(ok, || format!("{input:?}: {r:?}"));
    }
    for key in ["mandatory", "nested_default"] {
        for c in e[key]["cases"].as_array().unwrap() {
            let input = c["input"].as_str().unwrap();
            let r = lx.process_word(input, &env_of(&c["env"]));
            let ok = match (c.get("expected"), c.get("error_contains")) {
                (Some(x), _) => r.as_deref() == Ok(x.as_str().unwrap()),
                (None, Some(x)) => matches!(&r, Err(e) if e.0.contains(x.as_str().unwrap())),
                _ => false,
            };
            s.check(ok, || format!("{key} {input:?} {}: {r:?}", c["env"]));
        }
    }
    for c in e["env_lookup"]["cases"].as_array().unwrap() {
        let env = env_from_list(&strs(&c["env_list"]));
        let got = env.lookup(c["name"].as_str().unwrap()).unwrap_or("");
        s.check(got == c["value"].as_str().unwrap(), || {
            format!("env_lookup {c}: {got:?}")
        });
    }
    // The pattern-to-regex table: a string the regex matches must be removed whole by `##`.
    for (pattern, regex) in e["shell_pattern"]["to_regex"].as_object().unwrap() {
        let regex = regex.as_str().unwrap().strip_prefix('^').unwrap();
        let mut sample = String::new();
        let mut it = regex.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '\\' => sample.push(it.next().unwrap()),
                '.' if it.peek() == Some(&'*') => {
                    it.next();
                    sample.push_str("zz");
                }
                '.' => sample.push('z'),
                c => sample.push(c),
            }
        }
        let env = vec![("V".to_string(), format!("{sample}END"))];
        let r = lx.process_word(&format!("${{V##{pattern}}}"), &env);
        let want = if regex == ".*" { "" } else { "END" };
        s.check(r.as_deref() == Ok(want), || {
            format!("pattern {pattern:?} (regex ^{regex}) on {sample:?}END: {r:?}")
        });
    }
    for p in strs(&e["shell_pattern"]["invalid"]) {
        s.check(check_pattern(&p).is_err(), || {
            format!("pattern {p:?} should be invalid")
        });
    }
    s.finish();
}

/// Instruction counts of the real-world files, cross-checked with an independent parser (the
/// parse-dockerfile crate, run outside this repository) when the table was written.
const REALWORLD_COUNTS: &[(&str, usize)] = &include!("realworld_counts.in");

#[test]
fn realworld_files_parse_plan_and_check() {
    let Some(dir) = corpus() else { return };
    let rw = dir.join("realworld");
    let mut s = Score::new("realworld");
    let list = read(&rw.join("LIST.tsv"));
    let exe = env!("CARGO_BIN_EXE_strata");
    let mut seen = 0;
    for line in list
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, from_count) = (f[0], f[5].parse::<usize>().unwrap());
        seen += 1;
        let path = rw.join(name);
        let source = Source::from_bytes(name, &fs_err::read(&path).unwrap());
        let r = dockerfile::load(&source).and_then(|(df, cmds)| {
            let n = cmds.len();
            strata::plan::plan(&df, cmds, strata::plan::Options::default()).map(|p| (p, n))
        });
        match r {
            Ok((p, n)) => {
                s.check(p.stages.len() == from_count, || {
                    format!(
                        "{name}: {} stages, LIST.tsv says {from_count}",
                        p.stages.len()
                    )
                });
                let want = REALWORLD_COUNTS
                    .iter()
                    .find(|(f, _)| *f == name)
                    .map(|(_, c)| *c);
                s.check(want == Some(n), || {
                    format!("{name}: {n} instructions, expected {want:?}")
                });
            }
            Err(e) => s.check(false, || format!("{name}: {e}")),
        }
        let out = std::process::Command::new(exe)
            .args(["check", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        s.check(
            out.status.code() == Some(0) && stderr.contains("warning"),
            || {
                format!(
                    "{name}: strata check exited {:?}: {stderr}",
                    out.status.code()
                )
            },
        );
    }
    assert_eq!(seen, 26);
    s.finish();
}
