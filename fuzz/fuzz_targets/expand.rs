//! One word expanded by the Dockerfile shell lexer against an environment whose values are
//! themselves expansions of the input (so self-doubling variables are easy to reach), in every
//! lexer mode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::dockerfile::shell::Lexer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // "NAME=VALUE\n…\n\nWORD": the variables, then the word.
    let (vars, word) = text.split_once("\n\n").unwrap_or(("", text));
    let mut env: Vec<(String, String)> = Vec::new();
    for escape in ['\\', '`'] {
        let mut lexer = Lexer::new(escape);
        env.clear();
        for line in vars.lines().take(64) {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            // A value is expanded against the variables before it, as ENV and ARG do.
            let v = lexer.process_word(v, &env).unwrap_or_default();
            env.push((k.to_string(), v));
        }
        for (skip_unset, skip_quotes) in [(false, false), (true, false), (false, true)] {
            lexer.skip_unset = skip_unset;
            lexer.skip_quotes = skip_quotes;
            let _ = lexer.process_word(word, &env);
            let _ = lexer.process_words(word, &env);
        }
    }
});
