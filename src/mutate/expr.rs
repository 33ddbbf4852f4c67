//! A mutation's SQL, compiled against an Arrow schema with DataFusion: parsed, bound
//! to columns, type-coerced and checked (a `where` must be boolean; a `set` value must
//! be assignable to its column). The same compilation serves `validate` (against the
//! manifest's columns) and `apply` (against the table's current schema).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};

/// Which part of a mutation an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Where,
    /// The value of `set.<column>`.
    Set(String),
    /// The key `set.<column>` (the column itself is wrong).
    SetKey(String),
}

#[derive(Debug, Clone)]
pub struct ExprError {
    pub part: Part,
    pub message: String,
}

/// What a mutation does, as SQL text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Action {
    Update {
        predicate: String,
        set: Vec<(String, String)>,
    },
    Delete {
        predicate: String,
    },
}

impl Action {
    pub fn predicate(&self) -> &str {
        match self {
            Action::Update { predicate, .. } | Action::Delete { predicate } => predicate,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Update { .. } => "update",
            Action::Delete { .. } => "delete",
        }
    }
}

/// A compiled `where` predicate and the columns it reads.
pub struct Predicate {
    pub expr: Arc<dyn PhysicalExpr>,
    /// Top-level column names the predicate reads (sorted, unique).
    pub columns: Vec<String>,
}

/// A compiled mutation for batches of `schema`.
pub struct Compiled {
    pub schema: SchemaRef,
    pub predicate: Predicate,
    /// (column index, value expression, column type) for an update.
    pub sets: Vec<(usize, Arc<dyn PhysicalExpr>, DataType)>,
}

/// A session whose SQL is case-sensitive as written (Iceberg column names keep their
/// case; DataFusion would otherwise lower-case unquoted identifiers).
fn session() -> SessionContext {
    let mut config = SessionConfig::new();
    config.options_mut().sql_parser.enable_ident_normalization = false;
    SessionContext::new_with_config(config)
}

fn clean(e: datafusion::error::DataFusionError) -> String {
    let s = e.strip_backtrace();
    let s = s
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Schema error: ")
        .trim_start_matches("SQL error: ");
    s.strip_suffix("?.")
        .map(|x| format!("{x}?"))
        .unwrap_or_else(|| s.to_string())
}

/// Compiles a `where` predicate against `schema`.
pub fn predicate(sql: &str, schema: &SchemaRef) -> Result<Predicate, String> {
    let ctx = session();
    let df = DFSchema::try_from(schema.as_ref().clone()).map_err(clean)?;
    let expr = ctx.parse_sql_expr(sql, &df).map_err(clean)?;
    let mut columns: Vec<String> = expr
        .column_refs()
        .into_iter()
        .map(|c| c.name.clone())
        .collect();
    columns.sort();
    columns.dedup();
    let phys = ctx.create_physical_expr(expr, &df).map_err(clean)?;
    let ty = phys.data_type(schema).map_err(clean)?;
    if !matches!(ty, DataType::Boolean | DataType::Null) {
        return Err(format!("`where` must be a boolean condition, not {ty}"));
    }
    Ok(Predicate {
        expr: phys,
        columns,
    })
}

