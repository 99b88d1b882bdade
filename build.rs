//! Link the `strata` executable at a fixed address (not as a position-independent executable).
//!
//! A PIE of strata's size carries about 27,000 relative relocations that the dynamic loader
//! applies at every start, touching (and copying) the pages that hold them: measured on the
//! lab machine, `strata --version` takes 2.9 ms as a PIE and 1.7 ms linked this way (`git
//! --version`: 1.6 ms). A no-op rebuild is judged against `git status`, so start-up counts.
//! This is also how Go links docker, podman, buildah and BuildKit by default. The shared
//! libraries, stack, heap and mappings stay randomized. Set STRATA_PIE=1 to build a PIE (a
//! distribution that requires one).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=STRATA_PIE");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" && std::env::var_os("STRATA_PIE").is_none_or(|v| v.is_empty()) {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
