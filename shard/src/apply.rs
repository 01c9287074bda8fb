//! The effect of a shard command, decided from the shard's descriptor and current values
//! alone. The state machine writes the effect; the proposer uses [`check_route`] to refuse
//! a stale request before it reaches the log.

use crate::command::{KeyValue, Mutation, Rejection, ShardRequest, ShardResponse};
use crate::descriptor::{Epoch, ShardDescriptor, ShardId};

/// What one command does when applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// User-key changes, applied together with the log position.
    pub mutations: Vec<Mutation>,
    /// Sorted puts to ingest as one file (the bulk path), after `mutations`.
    pub ingested: Vec<KeyValue>,
    /// The shard's descriptor after the command (split, merge steps).
    pub descriptor: Option<ShardDescriptor>,
    /// A shard the command creates (the right half of a split).
    pub created: Option<ShardDescriptor>,
    /// A shard the command absorbs (the source of a committed merge); its range is now
    /// this shard's.
    pub absorbed: Option<ShardDescriptor>,
    pub response: ShardResponse,
}

impl Effect {
    fn respond(response: ShardResponse) -> Self {
        Effect {
            mutations: Vec::new(),
            ingested: Vec::new(),
            descriptor: None,
            created: None,
            absorbed: None,
            response,
        }
    }

    fn rejected(rejection: Rejection) -> Self {
        Effect::respond(ShardResponse::Rejected(rejection))
    }

    /// The shard's descriptor becomes `descriptor`, which is also the answer.
    fn merge_step(descriptor: ShardDescriptor) -> Self {
        Effect {
            descriptor: Some(descriptor.clone()),
            ..Effect::respond(ShardResponse::Merge(descriptor))
        }
    }
}

/// Checks that a data request routed with `epoch` for `keys` still belongs to `shard`.
/// Data commands compare only the version: a membership change (conf_ver) moves no keys.
// A refusal carries the current descriptor, so the client can re-route at once; refusals
// are rare, so their size costs nothing on the common path.
#[allow(clippy::result_large_err)]
pub fn check_route<'k>(
    shard: &ShardDescriptor,
    epoch: Epoch,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Result<(), Rejection> {
    if shard.merging.is_some() {
        return Err(Rejection::Frozen {
            current: shard.clone(),
        });
    }
    if epoch.version != shard.epoch.version {
        return Err(Rejection::EpochMismatch {
            current: shard.clone(),
        });
    }
    match keys.into_iter().find(|key| !shard.contains(key)) {
        Some(key) => Err(Rejection::KeyNotInShard {
            key: key.to_vec(),
            current: shard.clone(),
        }),
        None => Ok(()),
    }
}

/// The first of `pairs` whose key is not above the one before, if any: ingested keys
/// must strictly ascend, since every replica builds a file of sorted keys from them.
pub fn first_unordered(pairs: &[KeyValue]) -> Option<usize> {
    pairs
        .windows(2)
        .position(|two| two[0].key >= two[1].key)
        .map(|before| before + 1)
}

/// What must hold on this node before a command may be applied here; the runtime waits
/// for it (with a bound), so that applying stays a decision on local state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// This node's replica of `shard` has applied through `index`: a merge commits the
    /// source's data as this node holds it, which is complete only once the source's
    /// replica here applied its PrepareMerge.
    Applied { shard: ShardId, index: u64 },
}

/// The precondition of applying `request` to `shard` here, if it has one. A merge
/// commit that would change nothing (a repeat, or one the target's epoch refuses) has
/// none.
pub fn precondition(shard: &ShardDescriptor, request: &ShardRequest) -> Option<Precondition> {
    match request {
        ShardRequest::CommitMerge {
            source,
            expected_epoch,
        } => match (source.merging, shard.commit_merge(source, *expected_epoch)) {
            (Some(merge), Ok(_)) => Some(Precondition::Applied {
                shard: source.id,
                index: merge.index,
            }),
            _ => None,
        },
        _ => None,
    }
}

