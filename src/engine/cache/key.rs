//! The canonical encoding of an expanded instruction for its step's cache key: one explicit JSON
//! object per instruction kind, field by field, hashed through [`crate::oci::canonical_json`]
//! (sorted keys, no insignificant bytes). Not Debug output: a struct that gains a field or
//! renames one changes no key unless this file says so, so a cache exported by one release
//! stays valid in the next (`KEY_VERSION` is bumped when an encoding here changes on purpose).
//! The golden test below pins the key of every instruction kind.
//!
//! What is left out on purpose: how a line was spelled where it makes no difference to the
//! result (the case of `AS`, `ENV a b` versus `ENV a=b`).

use serde_json::{json, Value};

use crate::dockerfile::{CommandLine, Copy, Healthcheck, Instruction, KeyValue};
use crate::engine::cache::{self, KeyInput};
use crate::oci::Digest;
use crate::sandbox::Network;

fn command(c: &CommandLine) -> Value {
    match c {
        CommandLine::Exec(v) => json!({ "exec": v }),
        CommandLine::Shell(s) => json!({ "shell": s }),
    }
}

fn pairs(kvs: &[KeyValue]) -> Value {
    Value::Array(kvs.iter().map(|kv| json!([kv.key, kv.value])).collect())
}

fn copy(kind: &str, c: &Copy) -> Value {
    json!({
        "kind": kind,
        "sources": c.sources,
        "inline": c.inline.iter().map(|i| json!({
            "path": i.path,
            "data": i.data,
            "expand": i.expand,
        })).collect::<Vec<_>>(),
        "dest": c.dest,
        "from": c.from,
        "chown": c.chown,
        "chmod": c.chmod,
        "link": c.link,
        "parents": c.parents,
        "excludes": c.excludes,
        "checksum": c.checksum,
        "keep_git_dir": c.keep_git_dir,
        "unpack": c.unpack,
    })
}

/// The key encoding of `ins` (its words already expanded).
pub fn instruction(ins: &Instruction) -> Value {
    match ins {
        Instruction::From(f) => json!({
            "kind": "FROM",
            "image": f.image,
            "stage": f.stage_name,
            "platform": f.platform,
        }),
        Instruction::Arg(decls) => json!({
            "kind": "ARG",
            "args": decls.iter().map(|d| json!([d.name, d.default])).collect::<Vec<_>>(),
        }),
        Instruction::Run(r) => json!({
            "kind": "RUN",
            "command": command(&r.command),
            "heredocs": r.heredocs.iter().map(|h| json!({
                "name": h.name,
                "content": h.content,
                "expand": h.expand,
                "chomp": h.chomp,
                "fd": h.fd,
            })).collect::<Vec<_>>(),
            "mounts": r.mounts,
            "network": r.network,
            "security": r.security,
            "devices": r.devices,
        }),
        Instruction::Cmd(c) => json!({ "kind": "CMD", "command": command(c) }),
        Instruction::Entrypoint(c) => json!({ "kind": "ENTRYPOINT", "command": command(c) }),
        Instruction::Shell(v) => json!({ "kind": "SHELL", "shell": v }),
        Instruction::Env(kvs) => json!({ "kind": "ENV", "env": pairs(kvs) }),
        Instruction::Label(kvs) => json!({ "kind": "LABEL", "labels": pairs(kvs) }),
        Instruction::Maintainer(m) => json!({ "kind": "MAINTAINER", "maintainer": m }),
        Instruction::Expose(p) => json!({ "kind": "EXPOSE", "ports": p }),
        Instruction::Copy(c) => copy("COPY", c),
        Instruction::Add(c) => copy("ADD", c),
        Instruction::Volume(v) => json!({ "kind": "VOLUME", "volumes": v }),
        Instruction::User(u) => json!({ "kind": "USER", "user": u }),
        Instruction::Workdir(w) => json!({ "kind": "WORKDIR", "dir": w }),
        Instruction::Onbuild(o) => json!({ "kind": "ONBUILD", "expression": o.expression }),
        Instruction::StopSignal(s) => json!({ "kind": "STOPSIGNAL", "signal": s }),
        Instruction::Healthcheck(Healthcheck::None) => {
            json!({ "kind": "HEALTHCHECK", "none": true })
        }
        Instruction::Healthcheck(Healthcheck::Check {
            test,
            interval_ns,
            timeout_ns,
            start_period_ns,
            start_interval_ns,
            retries,
        }) => json!({
            "kind": "HEALTHCHECK",
            "test": test,
            "interval_ns": interval_ns,
            "timeout_ns": timeout_ns,
            "start_period_ns": start_period_ns,
            "start_interval_ns": start_interval_ns,
            "retries": retries,
        }),
    }
}

/// A RUN step's network mode, as it goes into the key.
pub fn network(n: &Network) -> &'static str {
    match n {
        Network::Private => "private",
        Network::Host => "host",
        Network::None => "none",
    }
}

