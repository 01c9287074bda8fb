//! The `hanse` command line as a shell user meets it, on an embedded store.

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::ok;

#[test]
fn a_reader_that_stops_early_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // Longer than a pipe holds, so printing it meets the closed pipe.
    let value = "v".repeat(100_000);
    ok(&["kv", "put", "big", &value, "--data-dir", data]);
    let mut get = Command::new(env!("CARGO_BIN_EXE_hanse"))
        .args(["kv", "get", "big", "--data-dir", data])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = get.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).unwrap();
    // As `hanse kv get big | head -c 10` would.
    drop(stdout);
    let output = get.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{stderr}");
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        // Each case runs the `hanse` binary; `PROPTEST_CASES` runs more.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24),
        failure_persistence: None,
        ..Default::default()
    })]

    /// A backup's manifest of any content (arbitrary bytes, or JSON whose shards name
    /// files, ranges and sizes at random) is refused with one line and changes nothing:
    /// `hanse restore` never panics on it and never creates the cluster.
    #[test]
    fn a_damaged_manifest_is_refused_in_one_line(
        raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        file in "[a-z./-]{0,24}",
        id in proptest::prelude::any::<u64>(),
        bytes in proptest::prelude::any::<u64>(),
        json in proptest::prelude::any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("backup");
        std::fs::create_dir(&backup).unwrap();
        let manifest = match json {
            true => serde_json::json!({
                "format": 1,
                "taken_at_unix_ms": 0,
                "shards": [{
                    "id": id, "start_hex": "", "end_hex": "", "applied_index": 0, "node": 1,
                    "file": file, "bytes": bytes, "sha256": "00",
                }],
            })
            .to_string()
            .into_bytes(),
            false => raw,
        };
        std::fs::write(backup.join("manifest.json"), manifest).unwrap();
        let target = dir.path().join("restored");
        let output = common::hanse(&[
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--dir",
            target.to_str().unwrap(),
            "--port",
            &common::free_port(),
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        proptest::prop_assert_eq!(output.status.code(), Some(2), "{}", stderr);
        proptest::prop_assert_eq!(stderr.trim().lines().count(), 1, "{}", stderr);
        proptest::prop_assert!(!target.join("node1.toml").exists());
    }
}
