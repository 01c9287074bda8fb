//! A real node (in process, real gRPC over TLS): the calls nodes make of each other are
//! refused to a client's certificate, a node's certificate cannot send Raft messages as
//! another node, a report naming another node as a leader is refused, a user without
//! grants reads nothing (and, with `redact`, hears no key named), and a caller without a
//! certificate of the cluster's CA gets nowhere.

mod common;

use hanse_client::Identity;
use hanse_client::proto::admin_client::AdminClient;
use hanse_client::proto::kv_client::KvClient;
use hanse_client::proto::raft_client::RaftClient;
use hanse_client::proto::{self};
use hanse_node::config::NodeConfig;

#[test]
fn only_nodes_make_node_calls_and_each_only_as_itself() {
    hanse_node::server::system().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (config, certs) = common::single_node(dir.path(), [127, 0, 0, 64], &["alice"]);
        // Node 2's certificate, for the calls that pretend to be it.
        hanse_security::issue::create_local_cluster(&certs, &[(2, "127.0.0.65".into())], &[])
            .unwrap();
        let config = NodeConfig {
            // Refusals must not say which key.
            redact: true,
            ..config
        };
        let addr = config.listen_addr;
        let node = hanse_node::server::start(config).await.unwrap();
        let endpoint = addr.to_string();
        let tls = |identity: Identity| common::tls(&certs, identity);
        let root = tls(Identity::user("root").unwrap());
        let as_root = hanse_client::connect(&endpoint, Some(root.clone())).unwrap();

        // A user's certificate serves for client calls...
        let mut kv = KvClient::new(as_root.clone());
        let status = AdminClient::new(as_root.clone())
            .status(proto::StatusRequest {})
            .await
            .unwrap();
        assert_eq!(status.get_ref().node_id, 1);

        // ...and not for the calls between nodes, which change nothing.
        let forged = proto::ProposeBatchRequest::default();
        let refused = kv.propose_batch(forged).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains("user root"),
            "{}",
            refused.message()
        );
        let report = proto::ReportRequest::default();
        let refused = AdminClient::new(as_root.clone())
            .report(report)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let batch = proto::RaftBatch {
            from_node: 1,
            messages: Vec::new(),
        };
        let refused = RaftClient::new(as_root.clone())
            .send(batch.clone())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);

        // A term no real group reaches (adding to it would overflow) is refused, and the
        // node goes on serving.
        let forged = openraft::raft::VoteRequest::new(openraft::Vote::new(u64::MAX, 2u64), None);
        let vote = proto::RaftBatch {
            from_node: 2,
            messages: vec![proto::RaftMessage {
                shard_id: 1,
                body: Some(proto::raft_message::Body::Vote(
                    hanse_storage::codec::encode(&forged),
                )),
            }],
        };
        let as_node2 = hanse_client::connect(&endpoint, Some(tls(Identity::Node(2)))).unwrap();
        let answer = RaftClient::new(as_node2).send(vote).await.unwrap().into_inner();
        let outcome = answer.results[0].outcome.clone();
        assert!(
            matches!(&outcome, Some(proto::raft_result::Outcome::Malformed(why)) if why.contains("over")),
            "{outcome:?}"
        );
        let status = AdminClient::new(as_root.clone())
            .status(proto::StatusRequest {})
            .await
            .unwrap();
        assert_eq!(status.get_ref().node_id, 1);

        // Node 2's certificate speaks for node 2 only.
        let node2 = hanse_client::connect(&endpoint, Some(tls(Identity::Node(2)))).unwrap();
        let refused = RaftClient::new(node2.clone())
            .send(batch)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("as node 1"),
            "{}",
            refused.message()
        );
        let claim = proto::ReportRequest {
            shards: Vec::new(),
            nodes: vec![proto::NodeInfo {
                node_id: 1,
                region: "x".into(),
                addr: "10.9.9.9:1".into(),
                reported_at_ms: 0,
            }],
        };
        let refused = AdminClient::new(node2).report(claim).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);

        // A user no role grants anything may read nothing, and with `redact` the refusal
        // does not say which key it was.
        let alice = hanse_client::connect(&endpoint, Some(tls(Identity::user("alice").unwrap())));
        let read = proto::GetRequest {
            route: None,
            key: b"secret-key".to_vec(),
            max_staleness_ms: 0,
        };
        let refused = KvClient::new(alice.unwrap()).get(read).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("user alice may not read a key"),
            "{}",
            refused.message()
        );
        assert!(
            !refused.message().contains("secret"),
            "{}",
            refused.message()
        );

        // Backups each stage a copy: two at once, a third is refused until one is read.
        // (A copy larger than a stream's flow-control window waits for its reader.)
        // 12 MiB in 12 batches: more than the channel and a stream's window hold.
        let mut seed = 1u32;
        for batch in 0..12 {
            let mutations = (0..16)
                .map(|i| {
                    // Bytes that no compression shrinks.
                    let value = (0..64 * 1024)
                        .map(|_| {
                            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                            (seed >> 24) as u8
                        })
                        .collect();
                    let key = format!("large-{batch:02}-{i:02}").into_bytes();
                    proto::Mutation {
                        op: Some(proto::mutation::Op::Put(proto::KeyValue { key, value })),
                    }
                })
                .collect();
            let batch = proto::BatchRequest {
                route: None,
                mutations,
            };
            let answer = kv.batch(batch).await.unwrap().into_inner();
            assert!(answer.error.is_none(), "{answer:?}");
        }
        let mut admin = AdminClient::new(as_root.clone());
        let backup = proto::BackupRequest { shard_id: 1 };
        let first = admin.backup(backup).await.unwrap();
        let second = admin.backup(backup).await.unwrap();
        let refused = admin.backup(backup).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
        let mut first = first.into_inner();
        while first.message().await.unwrap().is_some() {}
        drop((first, second));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let third = loop {
            match admin.backup(backup).await {
                Ok(stream) => break stream,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("a finished backup still counts: {e:?}"),
            }
        };
        drop(third);

        // Plaintext gets no answer at all.
        let plain = hanse_client::connect(&endpoint, None).unwrap();
        let refused = AdminClient::new(plain)
            .status(proto::StatusRequest {})
            .await
            .unwrap_err();
        assert_ne!(refused.code(), tonic::Code::Ok);
        node.stop().await;
    });
}
