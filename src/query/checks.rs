//! Declared checks (`spec.checks`) run on one snapshot of a table: each kind becomes
//! read-only SQL over that snapshot alone (DataFusion reads only the columns the query
//! names), and a failure carries how many rows (or keys) fail and up to
//! [`SAMPLES`] of them.
//!
//! A check that cannot run (a query that does not parse, a column gone) is a failure,
//! never a pass.

use std::sync::Arc;

use datafusion::execution::context::SessionContext;
use datafusion::sql::TableReference;
use serde::Serialize;

use super::{provider_at, run, QueryError};
use crate::lake::{Lake, TableState};
use crate::manifest::types::{CheckSpec, Severity};

/// Sample rows shown per failing check.
pub const SAMPLES: usize = 5;

/// The outcome of one check.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub kind: String,
    pub severity: Severity,
    pub passed: bool,
    /// Rows (for `unique`: duplicated keys) that fail; 0 when passed.
    pub failing: u64,
    /// What was found, in words.
    pub message: String,
    /// Up to [`SAMPLES`] failing rows (JSON objects).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<serde_json::Value>,
    /// The check could not run (it fails all the same).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub could_not_run: bool,
}

impl CheckResult {
    /// A failed check of `error` severity: it stops a publish.
    pub fn blocks(&self) -> bool {
        !self.passed && self.severity == Severity::Error
    }
}

/// The table a check reads (`{table}`) and, for `rowCount`, the table before.
const CHECKED: &str = "checked";
const BEFORE: &str = "before";

/// Runs `checks` on snapshot `at` of `state`'s table (`None`: an empty table);
/// `before` is the snapshot `rowCount.maxChangePercent` compares with (`main` before
/// the change). `identifier_fields` is what `unique: []` checks.
pub async fn run_checks(
    lake: &Lake,
    state: &TableState,
    at: Option<i64>,
    before: Option<i64>,
    checks: &[CheckSpec],
    identifier_fields: &[String],
) -> Result<Vec<CheckResult>, QueryError> {
    if checks.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = SessionContext::new();
    let schema = Arc::new(datafusion::catalog::MemorySchemaProvider::new());
    ctx.catalog("datafusion")
        .ok_or_else(|| QueryError::AsOf("no default catalog".into()))?
        .register_schema("lakectl_check", schema)?;
    for (name, snapshot) in [(CHECKED, at), (BEFORE, before)] {
        let options = super::ScanOptions {
            pushdown: true,
            parallel: super::scan::parallel_enabled(),
        };
        let table = provider_at(lake, state, snapshot, options).await?;
        ctx.register_table(TableReference::partial("lakectl_check", name), table)?;
    }
    let mut out = Vec::new();
    for c in checks {
        let kind = c.kinds().first().copied().unwrap_or("none").to_string();
        let (mut r, could_not_run) = match evaluate(&ctx, c, identifier_fields).await {
            Ok(r) => (r, false),
            Err(e) => (
                Outcome {
                    passed: false,
                    failing: 0,
                    message: format!("the check could not run: {e}"),
                    samples: Vec::new(),
                },
                true,
            ),
        };
        r.samples.truncate(SAMPLES);
        out.push(CheckResult {
            name: c.name.clone(),
            kind,
            severity: c.severity,
            passed: r.passed,
            failing: r.failing,
            message: r.message,
            samples: r.samples,
            could_not_run,
        });
    }
    Ok(out)
}

struct Outcome {
    passed: bool,
    failing: u64,
    message: String,
    samples: Vec<serde_json::Value>,
}

fn table(name: &str) -> String {
    format!("lakectl_check.{name}")
}

/// A column name as a SQL identifier (`a.b` is field `b` of struct `a`).
fn ident(column: &str) -> String {
    let mut parts = column.split('.');
    let first = parts.next().unwrap_or_default();
    let mut s = format!("\"{}\"", first.replace('"', "\"\""));
    for p in parts {
        s.push_str(&format!("['{}']", p.replace('\'', "''")));
    }
    s
}

