//! A shard makes progress whatever the entry sizes the limits allow, on a loaded machine:
//! a batch of 100,000 puts (one log entry of about 3 MB) and three 8 MiB values commit on
//! a real 3-node cluster while two threads keep both cores busy, and a small write right
//! after them still commits, and a scan over the large values comes back whole, page by
//! page. (Before, such entries cost so much CPU to encode and to read
//! back, byte by byte, that the followers' heartbeats starved and the shard stalled in
//! elections; `consensus/tests/replication.rs` covers the other half, entries slower to
//! send than openraft's AppendEntries timeout.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hanse_client::{BatchWrite, Client, ClientOptions};

/// Threads that keep the cores busy until dropped.
struct CpuHogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHogs {
    fn start(count: usize) -> CpuHogs {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        CpuHogs { stop, threads }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_commit_under_load_and_the_shard_keeps_going() {
    let cluster = common::launch(&["--balance", "enabled=false"]);
    let options = ClientOptions {
        request_timeout: Duration::from_secs(120),
        ..common::client_options()
    };
    let client = Client::new(&cluster.endpoints, options).unwrap();
    client.put(b"warm-up", b"1").await.unwrap();
    let hogs = CpuHogs::start(2);

    let batch: Vec<BatchWrite> = (0..100_000)
        .map(|i| BatchWrite::Put {
            key: format!("big-{i:06}").into_bytes(),
            value: format!("value-{i:010}").into_bytes(),
        })
        .collect();
    client
        .batch(&batch)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(20)));
    for i in 0..3u8 {
        let key = format!("huge-{i}");
        client
            .put(key.as_bytes(), &vec![i; 8 << 20])
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}\n{}", cluster.log_tails(20)));
    }
    let small = tokio::time::timeout(Duration::from_secs(60), client.put(b"small", b"1")).await;
    drop(hogs);
    small
        .expect("a small write right after the large ones committed within a minute")
        .unwrap();

    assert_eq!(
        client.get(b"big-099999").await.unwrap(),
        Some(b"value-0000099999".to_vec())
    );
    assert_eq!(
        client.get(b"huge-2").await.unwrap().map(|v| v.len()),
        Some(8 << 20)
    );
    assert_eq!(client.get(b"small").await.unwrap(), Some(b"1".to_vec()));
    let page = client.scan(b"big-", b"big.", 10_000, false).await.unwrap();
    assert_eq!(page.len(), 10_000);
    // Three 8 MiB values are more than one message holds: pages stop at their byte
    // bound and the client goes on from where each stopped, either way round.
    for reverse in [false, true] {
        let values = client.scan(b"huge-", b"huge.", 10, reverse).await.unwrap();
        let keys: Vec<&[u8]> = values.iter().map(|(k, _)| k.as_slice()).collect();
        let mut expected: Vec<&[u8]> = vec![b"huge-0", b"huge-1", b"huge-2"];
        if reverse {
            expected.reverse();
        }
        assert_eq!(keys, expected);
        assert!(
            values
                .iter()
                .all(|(k, v)| v.len() == 8 << 20 && v[0] == k[5] - b'0')
        );
    }
}
