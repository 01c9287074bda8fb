use serde::{Deserialize, Serialize};

/// Identifies a shard (one key range, one Raft group) across the cluster. Shard 0 is
/// the meta shard; data shards start at 1.
pub type ShardId = u64;
/// Identifies a node (one `hanse` process with one RocksDB).
pub type NodeId = u64;

/// A shard's epoch. `version` grows on split and merge (the range changed), `conf_ver`
/// on membership change (the replica set changed; it is the log index of that change). A request routed with an older
/// epoch is rejected with the current descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epoch {
    pub version: u64,
    pub conf_ver: u64,
}

/// Whether a replica votes in its shard's Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaRole {
    Voter,
    Learner,
}

/// One member of a shard's replica set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaDescriptor {
    pub node: NodeId,
    pub region: String,
    pub role: ReplicaRole,
}

/// A shard: the key range `[start, end)` (an empty `end` means "to the last key"), its
/// epoch and its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardDescriptor {
    pub id: ShardId,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub epoch: Epoch,
    pub replicas: Vec<ReplicaDescriptor>,
    /// Set while the shard is frozen for a merge into its left neighbour.
    pub merging: Option<MergeState>,
}

/// A shard frozen for a merge: it takes no writes and no splits until its left
/// neighbour `into` commits the merge (and this shard is gone) or it rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MergeState {
    pub into: ShardId,
    /// The log index of the PrepareMerge command in this shard: every replica must have
    /// applied up to here before the left neighbour may take the range over.
    pub index: u64,
    /// The epoch of `into` when this shard froze. The merge commits only while `into`
    /// still has it, so once `into` moved on (see [`ShardDescriptor::fence_merge`]) this
    /// shard may roll back without racing a late commit.
    pub into_epoch: Epoch,
}

/// Why a merge step is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MergeError {
    #[error("the shard's epoch is {current:?}, the merge expected {expected:?}")]
    StaleEpoch { expected: Epoch, current: Epoch },
    #[error("shards {left} and {right} are not neighbours")]
    NotAdjacent { left: ShardId, right: ShardId },
    #[error(
        "shards {left} and {right} have different replica sets; move replicas so they match first"
    )]
    ReplicasDiffer { left: ShardId, right: ShardId },
    #[error("shard {shard} is already being merged into shard {into}")]
    AlreadyMerging { shard: ShardId, into: ShardId },
    #[error("shard {shard} is not being merged into shard {into}")]
    NotMergingInto { shard: ShardId, into: ShardId },
}

/// Why a split at a given key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SplitError {
    #[error("split key is outside the shard's range or equal to its start")]
    KeyOutsideRange,
    #[error("the shard's epoch is {current:?}, the split expected {expected:?}")]
    StaleEpoch { expected: Epoch, current: Epoch },
    #[error("shard id {0} is already taken")]
    IdTaken(ShardId),
}

impl ShardDescriptor {
    /// The single shard that covers every key, as a fresh store starts.
    pub fn whole_keyspace(id: ShardId, replicas: Vec<ReplicaDescriptor>) -> Self {
        ShardDescriptor {
            id,
            start: Vec::new(),
            end: Vec::new(),
            epoch: Epoch {
                version: 1,
                conf_ver: 1,
            },
            replicas,
            merging: None,
        }
    }

    /// Whether `key` lies in `[start, end)`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// Whether every key of `other` is in this shard.
    pub fn covers(&self, other: &ShardDescriptor) -> bool {
        let ends_after = self.end.is_empty() || (!other.end.is_empty() && other.end <= self.end);
        self.start <= other.start && ends_after
    }

