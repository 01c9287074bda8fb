//! How this node reaches other nodes: one HTTP/2 channel per address, made on first use
//! and shared by everything that calls another node (the Raft transport, admin calls,
//! forwarded write batches, read indexes). How a node connects (the timeout, the address
//! it connects from, TLS with its node certificate) is set here once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hanse_security::{ClientTls, Connector};
use tonic::transport::{Channel, Endpoint};

/// How connections to other nodes are made.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// How long a connection may take before the call fails (default
    /// [`CONNECT_TIMEOUT`](crate::knobs::CONNECT_TIMEOUT)).
    pub connect_timeout: Duration,
    /// The local address connections start from (default: the kernel's pick). A node
    /// binds its own, so that a proxy between nodes can tell who calls whom.
    pub source_ip: Option<IpAddr>,
    /// The node's certificate and the cluster CA; `None` where the cluster runs insecure.
    pub tls: Option<Arc<ClientTls>>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            connect_timeout: crate::knobs::CONNECT_TIMEOUT,
            source_ip: None,
            tls: None,
        }
    }
}

/// An address that is no URI.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bad node address {addr:?}: {detail}")]
pub struct BadAddress {
    pub addr: String,
    pub detail: String,
}

/// This node's channels to the others, by address.
#[derive(Debug, Default)]
pub struct PeerChannels {
    options: ChannelOptions,
    channels: Mutex<HashMap<String, Channel>>,
}

impl PeerChannels {
    pub fn new(options: ChannelOptions) -> PeerChannels {
        PeerChannels {
            options,
            channels: Mutex::default(),
        }
    }

    /// The channel to the node at `addr` (`HOST:PORT`), connected on first use and
    /// reconnected by tonic when the connection drops.
    pub fn channel(&self, addr: &str) -> Result<Channel, BadAddress> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(Connector::uri(addr)).map_err(|e| BadAddress {
            addr: addr.to_string(),
            detail: e.to_string(),
        })?;
        let connector = Connector::new(self.options.tls.clone(), self.options.connect_timeout)
            .from_ip(self.options.source_ip);
        let channel = endpoint.connect_with_connector_lazy(connector);
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_channel_per_address_and_bad_addresses_are_named() {
        let channels = PeerChannels::new(ChannelOptions::default());
        channels.channel("127.0.0.1:1").unwrap();
        channels.channel("127.0.0.1:1").unwrap();
        channels.channel("127.0.0.2:1").unwrap();
        assert_eq!(channels.channels.lock().unwrap().len(), 2);
        let bad = channels.channel("not an address").unwrap_err();
        assert!(bad.to_string().contains("not an address"), "{bad}");
    }
}