/// Where a step sits and the stage settings that change what it does: with the instruction
/// and its inputs, everything its key covers. The environment is not hashed: the parent key
/// and the instructions before determine it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::engine) struct KeyScope<'a> {
    /// The key of the step before (or of the stage's base).
    pub parent: &'a str,
    pub user: String,
    pub workdir: String,
    pub shell: Vec<String>,
    /// `os/architecture` of the stage.
    pub platform: String,
    /// Build args and ARGs with a value, not shadowed by ENV: only a RUN step's environment
    /// has them, so only its key hashes them.
    pub args: Vec<(String, String)>,
    /// SOURCE_DATE_EPOCH: the layers of RUN and COPY steps have their times clamped to it, so
    /// a layer made without it (or with another) is not the same result.
    pub epoch: Option<i64>,
}

/// What a step reads, for its key.
#[derive(Debug, Default, PartialEq, Eq)]
pub(in crate::engine) struct Inputs {
    /// Digests of what the step reads (context content, source stages, bind mounts' sources).
    pub digests: Vec<String>,
    /// Settings of the step outside its instruction (RUN's effective network).
    pub settings: Vec<String>,
    /// The context files that changed since the last build, as the reason for a miss.
    pub changed: Vec<String>,
}

impl Inputs {
    /// "3 files changed: a, b, c" when context files changed.
    pub fn why_changed(&self) -> Option<String> {
        let n = self.changed.len();
        (n > 0).then(|| {
            let shown: Vec<&str> = self.changed.iter().take(5).map(|s| s.as_str()).collect();
            format!(
                "{n} file{} changed: {}{}",
                if n == 1 { "" } else { "s" },
                shown.join(", "),
                if n > 5 { ", …" } else { "" }
            )
        })
    }
}

/// The cache key of a step: a pure function of its scope, expanded instruction and inputs,
/// through a versioned canonical encoding (`cache::KEY_VERSION`).
pub(in crate::engine) fn key(scope: &KeyScope, ins: &Instruction, inputs: &Inputs) -> Digest {
    let args: &[(String, String)] = if matches!(ins, Instruction::Run(_)) {
        &scope.args
    } else {
        &[]
    };
    let mut settings = vec![
        format!("user={}", scope.user),
        format!("workdir={}", scope.workdir),
        format!(
            "shell={}",
            serde_json::to_string(&scope.shell).unwrap_or_default()
        ),
        format!("platform={}", scope.platform),
    ];
    if let Some(e) = scope.epoch {
        settings.push(format!("epoch={e}"));
    }
    settings.extend(inputs.settings.iter().cloned());
    KeyInput {
        version: cache::KEY_VERSION,
        parent: scope.parent,
        instruction: instruction(ins),
        args,
        inputs: &inputs.digests,
        settings: &settings,
    }
    .key()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::{load, Source};
    use crate::oci::{canonical_json, Digest};

    /// The key encoding of every instruction kind, pinned. A change here changes every cache
    /// key of that kind: if it is meant, bump `cache::KEY_VERSION` and update the digest.
    #[test]
    fn golden_keys_of_every_instruction_kind() {
        let text = "FROM busybox:1.36 AS base\n\
            ARG A=1 B\n\
            RUN --mount=type=cache,target=/c --network=none echo hi\n\
            RUN [\"/bin/sh\", \"-c\", \"true\"]\n\
            RUN <<EOF\necho body\nEOF\n\
            CMD [\"run\"]\n\
            ENTRYPOINT /bin/app\n\
            SHELL [\"/bin/bash\", \"-c\"]\n\
            ENV X=1 Y=two\n\
            LABEL a=b\n\
            MAINTAINER me\n\
            EXPOSE 80/tcp 53/udp\n\
            COPY --chown=1:2 --chmod=644 --link --exclude=*.md a b /dst/\n\
            ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f /f\n\
            VOLUME /data\n\
            USER app:app\n\
            WORKDIR /w\n\
            ONBUILD RUN echo later\n\
            STOPSIGNAL SIGTERM\n\
            HEALTHCHECK --interval=5s --retries=2 CMD curl -f http://localhost/\n\
            HEALTHCHECK NONE\n";
        let (_, cmds) = load(&Source::new("Dockerfile", text)).unwrap();
        let got: Vec<(String, String)> = cmds
            .iter()
            .map(|c| {
                let enc = canonical_json(&instruction(&c.instruction));
                (
                    c.instruction.name().to_string(),
                    Digest::of(&enc).hex()[..16].to_string(),
                )
            })
            .collect();
        let want: Vec<(&str, &str)> = vec![
            ("FROM", "abee855bc789a4d7"),
            ("ARG", "b00a35d137070469"),
            ("RUN", "6e1cee904fbf6b83"),
            ("RUN", "06f57d5f225bd9cb"),
            ("RUN", "eca3174032299b58"),
            ("CMD", "75760fc0ffe4d5f7"),
            ("ENTRYPOINT", "df0884b55e824040"),
            ("SHELL", "f494bb9fec1eefd8"),
            ("ENV", "755e4fb43a3fd228"),
            ("LABEL", "e0e0694fc6b4be87"),
            ("MAINTAINER", "9deefaee92530ac7"),
            ("EXPOSE", "88ed68083a6a2b21"),
            ("COPY", "a3b11d94dc19b1b6"),
            ("ADD", "7e215e332c86de7e"),
            ("VOLUME", "401d3612497528f8"),
            ("USER", "63a72a2b65f71309"),
            ("WORKDIR", "c10c6464dd711634"),
            ("ONBUILD", "ba8142c28fd8ed56"),
            ("STOPSIGNAL", "f2782fbbe66f7254"),
            ("HEALTHCHECK", "8068cc4bc21bf9d6"),
            ("HEALTHCHECK", "c3bac0797031e292"),
        ];
        let got_ref: Vec<(&str, &str)> =
            got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(got_ref, want, "{got:#?}");
        // And one encoding in full, to show its shape.
        let workdir = cmds
            .iter()
            .find(|c| c.instruction.name() == "WORKDIR")
            .unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&instruction(&workdir.instruction))).unwrap(),
            r#"{"dir":"/w","kind":"WORKDIR"}"#
        );
    }

    #[test]
    fn network_names_are_stable() {
        assert_eq!(
            [Network::Private, Network::Host, Network::None].map(|n| network(&n)),
            ["private", "host", "none"]
        );
    }
}

