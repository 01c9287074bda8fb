//! openraft's storage conformance suite over the RocksDB engine (`hanse-consensus` runs
//! the same suite over `MemStore`).

use std::sync::Arc;

use hanse_storage_rocksdb::{Engine, EngineOptions};

#[test]
fn openraft_storage_suite_on_the_rocksdb_engine() {
    hanse_consensus::testing::storage_suite(|dir| {
        Arc::new(Engine::open(dir, EngineOptions::default()).expect("open the engine"))
    })
    .expect("openraft storage conformance suite");
}
