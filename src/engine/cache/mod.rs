//! The build cache in one place: the canonical, versioned key of a step ([`key`]), the records
//! in the store with the size limit and its collection ([`local`], whose items are re-exported
//! here), and the cache shared between machines through `--cache-to` / `--cache-from`
//! ([`remote`]: the cache manifest's format, lazy import with every layer verified, merge and
//! export, cache mounts as layers, remembered remote records).

pub mod key;
pub mod local;
pub mod remote;

pub use local::*;
