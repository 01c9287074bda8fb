//! Runs the size heuristic ([`hanse_planner::balance`]) on the meta shard's leader: every
//! few seconds it reads the routing table, asks the heuristic for splits and merges, and
//! carries them out through this node's Admin service (which forwards each to the
//! shard's leader). Every node runs the loop; only the meta leader acts, so a new meta
//! leader takes over by itself. How long each shard has been unchanged is remembered
//! here, so a new meta leader waits one cool-down before it acts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hanse_consensus::meta::META_SHARD;
use hanse_planner::balance::{Action, BalanceOptions, ShardView, size_policy};
use hanse_proto::v1 as pb;
use hanse_storage::{Engine, Epoch, ShardId};
use tokio::sync::Mutex;
use tonic::Status;

use crate::actors::Routes;
use crate::admin_service::connect;
use crate::reporter::read_routing_table;

/// How often the meta leader looks at the routing table.
const BALANCE_INTERVAL: Duration = Duration::from_secs(2);
/// At most this many splits and merges per look: each takes a moment, and the table is
/// read afresh for the next.
const ACTIONS_PER_ROUND_MAX: usize = 4;

pub(crate) struct Balancer {
    /// This node's Admin address.
    addr: String,
    engine: Arc<Engine>,
    routes: Arc<Routes>,
    options: BalanceOptions,
    /// Each shard's epoch and when this node first saw it.
    seen: Mutex<HashMap<ShardId, (Epoch, Instant)>>,
}

impl Balancer {
    pub(crate) fn new(
        addr: String,
        engine: Arc<Engine>,
        routes: Arc<Routes>,
        options: BalanceOptions,
    ) -> Self {
        Balancer {
            addr,
            engine,
            routes,
            options,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Balances every `BALANCE_INTERVAL` until the task is aborted.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(BALANCE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = self.balance_once().await {
                tracing::info!("balancing stopped for a round: {}", e.message());
            }
        }
    }

    async fn balance_once(&self) -> Result<(), Status> {
        let Some(meta) = self.routes.get(META_SHARD).filter(|m| m.leads()) else {
            self.seen.lock().await.clear();
            return Ok(());
        };
        let (table, _) = read_routing_table(&self.engine, &meta).await?;
        let now = Instant::now();
        let mut seen = self.seen.lock().await;
        seen.retain(|id, _| table.iter().any(|r| r.descriptor.id == *id));
        let views: Vec<ShardView> = table
            .iter()
            .map(|record| {
                let d = &record.descriptor;
                let since = seen.entry(d.id).or_insert((d.epoch, now));
                if since.0 != d.epoch {
                    *since = (d.epoch, now);
                }
                let mut replicas: Vec<_> = d.replicas.iter().map(|r| (r.node, r.role)).collect();
                replicas.sort_by_key(|(node, _)| *node);
                ShardView {
                    id: d.id,
                    replicas,
                    size_bytes: record.stats.size_bytes,
                    ops_per_sec: record.stats.reads_per_sec + record.stats.writes_per_sec,
                    split_key: record.stats.split_key.clone(),
                    stable_for: now - since.1,
                    pinned: d.id == META_SHARD || d.merging.is_some(),
                }
            })
            .collect();
        drop(seen);
        for action in size_policy(&views, &self.options)
            .into_iter()
            .take(ACTIONS_PER_ROUND_MAX)
        {
            let mut admin = connect(&self.addr).await?;
            let outcome = match &action {
                Action::Split { at, .. } => admin
                    .split(pb::SplitRequest { key: at.clone() })
                    .await
                    .map(|_| ()),
                Action::Merge { left, .. } => admin
                    .merge(pb::MergeRequest { shard_id: *left })
                    .await
                    .map(|_| ()),
            };
            match outcome {
                Ok(()) => tracing::info!(?action, "balanced"),
                Err(e) => tracing::info!(?action, "not done: {}", e.message()),
            }
        }
        Ok(())
    }
}
