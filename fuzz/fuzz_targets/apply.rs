//! Apply arbitrary bytes as a layer tar: nothing may panic, and nothing may appear outside the
//! target directory (a sentinel directory beside it must stay empty).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata::layer::{apply_layer, ApplyOptions};

fn arena() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("strata-fuzz-apply-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("outside")).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let base = arena();
    let target = base.join("t");
    let _ = std::fs::remove_dir_all(&target);
    std::fs::create_dir_all(&target).unwrap();
    for opts in [ApplyOptions::default(), ApplyOptions { overlay_whiteouts: true, ..Default::default() }] {
        let _ = apply_layer(data, &target, &opts);
    }
    let outside: Vec<_> = std::fs::read_dir(base.join("outside")).unwrap().collect();
    assert!(outside.is_empty(), "a layer wrote outside its target");
    let siblings: Vec<String> = std::fs::read_dir(base).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(siblings.iter().all(|s| s == "t" || s == "outside"), "a layer wrote beside its target: {siblings:?}");
});
