//! Conversions between the shard layer's types and their `hanse.v1` messages (feature
//! `shard`; the client SDK speaks only the messages).

use crate::v1 as pb;
use hanse_shard::meta::{NodeRecord, ShardRecord, ShardStats};
use hanse_shard::{Epoch, MergeState, ReplicaDescriptor, ReplicaRole, ShardDescriptor};

/// `d` as its message.
pub fn to_proto(d: &ShardDescriptor) -> pb::ShardDescriptor {
    pb::ShardDescriptor {
        id: d.id,
        start: d.start.clone(),
        end: d.end.clone(),
        epoch: Some(pb::Epoch {
            version: d.epoch.version,
            conf_ver: d.epoch.conf_ver,
        }),
        replicas: d
            .replicas
            .iter()
            .map(|r| pb::Replica {
                node: r.node,
                region: r.region.clone(),
                role: match r.role {
                    ReplicaRole::Voter => pb::ReplicaRole::Voter,
                    ReplicaRole::Learner => pb::ReplicaRole::Learner,
                } as i32,
            })
            .collect(),
        merging: d.merging.map(|m| pb::MergeState {
            into: m.into,
            index: m.index,
            into_epoch: Some(pb::Epoch {
                version: m.into_epoch.version,
                conf_ver: m.into_epoch.conf_ver,
            }),
        }),
    }
}

/// The descriptor a message carries; `None` when it lacks its epoch.
pub fn from_proto(d: pb::ShardDescriptor) -> Option<ShardDescriptor> {
    let epoch = d.epoch?;
    Some(ShardDescriptor {
        id: d.id,
        start: d.start,
        end: d.end,
        epoch: Epoch {
            version: epoch.version,
            conf_ver: epoch.conf_ver,
        },
        replicas: d
            .replicas
            .into_iter()
            .map(|r| ReplicaDescriptor {
                node: r.node,
                region: r.region,
                role: if r.role == pb::ReplicaRole::Learner as i32 {
                    ReplicaRole::Learner
                } else {
                    ReplicaRole::Voter
                },
            })
            .collect(),
        merging: d.merging.map(|m| {
            let into_epoch = m.into_epoch.unwrap_or_default();
            MergeState {
                into: m.into,
                index: m.index,
                into_epoch: Epoch {
                    version: into_epoch.version,
                    conf_ver: into_epoch.conf_ver,
                },
            }
        }),
    })
}

pub fn load_to_proto(stats: &ShardStats) -> pb::ShardLoad {
    pb::ShardLoad {
        size_bytes: stats.size_bytes,
        keys: stats.keys,
        reads_per_sec: stats.reads_per_sec,
        writes_per_sec: stats.writes_per_sec,
        split_key: stats.split_key.clone().unwrap_or_default(),
        bytes_written_per_sec: stats.bytes_written_per_sec,
        sampled_keys: stats
            .sampled_keys
            .iter()
            .map(|(key, count)| pb::SampledKey {
                key: key.clone(),
                count: *count,
            })
            .collect(),
        origins: stats
            .origins
            .iter()
            .map(|(region, per_sec)| pb::RegionRequests {
                region: region.clone(),
                per_sec: *per_sec,
            })
            .collect(),
        replica_lag: stats.replica_lag,
    }
}

pub fn report_to_proto(record: &ShardRecord) -> pb::ShardReport {
    pb::ShardReport {
        descriptor: Some(to_proto(&record.descriptor)),
        leader_node: record.leader.unwrap_or(0),
        load: Some(load_to_proto(&record.stats)),
        reported_at_ms: record.reported_at_ms,
    }
}

/// The record a report carries; `None` when it lacks its descriptor.
pub fn report_from_proto(report: pb::ShardReport) -> Option<ShardRecord> {
    let load = report.load.unwrap_or_default();
    Some(ShardRecord {
        descriptor: from_proto(report.descriptor?)?,
        leader: (report.leader_node != 0).then_some(report.leader_node),
        stats: ShardStats {
            size_bytes: load.size_bytes,
            keys: load.keys,
            reads_per_sec: load.reads_per_sec,
            writes_per_sec: load.writes_per_sec,
            bytes_written_per_sec: load.bytes_written_per_sec,
            split_key: (!load.split_key.is_empty()).then_some(load.split_key),
            sampled_keys: load
                .sampled_keys
                .into_iter()
                .map(|s| (s.key, s.count))
                .collect(),
            origins: load
                .origins
                .into_iter()
                .map(|o| (o.region, o.per_sec))
                .collect(),
            replica_lag: load.replica_lag,
        },
        reported_at_ms: report.reported_at_ms,
    })
}

pub fn node_to_proto(node: &NodeRecord) -> pb::NodeInfo {
    pb::NodeInfo {
        node_id: node.node,
        region: node.region.clone(),
        addr: node.addr.clone(),
        reported_at_ms: node.reported_at_ms,
    }
}

pub fn node_from_proto(node: pb::NodeInfo) -> NodeRecord {
    NodeRecord {
        node: node.node_id,
        region: node.region,
        addr: node.addr,
        reported_at_ms: node.reported_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_survive_the_round_trip() {
        let d = ShardDescriptor {
            id: 7,
            start: b"a".to_vec(),
            end: b"m".to_vec(),
            epoch: Epoch {
                version: 3,
                conf_ver: 41,
            },
            replicas: vec![
                ReplicaDescriptor {
                    node: 1,
                    region: "eu-hamburg".into(),
                    role: ReplicaRole::Voter,
                },
                ReplicaDescriptor {
                    node: 4,
                    region: "au-sydney".into(),
                    role: ReplicaRole::Learner,
                },
            ],
            merging: Some(MergeState {
                into: 3,
                index: 99,
                into_epoch: Epoch {
                    version: 4,
                    conf_ver: 2,
                },
            }),
        };
        assert_eq!(from_proto(to_proto(&d)), Some(d));
    }
}
