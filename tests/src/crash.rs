//! What the crash writer writes and reports, and how the checker reads it back.
//!
//! Batch `i` writes `n` keys `b{i:012}/{j}` (j < n), each with the value `v{i}:{n}`, in
//! one atomic batch; after it is acknowledged the writer prints `ack {i} {n}`. Between
//! batches it advances a counter key with compare-and-swap and prints `cas {value}` after
//! each acknowledged swap. Every few batches it splits the shard at the next batch's
//! prefix, so batches never straddle a shard boundary and splits happen under crashes too.

use std::collections::BTreeMap;

/// The key the writer advances with compare-and-swap.
pub const COUNTER_KEY: &[u8] = b"counter";

/// The prefix of batch `i`'s keys.
pub fn batch_prefix(i: u64) -> Vec<u8> {
    format!("b{i:012}/").into_bytes()
}

/// The `j`-th key of batch `i`.
pub fn batch_key(i: u64, j: u64) -> Vec<u8> {
    let mut key = batch_prefix(i);
    key.extend_from_slice(j.to_string().as_bytes());
    key
}

/// The value every key of batch `i` (of `n` keys) gets.
pub fn batch_value(i: u64, n: u64) -> Vec<u8> {
    format!("v{i}:{n}").into_bytes()
}

/// One line the writer prints once a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    Batch { index: u64, keys: u64 },
    Counter { value: u64 },
}

impl Ack {
    pub fn line(&self) -> String {
        match self {
            Ack::Batch { index, keys } => format!("ack {index} {keys}"),
            Ack::Counter { value } => format!("cas {value}"),
        }
    }

    pub fn parse(line: &str) -> Option<Ack> {
        let mut words = line.split_whitespace();
        let ack = match (words.next()?, words.next()?.parse().ok()?) {
            ("ack", index) => Ack::Batch {
                index,
                keys: words.next()?.parse().ok()?,
            },
            ("cas", value) => Ack::Counter { value },
            _ => return None,
        };
        words.next().is_none().then_some(ack)
    }
}

/// Checks the store's full contents (`rows`, as scanned) against what was acknowledged.
/// Returns every violation found, in words.
pub fn check(rows: &[(Vec<u8>, Vec<u8>)], acked: &[Ack]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut batches: BTreeMap<u64, (u64, u64)> = BTreeMap::new(); // index -> (keys seen, keys declared)
    let mut counter = None;
    for (key, value) in rows {
        if key == COUNTER_KEY {
            counter = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            continue;
        }
        let parsed = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix('b'))
            .and_then(|k| k.split_once('/'))
            .and_then(|(i, j)| Some((i.parse::<u64>().ok()?, j.parse::<u64>().ok()?)));
        let Some((index, j)) = parsed else {
            problems.push(format!("unexpected key {:?}", String::from_utf8_lossy(key)));
            continue;
        };
        let declared = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.split_once(':'))
            .filter(|(v, _)| *v == format!("v{index}"))
            .and_then(|(_, n)| n.parse::<u64>().ok());
        match declared {
            Some(n) if j < n => {
                let entry = batches.entry(index).or_insert((0, n));
                entry.0 += 1;
            }
            _ => problems.push(format!(
                "key {:?} has a value it was never given: {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            )),
        }
    }
    for (index, (seen, declared)) in &batches {
        if seen != declared {
            problems.push(format!(
                "batch {index} is half applied: {seen} of {declared} keys"
            ));
        }
    }
    let mut last_counter = None;
    for ack in acked {
        match *ack {
            Ack::Batch { index, keys } => {
                if batches.get(&index).map(|b| b.0) != Some(keys) {
                    problems.push(format!(
                        "acknowledged batch {index} ({keys} keys) is missing"
                    ));
                }
            }
            Ack::Counter { value } => last_counter = Some(value),
        }
    }
    if let Some(acked) = last_counter
        && counter.is_none_or(|c| c < acked)
    {
        problems.push(format!(
            "counter is {counter:?}, but {acked} was acknowledged"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(i: u64, n: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|j| (batch_key(i, j), batch_value(i, n)))
            .collect()
    }

    #[test]
    fn ack_lines_round_trip() {
        for ack in [Ack::Batch { index: 7, keys: 3 }, Ack::Counter { value: 9 }] {
            assert_eq!(Ack::parse(&ack.line()), Some(ack));
        }
        assert_eq!(Ack::parse("ack 1"), None);
        assert_eq!(Ack::parse("ack 1 2 3"), None);
    }

    #[test]
    fn a_complete_history_passes() {
        let mut rows = batch(1, 2);
        rows.extend(batch(2, 3));
        rows.push((COUNTER_KEY.to_vec(), b"5".to_vec()));
        let acked = [Ack::Batch { index: 1, keys: 2 }, Ack::Counter { value: 5 }];
        assert_eq!(check(&rows, &acked), Vec::<String>::new());
    }

    #[test]
    fn lost_half_applied_and_stale_writes_are_caught() {
        let mut rows = batch(1, 3);
        rows.pop();
        rows.push((COUNTER_KEY.to_vec(), b"4".to_vec()));
        let acked = [
            Ack::Batch { index: 1, keys: 3 },
            Ack::Batch { index: 2, keys: 1 },
            Ack::Counter { value: 5 },
        ];
        let problems = check(&rows, &acked);
        assert_eq!(problems.len(), 4, "{problems:?}");
    }
}
