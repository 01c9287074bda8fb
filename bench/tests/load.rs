//! The load generator against a real three-node cluster (in-process nodes, real gRPC on
//! loopback): every operation is counted and timed.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use hanse::config::{NodeConfig, PeerConfig};
use hanse_bench::load::{Distribution, LoadSpec, Workload, preload, run, run_at_rate};
use hanse_client::{Client, ClientOptions};

#[test]
fn every_operation_is_counted_and_timed() {
    hanse::server::system().block_on(counted_and_timed());
}

async fn counted_and_timed() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = (1..=3u8)
        .map(|i| {
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 50 + i], 0)))
                .unwrap()
                .local_addr()
                .unwrap()
        })
        .collect();
    let peers: Vec<PeerConfig> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| PeerConfig {
            id: i as u64 + 1,
            addr: a.to_string(),
            region: "test".into(),
        })
        .collect();
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let config = NodeConfig {
            node_id: i as u64 + 1,
            region: "test".into(),
            listen_addr: *addr,
            advertise_addr: None,
            data_dir: dir.path().join(format!("n{i}")),
            bootstrap: i == 0,
            initial_peers: peers.clone(),
            sync: true,
            limits: Default::default(),
            balance: Default::default(),
            latency: String::new(),
            raft: Default::default(),
            ingest_region: "eu-hamburg".into(),
            ingest: Default::default(),
        };
        nodes.push(hanse::server::start(config).await.unwrap());
    }
    let endpoints: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let client = Arc::new(Client::new(&endpoints, ClientOptions::default()).unwrap());
    let spec = LoadSpec {
        workload: Workload::Mixed,
        clients: 4,
        ops: 300,
        duration: Duration::from_secs(60),
        key_count: 50,
        value_size: 64,
        seed: 7,
        max_staleness: Duration::ZERO,
        distribution: Distribution::Uniform,
    };
    preload(&client, &spec, |_| {}).await.unwrap();
    assert_eq!(
        client.get(b"load000000000049").await.unwrap(),
        Some(vec![b'v'; 64])
    );
    let report = run(client.clone(), &spec, None, |_| {}).await;
    assert_eq!(report.ops, 300);
    assert_eq!(report.errors, 0);
    assert_eq!(report.latency_us.len(), 300);
    assert!(report.latency_us.value_at_quantile(0.5) > 0);
    assert!(report.failover.is_none(), "no fault, no failover figure");

    // YCSB E on Zipfian keys: scans from the loaded keys, inserts after them.
    let scans = LoadSpec {
        workload: Workload::YcsbE,
        distribution: Distribution::Zipfian,
        ops: 200,
        ..spec.clone()
    };
    let report = run(client.clone(), &scans, None, |_| {}).await;
    assert_eq!((report.ops, report.errors), (200, 0));
    // An open loop: operations go out on schedule, 100 at 500 per second.
    let paced = LoadSpec {
        workload: Workload::Mixed,
        ops: 100,
        ..spec.clone()
    };
    let report = run_at_rate(client.clone(), &paced, 500.0, |_| {}).await;
    assert_eq!((report.ops, report.errors), (100, 0));
    assert_eq!(report.latency_us.len(), 100);
    assert!(
        report.elapsed >= Duration::from_millis(198),
        "the last operation is due 99/500 s in: {:?}",
        report.elapsed
    );
    // About 5 % were inserts, the first of them the key after the loaded ones.
    assert_eq!(
        client.get(b"load000000000050").await.unwrap(),
        Some(vec![b'x'; 64])
    );
    for node in nodes {
        node.stop().await;
    }
}
