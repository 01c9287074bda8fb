//! Every limit, timeout and interval of the node runtime, each defined once with why it
//! is what it is; units come last in the names. What an operator sets per node lives in
//! the config (`crate::config`); these are the fixed ones.

use std::time::Duration;

use hanse_consensus::knobs::{
    PEER_MESSAGE_BYTES_MAX, PROPOSALS_IN_FLIGHT_MAX, PROPOSER_MAILBOX_REQUESTS_MAX,
};
use hanse_shard::knobs::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// How often the node checks that each replica actor is alive (one that panicked leaves
/// no stop notice behind).
pub const SUPERVISION_INTERVAL: Duration = Duration::from_secs(1);

/// Batches of one shard awaiting their commit before new writes wait to be batched.
pub const BATCHES_IN_FLIGHT_MAX: usize = 2;

/// How long a read of the routing table waits out a busy meta shard.
pub const BUSY_WAIT: Duration = Duration::from_secs(3);

/// How often a node looks whether its certificate, key or CA file changed (a rotation):
/// cheap (three `stat` calls), and well inside the overlap an operator leaves between a
/// new certificate and the old one's expiry.
pub const CERTIFICATE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// How often a node reads the table of users and roles from its meta replica: a grant or
/// a revocation takes effect everywhere within about this long.
pub const GRANTS_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Logins a node checks at once: each hashes a password for about a third of a second
/// of one core, and guessing must not take the node's CPU.
pub const LOGINS_IN_FLIGHT_MAX: usize = 2;

/// How long a node waits for its meta replica to apply the index a token it does not
/// know was made at (a token used on another node the moment it was made): a few
/// heartbeats. A forged index costs its sender this wait and nothing else.
pub const TOKEN_CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// Compare-and-swaps one change of users and roles tries before it gives up: each failed
/// one means another change came first, which operators make by hand, rarely.
pub const GRANTS_CHANGE_ATTEMPTS_MAX: usize = 8;

/// The most requests a replica's mailbox or its in-flight bound may be configured to
/// hold: far more than a shard serves at once, far below what a semaphore or mailbox can
/// count (tokio's semaphore panics past `usize::MAX >> 3`).
pub const REPLICA_QUEUE_MAX: usize = 1 << 20;

/// The longest staleness a follower read may ask for: the wait for a follower to catch
/// up is bounded by it, and a client that accepts minutes-old data should say so with a
/// smaller figure, not make a node wait for days.
pub const MAX_STALENESS_MS_MAX: u32 = 60_000;

/// How far in the future a report's time may lie (clocks differ a little); a node that
/// reports itself alive for ever must not look so.
pub const REPORT_CLOCK_SKEW_MAX_MS: u64 = 60_000;

/// How long a stopping node lets open calls finish before it closes their connections:
/// a write under way gets to its answer, a client that never lets go holds nothing up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Backups a node streams at once: each stages a whole copy of its shard in the node's
/// temporary directory, so a handful of unread streams must not fill the disk.
pub const BACKUPS_IN_FLIGHT_MAX: usize = 2;

/// How long a backup waits for its reader to take the next chunk before it drops the
/// copy: a reader that went away must not hold a staged copy for ever.
pub const BACKUP_READER_STALL: Duration = Duration::from_secs(30);

/// Distinct client regions a shard counts requests by between two reports (one more
/// name holds the rest, [`OTHER_REGIONS`]): real deployments have a handful, and the
/// counts go into the meta shard's log every second.
pub const ORIGIN_REGIONS_MAX: usize = 16;

/// The name the requests of regions past [`ORIGIN_REGIONS_MAX`] are counted under.
pub const OTHER_REGIONS: &str = "(other)";

/// How often a node reports.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Every shard record a node leads is sent again this often, changed or not: a report
/// lost on its way (or a meta shard restored from a backup) costs at most this long.
pub const REPORT_REFRESH: Duration = Duration::from_secs(30);

/// A shard is measured again once the bytes deleted from it reach an eighth of its size
/// (writes only add to its last measurement, until it may cross the split size)...
pub const REMEASURE_FRACTION: u64 = 8;

/// ...or this much, whichever is more (measuring a small shard is cheap)...
pub const REMEASURE_BYTES_MIN: u64 = 16 << 10;

/// ...or, after any write at all, once the measurement is this old for every
/// [`REMEASURE_AFTER_BYTES`] the shard holds (at least this old): a pass costs in
/// proportion to the shard's size, and a trickle of writes into a few shards of tens of
/// MiB each, measured every 10 s, kept a node's CPU busy decompressing blocks.
pub const REMEASURE_AFTER: Duration = Duration::from_secs(10);

/// See [`REMEASURE_AFTER`].
pub const REMEASURE_AFTER_BYTES: u64 = 4 << 20;

