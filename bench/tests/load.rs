//! The load generator against a real three-node cluster (in-process nodes, real gRPC on
//! loopback): every operation is counted and timed.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use hanse_bench::load::{Distribution, LoadSpec, Target, Workload, preload, run, run_at_rate};
use hanse_client::{CertsDir, Client, ClientOptions, ClientTls, Identity};
use hanse_node::config::{NodeConfig, PeerConfig};

#[test]
fn every_operation_is_counted_and_timed() {
    hanse_node::server::system(None).block_on(counted_and_timed());
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
    let certs = CertsDir::new(dir.path().join("certs"));
    let hosts: Vec<(u64, String)> = (1..)
        .zip(addrs.iter().map(|a| a.ip().to_string()))
        .collect();
    hanse_security::issue::create_local_cluster(&certs, &hosts, &["root"]).unwrap();
    let root = Identity::user("root").unwrap();
    let tls = ClientTls::load(certs.files(&root), root).unwrap();
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let data_dir = dir.path().join(format!("n{i}"));
        let config = NodeConfig {
            certs_dir: Some(certs.path().to_path_buf()),
            bootstrap: i == 0,
            initial_peers: peers.clone(),
            ..NodeConfig::new(i as u64 + 1, "test", *addr, data_dir)
        };
        nodes.push(hanse_node::server::start(config).await.unwrap());
    }
    let endpoints: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let options = ClientOptions {
        tls: Some(tls),
        ..ClientOptions::default()
    };
    let client = Arc::new(Client::new(&endpoints, options).unwrap());
    let target = Target::Cluster(client.clone());
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
    preload(&target, &spec, |_| {}).await.unwrap();
    assert_eq!(
        client.get(b"load000000000049").await.unwrap(),
        Some(vec![b'v'; 64])
    );
    let report = run(target.clone(), &spec, None, |_| {}).await;
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
    let report = run(target.clone(), &scans, None, |_| {}).await;
    assert_eq!((report.ops, report.errors), (200, 0));
    // An open loop: operations go out on schedule, 100 at 500 per second.
    let paced = LoadSpec {
        workload: Workload::Mixed,
        ops: 100,
        ..spec.clone()
    };
    let report = run_at_rate(target.clone(), &paced, 500.0, |_| {}).await;
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

#[test]
fn the_embedded_mode_and_raw_rocksdb_run_the_same_workloads() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let embedded = Arc::new(hanse::Db::open(dirs.0.path(), hanse::Options::default()).unwrap());
    let mut options = hanse_storage_rocksdb::rocksdb_options();
    options.create_if_missing(true);
    let raw = Arc::new(rocksdb::DB::open(&options, dirs.1.path()).unwrap());
    let spec = LoadSpec {
        workload: Workload::YcsbB,
        clients: 4,
        ops: 200,
        duration: Duration::from_secs(60),
        key_count: 100,
        value_size: 32,
        seed: 9,
        max_staleness: Duration::ZERO,
        distribution: Distribution::Zipfian,
    };
    for target in [
        Target::Embedded(embedded.clone()),
        Target::RocksDb(raw.clone()),
    ] {
        runtime.block_on(async {
            preload(&target, &spec, |_| {}).await.unwrap();
            for workload in [Workload::YcsbB, Workload::YcsbE, Workload::Hot] {
                let spec = LoadSpec {
                    workload,
                    ..spec.clone()
                };
                let report = run(target.clone(), &spec, None, |_| {}).await;
                assert_eq!((report.ops, report.errors), (200, 0), "{workload:?}");
            }
        });
    }
    let loaded = b"load000000000099";
    assert_eq!(embedded.get(loaded).unwrap().map(|v| v.len()), Some(32));
    assert_eq!(raw.get(loaded).unwrap().map(|v| v.len()), Some(32));
}
