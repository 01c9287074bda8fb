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
    hanse_node::server::system(None).block_on(async {
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
        // Node 2 holds a node certificate of the cluster but is no voter of shard 1: its
        // vote request at a plausible term, and a nudge to campaign, are refused.
        let plausible = openraft::raft::VoteRequest::new(openraft::Vote::new(7, 2u64), None);
        let nudge = proto::raft_message::Body::TimeoutNow(proto::TimeoutNow::default());
        for body in [
            proto::raft_message::Body::Vote(hanse_storage::codec::encode(&plausible)),
            nudge,
        ] {
            let batch = proto::RaftBatch {
                from_node: 2,
                messages: vec![proto::RaftMessage {
                    shard_id: 1,
                    body: Some(body),
                }],
            };
            let as_node2 = hanse_client::connect(&endpoint, Some(tls(Identity::Node(2)))).unwrap();
            let answer = RaftClient::new(as_node2).send(batch).await.unwrap().into_inner();
            let outcome = answer.results[0].outcome.clone();
            assert!(
                matches!(&outcome, Some(proto::raft_result::Outcome::Malformed(why)) if why.contains("no voter")),
                "{outcome:?}"
            );
        }
        let status = AdminClient::new(as_root.clone())
            .status(proto::StatusRequest {})
            .await
            .unwrap();
        assert_eq!(status.get_ref().node_id, 1);
        assert!(
            status.get_ref().shards.iter().all(|s| s.leader_node == 1),
            "{status:?}"
        );

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
            // A forged measurement rides with the forged claim and is refused with it.
            round_trips: vec![proto::PeerRoundTrip {
                node_id: 3,
                region: "x".into(),
                micros: 1,
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

/// An Auth change made as `root`.
async fn as_root(
    admin: &mut AdminClient<tonic::transport::Channel>,
    change: proto::auth_request::Change,
) {
    let request = proto::AuthRequest {
        change: Some(change),
    };
    admin.auth(request).await.unwrap();
}

#[test]
fn a_user_without_a_certificate_logs_in_and_its_token_opens_what_its_roles_grant() {
    use hanse_client::{Client, ClientError, ClientOptions, ClientTls};
    use proto::auth_request::Change;
    use std::time::{Duration, Instant};

    hanse_node::server::system(None).block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (config, certs) = common::single_node(dir.path(), [127, 0, 0, 67], &[]);
        let addr = config.listen_addr;
        let node = hanse_node::server::start(config).await.unwrap();
        let endpoint = addr.to_string();
        let root_tls = common::tls(&certs, Identity::user("root").unwrap());
        let mut root =
            AdminClient::new(hanse_client::connect(&endpoint, Some(root_tls.clone())).unwrap());
        // Carol has no certificate: she may read `c/` once she logs in.
        as_root(&mut root, Change::AddUser("carol".into())).await;
        as_root(&mut root, Change::AddRole("c-reader".into())).await;
        let read_c = proto::KeyPermission {
            start: b"c/".to_vec(),
            end: b"c0".to_vec(),
            write: false,
        };
        let grant = proto::RolePermission {
            role: "c-reader".into(),
            permission: Some(read_c),
        };
        as_root(&mut root, Change::GrantPermission(grant)).await;
        let role = proto::UserRole {
            user: "carol".into(),
            role: "c-reader".into(),
        };
        as_root(&mut root, Change::GrantRole(role)).await;
        let writer = Client::new(
            std::slice::from_ref(&endpoint),
            ClientOptions {
                tls: Some(root_tls.clone()),
                ..ClientOptions::default()
            },
        )
        .unwrap();
        writer.put(b"c/1", b"one").await.unwrap();

        // With the CA only and no token, nothing but a login gets through.
        let ca_only =
            ClientTls::without_certificate(certs.files(&Identity::user("carol").unwrap())).unwrap();
        let anonymous = hanse_client::connect(&endpoint, Some(ca_only.clone())).unwrap();
        let refused = KvClient::new(anonymous.clone())
            .get(proto::GetRequest {
                route: None,
                key: b"c/1".to_vec(),
                max_staleness_ms: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        assert!(
            refused.message().contains("hanse user login"),
            "{refused:?}"
        );
        let refused = AdminClient::new(anonymous.clone())
            .status(proto::StatusRequest {})
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let mut login = AdminClient::new(anonymous.clone());
        let request = |password: &str, ttl_ms: u64| proto::LoginRequest {
            user: "carol".into(),
            password: password.into(),
            ttl_ms,
        };

        // No password yet, a wrong one, and an unknown user all get the same answer.
        let refused = login
            .login(request("carol's password", 0))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let password = proto::UserPassword {
            user: "carol".into(),
            password: "carol's password".into(),
        };
        as_root(&mut root, Change::SetPassword(password)).await;
        let wrong = login
            .login(request("carol's passwore", 0))
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        assert_eq!(wrong.message(), refused.message());
        let too_long = login
            .login(request("carol's password", 2 * 86_400_000))
            .await
            .unwrap_err();
        assert_eq!(too_long.code(), tonic::Code::InvalidArgument);
        let token = login
            .login(request("carol's password", 0))
            .await
            .unwrap()
            .into_inner()
            .token;

        // The token opens what Carol's role grants, and nothing else.
        let carol = |token: &str| {
            Client::new(
                std::slice::from_ref(&endpoint),
                ClientOptions {
                    tls: Some(ca_only.clone()),
                    token: Some(token.to_string()),
                    request_timeout: Duration::from_secs(5),
                    ..ClientOptions::default()
                },
            )
            .unwrap()
        };
        let with_token = carol(&token);
        assert_eq!(with_token.get(b"c/1").await.unwrap(), Some(b"one".to_vec()));
        let write = with_token.put(b"c/2", b"two").await.unwrap_err();
        assert!(
            matches!(write, ClientError::PermissionDenied(_)),
            "{write:?}"
        );
        let other = with_token.get(b"d/1").await.unwrap_err();
        assert!(
            matches!(other, ClientError::PermissionDenied(_)),
            "{other:?}"
        );
        let admin = hanse_client::admin(&endpoint, Some(ca_only.clone()), Some(&token)).unwrap();
        let refused = { admin }.status(proto::StatusRequest {}).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("user carol"), "{refused:?}");

        // A forged token, or one with a character changed, is unknown.
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        for bad in [forged.as_str(), "hanse1.1.00", "not a token"] {
            let refused = carol(bad).get(b"c/1").await.unwrap_err();
            assert!(
                matches!(refused, ClientError::Unauthenticated(_)),
                "{bad}: {refused:?}"
            );
        }

        // Revoked, the token stops working on every node within a refresh.
        as_root(&mut root, Change::RevokeTokens("carol".into())).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match with_token.get(b"c/1").await {
                Err(ClientError::Unauthenticated(_)) => break,
                Ok(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => panic!("a revoked token still counts: {other:?}"),
            }
        }

        // A token asked to live a second stops working after it.
        let short = login
            .login(request("carol's password", 1_000))
            .await
            .unwrap()
            .into_inner()
            .token;
        let short_lived = carol(&short);
        assert_eq!(
            short_lived.get(b"c/1").await.unwrap(),
            Some(b"one".to_vec())
        );
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let expired = short_lived.get(b"c/1").await.unwrap_err();
        assert!(
            matches!(expired, ClientError::Unauthenticated(_)),
            "{expired:?}"
        );
        node.stop().await;
    });
}
