//! `.dockerignore` matching and the filtered context walk against
//! ../shared/conformance/dockerignore (cases.tsv, walk_cases.txt and the ignore-file reader
//! case). Skips with a reason where the corpus is absent; STRATA_REQUIRE_CONFORMANCE=1 (CI)
//! makes that a failure.

use std::path::{Path, PathBuf};

use strata::context::ignore::{read_patterns, Matcher};
use strata::fsx::clean;

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("STRATA_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance"))
        .join("dockerignore");
    if dir.join("cases.tsv").exists() {
        return Some(dir);
    }
    if std::env::var("STRATA_REQUIRE_CONFORMANCE").as_deref() == Ok("1") {
        panic!(
            "dockerignore corpus not found at {} and STRATA_REQUIRE_CONFORMANCE=1",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: dockerignore corpus not found at {}",
        dir.display()
    );
    None
}

#[test]
fn cases_tsv() {
    let Some(dir) = corpus() else { return };
    let text = fs_err::read_to_string(dir.join("cases.tsv")).unwrap();
    let (mut pass, mut total, mut failures) = (0, 0, Vec::new());
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let (id, api, expect, path) = (f[0], f[1], f[3], f[4]);
        let patterns = &f[5..];
        // Legacy rows clean the path first; then one matcher serves both (see the README).
        let path = if api == "legacy" {
            clean(path)
        } else {
            path.to_string()
        };
        let got = match Matcher::new(patterns) {
            Err(_) => "error",
            Ok(m) if m.excluded(&path) => "match",
            Ok(_) => "nomatch",
        };
        total += 1;
        if got == expect {
            pass += 1;
        } else {
            failures.push(format!(
                "{id}: {path:?} with {patterns:?}: got {got}, want {expect}"
            ));
        }
    }
    println!("conformance dockerignore/cases.tsv: {pass}/{total}");
    assert!(total >= 144, "only {total} rows read");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn ignore_file_reader() {
    let Some(dir) = corpus() else { return };
    let input = fs_err::read_to_string(dir.join("ignorefile/readall.dockerignore")).unwrap();
    let want: Vec<String> = fs_err::read_to_string(dir.join("ignorefile/readall.expected"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(read_patterns(&input), want);
}

#[test]
fn walk_cases() {
    use strata::context::{walk, Filter, Kind};
    let Some(dir) = corpus() else { return };
    let text = fs_err::read_to_string(dir.join("walk_cases.txt")).unwrap();
    let base = std::env::temp_dir().join(format!("strata-walk-{}", std::process::id()));
    let (mut pass, mut total, mut failures) = (0, 0, Vec::new());
    let mut block: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if line != "end" {
            block.push(line);
            continue;
        }
        let id = block[0].strip_prefix("case ").unwrap().to_string();
        let root = base.join(&id);
        fs_err::create_dir_all(&root).unwrap();
        let (mut include, mut exclude, mut expect, mut visible, mut hidden) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut want_error, mut want_empty) = (false, false);
        for l in &block[1..] {
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            match k {
                "node" => {
                    let (kind, p) = v.split_once(' ').unwrap();
                    let full = root.join(p);
                    match kind {
                        "dir" => fs_err::create_dir_all(&full).unwrap(),
                        "file" => fs_err::write(&full, "x").unwrap(),
                        other => std::os::unix::fs::symlink(
                            other.strip_prefix("symlink:").unwrap(),
                            &full,
                        )
                        .unwrap(),
                    }
                }
                "include" => include.push(v.to_string()),
                "exclude" => exclude.push(v.to_string()),
                "expect" => {
                    let (kind, p) = v.split_once(' ').unwrap();
                    expect.push((kind.to_string(), p.to_string()));
                }
                "expect-empty" => want_empty = true,
                "expect-error" => want_error = true,
                "visible" => visible.push(v.to_string()),
                "hidden" => hidden.push(v.to_string()),
                other => panic!("unknown line {other}"),
            }
        }
        block.clear();
        total += 1;
        let result = Filter::new(&include, &exclude).and_then(|f| Ok((walk(&root, &f)?, f)));
        let ok = match result {
            Err(_) => want_error,
            Ok(_) if want_error => false,
            Ok((entries, f)) => {
                let got: Vec<(String, String)> = entries
                    .iter()
                    .map(|e| {
                        (
                            match e.kind {
                                Kind::Dir => "dir",
                                Kind::File => "file",
                                Kind::Symlink => "symlink",
                            }
                            .to_string(),
                            e.path.clone(),
                        )
                    })
                    .collect();
                let walk_ok = if want_empty {
                    got.is_empty()
                } else {
                    expect.is_empty() || got == expect
                };
                let open_ok =
                    visible.iter().all(|p| f.visible(p)) && hidden.iter().all(|p| !f.visible(p));
                if !(walk_ok && open_ok) {
                    failures.push(format!(
                        "{id}: got {got:?}, want {expect:?}; visible {visible:?} hidden {hidden:?}"
                    ));
                }
                walk_ok && open_ok
            }
        };
        if ok {
            pass += 1;
        } else if failures.last().is_none_or(|l| !l.starts_with(&id)) {
            failures.push(format!("{id}: error expectation not met"));
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    println!("conformance dockerignore/walk_cases.txt: {pass}/{total}");
    assert_eq!(total, 26);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
