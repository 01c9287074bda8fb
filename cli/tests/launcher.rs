//! `hanse cluster ...`, `hanse admin ...` and `hanse kv --endpoints` as a user runs them:
//! real processes, one directory, a restart that keeps the data, a SIGKILLed leader,
//! membership changes and splits under a write load.

mod common;

use common::{admin_json_shards, hanse, launch, launch_nodes, ok};
use hanse_storage::Store;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Each status line as (id, pid, state).
fn status(dir: &str) -> Vec<(u64, Option<i32>, String)> {
    ok(&["cluster", "status", "--dir", dir, "--json"])
        .lines()
        .map(|line| {
            let field = |name: &str| {
                let start = line.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
                line[start..]
                    .split([',', '}'])
                    .next()
                    .unwrap()
                    .trim_matches('"')
                    .to_string()
            };
            (
                field("id").parse().unwrap(),
                field("pid").parse().ok(),
                field("state"),
            )
        })
        .collect()
}

#[test]
fn cluster_up_status_down_and_up_again_keeps_the_data() {
    let cluster = launch(&["--regions", "eu-hamburg,ap-china,au-sydney"]);
    let dir = cluster.dir.as_str();
    let endpoints = cluster.endpoints.join(",");
    let first = cluster.endpoints[0].clone();
    let last = cluster.endpoints[2].clone();
    assert_eq!(cluster.endpoints.len(), 3);

    let nodes = status(dir);
    assert_eq!(nodes.len(), 3);
    assert!(
        nodes
            .iter()
            .all(|(_, pid, state)| pid.is_some() && state != "down"),
        "{nodes:?}"
    );
    assert_eq!(
        nodes
            .iter()
            .filter(|(_, _, state)| state == "leader")
            .count(),
        1,
        "{nodes:?}"
    );

    ok(&["kv", "put", "k", "v", "--endpoints", &first]);
    assert_eq!(ok(&["kv", "get", "k", "--endpoints", &last]), "v\n");
    let missing = hanse(&["kv", "get", "absent", "--endpoints", &last]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&missing.stderr).trim(), "not found");

    ok(&["cluster", "down", "--dir", dir]);
    assert!(
        status(dir)
            .iter()
            .all(|(_, pid, state)| pid.is_none() && state == "down")
    );

    ok(&["cluster", "up", "--dir", dir]);
    assert_eq!(
        ok(&["kv", "get", "k", "--endpoints", &first]),
        "v\n",
        "data survives a restart"
    );

    // SIGKILL the leader: the same read through the others still answers.
    let (leader, pid, _) = status(dir)
        .into_iter()
        .find(|(_, _, state)| state == "leader")
        .unwrap();
    let others: Vec<&str> = endpoints
        .split(',')
        .enumerate()
        .filter(|(i, _)| *i as u64 + 1 != leader)
        .map(|(_, e)| e)
        .collect();
    let killed = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.unwrap().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        ok(&["kv", "get", "k", "--endpoints", &others.join(",")]),
        "v\n"
    );
    println!(
        "read after SIGKILL of leader node {leader} answered in {:?}",
        killed.elapsed()
    );
    assert!(Path::new(dir).join(format!("node{leader}.log")).exists());
}

