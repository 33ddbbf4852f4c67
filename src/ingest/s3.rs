//! `s3://bucket/prefix/` sources (with an optional glob), through `object_store`.
//!
//! Endpoint, region, keys and path-style addressing come from the lakehouse config's
//! `storage` options (`s3.endpoint`, `s3.region`, `s3.access-key-id`,
//! `s3.secret-access-key`, `s3.path-style-access`). A file's identity is its ETag and
//! size, so plan needs no download; ingest streams each object to a local spool file
//! (bounded memory) and reads it like a local file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use globset::GlobBuilder;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::files::{format_of, SourceFile};

/// `s3://bucket/key/prefix/*.csv` → (bucket, listing prefix, glob on the full key).
pub fn split_uri(uri: &str) -> Result<(String, String, Option<String>), String> {
    let rest = uri
        .strip_prefix("s3://")
        .or_else(|| uri.strip_prefix("s3a://"))
        .ok_or_else(|| format!("`{uri}` is not an s3:// URI"))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("`{uri}` names no bucket"));
    }
    let cut = key.find(['*', '?', '[', '{']);
    let (prefix, glob) = match cut {
        Some(i) => {
            let head = &key[..i];
            let dir = head.rfind('/').map(|j| &head[..=j]).unwrap_or("");
            (dir.to_string(), Some(key.to_string()))
        }
        None => (key.to_string(), None),
    };
    Ok((bucket.to_string(), prefix, glob))
}

/// An object store for `bucket` configured from the lakehouse storage options.
pub fn store(
    bucket: &str,
    storage: &BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, String> {
    let mut b = AmazonS3Builder::new().with_bucket_name(bucket);
    if let Some(e) = storage.get("s3.endpoint") {
        b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
    }
    b = b.with_region(
        storage
            .get("s3.region")
            .map(String::as_str)
            .unwrap_or("us-east-1"),
    );
    if let Some(k) = storage.get("s3.access-key-id") {
        b = b.with_access_key_id(k);
    }
    if let Some(k) = storage.get("s3.secret-access-key") {
        b = b.with_secret_access_key(k);
    }
    let path_style = storage
        .get("s3.path-style-access")
        .map(|v| v == "true")
        .unwrap_or(storage.contains_key("s3.endpoint"));
    b = b.with_virtual_hosted_style_request(!path_style);
    b.build()
        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        .map_err(|e| e.to_string())
}

/// Lists the objects a source URI names, sorted by key, those after `start_after` (an
/// `s3://` path) only when given (S3's start-after: the rest is not listed at all).
/// `hash` carries `etag:<ETag>`.
pub async fn list(
    uri: &str,
    storage: &BTreeMap<String, String>,
    start_after: Option<&str>,
) -> Result<Vec<SourceFile>, String> {
    let (bucket, prefix, glob) = split_uri(uri)?;
    let store = store(&bucket, storage)?;
    let matcher = match &glob {
        Some(g) => Some(
            GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("bad glob `{g}`: {e}"))?
                .compile_matcher(),
        ),
        None => None,
    };
    let listing_prefix = if prefix.is_empty() {
        None
    } else {
        Some(ObjectPath::from(prefix.as_str()))
    };
    let offset = start_after
        .and_then(|p| p.strip_prefix(&format!("s3://{bucket}/")))
        .map(ObjectPath::from);
    let mut stream = match &offset {
        Some(o) => store.list_with_offset(listing_prefix.as_ref(), o),
        None => store.list(listing_prefix.as_ref()),
    };
    let mut out = Vec::new();
    while let Some(meta) = stream.next().await {
        let meta = meta.map_err(|e| format!("cannot list s3://{bucket}/{prefix}: {e}"))?;
        let key = meta.location.to_string();
        if key.rsplit('/').next().is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        // Without a glob, a prefix names a "directory" (or one exact key).
        let keep = match &matcher {
            Some(m) => m.is_match(&key),
            None => {
                key == prefix
                    || prefix.is_empty()
                    || prefix.ends_with('/')
                    || key.starts_with(&format!("{prefix}/"))
            }
        };
        if !keep {
            continue;
        }
        out.push(SourceFile {
            path: format!("s3://{bucket}/{key}"),
            location: PathBuf::new(),
            size: meta.size,
            mtime_ms: meta.last_modified.timestamp_millis(),
            format: format_of(Path::new(&key)),
            etag: meta.e_tag.clone(),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Objects fetched at once by [`download_all`].
const DOWNLOADS: usize = 16;

/// Streams every `(s3:// uri, dest)` into its local file, [`DOWNLOADS`] at a time over
/// one client per bucket. The first failure is returned with its URI.
pub async fn download_all(
    items: Vec<(String, PathBuf)>,
    storage: &BTreeMap<String, String>,
) -> Result<(), (String, String)> {
    let mut stores: std::collections::HashMap<String, Arc<dyn ObjectStore>> = Default::default();
    let mut jobs = Vec::with_capacity(items.len());
    for (uri, dest) in items {
        let (bucket, _, _) = split_uri(&uri).map_err(|e| (uri.clone(), e))?;
        let store = match stores.get(&bucket) {
            Some(s) => s.clone(),
            None => {
                let s = store(&bucket, storage).map_err(|e| (uri.clone(), e))?;
                stores.insert(bucket, s.clone());
                s
            }
        };
        jobs.push((uri, dest, store));
    }
    let mut tasks: Vec<tokio::task::JoinHandle<Result<(), (String, String)>>> = Vec::new();
    let mut jobs = jobs.into_iter();
    let mut first_error = None;
    loop {
        while tasks.len() < DOWNLOADS {
            let Some((uri, dest, store)) = jobs.next() else {
                break;
            };
            tasks.push(tokio::spawn(async move {
                download(&uri, store.as_ref(), &dest)
                    .await
                    .map_err(|e| (uri, e))
            }));
        }
        if tasks.is_empty() {
            break;
        }
        let (done, _, rest) = futures::future::select_all(tasks).await;
        tasks = rest;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert((String::new(), format!("download failed: {e}")));
            }
        }
        if first_error.is_some() {
            for t in &tasks {
                t.abort();
            }
            break;
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Streams `s3://bucket/key` into `dest` (created), chunk by chunk.
pub async fn download(uri: &str, store: &dyn ObjectStore, dest: &Path) -> Result<(), String> {
    let (_, key, _) = split_uri(uri)?;
    let got = store
        .get(&ObjectPath::from(key.as_str()))
        .await
        .map_err(|e| format!("cannot read {uri}: {e}"))?;
    let mut stream = got.into_stream();
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(dest).map_err(|e| format!("{}: {e}", dest.display()))?,
    );
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("cannot read {uri}: {e}"))?;
        std::io::Write::write_all(&mut f, &chunk)
            .map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    std::io::Write::flush(&mut f).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_bucket_prefix_and_glob() {
        assert_eq!(
            split_uri("s3://b/in/").unwrap(),
            ("b".into(), "in/".into(), None)
        );
        assert_eq!(
            split_uri("s3://b/in/2024/*.csv").unwrap(),
            ("b".into(), "in/2024/".into(), Some("in/2024/*.csv".into()))
        );
        assert_eq!(split_uri("s3://b").unwrap(), ("b".into(), "".into(), None));
        assert!(split_uri("s3:///x").is_err());
    }
}
