//! This node's clients of other nodes' Kv services (follower reads ask leaders for read
//! indexes; ingest nodes forward batches to leaders): one lazily connected channel per
//! node, requests tagged with this node's region so the latency matrix applies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use hanse_proto::v1::kv_client::KvClient;
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// How long a connection to another node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) struct Peers {
    source_ip: Option<IpAddr>,
    region: Option<MetadataValue<Ascii>>,
    kv: Mutex<HashMap<String, KvClient<Channel>>>,
}

impl Peers {
    pub(crate) fn new(source_ip: Option<IpAddr>, region: &str) -> Peers {
        Peers {
            source_ip,
            region: region.parse().ok(),
            kv: Mutex::default(),
        }
    }

    /// The Kv client of the node at `addr` (none for an address that is no URI).
    pub(crate) fn kv(&self, addr: &str) -> Option<KvClient<Channel>> {
        let mut kv = self.kv.lock().expect("peers lock");
        if let Some(client) = kv.get(addr) {
            return Some(client.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(CONNECT_TIMEOUT)
            .local_address(self.source_ip)
            .connect_lazy();
        let client = KvClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        kv.insert(addr.to_string(), client.clone());
        Some(client)
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
