//! The SQL catalog in the JDBC / PyIceberg layout, on SQLite:
//! `iceberg_tables(catalog_name, table_namespace, table_name, metadata_location,
//! previous_metadata_location, iceberg_type)` and
//! `iceberg_namespace_properties(catalog_name, namespace, property_key, property_value)`.
//!
//! PyIceberg's `SqlCatalog`, Java's `JdbcCatalog` and iceberg-rust's `SqlCatalog` open the
//! same file. A file created by PyIceberg lacks `iceberg_type`; it is added on open so
//! the Java and Rust catalogs can use the file too (PyIceberg ignores the column).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

/// The file of a `sqlite:PATH` (or `sqlite://PATH`) catalog uri.
pub fn sqlite_path(uri: &str) -> &str {
    uri.strip_prefix("sqlite://")
        .or_else(|| uri.strip_prefix("sqlite:"))
        .unwrap_or(uri)
}

pub struct SqlCatalog {
    pool: SqlitePool,
    name: String,
}

/// The compare-and-swap of one table's row: binds new, old, catalog, namespace, table,
/// old. Zero rows changed means another writer moved the table first.
const CAS: &str = "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ?
     WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?
       AND metadata_location = ?";

impl SqlCatalog {
    /// Connects to `sqlite:PATH`. With `create`, makes the file, its folder and the
    /// tables; without, returns `None` when the file does not exist.
    pub async fn connect(uri: &str, name: &str, create: bool) -> Result<Option<Self>, sqlx::Error> {
        let path = sqlite_path(uri);
        if !std::path::Path::new(path).exists() {
            if !create {
                return Ok(None);
            }
            if let Some(parent) = std::path::Path::new(path).parent() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite:{path}"))?
            .create_if_missing(create)
            // Other processes (a second lakectl, PyIceberg) hold the lock briefly.
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let catalog = SqlCatalog {
            pool,
            name: name.to_string(),
        };
        catalog.ensure_tables().await?;
        Ok(Some(catalog))
    }

    async fn ensure_tables(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS iceberg_tables (
                catalog_name VARCHAR(255) NOT NULL,
                table_namespace VARCHAR(255) NOT NULL,
                table_name VARCHAR(255) NOT NULL,
                metadata_location VARCHAR(1000),
                previous_metadata_location VARCHAR(1000),
                iceberg_type VARCHAR(5),
                PRIMARY KEY (catalog_name, table_namespace, table_name))",
        )
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
                catalog_name VARCHAR(255) NOT NULL,
                namespace VARCHAR(255) NOT NULL,
                property_key VARCHAR(255) NOT NULL,
                property_value VARCHAR(1000),
                PRIMARY KEY (catalog_name, namespace, property_key))",
        )
        .execute(&self.pool)
        .await?;
        let has_type = sqlx::query(
            "SELECT 1 FROM pragma_table_info('iceberg_tables') WHERE name = 'iceberg_type'",
        )
        .fetch_optional(&self.pool)
        .await?
        .is_some();
        if !has_type {
            // A catalog made by PyIceberg: add the JDBC column (see ICEBERG-NOTES.md).
            let r = sqlx::query("ALTER TABLE iceberg_tables ADD COLUMN iceberg_type VARCHAR(5)")
                .execute(&self.pool)
                .await;
            if let Err(e) = r {
                // Another process may have added it first.
                if !e.to_string().contains("duplicate column") {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    pub async fn namespace_exists(&self, ns: &str) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(
            "SELECT 1 FROM iceberg_namespace_properties WHERE catalog_name = ? AND namespace = ?
             UNION ALL
             SELECT 1 FROM iceberg_tables WHERE catalog_name = ? AND table_namespace = ?
             LIMIT 1",
        )
        .bind(&self.name)
        .bind(ns)
        .bind(&self.name)
        .bind(ns)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Creates a namespace (idempotent), the way PyIceberg and Java do: an `exists` row.
    pub async fn create_namespace(&self, ns: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT OR IGNORE INTO iceberg_namespace_properties
             (catalog_name, namespace, property_key, property_value) VALUES (?, ?, 'exists', 'true')",
        )
        .bind(&self.name)
        .bind(ns)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_tables(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT table_namespace, table_name FROM iceberg_tables
             WHERE catalog_name = ? AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)
             ORDER BY table_namespace, table_name",
        )
        .bind(&self.name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Every table with its metadata location, in one query.
    pub async fn table_locations(&self) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables
             WHERE catalog_name = ? AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)
               AND metadata_location IS NOT NULL
             ORDER BY table_namespace, table_name",
        )
        .bind(&self.name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    pub async fn metadata_location(
        &self,
        ns: &str,
        table: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT metadata_location FROM iceberg_tables
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?
               AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL)",
        )
        .bind(&self.name)
        .bind(ns)
        .bind(table)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.try_get(0)).transpose()
    }

    /// Inserts a new table row; `false` when the table exists already.
    pub async fn insert_table(
        &self,
        ns: &str,
        table: &str,
        location: &str,
    ) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "INSERT OR IGNORE INTO iceberg_tables
             (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type)
             VALUES (?, ?, ?, ?, NULL, 'TABLE')",
        )
        .bind(&self.name)
        .bind(ns)
        .bind(table)
        .bind(location)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The compare-and-swap of the commit path: `false` when the row no longer points
    /// at `old`.
    pub async fn compare_and_swap(
        &self,
        ns: &str,
        table: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, sqlx::Error> {
        // A single autocommit UPDATE, as it has always been (the transaction of
        // `compare_and_swap_all` is for commits across tables only).
        let r = sqlx::query(CAS)
            .bind(new)
            .bind(old)
            .bind(&self.name)
            .bind(ns)
            .bind(table)
            .bind(old)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Compare-and-swaps of several tables in one SQLite transaction: all or none
    /// (`false`, nothing changed, when any row no longer points at its `old`).
    pub async fn compare_and_swap_all(
        &self,
        swaps: &[(String, String, String, String)],
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for (ns, table, old, new) in swaps {
            let r = sqlx::query(CAS)
                .bind(new)
                .bind(old)
                .bind(&self.name)
                .bind(ns)
                .bind(table)
                .bind(old)
                .execute(&mut *tx)
                .await?;
            if r.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Every namespace: those with properties and those holding tables.
    pub async fn list_namespaces(&self) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT namespace FROM iceberg_namespace_properties WHERE catalog_name = ?
             UNION SELECT table_namespace FROM iceberg_tables WHERE catalog_name = ?
             ORDER BY 1",
        )
        .bind(&self.name)
        .bind(&self.name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| r.try_get(0)).collect()
    }

    /// A namespace's properties (without the `exists` marker).
    pub async fn namespace_properties(
        &self,
        ns: &str,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT property_key, property_value FROM iceberg_namespace_properties
             WHERE catalog_name = ? AND namespace = ? AND property_key <> 'exists'",
        )
        .bind(&self.name)
        .bind(ns)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// Sets namespace properties (creating the namespace).
    pub async fn set_namespace_properties(
        &self,
        ns: &str,
        props: &[(String, String)],
    ) -> Result<(), sqlx::Error> {
        self.create_namespace(ns).await?;
        for (k, v) in props {
            sqlx::query(
                "INSERT OR REPLACE INTO iceberg_namespace_properties
                 (catalog_name, namespace, property_key, property_value) VALUES (?, ?, ?, ?)",
            )
            .bind(&self.name)
            .bind(ns)
            .bind(k)
            .bind(v)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Drops an empty namespace; `false` when it has tables.
    pub async fn drop_namespace(&self, ns: &str) -> Result<bool, sqlx::Error> {
        let has_tables = sqlx::query(
            "SELECT 1 FROM iceberg_tables WHERE catalog_name = ? AND table_namespace = ? LIMIT 1",
        )
        .bind(&self.name)
        .bind(ns)
        .fetch_optional(&self.pool)
        .await?
        .is_some();
        if has_tables {
            return Ok(false);
        }
        sqlx::query(
            "DELETE FROM iceberg_namespace_properties WHERE catalog_name = ? AND namespace = ?",
        )
        .bind(&self.name)
        .bind(ns)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    /// Removes a table's row (its files stay); `false` when there was none.
    pub async fn delete_table(&self, ns: &str, table: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "DELETE FROM iceberg_tables WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
        )
        .bind(&self.name)
        .bind(ns)
        .bind(table)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Renames a table's row; `false` when the source is missing or the target exists.
    pub async fn rename_table(
        &self,
        from: (&str, &str),
        to: (&str, &str),
    ) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "UPDATE OR IGNORE iceberg_tables SET table_namespace = ?, table_name = ?
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
        )
        .bind(to.0)
        .bind(to.1)
        .bind(&self.name)
        .bind(from.0)
        .bind(from.1)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
