//! What wakes `watch` between resyncs: a file created, changed, moved or removed
//! under the manifest directory or a local source directory.
//!
//! File events come from the operating system (inotify, FSEvents, … through
//! `notify`). Every directory under a root is watched on its own (non-recursively),
//! hidden ones (`.git`, a `.lakectl` warehouse) and lakectl's own output (a local
//! warehouse, the SQLite catalog, rejects) left out, and the set is armed anew
//! before each cycle, so a directory made since (or deleted and made again, as a
//! `git pull` may) is watched from the cycle that first reads it; a root that does
//! not exist yet is covered by watching its nearest existing ancestor. Where events
//! cannot be had (`--poll`, a file system without them such as NFS, the inotify
//! watch limit reached), a fingerprint of paths, sizes and mtimes is polled every
//! 250 ms instead. A burst of events is let settle (100 ms quiet, at most 500 ms),
//! and files created or written to and not yet closed (a copy or an upload in
//! progress) are waited for, up to 10 s, so a cycle does not ingest half a file.
//! Either way the event is only a wake-up: the cycle re-reads everything
//! (level-triggered).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{
    AccessKind, AccessMode, CreateKind, EventKind, MetadataKind, ModifyKind, RenameMode,
};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How long a burst of file events must be quiet before the cycle starts, and the
/// most a steady stream of writes may hold it back (the soak's 4 events/s held a
/// 250 ms / 2 s debounce to a 1.8 s p99 latency).
const QUIET: Duration = Duration::from_millis(100);
const MAX_SETTLE: Duration = Duration::from_millis(500);
/// The polling period without file events, and the wait after a change is seen.
const POLL: Duration = Duration::from_millis(250);
/// The most a cycle waits for files still open for writing (a copy or an upload in
/// progress) to be closed, so that it does not ingest half a file.
const MAX_WRITE: Duration = Duration::from_secs(10);

pub(super) struct Wake {
    /// `None`: polling.
    watcher: Option<RecommendedWatcher>,
    events: UnboundedReceiver<()>,
    /// Files written to and not yet closed, as the events tell.
    writing: Arc<Mutex<BTreeSet<PathBuf>>>,
    /// What lakectl writes itself (absolute): never watched, its events ignored.
    own: Arc<Mutex<Vec<PathBuf>>>,
    /// Directories watched now.
    watched: BTreeSet<PathBuf>,
    /// Polling: the roots and their fingerprint when the cycle started.
    roots: Vec<PathBuf>,
    seen: u64,
}

impl Wake {
    /// File events unless `poll` is set or the platform has none.
    pub(super) fn new(poll: bool) -> Self {
        let (tx, events) = unbounded_channel();
        let writing = Arc::new(Mutex::new(BTreeSet::new()));
        let own = Arc::new(Mutex::new(Vec::new()));
        let watcher = if poll {
            None
        } else {
            match notify::recommended_watcher(forward(tx, writing.clone(), own.clone())) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("no file events ({e}): polling every 250 ms");
                    None
                }
            }
        };
        Wake {
            watcher,
            events,
            writing,
            own,
            watched: BTreeSet::new(),
            roots: Vec::new(),
            seen: 0,
        }
    }

    /// `notify` or `poll`, for the status document.
    pub(super) fn mode(&self) -> &'static str {
        if self.watcher.is_some() {
            "notify"
        } else {
            "poll"
        }
    }

    /// Before a cycle: watches exactly the directories under `roots` as they are
    /// now, but for `own` (lakectl's own output: a local warehouse, the SQLite
    /// catalog, rejects), and forgets earlier events (the cycle about to start reads
    /// what they announced). A change from here on wakes the next [`Wake::changed`].
    pub(super) fn arm(&mut self, roots: &[PathBuf], own: &[PathBuf]) {
        // Absolute and folded, so the event paths `notify` reports, `writing` and
        // `watched` compare equal.
        self.roots = roots.iter().map(|p| absolute(p)).collect();
        let own: Vec<PathBuf> = own.iter().map(|p| absolute(p)).collect();
        if let Ok(mut o) = self.own.lock() {
            o.clone_from(&own);
        }
        if let Some(w) = &mut self.watcher {
            let mut want = BTreeSet::new();
            for root in &self.roots {
                if root.is_dir() {
                    directories(root, &own, &mut want);
                } else if let Some(existing) = root.ancestors().skip(1).find(|a| a.is_dir()) {
                    want.insert(existing.to_path_buf());
                }
            }
            for gone in self.watched.difference(&want) {
                // Already gone when its directory was deleted.
                let _ = w.unwatch(gone);
            }
            let mut failed = None;
            for dir in &want {
                // Watching a watched directory again re-arms it (inotify MASK_ADD).
                match w.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {}
                    // Deleted since the walk: its parent's event wakes the next cycle.
                    Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
                    Err(e) if dir.exists() => {
                        failed = Some(format!("{}: {e}", dir.display()));
                        break;
                    }
                    Err(_) => {}
                }
            }
            if let Some(e) = failed {
                tracing::warn!("cannot watch {e}: polling every 250 ms instead");
                self.watcher = None;
                self.watched.clear();
            } else {
                self.watched = want;
            }
        }
        while self.events.try_recv().is_ok() {}
        if let Ok(mut w) = self.writing.lock() {
            // One deleted unseen, or under a directory no longer watched.
            w.retain(|p| p.exists() && p.parent().is_some_and(|d| self.watched.contains(d)));
        }
        if self.watcher.is_none() {
            self.seen = fingerprint(&self.roots, &own);
        }
    }

    /// Waits at most `limit` for a change since [`Wake::arm`]; true when one came,
    /// after the burst it belongs to has settled and the files being written are
    /// closed (or [`MAX_WRITE`] has passed).
    /// A `stop` seen meanwhile ends the wait: false.
    pub(super) async fn changed(&mut self, limit: Duration, stop: &AtomicBool) -> bool {
        if self.watcher.is_some() {
            match tokio::time::timeout(limit, self.events.recv()).await {
                Ok(Some(())) => {}
                _ => return false,
            }
            let first = Instant::now();
            loop {
                if stop.load(Ordering::SeqCst) {
                    return false;
                }
                let quiet = tokio::time::timeout(QUIET, self.events.recv())
                    .await
                    .is_err();
                let open = self.writing.lock().map(|w| !w.is_empty()).unwrap_or(false);
                let waited = first.elapsed();
                if ((quiet || waited >= MAX_SETTLE) && !open) || waited >= MAX_WRITE {
                    if open {
                        tracing::warn!("files still open for writing after {MAX_WRITE:?}");
                    }
                    return true;
                }
            }
        } else {
            tokio::time::sleep(limit.min(POLL)).await;
            let own = self.own.lock();
            let own = own.as_deref().map(Vec::as_slice).unwrap_or_default();
            if fingerprint(&self.roots, own) == self.seen {
                return false;
            }
            tokio::time::sleep(POLL).await;
            true
        }
    }
}

