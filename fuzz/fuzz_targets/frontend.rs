//! Parse, type, plan and lint arbitrary bytes: nothing may panic, and every error must point
//! inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::dockerfile::{self, lint, shell, Source};
use strata::plan;

fuzz_target!(|data: &[u8]| {
    let src = Source::from_bytes("Dockerfile", data);
    let len = src.text().len();
    let in_bounds = |d: &dockerfile::Diagnostic| {
        assert!(d.span.start <= d.span.end && d.span.end <= len, "span {:?} outside input of {len} bytes", d.span);
    };
    match dockerfile::parse(&src) {
        Err(e) => in_bounds(&e),
        Ok(df) => {
            let _ = dockerfile::dump(&df);
            for n in &df.nodes {
                assert!(n.span.end <= len && n.start_line <= n.end_line);
            }
            match dockerfile::type_all(&df) {
                Err(e) => in_bounds(&e),
                Ok(cmds) => {
                    let _ = lint::lint_syntax(&df, &cmds);
                    // Without build args, then with one (the planner's other branch of every
                    // ARG with a default); lint_plan walks each stage expanding every
                    // instruction against its scope, as the engine does before a step runs.
                    let mut with_arg = plan::Options::default();
                    with_arg.build_args.insert("A".into(), "$A$A".into());
                    for options in [plan::Options::default(), with_arg] {
                        match plan::plan(&df, cmds.clone(), options) {
                            Err(e) => in_bounds(&e),
                            Ok(p) => {
                                let _ = plan::lint::lint_plan(&p, &|_| Some(Vec::new()));
                            }
                        }
                    }
                }
            }
        }
    }
    // The expander on its own, as one word and as words.
    if let Ok(text) = std::str::from_utf8(data) {
        let env = vec![("A".to_string(), "x y".to_string()), ("E".to_string(), String::new())];
        let lx = shell::Lexer::new('\\');
        let _ = lx.process_word(text, &env);
        let _ = lx.process_words(text, &env);
    }
});
