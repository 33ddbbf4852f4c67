//! lakectl: declarative management of Apache Iceberg tables.
//!
//! Layers (arrows point down only): `cli` (main.rs) → `manifest` → `plan` → `apply`
//! → `lake`. See `../shared/DESIGN.md`.

pub mod apply;
pub mod engine;
pub mod import;
pub mod ingest;
pub mod lake;
pub mod maintain;
pub mod manifest;
pub mod mutate;
pub mod plan;
pub mod query;
pub mod serve;
pub mod watch;
