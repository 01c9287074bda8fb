//! `hanse planner train` and `hanse planner eval` as a user runs them, on small runs.

mod common;

use std::path::Path;

use common::ok;
use hanse_planner::sim::trace::{TraceShard, TraceTick, write_tick};
use hanse_planner::train::{held_out_families, training_families};

fn names(families: &[hanse_planner::sim::workload::Family]) -> Vec<String> {
    families.iter().map(|f| f.name()).collect()
}

#[test]
fn training_writes_weights_that_load_and_reports_the_loss_and_the_held_out_cost() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("planner.safetensors");
    let printed = ok(&[
        "planner",
        "train",
        "--seeds",
        "1",
        "--ticks",
        "20",
        "--epochs",
        "10",
        "--out",
        weights.to_str().unwrap(),
    ]);
    hanse_planner::net::PlannerNet::load(&weights).expect("the written weights load");
    assert!(printed.starts_with("selector: loss "), "{printed}");
    assert!(printed.contains("\nscorer: loss "), "{printed}");
    for family in names(&held_out_families()) {
        assert!(
            printed.contains(&format!("  {family}: model ")),
            "{family}: {printed}"
        );
    }
}

#[test]
fn evaluation_covers_every_family_and_marks_those_held_out() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let weights =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/weights/planner.safetensors");
    // A synthetic trace: a cold shard, and a hot one read from China, as its own family.
    let trace = dir.path().join("hot.jsonl");
    let mut file = std::fs::File::create(&trace).unwrap();
    let shard = |start: &[u8], end: &[u8], reads_per_sec: f64, keys: &[&str]| TraceShard {
        start: start.to_vec(),
        end: end.to_vec(),
        reads_per_sec,
        writes_per_sec: reads_per_sec / 10.0,
        sampled_keys: keys.iter().map(|k| (k.as_bytes().to_vec(), 4)).collect(),
        origins: vec![("ap-china".into(), reads_per_sec * 1.1)],
    };
    let hot = TraceTick {
        shards: vec![
            shard(b"", b"m", 50.0, &["c", "f"]),
            shard(b"m", b"", 4_000.0, &["n", "p", "r", "x"]),
        ],
    };
    for _ in 0..5 {
        write_tick(&mut file, &hot).unwrap();
    }
    drop(file);
    let printed = ok(&[
        "planner",
        "eval",
        "--trace",
        trace.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--seeds",
        "2",
        "--oracle-seeds",
        "1",
        "--tuning-seeds",
        "1",
        "--ticks",
        "15",
        "--json",
        "--out",
        report.to_str().unwrap(),
    ]);
    let json: serde_json::Value = serde_json::from_str(&printed).unwrap();
    let held_out = names(&held_out_families());
    let seen = names(&training_families());
    assert_eq!(json["held_out_families"], serde_json::json!(held_out));
    assert_eq!(json["training_families"], serde_json::json!(seen));
    assert_eq!(json["traces"]["trace-1"], trace.to_str().unwrap());
    let rows = json["rows"].as_array().unwrap();
    let traced = vec!["trace-1".to_string()];
    for family in held_out.iter().chain(&seen).chain(&traced) {
        let of: Vec<&serde_json::Value> = rows.iter().filter(|r| r["family"] == *family).collect();
        let policies: Vec<&str> = of.iter().map(|r| r["policy"].as_str().unwrap()).collect();
        for policy in [
            "size-only",
            "cockroach-tuned",
            "cockroach-family-tuned",
            "model",
            "oracle",
        ] {
            assert!(policies.contains(&policy), "{family}: {policies:?}");
        }
        // No policy's cost lies below the family's floor.
        assert!(
            of.iter()
                .all(|r| r["mean_cost"].as_f64().unwrap() > r["mean_floor"].as_f64().unwrap()),
            "{family}: {of:?}"
        );
        assert!(
            of.iter()
                .all(|r| r["held_out"] == held_out.contains(family)),
            "{family}"
        );
        let judged = json["model"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["family"] == *family)
            .unwrap_or_else(|| panic!("{family}: {json}"));
        let gap = judged["gap_closed"].as_f64().unwrap();
        let [lo, hi] = [0, 1].map(|i| judged["gap_closed_ci95"][i].as_f64().unwrap());
        assert!(lo <= gap && gap <= hi, "{judged}");
        assert!(judged["headroom"].as_f64().unwrap() > 0.0, "{judged}");
        assert!(report.join(format!("imbalance-{family}.png")).exists());
    }
    assert!(json["held_out_mean_gap_closed"].is_f64(), "{json}");
    assert!(json["held_out_mean_model_vs_best_heuristic"].is_f64());
    assert!(json["training_mean_model_vs_best_heuristic"].is_f64());
    for file in ["eval.json", "eval.md", "cost.png"] {
        assert!(report.join(file).exists(), "{file}");
    }
    let table = std::fs::read_to_string(report.join("eval.md")).unwrap();
    assert!(table.contains("| ycsb-c (held out) |"), "{table}");
    assert!(table.contains("| uniform |"), "{table}");
}
