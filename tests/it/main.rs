//! lakectl's one integration-test binary: real SQLite catalog files, real Iceberg
//! metadata, the real `lakectl` binary, and PyIceberg / DuckDB as independent readers.

mod audit;
mod common;
mod concurrency;
mod console;
mod corpus;
mod crash;
mod defects;
mod drift;
mod evolve;
mod ingest;
mod keyed;
mod maintain;
mod mutate;
mod oracle;
mod query;
mod s3;
mod seaweed;
mod serve;
mod shapes;
mod spark;
mod topology;
mod watch;