/// The watcher's callback (on `notify`'s thread): a wake-up for every event that
/// may change what a cycle reads. Reads (lakectl's own, of the manifests and the
/// source files) and hidden files (editor swap files, `.git`) do not count. Keeps
/// `writing`: files created or written to and not yet closed.
fn forward(
    tx: UnboundedSender<()>,
    writing: Arc<Mutex<BTreeSet<PathBuf>>>,
    own: Arc<Mutex<Vec<PathBuf>>>,
) -> impl FnMut(notify::Result<notify::Event>) + Send + 'static {
    move |event: notify::Result<notify::Event>| {
        let wakes = match event {
            // An overflowed queue or a watch error: something may have changed.
            Err(_) => true,
            Ok(ev) => {
                let read = matches!(
                    ev.kind,
                    EventKind::Access(AccessKind::Open(_) | AccessKind::Read)
                        | EventKind::Access(AccessKind::Close(AccessMode::Read))
                        | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))
                );
                let hidden = {
                    let own = own.lock();
                    let own = own.as_deref().map(Vec::as_slice).unwrap_or_default();
                    !ev.paths.is_empty() && ev.paths.iter().all(|p| is_hidden(p) || is_own(p, own))
                };
                if !hidden {
                    if let Ok(mut w) = writing.lock() {
                        match ev.kind {
                            EventKind::Create(CreateKind::File)
                            | EventKind::Modify(ModifyKind::Data(_)) => {
                                w.extend(ev.paths.iter().cloned());
                            }
                            EventKind::Access(AccessKind::Close(AccessMode::Write))
                            | EventKind::Remove(_)
                            | EventKind::Modify(ModifyKind::Name(
                                RenameMode::From | RenameMode::Both,
                            )) => {
                                if let Some(p) = ev.paths.first() {
                                    w.remove(p);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                !read && !hidden
            }
        };
        if wakes {
            let _ = tx.send(());
        }
    }
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Under one of `own` (absolute paths).
fn is_own(p: &Path, own: &[PathBuf]) -> bool {
    !own.is_empty() && {
        let p = absolute(p);
        own.iter().any(|o| p.starts_with(o))
    }
}

/// `p` absolute with `.` and `..` folded away lexically, so that a source's
/// `../data/rejects` and the catalog's resolved path compare equal.
pub(super) fn absolute(p: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// `root` and every directory under it, hidden ones, `own` ones and what is under
/// them left out.
fn directories(root: &Path, own: &[PathBuf], out: &mut BTreeSet<PathBuf>) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        if is_own(&d, own) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        out.insert(d);
        for e in entries.flatten() {
            if !is_hidden(&e.path()) && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
}

/// A fingerprint of the files under `roots` (paths, sizes, mtimes), so a new or
/// edited file wakes the loop when polling.
fn fingerprint(roots: &[PathBuf], own: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for root in roots {
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut entries: Vec<_> = entries.flatten().collect();
            entries.sort_by_key(|e| e.path());
            for e in entries {
                if is_hidden(&e.path()) || is_own(&e.path(), own) {
                    continue;
                }
                let Ok(m) = e.metadata() else { continue };
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    e.path().hash(&mut h);
                    m.len().hash(&mut h);
                    m.modified()
                        .ok()
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map(|d| d.as_nanos())
                        .hash(&mut h);
                }
            }
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events: a new file, an edit and a new directory's file each wake it; reads
    /// and hidden files do not.
    #[tokio::test]
    async fn file_events_wake_and_reads_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.csv"), "id\n1\n").unwrap();
        let mut wake = Wake::new(false);
        let no = AtomicBool::new(false);
        assert_eq!(wake.mode(), "notify");
        let short = Duration::from_millis(600);

        wake.arm(std::slice::from_ref(&root), &[]);
        std::fs::read_to_string(root.join("a.csv")).unwrap();
        std::fs::write(root.join(".a.csv.swp"), "x").unwrap();
        assert!(
            !wake.changed(short, &no).await,
            "a read or a hidden file woke it"
        );

        std::fs::write(root.join("b.csv"), "id\n2\n").unwrap();
        assert!(wake.changed(short, &no).await, "a new file did not wake it");

        wake.arm(std::slice::from_ref(&root), &[]);
        std::fs::create_dir(root.join("2026-11-30")).unwrap();
        assert!(
            wake.changed(short, &no).await,
            "a new directory did not wake it"
        );
        wake.arm(std::slice::from_ref(&root), &[]);
        std::fs::write(root.join("2026-11-30/c.csv"), "id\n3\n").unwrap();
        assert!(
            wake.changed(short, &no).await,
            "a file in a new directory did not"
        );

        // A root that is not there yet: its parent is watched until it is made.
        let later = dir.path().join("later");
        wake.arm(&[root.clone(), later.clone()], &[]);
        std::fs::create_dir(&later).unwrap();
        assert!(
            wake.changed(short, &no).await,
            "a missing root's creation did not"
        );
        assert!(!wake.changed(short, &no).await, "it woke without a change");

        // A file still being written (open, written, written again 800 ms later, then
        // closed): the wake-up waits for it to be closed.
        wake.arm(&[root.clone(), later.clone()], &[]);
        let big = root.join("big.csv");
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(big).unwrap();
            f.write_all(b"id\n1\n").unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(800));
            f.write_all(b"2\n").unwrap();
        });
        let t = Instant::now();
        assert!(
            wake.changed(short, &no).await,
            "a file being written did not wake it"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(700),
            "it woke after {:?}, while the file was still open",
            t.elapsed()
        );
        writer.join().unwrap();
        assert!(wake.writing.lock().unwrap().is_empty());

        // lakectl's own output under a watched directory (a warehouse, a SQLite
        // catalog) is neither watched nor a wake-up.
        let warehouse = root.join("warehouse");
        std::fs::create_dir_all(warehouse.join("shop/sales/data")).unwrap();
        let own = [warehouse.clone(), root.join("catalog.db")];
        wake.arm(std::slice::from_ref(&root), &own);
        assert!(!wake.watched.iter().any(|d| d.starts_with(&warehouse)));
        std::fs::write(warehouse.join("shop/sales/data/f.parquet"), "x").unwrap();
        std::fs::write(warehouse.join("v2.metadata.json"), "{}").unwrap();
        std::fs::write(root.join("catalog.db"), "x").unwrap();
        assert!(
            !wake.changed(short, &no).await,
            "lakectl's own writes woke it"
        );
        std::fs::write(root.join("d.csv"), "id\n4\n").unwrap();
        assert!(wake.changed(short, &no).await);
    }

    /// Polling sees the same changes.
    #[tokio::test]
    async fn polling_sees_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let mut wake = Wake::new(true);
        let no = AtomicBool::new(false);
        assert_eq!(wake.mode(), "poll");
        let own = [root.join("warehouse")];
        std::fs::create_dir(&own[0]).unwrap();
        wake.arm(std::slice::from_ref(&root), &own);
        assert!(!wake.changed(Duration::from_millis(300), &no).await);
        std::fs::write(own[0].join("f.parquet"), "x").unwrap();
        assert!(!wake.changed(Duration::from_millis(300), &no).await);
        std::fs::write(root.join("a.csv"), "id\n1\n").unwrap();
        assert!(wake.changed(Duration::from_millis(300), &no).await);
    }
}
