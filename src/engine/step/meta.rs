//! The instructions that only change the image config (ENV, ARG, LABEL, USER, CMD,
//! ENTRYPOINT, EXPOSE, VOLUME, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER): no
//! layer and no work, a history entry whose time comes from the step before.

use std::collections::BTreeMap;

use crate::engine::error::{BuildError, Error};

use crate::dockerfile::instructions::parse_port;
use crate::dockerfile::{CommandLine, Healthcheck, Instruction};
use crate::engine::cache::key::Inputs;
use crate::engine::cache::{self, Record};
use crate::engine::state::{rfc, StageCx, StageView};

/// Apply the metadata instruction `ins` (expanded) to the stage's config and record it.
pub(in crate::engine) fn execute(
    st: &mut StageCx<'_, '_, '_>,
    ins: &Instruction,
) -> Result<(), BuildError> {
    // Metadata: change the config, record a history entry (its time from the cache).
    match ins {
        Instruction::Arg(_) => st.scope_mut().apply(ins),
        Instruction::Env(kvs) => {
            st.scope_mut().apply(ins);
            set_env(st, kvs);
        }
        Instruction::Label(kvs) => {
            let l = st.cfg().labels.get_or_insert_with(BTreeMap::new);
            for kv in kvs {
                l.insert(kv.key.clone(), kv.value.clone());
            }
        }
        Instruction::Maintainer(m) => st.config_mut().author = Some(m.clone()),
        Instruction::Expose(ports) => {
            let mut keys = Vec::new();
            for p in ports {
                let spec = parse_port(p).map_err(|message| Error::BadPort {
                    port: p.clone(),
                    message,
                })?;
                for n in spec.start..=spec.end {
                    keys.push(format!("{n}/{}", spec.proto.to_ascii_lowercase()));
                }
            }
            let e = st.cfg().exposed_ports.get_or_insert_with(BTreeMap::new);
            for k in keys {
                e.insert(k, serde_json::json!({}));
            }
        }
        Instruction::Volume(v) => {
            let vols = st.cfg().volumes.get_or_insert_with(BTreeMap::new);
            for p in v {
                if p.trim().is_empty() {
                    return Err(Error::EmptyVolume.into());
                }
                vols.insert(p.clone(), serde_json::json!({}));
            }
        }
        Instruction::User(u) => st.cfg().user = Some(u.clone()),
        Instruction::Cmd(c) => {
            let argv = command_line(st.view(), c);
            st.cfg().cmd = Some(argv);
            *st.cmd_set() = true;
        }
        Instruction::Entrypoint(c) => {
            let argv = command_line(st.view(), c);
            let cmd_set = *st.cmd_set();
            let cfg = st.cfg();
            cfg.entrypoint = Some(argv);
            if !cmd_set {
                cfg.cmd = None;
            }
        }
        Instruction::Shell(s) => st.cfg().shell = Some(s.clone()),
        Instruction::StopSignal(s) => st.cfg().stop_signal = Some(s.clone()),
        Instruction::Healthcheck(h) => {
            st.cfg().healthcheck = Some(healthcheck(h));
        }
        Instruction::Onbuild(o) => {
            st.cfg()
                .on_build
                .get_or_insert_with(Vec::new)
                .push(o.expression.clone());
        }
        Instruction::From(_) => return Err(Error::FromInStage.into()),
        _ => {}
    }
    // A metadata step takes no time: its history entry has the time of the entry before it
    // (the base image's, or the last step with a layer, which the cache keeps), so a
    // rebuild gives the same history without a cache record per ENV line. Only the first
    // step of a stage with no history at all (FROM scratch) records its time.
    let view = st.view();
    let key = view.key_for(ins, &Inputs::default());
    let before = view.config().history.last().and_then(|h| h.created.clone());
    let created = match (view.b().opts.epoch, before) {
        (Some(e), _) => rfc(e),
        (None, Some(c)) => c,
        (None, None) => match view.lookup(&key) {
            Some(r) => r.created,
            None => {
                let r = Record {
                    layer: None,
                    created: rfc(view.now()),
                    dirs: Vec::new(),
                    chain: None,
                };
                cache::put(view.b().store, &key, &r)?;
                r.created
            }
        },
    };
    st.set_key(key);
    st.history(&created, true);
    Ok(())
}

/// ENV's `kvs` in the config's Env: a name already there keeps its place, a new one goes
/// last.
fn set_env(st: &mut StageCx<'_, '_, '_>, kvs: &[crate::dockerfile::KeyValue]) {
    let mut pos = std::mem::take(st.env_pos());
    let env = st.cfg().env.get_or_insert_with(Vec::new);
    if pos.1 != env.len() {
        // First ENV of the stage (or the config changed): index it, first entry of
        // each name as the update rule below always did.
        pos.0.clear();
        for (i, e) in env.iter().enumerate() {
            let name = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
            pos.0.entry(name.to_string()).or_insert(i);
        }
    }
    for kv in kvs {
        let item = format!("{}={}", kv.key, kv.value);
        match pos.0.get(&kv.key) {
            Some(&i) => env[i] = item,
            None => {
                pos.0.insert(kv.key.clone(), env.len());
                env.push(item);
            }
        }
    }
    pos.1 = env.len();
    *st.env_pos() = pos;
}

/// HEALTHCHECK as the config has it (Docker's field names, durations in nanoseconds).
fn healthcheck(h: &Healthcheck) -> serde_json::Value {
    match h {
        Healthcheck::None => serde_json::json!({"Test": ["NONE"]}),
        Healthcheck::Check {
            test,
            interval_ns,
            timeout_ns,
            start_period_ns,
            start_interval_ns,
            retries,
        } => {
            let mut m = serde_json::Map::new();
            m.insert("Test".into(), serde_json::json!(test));
            for (k, v) in [
                ("Interval", interval_ns),
                ("Timeout", timeout_ns),
                ("StartPeriod", start_period_ns),
                ("StartInterval", start_interval_ns),
                ("Retries", retries),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), serde_json::json!(v));
                }
            }
            serde_json::Value::Object(m)
        }
    }
}

fn command_line(st: StageView<'_, '_, '_>, c: &CommandLine) -> Vec<String> {
    match c {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => {
            let mut v = st.shell();
            v.push(s.clone());
            v
        }
    }
}
