//! The planner's limits and thresholds, each defined once, shared by the simulator the
//! planner learns in and the live planner that acts, so the two cannot drift apart.

/// Requests a shard's sample holds per report interval (a reservoir sample): enough that
/// the keys of a hot range show up, small enough to copy every second per shard.
pub const RESERVOIR_REQUESTS: usize = 128;

/// Distinct sampled keys a shard reports per interval (the most frequent of its sample),
/// for split points; a report carries them to the meta shard every second.
pub const SAMPLED_KEYS: usize = 32;

const _: () = assert!(SAMPLED_KEYS <= RESERVOIR_REQUESTS);
