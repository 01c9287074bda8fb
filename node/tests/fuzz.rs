//! What reaches a node from the network, fuzzed: arbitrary bytes as the body of every
//! Kv and Admin call a client may make, over real gRPC and TLS to a real node. Every
//! call is answered (a body that is no protobuf of the method's type with
//! INVALID_ARGUMENT), nothing panics, and the node serves on afterwards.
//!
//! `PROPTEST_CASES` sets how many bodies are sent (256 in the suite); a longer run:
//! `PROPTEST_CASES=20000 cargo test -p hanse-node --test fuzz`.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use bytes::{Buf, BufMut};
use hanse_client::Identity;
use hanse_client::proto::admin_client::AdminClient;
use hanse_client::proto::{self};
use hanse_node::config::NodeConfig;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// Sends and receives message bodies as they are.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// The unary calls a client (here: root) may make.
const METHODS: [&str; 14] = [
    "/hanse.v1.Kv/Get",
    "/hanse.v1.Kv/Put",
    "/hanse.v1.Kv/Delete",
    "/hanse.v1.Kv/Scan",
    "/hanse.v1.Kv/Batch",
    "/hanse.v1.Kv/CompareAndSwap",
    "/hanse.v1.Admin/Status",
    "/hanse.v1.Admin/Shards",
    "/hanse.v1.Admin/Split",
    "/hanse.v1.Admin/Merge",
    "/hanse.v1.Admin/TransferLeader",
    "/hanse.v1.Admin/ChangeRole",
    "/hanse.v1.Admin/Auth",
    "/hanse.v1.Admin/ListAuth",
];

#[test]
fn any_bytes_to_any_call_get_an_answer_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let (config, certs) = common::single_node(dir.path(), [127, 0, 0, 66], &[]);
    // Speed over durability: the bodies are garbage anyway.
    let config = NodeConfig {
        sync: false,
        ..config
    };
    let addr = config.listen_addr;
    // The node runs on its own thread and runtime; the test drives it from this one.
    let (started, running) = mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = std::thread::spawn(move || {
        hanse_node::server::system(None).block_on(async move {
            let node = hanse_node::server::start(config).await.unwrap();
            started.send(()).unwrap();
            let _ = stopped.await;
            node.stop().await;
        })
    });
    running.recv().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tls = common::tls(&certs, Identity::user("root").unwrap());
    let channel = runtime.block_on(async { hanse_client::connect(&addr.to_string(), Some(tls)) });
    let channel = channel.unwrap();

    let bodies = (
        0..METHODS.len(),
        proptest::collection::vec(any::<u8>(), 0..256),
    );
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&bodies, |(method, body)| {
            let path = PathAndQuery::from_static(METHODS[method]);
            let answer = runtime.block_on(async {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.map_err(|e| e.to_string())?;
                let call = grpc.unary(tonic::Request::new(body.clone()), path, Raw);
                tokio::time::timeout(Duration::from_secs(10), call)
                    .await
                    .map_err(|_| "no answer within 10 s".to_string())
                    .map(|answer| answer.map(|_| ()))
            });
            match answer {
                Err(hang) => prop_assert!(false, "{}: {hang}", METHODS[method]),
                Ok(Ok(())) => {}
                Ok(Err(status)) => prop_assert!(
                    status.code() != tonic::Code::Internal && status.code() != tonic::Code::Unknown,
                    "{} with {body:?}: {status:?}",
                    METHODS[method]
                ),
            }
            Ok(())
        })
        .unwrap();

    // A body that is no protobuf at all (a field number 0) is the caller's mistake.
    let refused = runtime.block_on(async {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path = PathAndQuery::from_static("/hanse.v1.Kv/Put");
        grpc.unary(tonic::Request::new(vec![0, 0, 0]), path, Raw)
            .await
            .unwrap_err()
    });
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // Still serving: the Admin service answers.
    let status = runtime.block_on(async {
        AdminClient::new(channel)
            .status(proto::StatusRequest {})
            .await
            .map(|s| s.into_inner().node_id)
    });
    assert_eq!(status.unwrap(), 1);
    // The connections close with their runtime, before the node stops.
    drop(runtime);
    stop.send(()).unwrap();
    node.join().unwrap();
}
