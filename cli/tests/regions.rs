//! Geo behaviour on one machine: real clusters of nodes in three regions with the
//! latency matrix injecting round trips between them.

mod common;

use std::time::{Duration, Instant};

use common::{admin_json_shards, launch_nodes, ok};
use hanse_client::{Client, ClientOptions};

/// Every pair of regions 300 ms apart.
const FAR_APART: &str =
    "eu-hamburg:ap-china=300ms,eu-hamburg:au-sydney=300ms,ap-china:au-sydney=300ms";

/// The shard the first user keys live in.
const FIRST_SHARD: u64 = 1;

/// The node leading `shard`, as the node at `endpoint` (which hosts it) knows now.
fn leader_of(shard: u64, endpoint: &str) -> Option<u64> {
    admin_json_shards("status", endpoint)
        .iter()
        .find(|s| s["id"] == shard)
        .and_then(|s| s["leader_node"].as_u64())
}

#[test]
fn a_shard_written_from_hamburg_gets_its_leader_there_and_hamburg_writes_get_faster() {
    leader_follows_hamburg_writes(&[], "shadow");
}

#[test]
fn where_the_planner_places_leaders_they_still_follow_their_writers() {
    leader_follows_hamburg_writes(&["--balance", "planner=heuristic"], "heuristic");
}

/// A shard led from China, written from Hamburg, gets its leader in Hamburg, and the
/// writes get faster; `extra` are more `cluster up` arguments, under which the planner
/// runs in `planner_mode`.
fn leader_follows_hamburg_writes(extra: &[&str], planner_mode: &str) {
    // Regions in turn: Hamburg, China, Sydney, Hamburg. Voters on 1, 2 and 4, so a
    // leader in Hamburg finds its quorum without leaving the region.
    let mut args = vec!["--latency", FAR_APART, "--balance-cool-down", "5"];
    args.extend_from_slice(extra);
    let cluster = launch_nodes(4, &args);
    let planner = cluster.planner_running();
    assert_eq!(planner["mode"], planner_mode, "{planner}");
    assert_eq!(planner["acting"], "cockroach-tuned", "{planner}");
    assert!(planner["fallback"].is_null(), "{planner}");
    let endpoints = cluster.endpoints.join(",");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let hamburg = ClientOptions {
        region: Some("eu-hamburg".into()),
        ..common::client_options()
    };
    let client = Client::new(&cluster.endpoints, hamburg).unwrap();
    let mut written = 0;
    let mut write = || {
        written += 1;
        let started = Instant::now();
        runtime
            .block_on(client.put(format!("hh-{written:04}").as_bytes(), b"v"))
            .unwrap();
        started.elapsed()
    };
    // One write while China leads: the client's round trip to China and China's to its
    // quorum. The balancer may move the leader away meanwhile; then it is tried again.
    let deadline = Instant::now() + Duration::from_secs(120);
    let from_china = loop {
        assert!(Instant::now() < deadline, "{}", cluster.log_tails(30));
        let to_china = [
            "admin",
            "transfer-leader",
            "--shard",
            "1",
            "--to",
            "2",
            "--endpoints",
            &endpoints,
        ];
        if common::hanse(&to_china).status.success() {
            write(); // Learns where the leader is.
            let took = write();
            if leader_of(FIRST_SHARD, &cluster.endpoints[0]) == Some(2) {
                break took;
            }
        }
    };
    assert!(from_china >= Duration::from_millis(300), "{from_china:?}");
    // Hamburg's writes draw the leader to Hamburg.
    while !matches!(leader_of(FIRST_SHARD, &cluster.endpoints[0]), Some(1 | 4)) {
        assert!(
            Instant::now() < deadline,
            "{}\n{}",
            ok(&["admin", "shards", "--endpoints", &endpoints]),
            cluster.log_tails(30)
        );
        write();
    }
    write(); // Learns where the leader is.
    let mut from_hamburg: Vec<Duration> = (0..3).map(|_| write()).collect();
    from_hamburg.sort();
    assert!(
        from_hamburg[1] < from_china,
        "writes from Hamburg took {from_hamburg:?} with the leader there, {from_china:?} \
         with it in China"
    );
    for i in 1..=written {
        let key = format!("hh-{i:04}");
        assert_eq!(
            runtime
                .block_on(client.get(key.as_bytes()))
                .unwrap()
                .as_deref(),
            Some(&b"v"[..]),
            "{key}"
        );
    }
}

