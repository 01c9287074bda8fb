//! Hibernation of idle shard groups, and node-level liveness that keeps them safe.
//!
//! A group with nothing to do still ticks: its leader heartbeats every replica every
//! heartbeat interval and each follower keeps an election timer. Over thousands of shards
//! that is most of a node's idle CPU. A hibernating group stops ticking on every replica
//! (openraft's runtime switch for its timer: no heartbeats, no elections) and wakes on
//! the first thing that needs it:
//!
//! - the leader, on a client request or an admin step (a proposal, a read, a membership
//!   change, a transfer);
//! - a follower, on any Raft message that is more than a heartbeat (entries, a vote
//!   request, a snapshot, a nudge to campaign): the leader has woken;
//! - a follower, when [`Liveness`] says its leader's node is gone, staggered over the
//!   groups that node led (see [`wake_led_by`]).
//!
//! A leader falls asleep only once every replica holds its whole log and it has applied
//! it, after `idle` without a request; a follower after half that without new entries, so
//! it sleeps before its leader's heartbeats stop and never mistakes their end for a dead
//! leader. While a follower sleeps its leader's failure is detected once per node pair
//! (one heartbeat per peer, not per shard) instead of once per shard: no acknowledged
//! write depends on a sleeping group's timers, only its availability does.
//!
//! A restarted node starts each group it follows asleep when the leader it last knew is on
//! another node (that leader may be asleep and send nothing), and awake otherwise; if that
//! node is gone, liveness wakes the group once it has heard nothing from it for
//! `dead_after` since the start.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so that the deterministic simulation's paused time drives it too.
use tokio::time::Instant;

use hanse_shard::NodeId;

/// When groups hibernate, and when a silent peer counts as dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HibernationOptions {
    pub enabled: bool,
    /// A leader with no request for this long (and every replica caught up) hibernates;
    /// a follower with no new entries for half of it.
    pub idle: Duration,
    /// A peer heard nothing from (no answer to a call, no message) for this long is dead:
    /// the groups it led and that sleep here are woken to elect a new leader.
    pub dead_after: Duration,
    /// How often each peer is asked whether it lives when nothing else was heard from it,
    /// and how often groups are checked for idleness.
    pub heartbeat: Duration,
}

impl Default for HibernationOptions {
    fn default() -> Self {
        HibernationOptions {
            enabled: true,
            idle: Duration::from_secs(5),
            dead_after: Duration::from_millis(1_600),
            heartbeat: Duration::from_millis(200),
        }
    }
}

impl HibernationOptions {
    /// How long a follower waits without new entries before it sleeps: half a leader's,
    /// so that it sleeps first.
    pub fn follower_idle(&self) -> Duration {
        self.idle / 2
    }
}

/// One group's sleep: whether it sleeps, and when it last had work.
#[derive(Debug)]
pub(crate) struct Sleep {
    pub(crate) options: HibernationOptions,
    state: Mutex<SleepState>,
}

#[derive(Debug, Clone, Copy)]
struct SleepState {
    asleep: bool,
    last_active: Instant,
}

impl Sleep {
    pub(crate) fn new(options: HibernationOptions, asleep: bool) -> Sleep {
        Sleep {
            options,
            state: Mutex::new(SleepState {
                asleep,
                last_active: Instant::now(),
            }),
        }
    }

    /// Notes work now; a sleeping group's timer is turned on again through `turn_on`
    /// (under the lock, so a concurrent [`Sleep::sleep_if_idle`] cannot undo it).
    pub(crate) fn wake(&self, turn_on: impl FnOnce()) {
        let mut state = self.state.lock().expect("sleep lock");
        state.last_active = Instant::now();
        if state.asleep {
            state.asleep = false;
            turn_on();
        }
    }

