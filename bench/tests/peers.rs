//! The peers run for real: what is written through the load generator's etcd and
//! PostgreSQL targets reads back, scans see it in order, and dropping a peer stops its
//! processes.

use std::sync::Arc;
use std::time::Duration;

use hanse_bench::compare::{Contender, start};
use hanse_bench::load::Target;

fn round_trip(contender: Contender, port: u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (target, servers) = start(contender, dir.path(), port, 4, &runtime)
        .unwrap_or_else(|e| panic!("{}: {e}", contender.name()));
    let servers = servers.expect("a peer runs in its own processes");
    runtime.block_on(async {
        let value: Arc<[u8]> = b"first".to_vec().into();
        for i in 0..5u8 {
            let key = format!("load{i:012}").into_bytes();
            target.put(key, value.clone()).await.unwrap();
        }
        let key = b"load000000000002".to_vec();
        target
            .put(key.clone(), b"second".to_vec().into())
            .await
            .unwrap();
        let read = target.get(key, Duration::ZERO).await.unwrap();
        assert_eq!(read.as_deref(), Some(&b"second"[..]));
        let missing = target
            .get(b"load999".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(missing, None);
        assert_eq!(
            target.scan(b"load000000000001".to_vec(), 3).await.unwrap(),
            3
        );
        assert_eq!(
            target.scan(b"load000000000003".to_vec(), 10).await.unwrap(),
            2
        );
    });
    drop(runtime);
    assert!(matches!(target, Target::Etcd(_) | Target::Postgres(_)));
    drop(target);
    let addresses = match contender {
        Contender::Etcd => vec!["127.0.0.21", "127.0.0.22", "127.0.0.23"],
        _ => vec!["127.0.0.30"],
    };
    drop(servers);
    for address in addresses {
        assert!(
            std::net::TcpStream::connect((address, port)).is_err(),
            "{address}:{port} still answers after the peer was dropped"
        );
    }
}

#[test]
fn etcd_stores_scans_and_stops() {
    round_trip(Contender::Etcd, 7710);
}

#[test]
fn postgres_stores_scans_and_stops() {
    round_trip(Contender::Postgres, 7720);
}
