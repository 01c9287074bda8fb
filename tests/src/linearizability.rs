//! A per-key linearizability checker for histories of gets, puts and compare-and-swaps,
//! the chaos harness's judge.
//!
//! Each key is a register and is checked on its own (P-compositionality: a history is
//! linearizable when every key's sub-history is). Per key, a depth-first search in the
//! manner of Wing and Gong picks, at each step, an operation that may take effect next
//! (one invoked before every operation still pending has completed), with Lowe's
//! memoisation of the (operations taken, register value) pairs already explored.
//!
//! Outcomes: an operation that failed certainly did not happen and is dropped; one whose
//! outcome is unknown (a timeout) may take effect at any time after its invocation, or
//! never; a read whose outcome is unknown tells nothing and is dropped. A key whose search
//! outlasts its time budget is reported unknown rather than guessed.
//!
//! Beside the search, two direct checks name what went wrong in plain terms:
//! [`lost_writes`] (an acknowledged write missing from the end state) and [`stale_reads`]
//! (a read of a value an acknowledged write had already replaced).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

pub type Value = Vec<u8>;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Get,
    Put(Value),
    /// Set the key to `new` (`None`: delete it) if it holds `expected` (`None`: absent).
    Cas {
        expected: Option<Value>,
        new: Option<Value>,
    },
}

/// What it got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Return {
    /// A get's answer.
    Read(Option<Value>),
    /// A put was acknowledged.
    Written,
    /// A compare-and-swap's answer.
    Swapped(bool),
    /// Refused: it certainly did not take effect.
    Failed,
    /// No answer (a timeout): it may or may not have taken effect.
    Unknown,
}

/// One operation of a history: a call on a key, its answer, and when it was invoked and
/// answered (any monotonic unit; `completed` is ignored for unknown outcomes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub key: Vec<u8>,
    pub call: Call,
    pub ret: Return,
    pub invoked: u64,
    pub completed: u64,
}

/// The judgement of a whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// No order explains this key's history (the smallest such key's is given).
    Invalid {
        key: Vec<u8>,
        history: Vec<Operation>,
    },
    /// Some key's search ran out of time (and none was found invalid).
    Unknown {
        key: Vec<u8>,
    },
}

/// Checks `history` (every key starts absent), spending at most `budget` on each key.
pub fn check(history: &[Operation], budget: Duration) -> Verdict {
    let mut by_key: BTreeMap<&[u8], Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    let mut invalid: Option<(Vec<u8>, Vec<Operation>)> = None;
    let mut unknown = None;
    for (key, ops) in by_key {
        match check_key(&ops, budget) {
            Some(true) => {}
            Some(false) => {
                if invalid.as_ref().is_none_or(|(_, h)| ops.len() < h.len()) {
                    invalid = Some((key.to_vec(), ops));
                }
            }
            None => unknown = unknown.or(Some(key.to_vec())),
        }
    }
    match (invalid, unknown) {
        (Some((key, history)), _) => Verdict::Invalid { key, history },
        (None, Some(key)) => Verdict::Unknown { key },
        (None, None) => Verdict::Valid,
    }
}

/// The value an acknowledged or unknown write leaves, with its operation: a put's value,
/// a compare-and-swap's new value when it swapped (or may have).
fn written(op: &Operation) -> Option<Option<&Value>> {
    match (&op.call, &op.ret) {
        (Call::Put(v), Return::Written | Return::Unknown) => Some(Some(v)),
        (Call::Cas { new, .. }, Return::Swapped(true) | Return::Unknown) => Some(new.as_ref()),
        _ => None,
    }
}

/// Whether `later` began after `earlier` was answered (unknown outcomes never were).
fn strictly_after(earlier: &Operation, later: &Operation) -> bool {
    earlier.ret != Return::Unknown && earlier.completed < later.invoked
}

