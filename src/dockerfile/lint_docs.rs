//! What each lint rule means and what to do about it, as `strata check --explain RULE` prints
//! it (as `rustc --explain`): a user of the binary reads it without the README or a network.
//! strata's own rules are written here and in the README's "Lint rules" section alike (a test
//! keeps the two the same); BuildKit's are described in strata's words, with Docker's page.

/// The explanation of rule `name` (none for a name that is no rule).
pub fn explanation(name: &str) -> Option<&'static str> {
    Some(match name {
        // strata's rules: the README's sections, word for word.
        "StageNameTypo" => "`COPY --from=biulder` (or a `RUN --mount` with `from=biulder`) names no stage but is close to
one: it would be pulled as an image. Fix the name.",
        "PackageCacheInLayer" => "pip or uv installs in a shipped stage without a cache mount and without `--no-cache-dir` /
`--no-cache` (or `PIP_NO_CACHE_DIR` / `UV_NO_CACHE`): the downloaded wheels stay in the layer,
often as large as the packages. Mount a cache on the user's cache directory
(`RUN --mount=type=cache,target=/root/.cache/pip pip install …`), which also makes the next
install fast, or turn the cache off.",
        "CacheMountTargetUnused" => "A pip or uv cache mount that is not where the tool looks for the step's user: typically
`/root/.cache/pip` after `USER app`, whose pip uses `/home/app/.cache/pip`. The mount stays empty
and the cache goes into the layer. strata knows where the tool looks from `PIP_CACHE_DIR` /
`UV_CACHE_DIR`, `XDG_CACHE_HOME` and `HOME` when ENV sets them, else from the user (root's home
for root, not root's for anyone else).",
        "CopyAllBeforeDependencies" => "`COPY . .` before the stage first installs its dependencies (`pip install -r`, `pip install .`
without `--no-deps`, `uv sync`, `poetry install`, …): every code change invalidates the copy
and so reinstalls every dependency. Copy the dependency files (requirements.txt, or
pyproject.toml and the lock file), install, then copy the rest; or bind-mount them for the
install as Astral's uv recipe does.",
        "FinalStageRunsAsRoot" => "The stage that is built is a Python image (a `python…` base, or Python tooling run in it or in
the stages it is built FROM) and has no `USER` (in itself or those stages), or ends as root. A
parent image whose triggers switch user (`ONBUILD USER app`) is not flagged, nor is a binary
copied into `FROM scratch`. Create a user and end with `USER app`; files the app must not change
stay root's.",
        "AptRecommendsInstalled" => "`apt-get install` in a shipped stage without `--no-install-recommends`: Debian then installs
what the packages merely recommend (for `libpq5`, tens of MB more).",
        "AptListsInLayer" => "`apt-get update` in a shipped stage whose RUN neither removes `/var/lib/apt/lists` nor mounts a
cache or tmpfs on it: the lists (tens of MB) ship in the image.",
        "VenvCopiedToAnotherPath" => "A virtual environment made in one stage (`python -m venv`, `virtualenv`, `uv venv`, `uv sync`)
copied by another to a different path: its scripts (`pip`, console entry points) start with
`#!/old/path/bin/python` and fail. Copy it to the same path, or make it where it will live.",
        // BuildKit's rules, in strata's words.
        "ConsistentInstructionCasing" => "The instructions of the file are not all written the same way: some in upper case (`RUN`),
some in lower case (`run`). Both work; a mix is harder to read and to search. Write them all as
most of them are written (the warning names that casing).",
        "CopyIgnoredFile" => "A COPY or ADD names a file that `.dockerignore` leaves out of the build context, so the step
cannot see it. Remove the pattern from `.dockerignore`, or do not copy the file. (strata does not
check this rule yet: it needs the build's context.)",
        "DuplicateStageName" => "Two stages have the same name (`FROM … AS build` twice; names compare without case). A
`--from=build`, `--target build` or `FROM build` could mean either. Give each stage its own
name.",
        "ExposeInvalidFormat" => "EXPOSE with an address or a host port (`EXPOSE 0.0.0.0:80`, `EXPOSE 8080:80`). An image only
says which ports its process listens on; where they are published is for whoever runs it
(`docker run -p 8080:80`). Write the container port alone: `EXPOSE 80`.",
        "ExposeProtoCasing" => "EXPOSE with its protocol in upper case (`EXPOSE 53/UDP`). Write it in lower case: `EXPOSE
53/udp`.",
        "FromAsCasing" => "The `AS` of `FROM image AS name` is not written in the case of its `FROM` (`FROM x as y`,
`from x AS y`). Write both in the same case.",
        "FromPlatformFlagConstDisallowed" => "`FROM --platform=linux/amd64 …` with a constant: the stage is that platform whatever the build
targets, so a build for another platform silently mixes platforms. Use a variable
(`--platform=$BUILDPLATFORM` for a stage that only builds tools, `$TARGETPLATFORM`), or leave
the flag out; a stage that must be one platform can say so in its name.",
        "InvalidDefaultArgInFrom" => "A FROM whose image comes from a global ARG whose default value makes the name empty or invalid
(`ARG VERSION` then `FROM python:$VERSION`): the build works only when `--build-arg VERSION=…`
is given. Give the ARG a default that is a valid name (`ARG VERSION=3.12`).",
        "JSONArgsRecommended" => "ENTRYPOINT or CMD in shell form (`CMD gunicorn app:app`): the process runs as `/bin/sh -c
'…'`, and the shell, not the application, is the process that `docker stop` and `strata run`
send SIGTERM to; most shells do not pass it on, so the application is killed after the stop
timeout instead of shutting down cleanly. Use the JSON (exec) form: `CMD [\"gunicorn\",
\"app:app\"]`, or `exec` in a script.",
        "LegacyKeyValueFormat" => "ENV or LABEL in the old `KEY value` form (a space instead of `=`). It sets one variable whose
value is the rest of the line, which reads ambiguously; write `KEY=value` (quote values with
spaces).",
        "MaintainerDeprecated" => "MAINTAINER is deprecated. Say who made the image with a label: `LABEL
org.opencontainers.image.authors=\"name@example.com\"`.",
        "MultipleInstructionsDisallowed" => "A stage has more than one CMD, ENTRYPOINT or HEALTHCHECK: only the last one counts, so the
others mislead whoever reads the file. Keep one.",
        "NoEmptyContinuation" => "An empty line inside an instruction continued with `\\`. Such lines are skipped today and will
be errors in a future Dockerfile syntax. Remove the empty line (a comment line is fine).",
        "RedundantTargetPlatform" => "`FROM --platform=$TARGETPLATFORM …`: a stage is built for the target platform anyway. Leave
the flag out.",
        "ReservedStageName" => "A stage is named `scratch` or `context`, which are not stage names: `scratch` is the empty
image, `context` the build context. Rename the stage.",
        "SecretsUsedInArgOrEnv" => "An ARG or ENV whose name suggests a secret (`PASSWORD`, `TOKEN`, `API_KEY`, …). Build args and
ENV values are kept in the image (its config and history) and in the build cache, where anyone
who pulls the image reads them. Pass secrets with `--secret id=…` and `RUN
--mount=type=secret,id=…`, which never reach a layer, the cache or the history.",
        "StageNameCasing" => "A stage name with upper-case letters (`FROM x AS Builder`). Stage names compare without case;
write them in lower case, as image references are.",
        "UndefinedArgInFrom" => "A FROM uses a variable (`FROM python:$PY`) that no ARG before the first FROM declares, so it
expands to nothing unless given with `--build-arg`. Declare it with a default before the
first FROM: `ARG PY=3.12`.",
        "UndefinedVar" => "A variable is used (`$NAME`, `${NAME}`) that neither an ARG, an ENV of the stage nor the base
image's environment defines at that point: it expands to an empty string, often by a typo.
Define it, or fix its name (the warning suggests a close one).",
        "WorkdirRelativePath" => "A relative WORKDIR (`WORKDIR app`) in a stage that set no absolute one before: the directory
depends on the base image's WORKDIR and moves when the base changes. Give an absolute path.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_explained() {
        for r in super::super::lint::RULES {
            assert!(
                explanation(r.name).is_some(),
                "{} has no explanation",
                r.name
            );
        }
        assert!(explanation("NoSuchRule").is_none());
    }

    /// strata's own rules read the same in the README's "Lint rules" section and here.
    #[test]
    fn strata_rules_match_the_readme() {
        let readme = include_str!("../../README.md");
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        for r in super::super::lint::RULES
            .iter()
            .filter(|r| r.docs == super::super::lint::Docs::Strata)
        {
            let head = format!("\n### {}\n", r.name);
            let at = readme
                .find(&head)
                .unwrap_or_else(|| panic!("README has no section {}", r.name))
                + head.len();
            let body = &readme[at..];
            let end = body.find("\n#").unwrap_or(body.len());
            assert_eq!(
                words(&body[..end]),
                words(explanation(r.name).unwrap()),
                "{}",
                r.name
            );
        }
    }
}
