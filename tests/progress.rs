//! Snapshots of `strata build`'s progress output, `--progress=plain` and `--progress=json`
//! (src/cli/progress.rs, the lint lines and the size report of src/cli/build.rs): a cold
//! multi-stage build and the same build again (all cached), a build whose RUN fails (the
//! step's output, its exit code and the error with the Dockerfile's snippet), and a build with
//! lint warnings. Each test builds in a store of its own on a busybox base made from Debian's
//! busybox-static (`support::busybox_rootfs`); without /bin/busybox the tests say SKIPPED (and
//! fail under STRATA_REQUIRE_TOOLS=1, as in CI).
//!
//! The expected output is in `tests/snapshots/progress/<test>.txt`, compared exactly after
//! [`plain`] and [`json`] replace what differs from run to run: digests (`sha256:<digest>`),
//! the test's temporary directory (`<dir>`), times (`<t>`), and byte sizes (`<size>`, in json
//! `"<bytes>"`: the base layer is the host's busybox binary). To accept a change of the
//! output, run `STRATA_UPDATE_SNAPSHOTS=1 cargo test --test progress` (as root or any user:
//! the output is the same both ways, and `make test` checks it as root and as strata-test)
//! and review `git diff tests/snapshots`.

#[macro_use]
mod support;

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use support::snapshot::assert_snapshot;
use support::store;
use support::text;

/// A store with busybox:latest imported ([`store::Store`]), strata run where cargo built it and
/// without the caller's STRATA_CACHE_LIMIT (the snapshots must not change with it).
struct Store(store::Store);

const STORE: store::Options = store::Options {
    kind: "progress",
    bin: store::Bin::Cargo,
    cache_limit: store::CacheLimit::Removed,
    ctx: store::CtxFiles::Flat,
};

impl std::ops::Deref for Store {
    type Target = store::Store;
    fn deref(&self) -> &store::Store {
        &self.0
    }
}

impl Store {
    fn new(name: &str) -> Option<Store> {
        store::Store::new(&STORE, name).map(Store)
    }

    /// `strata build ARGS CTX`, recorded for a snapshot: the command, the exit code, stdout
    /// and stderr, each put through `filter`.
    fn build(&self, args: &[&str], ctx: &Path, filter: fn(&str, &Path) -> String) -> String {
        let mut a = vec!["build"];
        a.extend_from_slice(args);
        a.push(ctx.to_str().unwrap());
        let o = self.strata(&a);
        format!(
            "$ strata {}\nexit code: {}\n--- stdout\n{}--- stderr\n{}",
            common(&a.join(" "), &self.dir),
            o.status.code().map_or("none".into(), |c| c.to_string()),
            filter(&text(&o.stdout), &self.dir),
            filter(&text(&o.stderr), &self.dir),
        )
    }
}

static DIGEST: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"sha256:[0-9a-f]{12,64}").unwrap());
/// A step's output line `#5 0.042 text`, the step's time `#5 DONE 1.2s`, the build's `in 0.11s`.
static LOG_TIME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?m)^(#\d+) \d+\.\d+ ").unwrap());
static DONE_TIME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^(#\d+) DONE \d+\.\ds$").unwrap());
static BUILD_TIME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?m) in \d+\.\d+s$").unwrap());
/// A size as `engine::size::human` prints it (`3B`, `2.0MB`), with the spaces before it, `≈`
/// (estimated) kept.
static SIZE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"( +)(≈?)\d+(\.\d)?(B|kB|MB|GB|TB)\b").unwrap());

/// A size in the text (one space before it) becomes ` <size>`; one in the size report's
/// columns (right-aligned, more spaces) becomes `<size>` right-aligned in the same width, so
/// the columns stay as they are whatever the sizes.
fn sizes(s: &str) -> String {
    SIZE.replace_all(s, |c: &regex::Captures<'_>| {
        let size = format!("{}<size>", &c[2]);
        if c[1].len() == 1 {
            format!(" {size}")
        } else {
            format!(
                "{size:>w$}",
                w = c[0].chars().count().max(size.chars().count() + 1)
            )
        }
    })
    .into_owned()
}

/// What differs between runs in any text: digests and the test's directory.
fn common(s: &str, dir: &Path) -> String {
    let s = s.replace(dir.to_str().unwrap(), "<dir>");
    DIGEST.replace_all(&s, "sha256:<digest>").into_owned()
}

/// The filters for `--progress=plain` (and the error and size report printed as text).
fn plain(s: &str, dir: &Path) -> String {
    let s = common(s, dir);
    let s = LOG_TIME.replace_all(&s, "$1 <t> ");
    let s = DONE_TIME.replace_all(&s, "$1 DONE <t>");
    let s = BUILD_TIME.replace_all(&s, " in <t>");
    sizes(&s)
}

