//! Finding a source's files and telling which are new, ingested or changed.
//!
//! A file's ledger key is its path relative to the manifest's directory (so moving or
//! cloning the project does not make every file look new), or its full `s3://` URI.
//! Its identity is size + modification time, with an xxh3-128 content hash to tell a
//! file that was only touched or copied (same content: already ingested) from one whose
//! content changed (reported, or appended again with `onChange: append`).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::manifest::types::SourceFormat;

/// One file of a source, as listed now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Ledger key: relative to the manifest directory, or the `s3://` URI.
    pub path: String,
    /// Where to read it.
    #[serde(skip)]
    pub location: PathBuf,
    pub size: u64,
    pub mtime_ms: i64,
    #[serde(skip)]
    pub format: Option<SourceFormat>,
    /// The object's ETag (S3 sources): the content identity, no download needed.
    #[serde(skip)]
    pub etag: Option<String>,
}

pub use crate::lake::ledger::IngestedFile;

/// Lists the files a local `uri` names: a file, a directory (recursively, hidden entries
/// skipped) or a glob. Sorted by path.
pub fn list_local(uri: &str, base: &Path) -> Result<Vec<SourceFile>, String> {
    let uri = uri.strip_prefix("file://").unwrap_or(uri);
    let full = if Path::new(uri).is_absolute() {
        PathBuf::from(uri)
    } else {
        base.join(uri)
    };
    let mut out: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
    let is_glob = uri.contains(['*', '?', '[', '{']);
    if is_glob {
        let full_str = full.to_string_lossy().to_string();
        let root = glob_root(&full_str);
        let matcher = glob(&full_str)?;
        if root.is_dir() {
            walk(&root, &mut |p, md| {
                if matcher.is_match(p) {
                    out.push((p.to_path_buf(), md));
                }
            })
            .map_err(|e| format!("cannot list {}: {e}", root.display()))?;
        }
    } else if full.is_dir() {
        walk(&full, &mut |p, md| out.push((p.to_path_buf(), md)))
            .map_err(|e| format!("cannot list {}: {e}", full.display()))?;
    } else if full.is_file() {
        let md =
            std::fs::metadata(&full).map_err(|e| format!("cannot stat {}: {e}", full.display()))?;
        out.push((full.clone(), md));
    } else {
        return Err(format!("{} does not exist", full.display()));
    }
    let abs_base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    let cwd = std::env::current_dir().ok();
    let mut files: Vec<SourceFile> = out
        .into_iter()
        .map(|(p, md)| {
            let mtime_ms = mtime_ms(&md);
            let abs = match (&cwd, p.is_absolute()) {
                (Some(c), false) => c.join(&p),
                _ => p.clone(),
            };
            let rel = match abs.strip_prefix(&abs_base) {
                Ok(rel) => rel.to_string_lossy().to_string(),
                Err(_) => abs.to_string_lossy().to_string(),
            };
            SourceFile {
                format: format_of(&p),
                path: rel,
                location: p,
                size: md.len(),
                mtime_ms,
                etag: None,
            }
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad glob `{pattern}`: {e}"))
}

/// The directory part of a glob before its first wildcard.
fn glob_root(pattern: &str) -> PathBuf {
    let cut = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    let head = &pattern[..cut];
    match head.rfind('/') {
        Some(i) => PathBuf::from(&head[..i.max(1)]),
        None => PathBuf::from("."),
    }
}

/// Visits every file under `dir` (hidden entries skipped) with its metadata, read
/// from the directory entry (no second lookup of the whole path).
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, std::fs::Metadata)) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let p = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&p, f)?;
        } else {
            // A symlink is followed (as `metadata` does), a plain file is not looked up again.
            let md = if ty.is_symlink() {
                std::fs::metadata(&p)?
            } else {
                entry.metadata()?
            };
            f(&p, md);
        }
    }
    Ok(())
}

