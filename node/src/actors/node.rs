//! `NodeActor`: owns this node's RocksDB handle and its shard replicas. It starts a
//! `ShardReplica` actor per hosted shard, publishes them in the node's routing table,
//! opens and destroys replicas when membership changes, and restarts a replica whose
//! actor or Raft group died, from what storage holds.

use crate::knobs::SUPERVISION_INTERVAL;
use hanse_storage::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::prelude::*;
use hanse_consensus::{
    AddedBy, GroupOptions, PlaceholderError, ShardGroup, ShardRegistry, Transport, destroy_replica,
    retire_merged, store_placeholder,
};
use hanse_shard::hosting_changes;
use hanse_shard::{ShardDescriptor, ShardId};
use hanse_storage_rocksdb::Engine;
use tokio::sync::{Semaphore, oneshot};

use super::notice::{DescriptorChanged, ReplicaStopped, StopReplica};
use super::replica::{ReplicaLimits, ShardReplica};
use super::{ReplicaHandle, Routes};

/// Why a node-level replica operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeActorError {
    #[error("shard {shard}: {detail}")]
    Refused { shard: ShardId, detail: String },
    #[error(transparent)]
    Group(#[from] hanse_consensus::GroupError),
    #[error(transparent)]
    Storage(#[from] hanse_storage::Error),
    #[error(transparent)]
    Placeholder(#[from] PlaceholderError),
}

type Reply<T> = oneshot::Sender<Result<T, NodeActorError>>;

/// Host an (empty) replica of the shard `descriptor` names, so its leader can add this
/// node to the group. Nothing happens when the shard is hosted already.
#[derive(Message)]
#[rtype(result = "()")]
pub struct OpenReplica {
    pub descriptor: ShardDescriptor,
    /// The leader adding it (see `store_placeholder`).
    pub added_by: Option<AddedBy>,
    pub reply: Reply<()>,
}

/// Stop hosting `shard` and delete this node's copy of it (after it was removed from
/// the group). Refused while this node leads the shard.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DestroyReplica {
    pub shard: ShardId,
    pub reply: Reply<()>,
}

/// Stop every replica (the node is shutting down).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopReplicas {
    pub reply: oneshot::Sender<()>,
}

struct Hosted {
    generation: u64,
    handle: ReplicaHandle,
}

pub struct NodeActor {
    engine: Arc<Engine>,
    transport: Arc<Transport>,
    registry: ShardRegistry,
    group_options: GroupOptions,
    limits: ReplicaLimits,
    routes: Arc<Routes>,
    hosted: HashMap<ShardId, Hosted>,
    generations: u64,
    restarts: Arc<AtomicU64>,
}

impl NodeActor {
    pub fn new(
        engine: Arc<Engine>,
        transport: Arc<Transport>,
        registry: ShardRegistry,
        group_options: GroupOptions,
        limits: ReplicaLimits,
        routes: Arc<Routes>,
        restarts: Arc<AtomicU64>,
    ) -> Self {
        NodeActor {
            engine,
            transport,
            registry,
            group_options,
            limits,
            routes,
            hosted: HashMap::new(),
            generations: 0,
            restarts,
        }
    }

    /// Starts `groups` under this actor as it starts.
    pub fn start_with(self, groups: Vec<ShardGroup>) -> Addr<NodeActor> {
        NodeActor::create(move |ctx| {
            let mut node = self;
            for group in groups {
                node.host(group, ctx);
            }
            node
        })
    }

