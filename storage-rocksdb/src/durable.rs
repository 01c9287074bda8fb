//! The durability mark: the newest RocksDB sequence number this node is known to have
//! made durable, kept in a small file beside the database.
//!
//! RocksDB recovers its write-ahead log up to the first damaged record. After a power
//! loss that is right: the torn tail held only writes that were never synced, so never
//! acknowledged. But a WAL cut short by a damaged disk or a careless copy recovers the
//! same way, silently, and a node that lost entries it acknowledged must not rejoin its
//! groups as if intact (its peers count on those entries). The mark tells the two apart:
//! it is saved about once a second from what the log writer's syncs covered (and once
//! more, after a last sync, when the engine closes), so it never runs ahead of what is
//! durable, and an open that recovers less than it refuses to start.

use crate::knobs::MARK_SAVE_INTERVAL;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rocksdb::DB;

use hanse_storage::{Error, Result};

/// The mark's file in the data directory.
pub(crate) const MARK_FILE: &str = "durable";

/// Refuses `db` (just opened from `path`) when it recovered fewer writes than the mark
/// says were durable.
pub(crate) fn check(path: &Path, db: &DB) -> Result<()> {
    let file = path.join(MARK_FILE);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&file, e)),
    };
    let durable: u64 = text.trim().parse().map_err(|_| Error::Corrupted {
        path: path.to_path_buf(),
        detail: format!("the durability mark {} is unreadable", file.display()),
    })?;
    let recovered = db.latest_sequence_number();
    if recovered < durable {
        return Err(Error::LostWrites {
            path: path.to_path_buf(),
            recovered,
            durable,
        });
    }
    Ok(())
}

/// What the log writer's syncer and the saving thread share.
#[derive(Default)]
struct Shared {
    /// The newest sequence number a sync covered.
    synced: AtomicU64,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// Saves the mark in the background; dropping it saves it one last time.
pub(crate) struct Mark {
    shared: Arc<Shared>,
    saver: Option<JoinHandle<()>>,
    db: Arc<DB>,
    file: PathBuf,
}

/// The syncer's side of the mark: where it records what each sync covered.
#[derive(Clone)]
pub(crate) struct MarkWriter(Arc<Shared>);

impl MarkWriter {
    /// Records that every write up to `sequence` is durable.
    pub(crate) fn synced(&self, sequence: u64) {
        self.0.synced.fetch_max(sequence, Ordering::Release);
    }
}

impl Mark {
    pub(crate) fn start(path: &Path, db: Arc<DB>) -> Mark {
        let shared = Arc::new(Shared::default());
        let file = path.join(MARK_FILE);
        let (saving, target) = (shared.clone(), file.clone());
        let saver = std::thread::Builder::new()
            .name("hanse-durable-mark".into())
            .spawn(move || save_loop(&saving, &target))
            .expect("spawning the durability-mark thread");
        Mark {
            shared,
            saver: Some(saver),
            db,
            file,
        }
    }

    pub(crate) fn writer(&self) -> MarkWriter {
        MarkWriter(self.shared.clone())
    }

    /// Stops saving in the background and saves the mark once more, after a last sync
    /// makes everything written so far durable. Called once the log writer has stopped.
    pub(crate) fn close(&mut self) {
        *self.shared.stop.lock().expect("mark lock") = true;
        self.shared.wake.notify_all();
        if let Some(saver) = self.saver.take() {
            let _ = saver.join();
        }
        let sequence = self.db.latest_sequence_number();
        if self.db.flush_wal(true).is_ok()
            && let Err(e) = save(&self.file, sequence)
        {
            tracing::warn!("saving the durability mark failed: {e}");
        }
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        if self.saver.is_some() {
            self.close();
        }
    }
}

fn save_loop(shared: &Shared, file: &Path) {
    let mut saved = 0;
    let mut stop = shared.stop.lock().expect("mark lock");
    while !*stop {
        stop = shared
            .wake
            .wait_timeout(stop, MARK_SAVE_INTERVAL)
            .expect("mark lock")
            .0;
        let synced = shared.synced.load(Ordering::Acquire);
        if synced > saved {
            match save(file, synced) {
                Ok(()) => saved = synced,
                Err(e) => tracing::warn!("saving the durability mark failed: {e}"),
            }
        }
    }
}

/// Replaces the mark atomically: a temporary file, synced, renamed over it, and the
/// directory synced.
fn save(file: &Path, sequence: u64) -> Result<()> {
    let tmp = file.with_extension("tmp");
    let mut out = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    writeln!(out, "{sequence}")
        .and_then(|()| out.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, file).map_err(|e| Error::io(file, e))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
