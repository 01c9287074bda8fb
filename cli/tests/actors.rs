//! The node's actors in one process over real gRPC: a replica whose Raft group dies is
//! restarted from storage by its node, a shard past its request bound answers
//! `ServerBusy` at once and applies nothing for the requests it refused, and the ingest
//! actor batches concurrent writes without losing or reordering any.

mod common;

use std::net::{SocketAddr, TcpListener};

use hanse_client::proto::admin_client::AdminClient;
use hanse_client::proto::kv_client::KvClient;
use hanse_client::proto::{self, request_error::Kind};
use hanse_client::{CertsDir, Client, ClientOptions, ClientTls, Identity};
use hanse_node::config::{IngestConfig, LimitsConfig, NodeConfig, PeerConfig};
use std::sync::Arc;

/// The certificates of the one-node cluster in `dir`, made when missing.
fn certs(dir: &std::path::Path, addr: SocketAddr) -> CertsDir {
    let certs = CertsDir::new(dir.join("certs"));
    hanse_security::issue::create_local_cluster(&certs, &[(1, addr.ip().to_string())], &["root"])
        .unwrap();
    certs
}

/// What the tests connect as: `root`, with TLS.
fn root(dir: &std::path::Path) -> Arc<ClientTls> {
    let root = Identity::user("root").unwrap();
    ClientTls::load(CertsDir::new(dir.join("certs")).files(&root), root).unwrap()
}

fn options(dir: &std::path::Path) -> ClientOptions {
    ClientOptions {
        tls: Some(root(dir)),
        ..ClientOptions::default()
    }
}

fn single_node(dir: &std::path::Path, ip_last: u8, limits: LimitsConfig) -> NodeConfig {
    let addr: SocketAddr = TcpListener::bind(SocketAddr::from(([127, 0, 0, ip_last], 0)))
        .unwrap()
        .local_addr()
        .unwrap();
    NodeConfig {
        certs_dir: Some(certs(dir, addr).path().to_path_buf()),
        bootstrap: true,
        initial_peers: vec![PeerConfig {
            id: 1,
            addr: addr.to_string(),
            region: "eu-hamburg".into(),
        }],
        limits,
        ..NodeConfig::new(1, "eu-hamburg", addr, dir.join("n1"))
    }
}

#[test]
fn a_replica_whose_raft_group_dies_is_restarted_from_storage() {
    hanse_node::server::system(None).block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = single_node(dir.path(), 61, LimitsConfig::default());
        let endpoint = config.listen_addr.to_string();
        let node = hanse_node::server::start(config).await.unwrap();
        let client = Client::new(&[endpoint], options(dir.path())).unwrap();
        client.put(b"before", b"1").await.unwrap();
        assert_eq!(node.replica_restarts(), 0);

        assert!(node.kill_raft_group(1).await);
        // The client retries through the outage until the restarted replica leads again.
        client.put(b"after", b"2").await.unwrap();
        assert_eq!(client.get(b"before").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(client.get(b"after").await.unwrap(), Some(b"2".to_vec()));
        assert_eq!(node.replica_restarts(), 1);
        node.stop().await;
    });
}

#[test]
fn a_shard_past_its_request_bound_answers_server_busy_and_applies_nothing() {
    hanse_node::server::system(None).block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let limits = LimitsConfig {
            replica_mailbox_max: 1,
            replica_requests_in_flight_max: 1,
            ..LimitsConfig::default()
        };
        let config = NodeConfig {
            // Each write on its own, so the replica's bound is what refuses.
            ingest: IngestConfig {
                enabled: false,
                ..IngestConfig::default()
            },
            ..single_node(dir.path(), 62, limits)
        };
        let endpoint = config.listen_addr.to_string();
        let node = hanse_node::server::start(config).await.unwrap();
        let kv = KvClient::new(hanse_client::connect(&endpoint, Some(root(dir.path()))).unwrap());
        // Wait until the shard serves.
        let client = Client::new(&[node.local_addr.to_string()], options(dir.path())).unwrap();
        client.put(b"ready", b"1").await.unwrap();

        // 64 durable writes at once against room for one: most are refused at the door.
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..64 {
            let mut kv = kv.clone();
            writes.spawn(async move {
                let key = format!("burst-{i:02}").into_bytes();
                let request = proto::PutRequest {
                    route: None,
                    key: key.clone(),
                    value: b"v".to_vec(),
                };
                let answer = kv.put(request).await.unwrap().into_inner();
                (key, answer.error.and_then(|e| e.kind))
            });
        }
        let (mut applied, mut refused) = (Vec::new(), Vec::new());
        while let Some(outcome) = writes.join_next().await {
            match outcome.unwrap() {
                (key, None) => applied.push(key),
                (key, Some(Kind::ServerBusy(busy))) => {
                    assert!(busy.retry_after_ms > 0);
                    refused.push(key);
                }
                (key, Some(other)) => panic!("{key:?}: unexpected {other:?}"),
            }
        }
        assert!(
            !applied.is_empty(),
            "one write at a time still gets through"
        );
        assert!(!refused.is_empty(), "a full replica refuses");
        for key in &applied {
            assert_eq!(client.get(key).await.unwrap(), Some(b"v".to_vec()));
        }
        for key in &refused {
            assert_eq!(client.get(key).await.unwrap(), None, "refused, not applied");
        }
        node.stop().await;
    });
}

#[test]
fn the_ingest_actor_batches_concurrent_writes_and_keeps_each_writers_order() {
    hanse_node::server::system(None).block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = single_node(dir.path(), 63, LimitsConfig::default());
        let endpoint = config.listen_addr.to_string();
        let node = hanse_node::server::start(config).await.unwrap();
        let client = std::sync::Arc::new(
            Client::new(std::slice::from_ref(&endpoint), options(dir.path())).unwrap(),
        );
        client.put(b"ready", b"1").await.unwrap();
        let mut admin =
            AdminClient::new(hanse_client::connect(&endpoint, Some(root(dir.path()))).unwrap());
        let mut ingested = async || {
            let status = admin.status(proto::StatusRequest {}).await.unwrap();
            status.into_inner().ingest.expect("a Hamburg node batches")
        };
        let before = ingested().await;

        // 32 writers, each putting 1, 2, ..., 25 to its own key in turn, and a unique key
        // every step.
        const WRITERS: usize = 32;
        const STEPS: usize = 25;
        common::write_in_turn(client.clone(), WRITERS, STEPS, true).await;
        for w in 0..WRITERS {
            let own = client.get(format!("own-{w:02}").as_bytes()).await.unwrap();
            assert_eq!(own, Some(STEPS.to_string().into_bytes()), "writer {w}");
            for step in 1..=STEPS {
                let unique = format!("step-{w:02}-{step:02}");
                let value = client.get(unique.as_bytes()).await.unwrap();
                assert_eq!(value, Some(step.to_string().into_bytes()), "{unique}");
            }
        }

        let after = ingested().await;
        let writes = after.writes - before.writes;
        assert_eq!(writes as usize, 2 * WRITERS * STEPS);
        assert!(
            after.largest_batch > 1 && after.batches - before.batches < writes,
            "concurrent writes share entries: {after:?}"
        );
        assert_eq!(after.refused_busy, 0);
        node.stop().await;
    });
}