/// Each key's writes (acknowledged or of unknown outcome), in history order.
fn writes_by_key(history: &[Operation]) -> HashMap<&[u8], Vec<&Operation>> {
    let mut by_key: HashMap<&[u8], Vec<&Operation>> = HashMap::new();
    for op in history.iter().filter(|op| written(op).is_some()) {
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key
}

/// Acknowledged writes missing from the end state. `finals` holds each key's value as
/// read once every fault healed; it must have been left by a write (acknowledged or of
/// unknown outcome) that no acknowledged write followed in real time, and a key no write
/// reached must be absent. Values are assumed unique per key, as the harness writes them.
pub fn lost_writes(
    history: &[Operation],
    finals: &BTreeMap<Vec<u8>, Option<Value>>,
) -> Vec<String> {
    let by_key = writes_by_key(history);
    let mut lost = Vec::new();
    for (key, value) in finals {
        let writes = by_key.get(key.as_slice()).cloned().unwrap_or_default();
        let acknowledged: Vec<&Operation> = writes
            .iter()
            .copied()
            .filter(|op| op.ret != Return::Unknown)
            .collect();
        let overwritten = |w: &Operation| acknowledged.iter().any(|later| strictly_after(w, later));
        let explained = match value {
            None => !acknowledged.iter().any(|w| written(w) != Some(None)),
            Some(_) => writes
                .iter()
                .any(|w| written(w) == Some(value.as_ref()) && !overwritten(w)),
        };
        if !explained {
            lost.push(format!(
                "{}: ends as {:?}, which the acknowledged writes {:?} do not leave",
                String::from_utf8_lossy(key),
                value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).to_string()),
                acknowledged
                    .iter()
                    .map(|w| (w.invoked, w.completed))
                    .collect::<Vec<_>>()
            ));
        }
    }
    lost
}

/// Acknowledged reads that returned a value some acknowledged write had already replaced
/// before the read began. Values are assumed unique per key.
pub fn stale_reads(history: &[Operation]) -> Vec<String> {
    let by_key = writes_by_key(history);
    let mut stale = Vec::new();
    for read in history {
        let (Call::Get, Return::Read(value)) = (&read.call, &read.ret) else {
            continue;
        };
        let writes = by_key
            .get(read.key.as_slice())
            .into_iter()
            .flatten()
            .copied();
        // The write the value came from (none for an absent key never deleted).
        let source = writes.clone().find(|w| written(w) == Some(value.as_ref()));
        let replaced = writes.clone().any(|later| {
            later.ret != Return::Unknown
                && strictly_after(later, read)
                && written(later) != Some(value.as_ref())
                && source.is_none_or(|w| strictly_after(w, later))
        });
        if replaced {
            stale.push(format!(
                "{}: read {:?} at {}, after an acknowledged write replaced it",
                String::from_utf8_lossy(&read.key),
                value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).to_string()),
                read.invoked
            ));
        }
    }
    stale
}

/// The shortest prefix in time of one key's non-linearizable `history` that no order
/// explains either: the operations invoked by some moment, those still open then counted
/// as of unknown outcome. It is the part of a failing history worth reading. The whole
/// history when no shorter prefix is found within `budget` per try.
pub fn shortest_invalid_prefix(history: &[Operation], budget: Duration) -> Vec<Operation> {
    let mut sorted = history.to_vec();
    sorted.sort_by_key(|op| op.invoked);
    let mut cuts: Vec<u64> = sorted
        .iter()
        .filter(|op| op.ret != Return::Unknown)
        .map(|op| op.completed)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let prefix = |cut: u64| -> Vec<Operation> {
        sorted
            .iter()
            .take_while(|op| op.invoked <= cut)
            .map(|op| {
                let mut op = op.clone();
                if op.ret != Return::Unknown && op.completed > cut {
                    op.ret = Return::Unknown;
                }
                op
            })
            .collect()
    };
    // A later cut only adds operations and answers, so invalidity is monotone in it.
    let (mut valid_below, mut invalid_at) = (0, cuts.len());
    while valid_below < invalid_at {
        let middle = (valid_below + invalid_at) / 2;
        if check_key(&prefix(cuts[middle]), budget) == Some(false) {
            invalid_at = middle;
        } else {
            valid_below = middle + 1;
        }
    }
    match cuts.get(invalid_at) {
        Some(&cut) => prefix(cut),
        None => sorted,
    }
}

/// One key's operations as the search sees them.
struct Candidate {
    call: Call,
    ret: Return,
    invoked: u64,
    /// `u64::MAX` for an unknown outcome: it constrains nothing after it.
    completed: u64,
}

