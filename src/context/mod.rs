//! The build context: `.dockerignore` matching with Docker's semantics ([`ignore`]).
//!
//! To come with the build engine: walking the context with include (COPY sources) and exclude
//! patterns, and content checksums cached by (size, mtime, inode, ctime). Never follows a
//! symlink out of the context.

pub mod ignore;
