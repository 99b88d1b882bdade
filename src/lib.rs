//! strata: build OCI images from Dockerfiles with no daemon and no root.
//!
//! The modules follow the pipeline, left to right:
//!
//! ```text
//! Dockerfile text ─► dockerfile/ ─► plan/ ─► engine/ ─► store/ + oci/
//! ```
//!
//! - [`dockerfile`]: source spans, lexer and parser, variable expansion, typed instructions,
//!   lint rules. Pure.
//! - [`plan`]: stages, ARG scoping, the stage DAG and target pruning. Pure.
//! - [`registry`]: references, credentials, registries.conf, and the distribution-protocol
//!   client that pulls base images into the store and pushes images from it.
//! - [`engine`]: `strata build` — runs the plan step by step with the step cache, RUN in the
//!   [`sandbox`], COPY/ADD into [`layer`]s, and writes the image to the [`store`].
//! - [`sbom`]: the packages each layer installs, the image's package list with the layer and
//!   instruction that added each, as SPDX and CycloneDX documents. Pure.
//!
//! The binary's command-line layer lives in `src/cli/` and is not part of the library API.

pub mod context;
pub mod dockerfile;
pub mod engine;
pub mod fsx;
pub mod layer;
pub mod oci;
pub mod plan;
pub mod registry;
pub mod sandbox;
pub mod sbom;
pub mod store;

/// The cores this process may use (its cgroup's quota counted), read once: the standard
/// library reads /proc and the cgroup files on every call.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}
