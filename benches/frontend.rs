//! Front-end throughput: parse + type + plan of the 26 real-world Dockerfiles of
//! ../shared/conformance/realworld (or $STRATA_CONFORMANCE_DIR/realworld). Target: >= 50 MB/s on
//! one core. `cargo bench --bench frontend`.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::dockerfile::{self, Source};
use strata::plan;

fn files() -> Vec<(String, String)> {
    let dir = std::env::var_os("STRATA_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance"))
        .join("realworld");
    let mut out = Vec::new();
    let Ok(rd) = fs_err::read_dir(&dir) else {
        eprintln!("SKIPPED: no real-world corpus at {}", dir.display());
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains("ockerfile") {
            let text = String::from_utf8_lossy(&fs_err::read(e.path()).unwrap()).into_owned();
            out.push((name, text));
        }
    }
    out.sort();
    out
}

fn frontend(c: &mut Criterion) {
    let files = files();
    if files.is_empty() {
        return;
    }
    let sources: Vec<Source> = files
        .iter()
        .map(|(n, t)| Source::new(n.clone(), t.clone()))
        .collect();
    let bytes: usize = files.iter().map(|(_, t)| t.len()).sum();
    let mut g = c.benchmark_group("frontend");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("parse+type+plan (26 real-world files)", |b| {
        b.iter(|| {
            for s in &sources {
                let (df, cmds) = dockerfile::load(s).unwrap();
                let p = plan::plan(&df, cmds, plan::Options::default()).unwrap();
                std::hint::black_box(p.order.len());
            }
        })
    });
    g.bench_function("parse only", |b| {
        b.iter(|| {
            for s in &sources {
                std::hint::black_box(dockerfile::parse(s).unwrap().nodes.len());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, frontend);
criterion_main!(benches);