/// The filters for `--progress=json`: each line that is a JSON object has its times (`at`,
/// `seconds`) and byte counts replaced and its strings filtered as text; other lines (the
/// error, printed as text in every mode) go through [`plain`].
fn json(s: &str, dir: &Path) -> String {
    fn walk(v: &mut serde_json::Value, dir: &Path) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    match k.as_str() {
                        "at" | "seconds" if v.is_number() => *v = "<t>".into(),
                        "content" | "push" | "stored" | "size" if v.is_number() => {
                            *v = "<bytes>".into()
                        }
                        _ => walk(v, dir),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| walk(v, dir)),
            serde_json::Value::String(t) => *t = common(t, dir),
            _ => {}
        }
    }
    let mut out = String::new();
    for line in s.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(mut v) if v.is_object() => {
                walk(&mut v, dir);
                out += &v.to_string();
            }
            _ => out += &plain(line, dir),
        }
        out.push('\n');
    }
    out
}

/// Two stages: the first copies a file from the context and runs a command, the second copies
/// its result.
const MULTI_STAGE: &str = "FROM busybox AS build
COPY hello.txt /src/hello.txt
RUN echo building && cat /src/hello.txt > /out.txt
FROM busybox
COPY --from=build /out.txt /out.txt
";

/// The third instruction fails with exit code 3 after writing to stdout and stderr.
const FAILING: &str = "FROM busybox
RUN echo before
RUN echo about to fail && echo to stderr >&2 && exit 3
RUN echo never
";

/// `as` in lower case (FromAsCasing) and CMD in shell form (JSONArgsRecommended).
const LINTED: &str = "FROM busybox as base
RUN echo warned
CMD echo hi
";

fn cold_then_cached(name: &str, mode: &str, filter: fn(&str, &Path) -> String) {
    let s = require!(Store::new(name));
    let ctx = s.ctx(
        "ctx",
        &[("Dockerfile", MULTI_STAGE), ("hello.txt", "hello\n")],
    );
    let args = [mode, "-t", "multi:1"];
    let cold = s.build(&args, &ctx, filter);
    let cached = s.build(&args, &ctx, filter);
    assert_snapshot(
        &format!("progress/{name}.txt"),
        &format!("{cold}\n{cached}"),
    );
}

fn one_build(name: &str, mode: &str, dockerfile: &str, filter: fn(&str, &Path) -> String) {
    let s = require!(Store::new(name));
    let ctx = s.ctx("ctx", &[("Dockerfile", dockerfile)]);
    let out = s.build(&[mode], &ctx, filter);
    assert_snapshot(&format!("progress/{name}.txt"), &out);
}

#[test]
fn plain_cold_then_cached() {
    cold_then_cached("plain_cold_then_cached", "--progress=plain", plain);
}

#[test]
fn json_cold_then_cached() {
    cold_then_cached("json_cold_then_cached", "--progress=json", json);
}

#[test]
fn plain_failed_run() {
    one_build("plain_failed_run", "--progress=plain", FAILING, plain);
}

#[test]
fn json_failed_run() {
    one_build("json_failed_run", "--progress=json", FAILING, json);
}

#[test]
fn plain_lint_warnings() {
    one_build("plain_lint_warnings", "--progress=plain", LINTED, plain);
}

#[test]
fn json_lint_warnings() {
    one_build("json_lint_warnings", "--progress=json", LINTED, json);
}

/// The filters themselves: what they replace and what they keep.
#[test]
fn filters_replace_only_what_varies() {
    let dir = Path::new("/tmp/x/strata-progress-1-t");
    let d = "sha256:0ebb709539fa23006e2aae8fedc67a383ade200c1df11e70245aada199f5fb7d";
    assert_eq!(
        plain(
            &format!("#2 0.048 building 3B\n#2 DONE 0.1s\nbuilt {d} (3 steps, 0 cached) in 0.11s\nsize: 2.0MB of content; a push sends ≈1.1MB\n      2         3B       ≈96B  COPY\n --> /tmp/x/strata-progress-1-t/ctx/Dockerfile:3:1\n"),
            dir
        ),
        "#2 <t> building <size>\n#2 DONE <t>\nbuilt sha256:<digest> (3 steps, 0 cached) in <t>\nsize: <size> of content; a push sends ≈<size>\n      2     <size>    ≈<size>  COPY\n --> <dir>/ctx/Dockerfile:3:1\n"
    );
    assert_eq!(
        json(
            &format!("{{\"at\":0.1,\"event\":\"done\",\"seconds\":2,\"step\":2}}\n{{\"report\":{{\"layers\":[{{\"content\":3,\"digest\":\"{d}\",\"files\":3}}]}}}}\nerror: exit code: 3\n"),
            dir
        ),
        "{\"at\":\"<t>\",\"event\":\"done\",\"seconds\":\"<t>\",\"step\":2}\n{\"report\":{\"layers\":[{\"content\":\"<bytes>\",\"digest\":\"sha256:<digest>\",\"files\":3}]}}\nerror: exit code: 3\n"
    );
}

/// The diff a failing snapshot shows: expected lines `-`, actual lines `+`, the rest kept.
#[test]
fn snapshot_diff_marks_changed_lines() {
    assert_eq!(
        support::snapshot::diff("a\nb\nc\n", "a\nB\nc\nd\n"),
        " a\n-b\n+B\n c\n+d\n \n"
    );
}
