//! Layer compression and hashing rates, in memory (no disk in the way): the sink that makes a
//! layer blob (sha256 of the tar + compression + sha256 of the blob) for each compression, and
//! sha256 alone. Input: a tar of $STRATA_BENCH_TREE (default: the python rootfs that
//! benches/layer.sh makes under /tmp/strata-bench). `cargo bench --bench layer`.

use std::io::Write;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::layer::{self, Compression, LayerSink, WriteOptions};

fn input() -> Option<Vec<u8>> {
    let tree = std::env::var_os("STRATA_BENCH_TREE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/strata-bench/base/rootfs/python"));
    if !tree.is_dir() {
        eprintln!(
            "SKIPPED: no tree at {} (run benches/layer.sh once, or set STRATA_BENCH_TREE)",
            tree.display()
        );
        return None;
    }
    Some(layer::write_tree(&tree, Vec::new(), &WriteOptions::default()).unwrap())
}

fn rates(c: &mut Criterion) {
    let Some(tar) = input() else { return };
    let mut g = c.benchmark_group("layer");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(tar.len() as u64));
    g.bench_function("sha256", |b| b.iter(|| strata::oci::Digest::of(&tar)));
    for (name, comp) in [
        ("sink none", Compression::None),
        ("sink zstd-3", Compression::ZSTD),
        ("sink gzip-6 all cores", Compression::GZIP),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut s = LayerSink::new(std::io::sink(), comp).unwrap();
                s.write_all(&tar).unwrap();
                s.finish().unwrap().1
            })
        });
    }
    g.finish();
}

criterion_group!(benches, rates);
criterion_main!(benches);
