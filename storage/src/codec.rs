//! Key codec: how each column family lays out its keys.
//!
//! | column family | key | why |
//! | --- | --- | --- |
//! | `data` | the user key, unchanged; keys from byte `0xff` on are the system keyspace (`hanse_shard::range`: the meta shard's routing table and node directory), never user keys | RocksDB's bytewise order is the order users expect for scans, and because every shard of the node shares one keyspace, a split or merge moves no data |
//! | `raft_log` | shard id (u64, big-endian) ‖ log index (u64, big-endian) | big-endian integers sort numerically, so one shard's log is one contiguous, index-ordered range |
//! | `raft_state` | shard id (u64, big-endian) ‖ one [`StateKey`] byte | all hard state of a shard sits together and can be deleted as one range |
//! | `meta` | `shard/` ‖ shard id (u64, big-endian) | descriptors of the node's replicas, listed in id order by one prefix scan |
//!
//! Values are encoded with postcard (compact serde). The data directory's `HANSE` marker
//! file names the format version of all of this ((`hanse_storage_rocksdb::FORMAT_VERSION`)).

use hanse_shard::ShardId;

/// Encodes the `raft_log` key of entry `index` of shard `shard`.
pub fn log_key(shard: ShardId, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&shard.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The kinds of per-shard hard state kept in `raft_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum StateKey {
    /// The last vote this replica granted or cast.
    Vote = 1,
    // 2 held the last log id known to be committed, no longer kept: saving it cost a
    // RocksDB write on every commit, and a restarted replica learns the commit index from
    // its leader's next message.
    /// The last log id removed from the log by compaction.
    LastPurged = 3,
    /// The last log id applied to the state machine.
    Applied = 4,
    /// The last membership applied to the state machine.
    Membership = 5,
    /// The metadata of the shard's current snapshot.
    SnapshotMeta = 6,
    /// A received snapshot whose installation has begun but not finished; redone at open.
    InstallingSnapshot = 7,
    /// The log position below which this replica never votes for a candidate (a replica
    /// created empty by its leader: see `hanse_consensus::AddedBy`).
    VoteFloor = 8,
}

/// Encodes the `raft_state` key of `kind` for shard `shard`.
pub fn state_key(shard: ShardId, kind: StateKey) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..8].copy_from_slice(&shard.to_be_bytes());
    key[8] = kind as u8;
    key
}

/// The first key past every `raft_state` and `raft_log` key of `shard`, for range deletes.
pub fn shard_prefix_end(shard: ShardId) -> Vec<u8> {
    match shard.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 17],
    }
}

/// The `raft_state`/`raft_log` prefix of `shard`.
pub fn shard_prefix(shard: ShardId) -> [u8; 8] {
    shard.to_be_bytes()
}

const SHARD_DESCRIPTOR_PREFIX: &[u8] = b"shard/";

/// The `meta` key of the id of the node this data directory belongs to.
pub const NODE_ID_KEY: &[u8] = b"node/id";

/// The `meta` key of this node's shard-id sequence (see `Engine::allocate_shard_id`).
pub const SHARD_SEQUENCE_KEY: &[u8] = b"sequence/shard-id";

/// Encodes the `meta` key of the descriptor of `shard`.
pub fn descriptor_key(shard: ShardId) -> Vec<u8> {
    let mut key = Vec::with_capacity(SHARD_DESCRIPTOR_PREFIX.len() + 8);
    key.extend_from_slice(SHARD_DESCRIPTOR_PREFIX);
    key.extend_from_slice(&shard.to_be_bytes());
    key
}

/// The range `[start, end)` of all descriptor keys in `meta`.
pub fn descriptor_key_range() -> (Vec<u8>, Vec<u8>) {
    let start = SHARD_DESCRIPTOR_PREFIX.to_vec();
    let mut end = start.clone();
    *end.last_mut().expect("prefix is not empty") += 1;
    (start, end)
}

/// Encodes a user key for the `data` column family: the key itself (see the module docs).
pub fn data_key(user_key: &[u8]) -> &[u8] {
    user_key
}

/// Serializes a stored value.
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("postcard serialization into a Vec cannot fail")
}

/// Deserializes a stored value; `what` names it in the error.
pub fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> crate::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| crate::Error::Decode {
        what,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn log_keys_sort_like_shard_then_index(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            let (ka, kb) = (log_key(a.0, a.1), log_key(b.0, b.1));
            prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
        }

        #[test]
        fn state_keys_stay_inside_their_shard_prefix(shard in 0u64..u64::MAX, other in any::<u64>()) {
            let key = state_key(shard, StateKey::SnapshotMeta);
            prop_assert!(key.as_slice() >= shard_prefix(shard).as_slice());
            prop_assert!(key.as_slice() < shard_prefix_end(shard).as_slice());
            let log = log_key(other, 7);
            let inside = log.as_slice() >= shard_prefix(shard).as_slice()
                && log.as_slice() < shard_prefix_end(shard).as_slice();
            prop_assert_eq!(inside, other == shard);
        }

        #[test]
        fn data_keys_preserve_user_order(a in proptest::collection::vec(any::<u8>(), 0..32),
                                         b in proptest::collection::vec(any::<u8>(), 0..32)) {
            prop_assert_eq!(a.cmp(&b), data_key(&a).cmp(data_key(&b)));
        }

        #[test]
        fn descriptor_keys_sort_by_id_inside_their_range(a in any::<u64>(), b in any::<u64>()) {
            let (start, end) = descriptor_key_range();
            let (ka, kb) = (descriptor_key(a), descriptor_key(b));
            prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
            prop_assert!(ka >= start && ka < end);
        }
    }

    #[test]
    fn last_shard_prefix_end_is_above_every_key_of_it() {
        let end = shard_prefix_end(u64::MAX);
        assert!(log_key(u64::MAX, u64::MAX).as_slice() < end.as_slice());
    }
}