async fn scalar_u64(ctx: &SessionContext, sql: &str) -> Result<u64, QueryError> {
    let batches = run(ctx, sql).await?;
    let v = first_value(&batches)?;
    Ok(v.as_u64()
        .or_else(|| v.as_i64().map(|i| i.max(0) as u64))
        .unwrap_or(0))
}

fn first_value(
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> Result<serde_json::Value, QueryError> {
    let rows = json_rows(batches)?;
    let first = rows
        .first()
        .and_then(|r| r.as_object())
        .and_then(|o| o.values().next().cloned());
    Ok(first.unwrap_or(serde_json::Value::Null))
}

fn json_rows(
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> Result<Vec<serde_json::Value>, QueryError> {
    let text = super::render(batches, "json")?;
    serde_json::from_str::<Vec<serde_json::Value>>(&text)
        .map_err(|e| QueryError::AsOf(format!("check result: {e}")))
}

async fn samples(ctx: &SessionContext, sql: &str) -> Result<Vec<serde_json::Value>, QueryError> {
    json_rows(&run(ctx, &format!("{sql} LIMIT {SAMPLES}")).await?)
}

/// Rows matching `filter`: their count and samples.
async fn failing_rows(
    ctx: &SessionContext,
    filter: &str,
) -> Result<(u64, Vec<serde_json::Value>), QueryError> {
    let t = table(CHECKED);
    let n = scalar_u64(ctx, &format!("SELECT COUNT(*) FROM {t} WHERE {filter}")).await?;
    let s = if n > 0 {
        samples(ctx, &format!("SELECT * FROM {t} WHERE {filter}")).await?
    } else {
        Vec::new()
    };
    Ok((n, s))
}

async fn evaluate(
    ctx: &SessionContext,
    c: &CheckSpec,
    identifier_fields: &[String],
) -> Result<Outcome, QueryError> {
    let t = table(CHECKED);
    if let Some(cols) = &c.unique {
        let cols = if cols.is_empty() {
            identifier_fields
        } else {
            cols.as_slice()
        };
        let key: Vec<String> = cols.iter().map(|c| ident(c)).collect();
        let key = key.join(", ");
        let not_null: Vec<String> = cols
            .iter()
            .map(|c| format!("{} IS NOT NULL", ident(c)))
            .collect();
        let dups = format!(
            "SELECT {key}, COUNT(*) AS duplicates FROM {t} WHERE {} GROUP BY {key} HAVING COUNT(*) > 1",
            not_null.join(" AND ")
        );
        let batches = run(
            ctx,
            &format!("SELECT COUNT(*) AS n_keys, SUM(duplicates) AS n_rows FROM ({dups})"),
        )
        .await?;
        let row = json_rows(&batches)?;
        let keys = row.first().and_then(|r| r["n_keys"].as_u64()).unwrap_or(0);
        let rows = row.first().and_then(|r| r["n_rows"].as_u64()).unwrap_or(0);
        return Ok(Outcome {
            passed: keys == 0,
            failing: keys,
            message: if keys == 0 {
                format!("({}) unique", cols.join(", "))
            } else {
                format!(
                    "{keys} duplicated key(s) of ({}) in {rows} row(s)",
                    cols.join(", ")
                )
            },
            samples: if keys > 0 {
                samples(ctx, &format!("{dups} ORDER BY duplicates DESC, {key}")).await?
            } else {
                Vec::new()
            },
        });
    }
    if let Some(cols) = &c.not_null {
        let filter: Vec<String> = cols
            .iter()
            .map(|c| format!("{} IS NULL", ident(c)))
            .collect();
        let (n, s) = failing_rows(ctx, &filter.join(" OR ")).await?;
        return Ok(Outcome {
            passed: n == 0,
            failing: n,
            message: if n == 0 {
                format!("no nulls in {}", cols.join(", "))
            } else {
                format!("{n} row(s) with a null in {}", cols.join(", "))
            },
            samples: s,
        });
    }
    if let Some(map) = &c.accepted_values {
        let filter: Vec<String> = map
            .iter()
            .map(|(col, values)| {
                let list: Vec<String> = values.iter().map(|v| v.sql_literal()).collect();
                format!(
                    "({c} IS NOT NULL AND {c} NOT IN ({}))",
                    list.join(", "),
                    c = ident(col)
                )
            })
            .collect();
        let (n, s) = failing_rows(ctx, &filter.join(" OR ")).await?;
        let cols: Vec<&str> = map.keys().map(String::as_str).collect();
        return Ok(Outcome {
            passed: n == 0,
            failing: n,
            message: if n == 0 {
                format!("every value of {} accepted", cols.join(", "))
            } else {
                format!(
                    "{n} row(s) with a value of {} not accepted",
                    cols.join(", ")
                )
            },
            samples: s,
        });
    }
    if let Some(rc) = &c.row_count {
        let now = scalar_u64(ctx, &format!("SELECT COUNT(*) FROM {t}")).await?;
        let mut problems = Vec::new();
        if let Some(min) = rc.min {
            if now < min {
                problems.push(format!("{now} row(s), fewer than min {min}"));
            }
        }
        if let Some(max) = rc.max {
            if now > max {
                problems.push(format!("{now} row(s), more than max {max}"));
            }
        }
        let mut message = format!("{now} row(s)");
        if let Some(pct) = rc.max_change_percent {
            let before =
                scalar_u64(ctx, &format!("SELECT COUNT(*) FROM {}", table(BEFORE))).await?;
            if before > 0 {
                let change = (now as f64 - before as f64).abs() * 100.0 / before as f64;
                message = format!("{now} row(s), {before} before ({change:.1}% change)");
                if change > pct {
                    problems.push(format!(
                        "{now} row(s) against {before} before: a {change:.1}% change, more than maxChangePercent {pct}"
                    ));
                }
            }
        }
        return Ok(Outcome {
            passed: problems.is_empty(),
            failing: if problems.is_empty() { 0 } else { now },
            message: if problems.is_empty() {
                message
            } else {
                problems.join("; ")
            },
            samples: Vec::new(),
        });
    }
    if let Some(f) = &c.freshness {
        let newest = first_value(
            &run(
                ctx,
                &format!(
                    "SELECT CAST(CAST(MAX({}) AS TIMESTAMP) AS BIGINT) AS ns FROM {t}",
                    ident(&f.column)
                ),
            )
            .await?,
        )?;
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let Some(ns) = newest.as_i64() else {
            return Ok(Outcome {
                passed: false,
                failing: 0,
                message: format!("no value of {} (no rows)", f.column),
                samples: Vec::new(),
            });
        };
        let age_hours = (now_ns - ns) as f64 / 3.6e12;
        let newest = chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339();
        return Ok(Outcome {
            passed: age_hours <= f.max_age_hours,
            failing: 0,
            message: format!(
                "newest {} is {newest}, {age_hours:.1} h old (max {} h)",
                f.column, f.max_age_hours
            ),
            samples: Vec::new(),
        });
    }
    if let Some(q) = &c.sql {
        let sql = q.replace("{table}", &t);
        let batches = run(ctx, &sql).await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let v = first_value(&batches)?;
        let columns = batches.first().map(|b| b.num_columns()).unwrap_or(0);
        let Some(ok) = v.as_bool().filter(|_| rows == 1 && columns == 1) else {
            return Ok(Outcome {
                passed: false,
                failing: 0,
                message: format!(
                    "the query must return one boolean; it returned {rows} row(s) of {columns} column(s), first value {v}"
                ),
                samples: Vec::new(),
            });
        };
        return Ok(Outcome {
            passed: ok,
            failing: 0,
            message: format!("the query returned {ok}"),
            samples: Vec::new(),
        });
    }
    Err(QueryError::AsOf(format!("check `{}` has no kind", c.name)))
}