#[test]
fn nodes_measure_their_round_trips_and_the_planner_plans_with_them() {
    let matrix = "eu-hamburg:ap-china=250ms,eu-hamburg:au-sydney=300ms,ap-china:au-sydney=150ms";
    let injected_ms = |a: &str, b: &str| {
        let pair = |x: &str, y: &str| (a == x && b == y) || (a == y && b == x);
        if pair("eu-hamburg", "ap-china") {
            250.0
        } else if pair("eu-hamburg", "au-sydney") {
            300.0
        } else if pair("ap-china", "au-sydney") {
            150.0
        } else {
            panic!("no round trip injected between {a} and {b}")
        }
    };
    let cluster = launch_nodes(3, &["--latency", matrix]);
    // Each node measures both peers: no less than the injected time, and not much more
    // (the fastest call of a window meets no log write ahead of it).
    let deadline = Instant::now() + Duration::from_secs(60);
    for endpoint in &cluster.endpoints {
        loop {
            let status: serde_json::Value =
                serde_json::from_str(&ok(&["admin", "status", "--json", "--endpoints", endpoint]))
                    .unwrap();
            let region = status["region"].as_str().unwrap();
            let trips = status["round_trips"].as_array().unwrap();
            let near = |t: &serde_json::Value| {
                let ms = t["micros"].as_f64().unwrap() / 1_000.0;
                let injected = injected_ms(region, t["region"].as_str().unwrap());
                (injected..injected + 100.0).contains(&ms)
            };
            if trips.len() == 2 && trips.iter().all(near) {
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // The planner plans with half of each measured round trip, not an assumed figure.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let planner = cluster.planner_running();
        let latency = planner["region_latency"].as_array().unwrap();
        let between: Vec<_> = latency.iter().filter(|l| l["from"] != l["to"]).collect();
        let planned = |l: &&serde_json::Value| {
            let half = injected_ms(l["from"].as_str().unwrap(), l["to"].as_str().unwrap()) / 2.0;
            let ms = l["one_way_ms"].as_f64().unwrap();
            l["measured"] == true && (half..half + 50.0).contains(&ms)
        };
        if between.len() == 6 && between.iter().all(planned) {
            break;
        }
        assert!(Instant::now() < deadline, "{planner}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = ok(&["admin", "status", "--endpoints", &cluster.endpoints[0]]);
    assert!(
        text.contains("round trips (Raft transport, smoothed): node 2"),
        "{text}"
    );
}

#[test]
fn a_follower_read_never_misses_a_write_acknowledged_before_its_bound() {
    // Hamburg (node 1, leading), China, Sydney; every pair 100 ms apart.
    let matrix = "eu-hamburg:ap-china=100ms,eu-hamburg:au-sydney=100ms,ap-china:au-sydney=100ms";
    let cluster = launch_nodes(3, &["--latency", matrix]);
    let runtime = common::runtime();
    let in_region = |region: &str, nearest: usize| {
        let mut endpoints = cluster.endpoints.clone();
        endpoints.swap(0, nearest);
        let options = ClientOptions {
            region: Some(region.into()),
            ..common::client_options()
        };
        Client::new(&endpoints, options).unwrap()
    };
    let writer = in_region("eu-hamburg", 0);
    let reader = in_region("au-sydney", 2);
    let max_staleness = Duration::from_millis(300);
    let (acknowledged, reads) = runtime.block_on(async {
        writer.put(b"counter", b"0").await.unwrap();
        let writes = async {
            let mut acknowledged = Vec::new();
            for i in 1..=30u64 {
                writer
                    .put(b"counter", i.to_string().as_bytes())
                    .await
                    .unwrap();
                acknowledged.push((i, Instant::now()));
            }
            acknowledged
        };
        let reads = async {
            let mut reads = Vec::new();
            let stop = Instant::now() + Duration::from_secs(4);
            while Instant::now() < stop {
                let sent = Instant::now();
                let read = reader.get_stale(b"counter", max_staleness).await.unwrap();
                let value: u64 = String::from_utf8(read.value.unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                reads.push((sent, value, read.served_by, read.staleness_bound));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            reads
        };
        tokio::join!(writes, reads)
    });
    for &(sent, value, served_by, bound) in &reads {
        assert!(bound <= max_staleness, "a read kept only to {bound:?}");
        // Every write acknowledged before `sent - bound` must be in the answer.
        let newest_due = acknowledged
            .iter()
            .filter(|(_, at)| sent.checked_sub(bound).is_some_and(|due| *at < due))
            .map(|(i, _)| *i)
            .max()
            .unwrap_or(0);
        assert!(
            value >= newest_due,
            "node {served_by} answered {value} within {bound:?}, but write {newest_due} \
             was acknowledged before that"
        );
    }
    let by_follower = reads.iter().filter(|r| r.2 == 3).count();
    assert!(
        by_follower * 2 > reads.len(),
        "Sydney's replica serves most of Sydney's reads: {by_follower} of {}",
        reads.len()
    );
    assert!(reads.iter().any(|r| r.2 == 3 && !r.3.is_zero()));
}

/// Brings the cluster in the directory down when dropped.
struct DownOnDrop(String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = common::hanse(&["cluster", "down", "--dir", &self.0]);
    }
}

#[test]
fn a_backup_from_the_recovery_region_restores_every_key_and_a_damaged_one_is_refused() {
    let cluster = launch_nodes(3, &[]);
    let endpoints = cluster.endpoints.join(",");
    let runtime = common::runtime();
    let keys: Vec<String> = (0..300).map(|i| format!("saved-{i:04}")).collect();
    let client =
        std::sync::Arc::new(Client::new(&cluster.endpoints, common::client_options()).unwrap());
    runtime.block_on(async {
        let mut writers = tokio::task::JoinSet::new();
        for part in keys.chunks(30) {
            let (client, part) = (client.clone(), part.to_vec());
            writers.spawn(async move {
                for key in part {
                    client
                        .put(key.as_bytes(), key.to_uppercase().as_bytes())
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(done) = writers.join_next().await {
            done.unwrap();
        }
    });
    ok(&["admin", "split", "saved-0150", "--endpoints", &endpoints]);

    let work = tempfile::tempdir().unwrap();
    let backup = work.path().join("backup");
    let backup = backup.to_str().unwrap();
    ok(&["backup", "--to", backup, "--endpoints", &endpoints]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{backup}/manifest.json")).unwrap())
            .unwrap();
    let copies = manifest["shards"].as_array().unwrap();
    assert_eq!(copies.len(), 2, "{manifest}");
    // Node 3 is Sydney's: the recovery region's replica is copied.
    assert!(copies.iter().all(|c| c["node"] == 3), "{manifest}");

    let port = common::free_port();
    let restored = work.path().join("restored").to_str().unwrap().to_string();
    let _down = DownOnDrop(restored.clone());
    let out = ok(&[
        "restore", "--from", backup, "--dir", &restored, "--port", &port,
    ]);
    let all = format!("restored {n} of the backup's {n} keys", n = keys.len());
    assert!(out.contains(&all), "{out}");
    let restored_client =
        Client::new(&common::endpoints_line(&out), common::client_options()).unwrap();
    runtime.block_on(async {
        for key in &keys {
            assert_eq!(
                restored_client.get(key.as_bytes()).await.unwrap(),
                Some(key.to_uppercase().into_bytes()),
                "{key}"
            );
        }
    });

    // A manifest that lost a shard (every checksum still valid): refused, nothing made.
    let manifest_path = format!("{backup}/manifest.json");
    let intact = std::fs::read_to_string(&manifest_path).unwrap();
    let mut short: serde_json::Value = serde_json::from_str(&intact).unwrap();
    short["shards"].as_array_mut().unwrap().remove(1);
    std::fs::write(&manifest_path, short.to_string()).unwrap();
    let elsewhere = work.path().join("short").to_str().unwrap().to_string();
    let refused = common::hanse(&["restore", "--from", backup, "--dir", &elsewhere]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("the backup is incomplete"), "{stderr}");
    assert!(!std::path::Path::new(&elsewhere).exists());
    std::fs::write(&manifest_path, intact).unwrap();

    // One flipped byte: the restore refuses before it creates anything.
    let file = format!("{backup}/{}", copies[0]["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let elsewhere = work.path().join("again").to_str().unwrap().to_string();
    let refused = common::hanse(&["restore", "--from", backup, "--dir", &elsewhere]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("the backup is damaged") && stderr.contains("checksum"),
        "{stderr}"
    );
    assert!(!std::path::Path::new(&elsewhere).exists());
}

#[test]
fn writes_entering_hamburg_for_a_leader_in_china_travel_there_in_batches() {
    let cluster = launch_nodes(
        3,
        &[
            "--balance-cool-down",
            "1",
            "--preferred-leader-region",
            "ap-china",
        ],
    );
    let hamburg = &cluster.endpoints[0];
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader_of(FIRST_SHARD, hamburg) != Some(2) {
        assert!(Instant::now() < deadline, "{}", cluster.log_tails(30));
        std::thread::sleep(Duration::from_millis(200));
    }
    // The client knows only the Hamburg node: every write enters there.
    let client = std::sync::Arc::new(
        Client::new(std::slice::from_ref(hamburg), common::client_options()).unwrap(),
    );
    let runtime = common::runtime();
    const WRITERS: usize = 16;
    const STEPS: usize = 20;
    runtime.block_on(common::write_in_turn(client.clone(), WRITERS, STEPS, false));
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["admin", "status", "--json", "--endpoints", hamburg])).unwrap();
    let ingest = &status["ingest"];
    let count = |field: &str| ingest[field].as_u64().unwrap();
    assert_eq!(count("writes") as usize, WRITERS * STEPS, "{ingest}");
    assert!(count("forwarded_batches") > 0, "{ingest}");
    assert!(count("batches") < count("writes"), "{ingest}");
    runtime.block_on(async {
        for w in 0..WRITERS {
            let own = client.get(format!("own-{w:02}").as_bytes()).await.unwrap();
            assert_eq!(own, Some(STEPS.to_string().into_bytes()), "writer {w}");
        }
    });
}
