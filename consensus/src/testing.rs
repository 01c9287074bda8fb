//! openraft's storage conformance suite over the log store and state machine of any
//! [`Store`]: `MemStore` runs it in this crate's tests, the RocksDB engine in
//! `hanse-tests`.

use std::path::Path;
use std::sync::Arc;

use hanse_shard::{ReplicaDescriptor, ReplicaRole, ShardDescriptor};
use hanse_storage::{Batch, Store};
use openraft::testing::{StoreBuilder, Suite};

use crate::{LogStore, StateMachine, StorageError, TypeConfig};

const SHARD: u64 = 1;

/// Opens a fresh store in a directory.
type Open = dyn Fn(&Path) -> Arc<dyn Store> + Send + Sync;

struct Builder(Box<Open>);

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = (self.0)(dir.path());
        let replica = ReplicaDescriptor {
            node: 1,
            region: "test".into(),
            role: ReplicaRole::Voter,
        };
        let mut batch = Batch::default();
        batch.put_descriptor(&ShardDescriptor::whole_keyspace(SHARD, vec![replica]));
        store.write(batch, true).expect("store descriptor");
        let state_machine = StateMachine::open(SHARD, store.clone())?;
        Ok((dir, LogStore::new(SHARD, store), state_machine))
    }
}

/// Runs the whole suite on stores that `open` creates, one per test.
pub fn storage_suite(
    open: impl Fn(&Path) -> Arc<dyn Store> + Send + Sync + 'static,
) -> Result<(), StorageError> {
    Suite::test_all(Builder(Box::new(open)))
}
