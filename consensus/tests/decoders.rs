//! What other nodes and files hand a node, fuzzed: arbitrary bytes as a Raft message, a
//! log entry, a shard command and a shard snapshot file are refused with an error, never
//! a panic. `PROPTEST_CASES` sets the cases (256 in the suite; more with
//! `PROPTEST_CASES=100000 cargo test -p hanse-consensus --test decoders`).

use hanse_consensus::TypeConfig;
use hanse_consensus::knobs::SNAPSHOT_SST_FILES_MAX;
use hanse_shard::{NodeId, ShardRequest, ShardResponse};
use hanse_storage::codec;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use proptest::prelude::*;

proptest! {
    #[test]
    fn raft_messages_log_entries_and_commands_decode_or_are_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        // Each either decodes or is an error; none panics or allocates without bound.
        let _ = codec::decode::<AppendEntriesRequest<TypeConfig>>("append", &bytes);
        let _ = codec::decode::<VoteRequest<NodeId>>("vote", &bytes);
        let _ = codec::decode::<InstallSnapshotRequest<TypeConfig>>("snapshot", &bytes);
        let _ = codec::decode::<openraft::Entry<TypeConfig>>("log entry", &bytes);
        let _ = codec::decode::<ShardRequest>("command", &bytes);
        let _ = codec::decode::<ShardResponse>("response", &bytes);
    }

    #[test]
    fn a_snapshot_file_of_any_bytes_unpacks_or_is_refused(
        body in proptest::collection::vec(any::<u8>(), 0..1024),
        magic in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let staging = dir.path().join("staging");
        std::fs::create_dir(&staging).unwrap();
        // Half the files start as a real snapshot does, so the header's decoder is reached.
        let mut contents = if magic { b"HNSNAP01".to_vec() } else { Vec::new() };
        contents.extend_from_slice(&body);
        std::fs::write(&path, &contents).unwrap();
        if let Ok((_, files)) = hanse_consensus::unpack_shard_file(&path, &staging) {
            prop_assert!(files.len() <= SNAPSHOT_SST_FILES_MAX);
        }
    }
}

#[test]
fn a_snapshot_listing_more_files_than_the_limit_is_refused_before_any_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.snap");
    let header = codec::encode(&(
        hanse_shard::ShardDescriptor::whole_keyspace(1, Vec::new()),
        vec![0u64; SNAPSHOT_SST_FILES_MAX + 1],
    ));
    let mut contents = b"HNSNAP01".to_vec();
    contents.extend_from_slice(&(header.len() as u64).to_be_bytes());
    contents.extend_from_slice(&header);
    std::fs::write(&path, contents).unwrap();
    let refused = hanse_consensus::unpack_shard_file(&path, dir.path()).unwrap_err();
    assert!(refused.to_string().contains("over the limit"), "{refused}");
    let made = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(made, 1, "only the snapshot file itself");
}