/// How long a merge waits for each replica of the right shard to apply its preparation,
/// and for a leadership move it asks for: several elections' worth, on a loaded machine.
pub const MERGE_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a split waits for its new shard to elect a leader.
pub const NEW_SHARD_LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the wait for a new shard looks whether the node hosts it yet (its group is
/// started by the node actor once the split applied).
pub const NEW_SHARD_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Messages up to this size are accepted: a 16 MiB value plus its key and framing.
pub const KV_MESSAGE_BYTES_MAX: usize = 17 * 1024 * 1024;

/// Scans return at most this many pairs per call, whatever the client asks.
pub const SCAN_LIMIT_MAX: u32 = 10_000;

/// Bytes of keys and values in one scan page (one larger entry goes alone): a page must
/// fit a Kv message whatever the values, and this leaves room for the largest entry.
pub const SCAN_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A page stops before the entry that would pass [`SCAN_PAGE_BYTES_MAX`], so it holds
/// at most the bound or one entry, either of which fits a message.
const _: () = assert!(SCAN_PAGE_BYTES_MAX < KV_MESSAGE_BYTES_MAX);

/// How long a client should wait when the group has no quorum at the moment.
pub const RETRY_AFTER_MS: u32 = 100;

/// How long a follower may take to catch up with its leader before a backup copy.
pub const BACKUP_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of a backup copy per streamed chunk.
pub const BACKUP_CHUNK_BYTES: usize = 1024 * 1024;

/// How long a joining replica may take to catch up before AddNode gives up waiting.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a request waits for a shard's leader to become known before giving up.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest a WaitApplied call may ask this node to wait: a caller's own step timeout
/// is shorter; a request for more holds a handler for nothing.
pub const WAIT_APPLIED_MAX: Duration = Duration::from_secs(30);

/// How long one split, merge or replica move may take before the round gives it up.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(90);

/// A shard frozen for a merge this long without a change has lost its coordinator.
pub const MERGE_RESUME_AFTER: Duration = Duration::from_secs(30);

/// A node that reported within this long counts as live for new replicas.
pub const NODE_LIVE_MS: u64 = 10_000;

/// How often the meta leader looks at the routing table.
pub const BALANCE_INTERVAL: Duration = Duration::from_secs(2);

// The planner's simulator counts a tick as one balancing round.
const _: () = assert!(BALANCE_INTERVAL.as_millis() == hanse_planner::knobs::ROUND_MS as u128);

/// At most this many splits and merges per look: each takes a moment, and the table is
/// read afresh for the next.
pub const ACTIONS_PER_ROUND_MAX: usize = 4;

/// At most this many leadership moves or role changes per look: each pauses its shard's
/// writes briefly or changes its quorum.
pub const LEADER_MOVES_PER_ROUND_MAX: usize = 2;

/// Longest region name a request may carry; a longer one counts as untagged.
pub const REGION_NAME_BYTES_MAX: usize = 64;

/// Messages waiting in a replica actor's mailbox; more are answered `Busy`.
pub const REPLICA_MAILBOX_MAX: usize = 1024;

/// Requests a replica admitted and has not answered yet; more are answered `Busy`.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4096;

/// How long a leadership transfer may take in each of its steps.
pub const TRANSFER_STEP_TIMEOUT: Duration = Duration::from_secs(5);

// An admitted write never waits for room in its shard's proposer.
const _: () = assert!(REQUESTS_IN_FLIGHT_MAX <= PROPOSER_MAILBOX_REQUESTS_MAX);
// More batches in flight than proposals would only wait in the proposer's mailbox.
const _: () = assert!(BATCHES_IN_FLIGHT_MAX <= PROPOSALS_IN_FLIGHT_MAX);
// The largest key and value fit in a Kv message, and a Kv message forwarded to the
// leader fits in a message between nodes.
const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX < KV_MESSAGE_BYTES_MAX);
const _: () = assert!(KV_MESSAGE_BYTES_MAX <= PEER_MESSAGE_BYTES_MAX);

/// The longest heartbeat interval a node config may set (`raft.heartbeat_ms`): a leader
/// silent for longer is as good as dead to its clients anyway.
pub const HEARTBEAT_MS_MAX: u64 = 10_000;

/// The longest election timeout a node config may set (`raft.election_timeout_ms`):
/// failover would take minutes beyond it, and twice it must fit openraft's timers.
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 120_000;

/// The most runtime worker threads a node config may set (`runtime_threads`): far more
/// than any machine's cores, and few enough that a typo does not exhaust the thread limit.
pub const RUNTIME_THREADS_MAX: usize = 1024;

/// How long `Admin.Drain` keeps handing leaderships over when the caller does not say:
/// a few transfers per shard, well inside Kubernetes' default 30 s grace period.
pub const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// The longest a caller may ask a drain to go on.
pub const DRAIN_TIMEOUT_MAX: Duration = Duration::from_secs(300);
/// How long a drain waits between rounds of transfers.
pub const DRAIN_ROUND_PAUSE: Duration = Duration::from_millis(200);
/// How long the balancer waits for a node to say whether it was drained before moving a
/// leadership there.
pub const DRAIN_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