    /// Puts `group` under a new replica actor and publishes it.
    fn host(&mut self, group: ShardGroup, ctx: &mut Context<Self>) {
        self.generations += 1;
        let shard = group.shard;
        let network = self.transport.shard_network(shard);
        let permits = Arc::new(Semaphore::new(self.limits.requests_in_flight_max));
        let replica = ShardReplica::new(
            group.clone(),
            network,
            self.limits.clone(),
            ctx.address().recipient(),
            ctx.address().recipient(),
            self.generations,
            permits.clone(),
        )
        .start();
        let handle = ReplicaHandle {
            shard,
            addr: replica,
            group,
            load: Default::default(),
            read_index: Default::default(),
            permits,
        };
        // Two shards serving one key here would serve one of them wrong: the replica
        // stops rather than serve.
        if let Err(overlap) = self.routes.insert(handle.clone()) {
            tracing::error!(shard, "not hosting the replica: {overlap}");
            handle.addr.do_send(StopReplica);
            let group = handle.group;
            ctx.spawn(async move { group.shutdown().await }.into_actor(self));
            return;
        }
        self.registry.insert(handle.group.clone());
        self.hosted.insert(
            shard,
            Hosted {
                generation: self.generations,
                handle,
            },
        );
    }

    /// Replaces the replica of `shard` with a fresh one started from storage. The old
    /// group is shut down first: two groups must never share one shard's storage.
    fn restart(&mut self, shard: ShardId, ctx: &mut Context<Self>) {
        let Some(hosted) = self.hosted.get(&shard) else {
            return;
        };
        self.restarts.fetch_add(1, Ordering::Relaxed);
        crate::metrics::METRICS.replica_restarts.inc();
        tracing::warn!(shard, "restarting the replica from storage");
        let old = hosted.handle.group.clone();
        let engine = self.engine.clone();
        let options = self.group_options.clone();
        let network = self.transport.shard_network(shard);
        let started = async move {
            old.shutdown().await;
            ShardGroup::start(shard, engine, &options, network).await
        };
        ctx.wait(
            started
                .into_actor(self)
                .map(move |started, node, ctx| match started {
                    Ok(group) => node.host(group, ctx),
                    // The supervision tick tries again.
                    Err(e) => tracing::error!(shard, "restarting the replica failed: {e}"),
                }),
        );
    }

    /// Stops hosting `shard`: out of the routing table and registry first, so nothing
    /// restarts it, then its group is shut down.
    fn unhost(&mut self, shard: ShardId) -> Option<ShardGroup> {
        let hosted = self.hosted.remove(&shard)?;
        self.registry.remove(shard);
        self.routes.remove(shard);
        hosted.handle.addr.do_send(StopReplica);
        Some(hosted.handle.group)
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SUPERVISION_INTERVAL, |node, ctx| {
            let dead: Vec<ShardId> = node
                .hosted
                .iter()
                .filter(|(_, h)| !h.handle.addr.connected())
                .map(|(&shard, _)| shard)
                .collect();
            for shard in dead {
                node.restart(shard, ctx);
            }
        });
    }
}

impl Handler<ReplicaStopped> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: ReplicaStopped, ctx: &mut Self::Context) {
        let current = self
            .hosted
            .get(&msg.shard)
            .is_some_and(|h| h.generation == msg.generation);
        if current {
            self.restart(msg.shard, ctx);
        }
    }
}

