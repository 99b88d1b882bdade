//! The `strata` binary: exit codes, stdout and stderr of `parse` and `check`.

#[macro_use]
mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use support::text;

fn strata(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(support::strata());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn tmp_file(name: &str, content: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-cli-{}-{name}", std::process::id()));
    support::removed_at_the_end(&dir);
    fs_err::create_dir_all(&dir).unwrap();
    let p = dir.join("Dockerfile");
    fs_err::write(&p, content).unwrap();
    p
}

#[test]
fn parse_dump_prints_the_buildkit_tree() {
    let out = strata(
        &["parse", "--dump", "-"],
        Some(
            "FROM a AS b\nRUN --mount=type=cache,target=/c echo hi\nONBUILD ADD . /app\nENV k=v\n",
        ),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "(from \"a\" \"AS\" \"b\")\n(run [\"--mount=type=cache,target=/c\"] \"echo hi\")\n(onbuild (add \".\" \"/app\"))\n(env \"k\" \"v\" \"=\")\n"
    );
}

#[test]
fn parse_outline_lists_stages() {
    let out = strata(
        &["parse", "-"],
        Some("FROM python:3.12 AS build\nRUN true\nFROM build\nCOPY --from=build /a /a\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "<stdin>: 4 instructions, 2 stages\n  [0] build from python:3.12 (1 instructions)\n  [1] stage-1 from stage build (1 instructions) (target)\n"
    );
}

#[test]
fn parse_error_shows_location_marker_and_hint() {
    let out = strata(&["parse", "-"], Some("FROM a\nFNTRYPOINT x\n"));
    // A Dockerfile that does not parse is wrong input: exit code 2.
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: unknown instruction: FNTRYPOINT\n --> <stdin>:2:1\n  |\n2 | FNTRYPOINT x\n  | ^^^^^^^^^^\n  = hint: did you mean ENTRYPOINT?\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn parse_dump_rejects_invalid_input() {
    let out = strata(&["parse", "--dump", "-"], Some("# only a comment\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: file with no instructions\n"));
}

#[test]
fn missing_file_names_the_path() {
    let out = strata(&["parse", "/nonexistent/Dockerfile.strata"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("/nonexistent/Dockerfile.strata"), "{err}");
}

#[test]
fn check_reports_warnings_with_locations_and_count() {
    let p = tmp_file("warn", "FROM a as build\nMAINTAINER me\nCMD echo hi\n");
    let out = strata(&["check", "-f", p.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    let f = p.display();
    assert!(
        err.contains(&format!(
            "warning: FromAsCasing: 'as' and 'FROM' keywords' casing do not match\n --> {f}:1:1\n"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("warning: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label\n --> {f}:2:1\n")), "{err}");
    assert!(err.contains(&format!(" --> {f}:3:1\n  |\n3 | CMD echo hi\n  | ^^^^^^^^^^^\n  = hint: write CMD [\"executable\", \"arg\"]\n")), "{err}");
    assert!(err.ends_with(&format!("{f}: 3 warnings found\n")), "{err}");
}

#[test]
fn check_error_on_warnings_and_directive() {
    let p = tmp_file("eow", "FROM a\nCMD echo hi\n");
    let out = strata(
        &["check", "--error-on-warnings", "-f", p.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let p = tmp_file("dir", "# check=error=true\nFROM a\nCMD echo hi\n");
    assert_eq!(
        strata(&["check", "-f", p.to_str().unwrap()], None)
            .status
            .code(),
        Some(1)
    );
    let p = tmp_file(
        "skip",
        "# check=skip=JSONArgsRecommended;error=true\nFROM a\nCMD echo hi\n",
    );
    let out = strata(&["check", "-f", p.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).ends_with("0 warnings found\n"));
    // The build arg overrides the directive.
    let out = strata(
        &[
            "check",
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=all",
            "-f",
            "-",
        ],
        Some("# check=error=true\nFROM a\nCMD x\n"),
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn check_skip_comment_above_one_instruction() {
    let out = strata(
        &["check", "-f", "-"],
        Some("FROM a\nARG GITHUB_TOKEN\n# check=skip=SecretsUsedInArgOrEnv\nARG API_KEY\n"),
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("GITHUB_TOKEN") && !err.contains("API_KEY"),
        "{err}"
    );
    assert!(err.ends_with("1 warning found\n"));
}

#[test]
fn check_warns_about_a_from_that_is_almost_a_stage() {
    let out = strata(
        &["check", "-f", "-"],
        Some("FROM scratch AS builder\nFROM scratch\nCOPY --from=biulder /a /a\nCOPY --from=alpine:3 /b /b\nCOPY --from=builder /c /c\n"),
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "warning: StageNameTypo: 'biulder' is not a stage: it would be pulled as an image"
        ) && err.contains("hint: did you mean the stage builder?")
            && err.contains("3 | COPY --from=biulder"),
        "{err}"
    );
    assert!(err.ends_with("1 warning found\n"), "{err}");
}

#[test]
fn check_fails_on_errors() {
    let out = strata(&["check", "-f", "-"], Some("FROM a\nCOPY onlyone\n"));
    // An error is 2; warnings alone are 1 (as linters do).
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr)
        .starts_with("error: COPY requires at least two arguments, but only one was provided."));
}

#[test]
fn check_json_format() {
    let out = strata(
        &["check", "--format", "json", "-f", "-"],
        Some("FROM a\nENV k v\n"),
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["rule"], "LegacyKeyValueFormat");
    assert_eq!(v[0]["line"], 2);
    assert_eq!(v[0]["column"], 1);
}

/// (rule, line) of each warning `strata check --format json` gives for `df`.
fn rules_of(df: &str) -> Vec<(String, u64)> {
    let out = strata(&["check", "--format", "json", "-f", "-"], Some(df));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["rule"].as_str().unwrap().to_string(),
                w["line"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn check_python_image_rules() {
    let bad = "FROM python:3.12-slim AS build
ENV VIRTUAL_ENV=/opt/venv
RUN python3 -m venv $VIRTUAL_ENV
WORKDIR /src
COPY . .
RUN pip install -r requirements.txt
FROM python:3.12-slim
RUN apt-get update && apt-get install -y libpq5
RUN pip install six
RUN useradd -m app
USER app
RUN --mount=type=cache,target=/root/.cache/pip pip install --user six
COPY --from=build /opt/venv /venv
";
    let r = |n: &str, l: u64| (n.to_string(), l);
    assert_eq!(
        rules_of(bad),
        vec![
            r("CopyAllBeforeDependencies", 5),
            r("AptRecommendsInstalled", 8),
            r("AptListsInLayer", 8),
            r("PackageCacheInLayer", 9),
            r("CacheMountTargetUnused", 12),
            r("VenvCopiedToAnotherPath", 13),
        ]
    );
    // The same mistakes in a builder stage that does not ship are not layer bloat; a final stage
    // without USER runs as root.
    let root = "FROM python:3.12-slim AS build
RUN apt-get update && apt-get install -y gcc && pip install six
FROM python:3.12-slim
COPY --from=build /usr/local /usr/local
";
    assert_eq!(rules_of(root), vec![r("FinalStageRunsAsRoot", 3)]);
    // Done right: dependencies first, caches mounted where the user's tool looks (HOME from
    // ENV counts), lists removed, the venv at the same path, a user.
    let good = "FROM python:3.12-slim AS build
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements.txt .
RUN --mount=type=cache,target=/root/.cache/pip /opt/venv/bin/pip install -r requirements.txt
COPY . .
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .
FROM python:3.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 && rm -rf /var/lib/apt/lists/*
RUN useradd -m app
COPY --from=build /opt/venv /opt/venv
USER app
ENV HOME=/data
RUN --mount=type=cache,target=/data/.cache/uv uv pip install six
";
    assert_eq!(rules_of(good), vec![]);
    // A Python build whose final stage is a binary FROM scratch is not an app image that
    // should drop root.
    assert_eq!(
        rules_of("FROM python:3.12-slim AS b\nRUN pip install --no-cache-dir uv\nFROM scratch\nCOPY --from=b /usr/local/bin/uv /uv\n"),
        vec![]
    );
    // Not a Python image: none of these rules.
    assert_eq!(
        rules_of("FROM debian\nRUN apt-get update && apt-get install -y curl\n"),
        vec![]
    );
    // Warnings point at documentation the binary itself prints.
    let out = strata(&["check", "-f", "-"], Some(root));
    assert!(
        text(&out.stderr).contains("  = docs: strata check --explain FinalStageRunsAsRoot\n"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_explain_prints_a_rules_text() {
    // strata's rule: its README section's text, and how to turn it off.
    let out = strata(&["check", "--explain", "FinalStageRunsAsRoot"], None);
    let t = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(t.starts_with("FinalStageRunsAsRoot: Python images: the final stage runs as root\n\nThe stage that is built is a Python image"), "{t}");
    assert!(t.contains("# check=skip=FinalStageRunsAsRoot"), "{t}");
    // BuildKit's: strata's words and Docker's page (an acronym kept whole in its address).
    let out = strata(&["check", "--explain", "jsonargsrecommended"], None);
    let t = text(&out.stdout);
    assert!(t.contains("`/bin/sh -c"), "{t}");
    assert!(
        t.contains("https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"),
        "{t}"
    );
    // A warning of a BuildKit rule names both.
    let out = strata(&["check", "-f", "-"], Some("FROM busybox\nCMD echo hi\n"));
    assert!(
        text(&out.stderr).contains("  = docs: strata check --explain JSONArgsRecommended, or https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n"),
        "{}",
        text(&out.stderr)
    );
    // No such rule: wrong input, with the nearest name.
    let out = strata(&["check", "--explain", "StageNameTypos"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .starts_with("error: no lint rule StageNameTypos (did you mean StageNameTypo?)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_uses_build_args_and_target() {
    let out = strata(
        &["check", "--target", "bulid", "-f", "-"],
        Some("FROM a AS build\nFROM b\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("hint: did you mean build?"));
    let out = strata(
        &["check", "--build-arg", "V=1", "-f", "-"],
        Some("ARG V\nARG X=${V:?\"set V\"}\nFROM a\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn usage_errors_exit_2() {
    let out = strata(&["check", "--no-such-flag"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn python_fixture_is_clean() {
    let f = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/python-app/Dockerfile"
    );
    let out = strata(&["check", "-f", f], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).ends_with("0 warnings found\n"),
        "{}",
        text(&out.stderr)
    );
    let out = strata(&["parse", f], None);
    assert_eq!(
        text(&out.stdout),
        format!("{f}: 19 instructions, 2 stages\n  [0] builder from python:3.12-slim (8 instructions)\n  [1] runtime from python:3.12-slim (8 instructions) (target)\n")
    );
}

#[test]
fn unknown_target_error_has_no_misleading_snippet() {
    let out = strata(
        &["check", "--target", "bulid", "-f", "-"],
        Some("FROM a AS build\nFROM b\n"),
    );
    assert_eq!(text(&out.stderr), "error: target stage \"bulid\" could not be found\n --> <stdin>\n  = hint: did you mean build?\n");
}

fn store_dir(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("strata-cli-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    support::removed_at_the_end(&d);
    d.display().to_string()
}

#[test]
fn store_commands_end_to_end() {
    let root = store_dir("e2e");
    let tree = tmp_file("e2e-tree", "FROM scratch\n")
        .parent()
        .unwrap()
        .to_path_buf();
    let s = |args: &[&str]| strata(&[&["--root", root.as_str()][..], args].concat(), None);
    let out = s(&["import", tree.to_str().unwrap(), "demo:1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71);
    assert_eq!(s(&["tag", "demo:1", "demo:latest"]).status.code(), Some(0));
    let images = text(&s(&["images"]).stdout);
    assert!(
        images.starts_with("NAME   TAG      IMAGE ID       CREATED    SIZE   PLATFORMS\n"),
        "{images}"
    );
    assert!(
        images.contains(&format!("demo   1        {}", &id[7..19])),
        "{images}"
    );
    let hist = text(&s(&["history", "demo"]).stdout);
    assert!(hist.contains("strata import strata-cli-"), "{hist}");
    let inspect: serde_json::Value =
        serde_json::from_slice(&s(&["inspect", &id[7..15]]).stdout).unwrap();
    assert_eq!(inspect["Id"], id.as_str());
    assert_eq!(
        inspect["Names"],
        serde_json::json!(["demo:1", "demo:latest"])
    );
    assert_eq!(text(&s(&["rmi", "demo:1"]).stdout), "Untagged: demo:1\n");
    assert_eq!(text(&s(&["rmi", &id]).stdout), "Untagged: demo:latest\n");
    let prune = text(&s(&["prune"]).stdout);
    assert!(
        prune.starts_with("Total reclaimed space: ") && !prune.contains("(0 bytes)"),
        "{prune}"
    );
    assert!(text(&s(&["df"]).stdout).starts_with("images                        0\n"));
    assert_eq!(
        text(&s(&["fsck"]).stdout),
        "0 blobs and 0 image references checked: 0 problems\n"
    );
}

#[test]
fn store_errors_name_what_is_wrong() {
    let root = store_dir("errs");
    let s = |args: &[&str]| strata(&[&["--root", root.as_str()][..], args].concat(), None);
    let out = s(&["inspect", "nothere:1"]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (
            Some(2),
            "error: image \"nothere:1\" not found in the store\n".to_string()
        )
    );
    let out = s(&["import", "/no/such/dir", "x"]);
    assert!(
        text(&out.stderr).contains("/no/such/dir"),
        "{}",
        text(&out.stderr)
    );
    let out = s(&["tag", "a", "Bad Name"]);
    assert!(text(&out.stderr).contains("invalid reference \"Bad Name\""));
    let junk = tmp_file("junk", "not an archive");
    let out = s(&["load", "-i", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(junk.to_str().unwrap()),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_knows_base_image_environment_from_the_store() {
    let root = store_dir("undef");
    let tree = tmp_file("undef-tree", "x").parent().unwrap().to_path_buf();
    let s = |args: &[&str], stdin: Option<&str>| {
        strata(&[&["--root", root.as_str()][..], args].concat(), stdin)
    };
    assert_eq!(
        s(&["import", tree.to_str().unwrap(), "base:1"], None)
            .status
            .code(),
        Some(0)
    );
    // The imported image has no ENV: an unknown variable is reported, with a suggestion.
    let out = s(
        &["check", "-f", "-"],
        Some("FROM base:1\nARG VERSION=1\nENV PATH=/opt/bin:$PATH\nWORKDIR /app/$VERSON\n"),
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: UndefinedVar: Usage of undefined variable '$VERSON'")
            && err.contains("hint: did you mean $VERSION?"),
        "{err}"
    );
    assert!(
        err.ends_with("1 warning found\n"),
        "PATH comes with the image: {err}"
    );
    // An image the store does not have is not judged.
    let out = s(
        &["check", "-f", "-"],
        Some("FROM unknown:1\nWORKDIR /app/$FROM_IMAGE\n"),
    );
    assert!(
        !text(&out.stderr).contains("UndefinedVar"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_context_that_is_not_a_directory_is_wrong_input() {
    let root = store_dir("noctx");
    let out = strata(&["--root", &root, "build", "/nonexistent"], None);
    let err = text(&out.stderr);
    // The README's exit-code table: a context path is wrong input, 2.
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\"/nonexistent\": not a directory"), "{err}");
    assert!(err.contains("hint: give a directory, or -"), "{err}");
}

#[test]
fn an_unknown_flag_gets_no_tip_to_pass_it_as_a_value() {
    // buildx's flags strata does not have: clap's error, without "use '-- --flag'".
    for args in [&["build", "--zzzz", "."][..], &["run", "--zzzz", "img"]] {
        let out = strata(args, None);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.starts_with("error: unexpected argument '--"), "{err}");
        assert!(
            !err.contains("as a value") && !err.contains("'-- --"),
            "{err}"
        );
    }
    // A near miss still gets clap's suggestion.
    let err = text(&strata(&["build", "--targt", "x", "."], None).stderr);
    assert!(
        err.contains("a similar argument exists: '--target'"),
        "{err}"
    );
}

/// The README's set-up line up to `cargo install`: what it installs and says.
fn setup_prefix() -> String {
    let readme = include_str!("../README.md");
    let line = readme
        .lines()
        .map(str::trim)
        .find(|l| l.contains("apt-get install -y -q slirp4netns uidmap"))
        .expect("the README's set-up line");
    line.split("; cargo install").next().unwrap().to_string()
}

#[test]
fn the_readme_setup_line_works_without_sudo() {
    let prefix = setup_prefix();
    assert!(prefix.len() < 400 && line_is_guarded(&prefix), "{prefix}");
    // A user without root or sudo, and without the packages (a PATH that has only `id`):
    // the line to send an admin, and the rest of the one-liner runs.
    let bin = std::env::temp_dir().join(format!("strata-cli-{}-setup-bin", std::process::id()));
    support::removed_at_the_end(&bin);
    fs_err::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("/usr/bin/id", bin.join("id")).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = format!("{prefix}; echo next-part-runs");
    let run = |as_user: bool, path: &str| -> Output {
        let mut c = if as_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "strata-test", "--", "/usr/bin/env"]);
            c
        } else {
            Command::new("/usr/bin/env")
        };
        c.args(["-i", &format!("PATH={path}"), "/bin/sh", "-c", &script])
            .current_dir("/tmp")
            .output()
            .unwrap()
    };
    let root = rustix::process::geteuid().is_root();
    let unprivileged = root
        && Command::new("id")
            .arg("strata-test")
            .output()
            .is_ok_and(|o| o.status.success());
    if root && !unprivileged {
        support::skip("no user strata-test to run the set-up line as");
        return;
    }
    let o = run(unprivileged, bin.to_str().unwrap());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(
        out.starts_with("strata: ask an admin to run: apt-get install slirp4netns uidmap (and to give strata-test a range in /etc/subuid and /etc/subgid)\n")
            || out.starts_with(&format!(
                "strata: ask an admin to run: apt-get install slirp4netns uidmap (and to give {} a range",
                String::from_utf8_lossy(&Command::new("id").arg("-un").output().unwrap().stdout).trim()
            )),
        "{out}"
    );
    assert!(out.ends_with("next-part-runs\n"), "{out}");
    // With the packages there (this machine's PATH), it installs nothing and says nothing.
    let o = run(unprivileged, "/usr/local/bin:/usr/bin:/bin");
    assert_eq!(text(&o.stdout), "next-part-runs\n", "{}", text(&o.stderr));
}

/// The install runs only when a package is missing.
fn line_is_guarded(prefix: &str) -> bool {
    prefix.starts_with("{ command -v slirp4netns && command -v newuidmap; } >/dev/null ||")
}