/// The .proto files are the contract for any language: a Python client generated from
/// them with grpcio-tools writes and reads the same data as the Rust CLI.
#[test]
fn a_node_whose_address_is_taken_fails_the_start_and_nothing_is_left_running() {
    let port = common::free_port();
    let taken = std::net::TcpListener::bind(format!("127.0.0.13:{port}")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let dir = dir.to_str().unwrap();
    let up = hanse(&[
        "cluster", "up", "--dir", dir, "--nodes", "3", "--port", &port, "--wait", "10",
    ]);
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(!up.status.success(), "{stderr}");
    assert!(stderr.contains("nodes exited: node 3"), "{stderr}");
    assert!(
        status(dir).iter().all(|(_, pid, _)| pid.is_none()),
        "{:?}",
        status(dir)
    );
    // The address free again, the same directory starts.
    drop(taken);
    ok(&["cluster", "up", "--dir", dir]);
    ok(&["cluster", "down", "--dir", dir]);
}

#[test]
fn a_python_client_generated_from_the_proto_reads_and_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = root.join(".venv-grpc/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("gen");
    std::fs::create_dir_all(&generated).unwrap();
    let protoc = Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(root.join("proto"))
        .arg(format!("--python_out={}", generated.display()))
        .arg(format!("--grpc_python_out={}", generated.display()))
        .arg(root.join("proto/hanse/v1/kv.proto"))
        .output()
        .unwrap();
    assert!(
        protoc.status.success(),
        "{}",
        String::from_utf8_lossy(&protoc.stderr)
    );

    let cluster = launch(&[]);
    let endpoints = cluster.endpoints.join(",");
    let follower_first: String = cluster
        .endpoints
        .iter()
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join(",");

    let py = |args: &[&str]| {
        Command::new(&python)
            .arg(root.join("proto/python/hanse_kv.py"))
            .args(["--endpoints", &follower_first])
            .arg("--certs-dir")
            .arg(common::certs())
            .args(args)
            .env("PYTHONPATH", &generated)
            .output()
            .unwrap()
    };
    let put = py(&["put", "from-python", "hallo"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert_eq!(
        ok(&["kv", "get", "from-python", "--endpoints", &endpoints]),
        "hallo\n"
    );

    ok(&["kv", "put", "from-rust", "moin", "--endpoints", &endpoints]);
    let get = py(&["get", "from-rust"]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&get.stdout), "moin\n");
    let missing = py(&["get", "nobody-wrote-this"]);
    assert_eq!(missing.status.code(), Some(1));
}

/// `hanse admin status|shards` report the node and the first shard with its leader.
#[test]
fn admin_reports_the_node_and_its_shards() {
    let cluster = launch(&["--regions", "eu-hamburg,ap-china"]);
    let second = cluster.endpoints[1].as_str();

    let status = ok(&["admin", "status", "--endpoints", second, "--json"]);
    assert!(
        status.contains("\"node_id\":2") && status.contains("\"region\":\"ap-china\""),
        "{status}"
    );
    assert!(
        status.contains(&format!("\"addr\":\"{second}\"")),
        "{status}"
    );
    // The routing table: the first data shard and the meta shard, each with a leader
    // (node and region) and three voters.
    let shards = ok(&["admin", "shards", "--endpoints", second, "--json"]);
    let table: serde_json::Value = serde_json::from_str(&shards).unwrap();
    let rows = table["shards"].as_array().unwrap();
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 0], "{shards}");
    for row in rows {
        assert_ne!(row["leader_node"], 0, "a leader is known: {row}");
        assert!(
            ["eu-hamburg", "ap-china"].contains(&row["leader_region"].as_str().unwrap()),
            "{row}"
        );
        assert_eq!(row["replicas"].as_array().unwrap().len(), 3, "{row}");
        assert!(row["load"]["size_bytes"].is_u64(), "{row}");
    }
    // Load statistics: a Hamburg client's writes show up in the data shard's report as
    // written bytes, sampled keys and requests from eu-hamburg (reports come each second).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = hanse_client::ClientOptions {
        region: Some("eu-hamburg".into()),
        ..common::client_options()
    };
    let client = hanse_client::Client::new(&cluster.endpoints, options).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let load = loop {
        for i in 0..50 {
            runtime
                .block_on(client.put(format!("stats-{:02}", i % 5).as_bytes(), b"v"))
                .unwrap();
        }
        let shards = ok(&["admin", "shards", "--endpoints", second, "--json"]);
        let table: serde_json::Value = serde_json::from_str(&shards).unwrap();
        let load = table["shards"][0]["load"].clone();
        if load["origins"]["eu-hamburg"].as_u64().unwrap_or(0) > 0 {
            break load;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no origins reported: {load}"
        );
    };
    assert!(
        load["bytes_written_per_sec"].as_u64().unwrap() > 0,
        "{load}"
    );
    let sampled: Vec<&str> = load["sampled_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert!(
        !sampled.is_empty() && sampled.iter().all(|k| k.starts_with("stats-")),
        "{load}"
    );
    assert!(load["replica_lag"].is_u64(), "{load}");

    // The planner runs in shadow mode on the meta shard's leader: it sees every round's
    // table, and its status says so.
    let planner = cluster.planner_running();
    assert_eq!(planner["mode"], "shadow", "{planner}");
    assert_eq!(planner["acting"], "cockroach-tuned", "{planner}");
    assert!(
        planner["fallback"].is_null(),
        "the built-in network loaded: {planner}"
    );

    // `hanse planner record` writes the load it sees as a trace training can replay.
    let trace = Path::new(&cluster.dir).join("trace.jsonl");
    let mut recorder = Command::new(env!("CARGO_BIN_EXE_hanse"))
        .args([
            "planner",
            "record",
            "--endpoints",
            second,
            "--duration",
            "4s",
        ])
        .arg("--out")
        .arg(&trace)
        .env("HANSE_CERTS_DIR", common::certs())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while recorder.try_wait().unwrap().is_none() {
        for i in 0..20 {
            runtime
                .block_on(client.put(format!("trace-{:02}", i % 4).as_bytes(), b"v"))
                .unwrap();
        }
    }
    assert!(recorder.wait().unwrap().success());
    let ticks = hanse_planner::sim::trace::read_trace(&trace).unwrap();
    assert!(ticks.len() >= 3, "{ticks:?}");
    let from_hamburg = |s: &hanse_planner::sim::trace::TraceShard| {
        s.origins.iter().any(|(r, n)| r == "eu-hamburg" && *n > 0.0)
    };
    assert!(
        ticks.iter().any(|t| t.shards.iter().any(from_hamburg)),
        "{ticks:?}"
    );
    assert!(
        ticks
            .iter()
            .flat_map(|t| &t.shards)
            .all(|s| s.start.is_empty()),
        "one data shard, the meta shard left out: {ticks:?}"
    );

    let table = ok(&["admin", "shards", "--endpoints", second]);
    assert!(table.contains("[-inf, \\xff)"), "{table}");
    assert!(table.contains("[\\xff, +inf)"), "{table}");

    // Refused changes: one line naming the problem, a non-zero exit, nothing changed.
    let refused = |args: &[&str], expected: &str| {
        let output = hanse(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    };
    let to_stranger = [
        "admin",
        "transfer-leader",
        "--shard",
        "1",
        "--to",
        "9",
        "--endpoints",
        second,
    ];
    refused(&to_stranger, "node 9 is not a voter");
    let unknown_shard = [
        "admin",
        "transfer-leader",
        "--shard",
        "7",
        "--to",
        "1",
        "--endpoints",
        second,
    ];
    refused(&unknown_shard, "shard 7 is not hosted");
    let unreachable = [
        "admin",
        "add-node",
        "--node-id",
        "5",
        "--addr",
        "127.0.0.1:1",
        "--region",
        "x",
        "--endpoints",
        second,
    ];
    refused(&unreachable, "cannot reach node at 127.0.0.1:1");
    let stranger = [
        "admin",
        "remove-node",
        "--node-id",
        "9",
        "--endpoints",
        second,
    ];
    refused(&stranger, "node 9 is a replica of no shard node 2 holds");
    let after = ok(&["admin", "shards", "--endpoints", second, "--json"]);
    assert_eq!(after.matches("\"role\":\"voter\"").count(), 6, "{after}");
}

