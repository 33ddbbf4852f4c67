//! The data plane's seam: a list of independent file-level tasks in (ingest a file
//! range, rewrite a candidate file, compact a partition group, count matches), their
//! outputs out, in order. Nothing here knows about manifests or commits: the caller
//! plans the tasks from metadata and publishes the outputs in one commit.
//!
//! [`run`] is the local engine: every task is its own tokio task, so the runtime's
//! worker threads (one per core) run them in parallel, at most [`workers`] at a time
//! (memory is bounded by that many task buffers); the first error stops the rest. A
//! distributed engine (Spark) would stand behind the same call with serializable
//! tasks.

use std::future::Future;

use futures::{StreamExt, TryStreamExt};

/// Tasks run at once: one per core.
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Runs `work` on every item, on all cores, and returns the outputs in item order.
pub async fn run<I, T, F, Fut>(items: I, work: F) -> Result<Vec<T>, String>
where
    I: IntoIterator,
    F: Fn(I::Item) -> Fut,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
    T: Send + 'static,
{
    futures::stream::iter(items.into_iter().map(|item| {
        let task = tokio::spawn(work(item));
        async move { task.await.map_err(|e| format!("task failed: {e}"))? }
    }))
    .buffered(workers())
    .try_collect()
    .await
}

pub mod spark;
