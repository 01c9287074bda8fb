//! Round trips injected between regions, so that geo behaviour (leaders far from their
//! writers, quorums across continents) can be studied on one machine: the kernel here has
//! no netem. The transport holds each Raft message back by the one-way time to its peer's
//! region and the answer by the same again; the node does the same for client requests
//! that name their region.

use std::collections::BTreeMap;
use std::time::Duration;

/// Symmetric round-trip times between pairs of regions; any pair not named (and a region
/// with itself) adds nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyMatrix {
    round_trips: BTreeMap<(String, String), Duration>,
}

/// Why a latency specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LatencyError {
    #[error("`{0}` is not REGION:REGION=TIME (e.g. eu-hamburg:ap-china=250ms)")]
    Malformed(String),
    #[error("`{0}` names one region twice; a region has no latency to itself")]
    SameRegion(String),
    #[error("the pair {0} is given twice")]
    Repeated(String),
    #[error("`{0}` is longer than the longest round trip allowed ({max:?})", max = crate::knobs::ROUND_TRIP_MAX)]
    TooLong(String),
}

impl LatencyMatrix {
    /// The matrix of `entries` (`REGION:REGION=TIME`, comma separated; the times parsed
    /// by `parse_time`), round trips either way.
    pub fn parse(
        spec: &str,
        parse_time: impl Fn(&str) -> Result<Duration, String>,
    ) -> Result<LatencyMatrix, LatencyError> {
        let mut round_trips = BTreeMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let malformed = || LatencyError::Malformed(entry.to_string());
            let (pair, time) = entry.split_once('=').ok_or_else(malformed)?;
            let (a, b) = pair.split_once(':').ok_or_else(malformed)?;
            let (a, b) = (a.trim(), b.trim());
            if a.is_empty() || b.is_empty() {
                return Err(malformed());
            }
            if a == b {
                return Err(LatencyError::SameRegion(entry.to_string()));
            }
            let time = parse_time(time.trim()).map_err(|_| malformed())?;
            if time > crate::knobs::ROUND_TRIP_MAX {
                return Err(LatencyError::TooLong(entry.to_string()));
            }
            if round_trips.insert(pair_key(a, b), time).is_some() {
                return Err(LatencyError::Repeated(format!("{a}:{b}")));
            }
        }
        Ok(LatencyMatrix { round_trips })
    }

    pub fn is_empty(&self) -> bool {
        self.round_trips.is_empty()
    }

    /// The round trip between regions `a` and `b`.
    pub fn round_trip(&self, a: &str, b: &str) -> Duration {
        self.round_trips
            .get(&pair_key(a, b))
            .copied()
            .unwrap_or_default()
    }

    /// Half the round trip: what one message takes from `a` to `b`.
    pub fn one_way(&self, a: &str, b: &str) -> Duration {
        self.round_trip(a, b) / 2
    }

    /// The longest round trip of the matrix: Raft's timeouts must exceed it.
    pub fn longest_round_trip(&self) -> Duration {
        self.round_trips.values().copied().max().unwrap_or_default()
    }
}

impl std::fmt::Display for LatencyMatrix {
    /// The specification [`LatencyMatrix::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: Vec<String> = self
            .round_trips
            .iter()
            .map(|((a, b), time)| format!("{a}:{b}={}ms", time.as_millis()))
            .collect();
        f.write_str(&entries.join(","))
    }
}

fn pair_key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(text: &str) -> Result<Duration, String> {
        text.strip_suffix("ms")
            .and_then(|n| n.parse().ok())
            .map(Duration::from_millis)
            .ok_or_else(|| format!("bad time {text}"))
    }

    #[test]
    fn pairs_are_symmetric_and_unnamed_pairs_add_nothing() {
        let matrix = LatencyMatrix::parse(
            "eu-hamburg:ap-china=250ms, ap-china:au-sydney=150ms",
            millis,
        )
        .unwrap();
        assert_eq!(
            matrix.round_trip("ap-china", "eu-hamburg"),
            Duration::from_millis(250)
        );
        assert_eq!(
            matrix.one_way("eu-hamburg", "ap-china"),
            Duration::from_millis(125)
        );
        assert_eq!(matrix.round_trip("eu-hamburg", "au-sydney"), Duration::ZERO);
        assert_eq!(matrix.round_trip("ap-china", "ap-china"), Duration::ZERO);
        assert_eq!(matrix.longest_round_trip(), Duration::from_millis(250));
        assert_eq!(
            LatencyMatrix::parse(&matrix.to_string(), millis),
            Ok(matrix)
        );
    }

    #[test]
    fn bad_specifications_are_refused_with_the_entry_named() {
        for (spec, error) in [
            (
                "eu-hamburg=250ms",
                LatencyError::Malformed("eu-hamburg=250ms".into()),
            ),
            ("a:b=fast", LatencyError::Malformed("a:b=fast".into())),
            (":b=1ms", LatencyError::Malformed(":b=1ms".into())),
            ("a:a=1ms", LatencyError::SameRegion("a:a=1ms".into())),
            ("a:b=1ms,b:a=2ms", LatencyError::Repeated("b:a".into())),
        ] {
            assert_eq!(LatencyMatrix::parse(spec, millis), Err(error), "{spec}");
        }
        assert!(LatencyMatrix::parse("", millis).unwrap().is_empty());
    }
}
