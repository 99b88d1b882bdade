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