    /// Whether `[start, end)` (empty `end` = unbounded) overlaps this shard.
    pub fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        let starts_before_our_end = self.end.is_empty() || start < self.end.as_slice();
        let ends_after_our_start = end.is_empty() || end > self.start.as_slice();
        starts_before_our_end && ends_after_our_start
    }

    /// This shard with replica set `replicas`, changed by the membership entry at log
    /// index `index`. When the set differs from the current one (order does not matter)
    /// conf_ver moves to `index`, or one past its current value when that is not above
    /// it (a shard made by a split starts a new log but keeps its parent's conf_ver);
    /// otherwise nothing changes. Every replica applies the same entries to the same
    /// descriptor, so all arrive at the same conf_ver, and it only grows.
    pub fn with_replicas(
        &self,
        mut replicas: Vec<ReplicaDescriptor>,
        index: u64,
    ) -> ShardDescriptor {
        replicas.sort_by_key(|r| r.node);
        let mut current = self.replicas.clone();
        current.sort_by_key(|r| r.node);
        if current == replicas {
            return self.clone();
        }
        ShardDescriptor {
            epoch: Epoch {
                version: self.epoch.version,
                conf_ver: index.max(self.epoch.conf_ver + 1),
            },
            replicas,
            ..self.clone()
        }
    }

    /// The replica this shard has on `node`, if any.
    pub fn replica_on(&self, node: NodeId) -> Option<&ReplicaDescriptor> {
        self.replicas.iter().find(|r| r.node == node)
    }

    /// The shards that result from splitting `self` at `at`: `self` shrunk to
    /// `[start, at)` and a new shard `right_id` over `[at, end)`, both one version up,
    /// with the same replicas. A pure function: every replica computes the same result.
    pub fn split(
        &self,
        at: &[u8],
        right_id: ShardId,
        expected: Epoch,
    ) -> Result<(ShardDescriptor, ShardDescriptor), SplitError> {
        if expected != self.epoch {
            return Err(SplitError::StaleEpoch {
                expected,
                current: self.epoch,
            });
        }
        if !self.contains(at) || at == self.start.as_slice() {
            return Err(SplitError::KeyOutsideRange);
        }
        if right_id == self.id {
            return Err(SplitError::IdTaken(right_id));
        }
        let epoch = Epoch {
            version: self.epoch.version + 1,
            conf_ver: self.epoch.conf_ver,
        };
        let left = ShardDescriptor {
            end: at.to_vec(),
            epoch,
            ..self.clone()
        };
        let right = ShardDescriptor {
            id: right_id,
            start: at.to_vec(),
            end: self.end.clone(),
            epoch,
            replicas: self.replicas.clone(),
            merging: None,
        };
        Ok((left, right))
    }

    /// Whether `other` has the same replicas (node and role) as this shard.
    pub fn same_replicas(&self, other: &ShardDescriptor) -> bool {
        let set = |d: &ShardDescriptor| {
            let mut set: Vec<(NodeId, ReplicaRole)> =
                d.replicas.iter().map(|r| (r.node, r.role)).collect();
            set.sort_by_key(|(node, _)| *node);
            set
        };
        set(self) == set(other)
    }

    /// This shard (the right one) frozen for a merge into `into`, its left neighbour, by
    /// the PrepareMerge command at log index `index`; one version up, so requests routed
    /// before are refused.
    pub fn prepare_merge(
        &self,
        into: &ShardDescriptor,
        expected: Epoch,
        index: u64,
    ) -> Result<ShardDescriptor, MergeError> {
        if let Some(state) = self.merging {
            return Err(MergeError::AlreadyMerging {
                shard: self.id,
                into: state.into,
            });
        }
        if expected != self.epoch {
            return Err(MergeError::StaleEpoch {
                expected,
                current: self.epoch,
            });
        }
        check_neighbours(into, self)?;
        Ok(ShardDescriptor {
            epoch: Epoch {
                version: self.epoch.version + 1,
                conf_ver: self.epoch.conf_ver,
            },
            merging: Some(MergeState {
                into: into.id,
                index,
                into_epoch: into.epoch,
            }),
            ..self.clone()
        })
    }

    /// This shard (the left one) extended over `source`, a right neighbour frozen for a
    /// merge into it. The version passes both shards' versions, so a request routed to
    /// either before the merge is refused.
    pub fn commit_merge(
        &self,
        source: &ShardDescriptor,
        expected: Epoch,
    ) -> Result<ShardDescriptor, MergeError> {
        let Some(merge) = source.merging.filter(|m| m.into == self.id) else {
            return Err(MergeError::NotMergingInto {
                shard: source.id,
                into: self.id,
            });
        };
        // This shard must be as it was when the source froze: a fenced or otherwise
        // changed shard no longer takes the source over (it may be rolling back).
        for expected in [expected, merge.into_epoch] {
            if expected != self.epoch {
                return Err(MergeError::StaleEpoch {
                    expected,
                    current: self.epoch,
                });
            }
        }
        check_neighbours(self, source)?;
        Ok(ShardDescriptor {
            end: source.end.clone(),
            epoch: Epoch {
                version: self.epoch.version.max(source.epoch.version) + 1,
                conf_ver: self.epoch.conf_ver,
            },
            ..self.clone()
        })
    }

    /// This shard (the left one) one version up, so that a commit of `source`, frozen
    /// for a merge into it, can no longer apply: the step before the source rolls back.
    /// `None` when this shard already took `source` over (the merge committed and the
    /// source must not roll back).
    pub fn fence_merge(&self, source: &ShardDescriptor) -> Option<ShardDescriptor> {
        if self.covers(source) {
            return None;
        }
        Some(ShardDescriptor {
            epoch: Epoch {
                version: self.epoch.version + 1,
                conf_ver: self.epoch.conf_ver,
            },
            ..self.clone()
        })
    }

    /// This shard unfrozen after a merge into `into` that could not finish; one version
    /// up.
    pub fn rollback_merge(&self, into: ShardId) -> Result<ShardDescriptor, MergeError> {
        if self.merging.map(|m| m.into) != Some(into) {
            return Err(MergeError::NotMergingInto {
                shard: self.id,
                into,
            });
        }
        Ok(ShardDescriptor {
            epoch: Epoch {
                version: self.epoch.version + 1,
                conf_ver: self.epoch.conf_ver,
            },
            merging: None,
            ..self.clone()
        })
    }
}