#[cfg(test)]
mod step_key_tests {
    use super::*;
    use crate::dockerfile::{load, Source};

    fn scope() -> KeyScope<'static> {
        KeyScope {
            parent: "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            user: "app".into(),
            workdir: "/w".into(),
            shell: vec!["/bin/sh".into(), "-c".into()],
            platform: "linux/amd64".into(),
            args: vec![("V".into(), "1".into())],
            epoch: None,
        }
    }

    fn instruction(text: &str) -> Instruction {
        let src = Source::new("Dockerfile", format!("FROM scratch\n{text}\n"));
        let (_, cmds) = load(&src).unwrap();
        cmds.into_iter().last().unwrap().instruction
    }

    /// The whole key, settings included, pinned for a RUN, a COPY and a metadata step: a
    /// change to how the scope is hashed changes every key, so it must be deliberate (bump
    /// `cache::KEY_VERSION` and update these).
    #[test]
    fn golden_step_keys() {
        let run = instruction("RUN echo $V");
        let inputs = Inputs {
            settings: vec!["network=private".into()],
            ..Default::default()
        };
        let copy = instruction("COPY a /b");
        let copy_inputs = Inputs {
            digests: vec!["sha256:ab a:a:-".into()],
            ..Default::default()
        };
        let env = instruction("ENV A=1");
        let got = [
            key(&scope(), &run, &inputs).hex()[..16].to_string(),
            key(&scope(), &copy, &copy_inputs).hex()[..16].to_string(),
            key(&scope(), &env, &Inputs::default()).hex()[..16].to_string(),
        ];
        assert_eq!(
            got,
            ["53a6c99ea6d4f191", "ff32fb79f9ff4c6e", "1eb2faeae890d7ea"],
            "{got:?}"
        );
    }

    /// Each part of the scope is in the key; build args only in a RUN step's.
    #[test]
    fn every_setting_changes_the_key_and_args_only_for_run() {
        let run = instruction("RUN true");
        let env = instruction("ENV A=1");
        let none = Inputs::default();
        let base = key(&scope(), &run, &none);
        let variants = [
            KeyScope {
                parent: "sha256:1",
                ..scope()
            },
            KeyScope {
                user: "root".into(),
                ..scope()
            },
            KeyScope {
                workdir: "/".into(),
                ..scope()
            },
            KeyScope {
                shell: vec!["/bin/bash".into(), "-c".into()],
                ..scope()
            },
            KeyScope {
                platform: "linux/arm64".into(),
                ..scope()
            },
            KeyScope {
                args: vec![("V".into(), "2".into())],
                ..scope()
            },
            KeyScope {
                epoch: Some(0),
                ..scope()
            },
        ];
        for v in &variants {
            assert_ne!(key(v, &run, &none), base, "{v:?}");
        }
        let no_args = KeyScope {
            args: Vec::new(),
            ..scope()
        };
        assert_eq!(key(&no_args, &env, &none), key(&scope(), &env, &none));
        let net = Inputs {
            settings: vec!["network=none".into()],
            ..Default::default()
        };
        assert_ne!(key(&scope(), &run, &net), base);
        let read = Inputs {
            digests: vec!["x".into()],
            ..Default::default()
        };
        assert_ne!(key(&scope(), &run, &read), base);
        // Why a step changed is not part of what it is.
        let changed = Inputs {
            changed: vec!["a".into()],
            ..Default::default()
        };
        assert_eq!(key(&scope(), &run, &changed), base);
    }
}
