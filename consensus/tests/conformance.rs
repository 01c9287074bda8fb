//! openraft's storage conformance suite against the log store and state machine over the
//! in-memory store (the RocksDB engine runs the same suite in `hanse-tests`).

use hanse_storage::Store;
use std::sync::Arc;

use hanse_consensus::{LogStore, StateMachine, StorageError, TypeConfig};
use hanse_shard::{ReplicaDescriptor, ReplicaRole, ShardDescriptor};
use hanse_storage::{Batch, MemStore};
use openraft::testing::{StoreBuilder, Suite};

const SHARD: u64 = 1;

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for MemBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let engine = Arc::new(MemStore::new(dir.path()));
        let replica = ReplicaDescriptor {
            node: 1,
            region: "test".into(),
            role: ReplicaRole::Voter,
        };
        let mut batch = Batch::default();
        batch.put_descriptor(&ShardDescriptor::whole_keyspace(SHARD, vec![replica]));
        engine.write(batch, true).expect("store descriptor");
        let state_machine = StateMachine::open(SHARD, engine.clone())?;
        Ok((dir, LogStore::new(SHARD, engine), state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(MemBuilder).expect("openraft storage conformance suite");
}
