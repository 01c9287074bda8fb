//! Every limit, timeout and threshold of the consensus layer, each defined once with why
//! it is what it is; units come last in the names. Tunables a node sets per run live in
//! [`crate::GroupOptions`], [`crate::ProposerOptions`] and
//! [`crate::peer_channels::ChannelOptions`], whose defaults are the constants here.

use std::time::Duration;

/// How often a merge that waits for its source's replica on this node says so (and looks
/// again whether that replica is still here).
pub const MERGE_WAIT_WARNING: Duration = Duration::from_secs(5);

/// How long a merge waits for its source's replica on this node before the target's
/// replica stops with an error: the source's group may have lost its quorum for good,
/// and an operator is better told than left with a replica stuck in apply. Catching up
/// from a snapshot takes well under this.
pub const MERGE_SOURCE_WAIT_MAX: Duration = Duration::from_secs(600);

/// The size of one snapshot chunk on the wire: like an AppendEntries, each chunk must
/// arrive within its timeout on a loaded machine, so chunks are small...
pub const SNAPSHOT_CHUNK_BYTES: u64 = 512 * 1024;

/// ...and have time to arrive.
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long adding a replica waits for it to catch up with the log.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long adding a replica waits for the snapshot (and log purge) it starts from.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// SST files of a snapshot are cut at this size so none needs to fit in memory at once.
pub const SST_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The most SST files one snapshot may list: a 4 TiB shard in files of
/// [`SST_FILE_BYTES_MAX`]; a forged header listing millions of empty files must not fill
/// the receiver's disk with them.
pub const SNAPSHOT_SST_FILES_MAX: usize = 65_536;

/// An AppendEntries with at least this many bytes of entries is sent on a task of its
/// own, which openraft's timeout of each attempt (one heartbeat interval) does not cancel:
/// on a loaded machine a large entry can take longer than that to arrive and be written,
/// and if every attempt were cancelled and sent anew it would never get through (while
/// the copies queued up behind it starved the other shards' heartbeats). A retry of the
/// same request waits for that send instead, and a heartbeat sent meanwhile keeps the
/// follower from starting an election.
pub const LARGE_APPEND_BYTES: usize = 64 * 1024;

/// The most entry bytes one AppendEntries carries (at least one entry is always sent).
/// openraft bounds a message by entry count only, and a message must arrive within one
/// heartbeat interval: with large values and batched proposals, 300 entries could be
/// tens of megabytes that never arrive in time, so replication would stall for good.
pub const APPEND_BYTES_MAX: usize = 512 * 1024;

/// The largest message one node sends another: a batch of Raft messages (the transport
/// keeps its batches well under this), a forwarded batch of writes, a snapshot chunk.
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How long a connection to a peer may take before the call fails (and is retried by
/// whoever made it): long enough for a loaded machine, short enough that a dead node is
/// noticed within a heartbeat or two of the caller's patience.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Requests (or groups of them) a shard's proposer holds while a proposal is under way;
/// senders wait when it is full. The node admits no more requests per shard than this
/// (`hanse-node`'s knobs assert it), so an admitted request never waits for room.
pub const PROPOSER_MAILBOX_REQUESTS_MAX: usize = 4096;

/// Requests in one proposal (one log entry).
pub const PROPOSAL_REQUESTS_MAX: usize = 512;

/// Bytes of keys and values in one proposal (one that is larger on its own goes alone):
/// an entry must reach the followers within openraft's AppendEntries timeout.
pub const PROPOSAL_BYTES_MAX: usize = 1024 * 1024;

/// Proposals waiting for commit at once: deep enough to keep the log writer busy,
/// shallow enough that waiting requests form large proposals.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 2;

const _: () = assert!(PROPOSAL_REQUESTS_MAX <= PROPOSER_MAILBOX_REQUESTS_MAX);
// An AppendEntries's entries, a proposal (sent alone when larger than that budget) and a
// snapshot chunk each fit in one message to a peer.
const _: () = assert!(
    PROPOSAL_BYTES_MAX < PEER_MESSAGE_BYTES_MAX
        && ((APPEND_BYTES_MAX as u64) < PEER_MESSAGE_BYTES_MAX as u64)
        && SNAPSHOT_CHUNK_BYTES < PEER_MESSAGE_BYTES_MAX as u64
);

/// The largest term or log index a message from another node may carry: no real group
/// gets near it (a new term or entry every microsecond for 146,000 years), while a forged
/// one near `u64::MAX` would overflow where openraft adds to it.
pub const TERM_AND_INDEX_MAX: u64 = 1 << 62;

/// The longest round trip a latency matrix may inject between two regions: far above
/// any real one (the Earth's far side is about 300 ms away), and small enough that the
/// Raft timings derived from it cannot overflow.
pub const ROUND_TRIP_MAX: Duration = Duration::from_secs(60);

/// The share of the followers' lease (the time they refuse votes after hearing from their
/// leader, openraft's longest election timeout) a leader counts as its own lease for
/// reads (see [`crate::lease`]). Monotonic clocks of sane machines differ in rate by far
/// less than 1 %; the rest of the margin covers a follower whose clock runs fast under
/// load, at a cost of nothing but a read-index round now and then.
pub const LEASE_FRACTION: f64 = 0.8;

/// The measurements of a peer's round trip the transport keeps the fastest of (see
/// [`crate::round_trip`]): heartbeats go out every 100 ms per shard, so a window always
/// holds a few calls that met no log write ahead of them.
pub const ROUND_TRIP_WINDOW: Duration = Duration::from_secs(2);

/// How far one window's fastest round trip moves the estimate: a quarter, so a path that
/// changes shows in about ten seconds and one odd window moves it little.
pub const ROUND_TRIP_SMOOTHING: f64 = 0.25;

/// A peer not called for this long is left out of the round trips a node reports: the
/// estimate may no longer hold (the peer is down, or moved).
pub const ROUND_TRIP_STALE_AFTER: Duration = Duration::from_secs(30);

/// A replica that took this many bytes of ingests since its last snapshot builds one and
/// purges its log up to it: an ingest's pairs are in the log as well as in the data, and
/// entries that large would otherwise stay there for `snapshot_after_entries` entries.
pub const INGESTED_LOG_BYTES_MAX: u64 = 64 * 1024 * 1024;
