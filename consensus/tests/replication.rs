//! Shard groups of three nodes (each over a `MemStore`) talking over the real gRPC
//! transport on loopback: writes
//! replicate, followers answer NotLeader, a lost leader is replaced, a returning replica
//! catches up from the log, and one that missed purged log catches up by snapshot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hanse_consensus::{
    GroupError, GroupOptions, ProposeError, RaftService, ReplicaNode, ShardGroup, ShardRegistry,
    Transport, TransportOptions,
};
use hanse_proto::v1::{RaftBatch, RaftBatchReply, raft_server};
use hanse_shard::{Mutation, ShardRequest, ShardResponse};
use hanse_shard::{ReplicaDescriptor, ReplicaRole, ShardDescriptor};
use hanse_storage::{Batch, Cf, MemStore, Store};
use tokio::net::TcpSocket;

const SHARD: u64 = 1;
const WAIT: Duration = Duration::from_secs(15);

struct Node {
    id: u64,
    addr: SocketAddr,
    store: Arc<MemStore>,
    transport: Arc<Transport>,
    registry: ShardRegistry,
    group: Option<ShardGroup>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn descriptor(addrs: &[(u64, SocketAddr)]) -> ShardDescriptor {
    let replicas = addrs
        .iter()
        .map(|(id, _)| ReplicaDescriptor {
            node: *id,
            region: "test".into(),
            role: ReplicaRole::Voter,
        })
        .collect();
    ShardDescriptor::whole_keyspace(SHARD, replicas)
}

async fn listen(ip: [u8; 4]) -> tokio::net::TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(SocketAddr::from((ip, 0))).unwrap();
    socket.listen(128).unwrap()
}

/// A node's Raft service behind a slow link: a batch carrying more than 64 KiB arrives
/// 300 ms late, later than openraft waits for any one AppendEntries (one heartbeat).
struct SlowLink(RaftService);

#[tonic::async_trait]
impl raft_server::Raft for SlowLink {
    async fn send(
        &self,
        request: tonic::Request<RaftBatch>,
    ) -> Result<tonic::Response<RaftBatchReply>, tonic::Status> {
        let bytes: usize = request
            .get_ref()
            .messages
            .iter()
            .map(prost::Message::encoded_len)
            .sum();
        if bytes > 64 * 1024 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.0.send(request).await
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Fast,
    Slow,
}

async fn start_nodes(options: &GroupOptions) -> Vec<Node> {
    start_nodes_linked(options, Link::Fast).await
}

async fn start_nodes_linked(options: &GroupOptions, link: Link) -> Vec<Node> {
    let mut listeners = Vec::new();
    for id in 1..=3u64 {
        listeners.push((id, listen([127, 0, 0, 10 + id as u8]).await));
    }
    let addrs: Vec<(u64, SocketAddr)> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    for (id, listener) in listeners {
        nodes.push(start_node(id, listener, &descriptor(&addrs), options, link).await);
    }
    let members: BTreeMap<u64, ReplicaNode> =
        nodes.iter().map(|n| (n.id, replica_node(n))).collect();
    nodes[0]
        .group
        .as_ref()
        .unwrap()
        .initialize(members)
        .await
        .unwrap();
    nodes
}

fn replica_node(node: &Node) -> ReplicaNode {
    ReplicaNode {
        addr: node.addr.to_string(),
        region: "test".into(),
    }
}

/// Starts node `id` serving on `listener` with the shard `descriptor` names stored, and
/// its group started (not initialised).
async fn start_node(
    id: u64,
    listener: tokio::net::TcpListener,
    descriptor: &ShardDescriptor,
    options: &GroupOptions,
    link: Link,
) -> Node {
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemStore::new(dir.path()));
    let mut batch = Batch::default();
    batch.put_descriptor(descriptor);
    store.write(batch, true).unwrap();
    let registry = ShardRegistry::default();
    let transport = Transport::new(id, TransportOptions::default(), Default::default());
    let service = RaftService::new(
        id,
        registry.clone(),
        Default::default(),
        transport.liveness(),
    );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tokio::spawn(async move {
        let mut builder = tonic::transport::Server::builder();
        let served = match link {
            Link::Fast => {
                builder
                    .add_service(service.into_server())
                    .serve_with_incoming(incoming)
                    .await
            }
            Link::Slow => {
                let slow = raft_server::RaftServer::new(SlowLink(service))
                    .max_decoding_message_size(64 * 1024 * 1024);
                builder
                    .add_service(slow)
                    .serve_with_incoming(incoming)
                    .await
            }
        };
        served.unwrap();
    });
    let mut node = Node {
        id,
        addr,
        store,
        transport,
        registry,
        group: None,
        server,
        _dir: dir,
    };
    start_group(&mut node, options).await;
    node
}

