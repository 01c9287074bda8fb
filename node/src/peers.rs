//! This node's clients of the other nodes' Kv and Admin services (forwarded batches, read
//! indexes for follower reads, admin steps run on a shard's leader, reports to the meta
//! shard), over the node's one set of peer channels (`hanse_consensus::peer_channels`,
//! which the Raft transport shares). Kv requests are tagged with this node's region, so
//! the latency matrix applies to them.

use std::sync::Arc;

use hanse_consensus::knobs::PEER_MESSAGE_BYTES_MAX;
use hanse_consensus::peer_channels::PeerChannels;
use hanse_proto::v1::admin_client::AdminClient;
use hanse_proto::v1::kv_client::KvClient;
use tonic::Request;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

pub(crate) struct Peers {
    channels: Arc<PeerChannels>,
    region: Option<MetadataValue<Ascii>>,
}

impl Peers {
    pub(crate) fn new(channels: Arc<PeerChannels>, region: &str) -> Peers {
        Peers {
            channels,
            region: region.parse().ok(),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        self.channels
            .channel(addr)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    /// The Kv client of the node at `addr`.
    pub(crate) fn kv(&self, addr: &str) -> Result<KvClient<Channel>, Status> {
        Ok(KvClient::new(self.channel(addr)?)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }

    /// The Admin client of the node at `addr`.
    pub(crate) fn admin(&self, addr: &str) -> Result<AdminClient<Channel>, Status> {
        Ok(AdminClient::new(self.channel(addr)?)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }

    /// `message` as a request from this node's region.
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(region) = &self.region {
            request
                .metadata_mut()
                .insert(hanse_proto::REGION_HEADER, region.clone());
        }
        request
    }
}

/// A failed call to the node at `addr` as its caller should hear of it: a node that could
/// not be reached is named.
pub(crate) fn unreachable(addr: &str) -> impl Fn(Status) -> Status + '_ {
    move |status| match status.code() {
        tonic::Code::Unavailable => {
            Status::unavailable(format!("cannot reach node at {addr}: {}", status.message()))
        }
        _ => status,
    }
}