impl Handler<DescriptorChanged> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: DescriptorChanged, ctx: &mut Self::Context) {
        let Some(hosted) = self.hosted.get(&msg.shard) else {
            return;
        };
        let parent = hosted.handle.clone();
        let stored = match self.engine.load_descriptors() {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(shard = msg.shard, "reading descriptors failed: {e}");
                return;
            }
        };
        let changes = hosting_changes(self.hosted.keys().copied(), &stored);
        for shard in changes.retire {
            let group = self.unhost(shard).expect("hosted");
            let engine = self.engine.clone();
            let retired = async move {
                group.retire().await;
                if let Err(e) = retire_merged(engine.as_ref(), shard).await {
                    tracing::error!(shard, "retiring the merged shard failed: {e}");
                }
                tracing::info!(shard, into = msg.shard, "merged shard retired");
            };
            ctx.wait(retired.into_actor(self));
        }
        // With what it absorbed retired, the changed shard must overlap nothing hosted.
        if let Err(overlap) = self.routes.insert(parent.clone()) {
            tracing::error!(shard = msg.shard, "stopping the replica: {overlap}");
            if let Some(group) = self.unhost(msg.shard) {
                ctx.spawn(async move { group.shutdown().await }.into_actor(self));
            }
            return;
        }
        // The replica on the node that leads the parent campaigns at once, so the new
        // shard's leader starts where the parent's is.
        let created = changes.start;
        if created.is_empty() {
            return;
        }
        tracing::info!(
            parent = msg.shard,
            ?created,
            "hosting shards a split created"
        );
        let metrics = parent.group.raft.metrics().borrow().clone();
        let leads_parent = metrics.current_leader == Some(metrics.id);
        let engine = self.engine.clone();
        let options = self.group_options.clone();
        let transport = self.transport.clone();
        let started = async move {
            let mut groups = Vec::new();
            for shard in created {
                let network = transport.shard_network(shard);
                match ShardGroup::start(shard, engine.clone(), &options, network).await {
                    Ok(group) => {
                        if leads_parent && let Err(e) = group.campaign_unless_leader().await {
                            tracing::warn!(shard, "campaign for the new shard failed: {e}");
                        }
                        groups.push(group);
                    }
                    Err(e) => tracing::error!(shard, "starting the new shard failed: {e}"),
                }
            }
            groups
        };
        ctx.wait(started.into_actor(self).map(|groups, node, ctx| {
            for group in groups {
                node.host(group, ctx);
            }
        }));
    }
}

impl Handler<OpenReplica> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: OpenReplica, ctx: &mut Self::Context) {
        let shard = msg.descriptor.id;
        if self.hosted.contains_key(&shard) {
            let _ = msg.reply.send(Ok(()));
            return;
        }
        let engine = self.engine.clone();
        let options = self.group_options.clone();
        let network = self.transport.shard_network(shard);
        let (descriptor, added_by) = (msg.descriptor, msg.added_by);
        let opened = async move {
            // The descriptor is a placeholder until the leader's snapshot replaces it.
            store_placeholder(engine.as_ref(), &descriptor, added_by)?;
            Ok::<_, NodeActorError>(ShardGroup::start(shard, engine, &options, network).await?)
        };
        ctx.wait(
            opened
                .into_actor(self)
                .map(move |opened, node, ctx| match opened {
                    Ok(group) => {
                        node.host(group, ctx);
                        let _ = msg.reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = msg.reply.send(Err(e));
                    }
                }),
        );
    }
}

impl Handler<DestroyReplica> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: DestroyReplica, ctx: &mut Self::Context) {
        let shard = msg.shard;
        let Some(hosted) = self.hosted.get(&shard) else {
            let _ = msg.reply.send(Ok(()));
            return;
        };
        let metrics = hosted.handle.group.raft.metrics().borrow().clone();
        if metrics.current_leader == Some(metrics.id) {
            let _ = msg.reply.send(Err(NodeActorError::Refused {
                shard,
                detail: "this node leads the shard; remove it from the group first".into(),
            }));
            return;
        }
        let group = self.unhost(shard).expect("hosted above");
        let engine = self.engine.clone();
        let destroyed = async move {
            group.shutdown().await;
            let descriptor = group.descriptor.borrow().clone();
            destroy_replica(engine.as_ref(), &descriptor).await?;
            tracing::info!(shard, "replica removed from this node");
            Ok(())
        };
        ctx.wait(destroyed.into_actor(self).map(move |result, _, _| {
            let _ = msg.reply.send(result);
        }));
    }
}

impl Handler<StopReplicas> for NodeActor {
    type Result = ();

    fn handle(&mut self, msg: StopReplicas, ctx: &mut Self::Context) {
        let shards: Vec<ShardId> = self.hosted.keys().copied().collect();
        let groups: Vec<ShardGroup> = shards.into_iter().filter_map(|s| self.unhost(s)).collect();
        let stopped = async move {
            for group in groups {
                group.shutdown().await;
            }
        };
        ctx.wait(stopped.into_actor(self).map(move |(), _, ctx| {
            let _ = msg.reply.send(());
            ctx.stop();
        }));
    }
}
