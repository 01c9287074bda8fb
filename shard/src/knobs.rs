//! The limits every way into a shard agrees on. Each says why its value is what it is;
//! units come last in the names.

/// The largest key a user may store, in bytes. Keys also travel inside Raft entries and
/// descriptors (a split key is a descriptor's bound), where small keys keep the routing
/// table and split commands cheap. FoundationDB's limit is 10 kB, etcd's 1.5 MiB per
/// request; 4 KiB leaves room for any sane key.
pub const KEY_BYTES_MAX: usize = 4 * 1024;

/// The largest value a user may store, in bytes: one value travels in one Raft entry,
/// which must reach the followers before openraft gives up on the AppendEntries (the
/// transport gives a large one the time its size needs), and the whole entry must fit a
/// gRPC message.
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;
