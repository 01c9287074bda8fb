//! Each peer's round trip as this node's Raft transport sees it: every batch of Raft
//! messages to a peer is a measurement, at no extra cost. A call's answer also waits for
//! the peer's log write and for the batch it rode in, so the estimate is the smallest
//! round trip of each [`ROUND_TRIP_WINDOW`] (the network and the least processing, as
//! TCP's min-RTT filter sees a path), smoothed over windows so that one quiet or one
//! congested window moves it only part of the way. Heartbeats alone give a shard's peers
//! several samples a window. Only a leader sends Raft messages, so a node that leads no
//! shard a peer also holds would measure nothing: [`crate::Transport::probe_unmeasured`]
//! sends such a peer an empty batch once a window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hanse_shard::NodeId;

use crate::knobs::{ROUND_TRIP_SMOOTHING, ROUND_TRIP_STALE_AFTER, ROUND_TRIP_WINDOW};

#[derive(Debug, Clone)]
struct Estimate {
    region: String,
    /// Smoothed over the finished windows; none before the first window ends.
    smoothed: Option<Duration>,
    /// The smallest sample of the window under way, and when that window began.
    window_min: Duration,
    window_started: Instant,
    last_sample: Instant,
}

impl Estimate {
    fn current(&self) -> Duration {
        self.smoothed.unwrap_or(self.window_min)
    }
}

/// One peer's smoothed round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoundTrip {
    pub node: NodeId,
    pub region: String,
    pub round_trip: Duration,
}

/// The smoothed round trip to each peer.
#[derive(Debug, Default)]
pub struct RoundTrips {
    peers: Mutex<HashMap<NodeId, Estimate>>,
}

impl RoundTrips {
    /// Notes that a call to `peer` (in `region`) took `took`, answered at `now`.
    pub fn observe(&self, peer: NodeId, region: &str, took: Duration, now: Instant) {
        let mut peers = self.peers.lock().expect("round trips lock");
        let estimate = peers.entry(peer).or_insert_with(|| Estimate {
            region: region.to_string(),
            smoothed: None,
            window_min: took,
            window_started: now,
            last_sample: now,
        });
        if now.duration_since(estimate.window_started) >= ROUND_TRIP_WINDOW {
            let finished = estimate.window_min.as_secs_f64();
            let smoothed = match estimate.smoothed {
                Some(before) => {
                    let before = before.as_secs_f64();
                    before + ROUND_TRIP_SMOOTHING * (finished - before)
                }
                None => finished,
            };
            estimate.smoothed = Some(Duration::from_secs_f64(smoothed));
            estimate.window_min = took;
            estimate.window_started = now;
        } else {
            estimate.window_min = estimate.window_min.min(took);
        }
        estimate.last_sample = now;
        if estimate.region != region {
            estimate.region = region.to_string();
        }
    }

    /// Whether `peer` was measured within the last [`ROUND_TRIP_WINDOW`] before `now`.
    pub fn measured_lately(&self, peer: NodeId, now: Instant) -> bool {
        let peers = self.peers.lock().expect("round trips lock");
        peers
            .get(&peer)
            .is_some_and(|e| now.duration_since(e.last_sample) < ROUND_TRIP_WINDOW)
    }

    /// Every peer heard from within [`ROUND_TRIP_STALE_AFTER`] of `now`, with its region
    /// and round trip, by node id.
    pub fn current(&self, now: Instant) -> Vec<PeerRoundTrip> {
        let peers = self.peers.lock().expect("round trips lock");
        let mut trips: Vec<PeerRoundTrip> = peers
            .iter()
            .filter(|(_, e)| now.duration_since(e.last_sample) <= ROUND_TRIP_STALE_AFTER)
            .map(|(&node, e)| PeerRoundTrip {
                node,
                region: e.region.clone(),
                round_trip: e.current(),
            })
            .collect();
        trips.sort_unstable_by_key(|t| t.node);
        trips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn of(trips: &RoundTrips, now: Instant) -> Vec<(NodeId, Duration)> {
        trips
            .current(now)
            .into_iter()
            .map(|t| (t.node, t.round_trip))
            .collect()
    }

    #[test]
    fn the_estimate_is_the_windows_fastest_call_smoothed() {
        let trips = RoundTrips::default();
        let start = Instant::now();
        // First window: calls slowed by log writes, the fastest 250 ms.
        for (i, ms) in [400, 250, 310, 900].into_iter().enumerate() {
            trips.observe(2, "b", ms * MS, start + i as u32 * 100 * MS);
        }
        assert_eq!(of(&trips, start + 400 * MS), vec![(2, 250 * MS)]);
        // The second window begins: the first one's minimum is the estimate.
        trips.observe(2, "b", 600 * MS, start + ROUND_TRIP_WINDOW);
        assert_eq!(of(&trips, start + ROUND_TRIP_WINDOW), vec![(2, 250 * MS)]);
        // A path that got faster (150 ms) moves the estimate part of the way per window.
        let mut now = start + ROUND_TRIP_WINDOW;
        let mut seen = Vec::new();
        for _ in 0..12 {
            trips.observe(2, "b", 150 * MS, now);
            now += ROUND_TRIP_WINDOW;
            trips.observe(2, "b", 150 * MS, now);
            seen.push(of(&trips, now)[0].1);
        }
        assert!(seen.windows(2).all(|w| w[1] <= w[0]), "{seen:?}");
        assert!(
            seen[0] > 200 * MS,
            "one window moves it only part of the way"
        );
        let last = *seen.last().unwrap();
        assert!(last < 155 * MS && last >= 150 * MS, "{last:?}");
    }

    #[test]
    fn a_peer_not_heard_from_lately_is_left_out() {
        let trips = RoundTrips::default();
        let start = Instant::now();
        trips.observe(3, "c", 10 * MS, start);
        trips.observe(2, "b", 20 * MS, start + ROUND_TRIP_STALE_AFTER);
        let later = start + ROUND_TRIP_STALE_AFTER + MS;
        assert_eq!(of(&trips, later), vec![(2, 20 * MS)]);
    }
}
