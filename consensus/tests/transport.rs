//! The transport on its own: many shards' messages to one peer share gRPC calls, and a
//! message for a shard the peer does not host gets a typed answer.

use std::net::SocketAddr;

use hanse_consensus::{RaftService, ShardRegistry, Transport, TransportOptions};
use hanse_proto::v1::{RaftMessage, raft_message, raft_result};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_unhosted_shards_are_answered_and_batched() {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 21], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let registry = ShardRegistry::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftService::new(2, registry).into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let transport = Transport::new(1, TransportOptions::default());
    let mut sends = Vec::new();
    for shard in 0..200u64 {
        let transport = transport.clone();
        let addr = addr.clone();
        sends.push(tokio::spawn(async move {
            let message = RaftMessage {
                shard_id: shard,
                body: Some(raft_message::Body::Vote(b"not even a vote".to_vec())),
            };
            (shard, transport.send(2, &addr, message).await)
        }));
    }
    for send in sends {
        let (shard, result) = send.await.unwrap();
        match result.unwrap().outcome {
            Some(raft_result::Outcome::ShardNotHosted(answer)) => {
                assert_eq!((answer.shard_id, answer.node_id), (shard, 2));
            }
            other => panic!("shard {shard}: expected ShardNotHosted, got {other:?}"),
        }
    }
    let stats = transport.stats();
    assert_eq!(stats.messages, 200);
    assert!(
        stats.batches < stats.messages,
        "messages to one peer should share calls: {stats:?}"
    );
    server.abort();
}
