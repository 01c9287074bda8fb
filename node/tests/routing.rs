//! Routing by epoch on a real node (in process, real gRPC): a request routed with the
//! epoch from before a split is refused with the current descriptors covering it, applies
//! nothing, and one retry with those descriptors succeeds.

mod common;

use hanse_client::Identity;
use hanse_client::proto::admin_client::AdminClient;
use hanse_client::proto::kv_client::KvClient;
use hanse_client::proto::{self, request_error::Kind};

#[test]
fn a_stale_route_gets_the_covering_descriptors_and_one_retry_succeeds() {
    hanse_node::server::system(None).block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (config, certs) = common::single_node(dir.path(), [127, 0, 0, 63], &[]);
        let addr = config.listen_addr;
        let node = hanse_node::server::start(config).await.unwrap();
        let root = common::tls(&certs, Identity::user("root").unwrap());
        let channel = hanse_client::connect(&addr.to_string(), Some(root)).unwrap();
        let mut kv = KvClient::new(channel.clone());
        let mut admin = AdminClient::new(channel);
        let before = loop {
            let status = admin.status(proto::StatusRequest {}).await.unwrap();
            let first = status
                .into_inner()
                .shards
                .into_iter()
                .find(|s| s.descriptor.as_ref().is_some_and(|d| d.id == 1))
                .unwrap();
            if first.leader_node == 1 {
                break first.descriptor.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };

        let split = admin
            .split(proto::SplitRequest { key: b"m".to_vec() })
            .await
            .unwrap()
            .into_inner();
        let right = split.right.unwrap();
        assert_eq!(right.start, b"m");

        let put = |route: &proto::ShardDescriptor| proto::PutRequest {
            route: Some(proto::RouteContext {
                shard_id: route.id,
                epoch: route.epoch,
            }),
            key: b"zebra".to_vec(),
            value: b"1".to_vec(),
        };
        let stale = kv.put(put(&before)).await.unwrap().into_inner();
        let Some(Kind::EpochMismatch(mismatch)) = stale.error.and_then(|e| e.kind) else {
            panic!("a stale route must be refused with EpochMismatch");
        };
        assert_eq!(mismatch.current, vec![right.clone()]);
        let get = proto::GetRequest {
            route: None,
            key: b"zebra".to_vec(),
            max_staleness_ms: 0,
        };
        let absent = kv.get(get.clone()).await.unwrap().into_inner();
        assert!(
            absent.error.is_none() && !absent.found,
            "the refused put applied nothing"
        );

        let retried = kv
            .put(put(&mismatch.current[0]))
            .await
            .unwrap()
            .into_inner();
        assert!(retried.error.is_none(), "{:?}", retried.error);
        let found = kv.get(get).await.unwrap().into_inner();
        assert_eq!(found.value, b"1");
        node.stop().await;
    });
}