/// Whether one key's history is linearizable; `None` when the budget ran out.
fn check_key(history: &[Operation], budget: Duration) -> Option<bool> {
    let mut ops: Vec<Candidate> = history
        .iter()
        .filter(|op| {
            !matches!(
                (&op.call, &op.ret),
                (_, Return::Failed) | (Call::Get, Return::Unknown)
            )
        })
        .map(|op| Candidate {
            call: op.call.clone(),
            ret: op.ret.clone(),
            invoked: op.invoked,
            completed: match op.ret {
                Return::Unknown => u64::MAX,
                _ => op.completed,
            },
        })
        .collect();
    ops.sort_by_key(|op| op.invoked);
    let unknown: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].ret == Return::Unknown)
        .collect();
    let mut search = Search {
        ops: &ops,
        unknown: &unknown,
        seen: HashSet::new(),
        started: Instant::now(),
        budget,
        steps: 0,
    };
    let done = vec![0u64; ops.len().div_ceil(64)];
    let first = search.next_known(&done, 0);
    search.explore(done, None, first)
}

struct Search<'a> {
    /// In invocation order.
    ops: &'a [Candidate],
    /// The indices of the operations of unknown outcome.
    unknown: &'a [usize],
    seen: HashSet<(Vec<u64>, Option<Value>)>,
    started: Instant,
    budget: Duration,
    steps: u64,
}

fn taken(done: &[u64], i: usize) -> bool {
    done[i / 64] & (1 << (i % 64)) != 0
}

impl Search<'_> {
    /// The first operation from `from` on that has an outcome and is not taken yet.
    fn next_known(&self, done: &[u64], from: usize) -> usize {
        (from..self.ops.len())
            .find(|&i| !taken(done, i) && self.ops[i].ret != Return::Unknown)
            .unwrap_or(self.ops.len())
    }

    /// The operations that may take effect next: invoked before every pending operation
    /// has completed. `first` is the earliest pending one with an outcome; nothing before
    /// it is pending but operations of unknown outcome, which never complete.
    fn candidates(&self, done: &[u64], first: usize) -> Vec<usize> {
        let mut next: Vec<usize> = self
            .unknown
            .iter()
            .copied()
            .take_while(|&i| i < first)
            .filter(|&i| !taken(done, i))
            .collect();
        // Operations invoked after the earliest completion so far cannot lower it.
        let mut deadline = u64::MAX;
        let mut i = first;
        while i < self.ops.len() && self.ops[i].invoked <= deadline {
            if !taken(done, i) {
                next.push(i);
                deadline = deadline.min(self.ops[i].completed);
            }
            i += 1;
        }
        next.retain(|&i| self.ops[i].invoked <= deadline);
        next
    }

    /// Whether the operations not in `done` can all be ordered from register `value`
    /// (those of unknown outcome may also be left out).
    fn explore(&mut self, done: Vec<u64>, value: Option<Value>, first: usize) -> Option<bool> {
        self.steps += 1;
        if self.steps.is_multiple_of(1024) && self.started.elapsed() > self.budget {
            return None;
        }
        if first == self.ops.len() {
            return Some(true);
        }
        for i in self.candidates(&done, first) {
            let Some(next) = step(&self.ops[i], &value) else {
                continue;
            };
            let mut after = done.clone();
            after[i / 64] |= 1 << (i % 64);
            if !self.seen.insert((after.clone(), next.clone())) {
                continue;
            }
            let first = if i == first {
                self.next_known(&after, first)
            } else {
                first
            };
            match self.explore(after, next, first) {
                Some(false) => {}
                found => return found,
            }
        }
        Some(false)
    }
}

