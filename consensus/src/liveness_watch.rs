//! The node's liveness duty (see [`crate::hibernation`]): hearing from peers, putting
//! idle groups to sleep, and waking the sleeping groups of a peer found dead.

use hanse_shard::NodeId;

use crate::ShardGroup;
use crate::hibernation::{chosen_candidate, storm_window, wake_turn};

/// Wakes, staggered (see [`wake_turn`]), every group of `groups` that sleeps here and
/// last knew its leader on the `dead` node; answers how many. Each woken group whose
/// turn is to campaign does so unless a new leader reached it meanwhile; the others fall
/// back on their own election timers.
pub fn wake_groups_led_by(groups: Vec<ShardGroup>, dead: NodeId) -> usize {
    let orphans: Vec<(ShardGroup, bool)> = groups
        .into_iter()
        .filter(|g| g.asleep())
        .filter_map(|group| {
            let metrics = group.raft.metrics().borrow().clone();
            if metrics.current_leader != Some(dead) {
                return None;
            }
            let membership = metrics.membership_config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().filter(|v| *v != dead).collect();
            let chosen = chosen_candidate(group.shard, metrics.id, &voters);
            Some((group, chosen))
        })
        .collect();
    let count = orphans.len();
    let window = storm_window(count);
    for (position, (group, chosen)) in orphans.into_iter().enumerate() {
        let turn = wake_turn(position, count, window, chosen);
        tokio::spawn(async move {
            tokio::time::sleep(turn.after).await;
            group.wake();
            let still_orphaned = group.raft.metrics().borrow().current_leader == Some(dead);
            if turn.campaign
                && still_orphaned
                && let Err(e) = group.campaign().await
            {
                tracing::debug!(shard = group.shard, "campaign after node {dead} died: {e}");
            }
        });
    }
    count
}

/// The node's hibernation duty, for as long as the node runs: each `heartbeat`, every
/// peer of its groups that was not heard from lately is asked whether it lives (one empty
/// batch per peer, not per shard); every second idle groups are put to sleep; a peer found
/// dead has the sleeping groups it led here woken to elect (see [`wake_groups_led_by`]).
#[cfg(feature = "grpc")]
pub async fn keep_watch(
    transport: std::sync::Arc<crate::Transport>,
    registry: crate::ShardRegistry,
    options: crate::hibernation::HibernationOptions,
) {
    use std::collections::HashMap;
    use std::time::Duration;
    use tokio::time::Instant;

    if !options.enabled {
        return;
    }
    let liveness = transport.liveness();
    let mut deaths = crate::hibernation::Deaths::default();
    let sweep_every =
        (Duration::from_secs(1).as_millis() / options.heartbeat.as_millis().max(1)).max(1) as u64;
    let mut peers = HashMap::new();
    let mut ticks = tokio::time::interval(options.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0u64.. {
        ticks.tick().await;
        let now = Instant::now();
        if round % sweep_every == 0 {
            // Over thousands of groups this is the task's cost: once a second, not per
            // heartbeat.
            let groups = registry.all();
            peers.clear();
            let mut asleep = 0;
            for group in &groups {
                {
                    let metrics = group.raft.metrics();
                    let metrics = metrics.borrow();
                    for (node, at) in metrics.membership_config.membership().nodes() {
                        peers.entry(*node).or_insert_with(|| at.clone());
                    }
                }
                asleep += usize::from(group.hibernate_if_idle(&liveness, now));
            }
            peers.remove(&transport.node_id());
            crate::metrics::METRICS
                .groups_hibernating
                .set(asleep as i64);
        }
        transport.heartbeat_silent(peers.clone(), options.heartbeat);
        for dead in deaths.newly_dead(peers.keys().copied(), &liveness, now) {
            crate::metrics::METRICS.peer_deaths.inc();
            let woken = wake_groups_led_by(registry.all(), dead);
            tracing::warn!(
                node = dead,
                woken,
                "peer heard nothing from: waking the shards it led"
            );
        }
    }
}
