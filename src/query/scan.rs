//! A parallel Iceberg scan. iceberg-datafusion's `IcebergTableScan` is one partition:
//! every file of the snapshot is decoded by one stream, on one core, whatever the
//! session's target partitions. [`parallel`] plans the snapshot's file tasks once
//! (with the same projection, the same pushed filters and the same limit) and splits
//! them over the target partitions, balanced by bytes; each partition reads its files
//! with its own `ArrowReader`, so DataFusion decodes on every core. Rows are the same
//! (each file is read whole by one partition, its deletes applied as before); only
//! the order across files differs, as SQL allows. `LAKECTL_QUERY_PARALLEL=off` keeps
//! the one-partition scan: the plain path the tests compare against.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, ExecutionPlan, Partitioning, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use iceberg::io::FileIO;
use iceberg::scan::FileScanTask;
use iceberg_datafusion::physical_plan::IcebergTableScan;

/// Whether scans are split over the session's partitions (`LAKECTL_QUERY_PARALLEL`).
pub fn parallel_enabled() -> bool {
    !matches!(
        std::env::var("LAKECTL_QUERY_PARALLEL").as_deref(),
        Ok("off" | "0" | "false")
    )
}

fn df(e: iceberg::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// `scan` as a scan of `partitions` partitions (fewer when it has fewer files).
pub async fn parallel(
    scan: &IcebergTableScan,
    partitions: usize,
) -> DFResult<Arc<dyn ExecutionPlan>> {
    let table = scan.table();
    let builder = match scan.snapshot_id() {
        Some(id) => table.scan().snapshot_id(id),
        None => table.scan(),
    };
    let mut builder = match scan.projection() {
        Some(columns) => builder.select(columns.to_vec()),
        None => builder.select_all(),
    };
    if let Some(p) = scan.predicates() {
        builder = builder.with_filter(p.clone());
    }
    let tasks: Vec<FileScanTask> = builder
        .build()
        .map_err(df)?
        .plan_files()
        .await
        .map_err(df)?
        .try_collect()
        .await
        .map_err(df)?;
    // Largest first, each to the partition with the fewest bytes so far.
    let n = partitions.clamp(1, tasks.len().max(1));
    let mut sorted = tasks;
    sorted.sort_by_key(|t| std::cmp::Reverse(t.length));
    let mut groups: Vec<Vec<FileScanTask>> = vec![Vec::new(); n];
    let mut load = vec![0u64; n];
    for t in sorted {
        let i = (0..n).min_by_key(|i| load[*i]).unwrap_or(0);
        load[i] += t.length;
        groups[i].push(t);
    }
    let schema = scan.schema();
    let properties = Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema.clone()),
        Partitioning::UnknownPartitioning(n),
        EmissionType::Incremental,
        Boundedness::Bounded,
    ));
    Ok(Arc::new(ParallelIcebergScan {
        file_io: table.file_io().clone(),
        groups,
        schema,
        properties,
        limit: scan.limit(),
        describe: format!(
            "projection:[{}] predicate:[{}]",
            scan.projection().map(|p| p.join(",")).unwrap_or_default(),
            scan.predicates().map(|p| p.to_string()).unwrap_or_default()
        ),
    }))
}

/// The file tasks of a snapshot, one group per partition.
#[derive(Debug)]
pub struct ParallelIcebergScan {
    file_io: FileIO,
    groups: Vec<Vec<FileScanTask>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    limit: Option<usize>,
    describe: String,
}

impl DisplayAs for ParallelIcebergScan {
    fn fmt_as(
        &self,
        _t: datafusion::physical_plan::DisplayFormatType,
        f: &mut std::fmt::Formatter,
    ) -> std::fmt::Result {
        write!(
            f,
            "ParallelIcebergScan partitions:[{}] files:[{}] {}",
            self.groups.len(),
            self.groups.iter().map(Vec::len).sum::<usize>(),
            self.describe
        )?;
        if let Some(limit) = self.limit {
            write!(f, " limit:[{limit}]")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ParallelIcebergScan {
    fn name(&self) -> &str {
        "ParallelIcebergScan"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let tasks = self.groups.get(partition).cloned().unwrap_or_default();
        let reader = iceberg::arrow::ArrowReaderBuilder::new(
            self.file_io.clone(),
            iceberg::Runtime::try_current().map_err(df)?,
        )
        // One file at a time per partition: the partitions are the parallelism.
        .with_data_file_concurrency_limit(1)
        .with_row_group_filtering_enabled(true)
        .build();
        let stream = reader
            .read(Box::pin(futures::stream::iter(tasks.into_iter().map(Ok))))
            .map_err(df)?
            .stream()
            .map_err(df);
        let stream: futures::stream::BoxStream<'static, DFResult<_>> = match self.limit {
            None => stream.boxed(),
            Some(limit) => {
                let mut remaining = limit;
                stream
                    .try_filter_map(move |batch: datafusion::arrow::array::RecordBatch| {
                        futures::future::ready(Ok(if remaining == 0 {
                            None
                        } else if batch.num_rows() <= remaining {
                            remaining -= batch.num_rows();
                            Some(batch)
                        } else {
                            let b = batch.slice(0, remaining);
                            remaining = 0;
                            Some(b)
                        }))
                    })
                    .boxed()
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}
