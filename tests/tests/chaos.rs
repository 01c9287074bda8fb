//! The chaos harness in the suite: short runs of a real 3-node cluster under every fault
//! kind must be judged valid, and a cluster broken on purpose (writes acknowledged before
//! they commit) must be judged invalid. `hanse chaos run` runs longer ones (docs/testing.md).

use std::process::Command;

/// Runs `hanse chaos run` for `seconds` on `port` with `extra` arguments; returns whether
/// it passed and what it printed. A run that was to pass and did not is kept for CI's log
/// to point to.
fn chaos_run(seed: u64, seconds: u64, port: u16, extra: &[&str], to_pass: bool) -> (bool, String) {
    let chaos = env!("CARGO_BIN_EXE_hanse-chaos");
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(chaos)
        .args(["run", "--nodes", "3", "--seed", &seed.to_string()])
        .args([
            "--duration",
            &format!("{seconds}s"),
            "--port",
            &port.to_string(),
        ])
        .arg("--dir")
        .arg(dir.path().join("run"))
        .args(extra)
        .output()
        .expect("start hanse-chaos");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{printed}");
    if to_pass && !output.status.success() {
        // Keep the evidence of a failing run where CI's log can point to it.
        let kept = std::env::temp_dir().join(format!("hanse-chaos-failed-{seed}-{port}"));
        let _ = std::fs::remove_dir_all(&kept);
        let _ = std::fs::rename(dir.path().join("run"), &kept);
        println!("run kept in {}", kept.display());
    }
    (output.status.success(), printed)
}

#[test]
fn three_nodes_under_every_fault_kind_stay_linearizable_seed_1() {
    let (passed, printed) = chaos_run(1, 30, 7610, &[], true);
    assert!(passed, "{printed}");
    assert!(printed.contains("verdict:     VALID"), "{printed}");
}

#[test]
fn three_nodes_under_every_fault_kind_stay_linearizable_seed_2() {
    let (passed, printed) = chaos_run(2, 30, 7620, &[], true);
    assert!(passed, "{printed}");
    assert!(printed.contains("verdict:     VALID"), "{printed}");
}

#[test]
fn acknowledging_writes_before_they_commit_is_caught_as_invalid() {
    let (passed, printed) = chaos_run(3, 15, 7630, &["--ack-before-commit"], false);
    assert!(!passed, "{printed}");
    assert!(printed.contains("verdict:     INVALID"), "{printed}");
}
