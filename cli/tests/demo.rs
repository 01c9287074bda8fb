//! `hanse demo` as a user runs it, stopped with Ctrl-C part way: the live view runs, the
//! summary and report still come, every acknowledged write reads back, and no node
//! process is left behind.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn the_demo_tells_its_story_and_cleans_up_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_hanse"))
        .args(["demo", "--duration", "120s", "--port", &common::free_port()])
        .arg("--dir")
        .arg(dir.path().join("data"))
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (lines, heard) = mpsc::channel();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    // Ctrl-C once the live view has shown a few seconds of the load.
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while printed
        .iter()
        .filter(|l: &&String| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count()
        < 5
    {
        let line = heard
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no live view within 90 s:\n{}", printed.join("\n")));
        printed.push(line);
    }
    // SAFETY: kill(2) has no memory effects; the pid is our child's.
    unsafe { libc::kill(demo.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(90);
    while let Ok(line) = heard.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        printed.push(line);
    }
    let status = demo.wait().unwrap();
    let text = printed.join("\n");
    assert!(status.success(), "{status}:\n{text}");
    for expected in [
        "leader node 2 (ap-china)",
        "Ctrl-C: stopping the load",
        "Summary",
        "first 10 s (leaders in ap-china)",
        "every acknowledged write read back",
        "interrupted by Ctrl-C",
        "stopped the cluster's 4 nodes",
        "The web console",
        "/#token=",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        page.contains("every acknowledged write read back"),
        "{page}"
    );
    assert!(page.contains("its web console was at"), "{page}");
    for chart in ["throughput.png", "latency.png", "shards.png", "ingest.png"] {
        assert!(page.contains(chart), "{chart} not in the page");
        let png = std::fs::read(out.join(chart)).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{chart}");
    }
    // No node outlives the demo.
    for id in 1..=4 {
        let pid = dir.path().join(format!("data/cluster/node{id}.pid"));
        assert!(!pid.exists(), "{} is left behind", pid.display());
    }
    let servers = Command::new("pgrep")
        .args(["-f", &dir.path().join("data").to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        servers.stdout.is_empty(),
        "node processes left: {}",
        String::from_utf8_lossy(&servers.stdout)
    );
}
