//! hanse-client: the gRPC SDK for Hanse. It depends on the protobuf contract and tonic
//! only: no RocksDB, no Torch.
//!
//! Today it exposes the generated `hanse.v1` client; the routing cache, retries on typed
//! routing errors and write batching arrive with the cluster.

pub use hanse_proto::v1 as proto;
pub use hanse_proto::v1::kv_client::KvClient;
pub use tonic::transport::Channel;
