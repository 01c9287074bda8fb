//! hanse-bench: benchmarks that measure Hanse beside the baseline a user would pick instead,
//! and the load generator ([`load`], the `hanse-bench` binary) for running clusters.
//!
//! Each criterion group names its contender `hanse` and its baseline `raw-rocksdb`;
//! [`ratio_report`] reads criterion's estimates back and states Hanse's throughput as a
//! multiple of the baseline's, next to the target for it.

pub mod bulk;
pub mod compare;
pub mod cpu;
pub mod load;
pub mod peers;
pub mod planner_ab;
pub mod scale;

use std::path::{Path, PathBuf};

/// The 16-byte key of record `i`, as the benchmarks write it.
pub fn key(i: u64) -> Vec<u8> {
    format!("key{i:013}").into_bytes()
}

/// A 256-byte value.
pub fn value(i: u64) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(256, b'x');
    v
}

/// Where criterion keeps its results for this workspace.
pub fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// Mean nanoseconds per iteration that criterion measured for `group/function`.
pub fn mean_ns(dir: &Path, group: &str, function: &str) -> Option<f64> {
    let path = dir.join(group).join(function).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

/// One line per group: Hanse's throughput as a multiple of the baseline's, and the target.
pub fn ratio_report(dir: &Path, groups: &[(&str, Option<f64>)]) -> String {
    let mut out = format!(
        "{:<28} {:>14} {:>14} {:>8} {:>8}\n",
        "benchmark", "hanse", "raw-rocksdb", "ratio", "target"
    );
    for (group, target) in groups {
        let line = match (
            mean_ns(dir, group, "hanse"),
            mean_ns(dir, group, "raw-rocksdb"),
        ) {
            (Some(hanse), Some(raw)) => format!(
                "{:<28} {:>11.1} µs {:>11.1} µs {:>7.2}x {:>8}\n",
                group,
                hanse / 1e3,
                raw / 1e3,
                raw / hanse,
                target.map_or("-".to_string(), |t| format!("≥{t}x"))
            ),
            _ => format!("{group:<28} (no measurement: run with `cargo bench`)\n"),
        };
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_have_the_benchmark_sizes() {
        assert_eq!(key(42).len(), 16);
        assert_eq!(value(42).len(), 256);
        assert!(key(1) < key(2));
    }

    #[test]
    fn ratio_is_baseline_time_over_hanse_time() {
        let dir = tempfile::tempdir().unwrap();
        for (function, ns) in [("hanse", 200.0), ("raw-rocksdb", 100.0)] {
            let path = dir.path().join("g").join(function).join("new");
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(
                path.join("estimates.json"),
                format!(r#"{{"mean":{{"point_estimate":{ns}}}}}"#),
            )
            .unwrap();
        }
        let report = ratio_report(dir.path(), &[("g", Some(0.9)), ("missing", None)]);
        assert!(report.contains("0.50x"), "{report}");
        assert!(report.contains("≥0.9x"), "{report}");
        assert!(
            report.contains("missing") && report.contains("no measurement"),
            "{report}"
        );
    }
}