    /// Puts the group to sleep (turning its timer off through `turn_off`) if it had no
    /// work for `idle` and `quiet` holds; answers whether it sleeps now. The lock orders
    /// this against [`Sleep::wake`]: work that arrives meanwhile keeps it awake.
    pub(crate) fn sleep_if_idle(
        &self,
        idle: Duration,
        now: Instant,
        quiet: impl FnOnce() -> bool,
        turn_off: impl FnOnce(),
    ) -> bool {
        let mut state = self.state.lock().expect("sleep lock");
        if state.asleep {
            return true;
        }
        if now.saturating_duration_since(state.last_active) < idle || !quiet() {
            return false;
        }
        state.asleep = true;
        turn_off();
        true
    }

    pub(crate) fn asleep(&self) -> bool {
        self.state.lock().expect("sleep lock").asleep
    }
}

/// When this node last heard from each peer: any answered call to it and any message from
/// it counts, so a busy pair needs no heartbeat of its own.
#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    dead_after: Duration,
    heard: Mutex<HashMap<NodeId, Instant>>,
}

impl Liveness {
    pub fn new(dead_after: Duration) -> Liveness {
        Liveness {
            started: Instant::now(),
            dead_after,
            heard: Mutex::default(),
        }
    }

    /// Notes that `peer` answered or called at `now`.
    pub fn heard(&self, peer: NodeId, now: Instant) {
        let mut heard = self.heard.lock().expect("liveness lock");
        let last = heard.entry(peer).or_insert(now);
        *last = (*last).max(now);
    }

    /// When `peer` was last heard from (this node's start, if never).
    fn last_heard(&self, peer: NodeId) -> Instant {
        let heard = self.heard.lock().expect("liveness lock");
        heard.get(&peer).copied().unwrap_or(self.started)
    }

    /// Whether `peer` was heard from within `dead_after` of `now` (or this node started
    /// less than that ago).
    pub fn is_alive(&self, peer: NodeId, now: Instant) -> bool {
        now.saturating_duration_since(self.last_heard(peer)) < self.dead_after
    }

    /// Whether `peer` was heard from within `within` of `now`: no need to ask it.
    pub fn heard_within(&self, peer: NodeId, within: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.last_heard(peer)) < within
    }
}

/// Tracks which peers are dead, so each death is acted on once.
#[derive(Debug, Default)]
pub struct Deaths {
    dead: std::collections::BTreeSet<NodeId>,
}

impl Deaths {
    /// The peers of `peers` that died since the last call (by `liveness` at `now`);
    /// a peer heard from again is alive again, and its next death counts anew.
    pub fn newly_dead(
        &mut self,
        peers: impl IntoIterator<Item = NodeId>,
        liveness: &Liveness,
        now: Instant,
    ) -> Vec<NodeId> {
        let mut newly = Vec::new();
        for peer in peers {
            match liveness.is_alive(peer, now) {
                true => {
                    self.dead.remove(&peer);
                }
                false => {
                    if self.dead.insert(peer) {
                        newly.push(peer);
                    }
                }
            }
        }
        newly
    }
}

/// A woken group's turn in an election storm: each sleeping group the dead node led gets
/// a delay, spread evenly over `window` so that thousands of elections do not start in
/// the same millisecond; of a group's surviving voters, one (chosen by shard id, so the
/// survivors agree without talking) campaigns at once when its turn comes, the others
/// only if no leader reached them by `window` later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeTurn {
    pub after: Duration,
    pub campaign: bool,
}

/// The turn of the `position`-th of `count` groups woken together, on a voter that is
/// (or not) its shard's chosen candidate.
pub fn wake_turn(position: usize, count: usize, window: Duration, chosen: bool) -> WakeTurn {
    let spread = window.mul_f64(position as f64 / count.max(1) as f64);
    match chosen {
        true => WakeTurn {
            after: spread,
            campaign: true,
        },
        false => WakeTurn {
            after: spread + window,
            campaign: false,
        },
    }
}