/// Decides the effect of `request`, the command at log index `index`, on `shard`. `read`
/// returns a key's current value (as of every earlier command); it is consulted only by
/// compare-and-swap.
pub fn decide<E>(
    shard: &ShardDescriptor,
    request: ShardRequest,
    index: u64,
    read: impl FnOnce(&[u8]) -> Result<Option<Vec<u8>>, E>,
) -> Result<Effect, E> {
    let effect = match request {
        ShardRequest::Write { epoch, mutations } => {
            match check_route(shard, epoch, mutations.iter().map(Mutation::key)) {
                Ok(()) => Effect {
                    mutations,
                    ..Effect::respond(ShardResponse::Applied)
                },
                Err(rejection) => Effect::rejected(rejection),
            }
        }
        ShardRequest::Ingest { epoch, pairs } => {
            // The keys ascend, so the first and the last tell whether all are in range.
            let ends = pairs.first().into_iter().chain(pairs.last());
            let routed = check_route(shard, epoch, ends.map(|pair| pair.key.as_slice()));
            match (routed, first_unordered(&pairs)) {
                (Err(rejection), _) => Effect::rejected(rejection),
                (Ok(()), Some(at)) => Effect::rejected(Rejection::IngestOrder { at }),
                (Ok(()), None) => Effect {
                    ingested: pairs,
                    ..Effect::respond(ShardResponse::Applied)
                },
            }
        }
        ShardRequest::CompareAndSwap {
            epoch,
            key,
            expected,
            new,
        } => {
            if let Err(rejection) = check_route(shard, epoch, [key.as_slice()]) {
                return Ok(Effect::rejected(rejection));
            }
            let previous = read(&key)?;
            let swapped = previous == expected;
            let mutations = match (swapped, new) {
                (false, _) => Vec::new(),
                (true, Some(value)) => vec![Mutation::Put { key, value }],
                (true, None) => vec![Mutation::Delete { key }],
            };
            Effect {
                mutations,
                ..Effect::respond(ShardResponse::CompareAndSwap { swapped, previous })
            }
        }
        // Committed already (a coordinator that did not hear the answer runs it again):
        // answered as done, so that it does not roll the source back.
        ShardRequest::CommitMerge { source, .. }
            if source.merging.is_some_and(|m| m.into == shard.id) && shard.covers(&source) =>
        {
            Effect::respond(ShardResponse::Merge(shard.clone()))
        }
        // A frozen shard changes only by the end of its own merge: it takes no split, no
        // merge of its own and no neighbour (which its merge would then lose). A fence
        // need not move it on, since it takes no commit anyway.
        ShardRequest::Split { .. }
        | ShardRequest::PrepareMerge { .. }
        | ShardRequest::CommitMerge { .. }
            if shard.merging.is_some() =>
        {
            Effect::rejected(Rejection::Frozen {
                current: shard.clone(),
            })
        }
        ShardRequest::FenceMerge { .. } if shard.merging.is_some() => {
            Effect::respond(ShardResponse::Merge(shard.clone()))
        }
        ShardRequest::Split {
            at,
            new_shard_id,
            expected_epoch,
        } => match shard.split(&at, new_shard_id, expected_epoch) {
            Ok((left, right)) => Effect {
                descriptor: Some(left.clone()),
                created: Some(right.clone()),
                ..Effect::respond(ShardResponse::Split { left, right })
            },
            Err(e) => Effect::rejected(Rejection::Split(e)),
        },
        ShardRequest::PrepareMerge {
            into,
            expected_epoch,
        } => match shard.prepare_merge(&into, expected_epoch, index) {
            Ok(frozen) => Effect::merge_step(frozen),
            Err(e) => Effect::rejected(Rejection::Merge(e)),
        },
        ShardRequest::CommitMerge {
            source,
            expected_epoch,
        } => match shard.commit_merge(&source, expected_epoch) {
            Ok(merged) => Effect {
                absorbed: Some(source),
                ..Effect::merge_step(merged)
            },
            Err(e) => Effect::rejected(Rejection::Merge(e)),
        },
        ShardRequest::FenceMerge { source } => match shard.fence_merge(&source) {
            Some(fenced) => Effect::merge_step(fenced),
            None => Effect::respond(ShardResponse::Merge(shard.clone())),
        },
        ShardRequest::RollbackMerge { into } => match shard.rollback_merge(into) {
            Ok(thawed) => Effect::merge_step(thawed),
            Err(e) => Effect::rejected(Rejection::Merge(e)),
        },
        // The state machine applies reports on the meta shard before it gets here.
        ShardRequest::Report { .. } => {
            Effect::rejected(Rejection::NotMetaShard { shard: shard.id })
        }
    };
    Ok(effect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{ReplicaDescriptor, ReplicaRole, SplitError};
    use std::convert::Infallible;

    fn shard() -> ShardDescriptor {
        ShardDescriptor {
            start: b"b".to_vec(),
            end: b"m".to_vec(),
            ..ShardDescriptor::whole_keyspace(1, vec![])
        }
    }

    fn put(key: &str) -> Mutation {
        Mutation::Put {
            key: key.into(),
            value: b"v".to_vec(),
        }
    }

    fn no_read(_: &[u8]) -> Result<Option<Vec<u8>>, Infallible> {
        panic!("this command must not read")
    }

    fn value(v: Option<&str>) -> impl FnOnce(&[u8]) -> Result<Option<Vec<u8>>, Infallible> {
        let v = v.map(|s| s.as_bytes().to_vec());
        move |_| Ok(v)
    }

    #[test]
    fn write_in_range_with_current_epoch_applies_every_mutation() {
        let s = shard();
        let request = ShardRequest::Write {
            epoch: s.epoch,
            mutations: vec![put("c"), Mutation::Delete { key: b"d".to_vec() }],
        };
        let effect = decide(&s, request, 1, no_read).unwrap();
        assert_eq!(effect.mutations.len(), 2);
        assert_eq!(effect.response, ShardResponse::Applied);
    }

    #[test]
    fn write_with_one_key_outside_applies_nothing() {
        let s = shard();
        let request = ShardRequest::Write {
            epoch: s.epoch,
            mutations: vec![put("c"), put("z")],
        };
        let effect = decide(&s, request, 1, no_read).unwrap();
        assert!(effect.mutations.is_empty());
        assert!(matches!(
            effect.response,
            ShardResponse::Rejected(Rejection::KeyNotInShard { ref key, .. }) if key == b"z"
        ));
    }

    fn ingest(s: &ShardDescriptor, keys: &[&str]) -> ShardRequest {
        let pairs = keys
            .iter()
            .map(|key| KeyValue {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
            })
            .collect();
        ShardRequest::Ingest {
            epoch: s.epoch,
            pairs,
        }
    }

    #[test]
    fn an_ingest_of_ascending_keys_in_range_is_taken_whole() {
        let s = shard();
        let effect = decide(&s, ingest(&s, &["b", "c", "l"]), 1, no_read).unwrap();
        assert_eq!(effect.ingested.len(), 3);
        assert!(effect.mutations.is_empty());
        assert_eq!(effect.response, ShardResponse::Applied);
    }

    #[test]
    fn an_ingest_out_of_order_or_out_of_range_changes_nothing() {
        let s = shard();
        for (keys, refused) in [
            (&["c", "c"][..], Rejection::IngestOrder { at: 1 }),
            (&["c", "e", "d"][..], Rejection::IngestOrder { at: 2 }),
        ] {
            let effect = decide(&s, ingest(&s, keys), 1, no_read).unwrap();
            assert!(effect.ingested.is_empty(), "{keys:?}");
            assert_eq!(effect.response, ShardResponse::Rejected(refused));
        }
        for keys in [&["a", "c"][..], &["c", "m"][..]] {
            let effect = decide(&s, ingest(&s, keys), 1, no_read).unwrap();
            assert!(effect.ingested.is_empty(), "{keys:?}");
            assert!(matches!(
                effect.response,
                ShardResponse::Rejected(Rejection::KeyNotInShard { .. })
            ));
        }
    }

    #[test]
    fn stale_version_is_rejected_with_the_current_descriptor() {
        let s = shard();
        let stale = Epoch {
            version: s.epoch.version - 1,
            ..s.epoch
        };
        let effect = decide(
            &s,
            ShardRequest::Write {
                epoch: stale,
                mutations: vec![put("c")],
            },
            1,
            no_read,
        )
        .unwrap();
        assert_eq!(
            effect.response,
            ShardResponse::Rejected(Rejection::EpochMismatch { current: s.clone() })
        );
        // A membership change alone (conf_ver) does not invalidate data routing.
        let newer_conf = Epoch {
            conf_ver: s.epoch.conf_ver + 5,
            ..s.epoch
        };
        assert!(check_route(&s, newer_conf, [&b"c"[..]]).is_ok());
    }

    #[test]
    fn compare_and_swap_swaps_only_on_a_match() {
        let s = shard();
        let cas = |expected: Option<&str>, new: Option<&str>| ShardRequest::CompareAndSwap {
            epoch: s.epoch,
            key: b"c".to_vec(),
            expected: expected.map(|e| e.as_bytes().to_vec()),
            new: new.map(|n| n.as_bytes().to_vec()),
        };
        let hit = decide(&s, cas(Some("1"), Some("2")), 1, value(Some("1"))).unwrap();
        assert_eq!(
            hit.mutations,
            vec![Mutation::Put {
                key: b"c".to_vec(),
                value: b"2".to_vec()
            }]
        );
        assert_eq!(
            hit.response,
            ShardResponse::CompareAndSwap {
                swapped: true,
                previous: Some(b"1".to_vec())
            }
        );

        let miss = decide(&s, cas(Some("1"), Some("2")), 1, value(Some("9"))).unwrap();
        assert!(miss.mutations.is_empty());
        assert_eq!(
            miss.response,
            ShardResponse::CompareAndSwap {
                swapped: false,
                previous: Some(b"9".to_vec())
            }
        );

        let create = decide(&s, cas(None, Some("1")), 1, value(None)).unwrap();
        assert_eq!(create.mutations.len(), 1);
        let delete = decide(&s, cas(Some("1"), None), 1, value(Some("1"))).unwrap();
        assert_eq!(
            delete.mutations,
            vec![Mutation::Delete { key: b"c".to_vec() }]
        );
    }

    #[test]
    fn a_frozen_shard_refuses_data_and_splits_until_the_merge_ends() {
        let voter = |node| ReplicaDescriptor {
            node,
            region: "r".into(),
            role: ReplicaRole::Voter,
        };
        let whole = ShardDescriptor::whole_keyspace(1, vec![voter(1)]);
        let (left, right) = whole.split(b"m", 2, whole.epoch).unwrap();
        let prepare = ShardRequest::PrepareMerge {
            into: left.clone(),
            expected_epoch: right.epoch,
        };
        let prepared = decide(&right, prepare, 40, no_read).unwrap();
        let frozen = prepared.descriptor.expect("frozen descriptor");
        assert_eq!(frozen.merging.map(|m| (m.into, m.index)), Some((1, 40)));

        let write = ShardRequest::Write {
            epoch: frozen.epoch,
            mutations: vec![put("x")],
        };
        let refused = decide(&frozen, write, 41, no_read).unwrap();
        assert!(refused.mutations.is_empty());
        assert!(matches!(
            refused.response,
            ShardResponse::Rejected(Rejection::Frozen { .. })
        ));
        let split = ShardRequest::Split {
            at: b"p".to_vec(),
            new_shard_id: 3,
            expected_epoch: frozen.epoch,
        };
        assert!(
            decide(&frozen, split, 42, no_read)
                .unwrap()
                .created
                .is_none()
        );

        let commit = ShardRequest::CommitMerge {
            source: frozen.clone(),
            expected_epoch: left.epoch,
        };
        // It applies only once the source's replica here applied its preparation.
        let prepared_at = frozen.merging.unwrap().index;
        assert_eq!(
            precondition(&left, &commit),
            Some(Precondition::Applied {
                shard: frozen.id,
                index: prepared_at
            })
        );
        let rollback = ShardRequest::RollbackMerge { into: 1 };
        assert_eq!(precondition(&frozen, &rollback), None);
        let committed = decide(&left, commit, 9, no_read).unwrap();
        assert_eq!(committed.absorbed.as_ref(), Some(&frozen));
        let merged = committed.descriptor.unwrap();
        assert!(merged.contains(b"x") && merged.contains(b"a"));
        // Run again (its first answer was lost): done, and nothing changes.
        let again = ShardRequest::CommitMerge {
            source: frozen.clone(),
            expected_epoch: left.epoch,
        };
        // A repeat waits for nothing: the source's replica here may be gone by now.
        assert_eq!(precondition(&merged, &again), None);
        let repeated = decide(&merged, again, 10, no_read).unwrap();
        assert_eq!(repeated.response, ShardResponse::Merge(merged.clone()));
        assert!(repeated.descriptor.is_none() && repeated.absorbed.is_none());

        let rollback = ShardRequest::RollbackMerge { into: 1 };
        let thawed = decide(&frozen, rollback, 43, no_read).unwrap();
        assert_eq!(thawed.descriptor.unwrap().merging, None);
    }

    #[test]
    fn split_yields_both_descriptors_or_a_reason() {
        let s = shard();
        let ok = decide(
            &s,
            ShardRequest::Split {
                at: b"g".to_vec(),
                new_shard_id: 2,
                expected_epoch: s.epoch,
            },
            1,
            no_read,
        )
        .unwrap();
        let (left, right) = (
            ok.descriptor.expect("new left"),
            ok.created.expect("new right"),
        );
        assert_eq!(
            (left.end.as_slice(), right.start.as_slice()),
            (&b"g"[..], &b"g"[..])
        );
        let bad = decide(
            &s,
            ShardRequest::Split {
                at: b"z".to_vec(),
                new_shard_id: 2,
                expected_epoch: s.epoch,
            },
            1,
            no_read,
        )
        .unwrap();
        assert_eq!(
            bad.response,
            ShardResponse::Rejected(Rejection::Split(SplitError::KeyOutsideRange))
        );
        assert!(bad.descriptor.is_none() && bad.created.is_none());
    }
}
