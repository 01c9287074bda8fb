//! Key ranges. A range is `[start, end)` over bytewise-ordered keys, where an empty `end`
//! means "to the last key". Keys from byte `0xff` on are the system keyspace.

use std::ops::{Bound, RangeBounds};

use crate::descriptor::ShardDescriptor;

/// The first key of the system keyspace: every key from here on belongs to Hanse itself
/// (the meta shard's routing table and node directory), as FoundationDB reserves `\xff`.
/// Users store keys below it.
pub const SYSTEM_KEYSPACE_START: &[u8] = &[0xff];

/// Whether `key` lies in the system keyspace.
pub fn is_system_key(key: &[u8]) -> bool {
    key >= SYSTEM_KEYSPACE_START
}

/// The smallest key greater than `key`.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// The range `[key, successor(key))`, which holds exactly `key`.
pub fn single_key(key: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (key.to_vec(), successor(key))
}

/// `range` as a half-open `[start, end)` with an empty `end` meaning unbounded.
pub fn half_open<R: RangeBounds<Vec<u8>>>(range: &R) -> (Vec<u8>, Vec<u8>) {
    let start = match range.start_bound() {
        Bound::Included(k) => k.clone(),
        Bound::Excluded(k) => successor(k),
        Bound::Unbounded => Vec::new(),
    };
    let end = match range.end_bound() {
        Bound::Included(k) => successor(k),
        // `..b""` holds nothing: the empty range `[start, [0])` from the first key.
        Bound::Excluded(k) if k.is_empty() => vec![0],
        Bound::Excluded(k) => k.clone(),
        Bound::Unbounded => Vec::new(),
    };
    (start, end)
}

/// The part of `[start, end)` inside `shard`.
pub fn intersect(shard: &ShardDescriptor, start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lo = start.max(shard.start.as_slice()).to_vec();
    let hi = match (end.is_empty(), shard.end.is_empty()) {
        (true, _) => shard.end.clone(),
        (false, true) => end.to_vec(),
        (false, false) => end.min(shard.end.as_slice()).to_vec(),
    };
    (lo, hi)
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
    fn ranges_are_half_open_with_an_empty_end_unbounded() {
        assert_eq!(
            half_open(&(b"a".to_vec()..b"c".to_vec())),
            (b"a".to_vec(), b"c".to_vec())
        );
        assert_eq!(
            half_open(&(b"a".to_vec()..=b"c".to_vec())),
            (b"a".to_vec(), b"c\0".to_vec())
        );
        assert_eq!(half_open(&(b"a".to_vec()..)), (b"a".to_vec(), Vec::new()));
        assert_eq!(half_open(&(..b"".to_vec())), (Vec::new(), vec![0]));
        assert_eq!(single_key(b"k"), (b"k".to_vec(), b"k\0".to_vec()));
    }

    #[test]
    fn intersecting_keeps_the_part_inside_the_shard() {
        let s = shard(b"f", b"p");
        assert_eq!(intersect(&s, b"a", b"z"), (b"f".to_vec(), b"p".to_vec()));
        assert_eq!(intersect(&s, b"g", b""), (b"g".to_vec(), b"p".to_vec()));
        let last = shard(b"f", b"");
        assert_eq!(intersect(&last, b"a", b""), (b"f".to_vec(), Vec::new()));
        assert_eq!(intersect(&last, b"a", b"h"), (b"f".to_vec(), b"h".to_vec()));
    }

    #[test]
    fn the_system_keyspace_starts_at_0xff() {
        assert!(is_system_key(&[0xff]) && is_system_key(&[0xff, 0]));
        assert!(!is_system_key(&[0xfe, 0xff]));
    }
}