/// Whether `node` is the voter of `voters` (the dead leader left out) that campaigns
/// first for `shard`.
pub fn chosen_candidate(shard: u64, node: NodeId, voters: &[NodeId]) -> bool {
    let mut voters = voters.to_vec();
    voters.sort_unstable();
    voters.dedup();
    !voters.is_empty() && voters[(shard % voters.len() as u64) as usize] == node
}

/// The window an election storm is spread over: long enough that `groups` campaigns do
/// not pile up (a quarter millisecond each), bounded so that the last shard is led again
/// soon after the first.
pub fn storm_window(groups: usize) -> Duration {
    Duration::from_micros(250 * groups as u64).min(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_sleeps_only_when_idle_and_quiet_and_work_wakes_it() {
        let sleep = Sleep::new(HibernationOptions::default(), false);
        let start = Instant::now();
        let idle = Duration::from_secs(5);
        let mut switched = Vec::new();
        assert!(!sleep.sleep_if_idle(idle, start, || true, || switched.push("off")));
        let later = start + Duration::from_secs(6);
        assert!(!sleep.sleep_if_idle(idle, later, || false, || switched.push("off")));
        assert!(sleep.sleep_if_idle(idle, later, || true, || switched.push("off")));
        assert!(sleep.asleep());
        // Asleep already: the timer is not turned off twice.
        assert!(sleep.sleep_if_idle(idle, later, || true, || switched.push("off")));
        sleep.wake(|| switched.push("on"));
        sleep.wake(|| switched.push("on"));
        assert!(!sleep.asleep());
        assert_eq!(switched, ["off", "on"]);
        // Just woken: not idle any more.
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(!sleep.sleep_if_idle(idle, soon, || true, || switched.push("off")));
    }

    #[test]
    fn a_peer_is_dead_after_silence_and_each_death_counts_once() {
        let liveness = Liveness::new(Duration::from_secs(2));
        let start = Instant::now();
        let mut deaths = Deaths::default();
        assert!(liveness.is_alive(2, start), "alive until proven silent");
        liveness.heard(2, start + Duration::from_millis(1_500));
        let at = |s| start + Duration::from_secs(s);
        assert!(deaths.newly_dead([2, 3], &liveness, at(1)).is_empty());
        assert_eq!(deaths.newly_dead([2, 3], &liveness, at(3)), [3]);
        assert_eq!(deaths.newly_dead([2, 3], &liveness, at(4)), [2]);
        assert!(deaths.newly_dead([2, 3], &liveness, at(5)).is_empty());
        liveness.heard(3, at(5));
        assert!(deaths.newly_dead([2, 3], &liveness, at(5)).is_empty());
        assert_eq!(deaths.newly_dead([2, 3], &liveness, at(8)), [3]);
        assert!(liveness.heard_within(3, Duration::from_secs(1), at(5)));
        assert!(!liveness.heard_within(3, Duration::from_secs(1), at(7)));
    }

    #[test]
    fn a_storm_is_spread_and_one_survivor_campaigns_first() {
        let window = storm_window(3_000);
        assert_eq!(window, Duration::from_millis(750));
        assert_eq!(storm_window(1_000_000), Duration::from_secs(2));
        let first = wake_turn(0, 3_000, window, true);
        let last = wake_turn(2_999, 3_000, window, true);
        assert_eq!(first.after, Duration::ZERO);
        assert!(last.after < window && last.after > window * 9 / 10);
        let other = wake_turn(0, 3_000, window, false);
        assert!(!other.campaign && other.after >= window);
        // The survivors of each shard agree on one candidate, and shards alternate.
        for shard in 0..10u64 {
            let chosen: Vec<bool> = [2, 3]
                .iter()
                .map(|&n| chosen_candidate(shard, n, &[3, 2]))
                .collect();
            assert_eq!(chosen.iter().filter(|c| **c).count(), 1, "{shard}");
        }
        assert!(chosen_candidate(0, 2, &[2, 3]) && chosen_candidate(1, 3, &[2, 3]));
        assert!(!chosen_candidate(0, 2, &[]));
    }
}