/// Format from the extension (`.csv`, `.tsv`, `.json`, `.jsonl`, `.ndjson`, `.parquet`),
/// after a compression suffix (`.gz`, `.zst`, `.bz2`): `orders.csv.gz` is CSV.
pub fn format_of(p: &Path) -> Option<SourceFormat> {
    let p = match crate::manifest::types::Compression::from_path(p) {
        crate::manifest::types::Compression::None => p.to_path_buf(),
        _ => p.with_extension(""),
    };
    match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "csv" | "tsv" | "txt" => Some(SourceFormat::Csv),
        "json" | "jsonl" | "ndjson" => Some(SourceFormat::Json),
        "parquet" | "pq" => Some(SourceFormat::Parquet),
        _ => None,
    }
}

/// xxh3-128 of a file's content, hex.
pub fn content_hash(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:032x}", h.digest128()))
}

/// How a listed file stands against the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    New,
    /// Same path, same content: nothing to do.
    Ingested,
    /// Same path, other content (hash of the new content).
    Changed {
        hash: String,
    },
}

/// A file's modification time in milliseconds since the epoch (0 when unknown).
fn mtime_ms(md: &std::fs::Metadata) -> i64 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A local file that is no longer as it was listed (size, and mtime when one was
/// listed): it was written to while being ingested, so what was read and hashed may
/// not be one version of it. `None` when unchanged, and for S3 objects (read from a
/// local spool copy, whose mtime is the download's; an object is replaced whole).
pub fn changed_since_listing(file: &SourceFile) -> Option<String> {
    if file.etag.is_some() || file.path.starts_with("s3://") || file.path.starts_with("s3a://") {
        return None;
    }
    let md = match std::fs::metadata(&file.location) {
        Ok(md) => md,
        Err(e) => return Some(format!("cannot stat it again: {e}")),
    };
    let (size, mtime) = (md.len(), mtime_ms(&md));
    if size != file.size || (file.mtime_ms != 0 && mtime != file.mtime_ms) {
        Some(format!(
            "it changed while it was being ingested (size {} → {size}, mtime {} → {mtime})",
            file.size, file.mtime_ms
        ))
    } else {
        None
    }
}

/// Compares a listed file with the ledger (hashing only when size or mtime differ).
pub fn state_of(
    file: &SourceFile,
    ledger: &HashMap<String, IngestedFile>,
) -> std::io::Result<FileState> {
    let Some(done) = ledger.get(&file.path) else {
        return Ok(FileState::New);
    };
    if done.size == file.size && done.mtime_ms == file.mtime_ms {
        return Ok(FileState::Ingested);
    }
    let hash = match &file.etag {
        Some(etag) => format!("etag:{etag}"),
        None => content_hash(&file.location)?,
    };
    if hash == done.hash {
        Ok(FileState::Ingested)
    } else {
        Ok(FileState::Changed { hash })
    }
}

/// Human size: `12.3 MB`.
pub fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_directories_and_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("data/a")).unwrap();
        for f in [
            "data/x.csv",
            "data/a/y.csv",
            "data/a/z.json",
            "data/.hidden.csv",
        ] {
            std::fs::write(d.path().join(f), "id\n1\n").unwrap();
        }
        let names = |v: Vec<SourceFile>| v.into_iter().map(|f| f.path).collect::<Vec<_>>();
        assert_eq!(
            names(list_local("data/*.csv", d.path()).unwrap()),
            vec!["data/x.csv"]
        );
        assert_eq!(
            names(list_local("data/**/*.csv", d.path()).unwrap()),
            vec!["data/a/y.csv", "data/x.csv"]
        );
        assert_eq!(
            names(list_local("data", d.path()).unwrap()),
            vec!["data/a/y.csv", "data/a/z.json", "data/x.csv"]
        );
        assert_eq!(
            names(list_local("data/x.csv", d.path()).unwrap()),
            vec!["data/x.csv"]
        );
        assert!(list_local("nope.csv", d.path())
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn a_file_written_after_it_was_listed_is_seen_as_changed() {
        let d = tempfile::tempdir().unwrap();
        // Created empty (a writer that has not written yet), listed, then filled.
        std::fs::write(d.path().join("a.csv"), "").unwrap();
        let listed = list_local("*.csv", d.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(changed_since_listing(&listed[0]), None);
        std::fs::write(d.path().join("a.csv"), "id\n1\n").unwrap();
        let why = changed_since_listing(&listed[0]).expect("changed");
        assert!(why.contains("size 0 → 5"), "{why}");
    }
}
