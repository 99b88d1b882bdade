//! What an SBOM costs a build (issue 30's budget: at most 100 ms on a cold build of the Python
//! example, at most 10 ms on a code-change rebuild, where only the new layers are scanned and
//! the others' packages come from the cache beside their facts). In memory, no disk:
//!
//! - `tar entries only (baseline)`: a pass over the python base layer's 188 MB tar that reads
//!   its headers and skips its data, as the pass for a layer's facts does;
//! - `scan python base (tar)`: the package scan of the same tar (what it adds is the
//!   difference: the scan rides along that pass when it is wired in);
//! - `gunzip+scan python base`: the same from the 73 MB gzip blob, as a pulled base is read;
//! - `pull pass …`: a pull's pass over the same blob as it arrives (inflate, diffID, paths),
//!   without and with the package scan that rides it (what scanning at pull costs);
//! - `scan venv layer`: a venv of six, idna and markupsafe (pip, setuptools);
//! - `rebuild`: what a code-change rebuild adds: read the cached packages of the base and venv
//!   layers, scan a new app layer, merge, and write SPDX and CycloneDX.
//!
//! Inputs: target/test-images (scripts/test-deps.sh) and target/sbom-fixtures
//! (scripts/sbom-fixtures.sh). `cargo bench --bench sbom`; benches/sbom.sh adds peak memory.
//! With STRATA_SBOM_SCAN_ONCE=BLOB it scans that blob once, prints the time and the peak RSS,
//! and exits (the memory figure, without criterion's own).

use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strata::layer::{self, WriteOptions};
use strata::oci::Digest;
use strata::sbom::{self, ImageInfo, LayerPackages, LayerRef};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The python base image's layer blob.
fn base_blob() -> Option<PathBuf> {
    let layout = repo().join("target/test-images/oci/python");
    let index: serde_json::Value =
        serde_json::from_slice(&fs_err::read(layout.join("index.json")).ok()?).ok()?;
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs_err::read(blob(index["manifests"][0]["digest"].as_str()?)).ok()?,
    )
    .ok()?;
    Some(blob(manifest["layers"][0]["digest"].as_str()?))
}

fn max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss
}

fn once(blob: &str) {
    let before = max_rss_kib();
    let t = Instant::now();
    let f = fs_err::File::open(blob).unwrap();
    let l = sbom::scan_layer(layer::decompress_pipelined(f).unwrap()).unwrap();
    println!(
        "scanned {blob}: {} packages in {:.0} ms, peak RSS {} MiB (before the scan {} MiB), cached form {} bytes",
        l.count(),
        t.elapsed().as_secs_f64() * 1000.0,
        max_rss_kib() / 1024,
        before / 1024,
        l.to_json().len()
    );
}

fn bench(c: &mut Criterion) {
    if let Ok(blob) = std::env::var("STRATA_SBOM_SCAN_ONCE") {
        once(&blob);
        std::process::exit(0);
    }
    let (Some(blob), true) = (
        base_blob(),
        repo().join("target/sbom-fixtures/.stamp").exists(),
    ) else {
        eprintln!("SKIPPED: target/test-images (scripts/test-deps.sh) or target/sbom-fixtures (scripts/sbom-fixtures.sh) is missing");
        return;
    };
    let gz = fs_err::read(&blob).unwrap();
    let mut tar = Vec::new();
    std::io::copy(&mut layer::decompress(&gz[..]).unwrap(), &mut tar).unwrap();
    let venv = layer::write_tree(
        &repo().join("target/sbom-fixtures/pip-root"),
        Vec::new(),
        &WriteOptions::default(),
    )
    .unwrap();
    let mut g = c.benchmark_group("sbom");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(tar.len() as u64));
    // The pass a layer's facts already make (entries read, data skipped): the scan's cost is
    // what it adds to this.
    g.bench_function("tar entries only (baseline)", |b| {
        b.iter(|| {
            let mut a = tar::Archive::new(&tar[..]);
            a.entries().unwrap().map(|e| e.unwrap().size()).sum::<u64>()
        })
    });
    g.bench_function("scan python base (tar)", |b| {
        b.iter(|| sbom::scan_layer(&tar[..]).unwrap())
    });
    g.bench_function("gunzip+scan python base", |b| {
        b.iter(|| sbom::scan_layer(layer::decompress(&gz[..]).unwrap()).unwrap())
    });
    // A pull's pass over a layer as it arrives (inflate, diffID, paths), without and with the
    // package scan riding it: what scanning at pull adds.
    let tee = |scan: bool| {
        let sink: Option<Box<dyn layer::EntrySink>> = if scan {
            Some(Box::new(sbom::SharedScan::new(Default::default()).0))
        } else {
            None
        };
        let mut t = layer::DiffIdTee::with_sink(sink).unwrap();
        for piece in gz.chunks(1 << 20) {
            t.feed(piece);
        }
        t.finish().unwrap().1
    };
    g.bench_function("pull pass (gunzip+diffID+paths) of the base", |b| {
        b.iter(|| tee(false))
    });
    g.bench_function("pull pass with the package scan", |b| b.iter(|| tee(true)));
    g.throughput(Throughput::Bytes(venv.len() as u64));
    g.bench_function("scan venv layer", |b| {
        b.iter(|| sbom::scan_layer(&venv[..]).unwrap())
    });
    g.finish();

    // A code-change rebuild: the base's and the venv's packages from their cached JSON, the
    // new app layer (a few source files) scanned, the merge, both documents.
    let base_json = sbom::scan_layer(&tar[..]).unwrap().to_json();
    let venv_json = sbom::scan_layer(&venv[..]).unwrap().to_json();
    let mut app = tar::Builder::new(Vec::new());
    for i in 0..20 {
        let body = format!("print({i})\n");
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        app.append_data(&mut h, format!("app/m{i}.py"), body.as_bytes())
            .unwrap();
    }
    let app = app.into_inner().unwrap();
    let refs: Vec<LayerRef> = ["base", "venv", "app"]
        .iter()
        .map(|s| LayerRef {
            diff_id: Digest::of(s.as_bytes()),
            digest: None,
            created_by: s.to_string(),
        })
        .collect();
    let image = ImageInfo {
        name: "app:latest".into(),
        digest: Digest::of(b"m"),
        created: 0,
    };
    let mut g = c.benchmark_group("sbom rebuild");
    g.bench_function("load cached + scan app + merge + spdx + cyclonedx", |b| {
        b.iter(|| {
            let base: LayerPackages = serde_json::from_slice(&base_json).unwrap();
            let venv: LayerPackages = serde_json::from_slice(&venv_json).unwrap();
            let app = sbom::scan_layer(&app[..]).unwrap();
            let inv = sbom::merge(&[
                (refs[0].clone(), &base),
                (refs[1].clone(), &venv),
                (refs[2].clone(), &app),
            ]);
            (
                sbom::spdx::to_bytes(&inv, &image).len(),
                sbom::cyclonedx::to_bytes(&inv, &image).len(),
            )
        })
    });
    g.finish();
    eprintln!(
        "cached packages: base layer {} bytes, venv layer {} bytes",
        base_json.len(),
        venv_json.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
