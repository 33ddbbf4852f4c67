//! Query speed without wrong answers: the parallel scan (a snapshot's files split over
//! the session's partitions) gives the rows of the one-partition scan, with and
//! without pushdown, for aggregates, filters, limits, joins, time travel and a table
//! with another engine's deletes folded in by a mutation.

use crate::common::{text, Project};

/// Rows of `sql` with each scan option, as sorted JSON lines:
/// [parallel + pushdown, parallel, pushdown, plain].
async fn four_ways(
    p: &Project,
    sql: &str,
    as_of: Option<lakectl::query::AsOf>,
) -> Vec<Vec<String>> {
    let lake = p.lake().await;
    let mut out = Vec::new();
    for (parallel, pushdown) in [(true, true), (true, false), (false, true), (false, false)] {
        let options = lakectl::query::ScanOptions { pushdown, parallel };
        out.push(crate::common::sorted_rows(&lake, sql, as_of, options).await);
    }
    out
}

#[tokio::test]
async fn the_parallel_scan_returns_the_rows_of_the_one_partition_scan() {
    let p = Project::new();
    let dir = p.root().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    // 9 files into 3 regions: many data files, of different sizes.
    for f in 0..9 {
        let mut body = String::from("id,region,qty,price\n");
        for i in 0..(200 * (f + 1)) {
            let id = f * 10_000 + i;
            body.push_str(&format!(
                "{id},{},{},{}.{:02}\n",
                ["eu", "us", "apac"][id % 3],
                id % 7,
                id % 90,
                id % 100
            ));
        }
        std::fs::write(dir.join(format!("{f}.csv")), body).unwrap();
    }
    p.write("t.yaml", "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: t\n  namespace: q\nspec:\n  columns:\n    - {name: id, type: long}\n    - {name: region, type: string}\n    - {name: qty, type: int}\n    - {name: price, type: \"decimal(10, 2)\"}\n  partitioning:\n    - {column: region, transform: identity}\n  properties:\n    write.target-file-size-bytes: \"8192\"\n  sources:\n    - {name: csv, uri: ../data/*.csv}\n");
    p.apply_converges();
    let before = p.table("q.t").await.metadata.current_snapshot_id().unwrap();
    p.write("t.yaml", &format!("{}  mutations:\n    - name: bump\n      maxRowsChanged: 100000\n      update:\n        where: qty = 3\n        set: {{price: price + 1}}\n    - name: drop\n      maxRowsChanged: 100000\n      delete:\n        where: id % 11 = 0\n", std::fs::read_to_string(p.manifests().join("t.yaml")).unwrap()));
    p.apply_converges();
    let lake = p.lake().await;
    let state = p.table("q.t").await;
    let live = lakectl::mutate::snapshot_files(
        lake.file_io(),
        &state.metadata,
        state.metadata.current_snapshot().unwrap(),
    )
    .await
    .unwrap();
    assert!(live.files.len() >= 6, "{} files", live.files.len());

    let queries = [
        "select count(*) as n, sum(qty) as q, sum(price) as p, min(id) as lo, max(id) as hi from q.t",
        "select region, count(*) as n, sum(price) as p from q.t group by region",
        "select qty, count(distinct region) as r, avg(price) as a from q.t group by qty",
        "select id from q.t where region = 'eu' and qty >= 5",
        "select id, price from q.t where id between 20000 and 20100",
        "select count(*) as n from (select id from q.t limit 37)",
        "select id from q.t order by id desc limit 5",
        "select a.region, count(*) as n from q.t a join q.t b on a.id = b.id + 1 group by a.region",
    ];
    for sql in queries {
        let ways = four_ways(&p, sql, None).await;
        assert!(!ways[3].is_empty(), "{sql}: no rows");
        for (i, w) in ways.iter().enumerate().take(3) {
            assert_eq!(
                w, &ways[3],
                "{sql}: scan option {i} differs from the plain scan"
            );
        }
    }
    // Time travel reads the snapshot before the mutations the same way.
    let sql = "select region, count(*) as n, sum(price) as p from q.t group by region";
    let ways = four_ways(&p, sql, Some(lakectl::query::AsOf::Snapshot(before))).await;
    for w in &ways[..3] {
        assert_eq!(w, &ways[3], "as of {before}");
    }
    assert_ne!(
        ways[3],
        four_ways(&p, sql, None).await[3],
        "the mutations changed nothing"
    );
    // The plan is the parallel scan, over as many partitions as the session has (or
    // files, if fewer).
    let out = p.run(&[
        "query",
        "--format",
        "csv",
        "explain select sum(qty) from q.t",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let explain = text(&out);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert!(
        explain.contains(&format!(
            "ParallelIcebergScan partitions:[{}]",
            cores.min(live.files.len())
        )),
        "{explain}"
    );
    let plain = std::process::Command::new(crate::common::LAKECTL)
        .args([
            "query",
            "--format",
            "csv",
            "explain select sum(qty) from q.t",
        ])
        .current_dir(p.root())
        .env("LAKECTL_QUERY_PARALLEL", "off")
        .output()
        .unwrap();
    assert!(
        !text(&plain).contains("ParallelIcebergScan") && text(&plain).contains("IcebergTableScan"),
        "{}",
        text(&plain)
    );
}

/// `serve`'s provider cache: a table whose metadata location is unchanged keeps its
/// provider (nothing is loaded again); a commit moves the location, and the next
/// session reads the new snapshot.
#[tokio::test]
async fn cached_providers_are_reused_until_the_table_moves() {
    let p = Project::new();
    let dir = p.root().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("1.csv"), "id\n1\n2\n").unwrap();
    p.write("t.yaml", "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: t\n  namespace: q\nspec:\n  columns:\n    - {name: id, type: long}\n  sources:\n    - {name: csv, uri: ../data/*.csv}\n");
    p.write("u.yaml", "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: u\n  namespace: q\nspec:\n  columns:\n    - {name: id, type: long}\n");
    p.apply_converges();
    let lake = p.lake().await;
    let cache = lakectl::query::ProviderCache::default();
    let count = |ctx: datafusion::prelude::SessionContext| async move {
        let b = lakectl::query::run(&ctx, "select count(*) as n from q.t")
            .await
            .unwrap();
        lakectl::query::render(&b, "json").unwrap()
    };
    let provider = |ctx: &datafusion::prelude::SessionContext, t: &str| {
        let ctx = ctx.clone();
        let t = t.to_string();
        async move { ctx.table_provider(t.as_str()).await.unwrap() }
    };
    let first = lakectl::query::session_cached(&lake, &cache).await.unwrap();
    let second = lakectl::query::session_cached(&lake, &cache).await.unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &provider(&first, "q.t").await,
        &provider(&second, "q.t").await
    ));
    assert_eq!(count(second).await, r#"[{"n":2}]"#);
    std::fs::write(dir.join("2.csv"), "id\n3\n").unwrap();
    p.apply_converges();
    let third = lakectl::query::session_cached(&lake, &cache).await.unwrap();
    assert!(!std::sync::Arc::ptr_eq(
        &provider(&first, "q.t").await,
        &provider(&third, "q.t").await
    ));
    // The table that did not move keeps its provider.
    assert!(std::sync::Arc::ptr_eq(
        &provider(&first, "q.u").await,
        &provider(&third, "q.u").await
    ));
    assert_eq!(count(third).await, r#"[{"n":3}]"#);
}