/// Asserts that each of `keys` reads back as `value` through `endpoints`; returns the
/// runtime and client it read with, for more checks.
fn read_back(
    endpoints: &[String],
    keys: &[String],
    value: &[u8],
) -> (tokio::runtime::Runtime, hanse_client::Client) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = hanse_client::Client::new(endpoints, common::client_options()).unwrap();
    for key in keys {
        let read = runtime.block_on(client.get(key.as_bytes())).unwrap();
        assert_eq!(read.as_deref(), Some(value), "{key}");
    }
    (runtime, client)
}

/// Writes `under-load-00000`, `-00001`, ... with `value` through a client until told to
/// stop; returns the keys whose write was acknowledged.
fn write_until(
    endpoints: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    value: &'static [u8],
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = hanse_client::Client::new(&endpoints, common::client_options()).unwrap();
        let mut acknowledged = Vec::new();
        // Bounded even if the caller never says stop.
        for i in 0..20_000 {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let key = format!("under-load-{i:05}");
            if runtime.block_on(client.put(key.as_bytes(), value)).is_ok() {
                acknowledged.push(key);
            }
        }
        acknowledged
    })
}

#[test]
fn a_removed_node_leaves_the_shards_the_node_asked_does_not_hold() {
    let cluster = launch(&[]);
    let dir = cluster.dir.as_str();
    ok(&["cluster", "add-node", "--dir", dir, "--json"]);
    // Node 1 leaves shard 1 and keeps the meta shard: asked first to remove node 4 from
    // "every shard", it would reach only the meta shard.
    let second = cluster.endpoints[1].as_str();
    ok(&[
        "admin",
        "remove-node",
        "--node-id",
        "1",
        "--shard",
        "1",
        "--endpoints",
        second,
    ]);
    ok(&[
        "cluster",
        "remove-node",
        "--dir",
        dir,
        "--node",
        "4",
        "--json",
    ]);
    let shards = ok(&["admin", "shards", "--json", "--endpoints", second]);
    assert!(!shards.contains(r#""node":4,"#), "{shards}");
    assert!(shards.contains(r#""node":1,"#), "{shards}");
}

#[test]
fn a_node_joins_under_writes_takes_the_lead_and_a_founder_leaves() {
    let cluster = launch(&[]);
    let dir = cluster.dir.as_str();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = write_until(cluster.endpoints.clone(), stop.clone(), b"v");
    std::thread::sleep(std::time::Duration::from_millis(300));

    let joined = ok(&["cluster", "add-node", "--dir", dir, "--json"]);
    assert!(joined.contains(r#""node":4"#), "{joined}");
    assert!(!joined.contains("learner"), "promoted to voter: {joined}");
    let node4 = status(dir)
        .into_iter()
        .find(|(id, _, _)| *id == 4)
        .expect("node 4 in the status");
    assert!(node4.1.is_some(), "{node4:?}");

    let first = cluster.endpoints[0].as_str();
    ok(&[
        "admin",
        "transfer-leader",
        "--shard",
        "1",
        "--to",
        "4",
        "--endpoints",
        first,
    ]);
    let leaders: Vec<u64> = status(dir)
        .into_iter()
        .filter(|(_, _, state)| state == "leader")
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(leaders, [4]);

    let left = ok(&[
        "cluster",
        "remove-node",
        "--dir",
        dir,
        "--node",
        "1",
        "--json",
    ]);
    assert!(!left.contains(r#""node":1,"#), "{left}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = writer.join().unwrap();
    assert!(acknowledged.len() > 10, "{} writes", acknowledged.len());

    // Every acknowledged write is there, read through the new member.
    let node4_addr = cluster.endpoints[0].replace("127.0.0.11", "127.0.0.14");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client =
        hanse_client::Client::new(std::slice::from_ref(&node4_addr), common::client_options())
            .unwrap();
    for key in &acknowledged {
        let value = runtime.block_on(client.get(key.as_bytes())).unwrap();
        assert_eq!(value.as_deref(), Some(&b"v"[..]), "{key}");
    }
    // The cluster view is the meta shard's table, which the nodes' reports (one a
    // second) bring up to date.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let shards = ok(&["admin", "shards", "--json", "--endpoints", &node4_addr]);
        let current = [2, 3, 4]
            .iter()
            .all(|node| shards.contains(&format!(r#""node":{node},"#)))
            && !shards.contains(r#""node":1,"#);
        if current {
            break;
        }
        assert!(Instant::now() < deadline, "{shards}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // The removed node deleted its copy of the shard before it was stopped.
    let data = Path::new(dir).join("node1");
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let engine = loop {
        match hanse_storage_rocksdb::Engine::open(&data, Default::default()) {
            Ok(engine) => break engine,
            Err(e) => {
                assert!(Instant::now() < deadline, "node 1 never stopped: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    };
    assert_eq!(engine.load_descriptors().unwrap(), vec![]);
}

/// The routing table as `hanse admin shards` prints it (in key order): (id, start, end),
/// keys escaped.
fn shard_map(endpoint: &str) -> Vec<(u64, String, String)> {
    admin_json_shards("shards", endpoint)
        .iter()
        .map(|s| {
            (
                s["id"].as_u64().unwrap(),
                s["start"].as_str().unwrap().to_string(),
                s["end"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn splits_and_merges_under_writes_keep_every_acknowledged_key_and_cover_the_keyspace_once() {
    let cluster = launch(&[]);
    let endpoints = cluster.endpoints.join(",");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = write_until(cluster.endpoints.clone(), stop.clone(), b"v");

    // 20 splits through different nodes while the writer runs; every third new shard's
    // leadership moves away, so reads and scans cross leaders.
    for i in 1..=20u64 {
        let at = format!("under-load-{:05}", i * 40);
        let via = &cluster.endpoints[i as usize % 3];
        let split: serde_json::Value = ok(&["admin", "split", &at, "--json", "--endpoints", via])
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .next_back()
            .unwrap();
        assert_eq!(split["start"], at.as_str(), "{split}");
        if i % 3 == 0 {
            let shard = split["id"].to_string();
            let to = (i % 2 + 2).to_string();
            ok(&[
                "admin",
                "transfer-leader",
                "--shard",
                &shard,
                "--to",
                &to,
                "--endpoints",
                &endpoints,
            ]);
        }
    }
    // The 21 data shards and the meta shard.
    assert_eq!(shard_map(&cluster.endpoints[0]).len(), 22);

    // 10 merges, each of a shard with its right neighbour, still under the writes.
    for i in 0..10usize {
        let before = shard_map(&cluster.endpoints[i % 3]);
        let (left, right) = (before[i].clone(), before[i + 1].clone());
        let via = &cluster.endpoints[(i + 1) % 3];
        let merged = ok(&[
            "admin",
            "merge",
            &left.0.to_string(),
            "--json",
            "--endpoints",
            via,
        ]);
        let merged: serde_json::Value = serde_json::from_str(merged.trim()).unwrap();
        assert_eq!(merged["id"], left.0);
        assert_eq!(
            (merged["start"].as_str(), merged["end"].as_str()),
            (Some(left.1.as_str()), Some(right.2.as_str()))
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = writer.join().unwrap();
    assert!(acknowledged.len() > 20, "{} writes", acknowledged.len());

    // The routing table, asked through any node, has 11 data shards and the meta shard,
    // covering the key space exactly once.
    let map = shard_map(&cluster.endpoints[0]);
    assert_eq!(map.len(), 12, "{map:?}");
    assert_eq!(map[0].1, "");
    assert_eq!(map[11].1, "\\xff");
    assert_eq!(map[11].2, "");
    for pair in map.windows(2) {
        assert_eq!(pair[0].2, pair[1].1, "adjacent shards meet: {map:?}");
    }
    for endpoint in &cluster.endpoints[1..] {
        assert_eq!(shard_map(endpoint), map);
    }

    // Every acknowledged write reads back, and scans across all shards, both ways, see
    // each key once in order.
    let (runtime, client) = read_back(&cluster.endpoints, &acknowledged, b"v");
    let forward = runtime
        .block_on(client.scan(b"under-load-", b"under-load.", 100_000, false))
        .unwrap();
    let keys: Vec<String> = forward
        .iter()
        .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    for key in &acknowledged {
        assert!(
            keys.binary_search(key).is_ok(),
            "{key} missing from the scan"
        );
    }
    let mut backward = runtime
        .block_on(client.scan(b"under-load-", b"under-load.", 100_000, true))
        .unwrap();
    backward.reverse();
    assert_eq!(backward, forward);
}

#[test]
fn the_balancer_splits_a_growing_shard_and_merges_cold_neighbours_back() {
    let cluster = launch(&["--split-size", "64KiB", "--balance-cool-down", "1"]);
    let runtime = common::runtime();
    let client = std::sync::Arc::new(
        hanse_client::Client::new(&cluster.endpoints, common::client_options()).unwrap(),
    );
    let keys: Vec<String> = (0..1200).map(|i| format!("grow-{i:05}")).collect();
    let value = vec![b'v'; 512];
    // About 640 KiB in eight concurrent streams: ten times the split size.
    runtime.block_on(async {
        let mut writers = tokio::task::JoinSet::new();
        for part in keys.chunks(150) {
            let (client, part, value) = (client.clone(), part.to_vec(), value.clone());
            writers.spawn(async move {
                for key in part {
                    client.put(key.as_bytes(), &value).await.unwrap();
                }
            });
        }
        while let Some(done) = writers.join_next().await {
            done.unwrap();
        }
    });
    let data_shards = |endpoint: &str| shard_map(endpoint).len() - 1;
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while data_shards(&cluster.endpoints[0]) < 6 {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            shard_map(&cluster.endpoints[0])
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let grown = data_shards(&cluster.endpoints[0]);
    // With no preferred region, the leaders spread over the nodes (all regions here).
    let leader_regions = || {
        let table = admin_json_shards("shards", &cluster.endpoints[2]);
        let mut regions: Vec<String> = table
            .iter()
            .map(|s| s["leader_region"].as_str().unwrap().to_string())
            .collect();
        regions.sort();
        regions.dedup();
        regions
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while leader_regions().len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", leader_regions());
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    for key in &keys {
        let read = runtime.block_on(client.get(key.as_bytes())).unwrap();
        assert_eq!(read.as_deref(), Some(value.as_slice()), "{key}");
    }

    // Emptied and idle, the shards merge back.
    runtime.block_on(async {
        for key in &keys {
            client.delete(key.as_bytes()).await.unwrap();
        }
    });
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while data_shards(&cluster.endpoints[1]) * 2 > grown {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            shard_map(&cluster.endpoints[1])
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    runtime.block_on(client.put(b"grow-after", b"1")).unwrap();
    assert_eq!(
        runtime
            .block_on(client.scan(b"grow-", b"grow.", 10, false))
            .unwrap(),
        vec![(b"grow-after".to_vec(), b"1".to_vec())]
    );
}

#[test]
fn a_bulk_ingest_is_split_by_size_reads_back_and_refuses_unsorted_keys() {
    use hanse_client::proto;
    let cluster = launch(&["--split-size", "64KiB", "--balance-cool-down", "1"]);
    let runtime = common::runtime();
    let client = hanse_client::Client::new(&cluster.endpoints, common::client_options()).unwrap();
    let pair = |i: usize| {
        (
            format!("bulk-{i:05}").into_bytes(),
            format!("{i}").repeat(100),
        )
    };

    // Refused whole, by the client and by a node asked directly: nothing lands.
    let unsorted: Vec<(Vec<u8>, Vec<u8>)> = [2, 1]
        .iter()
        .map(|&i| (pair(i).0, pair(i).1.into_bytes()))
        .collect();
    let refused = runtime.block_on(client.ingest(&unsorted)).unwrap_err();
    assert!(
        matches!(refused, hanse_client::ClientError::InvalidArgument(_)),
        "{refused}"
    );
    let channel = {
        let _inside = runtime.enter();
        hanse_client::connect(&cluster.endpoints[0], Some(common::root_tls())).unwrap()
    };
    let mut kv = proto::kv_client::KvClient::new(channel);
    let request = proto::IngestRequest {
        route: None,
        pairs: unsorted
            .iter()
            .map(|(key, value)| proto::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
    };
    let answer = runtime.block_on(kv.ingest(request)).unwrap().into_inner();
    let kind = answer.error.and_then(|e| e.kind);
    assert!(
        matches!(kind, Some(proto::request_error::Kind::InvalidArgument(ref e)) if e.message.contains("ascending")),
        "{kind:?}"
    );
    assert_eq!(runtime.block_on(client.get(&unsorted[0].0)).unwrap(), None);

    // About 1.2 MiB: twenty times the split size, in requests of about 120 KiB (a shard
    // past its split size holds the next one until it was split).
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..4000)
        .map(|i| (pair(i).0, pair(i).1.into_bytes()))
        .collect();
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    for chunk in pairs.chunks(400) {
        while let Err(e) = runtime.block_on(client.ingest(chunk)) {
            assert!(Instant::now() < deadline, "{e}");
        }
    }
    runtime
        .block_on(client.put(b"bulk-00007", b"later"))
        .unwrap();
    for (i, (key, value)) in pairs.iter().enumerate() {
        let read = runtime.block_on(client.get(key)).unwrap();
        let expected = if i == 7 { &b"later"[..] } else { value };
        assert_eq!(read.as_deref(), Some(expected), "{i}");
    }
    // Size-based splits bring every shard under the split size.
    let sizes = || -> Vec<u64> {
        admin_json_shards("shards", &cluster.endpoints[0])
            .iter()
            .map(|s| s["load"]["size_bytes"].as_u64().unwrap())
            .collect()
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(90);
    while sizes().len() < 12 || sizes().iter().any(|&size| size > 64 << 10) {
        assert!(Instant::now() < deadline, "{:?}", sizes());
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let scanned = runtime
        .block_on(client.scan(b"bulk-", b"bulk.", 10_000, false))
        .unwrap();
    assert_eq!(scanned.len(), pairs.len());
}

#[test]
fn cold_neighbours_on_different_nodes_first_get_the_same_replicas_then_merge() {
    // Regions in turn: Hamburg, China, Sydney, Hamburg; every shard on all four.
    let cluster = launch_nodes(4, &["--balance-cool-down", "5"]);
    let endpoints = cluster.endpoints.join(",");
    for key in ["apple", "zebra"] {
        ok(&["kv", "put", key, key, "--endpoints", &endpoints]);
    }
    let split: serde_json::Value =
        ok(&["admin", "split", "m", "--json", "--endpoints", &endpoints])
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .next_back()
            .unwrap();
    // The new shard loses its replica on node 4 (within the cool-down, before the
    // balancer would merge the two back): the neighbours now differ.
    let right = split["id"].to_string();
    ok(&[
        "admin",
        "remove-node",
        "--node-id",
        "4",
        "--shard",
        &right,
        "--endpoints",
        &endpoints,
    ]);
    let replica_nodes = || -> Vec<Vec<u64>> {
        let table = admin_json_shards("shards", &cluster.endpoints[1]);
        table
            .iter()
            .filter(|s| s["id"] != 0)
            .map(|s| {
                let mut nodes: Vec<u64> = s["replicas"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["node"].as_u64().unwrap())
                    .collect();
                nodes.sort();
                nodes
            })
            .collect()
    };
    // The routing table hears of it with the next report.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while replica_nodes() != [vec![1, 2, 3, 4], vec![1, 2, 3]] {
        assert!(Instant::now() < deadline, "{:?}", replica_nodes());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The balancer gives the new shard its replica on node 4 back, then merges.
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    while replica_nodes() != [vec![1, 2, 3, 4]] {
        assert!(
            Instant::now() < deadline,
            "{:?}\n{}",
            replica_nodes(),
            cluster.log_tails(40)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    for key in ["apple", "zebra"] {
        assert_eq!(
            ok(&["kv", "get", key, "--endpoints", &endpoints]),
            format!("{key}\n")
        );
    }
}

#[test]
fn a_region_that_lost_its_replica_of_a_shard_gets_one_back() {
    // Regions in turn: Hamburg, China, Sydney, Hamburg; node 2 is China's only node.
    let cluster = launch_nodes(4, &["--balance-cool-down", "2"]);
    let endpoints = cluster.endpoints.join(",");
    ok(&["kv", "put", "tea", "green", "--endpoints", &endpoints]);
    ok(&[
        "admin",
        "remove-node",
        "--node-id",
        "2",
        "--shard",
        "1",
        "--endpoints",
        &endpoints,
    ]);
    let china_role = || -> Option<String> {
        let table = admin_json_shards("shards", &cluster.endpoints[0]);
        table.iter().find(|s| s["id"] == 1).and_then(|s| {
            s["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["region"] == "ap-china")
                .map(|r| r["role"].as_str().unwrap().to_string())
        })
    };
    // The placement rules (a voter in ap-china) bring a replica back to node 2.
    let deadline = Instant::now() + std::time::Duration::from_secs(90);
    while china_role().as_deref() != Some("voter") {
        assert!(
            Instant::now() < deadline,
            "{:?}\n{}",
            china_role(),
            cluster.log_tails(40)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let china = cluster.endpoints[1].as_str();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&ok(&["admin", "status", "--json", "--endpoints", china]))
                .unwrap();
        let hosts_shard_1 = status["shards"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["descriptor"]["id"] == 1 || s["id"] == 1);
        if hosts_shard_1 {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        ok(&["kv", "get", "tea", "--endpoints", &endpoints]),
        "green\n"
    );
}

#[test]
fn the_recovery_region_holds_learners_once_three_voters_remain_elsewhere() {
    // Regions in turn: Hamburg, China, Sydney, Hamburg.
    let cluster = launch_nodes(4, &["--balance-cool-down", "1"]);
    let sydney_roles = || -> Vec<String> {
        let table = admin_json_shards("shards", &cluster.endpoints[0]);
        table
            .iter()
            .flat_map(|s| s["replicas"].as_array().unwrap().clone())
            .filter(|r| r["region"] == "au-sydney")
            .map(|r| r["role"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while sydney_roles() != ["learner", "learner"] {
        assert!(Instant::now() < deadline, "{:?}", sydney_roles());
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // The data shard and the meta shard still take writes, and Sydney's copy gets them.
    let endpoints = cluster.endpoints.join(",");
    ok(&["kv", "put", "city", "Hamburg", "--endpoints", &endpoints]);
    assert_eq!(
        ok(&["kv", "get", "city", "--endpoints", &endpoints]),
        "Hamburg\n"
    );
    let sydney = cluster.endpoints[2].as_str();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&ok(&["admin", "status", "--json", "--endpoints", sydney]))
                .unwrap();
        let roles: Vec<&str> = status["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["role"].as_str().unwrap())
            .collect();
        if roles == ["learner", "learner"] {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// In heuristic mode the planner's decisions are carried out: the tuned heuristic splits
/// the busy shard at a key its load falls on, far below the size at which the size rules
/// would split it, and its status names the policy.
#[test]
fn the_planner_in_heuristic_mode_splits_a_busy_shard_at_a_sampled_key() {
    let cluster = launch(&[
        "--balance",
        "planner=heuristic",
        // A small capacity: this machine's write rate counts as heavy load.
        "--balance",
        "planner_node_capacity=100",
    ]);
    let endpoint = cluster.endpoints[0].as_str();
    // 4 KiB values: the shard passes the envelope's 1 MiB floor for splits in seconds.
    const VALUE: [u8; 4096] = [b'v'; 4096];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = write_until(cluster.endpoints.clone(), stop.clone(), &VALUE);
    let deadline = Instant::now() + std::time::Duration::from_secs(90);
    let split_at = loop {
        let starts: Vec<String> = admin_json_shards("shards", endpoint)
            .iter()
            .filter(|s| s["id"] != 0)
            .map(|s| s["start"].as_str().unwrap().to_string())
            .collect();
        if let Some(start) = starts.iter().find(|s| s.starts_with("under-load-")) {
            break start.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no load split: {starts:?}\n{:?}",
            cluster.planner_status()
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = writer.join().unwrap();
    let planner = cluster
        .planner_status()
        .expect("the meta leader reports its planner");
    assert_eq!(planner["mode"], "heuristic", "{planner}");
    let decided = planner["decisions"].as_array().unwrap().iter().any(|d| {
        d["policy"] == "cockroach-tuned"
            && d["action"]
                .as_str()
                .unwrap()
                .contains(&format!("at \"{split_at}\""))
    });
    assert!(decided, "{split_at}: {planner}");
    assert!(planner["fallback"].is_null(), "{planner}");
    // Nothing written was lost on the way.
    read_back(&cluster.endpoints, &acknowledged, &VALUE);
}

/// Destroying a replica the group still counts is refused: called on both followers of a
/// three-replica shard it would have destroyed a quorum (the probe of the security issue).
/// A user's certificate may not call it at all.
#[test]
fn destroying_replicas_a_quorum_still_needs_is_refused() {
    use hanse_client::proto::admin_client::AdminClient;
    let cluster = launch(&[]);
    let endpoints = cluster.endpoints.join(",");
    ok(&["kv", "put", "kept", "safe", "--endpoints", &endpoints]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let as_node = |id: u64| {
        let identity = hanse_client::Identity::Node(id);
        let files = hanse_client::CertsDir::new(common::certs()).files(&identity);
        Some(hanse_client::ClientTls::load(files, identity).unwrap())
    };
    let destroy = |endpoint: &str, tls| {
        let request = hanse_client::proto::DestroyReplicaRequest { shard_id: 1 };
        runtime.block_on(async {
            let channel = hanse_client::connect(endpoint, tls).unwrap();
            AdminClient::new(channel).destroy_replica(request).await
        })
    };
    let shards = admin_json_shards("shards", &cluster.endpoints[0]);
    let first = shards.iter().find(|s| s["id"] == 1).expect("shard 1");
    let leader = first["leader_node"].as_u64().unwrap();
    for (i, endpoint) in cluster.endpoints.iter().enumerate() {
        let node = i as u64 + 1;
        if node == leader {
            continue;
        }
        let refused = destroy(endpoint, as_node(leader)).unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        assert!(
            refused.message().contains("still a replica"),
            "{}",
            refused.message()
        );
        let refused = destroy(endpoint, Some(common::root_tls())).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    }
    assert_eq!(
        ok(&["kv", "get", "kept", "--endpoints", &endpoints]),
        "safe\n"
    );
}

/// The certificates of a running cluster rotate under load without a restart: every node
/// serves its new certificate once it noticed the new files (its status shows the new
/// expiry), new connections with a new client certificate work, and the writer that ran
/// all along saw no error.
#[test]
fn certificates_rotate_under_load_without_a_restart() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let certs = tempfile::tempdir().unwrap();
    let certs_dir = certs.path().join("certs");
    let certs_arg = certs_dir.to_str().unwrap().to_string();
    let cluster = launch(&["--certs-dir", &certs_arg]);
    let options = hanse_client::ClientOptions {
        tls: Some(hanse_client::user_tls(&certs_dir, "root").unwrap()),
        ..hanse_client::ClientOptions::default()
    };
    let client = Arc::new(hanse_client::Client::new(&cluster.endpoints, options).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = runtime.spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            let (mut written, mut errors) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let key = format!("rotating-{written}");
                match client.put(key.as_bytes(), b"v").await {
                    Ok(()) => written += 1,
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (written, errors)
        }
    });
    let expiry = |endpoint: &str| {
        let status = ok(&[
            "admin",
            "status",
            "--json",
            "--endpoints",
            endpoint,
            "--certs-dir",
            &certs_arg,
        ]);
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        status["certificate_expires_unix_ms"].as_u64().unwrap()
    };
    let before: Vec<u64> = cluster.endpoints.iter().map(|e| expiry(e)).collect();
    for (i, endpoint) in cluster.endpoints.iter().enumerate() {
        let id = (i + 1).to_string();
        let host = endpoint.rsplit_once(':').unwrap().0;
        ok(&[
            "cert",
            "create-node",
            "--certs-dir",
            &certs_arg,
            "--node-id",
            &id,
            "--host",
            host,
            "--host",
            "localhost",
            "--days",
            "30",
            "--overwrite",
        ]);
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now: Vec<u64> = cluster.endpoints.iter().map(|e| expiry(e)).collect();
        if now.iter().zip(&before).all(|(now, before)| now < before) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every node reloaded: {now:?} vs {before:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    ok(&[
        "cert",
        "create-client",
        "--certs-dir",
        &certs_arg,
        "--user",
        "root",
        "--overwrite",
    ]);
    let endpoints = cluster.endpoints.join(",");
    let read = [
        "kv",
        "get",
        "rotating-0",
        "--endpoints",
        &endpoints,
        "--certs-dir",
        &certs_arg,
    ];
    assert_eq!(ok(&read), "v\n");
    stop.store(true, Ordering::Relaxed);
    let (written, errors) = runtime.block_on(writer).unwrap();
    assert!(written > 0);
    assert!(errors.is_empty(), "the writer saw errors: {errors:?}");
}

/// Users may do what their roles grant and nothing else: a reader of `a/` reads it and
/// writes nothing, reads nothing of `b/` and scans nothing across `a/`'s end; a writer
/// writes `a/`; only `admin` calls the Admin service and only `root` changes users and
/// roles; a revoked role stops working. Each refusal names what was missing.
#[test]
fn users_may_do_what_their_roles_grant_and_nothing_else() {
    let cluster = launch(&[]);
    let certs = hanse_client::CertsDir::new(common::certs());
    hanse_security::issue::create_local_cluster(&certs, &[], &["alice", "bob", "ops"]).unwrap();
    let at = cluster.endpoints.join(",");
    let root = |args: &[&str]| ok(&[args, &["--endpoints", &at]].concat());
    root(&["role", "add", "reader"]);
    root(&[
        "role", "grant", "reader", "--prefix", "a/", "--access", "read",
    ]);
    root(&["role", "add", "writer"]);
    root(&[
        "role",
        "grant",
        "writer",
        "--prefix",
        "a/",
        "--access",
        "readwrite",
    ]);
    for (user, role) in [("alice", "reader"), ("bob", "writer"), ("ops", "admin")] {
        root(&["user", "add", user]);
        root(&["user", "grant", user, role]);
    }
    root(&["kv", "put", "a/1", "one"]);
    root(&["kv", "put", "b/1", "two"]);
    let listed = root(&["user", "list"]);
    assert!(
        listed.contains("alice") && listed.contains("reader"),
        "{listed}"
    );
    assert!(root(&["role", "list"]).contains("readwrite [a/, a0)"));

    let as_user =
        |user: &str, args: &[&str]| hanse(&[args, &["--endpoints", &at, "--user", user]].concat());
    // Every node has read the new grants within about a second.
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    for endpoint in &cluster.endpoints {
        loop {
            let read = hanse(&[
                "kv",
                "get",
                "a/1",
                "--endpoints",
                endpoint,
                "--user",
                "alice",
            ]);
            if read.status.success() {
                assert_eq!(String::from_utf8_lossy(&read.stdout), "one\n");
                break;
            }
            assert!(Instant::now() < deadline, "{read:?}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let refused = |output: std::process::Output, says: &str| {
        assert!(!output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "expected {says:?} in {stderr}");
    };
    refused(
        as_user("alice", &["kv", "put", "a/2", "x"]),
        "user alice may not readwrite a/2",
    );
    refused(
        as_user("alice", &["kv", "get", "b/1"]),
        "user alice may not read b/1",
    );
    refused(
        as_user("alice", &["kv", "scan", "--from", "a/", "--to", "c"]),
        "may not read a0",
    );
    let scanned = as_user("alice", &["kv", "scan", "--from", "a/", "--to", "a0"]);
    assert_eq!(String::from_utf8_lossy(&scanned.stdout), "a/1\tone\n");
    refused(as_user("alice", &["admin", "status"]), "the role `admin`");
    refused(as_user("alice", &["user", "add", "eve"]), "the role `root`");
    assert!(
        as_user("bob", &["kv", "put", "a/3", "three"])
            .status
            .success()
    );
    refused(
        as_user("bob", &["kv", "put", "b/3", "x"]),
        "may not readwrite b/3",
    );
    assert!(as_user("ops", &["admin", "status"]).status.success());
    refused(
        as_user("ops", &["kv", "get", "a/1"]),
        "user ops may not read a/1",
    );
    refused(as_user("ops", &["user", "add", "eve"]), "the role `root`");

    // Alice logs in without her certificate; any node takes the token at once (a node
    // that has not yet applied the login waits for it).
    let with_password = |args: &[&str], password: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hanse"))
            .args(args)
            .args(["--endpoints", &at])
            .env("HANSE_CERTS_DIR", common::certs())
            .env("HANSE_PASSWORD", password)
            .output()
            .unwrap()
    };
    refused(
        with_password(&["user", "login", "alice"], "alice's password"),
        "wrong user name or password",
    );
    let set = with_password(&["user", "passwd", "alice"], "alice's password");
    assert!(set.status.success(), "{set:?}");
    refused(
        with_password(&["user", "login", "alice"], "not alice's password"),
        "wrong user name or password",
    );
    let login = with_password(&["user", "login", "alice"], "alice's password");
    assert!(login.status.success(), "{login:?}");
    let token = String::from_utf8(login.stdout).unwrap().trim().to_string();
    for endpoint in &cluster.endpoints {
        let read = ok(&[
            "kv",
            "get",
            "a/1",
            "--endpoints",
            endpoint,
            "--token",
            &token,
        ]);
        assert_eq!(read, "one\n");
    }
    let with_token =
        |args: &[&str]| hanse(&[args, &["--endpoints", &at, "--token", &token]].concat());
    refused(
        with_token(&["kv", "put", "a/2", "x"]),
        "user alice may not readwrite a/2",
    );
    assert!(root(&["user", "list"]).contains("password, 1 tokens"));
    root(&["user", "revoke-tokens", "alice"]);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while with_token(&["kv", "get", "a/1"]).status.success() {
        assert!(Instant::now() < deadline, "the revoked token still counts");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    refused(with_token(&["kv", "get", "a/1"]), "log in again");

    root(&["user", "revoke", "alice", "reader"]);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while as_user("alice", &["kv", "get", "a/1"]).status.success() {
        assert!(Instant::now() < deadline, "the revocation took no effect");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Node `id`'s `hanse_raft_groups_hibernating` (plain HTTP: the cluster runs insecure).
fn hibernating(cluster: &common::Launched, id: u64) -> Option<u64> {
    let url = format!("http://{}/metrics", cluster.http_addr(id));
    let output = Command::new("curl").args(["-sS", &url]).output().ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|l| l.starts_with("hanse_raft_groups_hibernating"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

#[test]
fn idle_shards_hibernate_and_wake_when_their_leaders_node_dies() {
    let cluster = launch(&[
        "--insecure",
        "--raft",
        "hibernate_after_ms=1000",
        "--balance",
        "enabled=false",
    ]);
    let dir = &cluster.dir;
    let endpoints = cluster.endpoints.join(",");
    let keys = ["a", "c", "e", "g"];
    for at in ["b", "d", "f"] {
        ok(&[
            "admin",
            "split",
            at,
            "--endpoints",
            &endpoints,
            "--insecure",
        ]);
    }
    for key in keys {
        ok(&[
            "kv",
            "put",
            key,
            key,
            "--endpoints",
            &endpoints,
            "--insecure",
        ]);
    }

    // Idle: every data shard's replica sleeps on every node (the meta shard takes the
    // nodes' reports every second and stays awake).
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let asleep = |id| hibernating(&cluster, id).unwrap_or(0);
    while !(1..=3).all(|id| asleep(id) >= keys.len() as u64) {
        assert!(
            Instant::now() < deadline,
            "hibernating per node: {:?}\n{}",
            (1..=3).map(asleep).collect::<Vec<_>>(),
            cluster.log_tails(20)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    // The node leading most data shards dies while they sleep: its peers find it dead
    // (one heartbeat per node pair) and wake those shards, which elect new leaders.
    let shards = {
        let answer = ok(&[
            "admin",
            "shards",
            "--json",
            "--endpoints",
            &endpoints,
            "--insecure",
        ]);
        serde_json::from_str::<serde_json::Value>(&answer).unwrap()["shards"]
            .as_array()
            .unwrap()
            .clone()
    };
    let led_by = |node: u64| {
        shards
            .iter()
            .filter(|s| !s["start"].as_str().unwrap_or("").starts_with("\\xff"))
            .filter(|s| s["leader_node"].as_u64() == Some(node))
            .count()
    };
    let victim = (1..=3).max_by_key(|n| led_by(*n)).unwrap();
    assert!(led_by(victim) > 0, "{shards:?}");
    let pid = status(dir)
        .into_iter()
        .find(|(id, _, _)| *id == victim)
        .and_then(|(_, pid, _)| pid)
        .unwrap();
    let killed = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let others: Vec<&str> = cluster
        .endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 + 1 != victim)
        .map(|(_, e)| e.as_str())
        .collect();
    let others = others.join(",");
    for key in keys {
        assert_eq!(
            ok(&["kv", "get", key, "--endpoints", &others, "--insecure"]),
            format!("{key}\n"),
            "an acknowledged write survives"
        );
        ok(&[
            "kv",
            "put",
            key,
            "again",
            "--endpoints",
            &others,
            "--insecure",
        ]);
    }
    println!(
        "{} sleeping shards of node {victim} read and written again {:?} after its SIGKILL",
        led_by(victim),
        killed.elapsed()
    );
}
