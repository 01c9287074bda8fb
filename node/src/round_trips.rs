//! The round trips each node measured to its peers (its Raft transport's, see
//! [`hanse_consensus::round_trip`]), as their reports bring them to the meta shard's
//! leader, where the planner frames the cluster with them. In memory only: a leader that
//! takes over hears from every node within a report interval, and a measurement older
//! than a few seconds is worth little.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hanse_consensus::knobs::ROUND_TRIP_STALE_AFTER;
use hanse_consensus::round_trip::PeerRoundTrip;
use hanse_proto::v1 as pb;
use hanse_shard::NodeId;

/// Every node's latest measured round trips, on the meta shard's leader.
#[derive(Default)]
pub(crate) struct ClusterRoundTrips {
    reported: Mutex<HashMap<NodeId, (Instant, Vec<PeerRoundTrip>)>>,
}

impl ClusterRoundTrips {
    /// Keeps `trips`, measured by `node`, in place of what it reported before.
    pub fn record(&self, node: NodeId, trips: Vec<PeerRoundTrip>) {
        let mut reported = self.reported.lock().expect("round trips lock");
        reported.insert(node, (Instant::now(), trips));
    }

    /// What `node` reported, unless that is too old to go by.
    pub fn of(&self, node: NodeId) -> Vec<PeerRoundTrip> {
        let reported = self.reported.lock().expect("round trips lock");
        reported
            .get(&node)
            .filter(|(at, _)| at.elapsed() <= ROUND_TRIP_STALE_AFTER)
            .map(|(_, trips)| trips.clone())
            .unwrap_or_default()
    }
}

pub(crate) fn to_proto(trip: &PeerRoundTrip) -> pb::PeerRoundTrip {
    pb::PeerRoundTrip {
        node_id: trip.node,
        region: trip.region.clone(),
        micros: trip.round_trip.as_micros() as u64,
    }
}

pub(crate) fn from_proto(trip: pb::PeerRoundTrip) -> PeerRoundTrip {
    PeerRoundTrip {
        node: trip.node_id,
        region: trip.region,
        round_trip: Duration::from_micros(trip.micros),
    }
}
