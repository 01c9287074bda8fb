//! What the node's in-process tests share: a one-node cluster's configuration on its
//! own loopback address, secure, with a CA and certificates for the node and `root`.

// Each test file uses its own part of these helpers.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use hanse_client::{CertsDir, ClientTls, Identity};
use hanse_node::config::{NodeConfig, PeerConfig};

/// Node 1 alone on `ip`, bootstrapping, its data and certificates in `dir`; the
/// certificates also for `users` (besides `root`).
pub fn single_node(dir: &Path, ip: [u8; 4], users: &[&str]) -> (NodeConfig, CertsDir) {
    let addr: SocketAddr = TcpListener::bind(SocketAddr::from((ip, 0)))
        .unwrap()
        .local_addr()
        .unwrap();
    let certs = CertsDir::new(dir.join("certs"));
    let users: Vec<&str> = ["root"].iter().chain(users).copied().collect();
    hanse_security::issue::create_local_cluster(&certs, &[(1, addr.ip().to_string())], &users)
        .unwrap();
    let config = NodeConfig {
        certs_dir: Some(certs.path().to_path_buf()),
        bootstrap: true,
        initial_peers: vec![PeerConfig {
            id: 1,
            addr: addr.to_string(),
            region: "eu-hamburg".into(),
        }],
        ..NodeConfig::new(1, "eu-hamburg", addr, dir.join("n1"))
    };
    (config, certs)
}

/// The TLS settings of `identity` from `certs`.
pub fn tls(certs: &CertsDir, identity: Identity) -> Arc<ClientTls> {
    ClientTls::load(certs.files(&identity), identity).unwrap()
}
