//! A replica that does not lead its shard catching up for a read: it asks the leader for
//! a read index (every write acknowledged before the question is at or below it), notes
//! when it asked on its own monotonic clock, and waits until it has applied up to the
//! index. Its data then misses no write acknowledged before that moment, so a read
//! served now is at most as stale as the time since; a read index is reused while that
//! is within the reader's bound. No clock agreement between nodes is needed.

use std::time::{Duration, Instant};

use hanse_proto::v1 as pb;
use hanse_shard::ShardId;

use crate::actors::{ReadIndex, ReplicaHandle};
use crate::state::NodeState;

/// Why a follower could not catch up in time.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FollowerError {
    #[error("shard {shard}: this node knows no other node leading it")]
    NoLeader { shard: ShardId },
    #[error("shard {shard}: its leader gave no read index in time")]
    NoReadIndex { shard: ShardId },
    #[error("shard {shard}: this replica did not apply up to the read index in time")]
    Behind { shard: ShardId },
}

/// Waits until `replica` (not its shard's leader) holds every write acknowledged before
/// the moment it answers, which is at most `reuse_within` ago: a read index asked for
/// that recently is reused, else a new one is asked for. Gives up after `wait` from that
/// moment.
pub(crate) async fn barrier(
    state: &NodeState,
    replica: &ReplicaHandle,
    reuse_within: Duration,
    wait: Duration,
) -> Result<Instant, FollowerError> {
    let shard = replica.shard;
    let cached = *replica.read_index.lock().expect("read index lock");
    let read_index = match cached.filter(|r| r.asked.elapsed() <= reuse_within) {
        Some(read_index) => read_index,
        None => {
            let asked = Instant::now();
            let index = leader_read_index(state, replica, wait).await?;
            let read_index = ReadIndex { asked, index };
            let mut newest = replica.read_index.lock().expect("read index lock");
            if newest.is_none_or(|r| r.asked < asked) {
                *newest = Some(read_index);
            }
            read_index
        }
    };
    let left = wait.saturating_sub(read_index.asked.elapsed());
    replica
        .group
        .raft
        .wait(Some(left))
        .applied_index_at_least(Some(read_index.index), "applied up to the read index")
        .await
        .map_err(|_| FollowerError::Behind { shard })?;
    Ok(read_index.asked)
}

/// The read index of `replica`'s shard, from its leader on another node.
async fn leader_read_index(
    state: &NodeState,
    replica: &ReplicaHandle,
    wait: Duration,
) -> Result<u64, FollowerError> {
    let shard = replica.shard;
    let started = Instant::now();
    let me = state.node_id;
    // A replica that has just been created (a split, a move) or has seen an election
    // learns its leader within a heartbeat: wait for that instead of refusing at once.
    let known = replica.leader().filter(|&node| node != me);
    let leader = match known {
        Some(leader) => leader,
        None => replica
            .group
            .raft
            .wait(Some(wait))
            .metrics(
                |m| m.current_leader.is_some_and(|node| node != me),
                "a leader on another node",
            )
            .await
            .ok()
            .and_then(|m| m.current_leader)
            .ok_or(FollowerError::NoLeader { shard })?,
    };
    let addr = replica.member_addr(Some(leader));
    let mut kv = state
        .peers
        .kv(&addr)
        .map_err(|_| FollowerError::NoLeader { shard })?;
    let request = state
        .peers
        .request(pb::ReadIndexRequest { shard_id: shard });
    let left = wait.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, kv.read_index(request)).await {
        Ok(Ok(answer)) if answer.get_ref().error.is_none() => Ok(answer.get_ref().index),
        _ => Err(FollowerError::NoReadIndex { shard }),
    }
}