/// The register after `op` takes effect on `value`; `None` when its answer contradicts
/// `value`.
fn step(op: &Candidate, value: &Option<Value>) -> Option<Option<Value>> {
    match (&op.call, &op.ret) {
        (Call::Get, Return::Read(read)) => (read == value).then(|| value.clone()),
        (Call::Put(new), Return::Written | Return::Unknown) => Some(Some(new.clone())),
        (Call::Cas { expected, new }, Return::Swapped(true)) => {
            (expected == value).then(|| new.clone())
        }
        (Call::Cas { expected, .. }, Return::Swapped(false)) => {
            (expected != value).then(|| value.clone())
        }
        (Call::Cas { expected, new }, Return::Unknown) => Some(match expected == value {
            true => new.clone(),
            false => value.clone(),
        }),
        // A call with an answer of another kind explains nothing.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_secs(5);

    fn op(call: Call, ret: Return, invoked: u64, completed: u64) -> Operation {
        Operation {
            key: b"k".to_vec(),
            call,
            ret,
            invoked,
            completed,
        }
    }

    fn put(v: &str) -> Call {
        Call::Put(v.as_bytes().to_vec())
    }

    fn read(v: Option<&str>) -> Return {
        Return::Read(v.map(|v| v.as_bytes().to_vec()))
    }

    fn cas(expected: Option<&str>, new: &str) -> Call {
        Call::Cas {
            expected: expected.map(|v| v.as_bytes().to_vec()),
            new: Some(new.as_bytes().to_vec()),
        }
    }

    fn is_invalid(history: &[Operation]) -> bool {
        matches!(check(history, BUDGET), Verdict::Invalid { .. })
    }

    #[test]
    fn sequential_and_overlapping_histories_are_valid() {
        let history = [
            op(put("1"), Return::Written, 0, 10),
            op(Call::Get, read(Some("1")), 20, 30),
            // A read overlapping a write may see either value.
            op(put("2"), Return::Written, 40, 60),
            op(Call::Get, read(Some("1")), 45, 50),
            op(Call::Get, read(Some("2")), 55, 70),
        ];
        assert_eq!(check(&history, BUDGET), Verdict::Valid);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_invalid() {
        let history = [
            op(put("1"), Return::Written, 0, 10),
            op(Call::Get, read(None), 20, 30),
        ];
        assert_eq!(
            check(&history, BUDGET),
            Verdict::Invalid {
                key: b"k".to_vec(),
                history: history.to_vec()
            }
        );
    }

    #[test]
    fn the_shortest_invalid_prefix_ends_at_the_first_contradiction() {
        let mut history = vec![
            op(put("1"), Return::Written, 0, 10),
            op(put("2"), Return::Written, 20, 30),
            // Stale: "2" was acknowledged before this read began.
            op(Call::Get, read(Some("1")), 40, 50),
            op(put("3"), Return::Written, 45, 60),
        ];
        for i in 0..20u64 {
            let value = format!("later-{i}");
            history.push(op(put(&value), Return::Written, 100 + i * 10, 105 + i * 10));
        }
        assert!(is_invalid(&history));
        // Up to the stale read's answer; the write still open then is of unknown outcome.
        let mut expected = history[..4].to_vec();
        expected[3].ret = Return::Unknown;
        assert_eq!(shortest_invalid_prefix(&history, BUDGET), expected);
    }

    #[test]
    fn a_lost_update_is_invalid() {
        // Two concurrent increments from the same value both claim to have swapped.
        let history = [
            op(put("0"), Return::Written, 0, 5),
            op(cas(Some("0"), "1"), Return::Swapped(true), 10, 30),
            op(cas(Some("0"), "1"), Return::Swapped(true), 15, 35),
        ];
        assert!(is_invalid(&history));
        let one_lost = [
            op(put("0"), Return::Written, 0, 5),
            op(cas(Some("0"), "1"), Return::Swapped(true), 10, 30),
            op(cas(Some("0"), "1"), Return::Swapped(false), 15, 35),
        ];
        assert_eq!(check(&one_lost, BUDGET), Verdict::Valid);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_invalid() {
        let history = [
            op(put("1"), Return::Written, 0, 10),
            op(Call::Get, read(Some("7")), 20, 30),
        ];
        assert!(is_invalid(&history));
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never_but_only_once() {
        let late = [
            op(put("1"), Return::Unknown, 0, 1),
            op(Call::Get, read(None), 10, 20),
            op(Call::Get, read(Some("1")), 100, 110),
        ];
        assert_eq!(check(&late, BUDGET), Verdict::Valid);
        let never = [
            op(put("1"), Return::Unknown, 0, 1),
            op(Call::Get, read(None), 100, 110),
        ];
        assert_eq!(check(&never, BUDGET), Verdict::Valid);
        let back_again = [
            op(put("1"), Return::Unknown, 0, 1),
            op(Call::Get, read(Some("1")), 10, 20),
            op(Call::Get, read(None), 30, 40),
        ];
        assert!(is_invalid(&back_again));
        // A refused write never happened.
        let refused = [
            op(put("1"), Return::Failed, 0, 1),
            op(Call::Get, read(Some("1")), 10, 20),
        ];
        assert!(is_invalid(&refused));
    }

    #[test]
    fn keys_are_judged_apart_and_the_smallest_failing_history_is_shown() {
        let on = |key: &str, mut o: Operation| {
            o.key = key.as_bytes().to_vec();
            o
        };
        let history = [
            on("a", op(put("1"), Return::Written, 0, 10)),
            on("b", op(put("1"), Return::Written, 0, 10)),
            on("b", op(Call::Get, read(Some("1")), 20, 30)),
            on("b", op(Call::Get, read(None), 40, 50)),
            on("c", op(Call::Get, read(Some("9")), 0, 10)),
        ];
        match check(&history, BUDGET) {
            Verdict::Invalid { key, history } => {
                assert_eq!(key, b"c");
                assert_eq!(history.len(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn histories_made_by_a_real_register_are_valid_however_their_times_overlap() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            // Run 12 random operations one after another on a register, each taking
            // effect at time 100 * i; then widen every interval at random, which only
            // removes ordering constraints.
            let mut value: Option<Value> = None;
            let mut history = Vec::new();
            for i in 0..12u64 {
                let v = format!("{}", rng.random_range(0..3)).into_bytes();
                let (call, ret) = match rng.random_range(0..4) {
                    0 => (Call::Get, Return::Read(value.clone())),
                    1 => {
                        value = Some(v.clone());
                        (Call::Put(v), Return::Written)
                    }
                    2 => {
                        let expected = Some(v);
                        let swapped = expected == value;
                        let new = Some(format!("{i}").into_bytes());
                        if swapped {
                            value = new.clone();
                        }
                        (Call::Cas { expected, new }, Return::Swapped(swapped))
                    }
                    _ => {
                        // Timed out, but it did happen.
                        value = Some(v.clone());
                        (Call::Put(v), Return::Unknown)
                    }
                };
                let at = 100 * i + 50;
                let invoked = at - rng.random_range(0..150).min(at);
                let completed = at + rng.random_range(1..150);
                history.push(op(call, ret, invoked, completed));
            }
            assert_eq!(check(&history, BUDGET), Verdict::Valid, "{history:#?}");
            // The same history with one read of a value nobody wrote is not.
            history.push(op(Call::Get, read(Some("never")), 2000, 2010));
            assert!(is_invalid(&history));
        }
    }

    #[test]
    fn lost_writes_and_stale_reads_are_named() {
        let history = [
            op(put("1"), Return::Written, 0, 10),
            op(put("2"), Return::Written, 20, 30),
            op(put("3"), Return::Unknown, 40, 41),
            op(Call::Get, read(Some("1")), 50, 60),
            op(Call::Get, read(Some("2")), 50, 60),
        ];
        let finals =
            |v: Option<&str>| BTreeMap::from([(b"k".to_vec(), v.map(|v| v.as_bytes().to_vec()))]);
        // The last acknowledged write, or the later unknown one: nothing lost.
        assert!(lost_writes(&history, &finals(Some("2"))).is_empty());
        assert!(lost_writes(&history, &finals(Some("3"))).is_empty());
        // The first write, overwritten by an acknowledged one, or nothing at all: lost.
        assert_eq!(lost_writes(&history, &finals(Some("1"))).len(), 1);
        assert_eq!(lost_writes(&history, &finals(None)).len(), 1);
        // Reading "1" after "2" was acknowledged is stale; reading "2" is not.
        let stale = stale_reads(&history);
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert!(stale[0].contains("\"1\""), "{stale:?}");
        // An absent key read after a write was acknowledged is stale too.
        let empty = [
            op(put("1"), Return::Written, 0, 10),
            op(Call::Get, read(None), 20, 30),
        ];
        assert_eq!(stale_reads(&empty).len(), 1);
    }

    #[test]
    fn a_search_past_its_budget_is_unknown_not_guessed() {
        // Many concurrent writes of distinct values and reads that no order explains
        // quickly: the search has far more orders to try than a zero budget allows.
        let mut history: Vec<Operation> = (0..40)
            .map(|i| op(put(&i.to_string()), Return::Unknown, 0, 1))
            .collect();
        history.extend((0..20).map(|i| op(Call::Get, read(Some("x")), 10 + i, 1000)));
        assert_eq!(
            check(&history, Duration::ZERO),
            Verdict::Unknown { key: b"k".to_vec() }
        );
    }
}
