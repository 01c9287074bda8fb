//! The transport on its own: many shards' messages to one peer share gRPC calls, a
//! message for a shard the peer does not host gets a typed answer, and the latency matrix
//! holds messages to other regions back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hanse_consensus::latency::LatencyMatrix;
use hanse_consensus::{RaftService, ShardRegistry, Transport, TransportOptions};
use hanse_proto::v1::{RaftMessage, raft_message, raft_result};
use tokio::task::JoinHandle;

/// A peer (node 2) hosting no shard, on 127.0.0.`ip_last`; its address and server task.
async fn empty_peer(ip_last: u8) -> (String, JoinHandle<Result<(), tonic::transport::Error>>) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, ip_last], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let registry = ShardRegistry::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                RaftService::new(
                    2,
                    registry,
                    Default::default(),
                    std::sync::Arc::new(hanse_consensus::hibernation::Liveness::new(
                        std::time::Duration::from_secs(2),
                    )),
                )
                .into_server(),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, server)
}

fn vote(shard: u64) -> RaftMessage {
    RaftMessage {
        shard_id: shard,
        body: Some(raft_message::Body::Vote(b"not even a vote".to_vec())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_unhosted_shards_are_answered_and_batched() {
    let (addr, server) = empty_peer(21).await;
    let transport = Transport::new(1, TransportOptions::default(), Default::default());
    let mut sends = Vec::new();
    for shard in 0..200u64 {
        let transport = transport.clone();
        let addr = addr.clone();
        sends.push(tokio::spawn(async move {
            (shard, transport.send(2, &addr, "", vote(shard)).await)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_another_region_waits_out_the_injected_round_trip() {
    let (addr, server) = empty_peer(22).await;
    let millis = |text: &str| {
        text.trim_end_matches("ms")
            .parse()
            .map(Duration::from_millis)
            .map_err(|e| e.to_string())
    };
    let transport = Transport::new(
        1,
        TransportOptions {
            region: "eu-hamburg".into(),
            latency: LatencyMatrix::parse("eu-hamburg:ap-china=400ms", millis).unwrap(),
            ..TransportOptions::default()
        },
        Default::default(),
    );
    // Warm the connection, so only the injected time is measured below.
    transport
        .send(2, &addr, "eu-hamburg", vote(1))
        .await
        .unwrap();
    let started = Instant::now();
    transport.send(2, &addr, "ap-china", vote(1)).await.unwrap();
    let far = started.elapsed();
    assert!(far >= Duration::from_millis(400), "took {far:?}");
    let started = Instant::now();
    transport
        .send(2, &addr, "eu-hamburg", vote(1))
        .await
        .unwrap();
    let near = started.elapsed();
    assert!(
        near < far,
        "a peer in the same region took {near:?}, a far one {far:?}"
    );
    server.abort();
}
