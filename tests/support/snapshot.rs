//! Snapshot files: expected output committed under `tests/snapshots/`, compared exactly with
//! what a test produced (after the test's own filters), shown as a line diff when they differ.
//! With `STRATA_UPDATE_SNAPSHOTS=1` in the environment, [`assert_snapshot`] writes the actual
//! text to the file instead (and passes): review the change with `git diff tests/snapshots`.
#![allow(dead_code)]

use std::path::PathBuf;

/// The snapshot file `tests/snapshots/<name>` of the checkout.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name)
}

/// Is this run rewriting the snapshots (`STRATA_UPDATE_SNAPSHOTS=1`)?
pub fn updating() -> bool {
    std::env::var("STRATA_UPDATE_SNAPSHOTS").as_deref() == Ok("1")
}

/// `actual` must equal the snapshot `name` byte for byte; with `STRATA_UPDATE_SNAPSHOTS=1` it
/// becomes the snapshot. A missing snapshot is a failure that says how to make it.
pub fn assert_snapshot(name: &str, actual: &str) {
    let p = path(name);
    if updating() {
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        if fs_err::read_to_string(&p).ok().as_deref() != Some(actual) {
            fs_err::write(&p, actual).unwrap();
            eprintln!("snapshot {} written", p.display());
        }
        return;
    }
    let expected = match fs_err::read_to_string(&p) {
        Ok(e) => e,
        Err(e) => panic!(
            "no snapshot: {e}\n(run with STRATA_UPDATE_SNAPSHOTS=1 to write it)\nactual:\n{actual}"
        ),
    };
    if expected != actual {
        panic!(
            "output differs from the snapshot {} (- expected, + actual; rerun with STRATA_UPDATE_SNAPSHOTS=1 to accept it):\n{}",
            p.display(),
            diff(&expected, actual)
        );
    }
}

/// A line diff of `a` and `b` (longest common subsequence): ` ` kept, `-` only in `a`, `+`
/// only in `b`. A difference in the final newline shows as a line of its own.
pub fn diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.split('\n').collect();
    let b: Vec<&str> = b.split('\n').collect();
    // lcs[i][j]: the length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!(" {}\n", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("-{}\n", a[i]);
            i += 1;
        } else {
            out += &format!("+{}\n", b[j]);
            j += 1;
        }
    }
    out
}
