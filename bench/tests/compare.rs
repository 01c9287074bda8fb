//! `hanse-bench compare` as a user runs it: every store it can run gets each workload,
//! the ones it cannot are listed with the reason, and the report and chart are written.

use std::path::Path;
use std::process::Command;

/// `hanse-bench compare --json` of `stores` with `workloads` (1 s each), the report
/// written into `out`; `path` replaces the PATH it searches for the peers.
fn compare(stores: &str, workloads: &str, out: &Path, path: Option<&Path>) -> serde_json::Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hanse-bench"));
    command
        .args(["compare", "--stores", stores, "--workloads", workloads])
        .args(["--duration", "1s", "--clients", "4", "--key-count", "200"])
        .args(["--json", "--out"])
        .arg(out);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    json_of(&mut command)
}

/// What `command` (a `hanse-bench ... --json`) printed; it must succeed.
fn json_of(command: &mut Command) -> serde_json::Value {
    let run = command.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).unwrap()
}

#[test]
fn compare_runs_each_store_and_writes_the_table_and_chart() {
    let out = tempfile::tempdir().unwrap();
    let report = compare(
        "embedded,rocksdb,etcd,postgres",
        "write,ycsb-e",
        out.path(),
        None,
    );
    let runs = report["runs"].as_array().unwrap();
    let stores: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["store"].as_str().unwrap(),
                r["workload"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stores,
        [
            ("embedded", "write"),
            ("embedded", "ycsb-e"),
            ("rocksdb", "write"),
            ("rocksdb", "ycsb-e"),
            ("etcd", "write"),
            ("etcd", "ycsb-e"),
            ("postgres", "write"),
            ("postgres", "ycsb-e")
        ]
    );
    for r in runs {
        assert!(r["ops"].as_u64().unwrap() > 0 && r["errors"] == 0, "{r}");
        // Every store's processes spent CPU on the run, and it is counted.
        assert!(r["cpu_ms_per_kop"].as_f64().unwrap() > 0.0, "{r}");
        let in_process = matches!(r["store"].as_str(), Some("embedded" | "rocksdb"));
        assert_eq!(r["cpu_includes_generator"], in_process, "{r}");
    }
    assert_eq!(report["skipped"], serde_json::json!([]));
    let table = std::fs::read_to_string(out.path().join("compare.md")).unwrap();
    assert!(
        table.contains("| CPU ms/kop | ×rocksdb | ×etcd | ×postgres | CPU ×etcd | CPU ×postgres |"),
        "{table}"
    );
    assert!(table.contains("includes the generator's"), "{table}");
    let chart = std::fs::read(out.path().join("compare.png")).unwrap();
    assert_eq!(&chart[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn a_peer_that_is_not_installed_is_skipped_with_the_reason() {
    let out = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let report = compare("rocksdb,etcd", "write", out.path(), Some(empty.path()));
    assert_eq!(report["runs"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["skipped"][0]["store"], "etcd");
    let reason = report["skipped"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("etcd is not installed"), "{reason}");
}

#[test]
fn a_run_against_a_fresh_local_cluster_counts_the_cpu_of_its_three_servers() {
    let hanse = std::path::Path::new(env!("CARGO_BIN_EXE_hanse-bench")).with_file_name("hanse");
    assert!(
        hanse.exists(),
        "{} is missing: build the workspace (`cargo build --workspace`)",
        hanse.display()
    );
    let report = json_of(
        Command::new(env!("CARGO_BIN_EXE_hanse-bench"))
            .args(["run", "--target", "hanse", "--workload", "write", "--json"])
            .args(["--ops", "300", "--clients", "4", "--port", "7760"]),
    );
    assert_eq!(report["ops"], 300, "{report}");
    // Three servers, each with a write-ahead log to sync, spend well over a tick on 300
    // writes.
    assert!(report["cpu_ms_per_kop"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn a_curve_runs_each_number_of_clients_against_each_number_of_shards() {
    let out = tempfile::tempdir().unwrap();
    let report = json_of(
        Command::new(env!("CARGO_BIN_EXE_hanse-bench"))
            .args(["compare", "--stores", "hanse,etcd", "--workloads", "write"])
            .args(["--clients", "1,4", "--shards", "1,4", "--duration", "1s"])
            .args(["--key-count", "200", "--port", "7770", "--json", "--out"])
            .arg(out.path()),
    );
    assert_eq!(report["skipped"], serde_json::json!([]), "{report}");
    let points: Vec<(String, u64, u64)> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
            (
                r["store"].as_str().unwrap().to_string(),
                r["shards"].as_u64().unwrap(),
                r["clients"].as_u64().unwrap(),
            )
        })
        .collect();
    // The cluster at each number of shards; etcd, which has none, once.
    let expected: Vec<(String, u64, u64)> = [
        ("hanse", 1, 1),
        ("hanse", 1, 4),
        ("hanse", 4, 1),
        ("hanse", 4, 4),
        ("etcd", 1, 1),
        ("etcd", 1, 4),
    ]
    .iter()
    .map(|&(s, shards, clients)| (s.to_string(), shards, clients))
    .collect();
    assert_eq!(points, expected);
    let curve = std::fs::read(out.path().join("curve-write.png")).unwrap();
    assert_eq!(&curve[..8], b"\x89PNG\r\n\x1a\n");
    let table = std::fs::read_to_string(out.path().join("compare.md")).unwrap();
    assert!(table.contains("| write | hanse | 4 | 4 |"), "{table}");
}
