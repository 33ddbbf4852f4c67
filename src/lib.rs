//! lakectl: declarative management of Apache Iceberg tables.
//!
//! Layers (arrows point down only): `cli` (main.rs) → `watch`/`serve` → `apply` →
//! `plan` (diff only) → `observe` (reads the actual state) → `mutate`/`ingest`/
//! `maintain` (data work) → `engine` (runs file-level tasks) → `lake` (catalog,
//! storage, the ledger, the one commit path); `manifest` is the YAML layer. See
//! `../shared/DESIGN.md`.

pub mod apply;
pub mod engine;
pub mod import;
pub mod ingest;
pub mod lake;
pub mod maintain;
pub mod manifest;
pub mod mutate;
pub mod observe;
pub mod plan;
pub mod query;
pub mod serve;
pub mod watch;