async fn start_group(node: &mut Node, options: &GroupOptions) {
    let options = GroupOptions {
        node_id: node.id,
        ..options.clone()
    };
    let network = node.transport.shard_network(SHARD);
    let group = ShardGroup::start(SHARD, node.store.clone(), &options, network)
        .await
        .unwrap();
    node.registry.insert(group.clone());
    node.group = Some(group);
}

/// Takes the node's replica down: its group stops and the node answers ShardNotHosted.
async fn stop_group(node: &mut Node) {
    node.registry.remove(SHARD);
    let group = node.group.take().expect("group is running");
    group.raft.shutdown().await.unwrap();
}

async fn leader(nodes: &[Node]) -> u64 {
    let group = nodes.iter().find_map(|n| n.group.as_ref()).unwrap();
    group.wait_for_leader(WAIT).await.unwrap()
}

fn put(key: &str) -> ShardRequest {
    ShardRequest::Write {
        epoch: descriptor(&[]).epoch,
        mutations: vec![Mutation::Put {
            key: key.as_bytes().to_vec(),
            value: format!("value of {key}").into_bytes(),
        }],
    }
}

async fn wait_for_key(node: &Node, key: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.store.get(Cf::Data, key.as_bytes()).unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} never got {key}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fast() -> GroupOptions {
    GroupOptions {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        ..GroupOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_replicate_refuse_on_followers_and_fail_over() {
    let options = fast();
    let mut nodes = start_nodes(&options).await;
    let leader_id = leader(&nodes).await;
    let leader_at = nodes.iter().position(|n| n.id == leader_id).unwrap();

    let response = nodes[leader_at]
        .group
        .as_ref()
        .unwrap()
        .propose(put("k1"))
        .await
        .unwrap();
    assert_eq!(response, ShardResponse::Applied);
    for node in &nodes {
        wait_for_key(node, "k1").await;
    }

    let follower_at = (leader_at + 1) % 3;
    let refused = nodes[follower_at]
        .group
        .as_ref()
        .unwrap()
        .propose(put("k-follower"))
        .await;
    assert_eq!(
        refused,
        Err(ProposeError::NotLeader {
            shard: SHARD,
            leader: Some(leader_id)
        })
    );

    stop_group(&mut nodes[leader_at]).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader_at).collect();
    let new_leader = nodes[survivors[0]]
        .group
        .as_ref()
        .unwrap()
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != leader_id),
            "a new leader is elected",
        )
        .await
        .unwrap()
        .current_leader
        .unwrap();
    let new_leader_at = nodes.iter().position(|n| n.id == new_leader).unwrap();
    let response = nodes[new_leader_at]
        .group
        .as_ref()
        .unwrap()
        .propose(put("k2"))
        .await
        .unwrap();
    assert_eq!(response, ShardResponse::Applied);

    // The old leader comes back from its own storage and catches up from the log.
    start_group(&mut nodes[leader_at], &options).await;
    for node in &nodes {
        wait_for_key(node, "k1").await;
        wait_for_key(node, "k2").await;
    }
    for node in nodes {
        node.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_behind_the_purged_log_catches_up_by_snapshot() {
    let options = GroupOptions {
        snapshot_after_entries: 10,
        log_entries_kept: 0,
        ..fast()
    };
    let mut nodes = start_nodes(&options).await;
    let leader_id = leader(&nodes).await;
    let leader_at = nodes.iter().position(|n| n.id == leader_id).unwrap();
    let lagging_at = (leader_at + 1) % 3;
    let lagging_last_index = nodes[lagging_at]
        .group
        .as_ref()
        .unwrap()
        .raft
        .metrics()
        .borrow()
        .last_log_index;
    stop_group(&mut nodes[lagging_at]).await;

    let keys: Vec<String> = (0..60).map(|i| format!("key-{i:03}")).collect();
    for key in &keys {
        let group = nodes[leader_at].group.as_ref().unwrap();
        assert_eq!(
            group.propose(put(key)).await.unwrap(),
            ShardResponse::Applied
        );
    }
    let leader_raft = nodes[leader_at].group.as_ref().unwrap().raft.clone();
    // Once the leader has purged past everything the lagging replica has, the log alone
    // cannot bring it up to date: only a snapshot can.
    leader_raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| Some(p.index) > lagging_last_index),
            "the leader purged the log the lagging replica still needs",
        )
        .await
        .unwrap();

    start_group(&mut nodes[lagging_at], &options).await;
    for key in &keys {
        wait_for_key(&nodes[lagging_at], key).await;
    }
    for node in nodes {
        node.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_under_writes_takes_the_lead_and_a_voter_leaves() {
    let options = fast();
    let mut nodes = start_nodes(&options).await;
    let first_leader = leader(&nodes).await;
    let group_of = |nodes: &[Node], id: u64| {
        nodes
            .iter()
            .find(|n| n.id == id)
            .and_then(|n| n.group.clone())
            .unwrap()
    };
    let leader_group = group_of(&nodes, first_leader);
    let before = leader_group.descriptor.borrow().clone();

    // Writers keep going while the fourth node joins; every write they had acknowledged
    // must be on the new node at the end.
    let writer_group = leader_group.clone();
    let writer = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..200 {
            let key = format!("during-{i:03}");
            if writer_group.propose(put(&key)).await == Ok(ShardResponse::Applied) {
                acknowledged.push(key);
            }
        }
        acknowledged
    });

    let joining = start_node(
        4,
        listen([127, 0, 0, 14]).await,
        &before,
        &options,
        Link::Fast,
    )
    .await;
    let joining_node = replica_node(&joining);
    nodes.push(joining);
    leader_group
        .add_replica(4, joining_node, ReplicaRole::Voter)
        .await
        .unwrap();
    let acknowledged = writer.await.unwrap();
    assert!(!acknowledged.is_empty());
    for key in &acknowledged {
        wait_for_key(&nodes[3], key).await;
    }
    let grown = leader_group.descriptor.borrow().clone();
    assert_eq!(grown.replicas.len(), 4);
    assert_eq!(
        grown.replica_on(4).map(|r| r.role),
        Some(ReplicaRole::Voter)
    );
    assert!(grown.epoch.conf_ver > before.epoch.conf_ver);
    assert_eq!(grown.epoch.version, before.epoch.version);

    // A transfer to a non-member is refused; to the new voter it moves the lead there.
    let network = nodes[0].transport.shard_network(SHARD);
    let refused = leader_group.transfer_leader(9, &network, WAIT).await;
    assert!(matches!(refused, Err(GroupError::Transfer { to: 9, .. })));
    let leader_node = nodes.iter().find(|n| n.id == first_leader).unwrap();
    let network = leader_node.transport.shard_network(SHARD);
    leader_group
        .transfer_leader(4, &network, WAIT)
        .await
        .unwrap();
    let new_leader_group = group_of(&nodes, 4);
    assert_eq!(new_leader_group.raft.current_leader().await, Some(4));
    assert_eq!(
        new_leader_group.propose(put("after-transfer")).await,
        Ok(ShardResponse::Applied)
    );

    // A voter turned learner keeps its copy; turned back, it votes again.
    let demoted = nodes
        .iter()
        .find(|n| n.id != first_leader && n.id != 4)
        .unwrap()
        .id;
    new_leader_group
        .set_role(demoted, ReplicaRole::Learner)
        .await
        .unwrap();
    let as_learner = new_leader_group.descriptor.borrow().clone();
    assert_eq!(
        as_learner.replica_on(demoted).map(|r| r.role),
        Some(ReplicaRole::Learner)
    );
    assert_eq!(
        new_leader_group.propose(put("with-a-learner")).await,
        Ok(ShardResponse::Applied)
    );
    wait_for_key(
        nodes.iter().find(|n| n.id == demoted).unwrap(),
        "with-a-learner",
    )
    .await;
    new_leader_group
        .set_role(demoted, ReplicaRole::Voter)
        .await
        .unwrap();
    assert_eq!(
        new_leader_group
            .descriptor
            .borrow()
            .replica_on(demoted)
            .map(|r| r.role),
        Some(ReplicaRole::Voter)
    );

    // The old leader leaves the group; the other three keep serving.
    new_leader_group.remove_replica(first_leader).await.unwrap();
    assert_eq!(
        new_leader_group.propose(put("after-removal")).await,
        Ok(ShardResponse::Applied)
    );
    let shrunk = new_leader_group.descriptor.borrow().clone();
    assert!(shrunk.replica_on(first_leader).is_none());
    assert_eq!(shrunk.replicas.len(), 3);
    for node in nodes.iter().filter(|n| n.id != first_leader) {
        wait_for_key(node, "after-removal").await;
        let mut seen = node.group.as_ref().unwrap().descriptor.clone();
        seen.wait_for(|d| d == &shrunk).await.unwrap();
    }
    for node in nodes {
        node.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_entry_commits_over_links_slower_than_a_heartbeat() {
    let nodes = start_nodes_linked(&fast(), Link::Slow).await;
    let leader_id = leader(&nodes).await;
    let leader = nodes.iter().find(|n| n.id == leader_id).unwrap();
    let large = ShardRequest::Write {
        epoch: descriptor(&[]).epoch,
        mutations: vec![Mutation::Put {
            key: b"large".to_vec(),
            value: vec![1; 512 * 1024],
        }],
    };
    let proposed = leader.group.as_ref().unwrap().propose(large);
    let response = tokio::time::timeout(WAIT, proposed)
        .await
        .expect(
            "the large entry committed although every send of it takes longer than openraft waits",
        )
        .unwrap();
    assert_eq!(response, ShardResponse::Applied);
    for node in &nodes {
        wait_for_key(node, "large").await;
    }
    for node in nodes {
        node.server.abort();
    }
}
