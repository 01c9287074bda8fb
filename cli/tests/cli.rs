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
