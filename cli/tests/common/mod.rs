//! What the tests that run real clusters share: the `hanse` binary as a user runs it, and
//! a cluster launched with `hanse cluster up` that goes down when dropped.

// Each test file uses its own part of these helpers.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use hanse_client::{CertsDir, ClientOptions, ClientTls};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};

pub fn hanse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hanse"))
        .args(args)
        // The clusters these tests launch run secure, with the certificates of `certs`,
        // and the commands reach them with its `root` certificate.
        .env("HANSE_CERTS_DIR", certs())
        .output()
        .expect("run hanse")
}

pub fn ok(args: &[&str]) -> String {
    let output = hanse(args);
    assert!(
        output.status.success(),
        "hanse {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A cluster started by `hanse cluster up` in a temporary directory; brought down (and
/// the directory removed) when dropped.
pub struct Launched {
    pub dir: String,
    pub endpoints: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Launched {
    /// The planner's status as `hanse admin status --json` gives it on each node running
    /// one (the meta shard's leader; the others report none).
    pub fn planner_reports(&self) -> Vec<serde_json::Value> {
        self.endpoints
            .iter()
            .map(|e| {
                serde_json::from_str::<serde_json::Value>(&ok(&[
                    "admin",
                    "status",
                    "--endpoints",
                    e,
                    "--json",
                ]))
                .unwrap()["planner"]
                    .clone()
            })
            .filter(|p| !p.is_null())
            .collect()
    }

    pub fn planner_status(&self) -> Option<serde_json::Value> {
        self.planner_reports().into_iter().next()
    }

    /// The planner's status once a single node runs it and it has planned more than one
    /// round (within 20 s).
    pub fn planner_running(&self) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let reports = self.planner_reports();
            if let [planner] = &reports[..]
                && planner["ticks"].as_u64().unwrap() > 1
            {
                return planner.clone();
            }
            assert!(std::time::Instant::now() < deadline, "{reports:?}");
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    /// Node `id`'s HTTP address (metrics, probes, console), as `cluster up` configured it.
    pub fn http_addr(&self, id: u64) -> String {
        let config = Path::new(&self.dir).join(format!("node{id}.toml"));
        let config = hanse_node::config::NodeConfig::load(&config).unwrap();
        config
            .http_addr
            .expect("cluster up gives each node an HTTP port")
            .to_string()
    }

    /// The last `lines` lines of each node's log, for a failing assertion's message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut tails = String::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let log = std::fs::read_to_string(&path).unwrap_or_default();
                let all: Vec<&str> = log.lines().collect();
                tails.push_str(&format!("--- {}\n", path.display()));
                for line in &all[all.len().saturating_sub(lines)..] {
                    tails.push_str(line);
                    tails.push('\n');
                }
            }
        }
        tails
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = hanse(&["cluster", "down", "--dir", &self.dir]);
    }
}

/// `hanse cluster up` with 3 nodes on a free port, plus `extra` arguments.
pub fn launch(extra: &[&str]) -> Launched {
    launch_nodes(3, extra)
}

/// `hanse cluster up` with `nodes` nodes on a free port, plus `extra` arguments.
pub fn launch_nodes(nodes: u64, extra: &[&str]) -> Launched {
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster").to_str().unwrap().to_string();
    let nodes = nodes.to_string();
    let mut args = vec![
        "cluster", "up", "--dir", &dir, "--nodes", &nodes, "--port", &port,
    ];
    args.extend_from_slice(extra);
    let endpoints = endpoints_line(&ok(&args));
    Launched {
        dir,
        endpoints,
        _tmp: tmp,
    }
}

/// `hanse admin <what> --json` through `endpoint`: its list of shards.
pub fn admin_json_shards(what: &str, endpoint: &str) -> Vec<serde_json::Value> {
    let answer: serde_json::Value =
        serde_json::from_str(&ok(&["admin", what, "--json", "--endpoints", endpoint])).unwrap();
    answer["shards"].as_array().unwrap().clone()
}

/// A port free on 127.0.0.11-19 now (nodes listen on it, each on its own 127.0.0.x),
/// below the kernel's ephemeral range (32768 up): the nodes' own outgoing connections,
/// bound to their 127.0.0.x, take their ports from there, and one of them could hold a
/// port picked from that range by the time a node binds it.
pub fn free_port() -> String {
    static TRIED: AtomicU16 = AtomicU16::new(0);
    // Test binaries run at once; each starts in its own part of the range.
    let start = (std::process::id() % 600) as u16 * 20;
    for _ in 0..2_000 {
        let port = 20_000 + (start + TRIED.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if (11..=19).all(|ip| TcpListener::bind(format!("127.0.0.{ip}:{port}")).is_ok()) {
            return port.to_string();
        }
    }
    panic!("no port from 20000 to 31999 is free on 127.0.0.11-19");
}

/// The endpoints of the `endpoints: H:P,...` line that `cluster up` and `restore` print.
pub fn endpoints_line(output: &str) -> Vec<String> {
    output
        .lines()
        .find_map(|l| l.strip_prefix("endpoints: "))
        .expect("endpoints line")
        .split(',')
        .map(str::to_string)
        .collect()
}

/// `writers` clients at once, each putting 1, 2, ..., `steps` to its own key `own-WW` in
/// turn and, with `unique`, also to a key of its own for every step, `step-WW-SS`.
pub async fn write_in_turn(
    client: std::sync::Arc<hanse_client::Client>,
    writers: usize,
    steps: usize,
    unique: bool,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let client = client.clone();
        tasks.spawn(async move {
            for step in 1..=steps {
                let value = step.to_string().into_bytes();
                client
                    .put(format!("own-{w:02}").as_bytes(), &value)
                    .await
                    .unwrap();
                if unique {
                    let key = format!("step-{w:02}-{step:02}");
                    client.put(key.as_bytes(), &value).await.unwrap();
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// The certificates of every cluster these tests launch: one CA, certificates for nodes
/// 1 to 9 at their 127.0.0.(10+id), and one for `root`; made once (kept under the target
/// directory's scratch space, reused by later runs).
pub fn certs() -> &'static Path {
    static CERTS: OnceLock<PathBuf> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster-certs");
        let nodes: Vec<(u64, String)> = (1..=9)
            .map(|id| (id, format!("127.0.0.{}", 10 + id)))
            .collect();
        hanse_security::issue::create_local_cluster(&CertsDir::new(&dir), &nodes, &["root"])
            .unwrap();
        dir
    })
}

/// What the tests' clients connect as: `root`, with TLS.
pub fn root_tls() -> Arc<ClientTls> {
    hanse_client::user_tls(certs(), "root").unwrap()
}

/// A runtime for a test's clients: two workers, like the machines the tests run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Client options for the tests' clusters.
pub fn client_options() -> ClientOptions {
    ClientOptions {
        tls: Some(root_tls()),
        ..ClientOptions::default()
    }
}
