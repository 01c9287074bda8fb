//! The RocksDB engine's limits and intervals, each defined once with why it is what it
//! is; units come last in the names.

use std::time::Duration;

/// How often the mark is saved when it moved: often enough that a WAL damaged by more
/// than about this much is caught, seldom enough to cost nothing (one small fsync).
pub const MARK_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Queue depth before `submit` blocks its caller: back-pressure instead of unbounded memory.
pub const QUEUE_REQUESTS_MAX: usize = 4096;

/// One group commit (one write and one sync) never exceeds these, so one huge burst
/// cannot stall every shard's sync: this many requests...
pub const GROUP_REQUESTS_MAX: usize = 1024;

/// ...and this many bytes.
pub const GROUP_BYTES_MAX: usize = 64 * 1024 * 1024;

const _: () = assert!(GROUP_REQUESTS_MAX <= QUEUE_REQUESTS_MAX);