/// Compiles a whole mutation against `schema`; every error found, each with its part.
pub fn compile(action: &Action, schema: &SchemaRef) -> Result<Compiled, Vec<ExprError>> {
    let mut errors = Vec::new();
    let pred = predicate(action.predicate(), schema).map_err(|message| ExprError {
        part: Part::Where,
        message,
    });
    let mut sets = Vec::new();
    if let Action::Update { set, .. } = action {
        let ctx = session();
        let df = DFSchema::try_from(schema.as_ref().clone()).ok();
        for (column, sql) in set {
            let Ok(idx) = schema.index_of(column) else {
                let message = if column.contains('.') {
                    format!("`{column}`: only top-level columns can be set")
                } else {
                    format!(
                        "`{column}` is not a column of the table (columns: {})",
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                errors.push(ExprError {
                    part: Part::SetKey(column.clone()),
                    message,
                });
                continue;
            };
            let target = schema.field(idx).data_type().clone();
            let compiled = df
                .as_ref()
                .ok_or_else(|| "bad schema".to_string())
                .and_then(|df| {
                    let e = ctx.parse_sql_expr(sql, df).map_err(clean)?;
                    let p = ctx.create_physical_expr(e, df).map_err(clean)?;
                    let ty = p.data_type(schema).map_err(clean)?;
                    if !assignable(&ty, &target) {
                        return Err(format!(
                            "cannot set `{column}` ({}) to a value of type {ty}",
                            iceberg_name(&target)
                        ));
                    }
                    Ok(p)
                });
            match compiled {
                Ok(p) => sets.push((idx, p, target)),
                Err(message) => errors.push(ExprError {
                    part: Part::Set(column.clone()),
                    message,
                }),
            }
        }
    }
    match pred {
        Ok(p) if errors.is_empty() => Ok(Compiled {
            schema: schema.clone(),
            predicate: p,
            sets,
        }),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.insert(0, e);
            Err(errors)
        }
    }
}

/// Whether a value of type `from` may be stored in a column of type `to`: the same
/// kind of value (numbers, text, times, binary), and text into a date or time (parsed,
/// failing on a bad value). Numbers are cast checked: an overflow fails the apply.
pub fn assignable(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to || from == &Null {
        return true;
    }
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let binary = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView | FixedSizeBinary(_));
    let ok = (from.is_numeric() && to.is_numeric())
        || (text(from) && (text(to) || to.is_temporal()))
        || (from.is_temporal() && to.is_temporal())
        || (binary(from) && binary(to))
        || (from == &Boolean && to == &Boolean);
    ok && arrow_cast::can_cast_types(from, to)
}

fn iceberg_name(t: &DataType) -> String {
    match t {
        DataType::Int32 => "int".into(),
        DataType::Int64 => "long".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        other => other.to_string(),
    }
}

/// The rows of `batch` the predicate selects (NULL counts as not selected).
pub fn mask(pred: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanArray, String> {
    let v = pred
        .evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(clean)?;
    let b = v
        .as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .unwrap_or_else(|| BooleanArray::from(vec![false; batch.num_rows()]));
    if b.null_count() == 0 {
        return Ok(b);
    }
    Ok(arrow_select::filter::prep_null_mask_filter(&b))
}

impl Compiled {
    /// Applies the mutation to one batch: the batch to write back and the number of
    /// rows changed. A delete drops the selected rows; an update evaluates its `set`
    /// expressions on the selected rows only and puts the results in their places.
    pub fn apply(&self, batch: &RecordBatch) -> Result<(RecordBatch, usize), String> {
        let m = mask(&self.predicate.expr, batch)?;
        let n = m.true_count();
        if n == 0 {
            return Ok((batch.clone(), 0));
        }
        if self.sets.is_empty() {
            let keep = datafusion::arrow::compute::not(&m).map_err(|e| e.to_string())?;
            let out = arrow_select::filter::filter_record_batch(batch, &keep)
                .map_err(|e| e.to_string())?;
            return Ok((out, n));
        }
        let selected =
            arrow_select::filter::filter_record_batch(batch, &m).map_err(|e| e.to_string())?;
        let mut indices = Vec::with_capacity(batch.num_rows());
        let mut k = 0;
        for i in 0..batch.num_rows() {
            if m.value(i) {
                indices.push((1, k));
                k += 1;
            } else {
                indices.push((0, i));
            }
        }
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let options = arrow_cast::CastOptions {
            safe: false,
            ..Default::default()
        };
        for (idx, expr, target) in &self.sets {
            let field = self.schema.field(*idx);
            let new = expr
                .evaluate(&selected)
                .and_then(|v| v.into_array(selected.num_rows()))
                .map_err(|e| format!("set `{}`: {}", field.name(), clean(e)))?;
            let new = arrow_cast::cast_with_options(&new, target, &options)
                .map_err(|e| format!("set `{}`: {e}", field.name()))?;
            if !field.is_nullable() && new.null_count() > 0 {
                return Err(format!(
                    "set `{}`: the column is required and the new value is NULL for {} row(s)",
                    field.name(),
                    new.null_count()
                ));
            }
            let merged = arrow_select::interleave::interleave(
                &[columns[*idx].as_ref(), new.as_ref()],
                &indices,
            )
            .map_err(|e| e.to_string())?;
            columns[*idx] = merged;
        }
        let out = RecordBatch::try_new(batch.schema(), columns).map_err(|e| e.to_string())?;
        Ok((out, n))
    }
}
