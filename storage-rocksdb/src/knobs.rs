//! The RocksDB engine's limits and intervals, each defined once with why it is what it
//! is; units come last in the names.

use std::time::Duration;

/// How often the mark is saved when it moved: often enough that a WAL damaged by more
/// than about this much is caught, seldom enough to cost nothing (one small fsync).
pub const MARK_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Writes waiting for a sync before `submit` blocks its caller: back-pressure instead of
/// unbounded memory.
pub const QUEUE_REQUESTS_MAX: usize = 4096;
