//! openraft's storage conformance suite over the in-memory store (the RocksDB engine runs
//! the same suite in `hanse-tests`).

use std::sync::Arc;

use hanse_storage::MemStore;

#[test]
fn openraft_storage_suite() {
    hanse_consensus::testing::storage_suite(|dir| Arc::new(MemStore::new(dir)))
        .expect("openraft storage conformance suite");
}