/// Whether `right` directly follows `left` and both have the same replicas: what any
/// merge of the two needs.
fn check_neighbours(left: &ShardDescriptor, right: &ShardDescriptor) -> Result<(), MergeError> {
    let ids = (left.id, right.id);
    if left.end != right.start || right.start.is_empty() {
        return Err(MergeError::NotAdjacent {
            left: ids.0,
            right: ids.1,
        });
    }
    if !left.same_replicas(right) {
        return Err(MergeError::ReplicasDiffer {
            left: ids.0,
            right: ids.1,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(start: &[u8], end: &[u8]) -> ShardDescriptor {
        ShardDescriptor {
            start: start.to_vec(),
            end: end.to_vec(),
            ..ShardDescriptor::whole_keyspace(1, vec![])
        }
    }

    #[test]
    fn empty_end_is_unbounded() {
        let s = shard(b"m", b"");
        assert!(s.contains(b"m"));
        assert!(s.contains(&[0xff; 100]));
        assert!(!s.contains(b"a"));
        assert!(s.overlaps(b"a", b"n"));
        assert!(!s.overlaps(b"a", b"m"));
    }

    #[test]
    fn split_shrinks_left_creates_right_and_bumps_both_versions() {
        let parent = shard(b"a", b"z");
        let (left, right) = parent.split(b"k", 9, parent.epoch).unwrap();
        assert_eq!(
            (left.start.as_slice(), left.end.as_slice()),
            (&b"a"[..], &b"k"[..])
        );
        assert_eq!(
            (right.start.as_slice(), right.end.as_slice()),
            (&b"k"[..], &b"z"[..])
        );
        assert_eq!((left.id, right.id), (1, 9));
        assert_eq!(left.epoch.version, parent.epoch.version + 1);
        assert_eq!(right.epoch, left.epoch);
        assert_eq!(right.replicas, parent.replicas);
    }

    fn voter(node: NodeId) -> ReplicaDescriptor {
        ReplicaDescriptor {
            node,
            region: "r".into(),
            role: ReplicaRole::Voter,
        }
    }

    /// Shards 1 `[-inf, m)` and 2 `[m, +inf)` on nodes 1 and 2, split from one.
    fn neighbours() -> (ShardDescriptor, ShardDescriptor) {
        let whole = ShardDescriptor::whole_keyspace(1, vec![voter(1), voter(2)]);
        whole.split(b"m", 2, whole.epoch).unwrap()
    }

    #[test]
    fn a_merge_freezes_the_right_extends_the_left_and_outranks_both_versions() {
        let (left, right) = neighbours();
        let frozen = right.prepare_merge(&left, right.epoch, 17).unwrap();
        assert_eq!(
            frozen.merging,
            Some(MergeState {
                into: 1,
                index: 17,
                into_epoch: left.epoch
            })
        );
        assert_eq!(frozen.epoch.version, right.epoch.version + 1);
        assert_eq!(
            frozen.prepare_merge(&left, frozen.epoch, 18),
            Err(MergeError::AlreadyMerging { shard: 2, into: 1 })
        );
        let merged = left.commit_merge(&frozen, left.epoch).unwrap();
        assert_eq!(
            (merged.start.as_slice(), merged.end.as_slice()),
            (&b""[..], &b""[..])
        );
        assert_eq!(merged.id, 1);
        assert!(merged.epoch.version > left.epoch.version);
        assert!(merged.epoch.version > frozen.epoch.version);
        assert_eq!(merged.merging, None);
        // Committing twice, or with a stale epoch, is refused.
        assert!(matches!(
            merged.commit_merge(&frozen, merged.epoch),
            Err(MergeError::StaleEpoch { .. })
        ));
        assert!(matches!(
            left.commit_merge(&frozen, Epoch::default()),
            Err(MergeError::StaleEpoch { .. })
        ));
        // Once committed there is nothing to fence: the source must not roll back.
        assert_eq!(merged.fence_merge(&frozen), None);
    }

    #[test]
    fn a_fenced_left_shard_refuses_the_commit_so_the_source_may_roll_back() {
        let (left, right) = neighbours();
        let frozen = right.prepare_merge(&left, right.epoch, 17).unwrap();
        let fenced = left.fence_merge(&frozen).expect("not merged yet");
        assert_eq!(fenced.epoch.version, left.epoch.version + 1);
        assert_eq!((&fenced.start, &fenced.end), (&left.start, &left.end));
        // Not even a coordinator that read the fenced epoch commits this preparation.
        for expected in [left.epoch, fenced.epoch] {
            assert!(matches!(
                fenced.commit_merge(&frozen, expected),
                Err(MergeError::StaleEpoch { .. })
            ));
        }
        assert_eq!(frozen.rollback_merge(1).unwrap().merging, None);
    }

    #[test]
    fn a_merge_needs_neighbours_with_the_same_replicas_and_can_roll_back() {
        let (left, right) = neighbours();
        let moved = ShardDescriptor {
            replicas: vec![voter(1), voter(3)],
            ..right.clone()
        };
        assert_eq!(
            moved.prepare_merge(&left, moved.epoch, 5),
            Err(MergeError::ReplicasDiffer { left: 1, right: 2 })
        );
        assert_eq!(
            left.prepare_merge(&right, left.epoch, 5),
            Err(MergeError::NotAdjacent { left: 2, right: 1 })
        );
        let frozen = right.prepare_merge(&left, right.epoch, 5).unwrap();
        let thawed = frozen.rollback_merge(1).unwrap();
        assert_eq!(thawed.merging, None);
        assert_eq!(thawed.epoch.version, frozen.epoch.version + 1);
        assert_eq!(
            thawed.rollback_merge(1),
            Err(MergeError::NotMergingInto { shard: 2, into: 1 })
        );
        assert!(matches!(
            left.commit_merge(&right, left.epoch),
            Err(MergeError::NotMergingInto { .. })
        ));
    }

    #[test]
    fn a_new_replica_set_takes_the_given_conf_ver_and_the_same_set_keeps_it() {
        let replica = |node, role| ReplicaDescriptor {
            node,
            region: "r".into(),
            role,
        };
        let shard = ShardDescriptor::whole_keyspace(
            1,
            vec![
                replica(2, ReplicaRole::Voter),
                replica(1, ReplicaRole::Voter),
            ],
        );
        let same = shard.with_replicas(
            vec![
                replica(1, ReplicaRole::Voter),
                replica(2, ReplicaRole::Voter),
            ],
            7,
        );
        assert_eq!(same.epoch, shard.epoch);
        let grown = shard.with_replicas(
            vec![
                replica(1, ReplicaRole::Voter),
                replica(2, ReplicaRole::Voter),
                replica(3, ReplicaRole::Learner),
            ],
            7,
        );
        assert_eq!(grown.epoch.conf_ver, 7);
        assert_eq!(grown.epoch.version, shard.epoch.version);
        assert_eq!(
            grown.replica_on(3).map(|r| r.role),
            Some(ReplicaRole::Learner)
        );
        let promoted = grown.with_replicas(
            vec![
                replica(1, ReplicaRole::Voter),
                replica(2, ReplicaRole::Voter),
                replica(3, ReplicaRole::Voter),
            ],
            9,
        );
        assert_eq!(promoted.epoch.conf_ver, 9);
        // A split's new shard counts its log from the start but keeps growing conf_ver.
        let (_, child) = promoted.split(b"m", 2, promoted.epoch).unwrap();
        let shrunk = child.with_replicas(
            vec![
                replica(1, ReplicaRole::Voter),
                replica(2, ReplicaRole::Voter),
            ],
            3,
        );
        assert_eq!(shrunk.epoch.conf_ver, 10);
    }

    #[test]
    fn split_refuses_stale_epoch_and_keys_outside() {
        let parent = shard(b"a", b"z");
        let stale = Epoch {
            version: 0,
            conf_ver: 1,
        };
        assert!(matches!(
            parent.split(b"k", 9, stale),
            Err(SplitError::StaleEpoch { .. })
        ));
        assert_eq!(
            parent.split(b"a", 9, parent.epoch),
            Err(SplitError::KeyOutsideRange)
        );
        assert_eq!(
            parent.split(b"z", 9, parent.epoch),
            Err(SplitError::KeyOutsideRange)
        );
        assert_eq!(
            parent.split(b"k", 1, parent.epoch),
            Err(SplitError::IdTaken(1))
        );
    }
}
