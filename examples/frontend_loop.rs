//! Runs the front end over files in a loop and reports the time of each phase, for profiling:
//! `cargo run --release --example frontend_loop -- FILE...`.
use std::time::{Duration, Instant};

use strata::dockerfile::{self, Source};
use strata::plan;

fn main() {
    let sources: Vec<Source> = std::env::args()
        .skip(1)
        .map(|p| Source::from_bytes(p.clone(), &fs_err::read(&p).unwrap()))
        .collect();
    let bytes: usize = sources.iter().map(|s| s.text().len()).sum();
    let (mut tp, mut tt, mut tl) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let rounds = 300;
    for _ in 0..rounds {
        for s in &sources {
            let t0 = Instant::now();
            let df = dockerfile::parse(s).unwrap();
            let t1 = Instant::now();
            let cmds = dockerfile::type_all(&df).unwrap();
            let t2 = Instant::now();
            let p = plan::plan(&df, cmds, plan::Options::default()).unwrap();
            let t3 = Instant::now();
            std::hint::black_box(p.order.len());
            tp += t1 - t0;
            tt += t2 - t1;
            tl += t3 - t2;
        }
    }
    let mb = (bytes * rounds) as f64 / 1e6;
    let total = (tp + tt + tl).as_secs_f64();
    println!(
        "parse {:.3}s type {:.3}s plan {:.3}s: {:.1} MB/s",
        tp.as_secs_f64(),
        tt.as_secs_f64(),
        tl.as_secs_f64(),
        mb / total
    );
}
